"""A generated folder on its own: imported as a package or loaded by file path, with only NumPy.

The module and its ``_runtime.py`` must work without the tool (derive, codegen, SymPy, Jinja,
PyYAML) and without SciPy (its BLAS is optional: one-example steps fall back to NumPy), both
as ``import <folder>.<name>`` and as ``importlib`` loads of the file, as notebooks do.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from codegen.emit import RULES_NAME, RUNTIME_NAME, write_module
from codegen.files import import_module_from
from derive.derivation import derive
from derive.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "seed003_multiclass.yaml"

_SCRIPT = textwrap.dedent("""\
    import importlib.abc, importlib.util, sys

    BLOCKED = {"derive", "codegen", "sympy", "jinja2", "yaml", "scipy", "sklearn", "numba"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed here")
            return None

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, FOLDER_PARENT)
    import numpy as np

    package = importlib.import_module(PACKAGE + "." + NAME)
    spec = importlib.util.spec_from_file_location(NAME, FILE)
    by_path = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(by_path)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, package.LAYER_SIZES[0]))
    y = rng.integers(0, package.LAYER_SIZES[-1], 40)
    for net in (package, by_path):
        trainer = net.Trainer(optimizer="sgd", epochs=3, learning_rate=0.1)
        history = trainer.fit(X, y)
        assert history["loss"][-1] < history["loss"][0], history
    assert not BLOCKED & {m.split(".")[0] for m in sys.modules}, sorted(sys.modules)
    print("ok", package.Trainer.__mro__[1].__module__)
""")


def test_folder_runs_with_only_numpy(tmp_path):
    folder = tmp_path / "mynets"
    path = write_module(derive(load_spec(SPEC)), folder)
    assert (folder / f"{RUNTIME_NAME}.py").is_file() and (folder / "__init__.py").is_file()
    script = _SCRIPT.replace("FOLDER_PARENT", repr(str(tmp_path))).replace(
        "PACKAGE", repr("mynets")).replace("NAME", repr(path.stem)).replace("FILE", repr(str(path)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok mynets._runtime")


def test_modules_of_one_folder_share_one_runtime(tmp_path):
    """Two networks in one folder: one _runtime.py and one _rules.py, used by both."""
    first = write_module(derive(load_spec(SPEC)), tmp_path)
    second = write_module(derive(load_spec(ROOT / "examples" / "seed000_shallow.yaml")), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.py")) == sorted(
        ["__init__.py", f"{RUNTIME_NAME}.py", f"{RULES_NAME}.py", first.name, second.name])
    for path in (first, second):
        module = import_module_from(path)
        assert module.NETWORK.__class__.__module__ == RUNTIME_NAME


def test_a_hostile_spec_file_name_stays_inside_its_comment(tmp_path):
    """A newline in the spec's file name cannot turn the rest of the name into code."""
    from derive.spec import load_spec_text

    text = SPEC.read_text(encoding="utf-8")
    hostile = 'net.yaml\nimport os; os.system("touch PWNED") #\u202e'
    path = write_module(derive(load_spec_text(text, hostile)), tmp_path)
    head = path.read_text(encoding="utf-8").splitlines()[:2]
    assert all(line.startswith("#") for line in head), head
    assert "\\n" in head[0] and "\\u202e" in head[0]
    import_module_from(path)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_a_module_beside_a_runtime_of_another_api_refuses_to_load(tmp_path):
    """A module printed for this runtime's helpers (its API) beside an older ``_runtime.py``
    stops at import with a hint, not at numba's first compile with a missing helper."""
    import pytest

    from codegen import runtime

    folder = tmp_path / "old"
    path = write_module(derive(load_spec(SPEC)), folder)
    stale = folder / f"{RUNTIME_NAME}.py"
    text = stale.read_text(encoding="utf-8")
    stale.write_text(text.replace(f"\nAPI = {runtime.API}", f"\nAPI = {runtime.API - 1}", 1),
                     encoding="utf-8")
    with pytest.raises(ImportError, match=f"API {runtime.API}: regenerate"):
        import_module_from(path)
