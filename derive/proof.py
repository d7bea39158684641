"""The proof: the Derivation's matrix formulas equal SymPy's own ``diff`` of the expanded loss.

On a small instance of the spec (same activations, widths <= 3, a shortened stack for a deep
spec), every weight and bias becomes a SymPy symbol, the scalar loss over m = 2 examples is
written out in full from the *declarations* (not from the Derivation), and SymPy's rules of
differentiation give the reference gradient of every parameter: applied node by node over the
expression graph at each point (``_Partial``; ``reference="sympy.diff"`` writes out
``sympy.diff`` of the whole expression instead, with the same values, far more slowly).  The
Derivation's definitions are evaluated on the same explicit matrices, and the two are compared
at random rational points in exact arithmetic.  A Piecewise activation is decided at the point
before it is composed (``_apply_activation``, ``_Entry``), so nested branches never multiply
out; ``prove_spec`` takes a time budget and a progress callback.

Why that is exact (Schwartz-Zippel): after differentiation both sides are rational functions
of the parameters and of the transcendental values they contain (e^{z}, tanh z, erf z, log u,
sqrt 2, pi).  Each such value is given an independent random rational, consistently on both
sides (e^{cz} = (e^{z})^c for the same z, tanh/cosh/sinh through those exponentials, log
undoing exp, odd functions keep their sign), so a right formula agrees exactly at nearly every
point and a wrong one disagrees at a random point with overwhelming probability.  The stand-ins
cannot tie every pair of exponentials (e^{2a} e^{2y-2a} and e^{2y} for unrelated rationals a,
y): where they differ, the true real values at the same rational point judge
(``agree_in_reals``: 60 digits, agreeing to 40), so a right formula is never refuted.  A
Piecewise is decided exactly on the sign of its (rational) argument.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import mpmath
import sympy as sp

from .activations import ACTIVATIONS
from .derivation import Columnwise, Definition, Derivation, Elementwise, M, MatrixDef, derive
from .indexform import ARRAYS as IMAGE_ARRAYS
from .indexform import INDEX as _IMAGE_INDEX
from .indexform import evaluate as evaluate_index_form
from .layers import LAYER_KINDS, M_SYM, ImageError, walk_images
from .local import INDEX
from .losses import LOSSES
from .netspec import LayerSpec, NetSpec
from .primitives import from_primitives

__all__ = ["Mismatch", "ProofReport", "REFERENCES", "agree_in_reals", "evaluate_definitions",
           "exact_model",
           "instances", "prove", "prove_spec", "shrink", "shrink_kinds", "prove_kinds",
           "KindsInstance"]

MAX_WIDTH = 3
MAX_FULL_DEPTH = 4


@dataclass(frozen=True)
class Mismatch:
    """One entry where the Derivation's formula and SymPy's diff disagree."""

    quantity: str  # "dW1", "db2", or a forward quantity "Z2", "A3"
    entry: tuple[int, int]  # 1-based (row, column)
    point: int
    reference: float
    formula: float

    def __str__(self) -> str:
        r, c = self.entry
        return (f"{self.quantity}[{r},{c}] at point {self.point}: SymPy diff gives "
                f"{self.reference:.12g}, the formula gives {self.formula:.12g}")


@dataclass(frozen=True)
class ProofReport:
    spec_name: str
    instance: tuple[int, ...]  # layer sizes of the proved instance
    activations: tuple[str, ...]
    loss: str
    note: str  # how the instance was shrunk
    parameters: int  # scalar parameters checked
    points: int
    mismatches: tuple[Mismatch, ...]
    seconds: float
    complete: bool = True  # False: the proof budget ran out before every check was made
    budget: float | None = None  # seconds allowed (--proof-budget), if any
    checked: int = 0  # comparisons made (prove_spec counts them)
    planned: int = 0  # comparisons a complete proof makes
    instances_proved: int = 1
    instances_planned: int = 1
    in_reals: int = 0  # checks decided by the real-number arbiter (stand-ins differed)

    @property
    def ok(self) -> bool:
        """Every check was made and none disagreed."""
        return self.complete and not self.mismatches

    @property
    def wrong_quantities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.quantity for m in self.mismatches))

    def summary(self) -> str:
        shape = "-".join(map(str, self.instance))
        head = (f"proof of {self.spec_name} on {'a ' + shape if 'instances' not in self.note else 'small'} instance{'s' if 'instances' in self.note else ''} "
                f"({', '.join(self.activations)}; {self.loss}){self.note}: ")
        if self.ok:
            reals = (f"; {self.in_reals} check{'s' if self.in_reals != 1 else ''} to "
                     f"{REAL_AGREE} digits in real numbers, where the exact stand-ins differ"
                     if self.in_reals else "")
            return head + (f"all {self.parameters} parameters agree with SymPy's diff at "
                           f"{self.points} random rational points{reals} ({self.seconds:.1f} s)")
        if not self.mismatches:
            return head + self._incomplete()
        lines = [head + f"FAILED for {', '.join(self.wrong_quantities)}"]
        if not self.complete:
            lines.append("  (" + self._incomplete() + ")")
        lines += [f"  {m}" for m in self.mismatches[:8]]
        if len(self.mismatches) > 8:
            lines.append(f"  ... and {len(self.mismatches) - 8} more entries")
        return "\n".join(lines)

    def _incomplete(self) -> str:
        budget = f"the proof budget of {self.budget:g} s" if self.budget is not None \
            else "the proof budget"
        share = f"{self.checked} of {self.planned}" if self.planned else f"{self.checked}"
        where = (f" (in instance {min(self.instances_proved + 1, self.instances_planned)} of "
                 f"{self.instances_planned})") if self.instances_planned > 1 else ""
        return (f"INCOMPLETE: stopped by {budget} after {self.seconds:.1f} s{where} with "
                f"{share} checks made (values of Z and A, and gradient entries, at random "
                f"rational points); none disagreed so far, but the proof is unfinished: allow "
                f"it more time with a larger --proof-budget")


# --------------------------------------------------------------------------- instance

def shrink(spec: NetSpec) -> tuple[NetSpec, str]:
    """A small instance: widths <= 3, and for a deep stack the distinct hidden activations."""
    hidden = list(spec.layers[:-1])
    note = ""
    if spec.depth > MAX_FULL_DEPTH:
        distinct = list(dict.fromkeys(layer.activation for layer in hidden))
        while len(distinct) < 2:
            distinct.append(distinct[-1])
        hidden = [LayerSpec(MAX_WIDTH, act) for act in distinct]
        note = (f"; shortened from {spec.depth} layers to {len(hidden) + 1}, keeping every "
                f"distinct activation and the output layer")
    out = spec.layers[-1]
    layers = tuple(LayerSpec(min(layer.units, MAX_WIDTH), layer.activation) for layer in hidden)
    layers += (LayerSpec(min(out.units, MAX_WIDTH), out.activation),)
    small = dataclasses.replace(spec, input=min(spec.input, MAX_WIDTH), layers=layers)
    if small.layer_sizes != spec.layer_sizes and not note:
        note = "; widths reduced to at most 3"
    return small, note


# --------------------------------------------------------------------------- exact model

_HYPERBOLIC = (sp.tanh, sp.cosh, sp.sinh, sp.coth, sp.sech, sp.csch)

_EXP_MULTIPLE = 64  # e^{cq} = (e^q)^c for |c| up to this (c a whole or half number)


class _Model:
    """Exact evaluation of SymPy expressions at one random point (see the module docstring)."""

    _ODD = (sp.erf,)

    def __init__(self, rng: random.Random, values: dict[sp.Symbol, Fraction]):
        self.rng = rng
        self.values = values
        self.memo: dict[sp.Basic, object] = {}
        self.atoms: dict[tuple, Fraction] = {}
        self.exp_bases: list[tuple[Fraction, Fraction]] = []  # (argument, e^argument)
        self.logs: dict[Fraction, Fraction] = {}  # e^q -> q: log undoes exp exactly

    def _random(self) -> Fraction:
        """A random rational in (0, 1)."""
        den = self.rng.randint(3, 41)
        return Fraction(self.rng.randint(1, den - 1), den)

    def _exp(self, q: Fraction) -> Fraction:
        """e^q: random, but e^{cq} = (e^q)^c for small c, and e^q > 1 exactly when q > 0.

        SymPy writes e^{b} e^{b} as e^{2b}, and a network whose units are all off (ReLU at a
        random point) leaves only the biases inside the exponentials, so their multiples
        must agree: exp(-2) with exp(-1) squared.
        """
        if q == 0:
            return Fraction(1)
        for base, root in self.exp_bases:
            ratio = q / base
            if ratio.denominator <= 2 and abs(ratio.numerator) <= _EXP_MULTIPLE:
                return root ** (ratio.numerator * (2 // ratio.denominator))
        root = 1 + 2 * self._random()  # sqrt(e^{|q|}) in (1, 3)
        root = root if q > 0 else 1 / root
        self.exp_bases.append((q, root))
        self.logs[root * root] = q
        return root * root

    def _atom(self, key: tuple) -> Fraction:
        if key not in self.atoms:
            self.atoms[key] = self._random()
        return self.atoms[key]

    def __call__(self, expr: sp.Basic):
        try:
            return self.memo[expr]
        except KeyError:
            value = self.memo[expr] = self._eval(expr)
            return value

    def _eval(self, e: sp.Basic):
        if e.is_Rational:
            return Fraction(int(e.p), int(e.q))
        if isinstance(e, _Entry):
            return self._entry(e)
        if e.is_Symbol:
            return self.values[e]
        if isinstance(e, sp.Add):
            return sum((self(a) for a in e.args), Fraction(0))
        if isinstance(e, sp.Mul):
            out = Fraction(1)
            for a in e.args:
                out *= self(a)
            return out
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if e is sp.pi:
            return self._atom(("pi",)) ** 2  # a square, so that sqrt(pi) stays rational
        if isinstance(e, sp.exp):
            return self._exp(self(e.args[0]))
        if isinstance(e, sp.Piecewise):
            for value, cond in e.args:
                if self._truth(cond):
                    return self(value)
            raise ValueError(f"no branch of {e} holds")
        if isinstance(e, sp.sign):
            q = self(e.args[0])
            return Fraction((q > 0) - (q < 0))
        if isinstance(e, sp.Abs):
            return abs(self(e.args[0]))
        if isinstance(e, (sp.Max, sp.Min)):
            pick = max if isinstance(e, sp.Max) else min
            return pick(self(a) for a in e.args)
        if isinstance(e, sp.DiracDelta):  # 0 off its point; a random point is never on it
            if self(e.args[0]) == 0:
                raise ValueError(f"{e} at its singular point")
            return Fraction(0)
        if isinstance(e, sp.Heaviside):
            q = self(e.args[0])
            return Fraction(1) if q > 0 else Fraction(0) if q < 0 else self(e.args[1])
        if isinstance(e, sp.log):
            q = self(e.args[0])  # random, with the sign of log: positive exactly when q > 1
            if q in self.logs:
                return self.logs[q]
            return Fraction(0) if q == 1 else self._atom((sp.log, q)) * (1 if q > 1 else -1)
        if isinstance(e, _HYPERBOLIC):  # through exp, so that they keep exp's identities
            q = self(e.args[0])
            half = self._exp(q)
            cosh, sinh = (half + 1 / half) / 2, (half - 1 / half) / 2  # sinh 0 = 0 exactly
            if e.func in (sp.coth, sp.csch) and not sinh:
                raise ValueError(f"{e} at its pole")
            return {sp.tanh: sinh / cosh, sp.cosh: cosh, sp.sinh: sinh, sp.coth: cosh / sinh,
                    sp.sech: 1 / cosh, sp.csch: 1 / sinh}[e.func]
        if isinstance(e, sp.Function) and len(e.args) == 1:
            q = self(e.args[0])  # odd bounded functions (tanh, erf): in (-1, 1), sign of q
            if q == 0 and isinstance(e, self._ODD):
                return Fraction(0)
            if isinstance(e, self._ODD) and q < 0:
                return -self._atom((e.func, -q))
            return self._atom((e.func, q))
        if e.is_Number:
            raise ValueError(f"inexact number {e} in the proof")
        raise TypeError(f"the proof cannot evaluate {type(e).__name__}: {e}")

    def at(self, expr: sp.Basic, values: dict):
        """``expr``'s value with ``values`` (symbol -> Fraction) added to the point's; the
        random stand-ins stay shared (the claims evaluate a function of one entry so)."""
        inner = copy.copy(self)
        inner.values = {**self.values, **values}
        inner.memo = {}
        return inner(expr)

    def _entry(self, e: "_Entry"):
        """An entry's template at its inputs' values; the random stand-ins stay shared."""
        inner = copy.copy(self)
        inner.values = {**self.values, **{s: self(v) for s, v in e.inputs.items()}}
        inner.memo = {}
        return inner(e.template)

    def _pow(self, e: sp.Pow):
        base, exponent = self(e.base), e.exp
        if exponent.is_Integer:
            return base ** int(exponent)
        if exponent.is_Rational:
            p, q = int(exponent.p), int(exponent.q)
            root = _exact_root(base, q)
            if root is None:  # an irrational constant such as sqrt(2)
                root = self._atom(("root", base, q))
            return root ** p
        return self._exp(self(exponent) * self(sp.log(e.base)))

    def _truth(self, cond) -> bool:
        if cond is sp.true or cond == True:  # noqa: E712 - SymPy booleans
            return True
        if cond is sp.false or cond == False:  # noqa: E712
            return False
        if isinstance(cond, sp.And):
            return all(self._truth(c) for c in cond.args)
        if isinstance(cond, sp.Or):
            return any(self._truth(c) for c in cond.args)
        if isinstance(cond, sp.Not):
            return not self._truth(cond.args[0])
        if isinstance(cond, sp.ITE):
            test, then, otherwise = cond.args
            return self._truth(then) if self._truth(test) else self._truth(otherwise)
        lhs, rhs = self(cond.lhs), self(cond.rhs)
        return {"<": lhs < rhs, "<=": lhs <= rhs, ">": lhs > rhs, ">=": lhs >= rhs,
                "==": lhs == rhs, "!=": lhs != rhs}[cond.rel_op]


REAL_DIGITS = 60  # the real-number arbiter's working precision
REAL_AGREE = 40  # digits to which a formula and its reference must agree there


class _RealModel(_Model):
    """The same evaluation in real numbers (mpmath, REAL_DIGITS digits): the arbiter where
    the exact model's stand-ins disagree.  Stand-ins tie e^{cq} to e^{q} for small c only,
    so a right formula written another way (e^{2a} e^{2y-2a} for e^{2y}, log cosh through
    exp) can differ there; the true values never do.  A formula is then right when it agrees
    with the reference to REAL_AGREE digits at the same rational point."""

    def __init__(self, values: dict[sp.Symbol, Fraction]):
        super().__init__(random.Random(0), values)

    def __call__(self, expr: sp.Basic):
        return _real(super().__call__(expr))  # never a Fraction: they do not compare with mpf

    def _eval(self, e: sp.Basic):
        mp = mpmath.mp
        if e.is_Rational:
            return mpmath.mpf(int(e.p)) / int(e.q)
        if isinstance(e, _Entry):
            return self._entry(e)
        if e.is_Symbol:
            q = self.values[e]
            return mpmath.mpf(q.numerator) / q.denominator if isinstance(q, Fraction) else q
        if e is sp.pi:
            return +mp.pi
        if e is sp.E:
            return mp.e
        if isinstance(e, sp.exp):
            return mp.exp(self(e.args[0]))
        if isinstance(e, sp.log):
            return mp.log(self(e.args[0]))
        if isinstance(e, sp.Pow):
            return self(e.base) ** (int(e.exp) if e.exp.is_Integer else self(e.exp))
        if isinstance(e, (sp.Add, sp.Mul, sp.Piecewise, sp.sign, sp.Abs, sp.Max, sp.Min,
                          sp.DiracDelta, sp.Heaviside)):
            return super()._eval(e)
        if isinstance(e, sp.Function) and len(e.args) == 1:
            x = self(e.args[0])
            value = sp.N(e.func(sp.Float(mpmath.nstr(x, REAL_DIGITS), REAL_DIGITS)), REAL_DIGITS)
            return mpmath.mpf(str(value))
        if e.is_Number:
            return mpmath.mpf(str(sp.N(e, REAL_DIGITS)))
        raise TypeError(f"the proof cannot evaluate {type(e).__name__}: {e}")


def agree_in_reals(reference, formula, values: dict[sp.Symbol, Fraction]) -> bool:
    """``formula`` equals ``reference`` (an expression, or the proof's reference derivative)
    to REAL_AGREE digits at the rational point ``values``, in real numbers."""
    with mpmath.workdps(REAL_DIGITS):
        model = _RealModel(values)
        try:
            expected = reference.value(model) if isinstance(reference, _Partial) else model(reference)
            got = model(formula)
        except (ValueError, TypeError, ZeroDivisionError, ArithmeticError):
            return False
        expected, got = _real(expected), _real(got)
        return abs(expected - got) <= mpmath.mpf(10) ** -REAL_AGREE * (1 + abs(expected))


def _real(x):
    return mpmath.mpf(x.numerator) / x.denominator if isinstance(x, Fraction) else x


def exact_model(values: dict, seed: int = 0):
    """The proof's exact evaluator at one point, for the other stages that compare exactly
    (the claims): ``values`` maps each symbol to a Fraction; the callable returned gives any
    SymPy expression's value, with every transcendental stand-in shared across its calls."""
    return _Model(random.Random(seed), values)


class _Partial:
    """dJ/dtheta at a model's point: SymPy's rules of differentiation applied to the expanded
    expression J, node by node, and evaluated exactly at the point (forward mode).

    ``sp.diff`` of the whole expanded loss writes the derivative out as a tree: a deep network
    shares every activation among all the units after it, so the tree grows with the product
    of the widths, and ``Derivative`` walks its whole result at every level (minutes for four
    smooth layers).  Here the expression is walked as the graph it is, once per parameter and
    point: a sum's derivative is the sum of its terms' derivatives, a product's is the product
    rule, a power's the power rule, and a function's is SymPy's own derivative of it
    (``fdiff``: exp' = exp, tanh' = 1 - tanh^2, erf', log', Abs' = sign, ...) times its
    argument's.  Every value, including those derivatives of functions, is the model's: the
    same random stand-ins as the formula side.  Anything else falls back to ``sp.diff`` of
    that node.
    """

    def __init__(self, expression: sp.Expr, theta: sp.Symbol, graph: "_Graph"):
        self.expression, self.theta, self.graph = expression, theta, graph

    def value(self, model: "_Model") -> Fraction:
        return _Tangent(model, self.theta, self.graph)(self.expression)


class _Graph:
    """Which parameters each node of an expression depends on, and its functions' derivatives,
    computed once and shared by every parameter and point."""

    def __init__(self):
        self.depends: dict[sp.Basic, frozenset] = {}
        self.fdiffs: dict[sp.Basic, tuple] = {}

    def symbols(self, e: sp.Basic) -> frozenset:
        try:
            return self.depends[e]
        except KeyError:
            if e.is_Symbol:
                found = frozenset((e,))
            elif not e.args:
                found = frozenset()
            else:
                found = frozenset().union(*(self.symbols(a) for a in e.args))
            self.depends[e] = found
            return found

    def fdiff(self, e: sp.Function) -> tuple:
        try:
            return self.fdiffs[e]
        except KeyError:
            found = self.fdiffs[e] = tuple(e.fdiff(i + 1) for i in range(len(e.args)))
            return found


class _Tangent:
    """d(node)/d(theta) at one point, memoised over the expression graph."""

    def __init__(self, model: "_Model", theta: sp.Symbol, graph: _Graph):
        self.model, self.theta, self.graph = model, theta, graph
        self.memo: dict[sp.Basic, Fraction] = {}

    def __call__(self, e: sp.Basic) -> Fraction:
        if self.theta not in self.graph.symbols(e):
            return Fraction(0)
        try:
            return self.memo[e]
        except KeyError:
            value = self.memo[e] = self._rule(e)
            return value

    def _rule(self, e: sp.Basic) -> Fraction:
        model = self.model
        if e == self.theta:
            return Fraction(1)
        if isinstance(e, sp.Add):
            return sum((self(a) for a in e.args), Fraction(0))
        if isinstance(e, sp.Mul):
            total = Fraction(0)
            for i, factor in enumerate(e.args):
                d = self(factor)
                if d:
                    for j, other in enumerate(e.args):
                        if j != i:
                            d *= model(other)
                    total += d
            return total
        if isinstance(e, sp.Pow) and self.theta not in self.graph.symbols(e.exp):
            d = self(e.base)
            if not d:
                return d
            lower = sp.Pow(e.base, e.exp - 1, evaluate=False)
            return model(e.exp) * model(lower) * d
        if isinstance(e, sp.exp):
            return model(e) * self(e.args[0])
        if isinstance(e, sp.Piecewise):
            for branch, cond in e.args:  # off the boundaries: the derivative of the branch
                if model._truth(cond):
                    return self(branch)
        if isinstance(e, sp.Function) and not isinstance(e, _NOT_BY_FDIFF):
            parts = self.graph.fdiff(e)
            if not any(p.has(sp.Derivative, sp.Subs) for p in parts):
                total = Fraction(0)
                for part, arg in zip(parts, e.args):
                    d = self(arg)
                    if d:
                        total += model(part) * d
                return total
        return model(sp.diff(e, self.theta))


_NOT_BY_FDIFF = (sp.Piecewise, sp.sign, sp.Heaviside, sp.DiracDelta, sp.Max, sp.Min)


def _exact_root(q: Fraction, n: int) -> Fraction | None:
    if q < 0 and n % 2 == 0:
        return None
    sign = -1 if q < 0 else 1
    num, den = _int_root(abs(q.numerator), n), _int_root(q.denominator, n)
    return None if num is None or den is None else sign * Fraction(num, den)


def _int_root(k: int, n: int) -> int | None:
    r = round(k ** (1.0 / n))
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**n == k:
            return c
    return None


# --------------------------------------------------------------------------- explicit network

def _random_rational(rng: random.Random, nonzero: bool = True) -> sp.Rational:
    while True:
        value = sp.Rational(rng.randint(-12, 12), rng.randint(1, 7))
        if value != 0 or not nonzero:
            return value


def _targets(spec: NetSpec, rng: random.Random, m: int) -> sp.Matrix:
    n = spec.layers[-1].units
    loss = LOSSES[spec.loss]
    if loss.one_hot:
        cols = [rng.randrange(n) for _ in range(m)]
        return sp.Matrix(n, m, lambda r, c: 1 if r == cols[c] else 0)
    if loss.labels == "binary":
        return sp.Matrix(n, m, lambda r, c: rng.randint(0, 1))
    return sp.Matrix(n, m, lambda r, c: _random_rational(rng))


def _apply_activation(spec_layer: LayerSpec, Z: sp.Matrix, model: "_Model") -> sp.Matrix:
    """A = g(Z) from the declaration itself (the reference does not use the Derivation).

    A Piecewise g is replaced by the branch that holds at the model's point: at a point off
    the boundaries its derivative is that branch's derivative, and SymPy differentiates the
    branch far faster than nested Piecewise.
    """
    act = ACTIVATIONS[spec_layer.activation.name]
    if act.vector:
        I = INDEX
        rows = Z.shape[0]
        out = sp.zeros(*Z.shape)
        for c in range(Z.shape[1]):
            column = {I.z[r + 1]: Z[r, c] for r in range(rows)}
            for r in range(rows):
                entry = act.expr(I.z, r + 1, I.k, rows).doit()
                out[r, c] = entry.xreplace(column)
        return out
    z = sp.Symbol("z", real=True)
    g = act.instantiate(z, spec_layer.activation.param_dict)

    def apply(entry):
        if isinstance(g, sp.Piecewise):
            for branch, cond in g.args:
                if model._truth(cond.xreplace({z: entry})):
                    return branch.xreplace({z: entry})
        return g.xreplace({z: entry})

    return Z.applyfunc(apply)


def evaluate_definitions(derivation: Derivation, env: dict, finish=None, clock=None) -> dict:
    """Evaluate every definition of the Derivation on the explicit matrices in env, in order.

    ``env`` maps the inputs (X, Y, every W and b, and ``M``) to explicit SymPy matrices;
    each definition's value is added to it, passed through ``finish`` first if given (the
    worked example rounds to a number of digits there).  ``clock`` (the proof's) is told
    between definitions, so that a proof budget can stop here.
    """
    for definition in derivation.definitions:
        if clock is not None:
            clock.tick(f"evaluating {definition.target.name}, ")
        value = evaluate_definition(definition, env)
        env[definition.target] = finish(value) if finish else value
    return env


def evaluate_definition(definition: Definition, env: dict) -> sp.Matrix:
    """One definition's value on the explicit matrices in env."""
    if isinstance(definition, MatrixDef):
        return _explicit(definition.expr, env)
    if isinstance(definition, Elementwise):
        inputs = [(sym, _explicit(mat, env)) for sym, mat in definition.inputs]
        expr = from_primitives(definition.expr)
        return sp.Matrix(*inputs[0][1].shape, lambda r, c: _put_in(
            expr, {sym: mat[r, c] for sym, mat in inputs}))
    if isinstance(definition, Columnwise):
        return _columnwise(definition, env)
    raise TypeError(f"unknown kind of definition: {type(definition).__name__}")


class _Entry(sp.Dummy):
    """One entry of a Piecewise definition on symbolic inputs, held whole: ``template`` (in
    its own symbols) with ``inputs`` (symbol -> the input entry).

    Putting symbolic entries into a Piecewise makes SymPy fold its conditions with those of
    the Piecewise inside them (one layer's inside the next one's), which takes minutes for two
    such layers; the exact model instead evaluates the template at the inputs' values.
    """

    def __new__(cls, template: sp.Expr, inputs: dict):
        entry = super().__new__(cls, "entry", real=True)
        entry.template, entry.inputs = template, inputs
        return entry


def _put_in(expr: sp.Expr, values: dict) -> sp.Expr:
    """``expr`` with ``values`` put in; a Piecewise of symbolic values as an ``_Entry``."""
    if expr.has(sp.Piecewise) and any(sp.sympify(v).free_symbols for v in values.values()):
        return _Entry(expr, values)
    return expr.xreplace(values)


def _columnwise(definition: Columnwise, env: dict) -> sp.Matrix:
    I = INDEX
    inputs = [(base, _explicit(mat, env)) for base, mat in definition.inputs]
    rows = definition.target.shape[0]
    cols = env[M]
    expr = from_primitives(definition.expr).subs(I.n, rows).doit()
    out = sp.zeros(rows, cols)
    for c in range(cols):
        column = {base[r + 1]: mat[r, c] for base, mat in inputs for r in range(rows)}
        for r in range(rows):
            out[r, c] = expr.subs(I.j, r + 1).xreplace(column)
    return out


def _explicit(expr: sp.Basic, env: dict) -> sp.Matrix:
    """A matrix expression made explicit with the matrices in env."""
    if isinstance(expr, sp.MatrixSymbol):
        return env[expr]
    if isinstance(expr, sp.OneMatrix):
        rows, cols = (env[M] if d == M else d for d in expr.shape)
        return sp.ones(int(rows), int(cols))
    if isinstance(expr, sp.Transpose):
        return _explicit(expr.arg, env).T
    if isinstance(expr, sp.MatMul):
        scalar, matrices = sp.S.One, []
        for factor in expr.args:
            if factor.is_Matrix or isinstance(factor, sp.MatrixExpr):
                matrices.append(_explicit(factor, env))
            else:
                scalar *= factor.xreplace({M: env[M]})
        out = matrices[0]
        for mat in matrices[1:]:
            out = out * mat
        return out * scalar
    if isinstance(expr, sp.MatAdd):
        parts = [_explicit(a, env) for a in expr.args]
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out
    if isinstance(expr, sp.HadamardProduct):
        parts = [_explicit(a, env) for a in expr.args]
        out = parts[0]
        for p in parts[1:]:
            out = out.multiply_elementwise(p)
        return out
    if isinstance(expr, sp.MatrixExpr) and hasattr(expr, "function"):  # ElementwiseApplyFunction
        inner = _explicit(expr.expr, env)
        return inner.applyfunc(expr.function)
    raise TypeError(f"the proof cannot evaluate the matrix expression {type(expr).__name__}: {expr}")


# --------------------------------------------------------------------------- the proof

class _OutOfTime(Exception):
    """The proof budget ran out (raised between two checks, never inside SymPy)."""


@dataclass
class _Clock:
    """The proof's budget and progress: ``tick`` is called between checks."""

    deadline: float | None = None
    progress: Callable[[str], None] | None = None
    checked: int = 0  # comparisons made so far, over every instance and point
    planned: int = 0  # comparisons the proof will make when it finishes
    _last: float = 0.0

    def tick(self, what: str = "") -> None:
        now = time.perf_counter()
        if self.deadline is not None and now > self.deadline:
            raise _OutOfTime
        if self.progress is not None and (now - self._last > 0.1 or not what):
            self._last = now
            self.progress(f"{what}{self.checked}/{self.planned or '?'} checks")


def prove(derivation: Derivation, *, points: int = 3, examples: int = 2, seed: int = 0,
          note: str = "", reference: str = "graph", clock: _Clock | None = None) -> ProofReport:
    """Check every formula of ``derivation`` against SymPy's diff; the spec must be small.

    ``reference`` says how the reference derivative of the expanded loss is taken:
    ``"graph"`` applies SymPy's rules of differentiation node by node over the expression
    graph, exactly at each point (fast); ``"sympy.diff"`` writes out ``sympy.diff`` of the
    whole expression for each parameter (slow beyond three layers; the tests check both give
    the same values).  ``clock`` carries a deadline and a progress callback (see ``prove_spec``).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, not {reference!r}")
    clock = clock or _Clock()
    started = time.perf_counter()
    spec = derivation.spec
    rng = random.Random(seed)
    m = examples
    params: list[sp.Symbol] = []
    env: dict = {M: m}
    X = sp.Matrix(spec.input, m, lambda r, c: _random_rational(rng))
    Y = _targets(spec, rng, m)
    env[derivation.X], env[derivation.Y] = X, Y

    for layer in derivation.layers:
        l = layer.index
        env[layer.W] = sp.Matrix(layer.units, layer.fan_in,
                                 lambda r, c: sp.Symbol(f"W{l}_{r + 1}{c + 1}", real=True))
        env[layer.b] = sp.Matrix(layer.units, 1, lambda r, c: sp.Symbol(f"b{l}_{r + 1}", real=True))
        params += list(env[layer.W]) + list(env[layer.b])
    shape = "-".join(map(str, spec.layer_sizes))
    mismatches: list[Mismatch] = []
    done = in_reals = 0
    try:
        clock.tick(f"proof of {spec.name} ({shape}): evaluating the formulas, ")
        evaluate_definitions(derivation, env, clock=clock)
        # Piecewise activations are resolved branch by branch at each point, so the reference
        # is written out per point; smooth networks are written out once.
        piecewise = any(isinstance(layer.activation.expr, sp.Piecewise)
                        for layer in derivation.layers)
        comparisons = None
        for point in range(1, points + 1):
            values = {p: Fraction(*_as_pair(_random_rational(rng))) for p in params}
            model = _Model(random.Random(seed * 1000 + point), values)
            if comparisons is None or piecewise:
                comparisons = list(_comparisons(derivation, env, X, Y, model, reference))
            what = f"proof of {spec.name} ({shape}), point {point}/{points}: "
            for name, entry, expected_value, formula in comparisons:
                clock.tick(what)
                if isinstance(expected_value, _Partial):
                    expected = expected_value.value(model)
                else:
                    expected = model(expected_value)
                got = model(formula)
                if expected != got:  # the stand-ins differ: the real values judge
                    if agree_in_reals(expected_value, formula, values):
                        in_reals += 1
                    else:
                        mismatches.append(Mismatch(name, entry, point, float(expected),
                                                   float(got)))
                clock.checked += 1
            done = point
        complete = True
    except _OutOfTime:
        complete = False
    return ProofReport(spec.name, spec.layer_sizes,
                       tuple(layer.activation.name for layer in spec.layers), spec.loss,
                       note, len(params), done, tuple(mismatches),
                       time.perf_counter() - started, complete=complete, in_reals=in_reals)


REFERENCES = ("graph", "sympy.diff")


def _comparisons(derivation: Derivation, env: dict, X: sp.Matrix, Y: sp.Matrix, model: _Model,
                 method: str = "graph"):
    """(name, entry, reference, formula) for every forward quantity and every gradient entry.

    The reference is the network written out from the declarations and SymPy's ``diff`` of
    the scalar objective J on it (``Objective.value``: the loss as declared, plus the
    penalties); the formula is the Derivation's, already evaluated in ``env``.
    """
    spec = derivation.spec
    m = X.shape[1]
    A = X
    for layer, layer_spec in zip(derivation.layers, spec.layers):
        Z = env[layer.W] * A + env[layer.b] * sp.ones(1, m)
        A = _apply_activation(layer_spec, Z, model)
        for symbol, reference in ((layer.Z, Z), (layer.A, A)):
            for (r, c), ref in _entries(reference):
                yield symbol.name, (r, c), ref, env[symbol][r - 1, c - 1]
    weights = [w for layer in derivation.layers for w in env[layer.W]]
    J = derivation.objective.value(A, Y, weights)
    graph = _Graph()
    for grad in derivation.gradients:
        formula = env[grad.target]
        for (r, c), theta in _entries(env[grad.param]):
            partial = _Partial(J, theta, graph) if method == "graph" else sp.diff(J, theta)
            yield grad.target.name, (r, c), partial, formula[r - 1, c - 1]


def _entries(matrix: sp.Matrix):
    for r in range(matrix.shape[0]):
        for c in range(matrix.shape[1]):
            yield (r + 1, c + 1), matrix[r, c]


def _as_pair(q: sp.Rational) -> tuple[int, int]:
    return int(q.p), int(q.q)


MAX_DISTINCT_PER_INSTANCE = 3


def instances(spec: NetSpec) -> tuple[tuple[NetSpec, str], ...]:
    """The small instances that together prove a spec.

    A spec of at most 4 layers, or a deep one with at most 3 distinct hidden activations, is
    proved on one instance (``shrink``).  A deep stack with more distinct activations is
    proved on several instances of at most 4 layers, each holding up to 3 of its distinct
    hidden activations and the output layer: every activation's derivative and the
    recurrence between hidden layers are proved, and SymPy's diff of the expanded loss stays
    small (its cost grows steeply with depth).
    """
    distinct = list(dict.fromkeys(layer.activation for layer in spec.layers[:-1]))
    if spec.depth <= MAX_FULL_DEPTH or len(distinct) <= MAX_DISTINCT_PER_INSTANCE:
        return (shrink(spec),)
    groups = [distinct[i:i + MAX_DISTINCT_PER_INSTANCE]
              for i in range(0, len(distinct), MAX_DISTINCT_PER_INSTANCE)]
    out = spec.layers[-1]
    note = (f"; shortened from {spec.depth} layers to {len(groups)} instances of at most "
            f"{MAX_DISTINCT_PER_INSTANCE + 1} layers that together keep every distinct "
            f"activation, each with the output layer")
    result = []
    for group in groups:
        while len(group) < 2:
            group = group + group[-1:]
        layers = tuple(LayerSpec(MAX_WIDTH, act) for act in group)
        layers += (LayerSpec(min(out.units, MAX_WIDTH), out.activation),)
        result.append((dataclasses.replace(spec, input=min(spec.input, MAX_WIDTH), layers=layers), note))
    return tuple(result)


def prove_spec(spec: NetSpec, *, budget: float | None = None,
               progress: Callable[[str], None] | None = None, **kwargs) -> ProofReport:
    """Shrink the spec to small instances, derive each and prove it; one combined report.

    ``budget``: seconds after which the proof stops between two checks and reports what it
    covered (an incomplete report: ``ok`` is False).  ``progress`` is called now and then
    with a one-line description of where the proof is (the command shows it on a terminal).
    """
    clock = _Clock(None if budget is None else time.perf_counter() + budget, progress)
    started = time.perf_counter()
    if not spec.plain_dense:  # a stack of layer kinds: one instance keeps every layer
        small, note = shrink_kinds(spec)
        points = kwargs.get("points", 3)
        clock.planned = points * sum(int(math.prod(shape)) for layer in small.layers
                                     for shape in _kind_shapes(layer, small))
        report = prove_kinds(derive(small), note=note, clock=clock, **kwargs)
        return dataclasses.replace(report, seconds=time.perf_counter() - started, budget=budget,
                                   checked=clock.checked, planned=clock.planned)
    planned = instances(spec)
    points, examples = kwargs.get("points", 3), kwargs.get("examples", 2)
    clock.planned = sum(_checks(small.layer_sizes, points, examples) for small, _ in planned)
    reports = []
    for small, note in planned:
        try:
            clock.tick(f"proof of {spec.name}: deriving instance {len(reports) + 1}/{len(planned)}, ")
            derivation = derive(small)
        except _OutOfTime:
            break
        reports.append(prove(derivation, note=note, clock=clock, **kwargs))
        if not reports[-1].complete:
            break
    seconds = time.perf_counter() - started
    if not reports:  # the budget ran out before the first instance was derived
        small, note = planned[0]
        reports = [ProofReport(spec.name, small.layer_sizes,
                               tuple(layer.activation.name for layer in small.layers),
                               spec.loss, note, 0, 0, (), seconds, complete=False)]
    first = reports[0]
    return dataclasses.replace(
        first,
        activations=first.activations if len(reports) == 1 else
        tuple(dict.fromkeys(a for r in reports for a in r.activations)),
        parameters=sum(r.parameters for r in reports),
        points=min(r.points for r in reports),
        mismatches=tuple(m for r in reports for m in r.mismatches),
        seconds=seconds,
        instance=tuple(max(sizes) for sizes in zip(*(r.instance for r in reports))),
        complete=len(reports) == len(planned) and all(r.complete for r in reports),
        budget=budget, checked=clock.checked, planned=clock.planned,
        instances_proved=sum(r.complete for r in reports), instances_planned=len(planned),
        in_reals=sum(r.in_reals for r in reports),
    )


def _kind_shapes(layer: LayerSpec, spec: NetSpec) -> list[tuple[int, ...]]:
    """The shapes of a layer's parameters, from its kind's declaration."""
    sizes = spec.layer_sizes
    l = spec.layers.index(layer) + 1
    kind = LAYER_KINDS[layer.kind]
    options = {o.key: o.default for o in kind.options} | layer.option_dict
    options["image"] = spec.image_in(l)
    return [p.shape_for(sizes[l - 1], sizes[l], options) for p in kind.params_for(options)]


def _checks(sizes: tuple[int, ...], points: int, examples: int) -> int:
    """Comparisons ``prove`` makes on an instance: every Z and A entry of each example and
    every parameter, at each point."""
    return points * sum(2 * n * examples + n * k + n for k, n in zip(sizes, sizes[1:]))


# --------------------------------------------------------------------------- layer kinds

GRAPH_EXAMPLES = 3  # examples of a kinds instance: batch normalisation couples them (m >= 2)


def shrink_kinds(spec: NetSpec) -> tuple[NetSpec, str]:
    """A small instance of a stack of layer kinds: every layer kept (each kind is proved in
    place, with its skip), dense widths at most 3 and the other kinds' widths following; an
    image at most 2 channels and 2 filters per convolution, of the smallest height and width
    that every window (kernel, stride, padding, pool size) fits, each convolution giving at
    least 2 x 2 where the spec's own size allows it."""
    image, layers = spec.image, list(spec.layers)
    note = ""
    if image is not None:
        layers = [dataclasses.replace(layer, options=tuple(
            (k, min(v, MAX_IMAGE_CHANNELS) if k == "filters" else v) for k, v in layer.options))
            for layer in layers]
        image = _small_image(image, layers)
        note = f"; images reduced to {'x'.join(map(str, image))}" if image != spec.image else ""
    images = walk_images(image, layers) if image is not None else [None] * len(layers)
    widths = [min(spec.input, MAX_WIDTH) if image is None else math.prod(image)]
    small_layers = []
    for layer, out in zip(layers, images):
        if out is not None:
            units = math.prod(out)
        else:
            units = min(layer.units, MAX_WIDTH) if layer.kind == "dense" else widths[-1]
        small_layers.append(dataclasses.replace(layer, units=units, image=out))
        widths.append(units)
    small = dataclasses.replace(spec, input=widths[0], layers=tuple(small_layers), image=image)
    for layer in small.layers:  # a skip's widths shrink alike (both were equal)
        if layer.skip is not None and widths[layer.skip] != layer.units:
            raise ValueError("a skip between layers of unequal width after shrinking")
    if small.layer_sizes != spec.layer_sizes and not note:
        note = "; widths reduced to at most 3"
    elif small.layer_sizes != spec.layer_sizes:
        note += ", widths to at most 3"
    return small, note


MAX_IMAGE_CHANNELS = 2  # channels and filters of a proof instance's images


def _small_image(image: tuple, layers) -> tuple:
    """The smallest (C', H', W') (C' <= 2), at least the first kernel's size, that every
    window of ``layers`` fits, preferring one where each convolution gives at least 2 x 2
    (its correlation then has more than one position)."""
    C, H, W = image
    channels = min(C, MAX_IMAGE_CHANNELS)
    # at least the first kernel's size: it sees the input, not only the padding
    convolutions = [LAYER_KINDS[layer.kind].index_form == "conv" for layer in layers]
    kernel = next((dict(layer.options).get("kernel", 1) for layer, conv in
                   zip(layers, convolutions) if conv), 1)
    fits = []
    for h, w in sorted(((h, w) for h in range(min(kernel, H), H + 1)
                        for w in range(min(kernel, W), W + 1)),
                       key=lambda hw: (hw[0] + hw[1], hw)):
        try:
            images = walk_images((channels, h, w), layers)
        except ImageError:
            continue
        sides = [min(x[1:]) for x, conv in zip(images, convolutions) if x is not None and conv]
        if all(side >= 2 for side in sides) or min(h, w) >= min(H, W):
            return (channels, h, w)
        fits.append((channels, h, w))
    return fits[0] if fits else (channels, H, W)


class KindsInstance:
    """One point of the proof of a GraphDerivation, in exact arithmetic.

    Arrays are numpy object arrays of SymPy expressions, one row per example.  Every
    parameter entry is a symbol; the reference is SymPy's rules of differentiation applied to
    J written out from the kinds' declared forward (``_Partial``), with each Piecewise
    activation decided at the point, and the formulas are the derived backward statements
    evaluated on the same arrays.  A square root of a variance is made exact by the point: ε
    (a symbol per statistic, a constant of both sides) is given the value s² − σ² for a random
    rational s, so √(σ² + ε) = s; the map (θ, s) -> (θ, s² − σ²(θ)) reaches every (θ, ε), so a
    formula that is wrong somewhere is wrong at a random such point (Schwartz-Zippel).
    """

    def __init__(self, derivation, rng: random.Random, m: int, values: dict | None = None,
                 eps: dict | None = None):
        """``values``: arrays (symbol -> object array, one row per example) that replace the
        random input, targets and symbolic parameters (the claims' points); ``eps``: the
        values of ε's entries to keep (else chosen at each point, and kept in ``eps_values``)."""
        import numpy as np

        self.np = np
        self.derivation = derivation
        spec = derivation.spec
        self.m = m
        self.env: dict = {}
        self.params: list = []
        self.eps_values: dict = dict(eps or {})
        X = np.array([[_random_rational(rng) for _ in range(spec.input)] for _ in range(m)],
                     dtype=object)
        self.Y = _targets(spec, rng, m)  # (n_L, m), the loss's own targets
        self.env[derivation.X] = X
        self.env[derivation.Y] = np.array(self.Y.T.tolist(), dtype=object)
        self.env[derivation.m] = np.array([[sp.Integer(m)]], dtype=object)
        self.eps: dict = {}  # a constant's symbol -> (its entries' symbols, the statistic)
        for node in derivation.nodes:
            for p, shape, _, _ in node.params:
                if len(shape) > 2:  # a kernel (F, C, k, k): W1_1_1_2_3 is W1[0, 0, 1, 2]
                    value = np.empty(shape, dtype=object)
                    for index in np.ndindex(*shape):
                        value[index] = sp.Symbol(
                            f"{p.name}_" + "_".join(str(i + 1) for i in index), real=True)
                    self.env[p] = value
                    self.params.extend(value.flat)
                    continue
                rows, cols = (shape if len(shape) == 2 else (1, shape[0]))
                value = np.array([[sp.Symbol(f"{p.name}_{r + 1}{c + 1}", real=True)
                                   for c in range(cols)] for r in range(rows)], dtype=object)
                self.env[p] = value
                self.params.extend(value.flat)
            for r, keep in node.randoms:  # a fixed mask with some of each
                mask = [[int(rng.random() < max(keep, 0.5)) for _ in range(node.units)]
                        for _ in range(m)]
                mask[0][0], mask[-1][-1] = 1, 0 if node.units * m > 1 else 1
                self.env[r] = np.array(mask, dtype=object)
            for c, _, like in node.constants:
                cls, width = derivation.shapes[like]
                shape = (1, width) if cls == "row" else (m, 1)
                symbols = np.array([[sp.Symbol(f"{c.name}_{i + 1}{j + 1}", positive=True)
                                     for j in range(shape[1])] for i in range(shape[0])],
                                   dtype=object)
                self.env[c] = symbols
                self.eps[like] = symbols
        self.env |= dict(values or {})

    # -- statements -------------------------------------------------------------------
    def _array(self, symbol):
        value = self.env[symbol]
        return value if value.ndim == 2 else value.reshape(1, -1)

    def _map(self, expr, reads, resolve):
        np = self.np
        arrays = np.broadcast_arrays(*[self._array(s) for s in reads]) if reads else []
        shape = arrays[0].shape if arrays else (1, 1)
        out = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            values = {s: a[index] for s, a in zip(reads, arrays)}
            out[index] = resolve(expr, values)
        return out

    def run(self, statements, model, resolve_piecewise: bool) -> None:
        """Evaluate statements into env; a Piecewise decided at the model's point (the
        reference) or held as an entry the model evaluates (the formulas)."""
        np = self.np

        def resolve(expr, values):
            expr = from_primitives(expr)
            if resolve_piecewise and expr.has(sp.Piecewise):
                expr = _decided(expr, values, model)
                return expr.xreplace(values)
            return _put_in(expr, values)

        for st in statements:
            op = st.op
            if op == "linear":
                z = np.dot(self.env[st.a], self.env[st.W].T)
                if st.b is not None:
                    z = z + self._array(st.b)
                value = z
            elif op == "let":
                value = self._map(st.expr, st.reads, resolve)
            elif op == "reduce":
                inner = self._map(st.expr, st.reads, resolve)
                axis = 0 if st.axis == "batch" else 1
                value = inner.sum(axis=axis, keepdims=True)
                if st.mean:
                    value = value / sp.Integer(inner.shape[axis])
                value = np.vectorize(lambda e: e.xreplace({}) if hasattr(e, "xreplace") else e,
                                     otypes=[object])(value)
            elif op == "product":
                left = self.env[st.left]
                value = np.dot(left.T if st.transpose else left, self._array(st.right))
            elif op == "activate":
                layer = next(n.spec for n in self.derivation.nodes if n.A == st.target)
                Z = sp.Matrix(self.env[st.source].T.tolist())
                value = np.array(_apply_activation(layer, Z, model).T.tolist(), dtype=object)
            elif op == "output_error":
                value = self._output_error(st)
            elif op in ("conv", "pool") or hasattr(st, "rule"):
                value = self._window(st, model)
            else:
                raise TypeError(f"the proof cannot evaluate a {op} statement")
            self.env[st.target] = value
            if st.target in self.eps:
                self._exact_roots(st.target, model)

    def _window(self, st, model):
        """A window statement: its index form (the declared forward, or the reverse rule SymPy
        derived) summed out at the window's sizes over the arrays seen as images; max pooling's
        indicator M of each window's first maximum taken at the model's point."""
        A, w = IMAGE_ARRAYS, st.window
        m = self.m
        image_in = (m, *w.image_in)
        image_out = (m, *w.image_out)
        sizes = w.sizes() | {M_SYM: m}
        if st.op == "conv":
            arrays = {A.a: self.env[st.a].reshape(image_in), A.W: self.env[st.W]}
            if st.b is not None:
                arrays[A.b] = self.env[st.b].reshape(-1)
            I = _IMAGE_INDEX
            value = evaluate_index_form(st.expr, (I.n, I.f, I.i, I.j), arrays, sizes, image_out)
            return value.reshape(m, -1)
        if st.op == "pool":
            a = self.env[st.a].reshape(image_in)
            arrays = {A.a: a, A.M: self._first_maxima(a, w, model)}
            I = _IMAGE_INDEX
            value = evaluate_index_form(st.expr, (I.n, I.f, I.i, I.j), arrays, sizes, image_out)
            return value.reshape(m, -1)
        arrays = {A.delta: self.env[st.delta].reshape(image_out)}
        if st.rule == "conv_input":
            arrays[A.W] = self.env[st.other]
            shape = image_in
        elif st.rule == "conv_weight":
            arrays[A.a] = self.env[st.other].reshape(image_in)
            shape = (w.filters, w.channels, w.kernel, w.kernel)
        elif st.rule == "conv_bias":
            shape = (w.filters,)
        else:  # a pool's input rule
            arrays[A.a] = self.env[st.other].reshape(image_in)
            arrays[A.M] = self._first_maxima(arrays[A.a], w, model)
            shape = image_in
        value = evaluate_index_form(st.expr, st.free, arrays, sizes, shape)
        if st.rule == "conv_weight":
            return value
        return value.reshape(1, -1) if st.rule == "conv_bias" else value.reshape(m, -1)

    def _first_maxima(self, a, window, model):
        """M: 1 at the first maximum of each size x size window of ``a`` (m, C, H, W) at the
        model's point (PyTorch's tie rule), 0 elsewhere."""
        np = self.np
        M = np.full(a.shape, sp.S.Zero, dtype=object)
        s = window.kernel
        for n, c, i, j in np.ndindex(a.shape[0], a.shape[1], window.out_height, window.out_width):
            cells = [(s * i + p, s * j + q) for p in range(s) for q in range(s)]
            values = [model(a[n, c, u, v]) for u, v in cells]
            u, v = cells[values.index(max(values))]
            M[n, c, u, v] = sp.S.One
        return M

    def _output_error(self, st):
        I = INDEX
        A, Z, Y = self.env[st.A], self.env[st.Z], self.env[self.derivation.Y]
        rows = A.shape[1]
        expr = from_primitives(st.output.delta).subs(I.n, rows).doit()
        out = self.np.empty(A.shape, dtype=object)
        for c in range(A.shape[0]):
            column = {}
            for r in range(rows):
                column |= {I.a[r + 1]: A[c, r], I.y[r + 1]: Y[c, r], I.z[r + 1]: Z[c, r]}
            for r in range(rows):
                out[c, r] = _put_in(expr.subs(I.j, r + 1), column) / self.m
        return out

    def _exact_roots(self, statistic, model) -> None:
        """ε per entry of ``statistic`` such that σ² + ε is the square of a random rational."""
        for symbol, variance in zip(self.eps[statistic].flat, self.env[statistic].flat):
            if symbol not in self.eps_values:
                v = model(variance)
                s = Fraction(math.isqrt(math.ceil(v)) + 1) + model._random()
                self.eps_values[symbol] = s * s - v
            model.values[symbol] = self.eps_values[symbol]

    def objective(self):
        derivation = self.derivation
        last = derivation.nodes[-1].A
        outputs = sp.Matrix(self.env[last].T.tolist())
        weights = [w for p in derivation.penalised for w in self.env[p].flat]
        return derivation.objective.value(outputs, self.Y, weights)


def _decided(expr, values, model):
    """``expr`` with each Piecewise replaced by the branch that holds at the model's point."""
    def pick(piecewise):
        for branch, cond in piecewise.args:
            if model._truth(cond.xreplace(values)):
                return branch
        raise ValueError(f"no branch of {piecewise} holds")
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), pick)


def prove_kinds(derivation, *, points: int = 3, examples: int = GRAPH_EXAMPLES, seed: int = 0,
                note: str = "", clock: "_Clock | None" = None, **_) -> ProofReport:
    """Check every derived gradient of a GraphDerivation against SymPy's differentiation of J
    written out from the kinds' declared forward, exactly, at random rational points."""
    clock = clock or _Clock()
    started = time.perf_counter()
    spec = derivation.spec
    rng = random.Random(seed)
    mismatches: list[Mismatch] = []
    done, count = 0, 0
    shape = "-".join(map(str, spec.layer_sizes))
    try:
        for point in range(1, points + 1):
            instance = KindsInstance(derivation, random.Random(seed * 7919 + point), examples)
            values = {p: Fraction(*_as_pair(_random_rational(rng))) for p in instance.params}
            model = _Model(random.Random(seed * 1000 + point), values)
            what = f"proof of {spec.name} ({shape}), point {point}/{points}: "
            clock.tick(what)
            instance.run(derivation.forward, model, resolve_piecewise=True)
            J = instance.objective()
            instance.run(derivation.backward, model, resolve_piecewise=False)
            graph = _Graph()
            for param, grad in derivation.gradients:
                formula = instance.env[grad].reshape(instance.env[param].shape)
                for index, theta in zip(instance.np.ndindex(*formula.shape),
                                        instance.env[param].flat):
                    clock.tick(what)
                    expected = _Partial(J, theta, graph).value(model)
                    got = model(formula[index])
                    if expected != got:
                        entry = tuple(i + 1 for i in index) if len(index) != 1 else (index[0] + 1, 1)
                        mismatches.append(Mismatch(grad.name, entry, point, float(expected),
                                                   float(got)))
                    clock.checked += 1
            count = len(instance.params)
            done = point
        complete = True
    except _OutOfTime:
        complete = False
    return ProofReport(spec.name, spec.layer_sizes,
                       tuple(layer.activation.name for layer in spec.layers), spec.loss,
                       note, count, done, tuple(mismatches), time.perf_counter() - started,
                       complete=complete)
