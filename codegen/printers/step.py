"""The NumPy step printer: a ``Step`` -> the body of ``_make_step`` (buffers, then ``step``).

Each statement prints as one or a few ufunc or BLAS calls writing into a preallocated buffer
(``out=``); element-wise formulas go through ``InplacePrinter``, whose temporaries are
declared with the other buffers once the body is printed.  Products are written
``product(...)``: ``np.matmul``, or for a one-example step BLAS gemv from SciPy
(``_runtime.step_products``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..program import (AddBias, Buffer, Compute, Hadamard, OneExample, Product, RankOne, Scale,
                       SignOf, Step, Subtract, base_name)
from .inplace import Buffers, InplacePrinter
from .text import TextPrinter

__all__ = ["StepCode", "print_step"]

@dataclass(frozen=True)
class StepCode:
    """The printed step: buffer declarations, row views for m = 1, and the step's body."""

    setup: tuple[str, ...]
    rows: tuple[tuple[str, str], ...]  # (name, view) for one-example steps
    body: tuple[str, ...]
    scipy_functions: frozenset = field(default_factory=frozenset)


def _layer_of(name: str) -> str:
    """The layer number in a buffer name (``"Z12"`` -> ``"12"``), for temporaries' prefixes."""
    digits = "".join(ch for ch in base_name(name) if ch.isdigit())
    return digits or "0"


class _Printer:
    def __init__(self, step: Step, sizes: dict[str, int]):
        self.step = step
        self.sizes = sizes  # buffer -> units (its number of columns)
        self.pools: dict[str, Buffers] = {}
        self.scipy: set[str] = set()
        self.rows: dict[str, str] = {}

    def pool(self, out: str) -> Buffers:
        """Temporaries for a formula into ``out``: (m, n_l) ones for the layer's batch arrays,
        or ones shaped like the parameter for a parameter or its gradient."""
        like = self.parameter_shape(out)
        key = like or _layer_of(out)
        return self.pools.setdefault(key, Buffers(f"t{key}"))

    def parameter_shape(self, out: str) -> str | None:
        """The parameter whose shape ``out`` has (W1 for W1 and dW1), or None."""
        name = base_name(out)
        likes = {b.name: b.like for b in self.step.buffers if b.like is not None}
        if name in likes:
            return likes[name]
        return name if name in likes.values() else None

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
            return lines
        if isinstance(op, Scale):
            note = f"  # {op.comment}" if op.comment else ""
            return [f"np.multiply({op.out}, {op.factor}, out={op.out}){note}"]
        if isinstance(op, Hadamard):
            return [f"np.multiply({op.out}, {op.other}, out={op.out})"]
        if isinstance(op, SignOf):
            return [f"np.sign({op.src}, out={op.out})"]
        if isinstance(op, Subtract):
            return [f"np.subtract({op.param}, {op.delta}, out={op.param})"]
        if isinstance(op, RankOne):
            return [f"_runtime.rank_one(ger, {op.param}, {self.row(op.d)}, {self.row(op.a)})"]
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
        groups: list[tuple[str, list[str]]] = []
        for buffer in self.step.buffers:
            groups.append((self._allocation(buffer), [buffer.name]))
        for key, pool in sorted(self.pools.items(), key=lambda kv: (not kv[0].isdigit(), kv[0])):
            if key.isdigit():
                temporaries = _temporaries(pool, self.sizes.get(f"Z{key}"))
            else:
                temporaries = _parameter_temporaries(pool, key)
            for name, allocation in temporaries:
                groups.append((allocation, [name]))
        merged: list[tuple[str, list[str]]] = []
        for allocation, names in groups:  # consecutive equal allocations share a line
            if merged and merged[-1][0] == allocation and "np.empty(" in allocation:
                merged[-1][1].extend(names)
            else:
                merged.append((allocation, list(names)))
        lines = []
        for allocation, names in merged:
            if len(names) == 1:
                lines.append(f"{names[0]} = {allocation}")
            else:
                lines.append(f"{', '.join(names)} = ({allocation} for _ in range({len(names)}))")
        return lines

    @staticmethod
    def _allocation(buffer: Buffer) -> str:
        if buffer.like is not None:
            return f"np.empty_like({buffer.like})"
        shape = ", ".join(str(s) for s in buffer.shape)
        shape = f"({shape},)" if len(buffer.shape) == 1 else f"({shape})"
        if buffer.fill is not None:
            return f"np.full({shape}, {buffer.fill!r}, dtype)" if buffer.fill != 1 \
                else f"np.ones({shape}, dtype)"
        return f"np.empty({shape}, dtype)"


def _temporaries(pool: Buffers, units) -> list[tuple[str, str]]:
    """(name, allocation) for every temporary and constant the in-place printer used."""
    shapes = {"full": f"(m, {units})", "column": "(m, 1)", "mask": f"(m, {units})",
              "units_first": f"({units}, m)"}
    out = []
    for kind in ("full", "column", "mask", "units_first"):
        for i in range(getattr(pool, kind)):
            dtype = "bool" if kind == "mask" else "dtype"
            out.append((f"{pool.prefix}_{kind[0]}{i}", f"np.empty({shapes[kind]}, {dtype})"))
    if pool.ones:
        out.append((f"{pool.prefix}_ones", f"np.ones(({units}, 1), dtype)"))
    for name, value in pool.constants.items():
        out.append((name, f"np.full((m, {units}), {value!r}, dtype)"))
    return out


def _parameter_temporaries(pool: Buffers, like: str) -> list[tuple[str, str]]:
    """(name, allocation) for the temporaries of a formula over parameter-shaped arrays."""
    if pool.column or pool.units_first or pool.ones or pool.constants:
        raise ValueError(f"a formula over {like}'s entries used a batch-shaped temporary")
    return ([(f"{pool.prefix}_f{i}", f"np.empty_like({like})") for i in range(pool.full)]
            + [(f"{pool.prefix}_m{i}", f"np.empty({like}.shape, bool)") for i in range(pool.mask)])


def print_step(step: Step, layer_sizes: tuple[int, ...]) -> StepCode:
    """Print the step: statements first (they decide the temporaries), then the buffers."""
    sizes = {f"Z{l}": n for l, n in enumerate(layer_sizes) if l > 0}
    printer = _Printer(step, sizes)
    body: list[str] = []
    for title, ops in step.sections:
        body.append(f"# {title}")
        for op in ops:
            if isinstance(op, Compute):
                body.append(f"# {op.out} = {TextPrinter(dict(op.names)).doprint(op.expr)}")
            body.extend(printer.statement(op))
    rows = tuple((view, f"{name}[0]") for name, view in printer.rows.items())
    return StepCode(tuple(printer.declarations()), rows, tuple(body), frozenset(printer.scipy))
