"""The proof: the Derivation's matrix formulas against SymPy's diff of the expanded loss.

Right derivations must pass for every activation and every valid output/loss pair; wrong
formulas planted into a Derivation (seed 000's eq. 6, a wrong sigma', a missing 1/m, a
doubled output error) must be rejected, naming the parameters they make wrong.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sympy as sp

from derive.activations import ACTIVATIONS
from derive.derivation import M, Columnwise, Derivation, Elementwise, derive
from derive.local import A_SYM
from derive.losses import LOSSES
from derive.netspec import ActivationSpec, LayerSpec, NetSpec, Regularization
from derive.proof import MAX_WIDTH, prove, prove_spec, shrink
from derive.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def act(name: str, alpha: float | None = None) -> ActivationSpec:
    return ActivationSpec(name, (("alpha", alpha),) if alpha is not None else ())


def declared(name: str) -> ActivationSpec:
    """A registered activation with each parameter set away from its default (0.2 if allowed)."""
    params = ACTIVATIONS[name].params
    return ActivationSpec(name, tuple(sorted(
        (key, 0.2 if p.check(0.2) else p.default) for key, p in params.items())))


HIDDEN = [declared(name) for name in ACTIVATIONS.names() if not ACTIVATIONS[name].vector]
REGULARIZATION = [(0.0, 0.0), (0.0, 0.1), (0.05, 0.0), (0.1, 0.1), (0.0, 0.25), (0.0, 0.01)]


def _valid_pairs():
    """Every (output activation, loss, output units) the spec accepts, from the registries:
    a loss that needs probabilities only after a probability activation, none that scores
    units independently after a vector activation; binary losses on 1 unit and on 2
    (multi-label), categorical ones on 2 or 3 units."""
    for loss_name in LOSSES.names():
        loss = LOSSES[loss_name]
        for name in ACTIVATIONS.names():
            declaration = ACTIVATIONS[name]
            if (loss.needs_probabilities and not declaration.is_probability) or \
                    (loss.unit_outputs_reason and declaration.vector):
                continue
            units = (1, 2) if loss.labels == "binary" else (3 if declaration.vector else 2,)
            for n in units:
                yield declared(name), loss_name, n


# every valid (output activation, loss) pair, with a rotation of regularisations, and
# leaky ReLU's alpha written with 4 decimals (read exactly: 1223/2000, not a nearby float)
OUTPUTS = [(out, loss, units) + REGULARIZATION[k % len(REGULARIZATION)]
           for k, (out, loss, units) in enumerate(_valid_pairs())]
OUTPUTS.append((act("leaky_relu", 0.6115), "mse", 2, 0.0, 0.602))


def _pair_cases():
    """Each output/loss pair with one hidden activation, in rotation (all 9 appear)."""
    cases = []
    for number, (out, loss, units, l1, l2) in enumerate(OUTPUTS):
        hidden = HIDDEN[(number + 3) % len(HIDDEN)]
        spec = NetSpec(
            f"pair{number}", 2 + number % 2,
            (LayerSpec(3 - number % 2, hidden), LayerSpec(units, out)),
            loss, Regularization(l1=l1, l2=l2))
        reg = f"-l1{l1}" * bool(l1) + f"-l2{l2}" * bool(l2)
        cases.append(pytest.param(spec, id=f"{hidden.name}-{out.name}-{loss}{reg}"))
    return cases


def test_the_rotation_covers_every_hidden_activation():
    hidden = {case.values[0].layers[0].activation for case in _pair_cases()}
    assert hidden == set(HIDDEN)


# ----------------------------------------------------------------------------- right ones pass

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_spec_proves(path):
    spec = load_spec(path)
    report = prove_spec(spec)
    assert report.ok, report.summary()
    if spec.image is None:
        assert max(report.instance) <= MAX_WIDTH
    else:  # images keep their C·H·W widths: <= 2 channels on the smallest image that fits
        assert "images reduced to" in report.note and max(report.instance) < spec.input
    assert report.parameters > 0 and report.points >= 3


def test_examples_are_found():
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("spec", _pair_cases())
def test_hidden_and_output_pairs_prove(spec):
    report = prove_spec(spec)
    assert report.ok, report.summary()
    assert report.instance == spec.layer_sizes  # small already: nothing shrunk
    assert report.note == ""
    n = spec.layer_sizes
    assert report.parameters == sum(a * b + a for b, a in zip(n, n[1:]))
    assert "agree with SymPy's diff" in report.summary()


def test_deeper_mixed_stack_with_regularization_proves():
    spec = NetSpec(
        "deeper", 2,
        (LayerSpec(2, act("gelu")), LayerSpec(2, act("leaky_relu", 0.2)),
         LayerSpec(2, act("tanh")), LayerSpec(3, act("softmax"))),
        "categorical_crossentropy", Regularization(l1=0.01, l2=0.1))
    report = prove_spec(spec)
    assert report.ok, report.summary()
    assert report.instance == (2, 2, 2, 2, 3)
    assert report.activations == ("gelu", "leaky_relu", "tanh", "softmax")


# ----------------------------------------------------------------------------- deep stacks

def _deep(depth: int, activations: list[ActivationSpec]) -> NetSpec:
    hidden = tuple(LayerSpec(5, activations[l % len(activations)]) for l in range(depth - 1))
    return NetSpec(f"deep{depth}", 6, hidden + (LayerSpec(4, act("softmax")),),
                   "categorical_crossentropy")


def test_deep_spec_proves_on_a_shortened_instance():
    spec = _deep(12, [act("tanh"), act("sigmoid")])
    small, note = shrink(spec)
    assert small.depth == 3
    assert [layer.activation.name for layer in small.layers] == ["tanh", "sigmoid", "softmax"]
    report = prove_spec(spec)
    assert report.ok, report.summary()
    assert "shortened from 12 layers" in report.note
    assert report.note == note
    assert report.instance == (3, 3, 3, 3)
    assert "shortened" in report.summary()


@pytest.mark.slow
def test_deep_spec_with_three_distinct_activations_proves():
    report = prove_spec(_deep(12, [act("relu"), act("tanh"), act("sigmoid")]))
    assert report.ok, report.summary()
    assert "shortened from 12 layers to 4" in report.note
    assert report.instance == (3, 3, 3, 3, 3)


def test_shrink_keeps_depth_activations_and_output_of_a_shallow_spec():
    spec = load_spec(EXAMPLES[0].parent / "seed001_mnist.yaml")
    small, note = shrink(spec)
    assert small.layer_sizes == (3, 3, 3, 3)
    assert [layer.activation for layer in small.layers] == \
        [layer.activation for layer in spec.layers]
    assert small.loss == spec.loss
    assert note == "; widths reduced to at most 3"
    unchanged = dataclasses.replace(spec, input=2, layers=tuple(
        LayerSpec(2, layer.activation) for layer in spec.layers))
    assert shrink(unchanged) == (unchanged, "")


# ----------------------------------------------------------------------------- planted errors

def _replace_layer(derivation: Derivation, index: int, **changes) -> Derivation:
    layers = tuple(dataclasses.replace(layer, **changes) if layer.index == index else layer
                   for layer in derivation.layers)
    return dataclasses.replace(derivation, layers=layers)


@pytest.fixture(scope="module")
def seed000():
    """Seed 000's 6-9-4 ReLU/softmax CE network, shrunk to its proof instance, derived."""
    small, note = shrink(load_spec(EXAMPLES[0].parent / "seed000_shallow.yaml"))
    assert small.layer_sizes == (3, 3, 3)
    return derive(small), note


def test_seed000_derivation_proves(seed000):
    derivation, note = seed000
    report = prove(derivation, note=note)
    assert report.ok, report.summary()


def test_seed000_eq6_relu_of_backpropagated_error_is_rejected(seed000):
    """The document's dJ/dW1 = ReLU(W2^T (y_hat - y)) x^T: ReLU instead of o ReLU'(z1)."""
    derivation, note = seed000
    layer1, layer2 = derivation.layers
    u = sp.Symbol("u", real=True)
    eq6 = Elementwise(layer1.delta, sp.Piecewise((0, u <= 0), (u, True)),
                      ((u, layer2.W.T * layer2.delta),))
    report = prove(_replace_layer(derivation, 1, delta_def=eq6), note=note)
    assert not report.ok
    wrong = report.wrong_quantities
    assert "dW1" in wrong and "db1" in wrong
    assert "dW2" not in wrong and "db2" not in wrong
    assert set(wrong) == {"dW1", "db1"}  # the forward pass is untouched
    assert "dW1" in report.summary()
    assert "FAILED" in report.summary()


def test_missing_one_over_m_is_rejected(seed000):
    derivation, note = seed000
    layer2 = derivation.layers[1]
    grad = layer2.grad_W
    without_mean = dataclasses.replace(grad, data_term=M * grad.data_term)  # delta A^T alone
    report = prove(_replace_layer(derivation, 2, grad_W=without_mean), note=note)
    assert report.wrong_quantities == ("dW2",)
    assert "dW2" in report.summary()


def test_doubled_output_error_is_rejected(seed000):
    derivation, note = seed000
    output = derivation.layers[-1]
    doubled = dataclasses.replace(output.delta_def, expr=2 * output.delta_def.expr)
    assert isinstance(doubled, Columnwise)
    report = prove(_replace_layer(derivation, output.index, delta_def=doubled), note=note)
    wrong = report.wrong_quantities
    assert "dW2" in wrong and "db2" in wrong
    assert set(wrong) <= {"dW1", "db1", "dW2", "db2"}  # gradients only, not Z or A
    assert "dW2" in report.summary()


def test_wrong_sigmoid_derivative_is_rejected():
    """sigma' = a(1 + a) instead of a(1 - a) in the hidden layer of seed 003's 4-4-3 net."""
    small, note = shrink(load_spec(EXAMPLES[0].parent / "seed003_multiclass.yaml"))
    derivation = derive(small)
    hidden = derivation.layers[0]
    assert hidden.activation.name == "sigmoid"
    assert hidden.g_def.inputs == ((A_SYM, hidden.A),)
    wrong_g = dataclasses.replace(hidden.g_def, expr=A_SYM * (1 + A_SYM))
    report = prove(_replace_layer(derivation, 1, g_def=wrong_g), note=note)
    assert set(report.wrong_quantities) == {"dW1", "db1"}
    assert "dW1" in report.summary()
    assert prove(derivation, note=note).ok  # and the right one passes


def test_wrong_regularization_term_is_rejected():
    """lambda2 W / 2 instead of lambda2 W: only the weight gradients are wrong."""
    spec = NetSpec("reg", 2, (LayerSpec(2, act("tanh")), LayerSpec(2, act("sigmoid"))), "mse",
                   Regularization(l2=0.5))
    derivation = derive(spec)
    layer = derivation.layers[0]
    halved = dataclasses.replace(layer.grad_W, regularization=(
        ("l2", derivation.lambda2 / 2 * layer.W),))
    report = prove(_replace_layer(derivation, 1, grad_W=halved))
    assert report.wrong_quantities == ("dW1",)


# ----------------------------------------------------------------------------- the reference

def _two_hidden(hidden: ActivationSpec) -> NetSpec:
    """hidden -> hidden -> softmax on 2-2-2-3: two of the layer composed, small enough for
    sympy.diff of the whole expression."""
    return NetSpec(f"ref_{hidden.name}", 2, (LayerSpec(2, hidden), LayerSpec(2, hidden),
                                             LayerSpec(3, act("softmax"))),
                   "categorical_crossentropy", Regularization(l1=0.05, l2=0.1))


@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda a: a.name)
def test_graph_reference_gives_the_values_of_sympy_diff(hidden):
    """The fast reference (SymPy's rules node by node over the expression graph) and
    sympy.diff of the whole expanded loss give the same exact values: same verdicts, the
    same mismatches with the same numbers for a planted wrong derivative."""
    derivation = derive(_two_hidden(hidden))
    first = derivation.layers[0]
    wrong = _replace_layer(derivation, 1, g_def=dataclasses.replace(
        first.g_def, expr=first.g_def.expr + sp.Rational(1, 3)))
    for candidate, right in ((derivation, True), (wrong, False)):
        fast, slow = (prove(candidate, points=2, reference=method)
                      for method in ("graph", "sympy.diff"))
        assert fast.ok == slow.ok == right, (fast.summary(), slow.summary())
        assert fast.mismatches == slow.mismatches
    assert set(fast.wrong_quantities) == {"dW1", "db1"}


def test_unknown_reference_is_refused():
    with pytest.raises(ValueError, match="graph"):
        prove(derive(_two_hidden(act("tanh"))), reference="guess")


# ----------------------------------------------------------------------------- budget, progress

def test_a_budget_stops_the_proof_and_says_what_it_covered():
    spec = _deep(12, [act("relu"), act("tanh"), act("sigmoid"), act("elu")])  # 2 instances
    report = prove_spec(spec, budget=0.0)
    assert not report.complete and not report.ok and not report.mismatches
    assert report.checked < report.planned
    summary = report.summary()
    assert "INCOMPLETE" in summary and "proof budget of 0 s" in summary
    assert f"of {report.planned} checks" in summary and "FAILED" not in summary


def test_without_a_budget_the_proof_makes_every_planned_check():
    spec = _deep(12, [act("relu"), act("tanh"), act("sigmoid"), act("elu")])
    seen = []
    report = prove_spec(spec, progress=seen.append)
    assert report.ok and report.complete
    assert report.checked == report.planned > 0
    assert report.instances_proved == report.instances_planned == 2
    assert seen and all("checks" in line for line in seen)


def test_a_planted_error_found_before_the_budget_ran_out_is_still_reported(seed000):
    derivation, note = seed000
    output = derivation.layers[-1]
    doubled = dataclasses.replace(output.delta_def, expr=2 * output.delta_def.expr)
    report = prove(_replace_layer(derivation, output.index, delta_def=doubled), note=note)
    assert "dW2" in report.wrong_quantities and not report.ok
