"""Every activation, declared once: its SymPy expression, its LaTeX name, its parameters.

Derivatives, LaTeX and NumPy code are all derived from these declarations (see
``derive.local``); nothing about an activation is written anywhere else.  Adding one is a
single ``ACTIVATIONS.add(...)`` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import sympy as sp

from .registry import Registry

__all__ = ["Param", "Activation", "ACTIVATIONS", "exact"]


def exact(value: float) -> sp.Rational:
    """The number exactly as written in the spec, as a rational: 0.6115 -> 1223/2000.

    Not ``nsimplify``, which guesses closed forms: it turns 0.6115 into
    2**(46/53)*3**(195/212)*5**(193/424)*7**(99/106)/105 and 0.333333333 into 1/3.
    """
    return sp.Rational(repr(float(value)))


@dataclass(frozen=True)
class Param:
    """A numeric parameter of an activation (leaky ReLU's alpha) or of a loss (Huber's delta)."""

    default: float
    check: Callable[[float], bool]
    expected: str  # what `check` accepts, for error messages
    latex: str


@dataclass(frozen=True)
class Activation:
    """One activation g.

    ``expr(z, **params)`` is g(z) for an element-wise activation.  A vector activation
    (softmax) instead gives its i-th output in index form, ``expr(z, i, k, n)`` with
    ``z`` an IndexedBase and the sum running over ``k`` from 1 to ``n``.
    """

    name: str
    latex: str
    expr: Callable[..., sp.Expr]
    params: dict[str, Param] = field(default_factory=dict)
    vector: bool = False
    output_interval: tuple[float, float] = (-math.inf, math.inf)  # open range of g
    init: str = "xavier"  # default initialisation for layers using it
    last_layer_only: bool = False

    def instantiate(self, z: sp.Symbol, values: dict[str, float]) -> sp.Expr:
        """g(z) with the parameter values substituted as exact rationals."""
        params = {key: exact(values.get(key, p.default)) for key, p in self.params.items()}
        return self.expr(z, **params)

    @property
    def is_probability(self) -> bool:
        """Outputs lie in (0, 1), as a cross-entropy loss requires."""
        return self.output_interval[0] >= 0 and self.output_interval[1] <= 1


def _alpha(default: float, expected: str, check: Callable[[float], bool]) -> dict[str, Param]:
    return {"alpha": Param(default, check, expected, r"\alpha")}


ACTIVATIONS: Registry[Activation] = Registry("activation")
_add = ACTIVATIONS.add

_add("identity", Activation("identity", r"\operatorname{id}", lambda z: z), aliases=("linear",))
_add("sigmoid", Activation("sigmoid", r"\sigma", lambda z: 1 / (1 + sp.exp(-z)),
                           output_interval=(0.0, 1.0)))
_add("tanh", Activation("tanh", r"\tanh", sp.tanh, output_interval=(-1.0, 1.0)))
_add("relu", Activation(
    "relu", r"\operatorname{ReLU}",
    lambda z: sp.Piecewise((0, z <= 0), (z, True)),
    output_interval=(0.0, math.inf), init="he"))
_add("leaky_relu", Activation(
    "leaky_relu", r"\operatorname{LReLU}",
    lambda z, alpha: sp.Piecewise((alpha * z, z <= 0), (z, True)),
    params=_alpha(0.01, "a number with 0 < alpha < 1", lambda a: 0 < a < 1),
    init="he"))
_add("elu", Activation(
    "elu", r"\operatorname{ELU}",
    lambda z, alpha: sp.Piecewise((alpha * (sp.exp(z) - 1), z <= 0), (z, True)),
    params=_alpha(1.0, "a positive number", lambda a: a > 0),
    init="he"))
_add("softplus", Activation("softplus", r"\operatorname{softplus}",
                            lambda z: sp.log(1 + sp.exp(z)), output_interval=(0.0, math.inf)))
_add("swish", Activation("swish", r"\operatorname{swish}", lambda z: z / (1 + sp.exp(-z)),
                         init="he"), aliases=("silu",))
_add("gelu", Activation("gelu", r"\operatorname{GELU}",
                        lambda z: z * (1 + sp.erf(z / sp.sqrt(2))) / 2, init="he"))
_add("softmax", Activation(
    "softmax", r"\operatorname{softmax}",
    lambda z, i, k, n: sp.exp(z[i]) / sp.Sum(sp.exp(z[k]), (k, 1, n)),
    vector=True, output_interval=(0.0, 1.0), last_layer_only=True))

_ZERO_GRADIENT = ("its derivative is zero almost everywhere (and undefined at 0), so no gradient "
                  "reaches the weights; use sigmoid or tanh for a smooth step")
ACTIVATIONS.refuse("sign", _ZERO_GRADIENT)
ACTIVATIONS.refuse("step", _ZERO_GRADIENT)
ACTIVATIONS.refuse("heaviside", _ZERO_GRADIENT)
