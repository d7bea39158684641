"""``derive --train --backend torch|jax``: the same run as the NumPy runner's, trained on a
framework's engine with the generated backend module.

``fit(trainer, …)`` stands in for ``trainer.fit(…)`` (same arguments, same per-epoch records
and callbacks) and leaves the NumPy Trainer holding the trained parameters, so the runner's
report, history and model file are the NumPy runner's.  The batches are the Trainer's: its
examples per step, and per epoch ``default_rng(seed).permutation`` when shuffling.

* torch: the Trainer's update rule as its ``torch.optim`` class (``Optimizer.torch_class``,
  the same hyperparameters, the schedule's rate set per epoch), through the module's derived
  ``autograd.Function``; the rule's state (velocity, moments, step count) goes in from the
  Trainer and comes back to it, so a saved model resumes on either engine.
  One CPU thread per process (``OMP_NUM_THREADS`` when set), as torch's launcher gives
  each worker.  With ``workers`` > 1, that many processes launched by torch's own launcher
  (``python -m torch.distributed.run --standalone``, on this machine's loopback), each on its
  share of every global batch, under ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA);
  each share's loss is weighted by its size, so N processes take exactly the one-process step.
* jax: the Trainer's update rule as the module prints it from the same declaration
  (``update_<rule>``, the same hyperparameters, the schedule's rate per epoch), each epoch's
  full batches as one ``lax.scan`` (the module's ``train_epoch``) with the batch axis sharded
  over the available devices (a ``Mesh`` of ``jax.devices()``) when it divides; the rule's
  state and step count go in from the Trainer and come back to it, as on torch.

A stack of layer kinds trains the same way, its running statistics (batch normalisation's)
going in from the Trainer's ``layer_state`` and coming back to it after each epoch.  Dropout
masks come from the framework's generator (torch: the module's, seeded by the Trainer's seed;
jax: ``jax.random.key(seed)`` folded with the step count), not from the NumPy Trainer's, so a
run with dropout is the NumPy run's in distribution, not draw for draw; without dropout it is
the NumPy run's.  Batch normalisation normalises over the whole batch, so it is refused with
``workers`` > 1 (each process would normalise over its own share, as BatchNorm1d does under DDP
without SyncBatchNorm: another step than the one-process run's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..optimizers import OPTIMIZERS
from .runner import TrainingFailed

__all__ = ["BackendOptions", "BackendUnavailable", "fit", "torch_epochs", "jax_epochs",
           "epoch_orders", "worker_main"]


class BackendUnavailable(DataError):
    """The backend's framework is not installed, or the device asked for is absent."""


@dataclass(frozen=True)
class BackendOptions:
    backend: str  # torch | jax
    device: str = "cpu"  # torch: cpu | cuda
    workers: int = 1  # torch: processes under DistributedDataParallel


def require(backend: str, device: str = "cpu"):
    """The framework's module, or BackendUnavailable saying how to install it."""
    try:
        module = __import__(backend)
    except ImportError:
        raise BackendUnavailable(
            f"--backend {backend} needs {'PyTorch' if backend == 'torch' else 'JAX'}: "
            f"pip install 'backprop-derive[{backend}]'") from None
    if backend == "torch" and device == "cuda" and not module.cuda.is_available():
        raise BackendUnavailable("--device cuda: PyTorch sees no CUDA device here; use --device cpu")
    return module


def backend_path(module_path: str | Path, backend: str) -> Path:
    """The backend module written beside the NumPy module."""
    path = Path(module_path)
    return path.with_name(f"{path.stem}_{backend}.py")


def batches(order: np.ndarray, size: int):
    """The rows of each step of an epoch: full batches, then the rest."""
    return [order[start:start + size] for start in range(0, len(order), size)]


# ----------------------------------------------------------------------------- the loop

def fit(options: BackendOptions, trainer, module_path, X, Y, validation=None, callback=None,
        progress=None):
    """``trainer.fit`` on a backend; the trainer ends with the trained parameters, the rule's
    state and step count, its history and ``interrupted`` set as its own fit would set them."""
    net = trainer.network
    X = net.inputs(X, trainer.dtype).astype(trainer.dtype, copy=False)
    m = X.shape[0]
    T = net.targets(Y, m, trainer.dtype)
    size = trainer.step_size(m)
    total = -(-m // size)
    rates = [trainer.rate(e) for e in range(trainer.epoch, trainer.epoch + trainer.epochs)]
    settings = {"rates": rates, "size": size, "epochs": trainer.epochs, "shuffle": trainer.shuffle,
                "seed": trainer.seed, "dtype": trainer.dtype.name,
                "optimizer": trainer.optimizer, "hyperparameters": trainer.hyperparameters,
                "t": trainer.t, "rng": trainer._rng.bit_generator.state}
    path = backend_path(module_path, options.backend)
    state = {name: {key: np.array(view) for key, view in views.items()}
             for name, views in trainer.optimizer_state.items()}
    running = getattr(trainer, "layer_state", None) or {}  # moved in place after each epoch
    if running and options.workers > 1:
        raise BackendUnavailable(
            f"--workers {options.workers}: batch normalisation normalises over the batch, and "
            "under DistributedDataParallel each process would normalise over its own share "
            "(BatchNorm1d without SyncBatchNorm), another step than one process takes; "
            "use --workers 1")
    if options.backend == "torch":
        epochs = torch_epochs(path, trainer.params, X, np.asarray(Y), settings, options, state,
                              running=running)
    else:
        epochs = jax_epochs(path, trainer.params, X, T, settings, state, running=running)
    trainer.interrupted = False
    try:
        for i, (params, state, t, rng) in enumerate(epochs):
            epoch = trainer.epoch + 1
            trainer.params = params
            for name, views in trainer.optimizer_state.items():
                for key, view in views.items():
                    view[...] = state[name][key]
            trainer.t = t
            trainer._rng.bit_generator.state = rng  # the shuffling continues from here
            trainer.epoch = epoch  # a saved model counts the epochs the backend trained
            record = _record(trainer, X, Y, validation) | {"lr": rates[i]}
            for key, values in trainer.history.items():  # whatever figures the Trainer keeps
                values.append(record.get(key))
            if not np.isfinite(record["loss"]):
                raise FloatingPointError(
                    f"the training loss became {record['loss']} in epoch {epoch}; "
                    f"try a smaller learning_rate than {rates[i]:g}")
            if callback is not None:
                callback(epoch, record)
            if progress is not None and progress(epoch, total, total):
                trainer.interrupted = True
                break
    finally:
        close = getattr(epochs, "close", None)
        if close is not None:
            close()
    return trainer.history


def _record(trainer, X, Y, validation) -> dict:
    figures = trainer.evaluate(X, Y)
    record = {"loss": figures["loss"], "accuracy": figures["accuracy"]}
    if validation is not None:
        figures = trainer.evaluate(*validation)
        record.update(val_loss=figures["loss"], val_accuracy=figures["accuracy"])
    return record


def epoch_orders(m: int, size: int, epochs: int, shuffle: bool, rng_state: dict):
    """Each epoch's order of the examples, as the NumPy Trainer draws it from its generator
    (``rng_state``, the Trainer's ``_rng`` state), with the generator's state after it."""
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    for _ in range(epochs):
        order = rng.permutation(m) if shuffle and size < m else np.arange(m)
        yield order, rng.bit_generator.state


# ----------------------------------------------------------------------------- torch

def _torch_dtype(torch, name: str):
    return getattr(torch, name)


def _torch_optimizer(torch, model, parameters, settings, state):
    """The Trainer's rule as its ``torch.optim`` class on ``parameters``, its state (velocity,
    moments; the step count) loaded from the Trainer's (by ``Optimizer.torch_state``)."""
    rule = OPTIMIZERS[settings["optimizer"]]
    options = {key: tuple(value) if isinstance(value, list) else value
               for key, value in settings["hyperparameters"].items()}
    optimizer = getattr(torch.optim, rule.torch_class)(
        parameters, lr=settings["rates"][0], **options, **dict(rule.torch_options))
    if rule.torch_state and settings["t"]:  # a run that continues: torch's state from ours
        tensors = model.params()
        for key, tensor in tensors.items():
            entry = optimizer.state[tensor]
            for name, torch_key in rule.torch_state:
                entry[torch_key] = torch.from_numpy(np.array(state[name][key])).to(tensor)
            if rule.torch_class != "SGD":
                entry["step"] = torch.tensor(float(settings["t"]))
    return optimizer


def _torch_state(model, optimizer, settings) -> dict:
    """The rule's state as the Trainer keeps it: {name: {parameter: array}}."""
    rule = OPTIMIZERS[settings["optimizer"]]
    tensors = model.params()
    return {name: {key: optimizer.state[tensor][torch_key].detach().cpu().numpy().copy()
                   for key, tensor in tensors.items()}
            for name, torch_key in rule.torch_state}


def _torch_steps(module, model, step_model, optimizer, X, Y, settings, rank=0, world=1):
    """One epoch generator body shared by one process and DDP workers: yields per epoch the
    parameters, the rule's state, the step count and the shuffling generator's state."""
    import torch

    size, t = settings["size"], settings["t"]
    orders = epoch_orders(len(X), size, settings["epochs"], settings["shuffle"], settings["rng"])
    for epoch, (order, rng) in enumerate(orders):
        for group in optimizer.param_groups:  # the schedule's rate of this epoch
            group["lr"] = settings["rates"][epoch]
        for rows in batches(order, size):
            share = np.array_split(rows, world)[rank]
            weight = len(share) * world / len(rows)
            if len(share) == 0:  # fewer examples than processes: take part with weight 0
                share = rows[:1]
            index = torch.from_numpy(share).to(X.device)
            optimizer.zero_grad(set_to_none=True)
            loss = module.loss(step_model, X[index], Y[index])
            (loss * weight if weight != 1 else loss).backward()
            optimizer.step()
            t += 1
        params = {key: value.detach().cpu().numpy().copy()
                  for key, value in model.params().items()}
        yield params, _torch_state(model, optimizer, settings), t, rng


def _kinds(module) -> bool:
    """The module is a stack of layer kinds' (running statistics, dropout masks)."""
    return hasattr(module, "MASKS")


def _network(module, params, running, settings, device):
    """The torch module's Network holding ``params`` (and, for layer kinds, the running
    statistics ``running``, its dropout generator seeded by the Trainer's seed)."""
    import torch

    dtype = _torch_dtype(torch, settings["dtype"])
    if _kinds(module):
        return module.Network.from_numpy(params, running or None, dtype=dtype, device=device,
                                         seed=settings.get("seed") or 0)
    return module.Network.from_numpy(params, dtype=dtype, device=device)


def _keep(running, moved) -> None:
    """Copy the running statistics ``moved`` into the Trainer's arrays ``running``."""
    for key, view in running.items():
        view[...] = moved[key]


def torch_epochs(path, params, X, Y, settings, options: BackendOptions, state=None,
                 running=None):
    """Per epoch, (parameters, the rule's state, step count, generator state) after training
    with the torch module; ``state`` is the rule's state to start from (the Trainer's);
    ``running``, a stack of layer kinds' running statistics, is moved in place each epoch."""
    torch = require("torch", options.device)
    state = state or {}
    if options.workers > 1:
        yield from _distributed(path, params, X, Y, settings, options, state)
        return
    from codegen.files import import_module_from

    module = import_module_from(path)
    device = torch.device(options.device)
    if device.type == "cpu":  # as torch's launcher sets each worker: OMP_NUM_THREADS, else 1
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = _network(module, params, running, settings, device)
    optimizer = _torch_optimizer(torch, model, model.parameters(), settings, state)
    Xt = torch.from_numpy(np.ascontiguousarray(X)).to(device)
    Yt = torch.from_numpy(np.ascontiguousarray(Y)).to(device)
    for result in _torch_steps(module, model, model, optimizer, Xt, Yt, settings):
        if running:
            _keep(running, model.state_to_numpy())
        yield result


def _distributed(path, params, X, Y, settings, options: BackendOptions, state):
    """Launch the workers; yield each epoch's results as rank 0 writes them."""
    with tempfile.TemporaryDirectory(prefix="derive-ddp-") as job:
        job = Path(job)
        np.savez(job / "data.npz", X=X, Y=Y, **{f"param_{k}": v for k, v in params.items()},
                 **_flat_state(state))
        (job / "job.json").write_text(json.dumps({**settings, "module": str(Path(path).resolve()),
                                                  "device": options.device}))
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                   f"--nproc-per-node={options.workers}", "--local-addr=127.0.0.1",
                   "-m", "derive.training.backends", str(job)]
        with open(job / "log.txt", "w") as log:
            # its own session: Ctrl-C reaches this process only, which stops the workers after
            # the epoch (the runner's stop flag) instead of killing them mid-step
            launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        try:
            for epoch in range(1, settings["epochs"] + 1):
                result = job / f"epoch{epoch}.npz"
                while not result.exists():
                    if launcher.poll() is not None and not result.exists():
                        tail = (job / "log.txt").read_text(errors="replace")[-2000:]
                        raise TrainingFailed(f"the torch workers stopped (exit {launcher.returncode}) "
                                           f"in epoch {epoch}:\n{tail}")
                    time.sleep(0.02)
                with np.load(result) as stored:
                    arrays = {key: stored[key] for key in stored.files}
                progress = json.loads((job / f"epoch{epoch}.json").read_text())
                yield (_params_of(arrays), _state_of(arrays), progress["t"], progress["rng"])
                result.unlink()
            launcher.wait(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.terminate()
                launcher.wait(timeout=30)


def worker_main(job: str) -> int:
    """One DDP worker (run by torch's launcher): train, rank 0 writing each epoch's params."""
    import torch
    import torch.distributed as dist

    from codegen.files import import_module_from

    job = Path(job)
    settings = json.loads((job / "job.json").read_text())
    device = torch.device(settings["device"])
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    module = import_module_from(settings["module"])
    with np.load(job / "data.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    model = _network(module, _params_of(arrays), None, settings, device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _torch_optimizer(torch, model, ddp.parameters(), settings, _state_of(arrays))
    Xt, Yt = torch.from_numpy(arrays["X"]).to(device), torch.from_numpy(arrays["Y"]).to(device)
    steps = _torch_steps(module, model, ddp, optimizer, Xt, Yt, settings, rank, world)
    for epoch, (params, state, t, rng) in enumerate(steps, start=1):
        if rank == 0:  # the progress first: the arrays' file is what the launcher waits for
            (job / f"epoch{epoch}.json").write_text(json.dumps({"t": t, "rng": rng}))
            partial = job / f"epoch{epoch}.part.npz"
            np.savez(partial, **{f"param_{k}": v for k, v in params.items()},
                     **_flat_state(state))
            os.replace(partial, job / f"epoch{epoch}.npz")
    dist.barrier()
    dist.destroy_process_group()
    return 0


def _flat_state(state: dict) -> dict:
    """The rule's state {name: {parameter: array}} as npz entries ``state/<name>/<parameter>``."""
    return {f"state/{name}/{key}": array for name, arrays in state.items()
            for key, array in arrays.items()}


def _params_of(arrays: dict) -> dict:
    return {key[len("param_"):]: value for key, value in arrays.items()
            if key.startswith("param_")}


def _state_of(arrays: dict) -> dict:
    state: dict = {}
    for key, value in arrays.items():
        if key.startswith("state/"):
            _, name, parameter = key.split("/", 2)
            state.setdefault(name, {})[parameter] = value
    return state


# ----------------------------------------------------------------------------- jax

def jax_epochs(path, params, X, T, settings, state=None, devices=None, running=None):
    """Per epoch, (parameters, the rule's state, step count, generator state) after the
    module's ``lax.scan`` epoch of the Trainer's rule (``train_epoch``; the last short batch
    by ``train_step``), at the schedule's rate of the epoch; ``state`` is the rule's state to
    start from (the Trainer's; zeros when None).  The batch axis is sharded over ``devices``
    (default: all of JAX's) when the batch size divides; parameters and state are replicated.
    ``running``, a stack of layer kinds' running statistics, is moved in place each epoch."""
    jax = require("jax")
    if settings["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from codegen.files import import_module_from

    module = import_module_from(path)
    devices = list(devices or jax.devices())
    size = settings["size"]
    if size % len(devices):
        devices = devices[:1]
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    by_batch = NamedSharding(mesh, PartitionSpec(None, "data"))
    dtype = np.dtype(settings["dtype"])
    rule = settings["optimizer"]
    hyper = {key: tuple(value) if isinstance(value, list) else value
             for key, value in settings["hyperparameters"].items()}
    params = {key: np.asarray(value, dtype) for key, value in params.items()}
    kinds = _kinds(module)
    fresh = module.init_optimizer_state if kinds else module.init_state
    state = {name: {key: np.asarray(state[name][key], dtype) for key in params}
             for name in module.RULES[rule]["state"]} if state else fresh(params, rule)
    params, state = jax.device_put((params, state), replicated)
    if kinds:  # the running statistics, and the key of the dropout masks (step t: fold_in t)
        layer = jax.device_put({key: np.asarray(value, dtype)
                                for key, value in (running or {}).items()}, replicated)
        key = jax.random.key(settings.get("seed") or 0)
    t = settings["t"]
    orders = epoch_orders(len(X), size, settings["epochs"], settings["shuffle"], settings["rng"])
    for epoch, (order, rng) in enumerate(orders):
        rate = dtype.type(settings["rates"][epoch])  # the schedule's rate of this epoch
        full = len(order) - len(order) % size
        if full:
            rows = order[:full].reshape(-1, size)
            Xs, Ts = jax.device_put(X[rows], by_batch), jax.device_put(T[rows], by_batch)
            if kinds:
                params, state, layer, t, _ = module.train_epoch(
                    params, state, layer, Xs, Ts, rate, t, key, hyper, rule=rule)
            else:
                params, state, t, _ = module.train_epoch(params, state, Xs, Ts, rate, t, hyper,
                                                         rule=rule)
        if full < len(order):
            rest = order[full:]
            if kinds:
                params, state, layer, t, _ = module.train_step(
                    params, state, layer, X[rest], T[rest], rate, t,
                    jax.random.fold_in(key, t), hyper, rule=rule)
            else:
                params, state, t, _ = module.train_step(params, state, X[rest], T[rest], rate,
                                                        t, hyper, rule=rule)
        t = int(t)
        if running:
            _keep(running, {name: np.asarray(value) for name, value in layer.items()})
        yield ({key: np.array(value) for key, value in params.items()},
               {name: {key: np.array(value) for key, value in arrays.items()}
                for name, arrays in state.items()}, t, rng)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
