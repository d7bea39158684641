"""What each symbol of a derivation stands for, as data.

The Derivation maps every symbol it uses to a ``SymbolRole`` (``Derivation.roles``); printers
read the roles to decide how a symbol is written (``W^{[2]}``, ``\\delta_{3}``, ``x``), so no
printer parses a symbol's name to find its layer or its kind.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

__all__ = ["Role", "SymbolRole", "GRADIENT_OF", "DATA_ROLES"]


class Role(Enum):
    """The kinds of quantity in the documents' notation."""

    INPUT = "input"  # x (X in the batch): the network's input, a^{[0]}
    TARGET = "target"  # y (Y)
    WEIGHT = "weight"  # W^{[l]}
    BIAS = "bias"  # b^{[l]}
    PREACTIVATION = "preactivation"  # z^{[l]} = W^{[l]} a^{[l-1]} + b^{[l]}
    ACTIVATION = "activation"  # a^{[l]} = g_l(z^{[l]})
    LOCAL_DERIVATIVE = "local derivative"  # g_l'(z^{[l]}), entry by entry
    ERROR = "error"  # delta^{[l]} = dL/dz^{[l]}
    WEIGHT_GRADIENT = "weight gradient"  # dJ/dW^{[l]}
    BIAS_GRADIENT = "bias gradient"  # dJ/db^{[l]}
    SIGN = "sign"  # sign(W^{[l]}), the L1 penalty's gradient entry by entry
    WIDTH = "width"  # n_l, the number of units of layer l
    LOSS = "loss"  # L for one example (J for the batch)


class SymbolRole(NamedTuple):
    """A symbol's role and its layer; ``layer`` is None for an index-form symbol (a_j, W_ik)
    that stands for any layer."""

    role: Role
    layer: int | None = None


GRADIENT_OF = {Role.WEIGHT: Role.WEIGHT_GRADIENT, Role.BIAS: Role.BIAS_GRADIENT}

# quantities with one column per example in the batch
DATA_ROLES = frozenset({Role.INPUT, Role.TARGET, Role.PREACTIVATION, Role.ACTIVATION,
                        Role.LOCAL_DERIVATIVE, Role.ERROR})
