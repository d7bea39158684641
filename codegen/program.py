"""The ``Program``: what a network computes, as ordered statements, between the Derivation
and the printers.

Two views of the same formulas:

* the *functional* view (``Assign``): forward, per-example loss and backward as one formula
  per named array, in the documents' convention, for the functional API (``forward``,
  ``backward``) that allocates its results;
* the *step* view (``Op`` statements over named buffers): one training step on a batch of m
  examples, every array preallocated, every statement writing into an existing buffer.  It
  starts as the plain sequence forward -> output error -> recurrence -> gradients -> updates
  and is rewritten by the named passes of ``codegen.passes`` (update scheduling, learning-rate
  fusion, bias sums as products, rank-one updates).

Statements name arrays by strings (``"Z1"``, ``"W2"``); an operand may read a transpose
(``"W1.T"``).  Element-wise and column-wise formulas stay SymPy expressions (``Compute``)
until a printer writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import sympy as sp

__all__ = ["Assign", "LayerInfo", "Buffer", "Product", "AddBias", "Compute", "Scale",
           "Hadamard", "ColumnSums", "Update", "Subtract", "RankOne", "OneExample", "WhenPlain",
           "Op", "Step", "Program", "base_name", "writes"]


def base_name(operand: str) -> str:
    """The array an operand reads: ``"W1.T"`` -> ``"W1"``; ``"A0[0]"`` -> ``"A0"``."""
    return operand.split(".")[0].split("[")[0]


# ----------------------------------------------------------------------------- functional

@dataclass(frozen=True)
class Assign:
    """``target = expr`` in the functional view.

    ``kind`` is ``"matrix"`` (a matrix expression in the documents' column convention),
    ``"elementwise"`` (a scalar formula applied entry by entry; ``names`` maps its scalar
    symbols to arrays) or ``"columnwise"`` (index form over the units of each example).
    ``like`` names the array whose dtype constants take.
    """

    target: str
    expr: sp.Basic
    kind: str
    names: tuple[tuple[sp.Basic, str], ...] = ()
    comment: str = ""
    like: str | None = None
    samples_first: bool = True  # matrix kind: the target is stored one row per example


@dataclass(frozen=True)
class LayerInfo:
    index: int
    fan_in: int
    units: int
    activation: str
    params_text: str  # "alpha=0.1" or ""
    init: str


# ----------------------------------------------------------------------------- step

@dataclass(frozen=True)
class Buffer:
    """A preallocated array of the step: rows ``"m"`` (the batch) or a number of units.

    ``like`` allocates with the shape and layout of a parameter (``np.empty_like``).
    """

    name: str
    shape: tuple[str | int, ...] = ()
    like: str | None = None
    fill: float | None = None
    given: str | None = None  # the array is the caller's: ``grads[given]`` (the gradient step)


@dataclass(frozen=True)
class Product:
    """``out = a @ b``; ``blas`` is False for the weight gradient's matrix product, which
    is a plain matmul at every batch size (the rank-one pass replaces it at m = 1)."""

    out: str
    a: str
    b: str
    comment: str = ""
    blas: bool = True

    @property
    def reads(self):
        return {base_name(self.a), base_name(self.b)}


@dataclass(frozen=True)
class AddBias:
    """``out += b`` broadcast over the rows."""

    out: str
    b: str

    @property
    def reads(self):
        return {self.out, self.b}


@dataclass(frozen=True)
class Compute:
    """``out = expr`` entry by entry (or column by column) with the leaves named by ``names``."""

    out: str
    expr: sp.Basic
    names: tuple[tuple[sp.Basic, str], ...]
    comment: str = ""

    @property
    def reads(self):
        return {name for _, name in self.names}


@dataclass(frozen=True)
class Scale:
    """``out *= factor``, factor a Python expression of the step's arguments."""

    out: str
    factor: str
    comment: str = ""

    @property
    def reads(self):
        return {self.out}


@dataclass(frozen=True)
class Hadamard:
    """``out *= other`` entry by entry."""

    out: str
    other: str
    comment: str = ""

    @property
    def reads(self):
        return {self.out, self.other}


@dataclass(frozen=True)
class ColumnSums:
    """``out = 1^T src``: the sum over the examples (a bias gradient)."""

    out: str
    src: str

    @property
    def reads(self):
        return {self.src}


@dataclass(frozen=True)
class Update:
    """``param <- param - eta grad`` with the gradient ``grad = (1/m) data + terms``: the
    plain program before the passes.  ``regularization`` holds (kind, strength name)."""

    param: str
    grad: str
    regularization: tuple[tuple[str, str], ...] = ()
    comment: str = ""

    @property
    def reads(self):
        return {self.param, self.grad}


@dataclass(frozen=True)
class Subtract:
    """``param -= delta`` with the plain rule only (delta = eta dJ/dparam, after the rate
    fusion): a rule with state leaves the parameters to its update."""

    param: str
    delta: str
    comment: str = ""

    @property
    def reads(self):
        return {self.param, self.delta}


@dataclass(frozen=True)
class RankOne:
    """``param -= d a^T`` for one example, in place (BLAS ger), with the plain rule."""

    param: str
    d: str
    a: str

    @property
    def reads(self):
        return {self.param, base_name(self.d), base_name(self.a)}


@dataclass(frozen=True)
class OneExample:
    """Statements for a one-example step (m = 1, when BLAS ger is at hand) and otherwise."""

    then: tuple
    otherwise: tuple

    @property
    def reads(self):
        return set().union(*(s.reads for s in self.then + self.otherwise))


@dataclass(frozen=True)
class WhenPlain:
    """Statements for the plain rule (``then``) and for a rule with state (``otherwise``)."""

    then: tuple
    otherwise: tuple

    @property
    def reads(self):
        return set().union(*(s.reads for s in self.then + self.otherwise))


Op = Union[Product, AddBias, Compute, Scale, Hadamard, ColumnSums, Update, Subtract,
           RankOne, OneExample, WhenPlain]


def writes(op) -> set[str]:
    """The arrays a statement writes."""
    if isinstance(op, (OneExample, WhenPlain)):
        return set().union(*(writes(s) for s in op.then + op.otherwise))
    if isinstance(op, (Update, Subtract, RankOne)):
        return {op.param}
    return {base_name(op.out)}


@dataclass(frozen=True)
class Step:
    """One descent step on m examples: buffers, then statements, grouped by section title.

    ``sections`` is a tuple of (title, statements); ``rows`` names, for a one-example step,
    the row views of arrays that rank-one updates read.
    """

    inputs: tuple[str, str]  # the batch's X and Y buffer names
    output_error: str  # the buffer of dl/dZ_L, where the backward pass starts
    buffers: tuple[Buffer, ...]
    sections: tuple[tuple[str, tuple], ...]
    passes: tuple[str, ...] = ()  # the passes applied, in order

    @property
    def statements(self) -> tuple:
        return tuple(op for _, ops in self.sections for op in ops)

    def with_sections(self, sections, pass_name: str) -> "Step":
        return replace(self, sections=tuple(sections), passes=self.passes + (pass_name,))


@dataclass(frozen=True)
class Program:
    """Everything a printer needs for one network."""

    name: str
    layer_sizes: tuple[int, ...]
    layers: tuple[LayerInfo, ...]
    loss: str
    labels: str  # what targets the loss takes: real | binary | categorical | sparse
    probability: bool  # outputs are probabilities (softmax or sigmoid)
    l1: float
    l2: float
    dtype: str
    training: dict
    forward: tuple[Assign, ...]
    per_example_loss: Assign
    backward: tuple[Assign, ...]
    gradients: tuple[tuple[str, str], ...]  # (parameter key, gradient array)
    step: Step  # the training step: g = rate dJ/dtheta, and with the plain rule theta -= g
    description: dict = field(default_factory=dict)  # texts for the module's docstring
    switches: tuple[tuple[int, sp.Expr, sp.Symbol], ...] = ()  # (layer, s(z), z): kinks at s = 0
