"""Stage 3 for a stack of layer kinds: the derived statements printed as NumPy.

A ``GraphDerivation`` (``derive.graph``) holds the training forward, the forward when not
training, and the derived backward as statements over arrays named as the documents name them
(``xhat2``, ``mu2``, ``dgamma2``).  Each is printed as one NumPy line under its formula: an
entry-wise statement with broadcasting (per-unit rows (1, n), per-example columns (m, 1)), a
mean or sum over an axis, a product.  This module reads the derivation through its public
attributes; it never imports ``derive``.
"""

from __future__ import annotations

import sympy as sp

from .printers.numpy import NumPyCodePrinter
from .printers.text import TextPrinter

__all__ = ["graph_context"]

_TEXT = TextPrinter()
_AXES = {"batch": 0, "units": 1}


class _Printer:
    """Prints statements; constants (ε) become numbers of the arrays' dtype."""

    def __init__(self, derivation):
        self.derivation = derivation
        self.constants = {c: sp.Float(float(value)) for node in derivation.nodes
                          for c, value, _ in node.constants}
        self.scipy: set[str] = set()

    def code(self, expr: sp.Expr, like: str) -> str:
        printer = NumPyCodePrinter({}, like=like)
        text = printer.doprint(expr.xreplace(self.constants))
        self.scipy |= printer.scipy_functions
        return text

    def statement(self, st, like: str) -> list[str]:
        op = st.op
        t = st.target.name
        if op == "linear":
            bias = f" + {st.b.name}" if st.b is not None else ""
            return [f"# {t} = {st.a.name} {st.W.name}ᵀ{bias}  (one row per example)",
                    f"{t} = {st.a.name} @ {st.W.name}.T{bias}"]
        if op == "let":
            if st.expr.is_Symbol:
                return [f"{t} = {st.expr.name}"]
            return [f"# {t} = {_TEXT.doprint(st.expr)}", f"{t} = {self.code(st.expr, like)}"]
        if op == "reduce":
            how = "mean" if st.mean else "sum"
            axis = _AXES[st.axis]
            over = "the batch" if st.axis == "batch" else "the units"
            return [f"# {t} = {how} over {over} of {_TEXT.doprint(st.expr)}",
                    f"{t} = np.{how}({self.code(st.expr, like)}, axis={axis}, keepdims=True)"]
        if op == "product":
            left = f"{st.left.name}.T" if st.transpose else st.left.name
            return [f"# {t} = {left} {st.right.name}", f"{t} = {left} @ {st.right.name}"]
        if op == "activate":
            act = st.activation
            src = st.source.name
            if act.name == "identity":
                return [f"{t} = {src}  # identity"]
            if act.vector:  # softmax, per example (index form: a_j = e^{z_j} / sum_k e^{z_k})
                i, j = (sp.Symbol(x, integer=True, positive=True) for x in "ij")
                names = {base: src for base in act.expr.atoms(sp.IndexedBase)}
                printer = NumPyCodePrinter(names, like=src)
                return [f"# {t} = {act.name}({src}) per example",
                        f"{t} = {printer.doprint(act.expr.subs(i, j))}"]
            names = {z: src for z in act.display.free_symbols if z.name == "z"}
            printer = NumPyCodePrinter(names, like=src)
            code = printer.doprint(act.display.xreplace(self.constants))
            self.scipy |= printer.scipy_functions
            return [f"# {t} = {act.name}({src}),  {act.name}(z) = {_TEXT.doprint(act.display)}",
                    f"{t} = {code}"]
        if op == "output_error":
            from .lower import INDEXED
            out = st.output
            names = {INDEXED["a"]: st.A.name, INDEXED["y"]: "Y", INDEXED["z"]: st.Z.name}
            printer = NumPyCodePrinter(names, like=st.Z.name)
            code = printer.doprint(out.delta)
            self.scipy |= printer.scipy_functions
            return [f"# {t} = dJ/d{st.Z.name} = (1/m) dl/d{st.Z.name},  dl/dz_j = "
                    f"{_TEXT.doprint(out.delta)}",
                    f"{t} = ({code}) / m"]
        raise TypeError(f"no NumPy printing for a {op} statement")


def _layer_title(node) -> str:
    act = node.activation.name
    what = {"dense": f"dense {node.fan_in} -> {node.units}"}.get(node.kind.name, node.kind.name)
    extra = []
    if node.kind.name == "dense" and not node.options.get("bias", True):
        extra.append("no bias")
    if node.spec.skip is not None:
        extra.append(f"skip from layer {node.spec.skip}")
    if act != "identity" or node.kind.name == "dense":
        extra.append(act)
    return f"Layer {node.index}: {what}" + (f" ({', '.join(extra)})" if extra else "")


def _forward_lines(printer: _Printer, derivation) -> tuple[list[str], list[str]]:
    """The forward's lines, and the arrays backward() needs from it (saved in the cache)."""
    lines = []
    for node in derivation.nodes:
        like = node.Z.name
        lines += ["", f"# {_layer_title(node)}"]
        lines += [f'{p.name} = params["{p.name}"]' for p, *_ in node.params]
        tail = [st for st in node.forward if st.target in (node.Z, node.A)
                and (st.op == "activate" or node.spec.skip is not None)]
        training = [st for st in node.forward if st not in tail]
        inference = [st for st in node.inference if st not in tail]
        body = [line for st in training for line in printer.statement(st, like)]
        if node.state:
            body += [f"if state is not None:  # running statistics, as "
                     f"{node.kind.torch.partition('(')[0]}"]
            for s, _, target in node.state:
                body += [f"    {NETWORK_RUNTIME}.momentum_update(state[\"{s.name}\"], "
                         f"{printer.code(target, like)}, {node.options.get('momentum', 0.1)!r})"]
        if node.randoms:
            masks = [f'{r.name} = {NETWORK_RUNTIME}.bernoulli(rng, {_input_of(node)}.shape, '
                     f'{float(keep)!r}, {_input_of(node)}.dtype)' for r, keep in node.randoms]
            body = masks + body
        if training != inference:
            lines += ["if training:"] + [f"    {line}" for line in body] + ["else:"]
            for s, _, _ in node.state:
                lines.append(f'    {s.name} = state["{s.name}"]')
            lines += [f"    {line}" for st in inference for line in printer.statement(st, like)]
        else:
            lines += body
        for st in tail:
            lines += printer.statement(st, like)
    return lines


NETWORK_RUNTIME = "_runtime"


def _input_of(node) -> str:
    return f"A{node.index - 1}"


def _saved(derivation) -> list[str]:
    """Arrays of the training forward that backward reads, besides Z, A and the parameters."""
    defined = {st.target.name for st in derivation.forward}
    defined |= {r.name for node in derivation.nodes for r, _ in node.randoms}
    layered = {f"{x}{node.index}" for node in derivation.nodes for x in "ZA"} | {"A0"}
    reads = set()
    for st in derivation.backward:
        reads |= {s.name for s in st.reads}
    return sorted((defined & reads) - layered, key=lambda n: (_layer_index(n), n))


def _layer_index(name: str) -> int:
    digits = "".join(ch for ch in reversed(name) if ch.isdigit())[::-1]
    return int(digits or 0)


def _backward_lines(printer: _Printer, derivation) -> list[str]:
    lines = []
    for st in derivation.backward:
        like = st.reads[0].name if st.reads else "A0"
        if like in {p.name for p, *_ in derivation.params}:
            like = "A0"
        lines += printer.statement(st, like)
    return lines


def _scheme(derivation, node, init: str) -> str:
    """A weight matrix's initialisation: the spec's ``init``, else its activation's own."""
    if init != "weights":
        return init
    declaration = node.activation.declaration
    return derivation.spec.init or (declaration.init if declaration else "xavier")


def graph_context(derivation) -> dict:
    """What ``graph_module.py.j2`` lays out."""
    printer = _Printer(derivation)
    forward = _forward_lines(printer, derivation)
    backward = _backward_lines(printer, derivation)
    saved = _saved(derivation)
    nodes = derivation.nodes
    return {
        "nodes": nodes,
        "titles": [_layer_title(node) for node in nodes],
        "forward": forward,
        "backward": backward,
        "saved": saved,
        "params": [(p.name, tuple(shape), _scheme(derivation, node, init), pen)
                   for node in nodes for p, shape, init, pen in node.params],
        "state": [(s.name, node.units, init) for node in nodes for s, init, _ in node.state],
        "gradients": [(p.name, d.name) for p, d in derivation.gradients],
        "couples_batch": derivation.couples_batch,
        "random": any(node.randoms for node in nodes),
        "scipy_graph": sorted(printer.scipy),
    }
