"""The ceiling the matrix products put on a training step: each available fp32 GEMM, timed on
exactly the products of one plain-SGD step of a dense network.

A step of a network with widths n_0, ..., n_L on m examples multiplies, per layer l,
Z_l = A_{l-1} W_lᵀ (m x n_{l-1} by n_{l-1} x n_l), the weight gradient δ_lᵀ A_{l-1}
(n_l x m by m x n_{l-1}) and, above the first layer, the error sent down δ_l W_l (m x n_l by
n_l x n_{l-1}).  However fused the rest of the step, it cannot run faster than these products
on the fastest GEMM the engine can call: m / (their time) examples/s is that ceiling.

Candidates (each timed when importable): NumPy's BLAS (OpenBLAS in the PyPI wheels), SciPy's
own BLAS (``scipy.linalg.blas.sgemm``; numba's ``np.dot`` calls it), PyTorch's ``torch.mm``,
JAX's XLA dot (``jit``), and BLIS (``pip install blis``).

    python bench/gemm_ceiling.py                        # 784-128-64-10, batch 1 32 128 1024
    python bench/gemm_ceiling.py --sizes 6 9 4 --batches 32 128
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

__all__ = ["cpu_model", "step_products", "ceilings", "LIBRARIES"]


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 (``/proc/cpuinfo``; the platform's
    processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            text = info.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return f"{name} ({'AVX-512' if 'avx512f' in flags else 'no AVX-512'})"


def step_products(sizes, m: int) -> list[tuple[int, int, int]]:
    """(rows, inner, columns) of every product of one step of a dense network on m examples."""
    out = []
    for layer, (fan_in, units) in enumerate(zip(sizes, sizes[1:])):
        out.append((m, fan_in, units))  # forward: A W^T
        out.append((units, m, fan_in))  # weight gradient: delta^T A
        if layer:
            out.append((m, units, fan_in))  # error sent down: delta W
    return out


# ----------------------------------------------------------------------------- libraries
# each: name -> a function (shapes) -> a callable that runs every product of the list once

def _numpy(shapes):
    operands = [_pair(*s) for s in shapes]
    outs = [np.empty((r, c), np.float32) for r, _, c in shapes]

    def run():
        for (a, b), out in zip(operands, outs):
            np.dot(a, b, out=out)
    return run


def _scipy(shapes):
    from scipy.linalg.blas import sgemm

    operands = [tuple(np.asfortranarray(x) for x in _pair(*s)) for s in shapes]

    def run():
        for a, b in operands:
            sgemm(1.0, a, b)
    return run


def _torch(shapes):
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    operands = [tuple(torch.from_numpy(x) for x in _pair(*s)) for s in shapes]
    outs = [torch.empty((r, c)) for r, _, c in shapes]

    def run():
        for (a, b), out in zip(operands, outs):
            torch.mm(a, b, out=out)
    return run


def _jax(shapes):
    import jax
    import jax.numpy as jnp

    operands = [tuple(jnp.asarray(x) for x in _pair(*s)) for s in shapes]
    step = jax.jit(lambda pairs: [a @ b for a, b in pairs])
    step(operands)[0].block_until_ready()

    def run():
        step(operands)[-1].block_until_ready()
    return run


def _blis(shapes):
    from blis.py import gemm

    operands = [_pair(*s) for s in shapes]
    outs = [np.empty((r, c), np.float32) for r, _, c in shapes]

    def run():
        for (a, b), out in zip(operands, outs):
            gemm(a, b, out=out)
    return run


LIBRARIES = {"numpy": _numpy, "scipy": _scipy, "torch": _torch, "jax": _jax, "blis": _blis}


def _pair(rows, inner, cols):
    rng = np.random.default_rng(rows * 7919 + inner * 31 + cols)
    return (rng.standard_normal((rows, inner)).astype(np.float32),
            rng.standard_normal((inner, cols)).astype(np.float32))


def ceilings(sizes, batches, libraries=None, seconds=0.2, repeats=5) -> dict:
    """{library: {batch: (examples/s ceiling, GFLOP/s)}} for the libraries that import;
    the libraries interleaved, the median of ``repeats`` timed runs of about ``seconds``."""
    out: dict = {}
    for m in batches:
        shapes = step_products(sizes, m)
        flops = sum(2 * r * k * c for r, k, c in shapes)
        runs = {}
        for name in libraries or LIBRARIES:
            try:
                runs[name] = LIBRARIES[name](shapes)
            except ImportError:
                continue
        counts = {}
        for name, run in runs.items():  # warm up, and size each timed run
            run()
            start = time.perf_counter()
            run()
            counts[name] = max(1, int(seconds / max(time.perf_counter() - start, 1e-7)))
        times: dict = {name: [] for name in runs}
        for r in range(repeats):
            order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]
            for name in order:
                start = time.perf_counter()
                for _ in range(counts[name]):
                    runs[name]()
                times[name].append((time.perf_counter() - start) / counts[name])
        for name, t in times.items():
            step = statistics.median(t)
            out.setdefault(name, {})[m] = (m / step, flops / step / 1e9)
    return out


def table(sizes, result: dict) -> str:
    batches = sorted({m for by in result.values() for m in by})
    lines = [f"GEMM ceiling of one step of {'-'.join(map(str, sizes))}: examples/s (GFLOP/s)",
             "| BLAS | " + " | ".join(f"bs={m}" for m in batches) + " |",
             "|" + "---|" * (len(batches) + 1)]
    for name, by in result.items():
        cells = [f"{by[m][0] / 1e3:.1f}k ({by[m][1]:.0f})" if m in by else "-" for m in batches]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 128, 64, 10])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128, 1024])
    p.add_argument("--libraries", nargs="+", choices=list(LIBRARIES))
    p.add_argument("--seconds", type=float, default=0.2)
    args = p.parse_args(argv)
    print(f"CPU: {cpu_model()}; threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(table(args.sizes, ceilings(args.sizes, args.batches, args.libraries, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
