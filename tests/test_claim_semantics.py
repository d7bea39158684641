"""What a claim means (shared/DESIGN.md, "Claims"): gradients of the batch objective J over
m >= 2 examples unless the file says per_example; an update rule proven only when it is the
spec's rule; true formulas written unusually proven, subtly false ones refuted (issue 22)."""

from __future__ import annotations

import pytest

from derive.claims import BATCH, READINGS, check_claims, load_claims_text
from derive.derivation import derive
from derive.errors import SpecError
from derive.spec import load_spec_text

# the issue's reader's network: 4-4-4-3 with a square W2 (3x3 on the claims' instance too)
SQUARE = """\
name: square_w2
input: 4
layers:
  - {units: 4, activation: sigmoid}
  - {units: 4, activation: tanh}
  - {units: 3, activation: softmax}
loss: categorical_crossentropy
"""
ADAM = SQUARE + "training: {optimizer: adam, learning_rate: 0.01}\n"


def _report(claims: str, spec: str = SQUARE, per_example: bool | None = None):
    head = "" if per_example is None else f"per_example: {str(per_example).lower()}\n"
    text = head + "claims:\n" + "".join(f"  - claim: \"{c}\"\n" for c in claims)
    return check_claims(derive(load_spec_text(spec, "net.yaml")), load_claims_text(text, "c.yaml"))


def _proven(claims, **kw) -> list[bool]:
    return [v.proven for v in _report(claims, **kw).verdicts]


@pytest.mark.parametrize("rule", [
    "W2 := W2 - eta dW2^T",            # the gradient transposed: same shape, a square W2
    "W2 := W2 - eta dW2 ∘ dW2 ∘ dW2",  # cubed: a descent direction, not the rule
    "W2 := W2 - 2 eta dW2",            # twice the step
    "W2 := W2 - eta delta2 a1^T",      # the batch gradient without its 1/m
    "W2 := W2 + eta dW2",              # ascent
])
def test_a_rule_that_is_not_the_specs_is_refuted(rule):
    report = _report([rule])
    v = report.verdicts[0]
    assert not v.proven and "not the spec's rule" in v.reason, report.summary()
    assert "plain gradient descent" in v.derived
    assert v.counterexample is not None and v.counterexample.examples == BATCH


def test_a_descent_step_that_is_not_the_rule_says_so_in_a_note():
    falls = _report(["W2 := W2 - 2 eta dW2"]).verdicts[0]
    assert "descent direction, which is not the rule" in falls.note
    rises = _report(["W2 := W2 + eta dW2"]).verdicts[0]
    assert "not even a descent direction" in rises.note
    assert "rises by" in rises.counterexample.lines[0]


def test_the_plain_rule_is_proven_in_either_reading():
    assert _proven(["W2 := W2 - eta dW2", "b3 := b3 - eta db3",
                    "W2 := W2 - eta (delta2 a1^T)/m"]) == [True, True, True]
    assert _proven(["W2 := W2 - eta delta2 a1^T"], per_example=True) == [True]


def test_an_optimizer_named_by_the_spec_is_the_rule():
    report = _report(["W2 := W2 - eta dW2", "W2 := W2 - eta dW2/(abs(dW2) + 0.00000001)"],
                     spec=ADAM)
    plain, adam = report.verdicts
    assert not plain.proven and "Adam" in plain.derived, report.summary()
    assert adam.proven, report.summary()


@pytest.mark.parametrize("formula, batch, single", [
    ("dW3 = delta3 a2^T", False, True),          # the batch gradient without 1/m
    ("dW3 = delta3 a2^T + 0 m", False, True),    # m in the formula changes nothing
    ("dW3 = (delta3 a2^T)/m", True, True),       # at m = 1 the 1/m is 1
    ("db3 = rowsum(delta3)/m", True, True),
    ("delta3 = a3 - y", True, True),              # one column per example in both
])
def test_the_reading_decides_and_the_formula_does_not(formula, batch, single):
    assert _proven([formula]) == [batch]
    assert _proven([formula], per_example=False) == [batch]
    assert _proven([formula], per_example=True) == [single]


def test_a_claim_may_override_the_files_reading():
    text = ("per_example: true\nclaims:\n  - claim: 'dW3 = delta3 a2^T'\n"
            "  - claim: 'dW3 = delta3 a2^T'\n    per_example: false\n")
    report = check_claims(derive(load_spec_text(SQUARE, "net.yaml")),
                          load_claims_text(text, "c.yaml"))
    assert [v.proven for v in report.verdicts] == [True, False]
    assert [v.reading for v in report.verdicts] == ["per example", "batch"]


def test_the_verdict_line_says_which_reading():
    summary = _report(["dW3 = (delta3 a2^T)/m", "L = -sum(y ∘ log(yhat))"]).summary()
    assert f"proven ({READINGS['batch']}): dW3" in summary
    assert f"proven ({READINGS['per example']}): L =" in summary  # L is one example's


def test_per_example_must_be_a_boolean_with_its_line():
    with pytest.raises(SpecError) as err:
        load_claims_text("per_example: yes please\nclaims:\n  - claim: 'dW1 = dW1'\n", "c.yaml")
    assert err.value.line == 1 and "true" in str(err.value)


def test_true_formulas_written_unusually_are_proven():
    report = _report([
        # the softmax Jacobian (diag(a) - a a^T) applied to dL/da = -y/a, column by column
        "delta3 = a3 ∘ (-y/a3) - a3 ∘ colsum(a3 ∘ (-y/a3))",
        # sigma' through tanh(z/2)
        "delta1 = (W2^T delta2) ∘ (1 - tanh(z1/2)^2)/4",
        # transposes moved outside
        "dW3 = ((a2 delta3^T)^T)/m",
        "delta2 = ((delta3^T W3)^T) ∘ (1 - a2^2)",
        "dW1 = ((x delta1^T)/m)^T",
    ])
    assert all(v.proven for v in report.verdicts), report.summary()
    local = _report(["d sigmoid/dz = (1 - tanh(z/2)^2)/4", "d sigmoid/dz = 1/(2 + exp(z) + exp(-z))",
                     "d tanh/dz = 4/(exp(z) + exp(-z))^2"])
    assert all(v.proven for v in local.verdicts), local.summary()


def test_subtly_false_formulas_are_refuted():
    report = _report([
        "delta1 = (W2 delta2) ∘ sigmoid'(z1)",              # missing transpose, W2 square
        "dW2 = delta2 a1^T",                                # missing 1/m in the batch reading
        "delta3 = y - a3",                                  # sign flip
        "delta2 = (W3^T delta3) ∘ (1 + a2^2)",              # sign flip inside tanh'
        "delta1 = (W2^T delta2) ∘ (1 - tanh(z1)^2)/4",      # tanh(z) for tanh(z/2)
        "dW3 = (a2 delta3^T)/m",                            # transposed: 3x3 on the instance
    ])
    assert not any(v.proven for v in report.verdicts), report.summary()
    assert all(v.counterexample is not None for v in report.verdicts[:5])


# ----------------------------------------------------------------------------- the errata

from pathlib import Path  # noqa: E402

from derive.claims import FAULTS, load_claims  # noqa: E402

ERRATA = sorted((Path(__file__).resolve().parents[1] / "examples" / "errata").glob("*.yaml"))


@pytest.mark.parametrize("errata", ERRATA, ids=lambda p: p.stem)
def test_every_errata_entry_says_what_kind_of_fault_and_where(errata):
    claims = load_claims(errata)
    for claim in claims.claims:
        assert claim.source, claim.text
        if not claim.expect:
            assert claim.fault in FAULTS, claim.text
    for note in claims.notes:
        assert note.quote and note.source and note.fault in FAULTS


def test_the_documents_are_judged_as_they_write():
    """GELU' right in its own notation (a note), "Finally for b2" a heading typo over a right
    dL/db1, Equation 1 quoted as written (z^[l]) with the index slip named."""
    by_file = {e.stem: load_claims(e) for e in ERRATA}
    gelu = [c for c in by_file["seed002_relu_sigmoid"].claims if c.text.startswith("d gelu")]
    assert [c.expect for c in gelu] == [True]
    notes = {(e, n.fault, n.quote) for e, f in by_file.items() for n in f.notes}
    assert ("seed002_relu_sigmoid", "unusual notation") in {(e, k) for e, k, _ in notes}
    assert ("seed001_mnist", "heading typo", "Finally for b2,") in notes
    assert not any(c.text.startswith("db2") and not c.expect for c in by_file["seed001_mnist"].claims)
    assert any(e == "seed004_quadratic" and "z_j^[l]" in q for e, _, q in notes)
    assert all(by_file[e].per_example for e in by_file)


def test_a_fault_must_be_a_known_kind_with_its_line():
    text = "claims:\n  - claim: 'dW1 = dW1'\n    fault: typpo\n"
    with pytest.raises(SpecError) as err:
        load_claims_text(text, "c.yaml")
    assert err.value.line == 3 and "heading typo" in str(err.value)
    with pytest.raises(SpecError) as err:
        load_claims_text("claims:\n  - claim: 'dW1 = dW1'\nnotes:\n  - {quote: x}\n", "c.yaml")
    assert "fault" in str(err.value)


def test_a_refuted_backward_formula_shows_the_intermediate_values():
    """seed 000's eq. (6): relu of the back-propagated error; the counterexample shows z1 and
    W2^T delta2 at the point, where relu(.) and (.) ∘ relu'(z1) part."""
    from derive.spec import load_spec
    root = Path(__file__).resolve().parents[1]
    report = check_claims(derive(load_spec(root / "examples" / "seed000_shallow.yaml")),
                          load_claims(root / "examples" / "errata" / "seed000_shallow.yaml"))
    v = next(v for v in report.verdicts if v.claim.text.startswith("dW1 = relu"))
    names = [name for name, _ in v.counterexample.intermediates]
    assert names == ["Z1", "W2^T delta2", "delta1"]
    z1, back, delta1 = (value for _, value in v.counterexample.intermediates)
    assert any(z < 0 and b != 0 for z, b in zip(z1, back))  # an entry relu'(z1) switches off
    assert "at this point the derivation has Z1 = " in report.summary()
