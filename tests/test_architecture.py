"""The codebase's own rules, checked on its source: layers, private names, name lists.

* ``codegen`` is below ``derive``: it reads a Derivation through its public attributes and
  never imports ``derive`` (so the two packages never import each other both ways);
* no module imports another module's private (underscore) name;
* no list of activation, loss or optimizer names is written outside its registry: code and
  tests iterate the registries (``ACTIVATIONS``, ``LOSSES``, ``OPTIMIZERS``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from derive.activations import ACTIVATIONS
from derive.losses import LOSSES
from derive.optimizers import OPTIMIZERS, SCHEDULES, VARIANTS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("derive", "codegen")
SOURCES = sorted(p for folder in (*PACKAGES, "tests", "bench") for p in (ROOT / folder).rglob("*.py"))
REGISTRIES = {"activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
              "schedule": SCHEDULES, "descent variant": VARIANTS}
# the modules that declare the registries: the only places their names are written as data
DECLARING = {ROOT / "derive" / "activations.py", ROOT / "derive" / "losses.py",
             ROOT / "derive" / "optimizers.py"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> list[tuple[str, ast.ImportFrom | ast.Import]]:
    """(absolute module name, node) for every import in the file."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else _module_name(path)
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node))
    return found


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES or name.split(".")[0] == "generated"


@pytest.mark.parametrize("path", [p for p in SOURCES if p.parts[-2] != "tests"
                                  and "codegen" in p.relative_to(ROOT).parts[:1]],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_codegen_never_imports_derive(path):
    imports = [name for name, _ in _imported_modules(path) if name.split(".")[0] == "derive"]
    assert not imports, f"{path.relative_to(ROOT)} imports {imports}: codegen is below derive"


def test_no_private_name_crosses_modules():
    crossing = []
    for path in SOURCES:
        for name, node in _imported_modules(path):
            if not isinstance(node, ast.ImportFrom) or not _project(name):
                continue
            private = [a.name for a in node.names
                       if a.name.startswith("_") and not a.name.endswith("__")]
            if private:
                crossing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} {private}")
    assert not crossing, "private names imported from other modules:\n" + "\n".join(crossing)


def _registered(registry) -> set[str]:
    return set(registry.names()) | set(registry.aliases())


def _all_values(tree: ast.Module) -> set[int]:
    """ids of the ``__all__ = [...]`` literals (export lists, not lists of names)."""
    return {id(a.value) for a in ast.walk(tree) if isinstance(a, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in a.targets)}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_no_name_list_outside_its_registry(kind):
    """A tuple, list, set or dict literal naming three or more of a registry's entries and at
    least half of them enumerates the registry: iterate the registry instead.  (Fewer is a
    particular network: a hidden and an output activation, a deep stack of a few kinds.)"""
    names = _registered(REGISTRIES[kind])
    enough = max(3, len(REGISTRIES[kind].names()) / 2)
    copies = []
    for path in SOURCES:
        if path in DECLARING:
            continue
        tree = _tree(path)
        exports = _all_values(tree)
        for node in ast.walk(tree):
            if id(node) in exports:
                continue
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [k for k in node.keys if k is not None]
            else:
                continue
            strings = [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            hits = {REGISTRIES[kind].canonical(s) for s in strings if s in names}
            if len(hits) >= enough:
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno}: {sorted(hits)}")
    assert not copies, f"{kind} names listed outside the registry:\n" + "\n".join(copies)
