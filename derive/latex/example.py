"""A worked numeric example: concrete values (YAML) -> every quantity of the Derivation, in numbers.

The values file gives each parameter, one input and its target::

    W1: [[0.9, 0.2, 0.4, 0.3], [-0.5, 0.4, 0.3, 0.3], ...]   # n_1 rows of n_0 numbers
    b1: 0.5                 # a list of n_1 numbers, or one number for every unit
    W2: [[0.5, 0.8, -0.6, 0.3]]
    b2: 0.3
    x: [0.3, 0.5, -0.4, 0.3]
    y: 1                    # a number, a list of n_L numbers, or a class label (categorical)
    reference:              # optional: figures printed in the source, to compare with
      source: seed 003, binary example
      z1: [0.8, 0.52, 0.68, 0.7]
      yhat: 0.7207
      note: the source cuts z2 = 0.948919 to 0.948 before the output layer

It is read like a spec (composed safely, every value with its line) and checked against the
Derivation's shapes; problems are ``SpecError``s naming the file, line and field.  The numbers
come from evaluating the Derivation's own definitions, in order, on explicit matrices
(``derive.proof``'s evaluator), in exact arithmetic then 30-digit floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from ..activations import exact
from ..derivation import Derivation, M
from ..errors import SpecError
from ..local import INDEX
from ..losses import LOSSES
from ..proof import evaluate_definitions
from ..yamlread import Item, did_you_mean, expected, item_error, number, read_document, read_text

__all__ = ["Example", "Figure", "NumericExample", "load_example", "load_example_text",
           "evaluate_example", "DIGITS"]

DIGITS = 30  # working precision of the numeric evaluation
_REFERENCE_TEXT = ("source", "note")


@dataclass(frozen=True)
class Figure:
    """A figure printed in the source: its values and the decimals they were printed with."""

    name: str  # z1, a1, yhat, L
    values: tuple[float, ...]
    decimals: int
    line: int


@dataclass(frozen=True)
class Example:
    """Checked values for one example: parameters, input, target (exact rationals)."""

    source: str  # the values file, for messages and the document
    params: dict[str, sp.Matrix]  # "W1" -> (n_1 x n_0), "b1" -> (n_1 x 1)
    scalar_biases: dict[str, float]  # biases given as one number for every unit
    x: sp.Matrix  # (n_0 x 1)
    y: sp.Matrix  # (n_L x 1)
    label: int | None  # the class label, when y was given as one
    reference: tuple[Figure, ...] = ()
    reference_source: str = ""
    reference_note: str = ""


@dataclass(frozen=True)
class NumericExample:
    """Every quantity of the Derivation evaluated on an Example (floats to DIGITS digits)."""

    example: Example
    values: dict[str, sp.Matrix]  # MatrixSymbol name -> value: Z1, A1, delta1, dW1, G1, ...
    loss: sp.Float  # the per-example loss L
    objective: sp.Float  # J for this one example: L plus the regularisation

    def __getitem__(self, name: str) -> sp.Matrix:
        return self.values[name]


# ----------------------------------------------------------------------------- loading

def load_example(path: str | Path, derivation: Derivation) -> Example:
    """Read and check the values file at ``path`` against ``derivation``'s shapes."""
    return load_example_text(read_text(path, "the example values"), derivation, str(path))


def load_example_text(text: str, derivation: Derivation, filename: str = "<string>") -> Example:
    try:
        return _example(_document(text), derivation, filename)
    except SpecError as err:
        err.file = err.file or filename
        raise


def _document(text: str) -> Item:
    return read_document(text, "the example values are empty; expected a mapping with the keys "
                               "W1, b1, ..., x, y")


def _keys(derivation: Derivation) -> tuple[str, ...]:
    params = tuple(f"{kind}{layer.index}" for layer in derivation.layers for kind in ("W", "b"))
    return params + ("x", "y")


def _example(root: Item, derivation: Derivation, filename: str) -> Example:
    required = _keys(derivation)
    allowed = required + ("reference",)
    if not isinstance(root.value, dict):
        raise expected(root, f"a mapping with the keys {', '.join(required)}")
    for key, child in root.value.items():
        if key not in allowed:
            raise item_error(child, f"unknown key {key!r} (expected: {', '.join(allowed)}; the "
                                    f"network {derivation.spec.name} has {derivation.spec.depth} layers)",
                             did_you_mean(key, allowed), at_key=True)
    missing = [key for key in required if key not in root.value]
    if missing:
        raise SpecError(f"missing value {missing[0]!r} (required: {', '.join(required)})",
                        line=root.line, field=missing[0])
    fields = root.value
    params: dict[str, sp.Matrix] = {}
    scalar_biases: dict[str, float] = {}
    for layer in derivation.layers:
        W, b = layer.W, layer.b
        params[W.name] = _matrix(fields[W.name], *W.shape, what=f"the weights of layer {layer.index}")
        item = fields[b.name]
        if number(item) is not None:
            value = _finite(item)
            scalar_biases[b.name] = value
            params[b.name] = sp.Matrix([exact(value)] * b.shape[0])
        else:
            params[b.name] = _vector(item, b.shape[0], f"the biases of layer {layer.index}, "
                                                        "or one number for every unit")
    n0, nL = derivation.X.shape[0], derivation.Y.shape[0]
    x = _vector(fields["x"], n0, "one input example")
    y, label = _target(fields["y"], derivation, nL)
    reference, source, note = _reference(fields.get("reference"), derivation)
    return Example(filename, params, scalar_biases, x, y, label, reference, source, note)


def _finite(item: Item) -> float:
    value = number(item)
    if value is None:
        raise expected(item, "a number")
    if not math.isfinite(value):
        raise item_error(item, f"expected a finite number, got {item.text}")
    return value


def _numbers(item: Item, count: int, wanted: str) -> list[sp.Rational]:
    if not isinstance(item.value, list):
        raise expected(item, wanted)
    if len(item.value) != count:
        raise item_error(item, f"expected {wanted}, got {len(item.value)} number"
                               f"{'s' if len(item.value) != 1 else ''}", at_key=True)
    return [exact(_finite(child)) for child in item.value]


def _vector(item: Item, n: int, what: str) -> sp.Matrix:
    return sp.Matrix(_numbers(item, n, f"a list of {n} numbers ({what})"))


def _matrix(item: Item, rows: int, cols: int, what: str) -> sp.Matrix:
    wanted = f"{rows} row{'s' if rows != 1 else ''} of {cols} numbers ({what}: {rows}x{cols})"
    if not isinstance(item.value, list):
        raise expected(item, f"a list of {wanted}")
    children = item.value
    if rows == 1 and children and not isinstance(children[0].value, list):
        children = [item]  # a single row may be written flat: [0.5, 0.8, -0.6, 0.3]
    if len(children) != rows:
        raise item_error(item, f"expected {wanted}, got {len(children)} row"
                               f"{'s' if len(children) != 1 else ''}", at_key=True)
    return sp.Matrix([_numbers(row, cols, f"{cols} numbers in each row of {what}")
                      for row in children])


def _target(item: Item, derivation: Derivation, n: int) -> tuple[sp.Matrix, int | None]:
    loss = LOSSES[derivation.spec.loss]
    labels = loss.labels
    if loss.one_hot:
        value = item.value
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < n:
                raise item_error(item, f"expected a class label from 0 to {n - 1}, got {value}")
            return sp.Matrix([1 if r == value else 0 for r in range(n)]), value
        if labels == "sparse":
            raise expected(item, f"a class label from 0 to {n - 1}")
        y = _vector(item, n, f"a one-hot target of {n} entries, or a class label")
        if sorted(y) != [0] * (n - 1) + [1]:
            raise item_error(item, f"expected a one-hot target (one 1, the rest 0) or a class "
                                   f"label from 0 to {n - 1}")
        return y, None
    if n == 1 and number(item) is not None:
        y = sp.Matrix([exact(_finite(item))])
    else:
        y = _vector(item, n, f"a target of {n} numbers")
    if labels == "binary" and any(v not in (0, 1) for v in y):
        raise item_error(item, "expected 0/1 targets (binary cross-entropy)")
    return y, None


def _reference(item: Item | None, derivation: Derivation) -> tuple[tuple[Figure, ...], str, str]:
    if item is None:
        return (), "", ""
    if not isinstance(item.value, dict):
        raise expected(item, "a mapping of figures printed in the source (z1, a1, ..., yhat, L)")
    shapes = {"yhat": derivation.Y.shape[0], "L": 1}
    for layer in derivation.layers:
        shapes[f"z{layer.index}"] = shapes[f"a{layer.index}"] = layer.units
    allowed = tuple(shapes) + _REFERENCE_TEXT
    figures, texts = [], {"source": "", "note": ""}
    for key, child in item.value.items():
        if key not in allowed:
            raise item_error(child, f"unknown figure {key!r} (expected: {', '.join(allowed)})",
                             did_you_mean(key, allowed), at_key=True)
        if key in _REFERENCE_TEXT:
            if not isinstance(child.value, str):
                raise expected(child, "a text")
            texts[key] = child.value
            continue
        n = shapes[key]
        scalars = [child] if number(child) is not None else child.value
        if not isinstance(scalars, list) or len(scalars) != n:
            raise expected(child, f"{'a number' if n == 1 else f'a list of {n} numbers'}")
        values = tuple(_finite(s) for s in scalars)
        decimals = max(_decimals(s.text) for s in scalars)
        figures.append(Figure(key, values, decimals, child.line))
    return tuple(figures), texts["source"], texts["note"]


def _decimals(text: str) -> int:
    """Decimals a figure was printed with: '0.7207' -> 4, '-0.09' -> 2, '1' -> 0."""
    mantissa = text.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


# ----------------------------------------------------------------------------- evaluation

def evaluate_example(derivation: Derivation, example: Example) -> NumericExample:
    """Evaluate the Derivation's definitions, in order, on the example's values."""
    env: dict = {M: 1, derivation.X: example.x, derivation.Y: example.y}
    for layer in derivation.layers:
        env[layer.W] = example.params[layer.W.name]
        env[layer.b] = example.params[layer.b.name]
    evaluate_definitions(derivation, env, finish=lambda value: value.evalf(DIGITS))
    values = {symbol.name: value for symbol, value in env.items()
              if isinstance(symbol, sp.MatrixSymbol)}
    loss = _per_example_loss(derivation, env)
    return NumericExample(example, values, loss, loss + _regularization(derivation, env))


def _per_example_loss(derivation: Derivation, env: dict) -> sp.Float:
    I = INDEX
    last = derivation.layers[-1]
    n = last.units
    expr = derivation.output.per_example.subs(I.n, n).doit()
    a, y = env[last.A], env[derivation.Y]
    values = {I.a[r + 1]: a[r, 0] for r in range(n)} | {I.y[r + 1]: y[r, 0] for r in range(n)}
    return sp.Float(expr.xreplace(values).evalf(DIGITS), DIGITS)


def _regularization(derivation: Derivation, env: dict) -> sp.Float:
    """The objective's penalties on the example's weights."""
    weights = [w for layer in derivation.layers for w in env[layer.W]]
    total = derivation.objective.penalty(weights)
    return sp.Float(sp.sympify(total).evalf(DIGITS), DIGITS)
