"""Printers: SymPy expressions of the Derivation -> NumPy code and plain-text comments.

``NumPyCodePrinter`` prints the element-wise and index-form pieces (activations, their
derivatives, the output error, the loss) as vectorised NumPy on samples-first arrays, and
the matrix formulas of the Derivation (written in the documents' column convention) in the
code's row convention: a data matrix D (n x m) is stored as its transpose, so ``D`` prints as
``D.T`` and ``D^T`` as ``D``; SymPy moves the transposes (``Transpose(expr).doit()``).

Named stable spellings live with the primitives (their ``_numpycode``); the two vector
helpers (softmax, log-sum-exp) are recognised here and call the runtime's stable versions.
"""

from __future__ import annotations

from fractions import Fraction

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

__all__ = ["NumPyCodePrinter", "is_softmax", "is_logsumexp", "clamped", "split_scalar"]

_NP_ALIASES = {"numpy": "np"}
RUNTIME = "_runtime"  # the generated module's name for its runtime (softmax, logsumexp)


def _exp_of(expr: sp.Expr):
    return expr.args[0] if isinstance(expr, sp.exp) else None


def is_softmax(expr: sp.Expr) -> sp.IndexedBase | None:
    """exp(z[j]) / Sum(exp(z[k]), k): return z's base."""
    if not isinstance(expr, sp.Mul) or len(expr.args) != 2:
        return None
    num = next((a for a in expr.args if isinstance(a, sp.exp)), None)
    den = next((a for a in expr.args if isinstance(a, sp.Pow) and a.exp == -1
                and isinstance(a.base, sp.Sum)), None)
    if num is None or den is None:
        return None
    inner = _exp_of(den.base.function)
    arg = num.args[0]
    if isinstance(arg, sp.Indexed) and isinstance(inner, sp.Indexed) and inner.base == arg.base:
        return arg.base
    return None


def is_logsumexp(expr: sp.Expr) -> sp.IndexedBase | None:
    """log(Sum(exp(z[k]), k)): return z's base."""
    if isinstance(expr, sp.log) and isinstance(expr.args[0], sp.Sum):
        inner = _exp_of(expr.args[0].function)
        if isinstance(inner, sp.Indexed):
            return inner.base
    return None


class NumPyCodePrinter(NumPyPrinter):
    """NumPy code for the generated module, ``np``-prefixed, dtype-preserving.

    ``names`` maps symbols, IndexedBases and MatrixSymbols to the code's variable names;
    ``data`` is the set of MatrixSymbols stored samples-first (transposed); ``like`` names an
    array whose dtype constant branches of a ``np.where`` take (so float32 stays float32).
    """

    printmethod = "_numpycode"

    def __init__(self, names: dict | None = None, data: frozenset = frozenset(),
                 like: str | None = None, batch: str = "m"):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.names = {k: v for k, v in (names or {}).items()}
        self.data = data
        self.like = like
        self.batch = batch
        self.scipy_functions: set[str] = set()

    # -- modules -------------------------------------------------------------------------
    def _module_format(self, fqn, register=True):
        if fqn in _NP_ALIASES:
            return _NP_ALIASES[fqn]
        module, _, attr = fqn.rpartition(".")
        if module.startswith("scipy"):
            self.scipy_functions.add(attr)
            return attr
        module = _NP_ALIASES.get(module, module)
        return f"{module}.{attr}" if module else attr

    # -- atoms ---------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return self.names.get(expr, super()._print_Symbol(expr))

    def _print_Indexed(self, expr):
        return self.names[expr.base]

    def _print_Rational(self, expr):
        return repr(float(Fraction(int(expr.p), int(expr.q))))

    def _call(self, name: str) -> str:
        """The array library's function ``name`` (NumPy's spelling; other targets override)."""
        return f"np.{name}"

    def _print_Min(self, expr):
        return self._pairwise(self._call("minimum"), expr.args)

    def _print_Max(self, expr):
        return self._pairwise(self._call("maximum"), expr.args)

    def _pairwise(self, func, args):
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{func}({code}, {self._print(arg)})"
        return code

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Half(self, expr):
        return "0.5"

    # -- vector helpers ------------------------------------------------------------------
    def _print_Mul(self, expr):
        base = is_softmax(expr)
        if base is not None:
            return self._softmax(self.names[base])
        return super()._print_Mul(expr)

    def _print_log(self, expr):
        base = is_logsumexp(expr)
        if base is not None:
            return self._logsumexp(self.names[base])
        return super()._print_log(expr)

    def _softmax(self, name: str) -> str:
        """softmax of each row of the array ``name`` (stable: the runtime's)."""
        return f"{RUNTIME}.softmax({name})"

    def _logsumexp(self, name: str) -> str:
        """log sum exp of each row of ``name``, as a column (stable: the runtime's)."""
        return f"{RUNTIME}.logsumexp({name})"

    def _print_Sum(self, expr):
        """A sum over the output units: the row sum of each sample, kept as a column."""
        return f"{self._call('sum')}({self._print(expr.function)}, axis=1, keepdims=True)"

    # -- piecewise -----------------------------------------------------------------------
    def _print_Piecewise(self, expr):
        """np.where, nested from the last branch; exp/log evaluated on the clamped argument.

        In a branch guarded by ``z <= 0`` (or < 0) an exponential is evaluated at
        ``min(z, 0)``, so the discarded side of ``np.where`` cannot overflow.
        """
        branches = list(expr.args)
        if branches[-1].cond != sp.true:
            raise ValueError(f"Piecewise without an otherwise branch: {expr}")
        code = self._branch(branches[-1].expr)
        for value, cond in reversed(branches[:-1]):
            value = clamped(value, cond)
            code = f"{self._call('where')}({self._print(cond)}, {self._branch(value)}, {code})"
        return code

    def _branch(self, value):
        if value.is_Number and self.like:
            return f"{self.like}.dtype.type({self._print(value)})"
        return self._print(value)

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{self._print(expr.lhs)} {op} {self._print(expr.rhs)}"

    def _print_erf(self, expr):
        return f"{self._module_format('scipy.special.erf')}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self._call('abs')}({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        half = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"{self._call('heaviside')}({self._print(expr.args[0])}, {self._print(half)})"

    def _print_sign(self, expr):
        return f"{self._call('sign')}({self._print(expr.args[0])})"

    # -- matrices (column convention in, row convention out) -------------------------------
    def _print_MatrixSymbol(self, expr):
        name = self.names.get(expr, expr.name)
        return f"{name}.T" if expr in self.data else name

    def _print_Transpose(self, expr):
        arg = expr.arg
        if isinstance(arg, sp.MatrixSymbol):
            name = self.names.get(arg, arg.name)
            return name if arg in self.data else f"{name}.T"
        return f"({self._print(arg)}).T"

    def _print_OneMatrix(self, expr):  # pragma: no cover - always absorbed by MatMul below
        raise ValueError("a ones matrix must appear in a product (broadcast or row sum)")

    def _print_MatMul(self, expr):
        scalar, factors = split_scalar(expr)
        # b 1^T (column form) -> 1 b^T (row form): broadcasting the bias over the samples
        if len(factors) == 2 and isinstance(factors[0], sp.OneMatrix):
            code = self._print_bias(factors[1])
        # D 1 with D a data matrix: the sum over the samples
        elif len(factors) == 2 and isinstance(factors[1], sp.OneMatrix):
            code = f"{self._print_data_rows(factors[0])}.sum(axis=0)"
        else:
            code = " @ ".join(self.parenthesize(f, 60) for f in factors)
        return _scaled(code, scalar, self)

    def _print_bias(self, expr):
        if isinstance(expr, sp.Transpose) and isinstance(expr.arg, sp.MatrixSymbol):
            return self.names.get(expr.arg, expr.arg.name)
        raise ValueError(f"unexpected broadcast of {expr}")

    def _print_data_rows(self, expr):
        if isinstance(expr, sp.MatrixSymbol) and expr in self.data:
            return self.names.get(expr, expr.name)
        raise ValueError(f"unexpected row sum of {expr}")

    def _print_MatAdd(self, expr):
        """Terms in reading order: the data term first, then bias or regularisation terms."""
        terms = sorted(expr.args, key=lambda a: not any(s in self.data for s in a.free_symbols))
        return " + ".join(self._print(a) for a in terms)

    def _print_HadamardProduct(self, expr):
        return " * ".join(self.parenthesize(a, 60) for a in expr.args)

    def rows(self, expr: sp.MatrixExpr) -> str:
        """Code for a data-shaped (n x m) expression, stored samples-first: print expr^T."""
        return self._print(sp.Transpose(expr).doit())


def clamped(value: sp.Expr, cond) -> sp.Expr:
    if value.has(sp.exp) and isinstance(cond, (sp.LessThan, sp.StrictLessThan)) \
            and cond.rhs == 0 and cond.lhs.is_Symbol:
        return value.xreplace({cond.lhs: sp.Min(cond.lhs, 0)})
    return value


def split_scalar(expr: sp.MatMul):
    scalar, factors = sp.S.One, []
    for f in expr.args:
        if isinstance(f, sp.MatrixExpr):
            factors.append(f)
        else:
            scalar *= f
    return scalar, factors


def _scaled(code: str, scalar: sp.Expr, printer: NumPyCodePrinter) -> str:
    """c * code for a number c; code / m for the batch mean."""
    if scalar == 1:
        return code
    num, den = sp.fraction(scalar)
    if den.is_Number:
        return f"{printer._print(scalar)} * {code}"
    head = code if num == 1 else f"{printer._print(num)} * {code}"
    return f"({head}) / {printer._print(den)}" if " " in head else f"{head} / {printer._print(den)}"
