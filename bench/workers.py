"""What the benchmark scripts' worker processes share: the environment for a thread count."""

from __future__ import annotations

# set on some machines here: they pin an older OpenBLAS kernel, ~35% slower (PERF-NOTES.md)
PINNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def thread_environment(env: dict, threads: int) -> dict:
    """``env`` with every library's thread pool (OpenMP, OpenBLAS, MKL, XLA) set to
    ``threads``: a worker gets it before any library loads."""
    return dict(env, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads),
                XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                          f"intra_op_parallelism_threads={threads}")
