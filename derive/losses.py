"""Every loss, declared once: its per-unit SymPy expression, its LaTeX name, its labels.

Per example a loss sums its per-unit expression over the output units k; the training loss
is the mean over the batch plus the regularisation (see ``derive.derivation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .registry import Registry

__all__ = ["Loss", "LOSSES"]


@dataclass(frozen=True)
class Loss:
    """One loss L(a, y) = sum_k per_unit(a_k, y_k).

    ``labels`` says what targets the generated code accepts:
    ``"real"`` (m, n_L) values; ``"binary"`` 0/1 per output unit; ``"categorical"`` one-hot
    rows or integer class labels; ``"sparse"`` integer class labels only.
    """

    name: str
    latex: str
    per_unit: Callable[[sp.Expr, sp.Expr], sp.Expr]
    labels: str
    needs_probabilities: bool = False  # outputs must lie in (0, 1)
    unit_outputs_reason: str | None = None  # why a vector activation (softmax) cannot precede it

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
