"""Start-up of the compiled engine: the first ``fit`` of a fresh process, cold and warm.

A network is generated into a temporary folder; then, each in a fresh process:

1. ``derive --train`` (the tool imports the module by its file path) compiles the kernels its
   engine "auto" uses;
2. a script that does ``import gen.<name>`` fits once: its first ``fit`` loads the kernels the
   tool compiled (numba's cache beside the module);
3. the same script again; and, in a second folder, the script first (a cold compile) and then
   the tool's way of loading (by file path).

Each line gives the first fit's seconds (numba imported before the clock starts) and numba's
cache hits and misses.  scikit-learn's ``MLPClassifier`` on the same rows is the reference.

    python bench/startup_speed.py            # the digits network of examples/digits_mlp.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "digits_mlp.yaml"

SCRIPT = """
import json, sys, time
import numpy as np
sys.path.insert(0, {folder!r})
if {by_path}:
    from codegen.files import import_module_from
    net = import_module_from({module!r})
else:
    import gen.digits_mlp as net
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)
import numba
started = time.perf_counter()
net.Trainer(epochs=1).fit(X, y)  # engine auto, as a script has it
seconds = time.perf_counter() - started
kernels = list(net._runtime._KERNELS.values())
print(json.dumps({{"seconds": seconds,
                  "hits": sum(sum(k.function.stats.cache_hits.values()) for k in kernels),
                  "misses": sum(sum(k.function.stats.cache_misses.values()) for k in kernels)}}))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _fit(folder: Path, by_path: bool) -> dict:
    script = SCRIPT.format(folder=str(folder), by_path=by_path,
                           module=str(folder / "gen" / "digits_mlp.py"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_env(), cwd=folder, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _derive(folder: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "derive", "--spec", str(SPEC), "--out", "gen", "-q",
                    *extra], capture_output=True, text=True, env=_env(), cwd=folder, check=True)
    return time.perf_counter() - started


def _mlp() -> float:
    script = ("import time, warnings; from sklearn.datasets import load_digits; "
              "from sklearn.neural_network import MLPClassifier; X, y = load_digits(return_X_y=True); "
              "warnings.simplefilter('ignore'); t = time.perf_counter(); "
              "MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=1).fit(X / 16, y); "
              "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip())


def main() -> None:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        first, second = Path(first), Path(second)
        seconds = _derive(first, "--train", "--epochs", "1", "--save-dir", "run")
        print(f"derive --train (compiles, 1 epoch, whole command): {seconds:.2f} s")
        for label, by_path in (("script after derive --train", False),
                               ("the script again", False)):
            print(f"{label}: first fit {json.dumps(_fit(first, by_path))}")
        _derive(second)
        print(f"script in a fresh folder (cold): first fit {json.dumps(_fit(second, False))}")
        print(f"by file path after that script: first fit {json.dumps(_fit(second, True))}")
    print(f"MLPClassifier(128, 64), one epoch, same rows: {_mlp():.2f} s")


if __name__ == "__main__":
    main()
