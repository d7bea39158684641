"""Training speed of the generated Trainer against NumPy by hand, PyTorch and JAX.

Seed 001's 784-128-64-10 ReLU/ReLU/softmax cross-entropy network, plain SGD updates, on
synthetic MNIST-shaped data (60000 x 784 float32; the values do not matter for speed).
For each BLAS thread count (a fresh worker process each, so every library is limited before
it loads) and each batch size, the implementations are run interleaved (A B C A B C ...)
after a warm-up, and the median examples/s is reported with:

* the ratio to the fastest *peer* (PyTorch eager, JAX jit step, JAX scan epoch) in that run;
* the achieved GFLOP/s as a fraction of the GEMM ceiling: the 8 matrix products of one step
  (forward 3, weight gradients 3, input gradients 2) alone, timed with NumPy on the same
  shapes and threads, with the weights in whichever memory layout (C or Fortran) is faster,
  on one input batch that stays in cache (the machine's best case: this is the ceiling the
  targets refer to), and again streaming the batches of the training rows in order, as an
  epoch reads them (what any implementation that reads the data pays on top).

It also measures, for the generated Trainer, what a steady-state step allocates (tracemalloc)
and the peak memory of a whole epoch against the data set's size.

    python bench/train_speed.py                 # full run: table + bench/results.json
    python bench/train_speed.py --smoke         # seconds: tiny sizes (the tests run this)

Peers that are not installed are skipped with a note (`pip install torch==2.13.0 jax jaxlib`).
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set in the environment, pin an older OpenBLAS
kernel; the full run drops them for its workers (and says so) unless --keep-env is given.
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
SIZES = (784, 128, 64, 10)
# multiply-adds x 2 per example: forward 3 GEMMs, weight gradients 3, input gradients 2
FLOP_PER_EXAMPLE = 2 * (784 * 128 + 128 * 64 + 64 * 10) * 2 + 2 * (128 * 64 + 64 * 10)
PEERS = ("torch eager", "jax jit", "jax scan")
LEARNING_RATE = 0.01
SETTLE = 0.3  # seconds between timed runs with more than one thread (see worker())


# ============================================================================ implementations

class Generated:
    """The generated module's Trainer: fit() for one pass over the examples given."""

    def __init__(self, dtype_name, shuffle=False, module_path=None, engine="numpy"):
        import numpy as np

        sys.path.insert(0, str(ROOT))
        if module_path is None:
            import generated.mnist_mlp as net
        else:  # another build of the module (--compare): loaded from its file
            from codegen.files import import_module_from

            net = import_module_from(module_path, f"_compared_{abs(hash(module_path))}")
        self.np, self.net, self.dtype, self.shuffle = np, net, np.dtype(dtype_name), shuffle
        self.engine = engine if module_path is None else None  # an older build: its default
        self.name = (f"generated {dtype_name}" + (" shuffled" if shuffle else "")
                     + (f" {engine} engine" if engine != "numpy" else "")
                     + (f" ({module_path})" if module_path else ""))

    def prepare(self, X, y, batch):
        self.X = X.astype(self.dtype)
        self.y = y
        engine = {} if self.engine is None else {"engine": self.engine}
        self.trainer = self.net.Trainer(learning_rate=LEARNING_RATE, batch_size=batch, epochs=1,
                                        optimizer="sgd" if batch == 1 else "minibatch",
                                        shuffle=self.shuffle, dtype=self.dtype, seed=0, **engine)

    def run(self, n):
        self.trainer.fit(self.X[:n], self.y[:n], track=False)


class TextbookNumPy:
    """NumPy as the documents write it: every step allocates its arrays."""

    name = "numpy textbook"

    def prepare(self, X, y, batch):
        import numpy as np

        self.np = np
        rng = np.random.default_rng(0)
        self.W = [(rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32)
                  for i, o in zip(SIZES[:-1], SIZES[1:])]
        self.b = [np.zeros(o, np.float32) for o in SIZES[1:]]
        self.X, self.Y = X, np.eye(10, dtype=np.float32)[y]
        self.batch = batch

    def run(self, n):
        np, (W1, W2, W3), (b1, b2, b3), lr = self.np, self.W, self.b, LEARNING_RATE
        for s in range(0, n, self.batch):
            x, y = self.X[s:s + self.batch], self.Y[s:s + self.batch]
            m = x.shape[0]
            z1 = x @ W1.T + b1
            a1 = np.maximum(z1, 0)
            z2 = a1 @ W2.T + b2
            a2 = np.maximum(z2, 0)
            z3 = a2 @ W3.T + b3
            e = np.exp(z3 - z3.max(axis=1, keepdims=True))
            a3 = e / e.sum(axis=1, keepdims=True)
            dz3 = (a3 - y) / m
            dW3, db3 = dz3.T @ a2, dz3.sum(axis=0)
            dz2 = (dz3 @ W3) * (z2 > 0)
            dW2, db2 = dz2.T @ a1, dz2.sum(axis=0)
            dz1 = (dz2 @ W2) * (z1 > 0)
            dW1, db1 = dz1.T @ x, dz1.sum(axis=0)
            W1 -= lr * dW1
            b1 -= lr * db1
            W2 -= lr * dW2
            b2 -= lr * db2
            W3 -= lr * dW3
            b3 -= lr * db3


class TorchEager:
    name = "torch eager"

    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    def prepare(self, X, y, batch):
        torch = self.torch
        torch.manual_seed(0)
        nn = torch.nn
        self.model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                   nn.Linear(64, 10))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.loss = nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype("int64"))
        self.batch = batch

    def run(self, n):
        model, opt, loss = self.model, self.opt, self.loss
        for s in range(0, n, self.batch):
            opt.zero_grad(set_to_none=True)
            loss(model(self.X[s:s + self.batch]), self.y[s:s + self.batch]).backward()
            opt.step()


def _jax_loss():
    import jax
    import jax.numpy as jnp

    def loss(params, x, y):
        (W1, b1), (W2, b2), (W3, b3) = params
        a1 = jax.nn.relu(x @ W1.T + b1)
        a2 = jax.nn.relu(a1 @ W2.T + b2)
        logits = a2 @ W3.T + b3
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, axis=1))

    def update(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)

    return update


def _jax_params():
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    return [(jnp.asarray((rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32)),
             jnp.zeros(o, jnp.float32)) for i, o in zip(SIZES[:-1], SIZES[1:])]


class JaxJit:
    name = "jax jit"

    def prepare(self, X, y, batch):
        import jax
        import jax.numpy as jnp
        import numpy as np

        self.update = jax.jit(_jax_loss())
        self.params = _jax_params()
        self.X = jnp.asarray(X)
        self.Y = jnp.asarray(np.eye(10, dtype=np.float32)[y])
        self.batch = batch
        self.update(self.params, self.X[:batch], self.Y[:batch])  # compile

    def run(self, n):
        params, update = self.params, self.update
        for s in range(0, n, self.batch):
            params = update(params, self.X[s:s + self.batch], self.Y[s:s + self.batch])
        self.params = params
        params[0][0].block_until_ready()


class JaxScan:
    """A whole pass compiled as one lax.scan over the batches."""

    name = "jax scan"

    def prepare(self, X, y, batch):
        import jax
        import jax.numpy as jnp
        import numpy as np

        update = _jax_loss()

        @jax.jit
        def epoch(params, xs, ys):
            return jax.lax.scan(lambda p, xy: (update(p, *xy), None), params, (xs, ys))[0]

        self.epoch, self.params, self.batch = epoch, _jax_params(), batch
        self.X = jnp.asarray(X)
        self.Y = jnp.asarray(np.eye(10, dtype=np.float32)[y])
        self._shaped = {}

    def _batches(self, n):
        if n not in self._shaped:
            steps = n // self.batch
            xs = self.X[:steps * self.batch].reshape(steps, self.batch, 784)
            ys = self.Y[:steps * self.batch].reshape(steps, self.batch, 10)
            self._shaped[n] = (xs, ys)
            self.epoch(self.params, xs, ys)[0][0].block_until_ready()  # compile for this n
        return self._shaped[n]

    def run(self, n):
        xs, ys = self._batches(n)
        self.params = self.epoch(self.params, xs, ys)
        self.params[0][0].block_until_ready()


# ============================================================================ measurements

def gemm_seconds(batch, repeats, np, data=None):
    """Median time of the 8 products of one step (float32), in the faster weight layout.

    Without ``data`` every step multiplies the same input batch, which stays in cache: the
    machine's best case.  With ``data`` (the rows the implementations train on) each step
    takes the next batch of it, so the inputs stream from memory as they do in training.
    """
    return min(_gemm_seconds(batch, repeats, np, order, data) for order in "CF")


def _gemm_seconds(batch, repeats, np, order, data):
    rng = np.random.default_rng(0)
    f32 = np.float32
    W = [np.asarray(rng.standard_normal((o, i)), f32, order=order)
         for i, o in zip(SIZES[:-1], SIZES[1:])]
    A = [rng.standard_normal((batch, n)).astype(f32) for n in SIZES]
    D = [rng.standard_normal((batch, n)).astype(f32) for n in SIZES[1:]]
    Z = [np.empty((batch, n), f32) for n in SIZES[1:]]
    dW = [np.empty_like(w) for w in W]
    P = [np.empty((batch, n), f32) for n in SIZES[1:-1]]

    def step(X):
        A[0] = X
        for l in range(3):
            np.matmul(A[l], W[l].T, out=Z[l])
            np.matmul(D[l].T, A[l], out=dW[l])
        np.matmul(D[2], W[2], out=P[1])
        np.matmul(D[1], W[1], out=P[0])

    if data is None:
        batches = [A[0]] * max(1, 2000 // batch)
    else:
        batches = [data[s:s + batch] for s in range(0, data.shape[0] - batch + 1, batch)]
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for X in batches:
            step(X)
        times.append((time.perf_counter() - start) / len(batches))
    return statistics.median(times[1:])


def allocation_figures(np, X, y):
    """Steady-state bytes allocated per step, and the peak memory of one epoch over X."""
    import tracemalloc

    sys.path.insert(0, str(ROOT))
    import generated.mnist_mlp as net

    out = {}
    for batch in (1, 32):
        params = net.init_params(dtype=np.float32)
        Xb, Yb, step = net._make_step(params, batch, np.float32)
        np.copyto(Xb, X[:batch])
        np.copyto(Yb, np.eye(10, dtype=np.float32)[y[:batch]])
        step(Xb, Yb, LEARNING_RATE)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            step(Xb, Yb, LEARNING_RATE)
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[f"step_bs{batch}"] = {"steps": 1000, "net_bytes": now - base, "peak_bytes": peak - base}
    trainer = net.Trainer(batch_size=128, epochs=1, dtype=np.float32)
    dataset = X.nbytes + y.nbytes
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    trainer.fit(X, y, track=True)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    out["epoch"] = {"dataset_bytes": dataset, "peak_extra_bytes": peak,
                    "peak_extra_fraction_of_dataset": peak / dataset}
    return out


def worker(args) -> dict:
    """One thread count: every implementation at every batch size, interleaved."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import numpy as np

    try:  # load SciPy's own OpenBLAS (the generated module's ger/gemv) before limiting threads
        import scipy.linalg.blas  # noqa: F401
    except ImportError:
        pass

    threads = args.threads[0]
    if hasattr(os, "sched_setaffinity") and threads < os.cpu_count():
        os.sched_setaffinity(0, set(range(threads)))  # no library can use more cores than this
    limits = threadpool_limits(limits=threads)
    rng = np.random.default_rng(0)
    n_data = args.examples
    X = rng.random((n_data, 784), dtype=np.float32)
    y = rng.integers(0, 10, n_data)
    # the peers take contiguous batches in order: the generated Trainer too (shuffle=False),
    # and once more shuffled (a gather per step), as a user trains
    notes = []
    impls = [Generated("float32"), Generated("float32", shuffle=True), Generated("float64"),
             TextbookNumPy()]
    impls[1:1] = [Generated("float32", module_path=path) for path in args.compare]
    try:  # the compiled engine, where numba is installed
        import numba  # noqa: F401
        impls.insert(1, Generated("float32", engine="compiled"))
    except ImportError:
        notes.append("compiled engine skipped: numba is not installed")
    for name, make in (("torch eager", lambda: TorchEager(threads)), ("jax jit", JaxJit),
                       ("jax scan", JaxScan)):
        if name.split()[0] not in args.peers:
            continue
        try:
            impls.append(make())
        except ImportError as err:
            notes.append(f"{name} skipped: {err}")
    results = {}
    for batch in args.batches:
        per_call = max(batch * args.steps.get(batch, 1), batch)
        per_call = min(per_call, n_data - n_data % batch)
        for impl in impls:
            impl.prepare(X, y, batch)
            impl.run(per_call)  # warm-up
        times = {impl.name: [] for impl in impls}
        cpu = {impl.name: [] for impl in impls}
        for r in range(args.repeats):
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for impl in order:
                if threads > 1:  # let the last library's idle threads stop spinning (Intel
                    time.sleep(SETTLE)  # OpenMP spins 200 ms, OpenBLAS ~0.1 s) on our cores
                start, start_cpu = time.perf_counter(), time.process_time()
                impl.run(per_call)
                times[impl.name].append(time.perf_counter() - start)
                cpu[impl.name].append(time.process_time() - start_cpu)
        gemm = gemm_seconds(batch, args.repeats, np)
        streamed = gemm_seconds(batch, args.repeats, np, data=X[:per_call])
        results[batch] = {
            "examples_per_call": per_call,
            "gemm_ceiling_examples_per_s": batch / gemm,
            "gemm_ceiling_gflops": FLOP_PER_EXAMPLE * batch / gemm / 1e9,
            "gemm_streamed_examples_per_s": batch / streamed,
            "gemm_streamed_gflops": FLOP_PER_EXAMPLE * batch / streamed / 1e9,
            "examples_per_s": {name: per_call / statistics.median(t) for name, t in times.items()},
            "cores_busy": {name: sum(cpu[name]) / sum(t) for name, t in times.items()},
        }
    info = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture")}
            for i in threadpool_info()]
    out = {"threads": threads, "batches": results, "notes": notes, "blas": info}
    if args.memory:
        out["memory"] = allocation_figures(np, X, y)
    limits.restore_original_limits()
    return out


# ============================================================================ report

def table(run: dict) -> str:
    lines = []
    for worker_run in run["workers"]:
        batches = worker_run["batches"]
        keys = sorted(batches, key=int)
        names = list(next(iter(batches.values()))["examples_per_s"])
        lines.append(f"\n{worker_run['threads']} BLAS thread(s); examples/s (ratio to the fastest "
                     f"peer; fraction of the GEMM ceiling, in cache / streamed)")
        head = "| implementation | " + " | ".join(f"bs={k}" for k in keys) + " |"
        lines += [head, "|" + "---|" * (len(keys) + 1)]
        for name in names:
            cells = []
            for k in keys:
                b = batches[k]
                speed = b["examples_per_s"][name]
                peers = [v for n, v in b["examples_per_s"].items() if n in PEERS]
                ratio = f"{speed / max(peers):.2f}x" if peers else "-"
                cells.append(f"{speed / 1e3:.1f}k ({ratio}; {speed / b['gemm_ceiling_examples_per_s']:.0%}"
                             f" / {speed / b['gemm_streamed_examples_per_s']:.0%})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        cells = [f"{batches[k]['gemm_ceiling_examples_per_s'] / 1e3:.1f}k "
                 f"({batches[k]['gemm_ceiling_gflops']:.0f} GFLOP/s)" for k in keys]
        lines.append("| GEMM ceiling (8 products alone, input in cache) | " + " | ".join(cells) + " |")
        cells = [f"{batches[k]['gemm_streamed_examples_per_s'] / 1e3:.1f}k "
                 f"({batches[k]['gemm_streamed_gflops']:.0f} GFLOP/s)" for k in keys]
        lines.append("| GEMM ceiling, streamed (inputs read batch by batch) | " + " | ".join(cells) + " |")
        epoch = [f"{60000 / max(batches[k]['examples_per_s'].values()):.2f} s" for k in keys]
        lines.append("| fastest epoch of 60000 | " + " | ".join(epoch) + " |")
        for note in worker_run["notes"]:
            lines.append(f"note: {note}")
        if "memory" in worker_run:
            mem = worker_run["memory"]
            for key in ("step_bs1", "step_bs32"):
                lines.append(f"allocation, {key}: {mem[key]['net_bytes']} bytes net, "
                             f"{mem[key]['peak_bytes']} bytes peak over {mem[key]['steps']} steps")
            e = mem["epoch"]
            lines.append(f"epoch peak memory beyond the data set: {e['peak_extra_bytes'] / 2**20:.1f} MiB "
                         f"= {e['peak_extra_fraction_of_dataset']:.1%} of the data set "
                         f"({e['dataset_bytes'] / 2**20:.0f} MiB)")
        blas = {(b["internal_api"], b["architecture"]) for b in worker_run["blas"]}
        lines.append("BLAS: " + ", ".join(f"{a} ({k})" for a, k in sorted(blas, key=str)))
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128, 1024])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--examples", type=int, default=60000)
    p.add_argument("--peers", nargs="*", default=["torch", "jax"])
    p.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    p.add_argument("--compare", nargs="*", default=[], metavar="MODULE.py",
                   help="also time these builds of mnist_mlp.py (e.g. an older commit's), "
                        "interleaved with the current one")
    p.add_argument("--keep-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the workers")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.repeats, args.examples = [1, 32], 2, 256
        args.threads = args.threads[:1]
    # examples per timed call: enough work to time, little enough to interleave often
    args.steps = {1: 3000, 32: 300, 128: 120, 1024: 20} if not args.smoke else {1: 64, 32: 4}
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    env = dict(os.environ)
    dropped = [k for k in PINNING if k in env]
    if not args.keep_env and not args.smoke:
        for key in dropped:
            env.pop(key)
    run = {"argv": sys.argv[1:], "workers": [],
           "environment": {"dropped": dropped if not args.keep_env and not args.smoke else []}}
    for threads in args.threads:
        # every library's thread pool is set before it loads: one process per thread count
        env_t = thread_environment(env, threads)
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads),
               "--repeats", str(args.repeats), "--examples", str(args.examples),
               "--batches", *map(str, args.batches), "--peers", *args.peers]
        if args.smoke:
            cmd.append("--smoke")
        if args.compare:
            cmd += ["--compare", *(str(Path(p).resolve()) for p in args.compare)]
        if threads == args.threads[0] and not args.smoke:
            cmd.append("--memory")
        done = subprocess.run(cmd, env=env_t, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        run["workers"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    if run["environment"]["dropped"]:
        print(f"(dropped {', '.join(dropped)} for the workers: they pin an older OpenBLAS kernel)")
    print(table(run))
    if not args.smoke:
        Path(args.json).write_text(json.dumps(run, indent=1))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
