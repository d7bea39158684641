"""LaTeX export: golden fragments, pdflatex compiles, page rendering, worked numbers, CLI.

Golden fragments live in tests/golden/; after an intended change, regenerate them with
``UPDATE_GOLDEN=1 python -m pytest tests/test_latex.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive.activations import ACTIVATIONS
from derive.cli import main
from derive.derivation import derive
from derive.errors import SpecError
from derive.latex import (CompileError, EngineMissing, evaluate_example, load_example,
                          render_body, render_document, render_sections, write_latex)
from derive.latex import pdf as latex_pdf
from derive.latex.example import load_example_text
from derive.latex.printer import DerivationLatexPrinter
from derive.optimizers import VARIANTS
from derive.roles import Role, SymbolRole
from derive.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VALUES = EXAMPLES / "values"
GOLDEN = Path(__file__).parent / "golden"
SPECS = sorted(EXAMPLES.glob("*.yaml"))
BINARY, MULTICLASS = EXAMPLES / "seed003_binary.yaml", EXAMPLES / "seed003_multiclass.yaml"
BINARY_VALUES = VALUES / "seed003_binary_values.yaml"
MULTICLASS_VALUES = VALUES / "seed003_multiclass_values.yaml"
OVERFULL_LIMIT_PT = 1.0  # any box wider than the line by more than this fails

DEEP_SPEC = """\
name: deep_ten_layers
input: 32
layers:
  - {units: 64, activation: relu}
  - {units: 64, activation: {name: leaky_relu, alpha: 0.1}}
  - {units: 48, activation: gelu}
  - {units: 48, activation: swish}
  - {units: 32, activation: {name: elu, alpha: 0.5}}
  - {units: 32, activation: softplus}
  - {units: 24, activation: tanh}
  - {units: 24, activation: sigmoid}
  - {units: 16, activation: identity}
  - {units: 10, activation: softmax}
loss: categorical_crossentropy
regularization: {l1: 0.00001, l2: 0.0001}
"""

needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                    reason="no LaTeX engine: pdflatex is not on PATH "
                                           "(apt-get install texlive-latex-base texlive-latex-recommended)")
needs_pdftoppm = pytest.mark.skipif(shutil.which("pdftoppm") is None,
                                    reason="pdftoppm is not on PATH (apt-get install poppler-utils)")

_DERIVED: dict = {}


def derived(spec_path: Path):
    if spec_path not in _DERIVED:
        _DERIVED[spec_path] = derive(load_spec(spec_path))
    return _DERIVED[spec_path]


def deep():
    if "deep" not in _DERIVED:
        _DERIVED["deep"] = derive(load_spec_text(DEEP_SPEC, "deep_ten_layers.yaml"))
    return _DERIVED["deep"]


# ----------------------------------------------------------------------------- golden fragments

def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 python -m pytest tests/test_latex.py"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "rendered"))
        pytest.fail(f"{name} differs from the golden fragment (if intended: "
                    f"UPDATE_GOLDEN=1 python -m pytest tests/test_latex.py):\n{diff}")


SEED001_SECTIONS = ("overview", "architecture", "forward", "loss", "local", "gradients",
                    "batch", "updates")


@pytest.mark.parametrize("section", SEED001_SECTIONS)
def test_seed001_golden_fragments(section):
    sections = render_sections(derived(EXAMPLES / "seed001_mnist.yaml"))
    _check_golden(f"mnist_mlp/{section}.tex", sections[section])


def test_seed003_worked_example_golden_fragment():
    d = derived(BINARY)
    sections = render_sections(d, example=load_example(BINARY_VALUES, d))
    _check_golden("sigmoid_bce_4_4_1/example.tex", sections["example"])


def test_seed002_subscript_notation_golden_fragment():
    sections = render_sections(derived(EXAMPLES / "seed002_relu_sigmoid.yaml"), notation="subscript")
    _check_golden("relu_sigmoid_mse/forward_subscript.tex", sections["forward"])


# ----------------------------------------------------------------------------- content

def test_document_reproduces_seed001_derivation():
    d = derived(EXAMPLES / "seed001_mnist.yaml")
    body = render_body(d)
    # dimension analysis with the declared numbers, as seed 000 writes it
    assert r"128 \times 1 &= [128, 784] \times [784, 1] + [128, 1]" in body
    # the nested network, seed 002 style
    assert (r"\hat{y} = a^{[3]} = \operatorname{softmax}\Bigl(W^{[3]} \operatorname{ReLU}\bigl(W^{[2]} "
            r"\operatorname{ReLU}(W^{[1]} x + b^{[1]}) + b^{[2]}\bigr) + b^{[3]}\Bigr)") in body
    # the softmax Jacobian by the quotient rule, both cases, and the a - y cancellation
    assert r"\text{if } i = j" in body and r"\text{if } i \ne j" in body
    assert r"a_{i} (1 - a_{i})" in body and r"- a_{i} a_{j}" in body
    assert r"\sum_i y_i = 1" in body and r"&= a_{j} - y_{j}" in body
    # every gradient with its shape check, seed 001's (10 x 1)(1 x 64) = (10 x 64)
    assert r"(10 \times 1)(1 \times 64) = (10 \times 64)" in body
    assert r"(64 \times 1)(1 \times 128) = (64 \times 128)" in body
    assert r"(128 \times 1)(1 \times 784) = (128 \times 784)" in body
    # the recurrence with the transpose, and the code's samples-first form
    assert r"\left(W^{[3]T} \delta^{[3]}\right) \odot \operatorname{ReLU}'(z^{[2]})" in body
    assert r"\texttt{Z1 = A0 @ W1.T + b1}" in body  # code breaks only at its spaces
    # ReLU's convention at 0, the three descent variants
    assert r"\operatorname{ReLU}'(0) = 0" in body
    for name in VARIANTS:
        assert VARIANTS[name].title in body


def test_hadamard_explained_once_and_used_consistently():
    body = render_body(derived(EXAMPLES / "seed001_mnist.yaml"))
    assert body.count("Hadamard") == 1
    assert r"\odot" in body and r"\circ" not in body


def test_every_chain_factor_is_printed():
    d = derived(EXAMPLES / "seed001_mnist.yaml")
    body = render_body(d)
    printer = DerivationLatexPrinter(roles=d.roles_by_name)
    for grad in d.gradients:
        for factor in grad.chain:
            assert printer.partial_of(factor.numerator, factor.denominator) in body


def test_activation_derivatives_as_sympy_derived_them():
    body = render_body(deep())
    assert r"\operatorname{GELU}'(z) &= z \phi\left(z\right) + \Phi\left(z\right)" in body
    assert r"\tanh'(z) &= 1 - a^{2}" in body
    assert r"\sigma'(z) &= a (1 - a)" in body
    assert r"\operatorname{LReLU}'(0) = \frac{1}{10}" in body
    assert r"\operatorname{ELU}$ has a kink" in body  # ELU with alpha = 0.5: g' jumps from 1/2 to 1 at 0
    # the regularised objective and gradients
    assert r"\lambda_{2} = 10^{-4}" in body and r"\lambda_{1} = 10^{-5}" in body
    assert r"\lambda_{2} W^{[1]}" in body and r"\operatorname{sign}(W^{[1]})" in body


def test_deep_nesting_is_elided():
    forward = render_sections(deep())["forward"]
    nested = next(line for line in forward.splitlines() if line.startswith(r"\hat{y}"))
    assert r"\cdots" in nested and "W^{[10]}" in nested and "W^{[1]} x" in nested
    assert "W^{[5]}" not in nested


def test_subscript_notation():
    body = render_body(derived(EXAMPLES / "seed002_relu_sigmoid.yaml"), notation="subscript")
    assert "W_{1}" in body and "a_{2}" in body and r"\delta_{1}" in body
    assert "^{[" not in body


def test_templates_name_no_activation():
    names = [n for n in ACTIVATIONS.names()] + ["ReLU", "sigma"]
    for template in (ROOT / "derive" / "latex" / "templates").glob("*.j2"):
        text = template.read_text(encoding="utf-8").lower()
        for name in names:
            assert not re.search(rf"\b{name.lower()}\b", text), f"{template.name} names {name}"


def test_body_and_document():
    d = derived(EXAMPLES / "seed003_sigmoid_2_2_1.yaml")
    body, document = render_body(d), render_document(d)
    assert r"\documentclass" not in body and r"\section{The network}" in body
    assert document.startswith("% Generated by backprop-derive")
    assert r"\documentclass" in document and body in document


def test_printer_names_and_nodes():
    roles = derived(EXAMPLES / "seed002_relu_sigmoid.yaml").roles_by_name  # 4-2-3
    p = DerivationLatexPrinter("bracket", "example", {2: r"\sigma"}, roles=roles)
    W, A, delta = sp.MatrixSymbol("W2", 3, 2), sp.MatrixSymbol("A1", 2, 1), sp.MatrixSymbol("delta2", 3, 1)
    assert p.doprint(W.T * delta) == r"W^{[2]T} \delta^{[2]}"
    assert p.doprint(sp.MatrixSymbol("G2", 3, 1)) == r"\sigma'(z^{[2]})"
    assert p.doprint(sp.MatrixSymbol("A0", 4, 1)) == "x"
    assert p.doprint(sp.HadamardProduct(delta, delta)) == r"\delta^{[2]} \odot \delta^{[2]}"
    assert p.doprint(sp.OneMatrix(5, 1)) == r"\mathbf{1}"
    assert p.doprint(sp.IndexedBase("a")[sp.Symbol("j")]) == "a_{j}"
    s = DerivationLatexPrinter("subscript", "batch", roles=roles)
    assert s.doprint(A) == "A_{1}" and s.doprint(sp.MatrixSymbol("dW2", 3, 2)) == \
        r"\frac{\partial J}{\partial W_{2}}"
    with pytest.raises(ValueError, match="unknown notation"):
        DerivationLatexPrinter("arrows")


def test_printer_reads_roles_not_names():
    """A symbol prints by the role it is given; a name alone means nothing to the printer."""
    roles = {"weights_out": SymbolRole(Role.WEIGHT, 2), "err": SymbolRole(Role.ERROR, 3),
             "slope": SymbolRole(Role.LOCAL_DERIVATIVE, 1), "inputs": SymbolRole(Role.INPUT, 0)}
    p = DerivationLatexPrinter("bracket", "example", {1: r"\tanh"}, roles=roles)
    assert p.doprint(sp.MatrixSymbol("weights_out", 2, 2).T) == "W^{[2]T}"
    assert p.doprint(sp.MatrixSymbol("err", 2, 1)) == r"\delta^{[3]}"
    assert p.doprint(sp.MatrixSymbol("slope", 2, 1)) == r"\tanh'(z^{[1]})"
    assert p.with_mode("batch").doprint(sp.MatrixSymbol("inputs", 2, 5)) == "X"
    assert p.with_mode("batch").entry("err", "j") == r"\Delta^{[3]}_{jc}"
    assert DerivationLatexPrinter().doprint(sp.MatrixSymbol("W2", 2, 2)) == "W2"  # no role


# ----------------------------------------------------------------------------- worked example

def test_seed003_binary_numbers():
    d = derived(BINARY)
    numeric = evaluate_example(d, load_example(BINARY_VALUES, d))
    assert [float(v) for v in numeric["Z1"]] == [0.8, 0.52, 0.68, 0.7]  # exact
    assert [round(float(v), 2) for v in numeric["A1"]] == [0.69, 0.63, 0.66, 0.67]
    assert abs(float(numeric["A2"][0]) - 0.720898) < 1e-6
    assert abs(float(numeric.loss) - 0.327258) < 1e-6
    text = render_sections(d, example=load_example(BINARY_VALUES, d))["example"]
    assert r"\begin{bmatrix} 0.8 & 0.52 & 0.68 & 0.7 \end{bmatrix}^{T}" in text
    assert r"\begin{bmatrix} 0.5 & 0.5 & 0.5 & 0.5 \end{bmatrix}^{T} &&\text{$0.5$ for every unit}" in text
    assert r"\hat{y} &= a^{[2]} = 0.7209" in text
    assert "L &= 0.3273" in text
    # the document's figures: yhat 0.7207 is sigmoid of its z2 = 0.948 (0.948919 cut, not
    # rounded); L = 0.327 agrees
    assert r"$\hat{y}$ & $0.7207$ & $0.7209$ & $0.720898$ & \textbf{differs}" in text
    assert "$L$ & $0.327$ & $0.327$ & $0.327258$ & agrees" in text


def test_seed003_multiclass_numbers_and_erratum():
    d = derived(MULTICLASS)
    numeric = evaluate_example(d, load_example(MULTICLASS_VALUES, d))
    assert [float(v) for v in numeric["Z1"]] == [-0.19, -0.16, -0.04, 0.77]
    assert [round(float(v), 4) for v in numeric["A2"]] == [0.2303, 0.2804, 0.4893]
    assert round(float(numeric.loss), 4) == 1.2716
    text = render_sections(d, example=load_example(MULTICLASS_VALUES, d))["example"]
    assert r"\begin{bmatrix} 0.2303 & 0.2804 & 0.4893 \end{bmatrix}^{T}" in text
    assert "L &= 1.2716" in text
    assert r"$z^{[1]}_{3}$ & $-0.09$ & $-0.04$ & $-0.04$ & \textbf{differs}" in text
    assert r"$z^{[1]}_{1}$ & $-0.19$ & $-0.19$ & $-0.19$ & agrees" in text


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _reference_loss(kind, W1, b1, W2, b2, x, y):
    """An independent NumPy forward pass of seed 003's two networks, and its loss."""
    a1 = _sigmoid(W1 @ x + b1)
    z2 = W2 @ a1 + b2
    if kind == "binary":
        a2 = _sigmoid(z2)
        return float(-(y * np.log(a2) + (1 - y) * np.log(1 - a2)).sum())
    a2 = np.exp(z2) / np.exp(z2).sum()
    return float(-(y * np.log(a2)).sum())


@pytest.mark.parametrize("kind, spec, values", [("binary", BINARY, BINARY_VALUES),
                                                ("multiclass", MULTICLASS, MULTICLASS_VALUES)])
def test_worked_example_gradients_match_finite_differences(kind, spec, values):
    d = derived(spec)
    example = load_example(values, d)
    numeric = evaluate_example(d, example)
    params = {k: np.array(v.tolist(), dtype=float) for k, v in example.params.items()}
    x, y = (np.array(m.tolist(), dtype=float) for m in (example.x, example.y))
    args = lambda p: (kind, p["W1"], p["b1"], p["W2"], p["b2"], x, y)  # noqa: E731
    assert math.isclose(_reference_loss(*args(params)), float(numeric.loss), rel_tol=1e-12)
    h = 1e-6
    for name in ("W1", "b1", "W2", "b2"):
        grad = np.array(numeric[f"d{name}"].tolist(), dtype=float)
        for index in np.ndindex(params[name].shape):
            up = {k: v.copy() for k, v in params.items()}
            down = {k: v.copy() for k, v in params.items()}
            up[name][index] += h
            down[name][index] -= h
            fd = (_reference_loss(*args(up)) - _reference_loss(*args(down))) / (2 * h)
            assert abs(fd - grad[index]) < 1e-8, (name, index)


EXAMPLE_ERRORS = [
    ("W1: [[1, 2, 3, 4]]\n", 1, "W1", "expected 4 rows of 4 numbers"),
    ("W1: [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3]]\n", 1, "W1[3]",
     "expected 4 numbers in each row"),
    ("b1: [1, 2]\n", 1, "b1", "expected a list of 4 numbers (the biases of layer 1"),
    ("b1: .nan\n", 1, "b1", "expected a finite number"),
    ("b1: [" + "9" * 5000 + ", 0, 0, 0]\n", 1, "b1", "at most 400"),
    ("x: [1, 2, 3]\n", 1, "x", "expected a list of 4 numbers (one input example)"),
    ("y: 2\n", 1, "y", "expected 0/1 targets"),
    ("W3: 1\n", 1, "W3", "unknown key 'W3'"),
    ("W2: [[a, 1, 2, 3]]\n", 1, "W2[0]", "expected a number, got 'a'"),
]

_GOOD_BINARY = {"W1": "[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]", "b1": "0.5",
                "W2": "[[1, 2, 3, 4]]", "b2": "0.3", "x": "[1, 2, 3, 4]", "y": "1"}


def _values_text(override: str) -> tuple[str, int]:
    """A values file for seed 003's binary net with one line replaced; and that line's number."""
    key = override.split(":")[0]
    lines, line = [], 0
    for k, v in _GOOD_BINARY.items():
        if k == key:
            lines.append(override.rstrip("\n"))
            line = len(lines)
        else:
            lines.append(f"{k}: {v}")
    if not line:
        lines.append(override.rstrip("\n"))
        line = len(lines)
    return "\n".join(lines) + "\n", line


@pytest.mark.parametrize("override, _, field, message", EXAMPLE_ERRORS)
def test_example_values_are_checked(override, _, field, message):
    text, line = _values_text(override)
    with pytest.raises(SpecError) as info:
        load_example_text(text, derived(BINARY), "values.yaml")
    err = info.value
    assert err.file == "values.yaml" and err.line == line and err.field.startswith(field.split("[")[0])
    assert message in str(err), str(err)


def test_example_values_missing_key_and_hint():
    with pytest.raises(SpecError, match=r"missing value 'y'"):
        load_example_text("\n".join(f"{k}: {v}" for k, v in _GOOD_BINARY.items() if k != "y"),
                          derived(BINARY), "values.yaml")
    text, _ = _values_text("W3: 1")
    with pytest.raises(SpecError) as info:
        load_example_text(text, derived(BINARY), "values.yaml")
    assert info.value.hint == "did you mean 'W2'?"


def test_categorical_label_becomes_one_hot():
    d = derived(MULTICLASS)
    text = MULTICLASS_VALUES.read_text(encoding="utf-8").replace("y: [0, 1, 0]", "y: 1")
    example = load_example_text(text, d, "values.yaml")
    assert list(example.y) == [0, 1, 0] and example.label == 1
    with pytest.raises(SpecError, match="one-hot"):
        load_example_text(text.replace("y: 1", "y: [1, 1, 0]"), d, "values.yaml")


# ----------------------------------------------------------------------------- pdflatex

def _compile(derivation, tmp_path, name, **options):
    out = write_latex(derivation, tmp_path / f"{name}.tex", pdf=True, **options)
    too_wide = [(pt, line) for pt, line in latex_pdf.overfull_boxes(out.log) if pt > OVERFULL_LIMIT_PT]
    assert not too_wide, f"overfull boxes (pt, source line) in {name}.tex: {too_wide}"
    assert out.pdf.exists() and out.pages and out.pages > 1
    return out


@needs_pdflatex
@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_compiles(spec, tmp_path):
    _compile(derived(spec), tmp_path, spec.stem)


@needs_pdflatex
@pytest.mark.parametrize("notation", ["bracket", "subscript"])
def test_ten_layer_spec_compiles(notation, tmp_path):
    _compile(deep(), tmp_path, f"deep_{notation}", notation=notation)


SIGN_NOTE = r"with $\operatorname{sign}(0) = 0$"


@pytest.mark.parametrize("loss, output, shown", [
    ("{name: huber, delta: 2.5}", "identity",
     [r"$\mathcal{L}_{\mathrm{Huber}}$ ($\delta_{\mathrm{H}} = 2.5$)", r"\leq \frac{5}{2}"]),
    ("{name: huber, delta: 0.1}", "softmax", [r"($\delta_{\mathrm{H}} = 0.1$)", r"\leq \frac{1}{10}"]),
    ("mae", "identity", [r"$\mathcal{L}_{\mathrm{MAE}}$ of one example", SIGN_NOTE]),
    ("mae", "softmax", [SIGN_NOTE]),
    ("huber", "swish", [r"$\Delta^{[2]}_{jc}$ as in \eqref{"]),  # cases too wide for the table
])
def test_regression_losses_print_their_parameters_and_kink(loss, output, shown, tmp_path):
    """Huber's delta beside its name, as an activation's alpha, and exactly in its cases;
    MAE's sign(0) = 0 at its kink said where its derivative is (Huber has none at a = y)."""
    spec = load_spec_text(f"name: reg\ninput: 3\nlayers:\n  - {{units: 4, activation: tanh}}\n"
                          f"  - {{units: 3, activation: {output}}}\nloss: {loss}\n", "reg.yaml")
    derivation = derive(spec)
    document = render_document(derivation)
    for text in shown:
        assert text in document
    assert (SIGN_NOTE in document) == (spec.loss == "mae")
    if shutil.which("pdflatex"):
        _compile(derivation, tmp_path, f"{spec.loss}_{output}")


@needs_pdflatex
@pytest.mark.parametrize("spec, values", [(BINARY, BINARY_VALUES), (MULTICLASS, MULTICLASS_VALUES)])
def test_worked_examples_compile(spec, values, tmp_path):
    _compile(derived(spec), tmp_path, spec.stem, example=values, notation="subscript")


WIDE_SPEC = """\
name: wide_net
input: 30
layers:
  - {units: 20, activation: tanh}
  - {units: 12, activation: softmax}
loss: categorical_crossentropy
"""


@needs_pdflatex
def test_large_worked_example_is_elided_and_compiles(tmp_path):
    d = derive(load_spec_text(WIDE_SPEC, "wide.yaml"))
    rng = np.random.default_rng(0)
    lines = [f"W{l.index}: {rng.normal(0, 0.1, (l.units, l.fan_in)).round(3).tolist()}\n"
             f"b{l.index}: 0" for l in d.layers]
    text = "\n".join(lines) + f"\nx: {rng.random(30).round(3).tolist()}\ny: 3\n"
    (tmp_path / "values.yaml").write_text(text, encoding="utf-8")
    out = _compile(d, tmp_path, "mnist_example", example=tmp_path / "values.yaml")
    text = out.tex.read_text(encoding="utf-8")
    assert r"\vdots" in text and r"\ddots" in text and r"\cdots" in text


@needs_pdflatex
@needs_pdftoppm
def test_first_page_renders_and_is_not_blank(tmp_path):
    out = _compile(derived(EXAMPLES / "seed001_mnist.yaml"), tmp_path, "seed001")
    subprocess.run(["pdftoppm", "-gray", "-r", "50", "-f", "1", "-l", "1", "-singlefile",
                    str(out.pdf), str(tmp_path / "page1")], check=True, timeout=60)
    width, height, pixels = _read_pgm(tmp_path / "page1.pgm")
    assert abs(width - 413) <= 2 and abs(height - 585) <= 2  # A4 at 50 dpi
    ink = sum(1 for value in pixels if value < 128)
    assert ink > 0.01 * width * height, f"page 1 is (nearly) blank: {ink} dark pixels"


def _read_pgm(path: Path) -> tuple[int, int, bytes]:
    """A binary PGM (P5, 8-bit): width, height, pixel bytes."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    magic, width, height, maxval = fields[0], *map(int, fields[1:])
    assert magic == b"P5" and maxval == 255
    pixels = data[pos + 1:pos + 1 + width * height]
    assert len(pixels) == width * height
    return width, height, pixels


@needs_pdflatex
def test_compile_error_names_the_line(tmp_path):
    tex = tmp_path / "broken.tex"
    tex.write_text("\\documentclass{article}\n\\begin{document}\nfine\n\\undefinedmacro\n"
                   "\\end{document}\n", encoding="utf-8")
    with pytest.raises(CompileError) as info:
        latex_pdf.compile_pdf(tex)
    assert str(info.value) == f"{tex}:4: ! Undefined control sequence."
    assert not (tmp_path / "broken.pdf").exists()


def test_log_parsing():
    log = ("Overfull \\hbox (12.5pt too wide) in paragraph at lines 10--12\n"
           "Overfull \\hbox (0.3pt too wide) detected at line 40\n"
           "! Missing $ inserted.\n<inserted text>\n$\nl.57 a_b\n"
           "Output written on document.pdf (7 pages, 1234 bytes).\n")
    assert latex_pdf.overfull_boxes(log) == [(12.5, 10), (0.3, 40)]
    assert latex_pdf.first_error(log) == (57, "! Missing $ inserted.")
    assert latex_pdf.page_count(log) == 7
    assert latex_pdf.first_error("no errors here") is None


def test_missing_engine_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(latex_pdf, "engine_path", lambda engine=latex_pdf.ENGINE: None)
    with pytest.raises(EngineMissing, match="pdflatex was not found"):
        write_latex(derived(BINARY), tmp_path / "net.tex", pdf=True)
    assert (tmp_path / "net.tex").exists()  # the .tex is written first


def test_write_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "net.tex"
    target.write_text("old", encoding="utf-8")
    write_latex(derived(BINARY), target)
    assert target.read_text(encoding="utf-8").startswith("% Generated by backprop-derive")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.tex"]


# ----------------------------------------------------------------------------- CLI

def _cli(tmp_path, *args):
    return main(["--spec", str(BINARY), "--out", str(tmp_path / "gen"), *map(str, args)])


def test_cli_latex_writes_a_standalone_document(tmp_path, capsys):
    assert _cli(tmp_path, "--latex", tmp_path / "doc" / "net.tex") == 0
    text = (tmp_path / "doc" / "net.tex").read_text(encoding="utf-8")
    assert r"\documentclass" in text and r"\end{document}" in text
    assert "LaTeX -> " in capsys.readouterr().out
    assert not (tmp_path / "doc" / "net.pdf").exists()


def test_cli_latex_body(tmp_path):
    assert _cli(tmp_path, "--latex", tmp_path / "body.tex", "--latex-body",
                "--notation", "subscript") == 0
    text = (tmp_path / "body.tex").read_text(encoding="utf-8")
    assert r"\documentclass" not in text and r"\section{" in text and "W_{1}" in text


def test_cli_several_specs_write_into_a_folder(tmp_path):
    specs = [BINARY, EXAMPLES / "seed002_relu_sigmoid.yaml"]
    assert main(["--spec", *map(str, specs), "--out", str(tmp_path / "gen"),
                 "--latex", str(tmp_path / "tex"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "tex").iterdir()) == \
        ["relu_sigmoid_mse.tex", "sigmoid_bce_4_4_1.tex"]


@needs_pdflatex
def test_cli_pdf(tmp_path, capsys):
    assert _cli(tmp_path, "--latex", tmp_path / "net.tex", "--pdf", "--example", BINARY_VALUES) == 0
    assert (tmp_path / "net.pdf").read_bytes().startswith(b"%PDF")
    assert re.search(r"net\.pdf \(\d+ pages\)", capsys.readouterr().out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "net.pdf", "net.tex"]


def test_cli_pdf_without_engine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(latex_pdf, "engine_path", lambda engine=latex_pdf.ENGINE: None)
    assert _cli(tmp_path, "--latex", tmp_path / "net.tex", "--pdf") == 2
    err = capsys.readouterr().err
    assert "pdflatex was not found on PATH" in err and "net.tex was written" in err


def test_cli_compile_failure_is_reported(tmp_path, capsys, monkeypatch):
    def fail(tex, **kwargs):
        raise CompileError(f"{tex}:12: ! Undefined control sequence.")
    monkeypatch.setattr("derive.latex.compile_pdf", fail)
    assert _cli(tmp_path, "--latex", tmp_path / "net.tex", "--pdf") == 1
    assert "pdflatex failed: " in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--pdf"], "--pdf goes with --latex"),
    (["--latex-body"], "--latex-body goes with --latex"),
    (["--example", "v.yaml"], "--example goes with --latex"),
    (["--latex", "x.tex", "--latex-body", "--pdf"], "a --latex-body fragment has no preamble"),
    (["--latex", "x.tex", "--notation", "arrows"], "invalid choice: 'arrows'"),
])
def test_cli_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        _cli(tmp_path, *args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()


def test_cli_example_with_several_specs_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--spec", str(BINARY), str(MULTICLASS), "--latex", str(tmp_path),
              "--example", str(BINARY_VALUES)])
    assert "use it with one --spec" in capsys.readouterr().err


def test_cli_bad_example_values_write_nothing(tmp_path, capsys):
    values = tmp_path / "values.yaml"
    values.write_text(_values_text("x: [1, 2, 3]")[0], encoding="utf-8")
    assert _cli(tmp_path, "--latex", tmp_path / "net.tex", "--example", values) == 2
    err = capsys.readouterr().err
    assert f"{values}:5: x: expected a list of 4 numbers" in err
    assert not (tmp_path / "gen").exists() and not (tmp_path / "net.tex").exists()


def test_cli_missing_example_file(tmp_path, capsys):
    assert _cli(tmp_path, "--latex", tmp_path / "net.tex", "--example", tmp_path / "none.yaml") == 2
    assert "cannot read the example values" in capsys.readouterr().err
