"""How long `derive --spec` takes end to end (start-up, load, derive, render, write).

For every example spec and for generated stacks of 10, 50 and 100 layers cycling through all
element-wise activations (softmax output), the median of a few runs of the real command in a
fresh process, and the time per layer, which should stay flat (linear growth in depth).

    python bench/derive_speed.py            # table
    python bench/derive_speed.py --smoke    # one example and a 10-layer stack, once
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from derive.activations import ACTIVATIONS as _REGISTRY  # noqa: E402

# every element-wise activation, with its declared parameters at their defaults
ACTIVATIONS = tuple(name if not _REGISTRY[name].params else
                    "{name: " + name + "".join(f", {k}: {p.default}" for k, p in
                                               _REGISTRY[name].params.items()) + "}"
                    for name in _REGISTRY if not _REGISTRY[name].vector)


def deep_spec(depth: int) -> str:
    layers = "".join(f"  - {{units: 32, activation: {ACTIVATIONS[i % len(ACTIVATIONS)]}}}\n"
                     for i in range(depth - 1))
    return (f"name: deep{depth}\ninput: 32\nlayers:\n{layers}"
            f"  - {{units: 10, activation: softmax}}\nloss: categorical_crossentropy\n")


def time_derive(spec: Path, out: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "derive", "--spec", str(spec), "--out", str(out),
                        "--quiet", "--force"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else args.runs
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    depths = (10,) if args.smoke else (10, 50, 100)
    if args.smoke:
        examples = examples[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec in examples:
            rows.append((spec.name, None, time_derive(spec, tmp / "out", runs)))
        for depth in depths:
            path = tmp / f"deep{depth}.yaml"
            path.write_text(deep_spec(depth), encoding="utf-8")
            rows.append((f"{depth}-layer stack", depth, time_derive(path, tmp / "out", runs)))
    print("| spec | derive --spec, end to end | added per extra layer |")
    print("|---|---|---|")
    previous = None
    for name, depth, seconds in rows:
        slope = ""
        if depth and previous:
            slope = f"{(seconds - previous[1]) / (depth - previous[0]) * 1000:.1f} ms"
        if depth:
            previous = (depth, seconds)
        print(f"| {name} | {seconds:.2f} s | {slope} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
