"""The runtime of generated modules: everything that is the same for every network.

A generated ``<name>.py`` holds only what is particular to its network (its constants, the
derived forward and backward passes, the per-example loss and the printed training step) and
hands them to a ``Network`` from this module; ``Network`` and ``Trainer`` add the rest: inputs
and targets checked, initial weights, the objective J, prediction, metrics, the training loop,
saving and loading.

This file is ordinary, tested Python in the tool's package (``codegen.runtime``) and is copied
verbatim beside the generated modules as ``DIR/_runtime.py``.  It needs only NumPy; SciPy is
used when present for BLAS rank-one updates (one-example steps).  It never imports the tool.
"""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np

try:  # optional: BLAS rank-1 updates for one-example steps; plain NumPy without SciPy
    from scipy.linalg import blas as _blas
except ImportError:  # pragma: no cover - exercised by the tests with SciPy hidden
    _blas = None

def _numba_installed() -> bool:
    """numba can be imported (looked up, not imported: it takes 0.1 s to import)."""
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # pragma: no cover - exercised with numba hidden
        return False


_HAVE_NUMBA = _numba_installed()  # the compiled engine is available; imported on first use

__all__ = ["API", "ForwardCache", "TrainingDiverged", "Network", "Trainer", "softmax",
           "logsumexp", "float_dtype", "rank_one_update", "one_row_product", "rank_one",
           "compiled", "ENGINES"]

API = 2  # generated modules check it: a module and a runtime of different APIs refuse to run
ENGINES = ("auto", "numpy", "compiled")
# numba's fast-math flags that keep infinities and NaN meaning what they mean
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_KERNELS: dict = {}

TASKS = {"real": "regression", "binary": "binary", "categorical": "classification",
         "sparse": "classification"}  # Network.labels -> Network.task


class ForwardCache:
    """What forward() keeps for backward(): Z[l] and A[l] indexed by layer (A[0] is X)."""

    __slots__ = ("Z", "A")

    def __init__(self, Z, A):
        self.Z = Z
        self.A = A

    @property
    def output(self):
        """The network's output A[L], shape (m, n_L)."""
        return self.A[-1]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during training."""


# ----------------------------------------------------------------------------- numerics

def softmax(Z):
    """softmax row by row, from Z - max(Z) so that no exponential overflows."""
    E = np.exp(Z - np.max(Z, axis=1, keepdims=True))
    return E / np.sum(E, axis=1, keepdims=True)


def logsumexp(Z):
    """log(sum_k exp(Z_k)) row by row, as a column, stable for any Z."""
    top = np.max(Z, axis=1, keepdims=True)
    return top + np.log(np.sum(np.exp(Z - top), axis=1, keepdims=True))


def float_dtype(dtype):
    """np.dtype(dtype), which must be a floating type."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type such as float32 or float64; got {dtype}")
    return dtype


_INIT_SCALES = {
    "he": lambda fan_in, units: np.sqrt(2.0 / fan_in),
    "xavier": lambda fan_in, units: np.sqrt(2.0 / (fan_in + units)),
    "normal": lambda fan_in, units: 0.01,
    "zeros": lambda fan_in, units: 0.0,
}


def initial_weights(rng, scheme, units, fan_in):
    """A (units, fan_in) weight matrix drawn by ``scheme`` (he, xavier, normal or zeros)."""
    if scheme not in _INIT_SCALES:
        raise ValueError(f"unknown initialisation {scheme!r} (known: {', '.join(_INIT_SCALES)})")
    if scheme == "zeros":
        return np.zeros((units, fan_in))
    return rng.standard_normal((units, fan_in)) * _INIT_SCALES[scheme](fan_in, units)


# ----------------------------------------------------------------------------- compiling

def compiled(kernel):
    """``kernel`` compiled by numba (cached on disk beside its module), or None without numba.

    Compiled once per process and function; numba compiles each dtype on first call.
    """
    if not _HAVE_NUMBA:
        return None
    if kernel not in _KERNELS:
        import numba

        _KERNELS[kernel] = numba.njit(cache=True, fastmath=_FASTMATH, nogil=True)(kernel)
    return _KERNELS[kernel]


# ----------------------------------------------------------------------------- BLAS for m = 1

def rank_one_update(dtype):
    """BLAS ger (A <- alpha x y^T + A, in place) for dtype, or None without SciPy."""
    if _blas is None:
        return None
    return {np.dtype(np.float32): _blas.sger, np.dtype(np.float64): _blas.dger}.get(np.dtype(dtype))


def rank_one(ger, W, d, a):
    """W <- W - d a^T in place by BLAS ger, whichever way W is laid out."""
    if W.flags.f_contiguous:
        ger(-1.0, d, a, a=W, overwrite_a=True)
    else:
        ger(-1.0, a, d, a=W.T, overwrite_a=True)


def one_row_product(dtype):
    """x @ B for one row x, as BLAS gemv from SciPy: the counterpart of np.matmul for m = 1.

    With one example every product of a step is a gemv from the same BLAS library as ger
    (SciPy's): two libraries' thread pools taking turns would spin against each other.
    """
    gemv = {np.dtype(np.float32): _blas.sgemv, np.dtype(np.float64): _blas.dgemv}[np.dtype(dtype)]

    def product(x, B, out):
        x, y = x.reshape(-1), out.reshape(-1)
        if B.T.flags.f_contiguous:  # B^T x with B^T column-major: no copy
            gemv(1.0, B.T, x, beta=0.0, y=y, overwrite_y=True)
        elif B.flags.f_contiguous:
            gemv(1.0, B, x, beta=0.0, y=y, overwrite_y=True, trans=1)
        else:
            np.matmul(x, B, out=y)

    return product


def step_products(m, dtype):
    """(product, ger) for a step on m examples: np.matmul and no ger, or at m = 1 with SciPy
    present, BLAS gemv and ger from one library (see ``one_row_product``)."""
    ger = rank_one_update(dtype) if m == 1 else None
    return (np.matmul if ger is None else one_row_product(dtype)), ger


# ----------------------------------------------------------------------------- targets

def _dense_labels(Y, m, n_out, dtype):
    labels = Y.reshape(m)
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError("class labels must be whole numbers")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= n_out)
    if np.any(bad):
        raise ValueError(f"class labels must lie in 0..{n_out - 1}; "
                         f"got {labels[bad][0]} at row {int(np.argmax(bad))}")
    dense = np.zeros((m, n_out), dtype=dtype)
    dense[np.arange(m), labels] = 1
    return dense


def _class_targets(Y, m, n_out, dtype, one_hot):
    if Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1):
        return _dense_labels(Y, m, n_out, dtype)
    if not one_hot:
        raise ValueError(f"Y must be integer class labels of shape (m,); got shape {Y.shape}")
    if Y.shape == (m, n_out):
        if np.any((Y < 0) | (Y > 1)) or not np.allclose(Y.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("one-hot targets must lie in [0, 1] and each row must sum to 1")
        return Y.astype(dtype, copy=False)
    raise ValueError(f"Y must be class labels (m,) or one-hot rows (m, {n_out}); got shape {Y.shape}")


def _unit_targets(Y, m, n_out, dtype, binary):
    if n_out == 1 and Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape != (m, n_out):
        shape = "(m,) or (m, 1)" if n_out == 1 else f"(m, {n_out})"
        raise ValueError(f"Y must have shape {shape}; got {Y.shape}")
    if binary and np.any((Y < 0) | (Y > 1)):
        raise ValueError("binary targets must be 0 or 1 (or probabilities in [0, 1])")
    if not binary and not np.all(np.isfinite(Y)):
        raise ValueError("targets must be finite numbers")
    return Y.astype(dtype, copy=False)


_TARGETS = {
    "categorical": lambda Y, m, n, dtype: _class_targets(Y, m, n, dtype, one_hot=True),
    "sparse": lambda Y, m, n, dtype: _class_targets(Y, m, n, dtype, one_hot=False),
    "binary": lambda Y, m, n, dtype: _unit_targets(Y, m, n, dtype, binary=True),
    "real": lambda Y, m, n, dtype: _unit_targets(Y, m, n, dtype, binary=False),
}

_TARGETS_ACCEPTED = {
    "categorical": "integer class labels in 0..K-1 of shape (m,) or (m, 1), or one-hot rows "
                   "(m, K) each summing to 1 (the output error a - y uses sum_i y_i = 1)",
    "sparse": "integer class labels in 0..K-1 of shape (m,) or (m, 1)",
    "binary": "0/1 targets (or probabilities in [0, 1]) of shape (m, n_L), or (m,) for one unit",
    "real": "real targets of shape (m, n_L), or (m,) for one output unit",
}


# ----------------------------------------------------------------------------- metrics

def _class_accuracy(output, T):
    return float(np.mean(np.argmax(output, axis=1) == np.argmax(T, axis=1)))


def _binary_accuracy(output, T):
    return float(np.mean((output > 0.5) == (T > 0.5)))


def _class_per_class(output, T):
    truth, guess = np.argmax(T, axis=1), np.argmax(output, axis=1)
    return {c: float(np.mean(guess[truth == c] == c))
            for c in range(T.shape[1]) if np.any(truth == c)}


def _binary_per_class(output, T):
    truth, guess = T > 0.5, output > 0.5
    if T.shape[1] == 1:
        return {c: float(np.mean(guess[truth == c] == c)) for c in (0, 1) if np.any(truth == c)}
    return {f"unit{unit}={c}": float(np.mean(guess[:, unit][truth[:, unit] == c] == c))
            for unit in range(T.shape[1]) for c in (0, 1) if np.any(truth[:, unit] == c)}


_METRICS = {  # task -> (accuracy, per-class accuracy); None for regression
    "classification": (_class_accuracy, _class_per_class),
    "binary": (_binary_accuracy, _binary_per_class),
    "regression": (lambda output, T: None, lambda output, T: None),
}


def _regression_metrics(output, T):
    error = (output - T).astype(np.float64)
    spread = float(np.sum((T - T.mean(axis=0)) ** 2))
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "r2": 1.0 - float(np.sum(error ** 2)) / spread if spread > 0 else float("nan")}


# ----------------------------------------------------------------------------- the network

class Network:
    """One generated network: its constants and derived functions, and all that follows.

    ``forward(params, X)`` -> ForwardCache, ``backward(params, cache, T)`` -> gradients for
    dense targets T, ``per_example_loss(cache, T)`` -> (m, 1) and ``make_step(params, m,
    dtype)`` -> (X buffer, Y buffer, step) are the module's printed functions; everything
    here is the same for every network.
    """

    def __init__(self, *, name, layer_sizes, activations, loss, labels, init, l1, l2, dtype,
                 training, batching, probability, forward, backward, per_example_loss,
                 make_step, make_epoch=None, compiled_max_batch=0):
        self.name = name
        self.layer_sizes = tuple(layer_sizes)
        self.activations = tuple(activations)
        self.loss_name = loss
        self.labels = labels
        self.task = TASKS[labels]
        self.init = tuple(init)
        self.l1, self.l2 = float(l1), float(l2)
        self.dtype = float_dtype(dtype)
        self.training = dict(training)
        self.batching = dict(batching)  # optimizer name -> "all" | 1 | "batch_size"
        self.probability = bool(probability)
        self.forward = forward
        self.derived_backward = backward
        self.per_example_loss = per_example_loss
        self.make_step = make_step
        self.make_epoch = make_epoch  # compiled whole epochs, or None
        # engine "auto" compiles steps of at most this many examples (where the generator
        # measured the compiled engine faster); 0: never
        self.compiled_max_batch = compiled_max_batch

    @property
    def depth(self):
        return len(self.layer_sizes) - 1

    # -- parameters -------------------------------------------------------------------
    def init_params(self, seed=0, dtype=None):
        """Initial parameters: W_l drawn by the layer's scheme (INIT), b_l = 0.

        W_l is stored in column-major (Fortran) order: the forward product A W^T is then a
        plain one, which BLAS runs faster.
        """
        dtype = float_dtype(self.dtype if dtype is None else dtype)
        rng = np.random.default_rng(seed)
        params = {}
        sizes = zip(self.layer_sizes[:-1], self.layer_sizes[1:])
        for l, (fan_in, units) in enumerate(sizes, start=1):
            weights = initial_weights(rng, self.init[l - 1], units, fan_in)
            params[f"W{l}"] = np.asfortranarray(weights, dtype)
            params[f"b{l}"] = np.zeros(units, dtype=dtype)
        return params

    def check_params(self, params, dtype):
        """A float copy of params in ``dtype``, laid out as init_params lays it out, checked
        against the layer sizes."""
        checked = {}
        sizes = zip(self.layer_sizes[:-1], self.layer_sizes[1:])
        for l, (fan_in, units) in enumerate(sizes, start=1):
            for key, shape in ((f"W{l}", (units, fan_in)), (f"b{l}", (units,))):
                if key not in params:
                    raise ValueError(f"params has no {key!r}")
                value = np.array(params[key], dtype=dtype, order="F")
                if value.shape != shape:
                    raise ValueError(f"params[{key!r}] must have shape {shape}; got {value.shape}")
                checked[key] = value
        return checked

    # -- inputs and targets -----------------------------------------------------------
    def inputs(self, X, dtype):
        """X as an (m, n_0) array: integers become ``dtype``, floats keep their own."""
        X = np.asarray(X)
        n_in = self.layer_sizes[0]
        if X.ndim != 2 or X.shape[1] != n_in:
            raise ValueError(
                f"X must have shape (m, {n_in}), one example per row; got {X.shape}"
                + (" (for one example use X[None, :])" if X.shape == (n_in,) else ""))
        if X.dtype.kind in "biu":
            return X.astype(dtype)
        if X.dtype.kind != "f":
            raise ValueError(f"X must hold real numbers; got dtype {X.dtype}")
        return X

    def targets(self, Y, m, dtype=None):
        """Y as the dense (m, n_L) array the formulas use; a clear ValueError otherwise."""
        Y = np.asarray(Y)
        if Y.shape[:1] != (m,):
            raise ValueError(f"Y has {Y.shape[0] if Y.ndim else 0} rows but X has {m}: "
                             "one target per example")
        if Y.dtype.kind not in "biuf":
            raise ValueError(f"Y must hold numbers; got dtype {Y.dtype}")
        dtype = self.dtype if dtype is None else dtype
        return _TARGETS[self.labels](Y, m, self.layer_sizes[-1], dtype)

    @property
    def targets_accepted(self):
        """What ``targets`` accepts, in words."""
        return _TARGETS_ACCEPTED[self.labels]

    # -- the objective and its gradient -----------------------------------------------
    def penalty(self, params):
        """(l2/2) sum_l ||W_l||^2 + l1 sum_l |W_l|: the regularisation term of J."""
        weights = [params[f"W{l}"] for l in range(1, self.depth + 1)]
        total = 0.0
        if self.l2:
            total += 0.5 * self.l2 * sum(float(np.sum(W ** 2)) for W in weights)
        if self.l1:
            total += self.l1 * sum(float(np.sum(np.abs(W))) for W in weights)
        return total

    def objective(self, params, cache, Y):
        """J from a forward cache and dense targets Y (as returned by targets())."""
        return float(np.mean(self.per_example_loss(cache, Y))) + self.penalty(params)

    def loss(self, params, X, Y):
        """J: the mean loss over the batch plus the regularisation, as a float."""
        cache = self.forward(params, X)
        return self.objective(params, cache, self.targets(Y, cache.A[0].shape[0], cache.output.dtype))

    def backward(self, params, cache, Y):
        """dJ/dtheta for every parameter, by the chain-rule recurrence (same keys as params)."""
        T = self.targets(Y, cache.A[0].shape[0], cache.output.dtype)
        return self.derived_backward(params, cache, T)

    # -- prediction and metrics -------------------------------------------------------
    def predict(self, params, X):
        """Class labels (classification), 0/1 labels (binary) or output values (regression);
        shape (m,) when the network has one output unit."""
        output = self.forward(params, X).output
        if self.task == "classification":
            return np.argmax(output, axis=1)
        if self.task == "binary":
            output = (output > 0.5).astype(np.int64)
        return output[:, 0] if output.shape[1] == 1 else output

    def predict_proba(self, params, X):
        """The output probabilities (m, n_L); only for softmax or sigmoid outputs."""
        if not self.probability:
            raise ValueError(f"{self.name}'s outputs are not probabilities "
                             f"({self.activations[-1]} output); use predict()")
        return self.forward(params, X).output

    def accuracy(self, output, T):
        """Fraction of correct decisions (None for regression)."""
        return _METRICS[self.task][0](output, T)

    def per_class_accuracy(self, output, T):
        """For each class: the accuracy on the examples of that class (None for regression)."""
        return _METRICS[self.task][1](output, T)

    def evaluate(self, params, X, Y):
        """Loss, accuracy and per-class accuracy (None for regression), and for regression
        RMSE, MAE and R^2."""
        cache = self.forward(params, X)
        T = self.targets(Y, cache.A[0].shape[0], cache.output.dtype)
        result = {"loss": self.objective(params, cache, T),
                  "accuracy": self.accuracy(cache.output, T),
                  "per_class_accuracy": self.per_class_accuracy(cache.output, T)}
        if self.task == "regression":
            result.update(_regression_metrics(cache.output, T))
        return result

    def examples_per_step(self, optimizer, m, batch_size):
        """How many of m examples one step of ``optimizer`` averages over."""
        examples = self.batching[optimizer]
        if examples == "all":
            return m
        return min(batch_size if examples == "batch_size" else int(examples), m)


# ----------------------------------------------------------------------------- training

def _npz_path(path):
    """The path as np.savez writes it: with an .npz suffix."""
    path = str(path)
    return path if path.endswith(".npz") else path + ".npz"


class Trainer:
    """Gradient descent on J: batch, stochastic (one example) or mini-batch updates.

    theta <- theta - learning_rate * dJ/dtheta, J averaged over the examples of each step.
    A generated module subclasses it with its ``network``; defaults come from the spec's
    ``training:`` section (the module's TRAINING).
    """

    network: Network = None  # set by the generated module's subclass

    def __init__(self, params=None, learning_rate=None, batch_size=None, epochs=None,
                 optimizer=None, shuffle=None, seed=None, dtype=None, engine="auto"):
        net = self.network
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        if engine == "compiled" and (not _HAVE_NUMBA or net.make_epoch is None):
            raise ValueError("engine='compiled' needs numba (pip install numba); "
                             "use engine='numpy' or 'auto'")
        self.engine = engine
        given = {"learning_rate": learning_rate, "batch_size": batch_size, "epochs": epochs,
                 "optimizer": optimizer, "shuffle": shuffle, "seed": seed}
        settings = {key: net.training[key] if value is None else value
                    for key, value in given.items()}
        if settings["optimizer"] not in net.batching:
            raise ValueError(f"optimizer must be one of {', '.join(net.batching)}; "
                             f"got {settings['optimizer']!r}")
        learning_rate, batch_size, epochs = (settings[k] for k in ("learning_rate", "batch_size",
                                                                    "epochs"))
        if not (np.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number; got {learning_rate!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if int(epochs) != epochs or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}")
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.optimizer = settings["optimizer"]
        self.shuffle = bool(settings["shuffle"])
        self.seed = int(settings["seed"])
        self.dtype = float_dtype(net.dtype if dtype is None else dtype)
        self.params = net.init_params(self.seed, self.dtype) if params is None else params
        self.history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        self.interrupted = False

    @property
    def params(self):
        """The parameters being trained (the Trainer's own arrays, in its dtype)."""
        return self._params

    @params.setter
    def params(self, params):
        # a checked copy in the Trainer's dtype: training never mutates the caller's arrays,
        # and a float64 dict given to a float32 Trainer is converted, not silently ignored
        self._params = self.network.check_params(params, self.dtype)
        self._steps = {}  # batch size -> (X buffer, Y buffer, step) of the NumPy engine
        self._epochs = {}  # batch size -> compiled epoch
        self.first_call_seconds = 0.0  # the compiled engine's first calls (compiling included)

    def compiled(self, size):
        """True when fit() runs the compiled engine for steps of ``size`` examples: engine
        "compiled", or "auto" with numba where the module says compiling is faster."""
        net = self.network
        if self.engine == "numpy" or not _HAVE_NUMBA or net.make_epoch is None:
            return False
        return self.engine == "compiled" or size <= net.compiled_max_batch

    def step_size(self, m):
        """Examples per update on a training set of m examples."""
        return self.network.examples_per_step(self.optimizer, m, self.batch_size)

    def fit(self, X, Y, validation=None, callback=None, progress=None, track=True):
        """Train for ``epochs`` epochs; returns the history (per-epoch loss and accuracy).

        ``callback(epoch, record)`` is called after each epoch with that epoch's figures.
        ``progress(epoch, done, total)`` is called after each update with the number of
        updates done in the epoch; if it returns True, training stops after that update (the
        partial epoch is still recorded) and ``self.interrupted`` is set.
        ``track=False`` skips the per-epoch loss and accuracy (a pass over the data each).
        """
        net = self.network
        X = net.inputs(X, self.dtype).astype(self.dtype, copy=False)
        m = X.shape[0]
        T = net.targets(Y, m, self.dtype)
        if validation is not None:
            Xv = net.inputs(validation[0], self.dtype).astype(self.dtype, copy=False)
            Tv = net.targets(validation[1], Xv.shape[0], self.dtype)
        rng = np.random.default_rng(self.seed)
        size = self.step_size(m)
        total = -(-m // size)
        steps = self._steps  # batch size -> (X buffer, Y buffer, step): the last batch may differ
        self.interrupted = False
        for epoch in range(1, self.epochs + 1):
            # one step over all m examples (batch descent) sums the same gradient in any order
            order = rng.permutation(m) if self.shuffle and size < m else None
            compiled = self.compiled(size)
            if compiled:  # the whole epoch in one call; progress is told once, at its end
                self._compiled_epoch(X, T, order, size)
                if progress is not None and progress(epoch, total, total):
                    self.interrupted = True
            for done, start in enumerate(range(0, m, size) if not compiled else (), start=1):
                stop = min(start + size, m)
                if stop - start not in steps:
                    steps[stop - start] = net.make_step(self._params, stop - start, self.dtype)
                Xb, Yb, step = steps[stop - start]
                if order is None:  # contiguous slices, no copy
                    step(X[start:stop], T[start:stop], self.learning_rate)
                else:  # gather the shuffled rows into the step's buffers
                    rows = order[start:stop]
                    np.take(X, rows, axis=0, out=Xb, mode="clip")
                    np.take(T, rows, axis=0, out=Yb, mode="clip")
                    step(Xb, Yb, self.learning_rate)
                if progress is not None and progress(epoch, done, total):
                    self.interrupted = True
                    break
            record = {}
            if track:
                record = self._record(X, T, "")
                if validation is not None:
                    record.update(self._record(Xv, Tv, "val_"))
                for key, value in record.items():
                    self.history[key].append(value)
                if not np.isfinite(record["loss"]):
                    raise TrainingDiverged(
                        f"the training loss became {record['loss']} in epoch {epoch}; "
                        f"try a smaller learning_rate than {self.learning_rate:g}")
            if callback is not None:
                callback(epoch, record)
            if self.interrupted:
                break
        return self.history

    def _compiled_epoch(self, X, T, order, size):
        """Every full batch in one compiled call, then the last partial batch in another."""
        m = X.shape[0]
        order = np.arange(m) if order is None else order
        full = m - m % size
        for count, rows in ((size, order[:full]), (m - full, order[full:])):
            if count == 0:
                continue
            first = count not in self._epochs
            if first:
                self._epochs[count] = self.network.make_epoch(self._params, count, self.dtype)
            started = time.perf_counter()
            self._epochs[count](X, T, rows, self.dtype.type(self.learning_rate))
            if first:
                self.first_call_seconds += time.perf_counter() - started

    def _record(self, X, T, prefix, chunk=2048):
        """Loss and accuracy over X, T, a chunk of rows at a time (bounded memory)."""
        net = self.network
        m = X.shape[0]
        total_loss, correct = 0.0, 0.0
        for start in range(0, m, chunk):
            cache = net.forward(self._params, X[start:start + chunk])
            rows = T[start:start + chunk]
            total_loss += float(np.sum(net.per_example_loss(cache, rows)))
            accuracy = net.accuracy(cache.output, rows)
            correct += 0.0 if accuracy is None else accuracy * rows.shape[0]
        return {
            prefix + "loss": total_loss / m + net.penalty(self._params),
            prefix + "accuracy": None if net.task == "regression" else correct / m,
        }

    def predict(self, X):
        return self.network.predict(self._params, X)

    def predict_proba(self, X):
        return self.network.predict_proba(self._params, X)

    def evaluate(self, X, Y):
        """Loss, accuracy and per-class accuracy (None for regression), and RMSE, MAE, R^2
        for regression."""
        return self.network.evaluate(self._params, X, Y)

    def save(self, path):
        """Save the parameters and settings to an .npz file (no pickle); returns its path."""
        net = self.network
        path = _npz_path(path)
        settings = {
            "module": net.name,
            "layer_sizes": list(net.layer_sizes),
            "activations": list(net.activations),
            "loss": net.loss_name,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "optimizer": self.optimizer,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "engine": self.engine,
            "history": self.history,
        }
        np.savez(path, __settings__=np.array(json.dumps(settings)), **self._params)
        return path

    @classmethod
    def load(cls, path):
        """A Trainer with the parameters and settings saved by save()."""
        net = cls.network
        path = _npz_path(path)
        with np.load(path, allow_pickle=False) as stored:
            settings = json.loads(str(stored["__settings__"]))
            if (tuple(settings["layer_sizes"]) != net.layer_sizes
                    or tuple(settings["activations"]) != net.activations):
                raise ValueError(
                    f"{path} holds a {settings['layer_sizes']} network with "
                    f"{settings['activations']}, not this module's {list(net.layer_sizes)} "
                    f"with {list(net.activations)}")
            params = {key: stored[key] for key in stored.files if key != "__settings__"}
        history = settings.pop("history")
        for key in ("module", "layer_sizes", "activations", "loss"):
            settings.pop(key)
        trainer = cls(params=params, **settings)
        trainer.history = history
        return trainer
