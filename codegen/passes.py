"""Named passes over the training step: ``Step -> Step``, each one rewrite, applied in order.

``STEP_PASSES`` is the pipeline ``codegen.lower`` runs:

1. ``schedule_updates``: each parameter is updated in place as soon as nothing later in the
   step reads its old value (after the recurrence product that reads W_l), so the updates
   need no copy of the parameters;
2. ``fold_learning_rate``: the factor eta/m of the plain rule (theta - eta g) is folded into
   the output error, so every gradient comes out scaled and each update is one subtraction;
   regularisation becomes a decay of W (l2) and a scaled sign (l1);
3. ``bias_sums_as_products``: the sums over the examples are products with a ones vector
   (one GEMV, much faster than ``sum(axis=0)`` on row-major data);
4. ``rank_one_updates``: with one example, dW = d aᵀ and W -= dW is one BLAS ``ger`` on W.

``GRADIENT_PASSES`` makes the gradient step of the rules with state: ``gradients_only``
writes each dJ/dtheta whole (with its 1/m and regularisation) and updates nothing, then
``bias_sums_as_products``.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from .program import (Buffer, ColumnSums, Compute, OneExample, Product, RankOne, Scale, SignOf,
                      Step, Subtract, Update, base_name, writes)

__all__ = ["schedule_updates", "fold_learning_rate", "gradients_only", "bias_sums_as_products",
           "rank_one_updates", "STEP_PASSES", "GRADIENT_PASSES"]

# the step's arguments and constants, as printed: the step is step(X, Y, learning_rate)
LEARNING_RATE, BATCH = "learning_rate", "m"


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

def fold_learning_rate(step: Step) -> Step:
    """For plain updates: scale the output error by eta/m once; every update subtracts."""
    error = step.output_error
    buffers = list(step.buffers)

    def rewrite(ops):
        for op in ops:
            if isinstance(op, Compute) and op.out == error:
                yield op
                yield Scale(error, f"{LEARNING_RATE} / {BATCH}", f"scaled: {error} = (learning_rate / m) dl/dZ")
            elif isinstance(op, Update):
                sign = f"S{op.param[1:]}"
                strength = dict(op.regularization)  # kind -> its constant's name
                if "l1" in strength:
                    buffers.append(Buffer(sign, like=op.param))
                    yield SignOf(sign, op.param)
                if "l2" in strength:
                    yield Scale(op.param, f"1.0 - {LEARNING_RATE} * {strength['l2']}",
                                "l2: W - eta L2 W")
                if "l1" in strength:
                    yield Scale(sign, f"{LEARNING_RATE} * {strength['l1']}")
                    yield Subtract(op.param, sign)
                yield Subtract(op.param, op.grad)
            else:
                yield op

    folded = _map_sections(step, rewrite, "fold_learning_rate")
    return replace(folded, buffers=tuple(buffers))


def gradients_only(step: Step) -> Step:
    """Every ``Update`` -> its gradient written whole, g = (1/m) data + regularisation, into
    the caller's array (``grads[param]``); no parameter changes.  An update rule with state
    then moves every parameter at once (the folder's ``_rules``)."""
    g, w = sp.Symbol("g", real=True), sp.Symbol("w", real=True)
    terms = {"l2": lambda c: c * w, "l1": lambda c: c * sp.sign(w)}
    error = step.output_error
    grads = {}

    def rewrite(ops):
        for op in ops:
            if isinstance(op, Compute) and op.out == error:
                yield op
                yield Scale(error, f"1.0 / {BATCH}", f"scaled: {error} = (1 / m) dl/dZ")
            elif isinstance(op, Update):
                grads[op.grad] = op.param
                extra = sum((terms[kind](sp.Symbol(name)) for kind, name in op.regularization),
                            sp.S.Zero)
                if extra != 0:
                    constants = tuple((sp.Symbol(name), name) for _, name in op.regularization)
                    yield Compute(op.grad, g + extra, ((g, op.grad), (w, op.param)) + constants)
            else:
                yield op

    only = _map_sections(step, rewrite, "gradients_only")
    buffers = tuple(replace(b, given=grads[b.name]) if b.name in grads else b
                    for b in only.buffers)
    sections = tuple(("regularisation: dJ/dW += dR/dW" if title.startswith("updates") else title,
                      ops) for title, ops in only.sections if ops)
    return replace(only, sections=sections, buffers=buffers)


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
    """``dWᵀ = Aᵀ D; W -= dW`` -> one ``ger`` on W when the step has one example."""
    products = {base_name(op.out): op for op in step.statements
                if isinstance(op, Product) and not op.blas}
    consumed = {op.delta for op in step.statements
                if isinstance(op, Subtract) and op.delta in products}

    def rewrite(ops):
        for op in ops:
            if isinstance(op, Product) and base_name(op.out) in consumed:
                continue  # moved into the OneExample below
            if isinstance(op, Subtract) and op.delta in products:
                product = products[op.delta]
                a, d = base_name(product.a), base_name(product.b)
                yield OneExample(then=(RankOne(op.param, f"{d}[0]", f"{a}[0]"),),
                                 otherwise=(product, op))
            else:
                yield op

    return _map_sections(step, rewrite, "rank_one_updates")


STEP_PASSES = (schedule_updates, fold_learning_rate, bias_sums_as_products, rank_one_updates)
GRADIENT_PASSES = (gradients_only, bias_sums_as_products)
