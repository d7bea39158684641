"""The Errata section: each claim of a ``ClaimsReport`` typeset beside the derived formula,
refuted ones with their counterexample in numbers; and the sentence stating the proof's result.

The claim's formula is printed from its parse tree (``derive.formula``) with the document's
own names for the network's quantities (the Derivation's printer), so a claim reads in the
same notation as the derivation it is checked against.
"""

from __future__ import annotations

import re
from pathlib import Path

import sympy as sp

from ..activations import ACTIVATIONS
from ..claims import ClaimsReport, Counterexample, Verdict, notation, spec_rule
from ..derivation import M
from ..formula import Binary, Call, Name, Node, Num, Power, Transpose, Unary, Vector
from ..primitives import to_primitives
from .text import tex_escape, tex_prose, tt

__all__ = ["errata_context", "proof_sentence", "formula_tex", "notation_rows"]

# functions of the syntax that are not activations: their LaTeX
_FUNCTION_TEX = {"exp": r"\exp", "log": r"\log", "ln": r"\ln", "sqrt": r"\sqrt", "abs": "",
                 "sign": r"\operatorname{sign}", "erf": r"\operatorname{erf}", "Phi": r"\Phi",
                 # sums with their index: every entry (one example's units k), over the
                 # examples i (a row's), over the units k (a column's)
                 "phi": r"\phi", "sum": r"\sum_{k}", "rowsum": r"\sum_{i=1}^{m}",
                 "colsum": r"\sum_{k}"}
_LOOSE = ("add", "sub")


def _names(c) -> dict[str, str]:
    """The Derivation's names (W1, Z1, A0, Y, delta1, dW1, ...) in the document's notation."""
    d = c.d
    out = {"A0": c.tex(d.X.subs(M, 1)), "Y": c.tex(d.Y.subs(M, 1)), "m": "m", "eta": r"\eta",
           "z": "z", "a": "a", "L": "L", "dL/dA": r"\frac{\partial L}{\partial \hat{y}}"}
    symbols = [d.X.subs(M, 1), d.Y.subs(M, 1)]
    for layer in d.layers:
        symbols += [s.subs(M, 1) for s in (layer.W, layer.b, layer.Z, layer.A, layer.delta)]
        symbols += [grad.target for grad in (layer.grad_W, layer.grad_b)]
    for symbol in symbols:
        out.setdefault(symbol.name, c.tex(symbol))
        out[symbol.name + "^T"] = c.tex(sp.Transpose(symbol))
    return out


def formula_tex(node: Node, names: dict[str, str], resolve) -> str:
    """A claim's formula in LaTeX; ``resolve`` maps the document's names to the Derivation's."""
    def wrap(child: Node, loose: tuple[str, ...]) -> str:
        """The child, in parentheses where it binds more loosely than its parent (a sum inside
        a product; a matrix product inside an element-wise one, and the other way round)."""
        text = tex(child)
        if isinstance(child, Binary) and child.op in loose or isinstance(child, Unary) and loose:
            return rf"\left({text}\right)"
        return text

    def tex(n: Node) -> str:
        if isinstance(n, Num):
            return n.text
        if isinstance(n, Name):
            return names.get(resolve(n.name) or n.name, n.name)
        if isinstance(n, Unary):
            return "-" + wrap(n.arg, _LOOSE)
        if isinstance(n, Transpose):
            if isinstance(n.arg, Name):
                name = resolve(n.arg.name) or n.arg.name
                return names.get(name + "^T", "{" + tex(n.arg) + "}^{T}")
            return rf"\left({tex(n.arg)}\right)^{{T}}"
        if isinstance(n, Power):
            inner = tex(n.base)
            base = inner if isinstance(n.base, (Name, Num)) else rf"\left({inner}\right)"
            return f"{base}^{{{n.exponent}}}"
        if isinstance(n, Vector):
            return r"\begin{bmatrix} " + r" & ".join(tex(i) for i in n.items) + r" \end{bmatrix}"
        if isinstance(n, Call):
            if n.function in ACTIVATIONS:
                head = ACTIVATIONS[n.function].latex
            else:
                head = _FUNCTION_TEX.get(n.function, rf"\operatorname{{{n.function}}}")
            if n.function == "abs":
                return rf"\left|{tex(n.arg)}\right|"
            if n.function == "sqrt":
                return rf"\sqrt{{{tex(n.arg)}}}"
            return rf"{head}{chr(39) if n.prime else ''}\left({tex(n.arg)}\right)"
        if n.op == "add":
            return f"{tex(n.left)} + {tex(n.right)}"
        if n.op == "sub":
            return f"{tex(n.left)} - {wrap(n.right, _LOOSE)}"
        if n.op == "div":
            return rf"\frac{{{tex(n.left)}}}{{{tex(n.right)}}}"
        sep = r" \odot " if n.op == "hadamard" else r" \, "
        other = ("matmul",) if n.op == "hadamard" else ("hadamard",)
        return wrap(n.left, _LOOSE + other) + sep + wrap(n.right, _LOOSE + other)
    return tex(node)


def _lhs_tex(v: Verdict, names: dict[str, str]) -> str:
    if v.kind == "local derivative":
        act = ACTIVATIONS[v.quantity.split()[1].split("/")[0]]
        return rf"\frac{{d\,{act.latex}}}{{dz}}"
    if v.kind == "number":
        base = names.get(v.quantity, v.quantity)
        entry = v.claim.equation.lhs.partition("[")[2].rstrip("]")
        return f"{base}_{{{entry}}}" if entry else base
    return names.get(v.quantity, v.quantity)


def _fraction(value) -> str:
    value = sp.sympify(value)
    if value.is_Rational and value.q != 1:
        sign = "-" if value < 0 else ""
        return rf"{sign}\tfrac{{{abs(value.p)}}}{{{value.q}}}"
    if value.is_Rational:
        return str(value)
    if value.is_real is False or not value.is_number:
        return sp.latex(sp.N(value, 6))
    return f"{float(value):.6g}".replace("e-", r"\times 10^{-").replace("e+", r"\times 10^{") + \
        ("}" if "e" in f"{float(value):.6g}" else "")


def _small_matrix(matrix: sp.Matrix) -> str:
    if matrix.shape == (1, 1):
        return _fraction(matrix[0, 0])
    rows = [" & ".join(_fraction(v) for v in matrix.row(r)) for r in range(matrix.rows)]
    return r"\left[\begin{smallmatrix} " + r" \\ ".join(rows) + r" \end{smallmatrix}\right]"


POINT_PER_LINE = 4  # matrices of a counterexample's point on one displayed line


def _counterexample(cx: Counterexample, names: dict[str, str], seen: dict) -> dict:
    """The counterexample's numbers, displayed; a point already shown in full (``seen``: its
    key -> its label) is named, not repeated."""
    key = (cx.instance, cx.examples, tuple((n, tuple(v)) for n, v in cx.point))
    lines: list[str] = []
    if cx.instance and key in seen:
        where = f"At point~{seen[key]} (above)"
    else:
        shown = [f"{names.get(name, tex_escape(name))} = {_small_matrix(value)}"
                 for name, value in cx.point]
        lines = [r",\quad ".join(shown[k:k + POINT_PER_LINE])
                 for k in range(0, len(shown), POINT_PER_LINE)]
        sizes = "--".join(map(str, cx.instance))
        label = ""
        if cx.instance:
            label = seen[key] = f"P{len(seen) + 1}"
        where = (f"On a {sizes} instance of the network ({cx.examples} example"
                 f"{'s' if cx.examples > 1 else ''}), at the point~{label}" if cx.instance
                 else "At the point")
    entry = ""
    if cx.entry is not None and cx.claimed.shape != (1, 1):
        entry = f" (entry {cx.entry[0]},{cx.entry[1]} first differs)"
    between = [f"{_product_tex(name, names)} = {_small_matrix(value)}"
               for name, value in cx.intermediates]
    return {"where": where, "point": lines, "claimed": _small_matrix(cx.claimed),
            "between": r",\quad ".join(between),
            "derived": _small_matrix(cx.derived), "entry": entry,
            "quantity": tex_escape(cx.quantity),
            "lines": [tex_escape(line) for line in cx.lines]}


def _product_tex(name: str, names: dict[str, str]) -> str:
    """``W2^T delta2`` in the document's LaTeX names."""
    def one(part: str) -> str:
        if part.endswith("^T"):
            return names.get(part, "{" + names.get(part[:-2], tex_escape(part[:-2])) + "}^{T}")
        return names.get(part, tex_escape(part))
    return " ".join(one(part) for part in name.split())


def _derived_tex(c, v: Verdict) -> str:
    """The derived formula the claim is checked against, where the Derivation holds one."""
    d = c.d
    if v.kind == "gradient":
        for layer in d.layers:
            for grad in (layer.grad_W, layer.grad_b):
                if grad.target.name != v.quantity:
                    continue
                formula = c.tex(grad.per_example if not grad.regularization
                                else grad.formula.subs(M, 1))
                if layer.is_output:
                    return formula
                delta = c.tex(layer.delta_def.expr.subs(M, 1))
                return rf"{formula}, \quad {c.tex(layer.delta.subs(M, 1))} = {delta}"
    if v.kind == "error":
        for layer in d.layers:
            if layer.delta.name == v.quantity and not layer.is_output:
                return c.tex(layer.delta_def.expr.subs(M, 1))
    if v.kind == "local derivative":
        act = v.quantity.split()[1].split("/")[0]
        z = sp.Symbol("z", real=True)
        params = next((l.activation.param_dict for l in d.spec.layers
                       if l.activation.name == act), {})
        return c.tex(to_primitives(sp.diff(ACTIVATIONS[act].instantiate(z, params), z)))
    return ""


_LEADING_WORDS = ("the", "a", "an", "not", "at", "equal")


def _sentence(text: str) -> str:
    """A reason as a sentence: a leading word capitalised, a leading symbol (yhat) kept."""
    word = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if word in _LEADING_WORDS else text


def _reason(v: Verdict) -> str:
    """What the section says under a claim: nothing for a proven formula or figure (the
    section's opening says how), a short line for a proven rule, the reason for a refutation,
    its decimal numbers set as maths."""
    if v.proven:
        return tex_escape(f"the spec's rule, {v.derived}") if v.kind == "update" else ""
    text = tex_escape(_sentence(v.reason + (f"; {v.note}" if v.note else "")))
    return re.sub(r"(?<![\w.$-])(\$-\$|-)?(\d+\.\d+)", lambda m: f"${'-' if m.group(1) else ''}{m.group(2)}$",
                  text, flags=re.ASCII)


_READING_TEXT = {
    False: (r"The gradients and update rules are read as the batch objective's: $J$, the mean "
            r"loss over $m$ examples, checked at $m = 2$, so that a missing $1/m$ shows; the "
            r"loss $L$ and its derivative are one example's; a claim marked \emph{per example} is "
            r"read as one example's loss $L$."),
    True: (r"The document derives for one example, so the gradients and update rules are "
           r"read as one example's loss $L$'s (the claims file says \texttt{per\_example: "
           r"true}); a claim marked \emph{batch} is read as the batch objective $J$ over "
           r"$m = 2$ examples."),
}


_FRAC = re.compile(r"\\frac\{((?:[^{}]|\{[^{}]*\})*)\}\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")


def _inline(tex: str) -> str:
    """A left side for a table row: its fractions as a/b (one line high)."""
    return _FRAC.sub(lambda m: rf"{m.group(1)}/{m.group(2)}", tex)


def _objective(tex: str, v: Verdict) -> str:
    """A gradient read as the batch objective's is written with J, not the loss L."""
    if v.reading == "batch" and v.kind in ("gradient", "update"):
        return tex.replace(r"\partial L", r"\partial J")
    return tex


def _shape_refuted(v: Verdict) -> bool:
    """Refuted on shapes alone: the reason says all, no derived formula is needed beside it."""
    return v.counterexample is None and v.reason.startswith(("the formula has no shape",
                                                             "the formula is ("))


def _reading_override(report: ClaimsReport, v: Verdict) -> str:
    """``batch`` or ``per example`` where the claim's reading is not the file's."""
    if v.claim.per_example is None or v.claim.per_example == report.file.per_example:
        return ""
    return "per example" if v.claim.per_example else "batch"


def errata_context(c, report: ClaimsReport, resolve) -> dict:
    """The Errata section's context: every verdict, refuted ones with their numbers."""
    names = _names(c)
    items = []
    seen: dict = {}  # counterexample points shown in full, by their label
    for v in report.verdicts:
        lhs = _lhs_tex(v, names)
        relation = r"\leftarrow" if v.kind == "update" else "="
        items.append({
            "source": tex_prose(v.claim.source), "note": tex_prose(v.claim.note),
            "lhs": _objective(_inline(lhs), v), "verdict": v.word,
            "label": c.label(f"claim-{len(items) + 1}"),
            "claim": _objective(f"{lhs} {relation} "
                                f"{formula_tex(v.claim.equation.rhs, names, resolve)}", v),
            "proven": v.proven,
            "reason": _reason(v),
            "reading": _reading_override(report, v),
            "fault": tex_escape(v.claim.fault),
            "derived": (f"{lhs} = {d}" if (d := _derived_tex(c, v)) and not v.proven
                        and not _shape_refuted(v) else ""),
            "counterexample": (_counterexample(v.counterexample, names, seen)
                               if v.counterexample else None),
        })
    proven = sum(v.proven for v in report.verdicts)
    return {"document": tex_prose(report.file.document), "file": tt(Path(report.file.path).name),
            "count": len(report.verdicts), "proven": proven,
            "refuted": len(report.verdicts) - proven, "items": items,
            "reading": _READING_TEXT[report.file.per_example],
            "notes": [{"quote": tex_prose(n.quote), "source": tex_prose(n.source),
                       "fault": tex_escape(n.fault), "note": tex_prose(n.note)}
                      for n in report.file.notes],
            "rule": tex_escape(spec_rule(c.d.spec, "per example" if report.file.per_example
                                          else "batch").text),
            "instance": "--".join(map(str, report.instance))}


_MEANINGS = {"W": "weights of layer {l}", "b": "biases of layer {l}",
             "Z": "pre-activation of layer {l}", "A": "activation of layer {l}",
             "delta": "error term of layer {l}", "dW": "gradient of the weights of layer {l}",
             "db": "gradient of the biases of layer {l}"}
_GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu", "sigma",
          "phi", "Phi", "psi", "omega", "Sigma", "Delta", "Theta")


def _their_tex(name: str) -> str:
    """A document's symbol as maths when it is a plain name (c_x, h1, alpha), else as text."""
    match = re.fullmatch(r"([A-Za-z]+?)(?:_([A-Za-z0-9]+)|(\d+))?", name, re.ASCII)  # h١: text
    if not match:
        return tex_escape(name)
    base, sub = match.group(1), match.group(2) or match.group(3)
    base = f"\\{base}" if base in _GREEK else base if len(base) == 1 else rf"\mathrm{{{base}}}"
    return f"${base}_{{{sub}}}$" if sub else f"${base}$"


def notation_rows(c, report: ClaimsReport) -> tuple[tuple[str, str, str], ...]:
    """(the document's symbol, this document's, what it is) for the claims file's symbols."""
    names = _names(c)
    names["J"] = "J"
    rows = []
    for theirs, ours in notation(c.d, report.file):
        if ours in ACTIVATIONS:
            here, meaning = f"${ACTIVATIONS[ours].latex}$", "the activation function"
        elif ours == "A0":
            here, meaning = f"${names['A0']}$", "the input"
        elif ours == f"A{c.depth}" and ours not in ("A0",):
            here, meaning = f"${names[ours]}$", "the output (prediction)"
        elif ours in ("L", "J", "eta", "Y"):
            here = {"L": "$L$", "J": "$J$", "eta": r"$\eta$", "Y": f"${names['Y']}$"}[ours]
            meaning = {"L": "the loss of one example", "J": "the mean loss over the batch",
                       "eta": "the learning rate", "Y": "the target"}[ours]
        else:
            kind, layer = ours.rstrip("0123456789"), ours[len(ours.rstrip("0123456789")):]
            here = f"${names.get(ours, ours)}$"
            meaning = _MEANINGS.get(kind, "").format(l=layer)
        rows.append((_their_tex(theirs), here, meaning))
    return tuple(rows)


def proof_sentence(proof) -> str:
    """What ``derive --check`` established, in one paragraph."""
    sizes = "--".join(map(str, proof.instance))
    what = (f"on a {sizes} instance" if "instances" not in proof.note
            else "on small instances")
    note = tex_escape(proof.note.lstrip("; "))
    if proof.ok:
        return (f"The proof of this derivation (\\texttt{{derive --check}}) ran {what} "
                f"({tex_escape(', '.join(proof.activations))}; {tex_escape(proof.loss)})"
                f"{'; ' + note if note else ''}: every parameter becomes a symbol, the scalar "
                f"loss over two examples is written out from the declarations, and the "
                f"gradients printed here agree exactly with SymPy's differentiation of it for "
                f"all {proof.parameters} parameters at {proof.points} random rational points.")
    return (f"The proof of this derivation (\\texttt{{derive --check}}) ran {what} and "
            f"\\textbf{{failed}} for {tex_escape(', '.join(proof.wrong_quantities))}: the "
            f"formulas printed for them do not agree with SymPy's differentiation of the loss.")
