"""A registry is a plain dict filled by a decorator; unknown names fail loudly with a suggestion."""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

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
    """Name -> declaration, with aliases and refused names (names known to be unusable).

    Whatever caches results derived from the declarations registers a ``watch`` callback,
    called whenever a name is added or removed, so that no cache outlives a declaration.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._refused: dict[str, str] = {}
        self._watchers: list[Callable[[], None]] = []

    def add(self, name: str, item: T, aliases: tuple[str, ...] = ()) -> T:
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} declared twice")
        self._items[name] = item
        self._aliases.update({alias: name for alias in aliases})
        self._changed()
        return item

    @contextmanager
    def temporarily(self, name: str, item: T, aliases: tuple[str, ...] = ()) -> Iterator[T]:
        """Declare ``name`` for the duration of a ``with`` block (a test's extra activation).

        On leaving, the name and its aliases are removed and the watchers told, so no cache
        keeps a result for a name that is gone.  A name already declared is refused.
        """
        self.add(name, item, aliases)
        try:
            yield item
        finally:
            self._remove(name)

    def _remove(self, name: str) -> None:
        del self._items[name]
        self._aliases = {alias: to for alias, to in self._aliases.items() if to != name}
        self._changed()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a name is added or removed (e.g. a cache's clear)."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        for callback in self._watchers:
            callback()

    def refuse(self, name: str, reason: str) -> None:
        self._refused[name] = reason

    def canonical(self, name: str) -> str:
        """The declared name for ``name`` or an alias of it, in any case; raises UnknownName."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        folded = {key.lower(): key for key in (*self._items, *self._aliases)}
        if isinstance(name, str) and name.lower() in folded:  # ReLU, Adam: the same names
            return self.canonical(folded[name.lower()])
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
