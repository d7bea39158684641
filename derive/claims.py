"""Stage 3d: ``Derivation -> ClaimsReport``: a published formula proven or refuted.

A claims file (YAML) lists formulas someone printed, each naming a quantity of the network::

    document: seed 000, "Roll your sleeves! Let us do some partial derivatives."
    symbols: {h: a1}                      # the document's names for the network's quantities
    example: ../values/net_values.yaml    # optional: the worked example, for numbers
    per_example: true                     # the formulas are about one example's loss L
    claims:
      - claim: "dW1 = relu(W2^T (yhat - y)) x^T"
        source: eq. (6)
        expect: false                     # default true
      - claim: "dW1 = ((W2^T (yhat - y)) ∘ relu'(z1)) x^T"

The formula syntax is ``derive.formula``'s.  Each claim is checked against the Derivation
(itself proven against SymPy's diff by ``derive.proof``), on a small instance of the spec
(widths at most 3, every layer kept, so that layer numbers mean what they say) and at random
rational points, in exact arithmetic with the proof's model (``derive.proof.exact_model``:
each transcendental value gets a random rational stand-in, consistently on both sides).  A
formula that differs at a point is refuted with a counterexample: the instance, the point
(every parameter, the input and the target), the claimed and the derived values, in real
numbers.  Shapes are checked first on the spec's own sizes.

* a gradient, error or forward quantity: equal at every point, in the file's reading: the
  batch objective J over m = BATCH examples (so a missing 1/m is refuted), or, with
  ``per_example: true`` (on the file, or on one claim), one example's loss L; whether m
  appears in the formula decides nothing.  The loss L and dL/da are one example's always;
* a local derivative ``d g/dz``: equal at rational z of both signs;
* an update rule ``W1 := ...``: equal, at random learning rates, to the spec's rule applied to
  the derived gradient: plain gradient descent when the spec names no training.optimizer (the
  documents' rule, whatever the trainer's default), else that optimizer's first step.  A
  refuted rule's note says whether a small step of it lowers J (a descent direction is not
  the rule);
* a number of the worked example (``z1[3] = -0.04``): the exact value rounded to the decimals
  printed.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Callable

import sympy as sp

from .activations import ACTIVATIONS
from .derivation import Derivation, M, derive
from .errors import SpecError
from .formula import (Call, Equation, FormulaError, Name, Node, Num, Power, Transpose,
                      Unary, Vector, parse_equation)
from .netspec import LayerSpec, NetSpec
from .optimizers import ETA, GRADIENT, OPTIMIZERS, STEP, THETA
from .primitives import Phi, phi, to_primitives
from .proof import MAX_WIDTH, KindsInstance, evaluate_definitions, exact_model, shrink_kinds
from .registry import UnknownName
from .yamlread import Item, did_you_mean, expected, item_error, read_document, read_text

__all__ = ["Claim", "ClaimsFile", "claims_names", "notation", "Counterexample", "Verdict", "ClaimsReport", "load_claims",
           "load_claims_text", "check_claims", "claims_instance", "spec_rule", "FUNCTIONS", "POINTS",
           "BATCH", "READINGS", "FAULTS", "Note"]

POINTS = 3  # random rational points per claim
DIGITS = 30  # the real numbers shown in a counterexample
AGREE = sp.Float("1e-25")  # exact stand-ins differ but the real values agree this closely
STEP_RATE = sp.Rational(1, 1000)  # the learning rate of the step that shows J rising
Z = sp.Symbol("z", real=True)

# functions the syntax knows besides the registry's activations: name -> g(z)
FUNCTIONS: dict[str, sp.Expr] = {
    "exp": sp.exp(Z), "log": sp.log(Z), "ln": sp.log(Z), "sqrt": sp.sqrt(Z), "abs": sp.Abs(Z),
    "sign": sp.sign(Z), "erf": sp.erf(Z),
    "Phi": Phi(Z).rewrite("definition"), "phi": phi(Z).rewrite("definition"),
}
_REDUCTIONS = ("sum", "rowsum", "colsum")
_LEARNING_RATE = ("eta", "η", "alpha", "α", "lr")
_KEYS = ("document", "symbols", "example", "per_example", "claims", "notes")
_CLAIM_KEYS = ("claim", "source", "expect", "note", "per_example", "fault")
_NOTE_KEYS = ("quote", "source", "fault", "note")
# what kind of fault a refuted claim (or a note) records: a referee's words
FAULTS = ("formula error", "index or transpose slip", "notation slip", "heading typo",
          "wrong number", "number cut not rounded", "wording slip", "unusual notation")
BATCH = 2  # examples of the batch reading: J over m >= 2 examples, so a missing 1/m shows


# ----------------------------------------------------------------------------- literals

@dataclass(frozen=True)
class Claim:
    text: str  # the equation as written
    equation: Equation
    source: str  # where the document prints it
    expect: bool  # what the author of the file expects: true (proven) or false (refuted)
    note: str
    line: int
    column: int | None  # of the formula in the file, when it can be located
    field: str  # claims[3].claim
    per_example: bool | None = None  # the claim's own reading, overriding the file's
    fault: str = ""  # one of FAULTS: what kind of error the document makes here


@dataclass(frozen=True)
class Note:
    """A fault the claims syntax cannot state (a count, a sentence, a general index): the
    document's words, where, what kind of fault and what is meant."""
    quote: str
    source: str
    fault: str
    note: str
    line: int


@dataclass(frozen=True)
class ClaimsFile:
    path: str
    document: str
    symbols: dict[str, str]
    example: str | None  # the values file, resolved against the claims file's folder
    claims: tuple[Claim, ...]
    per_example: bool = False  # the formulas are about one example's loss L, not J over m
    notes: tuple[Note, ...] = ()

    def reads_per_example(self, claim: Claim) -> bool:
        return self.per_example if claim.per_example is None else claim.per_example


@dataclass(frozen=True)
class Counterexample:
    instance: tuple[int, ...]  # layer sizes the claim was checked on
    examples: int
    point: tuple[tuple[str, sp.Matrix], ...]  # name -> exact rational value
    quantity: str
    entry: tuple[int, int] | None  # 1-based, the first entry that differs
    claimed: sp.Matrix  # real values, DIGITS digits
    derived: sp.Matrix
    lines: tuple[str, ...] = ()  # more evidence (a loss rising after a step)
    # the derivation's intermediate values at the point, for seeing where the claim departs:
    # z_l, W_{l+1}^T delta_{l+1}, delta_l of the claimed quantity's layer (real numbers)
    intermediates: tuple[tuple[str, sp.Matrix], ...] = ()


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    kind: str  # gradient, error, forward, loss, loss derivative, local derivative, update, number
    quantity: str  # the Derivation's name for it: dW1, delta2, L, d gelu/dz, W2, Z1[3]
    proven: bool
    reason: str  # one sentence: why
    counterexample: Counterexample | None = None
    derived: str = ""  # the derived formula in text, for the terminal (the LaTeX prints its own)
    reading: str = ""  # "batch" (J over m >= 2 examples), "per example" (L), "" (no examples)
    note: str = ""  # beside a refutation: what the formula is instead (a descent direction)

    @property
    def ok(self) -> bool:
        """The verdict is what the claims file expects."""
        return self.proven == self.claim.expect

    @property
    def word(self) -> str:
        return "proven" if self.proven else "refuted"


@dataclass(frozen=True)
class ClaimsReport:
    file: ClaimsFile
    spec_name: str
    verdicts: tuple[Verdict, ...]
    instance: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def summary(self, brief: bool = False) -> str:
        """The report printed by ``derive --claims``: one line per claim, evidence indented;
        ``brief``: only the verdicts not as expected, and the closing line."""
        lines = []
        for v in self.verdicts:
            if brief and v.ok:
                continue
            where = f"{self.file.path}:{v.claim.line}"
            mark = "" if v.ok else f"  [UNEXPECTED: the file expects {'proven' if v.claim.expect else 'refuted'}]"
            source = f" ({v.claim.source})" if v.claim.source else ""
            reading = f" ({READINGS[v.reading]})" if v.reading else ""
            lines.append(f"{where}: {v.word}{reading}: {v.claim.text}{source}{mark}")
            lines.append(f"  {v.reason}")
            if v.note:
                lines.append(f"  note: {v.note}")
            if v.derived and not (v.kind == "update" and v.proven):  # the reason names it
                lines.append(f"  {'the spec' + chr(39) + 's rule' if v.kind == 'update' else 'derived'}: "
                             f"{v.derived}")
            if v.counterexample is not None:
                lines += [f"  {line}" for line in counterexample_lines(v.counterexample)]
        proven = sum(v.proven for v in self.verdicts)
        unexpected = sum(not v.ok for v in self.verdicts)
        tail = "every verdict as expected" if not unexpected else \
            f"{unexpected} verdict{'s' if unexpected > 1 else ''} not as expected"
        for n in () if brief else self.file.notes:
            source = f" ({n.source})" if n.source else ""
            lines.append(f"{self.file.path}:{n.line}: note, {n.fault}: “{n.quote}”{source}")
            if n.note:
                lines.append(f"  {n.note}")
        count = len(self.verdicts)
        notes = len(self.file.notes)
        lines.append(f"claims of {self.spec_name} ({self.file.path}): {count} "
                     f"claim{'s' if count != 1 else ''}, {proven} proven, {count - proven} "
                     f"refuted{f', {notes} note' + ('s' if notes != 1 else '') if notes else ''}; "
                     f"{tail}")
        return "\n".join(lines)


READINGS = {"batch": f"batch reading: J over m = {BATCH} examples",
            "per example": "per-example reading: one example's loss L"}


def number_text(value, digits: int = 6) -> str:
    """A real value for a message: 6 significant digits, exact zeros and integers as such."""
    value = sp.sympify(value)
    if value.is_Rational and value.q == 1:
        return str(value)
    if value == 0:
        return "0"
    if value.is_real is False or not value.is_number:  # a complex value (log of a negative)
        return sp.sstr(sp.N(value, digits))
    return f"{float(value):.{digits}g}"


def matrix_text(matrix: sp.Matrix) -> str:
    """A matrix for a message: exact rationals as p/q, reals to 6 digits."""
    def entry(v):
        return str(v) if v.is_Rational else number_text(v)
    if matrix.shape == (1, 1):
        return entry(matrix[0, 0])
    rows = ["[" + ", ".join(entry(v) for v in matrix.row(r)) + "]" for r in range(matrix.rows)]
    return "[" + ", ".join(rows) + "]" if matrix.rows > 1 else rows[0]


def counterexample_lines(cx: Counterexample) -> list[str]:
    sizes = "-".join(map(str, cx.instance))
    head = (f"counterexample on a {sizes} instance, {cx.examples} example"
            f"{'s' if cx.examples > 1 else ''}: " if cx.instance else "counterexample: ")
    shown = {"A0": "x", "Y": "y"}
    point = "; ".join(f"{shown.get(name, name)} = {matrix_text(value)}" for name, value in cx.point)
    out = [head + point]
    at = f"[{cx.entry[0]},{cx.entry[1]}]" if cx.entry and cx.claimed.shape != (1, 1) else ""
    if cx.claimed.shape == (1, 1) or cx.entry is None:
        out.append(f"{cx.quantity}: claimed {matrix_text(cx.claimed)}, derived {matrix_text(cx.derived)}")
    else:
        r, c = cx.entry
        out.append(f"{cx.quantity}{at}: claimed {number_text(cx.claimed[r - 1, c - 1])}, derived "
                   f"{number_text(cx.derived[r - 1, c - 1])} (claimed {matrix_text(cx.claimed)}, "
                   f"derived {matrix_text(cx.derived)})")
    out += [f"at this point the derivation has {name} = {matrix_text(value)}"
            for name, value in cx.intermediates]
    return out + list(cx.lines)


# ----------------------------------------------------------------------------- reading

def load_claims(path: str | Path) -> ClaimsFile:
    """Read and check the claims file at ``path`` (its formulas parsed, not yet checked)."""
    return load_claims_text(read_text(path, "the claims file"), str(path))


def load_claims_text(text: str, filename: str = "<string>") -> ClaimsFile:
    try:
        root = read_document(text, "the claims file is empty; expected a mapping with the key "
                                   "claims: a list of {claim: 'quantity = formula'}")
        return _claims_file(root, text, filename)
    except SpecError as err:
        err.file = err.file or filename
        raise


def _keys(item: Item, allowed: tuple[str, ...], what: str) -> dict[str, Item]:
    if not isinstance(item.value, dict):
        raise expected(item, what)
    for key, child in item.value.items():
        if key not in allowed:
            raise item_error(child, f"unknown key {key!r} (expected: {', '.join(allowed)})",
                             did_you_mean(key, allowed), at_key=True)
    return item.value


def _text(item: Item | None) -> str:
    if item is None:
        return ""
    if not isinstance(item.value, (str, int, float)) or isinstance(item.value, bool):
        raise expected(item, "a text")
    return str(item.value)


def _claims_file(root: Item, text: str, filename: str) -> ClaimsFile:
    fields = _keys(root, _KEYS, "a mapping with the key claims")
    if "claims" not in fields:
        raise item_error(root, "missing key 'claims' (a list of {claim: 'quantity = formula'})")
    symbols = {}
    if "symbols" in fields:
        for name, child in _keys(fields["symbols"], tuple(fields["symbols"].value or ()),
                                 "a mapping of the document's names to the network's "
                                 "(h: a1)").items():
            symbols[name] = _text(child)
    example = None
    if "example" in fields:
        example = str(Path(filename).parent / _text(fields["example"]))
    listed = fields["claims"]
    if not isinstance(listed.value, list) or not listed.value:
        raise expected(listed, "a non-empty list of claims")
    lines = text.splitlines()
    claims = tuple(_claim(item, lines) for item in listed.value)
    per_example = _flag(fields.get("per_example"), False)
    notes = ()
    if "notes" in fields:
        if not isinstance(fields["notes"].value, list):
            raise expected(fields["notes"], "a list of {quote: the document's words, source: "
                                            "where, fault: what kind}")
        notes = tuple(_note(item) for item in fields["notes"].value)
    return ClaimsFile(filename, _text(fields.get("document")), symbols, example, claims,
                      per_example, notes)


def _fault(item: Item | None) -> str:
    if item is None:
        return ""
    text = _text(item)
    if text not in FAULTS:
        raise item_error(item, f"unknown fault {text!r} (expected one of: {', '.join(FAULTS)})",
                         did_you_mean(text, FAULTS))
    return text


def _note(item: Item) -> Note:
    fields = _keys(item, _NOTE_KEYS, "a mapping {quote: the document's words, source: where, "
                                     "fault: what kind, note: what is meant}")
    for key in ("quote", "fault"):
        if key not in fields:
            raise item_error(item, f"missing key {key!r} in a note (a note quotes the document "
                                   f"and says what kind of fault it is)")
    return Note(_text(fields["quote"]), _text(fields.get("source")), _fault(fields["fault"]),
                _text(fields.get("note")), item.line)


def _flag(item: Item | None, default):
    """per_example: true (one example's loss L) or false (the batch objective J)."""
    if item is None:
        return default
    if not isinstance(item.value, bool):
        raise expected(item, "true (the formulas are about one example's loss L) or false "
                             "(about the batch objective J over m examples, the default)")
    return item.value


def _claim(item: Item, lines: list[str]) -> Claim:
    fields = _keys(item, _CLAIM_KEYS, "a mapping {claim: 'quantity = formula', source: ..., "
                                      "expect: true|false}")
    if "claim" not in fields:
        raise item_error(item, "missing key 'claim' ('quantity = formula')")
    formula = fields["claim"]
    if not isinstance(formula.value, str):
        raise expected(formula, "a formula as text: 'quantity = formula'")
    raw = lines[formula.line - 1] if 0 < formula.line <= len(lines) else ""
    start = raw.find(formula.value) if "\n" not in formula.value else -1
    column = start + 1 if start >= 0 else None
    try:
        equation = parse_equation(formula.value)
    except FormulaError as err:
        raise formula_error(formula, column, err.message, err.column) from None
    expect = True
    if "expect" in fields:
        given = fields["expect"]
        if not isinstance(given.value, bool):
            raise expected(given, "true (the claim should be proven) or false (refuted)")
        expect = given.value
    return Claim(formula.value, equation, _text(fields.get("source")), expect,
                 _text(fields.get("note")), formula.line, column, formula.path,
                 _flag(fields.get("per_example"), None), _fault(fields.get("fault")))


def formula_error(item: Item, column: int | None, message: str, at: int) -> SpecError:
    """A SpecError at the formula's line and column, the formula shown with a caret."""
    where = f"column {column + at - 1}" if column is not None else f"column {at} of the formula"
    caret = f"\n    {item.value}\n    {' ' * (at - 1)}^"
    return SpecError(f"{where}: {message}{caret}", line=item.line, field=item.path)


def _claim_error(claim: Claim, message: str, at: int | None = None,
                 hint: str | None = None) -> SpecError:
    item = Item(claim.text, claim.line, claim.field)
    err = formula_error(item, claim.column, message, at or claim.equation.lhs_column)
    err.hint = hint
    return err


# ----------------------------------------------------------------------------- names

_LAYER_NAME = re.compile(r"^(W|w|b|Z|z|A|a|delta|δ|dZ|dz|e|dW|dw|db)_?(\d+)$")
_KIND = {"W": "W", "w": "W", "b": "b", "Z": "Z", "z": "Z", "A": "A", "a": "A", "delta": "delta",
         "δ": "delta", "dZ": "delta", "dz": "delta", "e": "delta", "dW": "dW", "dw": "dW",
         "db": "db"}
_FIXED = {"x": "A0", "X": "A0", "y": "Y", "Y": "Y", "m": "m"}
_OUTPUT = ("yhat", "ŷ", "Yhat", "y_hat", "yHat")


# a stack of layer kinds: the kinds' own quantities too (gamma2, xhat2, mu2, var2, mask3, eps2
# and the adjoints dgamma2, dxhat2, dmu2, dvar2, dA1 of J), besides W, b, Z, A, delta, dW, db
_KIND_NAME = re.compile(r"^(gamma|γ|beta|β|xhat|x̂|mu|μ|var|sigma2|σ2|mask|r|eps|epsilon|ε|"
                        r"dgamma|dbeta|dxhat|dmu|dvar|dA|da)_?(\d+)$")
_KIND_OF = {"γ": "gamma", "β": "beta", "x̂": "xhat", "μ": "mu", "sigma2": "var", "σ2": "var",
            "r": "mask", "eps": "epsilon", "ε": "epsilon", "da": "dA"}


def _kind_names(derivation) -> set[str]:
    """Every name a claim may use about a stack of layer kinds (one per quantity)."""
    names = {symbol.name for symbol in derivation.shapes} | {"A0", "Y"}
    names |= {f"delta{node.index}" for node in derivation.nodes}
    names |= {d.name for _, d in derivation.gradients}
    return {n for n in names if not n.startswith(("s", "p_", "P"))
            or n.startswith("sigma")} - {"Y"}


class _Names:
    """The document's names resolved to the Derivation's (W1, b1, Z1, A1, delta1, dW1, db1,
    A0 for x, Y for y, A_L for yhat; m and the learning rate; for layer kinds gamma2, xhat2,
    mu2, var2, mask3, eps2 and the adjoints dgamma2, dxhat2, ...)."""

    def __init__(self, derivation: Derivation, symbols: dict[str, str]):
        self.depth = derivation.spec.depth
        self.symbols = symbols
        self.kinds = _kind_names(derivation) if hasattr(derivation, "nodes") else None

    def resolve(self, name: str) -> str | None:
        name = self.symbols.get(name, name)
        if name in ("L", "J"):  # the loss of one example, the batch objective
            return name
        if name in _FIXED:
            return _FIXED[name]
        if name in _OUTPUT:
            return f"A{self.depth}"
        if name in _LEARNING_RATE:
            return "eta"
        match = _LAYER_NAME.match(name)
        if self.kinds is not None:
            kind_match = _KIND_NAME.match(name)
            if kind_match:
                word = _KIND_OF.get(kind_match.group(1), kind_match.group(1))
                found = f"{word}{kind_match.group(2)}"
                return found if found in self.kinds else None
        if not match:
            return None
        kind, layer = _KIND[match.group(1)], int(match.group(2))
        if layer > self.depth or (layer == 0 and kind != "A"):
            return None
        found = f"{kind}{layer}"
        return found if self.kinds is None or found in self.kinds else None

    def function(self, name: str) -> str:
        """A function's name, the document's own mapped (seed 002's R is relu)."""
        return self.symbols.get(name, name)

    def known(self) -> str:
        L = self.depth
        if self.kinds is not None:
            return ", ".join(sorted(self.kinds, key=lambda n: (_digits(n), n))) + \
                ", x, y, yhat, m, eta (or alpha)"
        return (f"W1..W{L}, b1..b{L}, z1..z{L}, a0..a{L} (a0 = x), delta1..delta{L} (or dZ, e), "
                f"dW1..dW{L}, db1..db{L}, x, y, yhat, m, eta (or alpha)")


def _digits(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits or 0)


def claims_names(derivation: Derivation, report: "ClaimsReport") -> Callable[[str], str | None]:
    """The claims file's names resolved to the Derivation's (for printing a claim)."""
    return _Names(derivation, report.file.symbols).resolve


def notation(derivation: Derivation, claims: "ClaimsFile") -> tuple[tuple[str, str], ...]:
    """The document's symbols (the claims file's ``symbols:``) with what each is here: a name
    of the Derivation (W1, A1, delta2, L, J, eta) or an activation's declared name."""
    names = _Names(derivation, claims.symbols)
    out = []
    for theirs, ours in claims.symbols.items():
        if ours in ACTIVATIONS:
            out.append((theirs, ACTIVATIONS.canonical(ours)))
        elif (resolved := names.resolve(theirs)) is not None:
            out.append((theirs, resolved))
    return tuple(out)


def _function(name: str, prime: bool, derivation: Derivation) -> tuple[str, sp.Expr | None]:
    """("elementwise", g(z) or g'(z)), ("softmax", None) or (a reduction, None)."""
    if name in _REDUCTIONS:
        if prime:
            raise KeyError(f"{name} has no derivative here")
        return name, None
    if name in FUNCTIONS:
        g = FUNCTIONS[name]
    else:
        act = ACTIVATIONS[name]  # UnknownName for anything else
        if act.vector:
            if prime:
                raise KeyError(f"{name}'s derivative is a Jacobian; claim the output error or "
                               "dL/dz instead")
            return "softmax", None
        g = act.instantiate(Z, _params_of(derivation.spec, ACTIVATIONS.canonical(name)))
    return "elementwise", (sp.diff(g, Z) if prime else g)


def _params_of(spec: NetSpec, name: str) -> dict[str, float]:
    """The spec's parameters for an activation (its first layer using it), else defaults."""
    for layer in spec.layers:
        if layer.activation.name == name:
            return layer.activation.param_dict
    return {}


def _function_names() -> str:
    return ", ".join([*ACTIVATIONS.names(), *FUNCTIONS, *_REDUCTIONS])


# ----------------------------------------------------------------------------- evaluation

class _Undefined(ArithmeticError):
    """A formula with no value at a point (a division by zero, a log of a non-positive)."""


class _ShapeError(ValueError):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message, self.column = message, column


def _dims(shape) -> str:
    return f"({shape[0]}×{shape[1]})"


def _broadcast(a, b, op: str, column: int):
    rows = _fit(a[0], b[0])
    cols = _fit(a[1], b[1])
    if rows is None or cols is None:
        raise _ShapeError(f"{op} of {_dims(a)} and {_dims(b)}: the shapes differ", column)
    return rows, cols


def _fit(p: int, q: int) -> int | None:
    return p if p == q or q == 1 else q if p == 1 else None


def _shape(node: Node, shapes: dict, lookup) -> tuple[int, int]:
    """The formula's shape from its operands' (raises _ShapeError where they do not fit)."""
    if isinstance(node, Num):
        return (1, 1)
    if isinstance(node, Name):
        return shapes[node.name]
    if isinstance(node, Unary):
        return _shape(node.arg, shapes, lookup)
    if isinstance(node, Transpose):
        r, c = _shape(node.arg, shapes, lookup)
        return (c, r)
    if isinstance(node, Power):
        return _shape(node.base, shapes, lookup)
    if isinstance(node, Call):
        inner = _shape(node.arg, shapes, lookup)
        kind = lookup(node)[0]
        return {"sum": (1, 1), "rowsum": (inner[0], 1), "colsum": (1, inner[1])}.get(kind, inner)
    if isinstance(node, Vector):
        return (len(node.items), 1)
    a, b = _shape(node.left, shapes, lookup), _shape(node.right, shapes, lookup)
    if node.op == "matmul":
        if a == (1, 1):
            return b
        if b == (1, 1):
            return a
        if a[1] != b[0]:
            raise _ShapeError(f"the product of {_dims(a)} and {_dims(b)} is undefined "
                              f"({a[1]} columns, {b[0]} rows)", node.column)
        return (a[0], b[1])
    if node.op == "div" and b == (1, 1):
        return a
    word = {"add": "the sum", "sub": "the difference", "hadamard": "the element-wise product",
            "div": "the element-wise quotient"}[node.op]
    return _broadcast(a, b, word, node.column)


def _evaluate(node: Node, env: Callable[[str], sp.Matrix], lookup,
              apply: Callable[[sp.Expr, sp.Expr], sp.Expr]) -> sp.Matrix:
    """The formula's value: ``env`` gives each name's matrix, ``apply`` a function's value at
    an entry (exactly, through the proof's model, or in real numbers)."""
    def ev(n: Node) -> sp.Matrix:
        if isinstance(n, Num):
            return sp.Matrix([[sp.Rational(n.value.numerator, n.value.denominator)]])
        if isinstance(n, Name):
            return env(n.name)
        if isinstance(n, Unary):
            return -ev(n.arg)
        if isinstance(n, Transpose):
            return ev(n.arg).T
        if isinstance(n, Power):
            return ev(n.base).applyfunc(lambda v: v ** n.exponent)
        if isinstance(n, Vector):
            return sp.Matrix([ev(item)[0, 0] for item in n.items])
        if isinstance(n, Call):
            return _call(n, ev(n.arg))
        a, b = ev(n.left), ev(n.right)
        if n.op == "matmul":
            return b * a[0, 0] if a.shape == (1, 1) else a * b[0, 0] if b.shape == (1, 1) else a * b
        if n.op == "div" and b.shape == (1, 1):
            if b[0, 0] == 0:
                raise _Undefined("division by zero")
            return a / b[0, 0]
        a, b = _spread(a, b)
        combine = {"add": lambda p, q: p + q, "sub": lambda p, q: p - q,
                   "hadamard": lambda p, q: p * q, "div": _divide}[n.op]
        return sp.Matrix(a.rows, a.cols, lambda r, c: combine(a[r, c], b[r, c]))

    def _call(n: Call, value: sp.Matrix) -> sp.Matrix:
        kind, g = lookup(n)
        if kind == "sum":
            return sp.Matrix([[sum(value)]])
        if kind == "rowsum":
            return sp.Matrix([sum(value.row(r)) for r in range(value.rows)])
        if kind == "colsum":
            return sp.Matrix([[sum(value.col(c)) for c in range(value.cols)]])
        if kind == "softmax":
            e = value.applyfunc(lambda v: apply(sp.exp(Z), v))
            return sp.Matrix(e.rows, e.cols, lambda r, c: e[r, c] / sum(e.col(c)))
        return value.applyfunc(lambda v: apply(g, v))

    return ev(node)


def _divide(p, q):
    if q == 0:
        raise _Undefined("division by zero")
    return p / q


def _spread(a: sp.Matrix, b: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix]:
    """Both operands at their common shape (a 1x1, a row or a column repeated)."""
    rows, cols = _fit(a.rows, b.rows), _fit(a.cols, b.cols)

    def grow(x):
        return sp.Matrix(rows, cols, lambda r, c: x[r % x.rows, c % x.cols])
    return grow(a), grow(b)


# ----------------------------------------------------------------------------- the instance

def claims_instance(spec: NetSpec) -> NetSpec:
    """The spec with widths at most ``MAX_WIDTH`` and every layer kept (layer numbers hold)."""
    layers = tuple(LayerSpec(min(layer.units, MAX_WIDTH), layer.activation)
                   for layer in spec.layers)
    return dataclasses.replace(spec, input=min(spec.input, MAX_WIDTH), layers=layers)


def _value(rng: random.Random) -> Fraction:
    """A small rational for a point: k/q with 0 < |k/q| <= 1 (moderate activations)."""
    q = rng.choice((2, 3, 4, 5))
    return Fraction(rng.choice([k for k in range(-q, q + 1) if k]), q)


class _Instance:
    """The claims' instance: its Derivation evaluated on symbolic parameters, inputs and
    targets once; then, per point, exact values (the proof's model) and real ones."""

    def __init__(self, derivation: Derivation, examples: int):
        self.full = derivation
        self.d = d = derive(claims_instance(derivation.spec))
        self.m = examples
        self.symbols: dict[str, sp.Matrix] = {}

        def symbolic(name, rows, cols):
            return sp.Matrix(rows, cols, lambda r, c: sp.Symbol(f"{name}_{r + 1}{c + 1}", real=True))
        env: dict = {M: examples}
        self.symbols["A0"] = env[d.X] = symbolic("x", d.X.shape[0], examples)
        self.symbols["Y"] = env[d.Y] = symbolic("y", d.Y.shape[0], examples)
        for layer in d.layers:
            self.symbols[layer.W.name] = env[layer.W] = symbolic(layer.W.name, *layer.W.shape)
            self.symbols[layer.b.name] = env[layer.b] = symbolic(layer.b.name, *layer.b.shape)
        evaluate_definitions(d, env)
        self.env = env
        self.symbolic = self._named(env)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.d.spec.layer_sizes

    def _named(self, env: dict) -> dict[str, sp.Matrix]:
        """Every matrix by name, with the loss L and dL/da of the output (per example)."""
        named = {symbol.name: value for symbol, value in env.items()
                 if isinstance(symbol, sp.MatrixSymbol)}
        return _with_loss(named, self.d)

    def point(self, k: int, seed: int = 0) -> dict[sp.Symbol, Fraction]:
        """Point k: every parameter and input entry a small rational, the targets of the loss."""
        rng = random.Random(1000 * seed + k)
        values = {}
        for name, matrix in self.symbols.items():
            if name == "Y":
                continue
            for s in matrix:
                values[s] = _value(rng)
        Y = self.symbols["Y"]
        labels = self.d.objective.loss
        for c in range(Y.cols):
            if labels.one_hot:
                hot = rng.randrange(Y.rows)
                column = [int(r == hot) for r in range(Y.rows)]
            elif labels.labels == "binary":  # both labels occur over the points
                column = [(k + c + r) % 2 if r == 0 else rng.randint(0, 1) for r in range(Y.rows)]
            else:
                column = [_value(rng) for _ in range(Y.rows)]
            for r, v in enumerate(column):
                values[Y[r, c]] = Fraction(v)
        return values

    def exact(self, values: dict, seed: int):
        """(env, apply) in exact arithmetic at the point (the proof's model)."""
        model = exact_model(values, seed)
        cache: dict[str, sp.Matrix] = {}

        def env(name: str) -> sp.Matrix:
            if name not in cache:
                cache[name] = self.symbolic[name].applyfunc(lambda e: _rational(model(e)))
            return cache[name]

        def apply(g: sp.Expr, v: sp.Expr) -> sp.Expr:
            return _rational(model.at(g, {Z: Fraction(int(v.p), int(v.q))}))
        return env, apply, model

    def real(self, values: dict, overrides: dict[str, sp.Matrix] | None = None):
        """(env, apply) in real numbers at the point; ``overrides`` replaces parameters."""
        d = self.d
        point = {name: matrix.applyfunc(lambda s: sp.Rational(values[s].numerator,
                                                              values[s].denominator))
                 for name, matrix in self.symbols.items()}
        point.update(overrides or {})
        env: dict = {M: self.m, d.X: point["A0"], d.Y: point["Y"]}
        for layer in d.layers:
            env[layer.W], env[layer.b] = point[layer.W.name], point[layer.b.name]
        evaluate_definitions(d, env, finish=lambda value: value.evalf(DIGITS))
        named = self._named(env)

        def get(name: str) -> sp.Matrix:
            return named[name].evalf(DIGITS)

        def apply(g: sp.Expr, v: sp.Expr) -> sp.Expr:
            return sp.N(g.xreplace({Z: v}), DIGITS)
        return get, apply, point

    def objective(self, get) -> sp.Expr:
        """J at a real point: the mean loss plus the penalties."""
        weights = [w for layer in self.d.layers for w in get(layer.W.name)]
        return sp.N(self.d.objective.value(get(f"A{self.d.spec.depth}"), get("Y"), weights),
                    DIGITS)


def _with_loss(named: dict[str, sp.Matrix], derivation) -> dict[str, sp.Matrix]:
    """``named`` with each example's loss L and dL/da of the output (per example)."""
    out, Y = named[f"A{derivation.spec.depth}"], named["Y"]
    loss = derivation.objective.loss
    a, y = sp.Symbol("a", real=True), sp.Symbol("y", real=True)
    slope = sp.diff(loss.unit(a, y), a)
    named["L"] = sp.Matrix(1, out.cols, lambda r, c: sp.Add(
        *[loss.unit(out[k, c], Y[k, c]) for k in range(out.rows)]))
    named["dL/dA"] = sp.Matrix(out.rows, out.cols, lambda r, c: slope.xreplace(
        {a: out[r, c], y: Y[r, c]}))
    return named


class _KindsInstance:
    """The claims' instance of a stack of layer kinds (``derive.graph``): its derivation on
    the spec with widths at most 3 (every layer kept), evaluated at each point on exact
    rational arrays by the proof's evaluator; names in the documents' column convention (Z_l
    is n_l x m; a per-unit statistic or parameter n_l x 1; W_l and dW_l as W_l).  ``d<x>`` is
    ∂J/∂x; delta_l is the documents' error m ∂J/∂Z_l."""

    def __init__(self, derivation, examples: int):
        self.full = derivation
        self.d = derive(shrink_kinds(derivation.spec)[0])
        self.m = examples
        # a convolution's (F, C, k, k) kernel is named as its (F, C k^2) matrix, row f the
        # kernel of filter f in (c, p, q) order
        self.weights = {p.name for p, shape, _, _ in self.d.params if len(shape) != 1}
        self.weights |= {d.name for p, d in self.d.gradients if p.name in self.weights}

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.d.spec.layer_sizes

    def point(self, k: int, seed: int = 0) -> dict:
        """Point k: arrays (one row per example) for the input, the targets, every parameter
        and every dropout mask; ε's values are chosen when first evaluated, then kept."""
        import numpy as np

        rng = random.Random(1000 * seed + k)
        d, m = self.d, self.m

        def array(rows, cols):
            return np.array([[_rational(_value(rng)) for _ in range(cols)] for _ in range(rows)],
                            dtype=object)
        values: dict = {d.X: array(m, d.spec.input)}
        for p, shape, _, _ in d.params:
            if len(shape) > 2:
                values[p] = array(shape[0], math.prod(shape[1:])).reshape(shape)
                continue
            values[p] = array(*(shape if len(shape) == 2 else (1, shape[0])))
        probe = KindsInstance(d, rng, m)  # its targets and masks, drawn from the point's rng
        values[d.Y] = probe.env[d.Y]
        for node in d.nodes:
            for r, _ in node.randoms:
                values[r] = probe.env[r]
        values["eps"] = {}
        return values

    def _env(self, values: dict, model, numeric: bool = False) -> dict:
        """Every array at the point; ``numeric``: ε's entries as the numbers chosen for the
        point (the real values), not as the symbols the exact model sets."""
        arrays = {key: value for key, value in values.items() if key != "eps"}
        instance = KindsInstance(self.d, random.Random(0), self.m, arrays, values["eps"])
        if numeric:
            for node in self.d.nodes:
                for c, _, _ in node.constants:
                    instance.env[c] = instance.env[c].copy()
                    for index, symbol in enumerate(instance.env[c].flat):
                        instance.env[c].flat[index] = _rational(values["eps"][symbol])
        instance.run(self.d.forward, model, resolve_piecewise=False)
        instance.run(self.d.backward, model, resolve_piecewise=False)
        values["eps"].update(instance.eps_values)
        return instance.env

    def _named(self, env: dict) -> dict[str, sp.Matrix]:
        named = {}
        for symbol, array in env.items():
            name = getattr(symbol, "name", None)
            if name is not None and array.ndim == 4:  # a kernel: its (F, C k^2) matrix
                array = array.reshape(array.shape[0], -1)
            if name is None or array.ndim != 2:
                continue
            matrix = sp.Matrix(array.tolist())
            named[name] = matrix if name in self.weights else matrix.T
        for node in self.d.nodes:
            named[f"delta{node.index}"] = named[f"dZ{node.index}"] * self.m
        return _with_loss(named, self.d)

    def exact(self, values: dict, seed: int):
        model = exact_model({}, seed)
        named = self._named(self._env(values, model))
        cache: dict[str, sp.Matrix] = {}

        def get(name: str) -> sp.Matrix:
            if name not in cache:
                cache[name] = named[name].applyfunc(lambda e: _rational(model(e)))
            return cache[name]

        def apply(g: sp.Expr, v: sp.Expr) -> sp.Expr:
            return _rational(model.at(g, {Z: Fraction(int(v.p), int(v.q))}))
        return get, apply, model

    def real(self, values: dict, overrides: dict[str, sp.Matrix] | None = None):
        import numpy as np

        values = dict(values)
        for name, matrix in (overrides or {}).items():
            symbol, shape = next((p, s) for p, s, *_ in self.d.params if p.name == name)
            values[symbol] = np.array((matrix if name in self.weights else matrix.T).tolist(),
                                      dtype=object)
            if len(shape) > 2:
                values[symbol] = values[symbol].reshape(shape)
        named = self._named(self._env(values, exact_model({}, 0), numeric=True))

        def get(name: str) -> sp.Matrix:
            return named[name].evalf(DIGITS)

        def apply(g: sp.Expr, v: sp.Expr) -> sp.Expr:
            return sp.N(g.xreplace({Z: v}), DIGITS)
        point = {name: named[name] for name in
                 ("A0", "Y", *(p.name for p, *_ in self.d.params))}
        for node in self.d.nodes:  # ε as the point chose it (σ² + ε a square)
            for c, _, _ in node.constants:
                point[c.name] = named[c.name]
        return get, apply, point

    def objective(self, get) -> sp.Expr:
        weights = [w for p in self.d.penalised for w in get(p.name)]
        return sp.N(self.d.objective.value(get(f"A{self.d.spec.depth}"), get("Y"), weights),
                    DIGITS)


def _rational(q) -> sp.Rational:
    q = Fraction(q)
    return sp.Rational(q.numerator, q.denominator)


def _point_shown(instance: _Instance, point: dict[str, sp.Matrix]) -> tuple:
    if isinstance(instance, _KindsInstance):
        return tuple(point.items())
    order = [n for layer in instance.d.layers for n in (layer.W.name, layer.b.name)]
    return tuple((name, point[name]) for name in ("A0", "Y", *order))


# ----------------------------------------------------------------------------- checking

@dataclass
class _Context:
    derivation: Derivation  # the full spec's
    names: _Names
    instances: dict[int, _Instance]
    example: object | None = None  # NumericExample, loaded on first use
    seed: int = 0

    def instance(self, examples: int) -> _Instance:
        if examples not in self.instances:
            kind = _KindsInstance if hasattr(self.derivation, "nodes") else _Instance
            self.instances[examples] = kind(self.derivation, examples)
        return self.instances[examples]


def check_claims(derivation: Derivation, claims: ClaimsFile, *, seed: int = 0) -> ClaimsReport:
    """Check every claim of ``claims`` against ``derivation``.  A claim that cannot be read
    against this network (an unknown name or function) raises SpecError naming its line and
    column, before anything is evaluated."""
    names = _Names(derivation, claims.symbols)
    plans = [_plan(claim, derivation, names) for claim in claims.claims]
    context = _Context(derivation, names, {}, seed=seed)
    verdicts = tuple(_check(plan, context, claims) for plan in plans)
    instance = (shrink_kinds(derivation.spec)[0] if hasattr(derivation, "nodes")
                else claims_instance(derivation.spec)).layer_sizes
    return ClaimsReport(claims, derivation.spec.name, verdicts, instance)


@dataclass(frozen=True)
class _Plan:
    claim: Claim
    kind: str
    target: str  # the Derivation's name of the quantity
    entry: tuple[int, ...] = ()  # numbers: 1-based entry
    lookup: Callable | None = None


_LOCAL = re.compile(r"^(?:d(\w+)/dz|(\w+)'\(z\))$")
_LOSS_SLOPE = re.compile(r"^dL/d(\w+)$")
_ENTRY = re.compile(r"^(\w+)(?:\[(\d+)(?:,(\d+))?\])?$")


def _plan(claim: Claim, derivation: Derivation, names: _Names) -> _Plan:
    """What the claim's left side names, its names and functions checked."""
    eq = claim.equation
    rhs = eq.rhs
    local = _LOCAL.match(eq.lhs)
    if local:
        act = local.group(1) or local.group(2)
        if act not in ACTIVATIONS:
            raise _claim_error(claim, f"unknown activation {act!r} (known: "
                                      f"{', '.join(ACTIVATIONS.names())})",
                               hint=did_you_mean(act, ACTIVATIONS.names()))
        if ACTIVATIONS[act].vector:
            raise _claim_error(claim, f"{act}'s derivative is a Jacobian, not a function of z: "
                                      "claim the output error (delta) instead")
        allowed = {"z", "a"}
        target = f"d {ACTIVATIONS.canonical(act)}/dz"
        kind = "local derivative"
    else:
        allowed = None
        if eq.update:
            resolved = names.resolve(eq.lhs)
            parameters = ({p.name for p, *_ in derivation.params} if hasattr(derivation, "nodes")
                          else None)
            if resolved is None or (resolved not in parameters if parameters is not None else
                                    resolved[0] not in "Wb" or resolved.startswith("dW")):
                raise _claim_error(claim, f"an update rule assigns a parameter (W1, b1, ...), "
                                          f"not {eq.lhs!r}")
            kind, target = "update", resolved
        elif (slope := _LOSS_SLOPE.match(eq.lhs)) is not None:
            resolved = names.resolve(slope.group(1))
            if resolved != f"A{derivation.spec.depth}":
                raise _claim_error(claim, f"dL/d{slope.group(1)}: the loss's derivative is "
                                          f"claimed in the output (dL/dyhat, dL/da{derivation.spec.depth})")
            kind, target = "loss derivative", "dL/dA"
        else:
            match = _ENTRY.match(eq.lhs)
            resolved = match and ("L" if match.group(1) == "L" else names.resolve(match.group(1)))
            if not resolved or resolved in ("m", "eta", "A0", "Y", "J"):
                raise _claim_error(claim, f"unknown quantity {eq.lhs!r} (expected one of: "
                                          f"{names.known()}, L, dL/dyhat, d <activation>/dz)")
            entry = tuple(int(g) for g in match.groups()[1:] if g)
            if _is_number(rhs):
                return _Plan(claim, "number", resolved, entry)
            if entry:
                raise _claim_error(claim, "an entry [i] is claimed with a number of the worked "
                                          "example (z1[3] = -0.04)")
            gradients = ({d.name for _, d in derivation.gradients}
                         if hasattr(derivation, "nodes") else ())
            kind = ("gradient" if resolved[:2] in ("dW", "db") or resolved in gradients
                    else "loss" if resolved == "L"
                    else "error" if resolved.startswith(("delta", "d")) and resolved != "dL/dA"
                    else "forward")
            target = resolved
    for node in _walk(rhs):
        if isinstance(node, Name):
            ok = node.name in allowed if allowed is not None else names.resolve(node.name)
            if not ok:
                known = "z, and a = g(z)" if allowed is not None else names.known()
                raise _claim_error(claim, f"unknown name {node.name!r} (known: {known})",
                                   node.column)
        if isinstance(node, Name) and names.resolve(node.name) == "J":
            raise _claim_error(claim, "J is the batch objective; a claim's formula is about one "
                                      "example's quantities (L for its loss)", node.column)
        if isinstance(node, Call):
            try:
                _function(names.function(node.function), node.prime, derivation)
            except UnknownName:
                if names.resolve(node.function) or node.function in (allowed or ()):
                    raise _claim_error(claim, f"{node.function!r} is not a function: for a "
                                              f"product write {node.function} (...) or "
                                              f"{node.function}*(...)", node.column) from None
                raise _claim_error(claim, f"unknown function {node.function!r} (known: "
                                          f"{_function_names()})", node.column,
                                   did_you_mean(node.function, _function_names().split(", ")))
            except KeyError as err:
                raise _claim_error(claim, str(err.args[0]), node.column)
    if isinstance(rhs, Vector):
        raise _claim_error(claim, "a list of numbers is claimed for a quantity of the worked "
                                  "example (with example: in the claims file)", rhs.column)

    def lookup(node: Call):
        return _function(names.function(node.function), node.prime, derivation)
    return _Plan(claim, kind, target, (), lookup)


def _is_number(node: Node) -> bool:
    if isinstance(node, Num):
        return True
    if isinstance(node, Unary):
        return isinstance(node.arg, Num)
    return isinstance(node, Vector) and all(_is_number(item) for item in node.items)


def _walk(node: Node):
    yield node
    for child in (getattr(node, attr) for attr in ("arg", "left", "right", "base")
                  if hasattr(node, attr)):
        yield from _walk(child)
    if isinstance(node, Vector):
        for item in node.items:
            yield from _walk(item)


def _check(plan: _Plan, context: _Context, claims: ClaimsFile) -> Verdict:
    try:
        return _decide(plan, context, claims)
    except (TypeError, ValueError, ArithmeticError) as err:  # e.g. a complex value, log(-1)
        if isinstance(err, SpecError):
            raise
        return _verdict(plan, False, f"the formula could not be evaluated as a real number at "
                                     f"the points tried ({err})")


def _decide(plan: _Plan, context: _Context, claims: ClaimsFile) -> Verdict:
    if plan.kind == "number":
        return _check_number(plan, context, claims)
    if plan.kind == "local derivative":
        return _check_local(plan, context)
    resolve = context.names.resolve
    rhs = plan.claim.equation.rhs
    # L and dL/dyhat are one example's by definition; the rest are read as the file says:
    # the batch objective J over m >= 2 examples unless per_example (whether m appears in
    # the formula decides nothing)
    one = claims.reads_per_example(plan.claim) or plan.kind in ("loss", "loss derivative")
    examples = 1 if one else BATCH
    reading = "per example" if one else "batch"

    def lookup(node):
        return plan.lookup(node)

    # shapes on the spec's own sizes (one example; m columns for a batch formula)
    shapes = _shapes(context.derivation, examples)
    try:
        claimed_shape = _shape(_renamed(rhs, resolve), shapes, lookup)
    except _ShapeError as err:
        return _verdict(plan, False, f"the formula has no shape: at column {err.column} of "
                                     f"the formula, {err.message}", reading=reading)
    wanted = shapes[plan.target]
    if claimed_shape != wanted and claimed_shape != (1, 1):
        return _verdict(plan, False, f"the formula is {_dims(claimed_shape)}; {plan.target} is "
                                     f"{_dims(wanted)}", reading=reading)
    instance = context.instance(examples)
    rule = spec_rule(context.derivation.spec, reading) if plan.kind == "update" else None
    return _compare(plan, instance, resolve, lookup, context.seed, rule, reading)


def _renamed(node: Node, resolve) -> Node:
    """The formula with every name resolved to the Derivation's."""
    if isinstance(node, Name):
        return Name(node.column, resolve(node.name))
    if isinstance(node, (Num, Vector)):
        return node
    changes = {attr: _renamed(getattr(node, attr), resolve)
               for attr in ("arg", "left", "right", "base") if hasattr(node, attr)}
    return dataclasses.replace(node, **changes)


def _shapes(derivation: Derivation, m: int) -> dict[str, tuple[int, int]]:
    if hasattr(derivation, "nodes"):
        return _kind_shapes(derivation, m)
    shapes = {"m": (1, 1), "eta": (1, 1), "A0": (derivation.spec.input, m),
              "Y": (derivation.Y.shape[0], m), "L": (1, m), "dL/dA": (derivation.Y.shape[0], m)}
    for layer in derivation.layers:
        l, n = layer.index, layer.units
        shapes |= {f"W{l}": layer.W.shape, f"b{l}": (n, 1), f"Z{l}": (n, m), f"A{l}": (n, m),
                   f"delta{l}": (n, m), f"dW{l}": layer.W.shape, f"db{l}": (n, 1)}
    return shapes


def _kind_shapes(derivation, m: int) -> dict[str, tuple[int, int]]:
    """Shapes in the column convention for a stack of layer kinds (see _KindsInstance)."""
    n_out = derivation.spec.layers[-1].units
    shapes = {"m": (1, 1), "eta": (1, 1), "L": (1, m), "dL/dA": (n_out, m)}
    params = {p.name: shape for p, shape, _, _ in derivation.params}
    grads = {d.name: params[p.name] for p, d in derivation.gradients}
    for symbol, (cls, width) in derivation.shapes.items():
        name = symbol.name
        if name in params or name in grads:
            shape = (params | grads)[name]
            shapes[name] = shape if len(shape) == 2 else (
                (shape[0], math.prod(shape[1:])) if len(shape) > 2 else (shape[0], 1))
        else:
            shapes[name] = {"data": (width, m), "row": (width, 1), "column": (1, m),
                            "scalar": (1, 1)}[cls]
    for p, d in derivation.gradients:  # a gradient has its parameter's shape
        shapes[d.name] = shapes[p.name]
    for node in derivation.nodes:
        shapes[f"delta{node.index}"] = (node.units, m)
    return shapes


def _verdict(plan: _Plan, proven: bool, reason: str, cx: Counterexample | None = None,
             reading: str = "", note: str = "") -> Verdict:
    return Verdict(plan.claim, plan.kind, plan.target, proven, reason, cx, reading=reading,
                   note=note)


def _scalar_env(get, m: int, eta=None):
    """Names with m and the learning rate added."""
    def env(name: str) -> sp.Matrix:
        if name == "m":
            return sp.Matrix([[m]])
        if name == "eta":
            return sp.Matrix([[eta if eta is not None else sp.Rational(1, 10)]])
        return get(name)
    return env


def _rate(k: int, seed: int) -> sp.Rational:
    """The learning rate of point k: a random small positive rational (a rule that holds at
    one rate only is caught at another)."""
    rng = random.Random(7919 * seed + k)
    return sp.Rational(rng.randint(1, 9), rng.randint(10, 47))


@dataclass(frozen=True)
class _Rule:
    """The spec's update rule: what a claimed ``theta := ...`` must equal."""
    text: str  # for the verdict
    step: Callable[[sp.Expr, sp.Expr, sp.Expr], sp.Expr]  # (theta, gradient, eta) -> new theta

    def new(self, theta: sp.Matrix, gradient: sp.Matrix, eta) -> sp.Matrix:
        return sp.Matrix(theta.rows, theta.cols,
                         lambda r, c: self.step(theta[r, c], gradient[r, c], eta))


def spec_rule(spec: NetSpec, reading: str) -> _Rule:
    """Plain gradient descent when the spec names no training.optimizer (the documents'
    rule, whatever the trainer's default); else the named optimizer's first step (its state
    zero, t = 1) with the spec's hyperparameters."""
    objective = "L" if reading == "per example" else "J"
    if "optimizer" not in spec.training.given:
        return _Rule(f"θ − η ∂{objective}/∂θ (plain gradient descent: the spec names no "
                     "training.optimizer)", lambda theta, g, eta: theta - eta * g)
    declared = OPTIMIZERS[spec.training.optimizer]
    fixed = {**declared.substitutions(spec.training.hyperparameter_dict),
             **{symbol: sp.Integer(0) for symbol, _ in declared.state}, STEP: sp.Integer(1)}

    def step(theta, g, eta):
        values = {**fixed, THETA: theta, GRADIENT: g, ETA: eta}
        for target, formula in declared.assignments:
            values[target] = formula.xreplace(values)
        return values[THETA]
    return _Rule(f"{declared.title}'s first step from ∂{objective}/∂θ (the spec's "
                 f"training.optimizer: {declared.name})", step)


def _first_difference(a: sp.Matrix, b: sp.Matrix, tolerance=None) -> tuple[int, int] | None:
    a, b = _spread(a, b)
    for r in range(a.rows):
        for c in range(a.cols):
            diff = a[r, c] - b[r, c]
            if tolerance is None:
                if diff != 0:
                    return (r + 1, c + 1)
            elif abs(diff) > tolerance * (1 + abs(b[r, c])):
                return (r + 1, c + 1)
    return None


def _compare(plan: _Plan, instance: _Instance, resolve, lookup, seed: int,
             rule: _Rule | None, reading: str) -> Verdict:
    """The claim against the derived quantity (an update rule: against the spec's rule
    applied to the derived gradient) at POINTS points, exactly, with the real values as the
    judge where the exact stand-ins differ."""
    rhs = _renamed(plan.claim.equation.rhs, resolve)
    agreed_real, decided = False, 0
    for k in range(1, 10 * POINTS + 1):
        if decided == POINTS:
            break
        values = instance.point(k, seed)
        eta = _rate(k, seed)
        get, apply, _ = instance.exact(values, seed * 1000 + k)
        derived = _derived(plan, rule, get, eta)
        if derived.is_zero_matrix or rule is not None and get("d" + plan.target).is_zero_matrix:
            continue  # every ReLU off (or a stationary point): a point that tells little
        try:
            claimed = _evaluate(rhs, _scalar_env(get, instance.m, eta), lookup, apply)
        except (_Undefined, ZeroDivisionError):
            continue
        decided += 1
        if _first_difference(claimed, derived) is None:
            continue
        rget, rapply, point = instance.real(values)
        try:
            claimed_r = _evaluate(rhs, _scalar_env(rget, instance.m, eta), lookup, rapply)
        except (_Undefined, ZeroDivisionError):
            continue
        derived_r = _derived(plan, rule, rget, eta).evalf(DIGITS)
        entry = _first_difference(claimed_r, derived_r, AGREE)
        if entry is None:  # the stand-ins differ, the real values do not
            agreed_real = True
            continue
        claimed_r, derived_r = _spread(claimed_r, derived_r)
        shown = _point_shown(instance, point)
        if rule is None:
            cx = Counterexample(instance.sizes, instance.m, shown, plan.target, entry,
                                claimed_r, derived_r,
                                intermediates=_intermediates(plan.target, instance, rget))
            return _verdict(plan, False, f"the formula differs from the derived {plan.target}",
                            cx, reading)
        return _refuted_rule(plan, instance, rule, reading, values, point, shown, eta, get,
                             apply, lookup, rhs, entry, claimed_r, derived_r)
    if decided == 0:
        return _verdict(plan, False, "the formula has no value at any point tried (a division "
                                     "by zero or a logarithm of a non-positive number)",
                        reading=reading)
    sizes = "-".join(map(str, instance.sizes))
    plural = "s" if instance.m > 1 else ""
    if rule is None:
        how = (f"equal to the derived {plan.target} at {decided} random rational points on a "
               f"{sizes} instance ({instance.m} example{plural}), exactly")
    else:
        how = (f"equal to the spec's rule, {rule.text}, at {decided} random rational points "
               f"and learning rates on a {sizes} instance ({instance.m} example{plural}), "
               f"exactly")
    if agreed_real:
        how += f" (at some points to {DIGITS} digits in real numbers)"
    verdict = _verdict(plan, True, how, reading=reading)
    return dataclasses.replace(verdict, derived=rule.text) if rule is not None else verdict


_LAYERED = re.compile(r"^(?:dW|db|delta)(\d+)$")


def _intermediates(target: str, instance: _Instance, get) -> tuple:
    """z_l, W_{l+1}^T delta_{l+1} and delta_l at the point, for a gradient or error of layer
    l (where a claimed backward formula usually departs: a missing g', a missing transpose)."""
    match = _LAYERED.match(target)
    if not match or isinstance(instance, _KindsInstance):
        return ()
    l = int(match.group(1))
    out = [(f"Z{l}", get(f"Z{l}"))]
    if l < instance.d.spec.depth:
        out.append((f"W{l + 1}^T delta{l + 1}", (get(f"W{l + 1}").T * get(f"delta{l + 1}"))
                    .evalf(DIGITS)))
    if not target.startswith("delta"):
        out.append((f"delta{l}", get(f"delta{l}")))
    return tuple(out)


def _derived(plan: _Plan, rule: _Rule | None, get, eta) -> sp.Matrix:
    if rule is None:
        return get(plan.target)
    return rule.new(get(plan.target), get("d" + plan.target), eta)


def _refuted_rule(plan, instance, rule, reading, values, point, shown, eta, get, apply, lookup,
                  rhs, entry, claimed_r, derived_r) -> Verdict:
    """A claimed rule that is not the spec's: the counterexample after one step, and as a
    note what one small step of the claimed rule does to J (a descent step is not the rule)."""
    theta = plan.target
    at_zero = _evaluate(rhs, _scalar_env(get, instance.m, sp.Integer(0)), lookup, apply)
    if _first_difference(at_zero, get(theta)) is not None:
        start = _spread(at_zero, get(theta))[0]
        cx = Counterexample(instance.sizes, instance.m, shown, f"{theta} at learning rate 0",
                            _first_difference(start, get(theta)), start.evalf(DIGITS),
                            get(theta).evalf(DIGITS))
        verdict = _verdict(plan, False, f"at learning rate 0 the rule does not leave {theta} "
                                        "where it is", cx, reading)
        return dataclasses.replace(verdict, derived=rule.text)
    rget, rapply, _ = instance.real(values)
    moved = _spread(_evaluate(rhs, _scalar_env(rget, instance.m, STEP_RATE), lookup, rapply),
                    rget(theta))[0]
    before = instance.objective(rget)
    after_get, _, _ = instance.real(values, {theta: moved})
    after = instance.objective(after_get)
    change = ("rises" if after > before else "does not fall" if after == before else "falls")
    lines = (f"J = {number_text(before, 10)} before the step; after one step of the claimed "
             f"rule with η = {STEP_RATE}: J = {number_text(after, 10)} ({change} by "
             f"{number_text(abs(after - before), 3)})",)
    cx = Counterexample(instance.sizes, instance.m, shown, f"{theta} after one step",
                        entry, claimed_r, derived_r, lines)
    note = ("a small step of it lowers J here: a descent direction, which is not the rule"
            if after < before else "a small step of it does not lower J: not even a descent "
            "direction")
    verdict = _verdict(plan, False, f"not the spec's rule: one step of each with η = {eta} "
                                    f"gives a different {theta}", cx, reading, note)
    return dataclasses.replace(verdict, derived=rule.text)


def _check_local(plan: _Plan, context: _Context) -> Verdict:
    name = plan.target.split()[1].split("/")[0]
    g = ACTIVATIONS[name].instantiate(Z, _params_of(context.derivation.spec, name))
    derived = sp.diff(g, Z)
    rhs = plan.claim.equation.rhs
    points = [sp.Rational(p, q) for p, q in ((-2, 1), (-3, 4), (-1, 3), (1, 4), (2, 3), (3, 2))]
    for k, z in enumerate(points):
        model = exact_model({}, context.seed * 1000 + k)

        def apply(f, v, model=model):
            return _rational(model.at(f, {Z: Fraction(int(v.p), int(v.q))}))

        def env(n, z=z, apply=apply):
            return sp.Matrix([[z if n == "z" else apply(g, z)]])
        claimed = _evaluate(rhs, env, plan.lookup, apply)[0, 0]
        if claimed == apply(derived, z):
            continue
        real = sp.N(derived.xreplace({Z: z}), DIGITS)

        def renv(n, z=z):
            return sp.Matrix([[z if n == "z" else sp.N(g.xreplace({Z: z}), DIGITS)]])
        claimed_r = _evaluate(rhs, renv, plan.lookup,
                              lambda f, v: sp.N(f.xreplace({Z: v}), DIGITS))[0, 0]
        if abs(claimed_r - real) <= AGREE * (1 + abs(real)):
            continue
        cx = Counterexample((), 1, (("z", sp.Matrix([[z]])),), plan.target, None,
                            sp.Matrix([[claimed_r]]), sp.Matrix([[real]]))
        return dataclasses.replace(
            _verdict(plan, False, f"the formula differs from the derived {plan.target}", cx),
            derived=f"{plan.target} = {sp.sstr(to_primitives(derived))}")
    return _verdict(plan, True, f"equal to the derived {plan.target} at {len(points)} rational "
                                "points of both signs, exactly")


def _check_number(plan: _Plan, context: _Context, claims: ClaimsFile) -> Verdict:
    from .latex.example import evaluate_example, load_example

    claim = plan.claim
    if claims.example is None:
        raise _claim_error(claim, "a number of the worked example needs the example's values: "
                                  "add example: VALUES.yaml to the claims file")
    if context.example is None:
        context.example = evaluate_example(context.derivation,
                                           load_example(claims.example, context.derivation))
    numeric = context.example
    value = sp.Matrix([[numeric.loss]]) if plan.target == "L" else numeric[plan.target]
    if plan.entry:
        r, c = (plan.entry + (1,))[:2]
        if r > value.rows or c > value.cols:
            raise _claim_error(claim, f"{plan.target} is {_dims(value.shape)}: it has no entry "
                                      f"{list(plan.entry)}")
        value = sp.Matrix([[value[r - 1, c - 1]]])
    rhs = claim.equation.rhs
    items = rhs.items if isinstance(rhs, Vector) else (rhs,)
    if len(items) != len(value):
        raise _claim_error(claim, f"{plan.target} has {len(value)} entries, the claim lists "
                                  f"{len(items)}")
    wrong = []
    for k, (item, exact) in enumerate(zip(items, value)):
        text = item.text if isinstance(item, Num) else "-" + item.arg.text
        decimals = len(text.split(".")[1]) if "." in text else 0
        exact_text = sp.Float(exact, DIGITS).__format__(f".{DIGITS - 5}f")
        quantum = Decimal(1).scaleb(-decimals)
        rounded = Decimal(exact_text).quantize(quantum, ROUND_HALF_UP)
        if rounded == Decimal(text):
            continue
        cut = Decimal(exact_text).quantize(quantum, ROUND_DOWN) == Decimal(text)
        where = f"{claim.equation.lhs}{'[' + str(k + 1) + ']' if len(items) > 1 else ''}"
        why = f"{where} is {Decimal(exact_text).quantize(Decimal(1).scaleb(-decimals - 3))}…, " \
              f"{rounded} to {decimals} decimals, not {text}"
        if cut:
            why += f" ({text} is the exact value cut, not rounded)"
        wrong.append(why)
    if wrong:
        return _verdict(plan, False, "; ".join(wrong) + " (the worked example's exact values)")
    return _verdict(plan, True, "the exact value rounds to the printed figure(s) at the "
                                "decimals printed (the worked example's exact values)")
