"""Hostile text in whatever reaches generated Python: it stays inside its comment.

The spec's file name is the only free text the module template prints (the network name is
a checked identifier; everything else is numbers and registry names).  For each hostile
name the generated module's syntax tree equals the one of a harmless name: the name added
no statement.  Importing the module, in a fresh process, defines only the network and
creates no file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.emit import write_module
from derive.cli import main
from derive.derivation import derive
from derive.spec import load_spec_text

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "seed003_sigmoid_2_2_1.yaml"
CODE = 'import os; os.system("touch PWNED"); open("PWNED2", "w")'

HOSTILE = {
    "newline": f"net.yaml\n{CODE} #",
    "carriage return": f"net.yaml\r{CODE} #",
    "crlf": f"net.yaml\r\n{CODE}\r\n",
    "line separators": f"net.yaml\u2028{CODE}\u2029\x0b\x0c\x1c\x85",
    "triple quotes": f'net"""\n{CODE}\n""".yaml',
    "hash and backslash": f"# {CODE} \\",
    "nul": f"net\x00\n{CODE}.yaml",
    "bidi marks": f"net\u202e\u2066\u2067\u2068\u2069\u200f{CODE}\u202c.yaml",
    "300 characters": "n" * 300 + f"\n{CODE}",
    "undecodable byte": f"net\udcff\n{CODE}.yaml",
    "tex and jinja": "\\write18{touch PWNED}\\input{secret.txt}{{ 7*7 }}{% raw %}\n" + CODE,
}


def _module(tmp_path: Path, source: str) -> Path:
    out = tmp_path / "out"
    text = SPEC.read_text(encoding="utf-8")
    return write_module(derive(load_spec_text(text, source)), out, force=True)


def _import_in_a_fresh_process(path: Path, cwd: Path) -> list[str]:
    """The module's public names, imported with cwd as the working folder."""
    probe = (f"import importlib.util, sys\n"
             f"spec = importlib.util.spec_from_file_location('net', {str(path)!r})\n"
             f"module = importlib.util.module_from_spec(spec)\n"
             f"spec.loader.exec_module(module)\n"
             f"print(sorted(n for n in vars(module) if not n.startswith('_')))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def harmless(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harmless")
    path = _module(tmp, "net.yaml")
    return ast.dump(ast.parse(path.read_text(encoding="utf-8"))), \
        _import_in_a_fresh_process(path, tmp)


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_file_name_adds_no_code(tmp_path, harmless, source):
    tree, names = harmless
    path = _module(tmp_path, source)
    text = path.read_text(encoding="utf-8")
    assert ast.dump(ast.parse(text)) == tree  # the same statements as for "net.yaml"
    head = text.splitlines()[:2]
    assert all(line.startswith("#") for line in head), head
    assert all(ch == "\n" or ch.isprintable() for ch in text)  # no control character
    work = tmp_path / "work"
    work.mkdir()
    assert _import_in_a_fresh_process(path, work) == names
    assert [p.name for p in work.iterdir()] == []
    assert sorted(p.name for p in path.parent.iterdir() if p.name != "__pycache__") == \
        ["__init__.py", "_rules.py", "_runtime.py", "sigmoid_2_2_1.py"]


def test_a_hostile_file_on_disk_through_the_command(tmp_path, harmless, capsys):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / f"net.yaml\n{CODE} #\u202e"
    spec.write_text(SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--spec", str(spec), "--out", str(out), "--check", "-q"]) == 0
    module = out / "sigmoid_2_2_1.py"
    assert ast.dump(ast.parse(module.read_text(encoding="utf-8"))) == harmless[0]
    for where in (tmp_path, folder, out, Path.cwd()):
        assert not (where / "PWNED").exists() and not (where / "PWNED2").exists()
