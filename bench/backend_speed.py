"""Training speed of the generated backends against their own framework's autograd.

Seed 001's 784-128-64-10 ReLU/ReLU/softmax cross-entropy network, plain SGD, float32, on
synthetic MNIST-shaped data (the values do not matter for speed):

* torch: the generated ``mnist_mlp_torch`` module (the derived backward, an autograd.Function)
  against the same network as ``nn.Sequential`` of ``nn.Linear`` with ``nn.CrossEntropyLoss``,
  both stepped by ``torch.optim.SGD``;
* jax: the generated ``train_epoch`` of its ``sgd`` rule (one ``lax.scan`` over the batches,
  ``jax.custom_vjp``)
  against the same scan written by hand with ``jax.grad``.

For each thread count (a fresh worker process each, every library limited before it loads)
and batch size, the four run interleaved after a warm-up; the median examples/s is reported,
and the ratio generated / autograd of the same framework (the issue's target: >= 1.0).

    python bench/backend_speed.py                  # 1 and 2 threads, batches 32, 128, 1024
    python bench/backend_speed.py --device cuda    # torch on a CUDA GPU (where there is one)
    python bench/backend_speed.py --smoke          # seconds: tiny sizes (the tests run this)

A framework that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import PINNING, thread_environment  # noqa: E402

SPEC = ROOT / "examples" / "seed001_mnist.yaml"
LEARNING_RATE = 0.01
SETTLE = 0.3  # seconds between timed runs with more than one thread (idle pools stop spinning)


def _generate(folder: Path) -> dict:
    """The seed 001 network's torch and jax modules, written into ``folder``."""
    sys.path.insert(0, str(ROOT))
    from codegen.emit import write_backend
    from derive.derivation import derive
    from derive.spec import load_spec

    derivation = derive(load_spec(SPEC))
    return {backend: write_backend(derivation, backend, folder) for backend in ("torch", "jax")}


# ============================================================================ implementations

class TorchGenerated:
    name, framework = "torch generated", "torch"

    def __init__(self, module, device):
        import torch

        self.torch, self.module, self.device = torch, module, device

    def prepare(self, X, T, batch):
        torch = self.torch
        self.model = self.module.Network(dtype=torch.float32, device=self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.X, self.T = torch.from_numpy(X).to(self.device), torch.from_numpy(T).to(self.device)
        self.batch = batch

    def run(self, n):
        loss, model, opt = self.module.loss, self.model, self.opt
        for s in range(0, n, self.batch):
            opt.zero_grad(set_to_none=True)
            loss(model, self.X[s:s + self.batch], self.T[s:s + self.batch]).backward()
            opt.step()
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class TorchAutograd(TorchGenerated):
    name = "torch autograd"

    def prepare(self, X, T, batch):
        torch = self.torch
        nn = torch.nn
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                   nn.Linear(64, 10)).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.criterion = nn.CrossEntropyLoss()
        self.X, self.T = torch.from_numpy(X).to(self.device), torch.from_numpy(T).to(self.device)
        self.batch = batch

    def run(self, n):
        model, opt, criterion = self.model, self.opt, self.criterion
        for s in range(0, n, self.batch):
            opt.zero_grad(set_to_none=True)
            criterion(model(self.X[s:s + self.batch]), self.T[s:s + self.batch]).backward()
            opt.step()
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class JaxGenerated:
    name, framework = "jax generated scan", "jax"

    def __init__(self, module):
        self.module = module

    def _params(self):
        return self.module.init_params(seed=0)

    def _epoch(self):
        module = self.module
        return lambda params, xs, ys: module.train_epoch(params, {}, xs, ys, LEARNING_RATE,
                                                         rule="sgd")[0]

    def prepare(self, X, T, batch):
        import jax.numpy as jnp

        self.epoch, self.params, self.batch = self._epoch(), self._params(), batch
        self.X, self.T = jnp.asarray(X), jnp.asarray(T)
        self.shaped = {}

    def _batches(self, n):
        if n not in self.shaped:
            steps = n // self.batch
            self.shaped[n] = (self.X[:steps * self.batch].reshape(steps, self.batch, 784),
                              self.T[:steps * self.batch].reshape(steps, self.batch, 10))
            self._block(self.epoch(self.params, *self.shaped[n]))  # compile for this n
        return self.shaped[n]

    @staticmethod
    def _block(params):
        for value in (params.values() if isinstance(params, dict) else [params[0][0]]):
            value.block_until_ready()

    def run(self, n):
        self.params = self.epoch(self.params, *self._batches(n))
        self._block(self.params)


class JaxHandWritten(JaxGenerated):
    name = "jax hand-written scan"

    def _params(self):
        import jax.numpy as jnp
        import numpy as np

        rng = np.random.default_rng(0)
        return [(jnp.asarray((rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32)),
                 jnp.zeros(o, jnp.float32)) for i, o in ((784, 128), (128, 64), (64, 10))]

    def _epoch(self):
        import jax
        import jax.numpy as jnp

        def loss(params, x, y):
            (W1, b1), (W2, b2), (W3, b3) = params
            a1 = jax.nn.relu(x @ W1.T + b1)
            a2 = jax.nn.relu(a1 @ W2.T + b2)
            return -jnp.mean(jnp.sum(jax.nn.log_softmax(a2 @ W3.T + b3) * y, axis=1))

        def update(params, xy):
            grads = jax.grad(loss)(params, *xy)
            return jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads), None

        return jax.jit(lambda params, xs, ys: jax.lax.scan(update, params, (xs, ys))[0])


# ============================================================================ measurements

def worker(args) -> dict:
    import numpy as np

    threads = args.threads[0]
    if hasattr(os, "sched_setaffinity") and threads < os.cpu_count():
        os.sched_setaffinity(0, set(range(threads)))
    rng = np.random.default_rng(0)
    X = rng.random((args.examples, 784), dtype=np.float32)
    T = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.examples)]
    notes, impls = [], []
    with tempfile.TemporaryDirectory() as folder:
        paths = _generate(Path(folder))
        from codegen.files import import_module_from

        try:
            import torch

            torch.set_num_threads(threads)
            module = import_module_from(paths["torch"])
            impls += [TorchGenerated(module, args.device), TorchAutograd(module, args.device)]
        except ImportError as err:
            notes.append(f"torch skipped: {err}")
        try:
            module = import_module_from(paths["jax"])
            impls += [JaxGenerated(module), JaxHandWritten(module)]
        except ImportError as err:
            notes.append(f"jax skipped: {err}")
        results = {}
        for batch in args.batches:
            per_call = min(batch * args.steps.get(batch, 1), args.examples - args.examples % batch)
            for impl in impls:
                impl.prepare(X, T, batch)
                impl.run(per_call)  # warm-up (and compiling)
            times = {impl.name: [] for impl in impls}
            for r in range(args.repeats):
                for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
                    if threads > 1:
                        time.sleep(SETTLE)
                    start = time.perf_counter()
                    impl.run(per_call)
                    times[impl.name].append(time.perf_counter() - start)
            results[batch] = {name: per_call / statistics.median(t) for name, t in times.items()}
    return {"threads": threads, "batches": results, "notes": notes}


def table(run: dict) -> str:
    lines = []
    for worker_run in run["workers"]:
        batches = worker_run["batches"]
        keys = sorted(batches, key=int)
        lines.append(f"\n{worker_run['threads']} thread(s), {run['device']}; examples/s "
                     "(generated / autograd of the same framework)")
        lines.append("| | " + " | ".join(f"batch {k}" for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        names = list(next(iter(batches.values()))) if batches else []
        for name in names:
            cells = []
            for k in keys:
                speed = batches[k][name]
                partner = {"torch generated": "torch autograd",
                           "jax generated scan": "jax hand-written scan"}.get(name)
                ratio = f" ({speed / batches[k][partner]:.2f}x)" if partner in batches[k] else ""
                cells.append(f"{speed / 1e3:.1f}k{ratio}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [f"note: {note}" for note in worker_run["notes"]]
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128, 1024])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--examples", type=int, default=60000)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch's device")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.repeats, args.examples, args.threads = [32], 1, 256, args.threads[:1]
    args.steps = {32: 200, 128: 100, 1024: 20} if not args.smoke else {32: 4}
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    run = {"argv": sys.argv[1:], "device": args.device, "workers": []}
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--repeats",
               str(args.repeats), "--examples", str(args.examples), "--device", args.device,
               "--batches", *map(str, args.batches)] + (["--smoke"] if args.smoke else [])
        done = subprocess.run(cmd, env=thread_environment(env, threads), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        run["workers"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(run))
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
