"""The committed generated/ modules are exactly what the generator makes from examples/*.yaml."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

import pytest

from codegen.emit import RULES_NAME, RUNTIME_NAME, render_module, render_rules, render_runtime
from codegen.files import GENERATED_MARKER
from derive.derivation import derive
from derive.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
HINT = "generated/ is out of date: run `derive --spec examples/*.yaml`"


def test_there_are_examples():
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_committed_module_is_up_to_date(path):
    spec = load_spec(path)
    expected = render_module(derive(spec))
    committed_path = ROOT / "generated" / f"{spec.name}.py"
    if not committed_path.exists():
        pytest.fail(f"{committed_path.relative_to(ROOT)} is missing; {HINT}")
    committed = committed_path.read_text(encoding="utf-8")
    if committed != expected:
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), expected.splitlines(keepends=True),
            fromfile=f"generated/{spec.name}.py (committed)",
            tofile=f"generated/{spec.name}.py (from {path.name})"))
        pytest.fail(f"{HINT}\n{diff}", pytrace=False)


def test_committed_runtime_is_up_to_date():
    """generated/_runtime.py is codegen/runtime.py as the generator stamps and copies it."""
    committed = (ROOT / "generated" / f"{RUNTIME_NAME}.py").read_text(encoding="utf-8")
    if committed != render_runtime():
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), render_runtime().splitlines(keepends=True),
            fromfile="generated/_runtime.py (committed)", tofile="codegen/runtime.py (stamped)"))
        pytest.fail(f"{HINT}\n{diff}", pytrace=False)


def test_committed_rules_are_up_to_date():
    """generated/_rules.py is every declared update rule and schedule, as printed now."""
    expected = render_rules(derive(load_spec(EXAMPLES[0])))
    committed = (ROOT / "generated" / f"{RULES_NAME}.py").read_text(encoding="utf-8")
    if committed != expected:
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), expected.splitlines(keepends=True),
            fromfile="generated/_rules.py (committed)", tofile="generated/_rules.py (printed)"))
        pytest.fail(f"{HINT}\n{diff}", pytrace=False)


def test_every_committed_module_has_an_example():
    names = {load_spec(path).name for path in EXAMPLES}
    modules = {p.stem for p in (ROOT / "generated").glob("*.py")} - {"__init__", RUNTIME_NAME, RULES_NAME}
    assert modules == names, f"generated/ modules without a spec: {sorted(modules - names)}"


def _functions(path: Path) -> dict[str, str]:
    """Every function of a module (nested ones too): name -> its body's source text."""
    source = path.read_text(encoding="utf-8")
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            lines = ast.get_source_segment(source, node).splitlines()
            found[node.name] = "\n".join(lines[1:])  # without the def line
    return found


def test_modules_hold_only_what_is_particular_to_their_network():
    """No function body of one generated module appears in another: what every network
    shares is in _runtime.py, written once.  And seed 001's module stays short."""
    modules = sorted(p for p in (ROOT / "generated").glob("*.py")
                     if p.stem not in ("__init__", RUNTIME_NAME, RULES_NAME))
    seen: dict[str, str] = {}
    for path in modules:
        for name, body in _functions(path).items():
            assert body not in seen, f"{path.stem}.{name} repeats {seen[body]}"
            seen[body] = f"{path.stem}.{name}"
    # the NumPy module (everything but the compiled engine's kernel) stays short: within
    # 260 lines, its one training step (every update rule's) included
    text = (ROOT / "generated" / "mnist_mlp.py").read_text(encoding="utf-8")
    numpy_part = (text.split("\ndef _epoch_kernel(", 1)[0] + text.split("\nNETWORK = ", 1)[1])
    assert len(numpy_part.splitlines()) <= 260, len(numpy_part.splitlines())
    # the whole module (issue 20: 591 lines with four fast paths; each step printed once)
    assert len(text.splitlines()) <= 320, len(text.splitlines())


def test_generated_package_init_exists():
    init = ROOT / "generated" / "__init__.py"
    assert init.is_file()
    assert init.read_text(encoding="utf-8").startswith(GENERATED_MARKER)
