"""Stage 3a: ``Derivation -> Program``.

``lower`` reads the Derivation's definitions and writes them as statements:

1. ``_functional``: forward, per-example loss and backward, one ``Assign`` per array;
2. ``_plain_step``: the training step as the documents state it, in order: forward,
   output error, the recurrence, every gradient with its 1/m and regularisation, then one
   ``Update`` per parameter by the Derivation's update rule;
3. the passes of ``codegen.passes`` (``STEP_PASSES``), each a named rewrite of the step.

The Derivation is read through its public attributes only (layers, definitions, output,
gradients, update rule); this package does not import ``derive``.
"""

from __future__ import annotations

import sympy as sp

from . import passes
from .printers.text import TextPrinter
from .program import (Assign, Buffer, ColumnSums, Compute, Hadamard, LayerInfo, Product,
                      Program, Step, AddBias, Update)

__all__ = ["lower", "switches", "INDEXED"]

# The index-form names of the Derivation's column-wise formulas (softmax, the output error,
# the per-example loss): a, y and z are the output layer's activations, targets and logits.
INDEXED = {label: sp.IndexedBase(label) for label in ("a", "y", "z")}
_TEXT = TextPrinter()


def lower(derivation) -> Program:
    """The Program of a Derivation, with every step pass applied."""
    spec = derivation.spec
    step = _plain_step(derivation)
    for rewrite in passes.STEP_PASSES:
        step = rewrite(step)
    last = derivation.layers[-1].activation
    return Program(
        name=spec.name,
        layer_sizes=spec.layer_sizes,
        layers=tuple(_layer_info(derivation, layer) for layer in derivation.layers),
        loss=spec.loss,
        labels=derivation.output.loss.labels,
        probability=bool(last.declaration and last.declaration.is_probability),
        l1=float(spec.regularization.l1),
        l2=float(spec.regularization.l2),
        dtype=spec.dtype,
        training=training_defaults(derivation.optimizer, spec.training),
        forward=_forward(derivation),
        per_example_loss=_per_example_loss(derivation),
        backward=_backward(derivation),
        gradients=tuple((g.param.name, g.target.name) for g in derivation.gradients),
        step=step,
        description=_description(derivation),
        switches=_switches(derivation),
    )


def training_defaults(optimizer, training) -> dict:
    """The Trainer's defaults: the spec's settings with every default resolved."""
    stopping = training.early_stopping
    return {"optimizer": optimizer.name, "learning_rate": optimizer.learning_rate,
            "batch_size": training.batch_size, "epochs": training.epochs,
            "shuffle": training.shuffle, "seed": training.seed,
            "hyperparameters": dict(optimizer.hyperparameters),
            "schedule": {"name": optimizer.schedule.name, **optimizer.schedule_params},
            "early_stopping": None if stopping is None else {
                "patience": stopping.patience, "min_delta": stopping.min_delta,
                "restore_best": stopping.restore_best}}


def _layer_info(derivation, layer) -> LayerInfo:
    act = layer.activation
    init = derivation.spec.init or (act.declaration.init if act.declaration else "xavier")
    return LayerInfo(layer.index, layer.fan_in, layer.units, act.name,
                     ", ".join(f"{k}={v:g}" for k, v in act.params), init)


def _output_names(layer) -> tuple[tuple[sp.Basic, str], ...]:
    return ((INDEXED["a"], layer.A.name), (INDEXED["y"], "Y"), (INDEXED["z"], layer.Z.name))


def _g_is_one(layer) -> bool:
    """g' = 1 (identity): the recurrence multiplies by nothing."""
    return not layer.is_output and not layer.activation.vector and layer.activation.backward == 1


# ----------------------------------------------------------------------------- functional

def _forward(derivation) -> tuple[Assign, ...]:
    out = []
    for layer in derivation.layers:
        act, l = layer.activation, layer.index
        z = layer.z_def.expr
        out.append(Assign(layer.Z.name, z, "matrix", comment=f"{layer.Z.name} = {_TEXT.doprint(z)}"))
        if act.vector:
            expr = layer.a_def.expr
            names = tuple((base, mat.name) for base, mat in layer.a_def.inputs)
            comment = f"A{l} = {act.name}(Z{l}) column by column: a_j = {_TEXT.doprint(expr)}"
            out.append(Assign(layer.A.name, expr, "columnwise", names, comment, layer.Z.name))
        else:
            (z_sym, _), = layer.a_def.inputs
            comment = f"A{l} = {act.name}(Z{l}),  {act.name}(z) = {_TEXT.doprint(act.display)}"
            out.append(Assign(layer.A.name, act.display, "elementwise", ((z_sym, layer.Z.name),),
                              comment, layer.Z.name))
    return tuple(out)


def _per_example_loss(derivation) -> Assign:
    out, last = derivation.output, derivation.layers[-1]
    logits = out.per_example_logits is not None
    expr = out.per_example_logits if logits else out.per_example
    comment = f"l = {_TEXT.doprint(expr)}" + ("  (written in the logits: stable for any Z)"
                                               if logits else "")
    return Assign("l", expr, "columnwise", _output_names(last), comment, last.Z.name)


def _g_comment(layer) -> str:
    act, l = layer.activation, layer.index
    text = f"G{l} = g{l}'(Z{l}),  g'(z) = {_TEXT.doprint(act.derivative)}"
    if act.backward_uses_output:
        text += f" = {_TEXT.doprint(act.derivative_in_output)} with a = g(z)"
    return text + (": nothing to multiply" if _g_is_one(layer) else "")


def _backward(derivation) -> tuple[Assign, ...]:
    out = []
    for layer in reversed(derivation.layers):
        l, act = layer.index, layer.activation
        if layer.is_output:
            o = derivation.output
            used = "; uses sum_i y_i = 1" if o.uses_sum_y else ""
            comment = (f"delta{l} = dl/dZ{l} = {_TEXT.doprint(o.delta)}  "
                       f"(output error, {o.loss.name} on {act.name}{used})")
            out.append(Assign(layer.delta.name, o.delta, "columnwise", _output_names(layer),
                              comment, layer.Z.name))
        else:
            delta = layer.delta_def.expr
            if _g_is_one(layer):
                delta = delta.args[0] if isinstance(delta, sp.HadamardProduct) else delta
                out.append(Assign(layer.G.name, sp.S.One, "comment", comment=_g_comment(layer)))
            else:
                (sym, source), = layer.g_def.inputs
                out.append(Assign(layer.G.name, act.backward, "elementwise",
                                  ((sym, source.name),), _g_comment(layer), source.name))
            out.append(Assign(layer.delta.name, delta, "matrix",
                              comment=f"delta{l} = {_TEXT.doprint(layer.delta_def.expr)}  "
                                      "(the recurrence)"))
        for grad in (layer.grad_W, layer.grad_b):
            out.append(Assign(grad.target.name, grad.formula, "matrix",
                              comment=f"dJ/d{grad.param.name} = {_TEXT.doprint(grad.formula)}",
                              samples_first=False))
    return tuple(out)


# ----------------------------------------------------------------------------- the step

def _plain_step(derivation) -> Step:
    """The step as the documents state it; the passes make it fast."""
    buffers = [Buffer("X", ("m", derivation.spec.input)), Buffer("Y", ("m", derivation.layers[-1].units))]
    forward, backward, updates = [], [], []
    reg = tuple((kind, name) for kind, name, value in (("l2", "L2", derivation.lambda2),
                                                       ("l1", "L1", derivation.lambda1))
                if value != 0)
    for layer in derivation.layers:
        l, act = layer.index, layer.activation
        buffers += [Buffer(f"Z{l}", ("m", layer.units)), Buffer(f"A{l}", ("m", layer.units)),
                    Buffer(f"D{l}", ("m", layer.units))]
        if not layer.is_output and not _g_is_one(layer):
            buffers.append(Buffer(f"G{l}", ("m", layer.units)))
        buffers += [Buffer(f"dW{l}", like=f"W{l}"), Buffer(f"db{l}", like=f"b{l}")]
        forward.append((f"Layer {l} ({layer.fan_in} -> {layer.units}): Z{l} = A{l - 1} W{l}ᵀ + b{l}, "
                        f"A{l} = {act.name}(Z{l})", (
            Product(f"Z{l}", f"A{l - 1}", f"W{l}.T"),
            AddBias(f"Z{l}", f"b{l}"),
            Compute(f"A{l}", act.expr if act.vector else act.display,
                    tuple((sym, f"Z{l}") for sym, _ in layer.a_def.inputs)),
        )))
    last = derivation.layers[-1]
    L = last.index
    backward.append((f"output error: D{L} = dl/dZ{L}", (
        Compute(f"D{L}", derivation.output.delta, _output_names(last)),)))
    for layer in reversed(derivation.layers):
        l = layer.index
        ops = [Product(f"dW{l}.T", f"A{l - 1}.T", f"D{l}", "dW^T = A^T D: written in W's layout",
                       blas=False),
               ColumnSums(f"db{l}", f"D{l}")]
        updates += [Update(f"W{l}", f"dW{l}", reg), Update(f"b{l}", f"db{l}")]
        if l > 1:
            below = derivation.layers[l - 2]
            ops.insert(0, Product(f"D{l - 1}", f"D{l}", f"W{l}", f"W{l}ᵀ delta{l}"))
            if not _g_is_one(below):
                (sym, source), = below.g_def.inputs
                ops += [Compute(f"G{l - 1}", below.activation.backward, ((sym, source.name),)),
                        Hadamard(f"D{l - 1}", f"G{l - 1}")]
        backward.append((f"Layer {l} ({layer.fan_in} -> {layer.units}): dJ/dW{l} = D{l}ᵀ A{l - 1}, "
                         f"dJ/db{l} = column sums of D{l}",
                         tuple(ops)))
    sections = forward + backward + [("updates: theta <- theta - eta dJ/dtheta", tuple(updates))]
    return Step(("X", "Y"), f"D{L}", tuple(buffers), tuple(sections))


# ----------------------------------------------------------------------------- the rest

def _description(derivation) -> dict:
    out = derivation.output
    return {"loss_expr": _TEXT.doprint(out.per_example)}


def switches(derivation) -> tuple:
    """Where each layer's activation has a kink, for either kind of derivation (a stack of
    layer kinds reads its nodes' activations): (layer, s(z), z), a kink where s = 0."""
    if not hasattr(derivation, "nodes"):
        return _switches(derivation)
    found = []
    for node in derivation.nodes:
        act = node.activation
        if act.vector:
            continue
        for z in (s for s in act.display.free_symbols if s.name == "z"):
            found += [(node.index, s, z) for s in switching_functions(act.display, z)]
    return tuple(found)


def _switches(derivation) -> tuple:
    """Where each layer's activation has a kink: (layer, s(z), z) with a kink where s = 0."""
    found = []
    for layer in derivation.layers:
        act = layer.activation
        if act.vector:
            continue
        (z, _), = layer.a_def.inputs
        for s in switching_functions(act.display, z):
            found.append((layer.index, s, z))
    return tuple(found)


def switching_functions(expr: sp.Expr, z: sp.Symbol) -> list[sp.Expr]:
    """Expressions s(z) whose sign decides a branch of expr: each relation of a Piecewise
    condition (lhs - rhs), each pair of Max/Min arguments, the argument of Abs, sign and
    Heaviside."""
    found: list[sp.Expr] = []

    def add(s):
        s = sp.expand(s)
        if s.has(z) and s not in found and -s not in found:
            found.append(s)

    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                for rel in cond.atoms(sp.core.relational.Relational):
                    add(rel.lhs - rel.rhs)
        elif isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            for i in range(len(args)):
                for j in range(i + 1, len(args)):
                    add(args[i] - args[j])
        elif isinstance(node, (sp.Abs, sp.sign, sp.Heaviside)):
            add(node.args[0])
    return found
