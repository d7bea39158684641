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


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The tool's cache between processes (compiled kernels, measured engine times, sklearn's
    modules) in a temporary folder: no test writes to the user's ~/.cache, and none reads
    what it holds."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: the workers share one (kernels
        folder = tmp_path_factory.getbasetemp().parent / "cache"  # compile once per run)
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKPROP_DERIVE_CACHE", str(folder))
        yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``fuzz`` (the long fuzzer) run only when asked for: ``pytest -m fuzz``."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long fuzzer: run it with pytest -m fuzz")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)



def write_penguins(path: Path, rows: int = 344, seed: int = 0) -> Path:
    """A penguins-style table (the shape of palmerpenguins' penguins.csv, synthetic: no
    download): species as names, string columns island and sex, NA cells and the other
    spellings of a missing cell (empty, N/A, nan, ?), numbers in the measurements' ranges."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # per species: islands, then mean and deviation of bill length, bill depth, flipper, mass
    kinds = {
        "Adelie": (("Torgersen", "Biscoe", "Dream"), (38.8, 2.7), (18.3, 1.2), (190, 6.5),
                   (3700, 450)),
        "Chinstrap": (("Dream",), (48.8, 3.3), (18.4, 1.1), (196, 7.1), (3730, 380)),
        "Gentoo": (("Biscoe",), (47.5, 3.1), (15.0, 1.0), (217, 6.5), (5075, 500)),
    }
    names = list(kinds)
    lines = ["species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"]
    spellings = ["NA", "NA", "NA", "", "N/A", "nan", "?"]
    for r in range(rows):
        species = names[r % 3]
        islands, *measures = kinds[species]
        sex = ("male", "female")[int(rng.integers(2))]
        bigger = 1.0 if sex == "male" else -1.0
        values = [f"{rng.normal(mean + 0.4 * bigger * sd, sd * 0.9):.1f}" for mean, sd in measures]
        cells = [species, islands[int(rng.integers(len(islands)))], *values, sex,
                 str(2007 + int(rng.integers(3)))]
        for column in (2, 3, 4, 5, 6):  # about 3 rows in 100 have a missing cell
            if rng.random() < 0.007:
                cells[column] = spellings[int(rng.integers(len(spellings)))]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
