"""Training speed on every seed network: the generated Trainer's engines against the peers.

For each network of the documents (examples/seed*.yaml, their committed modules in generated/),
each batch size (1, 32, 128, 1024 and the full data set) and each BLAS thread count (a fresh worker
process each), the implementations run interleaved after a warm-up, plain SGD updates, float32,
on synthetic data of the network's shape, batches in order; the median examples/s is reported,
the compiled and auto engines' ratios to JAX's compiled epoch and to PyTorch, and the ceiling
the step's matrix products put on it with the fastest BLAS here (``bench/gemm_ceiling.py``).
The CPU model is recorded with the figures.  Also: the compiled engine's first
call (numba compiling) in a fresh process, and again in a second process (numba's disk cache).

    python bench/seed_speed.py                  # full run: tables + bench/seed_results.json
    python bench/seed_speed.py --smoke          # seconds: the tests run this

Peers: JAX `jit` step, JAX `lax.scan` epoch, PyTorch eager + optim.SGD, each built from the
spec's layers; a peer that is not installed is skipped with a note.  OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are dropped for the workers (they pin an older OpenBLAS kernel).
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
from gemm_ceiling import ceilings, cpu_model  # noqa: E402
from workers import PINNING, thread_environment  # noqa: E402
SEEDS = sorted((ROOT / "examples").glob("seed*.yaml"))
LEARNING_RATE = 0.01
SETTLE = 0.3  # seconds between timed runs with more than one thread (idle pools spin)


def _network(path):
    sys.path.insert(0, str(ROOT))
    import importlib

    from derive.spec import load_spec

    spec = load_spec(path)
    return spec, importlib.import_module(f"generated.{spec.name}")


# ============================================================================ implementations

class Generated:
    def __init__(self, net, engine):
        self.net, self.engine, self.name = net, engine, f"generated {engine}"

    def prepare(self, X, Y, batch):
        self.X, self.Y = X, Y
        self.trainer = self.net.Trainer(learning_rate=LEARNING_RATE, batch_size=batch, epochs=1,
                                        optimizer="minibatch", shuffle=False, seed=0,
                                        dtype="float32", engine=self.engine)

    def run(self, n):
        self.trainer.fit(self.X[:n], self.Y[:n], track=False)


def _peer_functions(spec, lib):
    """The spec's activations and loss in a framework: lib is "jax" or "torch"."""
    if lib == "jax":
        import jax
        import jax.numpy as jnp
        acts = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "softmax": jax.nn.softmax}
        log_softmax, log_sigmoid, mean, total = (jax.nn.log_softmax, jax.nn.log_sigmoid,
                                                 jnp.mean, jnp.sum)
    else:
        import torch
        acts = {"relu": torch.relu, "sigmoid": torch.sigmoid,
                "softmax": lambda z: torch.softmax(z, dim=1)}
        log_softmax = lambda z: torch.log_softmax(z, dim=1)  # noqa: E731
        log_sigmoid, mean, total = torch.nn.functional.logsigmoid, torch.mean, torch.sum
    names = [layer.activation.name for layer in spec.layers]
    missing = set(names) - set(acts)
    if missing:
        raise ImportError(f"no peer form for {sorted(missing)}")

    def loss(weights, x, y):
        a = x
        for (W, b), name in zip(weights[:-1], names[:-1]):
            a = acts[name](a @ W.T + b)
        W, b = weights[-1]
        z = a @ W.T + b
        if spec.loss == "mse":
            return mean(total((acts[names[-1]](z) - y) ** 2, 1) / 2)
        if names[-1] == "softmax":  # cross-entropy from the logits
            return -mean(total(log_softmax(z) * y, 1))
        return -mean(total(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z), 1))

    return loss


def _initial(spec, np):
    rng = np.random.default_rng(0)
    sizes = spec.layer_sizes
    return [((rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32),
             np.zeros(o, np.float32)) for i, o in zip(sizes[:-1], sizes[1:])]


class JaxJit:
    name = "jax jit"

    def __init__(self, spec):
        import jax

        loss = _peer_functions(spec, "jax")
        self.spec = spec
        self.update = jax.jit(lambda p, x, y: jax.tree_util.tree_map(
            lambda w, g: w - LEARNING_RATE * g, p, jax.grad(loss)(p, x, y)))

    def prepare(self, X, Y, batch):
        import jax.numpy as jnp
        import numpy as np

        self.params = [tuple(map(jnp.asarray, layer)) for layer in _initial(self.spec, np)]
        self.X, self.Y, self.batch = jnp.asarray(X), jnp.asarray(Y), batch
        self.update(self.params, self.X[:batch], self.Y[:batch])  # compile

    def run(self, n):
        params, update = self.params, self.update
        for s in range(0, n - n % self.batch, self.batch):
            params = update(params, self.X[s:s + self.batch], self.Y[s:s + self.batch])
        self.params = params
        params[0][0].block_until_ready()


class JaxScan(JaxJit):
    """A whole pass compiled as one lax.scan over the batches."""

    name = "jax scan"

    def __init__(self, spec):
        import jax

        super().__init__(spec)
        update = self.update
        self.epoch = jax.jit(lambda p, xs, ys: jax.lax.scan(
            lambda q, xy: (update(q, *xy), None), p, (xs, ys))[0])
        self._shaped = {}

    def prepare(self, X, Y, batch):
        super().prepare(X, Y, batch)
        self._shaped = {}

    def run(self, n):
        if n not in self._shaped:
            steps = n // self.batch
            xs = self.X[:steps * self.batch].reshape(steps, self.batch, -1)
            ys = self.Y[:steps * self.batch].reshape(steps, self.batch, -1)
            self._shaped[n] = (xs, ys)
            self.epoch(self.params, xs, ys)[0][0].block_until_ready()  # compile for this n
        self.params = self.epoch(self.params, *self._shaped[n])
        self.params[0][0].block_until_ready()


class TorchEager:
    name = "torch eager"

    def __init__(self, spec, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.spec, self.loss = torch, spec, _peer_functions(spec, "torch")

    def prepare(self, X, Y, batch):
        import numpy as np

        torch = self.torch
        self.params = [tuple(torch.tensor(a, requires_grad=True) for a in layer)
                       for layer in _initial(self.spec, np)]
        self.opt = torch.optim.SGD([p for layer in self.params for p in layer], lr=LEARNING_RATE)
        self.X, self.Y, self.batch = torch.from_numpy(X), torch.from_numpy(Y), batch

    def run(self, n):
        for s in range(0, n - n % self.batch, self.batch):
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.params, self.X[s:s + self.batch], self.Y[s:s + self.batch]).backward()
            self.opt.step()


# ============================================================================ workers

def worker(args) -> dict:
    """One thread count: every network, batch size and implementation, interleaved."""
    from threadpoolctl import threadpool_limits

    import numpy as np

    try:  # SciPy's OpenBLAS (one-example steps; numba's BLAS) loads before the limit
        import scipy.linalg.blas  # noqa: F401
    except ImportError:
        pass
    threads = args.threads[0]
    if hasattr(os, "sched_setaffinity") and threads < os.cpu_count():
        os.sched_setaffinity(0, set(range(threads)))
    limits = threadpool_limits(limits=threads)
    results, ceiling, notes = {}, {}, []
    for path in args.specs:
        spec, net = _network(path)
        rng = np.random.default_rng(0)
        n = args.examples
        X = rng.standard_normal((n, spec.input)).astype(np.float32)
        Y = net.targets(_targets(net, n, rng), n, np.float32)
        impls = [Generated(net, engine) for engine in ("numpy", "compiled", "auto")]
        for name, make in (("jax jit", lambda: JaxJit(spec)), ("jax scan", lambda: JaxScan(spec)),
                           ("torch eager", lambda: TorchEager(spec, threads))):
            if name.split()[0] in args.peers:
                try:
                    impls.append(make())
                except ImportError as err:
                    notes.append(f"{spec.name}: {name} skipped: {err}")
        results[spec.name], ceiling[spec.name] = {}, {}
        for batch in args.batches:
            size = n if batch == 0 else batch
            count = max(size, min(n, size * args.steps)) if batch else n
            count -= count % size
            for impl in impls:
                impl.prepare(X, Y, size)
                impl.run(count)  # warm-up (and compilation)
            times = {impl.name: [] for impl in impls}
            for r in range(args.repeats):
                for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
                    if threads > 1:
                        time.sleep(SETTLE)
                    start = time.perf_counter()
                    impl.run(count)
                    times[impl.name].append(time.perf_counter() - start)
            key = "full" if batch == 0 else str(batch)
            results[spec.name][key] = {name: count / statistics.median(t)
                                       for name, t in times.items()}
            gemm = ceilings(spec.layer_sizes, [size], seconds=0.05, repeats=3)
            ceiling[spec.name][key] = {lib: by[size][0] for lib, by in gemm.items()}
    limits.restore_original_limits()
    return {"threads": threads, "networks": results, "gemm_ceilings": ceiling, "notes": notes}


def _targets(net, n, rng):
    from codegen.fdcheck import random_targets

    return random_targets(net, n, rng)


_FIRST_CALL = """
import sys, time
import numpy as np
sys.path.insert(0, {root!r})
import generated.{name} as net
rng = np.random.default_rng(0)
X = rng.standard_normal((64, net.LAYER_SIZES[0]))
T = net.targets(rng.integers(0, 2, (64, net.LAYER_SIZES[-1])) if net.TASK != "classification"
                else rng.integers(0, net.LAYER_SIZES[-1], 64), 64)
trainer = net.Trainer(engine="compiled", optimizer="minibatch", batch_size=8, epochs=1)
start = time.perf_counter()
trainer.fit(X, T, track=False)
print(time.perf_counter() - start)
"""


def first_calls(specs, env) -> dict:
    """Seconds of the compiled engine's first fit() in a fresh process: cold (an empty kernel
    cache: numba compiles) and warm (a second process loads the kernels the first kept)."""
    import tempfile

    out = {}
    for path in specs:
        spec, _ = _network(path)
        code = _FIRST_CALL.format(root=str(ROOT), name=spec.name)
        with tempfile.TemporaryDirectory() as cache:  # empty, then filled by the first
            fresh = dict(env, BACKPROP_DERIVE_CACHE=cache, NUMBA_CACHE_DIR=cache)
            runs = [float(subprocess.run([sys.executable, "-c", code], env=fresh, check=True,
                                         capture_output=True, text=True).stdout)
                    for _ in range(2)]
        out[spec.name] = {"cold": runs[0], "cached": runs[1]}
    return out


# ============================================================================ report

def table(run: dict) -> str:
    lines = [f"CPU: {run.get('cpu', 'not recorded')}"]
    for w in run["workers"]:
        lines.append(f"\n{w['threads']} BLAS thread(s): examples/s; then the engines' ratios to "
                     "the peers, and the step's products alone on the fastest BLAS")
        for name, batches in w["networks"].items():
            impls = list(next(iter(batches.values())))
            lines += [f"\n{name}", "| implementation | " + " | ".join(f"bs={b}" for b in batches)
                      + " |", "|" + "---|" * (len(batches) + 1)]
            for impl in impls:
                cells = [_speed(batches[b][impl]) for b in batches]
                lines.append(f"| {impl} | " + " | ".join(cells) + " |")
            for engine in ("compiled", "auto"):
                for peer in ("jax scan", "torch eager"):
                    if peer in impls:
                        ratios = [f"{batches[b][f'generated {engine}'] / batches[b][peer]:.2f}x"
                                  for b in batches]
                        lines.append(f"| {engine} / {peer} | " + " | ".join(ratios) + " |")
            gemm = w.get("gemm_ceilings", {}).get(name, {})
            if gemm:
                cells = []
                for b in batches:
                    lib, best = max(gemm[b].items(), key=lambda item: item[1])
                    cells.append(f"{_speed(best)} ({lib})")
                lines.append("| GEMM ceiling (fastest BLAS) | " + " | ".join(cells) + " |")
        lines += [f"note: {note}" for note in w["notes"]]
    if run.get("first_calls"):
        lines += ["", "compiled engine, first fit() in a new process (s): cold / cached"]
        lines += [f"  {name}: {t['cold']:.2f} / {t['cached']:.2f}"
                  for name, t in run["first_calls"].items()]
    return "\n".join(lines)


def _speed(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128, 1024, 0],
                   help="examples per step; 0 is the full data set")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--steps", type=int, default=20000, help="steps per timed run, at most")
    p.add_argument("--peers", nargs="*", default=["torch", "jax"])
    p.add_argument("--specs", nargs="+", default=[str(p) for p in SEEDS])
    p.add_argument("--json", default=str(ROOT / "bench" / "seed_results.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.threads, args.batches, args.repeats, args.examples, args.steps = [1], [1, 4], 1, 64, 8
        args.specs = args.specs[:1]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    run = {"argv": sys.argv[1:], "cpu": cpu_model(), "workers": []}
    for threads in args.threads:
        env_t = thread_environment(env, threads)
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads),
               "--repeats", str(args.repeats), "--examples", str(args.examples),
               "--steps", str(args.steps), "--batches", *map(str, args.batches),
               "--peers", *args.peers, "--specs", *args.specs]
        done = subprocess.run(cmd, env=env_t, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        run["workers"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not args.smoke:
        run["first_calls"] = first_calls(args.specs, env)
    print(table(run))
    Path(args.json).write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
