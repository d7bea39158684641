"""LaTeX of stacks of layer kinds: every kind printed, batch normalisation's backward through
mu_B and sigma^2_B with its compact form proven, layer norm per example, dropout's mask, the
skip's term, the gradients' shapes; the document compiles without overfull boxes."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import sympy as sp

from derive.cli import main
from derive.derivation import derive
from derive.latex import render_document, write_latex
from derive.latex import pdf as latex_pdf
from derive.latex.kinds import CompactFormError, compact_form
from derive.layers import LAYER_KINDS, Let
from derive.spec import load_spec_text

OVERFULL_LIMIT_PT = 1.0

# one spec entry for each kind: a kind added to the registry fails here until it is printed
ENTRY = {
    "dense": "{units: 5, bias: false}",
    "batch_norm": "{kind: batch_norm, activation: relu}",
    "dropout": "{kind: dropout, rate: 0.2}",
    "layer_norm": "{kind: layer_norm}",
}
LAYER_OF = {"dense": 1, "batch_norm": 2, "dropout": 3, "layer_norm": 5}  # in EVERY_KIND
# the image kinds, in a stack of their own (they take images: input [C, H, W])
IMAGE_ENTRY = {
    "conv2d": "{kind: conv2d, filters: 2, kernel: 3, padding: 1, activation: relu}",
    "max_pool": "{kind: max_pool, size: 2}",
    "avg_pool": "{kind: avg_pool, size: 2}",
    "flatten": "{kind: flatten}",
}
IMAGE_LAYER_OF = {"conv2d": 1, "avg_pool": 2, "max_pool": 4, "flatten": 5}
EVERY_IMAGE_KIND = f"""\
name: every_image_kind
input: [3, 8, 8]
layers:
  - {IMAGE_ENTRY['conv2d']}
  - {IMAGE_ENTRY['avg_pool']}
  - {{kind: conv2d, filters: 2, kernel: 3, stride: 2, padding: 1}}
  - {IMAGE_ENTRY['max_pool']}
  - {IMAGE_ENTRY['flatten']}
  - {{units: 3, activation: softmax}}
loss: categorical_crossentropy
regularization: {{l2: 0.001}}
"""
EVERY_KIND = f"""\
name: every_kind
input: 4
layers:
  - {ENTRY['dense']}
  - {ENTRY['batch_norm']}
  - {ENTRY['dropout']}
  - {{units: 5, activation: tanh, skip: 2}}
  - {ENTRY['layer_norm']}
  - {{units: 3, activation: softmax}}
loss: categorical_crossentropy
"""
needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                    reason="no LaTeX engine: pdflatex is not on PATH "
                                           "(apt-get install texlive-latex-base texlive-latex-recommended)")
_DERIVED: dict = {}


def derived(text: str = EVERY_KIND, name: str = "every_kind.yaml"):
    if text not in _DERIVED:
        _DERIVED[text] = derive(load_spec_text(text, name))
    return _DERIVED[text]


def document(text: str = EVERY_KIND, **options) -> str:
    key = (text, tuple(sorted(options.items())))
    if key not in _DERIVED:
        _DERIVED[key] = render_document(derived(text), **options)
    return _DERIVED[key]


def test_every_kind_of_the_registry_is_in_the_document():
    assert set(ENTRY) | set(IMAGE_ENTRY) == set(LAYER_KINDS), \
        "give the new kind an entry in ENTRY or IMAGE_ENTRY (and print it)"
    tex = document()
    for name in ENTRY:
        kind = LAYER_KINDS[name]
        assert rf"\subsection{{Layer {LAYER_OF[name]}: {kind.title}}}" in tex, name
        assert kind.latex in tex, f"{name}: its declared forward is not printed"
    for symbol in (r"\gamma^{[2]}", r"\beta^{[2]}", r"\gamma^{[5]}", r"\beta^{[5]}", "W^{[1]}",
                   "W^{[4]}", "b^{[4]}", "W^{[6]}", "b^{[6]}"):
        assert symbol in tex


def test_image_kinds_forward_gradients_and_routing_are_printed():
    """The convolution as a correlation, its three gradients as SymPy derived them (the full
    correlation with the flipped kernel, the correlation of the input with the error, the
    sums), pooling's routing, the images' shapes."""
    derived(EVERY_IMAGE_KIND, "every_image_kind.yaml")
    tex = document(EVERY_IMAGE_KIND)
    for name, l in IMAGE_LAYER_OF.items():
        kind = LAYER_KINDS[name]
        assert rf"\subsection{{Layer {l}: {kind.title}}}" in tex, name
        assert kind.latex in tex, f"{name}: its declared forward is not printed"
    assert r"z^{[1]}_{n,f,i,j} &= b^{[1]}_{f} + \sum_{c,p,q} W^{[1]}_{f,c,p,q} x_{n,c," in tex
    assert r"\emph{full correlation}" in tex and r"\emph{correlation}" in tex
    assert r"\frac{\partial J}{\partial W^{[1]}_{f,c,p,q}} &= \sum_{n,i,j}" in tex
    assert r"\frac{\partial J}{\partial W^{[3]}} &= \text{\eqref{" in tex  # + the penalty
    assert r"\frac{\partial J}{\partial a^{[2]}_{n,c,u,v}} &= \sum_{f,i,j} W^{[3]}_{f,c," in tex
    assert r"\frac{\partial J}{\partial b^{[1]}_{f}} &= \sum_{n,i,j} \Delta^{[1]}_{n,f,i,j}" in tex
    assert r"M^{[4]}_{n,c,u,v}\, \Delta^{[4]}_{n,c,\lfloor u/2 \rfloor,\lfloor v/2 \rfloor}" in tex
    assert r"\frac{1}{4} \Delta^{[2]}_{n,c,\lfloor u/2 \rfloor,\lfloor v/2 \rfloor}" in tex
    assert r"$W^{[1]}$ $(2 \times 3 \times 3 \times 3)$" in tex  # torch's (F, C, k, k)
    assert r"(2 \cdot 4 \cdot 4 \times m)" in tex  # an image per example
    # the local derivatives as SymPy takes them: indicators, then summed out
    assert r"\subsection{The convolution (layers 1, 3)}" in tex
    assert r"&= \mathbb{I}_{n,n'} W_{f,c',P - i s + u',P - j s + v'}" in tex
    assert r"\subsection{Max pooling (layer 4)}" in tex and r"\subsection{Average pooling (layer 2)}" in tex


@needs_pdflatex
def test_image_document_compiles_without_overfull_boxes(tmp_path):
    out = write_latex(derived(EVERY_IMAGE_KIND, "every_image_kind.yaml"), tmp_path / "img.tex",
                      pdf=True)
    too_wide = [(pt, line) for pt, line in latex_pdf.overfull_boxes(out.log) if pt > OVERFULL_LIMIT_PT]
    assert not too_wide, f"overfull boxes (pt, source line): {too_wide}"


def test_architecture_lists_kinds_shapes_and_state():
    tex = document()
    assert r"dense layer (no bias)" in tex
    assert r"$\gamma^{[2]}$ $(5 \times 1)$" in tex and r"$W^{[4]}$ $(5 \times 5)$" in tex
    assert r"\bar{\mu}^{[2]}" in tex and r"\bar{\sigma}^{[2]\,2}" in tex  # running statistics
    assert r"$p = 0.2$" in tex and r"$+\,a^{[2]}$" in tex  # the dropout rate, the skip


def test_batch_norm_forward_and_backward_through_mu_and_sigma():
    tex = document()
    # forward: mu_B, sigma^2_B, x-hat, gamma x-hat + beta, per unit over the batch
    assert r"\mu^{[2]}_{B} &= \frac{1}{m} \sum_{i=1}^{m} a^{[1]}_{i}" in tex
    assert r"\sigma^{[2]\,2}_{B} &= \frac{1}{m} \sum_{i=1}^{m}" in tex
    # backward as Ioffe & Szegedy: dx-hat, dsigma^2, dmu, dx_i, dgamma, dbeta
    for lhs in (r"\frac{\partial J}{\partial \hat{x}^{[2]}_{i}} &= \delta^{[2]}_{i} \gamma^{[2]}",
                r"\frac{\partial J}{\partial \sigma^{[2]\,2}_{B}} &= \sum_{i=1}^{m}",
                r"\frac{\partial J}{\partial \mu^{[2]}_{B}} &= \sum_{i=1}^{m}",
                r"\frac{\partial J}{\partial a^{[1]}_{i}} &= \frac{\partial J}{\partial \hat{x}^{[2]}_{i}} \cdot",
                r"\frac{\partial J}{\partial \beta^{[2]}} &= \sum_{i=1}^{m} \delta^{[2]}_{i}",
                r"\frac{\partial J}{\partial \gamma^{[2]}} &= \sum_{i=1}^{m} \delta^{[2]}_{i} \hat{x}^{[2]}_{i}"):
        assert lhs in tex, lhs
    # dmu gets the term through sigma^2, dx_i the terms through mu and sigma^2
    dmu = _line(tex, r"\frac{\partial J}{\partial \mu^{[2]}_{B}} &=")
    assert r"\frac{\partial J}{\partial \sigma^{[2]\,2}_{B}}" in dmu
    dx = _line(tex, r"\frac{\partial J}{\partial a^{[1]}_{i}} &=")
    assert r"\frac{\partial J}{\partial \mu^{[2]}_{B}} \cdot \frac{1}{m}" in dx
    assert r"\frac{\partial J}{\partial \sigma^{[2]\,2}_{B}} \cdot \frac{2 \left(a^{[1]}_{i} - \mu^{[2]}_{B}\right)}{m}" in dx
    # then the compact form, proven
    compact = _line(tex, r"\label{bd:every_kind:compact2}")
    assert r"\Bigl(m \delta^{[2]}_{i} - \sum_{k=1}^{m} \delta^{[2]}_{k} - \hat{x}^{[2]}_{i} \sum_{k=1}^{m}" in compact
    assert "Proven for $m = 2, 3, 4$ examples" in tex
    assert "Ioffe and Szegedy (2015)" in tex


def test_layer_norm_per_example_with_its_compact_form():
    tex = document()
    assert r"\mu^{[5]} &= \frac{1}{n^{[5]}} \sum_{j=1}^{n^{[5]}} a^{[4]}_{j}" in tex
    assert r"\frac{\partial J}{\partial \gamma^{[5]}_{j}} &= \sum_{i=1}^{m} \delta^{[5]}_{ji} \hat{x}^{[5]}_{ji}" in tex
    assert r"\label{bd:every_kind:compact5}" in tex and "Proven for this layer's $5$ units" in tex


def test_dropout_mask_and_the_skip_term_in_the_recurrence():
    tex = document()
    assert r"r^{[3]}_{ji} &\sim \operatorname{Bernoulli}(0.8)" in tex
    # A^{[2]} is read by the dropout (layer 3) and the skip of layer 4: both errors reach it
    d_a2 = _line(tex, r"\frac{\partial J}{\partial A^{[2]}} &=")
    assert r"\Delta^{[4]}" in d_a2 and r"\frac{5}{4} \Delta^{[3]} \odot R^{[3]}" in d_a2
    assert "the skip of layer 4" in tex


def test_every_gradient_has_its_shape_and_the_update_rule_is_printed():
    d = derived()
    tex = document()
    for param, _ in d.gradients:
        assert f"\\label{{bd:every_kind:bwd-d{param.name}}}" in tex, param
    assert r"\theta &:= \theta - \eta \frac{\partial J}{\partial \theta}" in tex
    assert r"$\partial J/\partial \gamma^{[2]}$ & $(5 \times 1)$" in tex


def test_subscript_notation():
    tex = document(notation="subscript")
    assert r"\mu_{2,B}" in tex and r"\hat{x}_{2,i}" in tex and r"\gamma_{2}" in tex


def test_a_wrong_compact_form_is_never_printed_as_proven():
    """Plant a wrong backward (the term through mu_B dropped): the check refuses it."""
    d = derived()
    node = d.nodes[1]
    wrong = tuple(Let(st.target, st.expr.subs(sp.Symbol("dmu2", real=True), 0))
                  if st.target.name == "dA1" else st for st in d.backward)
    with pytest.raises(CompactFormError, match="layer 2"):
        compact_form(dataclasses.replace(d, backward=wrong), node)
    assert compact_form(d, node).sizes == (2, 3, 4)
    # layer norm's 5 units: checked exactly at rational points only, and a planted error caught
    wrong = tuple(Let(st.target, st.expr.subs(sp.Symbol("dvar5", real=True), 0))
                  if st.target.name == "dA4" else st for st in d.backward)
    with pytest.raises(CompactFormError, match="layer 5: .* at a rational point"):
        compact_form(dataclasses.replace(d, backward=wrong), d.nodes[4])


def test_cli_writes_the_kinds_document_and_refuses_an_example(tmp_path, capsys):
    spec = tmp_path / "every_kind.yaml"
    spec.write_text(EVERY_KIND, encoding="utf-8")
    assert main(["--spec", str(spec), "--no-module", "--latex", str(tmp_path / "k.tex")]) == 0
    assert r"\section{Backpropagation}" in (tmp_path / "k.tex").read_text(encoding="utf-8")
    assert main(["--spec", str(spec), "--no-module", "--latex", str(tmp_path / "b.tex"),
                 "--latex-body"]) == 0
    body = (tmp_path / "b.tex").read_text(encoding="utf-8")
    assert r"\documentclass" not in body and r"\section{Backpropagation}" in body
    values = tmp_path / "v.yaml"
    values.write_text("x: [1, 2, 3, 4]\n", encoding="utf-8")
    assert main(["--spec", str(spec), "--no-module", "--latex", str(tmp_path / "k2.tex"),
                 "--example", str(values)]) == 2
    assert "--example is not available yet for layer kinds" in capsys.readouterr().err


def _line(tex: str, start: str) -> str:
    return next(line for line in tex.splitlines() if start in line)


@needs_pdflatex
@pytest.mark.parametrize("notation", ["bracket", "subscript"])
def test_kinds_document_compiles_without_overfull_boxes(notation, tmp_path):
    out = write_latex(derived(), tmp_path / f"kinds_{notation}.tex", pdf=True, notation=notation)
    too_wide = [(pt, line) for pt, line in latex_pdf.overfull_boxes(out.log) if pt > OVERFULL_LIMIT_PT]
    assert not too_wide, f"overfull boxes (pt, source line): {too_wide}"
    assert out.pages and out.pages > 1
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", "30", "-f", "1", "-l", "1", str(out.pdf),
                        str(tmp_path / "page")], check=True, timeout=60)
        assert any(tmp_path.glob("page*.png"))


MSE_NET = """\
name: bn_regression
input: 3
layers:
  - {units: 4, activation: relu}
  - {kind: batch_norm}
  - {units: 4, bias: false, skip: 1}
  - {kind: layer_norm, activation: sigmoid, eps: 0.001}
  - {units: 2, activation: identity}
loss: mse
regularization: {l2: 0.001}
"""


@needs_pdflatex
def test_another_stack_compiles(tmp_path):
    """Normalisations without activations, a skip on a dense layer without bias, a penalty."""
    d = derived(MSE_NET, "bn_regression.yaml")
    out = write_latex(d, tmp_path / "reg.tex", pdf=True)
    too_wide = [(pt, line) for pt, line in latex_pdf.overfull_boxes(out.log) if pt > OVERFULL_LIMIT_PT]
    assert not too_wide, f"overfull boxes (pt, source line): {too_wide}"
    tex = out.tex.read_text(encoding="utf-8")
    # g' by its name, applied to Z (sigmoid's derivative is written in A, derived so)
    assert r"\Delta^{[4]} &= \frac{\partial J}{\partial A^{[4]}} \odot \sigma'(Z^{[4]})" in tex
    # a^{[1]} feeds the batch norm and the skip of layer 3: written per unit, with delta^{[3]}
    d_a1 = _line(tex, r"\frac{\partial J}{\partial a^{[1]}_{i}} &=")
    assert d_a1.split("&&")[0].rstrip().endswith(r"+ \delta^{[3]}_{i}")
    # so the compact form is of the batch norm's own terms
    assert r"\frac{\partial J}{\partial a^{[1]}_{i}} - \delta^{[3]}_{i} &= \frac{\gamma^{[2]}}{m" in tex
    assert r"\Delta^{[1]} X^{T} + \frac{1}{1000} W^{[1]}" in tex  # the penalty's term


def test_a_wrong_compact_form_is_refuted(monkeypatch):
    """The printed compact form is the checked one: with the sign of its last term flipped (the
    slip a hand derivation makes), neither normalisation's check lets it through."""
    import derive.latex.kinds as kinds

    right = kinds._compact

    def flipped(g, node):
        form = right(g, node)
        terms = list(form.terms)
        terms[-1] = (-terms[-1][0], terms[-1][1])
        return dataclasses.replace(form, terms=tuple(terms))

    monkeypatch.setattr(kinds, "_compact", flipped)
    d = derived()
    for node in (d.nodes[1], d.nodes[4]):
        with pytest.raises(CompactFormError, match=f"layer {node.index}"):
            compact_form(d, node)


def test_claims_checked_along_are_stated():
    """A ClaimsReport given with a stack of kinds (--claims with --latex): the document says what
    the check found (its Errata section is printed for dense stacks only, so far)."""
    verdict = SimpleNamespace
    report = SimpleNamespace(file=SimpleNamespace(path="claims/ioffe_szegedy.yaml"),
                             verdicts=(verdict(proven=True),) * 11 + (verdict(proven=False),) * 2)
    tex = render_document(derived(), claims=report)
    assert "The 13 claims of" in tex and "11 proven, 2 refuted" in tex
