"""Claims: a published formula proven or refuted against the Derivation (derive.claims), the
documents' errata (examples/errata/), the formula syntax's errors, and the Errata section."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from derive.activations import ACTIVATIONS
from derive.claims import BATCH, FUNCTIONS, check_claims, load_claims, load_claims_text
from derive.cli import main
from derive.derivation import derive
from derive.errors import SpecError
from derive.formula import FormulaError, parse_equation
from derive.latex import render_latex
from derive.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]
ERRATA = sorted((ROOT / "examples" / "errata").glob("*.yaml"))
SHALLOW = ROOT / "examples" / "seed000_shallow.yaml"

SMALL_SPEC = """\
name: small_net
input: 3
layers:
  - {units: 3, activation: tanh}
  - {units: 2, activation: softmax}
loss: categorical_crossentropy
"""


def _derivation(text: str = SMALL_SPEC):
    return derive(load_spec_text(text, "small.yaml"))


def _verdicts(claims: str, spec: str = SMALL_SPEC):
    report = check_claims(_derivation(spec), load_claims_text(claims, "claims.yaml"))
    return [v.proven for v in report.verdicts], report


# ----------------------------------------------------------------------------- the errata

def test_every_document_has_an_errata_file():
    specs = {p.stem for p in (ROOT / "examples").glob("seed00*.yaml")}
    assert {p.stem for p in ERRATA} >= specs - {"seed003_sigmoid_2_2_1"}


@pytest.mark.parametrize("errata", ERRATA, ids=lambda p: p.stem)
def test_errata_verdicts_are_as_expected(errata):
    """Every known error refuted (expect: false), every correction proven (CI runs them all)."""
    spec = load_spec(ROOT / "examples" / errata.name)
    report = check_claims(derive(spec), load_claims(errata))
    assert report.ok, report.summary()
    assert any(not v.claim.expect for v in report.verdicts)  # each file lists an error
    for v in report.verdicts:
        if not v.proven and v.kind not in ("number",) and "shape" not in v.reason \
                and "no shape" not in v.reason and "is (" not in v.reason:
            assert v.counterexample is not None, v.claim.text


def test_the_issues_known_errors_are_refuted():
    refuted = set()
    for errata in ERRATA:
        spec = load_spec(ROOT / "examples" / errata.name)
        for v in check_claims(derive(spec), load_claims(errata)).verdicts:
            if not v.proven:
                refuted.add((errata.stem, v.claim.text))
    expected = {
        ("seed000_shallow", "dW1 = relu(W2^T (yhat - y)) x^T"),
        ("seed000_shallow", "db1 = relu(W2^T (yhat - y))"),
        ("seed001_mnist", "dW2 = ((W3^T (a3 - y)) ∘ relu'(z2)) a2^T"),
        ("seed001_mnist", "dZ3 = -y ∘ (1 - a3) - (sum(y) - y) ∘ a3"),
        ("seed001_mnist", "dZ3 = -y + y ∘ a3 - (sum(y) - y) ∘ a3"),
        ("seed001_mnist", "dW2 = (a3 - y) W3 relu'(z2) a1"),
        ("seed001_mnist", "z3 = W2 a1 + b2"),
        ("seed000_shallow", "z1 = W1 h + b1"),
        ("seed002_relu_sigmoid", "W2 := W2 - alpha delta2 a1"),
        ("seed003_binary", "L = y (-log(yhat)) + (1 - y) (-log(yhat))"),
        ("seed003_binary", "L = -(y log(yhat)) + (1 - y) log(1 - yhat)"),
        ("seed003_binary", "b2 := b2 + eta db2"),
        ("seed003_binary", "a2 = 0.948"),
        ("seed003_binary", "yhat = 0.7207"),
        ("seed003_multiclass", "a1[3] = -0.09"),
        ("seed003_multiclass", "L = 1.2729"),
        ("seed004_quadratic", "dW2 = 1/2 sum((a2 - t)^2)"),
    }
    assert expected <= refuted


def test_a_refuted_gradient_shows_its_counterexample():
    claims = "claims:\n  - claim: 'dW1 = (W2^T (yhat - y)) x^T'\n"
    proven, report = _verdicts(claims)
    assert proven == [False]
    cx = report.verdicts[0].counterexample
    assert cx.instance == (3, 3, 2) and cx.examples == BATCH
    assert [name for name, _ in cx.point] == ["A0", "Y", "W1", "b1", "W2", "b2"]
    assert all(v.is_Rational for _, value in cx.point for v in value)
    r, c = cx.entry
    assert cx.claimed[r - 1, c - 1] != cx.derived[r - 1, c - 1]
    assert "counterexample on a 3-3-2 instance" in report.summary()


def test_tanh_softmax_claims_proven_exactly():
    claims = """\
claims:
  - claim: "dW1 = (((W2^T (yhat - y)) ∘ (1 - a1^2)) x^T)/m"
  - claim: "delta1 = (W2^T delta2) ∘ tanh'(z1)"
  - claim: "delta2 = softmax(z2) - y"
  - claim: "L = -sum(y ∘ log(yhat))"
  - claim: "dW2 = (delta2 a1^T)/m"
  - claim: "db2 = rowsum(delta2)/m"
  - claim: "W1 := W1 - eta dW1"
"""
    proven, report = _verdicts(claims)
    assert proven == [True] * 7, report.summary()


def test_an_update_rising_the_loss_is_refuted_with_the_loss_rising():
    proven, report = _verdicts("claims:\n  - claim: 'W2 := W2 + eta dW2'\n")
    assert proven == [False]
    cx = report.verdicts[0].counterexample
    assert "rises by" in cx.lines[0]


def test_a_rule_that_moves_theta_at_rate_zero_is_refuted():
    proven, report = _verdicts("claims:\n  - claim: 'W2 := W2 + 1 - eta dW2'\n")
    assert proven == [False] and "learning rate 0" in report.verdicts[0].reason


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if not ACTIVATIONS[n].vector])
def test_every_activations_derivative_claim_is_proven(name):
    """The syntax knows the registry's activations and their derivatives."""
    proven, report = _verdicts(f"claims:\n  - claim: \"d {name}/dz = {name}'(z)\"\n")
    assert proven == [True], report.summary()


def test_a_wrong_local_derivative_is_refuted_with_z():
    proven, report = _verdicts("claims:\n  - claim: 'd sigmoid/dz = a (1 + a)'\n")
    assert proven == [False]
    assert report.verdicts[0].counterexample.point[0][0] == "z"


def test_shapes_are_checked_on_the_specs_own_sizes():
    spec = SMALL_SPEC.replace("units: 3, activation: tanh", "units: 5, activation: tanh")
    proven, report = _verdicts("claims:\n  - claim: 'dW2 = delta2 x^T'\n", spec)
    assert proven == [False] and "(2×3); dW2 is (2×5)" in report.verdicts[0].reason


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("formula, column, words", [
    ("dW1 = relu(W2^T (yhat - y) x^T", 31, "expected ')'"),
    ("dW1 = relu(W2 +) x^T", 16, "expected a number"),
    ("dW1 relu(W2)", 13, "expected an equation"),
    ("dW1 = W2 ^ x", 12, "after '^'"),
    ("dW1 = W2 $ x", 10, "unexpected character"),
])
def test_parse_errors_give_the_column(formula, column, words):
    with pytest.raises(FormulaError) as info:
        parse_equation(formula)
    assert info.value.column == column and words in info.value.message


def test_a_bad_claim_names_file_line_and_column():
    text = "document: test\nclaims:\n  - claim: 'dW1 = relu(W2^T (yhat - y) x^T'\n"
    with pytest.raises(SpecError) as info:
        load_claims_text(text, "errata.yaml")
    message = str(info.value)
    # the formula starts at column 13 of line 3; its column 31 is the file's column 43
    assert message.startswith("errata.yaml:3: claims[0].claim: column 43: expected ')'")
    assert "^" in message


@pytest.mark.parametrize("claim, words", [
    ("dW1 = rleu(z1) x^T", "unknown function 'rleu'"),
    ("dW1 = h x^T", "unknown name 'h'"),
    ("dW9 = x", "unknown quantity 'dW9'"),
    ("d softmax/dz = a", "Jacobian"),
    ("dW1 := x", "an update rule assigns a parameter"),
    ("delta2 = a2(1 - a2)", "'a2' is not a function"),
])
def test_names_and_functions_are_checked_before_anything_runs(claim, words):
    claims = load_claims_text(f"claims:\n  - claim: '{claim}'\n", "c.yaml")
    with pytest.raises(SpecError) as info:
        check_claims(_derivation(), claims)
    assert words in str(info.value)


def test_unknown_keys_and_missing_example_are_errors():
    with pytest.raises(SpecError, match="unknown key 'expects'"):
        load_claims_text("claims:\n  - {claim: 'db2 = delta2', expects: false}\n", "c.yaml")
    claims = load_claims_text("claims:\n  - claim: 'z1 = [0.1, 0.2, 0.3]'\n", "c.yaml")
    with pytest.raises(SpecError, match="needs the example's values"):
        check_claims(_derivation(), claims)


def test_functions_are_the_registrys_and_a_fixed_few():
    assert not set(FUNCTIONS) & set(ACTIVATIONS.names())


# ----------------------------------------------------------------------------- the CLI

def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("claims:\n  - claim: 'db2 = rowsum(yhat - y)/m'\n")
    surprised = tmp_path / "surprised.yaml"
    surprised.write_text("per_example: true\nclaims:\n  - {claim: 'db2 = y - yhat', expect: true}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("claims:\n  - claim: 'db2 = (yhat - y'\n")
    base = ["--spec", str(SHALLOW), "--out", str(tmp_path / "gen"), "-q"]
    assert main(base + ["--claims", str(good)]) == 0
    assert main(base + ["--claims", str(surprised)]) == 1
    assert "UNEXPECTED" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "gen")
    assert main(base + ["--claims", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:2: claims[0].claim: column " in err and "Traceback" not in err
    assert not (tmp_path / "gen").exists()  # a bad claims file: nothing is written


def test_spec_claims_key(tmp_path):
    shutil.copy(SHALLOW, tmp_path / "net.yaml")
    (tmp_path / "errata.yaml").write_text("claims:\n  - claim: 'db2 = yhat - y'\n")
    lines = (tmp_path / "net.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("claims:"))
    text += "\nclaims: errata.yaml\n"
    (tmp_path / "net.yaml").write_text(text)
    assert load_spec(tmp_path / "net.yaml").claims == str(tmp_path / "errata.yaml")
    (tmp_path / "net.yaml").write_text(text.replace("errata.yaml", "missing.yaml"))
    assert main(["--spec", str(tmp_path / "net.yaml"), "--out", str(tmp_path / "gen"),
                 "--check", "-q"]) == 2
    assert not (tmp_path / "gen").exists()


# ----------------------------------------------------------------------------- the LaTeX

def test_errata_section_golden_fragments():
    spec = load_spec(SHALLOW)
    d = derive(spec)
    report = check_claims(d, load_claims(ROOT / "examples" / "errata" / "seed000_shallow.yaml"))
    tex = render_latex(d, claims=report, notation="subscript")
    assert r"\section{Errata: the document's formulas checked}" in tex
    assert r"\subsection*{Refuted}" in tex and r"\noindent\textbf{eq. (6).}" in tex
    assert r"\operatorname{ReLU}\left(W_{2}^{T} \, \left(a_{2} - y\right)\right) \, x^{T}" in tex
    # a checker's report: the errata first, their table (claim, where, verdict, kind of fault)
    assert tex.index(r"\section{Errata") < tex.index(r"\section{Architecture}")
    assert "claim & where & verdict & kind of fault" in tex
    assert (r"$z_{1}$ & Dimension Analysis, ``$z_{1}$ = $W_{1}$h + $b_{1}$'' (equation 1 "
            r"restated), p.~\pageref{bd:shallow_relu_softmax:claim-1} & refuted & notation slip") in tex
    assert r"\label{bd:shallow_relu_softmax:claim-1}" in tex  # the page the table names
    assert r"$\partial L/\partial W_{1}$ & eq. (6), corrected & proven" in tex
    assert "(a note) & eq. (5) & noted & notation slip" in tex
    assert "the claim and the derivation give" in tex and r"\tfrac{" in tex
    assert "11 claims, 8 proven and 3 refuted" in tex
    assert r"\subsection*{Faults that are not formulas}" in tex and r"\emph{wording slip}" in tex


def test_notation_table_maps_the_documents_symbols():
    d = derive(load_spec(ROOT / "examples" / "seed003_binary.yaml"))
    report = check_claims(d, load_claims(ROOT / "examples" / "errata" / "seed003_binary.yaml"))
    tex = render_latex(d, claims=report)
    assert "and their names here:" in tex
    assert r"$a_{1}$ & $z^{[1]}$ & pre-activation of layer 1 \\" in tex
    assert r"$h_{1}$ & $a^{[1]}$ & activation of layer 1 \\" in tex
    assert r"$\eta$ & $\eta$ & the learning rate \\" in tex


def test_proof_is_stated_with_check():
    from derive.proof import prove_spec

    d = derive(load_spec(ROOT / "examples" / "seed003_sigmoid_2_2_1.yaml"))
    proof = prove_spec(d.spec)
    tex = render_latex(d, proof=proof)
    assert f"for all {proof.parameters} parameters at {proof.points} random rational points" in tex
    assert "this document was written without it" in render_latex(d)


def test_hostile_spec_file_name_reaches_latex_only_as_text(tmp_path):
    """Issue 15: names that reach LaTeX go through one escaping function; pdflatex runs with
    -no-shell-escape."""
    from derive.latex import pdf

    hostile = 'net\n\\immediate\\write18{touch PWNED}\\input{secret.tex}%.yaml'
    d = derive(load_spec_text(SMALL_SPEC, str(tmp_path / hostile)))
    tex = render_latex(d)
    assert "\\immediate\\write18" not in tex and "\\input{secret" not in tex
    assert r"\textbackslash{}immediate\textbackslash{}write18\{touch PWNED\}" in tex
    assert "\\textbackslash{}n" in tex and r"\%.yaml" in tex
    for line in tex.splitlines():  # no line of input starts with the name's text
        assert not line.startswith("\\immediate") and not line.startswith("\\input")
    assert "-no-shell-escape" in Path(pdf.__file__).read_text()
    if shutil.which("pdflatex"):
        from derive.latex import write_latex

        out = write_latex(d, tmp_path / "net.tex", pdf=True)
        assert out.pdf.exists() and not (tmp_path / "PWNED").exists()
        assert "root:" not in out.log


def test_formulas_without_a_real_value_are_refuted_not_crashed():
    claims = """\
claims:
  - {claim: "delta2 = (yhat - y)/(yhat - yhat)", expect: false}
  - {claim: "delta2 = log(-1 - yhat^2)", expect: false}
"""
    proven, report = _verdicts(claims)
    assert proven == [False, False] and report.ok
    assert "no value at any point" in report.verdicts[0].reason
    assert "I" in report.summary()  # the complex value is shown


def test_hostile_claims_text_reaches_latex_only_as_text():
    hostile = r"\input{secret}\immediate\write18{touch PWNED}%"
    text = (f"document: '{hostile}'\nsymbols: {{'{hostile}': a1}}\nclaims:\n"
            f"  - {{claim: 'db2 = yhat - y', source: '{hostile}', note: '{hostile}'}}\n")
    d = _derivation()
    report = check_claims(d, load_claims_text(text, "c.yaml"))
    tex = render_latex(d, claims=report)
    assert r"\input{secret}" not in tex and r"\immediate\write18" not in tex
    assert tex.count(r"\textbackslash{}input\{secret\}") >= 3


@pytest.mark.parametrize("claim, words", [
    ("db2 = delta2 + " + "9" * 5000, "at most 100"),
    ("db2 = " + "(" * 5000 + "delta2" + ")" * 5000, "nested more than 100"),
    ("db2 = " + "-" * 5000 + "delta2", "nested more than 100"),
    ("db2 = delta2 + " + "relu(" * 3000 + "z1" + ")" * 3000, "nested more than 100"),
    ("db2 = delta2 + 2^99999999", "above 64"),
    ("db2 = delta2 + 1e" + "9" * 5000, "a name of 5001 characters"),
    ("dz" + "9" * 5000 + " = delta2", "the quantity before '='"),
    ("dz2[" + "9" * 5000 + "] = delta2", "the quantity before '='"),
])
def test_a_formula_s_numbers_nesting_and_powers_are_bounded_with_a_column(claim, words):
    with pytest.raises(SpecError) as info:
        load_claims_text(f"claims:\n  - claim: '{claim}'\n", "c.yaml")
    assert str(info.value).startswith("c.yaml:2: claims[0].claim: column ") and words in str(info.value)


def test_a_5000_digit_integer_in_a_claims_file_is_located():
    with pytest.raises(SpecError) as info:
        load_claims_text("claims:\n  - claim: 'db2 = delta2'\n    expect: " + "9" * 5000 + "\n",
                         "c.yaml")
    assert str(info.value).startswith("c.yaml:3: claims[0].expect:") and "at most 400" in str(info.value)
