"""Printers for the frameworks users scale out with: PyTorch and JAX.

Both start from ``NumPyCodePrinter`` (its row convention for the matrix formulas, its
clamped ``where`` branches, its log-sum-exp and softmax recognition) and change only the
spelling: the array library's functions (a table per target), the stable vector helpers
(``torch.softmax``/``torch.logsumexp``, ``jax.nn.softmax``/``jax.nn.logsumexp``) and the named
primitives, which carry their own spelling per target (``_torchcode``, ``_jaxcode``; see
``derive/primitives.py``).

Fallbacks, so that any declaration that derives also prints: a function with no spelling
that has a definition (a named primitive without ``_torchcode``) is printed as that
definition; a number that is not a plain rational (``sqrt(2)``, ``pi``) is printed as its
float value, which every framework takes as a dtype-neutral scalar.
"""

from __future__ import annotations

import functools

import sympy as sp

from .numpy import NumPyCodePrinter

__all__ = ["TorchCodePrinter", "JaxCodePrinter", "FRAMEWORK_PRINTERS", "as_max_min"]


class _FrameworkPrinter(NumPyCodePrinter):
    """What the two framework printers share: constants as floats, definitions as fallback."""

    module = ""  # the array library's name in the generated module
    renames: dict[str, str] = {}  # NumPy's function name -> the library's, where they differ

    def _call(self, name: str) -> str:
        return f"{self.module}.{self.renames.get(name, name)}"

    def _module_format(self, fqn, register=True):
        """``numpy.exp`` -> the library's ``exp``; SciPy's special functions by the table."""
        if fqn in ("numpy", "np"):
            return self.module
        if fqn in self.renames:
            return self.renames[fqn]
        module, _, attr = fqn.rpartition(".")
        if module in ("numpy", "np"):
            return self._call(attr)
        # a SciPy function with no entry in the table: the module would not import it
        raise NotImplementedError(f"{type(self).__name__} has no spelling for: {fqn}")

    def _print(self, expr, **kwargs):
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Rational \
                and expr.is_real and not expr.has(sp.Symbol):
            return repr(float(expr))
        return super()._print(expr, **kwargs)

    def _print_And(self, expr):
        return self._chain("logical_and", expr.args)

    def _print_Or(self, expr):
        return self._chain("logical_or", expr.args)

    def _print_Not(self, expr):
        return f"{self._call('logical_not')}({self._print(expr.args[0])})"

    def _chain(self, name, args):
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{self._call(name)}({code}, {self._print(arg)})"
        return code

    def _print_Function(self, expr):
        definition = getattr(type(expr), "definition", None)
        if definition is not None:  # a named primitive with no spelling for this target
            return self._print(definition(*expr.args))
        return super()._print_Function(expr)


class TorchCodePrinter(_FrameworkPrinter):
    """PyTorch code on tensors: ``torch.where``, ``torch.clamp``, ``dim=`` and ``keepdim=``.

    Constant branches of a ``torch.where`` become 0-d tensors of the ``like`` tensor's dtype
    and device (``Z1.new_tensor(0.0)``), so float32 stays float32 and CUDA stays CUDA.
    """

    printmethod = "_torchcode"
    module = "torch"
    renames = {"arctan": "atan", "arcsin": "asin", "arccos": "acos", "arctanh": "atanh",
               "arcsinh": "asinh", "arccosh": "acosh", "arctan2": "atan2",
               "scipy.special.erf": "torch.special.erf"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.printmethod = "_torchcode"  # NumPyPrinter's __init__ sets its own

    def _softmax(self, name: str) -> str:
        return f"torch.softmax({name}, dim=1)"

    def _logsumexp(self, name: str) -> str:
        return f"torch.logsumexp({name}, dim=1, keepdim=True)"

    def _print_Sum(self, expr):
        return f"torch.sum({self._print(expr.function)}, dim=1, keepdim=True)"

    def _branch(self, value):
        if value.is_Number and self.like:
            return f"{self.like}.new_tensor({float(value)!r})"
        return self._print(value)

    def _pairwise(self, func, args):
        """torch.maximum/minimum take two tensors; a number bound is a clamp."""
        bound = "min" if func.endswith("maximum") else "max"
        numbers = [a for a in args if a.is_number]
        others = [a for a in args if not a.is_number]
        code = self._print(others[0])
        for arg in others[1:]:
            code = f"{func}({code}, {self._print(arg)})"
        for number in numbers:
            code = f"torch.clamp({code}, {bound}={float(number)!r})"
        return code

    def _print_Piecewise(self, expr):
        """A two-branch Piecewise that SymPy proves equal to Max or Min of its branches
        (ReLU's is max(0, z), leaky ReLU's max(alpha z, z)) prints as a clamp or
        torch.maximum: no boolean mask, which costs 10-20x more than a clamp on the CPU."""
        extreme = as_max_min(expr)
        if extreme is not None:
            return self._print(extreme)
        step = self._step(expr)
        return step if step is not None else super()._print_Piecewise(expr)

    def _step(self, expr) -> str | None:
        """``Piecewise((c1, x <= k), (c2, True))`` with numbers c1, c2 (a step, as ReLU's
        derivative) as arithmetic on ``sign(clamp(u, min=0))`` (1 where u > 0, else 0), which
        runs 20x faster than ``torch.where`` on the CPU and gives c1 and c2 exactly."""
        if len(expr.args) != 2 or expr.args[1].cond != sp.true:
            return None
        (c1, cond), (c2, _) = expr.args
        if not (c1.is_Number and c2.is_Number and isinstance(cond, sp.core.relational.Relational)
                and cond.rel_op in ("<=", "<", ">", ">=")):
            return None
        u = cond.lhs - cond.rhs if cond.rel_op in ("<=", ">") else cond.rhs - cond.lhs
        if cond.rel_op in ("<", ">"):  # the condition holds where u > 0
            c1, c2 = c2, c1
        # now: c2 where u > 0, c1 where u <= 0
        step = f"torch.sign(torch.clamp({self._print(u)}, min=0.0))"
        terms = [f"{float(c2)!r} * {step}" if c2 != 1 else step] if c2 != 0 else []
        if c1 != 0:
            terms.append(f"{float(c1)!r} * (1.0 - {step})")
        if not terms:
            return f"torch.zeros_like({self._print(u)})"
        return " + ".join(terms) if len(terms) == 1 else f"({' + '.join(terms)})"

    def _print_Heaviside(self, expr):
        x = self._print(expr.args[0])
        half = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"torch.heaviside({x}, ({x}).new_tensor({float(half)!r}))"

    def _print_erf(self, expr):
        return f"torch.special.erf({self._print(expr.args[0])})"


class JaxCodePrinter(_FrameworkPrinter):
    """JAX code: ``jnp`` mirrors NumPy, so mostly NumPy's spellings under another name."""

    printmethod = "_jaxcode"
    module = "jnp"
    renames = {"scipy.special.erf": "jax.scipy.special.erf"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.printmethod = "_jaxcode"

    def _softmax(self, name: str) -> str:
        return f"jax.nn.softmax({name}, axis=1)"

    def _logsumexp(self, name: str) -> str:
        return f"jax.nn.logsumexp({name}, axis=1, keepdims=True)"

    def _print_erf(self, expr):
        return f"jax.scipy.special.erf({self._print(expr.args[0])})"


FRAMEWORK_PRINTERS = {"torch": TorchCodePrinter, "jax": JaxCodePrinter}


@functools.lru_cache(maxsize=256)
def as_max_min(expr: sp.Piecewise) -> sp.Expr | None:
    """Max(v1, v2) or Min(v1, v2) when ``Piecewise((v1, c), (v2, True))`` equals it
    identically (SymPy simplifies the difference of the two, written as Piecewise, to 0);
    None otherwise.  A failed simplification only keeps the Piecewise: it is never wrong."""
    if len(expr.args) != 2 or expr.args[1].cond != sp.true:
        return None
    (v1, cond), (v2, _) = expr.args
    # only polynomial branches split by one polynomial comparison (ReLU's kind), where
    # simplify answers in milliseconds; anything else keeps its Piecewise
    if not (isinstance(cond, sp.core.relational.Relational) and
            all(e.is_polynomial() for e in (v1, v2, cond.lhs - cond.rhs))):
        return None
    for candidate in (sp.Max(v1, v2), sp.Min(v1, v2)):
        if not isinstance(candidate, (sp.Max, sp.Min)):
            continue  # the branches compare outright (both numbers, say): no extreme of two
        try:
            difference = sp.piecewise_fold(candidate.rewrite(sp.Piecewise) - expr)
            if sp.simplify(difference) == 0:
                return candidate
        except (TypeError, ValueError, NotImplementedError):  # a form SymPy cannot compare
            return None
    return None
