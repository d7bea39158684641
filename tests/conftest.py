"""Shared test helpers: the repo root on sys.path, and building generated modules from specs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that `import generated.<name>` works as from the repo root
    sys.path.insert(0, str(ROOT))

_BUILT: dict = {}


def activation_values(include_vector: bool = False) -> list[str]:
    """Every registered activation as a spec's flow value (``relu``, ``{name: elu, alpha: 0.6}``),
    parameters set away from their defaults so that they show; vector ones (softmax) only on
    request."""
    from derive.activations import ACTIVATIONS

    return [_flow_value(name, ACTIVATIONS[name].params) for name in ACTIVATIONS
            if include_vector or not ACTIVATIONS[name].vector]


def loss_value(name: str) -> str:
    """A registered loss as a spec's value (``mae``, ``{name: huber, delta: 0.6}``), its
    parameters set away from their defaults so that they show."""
    from derive.losses import LOSSES

    return _flow_value(name, LOSSES[name].params)


def _flow_value(name: str, declared: dict) -> str:
    params = {}
    for key, param in declared.items():
        value = round(param.default * 0.5 + 0.1, 6)
        params[key] = value if param.check(value) else param.default
    return name if not params else \
        "{name: " + name + "".join(f", {k}: {v}" for k, v in params.items()) + "}"


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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``fuzz`` (the long fuzzer) run only when asked for: ``pytest -m fuzz``."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long fuzzer: run it with pytest -m fuzz")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)

