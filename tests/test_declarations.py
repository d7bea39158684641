"""Declarations the package does not ship, registered for a test: each derives, proves and
renders with nothing but its declaration.

The forms are the ones that stress the general machinery: mish (a composition with no
inverse), hard tanh written four ways (a 3-branch Piecewise, Max/Min, a Piecewise with an And
condition falling back to sign, one with an Or condition), and two losses: an
epsilon-insensitive one (a Piecewise on |a - y| with a dead zone) and a quantile (pinball) loss
written with Max and taking a parameter, tau, as Huber takes delta.

Other test modules reuse them: ``from test_declarations import declared, EXTRA_ACTIVATIONS``
and ``with declared(): ...``, or the ``extra_declarations`` fixture (import it into the
module).  ``Registry.temporarily`` removes every name afterwards and empties the caches of
derived pieces, so nothing leaks into the next test.
"""

from __future__ import annotations

import shutil
import textwrap
from contextlib import ExitStack, contextmanager
from typing import Iterator

import pytest
import sympy as sp

from derive.activations import ACTIVATIONS, Activation, Param
from derive.derivation import derive
from derive.errors import SpecError
from derive.latex import render_document, write_latex
from derive.local import A_SYM, INDEX, Y_SYM, Z_SYM, StepKind, local_activation, local_output
from derive.losses import LOSSES, Loss
from derive.netspec import ActivationSpec, LayerSpec, NetSpec
from derive.primitives import from_primitives
from derive.proof import prove_spec
from derive.registry import Registry, UnknownName
from derive.spec import load_spec_text

z = Z_SYM
HALF = sp.Rational(1, 2)


def _epsilon_insensitive(a, y):
    """0 within 1/10 of the target, |a - y| - 1/10 beyond (support vector regression's)."""
    r, epsilon = a - y, sp.Rational(1, 10)
    return sp.Piecewise((0, sp.Abs(r) <= epsilon), (sp.Abs(r) - epsilon, True))


def _pinball(a, y, tau):
    """The quantile loss: tau (y - a) above the output, (1 - tau)(a - y) below it."""
    r = y - a
    return sp.Max(tau * r, (tau - 1) * r)


HARD_TANH = dict(output_interval=(-1.0, 1.0))
EXTRA_ACTIVATIONS: dict[str, Activation] = {
    "mish": Activation("mish", r"\operatorname{mish}",
                       lambda x: x * sp.tanh(sp.log(1 + sp.exp(x))), init="he"),
    "hard_tanh": Activation(
        "hard_tanh", r"\operatorname{hardtanh}",
        lambda x: sp.Piecewise((-1, x < -1), (x, x <= 1), (1, True)), **HARD_TANH),
    "hard_tanh_max": Activation(
        "hard_tanh_max", r"\operatorname{hardtanh}_{\max}",
        lambda x: sp.Max(-1, sp.Min(1, x)), **HARD_TANH),
    "hard_tanh_and": Activation(
        "hard_tanh_and", r"\operatorname{hardtanh}_{\wedge}",
        lambda x: sp.Piecewise((x, (x > -1) & (x < 1)), (sp.sign(x), True)), **HARD_TANH),
    "hard_tanh_or": Activation(
        "hard_tanh_or", r"\operatorname{hardtanh}_{\vee}",
        lambda x: sp.Piecewise((sp.sign(x), (x <= -1) | (x >= 1)), (x, True)), **HARD_TANH),
}
EXTRA_LOSSES: dict[str, Loss] = {
    "epsilon_insensitive": Loss("epsilon_insensitive", r"\mathcal{L}_{\epsilon}",
                                _epsilon_insensitive, labels="real"),
    "pinball": Loss("pinball", r"\mathcal{L}_{\tau}", _pinball, labels="real",
                    params={"tau": Param(0.25, lambda t: 0 < t < 1, "a number with 0 < tau < 1",
                                         r"\tau")}),
}


@contextmanager
def declared(activations: dict[str, Activation] = EXTRA_ACTIVATIONS,
             losses: dict[str, Loss] = EXTRA_LOSSES) -> Iterator[tuple[str, ...]]:
    """The extra declarations registered for the ``with`` block; yields their names."""
    with ExitStack() as stack:
        for name, declaration in activations.items():
            stack.enter_context(ACTIVATIONS.temporarily(name, declaration))
        for name, declaration in losses.items():
            stack.enter_context(LOSSES.temporarily(name, declaration))
        yield (*activations, *losses)


@pytest.fixture
def extra_declarations():
    with declared() as names:
        yield names


def numerically_equal(lhs: sp.Expr, rhs: sp.Expr, points=(-3, -1.5, -0.5, 0.25, 0.75, 2)) -> bool:
    """lhs == rhs (in z) at points off every kink, to 20 digits."""
    difference = from_primitives(sp.sympify(lhs)) - from_primitives(sp.sympify(rhs))
    return all(abs(sp.N(difference.subs(z, sp.Rational(p)), 30)) < 1e-20 for p in points)


def _spec(name: str, hidden: tuple[str, ...], output: str, loss: str, units: int = 2) -> NetSpec:
    layers = tuple(LayerSpec(3, ActivationSpec(h)) for h in hidden)
    return NetSpec(name, 2, layers + (LayerSpec(units, ActivationSpec(output)),), loss)


# ----------------------------------------------------------------------------- the registry

def test_temporarily_declares_for_the_block_only():
    registry: Registry[str] = Registry("colour")
    registry.add("red", "R")
    calls = []
    registry.watch(lambda: calls.append(registry.names()))
    with registry.temporarily("green", "G", aliases=("verde",)) as item:
        assert item == "G" and registry["verde"] == "G" and "green" in registry
        with pytest.raises(ValueError, match="declared twice"):
            with registry.temporarily("red", "again"):
                pass  # pragma: no cover - refused on entry
    assert registry.names() == ["red"] and "verde" not in registry
    with pytest.raises(UnknownName):
        registry["verde"]
    assert calls == [["red", "green"], ["red"]]  # told on adding and on removing


def test_no_cached_piece_outlives_its_declaration():
    with ACTIVATIONS.temporarily("mish", EXTRA_ACTIVATIONS["mish"]):
        mish_prime = local_activation("mish").derivative
        local_output("mse", "mish")
    with pytest.raises(UnknownName):
        local_activation("mish")
    with pytest.raises(UnknownName):
        local_output("mse", "mish")
    other = Activation("mish", r"\operatorname{mish}", lambda x: x * sp.tanh(x))
    with ACTIVATIONS.temporarily("mish", other):  # the same name, another declaration
        derivative = local_activation("mish").derivative
        assert numerically_equal(derivative, sp.diff(z * sp.tanh(z), z))
        assert not numerically_equal(derivative, mish_prime)


def test_the_fixture_leaves_the_registries_as_shipped(extra_declarations):
    assert set(extra_declarations) == {*EXTRA_ACTIVATIONS, *EXTRA_LOSSES}
    assert all(name in ACTIVATIONS for name in EXTRA_ACTIVATIONS)
    assert all(name in LOSSES for name in EXTRA_LOSSES)


def test_after_the_fixture_nothing_extra_is_declared():
    # runs after the fixture's test in file order
    assert not any(name in ACTIVATIONS for name in EXTRA_ACTIVATIONS)
    assert not any(name in LOSSES for name in EXTRA_LOSSES)


# ----------------------------------------------------------------------------- local pieces

@pytest.mark.parametrize("name", EXTRA_ACTIVATIONS)
def test_each_extra_activation_differentiates(extra_declarations, name):
    la = local_activation(name)
    g = ACTIVATIONS[name].instantiate(z, {})
    assert numerically_equal(la.derivative, sp.diff(g, z).replace(
        lambda e: isinstance(e, sp.DiracDelta), lambda e: 0))
    assert not la.derivative.has(sp.DiracDelta, sp.re, sp.im)
    if la.derivative_in_output is not None:  # a rewrite in a is kept only where it is right
        assert numerically_equal(la.derivative_in_output.subs(A_SYM, g), la.derivative)


def test_hard_tanh_derivative_is_one_inside_and_zero_outside(extra_declarations):
    for name in ("hard_tanh", "hard_tanh_max", "hard_tanh_and", "hard_tanh_or"):
        derivative = from_primitives(local_activation(name).derivative)
        values = [derivative.subs(z, sp.Rational(p)) for p in (-3, -HALF, HALF, 3)]
        assert values == [0, 1, 1, 0], name


def test_sign_branch_drops_its_dirac_delta_as_a_step(extra_declarations):
    la = local_activation("hard_tanh_and")
    kinds = [step.kind for step in la.steps]
    assert StepKind.ALMOST_EVERYWHERE in kinds
    raw = la.steps[kinds.index(StepKind.DIFFERENTIATED)].rhs
    assert raw.has(sp.DiracDelta)  # SymPy's d sign(z)/dz = 2 DiracDelta(z), shown, then dropped


def test_max_min_has_no_form_in_the_output_and_still_derives(extra_declarations):
    # sympy.solve cannot invert Max(-1, Min(1, z)) (NotImplementedError): g' stays in z
    la = local_activation("hard_tanh_max")
    assert la.derivative_in_output is None and not la.backward_uses_output


@pytest.mark.parametrize("loss", EXTRA_LOSSES)
def test_extra_losses_differentiate_in_real_symbols(extra_declarations, loss):
    out = local_output(loss, "identity")
    assert not out.dL_da.has(sp.re, sp.im) and not out.delta.has(sp.re, sp.im)
    by_hand = sp.diff(LOSSES[loss].instantiate({}).unit(A_SYM, Y_SYM), A_SYM)
    a_j, y_j = INDEX.a[INDEX.j], INDEX.y[INDEX.j]
    for a_value, y_value in ((3, 1), (HALF, 0), (-2, 1), (0, HALF)):
        values = {a_j: a_value, y_j: y_value}
        assert out.dL_da.subs(values) == by_hand.subs({A_SYM: a_value, Y_SYM: y_value})


# ----------------------------------------------------------------------------- whole networks

PROVED = [
    ("hidden", tuple(EXTRA_ACTIVATIONS)[:3], "softmax", "categorical_crossentropy", 3),
    ("hidden_sign", tuple(EXTRA_ACTIVATIONS)[3:], "sigmoid", "binary_crossentropy", 1),
    *[(f"out_{name}", ("tanh",), name, "mse", 2) for name in EXTRA_ACTIVATIONS],
    *[(f"loss_{loss}", ("hard_tanh_and",), "identity", loss, 2) for loss in EXTRA_LOSSES],
    ("epsilon_insensitive_on_hard_tanh", ("relu",), "hard_tanh", "epsilon_insensitive", 2),
    ("pinball_on_softmax", ("tanh",), "softmax", "pinball", 3),  # Max through the Jacobian
]


@pytest.mark.parametrize("name, hidden, output, loss, units", PROVED, ids=[p[0] for p in PROVED])
def test_networks_of_extra_declarations_derive_and_prove(extra_declarations, name, hidden,
                                                         output, loss, units):
    spec = _spec(name, hidden, output, loss, units)
    derivation = derive(spec)
    assert [layer.activation.name for layer in derivation.layers] == [*hidden, output]
    report = prove_spec(spec)
    assert report.ok, report.summary()


def test_the_spec_reader_knows_them(extra_declarations):
    spec = load_spec_text(textwrap.dedent("""\
        name: extra
        input: 2
        layers:
          - {units: 3, activation: hard_tanh_or}
          - {units: 2, activation: mish}
        loss: {name: pinball, tau: 0.9}
        """), "extra.yaml")
    assert [layer.activation.name for layer in spec.layers] == ["hard_tanh_or", "mish"]
    assert spec.loss == "pinball" and spec.loss_params == (("tau", 0.9),)
    derivation = derive(spec)
    assert derivation.objective.loss.values == (("tau", sp.Rational(9, 10)),)
    assert prove_spec(spec).ok
    with pytest.raises(SpecError, match=r"loss\.tau: expected a number with 0 < tau < 1"):
        load_spec_text(textwrap.dedent("""\
            name: extra
            input: 2
            layers: [{units: 2, activation: identity}]
            loss: {name: pinball, tau: 1.5}
            """), "extra.yaml")


DOCUMENTS = [
    ("every_extra_activation", tuple(EXTRA_ACTIVATIONS), "tanh", "epsilon_insensitive"),
    ("quantile", ("hard_tanh_max",), "identity", "pinball"),
]


@pytest.mark.parametrize("name, hidden, output, loss", DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_latex_renders_and_compiles(extra_declarations, tmp_path, name, hidden, output, loss):
    derivation = derive(_spec(name, hidden, output, loss))
    document = render_document(derivation)
    for declaration in (*map(ACTIVATIONS.__getitem__, hidden), LOSSES[loss]):
        assert declaration.latex in document
    if shutil.which("pdflatex"):
        out = write_latex(derivation, tmp_path / f"{name}.tex", pdf=True)
        assert out.pdf.exists() and out.pages > 1
