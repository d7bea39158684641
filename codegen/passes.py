"""Named passes over the training step: ``Step -> Step``, each one rewrite, applied in order.

``STEP_PASSES`` is the pipeline ``codegen.lower`` runs; its result is the one training step
every update rule takes: it writes g = rate dJ/dtheta into the caller's gradient arrays
(``grads[param]``), and with the plain rule (theta <- theta - eta g, ``rate`` = eta) it also
subtracts each g from its parameter at once; a rule with state (``rate`` = 1) is applied to
every parameter afterwards (the folder's ``_rules``).

1. ``schedule_updates``: each parameter is updated in place as soon as nothing later in the
   step reads its old value (after the recurrence product that reads W_l), so the updates
   need no copy of the parameters;
2. ``fold_rate``: the factor rate/m is folded into the output error, so every gradient comes
   out scaled; regularisation is a decay of W for the plain rule and is added to dJ/dW for a
   rule with state; each update becomes the subtraction of the plain rule;
3. ``bias_sums_as_products``: the sums over the examples are products with a ones vector
   (one GEMV, much faster than ``sum(axis=0)`` on row-major data);
4. ``rank_one_updates``: with one example and the plain rule, dW = d aᵀ and W -= dW is one
   BLAS ``ger`` on W (W's gradient is then not written).
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from .program import (Buffer, ColumnSums, Compute, OneExample, Product, RankOne, Scale,
                      Step, Subtract, Update, WhenPlain, base_name, writes)

__all__ = ["schedule_updates", "fold_rate", "bias_sums_as_products", "rank_one_updates",
           "STEP_PASSES"]

# the step's arguments and constants, as printed: the step is step(X, Y, rate)
RATE, BATCH = "rate", "m"


def _map_sections(step: Step, rewrite, name: str) -> Step:
    """Apply ``rewrite(ops) -> ops`` to each section's statements (the step itself when
    nothing changes, so that ``Step.passes`` lists only the passes that rewrote it)."""
    sections = tuple((title, tuple(rewrite(ops))) for title, ops in step.sections)
    return step if sections == step.sections else step.with_sections(sections, name)


# ----------------------------------------------------------------------------- 1

def schedule_updates(step: Step) -> Step:
    """Move every ``Update`` to just after the last statement that reads the parameter or
    writes its gradient; sections left empty are dropped."""
    flat = [(title, op) for title, ops in step.sections for op in ops]
    updates = [(title, op) for title, op in flat if isinstance(op, Update)]
    rest = [(title, op) for title, op in flat if not isinstance(op, Update)]
    for _, update in updates:
        last = max((i for i, (_, op) in enumerate(rest)
                    if update.param in op.reads or update.grad in writes(op)), default=-1)
        title = rest[last][0] if last >= 0 else step.sections[-1][0]
        # after any earlier-placed updates that follow the same statement
        at = last + 1
        while at < len(rest) and isinstance(rest[at][1], Update):
            at += 1
        rest.insert(at, (title, update))
    sections: list[tuple[str, list]] = []
    for title, op in rest:
        if not sections or sections[-1][0] != title:
            sections.append((title, []))
        sections[-1][1].append(op)
    return step.with_sections(((t, tuple(ops)) for t, ops in sections), "schedule_updates")


# ----------------------------------------------------------------------------- 2

def fold_rate(step: Step) -> Step:
    """Scale the output error by rate/m once; each ``Update`` -> its gradient written whole
    into the caller's array (with rate times the regularisation's gradient), then the plain
    rule's ``Subtract``."""
    g, w, rate = (sp.Symbol(name, real=True) for name in ("g", "w", RATE))
    terms = {"l2": lambda c: c * w, "l1": lambda c: c * sp.sign(w)}
    error = step.output_error
    grads = {}

    def rewrite(ops):
        for op in ops:
            if isinstance(op, Compute) and op.out == error:
                yield op
                yield Scale(error, f"{RATE} / {BATCH}", f"scaled: {error} = (rate / m) dl/dZ")
            elif isinstance(op, Update):
                grads[op.grad] = op.param
                extra = sum((terms[kind](sp.Symbol(name)) for kind, name in op.regularization),
                            sp.S.Zero)
                if extra != 0:  # plain: W decays in place; else g += R'(W), for the rule
                    constants = tuple((sp.Symbol(name), name) for _, name in op.regularization)
                    names = ((w, op.param), (rate, RATE)) + constants
                    strength = dict(op.regularization)
                    decay = (Scale(op.param, f"1.0 - {RATE} * {strength['l2']}", "l2: W - eta L2 W")
                             if set(strength) == {"l2"} else
                             Compute(op.param, w - rate * extra, names))
                    yield WhenPlain(then=(decay,),
                                    otherwise=(Compute(op.grad, g + rate * extra,
                                                       ((g, op.grad),) + names),))
                yield Subtract(op.param, op.grad)
            else:
                yield op

    folded = _map_sections(step, rewrite, "fold_rate")
    buffers = tuple(replace(b, given=grads[b.name]) if b.name in grads else b
                    for b in folded.buffers)
    return replace(folded, buffers=buffers)


# ----------------------------------------------------------------------------- 3

def bias_sums_as_products(step: Step) -> Step:
    """``db = 1ᵀ D`` as the product ``ones @ D``."""
    if not any(isinstance(op, ColumnSums) for op in step.statements):
        return step

    def rewrite(ops):
        for op in ops:
            yield Product(op.out, "ones", op.src, "column sums as a product") \
                if isinstance(op, ColumnSums) else op

    summed = _map_sections(step, rewrite, "bias_sums_as_products")
    return replace(summed, buffers=summed.buffers + (Buffer("ones", ("m",), fill=1.0),))


# ----------------------------------------------------------------------------- 4

def rank_one_updates(step: Step) -> Step:
    """``dWᵀ = Aᵀ D; W -= dW`` -> one ``ger`` on W when the step has one example (and the
    rule is plain), after W's decay where it is regularised."""
    products = {base_name(op.out): op for op in step.statements
                if isinstance(op, Product) and not op.blas}
    consumed = {op.delta for op in step.statements
                if isinstance(op, Subtract) and op.delta in products}
    terms = {op.otherwise[0].out: op for op in step.statements  # the regularisation
             if isinstance(op, WhenPlain) and op.otherwise[0].out in consumed}

    def rewrite(ops):
        for op in ops:
            if isinstance(op, Product) and base_name(op.out) in consumed or op in terms.values():
                continue  # moved into the OneExample below
            if isinstance(op, Subtract) and op.delta in products:
                product = products[op.delta]
                a, d = base_name(product.a), base_name(product.b)
                then, otherwise = (RankOne(op.param, f"{d}[0]", f"{a}[0]"),), (product, op)
                if op.delta in terms:  # plain: W decays first (ger or not); else g += R'(W)
                    term = terms[op.delta]
                    then, otherwise = term.then + then, (product, term, op)
                yield OneExample(then=then, otherwise=otherwise)
            else:
                yield op

    return _map_sections(step, rewrite, "rank_one_updates")


STEP_PASSES = (schedule_updates, fold_rate, bias_sums_as_products, rank_one_updates)
