"""The update rules against torch.optim: the same parameters after one epoch, and the cost of a
step with each rule.

1. Equality (float64): seed 001's 784-128-64-10 network, every declared optimizer with
   PyTorch's default hyperparameters, one epoch of mini-batches of 64 on 1024 synthetic
   examples in order, from the same initial weights; PyTorch computes its gradients with
   autograd and steps with the ``torch.optim`` class the declaration names.  Printed: the
   largest relative difference of any parameter entry (entries that a rule moves by about
   its learning rate whatever the gradient's size, as RMSprop's and Adam's first steps do,
   amplify the last bits of a tiny gradient) and the largest difference over the largest
   entry of the parameter.
2. Speed (float32): examples/s of one epoch of 60000 synthetic MNIST-shaped examples at
   batch 128 for each rule, the generated Trainer (its default engine) and PyTorch eager
   (autograd + torch.optim) interleaved in one worker per thread count (1 and 2), median of
   the repeats; and each rule's cost over plain SGD.

    python bench/optimizer_speed.py            # full run: tables + bench/optimizer_results.json
    python bench/optimizer_speed.py --smoke    # seconds: tiny sizes (the tests run this)

Workers drop OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they pin an older OpenBLAS kernel).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import PINNING, thread_environment  # noqa: E402

LEARNING_RATE = 0.01


def _rules():
    sys.path.insert(0, str(ROOT))
    from derive.optimizers import OPTIMIZERS

    return [OPTIMIZERS[name] for name in OPTIMIZERS]


def _torch_optimizer(torch, rule, params, lr):
    options = dict(rule.defaults) | dict(rule.torch_options)
    if rule.name != "sgd" and "momentum" in options and options["momentum"] == 0:
        options["momentum"] = 0.9
    return getattr(torch.optim, rule.torch_class)(params, lr=lr, **options)


def _torch_model(torch, params, dtype):
    layers = []
    depth = len(params) // 2
    for l in range(1, depth + 1):
        linear = torch.nn.Linear(*params[f"W{l}"].shape[::-1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(params[f"W{l}"]))
            linear.bias.copy_(torch.as_tensor(params[f"b{l}"]))
        layers += [linear, torch.nn.ReLU()] if l < depth else [linear]
    return torch.nn.Sequential(*layers)


def equality(examples, batch) -> list[dict]:
    """Max relative difference between the generated Trainer and torch.optim, per rule."""
    import numpy as np
    import torch

    import generated.mnist_mlp as net

    rng = np.random.default_rng(0)
    X = rng.standard_normal((examples, 784))
    y = rng.integers(0, 10, examples)
    rows = []
    for rule in _rules():
        trainer = net.Trainer(optimizer=rule.name, learning_rate=LEARNING_RATE, batch_size=batch,
                              epochs=1, shuffle=False, seed=1, dtype=np.float64)
        start = {k: v.copy() for k, v in trainer.params.items()}
        trainer.fit(X, y, track=False)
        model = _torch_model(torch, start, torch.float64)
        optimizer = _torch_optimizer(torch, rule, model.parameters(), LEARNING_RATE)
        Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
        for begin in range(0, examples, batch):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xt[begin:begin + batch]),
                                                     yt[begin:begin + batch])
            loss.backward()
            optimizer.step()
        worst = scaled = 0.0
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        for l, linear in enumerate(linears, start=1):
            for key, tensor in ((f"W{l}", linear.weight), (f"b{l}", linear.bias)):
                theirs = tensor.detach().numpy()
                ours = trainer.params[key]
                worst = max(worst, float(np.max(np.abs(ours - theirs) / (np.abs(theirs) + 1e-12))))
                scaled = max(scaled, float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))))
        rows.append({"optimizer": rule.name, "torch": rule.source, "max_relative_difference": worst,
                     "max_difference_over_largest_entry": scaled})
    return rows


def worker(args) -> dict:
    """Examples/s per rule for the generated Trainer and PyTorch eager, interleaved."""
    import numpy as np

    import generated.mnist_mlp as net

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.examples, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.examples)
    T = net.targets(y, args.examples, np.float32)
    runs = {}
    for rule in _rules():
        trainer = net.Trainer(optimizer=rule.name, learning_rate=1e-4, batch_size=args.batch,
                              epochs=1, shuffle=False, seed=0)
        trainer.fit(X[:args.batch * 4], T[:args.batch * 4], track=False)  # warm: buffers, numba

        def generated(trainer=trainer):
            trainer.fit(X, T, track=False)

        runs[f"generated {rule.name}"] = generated
    try:
        import torch

        torch.set_num_threads(args.threads)
        Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
        for rule in _rules():
            model = _torch_model(torch, net.init_params(0), torch.float32)
            optimizer = _torch_optimizer(torch, rule, model.parameters(), 1e-4)

            def eager(model=model, optimizer=optimizer):
                for begin in range(0, args.examples, args.batch):
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(
                        model(Xt[begin:begin + args.batch]), yt[begin:begin + args.batch]).backward()
                    optimizer.step()

            runs[f"torch {rule.name}"] = eager
    except ImportError:
        pass
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved: A B C ... A B C ...
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: args.examples / statistics.median(values) for name, values in times.items()}


def table(results: dict) -> str:
    lines = []
    for threads, speeds in results.items():
        lines.append(f"\n{threads} thread(s), batch {speeds.pop('_batch')}: examples/s "
                     "(and the step's cost over plain SGD)")
        lines.append("| rule | generated | vs sgd | PyTorch eager | vs sgd | generated / PyTorch |")
        lines.append("|---|---|---|---|---|---|")
        for rule in _rules():
            ours, theirs = speeds.get(f"generated {rule.name}"), speeds.get(f"torch {rule.name}")
            ours_sgd, theirs_sgd = speeds.get("generated sgd"), speeds.get("torch sgd")
            cells = [rule.name, f"{ours / 1e3:.1f}k", f"{ours_sgd / ours - 1:+.0%}"]
            cells += ([f"{theirs / 1e3:.1f}k", f"{theirs_sgd / theirs - 1:+.0%}",
                       f"{ours / theirs:.2f}x"] if theirs else ["-", "-", "-"])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one thread count")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=60000, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    examples, repeats = (512, 1) if args.smoke else (60000, 5)
    out = {}
    try:
        out["equality"] = equality(256 if args.smoke else 1024, 64)
        print("one epoch against torch.optim (float64): the largest relative difference of any "
              "entry, and the largest difference over the largest entry of its parameter")
        for row in out["equality"]:
            print(f"  {row['optimizer']:9s} {row['torch']:45s} {row['max_relative_difference']:.1e}"
                  f"  {row['max_difference_over_largest_entry']:.1e}")
    except ImportError:
        print("torch is not installed: no equality check (pip install torch==2.13.0)")
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    speeds = {}
    for threads in (1,) if args.smoke else (1, 2):
        command = [sys.executable, __file__, "--worker", f"--threads={threads}",
                   f"--examples={examples}", f"--repeats={repeats}", "--batch=128"]
        done = subprocess.run(command, env=thread_environment(env, threads), capture_output=True,
                              text=True, check=False, cwd=ROOT)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        speeds[threads] = json.loads(done.stdout.strip().splitlines()[-1]) | {"_batch": 128}
    out["speed"] = {str(k): dict(v) for k, v in speeds.items()}
    print(table(speeds))
    if not args.smoke:
        (ROOT / "bench" / "optimizer_results.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
