"""The proof's and the claims' exact model keeps the identities of exp, log and the
hyperbolic functions, and where its stand-ins still differ the real values judge: a right
formula written another way is never refuted, a wrong one still is (issue 22)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy as sp

from derive.local import simplest
from derive.proof import agree_in_reals, exact_model

A, Y, Z = sp.symbols("a y z", real=True)
POINTS = [{A: Fraction(3, 7), Y: Fraction(5, 11), Z: Fraction(-2, 3)},
          {A: Fraction(-4, 5), Y: Fraction(1, 2), Z: Fraction(7, 4)}]
SIGMOID = 1 / (1 + sp.exp(-Z))


@pytest.mark.parametrize("left, right", [
    (sp.diff(SIGMOID, Z), (1 - sp.tanh(Z / 2) ** 2) / 4),          # sigma' through tanh(z/2)
    (1 - sp.tanh(Z) ** 2, 4 / (sp.exp(Z) + sp.exp(-Z)) ** 2),      # tanh' through exp
    (sp.cosh(Z) ** 2 - sp.sinh(Z) ** 2, sp.Integer(1)),
    (sp.log(sp.exp(A - Y)), A - Y),
    (sp.tanh(A - Y), (sp.exp(2 * (A - Y)) - 1) / (sp.exp(2 * (A - Y)) + 1)),
])
@pytest.mark.parametrize("point", POINTS)
def test_the_exact_model_keeps_the_identities(left, right, point):
    model = exact_model(point, seed=3)
    assert model(left) == model(right)


@pytest.mark.parametrize("point", POINTS)
def test_what_the_stand_ins_miss_the_real_values_decide(point):
    """e^{2a} e^{2y-2a} = e^{2y} for arbitrary rationals a, y (the issue's log-cosh case) and
    log cosh(u) = u + log(1 + e^{-2u}) - log 2: right, though the stand-ins may differ."""
    cases = [(sp.exp(2 * A) * sp.exp(2 * Y - 2 * A), sp.exp(2 * Y)),
             (sp.log(sp.cosh(A - Y)), (A - Y) + sp.log(1 + sp.exp(-2 * (A - Y))) - sp.log(2))]
    for left, right in cases:
        assert agree_in_reals(left, right, point)
        assert not agree_in_reals(left, right * (1 + sp.Rational(1, 10**30)), point)
        assert not agree_in_reals(left, -right, point)


def test_simplest_never_fails_and_keeps_a_forms_own_cosh():
    u = A - Y
    assert simplest(sp.diff(sp.log(sp.cosh(u)), A)) == sp.tanh(u)
    assert simplest(sp.log(sp.cosh(u))) == sp.log(sp.cosh(u))
    assert not simplest(sp.diff(SIGMOID, Z)).has(sp.cosh)  # still no cosh of its own making
