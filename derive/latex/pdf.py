"""Compile a written .tex with pdflatex, and read what its log says.

``compile_pdf`` runs the engine twice in a temporary folder (the second run resolves
equation references), copies the PDF next to the .tex, and on failure raises
``CompileError`` with the log's first error (the ``! ...`` line) and the source line it names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from codegen.files import atomic_write

__all__ = ["ENGINE", "EngineMissing", "CompileError", "Compiled", "compile_pdf",
           "first_error", "overfull_boxes", "page_count"]

ENGINE = "pdflatex"
RUNS = 2
TIMEOUT = 300  # seconds per run


class EngineMissing(Exception):
    """No LaTeX engine on PATH."""


class CompileError(Exception):
    """pdflatex stopped on an error; ``str()`` names the file, the line and the message."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Compiled:
    pdf: Path
    log: str
    pages: int | None


def engine_path(engine: str = ENGINE) -> str | None:
    return shutil.which(engine)


def compile_pdf(tex: str | Path, *, engine: str = ENGINE, runs: int = RUNS) -> Compiled:
    """Compile ``tex`` and write ``<tex stem>.pdf`` beside it (atomically)."""
    tex = Path(tex)
    exe = engine_path(engine)
    if exe is None:
        raise EngineMissing(
            f"{engine} was not found on PATH; install a LaTeX engine (for example "
            f"`apt-get install texlive-latex-base texlive-latex-recommended`) to compile {tex}")
    with tempfile.TemporaryDirectory(prefix="backprop-derive-") as tmp:
        work = Path(tmp) / "document.tex"
        shutil.copyfile(tex, work)
        log = ""
        for _ in range(runs):
            try:
                subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error",
                                "-no-shell-escape", work.name], cwd=tmp, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise CompileError(f"{tex}: {engine} did not finish within {TIMEOUT} s") from None
            log_path = work.with_suffix(".log")
            log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
            error = first_error(log)
            pdf = work.with_suffix(".pdf")
            if error is not None or not pdf.exists():
                line, message = error or (None, f"{engine} wrote no PDF")
                where = f"{tex}:{line}" if line else str(tex)
                raise CompileError(f"{where}: {message}", log)
        target = tex.with_suffix(".pdf")
        atomic_write(target, pdf.read_bytes())
    return Compiled(target, log, page_count(log))


_ERROR_LINE = re.compile(r"^l\.(\d+)", re.MULTILINE)


def first_error(log: str) -> tuple[int | None, str] | None:
    """(source line, "! message") of the log's first error, or None."""
    lines = log.splitlines()
    for k, text in enumerate(lines):
        if text.startswith("! "):
            match = _ERROR_LINE.search("\n".join(lines[k + 1:k + 30]))
            return (int(match.group(1)) if match else None), text
    return None


_OVERFULL = re.compile(r"^Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)[^\n]*?lines? (\d+)",
                       re.MULTILINE)


def overfull_boxes(log: str) -> list[tuple[float, int]]:
    """(points too wide, source line) of every overfull \\hbox the log reports."""
    return [(float(points), int(line)) for points, line in _OVERFULL.findall(log)]


_PAGES = re.compile(r"Output written on .*?\((\d+) pages?", re.DOTALL)


def page_count(log: str) -> int | None:
    match = _PAGES.search(log)
    return int(match.group(1)) if match else None
