"""Read a network spec (YAML) into a checked ``NetSpec``.

The YAML is read safely by ``derive.yamlread`` into values that keep their line and field
path.  The schema is a set of tables (section -> key -> check); every problem is a
``SpecError`` naming the file, line and field, what was expected, and the nearest valid name.
"""

from __future__ import annotations

import keyword
import math
import re
from pathlib import Path
from typing import Any, Callable

import sympy as sp

from .activations import ACTIVATIONS, Activation
from .datasets import DATASETS, written_names
from .errors import SpecError
from .layers import LAYER_KINDS, ImageError
from .losses import LOSSES, Loss
from .netspec import (AUTO, MISSING_CHOICES, SCALINGS, ActivationSpec, DataSpec, EarlyStopping, LayerSpec, NetSpec,
                      Regularization, ScheduleSpec, TrainingSpec)
from .optimizers import (FULL_BATCH, LEGACY_LEARNING_RATE, LEGACY_OPTIMIZERS, OPTIMIZERS,
                         SCHEDULES)
from .registry import Registry, UnknownName
from .shadowed import shadowed
from .yamlread import (Item, did_you_mean, expected, item_error, join, nearest, number,
                       read_document, read_text)

__all__ = ["load_spec", "load_spec_text", "INITS", "DTYPES"]

MAX_UNITS = 100_000
MAX_LAYERS = 1000
MAX_NAME_LENGTH = 100


# ----------------------------------------------------------------------------- public API

def load_spec(path: str | Path) -> NetSpec:
    """Read and check the spec file at ``path``."""
    return load_spec_text(read_text(path, "the spec"), str(path))


def load_spec_text(text: str, filename: str = "<string>") -> NetSpec:
    """Check the spec in ``text``; ``filename`` is used in messages and as ``NetSpec.source``."""
    try:
        root = read_document(text, "the spec is empty; expected a mapping with the keys "
                             + ", ".join(_REQUIRED_TOP))
        return _netspec(root, filename)
    except SpecError as err:
        err.file = err.file or filename
        raise


# ----------------------------------------------------------------------------- value checks

Check = Callable[[Item], Any]


def _string(item: Item) -> str:
    if not isinstance(item.value, str) or not item.value.strip():
        raise expected(item, "a non-empty string")
    return item.value


def _choice(options: tuple[str, ...], what: str) -> Check:
    def check(item: Item) -> str:
        if not isinstance(item.value, str):
            raise expected(item, f"a {what}: one of {', '.join(options)}")
        if item.value not in options:
            raise item_error(item, f"unknown {what} {item.value!r} "
                                   f"(expected one of: {', '.join(options)})",
                             did_you_mean(item.value, options))
        return item.value
    return check


def _integer(low: int, high: int) -> Check:
    def check(item: Item) -> int:
        value = item.value
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            whole = isinstance(value, float) and value.is_integer() and low <= value <= high
            raise expected(item, f"a whole number from {low} to {high}",
                           f"write {int(value)}" if whole else None)
        return value
    return check


def _real_value(item: Item, accept: Callable[[float], bool], wanted: str) -> float:
    value = number(item)
    if value is None:
        raise expected(item, wanted)
    if not math.isfinite(value):
        raise item_error(item, f"expected {wanted}, got {item.text} (not a finite number)")
    if not accept(value):
        raise expected(item, wanted)
    return value


def _real(accept: Callable[[float], bool], wanted: str) -> Check:
    return lambda item: _real_value(item, accept, wanted)


def _boolean(item: Item) -> bool:
    if isinstance(item.value, bool) and item.text.lower() not in ("true", "false"):
        raise item_error(item, f"expected true or false, got {item.text}")
    if not isinstance(item.value, bool):
        raise expected(item, "true or false")
    return item.value


def _or_null(check: Check) -> Check:
    """An optional section: null means "not given" (the default)."""
    return lambda item: None if item.value is None else check(item)


def _registered(registry: Registry, item: Item) -> str:
    """The declared name for a name or alias of ``registry``; a refused name gives its reason.

    The registry is read at each check, so a declaration added later (or for one test) is
    known without anything else changing.
    """
    kind = registry.kind
    known = ", ".join(registry.names())
    if not isinstance(item.value, str):
        article = "an" if kind[0] in "aeiou" else "a"
        raise expected(item, f"{article} {kind} name: one of {known}")
    reason = registry.refused_reason(item.value)
    if reason:
        raise item_error(item, f"{kind} {item.value!r} cannot be used: {reason}")
    try:
        return registry.canonical(item.value)
    except UnknownName as unknown:
        suggestion = nearest(item.value, [*registry.names(), *registry.aliases()])
        suggestion = suggestion or unknown.suggestion
        raise item_error(item, f"unknown {kind} {item.value!r} (expected one of: {known})",
                         f"did you mean {suggestion!r}?" if suggestion else None) from None


# ----------------------------------------------------------------------------- sections

def _fields(item: Item, schema: dict[str, Check], required: tuple[str, ...] = (),
            what: str = "a mapping") -> dict[str, Item]:
    """The mapping's items after checking it has only known keys and all required ones."""
    if not isinstance(item.value, dict):
        raise expected(item, f"{what} with the keys {', '.join(schema)}")
    for key, child in item.value.items():
        if key not in schema:
            raise item_error(child, f"unknown key {key!r} (expected one of: {', '.join(schema)})",
                             did_you_mean(key, schema), at_key=True)
    missing = [key for key in required if key not in item.value]
    if missing:
        raise SpecError(f"missing required key {missing[0]!r} "
                        f"(required: {', '.join(required)})",
                        line=item.owner_line, field=join(item.path, missing[0]))
    return item.value


def _section(schema: dict[str, Check], required: tuple[str, ...] = (),
             what: str = "a mapping") -> Check:
    """A check of a mapping section giving {key: checked value} for the keys present."""
    def check(item: Item) -> dict[str, Any]:
        fields = _fields(item, schema, required, what)
        return {key: schema[key](child) for key, child in fields.items()}
    return check


_INITS = ("he", "xavier", "normal", "zeros")
_DTYPES = ("float32", "float64")
INITS, DTYPES = _INITS, _DTYPES  # what the spec accepts, for the tests and the fuzzer

_size = _integer(1, MAX_UNITS)


def _size_or_auto(item: Item) -> int | str:
    """A size, or ``auto``: taken from the data (``input``, the last layer's ``units``)."""
    return AUTO if item.value == AUTO else _size(item)

MAX_IMAGE_SIDE = 4096


def _input(item: Item) -> int | str | tuple[int, int, int]:
    """``input``: a width, ``auto``, or an image [C, H, W] (channels, height, width)."""
    if not isinstance(item.value, list):
        return _size_or_auto(item)
    if len(item.value) != 3:
        raise expected(item, "an image's [C, H, W] (channels, height, width), three whole "
                             f"numbers; got {len(item.value)} entries",
                       "write input: [1, 28, 28] for one-channel 28x28 images")
    names = ("channels", "height", "width")
    image = tuple(_integer(1, MAX_IMAGE_SIDE)(child) for child in item.value)
    if math.prod(image) > MAX_UNITS:
        raise item_error(item, f"an image of {' x '.join(map(str, image))} = "
                               f"{math.prod(image)} entries is more than {MAX_UNITS}",
                         f"use images of at most {MAX_UNITS} entries ({', '.join(names)})")
    return image


_REGULARIZATION = _section({
    "l1": _real(lambda x: x >= 0, "a finite number >= 0"),
    "l2": _real(lambda x: x >= 0, "a finite number >= 0"),
})

def _batch_size(item: Item) -> int | str:
    """A whole number of examples, or ``full`` (every training example: batch descent)."""
    if item.value == FULL_BATCH:
        return FULL_BATCH
    try:
        return _integer(1, 10**7)(item)
    except SpecError as err:
        err.message = err.message.replace("expected a whole number from 1 to 10000000",
                                          f"expected a whole number from 1 to 10000000 or "
                                          f"{FULL_BATCH!r} (batch gradient descent)")
        raise


_EARLY_STOPPING = _section({
    "patience": _integer(1, 10**6),
    "min_delta": _real(lambda x: x >= 0, "a finite number >= 0"),
    "restore_best": _boolean,
})

_TRAINING_KEYS: dict[str, Check] = {
    "optimizer": lambda item: item,  # checked with the keys that depend on it, in _training
    "learning_rate": _real(lambda x: 0 < x <= 1e3, "a finite number > 0 and <= 1000"),
    "batch_size": _batch_size,
    "epochs": _integer(1, 10**6),
    "shuffle": _boolean,
    "seed": _integer(0, 2**32 - 1),
    "schedule": lambda item: _schedule(item),
    "early_stopping": _or_null(lambda item: EarlyStopping(**_EARLY_STOPPING(item))),
}


def _hyperparameter_names() -> list[str]:
    """Every optimizer's hyperparameters, each name once, as the registry declares them."""
    names: dict[str, None] = {}
    for name in OPTIMIZERS:
        names.update(dict.fromkeys(h.name for h in OPTIMIZERS[name].hyperparameters))
    return list(names)


def _training(item: Item) -> tuple[TrainingSpec, tuple[str, ...]]:
    """The training section, and notices for spellings of older versions."""
    schema = dict(_TRAINING_KEYS) | {name: lambda child: child for name in _hyperparameter_names()}
    fields = _fields(item, schema, (), "a mapping")
    values = {key: _TRAINING_KEYS[key](child) for key, child in fields.items()
              if key in _TRAINING_KEYS and key != "optimizer"}
    notices: list[str] = []
    optimizer = TrainingSpec.optimizer
    if "optimizer" in fields:
        written = fields["optimizer"]
        legacy = LEGACY_OPTIMIZERS.get(written.value) if isinstance(written.value, str) else None
        if legacy is not None:
            optimizer = "sgd"
            if legacy.batch_size is not None:
                values["batch_size"] = legacy.batch_size
            else:
                values.setdefault("batch_size", 64)  # the old default batch size
            notices.append(f"{written.line}: training.optimizer: {written.value!r} named a descent "
                           f"variant; it is now spelled {legacy.spelling.replace('<B>', str(values['batch_size']))}"
                           " (same meaning)")
        else:
            optimizer = _registered(OPTIMIZERS, written)
            if optimizer == "sgd" and "batch_size" in values:
                per_step = ("every example" if values["batch_size"] == FULL_BATCH
                            else f"{values['batch_size']} examples")
                notices.append(f"{written.line}: training: optimizer: sgd now uses batch_size "
                               f"({per_step} per step); older versions "
                               "ignored it and took one example per step (set batch_size: 1 "
                               "for that)")
            elif optimizer == "sgd":
                values["batch_size"] = 1  # the documents' stochastic gradient descent
        if optimizer == "sgd" and "learning_rate" not in values:
            values["learning_rate"] = LEGACY_LEARNING_RATE
            notices.append(f"{written.line}: training: learning_rate not given: "
                           f"{LEGACY_LEARNING_RATE:g} as in older versions (PyTorch's SGD "
                           f"default is {OPTIMIZERS['sgd'].learning_rate:g})")
    declaration = OPTIMIZERS[optimizer]
    hyper = {}
    own = {h.name: h for h in declaration.hyperparameters}
    for key, child in fields.items():
        if key in _TRAINING_KEYS:
            continue
        if key not in own:
            users = [n for n in OPTIMIZERS if key in {h.name for h in OPTIMIZERS[n].hyperparameters}]
            raise item_error(child, f"{key!r} is a hyperparameter of {', '.join(users)}, not of "
                                    f"{optimizer} (its hyperparameters: "
                                    f"{', '.join(own) or 'none'})",
                             f"remove {key}, or set optimizer: {users[0]}", at_key=True)
        value = child.value
        if isinstance(value, list):
            value = [number(entry) for entry in value]
        elif value is not None and not isinstance(value, bool):
            value = number(child)
        if value is None or not own[key].accepts(value):
            raise expected(child, own[key].expected + f" ({own[key].meaning})")
        hyper[key] = tuple(float(x) for x in value) if isinstance(value, list) else float(value)
    values["hyperparameters"] = tuple(sorted(hyper.items()))
    values["given"] = tuple(fields)
    return TrainingSpec(optimizer=optimizer, **values), tuple(notices)


def _schedule(item: Item) -> ScheduleSpec:
    """``cosine`` or ``{name: step, step_size: 10, gamma: 0.5}``."""
    if isinstance(item.value, str) or item.value is None:
        name_item, params = item, {}
    elif isinstance(item.value, dict) and "name" in item.value:
        name_item = item.value["name"]
        params = {k: v for k, v in item.value.items() if k != "name"}
    else:
        raise expected(item, "a schedule: a name (" + ", ".join(SCHEDULES.names())
                             + ") or a mapping with a name and its parameters")
    name = _registered(SCHEDULES, name_item)
    declared = {p[0]: p for p in SCHEDULES[name].parameters}
    values = {}
    for key, child in params.items():
        if key not in declared:
            raise item_error(child, f"unknown parameter {key!r} of schedule {name} (expected: "
                                    f"{', '.join(declared) or 'none'})",
                             did_you_mean(key, declared), at_key=True)
        value = number(child)
        if value is None or not math.isfinite(value) or value < 0 or (
                key in ("step_size", "T_max") and (value < 1 or value != int(value))):
            raise expected(child, "a whole number >= 1" if key in ("step_size", "T_max")
                           else "a finite number >= 0")
        values[key] = value
    for key, (_, default, meaning) in declared.items():
        if key not in values and default is None and key != "T_max":
            raise item_error(item, f"schedule {name} needs {key} ({meaning})",
                             f"write schedule: {{name: {name}, {key}: ...}}")
    return ScheduleSpec(name, tuple(sorted(values.items())))


# ----------------------------------------------------------------------------- name

def _name(item: Item) -> str:
    name = item.value
    if not isinstance(name, str):
        raise expected(item, "a Python identifier such as 'my_net'")
    problem = _name_problem(name)
    reason = None if problem else shadowed(name)
    if reason:
        fixed = f"{name}_net"
        raise item_error(item, f"network name {name!r} {reason}: a generated {name}.py hides "
                               "it wherever its folder is on Python's import path (with --out ., "
                               f"for one), and 'import {name}' then loads the network",
                         f"try {fixed!r}" if not _name_problem(fixed) else None)
    if problem:
        fixed = _identifier_like(name)
        raise item_error(item, f"network name {name!r} {problem} (expected a Python identifier: "
                               f"at most {MAX_NAME_LENGTH} ASCII letters, digits and '_', not "
                               "starting with a digit, not a keyword; it names the generated "
                               "module)",
                         f"try {fixed!r}" if fixed and not _name_problem(fixed) else None)
    return name


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot name ``generated/<name>.py``, or None."""
    if not name.isascii() or not name.isidentifier():
        return "is not a Python identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if name.startswith("__") and name.endswith("__"):
        return "is reserved by Python (a __dunder__ name)"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    return None


def _identifier_like(name: str) -> str:
    fixed = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "net"
    if fixed[0].isdigit():
        fixed = "net_" + fixed
    if keyword.iskeyword(fixed) or keyword.issoftkeyword(fixed):
        fixed += "_net"
    return fixed[:MAX_NAME_LENGTH]


# ----------------------------------------------------------------------------- layers

def _layers(item: Item, n_in: int | None = None,
            image: tuple | None = None) -> tuple[LayerSpec, ...]:
    if not isinstance(item.value, list) or not item.value:
        raise expected(item, "a non-empty list of layers such as "
                             "- {units: 10, activation: relu}")
    if len(item.value) > MAX_LAYERS:
        raise item_error(item, f"expected at most {MAX_LAYERS} layers, got {len(item.value)}",
                         at_key=True)
    layers: list[LayerSpec] = []
    widths = [n_in]
    for index, child in enumerate(item.value):
        below = image if index == 0 else layers[-1].image
        layers.append(_layer(child, widths[-1], below,
                             flattened=image is not None and below is None))
        widths.append(layers[-1].units)
    for layer, child in zip(layers[:-1], item.value[:-1]):
        if layer.units == AUTO:
            raise item_error(child.value["units"], "units: auto is for the last layer only "
                             "(its size is the data's number of classes or target columns)",
                             "give this layer a number of units")
    if layers[-1].kind != "dense":  # before the activations: what comes after the output
        child = item.value[-1]
        raise item_error(child.value.get("kind", child),
                         f"the last layer is the output layer and must be dense; a "
                         f"{layers[-1].kind} layer cannot come after it",
                         "end the stack with {units: K, activation: ...}", at_key=True)
    for index, child in enumerate(item.value):
        _check_position(layers[index], child, last=index == len(layers) - 1)
        _check_skip(layers[index], child, index + 1, widths)
    return tuple(layers)


def _layer(item: Item, n_in: int | None, image: tuple | None = None,
           flattened: bool = False) -> LayerSpec:
    """One entry of ``layers:``: ``kind:`` (dense when ``units:`` is given), the kind's
    options, ``activation:`` and ``skip:``; ``image``: its input's (C, H, W) where that is an
    image (``flattened``: a flatten came below)."""
    if not isinstance(item.value, dict):
        raise expected(item, "a layer: a mapping such as {units: 10, activation: relu} or "
                             "{kind: batch_norm}")
    kind = LAYER_KINDS[_registered(LAYER_KINDS, item.value["kind"])
                       if "kind" in item.value else "dense"]
    schema: dict[str, Check] = {option.key: _option_check(kind, option)
                                for option in kind.options if option.key == "units"}
    if kind.activation:
        schema["activation"] = _activation
    schema |= {option.key: _option_check(kind, option) for option in kind.options}
    schema |= {"skip": _integer(0, MAX_LAYERS), "kind": lambda child: kind.name}
    required = tuple(o.key for o in kind.options if o.default is None)
    what = (f"a {kind.name} layer: a mapping" if kind.name != "dense"
            else "a layer: a mapping such as {units: 10, activation: relu},")
    fields = _fields(item, schema, required, what)
    values = {key: schema[key](child) for key, child in fields.items()}
    options = {o.key: values.get(o.key, o.default) for o in kind.options}
    units = kind.width(n_in or 0, options)
    out_image = _image_out(kind, item, fields, options, image, flattened)
    if kind.image != "flat" and image is not None:
        units = math.prod(out_image or image)
    activation = values.get("activation", ActivationSpec("identity"))
    given = tuple(sorted((o.key, options[o.key]) for o in kind.options
                         if o.key != "units" and options[o.key] != o.default))
    return LayerSpec(units, activation, kind.name, given, values.get("skip"), out_image)


def _image_out(kind, item: Item, fields: dict, options: dict, image: tuple | None,
               flattened: bool) -> tuple | None:
    """The (C, H, W) a layer gives, from its input's; a located error where the kind and its
    input do not fit (a flat kind fed an image, an image kind fed a flat vector, a kernel or
    pool that does not fit)."""
    where = item.value.get("kind", item)
    shown = "x".join(map(str, image)) if image is not None else ""
    if kind.image == "flat":
        if image is not None:
            raise item_error(where, f"a {kind.name} layer takes a flat vector, but its input "
                                    f"is a {shown} (C x H x W) image",
                             "add {kind: flatten} before it", at_key=True)
        return None
    if image is None:
        if kind.image == "any":
            return None
        why = ("its input was flattened below (a flatten gives a flat vector)" if flattened
               else "its input is a flat vector")
        raise item_error(where, f"a {kind.name} layer takes an image, but {why}",
                         "give input: [C, H, W] and put the image layers before flatten",
                         at_key=True)
    try:
        return kind.image_out(image, options | {"image": image})
    except ImageError as err:
        at = fields.get(err.key, where) if err.key else where
        raise item_error(at, f"{err.message} (input {shown})", err.hint, at_key=True) from None


def _option_check(kind, option) -> Check:
    if option.key == "units":  # a layer's width, checked as every width is (auto: the data's)
        return _size_or_auto
    if option.boolean:
        return _boolean
    if option.integer:
        def integer(item: Item) -> int:
            value = item.value
            if isinstance(value, bool) or not isinstance(value, int) or not option.check(value):
                raise expected(item, option.expected)
            return value
        return integer
    return _real(option.check, option.expected)


def _check_skip(layer: LayerSpec, item: Item, l: int, widths: list) -> None:
    """``skip: K`` adds a_K to z_l: K an earlier layer (0 is the input) of the same width."""
    if layer.skip is None:
        return
    where = item.value["skip"]
    K = layer.skip
    if K >= l:
        raise item_error(where, f"skip: {K} names layer {K}, but a skip can only add the output "
                                f"of an earlier layer (0 for the input, up to {l - 1})",
                         f"use a K from 0 to {l - 1}")
    if widths[K] != layer.units:
        name = "the input" if K == 0 else f"layer {K}"
        raise item_error(where, f"skip: {K} adds a_{K} to z_{l}, but {name} has {widths[K]} "
                                f"units and layer {l} has {layer.units}",
                         "skip to a layer of the same width, or change the units")


def _check_position(layer: LayerSpec, item: Item, last: bool) -> None:
    """A last-layer-only activation (softmax) only there; a vector one on more than one unit;
    the output layer a dense one."""
    if "activation" not in item.value:
        return
    activation = item.value["activation"]
    name = layer.activation.name
    declaration = ACTIVATIONS[name]
    if declaration.last_layer_only and not last:
        raise item_error(activation, f"{name} is only allowed on the last layer (it turns the "
                                     "outputs into a probability distribution)",
                         "use relu, tanh or sigmoid in hidden layers")
    constant = _single_unit_value(declaration) if layer.units == 1 else None
    if constant is not None:
        raise item_error(activation, f"{name} of a single unit is always {constant}, so nothing "
                                     "can be learnt",
                         "for one output use sigmoid (with binary_crossentropy)")


def _single_unit_value(declaration: Activation):
    """The constant a vector activation gives on one unit (softmax: 1), else None."""
    if not declaration.vector:
        return None
    z, k = sp.IndexedBase("z"), sp.Symbol("k", integer=True, positive=True)
    value = sp.simplify(declaration.expr(z, 1, k, 1).doit())
    return value if not value.free_symbols else None


def _activation(item: Item) -> ActivationSpec:
    return ActivationSpec(*_with_params(item, ACTIVATIONS, "an activation", "relu",
                                        "{name: leaky_relu, alpha: 0.1}"))


def _with_params(item: Item, registry: Registry, what: str, plain: str,
                 mapping: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """A declaration's name, written alone (``relu``) or as a mapping with its parameters
    (``{name: leaky_relu, alpha: 0.1}``), and every parameter's value, defaults filled, sorted."""
    if isinstance(item.value, str):
        name_item, param_items = item, {}
    elif isinstance(item.value, dict):
        if "name" not in item.value:
            raise SpecError(f"missing required key 'name' ({what} given as a mapping "
                            f"looks like {mapping})",
                            line=item.owner_line, field=join(item.path, "name"))
        name_item = item.value["name"]
        param_items = {key: child for key, child in item.value.items() if key != "name"}
    else:
        raise expected(item, f"{what} name such as {plain}, or a mapping such as {mapping}")
    declaration = registry[_registered(registry, name_item)]
    values = {key: param.default for key, param in declaration.params.items()}
    for key, child in param_items.items():
        values[key] = _param(declaration, key, child)
    return declaration.name, tuple(sorted((key, float(value)) for key, value in values.items()))


def _param(declaration: Activation | Loss, key: str, item: Item) -> float:
    param = declaration.params.get(key)
    if param is None:
        allowed = ", ".join(declaration.params)
        takes = f"its parameters are: {allowed}" if allowed else "it takes no parameters"
        raise item_error(item, f"unknown parameter {key!r} of {declaration.name} ({takes})",
                         did_you_mean(key, declaration.params), at_key=True)
    return _real_value(item, param.check, param.expected)




# ----------------------------------------------------------------------------- loss

def _loss(item: Item) -> tuple[str, tuple[tuple[str, float], ...]]:
    """``huber`` or ``{name: huber, delta: 2.5}``: the loss's name and its parameters."""
    return _with_params(item, LOSSES, "a loss", "mse", "{name: huber, delta: 1.0}")


def _check_loss_fits(loss_name: str, item: Item, layers: tuple[LayerSpec, ...]) -> None:
    """A cross-entropy needs probabilities out; a categorical one needs two classes or more."""
    loss, output = LOSSES[loss_name], layers[-1]
    if loss.one_hot and output.units == 1:
        raise item_error(item, f"{loss_name} needs one output unit per class (at least 2), "
                               "but the last layer has 1 unit",
                         "for two classes use 1 unit with sigmoid and binary_crossentropy")
    last = output.activation.name
    if loss.unit_outputs_reason and ACTIVATIONS[last].vector:
        raise item_error(item, f"{loss_name} cannot follow {last!r}: {loss.unit_outputs_reason}",
                         "use sigmoid with binary_crossentropy, or softmax with "
                         "categorical_crossentropy")
    if loss.needs_probabilities and not ACTIVATIONS[last].is_probability:
        fix = "softmax" if loss.one_hot else "sigmoid"
        raise item_error(item, f"{loss_name} needs outputs in (0, 1), but the last layer's "
                               f"activation {last!r} can give values outside (0, 1); "
                               "use sigmoid or softmax on the last layer",
                         f"use activation: {fix} on the last layer")


def _pairing_notices(loss_name: str, item: Item, layers: tuple[LayerSpec, ...]) -> tuple[str, ...]:
    """A pairing that derives and proves but cannot learn, said at the loss's line: sigmoid
    outputs under a categorical cross-entropy (-sum y log a only pushes the true class's
    output up; every sigmoid can reach 1 at once, loss 0 and accuracy by chance)."""
    loss, last = LOSSES[loss_name], layers[-1].activation.name
    if loss.labels in ("categorical", "sparse") and not ACTIVATIONS[last].vector:
        return (f"{item.line}: loss: {loss_name} with {last!r} outputs cannot learn: it only "
                f"pushes the true class's output up, and every {last} unit can reach 1 at once "
                "(loss 0, accuracy by chance); use activation: softmax on the last layer, or "
                "binary_crossentropy for independent yes/no labels",)
    return ()


# ----------------------------------------------------------------------------- data

def _dataset(item: Item) -> str:
    """A name of ``DATASETS``, or a path kind written with its path (``csv:data.csv``)."""
    value = item.value
    shown = written_names()
    if not isinstance(value, str):
        raise expected(item, f"a dataset: one of {', '.join(shown)}")
    kind, colon, rest = value.partition(":")
    declaration = DATASETS[kind] if kind in DATASETS else None
    if declaration is not None and declaration.path:
        if not colon:
            raise item_error(item, f"dataset {value!r} needs a path: {declaration.written}")
        if not rest.strip():
            raise item_error(item, f"dataset {value!r} needs a path after the colon "
                                   f"({declaration.written})")
        return value
    if colon:
        kinds = [name for name in DATASETS if DATASETS[name].path]
        guess = nearest(kind, kinds)
        raise item_error(item, f"unknown dataset kind {kind!r} in {value!r} (expected "
                               f"{' or '.join(DATASETS[name].written for name in kinds)})",
                         f"did you mean '{guess}:{rest}'?" if guess else None)
    if declaration is None:
        raise item_error(item, f"unknown dataset {value!r} (expected one of: {', '.join(shown)})",
                         did_you_mean(value, shown) or _datasets_described())
    return value


def _datasets_described() -> str:
    """Every data set with what it holds, for a name that is near none of them."""
    return "the data sets: " + "; ".join(f"{DATASETS[name].written} ({DATASETS[name].description})"
                                         for name in DATASETS)


def _column_names(item: Item) -> tuple[str, ...]:
    """A non-empty list of distinct column names (a single name is a list of one)."""
    if isinstance(item.value, str):
        return (_string(item),)
    if not isinstance(item.value, list) or not item.value:
        raise expected(item, "a column name or a list of column names")
    names = tuple(_string(child) for child in item.value)
    for i, (child, name) in enumerate(zip(item.value, names)):
        if name in names[:i]:
            raise item_error(child, f"column {name!r} is listed twice")
    return names


def _target(item: Item) -> str | tuple[str, ...]:
    """One label column, or a list of value columns (one output unit each)."""
    names = _column_names(item)
    return names[0] if isinstance(item.value, str) else names


def _delimiter(item: Item) -> str:
    """One character; ``tab`` (or a tab in double quotes) for tab-separated files."""
    value = item.value
    if value == "tab":
        return "\t"
    if not isinstance(value, str) or len(value) != 1 or value in "\"\r\n" or value.isalnum():
        hint = ('for tabs write delimiter: tab (or "\\t" in double quotes)'
                if isinstance(value, str) and value.strip() in ("\\t", "\\\\t") else None)
        raise expected(item, "one character that separates the fields, such as ';' or tab",
                       hint)
    return value


def _categorical(item: Item) -> str | tuple[str, ...]:
    """``auto`` (every feature column holding text) or the category columns by name."""
    if item.value == AUTO:
        return AUTO
    return _column_names(item)


def _test_table(item: Item) -> str:
    """``csv:PATH``: a separate test table."""
    value = _string(item)
    kind, colon, rest = value.partition(":")
    if kind != "csv" or not colon or not rest.strip():
        raise expected(item, "a test table written csv:PATH", f"write test: csv:{value}"
                       if not colon else None)
    return value


_DATA_KEYS: dict[str, Check] = {
    "dataset": _dataset,
    "test_fraction": _real(lambda x: 0 <= x < 1, "a finite number with 0 <= test_fraction < 1 "
                                                 "(0: no test set)"),
    "validation_fraction": _real(lambda x: 0 <= x < 1,
                                 "a finite number with 0 <= validation_fraction < 1"),
    "split_seed": _integer(0, 2**32 - 1),
    "target": _target,
    "features": _column_names,
    "drop": _column_names,
    "test": _test_table,
    "scaling": _choice(SCALINGS, "scaling"),
    "delimiter": _delimiter,
    "missing": _choice(MISSING_CHOICES, "missing-value strategy"),
    "categorical": _categorical,
}
_TABLE_KEYS = ("target", "features", "drop", "test", "delimiter", "missing", "categorical")  # a table's keys only


def _data_lines(item: Item) -> tuple[tuple[str, int], ...]:
    """Each column-naming field's line, so that a column missing from the file is located."""
    lines = []
    for key in ("target", "features", "drop", "test", "delimiter", "categorical"):
        child = item.value.get(key)
        if child is None:
            continue
        lines.append((key, child.owner_line))
        if isinstance(child.value, list):
            lines.extend((f"{key}[{i}]", entry.line) for i, entry in enumerate(child.value))
    return tuple(lines)


def _data(item: Item) -> DataSpec:
    values = _section(_DATA_KEYS)(item)
    data = DataSpec(**values, lines=_data_lines(item))
    declaration = DATASETS[data.dataset.partition(":")[0]]
    if declaration.takes_target and data.target is None:
        raise SpecError(f"missing required key 'target' (the label column of {data.dataset})",
                        line=item.owner_line, field=join(item.path, "target"),
                        hint="add target: <column name>")
    if not declaration.takes_target:
        takers = ", ".join(f"{name}:" for name in DATASETS if DATASETS[name].takes_target)
        for key in _TABLE_KEYS:
            if key in values:
                raise item_error(item.value[key], f"{key!r} is only used with {takers} "
                                                  f"datasets, not with {data.dataset!r}",
                                 "remove it", at_key=True)
    if data.features is not None and data.drop:
        raise item_error(item.value["drop"], "give either features (the columns to use) or "
                                             "drop (the columns to leave out), not both",
                         "keep one of them", at_key=True)
    for key in ("features", "drop"):
        for i, name in enumerate(values.get(key) or ()):
            if name in data.targets:
                raise item_error(item.value[key].value[i], f"{name!r} is the target: it "
                                 f"cannot also be {'a feature' if key == 'features' else 'dropped'}")
    if data.test is not None and "test_fraction" in values:
        raise item_error(item.value["test_fraction"], "test_fraction splits a test set off the "
                         "data, but data.test gives one already", "remove one of them",
                         at_key=True)
    return data


# ----------------------------------------------------------------------------- the spec

_TOP: dict[str, Check] = {
    "name": _name,
    "input": _input,
    "layers": _layers,
    "loss": _loss,
    "regularization": _or_null(lambda item: Regularization(**_REGULARIZATION(item))),
    "init": _or_null(_choice(_INITS, "initialisation")),
    "dtype": _or_null(_choice(_DTYPES, "dtype")),
    "training": _or_null(_training),
    "data": _or_null(_data),
    "claims": _or_null(_string),
}
_REQUIRED_TOP = ("name", "input", "layers", "loss")


def _netspec(root: Item, filename: str) -> NetSpec:
    fields = _fields(root, _TOP, _REQUIRED_TOP, "a spec: a mapping")
    values = {key: _TOP[key](child) for key, child in fields.items() if key != "layers"}
    if isinstance(values.get("input"), tuple):  # an image: its rows hold C·H·W entries
        values["image"] = values["input"]
        values["input"] = math.prod(values["image"])
    if "layers" in fields:  # each kind's width (and image) follows from the one below it
        values["layers"] = _layers(fields["layers"], values.get("input"), values.get("image"))
    values["loss"], values["loss_params"] = values["loss"]
    _check_loss_fits(values["loss"], fields["loss"], values["layers"])
    if (values["input"] == AUTO or values["layers"][-1].units == AUTO) \
            and values.get("data") is None:
        which = "input" if values["input"] == AUTO else "layers"
        raise item_error(fields[which], "a size written auto is taken from the data, but the "
                         "spec has no data: section", "add data: {dataset: csv:PATH, target: "
                         "COLUMN}, or give the size", at_key=True)
    notices: tuple[str, ...] = ()
    if values.get("training") is not None:
        values["training"], notices = values["training"]
    notices = _pairing_notices(values["loss"], fields["loss"], values["layers"]) + notices
    given = {key: value for key, value in values.items() if value is not None}
    if "claims" in given:
        given["claims"] = _claims_path(fields["claims"], given["claims"], filename)
    return NetSpec(**given, source=filename,
                   notices=tuple(f"{filename}:{notice}" for notice in notices))


def _claims_path(item: Item, value: str, filename: str) -> str:
    """The claims file, relative to the spec's folder (read when the claims are checked, so
    that a spec's text can be loaded away from its folder)."""
    return value if filename.startswith("<") else str(Path(filename).parent / value)
