"""Shared test helpers: the repo root on sys.path, and building generated modules from specs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that `import generated.<name>` works as from the repo root
    sys.path.insert(0, str(ROOT))

_BUILT: dict = {}


def build_module(spec, tmp_path_factory):
    """Derive ``spec``, write its module into a fresh temp folder and import it (cached per spec)."""
    if spec not in _BUILT:
        from codegen.files import import_module_from
        from codegen.emit import write_module
        from derive.derivation import derive

        folder = tmp_path_factory.mktemp(f"gen_{spec.name}")
        path = write_module(derive(spec), folder)
        _BUILT[spec] = import_module_from(path)
    return _BUILT[spec]


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """``build(spec)`` -> the imported generated module for ``spec`` (one build per spec)."""
    return lambda spec: build_module(spec, tmp_path_factory)
