"""The review of the PDFs (issue 13): corrections, teaching content and typesetting, as golden
fragments of the rendered LaTeX, and the examples' documents with their errata compiled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from derive.claims import check_claims, load_claims
from derive.derivation import derive
from derive.latex import load_example, render_latex, write_latex
from derive.latex.pdf import overfull_boxes
from derive.proof import prove_spec
from derive.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

TANH_MSE_L1 = """\
name: review_net
input: 2
layers:
  - {units: 2, activation: tanh}
  - {units: 2, activation: softmax}
loss: mse
regularization: {l1: 0.01}
"""


def _tex(name: str, **kwargs) -> str:
    return render_latex(derive(load_spec(EXAMPLES / f"{name}.yaml")), **kwargs)


def test_four_equations_and_the_algorithm_before_the_layers():
    tex = _tex("seed001_mnist")
    general = tex.index("four equations of backpropagation")
    assert general < tex.index(r"\subsection{Layer 3 (output)}")
    assert r"\delta^{[l]} &= \left(W^{[l+1]T} \delta^{[l+1]}\right) \odot g'^{[l]}" in tex
    assert r"\frac{\partial L}{\partial W^{[l]}} &= \delta^{[l]} a^{[l-1]T}" in tex
    assert r"\fbox{\begin{minipage}{0.9\linewidth}" in tex
    assert r"\textbf{Backpropagation, for one example}" in tex


def test_softmax_cancellation_stated_only_where_it_happens():
    ce = _tex("seed001_mnist")
    assert r"its factor $a_i$ cancels the $1/a_i$ of $\partial L/\partial a_i$" in ce
    mse = render_latex(derive(load_spec_text(TANH_MSE_L1, "review.yaml")))
    assert "Through the softmax Jacobian:" in mse and "cancels the" not in mse
    line = r"&= \sum_{i=1}^{n} a_{i} (\mathbb{I}_{ij} - a_{j}) (a_{i} - y_{i})"
    assert mse.count(line) == 1  # no duplicated line
    assert r"a_{j} \left(a_{j} + \sum_{i=1}^{n} a_{i} (y_{i} - a_{i}) - y_{j}\right)" in mse


def test_kronecker_delta_is_not_the_error_letter():
    tex = _tex("seed000_shallow", notation="subscript")
    assert r"\delta_{ij}" not in tex.replace(r"not written $\delta_{ij}$", "")
    assert r"\mathbb{I}_{ij}" in tex


def test_norms_and_subgradient_and_tanh_definition():
    tex = render_latex(derive(load_spec_text(TANH_MSE_L1, "review.yaml")))
    assert r"is the entry-wise sum of absolute values (not the matrix 1-norm" in tex
    assert r"$0$ is a subgradient" in tex
    assert r"\tanh(z) &= \frac{e^{z} - e^{- z}}{e^{z} + e^{- z}}" in tex


def test_training_settings_said_to_be_defaults_when_none_declared():
    assert "The spec declares no training settings; by default it trains with" in \
        _tex("seed000_shallow")
    assert "The spec trains with batch gradient descent" in _tex("seed004_quadratic")


def test_one_output_unit_has_no_sum_and_its_output_is_written_out():
    tex = _tex("seed003_sigmoid_2_2_1")
    assert r"\sum_{k=1}^{1}" not in tex
    assert "of one example, with its one output unit" in tex
    assert (r"\hat{y} &= \sigma\Bigl(W^{[2]}_{11} \, \sigma\bigl(W^{[1]}_{11} x_{1} + "
            r"W^{[1]}_{12} x_{2} + b^{[1]}_{1}\bigr) \notag") in tex
    assert r"\text{as } a_{j}^{2} - a_{j} = -a_{j}\left(1 - a_{j}\right)" in tex


def test_sparse_cross_entropy():
    assert r"L = -\log a^{[3]}_{c}" in _tex("seed001_mnist")


def test_seed003_figures_quoted_as_printed():
    d = derive(load_spec(EXAMPLES / "seed003_multiclass.yaml"))
    tex = render_latex(d, example=load_example(EXAMPLES / "values" /
                                               "seed003_multiclass_values.yaml", d))
    assert r"${\hat{y}}_{1}$ & $0.23$ & $0.23$ & $0.230329$ & agrees" in tex
    d = derive(load_spec(EXAMPLES / "seed003_binary.yaml"))
    tex = render_latex(d, example=load_example(EXAMPLES / "values" /
                                               "seed003_binary_values.yaml", d))
    assert "0.948919 cut to three decimals" in tex and "rounds a1" not in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not on PATH")
@pytest.mark.parametrize("name", sorted(p.stem for p in (EXAMPLES / "errata").glob("*.yaml")))
def test_example_documents_with_errata_and_proof_compile_cleanly(name, tmp_path):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    d = derive(spec)
    report = check_claims(d, load_claims(spec.claims))
    values = EXAMPLES / "values" / f"{name}_values.yaml"
    example = load_example(values, d) if values.exists() else None
    out = write_latex(d, tmp_path / f"{name}.tex", pdf=True, claims=report,
                      proof=prove_spec(spec), example=example)
    assert overfull_boxes(out.log) == [] and "Underfull" not in out.log
    tex = out.tex.read_text()
    assert r"\section{Errata: the document's formulas checked}" in tex
    assert "and their names here:" in tex
    assert "random rational points." in tex  # the proof's result, stated


def test_every_unicode_character_is_escaped_to_ascii_wherever_names_reach_the_latex():
    """tex_escape gives ASCII for every code point, and a document's symbol with a Unicode
    digit (h١) is escaped text in the notation table, never a non-ASCII subscript inside
    maths (pdflatex failed on it)."""
    import sys

    from derive.claims import check_claims, load_claims_text
    from derive.derivation import derive
    from derive.latex import render_latex
    from derive.latex.text import tex_escape
    from derive.spec import load_spec

    assert all(tex_escape(chr(c)).isascii() for c in range(sys.maxunicode + 1))
    root = Path(__file__).resolve().parents[1]
    derivation = derive(load_spec(root / "examples" / "seed003_binary.yaml"))
    claims = load_claims_text("symbols: {h\u0661: a1, h2: a2}\nclaims:\n"
                              "  - claim: 'dz2 = yhat - y'\n", "c.yaml")
    text = render_latex(derivation, claims=check_claims(derivation, claims))
    assert "\u0661" not in text and r"\textbackslash{}u0661" in text
    assert "$h_{2}$" in text  # an ASCII name is still maths
