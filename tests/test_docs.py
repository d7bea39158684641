"""Every command that README.md and docs/*.md show in a ```bash block stays runnable, and
every link between them (files, images, headings' anchors) leads somewhere.

Each command line of those blocks (a ``\\`` continuation joined, comments dropped, ``&&``
chains split) is checked by its form:

* ``derive ...``, ``python -m derive ...`` and ``derive predict ...``: the arguments parse and
  pass the CLI's own checks (``derive.cli.parse_command``, what ``main`` runs before doing
  anything), and every input file it names (``--spec``, ``--claims``, ``--example``,
  ``--data csv:PATH``) exists in the repository, a glob such as ``examples/*.yaml`` matching at
  least one file. ``net.yaml`` and ``CLAIMS.yaml`` are the pages' placeholders for the reader's
  own files; model files (``--model``, ``--resume``) are the outputs of a command shown before
  them on the same page.
* ``python -m pytest ...``: the test files it names exist and a ``-m`` marker is declared.
* ``pip install ...``: the extras it names are declared in pyproject.toml.
* ``python -c CODE`` and ``python - <<'PY'`` blocks: the code compiles.

A few cheap commands are also run, in-process, in a temporary folder holding a link to
``examples/`` (so that every ``out/...``, ``generated/`` or ``runs/`` they write lands in the
temporary folder, never in the repository): the README's tour (``--check``, ``--claims``,
``--latex --no-module``, the wine table's training and ``derive predict``). The others — training
the digits or breast-cancer networks for tens of epochs, the PyTorch/JAX backends and DDP,
``--pdf`` (pdflatex), the penguins (the ``palmerpenguins`` package's CSV), the scikit-learn grid
search, ``pip`` and the test suite itself — are checked for parsing and paths only.
"""
from __future__ import annotations

import glob
import re
import shlex
import tomllib
from pathlib import Path

import pytest

import derive.cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = {"net.yaml", "CLAIMS.yaml"}
RUN = {  # (page, command) pairs that are also run: cheap, writing only under the run folder
    ("README.md", "derive --spec examples/seed001_mnist.yaml --check --out out"),
    ("README.md", "derive --spec examples/seed000_shallow.yaml --claims "
                  "examples/errata/seed000_shallow.yaml --no-module"),
    ("README.md", "derive --spec examples/seed001_mnist.yaml --latex out/mnist.tex --no-module"),
    ("README.md", "derive --spec examples/wine_table.yaml --train --save-dir out/wine"),
    ("README.md", "derive predict --model out/wine/wine_table.npz --data "
                  "csv:examples/data/wine_test.csv --output out/wine/preds.csv"),
}


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    """The block's commands: continuations joined, heredocs kept whole, comments dropped."""
    lines = block.replace("\\\n", " ").split("\n")
    commands, i = [], 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.search(r"<<\s*'?(\w+)'?", line)
        if heredoc:
            end = lines.index(heredoc.group(1), i + 1)
            commands.append("\n".join(lines[i:end + 1]))
            i = end + 1
            continue
        words = shlex.split(line, comments=True)
        while words:
            part = words[:words.index("&&")] if "&&" in words else words
            commands.append(shlex.join(part))
            words = words[len(part) + 1:]
        i += 1
    return commands


def _shown() -> list[tuple[str, str]]:
    shown = []
    for page in PAGES:
        for block in _bash_blocks(page.read_text(encoding="utf-8")):
            for command in _commands(block):
                shown.append((page.relative_to(ROOT).as_posix(), command))
    return shown


SHOWN = _shown()


def _words(command: str) -> list[str]:
    """The command's words after any leading environment assignments (UPDATE_GOLDEN=1)."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return words


def _derive_argv(command: str) -> list[str] | None:
    words = _words(command)
    if words[:1] == ["derive"]:
        return words[1:]
    if words[:3] == ["python", "-m", "derive"]:
        return words[3:]
    return None


def _values(argv: list[str], flag: str) -> list[str]:
    """The values given to FLAG (all of them for nargs="+" options)."""
    values = []
    for i, word in enumerate(argv):
        if word == flag:
            for value in argv[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
                if flag != "--spec":
                    break
    return values


def _exists(path: str) -> bool:
    return bool(glob.glob(str(ROOT / path))) if "*" in path else (ROOT / path).exists()


def test_the_pages_show_commands():
    forms = {_words(c)[0] for _, c in SHOWN if "\n" not in c}
    assert {"derive", "python", "pip"} <= forms, forms
    assert ("README.md", "pip install -e '.[test,torch,jax]'") in SHOWN
    assert ("README.md", "python -m pytest -n auto") in SHOWN  # CI's .ci/run runs exactly this
    assert RUN <= set(SHOWN), RUN - set(SHOWN)


@pytest.mark.parametrize("page,command", [s for s in SHOWN if _derive_argv(s[1]) is not None],
                         ids=lambda s: s[:60] if isinstance(s, str) else None)
def test_derive_commands_parse_and_name_files_that_exist(page, command):
    argv = _derive_argv(command)
    try:
        derive.cli.parse_command(argv)
    except SystemExit as exit:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exit.code})")
    inputs = _values(argv, "--spec") + _values(argv, "--claims") + _values(argv, "--example")
    inputs += [d[4:] for d in _values(argv, "--data") if d.startswith("csv:")]
    missing = [p for p in inputs if p not in PLACEHOLDERS and not _exists(p)]
    assert not missing, f"{page}: `{command}` names files the repository lacks: {missing}"
    earlier = [c for p, c in SHOWN[:SHOWN.index((page, command))] if p == page]
    for model in _values(argv, "--model") + _values(argv, "--resume"):
        folder = str(Path(model).parent)
        assert any(folder in c for c in earlier), \
            f"{page}: `{command}` reads {model}, which no command before it writes"


def test_other_commands():
    toml = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(toml["project"]["optional-dependencies"])
    markers = {m.split(":")[0] for m in toml["tool"]["pytest"]["ini_options"]["markers"]}
    for page, command in SHOWN:
        if _derive_argv(command) is not None:
            continue
        if "\n" in command:  # python - <<'PY' ... PY
            compile("\n".join(command.split("\n")[1:-1]), f"{page}: {command[:30]}", "exec")
            continue
        words = _words(command)
        if words[:2] == ["pip", "install"]:
            for word in words[2:]:
                named = re.search(r"\[(.*)\]", word)
                if named:
                    assert set(named.group(1).split(",")) <= extras, f"{page}: {command}"
        elif words[:3] == ["python", "-m", "pytest"]:
            for word in words[3:]:
                if word.startswith("tests/"):
                    assert (ROOT / word).exists(), f"{page}: {command}"
            if "-m" in words[3:]:
                assert words[words.index("-m", 3) + 1] in markers, f"{page}: {command}"
        elif words[:2] == ["python", "-c"]:
            compile(words[2], f"{page}: python -c", "exec")
        else:
            pytest.fail(f"{page}: `{command}`: a form this test does not check")


def test_the_readme_tour_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for page, command in sorted(RUN, key=SHOWN.index):
        status = derive.cli.main(_derive_argv(command))
        assert status == 0, f"{page}: `{command}` exited {status}:\n{capsys.readouterr()}"
    out = capsys.readouterr().out
    assert "every verdict as expected" in out
    assert "test accuracy" in out
    assert (tmp_path / "out" / "mnist.tex").is_file()
    assert (tmp_path / "out" / "wine" / "preds.csv").read_text().startswith("row,cultivar")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings (outside code blocks)."""
    anchors, fence = set(), False
    for line in page.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


def test_links_between_the_pages_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: ({target})")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)
