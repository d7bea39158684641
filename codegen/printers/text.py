"""Plain text for the generated code's comments: juxtaposed products, ᵀ, ∘ for Hadamard."""

from __future__ import annotations

from fractions import Fraction

import sympy as sp
from sympy.printing.str import StrPrinter

from .numpy import split_scalar

__all__ = ["TextPrinter"]


class TextPrinter(StrPrinter):
    """Plain text for comments: juxtaposed products, ^T, o for the Hadamard product."""

    printmethod = "_textcode"  # not _sympystr: Indexed and friends would bypass the methods here

    def __init__(self, names: dict | None = None):
        super().__init__()
        self.names = names or {}

    def _print_Rational(self, expr):
        value = float(Fraction(int(expr.p), int(expr.q)))
        return repr(value) if Fraction(repr(value)) == Fraction(int(expr.p), int(expr.q)) \
            else f"{expr.p}/{expr.q}"

    def _print_Symbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_MatrixSymbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_Indexed(self, expr):
        base = self._print(expr.base)
        return f"{base}_{','.join(self._print(i) for i in expr.indices)}"

    def _print_IndexedBase(self, expr):
        return self.names.get(expr, str(expr.label))

    def _print_Transpose(self, expr):
        arg = self._print(expr.arg)
        return f"{arg}ᵀ" if isinstance(expr.arg, sp.MatrixSymbol) else f"({arg})ᵀ"

    def _print_OneMatrix(self, expr):
        return "1ᵀ" if expr.shape[0] == 1 else "1"

    def _print_MatMul(self, expr):
        scalar, factors = split_scalar(expr)
        body = " ".join(self.parenthesize(f, 60) for f in factors)
        if scalar == 1:
            return body
        return f"({self._print(scalar)}) {body}"

    def _print_HadamardProduct(self, expr):
        return " ∘ ".join(self.parenthesize(a, 60) for a in expr.args)

    def _print_Piecewise(self, expr):
        parts = [f"{self._print(v)} if {self._print(c)}" for v, c in expr.args[:-1]]
        return "{" + "; ".join(parts + [f"{self._print(expr.args[-1].expr)} otherwise"]) + "}"

    def _print_Sum(self, expr):
        (idx, lo, hi), = expr.limits
        return f"sum_{self._print(idx)}({self._print(expr.function)})"

    def _print_Function(self, expr):
        name = getattr(expr.func, "__name__", str(expr.func))
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"
