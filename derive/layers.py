"""Layer kinds: each one declaration, its forward written in index form over a small set of
array statements; the backward is derived from it (``derive.graph``), never typed in.

A kind's forward reads its input ``a`` (m x n_in, one row per example) and writes its
output ``z`` (m x n_out).  The statements are

* ``Linear(z, a, W, b)``: z = a Wᵀ + b (a dense layer; ``b`` may be None);
* ``Let(t, expr)``: t = expr entry by entry, the symbols of expr broadcast as arrays: data
  (m x n), a per-unit row (1 x n: a parameter such as γ, or a batch statistic such as μ_B)
  or a per-example column (m x 1: layer normalisation's statistics);
* ``Reduce(t, expr, axis)``: t = the mean over the batch (``BATCH``: a per-unit row) or over
  the units (``UNITS``: a per-example column) of expr entry by entry.

Each kind also declares its parameters (shape, initialisation, whether the weight penalties
apply), its non-trainable state (with the value it is updated towards after each training
forward, PyTorch's momentum rule), its random inputs (dropout's mask), whether it couples the
examples of a batch, and its forward when not training.  Adding a kind is adding one
declaration to ``LAYER_KINDS``; every stage reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .registry import Registry

__all__ = ["Linear", "Let", "Reduce", "Statement", "Param", "State", "Random", "Option",
           "LayerKind", "LAYER_KINDS", "BATCH", "UNITS", "DATA", "ROW", "COLUMN", "SCALAR",
           "INPUT", "OUTPUT", "M_SYM", "N_SYM"]

# where a statement's mean is taken, and the shape classes of the arrays
BATCH, UNITS = "batch", "units"
DATA, ROW, COLUMN, SCALAR = "data", "row", "column", "scalar"  # (m, n), (1, n), (m, 1), ()

INPUT = sp.Symbol("a", real=True)  # the kind's input, the layer below's output
OUTPUT = sp.Symbol("z", real=True)  # what the kind gives (before the layer's activation)
M_SYM = sp.Symbol("m", integer=True, positive=True)  # examples in the batch
N_SYM = sp.Symbol("n", integer=True, positive=True)  # the layer's units


@dataclass(frozen=True)
class Linear:
    """target = a Wᵀ + b (b None: no bias)."""

    target: sp.Symbol
    a: sp.Symbol
    W: sp.Symbol
    b: sp.Symbol | None = None
    op = "linear"

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        return (self.a, self.W) + ((self.b,) if self.b is not None else ())


@dataclass(frozen=True)
class Let:
    """target = expr, entry by entry (the symbols broadcast by their shape classes)."""

    target: sp.Symbol
    expr: sp.Expr
    op = "let"

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        return tuple(sorted(self.expr.free_symbols, key=str))


@dataclass(frozen=True)
class Reduce:
    """target = mean (or sum) over ``axis`` of expr, entry by entry."""

    target: sp.Symbol
    expr: sp.Expr
    axis: str  # BATCH or UNITS
    mean: bool = True
    op = "reduce"

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        return tuple(sorted(self.expr.free_symbols, key=str))


Statement = Linear | Let | Reduce


@dataclass(frozen=True)
class Param:
    """A trainable parameter: ``shape`` from (n_in, n_out); init ``weights`` (the layer's
    scheme: he, xavier, ...), ``ones`` or ``zeros``; ``penalised``: the l1/l2 terms apply."""

    symbol: sp.Symbol
    shape: Callable[[int, int], tuple[int, ...]]
    init: str
    penalised: bool = False
    when: str | None = None  # an option that must be true for the parameter to exist

    @property
    def name(self) -> str:
        return self.symbol.name


@dataclass(frozen=True)
class State:
    """Non-trainable state per unit, moved after each training forward towards ``target``
    by PyTorch's rule: s <- (1 - momentum) s + momentum target."""

    symbol: sp.Symbol
    init: float
    target: sp.Expr  # in the forward's symbols and M_SYM

    @property
    def name(self) -> str:
        return self.symbol.name


@dataclass(frozen=True)
class Random:
    """A random input of the training forward: entries 1 with probability ``keep`` (an
    expression of the options), else 0; fixed when a check needs it fixed."""

    symbol: sp.Symbol
    keep: Callable[[dict], float]  # the options -> the probability of a 1


@dataclass(frozen=True)
class Option:
    """A key of the kind's spec entry: its default (None: required), what it accepts."""

    key: str
    default: object
    check: Callable[[object], bool]
    expected: str
    integer: bool = False
    boolean: bool = False


@dataclass(frozen=True)
class LayerKind:
    name: str
    title: str  # as the documents say it
    options: tuple[Option, ...]
    params: tuple[Param, ...]
    forward: Callable[[dict], tuple]  # options -> statements (training)
    inference: Callable[[dict], tuple] | None = None  # None: the training forward
    state: tuple[State, ...] = ()
    randoms: tuple[Random, ...] = ()
    constants: tuple[tuple[sp.Symbol, str, str], ...] = ()  # (symbol, option key, shaped like)
    couples_batch: bool = False  # its training forward mixes the examples of a batch
    activation: bool = True  # takes an activation (dense always has one)
    width: Callable[[int, dict], int] = staticmethod(lambda n_in, options: n_in)
    # the torch.nn module that computes the same (its constructor, formatted with n_in and the
    # options), and our parameters' names for its own: the tests build the torch network so
    torch: str = ""
    torch_params: tuple[tuple[str, str], ...] = ()
    latex: str = ""  # a one-line description of the forward, in LaTeX

    def option(self, key: str) -> Option | None:
        return next((o for o in self.options if o.key == key), None)

    def params_for(self, options: dict) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.when is None or options.get(p.when))


LAYER_KINDS: Registry[LayerKind] = Registry("layer kind")

# -- the kinds' symbols (each layer's copies carry its index: gamma2, xhat2, ...) ------------
W, b = sp.Symbol("W", real=True), sp.Symbol("b", real=True)
gamma, beta = sp.Symbol("gamma", real=True), sp.Symbol("beta", real=True)
mu, var, xhat = sp.Symbol("mu", real=True), sp.Symbol("var", positive=True), sp.Symbol("xhat", real=True)
eps = sp.Symbol("epsilon", positive=True)
mask = sp.Symbol("mask", real=True)
running_mean, running_var = sp.Symbol("running_mean", real=True), sp.Symbol("running_var", positive=True)

_positive = (lambda v: v > 0, "a positive number")
_fraction = (lambda v: 0 <= v < 1, "a number in [0, 1)")
_momentum = (lambda v: 0 < v <= 1, "a number in (0, 1]")


def _normalised(axis: str | None) -> tuple:
    """x̂ = (a - μ)/√(σ² + ε), z = γ x̂ + β, with μ and σ² the mean and (biased) variance over
    ``axis``; ``None``: the running statistics instead (batch normalisation not training)."""
    if axis is None:
        return (Let(xhat, (INPUT - running_mean) / sp.sqrt(running_var + eps)),
                Let(OUTPUT, gamma * xhat + beta))
    return (Reduce(mu, INPUT, axis), Reduce(var, (INPUT - mu) ** 2, axis),
            Let(xhat, (INPUT - mu) / sp.sqrt(var + eps)), Let(OUTPUT, gamma * xhat + beta))


def _units(n_in: int, options: dict) -> int:
    return options["units"]


LAYER_KINDS.add("dense", LayerKind(
    name="dense", title="dense layer",
    options=(Option("units", None, lambda v: 1 <= v <= 100_000, "a whole number from 1 to 100000",
                    integer=True),
             Option("bias", True, lambda v: isinstance(v, bool), "true or false", boolean=True)),
    params=(Param(W, lambda n_in, n: (n, n_in), "weights", penalised=True),
            Param(b, lambda n_in, n: (n,), "zeros", when="bias")),
    forward=lambda o: (Linear(OUTPUT, INPUT, W, b if o["bias"] else None),),
    width=_units, torch="torch.nn.Linear({n_in}, {units}, bias={bias})",
    torch_params=(("W", "weight"), ("b", "bias")),
    latex=r"z = W a + b"))

LAYER_KINDS.add("batch_norm", LayerKind(
    name="batch_norm", title="batch normalisation",
    options=(Option("eps", 1e-5, *_positive), Option("momentum", 0.1, *_momentum)),
    params=(Param(gamma, lambda n_in, n: (n,), "ones"), Param(beta, lambda n_in, n: (n,), "zeros")),
    forward=lambda o: _normalised(BATCH), inference=lambda o: _normalised(None),
    # PyTorch's running variance is the unbiased one: sigma^2_B m / (m - 1)
    state=(State(running_mean, 0.0, mu), State(running_var, 1.0, var * M_SYM / (M_SYM - 1))),
    constants=((eps, "eps", var),),
    couples_batch=True, torch="torch.nn.BatchNorm1d({units}, eps={eps}, momentum={momentum})",
    torch_params=(("gamma", "weight"), ("beta", "bias")),
    latex=r"\hat{x} = \frac{a - \mu_B}{\sqrt{\sigma^2_B + \epsilon}},\ z = \gamma \hat{x} + \beta"))

LAYER_KINDS.add("layer_norm", LayerKind(
    name="layer_norm", title="layer normalisation",
    options=(Option("eps", 1e-5, *_positive),),
    params=(Param(gamma, lambda n_in, n: (n,), "ones"), Param(beta, lambda n_in, n: (n,), "zeros")),
    forward=lambda o: _normalised(UNITS),
    constants=((eps, "eps", var),),
    torch="torch.nn.LayerNorm({units}, eps={eps})",
    torch_params=(("gamma", "weight"), ("beta", "bias")),
    latex=r"\hat{x} = \frac{a - \mu}{\sqrt{\sigma^2 + \epsilon}} \text{ per example},\ "
          r"z = \gamma \hat{x} + \beta"))

LAYER_KINDS.add("dropout", LayerKind(
    name="dropout", title="dropout",
    options=(Option("rate", None, *_fraction),),
    params=(),
    # inverted dropout: kept units scaled by 1/(1 - rate), so inference is the identity
    forward=lambda o: (Let(OUTPUT, INPUT * mask / (1 - _exact(o["rate"]))),),
    inference=lambda o: (Let(OUTPUT, INPUT),),
    randoms=(Random(mask, lambda o: 1 - o["rate"]),),
    activation=False, torch="torch.nn.Dropout({rate})",
    latex=r"z = \frac{r \circ a}{1 - p},\ r_{ij} \sim \mathrm{Bernoulli}(1 - p)"))


def _exact(value) -> sp.Rational:
    return sp.nsimplify(value, rational=True) if not isinstance(value, bool) else sp.S(value)
