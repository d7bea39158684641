"""Read YAML into a tree of plain values that each remember their line and field path.

YAML is only *composed* (``yaml.compose`` with the safe loader), never constructed: plain
values are built here from the nodes, so no tag can run code and every value keeps its line
for messages.  The spec reader (``derive.spec``) and the worked example's values file
(``derive.latex.example``) both read their files through ``read_document``; the helpers below
turn a located value into a ``SpecError`` naming the line, the field, what was expected and
the nearest valid name.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import SpecError

__all__ = ["Item", "Builder", "read_text", "read_document", "yaml_error", "item_error",
           "expected", "describe", "nearest", "did_you_mean", "number", "join",
           "MAX_DEPTH", "MAX_VALUES", "MAX_NUMBER_LENGTH"]

MAX_DEPTH = 32  # nesting of YAML collections; the spec's schema itself needs 4
MAX_NUMBER_LENGTH = 400  # characters of a number (Python refuses ints of 4300+ digits)
MAX_VALUES = 100_000  # values built from one document, aliases expanded


@dataclass(frozen=True)
class Item:
    """A plain value with where it came from.

    ``value`` is None, bool, int, float, str, ``list[Item]`` or ``dict[str, Item]``.
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


# ----------------------------------------------------------------------------- reading

def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content (a byte-order mark allowed), or a SpecError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        file=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror or exc}", file=str(path)) from None


def read_document(text: str, empty: str) -> Item:
    """The YAML document in ``text`` as an ``Item`` tree; ``empty`` is the message when it
    holds nothing.  Every problem is a SpecError with the line (the caller adds the file)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise yaml_error(exc) from None
    except yaml.reader.ReaderError as exc:
        raise SpecError(f"invalid YAML: {exc.reason} {chr(exc.character)!r}",
                        line=text.count("\n", 0, exc.position) + 1) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply") from None
    root = Builder().build(node, "") if node is not None else None
    if root is None or root.value is None:
        raise SpecError(empty, line=1)
    return root


def yaml_error(exc: yaml.MarkedYAMLError) -> SpecError:
    """PyYAML's syntax error as one readable line, at its line."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    if exc.context and problem.startswith("but "):  # "expected X", "but found Y"
        problem = f"{exc.context}, {problem}"
    elif exc.context:  # "while scanning ..."
        problem = f"{problem} ({exc.context})"
    hint = "indent with spaces; YAML does not allow tabs" if "'\\t'" in problem else None
    return SpecError(f"invalid YAML: {problem}",
                     line=mark.line + 1 if mark else None, hint=hint)


_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_COLLECTION_TAGS = {yaml.SequenceNode: _TAG + "seq", yaml.MappingNode: _TAG + "map"}
_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class Builder:
    """Turns composed nodes into ``Item`` trees, allowing only plain YAML.

    Refuses tags, merge keys, non-string keys, duplicate keys, recursive aliases, nesting
    deeper than ``MAX_DEPTH`` and more than ``MAX_VALUES`` values (an alias bomb).
    """

    def __init__(self) -> None:
        self.count = 0
        self.open: set[int] = set()  # ids of collections being built (recursive aliases)

    def build(self, node: yaml.Node, path: str, key_line: int | None = None) -> Item:
        line = node.start_mark.line + 1
        where = Item(None, line, path, key_line)
        self.count += 1
        if self.count > MAX_VALUES:
            raise item_error(where, f"the spec has more than {MAX_VALUES} values "
                                    "(after expanding aliases)")
        self._check_tag(node, where)
        if isinstance(node, yaml.ScalarNode):
            return Item(_scalar(node, where), line, path, key_line, node.value,
                        node.style is None)
        if id(node) in self.open:
            raise item_error(where, "an alias refers to a value that contains it")
        if len(self.open) >= MAX_DEPTH:
            raise item_error(where, f"nested more than {MAX_DEPTH} levels deep")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                value: Any = [self.build(child, f"{path}[{i}]")
                              for i, child in enumerate(node.value)]
            else:
                value = self._mapping(node, path)
        finally:
            self.open.discard(id(node))
        return Item(value, line, path, key_line)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, Item]:
        result: dict[str, Item] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = self._key(key_node, path, key_line)
            child = join(path, key)
            if key in result:
                raise SpecError(f"duplicate key {key!r} (first given at line "
                                f"{result[key].owner_line})", line=key_line, field=child)
            result[key] = self.build(value_node, child, key_line)
        return result

    def _key(self, node: yaml.Node, path: str, line: int) -> str:
        where = Item(None, line, path)
        if node.tag == _TAG + "merge":
            raise item_error(where, "merge keys ('<<') are not supported; write the keys out")
        self._check_tag(node, where)
        if not isinstance(node, yaml.ScalarNode):
            raise item_error(where, "expected a key name, got a list or mapping as a key")
        tag = _plain_yaml12(node, where)[0] if _implicit(node) else node.tag
        if tag != _TAG + "str":
            key = Item(_scalar(node, where), line, path, text=node.value)
            raise item_error(where, f"expected a key name, got {describe(key)}",
                             f"quote the key: '{node.value}'")
        return node.value

    @staticmethod
    def _check_tag(node: yaml.Node, where: Item) -> None:
        allowed = _COLLECTION_TAGS.get(type(node))
        if node.tag == allowed or (allowed is None and node.tag in _SCALAR_TAGS):
            return
        tag = node.tag.replace(_TAG, "!!", 1)
        raise item_error(where, f"YAML tag {tag!r} found: tags are not allowed (a spec holds "
                                "only plain values, lists and mappings; YAML is read safely "
                                "and nothing was executed)")


_IMPLICIT = yaml.resolver.Resolver()  # PyYAML's own (YAML 1.1) resolution of plain scalars
_NULL = ("", "~", "null", "Null", "NULL")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = (".nan", ".NaN", ".NAN")
_OTHER_BASE = re.compile(r"[-+]?0([xX][0-9a-fA-F_]+|[oO][0-7_]+|[bB][01_]+)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_BASES = {"x": ("a hexadecimal", 16), "o": ("an octal", 8), "b": ("a binary", 2)}


def _plain_yaml12(node: yaml.ScalarNode, where: Item) -> tuple[str, Any]:
    """(tag, value) of an untagged plain scalar by YAML 1.2's core schema.

    PyYAML resolves plain scalars by YAML 1.1, where ``010`` is 8, ``0x10`` is 16, ``1:00`` is
    60, ``1_000`` is 1000, ``yes``/``on`` are booleans and ``5e3`` is text.  YAML 1.2 reads
    ``5e3`` as a number and the others as text; numbers in another base or with a leading
    zero, which the two versions read differently, are refused with their decimal value.
    """
    text = node.value
    if len(text) > MAX_NUMBER_LENGTH and any(
            pattern.fullmatch(text) for pattern in (_INT, _FLOAT, _OTHER_BASE, _LEADING_ZERO)):
        raise item_error(where, f"a number of {len(text)} characters: numbers here have at "
                                f"most {MAX_NUMBER_LENGTH}")
    if text in _NULL:
        return _TAG + "null", None
    if text in _BOOL:
        return _TAG + "bool", _BOOL[text]
    if _OTHER_BASE.fullmatch(text):
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")[2:].replace("_", "")
        kind, base = _BASES[text.lstrip("+-")[1].lower()]
        decimal = f" (it is {sign * int(digits, base)} in decimal)" if digits else ""
        raise item_error(where, f"{text} is {kind} number: write numbers in decimal{decimal}")
    if _LEADING_ZERO.fullmatch(text):
        raise item_error(where, f"{text} has a leading zero, which YAML 1.1 reads as octal "
                                f"({_octal(text)}) and YAML 1.2 as decimal "
                                f"({int(text, 10)}): write the number without it")
    if _INT.fullmatch(text):
        return _TAG + "int", int(text, 10)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if value == 0 and any(c in "123456789" for c in text.partition("e")[0].partition("E")[0]):
            raise item_error(where, f"{text} is too small to be represented: it would be read "
                                    "as 0", "write 0, or a number above 1e-300")
        return _TAG + "float", value
    if _INF.fullmatch(text):
        return _TAG + "float", -math.inf if text.startswith("-") else math.inf
    if text in _NAN:
        return _TAG + "float", math.nan
    return _TAG + "str", text


def _octal(text: str) -> str:
    try:
        return str(int(text, 8))
    except ValueError:
        return "not a valid octal number"


def _implicit(node: yaml.ScalarNode) -> bool:
    """A plain scalar whose tag the resolver chose (not written in the file)."""
    return node.style is None and \
        node.tag == _IMPLICIT.resolve(yaml.ScalarNode, node.value, (True, False))


def _scalar(node: yaml.ScalarNode, where: Item) -> Any:
    if _implicit(node):
        return _plain_yaml12(node, where)[1]
    if node.tag in (_TAG + "str", _TAG + "timestamp"):
        return node.value
    try:
        return _SCALAR_CONSTRUCTOR.yaml_constructors[node.tag](_SCALAR_CONSTRUCTOR, node)
    except (ValueError, KeyError, TypeError):  # e.g. "!!int abc"
        tag = node.tag.replace(_TAG, "!!", 1)
        raise item_error(where, f"{node.value!r} cannot be read as {tag}") from None


def join(path: str, key: str) -> str:
    """The field path of ``key`` inside ``path``: "layers[1]" + "units"."""
    return f"{path}.{key}" if path else key


# ----------------------------------------------------------------------------- messages

def item_error(item: Item, message: str, hint: str | None = None, *,
               at_key: bool = False) -> SpecError:
    """A SpecError at the item's line (its key's line with ``at_key``) and field."""
    return SpecError(message, line=item.owner_line if at_key else item.line,
                     field=item.path, hint=hint)


def describe(item: Item) -> str:
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


_NUMBER_LIKE = re.compile(r"[-+]?[0-9][0-9_:.]*")


def expected(item: Item, what: str, hint: str | None = None) -> SpecError:
    """"expected <what>, got <the value>" at the item."""
    if hint is None and item.plain and isinstance(item.value, str) \
            and _NUMBER_LIKE.fullmatch(item.value):
        hint = ("YAML 1.2 reads it as text: write numbers in plain decimal (1:00 and 1_000 "
                "are not numbers)")
    return item_error(item, f"expected {what}, got {describe(item)}", hint)


def nearest(word: str, options: Iterable[str]) -> str | None:
    """The option equal to ``word`` but for case, else the closest one, else None."""
    options = list(options)
    for option in options:
        if option.lower() == word.lower():
            return option
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return match[0] if match else None


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint, or None when nothing is near."""
    match = nearest(word, options)
    return f"did you mean {match!r}?" if match else None


def number(item: Item) -> float | None:
    """The value as a float if it is a real number (``1e-4`` too: YAML 1.2 reads it as one)."""
    value = item.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf
