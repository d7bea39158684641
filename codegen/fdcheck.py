"""Central finite differences on a generated module, in float64.

For every parameter array: the relative error ||g - g_fd|| / (||g|| + ||g_fd||) between
``backward`` and (J(theta + h e) - J(theta - h e)) / 2h over its entries (all of them for
small arrays, a random sample for large ones), floored at the finite differences'
resolution (see below).  Entries whose perturbation moves a
pre-activation across a kink are skipped and counted: there the loss is not differentiable
and a difference quotient means nothing.  The kinks are the Program's ``switches`` (each
Piecewise condition, Max/Min pair, Abs or sign argument of an activation); without them,
z = 0 in every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import sympy as sp

__all__ = ["FDResult", "FDReport", "finite_difference_check", "random_targets", "EXAMPLES"]

EXAMPLES = 4  # examples in the batch the check differentiates


@dataclass(frozen=True)
class FDResult:
    key: str
    checked: int
    skipped: int
    relative_error: float


@dataclass(frozen=True)
class FDReport:
    module: str
    results: tuple[FDResult, ...]
    tolerance: float

    @property
    def worst(self) -> float:
        return max((r.relative_error for r in self.results), default=0.0)

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance

    def summary(self) -> str:
        checked = sum(r.checked for r in self.results)
        verdict = "agree" if self.ok else "DISAGREE"
        lines = [f"finite differences on {self.module}: {checked} entries of {len(self.results)} "
                 f"parameter arrays {verdict} with backward() (worst relative error "
                 f"{self.worst:.1e}, tolerance {self.tolerance:.0e})"]
        if not self.ok:
            lines += [f"  {r.key}: relative error {r.relative_error:.2e}"
                      for r in self.results if r.relative_error > self.tolerance]
        return "\n".join(lines)


def random_targets(module: ModuleType, m: int, rng: np.random.Generator) -> np.ndarray:
    """Valid targets for the module's task: class labels, 0/1, or real values."""
    n_out = module.LAYER_SIZES[-1]
    if module.TASK == "classification":
        return rng.integers(0, n_out, size=m)
    if module.TASK == "binary":
        return rng.integers(0, 2, size=(m, n_out))
    return rng.standard_normal((m, n_out))


def _switch_functions(module: ModuleType, switches) -> list:
    """(layer, s) with s(Z) an array whose sign change marks a kink of layer's activation."""
    if switches is None:
        return [(l, lambda Z: Z) for l in range(1, len(module.LAYER_SIZES))]
    return [(layer, sp.lambdify(z, s, "numpy")) for layer, s, z in switches]


def _kinks(module: ModuleType, params: dict, X: np.ndarray, switches) -> list[np.ndarray]:
    cache = module.forward(params, X)
    return [np.signbit(s(cache.Z[layer]) + np.zeros_like(cache.Z[layer]))
            for layer, s in switches]


def finite_difference_check(module: ModuleType, *, m: int = EXAMPLES, seed: int = 0, h: float = 1e-6,
                            tolerance: float = 1e-6, max_entries: int = 40,
                            switches=None) -> FDReport:
    """Compare the module's backward() with central differences of its loss().

    ``switches`` are the Program's (layer, s(z), z): entries whose perturbation changes the
    sign of some s(Z) cross a kink and are skipped.
    """
    switches = _switch_functions(module, switches)
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed, dtype=np.float64)
    for key in params:  # non-zero biases and weights of order 1: a generic point
        params[key] = params[key] + 0.1 * rng.standard_normal(params[key].shape)
    X = rng.standard_normal((m, module.LAYER_SIZES[0]))
    Y = random_targets(module, m, rng)
    module = _Training(module, seed) if hasattr(module, "KINDS") else module
    grads = module.backward(params, module.forward(params, X), Y)
    J = module.loss(params, X, Y)
    signs = _kinks(module, params, X, switches)
    results = []
    for key, value in params.items():
        flat = value.reshape(-1)
        entries = np.arange(flat.size)
        if flat.size > max_entries:
            entries = rng.choice(flat.size, size=max_entries, replace=False)
        analytic, numeric, skipped = [], [], 0
        for index in entries:
            original = flat[index]
            flat[index] = original + h
            plus, crossed = module.loss(params, X, Y), _crossed(module, params, X, signs, switches)
            flat[index] = original - h
            minus = module.loss(params, X, Y)
            crossed_back = _crossed(module, params, X, signs, switches)
            flat[index] = original
            if crossed or crossed_back:
                skipped += 1
                continue
            numeric.append((plus - minus) / (2 * h))
            analytic.append(grads[key].reshape(-1)[index])
        a, n = np.asarray(analytic), np.asarray(numeric)
        # A difference quotient carries rounding noise of about 4 eps |J| / h per entry;
        # gradients far below that (early layers of a deep stack) are judged against the
        # resolution instead, so the error stays relative to what can be measured.
        resolution = np.sqrt(max(len(a), 1)) * 4 * np.finfo(np.float64).eps * max(abs(J), 1.0) / h
        floor = resolution / tolerance if tolerance > 0 else resolution
        scale = max(np.linalg.norm(a) + np.linalg.norm(n), floor)
        error = float(np.linalg.norm(a - n) / scale) if scale > 0 else 0.0
        results.append(FDResult(key, len(analytic), skipped, error))
    name = Path(module.__file__).stem if getattr(module, "__file__", None) else module.__name__
    return FDReport(name, tuple(results), tolerance)


class _Training:
    """A module of layer kinds as the check differentiates it: the training forward (batch
    statistics) with one fixed dropout mask, drawn anew from the same seed at every call."""

    def __init__(self, module: ModuleType, seed: int):
        self.module, self.seed = module, seed
        self.LAYER_SIZES, self.__file__ = module.LAYER_SIZES, getattr(module, "__file__", None)
        self.__name__ = module.__name__

    def forward(self, params, X):
        return self.module.forward(params, X, training=True,
                                   rng=np.random.default_rng(self.seed + 1))

    def backward(self, params, cache, Y):
        return self.module.backward(params, cache, Y)

    def loss(self, params, X, Y):
        cache = self.forward(params, X)
        return self.module.objective(params, cache, self.module.targets(Y, X.shape[0], X.dtype))


def _crossed(module, params, X, signs, switches) -> bool:
    now = _kinks(module, params, X, switches)
    return any(np.any(a != b) for a, b in zip(now, signs))
