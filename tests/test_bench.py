"""The benchmark scripts' smoke modes, so that they cannot rot (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_train_speed_smoke():
    done = _run("bench/train_speed.py", "--smoke", "--peers")
    assert done.returncode == 0, done.stderr
    for row in ("generated float32", "generated float64", "numpy textbook", "GEMM ceiling",
                "GEMM ceiling, streamed"):
        assert row in done.stdout


def test_derive_speed_smoke():
    done = _run("bench/derive_speed.py", "--smoke")
    assert done.returncode == 0, done.stderr
    assert "10-layer stack" in done.stdout


def test_seed_speed_smoke():
    done = _run("bench/seed_speed.py", "--smoke", "--peers", "--json", "/dev/null")
    assert done.returncode == 0, done.stderr
    for row in ("CPU: ", "generated numpy", "generated compiled", "generated auto",
                "GEMM ceiling (fastest BLAS)"):
        assert row in done.stdout


def test_gemm_ceiling_counts_every_product_of_a_step():
    sys.path.insert(0, str(ROOT / "bench"))
    from gemm_ceiling import ceilings, step_products

    # forward and weight gradient per layer, the error sent down above the first
    assert step_products((784, 128, 10), 32) == [(32, 784, 128), (128, 32, 784),
                                                (32, 128, 10), (10, 32, 128), (32, 10, 128)]
    result = ceilings((5, 4, 3), [2], libraries=["numpy"], seconds=0.001, repeats=1)
    speed, gflops = result["numpy"][2]
    assert speed > 0 and gflops > 0


def test_backend_speed_smoke():
    done = _run("bench/backend_speed.py", "--smoke")
    assert done.returncode == 0, done.stderr
    assert "examples/s (generated / autograd of the same framework)" in done.stdout


def test_optimizer_speed_smoke():
    done = _run("bench/optimizer_speed.py", "--smoke")
    assert done.returncode == 0, done.stderr
    assert "| adam |" in done.stdout and "examples/s" in done.stdout


def test_proof_speed_smoke():
    done = _run("bench/proof_speed.py", "--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("example", "mnist", "random", "784-256-128-64-10"):
        assert row in done.stdout


def test_cnn_speed_smoke():
    done = _run("bench/cnn_speed.py", "--smoke")
    assert done.returncode == 0, done.stderr
    assert "ours (NumPy)" in done.stdout and "batch   32" in done.stdout
