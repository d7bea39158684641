"""``DerivationLatexPrinter``: the Derivation's SymPy objects in the documents' notation.

A ``sympy.printing.latex.LatexPrinter`` whose ``_print_<Class>`` methods know the
Derivation's symbols by their roles (``Derivation.roles_by_name``, never by parsing a name):
a weight, bias, pre-activation, activation, error, local derivative and gradient of layer 1,
the input and the target print as ``W^{[1]}, b^{[1]}, z^{[1]}, a^{[1]}, \\delta^{[1]},
g'(z^{[1]}), ∂L/∂W^{[1]}, x, y`` with ``notation="bracket"`` (seeds 001/003) or ``W_{1},
b_{1}, ...`` with ``notation="subscript"`` (seeds 000/002).  ``mode="example"`` prints one
example (lower-case column vectors); ``mode="batch"`` prints the m-column matrices (``Z, A,
\\Delta, X, Y``).

Name mappings are tables, not branches; the Hadamard product prints as ``\\odot``, the ones
vector as ``\\mathbf{1}``, an index-form ``a[j]`` as ``a_{j}``.  Two display-only matrix
expressions, ``Applied`` (g applied to a matrix) and ``Elided`` (the middle of a deep nesting),
let the document print the whole network as one nested expression.
"""

from __future__ import annotations

from typing import Mapping

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.core.symbol import Str
from sympy.printing.latex import LatexPrinter

from ..roles import DATA_ROLES, Role, SymbolRole

__all__ = ["DerivationLatexPrinter", "Applied", "Elided", "NOTATIONS", "MODES"]

NOTATIONS = ("bracket", "subscript")
MODES = ("example", "batch")

# role -> (letter for one example, letter for the batch)
_LETTERS = {
    Role.WEIGHT: ("W", "W"),
    Role.BIAS: ("b", "b"),
    Role.PREACTIVATION: ("z", "Z"),
    Role.ACTIVATION: ("a", "A"),
    Role.ERROR: (r"\delta", r"\Delta"),
    Role.WIDTH: ("n", "n"),
    Role.INPUT: ("x", "X"),
    Role.TARGET: ("y", "Y"),
    Role.LOSS: ("L", "J"),  # what a gradient differentiates: one example's L, the batch's J
}
_PARAMETER_OF = {Role.WEIGHT_GRADIENT: Role.WEIGHT, Role.BIAS_GRADIENT: Role.BIAS}

_SYMBOLS = {
    "eta": r"\eta",
    "theta": r"\theta",
    "dJ_dtheta": r"\frac{\partial J}{\partial \theta}",
    "lambda_1": r"\lambda_{1}",
    "lambda_2": r"\lambda_{2}",
    "L": "L",
    "m": "m",
}


class Applied(sp.MatrixExpr):
    """``g(X)``: the activation named by its LaTeX, applied to a matrix (display only)."""

    def __new__(cls, latex_name: str, arg: sp.MatrixExpr):
        return sp.Basic.__new__(cls, Str(latex_name), arg)

    @property
    def name(self) -> str:
        return self.args[0].name

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[1]

    @property
    def shape(self):
        return self.args[1].shape


class Elided(sp.MatrixExpr):
    """``\\cdots X \\cdots``: X stands deep inside layers that are not written out."""

    def __new__(cls, arg: sp.MatrixExpr, shape: tuple[int, int]):
        return sp.Basic.__new__(cls, arg, *map(sp.Integer, shape))

    @property
    def shape(self):
        return self.args[1], self.args[2]


class DerivationLatexPrinter(LatexPrinter):
    """LaTeX for the Derivation's expressions, in the documents' notation.

    ``activations`` maps a layer index to its activation's LaTeX name (layer 3's local
    derivative prints as ``g_3'(z^{[3]})`` with g_3's name); ``functions`` maps undefined
    function names (the ``g`` of a derivation step) to LaTeX names; ``roles`` maps a symbol's
    name to its role and layer (``Derivation.roles_by_name``).  A name without a role prints
    as itself.
    """

    printmethod = "_latex"

    def __init__(self, notation: str = "bracket", mode: str = "example",
                 activations: dict[int, str] | None = None,
                 functions: dict[str, str] | None = None,
                 roles: Mapping[str, SymbolRole] | None = None):
        if notation not in NOTATIONS:
            raise ValueError(f"unknown notation {notation!r} (expected one of: {', '.join(NOTATIONS)})")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})")
        super().__init__({"mat_symbol_style": "plain"})
        self.notation = notation
        self.mode = mode
        self.activations = dict(activations or {})
        self.functions = dict(functions or {})
        self.roles = dict(roles or {})

    def with_mode(self, mode: str) -> "DerivationLatexPrinter":
        return DerivationLatexPrinter(self.notation, mode, self.activations, self.functions,
                                      self.roles)

    def role(self, name: str) -> SymbolRole | None:
        """The role of the symbol named ``name``, if it has one."""
        return self.roles.get(name)

    # -- names ---------------------------------------------------------------------------
    @property
    def _batch(self) -> int:
        return 1 if self.mode == "batch" else 0

    def tagged(self, letter: str, layer: int | str, sup: str = "") -> str:
        """``letter`` of layer l, with an extra superscript (``T``) merged in."""
        if self.notation == "bracket":
            return f"{letter}^{{[{layer}]{sup}}}"
        return f"{letter}_{{{layer}}}" + (f"^{{{sup}}}" if sup else "")

    def name(self, name: str, sup: str = "") -> str:
        """LaTeX for one of the Derivation's symbols, by its name ("W1", "A0", "L", ...) and
        the role that name has."""
        role = self.role(name)
        if role is not None and role.role is Role.LOSS:
            return _with_sup(_LETTERS[Role.LOSS][self._batch], sup)
        if role is None or role.layer is None:  # index-form and scalar symbols print as named
            return _with_sup(_SYMBOLS.get(name, name), sup)
        kind, layer = role
        if kind in (Role.INPUT, Role.TARGET):
            return _with_sup(_LETTERS[kind][self._batch], sup)
        if kind is Role.LOCAL_DERIVATIVE:
            inner = self.tagged(_LETTERS[Role.PREACTIVATION][self._batch], layer)
            return _with_sup(self.derivative_name(layer) + self.parens(inner), sup)
        if kind in _PARAMETER_OF:
            param = self.tagged(_LETTERS[_PARAMETER_OF[kind]][0], layer)
            return _with_sup(self.partial(_LETTERS[Role.LOSS][self._batch], param), sup)
        if kind is Role.SIGN:
            weight = self.tagged(_LETTERS[Role.WEIGHT][0], layer)
            return _with_sup(r"\operatorname{sign}" + self.parens(weight), sup)
        return self.tagged(_LETTERS[kind][self._batch], layer, sup)

    def derivative_name(self, layer: int) -> str:
        """g_l' as LaTeX: the layer's activation name with a prime."""
        return f"{self.activations.get(layer, f'g_{{{layer}}}')}'"

    @staticmethod
    def partial(numerator: str, denominator: str, inline: bool = False) -> str:
        if inline:
            return rf"\partial {numerator}/\partial {denominator}"
        return rf"\frac{{\partial {numerator}}}{{\partial {denominator}}}"

    def partial_of(self, numerator: str, denominator: str, num_index: str = "",
                   den_index: str = "", inline: bool = False) -> str:
        """d(numerator)/d(denominator) for two Derivation names ("L", "A3"), or of entries."""
        num = self.entry(numerator, num_index) if num_index else self.name(numerator)
        den = self.entry(denominator, den_index) if den_index else self.name(denominator)
        return self.partial(num, den, inline)

    def entry(self, name: str, index: str) -> str:
        """Entry ``index`` of a vector named by the Derivation: a^{[3]}_{j}, a_{3,j}, y_{j}.

        In the batch, data matrices get the example's column c as a second index.
        """
        role = self.role(name)
        if role is not None and role.role is Role.LOSS:  # the loss of example i
            return f"L^{{({index})}}"
        layered = role is not None and role.layer is not None
        if self.mode == "batch" and layered and role.role in DATA_ROLES:
            index = f"{index}c"
        if not layered or role.role in (Role.INPUT, Role.TARGET) or self.notation == "bracket":
            return f"{self.name(name)}_{{{index}}}"
        letter = _LETTERS[role.role][self._batch]
        return f"{letter}_{{{role.layer},{index}}}"

    # -- atoms ---------------------------------------------------------------------------
    def _print_Symbol(self, expr, style="plain"):
        if expr.name in _SYMBOLS:
            return _SYMBOLS[expr.name]
        role = self.role(expr.name)
        if role is not None and role.role is Role.WIDTH and role.layer is not None:
            return self.name(expr.name)
        return super()._print_Symbol(expr, style=style)

    def _print_MatrixSymbol(self, expr, style="plain"):
        return self.name(expr.name)

    def _print_IndexedBase(self, expr):
        return self.name(str(expr.label))

    def _print_Indexed(self, expr):
        indices = [self._print(i) for i in expr.indices]
        joined = "".join(indices) if all(len(i) == 1 for i in indices) else ",".join(indices)
        return self.entry(str(expr.base.label), joined)

    def _print_KroneckerDelta(self, expr, exp=None):
        i, j = (self._print(a) for a in expr.args)
        tex = rf"\mathbb{{I}}_{{{i}{j}}}"  # not delta: that letter is the error term
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"

    def _print_Str(self, expr):
        return expr.name

    # -- functions -----------------------------------------------------------------------
    def _print_Function(self, expr, exp=None):
        if isinstance(expr, AppliedUndef) and expr.func.__name__ in self.functions:
            name = self.functions[expr.func.__name__]
            head = name if exp is None else f"{name}^{{{exp}}}"
            return head + self.parens(", ".join(self._print(a) for a in expr.args))
        return super()._print_Function(expr, exp)

    def _print_log(self, expr, exp=None):
        head = r"\log" if exp is None else rf"\log^{{{exp}}}"
        return head + self.parens(self._print(expr.args[0]))

    @staticmethod
    def parens(tex: str, size: str = "") -> str:
        """(tex): stretched only around tall content (fractions, sums, cases)."""
        if size:
            return rf"{size}l({tex}{size}r)"
        if any(tall in tex for tall in (r"\frac", r"\sum", r"\begin", r"\left")):
            return rf"\left({tex}\right)"
        return f"({tex})"

    def _print_Derivative(self, expr):
        """f'(z) for a function of one variable, else the partial-derivative fraction."""
        (var, count), = expr.variable_count
        inner = expr.expr
        if count == 1 and isinstance(inner, AppliedUndef) and inner.args == (var,):
            name = self.functions.get(inner.func.__name__, inner.func.__name__)
            return f"{name}'" + self.parens(self._print(var))
        if count == 1:
            return self.partial(self._print(inner), self._print(var))
        return super()._print_Derivative(expr)

    def _print_Piecewise(self, expr):
        rows = []
        for value, cond in expr.args:
            when = r"\text{otherwise}" if cond == sp.true else rf"\text{{if }} {self._print(cond)}"
            rows.append(rf"{self._print(value)} & {when}")
        return r"\begin{cases} " + r" \\ ".join(rows) + r" \end{cases}"

    def _print_Pow(self, expr):
        """(a^{[2]}_j)^2: an entry that already carries a superscript is parenthesised."""
        if expr.exp.is_positive and isinstance(expr.base, (sp.Indexed, sp.MatrixSymbol)):
            base = self._print(expr.base)
            if "^" in base:
                return rf"\left({base}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)

    # -- sums and products -----------------------------------------------------------------
    def _print_Add(self, expr, order=None):
        """Terms in SymPy's order, but a positive term first: a - y, not -y + a."""
        terms = self._as_ordered_terms(expr, order=order)
        terms = sorted(terms, key=lambda t: t.could_extract_minus_sign())
        tex = ""
        for i, term in enumerate(terms):
            if i and term.could_extract_minus_sign():
                tex += " - "
                term = -term
            elif i:
                tex += " + "
            term_tex = self._print(term)
            if self._needs_add_brackets(term):
                term_tex = rf"\left({term_tex}\right)"
            tex += term_tex
        return tex

    def _print_Mul(self, expr):
        """Factors in reading order: numbers, symbols, functions, sums, then a trailing
        derivative symbol (``a (1 - a)``, ``y_k log(a_k)``, ``eta dJ/dtheta``).  Products with
        a denominator are left to SymPy."""
        if not isinstance(expr, sp.Mul) or not expr.is_commutative \
                or any(_is_denominator(f) for f in expr.args):
            return super()._print_Mul(expr)
        coeff, rest = expr.as_coeff_Mul()
        factors = sorted(sp.Mul.make_args(rest), key=self._reading_order)
        parts = []
        for k, factor in enumerate(factors):
            tex = self._print(factor)
            if isinstance(factor, sp.Add) or (k and self._needs_mul_brackets(factor, last=k == len(factors) - 1)):
                tex = self.parens(tex)
            parts.append(tex)
        body = " ".join(parts)
        if coeff == 1:
            return body
        if coeff == -1:
            return f"- {body}"
        return f"{self._print(coeff)} {body}"

    # -- matrices ------------------------------------------------------------------------
    def _print_Transpose(self, expr):
        arg = expr.arg
        if isinstance(arg, sp.MatrixSymbol):
            return self.name(arg.name, "T")
        if isinstance(arg, sp.OneMatrix):
            return rf"{self._print(arg)}^{{T}}"
        return rf"\left({self._print(arg)}\right)^{{T}}"

    def _print_OneMatrix(self, expr):
        """The ones vector: a column (n x 1), or a row written as a transposed column."""
        rows, cols = expr.shape
        return r"\mathbf{1}^{T}" if rows == 1 and cols != 1 else r"\mathbf{1}"

    def _print_MatMul(self, expr):
        """Juxtaposed factors; a 1x1 ones matrix (b 1^T for one example) is dropped."""
        factors = [a for a in expr.args
                   if not (isinstance(a, sp.OneMatrix) and a.shape == (1, 1))]
        scalars = [a for a in factors if not isinstance(a, sp.MatrixExpr)]
        matrices = [a for a in factors if isinstance(a, sp.MatrixExpr)]
        scalar = sp.Mul(*scalars)
        parts = [self._matrix_factor(m) for m in matrices]
        body = " ".join(parts)
        if scalar == 1:
            return body
        if scalar == -1:
            return f"-{body}"
        return f"{self._print(scalar)} {body}" if scalar.is_Atom or scalar.is_Pow \
            or isinstance(scalar, sp.Mul) else rf"\left({self._print(scalar)}\right) {body}"

    def _matrix_factor(self, m):
        if isinstance(m, (sp.MatAdd, sp.HadamardProduct)):
            return rf"\left({self._print(m)}\right)"
        return self._print(m)

    def _print_MatAdd(self, expr):
        """Terms in reading order: the data term, then a broadcast bias, then the rest."""
        terms = []
        args = sorted(expr.args, key=lambda t: (t.has(sp.OneMatrix), bool(t.free_symbols - _matrix_atoms(t))))
        for i, term in enumerate(args):
            tex = self._print(term)
            if i and tex.startswith("-"):
                terms.append(f"- {tex[1:]}")
            else:
                terms.append(f"+ {tex}" if i else tex)
        return " ".join(terms)

    def _print_HadamardProduct(self, expr):
        parts = []
        for arg in expr.args:
            tex = self._print(arg)
            parts.append(rf"\left({tex}\right)" if isinstance(arg, (sp.MatMul, sp.MatAdd)) else tex)
        return r" \odot ".join(parts)

    def _print_Applied(self, expr):
        depth = _nesting(expr.arg)
        size = _SIZES[min(depth, len(_SIZES) - 1)]
        return expr.name + self.parens(self._print(expr.arg), size)

    def _print_Elided(self, expr):
        return rf"\cdots {self._print(expr.args[0])} \cdots"

    def _reading_order(self, factor) -> tuple[int, int]:
        """Numbers, weights, errors, Kronecker deltas, other symbols, functions, sums, d/dtheta."""
        if factor.is_Number:
            return (0, 0)
        if isinstance(factor, sp.Symbol) and factor.name in _TRAILING:
            return (4, 0)
        if isinstance(factor, sp.Add):
            return (3, 0)
        base = factor.base if isinstance(factor, sp.Pow) else factor
        if isinstance(base, sp.Indexed):
            role = self.role(str(base.base.label))
            return (1, _INDEXED_ORDER.get(role.role if role else None, 3))
        if isinstance(base, sp.KroneckerDelta):
            return (1, 2)
        if isinstance(base, sp.Symbol):
            return (1, 3)
        return (2, 0)

    # -- shapes --------------------------------------------------------------------------
    def dims(self, shape) -> str:
        rows, cols = shape
        return rf"({self._print(sp.sympify(rows))} \times {self._print(sp.sympify(cols))})"

    def shape_factors(self, expr: sp.MatrixExpr, brackets: bool = False) -> str:
        """The shapes of an expression's factors, as the documents check them:
        ``(n_2 x n_3)(n_3 x 1)`` for a product, ``[...]_{(n x 1)} \\odot (n x 1)``
        for an element-wise product, terms joined by ``+``.  ``brackets`` gives the
        dimension-analysis style of seed 000: ``[n_1, n_0] \\times [n_0, 1]``.
        """
        def atom(shape):
            if brackets:
                r, c = (self._print(sp.sympify(d)) for d in shape)
                return f"[{r}, {c}]"
            return self.dims(shape)

        if isinstance(expr, sp.MatMul):
            factors = [f for f in expr.args if isinstance(f, sp.MatrixExpr)
                       and not (isinstance(f, sp.OneMatrix) and f.shape == (1, 1))]
            joiner = r" \times " if brackets else ""
            return joiner.join(self._shape_operand(f, brackets) for f in factors)
        if isinstance(expr, sp.HadamardProduct):
            return r" \odot ".join(self._shape_operand(f, brackets) for f in expr.args)
        if isinstance(expr, sp.MatAdd):
            return " + ".join(self.shape_factors(t, brackets) for t in expr.args)
        return atom(expr.shape)

    def _shape_operand(self, expr, brackets):
        if isinstance(expr, (sp.MatMul, sp.HadamardProduct, sp.MatAdd)):
            inner = self.shape_factors(expr, brackets)
            return rf"\bigl[{inner}\bigr]_{{{self.dims(expr.shape)}}}"
        return self.shape_factors(expr, brackets)


_SIZES = ("", r"\big", r"\Big", r"\bigg", r"\Bigg")
_TRAILING = ("dJ_dtheta",)


def _nesting(expr) -> int:
    """How many Applied are nested inside expr (for the size of the parentheses)."""
    inner = [_nesting(a) + isinstance(a, Applied) for a in expr.args if isinstance(a, sp.Basic)]
    return max(inner, default=0)


def _is_denominator(factor) -> bool:
    return isinstance(factor, sp.Pow) and factor.exp.is_negative or \
        (factor.is_Rational and not factor.is_Integer)


def _matrix_atoms(expr) -> set:
    return set(expr.atoms(sp.MatrixSymbol))


_INDEXED_ORDER = {Role.WEIGHT: 0, Role.ERROR: 1}  # W_ik x_k, delta_i delta_ij a_k, as written


def _with_sup(tex: str, sup: str) -> str:
    return f"{tex}^{{{sup}}}" if sup else tex
