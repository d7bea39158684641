"""The local pieces SymPy derives (derive.local) against their hand-known textbook forms.

Nothing here re-derives by the same route the code takes: each result is compared with a
form written out by hand, numerically to 30 digits at points on both sides of 0 (and
structurally where the documents fix the form, e.g. sigma' = a(1 - a)).
"""

from __future__ import annotations

import textwrap

import pytest
import sympy as sp

from derive.activations import ACTIVATIONS, Activation
from derive.derivation import derive
from derive.errors import SpecError
from derive.local import (A_SYM, INDEX, Z_SYM, StepKind, dense_partials, local_activation,
                          local_output)
from derive.losses import LOSSES
from derive.netspec import ActivationSpec, LayerSpec, NetSpec
from derive.primitives import Phi, from_primitives, phi, sigmoid, softplus
from derive.proof import prove_spec
from derive.registry import UnknownName
from derive.spec import load_spec_text

z, a = Z_SYM, A_SYM
SHIPPED_ACTIVATIONS = ACTIVATIONS.names()  # as imported, before any test declares one
I = INDEX
POINTS = tuple(sp.Rational(p, q) for p, q in
               [(-4, 1), (-3, 2), (-1, 3), (1, 7), (1, 2), (1, 1), (5, 2), (6, 1)])

SIGMA = 1 / (1 + sp.exp(-z))  # by hand, not through the primitives
PHI_CDF = (1 + sp.erf(z / sp.sqrt(2))) / 2
PHI_PDF = sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)

# every element-wise activation, each parameter at a value away from its default
ELEMENTWISE = [
    (name, tuple(sorted((key, 0.1 if p.check(0.1) else p.default)
                        for key, p in ACTIVATIONS[name].params.items())))
    for name in ACTIVATIONS.names() if not ACTIVATIONS[name].vector
]


def numerically_equal(lhs: sp.Expr, rhs: sp.Expr, var: sp.Symbol = z, points=POINTS) -> bool:
    """lhs == rhs at every point, to 30 significant digits (primitives expanded first)."""
    lhs, rhs = from_primitives(sp.sympify(lhs)), from_primitives(sp.sympify(rhs))
    for point in points:
        left, right = sp.N(lhs.subs(var, point), 30), sp.N(rhs.subs(var, point), 30)
        if abs(left - right) > sp.Float("1e-25") * max(1, abs(right)):
            return False
    return True


def same_expr(lhs: sp.Expr, rhs: sp.Expr) -> bool:
    return sp.simplify(from_primitives(lhs) - from_primitives(rhs)) == 0


# ----------------------------------------------------------------------------- activations

def test_sigmoid_derivative_in_output_is_a_times_one_minus_a():
    la = local_activation("sigmoid")
    assert sp.expand(la.derivative_in_output) == sp.expand(a * (1 - a))
    assert la.backward_uses_output
    assert la.backward == la.derivative_in_output


def test_sigmoid_derivative_in_z_is_sigma_times_one_minus_sigma():
    la = local_activation("sigmoid")
    assert numerically_equal(la.derivative, SIGMA * (1 - SIGMA))
    assert numerically_equal(la.derivative, sp.diff(SIGMA, z))
    # written in the named primitive sigma(z), so no bare exp(z) reaches the code
    assert la.derivative.has(sigmoid)
    assert sp.expand(la.derivative - sigmoid(z) * (1 - sigmoid(z))) == 0


def test_tanh_derivative_is_one_minus_a_squared():
    la = local_activation("tanh")
    assert sp.expand(la.derivative_in_output - (1 - a**2)) == 0
    assert numerically_equal(la.derivative, 1 - sp.tanh(z)**2)


def test_relu_derivative_is_zero_at_zero_and_one_for_positive_z():
    la = local_activation("relu")
    d = la.derivative
    assert isinstance(d, sp.Piecewise)
    assert d.subs(z, 0) == 0  # as the documents set ReLU'(0); SymPy's Heaviside gives 1/2
    assert d.subs(z, 1) == 1
    assert d.subs(z, -sp.Rational(5, 2)) == 0
    assert not d.has(sp.Heaviside)
    out = la.derivative_in_output
    assert out.subs(a, 0) == 0 and out.subs(a, sp.Rational(3, 2)) == 1


def test_leaky_relu_derivative_with_alpha_one_tenth():
    la = local_activation("leaky_relu", (("alpha", 0.1),))
    d = la.derivative
    tenth = sp.Rational(1, 10)  # the parameter is substituted as an exact rational
    assert d.subs(z, 0) == tenth
    assert d.subs(z, -1) == tenth
    assert d.subs(z, 2) == 1
    out = la.derivative_in_output
    assert out.subs(a, 0) == tenth and out.subs(a, -1) == tenth and out.subs(a, 2) == 1


@pytest.mark.parametrize("alpha,exact", [
    (0.6115, sp.Rational(1223, 2000)),  # nsimplify made this 2**(46/53)*3**(195/212)*...
    (0.333333333, sp.Rational(333333333, 10**9)),  # ... and this 1/3
    (0.01, sp.Rational(1, 100)),
])
def test_parameters_are_the_exact_decimals_of_the_spec(alpha, exact):
    la = local_activation("leaky_relu", (("alpha", alpha),))
    assert la.derivative.subs(z, -1) == exact
    assert la.derivative_in_output.subs(a, -1) == exact
    assert la.expr.subs(z, -2) == -2 * exact


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_derivative_in_output_is_a_plus_alpha_for_negative_a(alpha):
    la = local_activation("elu", (("alpha", alpha),))
    alpha_q = sp.nsimplify(alpha)
    out = la.derivative_in_output
    assert isinstance(out, sp.Piecewise)
    negative_piece, condition = out.args[0]
    assert sp.expand(negative_piece - (a + alpha_q)) == 0
    assert condition == (a <= 0)
    assert out.subs(a, -sp.Rational(1, 4)) == alpha_q - sp.Rational(1, 4)
    assert out.subs(a, 2) == 1
    # and in z: alpha e^z for z <= 0, 1 above
    d = la.derivative
    assert numerically_equal(d, alpha_q * sp.exp(z), points=[p for p in POINTS if p <= 0])
    assert d.subs(z, 3) == 1


def test_softplus_derivative_is_sigmoid_and_has_no_output_form():
    la = local_activation("softplus")
    assert la.derivative == sigmoid(z)
    assert la.derivative_in_output is None
    assert not la.backward_uses_output
    assert numerically_equal(la.derivative, SIGMA)
    assert numerically_equal(la.derivative, sp.diff(sp.log(1 + sp.exp(z)), z))


def test_swish_derivative_is_sigma_plus_z_sigma_one_minus_sigma():
    la = local_activation("swish")
    assert numerically_equal(la.derivative, SIGMA + z * SIGMA * (1 - SIGMA))
    assert same_expr(la.derivative, SIGMA + z * SIGMA * (1 - SIGMA))
    assert la.derivative_in_output is None


def test_gelu_derivative_is_Phi_plus_z_phi():
    la = local_activation("gelu")
    assert numerically_equal(la.derivative, PHI_CDF + z * PHI_PDF)
    assert sp.expand(la.derivative - (Phi(z) + z * phi(z))) == 0
    assert la.derivative_in_output is None


def test_identity_derivative_is_one():
    la = local_activation("identity")
    assert la.derivative == 1
    assert la.backward == 1


@pytest.mark.parametrize("name,params", ELEMENTWISE)
def test_no_derivative_contains_cosh_or_sinh(name, params):
    la = local_activation(name, params)
    for expr in (la.derivative, la.derivative_in_output, la.display):
        if expr is not None:
            assert not sp.sympify(expr).has(sp.cosh, sp.sinh), (name, expr)


@pytest.mark.parametrize("name,params", ELEMENTWISE)
def test_every_derivative_agrees_with_plain_diff(name, params):
    la = local_activation(name, params)
    reference = sp.diff(la.expr, z)
    assert numerically_equal(la.derivative, reference)
    if la.derivative_in_output is not None:  # the output form, with a = g(z) put back
        assert numerically_equal(la.derivative_in_output.subs(a, la.expr), reference)
    kinds = [step.kind for step in la.steps]
    assert kinds[:2] == [StepKind.DEFINITION, StepKind.DIFFERENTIATED]
    assert all(step.note for step in la.steps)  # each kind of step still says what it did


# ----------------------------------------------------------------------------- softmax

def test_softmax_jacobian_cases_and_quotient_rule():
    la = local_activation("softmax")
    assert la.vector and la.derivative is None
    jac = la.jacobian
    i, j, k, n = I.i, I.j, I.k, I.n
    assert sp.expand(jac.same - I.a[i] * (1 - I.a[i])) == 0
    assert sp.expand(jac.other + I.a[i] * I.a[j]) == 0
    assert sp.expand(jac.general - I.a[i] * (sp.KroneckerDelta(i, j) - I.a[j])) == 0
    # the pieces of the quotient rule
    assert jac.numerator == sp.exp(I.z[i])
    assert jac.denominator == sp.Sum(sp.exp(I.z[k]), (k, 1, n))
    assert sp.simplify(jac.d_numerator - sp.exp(I.z[i]) * sp.KroneckerDelta(i, j)) == 0
    assert jac.d_denominator == sp.exp(I.z[j])
    kinds = [step.kind for step in jac.steps]
    assert kinds == [StepKind.DEFINITION, StepKind.QUOTIENT_RULE, StepKind.CASE_SAME,
                     StepKind.CASE_SAME_IN_OUTPUTS, StepKind.CASE_OTHER,
                     StepKind.CASE_OTHER_IN_OUTPUTS]
    quotient = jac.steps[kinds.index(StepKind.QUOTIENT_RULE)]
    expected = (jac.d_numerator * jac.denominator - jac.numerator * jac.d_denominator) \
        / jac.denominator**2
    assert sp.simplify(quotient.rhs - expected) == 0
    assert quotient.lhs == sp.Derivative(I.a[i], I.z[j])


def test_softmax_jacobian_matches_diff_for_three_units():
    jac = local_activation("softmax").jacobian
    zs = sp.symbols("z1:4", real=True)
    values = dict(zip(zs, (sp.Rational(1, 3), -sp.Rational(2, 1), sp.Rational(5, 4))))
    S = sum(sp.exp(v) for v in zs)
    soft = [sp.exp(v) / S for v in zs]
    for r in range(3):
        for c in range(3):
            reference = sp.diff(soft[r], zs[c]).subs(values)
            form = jac.same if r == c else jac.other
            value = form.subs({I.i: r + 1, I.j: c + 1}).subs(
                {I.a[q + 1]: soft[q] for q in range(3)}).subs(values)
            assert abs(sp.N(reference - value, 30)) < 1e-25


# ----------------------------------------------------------------------------- output errors

def test_softmax_categorical_crossentropy_gives_a_minus_y_using_sum_y():
    out = local_output("categorical_crossentropy", "softmax")
    assert sp.expand(out.delta - (I.a[I.j] - I.y[I.j])) == 0
    assert out.uses_sum_y
    assert out.delta_steps[-1].kind is StepKind.ONE_HOT
    assert out.delta_steps[-1].rhs == out.delta


def test_sparse_categorical_is_the_same_as_categorical():
    dense = local_output("categorical_crossentropy", "softmax")
    sparse = local_output("sparse_categorical_crossentropy", "softmax")
    assert sparse.delta == dense.delta
    assert sparse.uses_sum_y
    assert sparse.per_example_logits == dense.per_example_logits


def test_sigmoid_binary_crossentropy_gives_a_minus_y():
    out = local_output("binary_crossentropy", "sigmoid")
    assert sp.expand(out.delta - (I.a[I.j] - I.y[I.j])) == 0
    assert not out.uses_sum_y


def test_identity_mse_gives_a_minus_y():
    out = local_output("mse", "identity")
    assert sp.expand(out.delta - (I.a[I.j] - I.y[I.j])) == 0
    assert out.per_example_logits is None  # no logarithm to stabilise


def test_sigmoid_mse_gives_a_minus_y_times_sigma_prime():
    out = local_output("mse", "sigmoid")
    aj, yj = I.a[I.j], I.y[I.j]
    assert sp.expand(out.delta - (aj - yj) * aj * (1 - aj)) == 0
    assert sp.expand(out.dL_da - (aj - yj)) == 0


def test_softmax_crossentropy_logits_form_is_logsumexp():
    form = local_output("categorical_crossentropy", "softmax").per_example_logits
    assert form is not None
    logs = form.atoms(sp.log)
    assert logs
    assert all(isinstance(f.args[0], sp.Sum) and isinstance(f.args[0].function, sp.exp)
               for f in logs)
    # and it is the loss: -sum_k y_k log softmax(z)_k for a one-hot y, n = 3
    zs = (sp.Rational(1, 2), -sp.Rational(3, 1), sp.Rational(7, 5))
    ys = (0, 1, 0)
    subs = {I.z[q + 1]: zs[q] for q in range(3)} | {I.y[q + 1]: ys[q] for q in range(3)}
    value = form.subs(I.n, 3).doit().subs(subs)
    S = sum(sp.exp(v) for v in zs)
    reference = -sum(y * sp.log(sp.exp(v) / S) for v, y in zip(zs, ys))
    assert abs(sp.N(value - reference, 30)) < 1e-25


def test_sigmoid_bce_logits_form_is_softplus_minus_y_z():
    form = local_output("binary_crossentropy", "sigmoid").per_example_logits
    assert form is not None and isinstance(form, sp.Sum)
    k = form.limits[0][0]
    assert sp.expand(form.function - (softplus(I.z[k]) - I.y[k] * I.z[k])) == 0
    assert not form.has(sp.log)
    # softplus(z) - y z = -(y log sigma(z) + (1 - y) log(1 - sigma(z)))
    y = sp.Symbol("y")
    for y_value in (0, 1):
        unit = (softplus(z) - y * z).subs(y, y_value)
        bce = -(y * sp.log(SIGMA) + (1 - y) * sp.log(1 - SIGMA)).subs(y, y_value)
        assert numerically_equal(unit, bce)


# ----------------------------------------------------------------------------- dense layer

def test_dense_partials_in_index_form():
    dense = dense_partials()
    i, j, k = I.i, I.j, I.k
    assert dense.dz_dW.rhs == sp.KroneckerDelta(i, j) * I.x[k]
    assert dense.dz_dx.rhs == I.W[i, k]
    assert dense.dz_db.rhs == sp.KroneckerDelta(i, j)
    assert dense.dz_dW.lhs == sp.Derivative(I.z[i], I.W[j, k])
    for step in (dense.dz_dW, dense.dz_dx, dense.dz_db):  # no range guards left over
        assert not step.rhs.has(sp.Piecewise, sp.Sum)


# ----------------------------------------------------------------------------- registry

def test_unknown_activation_suggests_the_nearest_name():
    with pytest.raises(UnknownName) as info:
        ACTIVATIONS.canonical("rleu")
    assert info.value.suggestion == "relu"
    assert "did you mean 'relu'" in str(info.value)
    assert "sigmoid" in str(info.value)  # lists the known names
    with pytest.raises(UnknownName):
        local_activation("rleu")
    with pytest.raises(KeyError):  # UnknownName is a KeyError, as a dict lookup would raise
        ACTIVATIONS["rleu"]


def test_unknown_loss_suggests_the_nearest_name():
    with pytest.raises(UnknownName) as info:
        LOSSES.canonical("binary_crossentropi")
    assert info.value.suggestion == "binary_crossentropy"


@pytest.mark.parametrize("alias,name", [("linear", "identity"), ("silu", "swish")])
def test_aliases_resolve(alias, name):
    assert alias in ACTIVATIONS
    assert ACTIVATIONS.canonical(alias) == name
    assert ACTIVATIONS[alias] is ACTIVATIONS[name]
    assert alias not in ACTIVATIONS.names()
    assert local_activation(alias).derivative == local_activation(name).derivative


@pytest.mark.parametrize("name", ["sign", "step"])
def test_sign_and_step_are_refused_with_a_reason(name):
    reason = ACTIVATIONS.refused_reason(name)
    assert reason and "zero almost everywhere" in reason
    assert name not in ACTIVATIONS
    text = textwrap.dedent(f"""\
        name: net
        input: 2
        layers:
          - {{units: 2, activation: {name}}}
          - {{units: 2, activation: softmax}}
        loss: categorical_crossentropy
        """)
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "net.yaml")
    assert reason in str(info.value)
    assert info.value.line == 4


def test_activations_are_declared_once():
    with pytest.raises(ValueError, match="declared twice"):
        ACTIVATIONS.add("relu", ACTIVATIONS["relu"])
    with pytest.raises(ValueError, match="declared twice"):
        ACTIVATIONS.add("silu", ACTIVATIONS["swish"])


# ----------------------------------------------------------------------------- one place

def _mish(x):
    return x * sp.tanh(sp.log(1 + sp.exp(x)))


@pytest.fixture
def mish():
    """Declare mish for one test; the registry then removes it and empties the caches."""
    declaration = Activation("mish", r"\operatorname{mish}", _mish, init="he")
    with ACTIVATIONS.temporarily("mish", declaration):
        yield declaration


def test_adding_an_activation_is_one_declaration(mish):
    la = local_activation("mish")
    sp_z = sp.log(1 + sp.exp(z))
    hand = sp.tanh(sp_z) + z * (1 - sp.tanh(sp_z)**2) * SIGMA
    assert numerically_equal(la.derivative, hand)
    assert la.derivative_in_output is None  # not invertible piece by piece
    assert not la.derivative.has(sp.cosh, sp.sinh)

    A = lambda name: ActivationSpec(name)  # noqa: E731
    spec = NetSpec("mish_net", 2, (LayerSpec(3, A("mish")), LayerSpec(2, A("softmax"))),
                   "categorical_crossentropy")
    derivation = derive(spec)
    assert derivation.layers[0].activation.name == "mish"
    report = prove_spec(spec)
    assert report.ok, report.summary()

    out = NetSpec("mish_out", 2, (LayerSpec(2, A("tanh")), LayerSpec(2, A("mish"))), "mse")
    report = prove_spec(out)
    assert report.ok, report.summary()

    # the spec reader knows it too, with nothing else changed
    loaded = load_spec_text(textwrap.dedent("""\
        name: net
        input: 2
        layers:
          - {units: 3, activation: mish}
          - {units: 2, activation: softmax}
        loss: categorical_crossentropy
        """), "net.yaml")
    assert loaded.layers[0].activation.name == "mish"


def test_temporary_activation_is_gone_afterwards():
    # runs after the fixture's test in file order: the registry is as shipped
    assert "mish" not in ACTIVATIONS
    assert ACTIVATIONS.names() == SHIPPED_ACTIVATIONS
