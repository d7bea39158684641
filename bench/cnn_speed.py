"""Training speed of the digits CNN (examples/digits_cnn.yaml): one epoch of plain SGD, float32,
one thread, batches of 32 and 128, three implementations interleaved in one process:

* ours: the generated NumPy module's Trainer (engine "numpy": im2col and BLAS, buffers
  allocated once, the derived backward);
* PyTorch eager: the same network as ``nn.Sequential`` (Conv2d, ReLU, MaxPool2d, ...,
  Flatten, Linear) with ``nn.CrossEntropyLoss`` and ``torch.optim.SGD``, autograd's backward;
* JAX: one ``jax.jit`` step (``lax.conv_general_dilated``, pooling by reshape, ``jax.grad``),
  called once per batch.

The data are the 1797 digits as 1x8x8 images (scikit-learn's, pixels x/16; random pixels when
scikit-learn is missing), in order (no shuffling: every implementation takes the same
contiguous batches).  After a warm-up epoch each, the implementations take turns, one epoch
each, ``--rounds`` times, so that the load of a shared machine falls on all alike; the median
examples/s is reported, with our ratio to each peer (the issue's target: >= 1.0).

    python bench/cnn_speed.py                 # batches 32 and 128, 7 rounds
    python bench/cnn_speed.py --smoke         # seconds: one round (the tests run this)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import PINNING, thread_environment  # noqa: E402

SPEC = ROOT / "examples" / "digits_cnn.yaml"
LEARNING_RATE = 0.01
WORKER = "CNN_SPEED_WORKER"


def _data():
    import numpy as np

    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        X, y = digits.data / 16.0, digits.target
    except ImportError:  # the values do not matter for speed
        rng = np.random.default_rng(0)
        X, y = rng.random((1797, 64)), rng.integers(0, 10, 1797)
    return X.astype(np.float32), y.astype(np.int64)


def _layers():
    """The spec's layers as (kind, options) for the peers' networks."""
    sys.path.insert(0, str(ROOT))
    from derive.spec import load_spec

    spec = load_spec(SPEC)
    return spec, [(layer.kind, dict(layer.option_dict), layer.activation.name, layer.units,
                   spec.image_in(l), spec.layer_sizes[l - 1])
                  for l, layer in enumerate(spec.layers, start=1)]


class Ours:
    name = "ours (NumPy)"

    def __init__(self, folder: Path):
        sys.path.insert(0, str(ROOT))
        from codegen.emit import write_module
        from codegen.files import import_module_from
        from derive.derivation import derive
        from derive.spec import load_spec

        self.net = import_module_from(write_module(derive(load_spec(SPEC)), folder))

    def prepare(self, X, y, batch):
        self.X, self.y = X, y
        self.trainer = self.net.Trainer(optimizer="sgd", learning_rate=LEARNING_RATE,
                                        batch_size=batch, epochs=1, shuffle=False,
                                        engine="numpy", dtype="float32", seed=0)

    def epoch(self):
        self.trainer.fit(self.X, self.y, track=False)


class Torch:
    name = "PyTorch eager"

    def __init__(self, spec, layers):
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        modules = []
        for kind, options, activation, units, image, n_in in layers:
            if kind == "conv2d":
                modules.append(torch.nn.Conv2d(image[0], options["filters"], options["kernel"],
                                               stride=options.get("stride", 1),
                                               padding=options.get("padding", 0)))
            elif kind == "max_pool":
                modules.append(torch.nn.MaxPool2d(options["size"]))
            elif kind == "flatten":
                modules.append(torch.nn.Flatten())
            else:
                modules.append(torch.nn.Linear(n_in, units))
            if activation == "relu":
                modules.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*modules)

    def prepare(self, X, y, batch):
        torch = self.torch
        self.X = torch.from_numpy(X.reshape(-1, 1, 8, 8))
        self.y = torch.from_numpy(y)
        self.batch = batch
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.loss = torch.nn.CrossEntropyLoss()

    def epoch(self):
        model, opt, loss, b = self.model, self.opt, self.loss, self.batch
        for s in range(0, len(self.X), b):
            opt.zero_grad(set_to_none=True)
            loss(model(self.X[s:s + b]), self.y[s:s + b]).backward()
            opt.step()


class Jax:
    name = "JAX jit step"

    def __init__(self, spec, layers):
        import jax
        import jax.numpy as jnp
        import numpy as np

        self.jax, self.jnp = jax, jnp
        rng = np.random.default_rng(0)
        params, plan = [], []
        for kind, options, activation, units, image, n_in in layers:
            if kind == "conv2d":
                k, F = options["kernel"], options["filters"]
                params.append((rng.standard_normal((F, image[0], k, k)).astype(np.float32) * 0.3,
                               np.zeros(F, np.float32)))
                plan.append(("conv", options.get("stride", 1), options.get("padding", 0),
                             activation))
            elif kind == "max_pool":
                params.append(())
                plan.append(("pool", options["size"], image))
            elif kind == "flatten":
                params.append(())
                plan.append(("flatten",))
            else:
                params.append((rng.standard_normal((units, n_in)).astype(np.float32) * 0.1,
                               np.zeros(units, np.float32)))
                plan.append(("dense",))
        self.params = jax.tree_util.tree_map(jnp.asarray, params)

        def forward(params, x):
            for (kind, *rest), p in zip(plan, params):
                if kind == "conv":
                    s, P, activation = rest
                    x = jax.lax.conv_general_dilated(x, p[0], (s, s), ((P, P), (P, P)),
                                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
                    x = x + p[1].reshape(1, -1, 1, 1)
                    if activation == "relu":
                        x = jax.nn.relu(x)
                elif kind == "pool":
                    size, (C, H, W) = rest
                    x = x.reshape(x.shape[0], C, H // size, size, W // size, size).max(axis=(3, 5))
                elif kind == "flatten":
                    x = x.reshape(x.shape[0], -1)
                else:
                    x = x @ p[0].T + p[1]
            return x

        def loss(params, x, y):
            logits = forward(params, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        @jax.jit
        def step(params, x, y):
            grads = jax.grad(loss)(params, x, y)
            return jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)

        self.step = step

    def prepare(self, X, y, batch):
        jnp = self.jnp
        self.X, self.y, self.batch = jnp.asarray(X.reshape(-1, 1, 8, 8)), jnp.asarray(y), batch
        self.batches = [(self.X[s:s + batch], self.y[s:s + batch])
                        for s in range(0, len(X), batch)]

    def epoch(self):
        params = self.params
        for x, y in self.batches:
            params = self.step(params, x, y)
        self.jax.block_until_ready(params)
        self.params = params


def worker(batches, rounds) -> dict:
    X, y = _data()
    spec, layers = _layers()
    impls = []
    with tempfile.TemporaryDirectory() as folder:
        impls.append(Ours(Path(folder)))
        for cls in (Torch, Jax):
            try:
                impls.append(cls(spec, layers))
            except ImportError as err:
                print(f"{cls.name}: skipped ({err})", file=sys.stderr)
        results = {}
        for batch in batches:
            times = {impl.name: [] for impl in impls}
            for impl in impls:  # warm-up: buffers, compilation
                impl.prepare(X, y, batch)
                impl.epoch()
            for _ in range(rounds):
                for impl in impls:
                    started = time.perf_counter()
                    impl.epoch()
                    times[impl.name].append(time.perf_counter() - started)
            results[batch] = {name: len(X) / statistics.median(t) for name, t in times.items()}
    return results


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="one round, batch 32")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches, args.rounds = [32], 1
    if os.environ.get(WORKER) != "1":  # a fresh process, one thread everywhere, no pinning
        env = {k: v for k, v in thread_environment(os.environ, 1).items() if k not in PINNING}
        env[WORKER] = "1"
        return subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:])],
                              env=env).returncode
    results = worker(args.batches, args.rounds)
    cpu = _cpu()
    print(f"digits CNN ({SPEC.name}), one SGD epoch of 1797 examples, float32, 1 thread, "
          f"median of {args.rounds} interleaved rounds; CPU: {cpu}")
    for batch, figures in results.items():
        ours = figures[Ours.name]
        line = f"batch {batch:4d}: " + ", ".join(f"{name} {value:,.0f} ex/s"
                                                  for name, value in figures.items())
        ratios = ", ".join(f"{ours / value:.2f}x {name}" for name, value in figures.items()
                           if name != Ours.name)
        print(line + (f"  (ours: {ratios})" if ratios else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rounds": args.rounds,
                                               "examples_per_second": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
