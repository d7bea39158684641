"""The one way plain text reaches LaTeX: ``tex_escape``.

Every text the tool did not write itself (file names, spec names, notes and sources of a
values or claims file, class and dataset names) goes through it, so none of it can act as a
command: TeX's special characters print as themselves, the mathematical characters the
documents use (−, ∘, Σ, Greek letters) as their LaTeX, and control characters (a newline in a
file name would end a ``%`` comment and start a new line of input) and any other character
outside ASCII as visible escapes.
"""

from __future__ import annotations

import re

__all__ = ["tex_escape", "tex_prose", "tt", "code_tt"]

_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}"}
_CONTROL_NAMES = {"\n": "n", "\r": "r", "\t": "t"}
# characters outside ASCII that the documents' formulas use, as pdflatex prints them in text
_UNICODE = {"−": "$-$", "∘": r"$\circ$", "⊙": r"$\odot$", "·": r"$\cdot$", "×": r"$\times$",
            "≥": r"$\geq$", "≤": r"$\leq$", "≠": r"$\neq$", "‖": r"$\|$", "∂": r"$\partial$",
            "Σ": r"$\Sigma$", "∑": r"$\Sigma$", "→": r"$\rightarrow$", "←": r"$\leftarrow$",
            "²": r"\textsuperscript{2}", "ᵀ": r"\textsuperscript{T}", "′": "$'$", "½": r"$\frac12$",
            "ŷ": r"$\hat{y}$", "…": r"\ldots{}", "“": "``", "”": "''", "‘": "`", "’": "'",
            "–": "--", "—": "---", "η": r"$\eta$", "α": r"$\alpha$", "δ": r"$\delta$",
            "Δ": r"$\Delta$", "σ": r"$\sigma$", "φ": r"$\phi$", "Φ": r"$\Phi$", "θ": r"$\theta$",
            "Θ": r"$\Theta$", "λ": r"$\lambda$", "ε": r"$\varepsilon$", "∞": r"$\infty$",
            **{chr(0x2080 + k): f"$_{{{k}}}$" for k in range(10)},
            "<": "$<$", ">": "$>$", "|": r"$|$",  # OT1 text has no glyph for these
            "é": r"\'e", "è": r"\`e", "ü": r"\"u", "ö": r"\"o", "ä": r"\"a"}


def tex_escape(text: str) -> str:
    """Plain text safe for LaTeX, in a paragraph and in a ``%`` comment alike."""
    out = []
    for ch in str(text):
        if ch in _TEX_SPECIALS:
            out.append(_TEX_SPECIALS[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            code = _CONTROL_NAMES.get(ch, f"x{ord(ch):02x}")
            out.append(r"\textbackslash{}" + code)
        elif ord(ch) > 127:  # anything else (a right-to-left override too) as a visible escape
            out.append(rf"\textbackslash{{}}u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


_SCRIPT = r"[_^](?:\{[^{}]*\}|\[[^\]]*\]|\([^()]*\)|\d+|[A-Za-z])"
_SCRIPTED = re.compile(rf"(?<![A-Za-z0-9\\])[A-Za-zΣŷ](?:{_SCRIPT})+")  # one letter: w_313
_QUOTE = re.compile(r'"')


def tex_prose(text: str) -> str:
    """A document's words quoted in prose: escaped as ``tex_escape``, with its sub- and
    superscripts as maths (``w_313``, ``z^[1]``: no raw underscores) and its straight double
    quotes as opening and closing quotes."""
    out, last = [], 0
    for match in _SCRIPTED.finditer(text):
        out.append(_quoted(tex_escape(text[last:match.start()]), "".join(out)))
        out.append("$" + _math(match.group(0)) + "$")
        last = match.end()
    out.append(_quoted(tex_escape(text[last:]), "".join(out)))
    return "".join(out)


def _math(token: str) -> str:
    base = token[0]
    scripts = re.findall(r"([_^])(\{[^{}]*\}|\[[^\]]*\]|\([^()]*\)|\d+|[A-Za-z])", token[1:])
    body = {"Σ": r"\sum", "ŷ": r"\hat{y}"}.get(base, base)
    for op, inner in scripts:
        inner = inner[1:-1] if inner.startswith("{") else inner
        body += f"{op}{{{inner}}}"
    return body


def _quoted(escaped: str, before: str) -> str:
    """Straight double quotes as `` (after a space, a bracket or at the start) or ''."""
    out = []
    for k, ch in enumerate(escaped):
        if ch == '"':
            prev = escaped[k - 1] if k else (before[-1] if before else " ")
            out.append("``" if prev in " ([{\n" else "''")
        else:
            out.append(ch)
    return "".join(out)


def tt(text: str) -> str:
    """Typewriter text (a file or a spec's name), escaped; '_' as the font's own glyph (no
    text-companion font needed), and a line may break after it and after '.'."""
    text = tex_escape(text).replace(r"\_", r"{\char95}\allowbreak{}").replace(".", r".\allowbreak{}")
    return r"\texttt{" + text + "}"


def code_tt(text: str) -> str:
    """A line of code in typewriter: escaped, breaking only at its spaces (never inside a name
    or after a '.'), '_' as the font's own glyph."""
    return r"\texttt{" + tex_escape(text).replace(r"\_", r"{\char95}") + "}"
