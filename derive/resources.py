"""What a network needs in memory, estimated from its spec before anything is allocated.

``derive --check`` (finite differences in float64) and ``derive --train`` (the spec's dtype)
allocate the parameters several times over, plus one batch of activations.  A spec with two
layers of 100,000 units needs tens of GiB: it is refused up front with the figures, instead
of the process dying in an allocation (or the machine swapping).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import SpecError
from .netspec import NetSpec

__all__ = ["Estimate", "estimate", "available_memory", "check_fits", "PARAMETER_COPIES",
           "ACTIVATION_COPIES", "SHARE_OF_AVAILABLE"]

# copies of the parameters alive during a step: the parameters, their gradients, two state
# buffers of an optimizer with moments (Adam), and a temporary of the update
PARAMETER_COPIES = 5
# arrays per unit and example alive during a step: Z, A, the error delta and g'(Z)
ACTIVATION_COPIES = 4
SHARE_OF_AVAILABLE = 0.8  # what a run may plan to use of the memory available now


@dataclass(frozen=True)
class Estimate:
    """The memory a network needs: its parameters, one copy, and one step in total."""

    parameters: int
    dtype: str
    batch: int
    parameter_bytes: int  # one copy of every weight and bias
    step_bytes: int  # parameters x PARAMETER_COPIES + one batch's activations

    def describe(self, purpose: str) -> str:
        return (f"the network has {self.parameters:,} parameters ({_size(self.parameter_bytes)} "
                f"in {self.dtype}); {purpose} with batches of {self.batch} needs about "
                f"{_size(self.step_bytes)} (the parameters {PARAMETER_COPIES} times over: "
                f"weights, gradients, optimizer state; and {ACTIVATION_COPIES} arrays per unit "
                f"and example)")


def estimate(spec: NetSpec, batch: int, dtype: str) -> Estimate:
    """The memory for ``spec`` trained (or checked) in ``dtype`` on batches of ``batch``."""
    sizes = spec.layer_sizes
    parameters = sum(n * k + n for k, n in zip(sizes, sizes[1:]))
    itemsize = np.dtype(dtype).itemsize
    activations = batch * sum(sizes) * ACTIVATION_COPIES
    return Estimate(parameters, np.dtype(dtype).name, batch, parameters * itemsize,
                    (parameters * PARAMETER_COPIES + activations) * itemsize)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(spec: NetSpec, batch: int, dtype: str, purpose: str,
               available: int | None = None) -> Estimate:
    """The estimate, or a SpecError (exit 2) when it exceeds the memory available now."""
    needed = estimate(spec, batch, dtype)
    available = available_memory() if available is None else available
    if available is not None and needed.step_bytes > SHARE_OF_AVAILABLE * available:
        widest = max(range(len(spec.layers)), key=lambda i: spec.layer_sizes[i] * spec.layer_sizes[i + 1])
        fan_in, units = spec.layer_sizes[widest], spec.layer_sizes[widest + 1]
        raise SpecError(f"{needed.describe(purpose)}, and {_size(available)} of memory is "
                        "available: refused before allocating anything",
                        file=spec.source, line=_line_of(spec.source, widest),
                        field=f"layers[{widest}].units",
                        hint=f"the largest layer is layers[{widest}] with {units:,} x {fan_in:,} "
                             "weights: use fewer units")
    return needed


def _line_of(source: str | None, layer: int) -> int | None:
    """The line of ``layers[layer].units`` in the spec file, if it can be read again."""
    if not source:
        return None
    from .yamlread import read_document, read_text

    try:
        root = read_document(read_text(source, "the spec"), "")
        return root.value["layers"].value[layer].value["units"].line
    except (SpecError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
