"""Stage 2 for a stack of layer kinds: ``NetSpec -> GraphDerivation``.

Each layer's statements come from its kind's declaration (``derive.layers``), instantiated
with the layer's index (γ of layer 2 is ``gamma2``), wired to the layer below (its input is
A_{l-1}), a skip's a_K added to z_l, and the layer's activation applied.  The backward is
derived from those statements in reverse order (reverse-mode differentiation): each entry-
wise statement t = f(x, ...) sends ∂J/∂t · ∂f/∂x to x, with ∂f/∂x from ``sympy.diff``,
summed over the axes x is broadcast along; a mean over the batch or the units sends its
adjoint back divided by the count; a dense product z = a Wᵀ + b sends ∂J/∂z W to a,
(∂J/∂z)ᵀ a to W and the column sums to b.  Activations use their derived local derivative
(``derive.local``), and the output layer's error is the derived δ_L = ∂L/∂z_L, so that
∂J/∂Z_L = δ_L / m starts the pass.  Nothing of the backward is typed in per kind.

Arrays are laid out one row per example (as the generated code stores them): data (m x n),
a per-unit row (1 x n) or a per-example column (m x 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import sympy as sp

from .activations import exact
from .derivation import W_ENTRY, DeclaredRules, Objective, OptimizerUse, optimizer_use, penalties
from .indexform import rule as window_rule
from .layers import (BATCH, COLUMN, DATA, INPUT, LAYER_KINDS, M_SYM, OUTPUT, ROW, SCALAR,
                     UNITS, Conv, LayerKind, Let, Linear, Pool, Reduce, Window)
from .local import A_SYM, Z_SYM, LocalActivation, LocalOutput, local_activation, local_output
from .netspec import LayerSpec, NetSpec

__all__ = ["Activate", "OutputError", "Product", "WindowRule", "Node", "GraphDerivation",
           "derive_graph"]


@dataclass(frozen=True)
class Activate:
    """target = g(source): the layer's activation (element-wise, or softmax per example)."""

    target: sp.Symbol
    source: sp.Symbol
    activation: LocalActivation
    op = "activate"

    @property
    def reads(self):
        return (self.source,)


@dataclass(frozen=True)
class OutputError:
    """target = δ_L / m = ∂J/∂Z_L, δ_L the derived output error (index form in a, y, z)."""

    target: sp.Symbol
    output: LocalOutput
    A: sp.Symbol
    Z: sp.Symbol
    op = "output_error"

    @property
    def reads(self):
        return (self.A, self.Z)


@dataclass(frozen=True)
class Product:
    """target = left @ right, ``left`` transposed when ``transpose`` (a weight gradient)."""

    target: sp.Symbol
    left: sp.Symbol
    right: sp.Symbol
    transpose: bool = False
    op = "product"

    @property
    def reads(self):
        return (self.left, self.right)


@dataclass(frozen=True)
class WindowRule:
    """target = a reverse rule of a window kind (``derive.indexform.RULES``: conv_input,
    conv_weight, conv_bias, max_pool_input, avg_pool_input) at ``window``'s sizes, from the
    error ``delta`` = ∂J/∂z and ``other`` (W for conv_input; the kind's input a for
    conv_weight and the pools; None for conv_bias).  ``expr`` is the rule's index form as
    SymPy derived it (free indices ``free``): what the proof evaluates and LaTeX prints."""

    target: sp.Symbol
    rule: str
    delta: sp.Symbol
    other: sp.Symbol | None
    window: Window
    expr: sp.Expr
    free: tuple

    @property
    def op(self) -> str:
        return self.rule

    @property
    def reads(self):
        return (self.delta,) + ((self.other,) if self.other is not None else ())


def _window_rule(target, name, delta, other, window) -> WindowRule:
    expr, free = window_rule(name)
    return WindowRule(target, name, delta, other, window, expr, free)


@dataclass(frozen=True)
class Node:
    """Layer l of the stack: its kind, symbols and statements."""

    index: int
    kind: LayerKind
    spec: LayerSpec
    fan_in: int
    units: int
    activation: LocalActivation
    symbols: dict  # the kind's symbol -> this layer's (gamma -> gamma2)
    params: tuple  # (symbol, shape, init, penalised)
    state: tuple  # (symbol, initial value, target expression in the layer's symbols)
    randoms: tuple  # (symbol, probability of a 1)
    constants: tuple  # (symbol, value, shaped like this symbol)
    forward: tuple  # the training forward, ending with A_l
    inference: tuple  # the forward when not training
    Z: sp.Symbol
    A: sp.Symbol
    options: dict  # every option of the kind, defaults filled


@dataclass(frozen=True)
class GraphDerivation(DeclaredRules):
    """A stack of layer kinds with its derived backward (see the module docstring)."""

    spec: NetSpec
    nodes: tuple[Node, ...]
    output: LocalOutput
    objective: Objective
    optimizer: OptimizerUse
    X: sp.Symbol
    Y: sp.Symbol
    shapes: dict  # symbol -> (shape class, width)
    backward: tuple  # statements, in evaluation order
    gradients: tuple  # (parameter symbol, its gradient's symbol)
    penalised: tuple  # parameter symbols the l1/l2 terms apply to
    m: sp.Symbol = field(default=M_SYM)

    @property
    def forward(self) -> tuple:
        return tuple(s for node in self.nodes for s in node.forward)

    @property
    def inference(self) -> tuple:
        return tuple(s for node in self.nodes for s in node.inference)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.spec.layer_sizes

    @property
    def params(self) -> tuple:
        return tuple(p for node in self.nodes for p in node.params)

    @property
    def couples_batch(self) -> bool:
        return any(node.kind.couples_batch for node in self.nodes)


def _layer_symbol(symbol: sp.Symbol, l: int) -> sp.Symbol:
    return sp.Symbol(f"{symbol.name}{l}", **symbol.assumptions0)


def _node(spec: NetSpec, l: int, layer: LayerSpec, A_prev: sp.Symbol, fan_in: int,
          shapes: dict) -> Node:
    kind = LAYER_KINDS[layer.kind]
    options = {o.key: o.default for o in kind.options} | layer.option_dict | {
        "units": layer.units, "image": spec.image_in(l)}
    act = local_activation(layer.activation.name, layer.activation.params)
    Z, A = sp.Symbol(f"Z{l}", real=True), sp.Symbol(f"A{l}", real=True)
    P = sp.Symbol(f"P{l}", real=True) if layer.skip is not None else Z  # z before the skip
    names = {INPUT: A_prev, OUTPUT: P}

    def own(symbol):
        if symbol not in names:
            names[symbol] = _layer_symbol(symbol, l)
        return names[symbol]

    params = []
    for p in kind.params_for(options):
        shape = p.shape_for(fan_in, layer.units, options)
        params.append((own(p.symbol), shape, p.init, p.penalised))
        shapes[names[p.symbol]] = ("weights" if len(shape) > 1 or p.shaped else ROW, layer.units)
    constants = tuple((own(c), exact(options[key]), own(like)) for c, key, like in kind.constants)
    for c, _, _ in constants:
        shapes[c] = (SCALAR, 1)
    randoms = tuple((own(r.symbol), r.keep(options)) for r in kind.randoms)
    for r, _ in randoms:
        shapes[r] = (DATA, layer.units)
    state = tuple((own(s.symbol), s.init, s.target) for s in kind.state)
    for s, _, _ in state:
        shapes[s] = (ROW, layer.units)

    def instantiate(statements):
        out = []
        for st in statements:
            for symbol in _symbols_of(st):
                own(symbol)
            out.append(_renamed(st, names))
            _shape(out[-1], shapes, layer.units)
        return out

    forward, inference = instantiate(kind.forward(options)), instantiate(
        (kind.inference or kind.forward)(options))
    state = tuple((s, init, target.xreplace(names)) for s, init, target in state)
    tail = []
    if layer.skip is not None:
        K = layer.skip
        tail.append(Let(Z, P + sp.Symbol(f"A{K}", real=True)))
        shapes[Z] = (DATA, layer.units)
    tail.append(Activate(A, Z, act))
    shapes[A] = (DATA, layer.units)
    return Node(l, kind, layer, fan_in, layer.units, act, dict(names), tuple(params), state,
                randoms, constants, tuple(forward + tail), tuple(inference + tail), Z, A,
                options)


def _symbols_of(statement) -> set:
    if isinstance(statement, (Linear, Conv, Pool)):
        return {statement.target, *statement.reads}
    return {statement.target} | statement.expr.free_symbols


def _renamed(statement, names: dict):
    if isinstance(statement, Linear):
        return Linear(names[statement.target], names[statement.a], names[statement.W],
                      None if statement.b is None else names[statement.b])
    if isinstance(statement, Conv):
        return Conv(names[statement.target], names[statement.a], names[statement.W],
                    None if statement.b is None else names[statement.b], statement.window)
    if isinstance(statement, Pool):
        return Pool(names[statement.target], names[statement.a], statement.window,
                    statement.how)
    expr = statement.expr.xreplace(names)
    if isinstance(statement, Reduce):
        return Reduce(names[statement.target], expr, statement.axis, statement.mean)
    return Let(names[statement.target], expr)


def _broadcast(classes) -> str:
    classes = set(classes) - {SCALAR}
    if DATA in classes or classes == {ROW, COLUMN}:
        return DATA
    return next(iter(classes)) if classes else SCALAR


def _shape(statement, shapes: dict, units: int) -> None:
    if isinstance(statement, (Linear, Conv, Pool)):
        shapes[statement.target] = (DATA, units)
    elif isinstance(statement, Reduce):
        shapes[statement.target] = (ROW if statement.axis == BATCH else COLUMN, units)
    else:
        shapes[statement.target] = (_broadcast(shapes[s][0] for s in statement.reads), units)


# ----------------------------------------------------------------------------- backward

class _Adjoints:
    """∂J/∂x for each array x, gathered from the statements that read x (reverse mode)."""

    def __init__(self, shapes: dict, differentiable: set):
        self.shapes = shapes
        self.differentiable = differentiable
        self.parts: dict[sp.Symbol, list] = {}
        self.statements: list = []
        self.temps = 0

    @staticmethod
    def name(symbol: sp.Symbol) -> sp.Symbol:
        return sp.Symbol(f"d{symbol.name}", real=True)

    def add(self, x: sp.Symbol, expr: sp.Expr, expr_class: str, axis_of=None) -> None:
        """Add ``expr`` (of shape class ``expr_class``) to ∂J/∂x, summed over the axes that x
        is broadcast along."""
        if x not in self.differentiable:
            return
        target_class, width = self.shapes[x]
        if target_class == "weights":
            target_class = ROW
        if expr_class != target_class and expr_class != SCALAR:
            axis = BATCH if target_class == ROW else UNITS
            self.temps += 1
            temp = sp.Symbol(f"s{self.temps}_{x.name}", real=True)
            self.statements.append(Reduce(temp, expr, axis, mean=False))
            self.shapes[temp] = (target_class, width)
            expr = temp
        self.parts.setdefault(x, []).append(expr)

    def finish(self, x: sp.Symbol) -> sp.Symbol | None:
        """Write ∂J/∂x as one statement; None when nothing reads x."""
        parts = self.parts.pop(x, None)
        if not parts:
            return None
        d = self.name(x)
        total = sp.Add(*parts)
        made = {st.target: i for i, st in enumerate(self.statements)}
        if len(parts) == 1 and total in made and total.name.startswith(("s", "p_")):
            # one part, a sum or product written just for x: it is ∂J/∂x itself
            i = made[total]
            self.statements[i] = dataclasses.replace(self.statements[i], target=d)
            self.shapes[d] = self.shapes.pop(total)
        elif total != d:
            self.statements.append(Let(d, total))
        self.shapes[d] = self.shapes[x] if self.shapes[x][0] != "weights" else (ROW, self.shapes[x][1])
        return d


def _backward(nodes: tuple[Node, ...], output: LocalOutput, shapes: dict):
    params = {p for node in nodes for p, *_ in node.params}
    constant = {s for node in nodes for s, *_ in node.constants + node.randoms + node.state}
    defined = {st.target for node in nodes for st in node.forward}
    differentiable = (params | defined) - constant
    adj = _Adjoints(shapes, differentiable)
    last = nodes[-1]
    dZ = adj.name(last.Z)
    adj.statements.append(OutputError(dZ, output, last.A, last.Z))
    shapes[dZ] = (DATA, last.units)
    adj.parts[last.Z] = [dZ]
    gradients = {}
    statements = [st for node in nodes for st in node.forward]
    for st in reversed(statements):
        if st is last.forward[-1]:  # the output activation: its error is δ_L, above
            continue
        d = adj.finish(st.target)
        if d is None:
            continue
        if isinstance(st, Activate):
            act = st.activation
            if act.backward == 1:
                adj.add(st.source, d, DATA)
            else:
                arg = st.target if act.backward_uses_output else st.source
                sym = A_SYM if act.backward_uses_output else Z_SYM
                adj.add(st.source, d * act.backward.xreplace({sym: arg}), DATA)
        elif isinstance(st, Linear):
            if st.a in differentiable:
                temp = sp.Symbol(f"p_{st.a.name}", real=True)
                adj.statements.append(Product(temp, d, st.W))
                shapes[temp] = (DATA, shapes[st.a][1])
                adj.add(st.a, temp, DATA)
            dW = adj.name(st.W)
            adj.statements.append(Product(dW, d, st.a, transpose=True))
            gradients[st.W] = dW
            if st.b is not None:
                adj.add(st.b, d, DATA)
        elif isinstance(st, Conv):  # the rules SymPy derived from the index form
            if st.a in differentiable:
                temp = sp.Symbol(f"p_{st.a.name}", real=True)
                adj.statements.append(_window_rule(temp, "conv_input", d, st.W, st.window))
                shapes[temp] = (DATA, shapes[st.a][1])
                adj.add(st.a, temp, DATA)
            dW = adj.name(st.W)
            adj.statements.append(_window_rule(dW, "conv_weight", d, st.a, st.window))
            gradients[st.W] = dW
            if st.b is not None:
                db = adj.name(st.b)
                adj.statements.append(_window_rule(db, "conv_bias", d, None, st.window))
                gradients[st.b] = db
        elif isinstance(st, Pool):
            if st.a in differentiable:
                temp = sp.Symbol(f"p_{st.a.name}", real=True)
                adj.statements.append(_window_rule(temp, f"{st.how}_pool_input", d, st.a,
                                                   st.window))
                shapes[temp] = (DATA, shapes[st.a][1])
                adj.add(st.a, temp, DATA)
        elif isinstance(st, Let):
            target_class = shapes[st.target][0]
            for x in st.reads:
                if x in differentiable:
                    part = sp.diff(st.expr, x)
                    if part != 0:
                        adj.add(x, d * part, target_class)
        elif isinstance(st, Reduce):
            count = M_SYM if st.axis == BATCH else sp.Integer(shapes[st.target][1])
            inner = _broadcast(shapes[s][0] for s in st.reads)
            for x in st.reads:
                if x in differentiable:
                    part = sp.diff(st.expr, x)
                    if part != 0:
                        adj.add(x, d * part / count if st.mean else d * part,
                                _broadcast((inner, shapes[st.target][0])))
    for p in sorted(params, key=lambda s: (_layer_of(s), s.name)):
        if p not in gradients:
            d = adj.finish(p)
            if d is not None:
                gradients[p] = d
    return tuple(adj.statements), gradients


def _layer_of(symbol: sp.Symbol) -> int:
    digits = "".join(ch for ch in reversed(symbol.name) if ch.isdigit())[::-1]
    return int(digits or 0)


def derive_graph(spec: NetSpec) -> GraphDerivation:
    """Instantiate every layer's declaration and derive the backward (module docstring)."""
    last = spec.layers[-1].activation
    output = local_output(spec.loss, last.name, last.params, spec.loss_params)
    X, Y = sp.Symbol("A0", real=True), sp.Symbol("Y", real=True)
    shapes: dict = {X: (DATA, spec.input), Y: (DATA, spec.layers[-1].units)}
    nodes = []
    A_prev, fan_in = X, spec.input
    for l, layer in enumerate(spec.layers, start=1):
        node = _node(spec, l, layer, A_prev, fan_in, shapes)
        nodes.append(node)
        A_prev, fan_in = node.A, node.units
    nodes = tuple(nodes)
    backward, grads = _backward(nodes, output, shapes)
    order = [p for node in nodes for p, *_ in node.params]
    gradients = tuple((p, grads[p]) for p in order)
    penalised = tuple(p for node in nodes for p, _, _, pen in node.params if pen)
    found = penalties(spec)
    # each penalty's term on the weights: lambda_2 W, lambda_1 sign(W), entry by entry
    backward += tuple(Let(grads[W], grads[W] + sp.Add(*[
        p.strength * p.derivative.xreplace({W_ENTRY: W}) for p in found]))
        for W in penalised if found)
    # a convolution's (F, C, k, k) kernel as the (F, C k²) matrix of its entries
    weights = tuple(sp.MatrixSymbol(p.name, shape[0], math.prod(shape[1:])) for node in nodes
                    for p, shape, _, pen in node.params if pen)
    objective = Objective(output.loss, output.per_example, found, weights)
    return GraphDerivation(spec, nodes, output, objective, optimizer_use(spec), X, Y, shapes,
                           backward, gradients, penalised)

