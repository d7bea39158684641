"""Named primitives: sigma, softplus, Phi and phi as SymPy functions.

SymPy differentiates the raw expressions (``1/(1 + exp(-z))``, ``log(1 + exp(z))``, ...).
Its results are then rewritten in these named primitives so that the LaTeX reads like the
documents (``\\sigma(z)``, ``\\Phi(z)``) and the NumPy code uses stable spellings
(``logaddexp`` instead of ``log(1 + exp(z))``, which overflows at z = 1000).

Each primitive carries its own LaTeX and code spellings (the SymPy printer protocol
``_latex`` / ``_numpycode``, and ``_torchcode`` / ``_jaxcode`` for the framework backends) and its definition (``rewrite("definition")``), so the proof can
expand it back.  Derivatives are never typed here: ``fdiff`` differentiates the definition.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["sigmoid", "softplus", "Phi", "phi", "to_primitives", "from_primitives"]


class _Primitive(sp.Function):
    """A one-argument function defined by a SymPy expression of its argument."""

    nargs = 1
    latex_name = ""
    _definition = None  # callable: Expr -> Expr

    @classmethod
    def definition(cls, x: sp.Expr) -> sp.Expr:
        return cls._definition(x)

    def fdiff(self, argindex=1):
        x = sp.Dummy("x")
        derivative = sp.diff(self.definition(x), x)
        return to_primitives(derivative).subs(x, self.args[0])

    def _eval_rewrite_as_definition(self, x, **kwargs):
        return self.definition(x)

    def _latex(self, printer, exp=None):
        arg = printer._print(self.args[0])
        base = rf"{self.latex_name}\left({arg}\right)"
        return base if exp is None else rf"{self.latex_name}^{{{exp}}}\left({arg}\right)"


class sigmoid(_Primitive):
    latex_name = r"\sigma"
    _definition = staticmethod(lambda x: 1 / (1 + sp.exp(-x)))

    def _numpycode(self, printer):
        # sigma(x) = exp(-log(1 + exp(-x))): no overflow for any x, full relative precision.
        x = printer._print(self.args[0])
        np_ = printer._module_format("numpy")
        return f"{np_}.exp(-{np_}.logaddexp(0, -({x})))"

    def _torchcode(self, printer):
        return f"torch.sigmoid({printer._print(self.args[0])})"  # stable for any x

    def _jaxcode(self, printer):
        return f"jax.nn.sigmoid({printer._print(self.args[0])})"  # stable for any x

    def _scalarcode(self, printer):
        # one entry in a compiled loop: exp(-x) may overflow to inf, giving exactly 0,
        # and no array-wide logaddexp is needed; exp is the loop printer's own
        one = printer._print(sp.S.One)  # each printer's spelling of the number (its dtype)
        return f"({one} / ({one} + {printer._print(sp.exp(-self.args[0], evaluate=False))}))"

    @staticmethod
    def _numpy_inplace(x: str, out: str) -> list[str]:
        """The same stable form as ufunc calls writing into ``out``."""
        return [f"np.negative({x}, out={out})", f"np.logaddexp(0.0, {out}, out={out})",
                f"np.negative({out}, out={out})", f"np.exp({out}, out={out})"]


class softplus(_Primitive):
    latex_name = r"\operatorname{softplus}"
    _definition = staticmethod(lambda x: sp.log(1 + sp.exp(x)))

    def _numpycode(self, printer):
        x = printer._print(self.args[0])
        return f"{printer._module_format('numpy')}.logaddexp(0, {x})"

    def _torchcode(self, printer):
        # torch.nn.functional.softplus switches to x above a threshold (an approximation);
        # max(x, 0) + log1p(exp(-|x|)) is exact and overflows nowhere
        x = printer._print(self.args[0])
        return f"(torch.clamp({x}, min=0) + torch.log1p(torch.exp(-torch.abs({x}))))"

    def _jaxcode(self, printer):
        return f"jnp.logaddexp(0, {printer._print(self.args[0])})"

    @staticmethod
    def _numpy_inplace(x: str, out: str) -> list[str]:
        return [f"np.logaddexp(0.0, {x}, out={out})"]


class Phi(_Primitive):
    """Standard normal cumulative distribution function."""

    latex_name = r"\Phi"
    _definition = staticmethod(lambda x: (1 + sp.erf(x / sp.sqrt(2))) / 2)

    def _numpycode(self, printer):
        x = printer._print(self.args[0])
        return f"(0.5 * (1.0 + {printer._module_format('scipy.special.erf')}(({x}) * {_INV_SQRT2})))"

    scipy_functions = ("erf",)

    def _torchcode(self, printer):
        return f"torch.special.ndtr({printer._print(self.args[0])})"

    def _jaxcode(self, printer):
        return f"jax.scipy.special.ndtr({printer._print(self.args[0])})"

    @staticmethod
    def _numpy_inplace(x: str, out: str) -> list[str]:
        return [f"np.multiply({x}, {_INV_SQRT2}, out={out})", f"erf({out}, out={out})",
                f"np.add({out}, 1.0, out={out})", f"np.multiply({out}, 0.5, out={out})"]


class phi(_Primitive):
    """Standard normal probability density function."""

    latex_name = r"\phi"
    _definition = staticmethod(lambda x: sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi))

    def _numpycode(self, printer):
        x = printer._print(self.args[0])
        return f"({_INV_SQRT_2PI} * {printer._module_format('numpy')}.exp(-0.5 * ({x}) ** 2))"

    _torchcode = _jaxcode = _numpycode  # the same formula under the printer's own module

    @staticmethod
    def _numpy_inplace(x: str, out: str) -> list[str]:
        return [f"np.square({x}, out={out})", f"np.multiply({out}, -0.5, out={out})",
                f"np.exp({out}, out={out})", f"np.multiply({out}, {_INV_SQRT_2PI}, out={out})"]


_INV_SQRT2 = repr(float(1 / sp.sqrt(2)))
_INV_SQRT_2PI = repr(float(1 / sp.sqrt(2 * sp.pi)))
PRIMITIVES = (sigmoid, softplus, Phi, phi)


def _is_one_plus_exp(expr: sp.Expr):
    """Return u if expr is 1 + exp(u), else None."""
    if isinstance(expr, sp.Add) and len(expr.args) == 2 and sp.S.One in expr.args:
        other = expr.args[0] if expr.args[1] == 1 else expr.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _rewrite_node(expr: sp.Expr) -> sp.Expr:
    # 1/(1 + exp(u)) -> sigma(-u)
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp < 0:
        u = _is_one_plus_exp(expr.base)
        if u is not None:
            return sigmoid(-u) ** (-expr.exp)
    # log(1 + exp(u)) -> softplus(u)
    if isinstance(expr, sp.log):
        u = _is_one_plus_exp(expr.args[0])
        if u is not None:
            return softplus(u)
    # erf(x/sqrt(2)) -> 2 Phi(x) - 1
    if isinstance(expr, sp.erf):
        x = sp.expand(expr.args[0] * sp.sqrt(2))
        return 2 * Phi(x) - 1
    # exp(-x^2/2) -> sqrt(2 pi) phi(x)
    if isinstance(expr, sp.exp):
        arg = expr.args[0]
        for x in _square_roots_of(-2 * arg):
            return sp.sqrt(2 * sp.pi) * phi(x)
    # exp(u) * sigma(-u)**p -> sigma(u) * sigma(-u)**(p - 1)
    if isinstance(expr, sp.Mul):
        factors = list(expr.args)
        for i, f in enumerate(factors):
            if not isinstance(f, sp.exp):
                continue
            for j, g in enumerate(factors):
                base, power = (g.base, g.exp) if isinstance(g, sp.Pow) else (g, sp.S.One)
                if isinstance(base, sigmoid) and power.is_positive and \
                        sp.expand(base.args[0] + f.args[0]) == 0:
                    rest = [h for k, h in enumerate(factors) if k not in (i, j)]
                    return sp.Mul(*rest) * sigmoid(f.args[0]) * base ** (power - 1)
    # sigma(-u) -> 1 - sigma(u), as the documents write sigma'(z) = sigma(z)(1 - sigma(z))
    if isinstance(expr, sigmoid) and expr.args[0].could_extract_minus_sign():
        return 1 - sigmoid(-expr.args[0])
    return expr


def _square_roots_of(expr: sp.Expr):
    """Yield x with x**2 == expr when expr is visibly a square (x**2 or c**2 * x**2)."""
    if isinstance(expr, sp.Pow) and expr.exp == 2:
        yield expr.base


def to_primitives(expr: sp.Expr) -> sp.Expr:
    """Rewrite sigma, softplus, Phi and phi patterns into the named primitives (bottom up)."""
    previous = None
    while previous != expr:
        previous = expr
        expr = sp.bottom_up(expr, _rewrite_node)
    return expr


def from_primitives(expr: sp.Expr) -> sp.Expr:
    """Expand every named primitive back into its defining expression."""
    return expr.rewrite("definition") if expr.has(*PRIMITIVES) else expr
