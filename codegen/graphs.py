"""Stage 3 for a stack of layer kinds: the derived statements printed as NumPy.

A ``GraphDerivation`` (``derive.graph``) holds the training forward, the forward when not
training, and the derived backward as statements over arrays named as the documents name them
(``xhat2``, ``mu2``, ``dgamma2``).  Each is printed as one NumPy line under its formula: an
entry-wise statement with broadcasting (per-unit rows (1, n), per-example columns (m, 1)), a
mean or sum over an axis, a product; a convolution, a pooling or one of their derived reverse
rules as one call of the runtime's im2col/BLAS code (``Conv2d``, ``Pool2d``) under its index
form.  This module reads the derivation through its public
attributes; it never imports ``derive``.
"""

from __future__ import annotations

import math

import sympy as sp

from .printers.graph_loops import aliased, print_graph_kernel
from .printers.inplace import Buffers, InplacePrinter
from .printers.numpy import NumPyCodePrinter
from .printers.step import temporaries
from .printers.text import TextPrinter

__all__ = ["graph_context", "StatementPrinter", "layer_title", "backward_lines", "saved_arrays",
           "node_parts", "regularization_text"]

_TEXT = TextPrinter()
_AXES = {"batch": 0, "units": 1}
WINDOW_RULES = ("conv_input", "conv_weight", "conv_bias", "max_pool_input", "avg_pool_input")


class _IndexText(TextPrinter):
    """An index form in a comment: arrays as A0[n, c, i, j], a sum over all its indices at
    once, a range guard (the zero padding) left out: outside its image an array reads 0."""

    def _print_Indexed(self, expr):
        return f"{self._print(expr.base)}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_Sum(self, expr):
        indices = ",".join(self._print(lim[0]) for lim in expr.limits)
        return f"sum_{{{indices}}} {self.parenthesize(expr.function, 50)}"

    def _print_Piecewise(self, expr):
        return self._print(expr.args[0].expr)


def window_tuple(window) -> tuple:
    """A Window as the runtime takes it: (C, H, W, F, k, stride, padding)."""
    return (window.channels, window.height, window.width, window.filters, window.kernel,
            window.stride, window.padding)


def window_text(expr, names: dict, window) -> str:
    """An index form with the window's sizes in and its arrays named as the code names them."""
    from sympy import IndexedBase

    sizes = {s: v for s, v in window.sizes().items()} if hasattr(window, "sizes") else {}
    bases = {b: n for b, n in names.items() if isinstance(b, IndexedBase)}
    return _IndexText(bases).doprint(expr.xreplace(sizes)) if expr is not None else ""


def window_names(st) -> dict:
    """The index forms' arrays -> the statement's arrays (their printed names)."""
    from sympy import IndexedBase

    A = {name: IndexedBase(name) for name in ("a", "W", "b", "z", "delta", "M")}
    names = {}
    if st.op == "conv":
        names = {A["a"]: st.a.name, A["W"]: st.W.name, A["z"]: st.target.name}
        if st.b is not None:
            names[A["b"]] = st.b.name
    elif st.op == "pool":
        names = {A["a"]: st.a.name, A["z"]: st.target.name}
    else:
        names = {A["delta"]: st.delta.name}
        if st.other is not None:
            names[A["W" if st.rule == "conv_input" else "a"]] = st.other.name
        names[A["M"]] = f"M({st.other.name})" if st.other is not None else "M"
    return names


def _shape_text(window, pool: bool) -> str:
    what = (f"{window.kernel}x{window.kernel} pool" if pool else
            f"{window.filters} filters {window.kernel}x{window.kernel}, stride {window.stride}, "
            f"padding {window.padding}")
    into = "x".join(map(str, window.image_out))
    return f"{'x'.join(map(str, window.image_in))} -> {into}: {what}"


class StatementPrinter:
    """Prints statements; constants (ε) become numbers of the arrays' dtype.  ``printer`` is
    the expression printer (NumPy's, or a framework's: ``codegen.graph_backends``)."""

    def __init__(self, derivation, printer=NumPyCodePrinter):
        self.derivation = derivation
        self.printer = printer
        self.constants = {c: sp.Float(float(value)) for node in derivation.nodes
                          for c, value, _ in node.constants}
        self.scipy: set[str] = set()

    def code(self, expr: sp.Expr, like: str) -> str:
        printer = self.printer({}, like=like)
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
                    f"{t} = {self.reduction(how, self.code(st.expr, like), axis)}"]
        if op == "product":
            left = f"{st.left.name}.T" if st.transpose else st.left.name
            return [f"# {t} = {left} {st.right.name}", f"{t} = {left} @ {st.right.name}"]
        if op in ("conv", "pool") or op in WINDOW_RULES:
            return self.window(st)
        if op == "activate":
            act = st.activation
            src = st.source.name
            if act.name == "identity":
                return [f"{t} = {src}  # identity"]
            if act.vector:  # softmax, per example (index form: a_j = e^{z_j} / sum_k e^{z_k})
                i, j = (sp.Symbol(x, integer=True, positive=True) for x in "ij")
                names = {base: src for base in act.expr.atoms(sp.IndexedBase)}
                printer = self.printer(names, like=src)
                return [f"# {t} = {act.name}({src}) per example",
                        f"{t} = {printer.doprint(act.expr.subs(i, j))}"]
            names = {z: src for z in act.display.free_symbols if z.name == "z"}
            printer = self.printer(names, like=src)
            code = printer.doprint(act.display.xreplace(self.constants))
            self.scipy |= printer.scipy_functions
            return [f"# {t} = {act.name}({src}),  {act.name}(z) = {_TEXT.doprint(act.display)}",
                    f"{t} = {code}"]
        if op == "output_error":
            from .lower import INDEXED
            out = st.output
            names = {INDEXED["a"]: st.A.name, INDEXED["y"]: "Y", INDEXED["z"]: st.Z.name}
            printer = self.printer(names, like=st.Z.name)
            code = printer.doprint(out.delta)
            self.scipy |= printer.scipy_functions
            return [f"# {t} = dJ/d{st.Z.name} = (1/m) dl/d{st.Z.name},  dl/dz_j = "
                    f"{_TEXT.doprint(out.delta)}",
                    f"{t} = ({code}) / m"]
        raise TypeError(f"no printing for a {op} statement")

    def window(self, st) -> list[str]:
        """A convolution, a pooling or one of their derived reverse rules: its index form in
        a comment (images flat in NCHW order), one call of the runtime's im2col/BLAS code."""
        t, w = st.target.name, window_tuple(st.window)
        run = NETWORK_RUNTIME
        if st.op == "conv":
            expr = st.expr
            bias = st.b.name if st.b is not None else "None"
            return [f"# {t}[n, f, i, j] = {window_text(expr, window_names(st), st.window)}",
                    f"#   ({_shape_text(st.window, False)}; a cross-correlation, as torch's Conv2d)",
                    f"{t} = {run}.conv2d({st.a.name}, {st.W.name}, {bias}, {w})"]
        if st.op == "pool":
            how = "maximum" if st.how == "max" else "mean"
            return [f"# {t}[n, c, i, j] = the {how} of {st.a.name}[n, c] over the window at "
                    f"({st.window.stride} i, {st.window.stride} j)  ({_shape_text(st.window, True)})",
                    f"{t} = {run}.pool2d({st.a.name}, {w}, {st.how!r})"]
        free = ", ".join(str(x) for x in st.free)
        comment = [f"# {t}[{free}] = {window_text(st.expr, window_names(st), st.window)}"]
        if "pool" in st.rule:
            s = st.window.stride
            comment.append(f"#   over the window holding (u', v'): i = u' // {s}, j = v' // {s}")
        if st.rule.startswith("max_pool"):
            comment.append(f"#   M: 1 at the first maximum of each window of {st.other.name}, "
                           "else 0 (torch's tie rule)")
        delta = st.delta.name
        call = {"conv_input": f"conv2d_input_grad({delta}, {st.other.name if st.other else ''}, {w})",
                "conv_weight": f"conv2d_weight_grad({delta}, {st.other.name if st.other else ''}, {w})",
                "conv_bias": f"conv2d_bias_grad({delta}, {w})",
                "max_pool_input": f"pool2d_input_grad({delta}, {st.other.name if st.other else ''}, {w}, 'max')",
                "avg_pool_input": f"pool2d_input_grad({delta}, {st.other.name if st.other else ''}, {w}, 'avg')",
                }[st.rule]
        return comment + [f"{t} = {run}.{call}"]

    def reduction(self, how: str, code: str, axis: int) -> str:
        """The mean or sum of ``code`` over ``axis``, the axis kept (a row or a column)."""
        return f"np.{how}({code}, axis={axis}, keepdims=True)"


def layer_title(node) -> str:
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


def node_parts(node) -> tuple[list, list, list]:
    """A layer's statements: those of its training forward and of its forward when not
    training, then the tail both share (the skip's sum and the activation)."""
    tail = [st for st in node.forward if st.target in (node.Z, node.A)
            and (st.op == "activate" or node.spec.skip is not None)]
    training = [st for st in node.forward if st not in tail]
    inference = [st for st in node.inference if st not in tail]
    return training, inference, tail


def _forward_lines(printer: StatementPrinter, derivation) -> list[str]:
    """forward()'s lines: per layer its training statements (batch statistics, the running
    ones moved, the dropout mask drawn) and, where they differ, those when not training."""
    lines = []
    for node in derivation.nodes:
        like = node.Z.name
        lines += ["", f"# {layer_title(node)}"]
        lines += [f'{p.name} = params["{p.name}"]' for p, *_ in node.params]
        training, inference, tail = node_parts(node)
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
KINDS_COMPILED_MAX_BATCH = 128  # engine "auto" without figures: compiled up to this batch


def _input_of(node) -> str:
    return f"A{node.index - 1}"


def saved_arrays(derivation) -> list[str]:
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


def backward_lines(printer: StatementPrinter, derivation) -> list[str]:
    lines = []
    for st in derivation.backward:
        like = st.reads[0].name if st.reads else "A0"
        if like in {p.name for p, *_ in derivation.params}:
            like = "A0"
        lines += printer.statement(st, like)
    return lines


def regularization_text(spec) -> str:
    """The regularisation terms of J in words (empty without any)."""
    text = ""
    if spec.regularization.l2:
        text += f" + ({float(spec.regularization.l2):g}/2) sum ||W||^2"
    if spec.regularization.l1:
        text += f" + {float(spec.regularization.l1):g} sum |W|"
    return text


def _scheme(derivation, node, init: str) -> str:
    """A weight matrix's initialisation: the spec's ``init``, else its activation's own."""
    if init != "weights":
        return init
    declaration = node.activation.declaration
    return derivation.spec.init or (declaration.init if declaration else "xavier")


class _Step:
    """The training forward and the derived backward as one step into buffers allocated
    once (``_make_gradient``): each statement one or a few ufunc or BLAS calls with ``out=``,
    element-wise formulas through ``InplacePrinter`` (temporaries from a pool per shape), a
    mean or sum into its row or column, the gradients into the Trainer's arrays."""

    def __init__(self, derivation):
        self.d = derivation
        self.constants = {c: sp.Float(float(value)) for node in derivation.nodes
                          for c, value, _ in node.constants}
        self.grads = {d.name: p.name for p, d in derivation.gradients}
        self.alias: dict[str, str] = {}
        self.buffers: dict[str, str] = {}  # name -> allocation
        self.pools: dict[tuple, Buffers] = {}
        self.lines: list[str] = []
        self.windows: dict[str, str] = {}  # the error dZ of a window layer -> its runtime object
        # a kernel (F, C, k, k) in an entry-wise formula (a penalty's term): its matrix view,
        # the layout of its gradient's buffer
        self.alias |= {p: f"{p}m" for p, shape in self.param_shapes if len(shape) > 2}

    def name(self, symbol) -> str:
        return aliased(self.alias, symbol.name)

    def shape(self, symbol) -> tuple:
        if symbol.name in self.grads:  # a gradient: its parameter's shape (a row for a vector)
            shape = dict(self.param_shapes)[self.grads[symbol.name]]
            if len(shape) > 2:  # a kernel (F, C, k, k): the (F, C k^2) matrix, a view
                return (shape[0], math.prod(shape[1:]))
            return tuple(shape) if len(shape) == 2 else (1, shape[0])
        cls, width = self.d.shapes[symbol]
        if cls == "weights":
            return (1, width)  # a per-unit parameter (the dense weights are never broadcast)
        return {"data": ("m", width), "row": (1, width), "column": ("m", 1)}[cls]

    def declare(self, symbol) -> str:
        name = symbol.name
        if name in self.grads:
            key = self.grads[name]
            dims = len(dict(self.param_shapes)[key])
            if dims > 2:
                self.buffers.setdefault(name, f"{NETWORK_RUNTIME}.kernel_matrix(grads[{key!r}], in_place=True)")
                return name
            view = "" if dims == 2 else ".reshape(1, -1)"
            self.buffers.setdefault(name, f"grads[{key!r}]{view}")
        elif name not in self.buffers:
            rows, cols = self.shape(symbol)
            self.buffers[name] = f"np.empty(({rows}, {cols}), dtype)"
        return name

    def broadcast(self, symbols) -> tuple:
        """The shape the arrays ``symbols`` broadcast to (rows "m" or 1, units or 1)."""
        shapes = [self.shape(s) for s in symbols if s in self.d.shapes
                  and s not in self.constants and self.d.shapes[s][0] != "weights"]
        return tuple(next((x for x in axis if x != 1), 1) for axis in zip(*shapes))

    @property
    def param_shapes(self):
        return [(p.name, shape) for p, shape, _, _ in self.d.params]

    def pool(self, shape: tuple) -> Buffers:
        if shape not in self.pools:
            self.pools[shape] = Buffers(f"t{len(self.pools)}")
        return self.pools[shape]

    def emit(self, expr, target, shape) -> None:
        names = {s: self.name(s) for s in expr.free_symbols if s not in self.constants}
        names |= {s: "m_" for s in expr.free_symbols if s == self.d.m}  # m in the dtype
        names |= {base: self.name(sp.Symbol(str(base), real=True))
                  for base in expr.atoms(sp.IndexedBase)}
        printer = InplacePrinter(names, self.pool(shape))
        self.lines += printer.emit(expr.xreplace(self.constants), target)

    def statement(self, st) -> None:
        op, t = st.op, st.target
        if op == "let" and st.expr.is_Symbol and st.expr not in self.constants:
            self.alias[t.name] = self.name(st.expr)
            return
        if op == "activate" and st.activation.name == "identity":
            self.alias[t.name] = self.name(st.source)
            return
        target = self.declare(t)
        if op == "linear":
            self.lines.append(f"product({self.name(st.a)}, {st.W.name}.T, out={target})")
            if st.b is not None:
                self.lines.append(f"np.add({target}, {st.b.name}, out={target})")
        elif op == "let":
            self.lines.append(f"# {t.name} = {_TEXT.doprint(st.expr)}")
            self.emit(st.expr, target, self.shape(t))
        elif op == "reduce":
            how = "mean" if st.mean else "sum"
            axis = _AXES[st.axis]
            self.lines.append(f"# {t.name} = {how} over the {st.axis} of {_TEXT.doprint(st.expr)}")
            if st.expr.is_Symbol:
                source = self.name(st.expr)
            else:
                inner = self.broadcast(st.reads)
                pool = self.pool(inner)
                source = pool.take("full")
                self.emit(st.expr, source, inner)
                pool.give(source)
            self.lines.append(f"np.{how}({source}, axis={axis}, keepdims=True, out={target})")
        elif op == "product":
            left = f"{self.name(st.left)}.T" if st.transpose else self.name(st.left)
            call = "np.matmul" if st.transpose else "product"
            self.lines.append(f"{call}({left}, {self.name(st.right)}, out={target})")
        elif op in ("conv", "pool") or op in WINDOW_RULES:
            self.window(st, target)
        elif op == "activate":
            act = st.activation
            self.lines.append(f"# {t.name} = {act.name}({st.source.name})")
            if act.vector:
                i, j = (sp.Symbol(x, integer=True, positive=True) for x in "ij")
                expr = act.expr.subs(i, j)
                names = {base: self.name(st.source) for base in expr.atoms(sp.IndexedBase)}
                printer = InplacePrinter(names, self.pool(self.shape(t)))
                self.lines += printer.emit(expr, target)
            else:
                z = next(s for s in act.display.free_symbols if s.name == "z")
                self.emit(act.display.xreplace({z: st.source}), target, self.shape(t))
        elif op == "output_error":
            out = st.output
            names = {}
            for base in out.delta.atoms(sp.IndexedBase):
                names[base] = {"a": self.name(st.A), "y": "Y", "z": self.name(st.Z)}[str(base)]
            printer = InplacePrinter(names, self.pool(self.shape(t)))
            self.lines.append(f"# {t.name} = (1/m) dl/d{st.Z.name}")
            self.lines += printer.emit(out.delta, target)
            self.lines.append(f"np.multiply({target}, 1.0 / m, out={target})")
        else:
            raise TypeError(f"no step form for a {op} statement")

    def window(self, st, target: str) -> None:
        """A window layer's forward into its runtime object's buffers (allocated once), its
        reverse rules from the same object (the forward's columns and windows)."""
        w = window_tuple(st.window)
        if st.op in ("conv", "pool"):
            obj = f"{st.op}_{st.target.name}"
            self.windows[f"d{st.target.name}"] = obj
            if st.op == "conv":
                self.buffers[obj] = f"{NETWORK_RUNTIME}.Conv2d({w}, m, dtype)"
                bias = st.b.name if st.b is not None else "None"
                self.lines += [f"# {st.target.name} = the convolution of {self.name(st.a)} "
                               f"({_shape_text(st.window, False)})",
                               f"{obj}.forward({self.name(st.a)}, {st.W.name}, {bias}, "
                               f"out={target})"]
            else:
                self.buffers[obj] = f"{NETWORK_RUNTIME}.Pool2d({w}, m, dtype, {st.how!r})"
                self.lines += [f"# {st.target.name} = {st.how} pooling of {self.name(st.a)} "
                               f"({_shape_text(st.window, True)})",
                               f"{obj}.forward({self.name(st.a)}, out={target})"]
            return
        obj = self.windows[st.delta.name]
        delta = self.name(st.delta)
        self.lines.append(f"# {st.target.name}: the derived {st.rule.replace('_', ' ')} rule")
        call = {"conv_input": f"input_grad({delta}, {st.other.name if st.other else ''}, out={target})",
                "conv_weight": f"weight_grad({delta}, out={target})",
                "conv_bias": f"bias_grad({delta}, out={target})",
                "max_pool_input": f"input_grad({delta}, out={target})",
                "avg_pool_input": f"input_grad({delta}, out={target})"}[st.rule]
        self.lines.append(f"{obj}.{call}")

    def node(self, node) -> None:
        self.lines.append(f"# {layer_title(node)}")
        for r, keep in node.randoms:
            u, flag = f"u_{r.name}", f"keep_{r.name}"
            width = self.d.shapes[r][1]
            self.buffers[u] = f"np.empty((m, {width}), np.float64)"
            self.buffers[flag] = f"np.empty((m, {width}), bool)"
            target = self.declare(r)
            self.lines += [f"rng.random(out={u})  # the mask: as bernoulli() draws it",
                           f"np.less({u}, {float(keep)!r}, out={flag})",
                           f"np.copyto({target}, {flag})"]
        for st in node.forward:
            self.statement(st)
        for s, _, target in node.state:
            momentum = node.options.get("momentum", 0.1)
            tmp = f"{s.name}_new"
            self.buffers[tmp] = f"np.empty((1, {node.units}), dtype)"
            self.lines.append(f"# {s.name} <- (1 - {momentum!r}) {s.name} + {momentum!r} "
                              f"({_TEXT.doprint(target)})")
            self.emit(target * momentum, tmp, (1, node.units))
            self.lines += [f"running = state[{s.name!r}]",
                           f"np.multiply(running, {1 - momentum!r}, out=running)",
                           f"np.add(running, {tmp}[0], out=running)"]

    def print(self) -> tuple[list[str], list[str]]:
        for node in self.d.nodes:
            self.node(node)
        self.lines.append("# the derived backward")
        for st in self.d.backward:
            self.statement(st)
        setup = ["m_ = np.dtype(dtype).type(m)  # the batch size as a number of the dtype"]
        setup += [f"{p}m = {NETWORK_RUNTIME}.kernel_matrix({p}, in_place=True)  # (F, C k^2), a view"
                  for p, shape in self.param_shapes if len(shape) > 2]
        setup += [f"{name} = {call}" for name, call in self.buffers.items()]
        for (rows, units), pool in self.pools.items():
            setup += [f"{name} = {call}" for name, call in temporaries(pool, rows, units)]
        return setup, self.lines


def graph_context(derivation) -> dict:
    """What ``graph_module.py.j2`` lays out."""
    printer = StatementPrinter(derivation)
    forward = _forward_lines(printer, derivation)
    backward = backward_lines(printer, derivation)
    saved = saved_arrays(derivation)
    nodes = derivation.nodes
    step_setup, step_body = _Step(derivation).print()
    kernel = print_graph_kernel(derivation)  # None: a statement with no loop form
    return {
        "kernel": kernel,
        # measured (docs/performance.md, "Layer kinds"): the compiled engine wins up to this
        # batch size on the digits kinds networks (BLAS products in both engines)
        "compiled_max_batch": KINDS_COMPILED_MAX_BATCH if kernel is not None else 0,
        "step_setup": step_setup,
        "step_body": step_body,
        "nodes": nodes,
        "titles": [layer_title(node) for node in nodes],
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
