"""The compiled-loop printer for a stack of layer kinds: a ``GraphDerivation``'s training
forward and derived backward -> a whole-epoch kernel for numba.

As the dense kernel (``codegen.printers.loops``), it gathers each batch's rows by the
epoch's order and runs every statement as an explicit loop nest over scalars, each under its
formula: an entry-wise statement (``Let``, an activation, the output error) over its
target's shape class, data (m, n) as [i, j], a per-unit row (1, n) as [0, j], a per-example
column (m, 1) as [i, 0]; a mean or sum over the batch or the units into its row or column;
the products (a dense layer's, the backward's) from BLAS (``np.dot`` into the preallocated
output).  After each layer's training forward its running statistics move by the kind's
declared momentum rule; dropout's masks come from uniforms the Trainer draws from its own
generator before each call (a chunk of batches at a time, in the NumPy step's order), so both
engines give the same masks for the same seed.  The update rule runs inside after each batch.

A statement this printer has no loop form for (a kind it does not know) gives no kernel:
``print_graph_kernel`` returns None and the module trains on the NumPy engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import sympy as sp

from .loops import KernelPrinter, ScalarPrinter
from .numpy import is_softmax
from .text import TextPrinter


def aliased(alias: dict, name: str) -> str:
    """The array ``name`` is printed as: followed through ``alias`` (an array that is another's
    buffer or view) to its end."""
    while name in alias:
        name = alias[name]
    return name


__all__ = ["GraphKernel", "print_graph_kernel", "aliased"]

_TEXT = TextPrinter()
_SUPPORTED = {"linear", "let", "reduce", "product", "activate", "output_error"}


class _Unsupported(Exception):
    pass


class _EntryPrinter(ScalarPrinter):
    """One entry of an entry-wise formula: each array indexed by its shape class."""

    def __init__(self, names: dict, index: dict[str, str]):
        super().__init__(names, {name: 2 for name in index})
        self.index = index  # array name -> "[i, j]" | "[0, j]" | "[i, 0]"

    def _print_Symbol(self, expr):
        name = self.names.get(expr)
        if name is not None and name in self.index:
            return name + self.index[name]
        return super()._print_Symbol(expr)


@dataclass(frozen=True)
class GraphKernel:
    arguments: tuple[str, ...]  # the kernel's bound arrays, in order
    allocations: tuple[tuple[str, str], ...]  # (name, code) in _kernel_arrays
    body: tuple[str, ...]  # one batch's statements (inside the loop over batches)
    random_units: int  # uniforms per example (dropout masks), drawn by the Trainer
    uses_math: bool = False


class _GraphKernelPrinter:
    def __init__(self, derivation):
        self.d = derivation
        self.constants = {c: sp.Float(float(value)) for node in derivation.nodes
                          for c, value, _ in node.constants}
        self.grads = {d.name: p.name for p, d in derivation.gradients}
        self.param_shapes = {p.name: tuple(shape) for p, shape, _, _ in derivation.params}
        known = {"data", "row", "column", "scalar", "weights"}
        if any(len(shape) > 2 for shape in self.param_shapes.values()) or any(
                cls not in known for cls, _ in derivation.shapes.values()):
            raise _Unsupported("an array of another shape class")  # an image kind's, say
        self.alias: dict[str, str] = {}
        self.arrays: dict[str, str] = {}  # name -> allocation code, in the kernel's order
        self.shapes: dict[str, tuple] = {}  # name -> (rows, cols); rows "m" for the batch
        self._lines: list[str] = []
        self.group = None  # (shape, comments, loop body): entry-wise statements fused
        self.loop = KernelPrinter(None, {}, blas=False)  # the dense printer's pieces
        self.random_units = 0
        n_in, n_out = derivation.layer_sizes[0], derivation.layer_sizes[-1]
        self.array("A0", ("m", n_in), f"np.empty((m, {n_in}), dtype)")
        self.array("Y", ("m", n_out), f"np.empty((m, {n_out}), dtype)")
        for p, shape in self.param_shapes.items():
            if len(shape) == 2:
                self.array(p, shape, f"params[{p!r}]")
            else:
                self.array(p, (1, shape[0]), f"params[{p!r}].reshape(1, -1)")

    # -- arrays ---------------------------------------------------------------------
    def array(self, name, shape, code) -> str:
        if name not in self.arrays:
            self.arrays[name] = code
            self.shapes[name] = shape
            self.loop.shapes[name] = shape
            self.loop.ndim[name] = 2
        return name

    def name(self, symbol) -> str:
        return aliased(self.alias, symbol.name)

    def shape_of(self, symbol) -> tuple:
        if symbol.name in self.grads:
            shape = self.param_shapes[self.grads[symbol.name]]
            return shape if len(shape) == 2 else (1, shape[0])
        if symbol.name in self.param_shapes:
            shape = self.param_shapes[symbol.name]
            return shape if len(shape) == 2 else (1, shape[0])
        cls, width = self.d.shapes[symbol]
        if cls == "weights":
            return (1, width)
        if cls == "scalar":
            raise _Unsupported(symbol)
        return {"data": ("m", width), "row": (1, width), "column": ("m", 1)}[cls]

    def declare(self, symbol) -> str:
        name = symbol.name
        if name in self.grads:
            key = self.grads[name]
            view = "" if len(self.param_shapes[key]) == 2 else ".reshape(1, -1)"
            return self.array(name, self.shape_of(symbol), f"grads[{key!r}]{view}")
        rows, cols = self.shape_of(symbol)
        return self.array(name, (rows, cols), f"np.empty(({rows}, {cols}), dtype)")

    @staticmethod
    def index(shape) -> str:
        rows, cols = shape
        return f"[{0 if rows == 1 else 'i'}, {0 if cols == 1 else 'j'}]"

    def entry(self, expr) -> str:
        """The code of one entry of ``expr`` (its arrays indexed by their shapes)."""
        expr = expr.xreplace(self.constants)
        names, index = {}, {}
        for s in expr.free_symbols:
            if s == self.d.m:
                continue
            name = self.name(s)
            if name not in self.shapes:
                raise _Unsupported(s)
            names[s] = name
            index[name] = self.index(self.shapes[name])
        printer = _EntryPrinter(names, index)
        self.loop._printers.append(printer)
        return printer.doprint(expr)

    @property
    def lines(self) -> list[str]:
        """The printed lines, the pending loop of fused statements first written out."""
        if self.group is not None:
            shape, comments, body = self.group
            self.group = None
            self._lines += comments + self.loops(shape, body)
        return self._lines

    @lines.setter
    def lines(self, value):
        self._lines = value

    def fuse(self, shape, line: str, comment: str | None = None) -> None:
        """An entry-wise statement over ``shape``: into the pending loop over that shape (it
        reads and writes entry [i, j] only, so one loop runs consecutive ones in order)."""
        if self.group is None or self.group[0] != shape:
            self.lines  # noqa: B018 - writes out the pending loop
            self.group = (shape, [], [])
        if comment:
            self.group[1].append(comment)
        self.group[2].append(line)

    def loops(self, shape, body) -> list[str]:
        """Over the rows, then the units (an axis of one: a loop of one, indexed by 0)."""
        return self.loop.loops(shape, body)

    def broadcast(self, symbols) -> tuple:
        shapes = [self.shapes[self.name(s)] for s in symbols
                  if s not in self.constants and s != self.d.m]
        return tuple(next((x for x in axis if x != 1), 1) for axis in zip(*shapes)) or (1, 1)

    # -- statements ------------------------------------------------------------------
    def statement(self, st) -> None:
        op, t = st.op, st.target
        if op not in _SUPPORTED:
            raise _Unsupported(op)
        if op == "let" and st.expr.is_Symbol and st.expr not in self.constants:
            self.alias[t.name] = self.name(st.expr)
            return
        if op == "activate" and st.activation.name == "identity":
            self.alias[t.name] = self.name(st.source)
            return
        target = self.declare(t)
        shape = self.shapes[target]
        if op == "linear":
            a, W = self.name(st.a), st.W.name
            bias = f" + {st.b.name}" if st.b is not None else ""
            self.lines += [f"# {t.name} = {st.a.name} {W}ᵀ{bias}  (one row per example)",
                           f"np.dot({a}, {W}.T, {target})"]
            if st.b is not None:
                self.fuse(shape, f"{target}{self.index(shape)} += "
                                 f"{st.b.name}{self.index((1, shape[1]))}")
        elif op == "let":
            self.fuse(shape, f"{target}{self.index(shape)} = {self.entry(st.expr)}",
                      f"# {t.name} = {_TEXT.doprint(st.expr)}")
        elif op == "reduce":
            how = "mean" if st.mean else "sum"
            self.lines.append(f"# {t.name} = {how} over the {st.axis} of {_TEXT.doprint(st.expr)}")
            inner = self.broadcast(st.reads)
            code = self.entry(st.expr)
            s = self.loop.scalar()
            if st.axis == "batch":  # a row: t[0, j] = sum over i
                count = "m" if inner[0] == "m" else "1"
                body = [f"{s} = _dt(0)", f"for i in range({inner[0]}):", f"    {s} += {code}",
                        f"{target}[0, j] = {s}" + (f" / {count}" if st.mean else "")]
                self.lines += self.loop.loops((shape[1],), body, names=("j",))
            else:  # a column: t[i, 0] = sum over j
                units = inner[1]
                body = [f"{s} = _dt(0)", f"for j in range({units}):", f"    {s} += {code}",
                        f"{target}[i, 0] = {s}" + (f" / {units}" if st.mean else "")]
                self.lines += self.loop.loops((shape[0],), body, names=("i",))
        elif op == "product":
            left = f"{self.name(st.left)}.T" if st.transpose else self.name(st.left)
            right = self.name(st.right)
            self.lines.append(f"# {t.name} = {left} {right}")
            if target in self.grads and len(self.param_shapes[self.grads[target]]) == 2:
                # a weight's gradient is column-major (as the weight): its transpose, a
                # row-major view bound as its own array, is written
                key = self.grads[target]
                rows, cols = self.shapes[target]
                view = self.array(f"{target}_T", (cols, rows), f"grads[{key!r}].T")
                left_t = self.name(st.left) if st.transpose else f"{left}.T"
                self.lines.append(f"np.dot({right}.T, {left_t}, {view})")
            else:
                self.lines.append(f"np.dot({left}, {right}, {target})")
        elif op == "activate":
            act = st.activation
            src = self.name(st.source)
            comment = f"# {t.name} = {act.name}({st.source.name})"
            if act.vector:
                self.lines.append(comment)
                i, j = (sp.Symbol(x, integer=True, positive=True) for x in "ij")
                expr = act.expr.subs(i, j)
                if is_softmax(expr) is None:
                    raise _Unsupported(act.name)
                names = {base: src for base in expr.atoms(sp.IndexedBase)}
                self.lines += self.loop.columnwise(SimpleNamespace(expr=expr, names=names,
                                                                   out=target))
            else:
                z = next(s for s in act.display.free_symbols if s.name == "z")
                code = self.entry(act.display.xreplace({z: st.source}))
                self.fuse(shape, f"{target}{self.index(shape)} = {code}", comment)
        elif op == "output_error":
            out = st.output
            names = {}
            for base in out.delta.atoms(sp.IndexedBase):
                names[base] = {"a": self.name(st.A), "y": "Y", "z": self.name(st.Z)}[str(base)]
            comment = (f"# {t.name} = (1/m) dl/d{st.Z.name},  dl/dz_j = "
                       f"{_TEXT.doprint(out.delta)}")
            expr = out.delta * sp.Symbol("_inv_m")
            if expr.has(sp.Sum) or is_softmax(out.delta) is not None:
                self.lines.append(comment)
                self.lines += self.loop.columnwise(SimpleNamespace(expr=expr, names=names,
                                                                   out=target))
            else:
                printer = self.loop.printer(names)
                self.fuse(shape, f"{target}{self.index(shape)} = {printer.doprint(expr)}",
                          comment)

    def node(self, node) -> None:
        from ..graphs import layer_title

        self.lines.append(f"# {layer_title(node)}")
        for r, keep in node.randoms:
            target = self.declare(r)
            rows, width = self.shapes[target]
            offset = self.random_units
            self.random_units += width
            shape = self.shapes[target]
            self.fuse(shape, f"{target}{self.index(shape)} = 1.0 if U[batch, {offset} * m + "
                             f"i * {width} + j] < {float(keep)!r} else 0.0",
                      f"# {r.name}: 1 where the Trainer's uniform < {float(keep)!r} "
                      "(drawn as the NumPy step draws them)")
        for st in node.forward:
            self.statement(st)
        for s, _, target in node.state:
            momentum = node.options.get("momentum", 0.1)
            name = self.array(s.name, (1, node.units), f"state[{s.name!r}].reshape(1, -1)")
            self.lines.append(f"# {s.name} <- (1 - {momentum!r}) {s.name} + {momentum!r} "
                              f"({_TEXT.doprint(target)})")
            code = self.entry(target)
            self.lines += self.loop.loops((node.units,), [
                f"{name}[0, j] = {name}[0, j] * {1 - momentum!r} + {momentum!r} * ({code})"],
                names=("j",))

    def print(self) -> GraphKernel:
        for node in self.d.nodes:
            self.node(node)
        self.lines.append("# the derived backward")
        for st in self.d.backward:
            self.statement(st)
        lines = [line.replace("_inv_m", "_dt(1.0 / m)") for line in self.lines]  # flushed
        uses_math = any("math.erf" in p.scipy_functions for p in self.loop._printers)
        return GraphKernel(tuple(self.arrays), tuple(self.arrays.items()), tuple(lines),
                           self.random_units, uses_math)


def print_graph_kernel(derivation) -> GraphKernel | None:
    """The epoch kernel's pieces for a stack of layer kinds; None when a statement has no
    loop form here (the module then trains on the NumPy engine only)."""
    try:
        return _GraphKernelPrinter(derivation).print()
    except (_Unsupported, KeyError, TypeError, StopIteration):
        return None
