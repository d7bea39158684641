"""Stage 3c: ``Derivation -> LaTeX``: the context of each section, then the templates.

Python decides what each line says and prints every formula from the Derivation's SymPy
objects with ``DerivationLatexPrinter``; the Jinja templates in ``templates/`` only lay the
sections out.  Nothing is re-derived here: steps come from ``LocalActivation.steps``,
``SoftmaxJacobian.steps`` and ``LocalOutput.delta_steps``; products from ``Gradient.chain``;
shapes from the matrix expressions.  Where the document shows a composition the Derivation
holds in pieces (the nested network, a sum over a Kronecker delta, the objective J), it is
built here from those pieces and printed.

Sections, in order (the issue's list): overview, architecture (with the dimension analysis),
forward, loss, local derivatives, gradients (chain rule, recurrence, shape checks), batch
(vectorised form and the generated code's layout), updates, and the worked example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import sympy as sp
from sympy.core.symbol import Str
from sympy.functions.elementary.hyperbolic import HyperbolicFunction

from codegen.printers.numpy import NumPyCodePrinter

from ..claims import claims_names
from ..derivation import Columnwise, Derivation, Layer, M, MatrixDef
from ..local import INDEX, Z_SYM, Step, StepKind, positive_lead, resolve_deltas
from ..optimizers import FULL_BATCH
from ..primitives import PRIMITIVES
from ..roles import Role
from .errata import errata_context, notation_rows, proof_sentence
from .example import Example, NumericExample, evaluate_example
from .printer import Applied, DerivationLatexPrinter, Elided
from .text import code_tt, tex_escape, tt

__all__ = ["Row", "Table", "render_sections", "render_body", "render_document", "SECTIONS",
           "tex_escape"]

_TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = ("overview", "architecture", "forward", "loss", "local", "gradients", "batch",
            "updates", "example", "errata")
FACTORS_PER_LINE = 7  # chain-rule factors on one printed line
NESTED_MAX_DEPTH = 4  # deeper networks show the nested expression with the middle elided
ELIDE_ROWS, ELIDE_COLS = 8, 6  # numeric matrices larger than this are shown with ellipses
DECIMALS = 4
_WEIGHT_SHAPED = (Role.WEIGHT, Role.WEIGHT_GRADIENT, Role.SIGN)  # (n_l x n_{l-1})

# What each kind of step does, as a sentence before it (fallback: the step's note).
_STEP_SENTENCES = {
    StepKind.DIFFERENTIATED: "SymPy differentiates the declaration:",
    StepKind.ALMOST_EVERYWHERE: r"Away from the points where a sign or a step jumps, their "
                                r"derivative $\delta$ is $0$:",
    StepKind.SIMPLIFIED: "Simplified, and written with the named functions:",
    StepKind.IN_OUTPUT: r"Written in the output $a = g(z)$, so that the "
                        r"backward pass reuses the cached activation:",
    StepKind.QUOTIENT_RULE: "By the quotient rule:",
    StepKind.CASE_SAME: r"Case $i = j$, where $\mathbb{I}_{ij} = 1$:",
    StepKind.CASE_SAME_IN_OUTPUTS: r"In the outputs $a_i$:",
    StepKind.CASE_OTHER: r"Case $i \ne j$, where $\mathbb{I}_{ij} = 0$:",
    StepKind.CASE_OTHER_IN_OUTPUTS: r"In the outputs:",
    StepKind.CHAIN_RULE_JACOBIAN: r"Through the softmax Jacobian:",
    StepKind.KRONECKER_PICK: r"The indicator $\mathbb{I}_{ij}$ picks the term $i = j$:",
    StepKind.ONE_HOT: r"The targets are one-hot, so $\sum_i y_i = 1$:",
    StepKind.CHAIN_RULE: "By the chain rule, element by element:",
    StepKind.SUBSTITUTED: r"Substituting $\partial L/\partial a_j$ and $g'$:",
    StepKind.DENSE_WEIGHT: r"Only the term $q = k$ depends on $W_{jk}$, and only when $i = j$:",
    StepKind.DENSE_INPUT: r"Only the term $q = k$ depends on $x_k$:",
    StepKind.DENSE_BIAS: r"Only $b_i$ depends on $b_j$, when $i = j$:",
}


# ----------------------------------------------------------------------------- literals

@dataclass(frozen=True)
class Row:
    """One row of an ``align``: ``lhs`` then ``rhs`` (relation included), one string per
    printed line; the number goes on the last line.  ``text`` is a sentence set before the
    row, ``note`` a remark in a column of its own (a shape, a reference)."""

    lhs: str
    rhs: tuple[str, ...]
    label: str = ""
    text: str = ""
    numbered: bool = True
    note: str = ""


@dataclass(frozen=True)
class Table:
    columns: str  # tabular column spec
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    foot: tuple[str, ...] = ()


def _row(lhs: str, rhs: str | tuple[str, ...] | list[str], label: str = "", text: str = "",
         numbered: bool = True, note: str = "") -> Row:
    lines = (rhs,) if isinstance(rhs, str) else tuple(rhs)
    return Row(lhs, lines, label, text, numbered, note)


def _sentence(step: Step) -> str:
    """The sentence set before a step: its kind's, else its note as a sentence."""
    if step.kind in _STEP_SENTENCES:
        return _STEP_SENTENCES[step.kind]
    text = tex_escape(step.note)
    return (text[:1].upper() + text[1:] + ":") if text else ""


# ----------------------------------------------------------------------------- the context

@dataclass
class _Doc:
    """The Derivation with its printers and label scheme, shared by the section builders."""

    d: Derivation
    notation: str
    p: DerivationLatexPrinter = field(init=False)  # one example
    P: DerivationLatexPrinter = field(init=False)  # the batch

    def __post_init__(self):
        activations = {layer.index: layer.activation.latex for layer in self.d.layers}
        self.p = DerivationLatexPrinter(self.notation, "example", activations,
                                        roles=self.d.roles_by_name)
        self.P = self.p.with_mode("batch")

    # names and labels
    @property
    def prefix(self) -> str:
        return f"bd:{self.d.spec.name}"

    def label(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def ref(self, key: str) -> str:
        return rf"\eqref{{{self.label(key)}}}"

    def sec(self, key: str) -> str:
        return f"{self.prefix}:sec:{key}"

    def n(self, l) -> str:
        """n_l, the width of layer l, in the notation."""
        return self.p.tagged("n", l)

    @property
    def depth(self) -> int:
        return self.d.spec.depth

    # printing
    def tex(self, expr, batch: bool = False) -> str:
        return (self.P if batch else self.p).doprint(expr)

    @staticmethod
    def one(expr: sp.MatrixExpr) -> sp.MatrixExpr:
        """The per-example form of a batch expression: m = 1."""
        return expr.subs(M, 1)

    def at_layer(self, expr: sp.Expr, layer: Layer) -> sp.Expr:
        """An index-form expression of the output pieces, written for layer ``layer``."""
        I = INDEX
        return expr.xreplace({I.a: sp.IndexedBase(layer.A.name), I.z: sp.IndexedBase(layer.Z.name),
                              I.y: sp.IndexedBase(self.d.Y.name), I.n: layer.units})

    def symbolic(self, expr: sp.MatrixExpr) -> sp.MatrixExpr:
        """The expression with symbolic widths n_l in place of the declared numbers: a layer's
        matrices have n_l rows, and its weight-shaped ones (W, dJ/dW, sign W) n_{l-1} columns."""
        widths = self.d.widths
        mapping = {}
        for symbol in expr.atoms(sp.MatrixSymbol):
            role, layer = self.d.role_of(symbol)
            cols = widths[layer - 1] if role in _WEIGHT_SHAPED else symbol.shape[1]
            mapping[symbol] = sp.MatrixSymbol(symbol.name, widths[layer], cols)
        return expr.xreplace(mapping)

    def shape_rows(self, expr: sp.MatrixExpr, batch: bool = False, text: str = "Shapes:") -> Row:
        """The shape check of an expression: with symbolic widths, then with the numbers."""
        printer = self.P if batch else self.p
        general = self.symbolic(expr)
        return _row("", (rf"\quad {printer.shape_factors(general)} = {printer.dims(general.shape)}",
                         rf"\quad {printer.shape_factors(expr)} = {printer.dims(expr.shape)}"),
                    text=text, numbered=False)


# ----------------------------------------------------------------------------- sections

def _file_name(path: str | None) -> str:
    return tt(Path(path).name) if path else ""


def _overview(c: _Doc, example: Example | None) -> dict:
    u, v = sp.MatrixSymbol("u", 3, 1), sp.MatrixSymbol("v", 3, 1)
    j = INDEX.j
    U, V = sp.IndexedBase("u"), sp.IndexedBase("v")
    spec = c.d.spec
    last = c.d.layers[-1]
    hadamard = c.tex(sp.HadamardProduct(u, v))
    return {
        "name": tt(spec.name), "source": _file_name(spec.source),
        "sizes": "--".join(map(str, spec.layer_sizes)), "depth": c.depth,
        "a": c.p.tagged("a", "l"), "z": c.p.tagged("z", "l"), "W": c.p.tagged("W", "l"),
        "b": c.p.tagged("b", "l"), "delta": c.p.tagged(r"\delta", "l"), "n": c.n("l"),
        "delta_def": c.p.partial("L", c.p.tagged("z", "l"), inline=True),
        "x": c.tex(c.d.X.subs(M, 1)), "y": c.tex(c.d.Y.subs(M, 1)),
        "output": c.tex(last.A.subs(M, 1)),
        "hadamard_entry": rf"({hadamard})_{{j}} = {c.tex(U[j] * V[j])}",
        "example": _file_name(example.source) if example else "",
    }


def _architecture(c: _Doc) -> dict:
    rows = [("0 (input)", str(c.d.spec.input), "", "", "", "")]
    for layer in c.d.layers:
        act = layer.activation
        params = ", ".join(rf"{_param_name(act, k)} = {_number_text(v)}" for k, v in act.params)
        name = f"${act.latex}$" + (f" (${params}$)" if params else "")
        count = int(layer.units * layer.fan_in + layer.units)
        rows.append((str(layer.index) + (" (output)" if layer.is_output else ""),
                     str(layer.units), name,
                     f"${c.p.dims(layer.W.shape)}$", f"${c.p.dims(layer.b.shape)}$", f"{count:,}"))
    total = int(sum(l.units * l.fan_in + l.units for l in c.d.layers))
    table = Table("rrlccr", ("layer $l$", f"units ${c.n('l')}$", "activation",
                             f"${c.p.tagged('W', 'l')}$", f"${c.p.tagged('b', 'l')}$", "parameters"),
                  tuple(rows), ("total", "", "", "", "", f"{total:,}"))
    analysis = []
    for layer in c.d.layers:
        z = c.one(layer.z_def.expr)
        general = c.symbolic(z)
        analysis.append(_row(c.tex(layer.Z.subs(M, 1)), f"= {c.tex(z)}", c.label(f"dim{layer.index}")))
        analysis.append(_row(rf"{c.p._print(general.shape[0])} \times 1",
                             f"= {c.p.shape_factors(general, brackets=True)}", numbered=False))
        analysis.append(_row(rf"{z.shape[0]} \times 1", f"= {c.p.shape_factors(z, brackets=True)}",
                             numbered=False))
    return {"table": table, "analysis": analysis,
            "W": c.p.tagged("W", "l"), "n": c.n("l"), "n_prev": c.n("l-1")}


def _param_name(act, key: str) -> str:
    """A parameter's symbol as its declaration writes it (``Param.latex``)."""
    return act.declaration.params[key].latex


def _number_text(value: float) -> str:
    """A spec's number for math mode: 0.1, 64, 10^{-5}, 2.5 \times 10^{-4}."""
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.6e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        power = f"10^{{{int(exponent)}}}"
        return power if mantissa == "1" else rf"{mantissa} \times {power}"
    return f"{value:g}"


def _activation_of(c: _Doc, layer: Layer, batch: bool = False) -> tuple[str, str]:
    """(lhs, rhs) of a = g(z) for the layer: g applied to z, or softmax entry by entry."""
    printer = c.P if batch else c.p
    if isinstance(layer.a_def, Columnwise):
        return printer.entry(layer.A.name, "j"), f"= {c.tex(c.at_layer(layer.a_def.expr, layer), batch)}"
    Z = layer.Z if batch else layer.Z.subs(M, 1)
    A = layer.A if batch else layer.A.subs(M, 1)
    return c.tex(A, batch), f"= {c.tex(Applied(layer.activation.latex, Z), batch)}"


def _forward(c: _Doc) -> dict:
    rows = []
    for layer in c.d.layers:
        z = c.one(layer.z_def.expr)
        shape = c.p.dims(z.shape)
        rows.append(_row(c.tex(layer.Z.subs(M, 1)), f"= {c.tex(z)}", c.label(f"z{layer.index}"),
                         note=shape))
        lhs, rhs = _activation_of(c, layer)
        rows.append(_row(lhs, rhs, c.label(f"a{layer.index}"), note=shape))
    last = c.d.layers[-1]
    return {"rows": rows, "nested": _nested(c), "output": c.tex(last.A.subs(M, 1)),
            "scalar": _written_out(c), "scalar_label": c.label("scalar"),
            "elided": c.depth > NESTED_MAX_DEPTH, "label": c.label("nested"),
            "vector": [f"${layer.activation.latex}$" for layer in c.d.layers
                       if isinstance(layer.a_def, Columnwise)]}


def _nested(c: _Doc) -> str:
    """The whole network as one expression, g_L(W_L g_{L-1}(...) + b_L), by substitution."""
    layers = c.d.layers

    def wrap(layer: Layer, inner: sp.MatrixExpr) -> sp.MatrixExpr:
        z = c.one(layer.z_def.expr).xreplace({layer.A_prev.subs(M, 1): inner})
        return Applied(layer.activation.latex, z)

    values = [c.d.X.subs(M, 1)]
    for layer in layers:
        values.append(wrap(layer, values[-1]))
    if len(layers) <= NESTED_MAX_DEPTH:
        return c.tex(values[-1])
    keep = 2  # innermost and outermost layers written out
    value: sp.MatrixExpr = Elided(values[keep], layers[-keep - 1].A.subs(M, 1).shape)
    for layer in layers[-keep:]:
        value = wrap(layer, value)
    return c.tex(value)


WRITTEN_OUT_MAX = (2, 2, 1)  # networks this small get their output written out in scalars


def _written_out(c: _Doc) -> list[str]:
    """The output as one scalar formula of every weight, as seed 003 writes its 2-2-1
    network's ŷ (one line per hidden unit); [] for a larger network or a vector activation."""
    sizes = c.d.layer_sizes
    if len(sizes) != len(WRITTEN_OUT_MAX) or any(
            n > limit for n, limit in zip(sizes, WRITTEN_OUT_MAX)) or \
            any(layer.activation.vector for layer in c.d.layers):
        return []
    hidden, out = c.d.layers
    x = [c.p.entry(c.d.X.name, str(k + 1)) for k in range(hidden.fan_in)]

    def unit(layer: Layer, j: int, inputs: list[str]) -> str:
        terms = [f"{c.p.entry(layer.W.name, f'{j}{k + 1}')} {v}" for k, v in enumerate(inputs)]
        return " + ".join(terms + [c.p.entry(layer.b.name, str(j))])

    inner = [rf"{hidden.activation.latex}\bigl({unit(hidden, j + 1, x)}\bigr)"
             for j in range(hidden.units)]
    weights = [c.p.entry(out.W.name, f"1{k + 1}") for k in range(hidden.units)]
    lines = [f"{w} \\, {h}" for w, h in zip(weights, inner)]
    lines[0] = rf"= {out.activation.latex}\Bigl({lines[0]}"
    lines[1:] = [rf"\quad + {line}" for line in lines[1:]]
    lines[-1] += rf" + {c.p.entry(out.b.name, '1')}\Bigr)"
    return lines


class LayerNorm(sp.Function):
    """A penalty's norm of W^{[l]} (display only): its ``Penalty.norm_latex`` and the layer."""

    nargs = 2

    def _latex(self, printer, exp=None):
        template, layer = self.args
        return template.name.format(W=printer.tagged("W", printer._print(layer)))


def _lambda_values(c: _Doc) -> str:
    return ", ".join(rf"{c.tex(p.symbol)} = {_number_text(float(p.strength))}"
                     for p in c.d.objective.penalties)


def _loss(c: _Doc) -> dict:
    last = c.d.layers[-1]
    out, objective = c.d.output, c.d.objective
    per_example = c.at_layer(objective.per_example, last)
    if last.units == 1:  # no sum over one unit
        per_example = per_example.doit()
    l = sp.Symbol("l", integer=True, positive=True)
    terms = [rf"\frac{{1}}{{{c.tex(M)}}} {c.tex(objective.batch_sum)}"]
    for p in objective.penalties:
        norms = sp.Sum(LayerNorm(Str(p.norm_latex), l), (l, 1, c.depth))
        terms.append(f"{c.tex(p.symbol * p.coefficient)} {c.tex(norms)}")
    logits = None
    if out.per_example_logits is not None:
        in_logits = c.at_layer(out.per_example_logits, last)
        logits = _row("L", f"= {c.tex(in_logits.doit() if last.units == 1 else in_logits)}",
                      c.label("loss-logits"))
    return {
        "per_example": _row("L", f"= {c.tex(per_example)}", c.label("loss")),
        "logits": logits,
        "objective": _row("J", f"= {' + '.join(terms)}", c.label("objective")),
        "regularized": bool(objective.penalties), "lambdas": _lambda_values(c),
        "loss_name": _loss_name(out.loss), "n_out": last.units,
        "norms": {p.name for p in objective.penalties},
        "sparse": (rf"L = -\log {c.p.entry(last.A.name, 'c')}" if out.loss.one_hot else ""),
    }


def _loss_name(loss) -> str:
    """The loss's symbol, with its parameters' values as the architecture table gives an
    activation's: L_Huber (delta_H = 2.5)."""
    params = ", ".join(rf"{loss.params[key].latex} = {_number_text(float(value))}"
                       for key, value in loss.values)
    return f"${loss.latex}$" + (f" (${params}$)" if params else "")


# -- local derivatives -----------------------------------------------------------------

def _local(c: _Doc) -> dict:
    I = INDEX
    dense = c.d.dense
    dense_rows = [_row(c.tex(I.z[I.i]), f"= {c.tex(dense.z)}", c.label("dense"))]
    for key, step in (("dzdW", dense.dz_dW), ("dzdx", dense.dz_dx), ("dzdb", dense.dz_db)):
        dense_rows.append(_row(c.tex(step.lhs), f"= {c.tex(step.rhs)}", c.label(key),
                               _sentence(step)))
    activations: list[dict] = []
    seen: dict[tuple, int] = {}
    for layer in c.d.layers:
        act = layer.activation
        key = (act.name, act.params)
        if act.vector:
            continue
        if key in seen:
            activations[seen[key]]["layers"].append(layer.index)
            continue
        seen[key] = len(activations)
        activations.append(_activation_steps(c, layer))
    last = c.d.layers[-1]
    return {"dense": dense_rows, "activations": activations,
            "jacobian": _jacobian(c, last) if last.activation.vector else None,
            "output": _output_error(c, last), "x": c.tex(I.x[I.k]),
            "a_prev": c.p.tagged("a", "l-1"),
            "last": c.tex(last.A.subs(M, 1)), "last_z": c.tex(last.Z.subs(M, 1))}


def _act_label(act) -> str:
    params = "".join(f"-{k}{v:g}" for k, v in act.params)
    return f"act-{act.name}{params}"


def _activation_steps(c: _Doc, layer: Layer) -> dict:
    act = layer.activation
    printer = DerivationLatexPrinter(c.notation, "example", functions={"g": act.latex})
    z = Z_SYM
    label = _act_label(act)
    g = printer.doprint(sp.Function("g")(z))
    declared = printer.doprint(act.expr)
    display = printer.doprint(act.display)
    forms = [declared, display]
    if act.expr.atoms(HyperbolicFunction):  # tanh z: its definition in exponentials too
        forms.append(printer.doprint(act.expr.rewrite(sp.exp)))
    definition = [f"= {tex}" for tex in dict.fromkeys(forms) if not _same(tex, g)]
    rows = [_row(g, definition, c.label(label + "-def"))] if definition else []
    steps = [s for s in act.steps if s.kind is not StepKind.DEFINITION]
    for k, step in enumerate(steps):
        key = label if k == len(steps) - 1 else f"{label}-{k}"
        _append_step(rows, _row(printer.doprint(step.lhs), f"= {printer.doprint(step.rhs)}",
                                c.label(key), _sentence(step)))
    primitives = [cls for cls in PRIMITIVES
                  if any(s.rhs.has(cls) for s in act.steps) and not _same(printer.doprint(cls(z)), g)]
    definitions = [_row(printer.doprint(cls(z)), f"= {printer.doprint(cls.definition(z))}",
                        c.label(f"prim-{cls.__name__}-{label}")) for cls in primitives]
    return {"name": f"${act.latex}$", "layers": [layer.index], "rows": rows,
            "definitions": definitions, "convention": _convention(act, printer)}


def _append_step(rows: list[Row], row: Row) -> None:
    """Add a derivation step, unless it prints the same line as the step before (SymPy's
    simplification of a form already simplest): then the step before takes its label."""
    if rows and rows[-1].lhs == row.lhs and rows[-1].rhs[-1] == row.rhs[-1]:
        rows[-1] = Row(rows[-1].lhs, rows[-1].rhs, row.label, rows[-1].text,
                       rows[-1].numbered, rows[-1].note)
        return
    rows.append(row)


def _same(a: str, b: str) -> bool:
    """Two printings of one thing, up to delimiter sizes and spaces."""
    def norm(tex):
        for noise in (r"\left", r"\right", " ", "{", "}"):
            tex = tex.replace(noise, "")
        return tex
    return norm(a) == norm(b)


def _convention(act, printer: DerivationLatexPrinter) -> str:
    """The value taken at a kink of a piecewise g (ReLU'(0) = 0), when g' jumps there."""
    d = act.derivative
    if not isinstance(d, sp.Piecewise) or len(d.args) != 2:
        return ""
    (left, cond), (right, _) = d.args
    if not isinstance(cond, sp.core.relational.Relational) or cond.lhs != Z_SYM:
        return ""
    point = cond.rhs
    below, above = left.subs(Z_SYM, point), sp.limit(right, Z_SYM, point, "+")
    if sp.simplify(below - above) == 0:
        return ""
    name = printer.functions["g"]
    at = printer.doprint(d.subs(Z_SYM, point))
    return (rf"${name}$ has a kink at $z = {printer.doprint(point)}$, where its one-sided "
            rf"derivatives are ${printer.doprint(below)}$ and ${printer.doprint(above)}$. "
            rf"The derivative there is the value of the branch ${printer.doprint(cond)}$: "
            rf"${name}'({printer.doprint(point)}) = {at}$, the convention the generated code uses.")


def _factored(expr: sp.Expr) -> sp.Expr:
    """A polynomial shown factored for reading: -a^2 + a -> a (1 - a)."""
    return positive_lead(sp.factor(expr))


def _jacobian(c: _Doc, layer: Layer) -> dict:
    """The vector activation's Jacobian by the quotient rule, both cases (SoftmaxJacobian.steps)."""
    I = INDEX
    jac = layer.activation.jacobian
    i, j = I.i, I.j
    u, v = sp.Symbol("u"), sp.Symbol("v")
    rule = (v * sp.Derivative(u, I.z[j]) - u * sp.Derivative(v, I.z[j])) / v**2
    parts = [
        _row("u", f"= {c.tex(jac.numerator)}", numbered=False,
             note=rf"{c.p.partial('u', c.tex(I.z[j]), inline=True)} = {c.tex(jac.d_numerator)}"),
        _row("v", f"= {c.tex(jac.denominator)}", numbered=False,
             note=rf"{c.p.partial('v', c.tex(I.z[j]), inline=True)} = {c.tex(jac.d_denominator)}"),
    ]
    rows = []
    for k, step in enumerate(jac.steps):
        rhs = [f"= {c.tex(step.rhs)}"]
        if step.kind is StepKind.QUOTIENT_RULE:
            rhs.insert(0, f"= {c.tex(rule)}")
        if step.kind is StepKind.CASE_SAME_IN_OUTPUTS:
            factored = _factored(step.rhs)
            if c.tex(factored) != c.tex(step.rhs):
                rhs.append(f"= {c.tex(factored)}")
        rows.append(_row(c.tex(step.lhs), rhs, c.label(f"jacobian-{k}"),
                         _sentence(step) if step.kind is not StepKind.DEFINITION else ""))
    cases = (rf"= \begin{{cases}} {c.tex(_factored(jac.same))} & \text{{if }} i = j \\ "
             rf"{c.tex(jac.other)} & \text{{if }} i \ne j \end{{cases}}")
    rows.append(_row(c.tex(sp.Derivative(I.a[i], I.z[j])), (cases, f"= {c.tex(jac.general)}"),
                     c.label("jacobian"), (r"Both cases in one formula, with the indicator $\mathbb{I}_{ij}$ (1 when $i = j$, "
                      r"else 0: the Kronecker delta, not written $\delta_{ij}$ here because "
                      r"$\delta$ is the error term):")))
    return {"parts": parts, "rows": rows, "name": f"${layer.activation.latex}$"}


def _output_error(c: _Doc, layer: Layer) -> dict:
    I = INDEX
    out = c.d.output
    i, j = I.i, I.j
    a, y = sp.Symbol("a_j", real=True), sp.Symbol("y_j", real=True)
    raw = sp.diff(out.loss.unit(a, y), a).xreplace({a: I.a[j], y: I.y[j]})
    dLda = [f"= {c.tex(raw)}"] if c.tex(raw) != c.tex(out.dL_da) else []
    rows = [_row(c.tex(sp.Derivative(I.L, I.a[j])), dLda + [f"= {c.tex(out.dL_da)}"],
                 c.label("dLda"),
                 f"The loss {c.ref('loss')} differentiated by SymPy, for one output unit:")]
    previous = None
    for k, step in enumerate(out.delta_steps):
        rhs = [f"= {c.tex(step.rhs)}"]
        if step.kind is StepKind.SIMPLIFIED and previous is not None:
            rhs = _cancelled(c, previous, I.a[j]) + rhs
        previous = step.rhs
        if step.kind is StepKind.CHAIN_RULE_JACOBIAN:
            generic = sp.Sum(sp.Mul(sp.Derivative(I.L, I.a[i]), sp.Derivative(I.a[i], I.z[j]),
                                    evaluate=False), (i, 1, I.n))
            product = sp.Sum(sp.Mul(out.dL_da.subs(j, i), layer.activation.jacobian.general,
                                    evaluate=False), (i, 1, I.n))
            rhs = list(dict.fromkeys([f"= {c.tex(generic)}", f"= {c.tex(product)}",
                                      f"= {c.tex(step.rhs)}"]))
        key = "delta-out" if k == len(out.delta_steps) - 1 else f"delta-out-{k}"
        if k == len(out.delta_steps) - 1 and step.rhs.has(sp.Sum):
            factored = f"= {c.tex(_factored_sums(step.rhs))}"
            rhs = list(dict.fromkeys(rhs + [factored]))
        text = _sentence(step)
        if step.kind is StepKind.CHAIN_RULE_JACOBIAN and _cancels(out.dL_da, I.a[j]):
            text = (r"Through the softmax Jacobian; its factor $a_i$ cancels the $1/a_i$ of "
                    r"$\partial L/\partial a_i$:")
        _append_step(rows, _row(c.tex(step.lhs), rhs, c.label(key), text))
    return {"rows": rows, "uses_sum_y": out.uses_sum_y, "result": c.tex(out.delta),
            "sign_at_target": _sign_at_target(out.dL_da),
            "loss": f"${out.loss.latex}$", "activation": f"${layer.activation.latex}$"}


def _sign_at_target(dL_da: sp.Expr) -> bool:
    """dL/da_j takes sign(0) where a_j = y_j, the loss's kink (MAE's |a - y|), rather than a
    branch that holds there (Huber's a - y within delta)."""
    I, held = INDEX, sp.Function("held_sign")
    return dL_da.replace(sp.sign, held).subs(I.a[I.j], I.y[I.j]).has(held)


def _cancelled(c: _Doc, expr: sp.Expr, a: sp.Expr) -> list[str]:
    """The line before a cancellation: a denominator a^2 - a written -a(1 - a), so that the
    factor a(1 - a) of sigma' visibly cancels (sigmoid with binary cross-entropy)."""
    numerator, denominator = sp.fraction(expr)
    if sp.expand(denominator - (a**2 - a)) != 0:
        return []
    a_tex = c.tex(a)
    return [rf"= \frac{{{c.tex(numerator)}}}{{-{a_tex} \left(1 - {a_tex}\right)}}"
            rf" \qquad \text{{as }} {a_tex}^{{2}} - {a_tex} = -{a_tex}\left(1 - {a_tex}\right)"]


def _factored_sums(expr: sp.Expr) -> sp.Expr:
    """A result with sums (softmax with a loss other than cross-entropy) factored: the common
    factor taken out and the sums over the same index joined into one."""
    from sympy.simplify.simplify import sum_combine

    factored = sp.factor_terms(expr)
    if not isinstance(factored, sp.Mul):
        return expr
    inner = [a for a in factored.args if isinstance(a, sp.Add)]
    if len(inner) != 1:
        return factored
    sums = [t for t in inner[0].args if t.has(sp.Sum)]
    rest = [t for t in inner[0].args if not t.has(sp.Sum)]
    joined = sum_combine(sums) if len(sums) > 1 else sp.Add(*sums)
    joined = joined.replace(lambda x: isinstance(x, sp.Sum),
                            lambda s: sp.Sum(sp.factor_terms(s.function), *s.limits))
    outer = [a for a in factored.args if a is not inner[0]]
    return sp.Mul(*outer) * (sp.Add(*rest) + joined)


def _cancels(dL_da: sp.Expr, a: sp.Expr) -> bool:
    """dL/da_j divides by a_j (cross-entropy's -y_j/a_j): the Jacobian's a_j cancels it."""
    return any(p.base == a and p.exp.is_negative for p in dL_da.atoms(sp.Pow))


# -- gradients -------------------------------------------------------------------------

def _chain_lines(c: _Doc, chain) -> list[str]:
    factors = [c.p.partial_of(f.numerator, f.denominator) for f in chain]
    return [("= " if start == 0 else r"\quad ") + " ".join(factors[start:start + FACTORS_PER_LINE])
            for start in range(0, len(factors), FACTORS_PER_LINE)]


def _factor_row(c: _Doc, factor) -> Row:
    """One chain-rule factor, what it equals, and where that was derived."""
    value = factor.value
    num, den = factor.numerator, factor.denominator
    numerator = c.d.role_of(num)
    layer = c.d.layers[-1] if numerator.role is Role.LOSS else c.d.layers[numerator.layer - 1]
    if isinstance(value, sp.Expr) and value.has(sp.Indexed):  # index form: the output layer
        if numerator.role is Role.LOSS:
            lhs, note = c.p.partial_of(num, den, den_index="j"), f"the loss, see {c.ref('dLda')}"
        else:
            lhs, note = c.p.partial_of(num, den, "i", "j"), f"${layer.activation.latex}$, see {c.ref('jacobian')}"
        return _row(lhs, f"= {c.tex(c.at_layer(value, layer))}", numbered=False,
                    note=rf"\text{{{note}}}")
    lhs = c.p.partial_of(num, den)
    value_role = c.d.role_of(value) if isinstance(value, sp.MatrixSymbol) else None
    if value_role is not None and value_role.role is Role.LOCAL_DERIVATIVE:
        note = (rf"see {c.ref(_act_label(layer.activation))}; entry by entry: a factor $\odot$")
    elif value_role is not None and value_role.role is Role.WEIGHT:
        note = f"dense layer, see {c.ref('dzdx')}"
    elif c.d.role_of(den).role is Role.WEIGHT:
        note = f"dense layer, see {c.ref('dzdW')}: the layer's input"
    else:
        note = f"dense layer, see {c.ref('dzdb')}"
    shown = c.one(value) if isinstance(value, sp.MatrixExpr) else value
    return _row(lhs, f"= {c.tex(shown)}", numbered=False, note=rf"\text{{{note}}}")


def _gradients(c: _Doc) -> dict:
    I = INDEX
    i = sp.Symbol("i", integer=True, positive=True)
    layers = []
    shown: set[tuple[str, str]] = set()
    for layer in reversed(c.d.layers):
        l = layer.index
        delta = layer.delta.subs(M, 1)
        chains = [_row(c.p.partial_of("L", g.param.name), _chain_lines(c, g.chain),
                       c.label(f"chain-{g.param.name}")) for g in (layer.grad_W, layer.grad_b)]
        factors = []
        for grad in (layer.grad_W, layer.grad_b):
            for factor in grad.chain:
                if (factor.numerator, factor.denominator) not in shown:
                    shown.add((factor.numerator, factor.denominator))
                    factors.append(_factor_row(c, factor))
        if layer.is_output:
            error = [_row(c.p.entry(layer.delta.name, "j"),
                          (f"= {c.p.partial_of('L', layer.Z.name, den_index='j')}",
                           f"= {c.tex(c.at_layer(c.d.output.delta, layer))}"),
                          c.label(f"delta{l}"),
                          f"The error term of the output layer is the output error {c.ref('delta-out')}:")]
        else:
            above = c.d.layers[l]  # layer l + 1
            expr = c.one(layer.delta_def.expr)
            dz_da = c.d.dense.dz_dx.rhs.xreplace({I.W: sp.IndexedBase(above.W.name)}).subs(I.i, i)
            backprop = sp.Sum(sp.IndexedBase(above.delta.name)[i] * dz_da, (i, 1, above.units))
            prefix = above.grad_b.chain[:-1]
            memo = c.p.partial_of(prefix[0].numerator, prefix[-1].denominator, inline=True)
            if l < c.depth - 1:  # the recurrence was worked out for the layer above: cite it
                error = [_row(c.tex(delta), f"= {c.tex(expr)}", c.label(f"delta{l}"),
                              rf"The recurrence {c.ref('bp2')}, with ${memo} = "
                              rf"{c.tex(above.delta.subs(M, 1))}$ {c.ref(f'delta{l + 1}')}:"),
                         c.shape_rows(expr)]
            else:
                error = None
            error = error or [
                _row(c.p.partial_of("L", layer.A.name, den_index="k"),
                     (f"= {c.tex(backprop)}",
                      rf"= \left({c.tex(sp.Transpose(above.W) * above.delta.subs(M, 1))}\right)_{{k}}"),
                     text=(f"The leading factors multiply to ${memo} = {c.tex(above.delta.subs(M, 1))}$ "
                           f"{c.ref(f'delta{l + 1}')}, computed once and reused. Through the dense "
                           f"layer {c.ref('dzdx')}, entry by entry:"),
                     numbered=False),
                _row(c.tex(delta), (f"= {c.p.partial_of('L', layer.Z.name)}", f"= {c.tex(expr)}"),
                     c.label(f"delta{l}"),
                     r"Times $\partial a/\partial z$ entry by entry, the recurrence:"),
                c.shape_rows(expr),
            ]
        gradients = []
        for grad in (layer.grad_W, layer.grad_b):
            param = grad.param.name
            rhs = (f"= {c.p.partial_of('L', layer.Z.name)} {c.p.partial_of(layer.Z.name, param)}",
                   f"= {c.tex(grad.per_example)}")
            gradients.append(_row(c.p.partial_of("L", param), rhs, c.label(f"grad-{param}")))
            if not isinstance(grad.per_example, sp.MatrixSymbol):  # (n x 1) = (n x 1) says nothing
                gradients.append(c.shape_rows(grad.per_example))
        outer = None
        if layer.is_output:  # why the transpose, once
            dz_dW = c.d.dense.dz_dW.rhs.xreplace({I.x: sp.IndexedBase(layer.A_prev.name)}).subs(I.i, i)
            total = sp.Sum(sp.IndexedBase(layer.delta.name)[i] * dz_dW, (i, 1, layer.units))
            outer = _row(c.p.partial(c.p.name("L"), c.p.entry(layer.W.name, "jk")),
                         (f"= {c.tex(total)}", f"= {c.tex(resolve_deltas(total))}",
                          rf"= \left({c.tex(layer.grad_W.per_example)}\right)_{{jk}}"),
                         text=f"Why the transpose: entry by entry, with {c.ref('dzdW')},",
                         numbered=False)
        layers.append({"index": l, "output": layer.is_output, "chains": chains,
                       "factors": factors, "error": error, "gradients": gradients,
                       "outer": outer})
    return {"layers": layers, "delta": c.p.tagged(r"\delta", "l"),
            "delta_def": c.p.partial("L", c.p.tagged("z", "l"), inline=True),
            **_general(c)}


def _general(c: _Doc) -> dict:
    """The four equations of backpropagation for a general layer l, and the algorithm."""
    t = c.p.tagged
    L = "K"  # the layer count: L is the loss (one symbol per meaning)
    out = c.d.layers[-1]
    delta = {k: t(r"\delta", k) for k in ("l", "l+1", L)}
    g = rf"g'^{{[l]}}\!\left({t('z', 'l')}\right)" if c.notation == "bracket" else \
        rf"g_{{l}}'\!\left({t('z', 'l')}\right)"
    if out.activation.vector:
        bp1 = (rf"{delta[L]} = \left(\frac{{\partial {t('a', L)}}}{{\partial {t('z', L)}}}\right)^{{T}}"
               rf" \frac{{\partial L}}{{\partial {t('a', L)}}}")
    else:
        gL = rf"g'^{{[K]}}\!\left({t('z', L)}\right)" if c.notation == "bracket" else \
            rf"g_{{K}}'\!\left({t('z', L)}\right)"
        bp1 = rf"{delta[L]} = \frac{{\partial L}}{{\partial {t('a', L)}}} \odot {gL}"
    rows = [
        _row(bp1.split(" = ", 1)[0], "= " + bp1.split(" = ", 1)[1], c.label("bp1"),
             "The output error, from the loss and the output activation:"),
        _row(delta["l"], rf"= \left({t('W', 'l+1', 'T')} {delta['l+1']}\right) \odot {g}",
             c.label("bp2"), r"Each hidden layer's error, from the layer above ($l = K-1, \ldots, 1$):"),
        _row(c.p.partial("L", t("b", "l")), f"= {delta['l']}", c.label("bp3"),
             "The gradient of each bias:"),
        _row(c.p.partial("L", t("W", "l")), f"= {delta['l']} {t('a', 'l-1', 'T')}", c.label("bp4"),
             rf"The gradient of each weight matrix, with ${t('a', 0)} = x$:"),
    ]
    steps = [
        rf"Forward: for $l = 1, \ldots, K$: ${t('z', 'l')} = {t('W', 'l')} {t('a', 'l-1')} + "
        rf"{t('b', 'l')}$, ${t('a', 'l')} = g({t('z', 'l')})$, keeping every ${t('z', 'l')}$ and "
        rf"${t('a', 'l')}$.",
        rf"Output error ${delta[L]}$ by {c.ref('bp1')}.",
        rf"Backward: for $l = K-1, \ldots, 1$: ${delta['l']}$ by {c.ref('bp2')}.",
        rf"Gradients by {c.ref('bp3')} and {c.ref('bp4')}; over a batch, their mean.",
        r"Update every parameter: $\theta := \theta - \eta\, \partial J/\partial \theta$.",
    ]
    return {"general": rows, "algorithm": steps}


# -- the batch and the generated code ----------------------------------------------------

def _gradient_formula(c: _Doc, grad) -> sp.MatrixExpr:
    """dJ/dtheta with the penalties' strengths written as their symbols, lambda_1, lambda_2."""
    found = {p.name: p for p in c.d.objective.penalties}
    terms = [grad.data_term] + [term.xreplace({found[name].strength: found[name].symbol})
                                for name, term in grad.regularization]
    return sp.MatAdd(*terms) if len(terms) > 1 else terms[0]


def _batch(c: _Doc) -> dict:
    d = c.d
    data = frozenset({d.X, d.Y} | {s for layer in d.layers
                                    for s in (layer.Z, layer.A, layer.A_prev, layer.delta, layer.G)
                                    if s is not None})
    names = {layer.sign: f"np.sign({layer.W.name})" for layer in d.layers
             if layer.sign is not None}
    code = NumPyCodePrinter(names, data=data)
    forward, backward, table = [], [], []
    for layer in d.layers:
        z = layer.z_def.expr
        forward.append(_row(c.tex(layer.Z, True), f"= {c.tex(z, True)}", c.label(f"Z{layer.index}"),
                            note=c.P.dims(z.shape)))
        lhs, rhs = _activation_of(c, layer, batch=True)
        forward.append(_row(lhs, rhs, c.label(f"A{layer.index}"), note=c.P.dims(layer.A.shape)))
        table.append((f"${c.tex(layer.Z, True)} = {c.tex(z, True)}$",
                      code_tt(f"{layer.Z.name} = {code.rows(z)}")))
    for layer in reversed(d.layers):
        if isinstance(layer.delta_def, MatrixDef):
            expr = layer.delta_def.expr
            backward.append(_row(c.tex(layer.delta, True), f"= {c.tex(expr, True)}",
                                 c.label(f"Delta{layer.index}"), note=c.P.dims(expr.shape)))
            table.append((f"${c.tex(layer.delta, True)} = {c.tex(expr, True)}$",
                          code_tt(f"{layer.delta.name} = {code.rows(expr)}")))
        else:
            columns = c.at_layer(d.output.delta, layer)
            entry, key = c.P.entry(layer.delta.name, "j"), f"Delta{layer.index}"
            backward.append(_row(entry, _term_lines(c, columns), c.label(key),
                                 note=c.P.dims(layer.delta.shape)))
            out_code = NumPyCodePrinter({INDEX.a: layer.A.name, INDEX.y: d.Y.name,
                                         INDEX.z: layer.Z.name}, like=layer.Z.name)
            # a loss in cases (Huber's) makes cases in the error too wide for the column
            formula = (f"${entry}$ as in {c.ref(key)}" if d.output.dL_da.has(sp.Piecewise)
                       else f"${entry} = {c.tex(columns, True)}$")
            table.append((formula,
                          code_tt(f"{layer.delta.name} = {out_code.doprint(d.output.delta)}")))
        for grad in (layer.grad_W, layer.grad_b):
            formula = _gradient_formula(c, grad)
            backward.append(_row(c.P.name(grad.target.name), f"= {c.tex(formula, True)}",
                                 c.label(f"batch-{grad.target.name}"), note=c.P.dims(formula.shape)))
            inline = c.P.partial(c.P.name("L"), c.tex(grad.param), inline=True)
            table.append((f"${inline} = {c.tex(formula, True)}$",
                          code_tt(f"{grad.target.name} = {code.doprint(grad.formula)}")))
    first = d.layers[0]
    return {"forward": forward, "backward": backward,
            "shapes": c.shape_rows(first.grad_W.data_term, batch=True, text=(
                f"For example, ${c.tex(first.grad_W.data_term, True)}$ sums the $m$ outer products "
                f"of the columns; its shapes:")),
            "code": Table(_columns(0.52, 0.48),
                          ("document: one column per example", "generated code: one row per example"),
                          tuple(table)),
            "z1": c.tex(first.Z, True), "z1_expr": c.tex(first.z_def.expr, True),
            "z1_T": c.tex(sp.Transpose(first.z_def.expr).doit(), True),
            "z1_code": code_tt(f"{first.Z.name} = {code.rows(first.z_def.expr)}"),
            "first": c.P.dims(first.Z.shape), "X": c.tex(d.X, True), "Y": c.tex(d.Y, True),
            "regularized": bool(d.objective.penalties), "lambdas": _lambda_values(c)}


def _term_lines(c: _Doc, expr: sp.Expr) -> list[str]:
    """``= expr`` in the batch notation; a sum of two or more terms holding cases blocks
    (softmax after Huber) one term per line, as side by side they overrun the line."""
    terms = expr.as_ordered_terms() if isinstance(expr, sp.Add) else [expr]
    if sum(term.has(sp.Piecewise) for term in terms) < 2:
        return [f"= {c.tex(expr, True)}"]
    lines = [f"= {c.tex(terms[0], True)}"]
    for term in terms[1:]:
        tex = c.tex(term, True)
        lines.append(rf"\quad {tex}" if tex.startswith("-") else rf"\quad + {tex}")
    return lines


def _columns(*fractions: float) -> str:
    """Ragged-right paragraph columns sharing the line width, whatever the document's margins."""
    return "".join(rf">{{\raggedright\arraybackslash}}p{{\dimexpr {f}\linewidth-2\tabcolsep\relax}}"
                   for f in fractions)


# -- updates ---------------------------------------------------------------------------

def _updates(c: _Doc) -> dict:
    d = c.d
    rules: list[Row] = []
    for rule in d.updates:
        theta, new = rule.rule
        row = _row(c.tex(theta), f":= {c.tex(new)}", c.label(f"update-{rule.optimizer}"))
        if all((r.lhs, r.rhs) != (row.lhs, row.rhs) for r in rules):
            rules.append(row)
    pairs = [f"{c.tex(layer.W)}, {c.tex(layer.b)}" for layer in d.layers]
    if len(pairs) > 4:
        pairs = pairs[:2] + [r"\ldots"] + pairs[-1:]
    variants = Table(_columns(0.36, 0.64), ("variant", "what one step averages over"),
                     tuple((tex_escape(r.title), _text_maths(tex_escape(r.batch)))
                           for r in d.updates))
    use = d.optimizer
    training = d.spec.training
    declared = set(training.given)
    return {"variants": variants, "count": _count_word(len(d.updates)),
            "rows": rules, "params": ", ".join(pairs),
            "eta": c.tex(d.learning_rate), "chosen": tex_escape(use.variant.description),
            "learning_rate": _number_text(use.learning_rate),
            "batch_size": use.batch_size, "epochs": training.epochs,
            "batch_sized": use.batch_size not in (1, FULL_BATCH),
            "declared": bool(declared & {"optimizer", "learning_rate", "batch_size"}),
            "rule": _rule_tex(use)}


def _with_symbols(text: str, symbols: dict[str, str]) -> str:
    """A meaning in prose, its symbols' plain names (lambda_wd theta) typeset as maths."""
    if not symbols:
        return tex_escape(text)
    names = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(symbols, key=len, reverse=True))
                       + r")\b")
    out, last = [], 0
    for match in names.finditer(text):
        out += [tex_escape(text[last:match.start()]), f"${symbols[match.group(1)]}$"]
        last = match.end()
    return "".join(out + [tex_escape(text[last:])])


def _rule_tex(use) -> dict:
    """The spec's update rule: its assignments in order, its state, its hyperparameters with
    their values and meanings, and the schedule."""
    decl = use.declaration
    state = {symbol for symbol, _ in decl.state}
    hats = {symbol: rf"\hat{{{symbol.name[0]}}}" for symbol, _ in decl.locals_}
    names = hats | {symbol: symbol.name for symbol in state}

    def tex(expr) -> str:
        return sp.latex(expr, symbol_names=names)

    def update(target, formula) -> str:
        """``target + step`` written as the rules are written: the old value first."""
        rest = sp.expand(formula - target) if formula.is_Add and target in formula.args else None
        if rest is None or rest == 0:
            return tex(formula)
        rest = formula - target
        if rest.could_extract_minus_sign():
            return f"{tex(target)} - {tex(-rest)}"
        return f"{tex(target)} + {tex(rest)}"

    rows = tuple(_row(tex(target), rf"\leftarrow {update(target, formula)}", numbered=False)
                 for target, formula in decl.assignments)
    hyper = []
    for h in decl.hyperparameters:
        value = use.hyperparameters[h.name]
        values = value if isinstance(value, tuple) else (value,)
        hyper.append((tt(h.name), ", ".join(f"${tex(s)} = {_number_text(x)}$"
                                            for s, x in zip(h.symbols, values)),
                      _with_symbols(h.meaning, {s.name: tex(s) for s in h.symbols}
                                    | {"theta": r"\theta", "eta": r"\eta"})))
    schedule = use.schedule
    return {"title": tex_escape(decl.title), "source": tt(decl.source), "rows": rows,
            "state": [(f"${tex(symbol)}$", tex_escape(meaning)) for symbol, meaning in
                      decl.state + decl.locals_],
            "hyper": Table(_columns(0.2, 0.3, 0.5), ("hyperparameter", "value", "meaning"),
                           tuple(hyper)) if hyper else None,
            "plain": use.plain,
            "schedule": None if schedule.name == "constant" else {
                "title": tex_escape(schedule.title.lower()), "source": tt(schedule.source),
                "rate": tex(schedule.rate.subs({sp.Symbol(k, **_assumptions(schedule.rate, k)): v
                                                for k, v in use.schedule_params.items()})),
                "params": ", ".join(f"{tex_escape(k)} = {_number_text(v)}"
                                    for k, v in use.schedule_params.items())}}


def _assumptions(expr, name: str) -> dict:
    """The assumptions of the symbol called ``name`` in expr (to substitute it)."""
    found = next((s for s in expr.free_symbols if s.name == name), None)
    return found.assumptions0 if found is not None else {}


_MATHS_IN_TEXT = re.compile(r"(?<![\w$\\])(m = [A-Z0-9]+|[A-Z]/[A-Z]|[A-Z]|m)(?![\w$])")


def _text_maths(text: str) -> str:
    """Symbols inside a sentence (N, B, m = 1, N/B in the descent variants' descriptions)
    set as maths."""
    return _MATHS_IN_TEXT.sub(lambda match: f"${match.group(1)}$", text)


def _count_word(count: int) -> str:
    """A small count as a word, as the text reads: 3 -> "three"."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[count] if count < len(words) else str(count)


# -- the worked example ----------------------------------------------------------------

def fmt(value) -> str:
    """A number as the documents print it: up to 4 decimals, trailing zeros dropped."""
    x = float(value)
    if x != 0 and abs(x) < 0.5 * 10**-DECIMALS:
        mantissa, exponent = f"{x:.2e}".split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"
    text = f"{x:.{DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _elide(count: int, limit: int) -> list[int | None]:
    """Indices to show; None where an ellipsis goes."""
    if count <= limit:
        return list(range(count))
    return [0, 1, 2, None, count - 2, count - 1]


def matrix_tex(matrix: sp.Matrix, transpose_vector: bool = True) -> str:
    """A numeric matrix as a bmatrix; a column vector as a transposed row, as seed 003 prints;
    a 1 x 1 matrix as its number."""
    rows, cols = matrix.shape
    if (rows, cols) == (1, 1):
        return fmt(matrix[0, 0])
    if cols == 1 and transpose_vector and rows > 1:
        return matrix_tex(matrix.T) + "^{T}"
    shown_rows, shown_cols = _elide(rows, ELIDE_ROWS), _elide(cols, ELIDE_COLS)
    lines = []
    for r in shown_rows:
        cells = []
        for col in shown_cols:
            if r is None:
                cells.append(r"\ddots" if col is None else r"\vdots")
            else:
                cells.append(r"\cdots" if col is None else fmt(matrix[r, col]))
        lines.append(" & ".join(cells))
    return r"\begin{bmatrix} " + r" \\ ".join(lines) + r" \end{bmatrix}"


def _example(c: _Doc, numeric: NumericExample) -> dict:
    d, ex = c.d, numeric.example
    values = []
    for layer in d.layers:
        for symbol in (layer.W, layer.b):
            given = ex.scalar_biases.get(symbol.name)
            values.append(_row(c.tex(symbol), f"= {matrix_tex(ex.params[symbol.name])}",
                               numbered=False,
                               note=rf"\text{{${fmt(given)}$ for every unit}}" if given is not None else ""))
    values.append(_row(c.tex(d.X.subs(M, 1)), f"= {matrix_tex(ex.x)}", numbered=False))
    values.append(_row(c.tex(d.Y.subs(M, 1)), f"= {matrix_tex(ex.y)}", numbered=False,
                       note=rf"\text{{class {ex.label}}}" if ex.label is not None else ""))
    forward = []
    for layer in d.layers:
        l = layer.index
        forward.append(_row(c.tex(layer.Z.subs(M, 1)),
                            (f"= {c.tex(c.one(layer.z_def.expr))}",
                             f"= {matrix_tex(numeric[layer.Z.name])}"),
                            numbered=False, note=c.ref(f"z{l}")))
        _, g = _activation_of(c, layer)
        forward.append(_row(c.tex(layer.A.subs(M, 1)), (g, f"= {matrix_tex(numeric[layer.A.name])}"),
                            numbered=False, note=c.ref(f"a{l}")))
    last = d.layers[-1]
    result = [_row(r"\hat{y}", f"= {c.tex(last.A.subs(M, 1))} = {matrix_tex(numeric[last.A.name])}",
                   numbered=False),
              _row("L", f"= {fmt(numeric.loss)}", numbered=False, note=c.ref("loss"))]
    if d.objective.penalties:
        result.append(_row("J", f"= {fmt(numeric.objective)}", numbered=False,
                           note=rf"\text{{{c.ref('objective')}, $m = 1$}}"))
    backward = []
    for layer in reversed(d.layers):
        l = layer.index
        delta = numeric[layer.delta.name]
        if layer.is_output:
            backward.append(_row(c.tex(layer.delta.subs(M, 1)), f"= {matrix_tex(delta)}",
                                 numbered=False, note=c.ref(f"delta{l}")))
        else:
            if layer.G is not None:
                backward.append(_row(c.tex(layer.G.subs(M, 1)), f"= {matrix_tex(numeric[layer.G.name])}",
                                     numbered=False, note=c.ref(_act_label(layer.activation))))
            backward.append(_row(c.tex(layer.delta.subs(M, 1)),
                                 (f"= {c.tex(c.one(layer.delta_def.expr))}", f"= {matrix_tex(delta)}"),
                                 numbered=False, note=c.ref(f"delta{l}")))
        for grad in (layer.grad_W, layer.grad_b):
            if grad.regularization:  # dJ/dtheta: the data term and the regularisation, m = 1
                name, formula = c.P.name(grad.target.name), c.one(_gradient_formula(c, grad))
            else:
                name, formula = c.p.name(grad.target.name), grad.per_example
            backward.append(_row(name, (f"= {c.tex(formula)}",
                                        f"= {matrix_tex(numeric[grad.target.name], transpose_vector=False)}"),
                                 numbered=False, note=c.ref(f"grad-{grad.param.name}")))
    return {"values": values, "forward": forward, "result": result, "backward": backward,
            "reference": _reference_table(c, numeric), "source": _file_name(ex.source),
            "reference_source": tex_escape(ex.reference_source),
            "reference_note": tex_escape(" ".join(ex.reference_note.split())),
            "digits": DECIMALS}


def _reference_table(c: _Doc, numeric: NumericExample) -> Table | None:
    """Each figure the source printed, against the computed value at the source's precision."""
    ex = numeric.example
    if not ex.reference:
        return None
    d = c.d
    rows = []
    for figure in ex.reference:
        if figure.name == "L":
            computed, names = [numeric.loss], ["L"]
        else:
            if figure.name == "yhat":
                quantity, symbol = d.layers[-1].A, r"\hat{y}"
            else:
                layer = d.layers[int(figure.name[1:]) - 1]
                quantity = layer.Z if figure.name[0] == "z" else layer.A
                symbol = c.tex(quantity.subs(M, 1))
            computed = list(numeric[quantity.name])
            names = ([symbol] if len(computed) == 1 else
                     [f"{{{symbol}}}_{{{k + 1}}}" if symbol == r"\hat{y}" else
                      c.p.entry(quantity.name, str(k + 1)) for k in range(len(computed))])
        for name, ref, value in zip(names, figure.values, computed):
            value = float(value)
            agrees = abs(ref - value) <= 0.5 * 10**-figure.decimals + 1e-12
            rows.append((f"${name}$", f"${ref:.{figure.decimals}f}$", f"${value:.{figure.decimals}f}$",
                         f"${value:.6g}$", "agrees" if agrees else r"\textbf{differs}"))
    return Table("lrrrl", ("", "source", "computed, rounded alike", "computed", ""), tuple(rows))


# ----------------------------------------------------------------------------- rendering

def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((=", comment_end_string="=))",
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )


def _contexts(derivation: Derivation, notation: str, example: Example | None,
              claims=None, proof=None) -> dict[str, dict]:
    c = _Doc(derivation, notation)
    overview = _overview(c, example)
    overview["proof"] = proof_sentence(proof) if proof is not None else ""
    overview["claims"] = claims is not None
    rows = notation_rows(c, claims) if claims is not None else ()
    overview["notation"] = Table("lll", ("the document", "here", ""), rows) if rows else None
    overview["document"] = tex_escape(claims.file.document) if claims is not None else ""
    contexts = {
        "overview": overview,
        "architecture": _architecture(c),
        "forward": _forward(c),
        "loss": _loss(c),
        "local": _local(c),
        "gradients": _gradients(c),
        "batch": _batch(c),
        "updates": _updates(c),
    }
    if example is not None:
        contexts["example"] = _example(c, evaluate_example(derivation, example))
    if claims is not None:
        contexts["errata"] = errata_context(c, claims, claims_names(derivation, claims))
        rule = contexts["updates"]["rule"]
        if "optimizer" not in derivation.spec.training.given or rule["plain"]:
            contexts["updates"]["rule"] = None  # the document's plain rule only
        contexts["batch"]["code"] = None  # a checker's report: the document's maths, no code
    for name, context in contexts.items():
        context["sec"] = c.sec(name)
        context["prefix"] = c.prefix
    return contexts


def render_sections(derivation: Derivation, *, notation: str = "bracket",
                    example: Example | None = None, claims=None, proof=None) -> dict[str, str]:
    """Each section's LaTeX, by name (``SECTIONS`` order; "example" only with an example,
    "errata" only with a ``ClaimsReport``); ``proof``, a ProofReport, is stated in the
    overview."""
    env = _environment()
    return {name: env.get_template(f"{name}.tex.j2").render(**context)
            for name, context in _contexts(derivation, notation, example, claims, proof).items()}


def render_body(derivation: Derivation, *, notation: str = "bracket",
                example: Example | None = None, claims=None, proof=None) -> str:
    """The document without its preamble: sections to paste into a paper or notes."""
    sections = render_sections(derivation, notation=notation, example=example, claims=claims,
                               proof=proof)
    return _environment().get_template("body.tex.j2").render(
        name=derivation.spec.name, packages=PACKAGES,
        sections=[sections[s] for s in _order(sections)])


def _order(sections) -> list[str]:
    """SECTIONS' order; a checker's report (with claims) opens with the errata."""
    order = [s for s in SECTIONS if s in sections]
    if "errata" in order:
        order.remove("errata")
        order.insert(1, "errata")
    return order


PACKAGES = ("amsmath", "amssymb", "booktabs", "array", "longtable")


def render_document(derivation: Derivation, *, notation: str = "bracket",
                    example: Example | None = None, claims=None, proof=None) -> str:
    """A standalone LaTeX document that compiles with pdflatex."""
    body = render_body(derivation, notation=notation, example=example, claims=claims,
                       proof=proof)
    spec = derivation.spec
    return _environment().get_template("document.tex.j2").render(
        name=spec.name, title=tt(spec.name), body=body, packages=PACKAGES,
        report=claims is not None,  # a checker's report: denser, to stay short
        source=tex_escape(Path(spec.source).name) if spec.source else "",
        source_tt=_file_name(spec.source))
