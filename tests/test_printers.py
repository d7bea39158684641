"""Printer coverage: one fixed set of expressions, printed by every printer and evaluated.

In the spirit of SymForce's backend coverage expressions: every form a declaration can
produce (Piecewise with And/Or conditions, Max/Min, Abs, Heaviside, erf, exp/expm1/log1p,
sqrt, powers, the named primitives) is printed by each numeric printer, run with NumPy, and
compared with SymPy's own evaluation of the expression at the same points.  A new printer
(compiled loops, PyTorch, JAX) joins ``PRINTERS`` and is held to the same set.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from codegen import runtime
from codegen.printers.inplace import Buffers, InplacePrinter
from codegen.printers.loops import ScalarPrinter
from codegen.printers.numpy import NumPyCodePrinter
from derive.primitives import Phi, phi, sigmoid, softplus

z = sp.Symbol("z", real=True)
y = sp.Symbol("y", real=True)
Z_POINTS = np.array([-3.2, -1.6, -0.7, -0.3, 0.4, 0.9, 1.7, 2.6])  # no kink lies on a point
Y_POINTS = np.array([0.25, -0.5, 1.0, 0.0, 2.0, -1.5, 0.75, 3.0])

COVERAGE = {
    "piecewise_and": sp.Piecewise((z, (z > -1) & (z < 1)), (sp.sign(z), True)),
    "piecewise_or": sp.Piecewise((0, (z < -2) | (z > 2)), (z ** 2, True)),
    "piecewise_not": sp.Piecewise((z, sp.Not(z > 1)), (1, True)),
    "piecewise_three": sp.Piecewise((-1, z < -1), (z, z <= 1), (1, True)),
    "piecewise_exp": sp.Piecewise((sp.exp(z) - 1, z <= 0), (z, True)),
    "max_min": sp.Max(-1, sp.Min(1, z)),
    "max_zero": sp.Max(0, z),
    "max_derivative": sp.diff(sp.Max(0, z), z),  # Heaviside(z)
    "min_three": sp.Min(z, 2 * z, z + 1),
    "abs": sp.Abs(z),
    "abs_difference": sp.Abs(z - y),
    "huber": sp.Piecewise(((z - y) ** 2 / 2, sp.Abs(z - y) <= 1), (sp.Abs(z - y) - sp.S.Half, True)),
    "heaviside_zero": sp.Heaviside(z, 0),
    "step_le": sp.Piecewise((0, z <= 0), (1, True)),  # ReLU's derivative
    "step_lt": sp.Piecewise((sp.Rational(1, 10), z < 1), (1, True)),
    "step_ge": sp.Piecewise((3, z >= 1), (-1, True)),
    "step_gt": sp.Piecewise((-2, z > -1), (0, True)),
    "sign": sp.sign(z) * z ** 2,
    "erf": sp.erf(z / sp.sqrt(2)),
    "exp": sp.exp(-z ** 2 / 2),
    "expm1": expm1(z),
    "log1p": log1p(z ** 2),
    "log": sp.log(1 + z ** 2),
    "sqrt": sp.sqrt(1 + z ** 2),
    "powers": z ** 3 - 2 * z ** -2 + (1 + z ** 2) ** sp.Rational(3, 2),
    "rational": sp.Rational(3, 7) * z + sp.Rational(1, 3),
    "quotient": (z - y) / (1 + z ** 2),
    "tanh_softplus": z * sp.tanh(softplus(z)),  # mish
    "mish_derivative": sp.diff(z * sp.tanh(sp.log(1 + sp.exp(z))), z),
    "sigmoid": sigmoid(z) * (1 - sigmoid(z)),
    "softplus": softplus(-z) + softplus(z),
    "gelu_derivative": z * phi(z) + Phi(z),
}


def _reference(expr) -> np.ndarray:
    expr = expr.rewrite("definition")  # the named primitives as the expressions they stand for
    return np.array([float(expr.subs({z: sp.Float(a, 30), y: sp.Float(b, 30)}).evalf(30))
                     for a, b in zip(Z_POINTS, Y_POINTS)])


def _namespace(scipy_functions) -> dict:
    return {"np": np, "_runtime": runtime,
            **{name: getattr(scipy.special, name) for name in scipy_functions}}


def _functional(expr, dtype):
    printer = NumPyCodePrinter({z: "z", y: "y"}, like="z")
    code = printer.doprint(expr)
    scope = _namespace(printer.scipy_functions)
    scope.update(z=Z_POINTS.astype(dtype)[:, None], y=Y_POINTS.astype(dtype)[:, None])
    value = eval(code, scope)  # the printer's own code, as the generated module runs it
    return np.broadcast_to(value, (len(Z_POINTS), 1)).reshape(-1), "".join(code)


def _inplace(expr, dtype):
    buffers = Buffers("t")
    printer = InplacePrinter({z: "z", y: "y"}, buffers)
    lines = printer.emit(expr, "out")
    m = len(Z_POINTS)
    scope = _namespace(printer.code.scipy_functions)
    scope.update(z=Z_POINTS.astype(dtype)[:, None].copy(), y=Y_POINTS.astype(dtype)[:, None].copy(),
                 out=np.empty((m, 1), dtype), product=np.matmul)
    for kind, shape, kind_dtype in (("full", (m, 1), dtype), ("column", (m, 1), dtype),
                                    ("mask", (m, 1), bool), ("units_first", (1, m), dtype)):
        for i in range(getattr(buffers, kind)):
            scope[f"t_{kind[0]}{i}"] = np.empty(shape, kind_dtype)
    scope["t_ones"] = np.ones((1, 1), dtype)
    scope.update({name: np.full((m, 1), value, dtype) for name, value in buffers.constants.items()})
    exec("\n".join(lines), scope)  # the printer's own statements, as the step runs them
    assert scope["out"].dtype == dtype
    return scope["out"].reshape(-1), "\n".join(lines)


def _scalar(expr, dtype):
    """The compiled kernel's printer: one entry at a time (run here by Python, as numba would)."""
    printer = ScalarPrinter({z: "z", y: "y"}, {"z": 2, "y": 2})
    code = printer.doprint(expr)
    scope = {"np": np, "math": math, "z": Z_POINTS.astype(dtype)[:, None],
             "y": Y_POINTS.astype(dtype)[:, None], "j": 0,
             "_dt": np.dtype(dtype).type, "_runtime": runtime}  # as the kernel binds them
    values = [eval(code, dict(scope, i=i)) for i in range(len(Z_POINTS))]
    return np.asarray(values, dtype=dtype), code


def _framework(target, module_name):
    """A framework printer's code evaluated on the framework's own arrays (skipped when the
    framework is not installed)."""
    def run(expr, dtype):
        pytest.importorskip(module_name)
        from codegen.printers.frameworks import FRAMEWORK_PRINTERS

        scope = _framework_scope(target)
        to_array, to_numpy = scope.pop("to_array"), scope.pop("to_numpy")
        printer = FRAMEWORK_PRINTERS[target]({z: "z", y: "y"}, like="z")
        code = printer.doprint(expr)
        scope.update(z=to_array(Z_POINTS.astype(dtype)[:, None]),
                     y=to_array(Y_POINTS.astype(dtype)[:, None]))
        value = to_numpy(eval(code, scope))
        return np.broadcast_to(value, (len(Z_POINTS), 1)).reshape(-1), code
    return run


def _framework_scope(target) -> dict:
    if target == "torch":
        import torch

        return {"torch": torch, "to_array": torch.from_numpy,
                "to_numpy": lambda t: t.detach().numpy()}
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jax.scipy.special  # noqa: F401  (jax.scipy.special.erf, ndtr)

    return {"jax": jax, "jnp": jnp, "to_array": jnp.asarray, "to_numpy": np.asarray}


PRINTERS = {"numpy": _functional, "numpy in-place": _inplace, "compiled loops": _scalar,
            "torch": _framework("torch", "torch"), "jax": _framework("jax", "jax")}


@pytest.mark.parametrize("printer", list(PRINTERS))
@pytest.mark.parametrize("name", list(COVERAGE))
def test_printer_matches_sympy(printer, name):
    expr = COVERAGE[name]
    expected = _reference(expr)
    with np.errstate(all="raise", under="ignore"):
        got, code = PRINTERS[printer](expr, np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=code)


@pytest.mark.parametrize("name", list(COVERAGE))
def test_inplace_printer_has_an_inplace_form_for_the_coverage_set(name):
    """No coverage expression needs the in-place printer's allocating fallback."""
    lines = InplacePrinter({z: "z", y: "y"}, Buffers("t")).emit(COVERAGE[name], "out")
    assert not any("no in-place form" in line for line in lines), lines


@pytest.mark.parametrize("printer", list(PRINTERS))
def test_float32_stays_float32(printer):
    got, code = PRINTERS[printer](COVERAGE["piecewise_three"] + COVERAGE["sigmoid"], np.float32)
    assert got.dtype == np.float32, code


def test_inplace_fallback_for_a_form_it_does_not_know():
    """Any printable expression still computes: by the functional printer, then a copy."""
    expr = sp.atan2(z, y)
    lines = InplacePrinter({z: "z", y: "y"}, Buffers("t")).emit(expr, "out")
    assert len(lines) == 1 and lines[0].startswith("np.copyto(out, ")
    got, _ = _inplace(expr, np.float64)
    np.testing.assert_allclose(got, _reference(expr), rtol=1e-12)


def test_common_subexpressions_are_computed_once():
    """mish's g' holds tanh(softplus(z)) twice: the in-place printer computes it once."""
    lines = InplacePrinter({z: "z"}, Buffers("t")).emit(COVERAGE["mish_derivative"], "out")
    assert sum("np.tanh(" in line for line in lines) == 1, lines
