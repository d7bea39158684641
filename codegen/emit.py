"""Stage 3b: ``Program -> DIR/<name>.py`` beside ``DIR/_runtime.py``.

``module_context`` prints every formula of the Program (functional statements with
``NumPyCodePrinter``, the training step with ``print_step``); the Jinja template only lays
them out.  ``write_module`` writes the module, the folder's runtime and its ``__init__.py``
atomically, and never overwrites a file this tool did not generate unless forced.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import pprint
from dataclasses import asdict
from pathlib import Path

import jinja2
import sympy as sp

from . import runtime
from .files import GENERATED_MARKER, WriteRefused, atomic_write, same_content, writable
from .lower import lower
from .rules import lower_rules, lower_schedules
from .printers.loops import print_epoch_kernel
from .printers.numpy import NumPyCodePrinter
from .printers.step import print_step
from .program import Assign, Program

__all__ = ["render_module", "render_runtime", "render_rules", "write_module", "module_context",
           "VERSION", "RUNTIME_NAME", "RULES_NAME", "Unprintable", "BACKENDS", "backend_context",
           "render_backend", "write_backend", "module_targets"]

def _version() -> str:
    """The tool's version, as installed (declared once, in ``derive.__version__``)."""
    try:
        return importlib.metadata.version("backprop-derive")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "0+unknown"


VERSION = _version()
RUNTIME_NAME = "_runtime"
RULES_NAME = "_rules"
_TEMPLATES = Path(__file__).parent / "templates"


class Unprintable(Exception):
    """A formula uses a function that has no NumPy spelling; nothing was written."""


@functools.cache  # one per process: its templates are compiled once (0.3 s each time)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


# ----------------------------------------------------------------------------- functional

def _data_names(program: Program) -> frozenset[str]:
    """Arrays stored one row per example (the matrix printer transposes them)."""
    names = {"A0", "Y"}
    for layer in program.layers:
        l = layer.index
        names |= {f"Z{l}", f"A{l}", f"delta{l}", f"G{l}"}
    return frozenset(names)


class _Functional:
    """Prints Assign statements; collects the SciPy functions they use."""

    def __init__(self, program: Program, printer=NumPyCodePrinter):
        self.scipy: set[str] = set()
        self.data = _data_names(program)
        self.printer = printer
        sign = printer()._call("sign")
        self.signs = {f"signW{layer.index}": f"{sign}(W{layer.index})" for layer in program.layers}

    def lines(self, assign: Assign) -> list[str]:
        """``target = code`` lines (common subexpressions first, for element-wise formulas)."""
        if assign.kind == "comment":
            return []
        if assign.kind == "matrix":
            printer = self._matrix_printer(assign.expr)
            code = printer.rows(assign.expr) if assign.samples_first else printer.doprint(assign.expr)
            return [f"{assign.target} = {code}"]
        names = dict(assign.names)
        lines = []
        expr = assign.expr
        if assign.kind == "elementwise":
            replacements, (expr,) = sp.cse(expr, optimizations=None)
            for i, (symbol, sub) in enumerate(replacements):
                name = f"{assign.target}_{i}"
                lines.append(f"{name} = {self._print(sub, names, assign.like)}")
                names[symbol] = name
        lines.append(f"{assign.target} = {self._print(expr, names, assign.like)}")
        return lines

    def _print(self, expr, names, like) -> str:
        printer = self.printer(names, like=like)
        code = printer.doprint(expr)
        self.scipy |= printer.scipy_functions
        return code

    def _matrix_printer(self, expr):
        names = {}
        for symbol in expr.atoms(sp.MatrixSymbol):
            if symbol.name in self.signs:
                names[symbol] = self.signs[symbol.name]
        data = frozenset(s for s in expr.atoms(sp.MatrixSymbol) if s.name in self.data)
        return self.printer(names, data=data)


def _block(functional: _Functional, assigns) -> list[str]:
    """Each statement as its formula in a comment, then its code."""
    lines = []
    for assign in assigns:
        lines.append(f"# {assign.comment}")
        lines.extend(functional.lines(assign))
    return lines


def _forward_lines(functional: _Functional, program: Program) -> list[str]:
    lines = []
    for layer, (z, a) in zip(program.layers, zip(program.forward[::2], program.forward[1::2])):
        l = layer.index
        lines += ["", f"# Layer {l}: {layer.fan_in} -> {layer.units}, {layer.activation}: "
                      f"(m, {layer.fan_in}) -> (m, {layer.units})",
                  f'W{l}, b{l} = params["W{l}"], params["b{l}"]']
        lines += _block(functional, (z, a))
    return lines


def _backward_lines(functional: _Functional, program: Program) -> list[str]:
    """Layer by layer from the output: the error term, then the two gradients."""
    lines = []
    for layer in reversed(program.layers):
        l = layer.index
        assigns = [a for a in program.backward if a.target in
                   (f"G{l}", f"delta{l}", f"dW{l}", f"db{l}")]
        lines += ["", f"# Layer {l}: {layer.fan_in} -> {layer.units}, {layer.activation}"]
        lines += _block(functional, assigns)
    return lines


# ----------------------------------------------------------------------------- context

def comment_safe(text: str) -> str:
    """``text`` for a one-line Python comment: every character that is not printable (a
    newline among them, which would end the comment and start code) written as an escape."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def spec_digest(derivation) -> str:
    """A digest of the spec's content (not its path), for the module's stamp."""
    fields = asdict(derivation.spec)
    fields.pop("source", None)
    fields.pop("claims", None)  # a claims file about the network does not change its module
    fields.pop("notices", None)  # messages about the spelling, not content
    if fields.get("data"):
        fields["data"].pop("lines", None)  # where the spec wrote its fields, not content
    if fields.get("image") is None:  # not images: the digest it had before image kinds
        fields.pop("image", None)
    for layer in fields["layers"]:
        if layer.get("image") is None:
            layer.pop("image", None)
    for layer in fields["layers"]:  # a plain dense layer: the digest it had before layer kinds
        if layer.get("kind") == "dense" and layer.get("skip") is None \
                and not layer.get("options"):
            for key in ("kind", "options", "skip"):
                layer.pop(key, None)
    if not fields.get("loss_params"):  # a loss without parameters: the digest it had before
        fields.pop("loss_params", None)  # losses took any, so committed modules stay current
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def function_parameters(spec) -> dict:
    """The activations' and the loss's parameters, where any has some: what a model file must
    match besides the sizes and names (``{}`` for a network whose functions take none)."""
    layers = [dict(layer.activation.params) for layer in spec.layers]
    parameters = {}
    if any(layers):
        parameters["activations"] = layers
    if spec.loss_params:
        parameters["loss"] = dict(spec.loss_params)
    return parameters


def module_context(derivation, program: Program | None = None) -> dict:
    """Everything the module template lays out, printed from the Program."""
    program = program or lower(derivation)
    functional = _Functional(program)
    forward = _forward_lines(functional, program)
    backward = _backward_lines(functional, program)
    loss = _block(functional, (program.per_example_loss,))
    params = tuple(param for param, _ in program.gradients)
    shapes = _shapes(program)
    step = _step(program.step, shapes, params)
    spec = derivation.spec
    return {
        "marker": GENERATED_MARKER,
        "version": VERSION,
        "runtime": RUNTIME_NAME,
        "api": runtime.API,
        "name": program.name,
        "source": comment_safe(Path(spec.source).name) if spec.source else None,
        "digest": spec_digest(derivation),
        "program": program,
        "layers": program.layers,
        "activations": tuple(layer.activation for layer in program.layers),
        "parameters": function_parameters(spec),
        "inits": tuple(layer.init for layer in program.layers),
        "depth": len(program.layers),
        "forward": forward,
        "backward": backward,
        "loss": loss,
        "rules": RULES_NAME,
        "legacy": derivation.legacy_optimizers,
        "step": step,
        "uses_math": step["kernel"].uses_math,
        # measured (bench/seed_speed.py): loop kernels win at every batch size (2026-12-07,
        # AMD EPYC: 1.4-4x NumPy's at the full 20,000 examples); with BLAS products the
        # compiled engine wins only at one example per step
        # every batch size: compiled ran 1.0-1.4x NumPy's on the seed networks at batch >= 32
        # too since its products call NumPy's BLAS (seed_speed, AMD EPYC, 2026-12-07)
        "compiled_max_batch": 2**31 - 1,
        "reg_text": _regularization_text(program),
        "training": _dict_literal(program.training, len("TRAINING = ")),
        "scipy_functions": sorted(functional.scipy | step["code"].scipy_functions),
    }


def graph_module_context(derivation) -> dict:
    """What ``graph_module.py.j2`` lays out for a stack of layer kinds (``codegen.graphs``)."""
    from .graphs import graph_context, regularization_text
    from .lower import INDEXED, training_defaults

    spec = derivation.spec
    context = graph_context(derivation)
    out = derivation.output
    last = derivation.nodes[-1]
    logits = out.per_example_logits is not None
    expr = out.per_example_logits if logits else out.per_example
    names = {INDEXED["a"]: last.A.name, INDEXED["y"]: "Y", INDEXED["z"]: last.Z.name}
    printer = NumPyCodePrinter(names, like=last.Z.name)
    loss_code = printer.doprint(expr)
    from .printers.text import TextPrinter
    text = TextPrinter()
    declaration = last.activation.declaration
    reg = regularization_text(spec)
    return context | {
        "marker": GENERATED_MARKER, "version": VERSION, "runtime": RUNTIME_NAME,
        "rules": RULES_NAME, "api": runtime.API, "name": spec.name,
        "source": comment_safe(Path(spec.source).name) if spec.source else None,
        "digest": spec_digest(derivation), "layer_sizes": spec.layer_sizes,
        "kinds": tuple(layer.kind for layer in spec.layers),
        "activations": tuple(layer.activation.name for layer in spec.layers),
        "loss_name": spec.loss, "loss_expr": text.doprint(out.per_example), "reg_text": reg,
        "l1": float(spec.regularization.l1), "l2": float(spec.regularization.l2),
        "dtype": spec.dtype, "depth": spec.depth, "labels": out.loss.labels,
        "probability": bool(declaration and declaration.is_probability),
        "training": pprint.pformat(training_defaults(derivation.optimizer, spec.training), width=90,
                                   sort_dicts=False),
        "out_z": last.Z.name, "out_a": last.A.name,
        "loss_comment": text.doprint(expr) + ("  (written in the logits: stable for any Z)"
                                              if logits else ""),
        "loss_code": loss_code, "legacy": derivation.legacy_optimizers,
        "parameters": function_parameters(spec),
        "scipy_functions": sorted(set(context["scipy_graph"]) | printer.scipy_functions),
        "image": getattr(spec, "image", None),
    }


def _dict_literal(mapping: dict, indent: int, width: int = 95) -> str:
    """``mapping``'s literal with its items wrapped at ``width`` columns (pprint gives each
    item of a long dict its own line), continued under the first item."""
    lines, line = [], "{"
    for key, value in mapping.items():
        item = f"{key!r}: {value!r}, "
        if len(line) > 1 and indent + len(line) + len(item) - 1 > width:
            lines.append(line.rstrip())
            line = " "
        line += item
    return "\n".join(lines + [line[:-2] + "}"]).replace("\n", "\n" + " " * indent)


def _step(step, shapes, params) -> dict:
    """The training step printed twice over: NumPy statements and the compiled loop kernel;
    ``arrays``: the lines that give the step the kernel's arrays (its buffers, by the
    kernel's argument names: A0 is the step's X)."""
    kernel = print_epoch_kernel(step, shapes, params)
    names = ["X" if name == "A0" else name for name in kernel.arguments]
    arrays, line = [], "step.arrays = ("
    for name in names:
        if len(line) + len(name) + 2 > 95:
            arrays.append(line.rstrip())
            line = "    "
        line += name + ", "
    arrays.append(line[:-2] + ")")
    return {"passes": step.passes, "code": print_step(step), "kernel": kernel, "arrays": arrays}


def _shapes(program: Program) -> dict[str, tuple]:
    """Every array the step reads or writes: its shape, with "m" for the batch."""
    shapes = {}
    for layer in program.layers:
        shapes[f"W{layer.index}"] = (layer.units, layer.fan_in)
        shapes[f"b{layer.index}"] = (layer.units,)
    for buffer in program.step.buffers:
        shapes[buffer.name] = shapes[buffer.like] if buffer.like else buffer.shape
    shapes["A0"] = shapes[program.step.inputs[0]]
    return shapes


def _regularization_text(program: Program) -> str:
    text = ""
    if program.l2:
        text += f" + ({program.l2:g}/2) sum_l ||W_l||^2"
    if program.l1:
        text += f" + {program.l1:g} sum_l |W_l|"
    return text


def render_module(derivation) -> str:
    """The generated module's source text (deterministic: same spec, same bytes).

    Raises Unprintable when a formula uses a function with no NumPy spelling.
    """
    if hasattr(derivation, "nodes"):  # a stack of layer kinds (derive.graph)
        return _environment().get_template("graph_module.py.j2").render(
            **graph_module_context(derivation))
    try:
        context = module_context(derivation)
    except NotImplementedError as err:  # SymPy's PrintMethodNotImplementedError among them
        function = str(err).splitlines()[0].rpartition(": ")[2] or str(err)
        raise Unprintable(
            f"no NumPy spelling for {function}: give it one by declaring it as a named "
            "primitive with a _numpycode method (see derive/primitives.py)") from None
    return _environment().get_template("module.py.j2").render(**context)


def render_rules(derivation) -> str:
    """``_rules.py`` for an output folder: every declared update rule and schedule, printed."""
    theta, g, eta, t, e = derivation.rule_symbols
    return _environment().get_template("rules.py.j2").render(
        marker=GENERATED_MARKER, version=VERSION, api=runtime.API,
        rules=lower_rules(derivation.optimizers, theta, g, eta, t),
        schedules=lower_schedules(derivation.schedules, eta, e))


def render_runtime() -> str:
    """``_runtime.py`` for an output folder: the runtime's source, stamped."""
    source = Path(runtime.__file__).read_text(encoding="utf-8")
    return (f"{GENERATED_MARKER} {VERSION}: the runtime of the generated modules beside it; "
            "do not edit.\n# It is backprop-derive's codegen/runtime.py, copied verbatim.\n"
            + source)


_PACKAGE_INIT = f'{GENERATED_MARKER}: package of generated network modules; do not edit.\n'


def _write_if_changed(path: Path, text: str) -> None:
    if not same_content(path, text):
        atomic_write(path, text)


def module_targets(name: str, out_dir: str | Path = "generated",
                   backend: str = "numpy") -> tuple[list[Path], list[Path]]:
    """The files that writing network ``name`` (with ``backend``'s module) may write in
    ``out_dir``: its own (``<name>.py``, ``<name>_<backend>.py``), and those every module of
    the folder shares (the runtime, the rules, ``__init__.py``)."""
    out_dir = Path(out_dir)
    own = [out_dir / f"{name}.py"] + ([out_dir / f"{name}_{backend}.py"]
                                      if backend in BACKENDS else [])
    shared = [out_dir / f"{RUNTIME_NAME}.py", out_dir / f"{RULES_NAME}.py",
              out_dir / "__init__.py"]
    return own, shared


def write_module(derivation, out_dir: str | Path = "generated", *, force: bool = False,
                 source: str | None = None) -> Path:
    """Render and write ``out_dir/<name>.py``, ``out_dir/_runtime.py`` and, if missing,
    ``out_dir/__init__.py``; returns the module's path.

    Raises WriteRefused, before writing anything, when one of them exists and was not
    written by this tool (unless ``force``).
    """
    out_dir = Path(out_dir)
    if derivation.spec.name in (RUNTIME_NAME, RULES_NAME):
        raise WriteRefused(f"the network name {derivation.spec.name!r} is taken by a file every "
                           f"generated module in {out_dir} shares ({derivation.spec.name}.py); "
                           "choose another name")
    target = writable(out_dir / f"{derivation.spec.name}.py", force)
    runtime_path = writable(out_dir / f"{RUNTIME_NAME}.py", force)
    rules_path = writable(out_dir / f"{RULES_NAME}.py", force)
    text = source if source is not None else render_module(derivation)
    init = out_dir / "__init__.py"
    if not init.exists():
        atomic_write(init, _PACKAGE_INIT)
    _write_if_changed(runtime_path, render_runtime())
    _write_if_changed(rules_path, render_rules(derivation))
    _write_if_changed(target, text)
    return target


# ----------------------------------------------------------------------------- other targets

BACKENDS = ("torch", "jax")  # --backend: DIR/<name>_<backend>.py beside DIR/<name>.py


def backend_context(derivation, backend: str, program: Program | None = None) -> dict:
    """What ``<backend>_module.py.j2`` lays out: the functional formulas printed for the
    framework (forward, per-example loss, backward), and the network's constants."""
    from .printers.frameworks import FRAMEWORK_PRINTERS

    program = program or lower(derivation)
    functional = _Functional(program, FRAMEWORK_PRINTERS[backend])
    spec = derivation.spec
    return {
        "marker": GENERATED_MARKER,
        "version": VERSION,
        "backend": backend,
        "name": program.name,
        "source": comment_safe(Path(spec.source).name) if spec.source else None,
        "digest": spec_digest(derivation),
        "program": program,
        "layers": program.layers,
        "depth": len(program.layers),
        "keys": tuple(param for param, _ in program.gradients),
        "activations": tuple(layer.activation for layer in program.layers),
        "forward": _forward_lines(functional, program),
        "backward": _backward_lines(functional, program),
        "loss": _block(functional, (program.per_example_loss,)),
        "reg_text": _regularization_text(program),
        "training": pprint.pformat(program.training, width=90, sort_dicts=False),
        # JAX prints every update rule (torch trains with torch.optim's)
        "rules": lower_rules(derivation.optimizers, *derivation.rule_symbols[:4],
                             printer=FRAMEWORK_PRINTERS[backend]) if backend == "jax" else (),
    }


def graph_backend_context(derivation, backend: str) -> dict:
    """What ``graph_<backend>_module.py.j2`` lays out: ``codegen.graph_backends``'s printing,
    stamped, with the update rules for JAX."""
    from .graph_backends import graph_backend_context as printed
    from .printers.frameworks import FRAMEWORK_PRINTERS

    spec = derivation.spec
    return printed(derivation, backend) | {
        "marker": GENERATED_MARKER, "version": VERSION, "digest": spec_digest(derivation),
        "source": comment_safe(Path(spec.source).name) if spec.source else None,
        "rules": lower_rules(derivation.optimizers, *derivation.rule_symbols[:4],
                             printer=FRAMEWORK_PRINTERS[backend]) if backend == "jax" else ()}


def render_backend(derivation, backend: str) -> str:
    """``DIR/<name>_<backend>.py``'s source text (deterministic: same spec, same bytes)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    try:
        if hasattr(derivation, "nodes"):  # a stack of layer kinds (codegen.graph_backends)
            return _environment().get_template(f"graph_{backend}_module.py.j2").render(
                **graph_backend_context(derivation, backend))
        context = backend_context(derivation, backend)
    except NotImplementedError as err:
        function = str(err).splitlines()[0].rpartition(": ")[2] or str(err)
        raise Unprintable(
            f"no {backend} spelling for {function}: give it one by declaring it as a named "
            f"primitive with a _{backend}code method (see derive/primitives.py)") from None
    return _environment().get_template(f"{backend}_module.py.j2").render(**context)


def write_backend(derivation, backend: str, out_dir: str | Path = "generated", *,
                  force: bool = False) -> Path:
    """Write ``out_dir/<name>_<backend>.py`` beside the NumPy module (written too: the
    backend module takes its initial parameters and conversions from it); returns its path."""
    out_dir = Path(out_dir)
    target = writable(out_dir / f"{derivation.spec.name}_{backend}.py", force)
    text = render_backend(derivation, backend)
    write_module(derivation, out_dir, force=force)
    _write_if_changed(target, text)
    return target
