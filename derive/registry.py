"""A registry is a plain dict filled by a decorator; unknown names fail loudly with a suggestion."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """An unknown registry name; ``str()`` lists the known names and the nearest one."""

    def __init__(self, kind: str, name: str, known: list[str], suggestion: str | None):
        self.kind, self.name, self.known, self.suggestion = kind, name, known, suggestion
        super().__init__(name)

    def __str__(self) -> str:
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"unknown {self.kind} {self.name!r}{hint} (known: {', '.join(self.known)})"


class Registry(Generic[T]):
    """Name -> declaration, with aliases and refused names (names known to be unusable)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._refused: dict[str, str] = {}

    def add(self, name: str, item: T, aliases: tuple[str, ...] = ()) -> T:
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} declared twice")
        self._items[name] = item
        self._aliases.update({alias: name for alias in aliases})
        return item

    def refuse(self, name: str, reason: str) -> None:
        self._refused[name] = reason

    def canonical(self, name: str) -> str:
        """The declared name for ``name`` or an alias of it; raises UnknownName."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = self.names()
        match = difflib.get_close_matches(name, known + list(self._aliases), n=1, cutoff=0.5)
        raise UnknownName(self.kind, name, known, match[0] if match else None)

    def refused_reason(self, name: str) -> str | None:
        return self._refused.get(name)

    def __getitem__(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)
