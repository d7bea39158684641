"""A compiled training kernel is compiled once: a later process loads numba's cached code
however it loads the module (the CLI by file path, a script by ``import gen.<name>``), in
whichever order, because the module is named by its file's content when its kernels compile.
Each case runs fresh processes (subprocesses) and reads numba's own cache statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]

SPEC = """name: tiny
input: 4
layers:
  - {units: 8, activation: relu}
  - {units: 3, activation: softmax}
loss: categorical_crossentropy
training: {optimizer: adam, batch_size: 16, epochs: 1}
data: {dataset: iris}
"""

# fits once with the compiled engine; prints the first fit's seconds and numba's cache hits
# and misses over every kernel the runtime compiled
SCRIPT = """
import json, sys, time
import numpy as np
sys.path.insert(0, {folder!r})
if {by_path}:
    from codegen.files import import_module_from
    net = import_module_from({module!r})
else:
    import gen.tiny as net
X = np.random.default_rng(0).normal(size=(60, net.LAYER_SIZES[0])).astype(np.float32)
y = np.arange(60) % 3
import numba  # imported before the clock starts, as any script that fits twice would have
started = time.perf_counter()
net.Trainer(engine="compiled", epochs=1).fit(X, y)
seconds = time.perf_counter() - started
kernels = list(net._runtime._KERNELS.values())
print(json.dumps({{"seconds": seconds,
                  "hits": sum(sum(k.function.stats.cache_hits.values()) for k in kernels),
                  "misses": sum(sum(k.function.stats.cache_misses.values()) for k in kernels)}}))
"""


def _env(folder: Path) -> dict:
    """The processes of one test share a kernel cache of their own (not the session's)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "BACKPROP_DERIVE_CACHE": str(folder / "cache")}


def _fit(folder: Path, by_path: bool, cache: Path | None = None) -> dict:
    script = SCRIPT.format(folder=str(folder), by_path=by_path,
                           module=str(folder / "gen" / "tiny.py"))
    env = _env(cache or folder)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _generate(folder: Path, spec: str = SPEC) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "tiny.yaml").write_text(spec)
    env = _env(folder)
    done = subprocess.run([sys.executable, "-m", "derive", "--spec", "tiny.yaml", "--out", "gen",
                           "-q"], capture_output=True, text=True, env=env, cwd=folder,
                          timeout=600)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("first, then", [(True, False), (False, True)],
                         ids=["tool-then-import", "import-then-file-path"])
def test_a_kernel_compiled_in_one_process_is_loaded_in_the_next(tmp_path, first, then):
    _generate(tmp_path)
    cold = _fit(tmp_path, by_path=first)
    assert cold["misses"] > 0 and cold["hits"] == 0, cold  # compiled, and saved
    warm = _fit(tmp_path, by_path=then)
    assert warm["misses"] == 0 and warm["hits"] > 0, warm  # loaded, not compiled again
    # the figure the issue asks for is 0.5 s; a bound that holds on a loaded 2-core machine
    assert warm["seconds"] < min(2.0, cold["seconds"]), (cold, warm)


def test_the_cli_compiled_kernel_serves_a_script(tmp_path):
    _generate(tmp_path)
    # a fit long enough to be worth compiling for (engine "auto" leaves a fit shorter than
    # compiling on the NumPy engine): 3000 epochs of one-example steps on iris
    (tmp_path / "tiny.yaml").write_text(SPEC.replace("batch_size: 16, epochs: 1",
                                                     "batch_size: 1, epochs: 3000"))
    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "derive", "--spec", "tiny.yaml", "--out", "gen",
                           "--train", "-q", "--save-dir", "run"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    warm = _fit(tmp_path, by_path=False)
    assert warm["misses"] == 0 and warm["hits"] > 0, warm


# a hidden layer of 1024 units: 4096 weights, so the kernel calls BLAS (the runtime's gemm)
WIDE = SPEC.replace("units: 8, activation: relu", "units: 1024, activation: relu")


@pytest.mark.parametrize("spec", [SPEC, WIDE], ids=["loops", "blas"])
def test_the_same_module_in_another_folder_loads_the_compiled_kernel(tmp_path, spec):
    """Kernels are kept by the module's content in the tool's cache folder: a module
    generated again elsewhere (another --out, the tool's own cache) compiles nothing."""
    for folder in ("a", "b"):
        _generate(tmp_path / folder, spec)
    cold = _fit(tmp_path / "a", by_path=True, cache=tmp_path)
    assert cold["misses"] > 0 and cold["hits"] == 0, cold
    warm = _fit(tmp_path / "b", by_path=False, cache=tmp_path)
    assert warm["misses"] == 0 and warm["hits"] > 0, warm
    assert (tmp_path / "cache" / "kernels").is_dir()
    assert not list((tmp_path / "b" / "gen").glob("__pycache__/*.nb*"))  # nothing beside it


def test_the_progress_hook_is_told_within_a_compiled_epoch(tmp_path):
    import numpy as np

    from codegen.files import import_module_from

    _generate(tmp_path)
    net = import_module_from(tmp_path / "gen" / "tiny.py")
    X = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    y = np.arange(100) % 3
    told = []
    compiled = net.Trainer(engine="compiled", optimizer="sgd", batch_size=3, epochs=2, seed=1)
    assert compiled.compiled(3)
    compiled.fit(X, y, progress=lambda epoch, done, total: told.append((epoch, done, total)))
    first = [done for epoch, done, total in told if epoch == 1]
    assert len(first) > 8 and first == sorted(first) and first[-1] == 34  # 33 batches + 1
    plain = net.Trainer(engine="numpy", optimizer="sgd", batch_size=3, epochs=2, seed=1)
    plain.fit(X, y)
    for key in plain.params:
        np.testing.assert_allclose(compiled.params[key], plain.params[key], rtol=1e-4,
                                   atol=1e-5)
    assert compiled.t == plain.t == 68
    # asked to stop within an epoch: it stops after the call it was told of
    stopping = net.Trainer(engine="compiled", optimizer="sgd", batch_size=3, epochs=2, seed=1)
    stopping.fit(X, y, progress=lambda epoch, done, total: done >= 10)
    assert stopping.interrupted and 10 <= stopping.t < 34
