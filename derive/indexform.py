"""The window kinds (convolution, pooling) in index form, and their reverse rules derived by
SymPy from it.

An image is stored flat per example in NCHW order; in index form it is an ``IndexedBase``
indexed [n, c, row, column] (example, channel, position), zero outside its rows and columns
(that is the padding).  Each kind's forward is one index-form sum (``forward``); each reverse
rule is the adjoint of that forward, obtained as the documents do it by hand:

    ∂J/∂x[κ] = Σ_{outputs ω} δ[ω] ∂z[ω]/∂x[κ],

with ∂z/∂x[κ] from ``sympy.diff`` of the indexed sum (a product of Kronecker deltas) and the
deltas summed out limit by limit (``deltasummation``).  What comes out is what the literature
writes: the input gradient of a convolution is the full correlation of δ with the flipped
kernel, its weight gradient the correlation of the input with δ, its bias gradient the sum of
δ; a pool sends δ back through its window, to the first maximum (max) or spread evenly (avg).
Max pooling is written as a sum over its window weighted by the indicator M of the window's
first maximum (PyTorch's tie rule), a locally constant factor: SymPy's derivative of ``Max``
at tie-free points gives that indicator (``max_routes_to_first_maximum``).

``evaluate`` computes an index form at concrete sizes over object arrays (the exact proof).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import sympy as sp
from sympy.concrete.delta import deltasummation

__all__ = ["Window", "SIZES", "INDEX", "ARRAYS", "forward", "rule", "local", "RULES",
           "evaluate", "max_routes_to_first_maximum"]


@dataclass(frozen=True)
class Window:
    """Where a window kind reads its image: the input (channels, height, width), the output's
    channels (a convolution's filters; a pool keeps the channels), the square kernel, the
    stride and the zero padding on each side."""

    channels: int
    height: int
    width: int
    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def image_in(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def image_out(self) -> tuple[int, int, int]:
        return (self.filters, self.out_height, self.out_width)

    def sizes(self) -> dict:
        """The size symbols of the index forms -> this window's numbers."""
        S = SIZES
        return {S.C: self.channels, S.H: self.height, S.W: self.width, S.F: self.filters,
                S.k: self.kernel, S.s: self.stride, S.P: self.padding,
                S.Ho: self.out_height, S.Wo: self.out_width}


class _Sizes:
    def __init__(self):
        names = {"C": "C", "H": "H", "W": "W", "F": "F", "k": "k", "s": "s", "P": "P",
                 "Ho": "H_o", "Wo": "W_o"}
        for attr, name in names.items():
            setattr(self, attr, sp.Symbol(name, integer=True, positive=True))


class _Index:
    def __init__(self):
        for name in ("n", "c", "f", "i", "j", "p", "q", "u", "v"):
            setattr(self, name, sp.Symbol(name, integer=True, nonnegative=True))


SIZES, INDEX = _Sizes(), _Index()


class _Arrays:
    """The arrays of the index forms: input a, weights W, bias b, output z, its adjoint δ and
    max pooling's first-maximum indicator M."""

    def __init__(self):
        for name, shown in (("a", "a"), ("W", "W"), ("b", "b"), ("z", "z"), ("delta", "delta"),
                            ("M", "M")):
            setattr(self, name, sp.IndexedBase(shown))


ARRAYS = _Arrays()


def forward(kind: str) -> tuple[sp.Expr, tuple]:
    """The index form of z[n, f, i, j] (``kind``: conv, max_pool, avg_pool), with its output
    limits."""
    S, I, A = SIZES, INDEX, ARRAYS
    n, c, f, i, j, p, q = I.n, I.c, I.f, I.i, I.j, I.p, I.q
    out = ((n, 0, sp.Symbol("m", integer=True, positive=True) - 1), (f, 0, S.F - 1),
           (i, 0, S.Ho - 1), (j, 0, S.Wo - 1))
    window = ((p, 0, S.k - 1), (q, 0, S.k - 1))
    if kind == "conv":  # PyTorch's Conv2d: a cross-correlation of the zero-padded input
        body = A.W[f, c, p, q] * A.a[n, c, S.s * i + p - S.P, S.s * j + q - S.P]
        return sp.Sum(body, (c, 0, S.C - 1), *window) + A.b[f], out
    position = (n, f, S.s * i + p, S.s * j + q)  # a pool keeps the channel: f is c
    if kind == "max_pool":  # the window's first maximum, as an indicator-weighted sum
        return sp.Sum(A.M[position] * A.a[position], *window), out
    if kind == "avg_pool":
        return sp.Sum(A.a[position], *window) / S.k ** 2, out
    raise KeyError(kind)


# the reverse rules: (forward kind, the array differentiated, its free indices)
RULES = {
    "conv_input": ("conv", "a", ("n", "c", "u", "v")),
    "conv_weight": ("conv", "W", ("f", "c", "p", "q")),
    "conv_bias": ("conv", "b", ("f",)),
    "max_pool_input": ("max_pool", "a", ("n", "c", "u", "v")),
    "avg_pool_input": ("avg_pool", "a", ("n", "c", "u", "v")),
}


def _primed(name: str) -> sp.Symbol:
    return sp.Symbol(name + "'", integer=True, nonnegative=True)


@functools.lru_cache(maxsize=None)
def rule(name: str) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """The reverse rule ``name`` of RULES: ∂J/∂x at the free indices (primed symbols), as
    SymPy derives it from the forward's index form (module docstring)."""
    kind, array, free = RULES[name]
    z, limits = forward(kind)
    free_symbols = tuple(_primed(x) for x in free)
    target = getattr(ARRAYS, array)[free_symbols]
    local, inner = _flattened(sp.diff(z, target))  # deltas inside the forward's own sum
    delta = ARRAYS.delta[tuple(lim[0] for lim in limits)]
    expr = _summed_out(delta * local, (*inner, *limits))  # times δ, over every output
    return _known_ranges(expr, free_symbols, pool=kind != "conv"), free_symbols


def _summed_out(expr: sp.Expr, limits: tuple) -> sp.Expr:
    """The sum of ``expr`` over ``limits``, each limit that a Kronecker delta fixes summed out
    (``deltasummation``, inner limits first), the others left as a sum."""
    remaining = []
    for lim in limits:
        if any(lim[0] in d.free_symbols for d in expr.atoms(sp.KroneckerDelta)):
            expr = deltasummation(expr, lim)
        else:
            remaining.append(lim)
    return sp.Sum(expr, *remaining) if remaining else expr


@functools.lru_cache(maxsize=None)
def local(name: str) -> tuple[sp.Expr, sp.Expr, tuple[sp.Symbol, ...]]:
    """The local derivative behind reverse rule ``name``: ∂z[n, f, i, j]/∂x at the primed
    free indices as ``sympy.diff`` gives it (Kronecker deltas inside the forward's sum), and
    the same with those deltas summed out (the forward's own limits only)."""
    kind, array, free = RULES[name]
    z, _ = forward(kind)
    free_symbols = tuple(_primed(x) for x in free)
    raw = sp.diff(z, getattr(ARRAYS, array)[free_symbols])
    summed = _summed_out(*_flattened(raw))
    return raw, _known_ranges(summed, free_symbols, pool=kind != "conv"), free_symbols

def _flattened(e: sp.Expr) -> tuple[sp.Expr, tuple]:
    """A product of sums as one summand and all the limits (the sums' indices are distinct)."""
    if isinstance(e, sp.Sum):
        body, limits = _flattened(e.function)
        return body, (*e.limits, *limits)
    if isinstance(e, sp.Mul):
        parts = [_flattened(arg) for arg in e.args]
        return sp.Mul(*[b for b, _ in parts]), tuple(lim for _, ls in parts for lim in ls)
    return e, ()


def _known_ranges(expr: sp.Expr, free: tuple[sp.Symbol, ...], pool: bool) -> sp.Expr:
    """Range guards that always hold for a free index within its array (c' <= C - 1)."""
    S = SIZES
    bounds = {"c'": S.F if pool else S.C, "f'": S.F, "p'": S.k, "q'": S.k, "n'": sp.Symbol("m", integer=True, positive=True)}
    true = {}
    for x in free:
        if x.name in bounds:
            B = bounds[x.name]
            true |= {sp.Le(x, B - 1): True, sp.Lt(x, B): True, sp.Ge(B - 1, x): True,
                     sp.Gt(B, x): True, sp.Ge(x, 0): True}
    expr = expr.xreplace(true)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: sp.piecewise_fold(e))


def max_routes_to_first_maximum(size: int = 2, points: int = 3, seed: int = 0) -> bool:
    """SymPy's derivative of the maximum of a window's entries, at tie-free rational points,
    is the indicator of the (first, and only) maximum: the M of max pooling's index form."""
    import random

    rng = random.Random(seed)
    xs = sp.symbols(f"x0:{size * size}", real=True)
    top = sp.Max(*xs)
    derivatives = [sp.diff(top, x) for x in xs]
    for _ in range(points):
        values = rng.sample(range(-50, 50), len(xs))
        point = {x: sp.Rational(v, 7) for x, v in zip(xs, values)}
        first = values.index(max(values))
        got = [d.xreplace(point) for d in derivatives]
        if got != [int(t == first) for t in range(len(xs))]:
            return False
    return True


# ----------------------------------------------------------------------------- evaluation

def evaluate(expr: sp.Expr, free: tuple[sp.Symbol, ...], arrays: dict, sizes: dict,
             shape: tuple[int, ...]):
    """The index form ``expr`` at every value of its ``free`` indices (an object array of
    ``shape``), the IndexedBases read from ``arrays`` (object arrays indexed as the index
    form is; an index outside an array reads 0: the zero padding), the sizes substituted."""
    import numpy as np

    compiled = _compile(expr.xreplace(sizes), free)
    out = np.empty(shape, dtype=object)
    for index in itertools.product(*(range(d) for d in shape)):
        out[index] = compiled(dict(zip(free, index)), arrays)
    return out


def _compile(e: sp.Expr, bound: tuple):
    """A closure (env of index values, arrays) -> the value of ``e``."""
    if isinstance(e, sp.Sum):
        body = _compile(e.function, bound + tuple(lim[0] for lim in e.limits))
        limits = [(lim[0], int(lim[1]), int(lim[2])) for lim in e.limits]

        def total(env, arrays):
            acc = sp.S.Zero
            for values in itertools.product(*(range(lo, hi + 1) for _, lo, hi in limits)):
                inner = dict(env)
                inner.update({x: v for (x, _, _), v in zip(limits, values)})
                acc += body(inner, arrays)
            return acc
        return total
    if isinstance(e, sp.Indexed):
        base = e.base
        indices = [_integer(i, bound) for i in e.indices]

        def entry(env, arrays):
            array = arrays[base]
            at = tuple(f(env) for f in indices)
            if any(k < 0 or k >= d for k, d in zip(at, array.shape)):
                return sp.S.Zero  # outside the image: the zero padding
            return array[at]
        return entry
    if isinstance(e, sp.Piecewise):
        branches = [(_compile(value, bound), _condition(cond, bound)) for value, cond in e.args]

        def piece(env, arrays):
            for value, cond in branches:
                if cond(env):
                    return value(env, arrays)
            return sp.S.Zero
        return piece
    if isinstance(e, sp.KroneckerDelta):
        x, y = (_integer(arg, bound) for arg in e.args)
        return lambda env, arrays: sp.S.One if x(env) == y(env) else sp.S.Zero
    if isinstance(e, (sp.Mul, sp.Add)):
        parts = [_compile(arg, bound) for arg in e.args]
        if isinstance(e, sp.Mul):
            def product(env, arrays):
                acc = sp.S.One
                for part in parts:
                    acc = acc * part(env, arrays)
                    if acc == 0:
                        return sp.S.Zero
                return acc
            return product
        return lambda env, arrays: sp.Add(*[part(env, arrays) for part in parts])
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        base = _compile(e.base, bound)
        return lambda env, arrays: base(env, arrays) ** e.exp
    if e.is_Number:
        return lambda env, arrays: e
    raise TypeError(f"no evaluation of {e!r} in an index form")


def _integer(e: sp.Expr, bound: tuple):
    symbols = sorted(e.free_symbols, key=str)
    if not symbols:
        value = int(e)
        return lambda env: value
    f = sp.lambdify(symbols, e, "math")
    return lambda env: int(f(*(env[s] for s in symbols)))


def _condition(cond, bound: tuple):
    if cond is sp.true or cond is True:
        return lambda env: True
    if cond is sp.false or cond is False:
        return lambda env: False
    symbols = sorted(cond.free_symbols, key=str)
    f = sp.lambdify(symbols, cond, "math")
    return lambda env: bool(f(*(env[s] for s in symbols)))
