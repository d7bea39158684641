"""The LaTeX document of a stack of layer kinds: ``GraphDerivation -> LaTeX``.

Printed from the GraphDerivation's own statements (``derive.graph``): each layer's forward,
each statement of the derived backward, grouped by the layer whose computation it is, the
parameters' gradients and their shapes.  Nothing is re-derived here except the compact forms
of the normalisations' backward (``compact_form``), which the literature writes and which are
checked here as identities against the derived statements — symbolically, and exactly at
rational points where the variance plus epsilon is a perfect square — before the document
calls them proven; a compact form that fails raises ``CompactFormError``, never prints.

The loss, the local derivatives (dense layer, activations, output error) and the update rule
are the dense document's sections (``document.py``), read through ``_KindsDoc``; the preamble
and the layout macros are its templates too.

Notation: arrays are written as the documents write a batch, one column per example
(``Z^{[l]}`` is n_l x m); the graph stores them one row per example, so a product
``dZ W`` of the graph prints as ``W^T Delta``.  Every derivative is of the batch objective J,
because batch normalisation couples the examples: Delta^{[l]} = dJ/dZ^{[l]}.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import sympy as sp
from sympy.printing.latex import LatexPrinter

from ..derivation import ETA, plain_updates
from ..graph import Activate, GraphDerivation, Node, OutputError, Product
from ..layers import BATCH, COLUMN, DATA, INPUT, M_SYM, OUTPUT, ROW, SCALAR, UNITS, Let, Linear, Reduce
from ..local import A_SYM, INDEX_ROLES, Z_SYM, dense_partials
from ..roles import Role, SymbolRole
from .document import (Table, DocContext, latex_environment, loss_section, local_section, latex_number, equation_row, updates_section,
                       standalone)
from .errata import proof_sentence
from .printer import DerivationLatexPrinter
from .text import tex_escape, tt

__all__ = ["render_kinds_sections", "render_kinds_body", "render_kinds_document",
           "compact_form", "CompactForm", "CompactFormError", "KINDS_SECTIONS"]

KINDS_SECTIONS = ("kinds_overview", "kinds_architecture", "kinds_forward", "loss", "local",
                  "kinds_backward", "updates")

EXAMPLE, UNIT, BOUND = (sp.Symbol(n, integer=True, positive=True) for n in ("i", "j", "k"))
COMPACT_BATCHES = (2, 3, 4)  # batch sizes at which batch normalisation's compact form is proven
COMPACT_POINTS = 3  # exact rational points per size, besides the symbolic check
COMPACT_SYMBOLIC_MAX = 4  # sizes up to this are also simplified symbolically

# the kinds' symbols in the documents' notation: (one example, the batch, fixed subscript,
# power); each layer's copy carries its tag: gamma2 -> gamma^{[2]}
_KIND_LETTERS = {
    "gamma": (r"\gamma", r"\gamma", "", ""), "beta": (r"\beta", r"\beta", "", ""),
    "xhat": (r"\hat{x}", r"\hat{X}", "", ""), "mask": ("r", "R", "", ""),
    "P": (r"\tilde{z}", r"\tilde{Z}", "", ""),
    "running_mean": (r"\bar{\mu}", r"\bar{\mu}", "", ""),
    "running_var": (r"\bar{\sigma}", r"\bar{\sigma}", "", "2"),
}
_STATISTICS = {"mu": r"\mu", "var": r"\sigma"}  # the batch's (subscript B) or one example's


# ----------------------------------------------------------------------------- the printer

class KindsLatexPrinter(DerivationLatexPrinter):
    """``DerivationLatexPrinter`` that also knows the kinds' symbols (γ, β, x̂, μ_B, σ²_B, the
    mask r) and the graph's adjoints d<x> (printed ∂J/∂x; ∂J/∂Z^{[l]} is Δ^{[l]})."""

    def __init__(self, notation="bracket", mode="example", activations=None, functions=None,
                 roles=None, kinds=None, adjoints=None):
        super().__init__(notation, mode, activations, functions, roles)
        self.kinds = dict(kinds or {})  # name -> (example letter, batch letter, sub, power, layer)
        self.adjoints = dict(adjoints or {})  # d<x> -> x

    def with_mode(self, mode: str) -> "KindsLatexPrinter":
        return KindsLatexPrinter(self.notation, mode, self.activations, self.functions,
                                 self.roles, self.kinds, self.adjoints)

    def _kind(self, name: str, index: str = "", sup: str = "") -> str:
        example, batch, sub, power, layer = self.kinds[name]
        letter = batch if self._batch else example
        subs = ",".join(s for s in (sub, index) if s)
        if self.notation == "bracket":
            top = f"[{layer}]" + (rf"\,{power}" if power else "") + sup
            return f"{letter}^{{{top}}}" + (f"_{{{subs}}}" if subs else "")
        top = power + sup
        return letter + (f"^{{{top}}}" if top else "") + f"_{{{','.join([str(layer)] + ([subs] if subs else []))}}}"

    def name(self, name: str, sup: str = "") -> str:
        if name in self.kinds:
            return self._kind(name, sup=sup)
        if name in self.adjoints:
            return self.partial("J", self.name(self.adjoints[name]))
        return super().name(name, sup)

    def entry(self, name: str, index: str) -> str:
        if name in self.kinds:
            return self._kind(name, index)
        if name in self.adjoints:
            return self.partial("J", self.entry(self.adjoints[name], index))
        role = self.role(name)
        if role is not None and role.layer is not None and self.notation == "bracket":
            return f"{self.name(name)}_{{{index}}}"  # both indices, as given: a^{[1]}_{ji}
        return super().entry(name, index)

    def _print_Symbol(self, expr, style="plain"):
        if expr.name in self.kinds or expr.name in self.adjoints:
            return self.name(expr.name)
        if expr.name.startswith("epsilon"):
            return r"\epsilon"
        if self.role(expr.name) is not None:
            return self.name(expr.name)
        return super()._print_Symbol(expr, style=style)

    def _print_Indexed(self, expr):
        return self.entry(str(expr.base.label), "".join(self._print(i) for i in expr.indices))


# ----------------------------------------------------------------------------- the context

@dataclass(frozen=True)
class _GraphView:
    """What the dense document's shared sections read of a derivation, for a GraphDerivation:
    its nodes as the layers (each has index, units, activation, Z, A)."""

    g: GraphDerivation

    def __getattr__(self, name):
        return getattr(self.g, name)

    @property
    def layers(self):
        return self.g.nodes

    @property
    def updates(self):
        return plain_updates(ETA)

    @property
    def learning_rate(self):
        return ETA

    @property
    def dense(self):
        return dense_partials()


def _roles(g: GraphDerivation) -> dict[str, SymbolRole]:
    roles = {str(getattr(s, "label", s)): r for s, r in INDEX_ROLES.items()}
    roles |= {f"n{l}": SymbolRole(Role.WIDTH, l) for l in range(len(g.nodes) + 1)}
    roles[g.X.name] = SymbolRole(Role.INPUT, 0)
    roles[g.Y.name] = SymbolRole(Role.TARGET, len(g.nodes))
    for node in g.nodes:
        roles[node.Z.name] = SymbolRole(Role.PREACTIVATION, node.index)
        roles[node.A.name] = SymbolRole(Role.ACTIVATION, node.index)
        roles[f"dZ{node.index}"] = SymbolRole(Role.ERROR, node.index)
        for kind_symbol, own in node.symbols.items():
            if kind_symbol.name == "W":
                roles[own.name] = SymbolRole(Role.WEIGHT, node.index)
            elif kind_symbol.name == "b":
                roles[own.name] = SymbolRole(Role.BIAS, node.index)
    return roles


def _kind_names(g: GraphDerivation) -> dict[str, tuple]:
    names = {}
    for node in g.nodes:
        for kind_symbol, own in list(node.symbols.items()) + [(sp.Symbol("P"), _pre_skip(node))]:
            base = kind_symbol.name
            if own is None:
                continue
            if base in _KIND_LETTERS:
                names[own.name] = _KIND_LETTERS[base] + (node.index,)
            elif base in _STATISTICS:
                batch = g.shapes[own][0] == ROW
                names[own.name] = (_STATISTICS[base], _STATISTICS[base], "B" if batch else "",
                                   "2" if base == "var" else "", node.index)
            elif kind_symbol not in (INPUT, OUTPUT) and base not in ("W", "b", "epsilon"):
                letter = sp.latex(kind_symbol)  # a kind's own symbol, as SymPy writes its name
                names[own.name] = (letter, letter, "", "", node.index)
    return names


def _pre_skip(node: Node) -> sp.Symbol | None:
    """z_l before the skip's a_K is added (None without a skip)."""
    return node.symbols.get(OUTPUT) if node.spec.skip is not None else None


class _KindsDoc(DocContext):
    """The dense document's context (labels, printers) over a GraphDerivation's view."""

    def __post_init__(self):
        g = self.d.g
        activations = {node.index: node.activation.latex for node in g.nodes}
        adjoints = {}
        for symbol in g.shapes:
            base = sp.Symbol(symbol.name[1:])
            if symbol.name.startswith("d") and base.name in {s.name for s in g.shapes} \
                    and not symbol.name.startswith("dZ"):
                adjoints[symbol.name] = base.name
        adjoints |= {d.name: p.name for p, d in g.gradients}
        self.p = KindsLatexPrinter(self.notation, "example", activations,
                                   roles=_roles(g), kinds=_kind_names(g), adjoints=adjoints)
        self.P = self.p.with_mode("batch")

    @property
    def g(self) -> GraphDerivation:
        return self.d.g


def _shape(c: _KindsDoc, symbol: sp.Symbol, batch: bool = True) -> str:
    """The array's shape as the documents lay a batch out (a column per example)."""
    symbol = {d: p for p, d in c.g.gradients}.get(symbol, symbol)  # a gradient: its parameter's
    cls, width = c.g.shapes[symbol]
    cols = "m" if batch else "1"
    if cls == "weights":
        shape = next(s for node in c.g.nodes for p, s, *_ in node.params if p == symbol)
        if len(shape) == 1:  # a convolution's bias: one per filter
            return rf"({shape[0]} \times 1)"
        return "(" + r" \times ".join(map(str, shape)) + ")"
    image = _images(c.g).get(symbol)
    if cls == DATA and image is not None:  # an image per example, its entries in NCHW order
        dot = r" \cdot "
        return "(" + dot.join(map(str, image)) + rf" \times {cols})"
    return {DATA: rf"({width} \times {cols})", ROW: rf"({width} \times 1)",
            COLUMN: rf"(1 \times {cols})", SCALAR: "scalar"}[cls]


def _images(g: GraphDerivation) -> dict:
    """Each array that holds an image per example -> its (C, H, W) (the adjoints too)."""
    found = {}
    if g.spec.image is not None:
        found[g.X] = g.spec.image
    for node in g.nodes:
        if node.spec.image is not None:
            for s in (node.Z, node.A, node.symbols.get(OUTPUT)):
                if s is not None:
                    found[s] = node.spec.image
    found |= {sp.Symbol(f"d{s.name}", real=True): image for s, image in list(found.items())}
    return found


class _WindowTex(LatexPrinter):
    """An index form of a window kind as the literature writes it: arrays with their layer
    (W^{[1]}_{f,c,p,q}), one sum sign over all its indices, a range guard left out (outside
    its image an array reads 0: the padding), primes of the free indices dropped."""

    def __init__(self, names: dict):
        super().__init__()
        self.names = names

    def _print_Indexed(self, expr):
        base = self.names.get(str(expr.base.label), str(expr.base.label))
        return f"{base}_{{{','.join(self._print(i) for i in expr.indices)}}}"

    def _print_Sum(self, expr):
        indices = ",".join(self._print(lim[0]) for lim in expr.limits)
        return rf"\sum_{{{indices}}} {self._print(expr.function)}"

    def _print_Piecewise(self, expr):
        return self._print(expr.args[0].expr)

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name.rstrip("'")
        return {"H_o": "H_o", "W_o": "W_o"}.get(name, name)


def window_tex(c: _KindsDoc, st, expr) -> str:
    """A window statement's index form (``expr``) with the statement's arrays."""
    l = _layer_of_window(c.g, st)
    delta = c.P.name(st.delta.name) if hasattr(st, "delta") else ""
    names = {"delta": delta, "M": rf"M^{{[{l}]}}"}
    if st.op in ("conv", "pool"):
        names |= {"a": c.p.name(st.a.name), "W": c.p.name(st.W.name) if st.op == "conv" else "",
                  "b": c.p.name(st.b.name) if getattr(st, "b", None) is not None else "",
                  "z": c.p.name(st.target.name)}
    else:
        node = c.g.nodes[l - 1]
        names |= {"a": c.p.name(_input_of(node).name)}
        W = next((p for p, *_ in node.params if p.name.startswith("W")), None)
        if W is not None:
            names["W"] = c.p.name(W.name)
    return _WindowTex(names).doprint(expr)


def _layer_of_window(g: GraphDerivation, st) -> int:
    window = st.window
    for node in g.nodes:
        if any(getattr(f, "window", None) == window and (
                f.target == getattr(st, "target", None) or
                getattr(st, "delta", None) is not None and st.delta.name == f"d{f.target.name}")
               for f in node.forward):
            return node.index
    raise ValueError("a window statement of no layer")


class _LocalTex(_WindowTex):
    """A window kind's local derivative as SymPy gives it: Kronecker deltas as the document's
    indicators, range guards as cases, the free indices primed, the sum's limits written."""

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        return {"H_o": "H_o", "W_o": "W_o"}.get(name, name)

    def _print_KroneckerDelta(self, expr, exp=None):
        return rf"\mathbb{{I}}_{{{self._print(expr.args[0])},{self._print(expr.args[1])}}}"

    def _print_Sum(self, expr):
        bounds = [rf"{self._print(x)}=0" + "}^{" + self._print(hi) for x, _, hi in expr.limits]
        sums = "".join(rf"\sum_{{{b}}}" for b in bounds)
        return f"{sums} {self._print(expr.function)}"

    def _print_Piecewise(self, expr):
        return self._print(expr.args[0].expr)

    def guard(self, expr) -> list[str]:
        """The range guard of a Piecewise (where its value holds; 0 elsewhere), two
        conditions a line; [] for an expression without one."""
        if not isinstance(expr, sp.Piecewise):
            return []
        cond = expr.args[0].cond
        parts = [self._print(g) for g in (cond.args if isinstance(cond, sp.And) else (cond,))]
        return [r",\ ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]


def _window_locals(c: _KindsDoc) -> list[dict]:
    """One subsection per window kind of the stack: its forward in index form and the local
    derivatives SymPy takes of it (``derive.indexform.local``), before and after summing the
    indicators out."""
    from ..indexform import RULES, forward, local

    out, seen = [], set()
    for node in c.g.nodes:
        kind = node.kind.name
        if not node.kind.index_form or kind in seen:
            continue
        seen.add(kind)
        title = node.kind.title[:1].upper() + node.kind.title[1:]
        title = "The " + node.kind.title if node.kind.index_form == "conv" else title
        printer = _LocalTex({"delta": r"\delta", "M": "M"})
        index_kind = node.kind.index_form
        z, _ = forward(index_kind)
        rows = [equation_row("z_{n,f,i,j}", f"= {printer.doprint(z)}", c.label(f"local-{kind}"))]
        for name, (rule_kind, array, _) in RULES.items():
            if rule_kind != index_kind:
                continue
            raw, summed, free = local(name)
            target = f"{array}_{{{','.join(printer.doprint(x) for x in free)}}}"
            lines = [f"= {printer.doprint(raw)}"]
            if summed != raw:
                lines.append(f"= {printer.doprint(summed)}")
            guard = printer.guard(summed)  # the entries the window reaches; 0 elsewhere
            for n, part in enumerate(guard):
                lead = r"\text{where }" if n == 0 else r"\phantom{\text{where }}"
                tail = r"\text{, else } 0" if n == len(guard) - 1 else ","
                lines.append(rf"\qquad {lead}{part}{tail}")
            rows.append(equation_row(rf"\frac{{\partial z_{{n,f,i,j}}}}{{\partial {target}}}",
                                     tuple(lines), c.label(f"local-{name}")))
        layers = [n.index for n in c.g.nodes if n.kind.name == kind]
        out.append({"title": f"{title} (layer{'s' if len(layers) > 1 else ''} "
                             f"{', '.join(map(str, layers))})",
                    "text": node.kind.derivation, "rows": rows})
    return out


_WINDOW_WORDS = {  # each rule: SymPy's diff of the indexed forward, its deltas summed out
    "conv_input": r"SymPy differentiates the indexed forward sum by $a_{n,c,u,v}$ (a product of "
                  r"Kronecker deltas) and sums the deltas out: the error reaches the layer's input as the \emph{full correlation} of "
                  r"$\Delta^{[{l}]} = \partial J/\partial Z^{[{l}]}$ with the flipped kernel "
                  r"(every output whose window covers $(u, v)$ sends back its error times the "
                  r"kernel entry that met that input):",
    "conv_weight": r"The weight gradient is the \emph{correlation} of the layer's input with "
                   r"$\Delta^{[{l}]}$, summed over the examples:",
    "conv_bias": r"The bias gradient sums $\Delta^{[{l}]}$ over the examples and positions of "
                 r"its filter:",
    "max_pool_input": r"Max pooling routes $\Delta^{[{l}]}$ back to the maximum of each window "
                      r"and sends nothing to the other entries; $M^{[{l}]}$ is 1 at each window's "
                      r"first maximum (PyTorch's rule for ties) and 0 elsewhere, and "
                      r"$(i, j) = (\lfloor u/s \rfloor, \lfloor v/s \rfloor)$ is the window "
                      r"holding $(u, v)$:",
    "avg_pool_input": r"Average pooling spreads $\Delta^{[{l}]}$ evenly over each window, "
                      r"$1/s^2$ to each of its entries; $(i, j) = (\lfloor u/s \rfloor, "
                      r"\lfloor v/s \rfloor)$ is the window holding $(u, v)$:",
}


def _window_lhs(c: _KindsDoc, st, l: int) -> str:
    node = c.g.nodes[l - 1]
    if st.rule == "conv_weight":
        return c.p.partial("J", c.p.name(st.target.name[1:]) + "_{f,c,p,q}")
    if st.rule == "conv_bias":
        return c.p.partial("J", c.p.name(st.target.name[1:]) + "_{f}")
    return c.p.partial("J", c.p.name(_input_of(node).name) + "_{n,c,u,v}")


def _window_backward_row(c: _KindsDoc, node: Node, st, label: str):
    """A reverse rule as SymPy derived it (the sum over the outputs that read the entry,
    Kronecker deltas summed out); a pool's also in its one-term form."""
    l = _layer_of_window(c.g, st)
    text = _WINDOW_WORDS[st.rule].replace("{l}", str(l))
    rhs = f"= {window_tex(c, st, st.expr)}"
    if "pool" in st.rule:
        s = st.window.stride
        where = rf"\lfloor u/{s} \rfloor,\lfloor v/{s} \rfloor"
        delta = c.P.name(st.delta.name)
        one = (rf"M^{{[{l}]}}_{{n,c,u,v}}\, {delta}_{{n,c,{where}}}" if st.rule.startswith("max")
               else rf"\frac{{1}}{{{s * s}}} {delta}_{{n,c,{where}}}")
        term = (st.expr.function.args[0].expr
                if isinstance(st.expr, sp.Sum) and st.expr.function.is_Piecewise else st.expr)
        rhs = (rf"= \sum_{{i,j:\ 0 \le u - {s}i < {s},\ 0 \le v - {s}j < {s}}} "
               + window_tex(c, st, term.xreplace(st.window.sizes())) + f" = {one}")
    return equation_row(_window_lhs(c, st, l), rhs, label, note=_shape(c, st.target), text=text)


# ----------------------------------------------------------------------------- index views

def _reductions(node: Node) -> str | None:
    """The axis a normalisation's statistics reduce over (None: no statistics)."""
    return next((st.axis for st in node.forward if isinstance(st, Reduce)), None)


def _index(c: _KindsDoc, expr: sp.Expr, axis: str | None, extra: str | None = None,
           bound: sp.Symbol | None = None) -> sp.Expr:
    """expr with each array replaced by its entry: per unit over the batch (``axis`` BATCH:
    data entries by example i, per-unit rows plain), per example over its units (UNITS: data
    and rows by unit j, per-example columns plain), or per entry (None: unit j, example i).
    ``extra``: an axis a sum runs over too; ``bound`` replaces that axis's index."""
    def idx(cls):
        axes = []
        if cls in (DATA, ROW, "weights") and (axis in (UNITS, None) or extra == UNITS) \
                and not (axis == BATCH and cls == ROW and extra != UNITS):
            axes.append(UNITS)
        if cls in (DATA, COLUMN) and (axis in (BATCH, None) or extra == BATCH) \
                and not (axis == UNITS and cls == COLUMN and extra != BATCH):
            axes.append(BATCH)
        return [(bound if bound is not None and a == extra else (UNIT if a == UNITS else EXAMPLE))
                for a in axes]

    mapping = {}
    for s in expr.free_symbols:
        if s in c.g.shapes:
            indices = idx(c.g.shapes[s][0])
            if indices:
                mapping[s] = sp.IndexedBase(s.name)[tuple(indices)]
    return expr.xreplace(mapping)


# ----------------------------------------------------------------------------- terms

class _Terms:
    """LaTeX of the backward's right-hand sides, as the literature writes them: each term an
    adjoint times its local derivative (∂J/∂x̂_i · 1/√(σ²+ε)), sums over the batch or the
    units written out with the adjoints that do not depend on the index taken outside."""

    def __init__(self, c: _KindsDoc):
        self.c = c
        g = c.g
        self.adjoint_names = set(c.p.adjoints) | {f"dZ{n.index}" for n in g.nodes}
        self.temps = _temps(g, self.adjoint_names)
        self.forward_order = {st.target: k for k, st in enumerate(g.forward)}
        self.placed: dict = {}  # a written-out sum's placeholder -> the order of its terms

    def _is_adjoint(self, factor) -> bool:
        if isinstance(factor, sp.Indexed):
            return str(factor.base.label) in self.adjoint_names
        return isinstance(factor, sp.Symbol) and factor.name in self.adjoint_names

    def expr(self, expr: sp.Expr, printer, placeholders: dict) -> str:
        terms = sorted(sp.Add.make_args(expr), key=self._order)
        out = ""
        for k, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            tex = self.term(-term if negative else term, printer, placeholders)
            out += (" - " if negative else (" + " if k else "")) + tex
        return out.strip()

    def _order(self, term) -> int:
        """Terms through the later forward quantity first (x̂, then σ², then μ)."""
        best = -1
        for s in term.free_symbols | {i.base.label for i in term.atoms(sp.Indexed)}:
            if s in self.placed:
                best = max(best, -self.placed[s])
            name = str(s)
            if name in self.c.p.adjoints:
                best = max(best, self.forward_order.get(sp.Symbol(self.c.p.adjoints[name], real=True), -1))
        return -best

    def term(self, term, printer, placeholders: dict) -> str:
        coeff, factors = term.as_coeff_mul()
        adjoint = [f for f in factors if self._is_adjoint(f)]
        sums = [f for f in factors if f in placeholders]
        local = sp.Mul(coeff, *[f for f in factors if f not in adjoint and f not in sums])
        head = " ".join([printer.doprint(f) for f in adjoint] + [placeholders[s] for s in sums])
        if local == 1:
            return head
        local = sp.factor(local)
        if not head:
            number, rest = local.as_coeff_Mul()
            if number != 1 and isinstance(rest, sp.Add):  # 2/5 (a - mu), not 2a/5 - 2mu/5
                return rf"{printer.doprint(number)} \left({printer.doprint(rest)}\right)"
            tex = printer.doprint(local)
            return rf"\left({tex}\right)" if isinstance(local, sp.Add) else tex
        if local.is_Number:
            return f"{printer.doprint(local)} {head}"
        tex = printer.doprint(local)
        if isinstance(local, (sp.Symbol, sp.Indexed)):
            return f"{head} {tex}"
        if isinstance(local, sp.Add) or tex.startswith("-"):
            tex = rf"\left({tex}\right)"
        return rf"{head} \cdot {tex}"


def _temps(g: GraphDerivation, adjoints: set) -> dict:
    """The backward's temporaries, inlined where they are read: each sum over the batch or the
    units (a Reduce) and each product (∂J/∂Z W) that is one term of a derivative, not the
    derivative itself."""
    return {st.target: st for st in g.backward
            if isinstance(st, (Reduce, Product)) and st.target.name not in adjoints}


# ----------------------------------------------------------------------------- sections

def _overview(c: _KindsDoc, proof) -> dict:
    g = c.g
    kinds = []
    for node in g.nodes:
        if node.kind.title not in kinds:
            kinds.append(node.kind.title)
    skips = [(node.index, node.spec.skip) for node in g.nodes if node.spec.skip is not None]
    return {"name": tt(g.spec.name), "source": tt(g.spec.source.split("/")[-1]) if g.spec.source else "",
            "sizes": "--".join(map(str, g.spec.layer_sizes)), "depth": len(g.nodes),
            "kinds": ", ".join(kinds), "skips": skips, "couples": g.couples_batch,
            "proof": _proof_sentence(proof),
            "delta": c.P.tagged(r"\Delta", "l"),
            "Z": c.P.tagged("Z", "l"), "A": c.P.tagged("A", "l"), "a": c.p.tagged("a", "l"),
            "z": c.p.tagged("z", "l"), "n": c.p.tagged("n", "l")}


def _proof_sentence(proof) -> str:
    """The dense document's sentence about --check, with the number of examples the kinds'
    proof writes the loss over (a ProofReport does not record it yet)."""
    if proof is None:
        return ""
    from ..proof import GRAPH_EXAMPLES
    return proof_sentence(proof).replace("over two examples", f"over {GRAPH_EXAMPLES} examples")


def _claims_sentence(claims) -> str:
    """What \texttt{derive --claims} found, when it ran along (no Errata section for kinds yet)."""
    if claims is None:
        return ""
    proven = sum(1 for v in claims.verdicts if v.proven)
    return (rf"The {len(claims.verdicts)} claims of {tt(Path(claims.file.path).name)} were "
            rf"checked against this derivation by \texttt{{derive --claims}}: {proven} proven, "
            rf"{len(claims.verdicts) - proven} refuted (its report lists each with its "
            r"counterexample; the Errata section is not printed for layer kinds yet).")


def _architecture(c: _KindsDoc) -> dict:
    g = c.g
    rows = [("0 (input)", "input", str(g.spec.input), "", "", "", "")]
    total = 0
    for node in g.nodes:
        act = node.activation
        params = ", ".join(f"${c.tex(p)}$ ${_shape(c, p)}$" for p, *_ in node.params)
        count = sum(int(sp.prod(shape)) for _, shape, *_ in node.params)
        total += count
        state = ", ".join(f"${c.tex(s)}$" for s, *_ in node.state)
        options = _options_text(node)
        kind = tex_escape(node.kind.title) + (f" ({options})" if options else "")
        if node.spec.skip is not None:
            kind += rf", $+\,{c.p.tagged('a', node.spec.skip)}$"
        rows.append((str(node.index) + (" (output)" if node is g.nodes[-1] else ""), kind,
                     str(node.units), "" if act.name == "identity" else f"${act.latex}$",
                     params or "--", state or "--", f"{count:,}"))
    from .document import column_spec
    table = Table(r">{\raggedright\arraybackslash}p{0.09\linewidth}" + column_spec(0.2) + "r"
                  + column_spec(0.13, 0.21, 0.12) + "r",
                  ("layer $l$", "kind", f"${c.n('l')}$", "activation", "parameters", "state",
                   "count"), tuple(rows), ("total", "", "", "", "", "", f"{total:,}"))
    return {"table": table, "couples": g.couples_batch}


def _options_text(node: Node) -> str:
    shown = []
    for o in node.kind.options:
        if o.key in ("units", "bias"):
            continue
        value = node.options[o.key]
        name = {"rate": "p", "eps": r"\epsilon", "momentum": "momentum"}.get(o.key, o.key)
        shown.append(f"${name} = {latex_number(float(value))}$" if name != "momentum"
                     else f"momentum ${latex_number(float(value))}$")
    if node.kind.name == "dense" and not node.options.get("bias", True):
        shown.append("no bias")
    return ", ".join(shown)


def _forward(c: _KindsDoc) -> dict:
    layers = []
    for node in c.g.nodes:
        layers.append(_forward_layer(c, node))
    return {"layers": layers}


def _forward_layer(c: _KindsDoc, node: Node) -> dict:
    l = node.index
    axis = _reductions(node)
    rows = _statement_rows(c, node, node.forward, axis, f"fwd{l}")
    inference, shown = [], []
    if node.kind.inference is not None:
        shown = [st for st in node.inference if st not in node.forward]
        inference = _statement_rows(c, node, shown, None if axis is None else axis, f"inf{l}")
    state = []
    momentum = node.options.get("momentum")
    for s, init, target in node.state:  # PyTorch's rule, with its momentum as given
        keep, mom = latex_number(1 - float(momentum)), latex_number(float(momentum))
        rule = rf"{keep} \, {c.tex(s)} + {mom} {c.p.parens(c.tex(target)) if target.is_Add else c.tex(target)}"
        state.append(equation_row(c.tex(s), rf"\leftarrow {rule}", numbered=False,
                          note=rf"\text{{starts at }} {init:g}"))
    randoms = []
    for r, keep in node.randoms:
        randoms.append(equation_row(c.p.entry(r.name, "ji"),
                            rf"\sim \operatorname{{Bernoulli}}({latex_number(float(keep))})",
                            c.label(f"mask{l}"), numbered=True,
                            note=rf"{_shape(c, r)}"))
    constants = ", ".join(rf"$\epsilon = {latex_number(float(v))}$" for _, v, _ in node.constants)
    window = next((st.window for st in node.forward if hasattr(st, "window")), None)
    where = {BATCH: r"per unit, over the batch of $m$ examples $i = 1, \ldots, m$ (the unit's index dropped)",
             UNITS: rf"per example, over its ${node.units}$ units $j = 1, \ldots, {c.n(l)}$ "
                    rf"(the example's index dropped), ${c.n(l)} = {node.units}$",
             None: "for one example"}[axis]
    if window is not None:
        where = _window_where(node, window)
    unbiased = any(target.has(M_SYM) for _, _, target in node.state)
    module = node.kind.torch.split("(")[0]
    state_text = (r"After each training forward the running statistics move towards the batch's, "
                  rf"as PyTorch's \texttt{{{tex_escape(module)}}} does it"
                  + (r" (its running variance is the unbiased one, $m/(m-1)$ times $\sigma^2_B$)"
                     if unbiased else "") + ":")
    copies = all(isinstance(st, Let) and st.expr == _input_of(node) for st in shown)
    inference_text = ("When not training, the running statistics take the place of the batch's:"
                      if node.state else "When not training, the layer passes its input on unchanged:"
                      if copies else "When not training:")
    return {"index": l, "title": tex_escape(node.kind.title), "state_text": state_text,
            "inference_text": inference_text,
            "general": node.kind.latex, "rows": rows, "where": where,
            "inference": inference, "state": state, "randoms": randoms, "constants": constants,
            "skip": node.spec.skip, "activation": f"${node.activation.latex}$",
            "identity": node.activation.name == "identity", "couples": node.kind.couples_batch,
            "dropout": bool(node.randoms),
            "keep": latex_number(float(node.randoms[0][1])) if node.randoms else "",
            "a_prev": c.tex(_input_of(node))}


def _window_where(node: Node, window) -> str:
    """What the indices of a window layer's index form range over, and its sizes."""
    C, H, W = window.image_in
    F, Ho, Wo = window.image_out
    pool = node.kind.index_form != "conv"
    sizes = (rf"$s = {window.stride}$" if pool else
             rf"$C = {C}$, $k = {window.kernel}$, stride $s = {window.stride}$, padding "
             rf"$P = {window.padding}$")
    return (rf"for example $n$, {'channel $c$' if pool else 'filter $f$'} and output position "
            rf"$(i, j)$, $0 \le i < {Ho}$, $0 \le j < {Wo}$, counted from 0; the input is "
            rf"${C} \times {H} \times {W}$ and the output ${F} \times {Ho} \times {Wo}$ "
            rf"({'channels' if pool else 'filters'} $\times$ height $\times$ width, stored "
            rf"per example in that order), with {sizes}"
            + ("" if pool else r"; an input entry outside the image reads 0 (the padding)"))


def _input_of(node: Node) -> sp.Symbol:
    return node.symbols[INPUT]


def _statement_rows(c: _KindsDoc, node: Node, statements, axis, key: str) -> list:
    """The forward statements of a layer in the documents' notation, each with its shape."""
    rows = []
    for k, st in enumerate(statements):
        label = c.label(f"{key}-{k}")
        note = _shape(c, st.target)
        if isinstance(st, Linear):
            rhs = f"{c.tex(st.W)} {c.tex(st.a)}" + (f" + {c.tex(st.b)}" if st.b is not None else "")
            rows.append(equation_row(c.tex(st.target), f"= {rhs}", label, note=note))
        elif isinstance(st, Activate):
            g = (c.tex(st.source) if st.activation.name == "identity"
                 else f"{st.activation.latex}{c.p.parens(c.tex(st.source))}")
            rows.append(equation_row(c.tex(st.target), f"= {g}", label, note=note))
        elif isinstance(st, Reduce):
            bound = EXAMPLE if st.axis == BATCH else UNIT
            inner = _index(c, st.expr, axis, st.axis, bound)
            n_tex = "m" if st.axis == BATCH else c.n(node.index)
            body = c.p.parens(c.tex(inner)) if isinstance(inner, sp.Add) else c.tex(inner)
            rhs = rf"\frac{{1}}{{{n_tex}}} \sum_{{{c.tex(bound)}=1}}^{{{n_tex}}} {body}"
            rows.append(equation_row(c.tex(st.target), f"= {rhs}", label, note=note))
        elif st.op in ("conv", "pool"):
            w = st.window
            if st.op == "conv":
                rhs = window_tex(c, st, st.expr)
                lhs = c.p.name(st.target.name) + "_{n,f,i,j}"
            else:
                s = w.stride
                how = r"\max" if st.how == "max" else rf"\frac{{1}}{{{s * s}}} \sum"
                rhs = (rf"{how}_{{0 \le p, q < {s}}} {c.p.name(st.a.name)}"
                       rf"_{{n,c,{s}i+p,{s}j+q}}")
                lhs = c.p.name(st.target.name) + "_{n,c,i,j}"
            rows.append(equation_row(lhs, f"= {rhs}", label, note=note))
        elif isinstance(st, Let):
            if st.target == node.Z and node.spec.skip is not None:  # z = z-tilde + a_K
                rows.append(equation_row(c.tex(st.target), f"= {_skip_sum(c, st)}", label, note=note,
                                 text=rf"The skip adds the output of layer {node.spec.skip}:"))
                continue
            if axis is None:  # entry by entry, for one example: index j
                expr = _index(c, st.expr, UNITS)
                lhs = c.p.entry(st.target.name, "j")
            else:
                expr = _index(c, st.expr, axis)
                lhs = c.tex(_index(c, st.target, axis))
            rows.append(equation_row(lhs, f"= {_in_order(c, expr)}", label, note=note))
    return rows


def _in_order(c: _KindsDoc, expr: sp.Expr) -> str:
    """A sum with the term of the latest computed quantity first, as the declarations write
    it: gamma x-hat + beta."""
    if not isinstance(expr, sp.Add):
        return c.tex(expr)
    order = {st.target.name: k for k, st in enumerate(c.g.forward)}

    def latest(term):
        names = {str(getattr(s, "label", s)) for s in term.free_symbols} | \
            {str(i.base.label) for i in term.atoms(sp.Indexed)}
        return -max((order.get(n, -1) for n in names), default=-1)

    out = ""
    for k, term in enumerate(sorted(sp.Add.make_args(expr), key=latest)):
        negative = term.could_extract_minus_sign()
        tex = c.tex(-term if negative else term)
        out += (" - " if negative else (" + " if k else "")) + tex
    return out.strip()


def _skip_sum(c: _KindsDoc, st: Let) -> str:
    terms = sorted(sp.Add.make_args(st.expr), key=lambda s: s.name.startswith("A"))
    return " + ".join(c.tex(t) for t in terms)


# -- the backward ----------------------------------------------------------------------

def _owners(g: GraphDerivation) -> tuple[dict, dict]:
    """symbol -> the layer that computes it; symbol -> the layers whose forward reads it."""
    owner = {g.X: 0}
    readers: dict = {}
    for node in g.nodes:
        for st in node.forward:
            owner[st.target] = node.index
            for s in st.reads:
                readers.setdefault(s, set()).add(node.index)
        for p, *_ in node.params:
            owner[p] = node.index
    return owner, readers


def _group(g: GraphDerivation, owner: dict, readers: dict, symbol: sp.Symbol) -> int | None:
    """The layer whose backward section prints ∂J/∂x: the one later layer reading x; of
    several, a normalisation reading it (its terms are written per unit or per example);
    else the layer that computes x."""
    base = next((s for s in owner if s.name == symbol.name[1:]), None)
    if base is None:
        return None
    read = readers.get(base, set()) - {owner[base]}
    if len(read) == 1:
        return next(iter(read))
    normalising = sorted(n.index for n in g.nodes if n.index in read and _reductions(n)
                         and any(base in st.reads for st in n.forward
                                 if not (isinstance(st, Let) and st.target == n.Z)))
    return normalising[0] if normalising else owner[base]


def _backward(c: _KindsDoc) -> dict:
    g = c.g
    terms = _Terms(c)
    owner, readers = _owners(g)
    groups: dict[int, list] = {}
    output = None
    for st in g.backward:
        if isinstance(st, OutputError):
            output = st
            continue
        if st.target in terms.temps:
            continue
        k = _group(g, owner, readers, st.target)
        if k is not None:
            groups.setdefault(k, []).append(st)
    last = g.nodes[-1]
    out_row = equation_row(c.p.entry(output.target.name, "ji"),
                   rf"= \frac{{1}}{{m}} {c.p.parens(c.tex(_output_delta(c, last)))}",
                   c.label("bwd-out"), note=_shape(c, output.target))
    layers = []
    done: dict[sp.Symbol, str] = {}
    for node in reversed(g.nodes):
        statements = groups.get(node.index, [])
        layers.append(_backward_layer(c, node, statements, terms, done))
    grads = []
    for p, d in g.gradients:
        grads.append((f"${c.tex(p)}$", f"${_shape(c, p)}$", f"${c.P.partial('J', c.tex(p), inline=True)}$",
                      f"${_shape(c, p)}$", c.ref(f"bwd-{d.name}")))
    table = Table("lllll", ("parameter", "shape", "gradient", "shape", "equation"), tuple(grads))
    return {"output": [out_row], "output_ref": c.ref("delta-out"), "layers": layers,
            "gradients": table,
            "L": len(g.nodes), "delta": c.P.name(f"dZ{last.index}"),
            "penalised": bool(g.objective.penalties)}


def _output_delta(c: _KindsDoc, node: Node) -> sp.Expr:
    """δ_L of the derivation, for this network's output layer, entry j of example i."""
    from ..local import INDEX
    I = INDEX
    return c.g.output.delta.xreplace({I.a: sp.IndexedBase(node.A.name), I.z: sp.IndexedBase(node.Z.name),
                                      I.y: sp.IndexedBase(c.g.Y.name)}).subs(I.j, sp.Symbol("ji"))


def _backward_layer(c: _KindsDoc, node: Node, statements: list, terms: _Terms, done: dict) -> dict:
    l = node.index
    axis = _reductions(node)
    rows = []
    introduced = False
    own_data = {node.Z, node.A} | ({_pre_skip(node)} if _pre_skip(node) is not None else set())
    if axis is not None:  # the parameters' gradients last, as Ioffe & Szegedy list them
        gradients = {d for p, d in c.g.gradients if p in {q for q, *_ in node.params}}
        statements = sorted(statements, key=lambda st: st.target in gradients)
    for st in statements:
        base = sp.Symbol(st.target.name[1:], real=True)
        matrix = axis is None or any(base.name == s.name for s in own_data)
        label = c.label(f"bwd-{st.target.name}")
        if hasattr(st, "rule"):  # a window kind's reverse rule, derived in index form
            key = f"bwd-{st.target.name}-rule"
            rows.append(_window_backward_row(c, node, st, c.label(key)))
            # a penalty's term adds to it: "(the rule's equation) + lambda W"
            done[st.target] = rf"\text{{{c.ref(key)}}}"
            continue
        if isinstance(st, Product):
            rhs = _product_tex(c, st)
            done[st.target] = rhs
            rows.append(equation_row(c.P.name(st.target.name), f"= {rhs}", label, note=_shape(c, st.target)))
            continue
        if isinstance(st, Reduce):  # a derivative that is one sum: written as the sum it is
            alias = sp.Symbol(f"sum_{st.target.name}", real=True)
            terms.temps[alias] = Reduce(alias, st.expr, st.axis, st.mean)
            st = Let(st.target, alias)
        text = _sentence(c, node, st)
        if not matrix and not introduced:
            text, introduced = _INTRO[axis], True
        if matrix:
            lhs, rhs = c.P.name(st.target.name), _matrix_rhs(c, node, st, done, terms.temps)
        else:
            lhs, rhs = _index_row(c, node, st, axis, terms)
        if st.target in done and st.target in st.reads:  # a penalty's term, added to the gradient
            rows = [r for r in rows if r.label != label]
        done[st.target] = rhs
        rows.append(equation_row(lhs, f"= {rhs}", label, note=_shape(c, st.target), text=text))
    into_input = any(st.target.name == f"d{_input_of(node).name}" for st in c.g.backward)
    compact = compact_form(c.g, node) if axis is not None and into_input else None
    return {"index": l, "title": tex_escape(node.kind.title), "rows": rows,
            "compact": _compact_rows(c, node, compact) if compact else None,
            "proof": compact.sentence if compact else "", "axis": axis,
            "network_input": not into_input and node.index == 1,
            "mask": f"(the term of {c.ref(f'bwd-d{_input_of(node).name}')})" if node.randoms else "",
            "skip": node.spec.skip,
            "skip_into": [n.index for n in c.g.nodes if n.spec.skip == l]}


_INTRO = {
    BATCH: r"Batch normalisation's backward goes through the batch mean $\mu_B$ and variance "
           r"$\sigma^2_B$, as Ioffe and Szegedy (2015) write it, per unit over the examples "
           r"$i = 1, \ldots, m$ (the unit's index dropped):",
    UNITS: r"Layer normalisation's backward goes through the mean $\mu$ and variance $\sigma^2$ of "
           r"each example, per example over its units $j$ (the example's index dropped; the "
           r"parameters' gradients sum over the examples $i$):",
}


def _sentence(c: _KindsDoc, node: Node, st) -> str:
    """Where a skip's error joins: the derivative of a layer's output that a skip also reads."""
    source = next((n for n in c.g.nodes if f"d{n.A.name}" == st.target.name), None)
    into = [n.index for n in c.g.nodes if source is not None and n.spec.skip == source.index]
    if not into:
        return ""
    return (rf"The output of layer {source.index} is read by layer {source.index + 1} and by the "
            rf"skip of layer{'s' if len(into) > 1 else ''} {', '.join(map(str, into))}; its "
            r"derivative gathers both, so the error of the later layer reaches this one directly:")


def _product_tex(c: _KindsDoc, st: Product) -> str:
    """The graph's row-per-example product, in the documents' column layout."""
    if st.transpose:  # dW = dZᵀ A (rows) is Δ Aᵀ (columns)
        return f"{c.P.name(st.left.name)} {c.P.name(st.right.name, 'T')}"
    return f"{c.P.name(st.right.name, 'T')} {c.P.name(st.left.name)}"  # dZ W (rows) is Wᵀ Δ


def _matrix_rhs(c: _KindsDoc, node: Node, st: Let, done: dict, temps: dict) -> str:
    """A backward statement over whole arrays: ⊙ between arrays, g' by its name, sums over
    the batch as a product with the ones vector."""
    g = c.g
    act = next((s for s in node.forward if isinstance(s, Activate)
                and f"d{s.source.name}" == st.target.name), None)
    if act is not None and act.activation.backward != 1:  # ∂J/∂A ⊙ g'(Z), g' as derived
        local = act.activation
        arg, symbol = (act.target, A_SYM) if local.backward_uses_output else (act.source, Z_SYM)
        d_out = sp.Symbol(f"d{act.target.name}", real=True)
        if sp.simplify(st.expr - d_out * local.backward.xreplace({symbol: arg})) == 0:
            return (rf"{c.P.name(d_out.name)} \odot {c.P.derivative_name(node.index)}"
                    rf"{c.P.parens(c.P.name(act.source.name))}")
    parts = []
    for term in sp.Add.make_args(st.expr):
        if term == st.target and st.target in done:  # the gradient before a penalty's term
            parts.append(done[st.target])
            continue
        coeff, factors = term.as_coeff_mul()
        texts = []
        for f in factors:
            temp = temps.get(f)
            if isinstance(temp, Product):
                texts.append(done.get(f) or _product_tex(c, temp))
            elif isinstance(temp, Reduce):  # a sum over the batch: X 1 (over the units: 1^T X)
                inner = _matrix_of(c, temp.expr)
                inner = c.p.parens(inner) if isinstance(temp.expr, (sp.Add, sp.Mul)) else inner
                texts.append(rf"{inner} \mathbf{{1}}" if temp.axis == BATCH
                             else rf"\mathbf{{1}}^{{T}} {inner}")
            elif isinstance(f, sp.Symbol) and f in g.shapes:
                texts.append(c.P.name(f.name))
            else:
                texts.append(c.P.doprint(f))
        body = r" \odot ".join(texts)
        if coeff == -1:
            body = "-" + body
        elif coeff != 1:
            body = f"{c.P.doprint(coeff)} {body}"
        parts.append(body)
    return " + ".join(parts).replace("+ -", "- ")


def _matrix_of(c: _KindsDoc, expr: sp.Expr) -> str:
    coeff, factors = expr.as_coeff_mul()
    body = r" \odot ".join(c.P.name(f.name) if isinstance(f, sp.Symbol) else c.P.doprint(f)
                           for f in factors)
    return body if coeff == 1 else f"{c.P.doprint(coeff)} {body}"


def _index_row(c: _KindsDoc, node: Node, st: Let, axis: str, terms: _Terms) -> tuple[str, str]:
    """A normalisation's backward statement entry by entry, its sums written out."""
    target_indexed = _index(c, st.target, axis)
    target_index = set(target_indexed.indices) if isinstance(target_indexed, sp.Indexed) else set()
    placeholders = {}
    mapping = {}
    for s in st.expr.free_symbols:
        if s in terms.temps and isinstance(terms.temps[s], Reduce):
            red = terms.temps[s]
            index = EXAMPLE if red.axis == BATCH else UNIT
            bound = BOUND if index in target_index else index
            inner = _index(c, red.expr, axis, red.axis, bound)
            n_tex = "m" if red.axis == BATCH else c.n(node.index)
            coeff, factors = inner.as_coeff_mul()
            outside = [f for f in factors if terms._is_adjoint(f) and not f.has(bound)]
            inside = inner / sp.Mul(*outside) if outside else inner
            if not any(terms._is_adjoint(f) for f in inside.atoms(sp.Indexed, sp.Symbol)):
                inside = sp.factor(inside)
            body = terms.expr(inside, c.p, {})
            if len(sp.Add.make_args(inside)) > 1 or body.startswith("-"):
                body = rf"\left({body}\right)"
            tex = rf"\sum_{{{c.tex(bound)}=1}}^{{{n_tex}}} {body}"
            if outside:
                tex = " ".join(c.tex(f) for f in outside) + r" \cdot " + tex
            placeholder = sp.Symbol(f"SUM{len(placeholders)}")
            terms.placed[placeholder] = terms._order(inner)
            placeholders[placeholder] = tex
            mapping[s] = placeholder
    expr = _index(c, st.expr.xreplace(mapping), axis)
    return c.tex(target_indexed), terms.expr(expr, c.p, placeholders)


# -- the compact forms -------------------------------------------------------------------

class CompactFormError(AssertionError):
    """A compact form does not equal the derived backward: the document is not written."""


@dataclass(frozen=True)
class CompactForm:
    node: int
    axis: str
    sizes: tuple[int, ...]  # the batch sizes (or the layer's width) it was proven at
    points: int  # exact rational points per size
    sentence: str


def compact_form(g: GraphDerivation, node: Node) -> CompactForm:
    """Check the normalisation's compact backward,
    ∂J/∂a_i = 1/(N √(σ² + ε)) (N ĝ_i − Σ_k ĝ_k − x̂_i Σ_k ĝ_k x̂_k) with ĝ_k = γ_k δ_k
    (γ the same for every k in batch normalisation), against the graph's own statements:
    the difference simplified to 0 with √(σ² + ε) = s (ε = s² − σ²), and evaluated exactly at
    rational points where σ² + ε is a perfect square.  Raises CompactFormError."""
    axis = _reductions(node)
    sizes = COMPACT_BATCHES if axis == BATCH else (node.units,)
    rng = random.Random(node.index)
    s = sp.Symbol("s", positive=True)
    symbolic = [N for N in sizes if N <= COMPACT_SYMBOLIC_MAX]
    for N in symbolic:
        derived, compact, var, eps = _compact_instance(g, node, axis, N)
        for k in range(N):
            difference = (derived[k] - compact[k]).subs(eps, s**2 - var)
            if sp.cancel(sp.together(sp.expand(difference))) != 0:
                raise CompactFormError(f"layer {node.index}: the compact form of "
                                       f"{node.kind.title} differs from the derived backward "
                                       f"at N = {N}, entry {k + 1}")
    for N in sizes:
        for _ in range(COMPACT_POINTS):
            derived, compact, var, eps = _compact_instance(g, node, axis, N, rng)
            point = {eps: (var + 1) ** 2 - var}  # σ² + ε = (σ² + 1)², a perfect square
            for k in range(N):
                if sp.nsimplify(derived[k].xreplace(point) - compact[k].xreplace(point)) != 0:
                    raise CompactFormError(f"layer {node.index}: the compact form of "
                                           f"{node.kind.title} differs from the derived "
                                           f"backward at a rational point, N = {N}")
    what = (f"for $m = {', '.join(map(str, sizes))}$ examples" if axis == BATCH
            else f"for this layer's ${node.units}$ units")
    how = []
    if symbolic:
        how.append(r"with $\sqrt{\sigma^2 + \epsilon} = s$ (that is, $\epsilon = s^2 - \sigma^2$), "
                   r"SymPy simplifies the difference between this form and the derived "
                   r"statements above to $0$ for every entry")
    how.append(rf"the two agree exactly at {COMPACT_POINTS} random rational points "
               rf"{'per size ' if len(sizes) > 1 else ''}where $\sigma^2 + \epsilon$ is a "
               rf"perfect square")
    sentence = f"Proven {what}: {', and '.join(how)}."
    return CompactForm(node.index, axis, tuple(sizes), COMPACT_POINTS, sentence)


@dataclass(frozen=True)
class _Compact:
    """A normalisation's compact backward in index form, the one definition both checked and
    printed: ∂J/∂a_i = prefactor · bracket, with ĝ_k = γ_k δ_k (γ taken out when it is the
    same for every k, as in batch normalisation):
    prefactor = γ/(N √(σ² + ε)), bracket = N δ_i − Σ_k δ_k − x̂_i Σ_k δ_k x̂_k."""

    index: sp.Symbol  # i: the entry of the input's derivative
    count: sp.Symbol  # N: m (the batch) or n_l (the layer's units)
    prefactor: sp.Expr
    terms: tuple[tuple[int, tuple[sp.Expr, ...]], ...]  # the bracket: (sign, factors), in order
    delta: sp.IndexedBase  # the error of the layer's output (before a skip's a_K)
    xhat: sp.IndexedBase
    gamma: sp.Basic  # a symbol, or an IndexedBase when it varies with k
    var: sp.Symbol
    eps: sp.Symbol

    @property
    def bracket(self) -> sp.Expr:
        return sp.Add(*[sign * sp.Mul(*factors) for sign, factors in self.terms])

    def at(self, N: int, i: int, values: dict) -> sp.Expr:
        """Entry i (from 1) with N entries, the arrays' entries taken from ``values``
        (IndexedBase -> list, from index 1) and scalars substituted."""
        expr = (self.prefactor * self.bracket).subs({self.count: N, self.index: i}).doit()
        entries = {}
        for base, vals in values.items():
            if isinstance(base, sp.IndexedBase):
                entries |= {base[k + 1]: v for k, v in enumerate(vals)}
            else:
                entries[base] = vals
        return expr.xreplace(entries)


def _compact(g: GraphDerivation, node: Node) -> _Compact:
    axis = _reductions(node)
    index, k = (EXAMPLE, BOUND) if axis == BATCH else (UNIT, BOUND)
    count = M_SYM if axis == BATCH else sp.Symbol(f"n{node.index}", integer=True, positive=True)
    delta = sp.IndexedBase(f"d{node.symbols[OUTPUT].name}")
    xhat = sp.IndexedBase(next(st.target.name for st in node.forward
                               if isinstance(st, Let) and st.target.name.startswith("xhat")))
    var = next(st.target for st in node.forward
               if isinstance(st, Reduce) and st.target.name.startswith("var"))
    eps = next(cst for cst, *_ in node.constants)
    gamma = next(p for p, *_ in node.params if p.name.startswith("gamma"))
    root = sp.sqrt(var + eps)
    if g.shapes[gamma][0] == ROW and axis == UNITS:  # γ_k varies along the sum: inside it
        gamma = sp.IndexedBase(gamma.name)
        g_hat = lambda j: gamma[j] * delta[j]  # noqa: E731
        prefactor = 1 / (count * root)
    else:
        g_hat = delta.__getitem__
        prefactor = gamma / (count * root)
    terms = ((1, (count, g_hat(index))), (-1, (sp.Sum(g_hat(k), (k, 1, count)),)),
             (-1, (xhat[index], sp.Sum(g_hat(k) * xhat[k], (k, 1, count)))))
    return _Compact(index, count, prefactor, terms, delta, xhat, gamma, var, eps)


def _compact_instance(g: GraphDerivation, node: Node, axis: str, N: int,
                      rng: random.Random | None = None):
    """The derived ∂J/∂a_k of the layer's own statements, the compact form, the variance and
    the symbol ε, for one unit over N examples (batch) or one example over its N units
    (layer); the inputs, δ and the parameters are symbols, or with ``rng`` random rationals."""
    def make(name: str):
        if rng is None:
            return sp.Symbol(name, real=True)
        return sp.Rational(rng.randint(-9, 9), rng.randint(1, 5))

    varying = {DATA} | ({ROW} if axis == UNITS else set())
    a = [make(f"a{k}") for k in range(N)]
    delta = [make(f"delta{k}") for k in range(N)]
    env: dict = {_input_of(node): a, M_SYM: sp.Integer(N)}
    gamma = None
    for p, *_ in node.params:
        if g.shapes[p][0] in varying:
            env[p] = [make(f"{p.name}_{k}") for k in range(N)]
        else:
            env[p] = make(p.name)
        if p.name.startswith("gamma"):
            gamma = env[p]
    eps = None
    for cst, _, _ in node.constants:
        env[cst] = eps = sp.Symbol("epsilon", positive=True)
    out = node.symbols[OUTPUT]

    def value(expr, k):
        return expr.xreplace({s: (v[k] if isinstance(v, list) else v) for s, v in env.items()
                              if s in expr.free_symbols}).subs(M_SYM, N)

    def run(st):
        if not all(s in env for s in st.reads):
            return False
        if isinstance(st, Reduce):
            if st.axis != axis:
                return False
            total = sp.Add(*[value(st.expr, k) for k in range(N)])
            env[st.target] = total / N if st.mean else total
        elif isinstance(st, Let):
            vals = [value(st.expr, k) for k in range(N)]
            env[st.target] = vals if any(isinstance(env[s], list) for s in st.reads
                                         if s in env) else vals[0]
        else:
            return False
        return True

    for st in node.forward:
        if isinstance(st, (Reduce, Let)):
            run(st)
        if st.target == out:
            break
    var = next(env[st.target] for st in node.forward if isinstance(st, Reduce) and st.target.name.startswith("var"))
    xhat = next(env[st.target] for st in node.forward if isinstance(st, Let) and st.target.name.startswith("xhat"))
    env[sp.Symbol(f"d{out.name}", real=True)] = delta
    dA = sp.Symbol(f"d{_input_of(node).name}", real=True)
    derived = None
    for st in g.backward:
        if st.target == dA and isinstance(st, Let):  # this layer's terms of ∂J/∂a
            mine = [t for t in sp.Add.make_args(st.expr) if all(s in env for s in t.free_symbols)]
            derived = [sp.Add(*[value(t, k) for t in mine]) for k in range(N)]
            break
        if st.target not in env:
            run(st)
    if derived is None:
        raise CompactFormError(f"layer {node.index}: no derivative of its input was derived")
    form = _compact(g, node)
    values = {form.delta: delta, form.xhat: xhat, form.var: var, form.eps: eps,
              (form.gamma if isinstance(form.gamma, sp.IndexedBase) else form.gamma): gamma}
    compact = [form.at(N, k + 1, values) for k in range(N)]
    return derived, compact, sp.expand(var), eps


def _compact_rows(c: _KindsDoc, node: Node, form: CompactForm) -> list:
    l = node.index
    compact = _compact(c.g, node)
    a = _input_of(node).name
    lhs = c.p.entry(f"d{a}", c.tex(compact.index))
    bracket = "".join((" - " if sign < 0 else (" + " if k else "")) + " ".join(map(c.tex, factors))
                      for k, (sign, factors) in enumerate(compact.terms))
    rhs = rf"{c.tex(compact.prefactor)} \Bigl({bracket}\Bigr)"
    if form.axis == BATCH:
        text = (rf"Written per unit, the same derivative has the compact form (with "
                rf"${c.tex(compact.delta[compact.index])}$ the error of example $i$ at this unit):")
    else:
        text = (r"Written per example, the same derivative has the compact form (here $\gamma$ "
                r"varies with the unit, so it stays inside the sums):")
    own = {f"d{st.target.name}" for st in node.forward}
    d_input = next(st for st in c.g.backward if isinstance(st, Let) and st.target.name == f"d{a}")
    others = [t for t in sp.Add.make_args(d_input.expr)
              if not any(str(getattr(s, "label", s)) in own for s in t.free_symbols)]
    if others:  # the input's derivative gathers terms from other layers too (a skip)
        lhs += " - " + " - ".join(c.tex(_index(c, t, form.axis)) for t in others)
        text = text.replace("the same derivative has", "this layer's terms of the same derivative have")
    return [equation_row(lhs, f"= {rhs}", c.label(f"compact{l}"), text=text)]


def _kinds_loss(c: _KindsDoc) -> dict:
    """The dense document's loss section; its penalty sums over the layers that have weights."""
    context = loss_section(c)
    weighted = [str(n.index) for n in c.g.nodes if any(pen for *_, pen in n.params)]
    if context["regularized"] and len(weighted) < len(c.g.nodes):
        row = context["objective"]
        every = rf"\sum_{{l=1}}^{{{len(c.g.nodes)}}}"
        over = rf"\sum_{{l \in \{{{', '.join(weighted)}\}}}}"
        context["objective"] = dataclasses.replace(
            row, rhs=tuple(line.replace(every, over) for line in row.rhs),
            note=r"\text{the layers with weights}")
    return context


# ----------------------------------------------------------------------------- rendering

def _contexts(g: GraphDerivation, notation: str, proof=None, claims=None) -> dict[str, dict]:
    c = _KindsDoc(_GraphView(g), notation)
    params = [c.tex(p) for p, *_ in g.params]
    if len(params) > 6:
        params = params[:3] + [r"\ldots"] + params[-2:]
    contexts = {
        "kinds_overview": _overview(c, proof) | {"claims": _claims_sentence(claims)},
        "kinds_architecture": _architecture(c),
        "kinds_forward": _forward(c),
        "loss": _kinds_loss(c),
        "local": local_section(c) | {"windows": _window_locals(c)},
        "kinds_backward": _backward(c),
        "updates": updates_section(c, [", ".join(params)]),
    }
    keys = {"kinds_overview": "overview", "kinds_architecture": "architecture",
            "kinds_forward": "forward", "kinds_backward": "gradients"}
    for name, context in contexts.items():
        context["sec"] = c.sec(keys.get(name, name))
        context["prefix"] = c.prefix
    return contexts


def render_kinds_sections(g: GraphDerivation, *, notation: str = "bracket", proof=None,
                          claims=None) -> dict[str, str]:
    """Each section's LaTeX, by name (``KINDS_SECTIONS``); ``claims``, a ClaimsReport, is
    stated in the overview (its Errata section is printed for dense stacks only, so far)."""
    env = latex_environment()
    return {name: env.get_template(f"{name}.tex.j2").render(**context)
            for name, context in _contexts(g, notation, proof, claims).items()}


def render_kinds_body(g: GraphDerivation, *, notation: str = "bracket", proof=None,
                      claims=None) -> str:
    from .document import PACKAGES
    sections = render_kinds_sections(g, notation=notation, proof=proof, claims=claims)
    return latex_environment().get_template("body.tex.j2").render(
        name=g.spec.name, packages=PACKAGES, sections=[sections[s] for s in KINDS_SECTIONS])


def render_kinds_document(g: GraphDerivation, *, notation: str = "bracket", proof=None,
                          claims=None) -> str:
    return standalone(g.spec, render_kinds_body(g, notation=notation, proof=proof, claims=claims))

