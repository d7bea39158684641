"""Layer kinds: each one declaration, its forward written in index form over a small set of
array statements; the backward is derived from it (``derive.graph``), never typed in.

A kind's forward reads its input ``a`` (m x n_in, one row per example) and writes its
output ``z`` (m x n_out).  The statements are

* ``Linear(z, a, W, b)``: z = a Wᵀ + b (a dense layer; ``b`` may be None);
* ``Let(t, expr)``: t = expr entry by entry, the symbols of expr broadcast as arrays: data
  (m x n), a per-unit row (1 x n: a parameter such as γ, or a batch statistic such as μ_B)
  or a per-example column (m x 1: layer normalisation's statistics);
* ``Reduce(t, expr, axis)``: t = the mean over the batch (``BATCH``: a per-unit row) or over
  the units (``UNITS``: a per-example column) of expr entry by entry;
* ``Conv(z, a, W, b, window)`` and ``Pool(z, a, window, how)``: a convolution or a pooling of
  images stored flat per example in NCHW order (m x C·H·W), each the index form of
  ``derive.indexform`` at the sizes of its ``Window``.

A kind that reads images (``image``: "image") maps the input's (C, H, W) to its output's
(``image_out``, which refuses sizes that do not fit with an ``ImageError`` naming the option
at fault); a flat kind (dense, the normalisations) refuses an image; dropout takes either.

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

from .indexform import ARRAYS, INDEX, Window
from .indexform import forward as index_forward
from .registry import Registry

__all__ = ["Linear", "Let", "Reduce", "Conv", "Pool", "Window", "ImageError", "walk_images",
           "Statement", "Param", "State", "Random", "Option",
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


@dataclass(frozen=True)
class Conv:
    """target[n, f, i, j] = Σ_{c,p,q} W[f, c, p, q] a[n, c, s i + p − P, s j + q − P] + b[f]
    (PyTorch's Conv2d, a cross-correlation of the zero-padded input; b None: no bias)."""

    target: sp.Symbol
    a: sp.Symbol
    W: sp.Symbol
    b: sp.Symbol | None
    window: Window
    op = "conv"

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        return (self.a, self.W) + ((self.b,) if self.b is not None else ())

    @property
    def expr(self) -> sp.Expr:
        """The index form (``derive.indexform.forward``), without b when there is none."""
        z = index_forward("conv")[0]
        return z if self.b is not None else z.xreplace({ARRAYS.b[INDEX.f]: 0})


@dataclass(frozen=True)
class Pool:
    """target[n, c, i, j] = the maximum (``how`` "max": its first, PyTorch's tie rule) or the
    mean ("avg") of a[n, c] over the size x size window at (s i, s j), s = size."""

    target: sp.Symbol
    a: sp.Symbol
    window: Window
    how: str
    op = "pool"

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        return (self.a,)

    @property
    def expr(self) -> sp.Expr:
        """The index form (``derive.indexform.forward``)."""
        return index_forward(f"{self.how}_pool")[0]


Statement = Linear | Let | Reduce | Conv | Pool


class ImageError(ValueError):
    """An image that a kind cannot take with these options: ``key`` is the option at fault
    (None: the kind itself), ``hint`` what would fit."""

    def __init__(self, key: str | None, message: str, hint: str | None = None):
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


@dataclass(frozen=True)
class Param:
    """A trainable parameter: ``shape`` from (n_in, n_out); init ``weights`` (the layer's
    scheme: he, xavier, ...), ``ones`` or ``zeros``; ``penalised``: the l1/l2 terms apply."""

    symbol: sp.Symbol
    shape: Callable[[int, int], tuple[int, ...]]
    init: str
    penalised: bool = False
    when: str | None = None  # an option that must be true for the parameter to exist
    # the shape from the options instead (an image kind's: they hold its input "image")
    shaped: Callable[[dict], tuple[int, ...]] | None = None

    def shape_for(self, n_in: int, n_out: int, options: dict) -> tuple[int, ...]:
        return self.shaped(options) if self.shaped is not None else self.shape(n_in, n_out)

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
    # images: "flat" (refuses one: flatten first), "image" (needs one), "any" (either)
    image: str = "flat"
    # (C, H, W) in, options -> (C, H, W) out, or None: the output is flat (flatten)
    image_out: Callable[[tuple, dict], tuple | None] = staticmethod(lambda image, options: image)
    # a window kind: its forward's name in derive.indexform ("conv", "max_pool", ...), and
    # the sentence the LaTeX sets before the local derivatives SymPy takes of it
    index_form: str = ""
    derivation: str = ""

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
    activation=False, torch="torch.nn.Dropout({rate})", image="any",
    latex=r"z = \frac{r \circ a}{1 - p},\ r_{ij} \sim \mathrm{Bernoulli}(1 - p)"))


# -- images: convolution, pooling, flatten -------------------------------------------------
_kernel_range = (lambda v: 1 <= v <= 64, "a whole number from 1 to 64")
_stride_range = (lambda v: 1 <= v <= 64, "a whole number from 1 to 64")
_padding_range = (lambda v: 0 <= v <= 64, "a whole number from 0 to 64")


def conv_window(image: tuple, options: dict) -> Window:
    """The window of a conv2d layer on ``image`` (C, H, W); ImageError where it does not fit."""
    C, H, W_ = image
    k, s, P = options["kernel"], options["stride"], options["padding"]
    if k > H + 2 * P or k > W_ + 2 * P:
        padded = f", padded by {P} on each side" if P else ""
        raise ImageError("kernel", f"a {k}x{k} kernel is larger than its input "
                         f"({H + 2 * P}x{W_ + 2 * P}{padded})",
                         "use a smaller kernel or more padding")
    if P >= k:
        raise ImageError("padding", f"padding {P} is not smaller than the kernel ({k}): some "
                         "outputs would see only padding", f"use a padding below {k}")
    return Window(C, H, W_, options["filters"], k, s, P)


def pool_window(image: tuple, options: dict) -> Window:
    """The window of a pooling layer on ``image``: size x size, stride = size, no padding;
    ImageError unless the size divides the height and width."""
    C, H, W_ = image
    size = options["size"]
    if H % size or W_ % size:
        raise ImageError("size", f"a {size}x{size} pool does not divide its {H}x{W_} input "
                         f"(stride = size: every input entry in exactly one window)",
                         f"use a size that divides {H if H == W_ else f'{H} and {W_}'}, or pad "
                         f"the convolution below")
    return Window(C, H, W_, C, size, size, 0)


def _image_of(options: dict) -> tuple:
    return options["image"]  # the layer's input (C, H, W), set where the layer is placed


def _conv_forward(o: dict) -> tuple:
    return (Conv(OUTPUT, INPUT, W, b if o["bias"] else None, conv_window(_image_of(o), o)),)


LAYER_KINDS.add("conv2d", LayerKind(
    name="conv2d", title="convolution",
    options=(Option("filters", None, lambda v: 1 <= v <= 4096, "a whole number from 1 to 4096",
                    integer=True),
             Option("kernel", None, *_kernel_range, integer=True),
             Option("stride", 1, *_stride_range, integer=True),
             Option("padding", 0, *_padding_range, integer=True),
             Option("bias", True, lambda v: isinstance(v, bool), "true or false", boolean=True)),
    # PyTorch's shapes: W (filters, C, k, k), b (filters,); the scheme's fan-in is C k^2
    params=(Param(W, None, "weights", penalised=True, shaped=lambda o: (
                o["filters"], o["image"][0], o["kernel"], o["kernel"])),
            Param(b, None, "zeros", when="bias", shaped=lambda o: (o["filters"],))),
    forward=_conv_forward, image="image",
    image_out=lambda image, o: conv_window(image, o).image_out, index_form="conv",
    derivation=r"The declared forward in index form; SymPy differentiates the indexed sum by an "
               r"entry of the input, of the kernel and of the bias (each a product of indicators "
               r"$\mathbb{I}$, 1 when its two indices agree), then sums the indicators out "
               r"(the backward multiplies by the error and sums over the outputs):",
    torch="torch.nn.Conv2d({image[0]}, {filters}, {kernel}, stride={stride}, "
          "padding={padding}, bias={bias})",
    torch_params=(("W", "weight"), ("b", "bias")),
    latex=r"z_{f,i,j} = \sum_{c,p,q} W_{f,c,p,q}\, a_{c,\,si+p-P,\,sj+q-P} + b_f"))


def _pool(how: str, title: str, module: str, latex: str, derivation: str) -> LayerKind:
    return LayerKind(
        name=f"{how}_pool", title=title, index_form=f"{how}_pool", derivation=derivation,
        options=(Option("size", None, lambda v: 1 <= v <= 64, "a whole number from 1 to 64",
                        integer=True),),
        params=(), activation=False, image="image",
        forward=lambda o: (Pool(OUTPUT, INPUT, pool_window(_image_of(o), o), how),),
        image_out=lambda image, o: pool_window(image, o).image_out,
        torch=f"torch.nn.{module}({{size}})", latex=latex)


LAYER_KINDS.add("max_pool", _pool(
    "max", "max pooling", "MaxPool2d",
    r"z_{c,i,j} = \max_{0 \le p,q < s} a_{c,\,si+p,\,sj+q}",
    r"Max pooling is the sum of its window weighted by $M$, 1 at the window's first maximum and "
    r"0 elsewhere: SymPy's derivative of $\max(x_1, \ldots, x_{s^2})$ by $x_t$ at points "
    r"without ties is 1 at the maximum and 0 elsewhere, so $M$ is a constant of the derivative "
    r"(ties go to the first maximum, as in PyTorch):"))
LAYER_KINDS.add("avg_pool", _pool(
    "avg", "average pooling", "AvgPool2d",
    r"z_{c,i,j} = \frac{1}{s^2} \sum_{0 \le p,q < s} a_{c,\,si+p,\,sj+q}",
    r"Average pooling is the mean of its window:"))
LAYER_KINDS.add("flatten", LayerKind(
    name="flatten", title="flatten", options=(), params=(), activation=False, image="image",
    # the identity on the flat NCHW rows: (C, H, W) -> C·H·W units, as torch.nn.Flatten
    forward=lambda o: (Let(OUTPUT, INPUT),), image_out=lambda image, o: None,
    torch="torch.nn.Flatten()", latex=r"z_{(c,i,j)} = a_{c,i,j}"))


def walk_images(image: tuple | None, layers) -> list[tuple | None]:
    """The (C, H, W) after each of ``layers`` (LayerSpecs) from an input ``image``: None where
    the output is flat; ImageError where a layer's window does not fit."""
    out = []
    for layer in layers:
        kind = LAYER_KINDS[layer.kind]
        if kind.image == "flat" or image is None:
            image = None if kind.image != "any" else image
        else:
            options = {o.key: o.default for o in kind.options} | layer.option_dict
            image = kind.image_out(image, options | {"image": image})
        out.append(image)
    return out


def _exact(value) -> sp.Rational:
    return sp.nsimplify(value, rational=True) if not isinstance(value, bool) else sp.S(value)
