"""Stage 2: ``NetSpec -> Derivation``.

The local pieces come from ``derive.local`` (SymPy derived them); this module composes them
over the layers by the chain-rule recurrence, as matrix expressions in the documents' column
convention (one column per example, m columns in a batch):

    Z_l = W_l A_{l-1} + b_l 1^T          A_l = g_l(Z_l)
    Delta_L = dl/dZ_L  (the output error)  Delta_l = (W_{l+1}^T Delta_{l+1}) o g_l'(Z_l)
    dJ/dW_l = (1/m) Delta_l A_{l-1}^T + lambda_2 W_l + lambda_1 sign(W_l)
    dJ/db_l = (1/m) Delta_l 1

Everything is held as an ordered list of *definitions*, each naming one matrix: a matrix
formula (``MatrixDef``), an entry-by-entry function (``Elementwise``) or a column-by-column
index-form expression (``Columnwise``, for softmax and the output error).  The proof
evaluates these definitions on explicit matrices; the code generator prints them; the LaTeX
prints them with the steps kept alongside.  Nothing is expanded to scalars here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import sympy as sp

from .activations import exact
from .local import (A_SYM, INDEX, Z_SYM, DensePartials, LocalActivation, LocalOutput,
                    dense_partials, local_activation, local_output)
from .netspec import NetSpec
from .optimizers import BATCHING, UPDATE_RULES, UpdateRuleDecl

__all__ = [
    "MatrixDef", "Elementwise", "Columnwise", "Definition", "ChainFactor", "Gradient",
    "Layer", "UpdateRule", "Derivation", "derive", "M",
]

M = sp.Symbol("m", integer=True, positive=True)  # examples in the batch
UPDATE_RULE = "gradient_descent"  # the only rule until optimizers with state are declared


@dataclass(frozen=True)
class MatrixDef:
    """``target = expr`` with ``expr`` a SymPy matrix expression."""

    target: sp.MatrixSymbol
    expr: sp.MatrixExpr


@dataclass(frozen=True)
class Elementwise:
    """``target[r, c] = expr`` with each scalar symbol of ``inputs`` taking entry [r, c]."""

    target: sp.MatrixSymbol
    expr: sp.Expr
    inputs: tuple[tuple[sp.Symbol, sp.MatrixExpr], ...]


@dataclass(frozen=True)
class Columnwise:
    """``target[j, c] = expr`` in index form; each IndexedBase of ``inputs`` is column c.

    ``INDEX.j`` is the row index and ``INDEX.n`` the number of rows.
    """

    target: sp.MatrixSymbol
    expr: sp.Expr
    inputs: tuple[tuple[sp.IndexedBase, sp.MatrixExpr], ...]


Definition = Union[MatrixDef, Elementwise, Columnwise]


@dataclass(frozen=True)
class ChainFactor:
    """One factor d(numerator)/d(denominator) of a chain-rule product, and what it equals.

    Numerator and denominator are names of the derivation's quantities ("L", "A2", "Z3",
    "W1", ...); ``value`` is the derived factor (W_{l+1}, g_l'(Z_l), A_{l-1}, 1, dL/da, or the
    softmax Jacobian entry).
    """

    numerator: str
    denominator: str
    value: sp.Basic


@dataclass(frozen=True)
class Gradient:
    """dJ/d(param): the chain-rule factors and the simplified matrix formula, with its shape."""

    param: sp.MatrixSymbol
    target: sp.MatrixSymbol  # the named gradient, e.g. dW1
    chain: tuple[ChainFactor, ...]
    per_example: sp.MatrixExpr  # for one example (m = 1), without regularisation
    data_term: sp.MatrixExpr  # (1/m) Delta_l A_{l-1}^T, or (1/m) Delta_l 1
    regularization: tuple[tuple[str, sp.Expr], ...]  # ("l2", lambda_2 W), ("l1", lambda_1 sign W)

    @property
    def shape(self) -> tuple[int, int]:
        return self.param.shape

    @property
    def formula(self) -> sp.MatrixExpr:
        return sp.MatAdd(self.data_term, *[term for _, term in self.regularization]) \
            if self.regularization else self.data_term


@dataclass(frozen=True)
class Layer:
    """Layer l: its symbols, forward definitions, error term and gradients."""

    index: int
    units: int
    fan_in: int
    activation: LocalActivation
    W: sp.MatrixSymbol
    b: sp.MatrixSymbol
    Z: sp.MatrixSymbol
    A: sp.MatrixSymbol
    A_prev: sp.MatrixSymbol
    delta: sp.MatrixSymbol
    G: sp.MatrixSymbol | None  # g_l'(Z_l), entry by entry; None for softmax
    z_def: MatrixDef
    a_def: Definition
    g_def: Elementwise | None
    delta_def: Definition
    grad_W: Gradient
    grad_b: Gradient
    is_output: bool


@dataclass(frozen=True)
class UpdateRule:
    """One descent variant: which examples each step averages over, and the update."""

    optimizer: str  # a name in derive.optimizers.BATCHING
    title: str
    batch: str  # what m is in this variant
    rule: tuple[sp.Expr, sp.Expr]  # (theta, theta - eta dJ/dtheta)


@dataclass(frozen=True)
class Derivation:
    """Everything the LaTeX and the code generator need, derived once from a NetSpec."""

    spec: NetSpec
    X: sp.MatrixSymbol  # A0, (n_0, m)
    Y: sp.MatrixSymbol  # (n_L, m)
    layers: tuple[Layer, ...]
    output: LocalOutput
    dense: DensePartials
    lambda1: sp.Expr
    lambda2: sp.Expr
    updates: tuple[UpdateRule, ...]
    update_rule: UpdateRuleDecl  # how every parameter moves given its gradient
    learning_rate: sp.Symbol = field(default=sp.Symbol("eta", positive=True))

    @property
    def forward(self) -> tuple[Definition, ...]:
        return tuple(d for layer in self.layers for d in (layer.z_def, layer.a_def))

    @property
    def backward(self) -> tuple[Definition, ...]:
        """The backward definitions in evaluation order: output layer first."""
        defs: list[Definition] = []
        for layer in reversed(self.layers):
            if layer.g_def is not None and not layer.is_output:
                defs.append(layer.g_def)
            defs.append(layer.delta_def)
        defs.extend(self.gradient_defs)
        defs.extend(self.regularization_defs)
        return tuple(_dedupe(defs))

    @property
    def gradient_defs(self) -> tuple[MatrixDef, ...]:
        return tuple(MatrixDef(g.target, g.formula)
                     for layer in self.layers for g in (layer.grad_W, layer.grad_b))

    @property
    def regularization_defs(self) -> tuple[Elementwise, ...]:
        if self.lambda1 == 0:
            return ()
        return tuple(Elementwise(_sign_of(layer.W), sp.sign(_W_ENTRY), ((_W_ENTRY, layer.W),))
                     for layer in self.layers)

    @property
    def definitions(self) -> tuple[Definition, ...]:
        """Forward then backward: the whole computation, in order."""
        sign_defs = self.regularization_defs
        return self.forward + sign_defs + tuple(d for d in self.backward if d not in sign_defs)

    @property
    def gradients(self) -> tuple[Gradient, ...]:
        return tuple(g for layer in self.layers for g in (layer.grad_W, layer.grad_b))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.spec.layer_sizes

    @property
    def batching(self) -> dict:
        """Every batching scheme by name (what ``training.optimizer`` may say)."""
        return {name: BATCHING[name] for name in BATCHING}


_W_ENTRY = sp.Symbol("w", real=True)


def _dedupe(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _sign_of(W: sp.MatrixSymbol) -> sp.MatrixSymbol:
    return sp.MatrixSymbol(f"sign{W.name}", *W.shape)


def _ones(rows) -> sp.OneMatrix:
    return sp.OneMatrix(rows, 1)


def _layer(spec: NetSpec, l: int, A_prev: sp.MatrixSymbol, Y: sp.MatrixSymbol,
           next_layer: Layer | None, lambda1: sp.Expr, lambda2: sp.Expr,
           output: LocalOutput) -> Layer:
    layer_spec = spec.layers[l - 1]
    n, fan_in = layer_spec.units, A_prev.shape[0]
    act = local_activation(layer_spec.activation.name, layer_spec.activation.params)
    W = sp.MatrixSymbol(f"W{l}", n, fan_in)
    b = sp.MatrixSymbol(f"b{l}", n, 1)
    Z = sp.MatrixSymbol(f"Z{l}", n, M)
    A = sp.MatrixSymbol(f"A{l}", n, M)
    delta = sp.MatrixSymbol(f"delta{l}", n, M)
    is_output = next_layer is None

    z_def = MatrixDef(Z, W * A_prev + b * _ones(M).T)
    if act.vector:
        a_def: Definition = Columnwise(A, act.expr.subs(INDEX.i, INDEX.j), ((INDEX.z, Z),))
        G, g_def = None, None
    else:
        a_def = Elementwise(A, act.expr, ((Z_SYM, Z),))
        G = sp.MatrixSymbol(f"G{l}", n, M)
        source = (A_SYM, A) if act.backward_uses_output else (Z_SYM, Z)
        g_def = Elementwise(G, act.backward, (source,))

    if is_output:
        inputs = ((INDEX.a, A), (INDEX.y, Y), (INDEX.z, Z))
        used = tuple((base, mat) for base, mat in inputs if output.delta.has(base))
        delta_def: Definition = Columnwise(delta, output.delta, used)
    else:
        delta_def = MatrixDef(delta, sp.HadamardProduct(next_layer.W.T * next_layer.delta, G))

    chain = _chain(l, act, G, output, next_layer)
    reg = []
    if lambda2 != 0:
        reg.append(("l2", lambda2 * W))
    if lambda1 != 0:
        reg.append(("l1", lambda1 * _sign_of(W)))
    a_prev_1 = sp.MatrixSymbol(A_prev.name, A_prev.shape[0], 1)
    delta_1 = sp.MatrixSymbol(delta.name, n, 1)
    grad_W = Gradient(
        W, sp.MatrixSymbol(f"dW{l}", n, fan_in),
        chain + (ChainFactor(Z.name, W.name, A_prev),),
        delta_1 * a_prev_1.T, (sp.S.One / M) * delta * A_prev.T, tuple(reg))
    grad_b = Gradient(
        b, sp.MatrixSymbol(f"db{l}", n, 1),
        chain + (ChainFactor(Z.name, b.name, sp.S.One),),
        delta_1, (sp.S.One / M) * delta * _ones(M), ())
    return Layer(l, n, fan_in, act, W, b, Z, A, A_prev, delta, G, z_def, a_def, g_def,
                 delta_def, grad_W, grad_b, is_output)


def _chain(l: int, act: LocalActivation, G, output: LocalOutput, next_layer: Layer | None):
    """dL/dZ_l as the documents write it: dL/dA_L dA_L/dZ_L dZ_L/dA_{L-1} ... dA_l/dZ_l."""
    local = ChainFactor(f"A{l}", f"Z{l}", G if G is not None else act.jacobian.general)
    if next_layer is None:
        return (ChainFactor("L", f"A{l}", output.dL_da), local)
    upstream = next_layer.grad_b.chain[:-1]
    return upstream + (ChainFactor(f"Z{l + 1}", f"A{l}", next_layer.W), local)


THETA, GRADIENT = sp.Symbol("theta"), sp.Symbol("dJ_dtheta")


def _updates(eta: sp.Symbol, rule: UpdateRuleDecl) -> tuple[UpdateRule, ...]:
    """The update rule under each batching scheme, as the documents list them."""
    new = (THETA, rule.new(THETA, GRADIENT, eta))
    return tuple(UpdateRule(scheme.name, scheme.title, scheme.batch, new)
                 for scheme in map(BATCHING.__getitem__, BATCHING))


def derive(spec: NetSpec) -> Derivation:
    """Compose the derived local pieces into the whole network's backpropagation."""
    last = spec.layers[-1].activation
    output = local_output(spec.loss, last.name, last.params)
    X = sp.MatrixSymbol("A0", spec.input, M)
    Y = sp.MatrixSymbol("Y", spec.layers[-1].units, M)
    lambda1 = exact(spec.regularization.l1)
    lambda2 = exact(spec.regularization.l2)

    # backward order: the output layer first, each hidden layer reading the one above it
    inputs = [X] + [sp.MatrixSymbol(f"A{l}", spec.layers[l - 1].units, M)
                    for l in range(1, spec.depth)]
    layers: list[Layer] = []
    next_layer = None
    for l in range(spec.depth, 0, -1):
        next_layer = _layer(spec, l, inputs[l - 1], Y, next_layer, lambda1, lambda2, output)
        layers.append(next_layer)
    eta = sp.Symbol("eta", positive=True)
    rule = UPDATE_RULES[UPDATE_RULE]
    return Derivation(spec, X, Y, tuple(reversed(layers)), output, dense_partials(),
                      lambda1, lambda2, _updates(eta, rule), rule, eta)
