"""The compiled-loop printer: the training ``Step`` -> a whole-epoch kernel for numba.

The kernel gathers each batch's rows by the epoch's order and runs the step's statements as
explicit loop nests over scalars: products of small layers as loops (with the bias and the
activation fused into the loop that produces each entry), of large ones as BLAS calls
(``np.dot`` with ``out``); every element-wise statement as one loop, consecutive ones over
the same array fused into one; column-wise formulas (softmax, sums over the units) row by
row, softmax from the row's maximum.  One call runs every full batch of the epoch, so the
Python interpreter is left once per epoch, not once per operation.  What is the same for
every network (gathering a batch; with BLAS, the product, softmax, column sums of row-major
arrays and a weight's plain updates) is a call of the runtime's kernel helpers
(``_runtime.KERNEL_HELPERS``), which numba inlines; the loop kernels of small networks keep
their loops, whose bounds are constants (6-9-4 trained 10-18% slower with the helpers).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import precedence

from ..program import (AddBias, Compute, Hadamard, OneExample, Product, RankOne, Scale, Step,
                       Subtract, WhenPlain, base_name)
from .numpy import NumPyCodePrinter, clamped, is_softmax

__all__ = ["LoopCode", "KernelPrinter", "print_epoch_kernel", "uses_blas", "BLAS_MIN_ENTRIES"]

# A network whose weight matrices all have fewer entries than this runs on explicit loops;
# a larger one takes every product from BLAS (loops over its small layers cost more there,
# at the batch sizes a large network trains with, than a BLAS call).
BLAS_MIN_ENTRIES = 4096


class ScalarPrinter(NumPyCodePrinter):
    """One entry of a formula: leaves as ``array[i, j]`` (or ``[i, k]`` inside a sum).

    A named primitive may carry a scalar spelling (``_scalarcode``); otherwise its NumPy one.
    """

    def _print_Function(self, expr):
        if hasattr(expr, "_numpycode"):
            return expr._numpycode(self)
        return super()._print_Function(expr)

    def _print_exp(self, expr):  # the runtime's: numba vectorises it, not the C library's
        return f"_runtime.exp({self._print(expr.args[0])})"

    # Numbers in the arrays' precision (the kernel's ``_dt = A0.dtype.type``): numba types a
    # bare 1.0 as float64, and float32 loops mixing one in ran in float64, at half the width
    # (4-4-1, batch 1024: 1.32x -> 1.49x the libm kernel with the runtime's exp).
    def _number(self, expr, code):  # a negative number with its sign outside (x - _dt(1))
        return f"-_dt({code[1:]})" if expr.is_negative else f"_dt({code})"

    def _print_Integer(self, expr):
        return self._number(expr, str(int(expr)))

    def _print_Rational(self, expr):
        return self._number(expr, super()._print_Rational(expr))

    def _print_Half(self, expr):
        return "_dt(0.5)"

    def _print_Float(self, expr):
        return self._number(expr, super()._print_Float(expr))

    def _print_Zero(self, expr):
        return "_dt(0)"

    def _print_Pow(self, expr, rational=False):
        if expr.exp.is_Integer:  # integer powers by multiplication (numba), in the dtype
            n = int(expr.exp)
            base = self.parenthesize(expr.base, precedence(expr))
            power = base if abs(n) == 1 else f"{base}**{abs(n)}"
            return power if n > 0 else f"(_dt(1) / {power})"
        return super()._print_Pow(expr, rational)

    def __init__(self, names: dict, ndim: dict[str, int], row: str = "i", col: str = "j"):
        super().__init__(names)
        self.printmethod = "_scalarcode"  # NumPyPrinter's __init__ sets its own
        self.ndim = ndim  # array name -> number of axes; other names are scalars
        self.row, self.col = row, col

    def _module_format(self, fqn, register=True):
        if fqn == "scipy.special.erf":
            self.scipy_functions.add("math.erf")  # recorded: the module imports math
            return "math.erf"  # numba compiles math.erf, not SciPy's ufunc
        return super()._module_format(fqn, register)

    def _print_Symbol(self, expr):
        name = self.names.get(expr)
        if name is None or name not in self.ndim:
            return super()._print_Symbol(expr)
        return f"{name}[{self.col}]" if self.ndim[name] == 1 else f"{name}[{self.row}, {self.col}]"

    def _print_Indexed(self, expr):
        index = str(expr.indices[0]) if expr.indices[0] != _J else self.col
        return f"{self.names[expr.base]}[{self.row}, {index}]"

    def _print_Piecewise(self, expr):
        code = self._print(expr.args[-1].expr)
        for value, cond in reversed(expr.args[:-1]):
            code = f"({self._print(clamped(value, cond))} if {self._print(cond)} else {code})"
        return code

    def _print_And(self, expr):
        return "(" + " and ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(not {self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        x = self._print(expr.args[0])
        half = self._print(expr.args[1] if len(expr.args) > 1 else sp.S.Half)
        return f"(_dt(1) if {x} > 0 else ({half} if {x} == 0 else _dt(0)))"

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Sum(self, expr):
        return self.names[expr]  # precomputed per row into a scalar


_J = sp.Symbol("j", integer=True, positive=True)  # the unit index of column-wise formulas


@dataclass(frozen=True)
class LoopCode:
    arguments: tuple[str, ...]  # the kernel's array arguments after (X, T, order, lr)
    body: tuple[str, ...]
    factors: tuple[tuple[str, str], ...] = ()  # (name, code) computed before the loops
    order: str = "C"  # the batch buffers' layout: "F" (column-major) for loop kernels
    uses_math: bool = False  # the body calls math.erf


class KernelPrinter:
    """Prints a step's statements as loop nests for the epoch kernel (the layer kinds'
    printer, ``graph_loops``, borrows its columnwise and loop pieces)."""

    def __init__(self, step: Step, shapes: dict[str, tuple], blas: bool, form: str = "both"):
        self.step = step
        self.blas = blas  # products from BLAS (a large network) or explicit loops
        # "one": one example's forms only, the examples' loops of a constant trip count 1;
        # "batch": the batch's forms only; "both": each product branches on m == 1
        self.form = form
        self.rows = "1" if form == "one" else "m"  # the examples' count in the loops
        shapes = {name: tuple(self.rows if size == "m" else size for size in shape)
                  for name, shape in shapes.items()}
        self.shapes = shapes  # array -> shape, self.rows for the examples
        self.ndim = {name: len(shape) for name, shape in shapes.items()}
        self.scalars = 0
        self._printers: list[ScalarPrinter] = []
        self.factors: dict[str, str] = {}  # scale factor code -> its hoisted name

    def printer(self, names, **indices) -> ScalarPrinter:
        printer = ScalarPrinter(dict(names), self.ndim, **indices)
        self._printers.append(printer)
        return printer

    # -- helpers ------------------------------------------------------------------------
    def shape(self, operand: str) -> tuple:
        shape = self.shapes[base_name(operand)]
        return tuple(reversed(shape)) if operand.endswith(".T") else shape

    @staticmethod
    def at(operand: str, r: str, c: str) -> str:
        name = base_name(operand)
        return f"{name}[{c}, {r}]" if operand.endswith(".T") else f"{name}[{r}, {c}]"

    def loops(self, shape: tuple, body: list[str], names=("i", "j")) -> list[str]:
        lines, indent = [], ""
        for index, size in zip(names, shape):
            lines.append(f"{indent}for {index} in range({size}):")
            indent += "    "
        return lines + [indent + line for line in body]

    def scalar(self) -> str:
        self.scalars += 1
        return f"_s{self.scalars}"

    def factor(self, code: str) -> str:
        """A scale factor, computed once per kernel call (before the loops) as ``_f<n>``."""
        if code not in self.factors:
            self.factors[code] = f"_f{len(self.factors) + 1}"
        return self.factors[code]

    # -- statements -----------------------------------------------------------------------
    def pointwise(self, op) -> str | None:
        """The loop body line of an element-wise statement (entry [i, j]), or None."""
        if isinstance(op, AddBias):
            return f"{op.out}[i, j] += {op.b}[j]"
        if isinstance(op, Hadamard):
            return f"{op.out}[i, j] *= {op.other}[i, j]"
        if isinstance(op, Scale):
            return f"{op.out}[i, j] *= {self.factor(op.factor)}"
        if isinstance(op, Subtract):  # the plain rule only
            return f"if _update is None: {op.param}[i, j] -= {op.delta}[i, j]"
        if isinstance(op, Compute) and not op.expr.has(sp.Sum):
            code = self.printer(op.names).doprint(op.expr)
            return f"{op.out}[i, j] = {code}"
        return None

    def target(self, op) -> str:
        return op.param if isinstance(op, Subtract) else base_name(op.out)

    def lines(self, op) -> str:
        """``pointwise(op)`` for the target's number of axes."""
        line = self.pointwise(op)
        return line.replace("[i, j]", "[j]") if self.ndim[self.target(op)] == 1 else line

    def statements(self, ops) -> list[str]:
        lines: list[str] = []
        ops = list(ops)
        at = 0
        while at < len(ops):
            op = ops[at]
            if isinstance(op, Product):
                fused, at = self._fusable(ops, at + 1, base_name(op.out))
                lines += self.product(op, fused)
                continue
            if self.pointwise(op) is not None:
                fused, at = self._fusable(ops, at, self.target(op))
                lines += self._pointwise_loop(self.target(op), fused)
                continue
            lines += self.other(op)
            at += 1
        return lines

    def _fusable(self, ops, at, target):
        """The element-wise statements from ``at`` on over arrays of ``target``'s shape: each
        reads and writes entry [i, j] only, so one loop can run them all, in order."""
        fused = []
        shape = self.shapes[target]
        while at < len(ops) and self.pointwise(ops[at]) is not None \
                and self.shapes[self.target(ops[at])] == shape:
            fused.append(ops[at])
            at += 1
        return fused, at

    def _pointwise_loop(self, target: str, ops) -> list[str]:
        shape = self.shapes[target]
        if self.blas and len(ops) == 1 and isinstance(ops[0], Subtract) and len(shape) == 2:
            return [f"if _update is None: _runtime.subtract({ops[0].param}, {ops[0].delta})"]
        body = [self.lines(op) for op in ops]
        if len(shape) == 1:
            return self.loops(shape, body, names=("j",))
        if self.rows not in shape or not self.blas:  # column-major: the row index runs innermost
            return self.loops(tuple(reversed(shape)), body, names=("j", "i"))
        return self.loops(shape, body)

    def product(self, op: Product, fused) -> list[str]:
        out = base_name(op.out)
        if op.a == "ones":  # column sums out[j] = sum_i src[i, j]
            rows, cols = self.shape(op.b)
            if not self.blas:  # column-major buffers: each column is contiguous
                s = self.scalar()
                return self.loops((cols,), [f"{s} = _dt(0)", f"for i in range({rows}):",
                                            f"    {s} += {op.b}[i, j]", f"{out}[j] = {s}"]
                                  + [self.lines(f) for f in fused], names=("j",))
            return ([f"_runtime.column_sums({op.b}, {out})"]  # row by row
                    + (self.loops((cols,), [self.lines(f) for f in fused], names=("j",))
                       if fused else []))
        rows, inner = self.shape(op.a)
        cols = self.shape(op.b)[1]
        if self.blas:
            # op.blas: one example's out[0] = b^T a[0] as a matrix-vector product; else gemm
            helper = "dot_into" if op.blas else "matmul_into"
            lines = [f"_runtime.{helper}({op.a}, {op.b}, {op.out})"]
            if len(fused) == 1 and isinstance(fused[0], Subtract) and fused[0].delta == out:
                # the plain rule: W -= (scaled) dW in the product's own BLAS call (beta = 1):
                # no gradient array written, then read back by a second pass
                target = fused[0].param + (".T" if op.out.endswith(".T") else "")
                return [f"if _update is None: _runtime.subtract_product({op.a}, {op.b}, {target})",
                        "else: " + lines[0]]
            if fused:
                lines += self._pointwise_loop(out, fused)
            return lines
        s = self.scalar()  # a dot product per entry
        body = [f"{s} = _dt(0)", f"for k in range({inner}):",
                f"    {s} += {self.at(op.a, 'i', 'k')} * {self.at(op.b, 'k', 'j')}",
                f"{self.at(op.out, 'i', 'j')} = {s}"]
        if inner != self.rows:  # one example: dot products; a batch: column by column, the batch
            w = self.scalar()  # innermost (contiguous in column-major buffers: vectorised)
            columns = [f"for i in range({rows}):", f"    {self.at(op.out, 'i', 'j')} = 0.0",
                       f"for k in range({inner}):", f"    {w} = {self.at(op.b, 'k', 'j')}",
                       f"    for i in range({rows}):",
                       f"        {self.at(op.out, 'i', 'j')} += {self.at(op.a, 'i', 'k')} * {w}"]
            if fused:
                columns += [f"for i in range({rows}):"] + ["    " + self.pointwise(f) for f in fused]
            one = self.loops(("1", cols), body + [self.pointwise(f) for f in fused])
            batch = self.loops((cols,), columns, names=("j",))
            if self.form != "both":
                return one if self.form == "one" else batch
            return ["if m == 1:"] + ["    " + line for line in one] + ["else:"] + ["    " + line for line in batch]
        if op.out.endswith(".T"):
            return self.loops((rows, cols), body) + (self._pointwise_loop(out, fused) if fused else [])
        return self.loops((rows, cols), body + [self.pointwise(f) for f in fused])

    def other(self, op) -> list[str]:
        if isinstance(op, Compute):  # column-wise, with sums over the units
            return self.columnwise(op)
        if isinstance(op, WhenPlain):
            return (["if _update is None:"] + ["    " + line for line in self.statements(op.then)]
                    + ["else:"] + ["    " + line for line in self.statements(op.otherwise)])
        if isinstance(op, OneExample):
            if self.form == "batch":
                return self.statements(op.otherwise)
            then = self.statements(op.then)
            test = "_update is None" if self.form == "one" else "m == 1 and _update is None"
            return ([f"if {test}:"] + ["    " + line for line in then] + ["else:"]
                    + ["    " + line for line in self.statements(op.otherwise)])
        if isinstance(op, RankOne):
            d, a = base_name(op.d), base_name(op.a)
            if self.blas:
                return [f"_runtime.subtract_outer({op.param}, {d}[0], {a}[0])"]
            # W is column-major: the row index runs innermost
            return self.loops(tuple(reversed(self.shapes[op.param])),
                              [f"{op.param}[i, j] -= {d}[0, i] * {a}[0, j]"], names=("j", "i"))
        raise TypeError(f"no loop form for the statement {op!r}")

    def columnwise(self, op: Compute) -> list[str]:
        names = dict(op.names)
        units = self.shapes[base_name(op.out)][1]
        base = is_softmax(op.expr)
        if base is not None and self.blas:  # stable: from the row's maximum
            return [f"_runtime.softmax_rows({names[base]}, {op.out})"]
        if base is not None:  # the same, with the units a constant (the loops unrolled)
            z, top, total = names[base], self.scalar(), self.scalar()
            return self.loops((self.rows,), [
                f"{top} = {z}[i, 0]",
                f"for j in range(1, {units}):",
                f"    {top} = max({top}, {z}[i, j])",
                f"{total} = _dt(0)",
                f"for j in range({units}):",
                f"    {op.out}[i, j] = _runtime.exp({z}[i, j] - {top})",
                f"    {total} += {op.out}[i, j]",
                f"for j in range({units}):",
                f"    {op.out}[i, j] /= {total}"], names=("i",))
        body = []
        for total in sorted(op.expr.atoms(sp.Sum), key=str):
            (index, _, _), = total.limits
            s = self.scalar()
            names[total] = s
            summand = self.printer(op.names, col=str(index)).doprint(total.function)
            summand = summand.replace(f"[i, {index}]", "[i, k]")
            body += [f"{s} = _dt(0)", f"for k in range({units}):", f"    {s} += {summand}"]
        code = self.printer(names).doprint(op.expr)
        body += [f"for j in range({units}):", f"    {op.out}[i, j] = {code}"]
        return self.loops((self.rows,), body, names=("i",))


def uses_blas(shapes: dict[str, tuple], params: tuple[str, ...]) -> bool:
    """True for a network with a weight matrix of BLAS_MIN_ENTRIES entries or more."""
    return any(len(shapes[p]) == 2 and shapes[p][0] * shapes[p][1] >= BLAS_MIN_ENTRIES
               for p in params)


def print_epoch_kernel(step: Step, shapes: dict[str, tuple], params: tuple[str, ...]) -> LoopCode:
    """The body of ``_epoch_kernel``: gather each batch, then the step's statements.
    ``shapes`` holds every array's shape ("m" for the batch); ``params`` the parameters.
    A small network's step is printed twice, whole: for one example, every loop over the
    examples of trip count 1 (batch 1: 1.08-1.29x the step with a branch per product), and
    for a batch."""
    blas = uses_blas(shapes, params)
    forms = ("both",) if blas else ("one", "batch")
    printers = []
    for form in forms:
        printer = KernelPrinter(step, shapes, blas, form)
        if printers:  # one numbering of scalars and factors across the forms
            printer.scalars, printer.factors = printers[-1].scalars, printers[-1].factors
        lines = []
        for title, ops in step.sections:
            lines.append(f"# {title}")
            lines += printer.statements(ops)
        printer.body = lines
        printers.append(printer)
    if blas:
        body = printers[0].body
    else:  # one example: the C library's exp, shorter in latency than the runtime's, whose
        # polynomial pays off across a batch (vectorised); 4-4-1 at batch 1: 0.71x with it
        one = [line.replace("_runtime.exp(", "np.exp(") for line in printers[0].body]
        body = (["if m == 1:  # one example"] + ["    " + line for line in one]
                + ["else:  # a batch"] + ["    " + line for line in printers[1].body])
    arrays = params + ("A0", step.inputs[1]) + tuple(
        b.name for b in step.buffers if b.name not in step.inputs and b.name != "ones")
    uses_math = any("math.erf" in p.scipy_functions for k in printers for p in k._printers)
    factors = tuple((name, code) for code, name in printers[-1].factors.items())
    return LoopCode(arrays, tuple(body), factors, "C" if blas else "F", uses_math)
