"""Module names a network must not take: its module would hide them on Python's import path.

``derive --out DIR`` writes ``DIR/<name>.py``.  When DIR is on the import path (``--out .``
and Python started in that folder, or DIR added to ``sys.path``), a module named ``json``,
``numpy`` or ``derive`` is found before the real one, and the tool, the generated code and
Python itself then import the network instead (``module 'json' has no attribute 'dumps'``).

The names come from where they are declared, never from a list written here:

* Python's standard library and built-in modules (``sys.stdlib_module_names``,
  ``sys.builtin_module_names``);
* this tool's own top-level packages (``derive``, ``codegen``; the installed distribution's
  and, from a source checkout, the packages beside this one: ``generated`` among them);
* the import names of the tool's declared dependencies, optional ones included (``numpy``,
  ``yaml`` for PyYAML, ``sklearn`` for scikit-learn, ``torch``, ``jax``, ...), read from the
  installed distribution's metadata, or from ``pyproject.toml`` in a source checkout.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from pathlib import Path

__all__ = ["shadowed", "DISTRIBUTION"]

DISTRIBUTION = "backprop-derive"
_ROOT = Path(__file__).resolve().parents[1]


def shadowed(name: str) -> str | None:
    """Why a module called ``name`` would hide another one, or None."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return "is a module of Python's standard library"
    if name in _own_packages():
        return "is a package of backprop-derive itself"
    dependency = _dependency_modules().get(name)
    if dependency:
        return f"is the module of {dependency}, a dependency of backprop-derive"
    return None


@functools.cache
def _own_packages() -> frozenset[str]:
    names = {__name__.partition(".")[0]}
    names |= {module for module, dists in _installed().items() if DISTRIBUTION in dists}
    if (_ROOT / "pyproject.toml").exists():  # a source checkout: the packages beside this one
        names |= {p.name for p in _ROOT.iterdir() if (p / "__init__.py").exists()}
    return frozenset(names)


@functools.cache
def _installed() -> dict[str, list[str]]:
    """Top-level module -> the distributions that provide it."""
    return importlib.metadata.packages_distributions()


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(@]", requirement.strip(), maxsplit=1)[0]


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@functools.cache
def _dependency_modules() -> dict[str, str]:
    """Import name -> distribution, for every dependency the tool declares (extras too)."""
    wanted = {_normal(_requirement_name(r)): _requirement_name(r) for r in _requirements()}
    found: dict[str, str] = {}
    for module, dists in _installed().items():
        for dist in dists:
            if _normal(dist) in wanted and not module.startswith("_"):
                found[module] = wanted[_normal(dist)]
    for normal, written in wanted.items():  # not installed: the import name is usually its own
        found.setdefault(normal.replace("-", "_"), written)
    return found


def _requirements() -> list[str]:
    """The installed distribution's requirements and, in a source checkout, pyproject.toml's
    (which may be newer than the installed metadata)."""
    found = []
    try:
        found += importlib.metadata.distribution(DISTRIBUTION).requires or ()
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import tomllib

        project = tomllib.loads((_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, ValueError):
        return found
    extras = project.get("optional-dependencies", {})
    return [*found, *project.get("dependencies", ()),
            *(r for group in extras.values() for r in group)]
