"""Update rules (optimizers), learning-rate schedules and the documents' descent variants,
each declared once.

An *optimizer* is PyTorch's documented algorithm for one parameter tensor, written as SymPy
assignments in order: what each state (velocity, moments) becomes, then the new parameter.
Its hyperparameters have PyTorch's names and defaults, so a run compares step for step with
``torch.optim``.  The LaTeX prints the assignments; the code generator prints them as one
fused loop over every parameter entry; the tests check them against an independent
implementation.

A *schedule* gives the learning rate of each epoch from the initial one (PyTorch's
``torch.optim.lr_scheduler``, stepped once per epoch).

A *descent variant* is what the documents call batch, stochastic and mini-batch gradient
descent: it is only a batch size (``full``, 1, any other).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import sympy as sp

from .registry import Registry

__all__ = ["Hyperparameter", "Optimizer", "OPTIMIZERS", "Schedule", "SCHEDULES", "Variant",
           "VARIANTS", "variant_of", "FULL_BATCH", "LEGACY_OPTIMIZERS", "LegacyOptimizer",
           "LEGACY_LEARNING_RATE", "THETA", "GRADIENT", "ETA", "STEP", "EPOCH", "DEFAULT_OPTIMIZER"]

FULL_BATCH = "full"  # training.batch_size: every training example in one step
DEFAULT_OPTIMIZER = "adam"  # a spec without training.optimizer trains with it

# the symbols every rule is written in: the parameter, dJ/dtheta, the learning rate, the step t
THETA = sp.Symbol("theta", real=True)
GRADIENT = sp.Symbol("g", real=True)
ETA = sp.Symbol("eta", positive=True)
STEP = sp.Symbol("t", positive=True, integer=True)
EPOCH = sp.Symbol("e", nonnegative=True, integer=True)  # schedules: epochs completed


@dataclass(frozen=True)
class Hyperparameter:
    """One of a rule's hyperparameters as PyTorch names it (``betas`` is two symbols)."""

    name: str
    default: float | tuple[float, ...]
    symbols: tuple[sp.Symbol, ...]  # one per entry of the value
    meaning: str  # what it does, in words
    low: float = 0.0  # every entry lies in [low, high) (``high`` included when closed)
    high: float = float("inf")
    closed: bool = False

    @property
    def size(self) -> int:
        return len(self.symbols)

    def values(self, value) -> tuple[float, ...]:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,)

    def accepts(self, value) -> bool:
        entries = self.values(value)
        return len(entries) == self.size and all(
            isinstance(x, (int, float)) and not isinstance(x, bool)
            and self.low <= x and (x <= self.high if self.closed else x < self.high)
            for x in entries)

    @property
    def expected(self) -> str:
        upper = "" if self.high == float("inf") else \
            f" and {'<=' if self.closed else '<'} {self.high:g}"
        one = f">= {self.low:g}{upper}"
        return f"a list of {self.size} numbers {one}" if self.size > 1 else f"a number {one}"


@dataclass(frozen=True)
class Optimizer:
    """An update rule: ``assignments`` in order, each (target, formula).

    A target is ``"g"`` (the gradient as the rule uses it, e.g. with weight decay added),
    one of ``state`` (kept between steps, zero at the start), a local (used by the later
    formulas only) or ``"theta"`` (the new parameter, always last).  Formulas use THETA,
    GRADIENT, ETA, STEP (the step number, from 1) and the hyperparameters' symbols.
    """

    name: str
    title: str
    source: str  # the PyTorch class it follows
    hyperparameters: tuple[Hyperparameter, ...]
    state: tuple[tuple[sp.Symbol, str], ...]  # (symbol, what it is)
    assignments: tuple[tuple[sp.Symbol, sp.Expr], ...]
    locals_: tuple[tuple[sp.Symbol, str], ...] = ()  # (symbol, what it is)
    learning_rate: float = 1e-3  # PyTorch's default
    torch_options: tuple[tuple[str, object], ...] = ()  # fixed options of its torch.optim class
    torch_state: tuple[tuple[str, str], ...] = ()  # (state name, its key in torch's state)

    @property
    def torch_class(self) -> str:
        """The ``torch.optim`` class name (the hyperparameters are its keyword arguments)."""
        return self.source.split("(")[0].rpartition(".")[2]

    @property
    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hyperparameters}

    def substitutions(self, values: dict) -> dict:
        """{symbol: exact value} for the hyperparameters, from ``values`` or the defaults."""
        subs = {}
        for h in self.hyperparameters:
            for symbol, x in zip(h.symbols, h.values(values.get(h.name, h.default))):
                subs[symbol] = sp.nsimplify(x, rational=True)
        return subs

    @functools.cached_property
    def plain_when(self) -> tuple[str, ...] | None:
        """The hyperparameters that, all zero, make this rule theta - eta g with no state
        (so the code generator's fastest step applies), or None if no such setting does."""
        zero = tuple(h for h in self.hyperparameters if h.size == 1 and h.default == 0)
        subs = {h.symbols[0]: 0 for h in zero}
        values: dict = {}
        for target, formula in self.assignments:
            values[target] = formula.subs(subs).subs(values)
        new = sp.expand(values[THETA])
        if sp.expand(new - (THETA - ETA * GRADIENT)) != 0 or new.free_symbols & {
                s for s, _ in self.state}:
            return None
        return tuple(h.name for h in zero)


def _hyper(name, default, symbols, meaning, **bounds) -> Hyperparameter:
    return Hyperparameter(name, default, tuple(sp.Symbol(s, nonnegative=True) for s in symbols),
                          meaning, **bounds)


def _weight_decay(default: float = 0.0, decoupled: bool = False) -> Hyperparameter:
    meaning = ("decoupled weight decay: every parameter shrinks by the factor 1 - eta lambda "
               "each step, apart from the gradient" if decoupled else
               "L2 weight decay on every parameter (biases too): lambda_wd theta is added "
               "to the gradient")
    return _hyper("weight_decay", default, ["lambda_wd"], meaning)


_MOMENTUM = _hyper("momentum", 0.9, ["mu"], "momentum factor: the fraction of the previous "
                   "velocity kept each step", high=1.0)
_BETAS = _hyper("betas", (0.9, 0.999), ["beta_1", "beta_2"], "decay rates of the running "
                "averages of the gradient (first moment) and of its square (second moment)",
                high=1.0)
_EPS = _hyper("eps", 1e-8, ["epsilon"], "added to the denominator for numerical stability")

lam, mu, eps = sp.Symbol("lambda_wd", nonnegative=True), _MOMENTUM.symbols[0], _EPS.symbols[0]
beta1, beta2 = _BETAS.symbols
alpha = sp.Symbol("alpha", nonnegative=True)
b, m1, v2 = sp.Symbol("b", real=True), sp.Symbol("m", real=True), sp.Symbol("v", real=True)
m_hat, v_hat = sp.Symbol("mhat", real=True), sp.Symbol("vhat", real=True)
theta, g, eta, t = THETA, GRADIENT, ETA, STEP

_ADAM_STATE = (("m", "exp_avg"), ("v", "exp_avg_sq"))

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.add("sgd", Optimizer(
    "sgd", "Gradient descent", "torch.optim.SGD", (_weight_decay(),), (),
    ((g, g + lam * theta), (theta, theta - eta * g))))
OPTIMIZERS.add("momentum", Optimizer(
    "momentum", "Gradient descent with momentum", "torch.optim.SGD(momentum=...)",
    (_MOMENTUM, _weight_decay()), ((b, "the velocity (momentum buffer)"),),
    ((g, g + lam * theta), (b, mu * b + g), (theta, theta - eta * b)),
    torch_state=(("b", "momentum_buffer"),)))
OPTIMIZERS.add("nesterov", Optimizer(
    "nesterov", "Nesterov momentum", "torch.optim.SGD(momentum=..., nesterov=True)",
    (_MOMENTUM, _weight_decay()), ((b, "the velocity (momentum buffer)"),),
    ((g, g + lam * theta), (b, mu * b + g), (theta, theta - eta * (g + mu * b))),
    torch_options=(("nesterov", True),), torch_state=(("b", "momentum_buffer"),)))
OPTIMIZERS.add("adam", Optimizer(
    "adam", "Adam", "torch.optim.Adam", (_BETAS, _EPS, _weight_decay()),
    ((m1, "the first moment: a running average of the gradient"),
     (v2, "the second moment: a running average of the squared gradient")),
    ((g, g + lam * theta), (m1, beta1 * m1 + (1 - beta1) * g),
     (v2, beta2 * v2 + (1 - beta2) * g ** 2),
     (m_hat, m1 / (1 - beta1 ** t)), (v_hat, v2 / (1 - beta2 ** t)),
     (theta, theta - eta * m_hat / (sp.sqrt(v_hat) + eps))),
    ((m_hat, "the bias-corrected first moment"), (v_hat, "the bias-corrected second moment")),
    torch_state=_ADAM_STATE))
OPTIMIZERS.add("adamw", Optimizer(
    "adamw", "AdamW", "torch.optim.AdamW", (_BETAS, _EPS, _weight_decay(0.01, decoupled=True)),
    ((m1, "the first moment: a running average of the gradient"),
     (v2, "the second moment: a running average of the squared gradient")),
    ((theta, theta * (1 - eta * lam)), (m1, beta1 * m1 + (1 - beta1) * g),
     (v2, beta2 * v2 + (1 - beta2) * g ** 2),
     (m_hat, m1 / (1 - beta1 ** t)), (v_hat, v2 / (1 - beta2 ** t)),
     (theta, theta - eta * m_hat / (sp.sqrt(v_hat) + eps))),
    ((m_hat, "the bias-corrected first moment"), (v_hat, "the bias-corrected second moment")),
    torch_state=_ADAM_STATE))
OPTIMIZERS.add("rmsprop", Optimizer(
    "rmsprop", "RMSprop", "torch.optim.RMSprop",
    (_hyper("alpha", 0.99, ["alpha"], "smoothing constant of the running average of the "
            "squared gradient", high=1.0), _EPS, _weight_decay()),
    ((v2, "a running average of the squared gradient"),),
    ((g, g + lam * theta), (v2, alpha * v2 + (1 - alpha) * g ** 2),
     (theta, theta - eta * g / (sp.sqrt(v2) + eps))), learning_rate=1e-2,
    torch_state=(("v", "square_avg"),)))


# ----------------------------------------------------------------------------- schedules

@dataclass(frozen=True)
class Schedule:
    """The learning rate of epoch e + 1 (after e epochs): ``rate`` in ETA (the initial rate),
    EPOCH and the parameters; ``epochs`` stands for the run's number of epochs."""

    name: str
    title: str
    source: str
    parameters: tuple[tuple[str, float | None, str], ...]  # (name, default or None: required, meaning)
    rate: sp.Expr


EPOCHS = sp.Symbol("E", positive=True, integer=True)  # cosine's default T_max: the run's epochs
SCHEDULES: Registry[Schedule] = Registry("schedule")
SCHEDULES.add("constant", Schedule("constant", "Constant rate", "no scheduler", (), ETA))
SCHEDULES.add("step", Schedule(
    "step", "Step decay", "torch.optim.lr_scheduler.StepLR",
    (("step_size", None, "epochs between decays"), ("gamma", 0.1, "factor of each decay")),
    ETA * sp.Symbol("gamma", positive=True) ** sp.floor(
        EPOCH / sp.Symbol("step_size", positive=True, integer=True))))
SCHEDULES.add("exponential", Schedule(
    "exponential", "Exponential decay", "torch.optim.lr_scheduler.ExponentialLR",
    (("gamma", None, "factor applied every epoch"),),
    ETA * sp.Symbol("gamma", positive=True) ** EPOCH))
SCHEDULES.add("cosine", Schedule(
    "cosine", "Cosine annealing", "torch.optim.lr_scheduler.CosineAnnealingLR",
    (("T_max", None, "epochs of one half cosine (default: the run's epochs)"),
     ("eta_min", 0.0, "the smallest rate")),
    sp.Symbol("eta_min", nonnegative=True) + (ETA - sp.Symbol("eta_min", nonnegative=True))
    * (1 + sp.cos(sp.pi * EPOCH / sp.Symbol("T_max", positive=True, integer=True))) / 2))


# ----------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """A descent variant of the documents: what one step averages over."""

    name: str
    title: str  # as the documents name it
    batch: str  # what m is, in words
    description: str  # inside a sentence
    batch_size: str  # the spec's spelling


VARIANTS: Registry[Variant] = Registry("descent variant")
VARIANTS.add("batch", Variant("batch", "Batch gradient descent",
                              "all N training examples, one step per epoch",
                              "batch gradient descent", "batch_size: full"))
VARIANTS.add("sgd", Variant("sgd", "Stochastic gradient descent",
                            "one example (m = 1), N steps per epoch",
                            "stochastic gradient descent", "batch_size: 1"))
VARIANTS.add("minibatch", Variant("minibatch", "Mini-batch gradient descent",
                                  "a batch of B examples (m = B), N/B steps per epoch",
                                  "mini-batch gradient descent", "batch_size: B"))


def variant_of(batch_size: int | str) -> Variant:
    """The documents' name for steps of ``batch_size`` examples."""
    if batch_size == FULL_BATCH:
        return VARIANTS["batch"]
    return VARIANTS["sgd"] if batch_size == 1 else VARIANTS["minibatch"]


@dataclass(frozen=True)
class LegacyOptimizer:
    """An ``optimizer:`` value from before update rules: plain steps of a batch size."""

    batch_size: int | str | None  # None: the spec's batch_size (or the default)
    spelling: str  # the new spelling, for the message


LEGACY_LEARNING_RATE = 0.1  # the default before update rules, kept for the old names

# old `optimizer:` values that named a descent variant; `sgd` is still an optimizer (the
# plain rule), now at the spec's batch_size
LEGACY_OPTIMIZERS = {
    "batch": LegacyOptimizer(FULL_BATCH, "optimizer: sgd, batch_size: full"),
    "minibatch": LegacyOptimizer(None, "optimizer: sgd, batch_size: <B>"),
}
