"""Read a network spec (YAML) into a checked ``NetSpec``.

YAML is only *composed* (``yaml.compose`` with the safe loader), never constructed: plain
values are built here from the nodes, so no tag can run code and every value keeps its line
for messages.  The schema is a set of tables (section -> key -> check); every problem is a
``SpecError`` naming the file, line and field, what was expected, and the nearest valid name.
"""

from __future__ import annotations

import difflib
import keyword
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .activations import ACTIVATIONS, Activation
from .errors import SpecError
from .losses import LOSSES
from .netspec import ActivationSpec, DataSpec, LayerSpec, NetSpec, Regularization, TrainingSpec
from .registry import UnknownName

__all__ = ["load_spec", "load_spec_text"]

MAX_UNITS = 100_000
MAX_LAYERS = 1000
MAX_NAME_LENGTH = 100
_MAX_DEPTH = 32  # nesting of YAML collections; the schema itself needs 4
_MAX_VALUES = 100_000  # values built from the document, aliases expanded


# ----------------------------------------------------------------------------- public API

def load_spec(path: str | Path) -> NetSpec:
    """Read and check the spec file at ``path``."""
    return load_spec_text(read_text(path, "the spec"), str(path))


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content (a byte-order mark allowed), or a SpecError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        file=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror or exc}", file=str(path)) from None


def load_spec_text(text: str, filename: str = "<string>") -> NetSpec:
    """Check the spec in ``text``; ``filename`` is used in messages and as ``NetSpec.source``."""
    try:
        root = _build_document(text)
        return _netspec(root, filename)
    except SpecError as err:
        err.file = err.file or filename
        raise


# ----------------------------------------------------------------------------- YAML -> items

@dataclass(frozen=True)
class _Item:
    """A plain value with where it came from.

    ``value`` is None, bool, int, float, str, ``list[_Item]`` or ``dict[str, _Item]``.
    """

    value: Any
    line: int  # 1-based line of the value
    path: str  # dotted field path, e.g. "layers[1].activation"
    key_line: int | None = None  # line of the key that holds it, if any
    text: str = ""  # source text of a scalar
    plain: bool = False  # an unquoted scalar

    @property
    def owner_line(self) -> int:
        """The line naming this value: its key's, else its own."""
        return self.key_line if self.key_line is not None else self.line


def _error(item: _Item, message: str, hint: str | None = None, *, at_key: bool = False):
    return SpecError(message, line=item.owner_line if at_key else item.line,
                     field=item.path, hint=hint)


_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_COLLECTION_TAGS = {yaml.SequenceNode: _TAG + "seq", yaml.MappingNode: _TAG + "map"}
_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _build_document(text: str) -> _Item:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc) from None
    except yaml.reader.ReaderError as exc:
        raise SpecError(f"invalid YAML: {exc.reason} {chr(exc.character)!r}",
                        line=text.count("\n", 0, exc.position) + 1) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply") from None
    root = _Builder().build(node, "") if node is not None else None
    if root is None or root.value is None:
        raise SpecError("the spec is empty; expected a mapping with the keys "
                        + ", ".join(_REQUIRED_TOP), line=1)
    return root


def _yaml_error(exc: yaml.MarkedYAMLError) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    if exc.context and problem.startswith("but "):  # "expected X", "but found Y"
        problem = f"{exc.context}, {problem}"
    elif exc.context:  # "while scanning ..."
        problem = f"{problem} ({exc.context})"
    hint = "indent with spaces; YAML does not allow tabs" if "'\\t'" in problem else None
    return SpecError(f"invalid YAML: {problem}",
                     line=mark.line + 1 if mark else None, hint=hint)


class _Builder:
    """Turns composed nodes into ``_Item`` trees, allowing only plain YAML."""

    def __init__(self) -> None:
        self.count = 0
        self.open: set[int] = set()  # ids of collections being built (recursive aliases)

    def build(self, node: yaml.Node, path: str, key_line: int | None = None) -> _Item:
        line = node.start_mark.line + 1
        where = _Item(None, line, path, key_line)
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _error(where, f"the spec has more than {_MAX_VALUES} values "
                                "(after expanding aliases)")
        self._check_tag(node, where)
        if isinstance(node, yaml.ScalarNode):
            return _Item(_scalar(node, where), line, path, key_line, node.value,
                         node.style is None)
        if id(node) in self.open:
            raise _error(where, "an alias refers to a value that contains it")
        if len(self.open) >= _MAX_DEPTH:
            raise _error(where, f"nested more than {_MAX_DEPTH} levels deep")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                value: Any = [self.build(child, f"{path}[{i}]")
                              for i, child in enumerate(node.value)]
            else:
                value = self._mapping(node, path)
        finally:
            self.open.discard(id(node))
        return _Item(value, line, path, key_line)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, _Item]:
        result: dict[str, _Item] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = self._key(key_node, path, key_line)
            child = _join(path, key)
            if key in result:
                raise SpecError(f"duplicate key {key!r} (first given at line "
                                f"{result[key].owner_line})", line=key_line, field=child)
            result[key] = self.build(value_node, child, key_line)
        return result

    def _key(self, node: yaml.Node, path: str, line: int) -> str:
        where = _Item(None, line, path)
        if node.tag == _TAG + "merge":
            raise _error(where, "merge keys ('<<') are not supported; write the keys out")
        self._check_tag(node, where)
        if not isinstance(node, yaml.ScalarNode):
            raise _error(where, "expected a key name, got a list or mapping as a key")
        if node.tag != _TAG + "str":
            key = _Item(_scalar(node, where), line, path, text=node.value)
            raise _error(where, f"expected a key name, got {_describe(key)}",
                         f"quote the key: '{node.value}'")
        return node.value

    @staticmethod
    def _check_tag(node: yaml.Node, where: _Item) -> None:
        allowed = _COLLECTION_TAGS.get(type(node))
        if node.tag == allowed or (allowed is None and node.tag in _SCALAR_TAGS):
            return
        tag = node.tag.replace(_TAG, "!!", 1)
        raise _error(where, f"YAML tag {tag!r} found: tags are not allowed (a spec holds only "
                            "plain values, lists and mappings; YAML is read safely and nothing "
                            "was executed)")


def _scalar(node: yaml.ScalarNode, where: _Item) -> Any:
    if node.tag in (_TAG + "str", _TAG + "timestamp"):
        return node.value
    try:
        return _SCALAR_CONSTRUCTOR.yaml_constructors[node.tag](_SCALAR_CONSTRUCTOR, node)
    except (ValueError, KeyError, TypeError):  # e.g. "!!int abc"
        tag = node.tag.replace(_TAG, "!!", 1)
        raise _error(where, f"{node.value!r} cannot be read as {tag}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ----------------------------------------------------------------------------- value checks

Check = Callable[[_Item], Any]


def _describe(item: _Item) -> str:
    """How a value reads in a message: ``'abc' (a string)``, ``true (a boolean)``, ..."""
    value = item.value
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{item.text} (a boolean)"
    if isinstance(value, (int, float)):
        return item.text
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a mapping"


def _expected(item: _Item, expected: str, hint: str | None = None) -> SpecError:
    return _error(item, f"expected {expected}, got {_describe(item)}", hint)


def _nearest(word: str, options: Iterable[str]) -> str | None:
    options = list(options)
    for option in options:
        if option.lower() == word.lower():
            return option
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return match[0] if match else None


def _did_you_mean(word: str, options: Iterable[str]) -> str | None:
    match = _nearest(word, options)
    return f"did you mean {match!r}?" if match else None


def _string(item: _Item) -> str:
    if not isinstance(item.value, str) or not item.value.strip():
        raise _expected(item, "a non-empty string")
    return item.value


def _choice(options: tuple[str, ...], what: str) -> Check:
    def check(item: _Item) -> str:
        if not isinstance(item.value, str):
            raise _expected(item, f"a {what}: one of {', '.join(options)}")
        if item.value not in options:
            raise _error(item, f"unknown {what} {item.value!r} "
                               f"(expected one of: {', '.join(options)})",
                         _did_you_mean(item.value, options))
        return item.value
    return check


def _integer(low: int, high: int) -> Check:
    def check(item: _Item) -> int:
        value = item.value
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _expected(item, f"a whole number from {low} to {high}")
        return value
    return check


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(item: _Item) -> float | None:
    """The value as a float if it is a real number (``1e-4`` too, which YAML 1.1 reads as text)."""
    value = item.value
    if isinstance(value, str) and item.plain and _EXPONENT_NUMBER.fullmatch(value):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _real_value(item: _Item, accept: Callable[[float], bool], expected: str) -> float:
    number = _number(item)
    if number is None:
        raise _expected(item, expected)
    if not math.isfinite(number):
        raise _error(item, f"expected {expected}, got {item.text} (not a finite number)")
    if not accept(number):
        raise _expected(item, expected)
    return number


def _real(accept: Callable[[float], bool], expected: str) -> Check:
    return lambda item: _real_value(item, accept, expected)


def _boolean(item: _Item) -> bool:
    if isinstance(item.value, bool) and item.text.lower() not in ("true", "false"):
        raise _error(item, f"expected true or false, got {item.text}")
    if not isinstance(item.value, bool):
        raise _expected(item, "true or false")
    return item.value


def _or_null(check: Check) -> Check:
    """An optional section: null means "not given" (the default)."""
    return lambda item: None if item.value is None else check(item)


# ----------------------------------------------------------------------------- sections

def _fields(item: _Item, schema: dict[str, Check], required: tuple[str, ...] = (),
            what: str = "a mapping") -> dict[str, _Item]:
    """The mapping's items after checking it has only known keys and all required ones."""
    if not isinstance(item.value, dict):
        raise _expected(item, f"{what} with the keys {', '.join(schema)}")
    for key, child in item.value.items():
        if key not in schema:
            raise _error(child, f"unknown key {key!r} (expected one of: {', '.join(schema)})",
                         _did_you_mean(key, schema), at_key=True)
    missing = [key for key in required if key not in item.value]
    if missing:
        raise SpecError(f"missing required key {missing[0]!r} "
                        f"(required: {', '.join(required)})",
                        line=item.owner_line, field=_join(item.path, missing[0]))
    return item.value


def _section(schema: dict[str, Check], required: tuple[str, ...] = (),
             what: str = "a mapping") -> Check:
    """A check of a mapping section giving {key: checked value} for the keys present."""
    def check(item: _Item) -> dict[str, Any]:
        fields = _fields(item, schema, required, what)
        return {key: schema[key](child) for key, child in fields.items()}
    return check


_INITS = ("he", "xavier", "normal", "zeros")
_DTYPES = ("float32", "float64")
_OPTIMIZERS = ("batch", "sgd", "minibatch")
_DATASETS = ("digits", "iris", "breast_cancer", "diabetes")
_DATASET_KINDS = ("mnist", "csv")  # written kind:PATH
_DATASETS_SHOWN = (*_DATASETS, "mnist:DIR", "csv:PATH")

_size = _integer(1, MAX_UNITS)

_REGULARIZATION = _section({
    "l1": _real(lambda x: x >= 0, "a finite number >= 0"),
    "l2": _real(lambda x: x >= 0, "a finite number >= 0"),
})

_TRAINING = _section({
    "optimizer": _choice(_OPTIMIZERS, "optimizer"),
    "learning_rate": _real(lambda x: 0 < x <= 1e3, "a finite number > 0 and <= 1000"),
    "batch_size": _integer(1, 10**7),
    "epochs": _integer(1, 10**6),
    "shuffle": _boolean,
    "seed": _integer(0, 2**32 - 1),
})


# ----------------------------------------------------------------------------- name

def _name(item: _Item) -> str:
    name = item.value
    if not isinstance(name, str):
        raise _expected(item, "a Python identifier such as 'my_net'")
    problem = _name_problem(name)
    if problem:
        fixed = _identifier_like(name)
        raise _error(item, f"network name {name!r} {problem} (expected a Python identifier: "
                           f"at most {MAX_NAME_LENGTH} ASCII letters, digits and '_', not "
                           "starting with a digit, not a keyword; it names the generated module)",
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

def _layers(item: _Item) -> tuple[LayerSpec, ...]:
    if not isinstance(item.value, list) or not item.value:
        raise _expected(item, "a non-empty list of layers such as "
                              "- {units: 10, activation: relu}")
    if len(item.value) > MAX_LAYERS:
        raise _error(item, f"expected at most {MAX_LAYERS} layers, got {len(item.value)}",
                     at_key=True)
    layers = tuple(_layer(child) for child in item.value)
    for index, child in enumerate(item.value):
        _check_position(layers[index], child, last=index == len(layers) - 1)
    return layers


def _layer(item: _Item) -> LayerSpec:
    return LayerSpec(**_LAYER(item))


def _check_position(layer: LayerSpec, item: _Item, last: bool) -> None:
    """Softmax only as the last layer, and there with more than one unit."""
    activation = item.value["activation"]
    name = layer.activation.name
    if ACTIVATIONS[name].last_layer_only and not last:
        raise _error(activation, f"{name} is only allowed on the last layer (it turns the "
                                 "outputs into a probability distribution)",
                     "use relu, tanh or sigmoid in hidden layers")
    if name == "softmax" and layer.units == 1:
        raise _error(activation, "softmax of a single unit is always 1, so nothing can be learnt",
                     "for one output use sigmoid (with binary_crossentropy)")


def _activation(item: _Item) -> ActivationSpec:
    if isinstance(item.value, str):
        name_item, param_items = item, {}
    elif isinstance(item.value, dict):
        if "name" not in item.value:
            raise SpecError("missing required key 'name' (an activation given as a mapping "
                            "looks like {name: leaky_relu, alpha: 0.1})",
                            line=item.owner_line, field=_join(item.path, "name"))
        name_item = item.value["name"]
        param_items = {key: child for key, child in item.value.items() if key != "name"}
    else:
        raise _expected(item, "an activation name such as relu, "
                              "or a mapping such as {name: leaky_relu, alpha: 0.1}")
    activation = ACTIVATIONS[_activation_name(name_item)]
    values = {key: param.default for key, param in activation.params.items()}
    for key, child in param_items.items():
        values[key] = _param(activation, key, child)
    return ActivationSpec(activation.name,
                          tuple(sorted((key, float(value)) for key, value in values.items())))


def _activation_name(item: _Item) -> str:
    known = ", ".join(ACTIVATIONS.names())
    if not isinstance(item.value, str):
        raise _expected(item, f"an activation name: one of {known}")
    reason = ACTIVATIONS.refused_reason(item.value)
    if reason:
        raise _error(item, f"activation {item.value!r} cannot be used: {reason}")
    try:
        return ACTIVATIONS.canonical(item.value)
    except UnknownName as unknown:
        suggestion = _nearest(item.value, [*ACTIVATIONS.names(), *ACTIVATIONS.aliases()])
        suggestion = suggestion or unknown.suggestion
        raise _error(item, f"unknown activation {item.value!r} (expected one of: {known})",
                     f"did you mean {suggestion!r}?" if suggestion else None) from None


def _param(activation: Activation, key: str, item: _Item) -> float:
    param = activation.params.get(key)
    if param is None:
        allowed = ", ".join(activation.params)
        expected = f"its parameters are: {allowed}" if allowed else "it takes no parameters"
        raise _error(item, f"unknown parameter {key!r} of {activation.name} ({expected})",
                     _did_you_mean(key, activation.params), at_key=True)
    return _real_value(item, param.check, param.expected)


_LAYER = _section({"units": _size, "activation": _activation}, ("units", "activation"),
                  "a layer: a mapping such as {units: 10, activation: relu},")


# ----------------------------------------------------------------------------- loss

def _loss_name(item: _Item) -> str:
    known = ", ".join(LOSSES.names())
    if not isinstance(item.value, str):
        raise _expected(item, f"a loss name: one of {known}")
    try:
        return LOSSES.canonical(item.value)
    except UnknownName as unknown:
        suggestion = _nearest(item.value, [*LOSSES.names(), *LOSSES.aliases()])
        suggestion = suggestion or unknown.suggestion
        raise _error(item, f"unknown loss {item.value!r} (expected one of: {known})",
                     f"did you mean {suggestion!r}?" if suggestion else None) from None


def _check_loss_fits(loss_name: str, item: _Item, layers: tuple[LayerSpec, ...]) -> None:
    """A cross-entropy needs probabilities out; a categorical one needs two classes or more."""
    loss, output = LOSSES[loss_name], layers[-1]
    if loss.one_hot and output.units == 1:
        raise _error(item, f"{loss_name} needs one output unit per class (at least 2), "
                           "but the last layer has 1 unit",
                     "for two classes use 1 unit with sigmoid and binary_crossentropy")
    last = output.activation.name
    if loss.unit_outputs_reason and ACTIVATIONS[last].vector:
        raise _error(item, f"{loss_name} cannot follow {last!r}: {loss.unit_outputs_reason}",
                     "use sigmoid with binary_crossentropy, or softmax with "
                     "categorical_crossentropy")
    if loss.needs_probabilities and not ACTIVATIONS[last].is_probability:
        fix = "softmax" if loss.one_hot else "sigmoid"
        raise _error(item, f"{loss_name} needs outputs in (0, 1), but the last layer's "
                           f"activation {last!r} can give values outside (0, 1); "
                           "use sigmoid or softmax on the last layer",
                     f"use activation: {fix} on the last layer")


# ----------------------------------------------------------------------------- data

def _dataset(item: _Item) -> str:
    value = item.value
    if not isinstance(value, str):
        raise _expected(item, f"a dataset: one of {', '.join(_DATASETS_SHOWN)}")
    kind, colon, rest = value.partition(":")
    if colon and kind in _DATASET_KINDS:
        if not rest.strip():
            raise _error(item, f"dataset {value!r} needs a path after the colon "
                               f"({'mnist:DIR' if kind == 'mnist' else 'csv:PATH'})")
        return value
    if colon:
        guess = _nearest(kind, _DATASET_KINDS)
        raise _error(item, f"unknown dataset kind {kind!r} in {value!r} "
                           f"(expected mnist:DIR or csv:PATH)",
                     f"did you mean '{guess}:{rest}'?" if guess else None)
    if value in _DATASET_KINDS:
        raise _error(item, f"dataset {value!r} needs a path: {value}:"
                           f"{'DIR' if value == 'mnist' else 'PATH'}")
    if value not in _DATASETS:
        raise _error(item, f"unknown dataset {value!r} "
                           f"(expected one of: {', '.join(_DATASETS_SHOWN)})",
                     _did_you_mean(value, _DATASETS_SHOWN))
    return value


_DATA_KEYS: dict[str, Check] = {
    "dataset": _dataset,
    "test_fraction": _real(lambda x: 0 < x < 1, "a finite number with 0 < test_fraction < 1"),
    "target": _string,
}


def _data(item: _Item) -> DataSpec:
    values = _section(_DATA_KEYS)(item)
    data = DataSpec(**values)
    is_csv = data.dataset.startswith("csv:")
    if is_csv and data.target is None:
        raise SpecError(f"missing required key 'target' (the label column of {data.dataset})",
                        line=item.owner_line, field=_join(item.path, "target"),
                        hint="add target: <column name>")
    if not is_csv and data.target is not None:
        raise _error(item.value["target"], f"'target' is only used with csv: datasets, "
                                           f"not with {data.dataset!r}",
                     "remove it", at_key=True)
    return data


# ----------------------------------------------------------------------------- the spec

_TOP: dict[str, Check] = {
    "name": _name,
    "input": _size,
    "layers": _layers,
    "loss": _loss_name,
    "regularization": _or_null(lambda item: Regularization(**_REGULARIZATION(item))),
    "init": _or_null(_choice(_INITS, "initialisation")),
    "dtype": _or_null(_choice(_DTYPES, "dtype")),
    "training": _or_null(lambda item: TrainingSpec(**_TRAINING(item))),
    "data": _or_null(_data),
}
_REQUIRED_TOP = ("name", "input", "layers", "loss")


def _netspec(root: _Item, filename: str) -> NetSpec:
    fields = _fields(root, _TOP, _REQUIRED_TOP, "a spec: a mapping")
    values = {key: _TOP[key](child) for key, child in fields.items()}
    _check_loss_fits(values["loss"], fields["loss"], values["layers"])
    given = {key: value for key, value in values.items() if value is not None}
    return NetSpec(**given, source=filename)
