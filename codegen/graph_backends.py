"""The torch and JAX backends of a stack of layer kinds: the ``GraphDerivation``'s statements
(``derive.graph``) printed with the framework printers, as ``codegen.graphs`` prints them for
NumPy.

Both backends share one functional forward, ``_forward(params, A0, training, state, masks)``
-> ``(Z, A, saved, stats)``: ``saved`` holds the training forward's arrays the backward reads
(μ_B, x̂, the masks, ...), ``stats`` the values each running statistic moves towards (PyTorch's
momentum rule is applied by the caller: in place on the torch module's buffers, as a new state
in JAX).  Dropout masks are drawn by the caller (a ``torch.Generator``, a ``jax.random`` key) or
given, so a check can fix them.  ``_backward`` is the derived backward, statement by statement,
each under its formula.  This module reads the derivation through its public attributes.
"""

from __future__ import annotations

import pprint
import re

from .graphs import (StatementPrinter, backward_lines, layer_title, node_parts,
                     regularization_text, saved_arrays)
from .lower import INDEXED, training_defaults
from .printers.frameworks import FRAMEWORK_PRINTERS
from .printers.text import TextPrinter

__all__ = ["graph_backend_context"]

_TEXT = TextPrinter()


class _FrameworkStatements(StatementPrinter):
    """The statements in a framework's spelling (``torch`` or ``jnp``)."""

    def __init__(self, derivation, backend: str):
        super().__init__(derivation, FRAMEWORK_PRINTERS[backend])
        self.backend = backend

    def reduction(self, how: str, code: str, axis: int) -> str:
        if self.backend == "torch":
            return f"torch.{how}({code}, dim={axis}, keepdim=True)"
        return f"jnp.{how}({code}, axis={axis}, keepdims=True)"

    def window(self, st) -> list[str]:
        """A convolution or pooling forward by the framework's own operation; each derived
        reverse rule as its index form says it, a sum over the kernel's offsets (p, q) of
        einsum products on strided slices of the zero-padded image (no autograd)."""
        lines = [line for line in super().window(st) if line.startswith("#")]
        w, t, torch_ = st.window, st.target.name, self.backend == "torch"
        C, H, W_, F, k, s, P = (w.channels, w.height, w.width, w.filters, w.kernel, w.stride,
                                w.padding)
        Ho, Wo = w.out_height, w.out_width
        image = f"({C}, {H}, {W_})"
        rows = f"slice(p, p + {s * (Ho - 1) + 1}, {s}), slice(q, q + {s * (Wo - 1) + 1}, {s})"
        zeros = (lambda like, shape: f"{like}.new_zeros({shape})") if torch_ else \
            (lambda like, shape: f"jnp.zeros({shape}, {like}.dtype)")
        pad = (lambda x: f"torch.nn.functional.pad({x}, ({P}, {P}, {P}, {P}))") if torch_ else \
            (lambda x: f"jnp.pad({x}, ((0, 0), (0, 0), ({P}, {P}), ({P}, {P})))")
        einsum = "torch.einsum" if torch_ else "jnp.einsum"
        if st.op == "conv":
            a = f"{st.a.name}.reshape(m, *{image})"
            bias = st.b.name if st.b is not None else "None"
            if torch_:
                call = (f"torch.nn.functional.conv2d({a}, {st.W.name}, {bias}, stride={s}, "
                        f"padding={P})")
            else:
                call = (f"jax.lax.conv_general_dilated({a}, {st.W.name}, ({s}, {s}), "
                        f"(({P}, {P}), ({P}, {P})), dimension_numbers=('NCHW', 'OIHW', 'NCHW'))")
                if st.b is not None:
                    call += f" + {st.b.name}.reshape(1, -1, 1, 1)"
            return lines + [f"{t} = ({call}).reshape(m, -1)"]
        if st.op == "pool":
            split = f"{st.a.name}.reshape(m, {C}, {Ho}, {s}, {Wo}, {s})"
            if torch_:
                how = "amax" if st.how == "max" else "mean"
                return lines + [f"{t} = {split}.{how}(dim=(3, 5)).reshape(m, -1)"]
            return lines + [f"{t} = {split}.{st.how if st.how == 'max' else 'mean'}"
                            f"(axis=(3, 5)).reshape(m, -1)"]
        delta = f"{st.delta.name}.reshape(m, {F}, {Ho}, {Wo})"
        if st.rule == "conv_bias":
            return lines + [f"{t} = {delta}.sum({'dim' if torch_ else 'axis'}=(0, 2, 3))"]
        if st.rule in ("conv_input", "conv_weight"):
            out = [f"_delta = {delta}"]
            if st.rule == "conv_input":
                out += [f"_g = {zeros('_delta', f'(m, {C}, {H + 2 * P}, {W_ + 2 * P})')}"]
            else:
                a = f"{st.other.name}.reshape(m, *{image})"
                out += [f"_a = {pad(a) if P else a}", "_g = []"]
            out += [f"for p in range({k}):", f"    for q in range({k}):"]
            if st.rule == "conv_input":
                term = f'{einsum}("fc,nfij->ncij", {st.other.name}[:, :, p, q], _delta)'
                out += [f"        _g[:, :, {rows}] += {term}" if torch_ else
                        f"        _g = _g.at[:, :, {rows}].add({term})"]
                out += [f"{t} = _g[:, :, {P}:{P + H}, {P}:{P + W_}].reshape(m, -1)"]
            else:
                out += [f'        _g.append({einsum}("nfij,ncij->fc", _delta, _a[:, :, {rows}]))']
                stack = "torch.stack" if torch_ else "jnp.stack"
                out += [f"{t} = {stack}(_g, {'dim' if torch_ else 'axis'}=-1).reshape("
                        f"{F}, {C}, {k}, {k})"]
            return lines + out
        # a pool's input rule: the windows as a last axis, delta to the first maximum or spread
        a = f"{st.other.name}.reshape(m, {C}, {Ho}, {s}, {Wo}, {s})"
        delta = f"{st.delta.name}.reshape(m, {C}, {Ho}, 1, {Wo}, 1)"
        if st.rule == "avg_pool_input":
            ones = (f"{st.other.name}.new_ones((1, 1, 1, {s}, 1, {s}))" if torch_
                    else f"jnp.ones((1, 1, 1, {s}, 1, {s}), {st.other.name}.dtype)")
            return lines + [f"{t} = ({delta} * {ones} / {s * s}).reshape(m, -1)"]
        if torch_:
            windows = f"{a}.permute(0, 1, 2, 4, 3, 5).reshape(m, {C}, {Ho}, {Wo}, {s * s})"
            first = f"torch.nn.functional.one_hot(_windows.argmax(dim=-1), {s * s}).to(_windows.dtype)"
            back = (f"(_M * {st.delta.name}.reshape(m, {C}, {Ho}, {Wo}, 1)).reshape("
                    f"m, {C}, {Ho}, {Wo}, {s}, {s}).permute(0, 1, 2, 4, 3, 5).reshape(m, -1)")
        else:
            windows = f"{a}.transpose(0, 1, 2, 4, 3, 5).reshape(m, {C}, {Ho}, {Wo}, {s * s})"
            first = f"jax.nn.one_hot(jnp.argmax(_windows, axis=-1), {s * s}, dtype=_windows.dtype)"
            back = (f"(_M * {st.delta.name}.reshape(m, {C}, {Ho}, {Wo}, 1)).reshape("
                    f"m, {C}, {Ho}, {Wo}, {s}, {s}).transpose(0, 1, 2, 4, 3, 5).reshape(m, -1)")
        return lines + [f"_windows = {windows}",
                        f"_M = {first}  # 1 at each window's first maximum (argmax's rule)",
                        f"{t} = {back}"]


def _forward_lines(printer: _FrameworkStatements, derivation) -> list[str]:
    """The body of ``_forward``: each layer's training statements under ``if training:``
    (masks read from ``masks``, the running statistics' targets into ``stats``), its
    statements when not training (the running statistics read from ``state``) under
    ``else:``, then the tail both share."""
    lines = []
    for node in derivation.nodes:
        like = node.Z.name
        lines += ["", f"# {layer_title(node)}"]
        lines += [f'{p.name} = params["{p.name}"]' for p, *_ in node.params]
        training, inference, tail = node_parts(node)
        body = [f'{r.name} = masks["{r.name}"]  # 1 with probability {float(keep)!r}, else 0'
                for r, keep in node.randoms]
        body += [line for st in training for line in printer.statement(st, like)]
        if node.state:
            body.append(f"# the running statistics move towards these "
                        f"({node.kind.torch.partition('(')[0]}'s rule, momentum "
                        f"{node.options.get('momentum', 0.1)!r})")
            for s, _, target in node.state:
                body.append(f'stats["{s.name}"] = {printer.code(target, like)}')
        if training != inference:
            lines += ["if training:"] + [f"    {line}" for line in body] + ["else:"]
            lines += [f'    {s.name} = state["{s.name}"]' for s, _, _ in node.state]
            lines += [f"    {line}" for st in inference for line in printer.statement(st, like)]
        else:
            lines += body
        for st in tail:
            lines += printer.statement(st, like)
    return lines


def _loss(derivation, backend: str) -> tuple[str, str]:
    """The per-example loss l (a column (m, 1)) in the framework's spelling, and its formula
    (in the logits where the derivation has that stable form)."""
    out = derivation.output
    last = derivation.nodes[-1]
    logits = out.per_example_logits is not None
    expr = out.per_example_logits if logits else out.per_example
    names = {INDEXED["a"]: last.A.name, INDEXED["y"]: "Y", INDEXED["z"]: last.Z.name}
    code = FRAMEWORK_PRINTERS[backend](names, like=last.Z.name).doprint(expr)
    return code, _TEXT.doprint(expr) + ("  (written in the logits: stable for any Z)"
                                        if logits else "")


def _torch_nn(node) -> tuple[str, dict] | None:
    """The torch.nn module that computes the layer's kind (its declared constructor), and
    where this layer's parameters and running statistics go in it ({ours: its attribute});
    None: the kind declares none."""
    if not node.kind.torch:
        return None
    code = node.kind.torch.format(n_in=node.fan_in, **node.options)
    own = {p for p, *_ in node.params} | {s for s, *_ in node.state}
    theirs = dict(node.kind.torch_params) | {s.name: s.name for s in node.kind.state}
    arrays = {node.symbols[symbol].name: theirs[symbol.name] for symbol in node.symbols
              if symbol.name in theirs and node.symbols[symbol] in own}
    return code, arrays


def graph_backend_context(derivation, backend: str) -> dict:
    """What ``graph_<backend>_module.py.j2`` lays out (the stamp and the update rules are
    added by ``codegen.emit``)."""
    printer = _FrameworkStatements(derivation, backend)
    forward = _forward_lines(printer, derivation)
    backward = backward_lines(printer, derivation)
    loss_code, loss_comment = _loss(derivation, backend)
    spec = derivation.spec
    nodes = derivation.nodes
    state = [(s.name, node.units, float(init), float(node.options.get("momentum", 0.1)))
             for node in nodes for s, init, _ in node.state]
    return {
        "backend": backend,
        "name": spec.name,
        "layer_sizes": spec.layer_sizes,
        "n_in": spec.layer_sizes[0],
        "image": getattr(spec, "image", None),
        "n_out": spec.layer_sizes[-1],
        "labels": derivation.output.loss.labels,
        "nodes": nodes,
        "titles": [layer_title(node) for node in nodes],
        "keys": tuple(p.name for p, *_ in derivation.params),
        "penalised": tuple(p.name for p in derivation.penalised),
        "l1": float(spec.regularization.l1),
        "l2": float(spec.regularization.l2),
        "reg_text": regularization_text(spec),
        "loss_name": spec.loss,
        "loss_expr": _TEXT.doprint(derivation.output.per_example),
        "loss_code": loss_code,
        "loss_comment": loss_comment,
        # the output arrays the loss reads (from Z or A), as (name, which tuple)
        "loss_reads": [(array.name, tuple_) for array, tuple_ in
                       ((nodes[-1].Z, "Z"), (nodes[-1].A, "A"))
                       if re.search(rf"\b{array.name}\b", loss_code)],
        "depth": len(nodes),
        "state": state,  # (key, units, initial value, momentum)
        # (key, units, probability of a 1): dropout masks, drawn over the layer's input
        "masks": [(r.name, node.fan_in, float(keep)) for node in nodes
                  for r, keep in node.randoms],
        # the forward when not training is the training one (no batch statistics, no dropout)
        "same_forward": all(node_parts(node)[0] == node_parts(node)[1] for node in nodes),
        "forward": forward,
        "backward": backward,
        "saved": saved_arrays(derivation),
        "gradients": [(p.name, d.name) for p, d in derivation.gradients],
        "torch_nn": [_torch_nn(node) for node in nodes],
        "no_torch_nn": sorted({node.kind.name for node in nodes if not node.kind.torch}),
        "training": pprint.pformat(training_defaults(derivation.optimizer, spec.training),
                                   width=90, sort_dicts=False),
    }
