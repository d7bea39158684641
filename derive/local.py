"""Local derivatives, derived by SymPy from the declarations and cached.

* ``local_activation``: g'(z) by ``sympy.diff``, simplified (cheapest of expand / factor /
  cancel, never cosh forms), rewritten in the named primitives, and, where g can be inverted
  piece by piece, also in the output a = g(z) (sigma' = a(1 - a), tanh' = 1 - a^2).
  Softmax instead gets its Jacobian by the quotient rule, case i = j and case i != j.
* ``local_output``: dL/da for a loss, the output error delta_L = dL/dz_L for an output
  activation (through the softmax Jacobian in index form, then sum_i y_i = 1 where the
  targets are one-hot), and the per-example loss written in the logits when that removes
  every logarithm of an activation (the numerically stable form the code uses).
* ``dense_partials``: dz_i/dW_jk = delta_ij a_k, dz_i/da_k = W_ik, dz_i/db_j = delta_ij,
  in index form with Sum and KroneckerDelta.

Every result comes with the steps that produced it, for the LaTeX.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

import sympy as sp
from sympy.concrete.delta import deltasummation

from .activations import ACTIVATIONS, Activation
from .losses import LOSSES, Loss
from .primitives import from_primitives, to_primitives
from .roles import Role, SymbolRole

__all__ = [
    "Step", "StepKind", "INDEX_ROLES", "LocalActivation", "SoftmaxJacobian", "LocalOutput",
    "DensePartials",
    "local_activation", "local_output", "dense_partials", "INDEX", "Z_SYM", "A_SYM", "Y_SYM",
    "simplest", "positive_lead",
    "resolve_deltas",
]


class StepKind(Enum):
    """What a derivation step does; the LaTeX picks its sentence by kind."""

    DEFINITION = "definition"
    DIFFERENTIATED = "differentiated"  # sympy.diff of the declaration
    ALMOST_EVERYWHERE = "almost everywhere"  # DiracDelta terms (of sign, steps) dropped
    SIMPLIFIED = "simplified"
    IN_OUTPUT = "in the output"  # g' rewritten in a = g(z)
    QUOTIENT_RULE = "quotient rule"
    CASE_SAME = "case i = j"
    CASE_SAME_IN_OUTPUTS = "case i = j, in the outputs"
    CASE_OTHER = "case i != j"
    CASE_OTHER_IN_OUTPUTS = "case i != j, in the outputs"
    DENSE_WEIGHT = "dz/dW"  # the dense layer's partials in index form
    DENSE_INPUT = "dz/dx"
    DENSE_BIAS = "dz/db"
    CHAIN_RULE = "chain rule, element by element"
    SUBSTITUTED = "substituted"  # dL/da and g' put into the chain rule
    CHAIN_RULE_JACOBIAN = "chain rule through the Jacobian"
    KRONECKER_PICK = "the Kronecker delta picks i = j"
    ONE_HOT = "one-hot targets"  # sum_i y_i = 1


@dataclass(frozen=True)
class Step:
    """One line of a derivation, ``lhs = rhs``: what kind of step it is, and a short note
    saying what was done (for display)."""

    lhs: sp.Basic
    rhs: sp.Basic
    kind: StepKind
    note: str = ""


class _Index:
    """The index-form symbols shared by every derivation (i, j, k over 1..n)."""

    i, j, k = sp.symbols("i j k", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, positive=True)
    z = sp.IndexedBase("z")
    a = sp.IndexedBase("a")
    y = sp.IndexedBase("y")
    W = sp.IndexedBase("W")
    b = sp.IndexedBase("b")
    x = sp.IndexedBase("x")  # a^{[l-1]}, the layer's input
    L = sp.Symbol("L")


INDEX = _Index
Z_SYM = sp.Symbol("z", real=True)
A_SYM = sp.Symbol("a", real=True)
Y_SYM = sp.Symbol("y", real=True)  # a target entry: real, so |a - y| differentiates to sign(a - y)

# the index-form symbols stand for any layer's quantities (x is the layer's input a^{[l-1]})
INDEX_ROLES = {
    INDEX.W: SymbolRole(Role.WEIGHT), INDEX.b: SymbolRole(Role.BIAS),
    INDEX.z: SymbolRole(Role.PREACTIVATION), INDEX.a: SymbolRole(Role.ACTIVATION),
    INDEX.x: SymbolRole(Role.ACTIVATION), INDEX.y: SymbolRole(Role.TARGET),
    INDEX.L: SymbolRole(Role.LOSS), INDEX.n: SymbolRole(Role.WIDTH),
}


@dataclass(frozen=True)
class SoftmaxJacobian:
    """da_i/dz_j of softmax by the quotient rule, in both cases, and in the outputs a."""

    numerator: sp.Expr  # e^{z_i}
    denominator: sp.Expr  # sum_k e^{z_k}
    d_numerator: sp.Expr  # d e^{z_i} / dz_j = e^{z_i} delta_ij
    d_denominator: sp.Expr  # d sum / dz_j = e^{z_j}
    same: sp.Expr  # i = j, in a: a_i (1 - a_i)
    other: sp.Expr  # i != j, in a: -a_i a_j
    general: sp.Expr  # a_i (delta_ij - a_j)
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class LocalActivation:
    """An activation with its derived local derivative.

    For element-wise g: ``expr`` is g(z) as declared, ``display`` the same in named
    primitives, ``derivative`` g'(z) simplified, ``derivative_in_output`` g' written in
    a = g(z) or None where g cannot be inverted (softplus, swish, GELU).
    For softmax: ``jacobian`` instead; ``expr`` is a_i in index form.
    """

    name: str
    latex: str
    params: tuple[tuple[str, float], ...]
    expr: sp.Expr
    display: sp.Expr
    derivative: sp.Expr | None
    derivative_in_output: sp.Expr | None
    steps: tuple[Step, ...]
    jacobian: SoftmaxJacobian | None = None
    declaration: Activation | None = None

    @property
    def vector(self) -> bool:
        return self.jacobian is not None

    @property
    def backward(self) -> sp.Expr:
        """The form the code uses: in a when available (reuses the cached output), else in z."""
        return self.derivative_in_output if self.derivative_in_output is not None else self.derivative

    @property
    def backward_uses_output(self) -> bool:
        return self.derivative_in_output is not None


# --------------------------------------------------------------------------- simplification

def positive_lead(expr: sp.Expr) -> sp.Expr:
    """-a (a - 1) -> a (1 - a): flip the sign into an Add factor, as the documents write."""
    if isinstance(expr, sp.Mul) and expr.could_extract_minus_sign():
        factors = list(expr.args)
        for idx, f in enumerate(factors):
            if isinstance(f, sp.Add):
                rest = -sp.Mul(*(factors[:idx] + factors[idx + 1:]))
                return sp.Mul(rest, sp.expand(-f), evaluate=False) if rest != 1 else sp.expand(-f)
    return expr


def simplest(expr: sp.Expr) -> sp.Expr:
    """The cheapest of expand / factor / cancel by ``count_ops``, never a cosh/sinh form
    that ``expr`` did not have; never fails: at worst ``expr`` itself, unsimplified.

    ``simplify`` is avoided on purpose: it turns sigma' into 1/(4 cosh^2(z/2)).  A form that
    has cosh/sinh of its own (log cosh(a - y)'s derivative, sinh/cosh) keeps them, and is
    also tried through trigsimp (sinh/cosh -> tanh).
    """
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(simplest(e), c) for e, c in expr.args])
    candidates = [expr]
    own = expr.has(sp.cosh, sp.sinh)
    transforms = [sp.expand, sp.factor, sp.cancel]
    if own:
        transforms.append(sp.trigsimp)
    for transform in transforms:
        try:
            candidates.append(transform(expr))
        except Exception:  # noqa: BLE001 - a transform that fails is a candidate less
            pass
    plain = [c for c in candidates if not c.has(sp.cosh, sp.sinh)]
    best = min(plain or candidates, key=lambda c: (sp.count_ops(c), len(str(c))))
    try:
        return positive_lead(best)
    except Exception:  # noqa: BLE001 - the unsimplified form is always right
        return best


# --------------------------------------------------------------------------- activations

def _transcendental_atoms(expr: sp.Expr, z: sp.Symbol) -> set[sp.Expr]:
    return {f for f in expr.atoms(sp.Function) if f.has(z)}


def _piece_in_output(g: sp.Expr, d: sp.Expr, z: sp.Symbol, a: sp.Symbol) -> sp.Expr | None:
    """d (= g') written in a = g(z) for one smooth piece, or None if g is not invertible here."""
    if not d.has(z):
        return d
    atoms = _transcendental_atoms(g, z)
    if len(atoms) > 1:
        return None
    u = atoms.pop() if atoms else z
    U = sp.Dummy("U")
    g_u, d_u = g.subs(u, U), d.subs(u, U)
    if g_u.has(z) or d_u.has(z):
        return None
    solutions = sp.solve(sp.Eq(a, g_u), U)
    if len(solutions) != 1:
        return None
    return simplest(d_u.subs(U, solutions[0]))


def _in_output(g: sp.Expr, d: sp.Expr, z: sp.Symbol, a: sp.Symbol) -> sp.Expr | None:
    """g' in terms of a, or None where that cannot be done.

    The rewrite is optional (the code then reads g' in z), so any failure of it gives None:
    ``sympy.solve`` raises NotImplementedError for some forms (``Max(-1, Min(1, z))``), and a
    declaration that differentiates must always derive.
    """
    try:
        return _rewrite_in_output(g, d, z, a)
    except Exception:  # noqa: BLE001 - optional rewrite, see above
        return None


def _rewrite_in_output(g: sp.Expr, d: sp.Expr, z: sp.Symbol, a: sp.Symbol) -> sp.Expr | None:
    """g' in terms of a, piece by piece; conditions on z move to a where g keeps the sign."""
    if isinstance(g, sp.Piecewise):
        if not isinstance(d, sp.Piecewise) or len(d.args) != len(g.args):
            return None
        pieces = []
        for (g_piece, cond), (d_piece, d_cond) in zip(g.args, d.args):
            if cond != d_cond:
                return None
            value = _piece_in_output(g_piece, d_piece, z, a)
            if value is None:
                return None
            pieces.append((value, cond.subs(z, a)))
        candidate = sp.Piecewise(*pieces)
    else:
        candidate = _piece_in_output(g, d, z, a)
    if candidate is None or not _agrees(candidate.subs(a, g), d, z):
        return None
    return candidate


_SAMPLE_POINTS = tuple(sp.Rational(p, q) for p, q in
                       [(-7, 2), (-2, 1), (-1, 3), (1, 5), (3, 4), (2, 1), (9, 2)])


def _agrees(lhs: sp.Expr, rhs: sp.Expr, z: sp.Symbol) -> bool:
    """lhs == rhs at sample points on both sides of 0 (to 40 digits); used to accept a rewrite."""
    for point in _SAMPLE_POINTS:
        diff = (from_primitives(lhs) - from_primitives(rhs)).subs(z, point)
        if abs(sp.N(diff, 50)) > sp.Float("1e-40"):
            return False
    return True


def _almost_everywhere(derivative: sp.Expr) -> sp.Expr:
    """The derivative away from the jumps of sign or a step: SymPy writes d sign(z)/dz as
    2 DiracDelta(z), which is 0 at every z but the jump (where, as ReLU'(0), a convention
    decides)."""
    return derivative.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def _elementwise(act: Activation, params: tuple[tuple[str, float], ...]) -> LocalActivation:
    z, a = Z_SYM, A_SYM
    g = act.instantiate(z, dict(params))
    raw = sp.diff(g, z)
    smooth = _almost_everywhere(raw)
    # named primitives first, so that no bare exp(z) survives to overflow in the code
    derivative = simplest(to_primitives(smooth))
    # named primitives before rewriting in a: sigma(z) (1 - sigma(z)) -> a (1 - a)
    display = to_primitives(g)
    in_output = _in_output(display, derivative, z, a)
    g_name = sp.Function("g")
    g_prime = sp.Derivative(g_name(z), z)
    steps = [
        Step(g_name(z), display, StepKind.DEFINITION, "definition"),
        Step(g_prime, raw, StepKind.DIFFERENTIATED, "differentiated by SymPy"),
    ]
    if smooth != raw:
        steps.append(Step(g_prime, smooth, StepKind.ALMOST_EVERYWHERE,
                          "the Dirac deltas vanish away from the jumps"))
    if derivative != raw:
        steps.append(Step(g_prime, derivative, StepKind.SIMPLIFIED, "simplified"))
    if in_output is not None and in_output != derivative:
        steps.append(Step(g_prime, in_output, StepKind.IN_OUTPUT,
                          "in terms of the output a = g(z)"))
    return LocalActivation(act.name, act.latex, params, g, display, derivative, in_output,
                           tuple(steps), declaration=act)


def resolve_deltas(expr: sp.Expr) -> sp.Expr:
    """Apply ``deltasummation`` limit by limit and drop its 1 <= j <= n range guards."""

    def visit(node):
        if isinstance(node, sp.Sum) and node.function.has(sp.KroneckerDelta):
            body = sp.expand(node.function)
            for limit in node.limits:
                body = sp.Add(*[deltasummation(term, limit) for term in sp.Add.make_args(body)])
            return body
        return node

    expr = sp.bottom_up(expr, visit)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise) and len(e.args) == 2
                        and e.args[1].expr == 0, lambda e: e.args[0].expr)


def _softmax(act: Activation) -> LocalActivation:
    I = INDEX
    i, j, k, n, z, a = I.i, I.j, I.k, I.n, I.z, I.a
    expr = act.expr(z, i, k, n)
    numerator, denominator = sp.fraction(expr)
    if denominator == 1:  # expr is N * D**-1
        numerator, denominator = expr.as_numer_denom()
    d_num = sp.diff(numerator, z[j])
    d_den = resolve_deltas(sp.diff(denominator, z[j]))
    quotient = (d_num * denominator - numerator * d_den) / denominator**2
    S = sp.Dummy("S", positive=True)

    def in_outputs(e):  # e^{z_i} = a_i S, e^{z_j} = a_j S, S = sum_k e^{z_k}
        e = e.subs(denominator, S).subs({sp.exp(z[i]): a[i] * S, sp.exp(z[j]): a[j] * S})
        return simplest(sp.cancel(e))

    same = in_outputs(quotient.subs(sp.KroneckerDelta(i, j), 1).subs(j, i))
    other = in_outputs(quotient.subs(sp.KroneckerDelta(i, j), 0))
    general = in_outputs(quotient)
    da = sp.Derivative(a[i], z[j])
    steps = (
        Step(a[i], expr, StepKind.DEFINITION, "definition"),
        Step(da, quotient, StepKind.QUOTIENT_RULE, "quotient rule"),
        Step(sp.Derivative(a[i], z[i]), quotient.subs(sp.KroneckerDelta(i, j), 1).subs(j, i),
             StepKind.CASE_SAME, "case i = j"),
        Step(sp.Derivative(a[i], z[i]), same, StepKind.CASE_SAME_IN_OUTPUTS,
             "case i = j, in the outputs"),
        Step(da, quotient.subs(sp.KroneckerDelta(i, j), 0), StepKind.CASE_OTHER,
             "case i \\ne j"),
        Step(da, other, StepKind.CASE_OTHER_IN_OUTPUTS, "case i \\ne j, in the outputs"),
    )
    jac = SoftmaxJacobian(numerator, denominator, d_num, d_den, same, other, general, steps)
    return LocalActivation(act.name, act.latex, (), expr, expr, None, None, steps, jac,
                           declaration=act)


@functools.lru_cache(maxsize=None)
def local_activation(name: str, params: tuple[tuple[str, float], ...] = ()) -> LocalActivation:
    """The derived local pieces of one activation (cached per name and parameters; the cache
    is emptied whenever the activations' registry changes)."""
    act = ACTIVATIONS[name]
    return _softmax(act) if act.vector else _elementwise(act, params)


ACTIVATIONS.watch(local_activation.cache_clear)


# --------------------------------------------------------------------------- dense layer

@dataclass(frozen=True)
class DensePartials:
    """The dense layer z_i = sum_k W_ik x_k + b_i differentiated in index form."""

    z: sp.Expr
    dz_dW: Step
    dz_dx: Step
    dz_db: Step


@functools.lru_cache(maxsize=None)
def dense_partials() -> DensePartials:
    I = INDEX
    i, j, k, n = I.i, I.j, I.k, I.n
    q = sp.Symbol("q", integer=True, positive=True)
    z_i = sp.Sum(I.W[i, q] * I.x[q], (q, 1, n)) + I.b[i]
    dW = resolve_deltas(sp.diff(z_i, I.W[j, k]))
    dx = resolve_deltas(sp.diff(z_i, I.x[k]))
    db = resolve_deltas(sp.diff(z_i, I.b[j]))
    return DensePartials(
        z_i,
        Step(sp.Derivative(I.z[i], I.W[j, k]), dW, StepKind.DENSE_WEIGHT,
             "only the term q = k depends on W_jk, and only for i = j"),
        Step(sp.Derivative(I.z[i], I.x[k]), dx, StepKind.DENSE_INPUT,
             "only the term q = k depends on x_k"),
        Step(sp.Derivative(I.z[i], I.b[j]), db, StepKind.DENSE_BIAS,
             "only b_i depends on b_j, for i = j"),
    )


# --------------------------------------------------------------------------- output error

@dataclass(frozen=True)
class LocalOutput:
    """Loss and output activation together: dL/da, delta_L and the per-example loss.

    Expressions are in index form over the output units: ``a[j]``, ``y[j]``, ``z[j]`` with
    ``Sum`` over i or k from 1 to n.
    """

    loss: Loss  # instantiated with the spec's parameters: ``loss.unit(a, y)``
    activation: LocalActivation
    per_example: sp.Expr  # sum_k l(a_k, y_k)
    dL_da: sp.Expr  # dL/da_j, in a[j], y[j]
    delta: sp.Expr  # dL/dz_j, simplified, in a[j], y[j], z[j]
    delta_steps: tuple[Step, ...]
    uses_sum_y: bool  # the simplification used sum_i y_i = 1
    per_example_logits: sp.Expr | None  # the loss written in z, when that is log-free


def _loss_sum(loss: Loss, value) -> sp.Expr:
    I = INDEX
    return sp.Sum(loss.unit(value(I.k), I.y[I.k]), (I.k, 1, I.n))


def _apply_sum_y(expr: sp.Expr) -> tuple[sp.Expr, bool]:
    I = INDEX
    sums = [s for s in expr.atoms(sp.Sum) if s.function == I.y[s.limits[0][0]]]
    if not sums:
        return expr, False
    return expr.subs({s: 1 for s in sums}), True


def _split_sums(expr: sp.Expr) -> sp.Expr:
    """Sum(f + g) -> Sum(f) + Sum(g); constants (free of the index) pulled out."""

    def visit(node):
        if isinstance(node, sp.Sum):
            (idx, lo, hi), = node.limits
            terms = []
            for term in sp.Add.make_args(sp.expand(node.function)):
                const, dep = term.as_independent(idx, as_Add=False)
                terms.append(const * sp.Sum(dep, (idx, lo, hi)) if dep != 1 else const * (hi - lo + 1))
            return sp.Add(*terms)
        return node

    return sp.bottom_up(expr, visit)


def _dL_da(loss: Loss) -> sp.Expr:
    """dl/da of one unit's loss, in the real symbols a and y (so Abs and sign stay real)."""
    return simplest(sp.diff(loss.unit(A_SYM, Y_SYM), A_SYM))


def _output_elementwise(loss: Loss, act: LocalActivation):
    I = INDEX
    j = I.j
    a_j, y_j, z_j = I.a[j], I.y[j], I.z[j]
    dL_da = _dL_da(loss).subs({A_SYM: a_j, Y_SYM: y_j})
    g_prime = act.backward.subs({A_SYM: a_j, Z_SYM: z_j})
    raw = dL_da * g_prime
    delta = simplest(raw)
    dL_dz = sp.Derivative(I.L, z_j)
    steps = (
        Step(dL_dz, sp.Mul(sp.Derivative(I.L, a_j), sp.Derivative(a_j, z_j), evaluate=False),
             StepKind.CHAIN_RULE, "chain rule, element by element"),
        Step(dL_dz, raw, StepKind.SUBSTITUTED, "substituted dL/da and g'"),
        Step(dL_dz, delta, StepKind.SIMPLIFIED, "simplified"),
    )
    return dL_da, delta, steps, False


def _output_softmax(loss: Loss, act: LocalActivation):
    I = INDEX
    i, j, a, y = I.i, I.j, I.a, I.y
    dL_da_expr = _dL_da(loss)
    dL_da = lambda idx: dL_da_expr.subs({A_SYM: a[idx], Y_SYM: y[idx]})
    chain = sp.Sum(dL_da(i) * act.jacobian.general.subs({i: i}), (i, 1, I.n))
    # the delta is picked with dL/da_i held as one factor, then put in: a Sum folds a Piecewise
    # dL/da (Huber's) over the Jacobian's terms, out of deltasummation's reach
    held = sp.Function("dL_da")
    picked = _split_sums(resolve_deltas(sp.Sum(sp.expand(held(i) * act.jacobian.general),
                                               *chain.limits)))
    expanded = sp.expand(picked.replace(held, dL_da))
    combined = _split_sums(expanded)
    combined = sp.bottom_up(combined, lambda e: sp.Sum(simplest(e.function), *e.limits)
                            if isinstance(e, sp.Sum) else e)
    combined = _split_sums(combined)
    dL_dz = sp.Derivative(I.L, I.z[j])
    steps = [
        Step(dL_dz, chain, StepKind.CHAIN_RULE_JACOBIAN, "chain rule through the softmax Jacobian"),
        Step(dL_dz, combined, StepKind.KRONECKER_PICK, "the Kronecker delta picks i = j"),
    ]
    delta, used = combined, False
    if loss.one_hot:
        delta, used = _apply_sum_y(combined)
        if used:
            delta = simplest(delta)
            steps.append(Step(dL_dz, delta, StepKind.ONE_HOT, "one-hot targets: sum_i y_i = 1"))
    return dL_da(j), delta, tuple(steps), used


def _per_example_in_logits(loss: Loss, act: LocalActivation) -> sp.Expr | None:
    """The per-example loss in the logits z, kept only when no log of an activation remains."""
    I = INDEX
    if act.vector:
        value = lambda idx: act.declaration.expr(I.z, idx, I.i, I.n)
    else:
        value = lambda idx: act.expr.subs(Z_SYM, I.z[idx])
    per_example = _loss_sum(loss, value)
    if not per_example.has(sp.log):
        return None  # no logarithm: the plain form in a is already stable
    summand = sp.expand_log(per_example.function, force=True)
    if act.vector:
        form = _split_sums(sp.Sum(summand, *per_example.limits))
        if loss.one_hot:
            form, _ = _apply_sum_y(form)
    else:
        unit = to_primitives(sp.simplify(loss.unit(act.expr, Y_SYM)))
        form = sp.Sum(unit.subs({Z_SYM: I.z[I.k], Y_SYM: I.y[I.k]}), *per_example.limits)
    remaining = [f for f in form.atoms(sp.log)
                 if not (isinstance(f.args[0], sp.Sum) and isinstance(f.args[0].function, sp.exp))]
    return None if remaining else form


@functools.lru_cache(maxsize=None)
def local_output(loss_name: str, act_name: str,
                 params: tuple[tuple[str, float], ...] = (),
                 loss_params: tuple[tuple[str, float], ...] = ()) -> LocalOutput:
    """The derived output pieces for a loss on an output activation, each with its parameters
    (cached; emptied whenever the activations' or the losses' registry changes)."""
    loss = LOSSES[loss_name].instantiate(dict(loss_params))
    act = local_activation(act_name, params)
    build = _output_softmax if act.vector else _output_elementwise
    dL_da, delta, steps, used = build(loss, act)
    per_example = _loss_sum(loss, lambda idx: INDEX.a[idx])
    logits = _per_example_in_logits(loss, act)
    return LocalOutput(loss, act, per_example, dL_da, delta, steps, used, logits)


ACTIVATIONS.watch(local_output.cache_clear)
LOSSES.watch(local_output.cache_clear)
