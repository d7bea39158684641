"""The one way plain text reaches LaTeX: ``tex_escape``.

Every text the tool did not write itself (file names, spec names, notes and sources of a
values or claims file, class and dataset names) goes through it, so none of it can act as a
command: TeX's special characters print as themselves, and control characters (a newline in a
file name would end a ``%`` comment and start a new line of input) print as visible escapes.
"""

from __future__ import annotations

__all__ = ["tex_escape"]

_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}"}
_CONTROL_NAMES = {"\n": "n", "\r": "r", "\t": "t"}


def tex_escape(text: str) -> str:
    """Plain text safe for LaTeX, in a paragraph and in a ``%`` comment alike."""
    out = []
    for ch in str(text):
        if ch in _TEX_SPECIALS:
            out.append(_TEX_SPECIALS[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            code = _CONTROL_NAMES.get(ch, f"x{ord(ch):02x}")
            out.append(r"\textbackslash{}" + code)
        else:
            out.append(ch)
    return "".join(out)
