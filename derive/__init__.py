"""backprop-derive: a declared layer stack -> symbolic backpropagation -> LaTeX and NumPy.

The pipeline, one stage per module, each handing the next one typed object::

    load_spec(path) -> NetSpec -> derive(spec) -> Derivation -> write_module / prove

Imports are lazy so that ``derive --help`` and spec errors answer without loading SymPy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "load_spec": "derive.spec",
    "load_spec_text": "derive.spec",
    "NetSpec": "derive.netspec",
    "SpecError": "derive.errors",
    "CheckFailed": "derive.errors",
    "derive": "derive.derivation",
    "Derivation": "derive.derivation",
    "prove": "derive.proof",
    "prove_spec": "derive.proof",
    "ProofReport": "derive.proof",
    "ACTIVATIONS": "derive.activations",
    "LOSSES": "derive.losses",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .activations import ACTIVATIONS
    from .derivation import Derivation, derive
    from .errors import CheckFailed, SpecError
    from .losses import LOSSES
    from .netspec import NetSpec
    from .proof import ProofReport, prove, prove_spec
    from .spec import load_spec, load_spec_text


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'derive' has no attribute {name!r}")
