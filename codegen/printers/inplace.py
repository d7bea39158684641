"""In-place printing: a SymPy expression -> NumPy ufunc calls writing into preallocated buffers.

The trainer's fast path evaluates the same element-wise formulas as the functional API
(activations, their derivatives, the output error), but with ``out=`` into buffers that are
allocated once, so a training step allocates no arrays.  ``InplacePrinter.emit(expr, target)``
returns the statements; temporaries come from a pool whose size the template allocates.

Recognised patterns print as one call where the generic rules would take several (max(z, 0)
for ReLU, ``greater`` for its derivative, a stable five-call softmax); everything else goes
through the generic rules for Add, Mul, Pow, functions, Piecewise and sums over the units.
Matrix products are written ``product(...)``: the step's own product (``np.matmul``, or BLAS
gemv from SciPy for one-example steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from sympy.codegen.cfunctions import expm1, log1p

from .numpy import NumPyCodePrinter, clamped, is_logsumexp, is_softmax

__all__ = ["InplacePrinter", "Buffers"]

_UNARY = {sp.exp: "np.exp", sp.log: "np.log", sp.tanh: "np.tanh", sp.Abs: "np.abs",
          sp.sign: "np.sign", expm1: "np.expm1", log1p: "np.log1p", sp.sin: "np.sin",
          sp.cos: "np.cos", sp.sinh: "np.sinh", sp.cosh: "np.cosh", sp.atan: "np.arctan"}
_SCIPY_UNARY = {sp.erf: "erf"}  # scipy.special ufuncs: they take out= too
_LOGICAL = {sp.And: "np.logical_and", sp.Or: "np.logical_or"}
_RELATIONS = {"<": "np.less", "<=": "np.less_equal", ">": "np.greater", ">=": "np.greater_equal"}


@dataclass
class Buffers:
    """Temporaries used by one emitted block: counts of full-size (m, n), column (m, 1), mask
    (m, n) bool and units-first (n, m) buffers; ``ones`` when a (n, 1) column of ones is used.
    """

    prefix: str
    full: int = 0
    column: int = 0
    mask: int = 0
    units_first: int = 0
    ones: bool = False
    constants: dict = field(default_factory=dict)  # full-size constant buffers: name -> value
    _free: dict = field(default_factory=lambda: {"full": [], "column": [], "mask": [],
                                                 "units_first": []})

    def constant(self, value: float) -> str:
        """A full-size buffer holding ``value`` everywhere (np.maximum and np.minimum against a
        scalar take a slow broadcasting loop: against an array they are about 3x faster)."""
        for name, held in self.constants.items():
            if held == value:
                return name
        name = f"{self.prefix}_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def take(self, kind: str) -> str:
        if self._free[kind]:
            return self._free[kind].pop()
        count = getattr(self, kind)
        setattr(self, kind, count + 1)
        return f"{self.prefix}_{kind[0]}{count}"

    def give(self, name: str, kind: str | None = None) -> None:
        letter = name.rsplit("_", 1)[1][0]
        self._free[{"f": "full", "c": "column", "m": "mask", "u": "units_first"}[letter]].append(name)

    def ones_column(self) -> str:
        """A (n, 1) column of ones: D @ ones is a row sum (a GEMV, 5x faster than sum(axis=1))."""
        self.ones = True
        return f"{self.prefix}_ones"


class InplacePrinter:
    """Emit ufunc statements computing an expression into a target buffer.

    ``names`` maps scalar symbols and IndexedBases to array names; ``columns`` is true for
    index-form expressions whose ``Sum`` runs over the units (axis 1).
    """

    def __init__(self, names: dict, buffers: Buffers):
        self.names = names
        self.buffers = buffers
        self.code = NumPyCodePrinter(names)
        self.lines: list[str] = []
        self._cse_names: dict = {}

    # ------------------------------------------------------------------------- entry
    def emit(self, expr: sp.Expr, target: str) -> list[str]:
        """Statements computing expr into target.

        Common subexpressions of an element-wise formula are computed once, into temporaries.
        An expression with no in-place form is computed by the functional printer and copied
        into target (it allocates, but any formula the Derivation holds prints).
        """
        self.lines = []
        try:
            if self._reads(expr, target):  # target = f(target, ...): compute aside, then copy
                aside = self.buffers.take("full")
                self._with_subexpressions(expr, aside)
                self._say(f"np.copyto({target}, {aside})")
                self.buffers.give(aside)
            else:
                self._with_subexpressions(expr, target)
        except NotImplementedError:
            self.lines = [f"np.copyto({target}, {self.code.doprint(expr)})"
                          "  # no in-place form: computed, then copied"]
        return self.lines

    def _reads(self, expr: sp.Expr, target: str) -> bool:
        """True when expr reads target itself (and is more than target)."""
        if self._name(expr) == target:
            return False
        leaves = expr.atoms(sp.Symbol, sp.IndexedBase)
        return any(self.names.get(leaf) == target for leaf in leaves)

    def _with_subexpressions(self, expr: sp.Expr, target: str) -> None:
        if expr.has(sp.Indexed):  # column-wise formulas: keep softmax and sums whole
            self._into(expr, target, "full")
            return
        replacements, (reduced,) = sp.cse(expr, optimizations=None)
        held = []
        for symbol, sub in replacements:
            tmp = self.buffers.take("full")
            self._into(sub.xreplace(dict(self._cse_names)), tmp, "full")
            self._cse_names[symbol] = sp.Symbol(tmp)
            self.names[sp.Symbol(tmp)] = tmp
            held.append(tmp)
        self._into(reduced.xreplace(dict(self._cse_names)), target, "full")
        for tmp in held:
            self.buffers.give(tmp)

    def _say(self, line: str) -> None:
        self.lines.append(line)

    def _name(self, expr) -> str | None:
        """The array name of a leaf (symbol or indexed), else None."""
        if isinstance(expr, sp.Indexed):
            return self.names[expr.base]
        if isinstance(expr, sp.Symbol) and expr in self.names:
            return self.names[expr]
        return None

    def _scalar(self, expr) -> str | None:
        """Code of a constant, else None."""
        if expr.is_number:
            return self.code.doprint(sp.N(expr) if not expr.is_Rational else expr)
        return None

    # ------------------------------------------------------------------------- rules
    def _into(self, expr: sp.Expr, target: str, kind: str) -> None:
        for rule in (self._leaf, self._pattern, self._add, self._mul, self._pow,
                     self._function, self._piecewise, self._sum):
            if rule(expr, target, kind):
                return
        raise NotImplementedError(f"no in-place form for {type(expr).__name__}: {expr}")

    def _operand(self, expr, kind: str) -> tuple[str, str | None]:
        """(code, buffer to give back): a leaf or constant as is, anything else in a temporary."""
        name = self._name(expr)
        if name is not None:
            return name, None
        constant = self._scalar(expr)
        if constant is not None:
            return constant, None
        kind = "column" if _is_column(expr) else kind
        tmp = self.buffers.take(kind)
        self._into(expr, tmp, kind)
        return tmp, tmp

    def _release(self, tmp, kind) -> None:
        if tmp is not None:
            self.buffers.give(tmp, kind)

    def _leaf(self, expr, target, kind) -> bool:
        name, constant = self._name(expr), self._scalar(expr)
        if name is not None:
            if name != target:
                self._say(f"np.copyto({target}, {name})")
            return True
        if constant is not None:
            self._say(f"{target}.fill({constant})")
            return True
        return False

    def _pattern(self, expr, target, kind) -> bool:
        # ReLU: Piecewise((0, z <= 0), (z, True)) -> max(z, 0)
        if isinstance(expr, sp.Piecewise) and len(expr.args) == 2:
            (v0, c0), (v1, _) = expr.args
            if isinstance(c0, sp.LessThan) and c0.rhs == 0 and v1 == c0.lhs and self._name(v1):
                z = self._name(v1)
                if v0 == 0:
                    self._say(f"np.maximum({z}, {self.buffers.constant(0.0)}, out={target})")
                    return True
                slope = (v0 / v1)
                if slope.is_Number and 0 < slope < 1:  # leaky ReLU: max(z, alpha z)
                    self._say(f"np.multiply({z}, {self.code.doprint(slope)}, out={target})")
                    self._say(f"np.maximum({target}, {z}, out={target})")
                    return True
            # a step: Piecewise((c, x <= 0), (1, True)) with x a leaf -> (x > 0) (+ c (x <= 0))
            if (isinstance(c0, sp.LessThan) and c0.rhs == 0 and self._name(c0.lhs)
                    and v0 == 0 and v1 == 1):
                self._say(f"np.greater({self._name(c0.lhs)}, 0.0, out={target})")
                return True
        # softmax over the units, stable
        base = is_softmax(expr)
        if base is not None:
            z = self.names[base]
            col, flipped = self.buffers.take("column"), self.buffers.take("units_first")
            # the row maxima from a units-first copy: NumPy reduces a short last axis slowly
            self._say(f"np.copyto({flipped}, {z}.T)")
            self._say(f"np.max({flipped}, axis=0, keepdims=True, out={col}.T)")
            self._say(f"np.subtract({z}, {col}, out={target})")
            self._say(f"np.exp({target}, out={target})")
            self._say(f"product({target}, {self.buffers.ones_column()}, out={col})")
            self._say(f"np.divide({target}, {col}, out={target})")
            self.buffers.give(col)
            self.buffers.give(flipped)
            return True
        if is_logsumexp(expr) is not None:
            raise NotImplementedError("log-sum-exp is only needed for the loss, not in a step")
        return False

    def _order(self, arg, kind) -> int:
        """Compound terms first (computed into the target), then columns, leaves, constants."""
        if arg.is_number:
            return 3
        if self._name(arg) is not None:
            return 1
        return 2 if kind == "full" and _is_column(arg) else 0

    def _fold(self, expr, target, kind, ufunc: str, args) -> None:
        """target = args[0] (op) args[1] (op) ..., with leaves and constants used directly."""
        args = sorted(args, key=lambda a: self._order(a, kind))
        first, *rest = args
        if self._name(first) is not None and rest:  # op(leaf, operand, out=target): no copy
            code, tmp = self._operand(rest[0], kind)
            self._say(f"{ufunc}({self._name(first)}, {code}, out={target})")
            self._release(tmp, kind)
            rest = rest[1:]
        else:
            self._into(first, target, kind)
        for arg in rest:
            if ufunc == "np.add" and isinstance(arg, sp.Mul) and arg.as_coeff_Mul()[0] == -1:
                code, tmp = self._operand(-arg, kind)
                self._say(f"np.subtract({target}, {code}, out={target})")
            else:
                code, tmp = self._operand(arg, kind)
                self._say(f"{ufunc}({target}, {code}, out={target})")
            self._release(tmp, kind)

    def _apply(self, ufunc: str, arg, target: str, kind: str, before: str = "", after: str = "") -> None:
        """target = ufunc(before, arg, after): straight from a leaf, else computed in place."""
        name = self._name(arg)
        if name is None:
            self._into(arg, target, kind)
            name = target
        self._say(f"{ufunc}({before}{name}{after}, out={target})")

    def _add(self, expr, target, kind) -> bool:
        if not isinstance(expr, sp.Add):
            return False
        terms = list(expr.args)
        # a - b with b a leaf: one subtract
        if len(terms) == 2:
            pos = [t for t in terms if not (isinstance(t, sp.Mul) and t.as_coeff_Mul()[0] == -1)]
            neg = [-t for t in terms if isinstance(t, sp.Mul) and t.as_coeff_Mul()[0] == -1]
            if len(pos) == 1 and len(neg) == 1 and self._name(neg[0]) is not None:
                if self._name(pos[0]) is not None:
                    self._say(f"np.subtract({self._name(pos[0])}, {self._name(neg[0])}, out={target})")
                else:
                    self._into(pos[0], target, kind)
                    self._say(f"np.subtract({target}, {self._name(neg[0])}, out={target})")
                return True
        self._fold(expr, target, kind, "np.add", terms)
        return True

    def _mul(self, expr, target, kind) -> bool:
        if not isinstance(expr, sp.Mul):
            return False
        coeff, rest = expr.as_coeff_Mul()
        if coeff == -1:
            self._apply("np.negative", rest, target, kind)
            return True
        self._fold(expr, target, kind, "np.multiply", expr.args)
        return True

    def _pow(self, expr, target, kind) -> bool:
        if not isinstance(expr, sp.Pow):
            return False
        base, exponent = expr.args
        if exponent == -1:
            self._apply("np.reciprocal", base, target, kind)
        elif exponent == 2:
            self._apply("np.square", base, target, kind)
        elif exponent == sp.Rational(1, 2):
            self._apply("np.sqrt", base, target, kind)
        else:
            self._apply("np.power", base, target, kind, after=f", {self.code.doprint(exponent)}")
        return True

    def _function(self, expr, target, kind) -> bool:
        arg = expr.args[0] if expr.args else None
        if type(expr) in _UNARY:
            self._apply(_UNARY[type(expr)], arg, target, kind)
        elif type(expr) in _SCIPY_UNARY:
            self.code.scipy_functions.add(_SCIPY_UNARY[type(expr)])
            self._apply(_SCIPY_UNARY[type(expr)], arg, target, kind)
        elif hasattr(expr, "_numpy_inplace"):  # a named primitive spells itself
            source = self._name(arg)
            if source is None:
                self._into(arg, target, kind)
                source = target
            self.lines.extend(expr._numpy_inplace(source, target))
            self.code.scipy_functions |= set(getattr(expr, "scipy_functions", ()))
        elif isinstance(expr, sp.Heaviside):
            half = expr.args[1] if len(expr.args) > 1 else sp.S.Half
            self._apply("np.heaviside", arg, target, kind, after=f", {self.code.doprint(half)}")
        elif isinstance(expr, (sp.Min, sp.Max)):
            self._fold(expr, target, kind, "np.minimum" if isinstance(expr, sp.Min) else "np.maximum",
                       expr.args)
        else:
            return False
        return True

    def _piecewise(self, expr, target, kind) -> bool:
        if not isinstance(expr, sp.Piecewise):
            return False
        *branches, (otherwise, _) = expr.args
        self._into(otherwise, target, kind)
        for value, cond in reversed(branches):
            mask = self.buffers.take("mask")
            self._condition(cond, mask, kind)
            code, tmp = self._operand(clamped(value, cond), kind)
            self._say(f"np.copyto({target}, {code}, where={mask})")
            self._release(tmp, kind)
            self.buffers.give(mask, "mask")
        return True

    def _condition(self, cond, mask: str, kind: str) -> None:
        if type(cond) in _LOGICAL:
            first, *rest = cond.args
            self._condition(first, mask, kind)
            for other in rest:
                extra = self.buffers.take("mask")
                self._condition(other, extra, kind)
                self._say(f"{_LOGICAL[type(cond)]}({mask}, {extra}, out={mask})")
                self.buffers.give(extra, "mask")
            return
        if isinstance(cond, sp.Not):
            self._condition(cond.args[0], mask, kind)
            self._say(f"np.logical_not({mask}, out={mask})")
            return
        if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op not in _RELATIONS:
            raise NotImplementedError(f"no in-place form for the condition {cond}")
        lhs, tmp_l = self._operand(cond.lhs, kind)
        rhs, tmp_r = self._operand(cond.rhs, kind)
        self._say(f"{_RELATIONS[cond.rel_op]}({lhs}, {rhs}, out={mask})")
        self._release(tmp_l, kind)
        self._release(tmp_r, kind)

    def _sum(self, expr, target, kind) -> bool:
        """A sum over the units: the row sums of the summand, as a column."""
        if not isinstance(expr, sp.Sum):
            return False
        tmp = self.buffers.take("full")
        self._into(expr.function, tmp, "full")
        ones = self.buffers.ones_column()
        if kind == "column":
            self._say(f"product({tmp}, {ones}, out={target})")
        else:  # a full-size target: the row sums broadcast over the units
            col = self.buffers.take("column")
            self._say(f"product({tmp}, {ones}, out={col})")
            self._say(f"np.copyto({target}, {col})")
            self.buffers.give(col)
        self.buffers.give(tmp)
        return True


def _is_column(expr: sp.Expr) -> bool:
    """True when every unit-indexed quantity sits inside a sum over the units (one per row)."""
    if isinstance(expr, sp.Sum):
        return True
    if isinstance(expr, sp.Indexed):
        return False
    return bool(expr.args) and all(_is_column(a) or not a.has(sp.Indexed) for a in expr.args) \
        and expr.has(sp.Sum)
