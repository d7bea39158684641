"""Every loss, declared once: its per-unit SymPy expression, its LaTeX name, its labels, its
parameters.

Per example a loss sums its per-unit expression over the output units k; the training loss
is the mean over the batch plus the regularisation (see ``derive.derivation``).  A loss with
parameters (Huber's delta) is used through ``Loss.instantiate``, which fixes their values as
the spec gives them, and ``Loss.unit``, the per-unit expression with those values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

from .activations import Param, exact
from .registry import Registry

__all__ = ["Loss", "LOSSES"]


@dataclass(frozen=True)
class Loss:
    """One loss L(a, y) = sum_k l(a_k, y_k), with l = ``per_unit(a, y, **params)``.

    ``labels`` says what targets the generated code accepts:
    ``"real"`` (m, n_L) values; ``"binary"`` 0/1 per output unit; ``"categorical"`` one-hot
    rows or integer class labels; ``"sparse"`` integer class labels only.
    """

    name: str
    latex: str
    per_unit: Callable[..., sp.Expr]
    labels: str
    needs_probabilities: bool = False  # outputs must lie in (0, 1)
    unit_outputs_reason: str | None = None  # why a vector activation (softmax) cannot precede it
    params: dict[str, Param] = field(default_factory=dict)
    values: tuple[tuple[str, sp.Rational], ...] = ()  # the parameters' values, by instantiate

    def instantiate(self, values: Mapping[str, float]) -> Loss:
        """This loss with its parameters fixed: ``values`` (the spec's), else the defaults, as
        exact rationals (2.5 -> 5/2)."""
        fixed = tuple((key, exact(values.get(key, p.default))) for key, p in self.params.items())
        return dataclasses.replace(self, values=fixed)

    def unit(self, a: sp.Expr, y: sp.Expr) -> sp.Expr:
        """l(a, y), one output unit's loss, with the parameters' values substituted: every
        use of a loss goes through here, so none can miss the spec's values."""
        if len(self.values) != len(self.params):
            raise ValueError(f"the loss {self.name} has parameters ({', '.join(self.params)}): "
                             "use loss.instantiate(values) first")
        return self.per_unit(a, y, **dict(self.values))

    @property
    def one_hot(self) -> bool:
        """Targets are one-hot rows (or integer labels turned into them), so sum_k y_k = 1."""
        return self.labels in ("categorical", "sparse")


LOSSES: Registry[Loss] = Registry("loss")

LOSSES.add("mse", Loss("mse", r"\mathcal{L}_{\mathrm{MSE}}",
                       lambda a, y: (a - y) ** 2 / 2, labels="real"),
           aliases=("quadratic", "mean_squared_error"))
LOSSES.add("binary_crossentropy", Loss(
    "binary_crossentropy", r"\mathcal{L}_{\mathrm{BCE}}",
    lambda a, y: -(y * sp.log(a) + (1 - y) * sp.log(1 - a)),
    labels="binary", needs_probabilities=True,
    unit_outputs_reason=(
        "it scores each output unit as an independent yes/no probability, while softmax "
        "couples the units into one distribution (and log(1 - softmax) has no stable form)")),
    aliases=("bce",))
LOSSES.add("categorical_crossentropy", Loss(
    "categorical_crossentropy", r"\mathcal{L}_{\mathrm{CE}}",
    lambda a, y: -y * sp.log(a), labels="categorical", needs_probabilities=True),
    aliases=("cross_entropy", "crossentropy"))
LOSSES.add("sparse_categorical_crossentropy", Loss(
    "sparse_categorical_crossentropy", r"\mathcal{L}_{\mathrm{CE}}",
    lambda a, y: -y * sp.log(a), labels="sparse", needs_probabilities=True))
LOSSES.add("mae", Loss("mae", r"\mathcal{L}_{\mathrm{MAE}}",
                       lambda a, y: sp.Abs(a - y), labels="real"),
           aliases=("mean_absolute_error", "l1"))


def _huber(a: sp.Expr, y: sp.Expr, delta: sp.Expr) -> sp.Expr:
    """Quadratic within delta of the target, linear beyond, as torch.nn.HuberLoss(delta).

    (torch's SmoothL1Loss(beta) is this divided by beta, so it is not an alias.)
    """
    r = a - y
    return sp.Piecewise((r**2 / 2, sp.Abs(r) <= delta), (delta * (sp.Abs(r) - delta / 2), True))


LOSSES.add("huber", Loss(
    "huber", r"\mathcal{L}_{\mathrm{Huber}}", _huber, labels="real",
    params={"delta": Param(1.0, lambda d: d > 0, "a finite number > 0",
                           r"\delta_{\mathrm{H}}")}),
    aliases=("huber_loss",))
