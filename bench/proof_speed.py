"""How long the proof (`derive --check`'s exact check against SymPy) takes.

Three sets, each proved in this process one after the other (`prove_spec`, which shrinks the
spec, derives the small instances and checks them at random rational points):

* every example spec (examples/*.yaml);
* the 784-256-128-64-10 network with three ReLU layers and a softmax output;
* random valid specs: depth 1-6, input and widths 1-8, hidden activations drawn from every
  registered element-wise activation (with random parameters), every output activation and
  loss the spec accepts, regularisation none / L1 / L2 / both.  Specs the spec checker refuses
  are drawn again, so every one measured is a spec a user could write.

Each proof runs under a budget (--budget, default 120 s): a proof that would take longer is
reported as INCOMPLETE instead of hanging the benchmark.  No timing is asserted anywhere.

    python bench/proof_speed.py                   # 200 random specs, table
    python bench/proof_speed.py --count 50 --seed 3
    python bench/proof_speed.py --smoke           # two examples and three random specs
    python bench/proof_speed.py --json out.json   # also every row as JSON
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from derive.activations import ACTIVATIONS  # noqa: E402
from derive.errors import SpecError  # noqa: E402
from derive.losses import LOSSES  # noqa: E402
from derive.proof import prove_spec  # noqa: E402
from derive.spec import load_spec, load_spec_text  # noqa: E402

MNIST_RELU = {
    "name": "mnist_three_relu", "input": 784,
    "layers": [{"units": 256, "activation": "relu"}, {"units": 128, "activation": "relu"},
               {"units": 64, "activation": "relu"}, {"units": 10, "activation": "softmax"}],
    "loss": "categorical_crossentropy",
}


def _activation(name: str, rng: random.Random):
    """A registered activation, its parameters drawn where the declaration accepts them."""
    params = ACTIVATIONS[name].params
    if not params:
        return name
    written = {"name": name}
    for key, param in params.items():
        value = round(rng.uniform(0.05, 0.95), 3)
        written[key] = value if param.check(value) else param.default
    return written


def random_spec(rng: random.Random, number: int) -> dict:
    """One random spec (maybe refused by the checker: the caller draws again)."""
    hidden = [name for name in ACTIVATIONS.names()
              if not ACTIVATIONS[name].vector and not ACTIVATIONS[name].last_layer_only]
    depth = rng.randint(1, 6)
    layers = [{"units": rng.randint(1, 8), "activation": _activation(rng.choice(hidden), rng)}
              for _ in range(depth - 1)]
    loss = rng.choice(LOSSES.names())
    output = rng.choice(ACTIVATIONS.names())
    layers.append({"units": rng.randint(1, 8), "activation": _activation(output, rng)})
    spec = {"name": f"random{number}", "input": rng.randint(1, 8), "layers": layers,
            "loss": loss}
    penalty = rng.choice(((), ("l1",), ("l2",), ("l1", "l2")))
    if penalty:
        spec["regularization"] = {key: round(rng.uniform(0.001, 0.3), 4) for key in penalty}
    return spec


def random_specs(count: int, seed: int):
    rng = random.Random(seed)
    made = 0
    while made < count:
        text = yaml.safe_dump(random_spec(rng, made), sort_keys=False)
        try:
            spec = load_spec_text(text, f"random{made}.yaml")
        except SpecError:
            continue  # e.g. a cross-entropy after tanh: draw again
        made += 1
        yield spec


def describe(spec) -> str:
    sizes = "-".join(map(str, spec.layer_sizes))
    acts = "/".join(layer.activation.name for layer in spec.layers)
    reg = spec.regularization
    penalty = "".join(f" {k}" for k, v in (("L1", reg.l1), ("L2", reg.l2)) if v)
    return f"{sizes} {acts} {spec.loss}{penalty}"


def measure(spec, budget: float) -> dict:
    started = time.perf_counter()
    report = prove_spec(spec, budget=budget)
    seconds = time.perf_counter() - started
    return {"spec": describe(spec), "seconds": round(seconds, 3), "ok": report.ok,
            "complete": report.complete, "parameters": report.parameters,
            "instance": "-".join(map(str, report.instance))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="random specs (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds per proof before it is reported INCOMPLETE")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    count = 3 if args.smoke else args.count
    if args.smoke:
        examples = examples[:2]

    rows = {"examples": [], "mnist": [], "random": []}
    print(f"{'set':<9} {'seconds':>8}  {'verdict':<10} spec")
    for path in examples:
        row = measure(load_spec(path), args.budget) | {"file": path.name}
        rows["examples"].append(row)
        _print("example", row, path.name)
    mnist = load_spec_text(yaml.safe_dump(MNIST_RELU, sort_keys=False), "mnist_three_relu.yaml")
    rows["mnist"].append(measure(mnist, args.budget))
    _print("mnist", rows["mnist"][0])
    seen = set()
    for spec in random_specs(count, args.seed):
        seen.update(layer.activation.name for layer in spec.layers)
        row = measure(spec, args.budget)
        rows["random"].append(row)
        if args.smoke:
            _print("random", row)

    times = [row["seconds"] for row in rows["random"]]
    print()
    for name, group in rows.items():
        values = [row["seconds"] for row in group]
        print(f"{name:<9} n={len(values):<4} median {statistics.median(values):7.2f} s   "
              f"max {max(values):7.2f} s   failed or incomplete: "
              f"{sum(not row['ok'] for row in group)}")
    missing = sorted(set(ACTIVATIONS.names()) - seen)
    print(f"random specs: seed {args.seed}; activations used: {len(seen)} of "
          f"{len(ACTIVATIONS.names())}" + (f" (not drawn: {', '.join(missing)})" if missing else ""))
    slowest = sorted(rows["random"], key=lambda row: -row["seconds"])[:5]
    print("slowest random specs:")
    for row in slowest:
        _print("random", row)
    if times:
        print(f"random: p90 {statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0 if all(row["ok"] for group in rows.values() for row in group) else 1


def _print(kind: str, row: dict, label: str = "") -> None:
    verdict = "ok" if row["ok"] else ("INCOMPLETE" if not row["complete"] else "FAILED")
    print(f"{kind:<9} {row['seconds']:8.2f}  {verdict:<10} {label + ': ' if label else ''}"
          f"{row['spec']}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
