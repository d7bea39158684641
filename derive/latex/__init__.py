"""Stage 3c: ``Derivation -> LaTeX`` (and, with pdflatex, a PDF).

    printer.py   DerivationLatexPrinter: the Derivation's SymPy objects in the documents' notation
    document.py  the context of each section, built from the Derivation; Jinja templates lay it out
    kinds.py     the same for a stack of layer kinds (a GraphDerivation), its compact forms proven
    example.py   a worked numeric example: values YAML -> every quantity, evaluated
    pdf.py       pdflatex, its first error, overfull boxes and page count

``write_latex`` is what ``derive --latex`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .document import SECTIONS, render_body, render_document, render_sections
from .example import Example, evaluate_example, load_example
from .pdf import CompileError, EngineMissing, compile_pdf
from .printer import NOTATIONS

__all__ = ["write_latex", "render_latex", "render_sections", "render_body", "render_document",
           "load_example", "evaluate_example", "Example", "LatexOutput", "CompileError",
           "EngineMissing", "NOTATIONS", "SECTIONS"]


@dataclass(frozen=True)
class LatexOutput:
    tex: Path
    pdf: Path | None = None
    pages: int | None = None
    log: str = field(default="", repr=False)  # pdflatex's log, when compiled


def render_latex(derivation, *, body_only: bool = False, notation: str = "bracket",
                 example: Example | str | Path | None = None, claims=None, proof=None) -> str:
    """The LaTeX text: a standalone document, or with ``body_only`` a fragment to paste."""
    from ..graph import GraphDerivation

    if isinstance(derivation, GraphDerivation) and example is not None:
        raise ValueError("a worked example is not printed yet for layer kinds")
    if example is not None and not isinstance(example, Example):
        example = load_example(example, derivation)
    render = render_body if body_only else render_document
    return render(derivation, notation=notation, example=example, claims=claims, proof=proof)


def write_latex(derivation, path: str | Path, *, body_only: bool = False,
                notation: str = "bracket", example: Example | str | Path | None = None,
                pdf: bool = False, claims=None, proof=None) -> LatexOutput:
    """Write the LaTeX to ``path`` atomically; with ``pdf``, compile it beside it.

    ``claims`` (a ClaimsReport) adds the Errata section; ``proof`` (a ProofReport) is stated.
    Raises SpecError (bad example values), ValueError (``pdf`` with ``body_only``: a fragment
    does not compile alone), EngineMissing (no pdflatex) or CompileError.
    """
    from codegen.files import atomic_write

    if pdf and body_only:
        raise ValueError("a --latex-body fragment has no preamble and cannot be compiled; "
                         "drop --latex-body to get a PDF")
    path = Path(path)
    atomic_write(path, render_latex(derivation, body_only=body_only, notation=notation,
                                    example=example, claims=claims, proof=proof))
    if not pdf:
        return LatexOutput(path)
    compiled = compile_pdf(path)
    return LatexOutput(path, compiled.pdf, compiled.pages, compiled.log)
