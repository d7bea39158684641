"""The Derivation's structure for the seed 001 network (784-128-64-10, ReLU/ReLU/softmax, CE).

Built from ``derive.netspec`` directly (no YAML), so these tests exercise ``derive`` alone.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import sympy as sp

from derive.activations import ACTIVATIONS
from derive.derivation import (M, W_ENTRY, Columnwise, Derivation, Elementwise, MatrixDef,
                               derive)
from derive.local import A_SYM, INDEX, Z_SYM
from derive.netspec import ActivationSpec, LayerSpec, NetSpec, Regularization
from derive.optimizers import VARIANTS
from derive.roles import Role, SymbolRole

SIZES = (784, 128, 64, 10)
# every element-wise activation, each parameter set away from its default (0.2 where allowed)
ELEMENTWISE = [
    ActivationSpec(name, tuple(sorted((key, 0.2 if p.check(0.2) else p.default)
                                      for key, p in ACTIVATIONS[name].params.items())))
    for name in ACTIVATIONS.names() if not ACTIVATIONS[name].vector
]


def mnist_spec(**changes) -> NetSpec:
    spec = NetSpec(
        "mnist_mlp", 784,
        (LayerSpec(128, ActivationSpec("relu")), LayerSpec(64, ActivationSpec("relu")),
         LayerSpec(10, ActivationSpec("softmax"))),
        "categorical_crossentropy")
    return dataclasses.replace(spec, **changes)


@pytest.fixture(scope="module")
def mnist() -> Derivation:
    return derive(mnist_spec())


@pytest.fixture(scope="module")
def mnist_l2() -> Derivation:
    return derive(mnist_spec(regularization=Regularization(l2=0.0001)))


@pytest.fixture(scope="module")
def mnist_l1() -> Derivation:
    return derive(mnist_spec(regularization=Regularization(l1=0.001, l2=0.0)))


# ----------------------------------------------------------------------------- shapes

def test_layers_and_sizes(mnist):
    assert mnist.layer_sizes == SIZES
    assert [layer.index for layer in mnist.layers] == [1, 2, 3]
    assert [layer.is_output for layer in mnist.layers] == [False, False, True]
    assert [layer.activation.name for layer in mnist.layers] == ["relu", "relu", "softmax"]
    assert mnist.X.shape == (784, M) and mnist.X.name == "A0"
    assert mnist.Y.shape == (10, M)


def test_weight_shapes_are_n_l_by_n_l_minus_1(mnist):
    for layer, (n_prev, n) in zip(mnist.layers, itertools.pairwise(SIZES)):
        assert layer.W.shape == (n, n_prev)
        assert layer.b.shape == (n, 1)
        assert layer.Z.shape == layer.A.shape == layer.delta.shape == (n, M)
        assert layer.A_prev.shape == (n_prev, M)
        assert (layer.units, layer.fan_in) == (n, n_prev)


def test_gradient_shapes_equal_parameter_shapes(mnist_l2):
    for layer in mnist_l2.layers:
        for grad, param in ((layer.grad_W, layer.W), (layer.grad_b, layer.b)):
            assert grad.param == param
            assert grad.shape == param.shape
            assert grad.target.shape == param.shape
            assert grad.formula.shape == param.shape  # the matrix formula itself checks out
            assert grad.per_example.shape == param.shape
            assert grad.target.name == "d" + param.name


def test_forward_definitions(mnist):
    forward = mnist.forward
    assert len(forward) == 6
    previous = mnist.X
    for layer in mnist.layers:
        assert isinstance(layer.z_def, MatrixDef)
        assert layer.z_def.target == layer.Z
        assert layer.z_def.expr == layer.W * previous + layer.b * sp.OneMatrix(M, 1).T
        assert layer.A_prev == previous
        previous = layer.A
    hidden, output = mnist.layers[0], mnist.layers[-1]
    assert isinstance(hidden.a_def, Elementwise) and hidden.a_def.inputs == ((Z_SYM, hidden.Z),)
    assert isinstance(output.a_def, Columnwise)
    assert output.a_def.inputs == ((INDEX.z, output.Z),)


def test_regularization_strengths_are_the_exact_decimals_of_the_spec():
    derivation = derive(mnist_spec(regularization=Regularization(l1=0.333333333, l2=0.602)))
    assert derivation.lambda1 == sp.Rational(333333333, 10**9)  # not 1/3
    assert derivation.lambda2 == sp.Rational(301, 500)  # not 2*2**(75/247)*3**(593/741)*...
    assert derivation.lambda2.is_Rational


# ----------------------------------------------------------------------------- backward

def test_hidden_delta_is_the_recurrence(mnist):
    for layer, above in zip(mnist.layers[:-1], mnist.layers[1:]):
        definition = layer.delta_def
        assert isinstance(definition, MatrixDef)
        assert definition.target == layer.delta
        assert isinstance(definition.expr, sp.HadamardProduct)
        assert set(definition.expr.args) == {above.W.T * above.delta, layer.G}
        assert definition.expr.shape == layer.delta.shape
        # G_l = g_l'(Z_l), entry by entry; ReLU' read from the cached output A_l
        assert layer.g_def.target == layer.G
        assert layer.g_def.expr == layer.activation.backward
        assert layer.g_def.inputs == ((A_SYM, layer.A),)


def test_output_delta_is_a_minus_y_column_by_column(mnist):
    output = mnist.layers[-1]
    definition = output.delta_def
    assert isinstance(definition, Columnwise)
    assert definition.target == output.delta
    assert sp.expand(definition.expr - (INDEX.a[INDEX.j] - INDEX.y[INDEX.j])) == 0
    assert dict(definition.inputs) == {INDEX.a: output.A, INDEX.y: mnist.Y}
    assert output.G is None and output.g_def is None  # softmax: no element-wise g'


def test_gradient_formulas_without_regularization(mnist):
    for layer in mnist.layers:
        expected = (sp.S.One / M) * layer.delta * layer.A_prev.T
        assert layer.grad_W.data_term == expected
        assert layer.grad_W.formula == expected
        assert layer.grad_W.regularization == ()
        assert layer.grad_b.formula == (sp.S.One / M) * layer.delta * sp.OneMatrix(M, 1)
        # one example: delta a^T and delta
        assert layer.grad_W.per_example == (
            sp.MatrixSymbol(layer.delta.name, layer.units, 1)
            * sp.MatrixSymbol(layer.A_prev.name, layer.fan_in, 1).T)
        assert layer.grad_b.per_example == sp.MatrixSymbol(layer.delta.name, layer.units, 1)
    assert mnist.lambda1 == 0 and mnist.lambda2 == 0
    assert mnist.regularization_defs == ()


def test_one_over_m_is_exact(mnist):
    data_term = mnist.layers[0].grad_W.data_term
    assert not data_term.has(sp.Float)
    assert data_term.has(1 / M)


def test_l2_adds_lambda2_W_to_dW_only(mnist_l2):
    lambda2 = mnist_l2.lambda2
    assert lambda2 == sp.Rational(1, 10000)
    for layer in mnist_l2.layers:
        formula = layer.grad_W.formula
        assert isinstance(formula, sp.MatAdd)
        assert lambda2 * layer.W in formula.args
        assert (sp.S.One / M) * layer.delta * layer.A_prev.T in formula.args
        assert dict(layer.grad_W.regularization) == {"l2": lambda2 * layer.W}
        assert layer.grad_b.regularization == ()  # biases are not regularised
        assert not layer.grad_b.formula.has(layer.b)


def test_l1_adds_lambda1_sign_W(mnist_l1):
    lambda1 = mnist_l1.lambda1
    assert lambda1 == sp.Rational(1, 1000)
    sign_defs = mnist_l1.regularization_defs
    assert len(sign_defs) == 3
    for layer, sign_def in zip(mnist_l1.layers, sign_defs):
        assert sign_def.target.shape == layer.W.shape
        assert sign_def.inputs[0][1] == layer.W
        assert isinstance(sign_def.expr, sp.sign)
        assert dict(layer.grad_W.regularization) == {"l1": lambda1 * sign_def.target}
    definitions = mnist_l1.definitions
    assert all(definitions.count(d) == 1 for d in sign_defs)


# ----------------------------------------------------------------------------- roles

def test_every_symbol_has_its_role_and_layer(mnist_l1):
    d = mnist_l1
    roles = d.roles
    assert roles[d.X] == SymbolRole(Role.INPUT, 0)
    assert roles[d.Y] == SymbolRole(Role.TARGET, 3)
    for layer in d.layers:
        l = layer.index
        expected = {layer.W: Role.WEIGHT, layer.b: Role.BIAS, layer.Z: Role.PREACTIVATION,
                    layer.A: Role.ACTIVATION, layer.delta: Role.ERROR, layer.sign: Role.SIGN,
                    layer.grad_W.target: Role.WEIGHT_GRADIENT,
                    layer.grad_b.target: Role.BIAS_GRADIENT}
        if layer.G is not None:
            expected[layer.G] = Role.LOCAL_DERIVATIVE
        for symbol, role in expected.items():
            assert roles[symbol] == SymbolRole(role, l), symbol
    assert [roles[n] for n in d.widths] == [SymbolRole(Role.WIDTH, l) for l in range(4)]
    assert roles[INDEX.a] == SymbolRole(Role.ACTIVATION, None)  # index form: any layer
    # every matrix the definitions name has a role, in any of its shapes
    for definition in d.definitions:
        assert definition.target in roles
        for symbol in definition.expr.atoms(sp.MatrixSymbol):
            assert d.role_of(symbol) is not None, symbol
    one_example = d.layers[1].grad_W.per_example  # delta2 (64 x 1) A1^T (1 x 128)
    assert {d.role_of(s) for s in one_example.atoms(sp.MatrixSymbol)} == {
        SymbolRole(Role.ERROR, 2), SymbolRole(Role.ACTIVATION, 1)}


def test_no_sign_matrix_without_an_l1_penalty(mnist_l2):
    assert all(layer.sign is None for layer in mnist_l2.layers)
    assert Role.SIGN not in {role for role, _ in mnist_l2.roles.values()}


# ----------------------------------------------------------------------------- the objective

def test_objective_is_the_mean_loss_plus_the_penalties():
    spec = mnist_spec(input=2, layers=(LayerSpec(2, ActivationSpec("tanh")),
                                       LayerSpec(2, ActivationSpec("softmax"))),
                      regularization=Regularization(l1=0.25, l2=0.5))
    objective = derive(spec).objective
    assert [p.name for p in objective.penalties] == ["l2", "l1"]
    assert [p.derivative for p in objective.penalties] == [W_ENTRY, sp.sign(W_ENTRY)]
    outputs = sp.Matrix([[sp.Rational(1, 4), sp.Rational(1, 2)],
                         [sp.Rational(3, 4), sp.Rational(1, 2)]])
    targets = sp.Matrix([[0, 1], [1, 0]])
    W1, W2 = sp.Matrix([[1, -2], [3, 0]]), sp.Matrix([[-1, 1], [2, 2]])
    weights = list(W1) + list(W2)
    by_hand = (-sp.log(sp.Rational(3, 4)) - sp.log(sp.Rational(1, 2))) / 2 \
        + sp.Rational(1, 2) / 2 * sum(w**2 for w in weights) \
        + sp.Rational(1, 4) * sum(abs(w) for w in weights)
    assert sp.simplify(objective.value(outputs, targets, weights) - by_hand) == 0
    # the symbolic form, with the example losses and the weight matrices put in
    losses = {objective.example_loss[i + 1]: -sp.log(outputs[:, i].dot(targets[:, i]))
              for i in range(2)}
    form = objective.form.subs(M, 2).doit().xreplace(
        {**losses, objective.weights[0]: sp.ImmutableMatrix(W1),
         objective.weights[1]: sp.ImmutableMatrix(W2)}).doit()
    assert sp.simplify(form - by_hand) == 0


def test_unregularised_objective_has_no_penalty(mnist):
    assert mnist.objective.penalties == ()
    assert mnist.objective.form == mnist.objective.mean


def test_backward_order_is_output_first(mnist):
    targets = [d.target.name for d in mnist.backward]
    assert targets.index("delta3") < targets.index("G2") < targets.index("delta2") \
        < targets.index("G1") < targets.index("delta1")
    assert set(targets[-6:]) == {"dW1", "db1", "dW2", "db2", "dW3", "db3"}
    everything = [d.target.name for d in mnist.definitions]
    assert everything[:6] == ["Z1", "A1", "Z2", "A2", "Z3", "A3"]
    assert len(everything) == len(set(everything))


def test_update_rules_for_the_three_variants(mnist):
    rules = {rule.optimizer: rule for rule in mnist.updates}
    assert list(rules) == VARIANTS.names()
    for rule in rules.values():
        theta, new = rule.rule
        assert rule.title and rule.batch
        eta = mnist.learning_rate
        grad, = new.free_symbols - {theta, eta}
        assert sp.expand(new - (theta - eta * grad)) == 0  # a step against the gradient
    assert "m = 1" in rules["sgd"].batch


# ----------------------------------------------------------------------------- chain rule

def test_chain_factors_for_dW1(mnist):
    chain = mnist.layers[0].grad_W.chain
    assert [(f.numerator, f.denominator) for f in chain] == [
        ("L", "A3"), ("A3", "Z3"), ("Z3", "A2"), ("A2", "Z2"), ("Z2", "A1"), ("A1", "Z1"),
        ("Z1", "W1")]
    layers = mnist.layers
    values = {(f.numerator, f.denominator): f.value for f in chain}
    assert values[("L", "A3")] == mnist.output.dL_da
    assert values[("A3", "Z3")] == layers[2].activation.jacobian.general
    assert values[("Z3", "A2")] == layers[2].W
    assert values[("A2", "Z2")] == layers[1].G
    assert values[("Z2", "A1")] == layers[1].W
    assert values[("A1", "Z1")] == layers[0].G
    assert values[("Z1", "W1")] == mnist.X
    # each factor's denominator is the next one's numerator: an unbroken chain
    for left, right in zip(chain, chain[1:]):
        assert left.denominator == right.numerator


def test_chain_factors_for_the_other_parameters(mnist):
    names = lambda grad: [(f.numerator, f.denominator) for f in grad.chain]  # noqa: E731
    l1, l2, l3 = mnist.layers
    assert names(l1.grad_b)[-1] == ("Z1", "b1")
    assert names(l1.grad_b)[:-1] == names(l1.grad_W)[:-1]
    assert names(l2.grad_W) == [("L", "A3"), ("A3", "Z3"), ("Z3", "A2"), ("A2", "Z2"),
                                ("Z2", "W2")]
    assert names(l3.grad_W) == [("L", "A3"), ("A3", "Z3"), ("Z3", "W3")]
    assert names(l3.grad_b) == [("L", "A3"), ("A3", "Z3"), ("Z3", "b3")]
    assert l3.grad_b.chain[-1].value == 1


# ----------------------------------------------------------------------------- deep stacks

def test_hundred_layer_mixed_stack_derives():
    layers = tuple(LayerSpec(4 + l % 3, ELEMENTWISE[l % len(ELEMENTWISE)]) for l in range(99))
    spec = NetSpec("deep100", 5, layers + (LayerSpec(3, ActivationSpec("softmax")),),
                   "categorical_crossentropy", Regularization(l1=0.001, l2=0.01))
    derivation = derive(spec)
    assert len(derivation.layers) == 100
    assert derivation.layers[-1].is_output
    assert len(derivation.gradients) == 200
