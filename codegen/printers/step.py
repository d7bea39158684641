"""The NumPy step printer: a ``Step`` -> the body of ``_make_step`` (buffers, then ``step``).

The step writes g = rate dJ/dtheta into the caller's gradient arrays; the plain rule's
subtractions (``descend``: np.subtract, or nothing for a rule with state) and its rank-one
updates run only where ``plain`` is set.  Each statement prints as one or a few ufunc or
BLAS calls writing into a preallocated buffer (``out=``); element-wise formulas go through ``InplacePrinter``, whose temporaries are
declared with the other buffers once the body is printed.  Products are written
``product(...)``: ``np.matmul``, or for a one-example step BLAS gemv from SciPy
(``_runtime.step_products``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..program import (AddBias, Buffer, Compute, Hadamard, OneExample, Product, RankOne, Scale,
                       Step, Subtract, WhenPlain, base_name)
from .inplace import Buffers, InplacePrinter
from .text import TextPrinter

__all__ = ["StepCode", "print_step", "allocation", "declarations", "temporaries"]

@dataclass(frozen=True)
class StepCode:
    """The printed step: buffer declarations, row views for m = 1, and the step's body."""

    setup: tuple[str, ...]
    rows: tuple[tuple[str, str], ...]  # (name, view) for one-example steps
    body: tuple[str, ...]
    scipy_functions: frozenset = field(default_factory=frozenset)


class _Printer:
    def __init__(self, step: Step):
        self.step = step
        self.buffers = {b.name: b for b in step.buffers}
        self.pools: dict[object, Buffers] = {}  # shape (or parameter) -> its temporaries
        self.scipy: set[str] = set()
        self.rows: dict[str, str] = {}

    def pool(self, out: str) -> Buffers:
        """Temporaries for a formula into ``out``, shaped like it: one pool per shape, shared
        by every formula of that shape (each gives its temporaries back when done)."""
        key = self.shape_of(out)
        if key not in self.pools:
            self.pools[key] = Buffers(f"t{len(self.pools)}")
        return self.pools[key]

    def shape_of(self, out: str):
        """A batch buffer's shape tuple, or the name of the parameter whose shape it has."""
        name = base_name(out)
        buffer = self.buffers.get(name)
        if buffer is not None and buffer.like is None:
            return buffer.shape
        if buffer is not None:
            return buffer.like
        if name in {b.like for b in self.buffers.values()}:
            return name  # a parameter itself
        raise ValueError(f"the step writes {name!r}, which is neither a buffer nor a parameter")

    # -- statements -----------------------------------------------------------------------
    def statement(self, op) -> list[str]:
        if isinstance(op, Product):
            call = "product" if op.blas else "np.matmul"
            note = f"  # {op.comment}" if op.comment else ""
            return [f"{call}({op.a}, {op.b}, out={op.out}){note}"]
        if isinstance(op, AddBias):
            return [f"np.add({op.out}, {op.b}, out={op.out})"]
        if isinstance(op, Compute):
            printer = InplacePrinter(dict(op.names), self.pool(op.out))
            lines = printer.emit(op.expr, op.out)
            self.scipy |= printer.code.scipy_functions
            return [f"# {op.out} = {TextPrinter(dict(op.names)).doprint(op.expr)}"] + lines
        if isinstance(op, Scale):
            note = f"  # {op.comment}" if op.comment else ""
            return [f"np.multiply({op.out}, {op.factor}, out={op.out}){note}"]
        if isinstance(op, Hadamard):
            return [f"np.multiply({op.out}, {op.other}, out={op.out})"]
        if isinstance(op, Subtract):
            return [f"descend({op.param}, {op.delta}, out={op.param})"]  # np.subtract if plain
        if isinstance(op, RankOne):
            return [f"rank_one(ger, {op.param}, {self.row(op.d)}, {self.row(op.a)})"]
        if isinstance(op, WhenPlain):
            then = [line for s in op.then for line in self.statement(s)]
            otherwise = [line for s in op.otherwise for line in self.statement(s)]
            return (["if plain:"] + ["    " + line for line in then]
                    + ["else:"] + ["    " + line for line in otherwise])
        if isinstance(op, OneExample):
            otherwise = [line for s in op.otherwise for line in self.statement(s)]
            then = [line for s in op.then for line in self.statement(s)]
            return (["if ger is None:"] + ["    " + line for line in otherwise]
                    + ["else:"] + ["    " + line for line in then])
        raise TypeError(f"no NumPy form for the statement {op!r}")

    def row(self, operand: str) -> str:
        """A one-example row view: the step's input row inline, other rows bound once."""
        name = base_name(operand)
        if name == "A0":
            return operand
        self.rows[name] = f"{name}_row"
        return self.rows[name]

    # -- buffers --------------------------------------------------------------------------
    def declarations(self) -> list[str]:
        temporaries = []
        for key, pool in self.pools.items():
            if isinstance(key, tuple):
                temporaries += _temporaries(pool, *key)
            else:
                temporaries += _parameter_temporaries(pool, key)
        return declarations(self.step.buffers, temporaries, order="order")


def declarations(buffers, temporaries=(), order: str = "C") -> list[str]:
    """``name = allocation`` lines for the buffers (``order``: see ``allocation``), then the
    (name, allocation) temporaries; consecutive equal ``np.empty`` allocations share a line."""
    groups = [(allocation(b, order), b.name) for b in buffers]
    groups += [(call, name) for name, call in temporaries]
    merged: list[tuple[list[str], list[str]]] = []
    for call, name in groups:
        last = merged[-1] if merged else None
        if last and last[0][-1] == call and "np.empty(" in call:  # (np.empty(...) for _ in ...)
            last[1].append(name)
        elif last and call.startswith("grads[") and last[0][-1].startswith("grads["):
            last[0].append(call)  # the caller's arrays: one tuple assignment
            last[1].append(name)
        else:
            merged.append(([call], [name]))
    return [f"{names[0]} = {calls[0]}" if len(names) == 1
            else f"{', '.join(names)} = {', '.join(calls)}" if len(calls) > 1
            else f"{', '.join(names)} = ({calls[0]} for _ in range({len(names)}))"
            for calls, names in merged]


def allocation(buffer: Buffer, order: str = "C") -> str:
    """The NumPy call that allocates a buffer (``m`` and ``dtype`` are the step's); a
    two-axis one column-major with ``order="F"``, or in the layout a variable holds when
    ``order`` names one (``_make_step``'s ``order``: the kernel's layout)."""
    if buffer.given is not None:
        return f"grads[{buffer.given!r}]"
    if buffer.like is not None:
        return f"np.empty_like({buffer.like})"
    shape = ", ".join(str(s) for s in buffer.shape)
    shape = f"({shape},)" if len(buffer.shape) == 1 else f"({shape})"
    layout = ("" if len(buffer.shape) != 2 or order == "C" else
              ', order="F"' if order == "F" else f", {order}")
    if buffer.fill is not None:
        return f"np.full({shape}, {buffer.fill!r}, dtype{layout})" if buffer.fill != 1 \
            else f"np.ones({shape}, dtype{layout})"
    return f"np.empty({shape}, dtype{layout})"


def _temporaries(pool: Buffers, rows, units) -> list[tuple[str, str]]:
    """(name, allocation) for every temporary and constant the in-place printer used on
    (rows, units) arrays."""
    shapes = {"full": f"({rows}, {units})", "column": f"({rows}, 1)", "mask": f"({rows}, {units})",
              "units_first": f"({units}, {rows})"}
    out = []
    for kind in ("full", "column", "mask", "units_first"):
        for i in range(getattr(pool, kind)):
            dtype = "bool" if kind == "mask" else "dtype"
            out.append((f"{pool.prefix}_{kind[0]}{i}", f"np.empty({shapes[kind]}, {dtype})"))
    if pool.ones:
        out.append((f"{pool.prefix}_ones", f"np.ones(({units}, 1), dtype)"))
    for name, value in pool.constants.items():
        out.append((name, f"np.full(({rows}, {units}), {value!r}, dtype)"))
    return out


def _parameter_temporaries(pool: Buffers, like: str) -> list[tuple[str, str]]:
    """(name, allocation) for the temporaries of a formula over parameter-shaped arrays."""
    if pool.column or pool.units_first or pool.ones or pool.constants:
        raise ValueError(f"a formula over {like}'s entries used a batch-shaped temporary")
    return ([(f"{pool.prefix}_f{i}", f"np.empty_like({like})") for i in range(pool.full)]
            + [(f"{pool.prefix}_m{i}", f"np.empty({like}.shape, bool)") for i in range(pool.mask)])


def print_step(step: Step) -> StepCode:
    """Print the step: statements first (they decide the temporaries), then the buffers."""
    printer = _Printer(step)
    body: list[str] = []
    for title, ops in step.sections:
        body.append(f"# {title}")
        for op in ops:
            body.extend(printer.statement(op))
    rows = tuple((view, f"{name}[0]") for name, view in printer.rows.items())
    return StepCode(tuple(printer.declarations()), rows, tuple(body), frozenset(printer.scipy))


temporaries = _temporaries  # the layer kinds' step (codegen.graphs) declares its pools so too
