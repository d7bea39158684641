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

import functools
from dataclasses import dataclass, field
from typing import Iterable, Union

import sympy as sp

from .activations import exact
from .local import (A_SYM, INDEX, INDEX_ROLES, Z_SYM, DensePartials, LocalActivation,
                    LocalOutput, dense_partials, local_activation, local_output)
from .losses import Loss
from .netspec import NetSpec
from .optimizers import (EPOCH, ETA, GRADIENT, STEP, LEGACY_OPTIMIZERS, OPTIMIZERS, SCHEDULES, THETA, VARIANTS,
                         Optimizer, Schedule, variant_of)
from .roles import GRADIENT_OF, Role, SymbolRole

__all__ = [
    "MatrixDef", "Elementwise", "Columnwise", "Definition", "ChainFactor", "Gradient",
    "Layer", "UpdateRule", "OptimizerUse", "Penalty", "Objective", "Derivation", "derive", "M", "W_ENTRY",
]

M = sp.Symbol("m", integer=True, positive=True)  # examples in the batch
W_ENTRY = sp.Symbol("w", real=True)  # one weight, in the penalties' entry-wise forms


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
    layer: int
    role: Role  # the parameter's: WEIGHT or BIAS

    @property
    def shape(self) -> tuple[int, int]:
        return self.param.shape

    @property
    def roles(self) -> dict[sp.MatrixSymbol, SymbolRole]:
        """The parameter's role and the gradient's (WEIGHT_GRADIENT or BIAS_GRADIENT)."""
        return {self.param: SymbolRole(self.role, self.layer),
                self.target: SymbolRole(GRADIENT_OF[self.role], self.layer)}

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
    sign: sp.MatrixSymbol | None = None  # sign(W_l) entry by entry, when an L1 penalty needs it

    @property
    def roles(self) -> dict[sp.MatrixSymbol, SymbolRole]:
        """Every symbol of the layer with its role (its input A_prev belongs to the layer below)."""
        own = {self.W: Role.WEIGHT, self.b: Role.BIAS, self.Z: Role.PREACTIVATION,
               self.A: Role.ACTIVATION, self.delta: Role.ERROR, self.G: Role.LOCAL_DERIVATIVE,
               self.sign: Role.SIGN}
        roles = {symbol: SymbolRole(role, self.index) for symbol, role in own.items()
                 if symbol is not None}
        return roles | self.grad_W.roles | self.grad_b.roles


@dataclass(frozen=True)
class UpdateRule:
    """One of the documents' descent variants: which examples each step averages over, and
    the plain update theta := theta - eta dJ/dtheta."""

    optimizer: str  # a name in derive.optimizers.VARIANTS
    title: str
    batch: str  # what m is in this variant
    rule: tuple[sp.Expr, sp.Expr]  # (theta, theta - eta dJ/dtheta)


@dataclass(frozen=True)
class OptimizerUse:
    """The spec's update rule (a declaration of derive.optimizers) with its settings: the
    hyperparameters as given or PyTorch's defaults, the learning rate, the batch size and the
    schedule.  ``plain``: with these values the rule is theta - eta g, with no state."""

    declaration: Optimizer
    hyperparameters: dict
    learning_rate: float
    batch_size: int | str
    schedule: Schedule
    schedule_params: dict
    plain: bool

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def variant(self):
        """The documents' name for the batch size (batch / stochastic / mini-batch)."""
        return variant_of(self.batch_size)


@dataclass(frozen=True)
class Penalty:
    """One regularisation term of J: strength * coefficient * sum of entry(w) over the weights.

    Entry-wise, on the weights only (not the biases).  ``derivative`` is what the term adds
    to dJ/dW entry by entry: w for L2, sign(w) for L1.
    """

    name: str  # the spec's key under regularization: "l2", "l1"
    symbol: sp.Symbol  # lambda_2, lambda_1, as the documents write it
    strength: sp.Expr  # its value, exact
    coefficient: sp.Expr  # 1/2 for L2, so that its gradient is lambda_2 W
    entry: sp.Expr  # in W_ENTRY: w^2, |w|
    norm_latex: str  # one layer's sum of entry(w), with {W} where the weight matrix goes

    @property
    def derivative(self) -> sp.Expr:
        """d/dw of coefficient * entry(w): the gradient's term per unit strength, entry-wise."""
        return sp.diff(self.coefficient * self.entry, W_ENTRY)

    def term(self, W: sp.MatrixSymbol) -> sp.Expr:
        """The term for one weight matrix, as a sum over its entries."""
        r, c = sp.Dummy("r", integer=True), sp.Dummy("c", integer=True)
        rows, cols = W.shape
        return self.strength * self.coefficient * sp.Sum(
            self.entry.xreplace({W_ENTRY: W[r, c]}), (r, 0, rows - 1), (c, 0, cols - 1))

    def value(self, weights: Iterable[sp.Expr]) -> sp.Expr:
        """The term on explicit weight entries (numbers or symbols)."""
        return self.strength * self.coefficient * sp.Add(
            *[self.entry.xreplace({W_ENTRY: w}) for w in weights])


# (name, symbol, coefficient, entry, LaTeX of one layer's sum), L2 first as the documents write J
_PENALTIES = (
    ("l2", sp.Symbol("lambda_2"), sp.Rational(1, 2), W_ENTRY**2, r"\lVert {W} \rVert_F^2"),
    ("l1", sp.Symbol("lambda_1"), sp.S.One, sp.Abs(W_ENTRY), r"\lVert {W} \rVert_1"),
)


def penalties(spec: NetSpec) -> tuple[Penalty, ...]:
    """The spec's regularisation as penalties, those with a non-zero strength only."""
    found = []
    for name, symbol, coefficient, entry, norm in _PENALTIES:
        strength = exact(getattr(spec.regularization, name))
        if strength != 0:
            found.append(Penalty(name, symbol, strength, coefficient, entry, norm))
    return tuple(found)


_EXAMPLE = sp.Symbol("i", integer=True, positive=True)  # an example of the batch


@dataclass(frozen=True)
class Objective:
    """J, what training minimises and every gradient differentiates: the mean over the batch
    of the per-example loss L, plus the penalties on the weights.

    Built once, in ``derive``; the proof, the LaTeX and the worked example read it.
    """

    loss: Loss  # with the spec's parameters (``Loss.instantiate``)
    per_example: sp.Expr  # L = sum_k l(a_k, y_k), in index form over the output units
    penalties: tuple[Penalty, ...]
    weights: tuple[sp.MatrixSymbol, ...]  # W_1 .. W_L
    example_loss: sp.IndexedBase = sp.IndexedBase("L")  # L^{(i)}, the loss of example i

    @property
    def batch_sum(self) -> sp.Expr:
        """sum_{i=1}^{m} L^{(i)}."""
        return sp.Sum(self.example_loss[_EXAMPLE], (_EXAMPLE, 1, M))

    @property
    def mean(self) -> sp.Expr:
        """(1/m) sum_{i=1}^{m} L^{(i)}: the data term."""
        return self.batch_sum / M

    @property
    def form(self) -> sp.Expr:
        """J = mean + every penalty on every weight matrix, with the lambdas' values."""
        return self.mean + sp.Add(*[p.term(W) for p in self.penalties for W in self.weights])

    def penalty(self, weights: Iterable[sp.Expr]) -> sp.Expr:
        """Every penalty on explicit weight entries (all layers' entries together)."""
        weights = list(weights)
        return sp.Add(*[p.value(weights) for p in self.penalties])

    def value(self, outputs: sp.Matrix, targets: sp.Matrix, weights: Iterable[sp.Expr]) -> sp.Expr:
        """J on explicit matrices: outputs and targets (n_L x m, one column per example), the
        loss written out from its declaration, plus the penalties on ``weights``' entries."""
        rows, m = outputs.shape
        data = sp.Add(*[self.loss.unit(outputs[k, c], targets[k, c])
                        for k in range(rows) for c in range(m)]) / m
        return data + self.penalty(weights)


class DeclaredRules:
    """The update rules and schedules every generated folder carries (a mixin of both kinds
    of derivation: the dense recurrence's and the layer kinds' graph)."""

    @property
    def optimizers(self) -> tuple[Optimizer, ...]:
        """Every declared update rule: a generated folder can train with any of them."""
        return tuple(OPTIMIZERS[name] for name in OPTIMIZERS)

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        """Every declared learning-rate schedule."""
        return tuple(SCHEDULES[name] for name in SCHEDULES)

    @property
    def rule_symbols(self) -> tuple[sp.Symbol, ...]:
        """(theta, g, eta, t, e): what the rules and schedules are written in."""
        return THETA, GRADIENT, ETA, STEP, EPOCH

    @property
    def legacy_optimizers(self) -> dict:
        """Old ``optimizer:`` names -> the batch size they meant (None: the given one)."""
        return {name: legacy.batch_size for name, legacy in LEGACY_OPTIMIZERS.items()}


@dataclass(frozen=True)
class Derivation(DeclaredRules):
    """Everything the LaTeX and the code generator need, derived once from a NetSpec."""

    spec: NetSpec
    X: sp.MatrixSymbol  # A0, (n_0, m)
    Y: sp.MatrixSymbol  # (n_L, m)
    layers: tuple[Layer, ...]
    output: LocalOutput
    dense: DensePartials
    lambda1: sp.Expr
    lambda2: sp.Expr
    updates: tuple[UpdateRule, ...]  # the documents' three variants of the plain rule
    optimizer: OptimizerUse  # the update rule the spec trains with
    objective: Objective  # J, which every gradient differentiates
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
        """The entry-wise matrices a penalty's gradient needs (sign(W_l) for L1)."""
        penalty = _entrywise(self.objective.penalties)
        return tuple(Elementwise(layer.sign, penalty.derivative, ((W_ENTRY, layer.W),))
                     for layer in self.layers if layer.sign is not None)

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
    def widths(self) -> tuple[sp.Symbol, ...]:
        """n_0 .. n_L: the layers' widths as symbols, for shapes written in general."""
        return tuple(sp.Symbol(f"n{l}", integer=True, positive=True)
                     for l in range(self.spec.depth + 1))

    @functools.cached_property
    def roles(self) -> dict[sp.Basic, SymbolRole]:
        """Every symbol the Derivation uses, with its role and layer: the layers' matrices,
        the input (layer 0) and target, the widths, and the index-form symbols (no layer)."""
        roles: dict[sp.Basic, SymbolRole] = dict(INDEX_ROLES)
        roles |= {n: SymbolRole(Role.WIDTH, l) for l, n in enumerate(self.widths)}
        roles[self.X] = SymbolRole(Role.INPUT, 0)
        roles[self.Y] = SymbolRole(Role.TARGET, self.spec.depth)
        for layer in self.layers:
            roles |= layer.roles
        return roles

    @functools.cached_property
    def roles_by_name(self) -> dict[str, SymbolRole]:
        """``roles`` by the symbols' names: a name stands for its symbol in every shape (the
        batch's Z1 (n_1 x m) and one example's Z1 (n_1 x 1))."""
        return {_name_of(symbol): role for symbol, role in self.roles.items()}

    def role_of(self, symbol: sp.Basic | str) -> SymbolRole | None:
        """The role of a symbol (or of a name), whatever its shape; None if it has none."""
        return self.roles_by_name.get(symbol if isinstance(symbol, str) else _name_of(symbol))

def _name_of(symbol: sp.Basic) -> str:
    return str(symbol.label) if isinstance(symbol, sp.IndexedBase) else symbol.name


def _entrywise(found: tuple[Penalty, ...]) -> Penalty | None:
    """The penalty whose gradient is not linear in W (L1's sign(w)), if any."""
    return next((p for p in found if p.derivative != W_ENTRY), None)


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
           next_layer: Layer | None, found: tuple[Penalty, ...],
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
    sign = _sign_of(W) if _entrywise(found) is not None else None
    grad_W, grad_b = _gradients(l, chain, W, b, A_prev, delta, found, sign)
    return Layer(l, n, fan_in, act, W, b, Z, A, A_prev, delta, G, z_def, a_def, g_def,
                 delta_def, grad_W, grad_b, is_output, sign)


def _gradients(l: int, chain: tuple[ChainFactor, ...], W, b, A_prev, delta,
               found: tuple[Penalty, ...], sign) -> tuple[Gradient, Gradient]:
    """dJ/dW_l and dJ/db_l: the data terms, and each penalty's term on the weights (its
    strength times W for L2, times the entry-wise matrix ``sign`` for L1)."""
    n, fan_in = W.shape
    reg = tuple((p.name, p.strength * (W if p.derivative == W_ENTRY else sign)) for p in found)
    a_prev_1 = sp.MatrixSymbol(A_prev.name, A_prev.shape[0], 1)
    delta_1 = sp.MatrixSymbol(delta.name, n, 1)
    grad_W = Gradient(
        W, sp.MatrixSymbol(f"dW{l}", n, fan_in),
        chain + (ChainFactor(f"Z{l}", W.name, A_prev),),
        delta_1 * a_prev_1.T, (sp.S.One / M) * delta * A_prev.T, reg, l, Role.WEIGHT)
    grad_b = Gradient(
        b, sp.MatrixSymbol(f"db{l}", n, 1),
        chain + (ChainFactor(f"Z{l}", b.name, sp.S.One),),
        delta_1, (sp.S.One / M) * delta * _ones(M), (), l, Role.BIAS)
    return grad_W, grad_b


def _chain(l: int, act: LocalActivation, G, output: LocalOutput, next_layer: Layer | None):
    """dL/dZ_l as the documents write it: dL/dA_L dA_L/dZ_L dZ_L/dA_{L-1} ... dA_l/dZ_l."""
    local = ChainFactor(f"A{l}", f"Z{l}", G if G is not None else act.jacobian.general)
    if next_layer is None:
        return (ChainFactor("L", f"A{l}", output.dL_da), local)
    upstream = next_layer.grad_b.chain[:-1]
    return upstream + (ChainFactor(f"Z{l + 1}", f"A{l}", next_layer.W), local)


DJ_DTHETA = sp.Symbol("dJ_dtheta")  # the LaTeX prints it as dJ/dtheta


def _updates(eta: sp.Symbol) -> tuple[UpdateRule, ...]:
    """The plain update under each of the documents' variants, as the documents list them."""
    new = (THETA, THETA - eta * DJ_DTHETA)
    return tuple(UpdateRule(v.name, v.title, v.batch, new)
                 for v in map(VARIANTS.__getitem__, VARIANTS))


def optimizer_use(spec: NetSpec) -> OptimizerUse:
    training = spec.training
    declaration = OPTIMIZERS[training.optimizer]
    values = declaration.defaults | training.hyperparameter_dict
    plain_when = declaration.plain_when
    plain = plain_when is not None and all(values[name] == 0 for name in plain_when)
    schedule = SCHEDULES[training.schedule.name]
    params = {name: default for name, default, _ in schedule.parameters if default is not None}
    params |= dict(training.schedule.params)
    if "T_max" in {p[0] for p in schedule.parameters}:
        params.setdefault("T_max", training.epochs)
    rate = declaration.learning_rate if training.learning_rate is None else training.learning_rate
    return OptimizerUse(declaration, values, rate, training.batch_size, schedule, params, plain)


def derive(spec: NetSpec) -> Derivation:
    """Compose the derived local pieces into the whole network's backpropagation.

    A stack of plain dense layers (the documents' networks) is composed by the chain-rule
    recurrence here; any other stack of layer kinds by ``derive.graph`` from the kinds'
    declared forwards (a ``GraphDerivation``)."""
    if not spec.plain_dense:
        from .graph import derive_graph
        return derive_graph(spec)
    last = spec.layers[-1].activation
    output = local_output(spec.loss, last.name, last.params, spec.loss_params)
    X = sp.MatrixSymbol("A0", spec.input, M)
    Y = sp.MatrixSymbol("Y", spec.layers[-1].units, M)
    found = penalties(spec)

    # backward order: the output layer first, each hidden layer reading the one above it
    inputs = [X] + [sp.MatrixSymbol(f"A{l}", spec.layers[l - 1].units, M)
                    for l in range(1, spec.depth)]
    layers: list[Layer] = []
    next_layer = None
    for l in range(spec.depth, 0, -1):
        next_layer = _layer(spec, l, inputs[l - 1], Y, next_layer, found, output)
        layers.append(next_layer)
    layers.reverse()
    objective = Objective(output.loss, output.per_example, found,
                          tuple(layer.W for layer in layers))
    return Derivation(spec, X, Y, tuple(layers), output, dense_partials(),
                      exact(spec.regularization.l1), exact(spec.regularization.l2),
                      _updates(ETA), optimizer_use(spec), objective, ETA)
