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

import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import types
import warnings
import zlib

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

__all__ = ["API", "ForwardCache", "TrainingDiverged", "ModelFileError", "model_file_settings",
           "Network", "Trainer", "softmax", "logsumexp", "float_dtype", "rank_one_update",
           "one_row_product", "rank_one", "unchanged", "compiled", "compiled_kernel", "ENGINES",
           "load_beside", "MISSING", "is_missing", "table_columns", "encode_table",
           "number_specs", "NUMBER", "CATEGORY", "cache_root", "cpu_model", "EngineTimes",
           "kernel_matrix", "gather_matrix", "GATHER_LIMIT", "Conv2d", "Pool2d", "conv2d",
           "conv2d_input_grad", "conv2d_weight_grad", "conv2d_bias_grad", "pool2d",
           "pool2d_input_grad"]

API = 5  # generated modules check it: a module and a runtime of different APIs refuse to run
# (5: the kernels call exp, matmul_into and subtract_product)
ENGINES = ("auto", "numpy", "compiled")
# numba's fast-math flags that keep infinities and NaN meaning what they mean
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_KERNELS: dict = {}

FULL = "full"  # batch_size: every training example in one step (batch gradient descent)
TASKS = {"real": "regression", "binary": "binary", "categorical": "classification",
         "sparse": "classification"}  # Network.labels -> Network.task


class ForwardCache:
    """What forward() keeps for backward(): Z[l] and A[l] indexed by layer (A[0] is X), and
    for layer kinds the training forward's other arrays by name (μ, σ², x̂, masks)."""

    __slots__ = ("Z", "A", "saved")

    def __init__(self, Z, A, saved=None):
        self.Z = Z
        self.A = A
        self.saved = saved or {}

    @property
    def output(self):
        """The network's output A[L], shape (m, n_L)."""
        return self.A[-1]


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite, or grew far above where it started."""


DIVERGED_FACTOR = 100.0  # a training loss this many times its value before training: diverged


def _finite_rows(X, what):
    """A clear ValueError naming the first entry of X that is NaN or infinite (the sum, which
    allocates nothing, says whether to look)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(X)):
            return
    bad = ~np.isfinite(X)
    if np.any(bad):
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(f"{what} holds {X[row, column]} at row {row}, column {column}: "
                         "inputs must be finite numbers (fill in or drop such rows)")


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


def initial_kernel(rng, scheme, shape):
    """A convolution's (F, C, k, k) kernel drawn by ``scheme``, its fan-in C k^2 and fan-out
    F k^2 as torch counts them (torch.nn.init's _calculate_fan_in_and_fan_out)."""
    if scheme not in _INIT_SCALES:
        raise ValueError(f"unknown initialisation {scheme!r} (known: {', '.join(_INIT_SCALES)})")
    F, C, k, _ = shape
    if scheme == "zeros":
        return np.zeros(shape)
    return rng.standard_normal(shape) * _INIT_SCALES[scheme](C * k * k, F * k * k)


# ----------------------------------------------------------------------------- compiling

def compiled(kernel):
    """``kernel`` compiled by numba, or None without numba.

    Compiled once per process and function; numba compiles each dtype on first call.  The
    machine code is cached on disk beside the module (numba's user cache folder when that
    folder is not writable) and reused by every later process, however the module is loaded
    there (``import generated.net``, from its file path, by the tool): numba's cached code
    imports its module by the ``__name__`` of the kernel's globals, so the module is named,
    and registered, by its file's content (``_cache_name``), the same in every process.
    """
    if not _HAVE_NUMBA:
        return None
    if kernel not in _KERNELS:
        name = _cache_module(kernel)
        if name is not None:
            kernel.__globals__["__name__"] = name
        _KERNELS[kernel] = _Compiled(kernel, cache=name is not None)
    return _KERNELS[kernel]


def _cache_module(kernel):
    """The name (``_cache_name``) under which ``kernel``'s module is registered for numba's
    cached code, which imports its module by the ``__name__`` of the kernel's globals; None
    for a module that is not read from a file (no disk cache)."""
    module = sys.modules.get(kernel.__module__)
    name = _cache_name(module)
    if name is not None:
        sys.modules.setdefault(name, module)
    return name


_CACHE_PREFIX = "_backprop_derive_"


def _cache_name(module):
    """``_backprop_derive_<file stem>_<digest of its bytes>`` for a module read from a file;
    None for one that is not (nothing to cache beside)."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            digest = hashlib.sha256(file.read()).hexdigest()[:16]
    except OSError:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{_CACHE_PREFIX}{stem}_{digest}"


_SAID = set()  # what has been said once in this process: "compiling", a cache that failed


def cache_root():
    """This tool's folder for what it keeps between processes: ``$BACKPROP_DERIVE_CACHE``,
    else ``backprop-derive`` in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    given = os.environ.get("BACKPROP_DERIVE_CACHE")
    if given:
        return given
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "backprop-derive")


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _threads():
    """The CPUs this process may run on and the thread limits the BLAS libraries read."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    limits = ",".join(os.environ.get(key, "") for key in
                      ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    return f"{cpus} cpus; threads {limits}"


class EngineTimes:
    """Measured seconds per example of each engine, per machine and network, kept in
    ``cache_root()/engines.json`` so that each is measured once on a machine."""

    FILE = "engines.json"

    def __init__(self):
        self.path = os.path.join(cache_root(), self.FILE)

    def key(self, module, size, dtype, plain):
        name = _cache_name(module)
        if name is None:
            return None
        return "|".join((cpu_model(), _threads(), name, str(size), np.dtype(dtype).name,
                         "plain" if plain else "gradient"))

    def read(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                found = json.load(file)
            return found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key):
        found = self.read().get(key) if key else None
        ok = isinstance(found, dict) and all(
            isinstance(found.get(e), (int, float)) and found[e] > 0 for e in ("numpy", "compiled"))
        return found if ok else None

    def put(self, key, times):
        """Adds ``times``; an unwritable cache is not an error (measured again next time)."""
        if key is None:
            return
        known = self.read()
        known[key] = times
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            atomic_save(self.path, lambda file: file.write(json.dumps(known, indent=1).encode()))
        except OSError:
            pass


_SHARED = []  # the cache locator, once registered with numba


def _share_kernels():
    """Keep compiled kernels in ``cache_root()/kernels/<module's content name>`` (under
    ``$NUMBA_CACHE_DIR/backprop-derive`` when that is set), so that a
    module's kernels compile once per machine wherever its file lies (a second folder, the
    tool's own cache, a test's temporary folder): numba's locators, tried first, look there
    for the code of a module named by its content (``_cache_name``).  Where that folder is
    not writable, or numba's locator API differs, numba's own places serve (beside the
    module, else its user-wide cache)."""
    if _SHARED:
        return
    _SHARED.append(True)
    try:
        from numba.core import caching, config

        base = (caching._SourceFileBackedLocatorMixin, caching._CacheLocator)
        locators = caching.CacheImpl._locator_classes
    except AttributeError:  # pragma: no cover - another numba's internals
        return

    class ByContent(*base):
        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._name = py_func.__globals__["__name__"]
            # numba's own setting (NUMBA_CACHE_DIR) first: all of numba's code kept there
            base = (os.path.join(config.CACHE_DIR, "backprop-derive") if config.CACHE_DIR
                    else os.path.join(cache_root(), "kernels"))
            self._cache_path = os.path.join(base, self._name)

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):  # the content's digest is in the name
            return self._name

        @classmethod
        def from_function(cls, py_func, py_file):
            if not str(py_func.__globals__.get("__name__", "")).startswith(_CACHE_PREFIX):
                return None
            return super().from_function(py_func, py_file)

    locators.insert(0, ByContent)


class _Compiled:
    """A numba dispatcher that says, once on a terminal, when its first call compiles (not
    when it loads cached code), and that recompiles without the disk cache, saying so once,
    when the cached code cannot be loaded."""

    def __init__(self, kernel, cache):
        self.kernel = kernel
        self.function = self._jit(cache)
        self.first = True

    def _jit(self, cache):
        import numba

        if cache:
            _share_kernels()
        # error_model "numpy": a division by zero gives inf or NaN as in NumPy, and the loops
        # vectorise (Python's model checks every division and raises)
        return numba.njit(cache=cache, fastmath=_FASTMATH, nogil=True,
                          error_model="numpy")(self.kernel)

    def __call__(self, *args):
        if self.first:
            self.first = False
            return self._first_call(args)
        return self.function(*args)

    def _first_call(self, args):
        stream = sys.stderr
        say = "compiling" not in _SAID and getattr(stream, "isatty", lambda: False)()
        if say:
            stream.write("compiling the training kernel\u2026 ")
            stream.flush()
        started = time.perf_counter()
        try:
            result = self.function(*args)
        except ImportError as err:  # raised while loading cached code, before the kernel runs
            if "cache" not in _SAID:
                _SAID.add("cache")
                warnings.warn(f"numba's cached code of {self.kernel.__name__} could not be "
                              f"loaded ({err}); compiling it again, without the disk cache",
                              RuntimeWarning, stacklevel=3)
            self.function = self._jit(False)
            result = self.function(*args)
        if say:
            if sum(self.function.stats.cache_hits.values()):  # loaded, not compiled: unsaid
                stream.write("\r\x1b[K")
            else:
                _SAID.add("compiling")
                stream.write(f"{time.perf_counter() - started:.1f} s\n")
            stream.flush()
        return result


def compiled_kernel(kernel, rule):
    """An epoch kernel compiled by numba with its module's ``_update`` bound to ``rule`` (a
    ``_rules`` function, compiled too; None: the plain rule, fused into the kernel) and its
    ``_runtime`` to the kernel helpers (``KERNEL_HELPERS``, inlined), or None without numba.

    Each rule gets its own copy of the kernel, named after the rule and a checksum of its
    code and the helpers': numba inlines the rule and drops the branches of the other case,
    and its disk cache keeps one file per copy (a changed rule or helper is a new name, never
    stale cached code).
    """
    if not _HAVE_NUMBA:
        return None
    if (kernel, rule) not in _KERNELS:
        codes = [helper.__code__ for helper in KERNEL_HELPERS + _COMPILED_FORMS]
        update = None
        if rule is not None:
            codes.append(rule.__code__)
            update = compiled(rule).function
        digest = zlib.crc32(b"".join(map(_code_bytes, codes)) + repr(_EXP_FORMS).encode()
                            + repr(_blas_file()).encode())  # the BLAS it calls by name
        name = f"{kernel.__name__}_{'plain' if rule is None else rule.__name__}_{digest:08x}"
        module = _cache_module(kernel)
        if module is not None:  # numba finds the module by its __name__, as in compiled()
            kernel.__globals__["__name__"] = module
        bound = types.FunctionType(kernel.__code__, dict(kernel.__globals__, _update=update,
                                                         _runtime=_kernel_helpers()), name)
        bound.__qualname__, bound.__module__ = name, module or kernel.__module__
        _KERNELS[kernel, rule] = _Compiled(bound, cache=module is not None)
    return _KERNELS[kernel, rule]


def _code_bytes(code) -> bytes:
    """A function's code as bytes, the same in every process: its instructions and constants,
    nested functions' code by their own bytes (a code object's repr holds its address)."""
    consts = [_code_bytes(c) if isinstance(c, types.CodeType) else repr(c).encode()
              for c in code.co_consts]
    return code.co_code + b"|".join(consts) + repr(code.co_names).encode()


# ----------------------------------------------------------------------------- kernel helpers
# What the printed epoch kernels call for the work every network's step shares: NumPy and
# loops here (the kernel runs uncompiled too), inlined into each kernel by numba.

def dot_into(a, b, out):
    """out = a b; for one row, out[0] = bᵀ a[0] (a matrix-vector product)."""
    if a.shape[0] == 1:
        np.dot(b.T, a[0], out[0])
    else:
        np.dot(a, b, out)


def column_sums(src, out):
    """out[j] = sum_i src[i, j], row by row (row-major src)."""
    for j in range(out.shape[0]):
        out[j] = 0.0
    for i in range(src.shape[0]):
        for j in range(out.shape[0]):
            out[j] += src[i, j]


def softmax_rows(z, out):
    """out[i, j] = exp(z[i, j]) / sum_k exp(z[i, k]), from each row's maximum (stable)."""
    for i in range(z.shape[0]):
        top = z[i, 0]
        for j in range(1, z.shape[1]):
            top = max(top, z[i, j])
        total = 0.0
        for j in range(z.shape[1]):
            out[i, j] = exp(z[i, j] - top)
            total += out[i, j]
        for j in range(z.shape[1]):
            out[i, j] /= total


def gather_rows(X, T, order, start, A0, Y):
    """A batch: the rows order[start : start + m] of X and T into A0 and Y (m rows each)."""
    # element loops: numba lowers a row slice assignment with a shape check whose error path
    # (string formatting) takes seconds to compile
    for i in range(A0.shape[0]):
        row = order[start + i]
        for j in range(A0.shape[1]):
            A0[i, j] = X[row, j]
        for j in range(Y.shape[1]):
            Y[i, j] = T[row, j]


def subtract_outer(W, d, a):
    """W -= d aᵀ in place (one example's plain step), column by column (W column-major)."""
    for j in range(W.shape[1]):
        for i in range(W.shape[0]):
            W[i, j] -= d[i] * a[j]


def subtract(W, dW):
    """W -= dW in place, column by column (W column-major)."""
    for j in range(W.shape[1]):
        for i in range(W.shape[0]):
            W[i, j] -= dW[i, j]


def matmul_into(a, b, out):
    """out = a b (BLAS gemm; compiled: NumPy's BLAS where ``_numpy_blas`` finds it)."""
    np.dot(a, b, out)


def subtract_product(a, b, out):
    """out -= a b in place (the plain rule's weight step W^T -= A^T D, D scaled by the rate):
    in a compiled kernel one BLAS gemm with beta = 1 (``_compiled_subtract_product``), with
    no gradient array written and read back."""
    np.subtract(out, a @ b, out=out)


def exp(x):
    """e**x of a scalar: NumPy's here; in a compiled kernel, ``_exp_code``'s, which numba
    vectorises (a call of the C library's exp per element keeps a loop scalar)."""
    return np.exp(x)


KERNEL_HELPERS = (dot_into, column_sums, softmax_rows, gather_rows, subtract_outer, subtract,
                  matmul_into, subtract_product, exp)

# e**x = 2**n e**r with n = round(x / ln 2), r = x - n ln 2 in two parts (Cody and Waite), e**r
# by its Taylor polynomial (error below half an ulp on |r| <= ln(2)/2), 2**n from its bits:
# float type -> (bits, mantissa bits, exponent bias, lowest x with a normal result, highest x
# with a finite one, ln 2 in two parts, degree)
_EXP_FORMS = {
    "float32": (32, 23, 127, -87.33654475, 88.72283905, 0.693359375, -2.12194440e-4, 7),
    "float64": (64, 52, 1023, -708.3964185322641, 709.782712893384, 0.693145751953125,
                1.42860682030941723212e-6, 13),
}


def _exp_code(builder, x, bits, mantissa, bias, low, high, ln2_hi, ln2_lo, degree):
    """LLVM instructions for e**x of the float x: within 1 ulp of the exact value (measured:
    0.62 ulp in float32, 1.0 in float64), inf above ``high``, NaN for NaN, and 0 where the
    result is below the smallest normal number (NumPy gives a subnormal there, < 1.2e-38 in
    float32).  Every instruction carries flags of its own, so numba's fast-math pass, which
    flags only the instructions that have none, cannot reassociate the range reduction."""
    from llvmlite import ir

    real, integer, i32 = x.type, ir.IntType(bits), ir.IntType(32)

    def const(value):
        return ir.Constant(real, value)

    def exact(instruction):  # nsz and contract: fused multiply-adds, no reordering
        instruction.flags.extend(("nsz", "contract"))
        return instruction

    def fmul(a, b):
        return exact(builder.fmul(a, b))

    def fma(a, b, c):  # a b + c
        return exact(builder.fadd(fmul(a, b), c))

    def power_of_two(n):  # 2**n from its bits, for n an exponent of a normal number
        biased = builder.add(n, ir.Constant(integer, bias))
        return builder.bitcast(builder.shl(biased, ir.Constant(integer, mantissa)), real)

    c = builder.select(builder.fcmp_ordered("<", x, const(low)), const(low), x)
    c = builder.select(builder.fcmp_ordered(">", c, const(high)), const(high), c)
    floor = builder.module.declare_intrinsic("llvm.floor", [real])
    n = builder.call(floor, [fma(c, const(1 / math.log(2)), const(0.5))])
    r = fma(n, const(-ln2_lo), fma(n, const(-ln2_hi), c))
    p = const(1 / math.factorial(degree))
    for k in range(degree - 1, -1, -1):
        p = fma(p, r, const(1 / math.factorial(k)))
    k = builder.fptosi(n, i32)  # |n| <= 1025: 2**n as two factors, each a normal number
    h = builder.ashr(k, ir.Constant(i32, 1))
    if bits != 32:
        k, h = builder.sext(k, integer), builder.sext(h, integer)
    y = fmul(fmul(p, power_of_two(h)), power_of_two(builder.sub(k, h)))
    y = builder.select(builder.fcmp_ordered(">", x, const(high)), const(math.inf), y)
    y = builder.select(builder.fcmp_ordered("<", x, const(low)), const(0.0), y)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)


def _compiled_exp():
    """``exp`` for numba: ``_exp_code`` inlined where it is called, for float32 and float64."""
    from numba import types as nb
    from numba.extending import intrinsic

    @intrinsic
    def exp(typingctx, x):
        if x not in (nb.float32, nb.float64):
            return None

        def codegen(context, builder, signature, args):
            return _exp_code(builder, args[0], *_EXP_FORMS[str(signature.args[0])])

        return x(x), codegen

    return exp


def _numpy_blas():
    """The file of NumPy's own BLAS (the OpenBLAS its wheels carry, ILP64 with ``scipy_``
    names) when it has CBLAS gemm, else None: NumPy's OpenBLAS is newer than SciPy's, which
    numba's np.dot calls, and faster on a step's products (784-128-64-10, batch 32, one
    thread: 89 us for the first layer's product against 125 us)."""
    import ctypes
    import glob

    folder = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(os.path.join(folder, os.pardir, "numpy.libs", "*openblas*"))
                       + glob.glob(os.path.join(folder, ".dylibs", "*openblas*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(library, f"scipy_cblas_{kind}gemm64_") for kind in "sd"):
            return path
    return None


_BLAS_FILE: list = []  # [_numpy_blas()], found once


def _blas_file():
    if not _BLAS_FILE:
        _BLAS_FILE.append(_numpy_blas())
    return _BLAS_FILE[0]


def _compiled_products():
    """``dot_into``, ``matmul_into`` and ``subtract_product`` for numba, on one ``gemm(alpha, a, b, beta, out)``
    (out = alpha a b + beta out, each array C- or F-contiguous): NumPy's BLAS through its
    CBLAS names where ``_numpy_blas`` finds it, else numba's binding of SciPy's (the one its
    np.dot calls).  Both are called by name, so a kernel calling them is cached."""
    import numba
    from numba import types as nb
    from numba.extending import overload
    from numba.np.linalg import _BLAS, get_blas_kind

    def gemm(alpha, a, b, beta, out):  # what numba calls: the overload below
        raise NotImplementedError

    path = _blas_file()
    if path is not None:
        from llvmlite import binding

        binding.load_library_permanently(path)

        def cblas(real):
            pointer, size, order = nb.CPointer(real), nb.int64, nb.int32
            return nb.ExternalFunction(
                f"scipy_cblas_{'s' if real == nb.float32 else 'd'}gemm64_",
                nb.void(order, order, order, size, size, size, real, pointer, size, pointer,
                        size, real, pointer, size))

        @overload(gemm, inline="always")  # inlined: no function of this module kept by
        # reference in a cached kernel (numba's cache could not load one from another folder)
        def typed(alpha, a, b, beta, out):
            if out.dtype not in (nb.float32, nb.float64):
                return None
            function = cblas(out.dtype)

            def row_or_column_major(alpha, a, b, beta, out):
                # branch-free (numba inlines it; its inliner mishandles a branch's values)
                rows = int(out.flags.c_contiguous)  # CBLAS: 101 row-major, 102 column-major
                same_a = int(a.flags.c_contiguous) * rows + int(a.flags.f_contiguous) * (1 - rows)
                same_b = int(b.flags.c_contiguous) * rows + int(b.flags.f_contiguous) * (1 - rows)
                along_a = 1 - abs(same_a - rows)  # the leading dimension: a row's or a column's
                along_b = 1 - abs(same_b - rows)
                lda = max(1, along_a * a.shape[1] + (1 - along_a) * a.shape[0])
                ldb = max(1, along_b * b.shape[1] + (1 - along_b) * b.shape[0])
                ldc = max(1, rows * out.shape[1] + (1 - rows) * out.shape[0])
                real = out.dtype.type
                function(102 - rows, 112 - same_a, 112 - same_b, out.shape[0], out.shape[1],
                         a.shape[1], real(alpha), a.ctypes, lda, b.ctypes, ldb, real(beta),
                         out.ctypes, ldc)

            return row_or_column_major
    else:
        @overload(gemm)
        def typed(alpha, a, b, beta, out):
            if out.dtype not in (nb.float32, nb.float64):
                return None
            xxgemm, kind = _BLAS().numba_xxgemm(out.dtype), ord(get_blas_kind(out.dtype))

            @numba.njit
            def column_major(alpha, a, b, beta, out):  # out F-contiguous; a, b either layout
                rows, inner, cols = a.shape[0], a.shape[1], b.shape[1]
                scale, keep = np.full(1, alpha, out.dtype), np.full(1, beta, out.dtype)
                trans_a, lda = (78, rows) if a.flags.f_contiguous else (84, inner)  # 'N', 'T'
                trans_b, ldb = (78, inner) if b.flags.f_contiguous else (84, cols)
                xxgemm(kind, trans_a, trans_b, rows, cols, inner, scale.ctypes, a.ctypes,
                       max(1, lda), b.ctypes, max(1, ldb), keep.ctypes, out.ctypes, max(1, rows))

            def either(alpha, a, b, beta, out):
                if out.flags.f_contiguous:
                    column_major(alpha, a, b, beta, out)
                else:  # row-major out: out^T = alpha b^T a^T + beta out^T, column-major
                    column_major(alpha, b.T, a.T, beta, out.T)

            return either

    @numba.njit(inline="always")
    def dot_into(a, b, out):
        if a.shape[0] == 1:  # one row: a matrix-vector product (np.dot: BLAS gemv)
            np.dot(b.T, a[0], out[0])
        else:
            gemm(1.0, a, b, 0.0, out)

    @numba.njit(inline="always")
    def matmul_into(a, b, out):
        gemm(1.0, a, b, 0.0, out)

    @numba.njit(inline="always")
    def subtract_product(a, b, out):
        gemm(-1.0, a, b, 1.0, out)

    return dot_into, matmul_into, subtract_product


_COMPILED_FORMS = (_exp_code, _compiled_exp, _compiled_products)  # in the kernels' digest


def _kernel_helpers():
    """A module of the helpers compiled for inlining: what ``_runtime`` is inside a kernel
    (each helper sees the others compiled, ``exp`` as ``_compiled_exp``)."""
    if not _HELPERS:
        import numba

        helpers = types.ModuleType("_backprop_derive_kernel_helpers")
        helpers.exp = _compiled_exp()
        helpers.dot_into, helpers.matmul_into, helpers.subtract_product = _compiled_products()
        for helper in KERNEL_HELPERS:
            if helper not in (exp, dot_into, matmul_into, subtract_product):
                bound = types.FunctionType(helper.__code__, dict(helper.__globals__, exp=helpers.exp),
                                           helper.__name__)
                setattr(helpers, helper.__name__, numba.njit(inline="always")(bound))
        _HELPERS.append(helpers)
    return _HELPERS[0]


_HELPERS: list = []  # the module _kernel_helpers makes, once


def momentum_update(running, value, momentum):
    """PyTorch's running statistic: running <- (1 - momentum) running + momentum value."""
    running *= 1.0 - momentum
    running += momentum * np.reshape(value, running.shape)


def bernoulli(rng, shape, keep, dtype):
    """A dropout mask: 1 with probability ``keep``, else 0, drawn from ``rng``."""
    return (rng.random(shape) < keep).astype(dtype)


def load_beside(path, name):
    """The module ``name`` from the folder of the file ``path``, registered in sys.modules
    under a name made from its own path, the same in every process (numba's cached kernels
    find their module by that name)."""
    import pathlib

    source = pathlib.Path(path).resolve().with_name(name + ".py")
    key = f"_backprop_derive_{name}_{zlib.crc32(str(source).encode()):08x}"
    spec = importlib.util.spec_from_file_location(key, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


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


def unchanged(param, delta, out=None):
    """The step's ``descend`` for a rule with state: nothing (the rule moves every parameter
    after the step); for the plain rule it is np.subtract."""


def step_products(m, dtype, rank_one=True):
    """(product, ger) for a step on m examples: np.matmul and no ger, or at m = 1 with SciPy
    present, BLAS gemv and (where ``rank_one``: the plain rule's updates) ger from one library
    (see ``one_row_product``)."""
    ger = rank_one_update(dtype) if m == 1 else None
    if ger is not None and not rank_one:
        return one_row_product(dtype), None
    return (np.matmul if ger is None else one_row_product(dtype)), ger


# ----------------------------------------------------------------------------- images

def kernel_matrix(W, in_place=False):
    """A convolution's (F, C, k, k) kernel as the (F, C k^2) matrix of its entries in column-
    major order (a 2-D one as is): a view of a column-major W (the layout init_params and the
    Trainer keep), else a copy; ``in_place``: a view or a ValueError (what a step writes or
    reads while the Trainer updates W in place must be W's own memory)."""
    if W.ndim == 2:
        return W
    view = W.reshape(W.shape[0], -1, order="F")
    if in_place and not np.shares_memory(view, W):
        raise ValueError("the kernel must be stored in column-major (Fortran) order, as "
                         "init_params gives it, for the step to use it in place")
    return view


GATHER_LIMIT = 1 << 20  # entries of the 0/1 gather matrix below which images are gathered by BLAS


def gather_matrix(window, dtype):
    """The 0/1 matrix G (H*W, k*k*Ho*Wo) with G[(u, v), (p, q, i, j)] = 1 where input entry
    (u, v) = (s i + p - P, s j + q - P) meets kernel offset (p, q) at output (i, j): an image's
    rows times G are its im2col columns (the padding's entries are 0: no row), and columns
    times G^T add every window back into place (col2im)."""
    C, H, W, F, k, s, P = window
    Ho, Wo = (H + 2 * P - k) // s + 1, (W + 2 * P - k) // s + 1
    G = np.zeros((H * W, k * k * Ho * Wo), dtype)
    p, q, i, j = np.meshgrid(*(np.arange(n) for n in (k, k, Ho, Wo)), indexing="ij")
    u, v = s * i + p - P, s * j + q - P
    inside = (u >= 0) & (u < H) & (v >= 0) & (v < W)
    G[(u * W + v)[inside], np.flatnonzero(inside.reshape(-1))] = 1
    return G


class Conv2d:
    """One convolution on m examples stored flat in NCHW order (m, C*H*W), with its buffers
    allocated once: ``window`` is (C, H, W, F, k, stride, padding).

    forward:      z[n,f,i,j] = sum_{c,p,q} W[f,c,p,q] a[n,c,s i+p-P, s j+q-P] + b[f]
    input_grad:   da[n,c,u,v] = sum_{f,i,j} delta[n,f,i,j] W[f,c,u+P-s i, v+P-s j]
                  (the full correlation of delta with the flipped kernel: W^T delta's columns,
                  added back into place)
    weight_grad:  dW[f,c,p,q] = sum_{n,i,j} delta[n,f,i,j] a[n,c,s i+p-P, s j+q-P]
                  (the correlation of the input with delta, from the forward's columns)
    bias_grad:    db[f] = sum_{n,i,j} delta[n,f,i,j]

    The im2col columns, in (c, p, q) order as the kernel's matrix W.reshape(F, C*k*k): for a
    small image (``gather_matrix`` under GATHER_LIMIT entries) one BLAS product each way with
    the 0/1 gather matrix, per example (m, C*k*k, Ho*Wo), the products batched per example
    and no strided copy; for a large one, the windows of the zero-padded input copied into
    (C*k*k, m*Ho*Wo) and added back one kernel offset at a time.
    """

    def __init__(self, window, m, dtype, gather=None):
        C, H, W, F, k, s, P = window
        self.window, self.m = tuple(window), m
        self.Ho, self.Wo = (H + 2 * P - k) // s + 1, (W + 2 * P - k) // s + 1
        L = self.Ho * self.Wo
        if gather is None:
            gather = H * W * k * k * L <= GATHER_LIMIT
        self.gather = gather
        self.kernel = np.empty((F, C * k * k), dtype)  # W as a C-ordered matrix
        self.dkernel = np.empty_like(self.kernel)
        self.dcols = None
        if gather:
            self.G = gather_matrix(window, dtype)
            self.cols = np.empty((m, C * k * k, L), dtype)  # [n, (c, p, q), (i, j)]
            self.products = np.empty((m, F, C * k * k), dtype)  # per example, for dW
            return
        self.padded = np.zeros((m, C, H + 2 * P, W + 2 * P), dtype) if P else None
        self.cols = np.empty((C * k * k, m * L), dtype)  # [(c, p, q), (n, i, j)]
        self.rows = np.empty((F, m * L), dtype)  # [f, (n, i, j)]: z or delta by filter
        self.dpadded = None

    def _columns(self, a):
        C, H, W, F, k, s, P = self.window
        if self.gather:
            np.matmul(a.reshape(self.m * C, H * W), self.G,
                      out=self.cols.reshape(self.m * C, -1))
            return self.cols
        x = a.reshape(self.m, C, H, W)
        if P:
            self.padded[:, :, P:P + H, P:P + W] = x
            x = self.padded
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        windows = windows[:, :, ::s, ::s][:, :, :self.Ho, :self.Wo]  # [n, c, i, j, p, q]
        np.copyto(self.cols.reshape(C, k, k, self.m, self.Ho, self.Wo),
                  windows.transpose(1, 4, 5, 0, 2, 3))
        return self.cols

    def _matrix(self, W):
        np.copyto(self.kernel.reshape(W.shape), W)
        return self.kernel

    def _delta_rows(self, delta):
        F = self.window[3]
        np.copyto(self.rows.reshape(F, self.m, self.Ho * self.Wo),
                  delta.reshape(self.m, F, self.Ho * self.Wo).transpose(1, 0, 2))
        return self.rows

    def forward(self, a, W, b, out):
        F = self.window[3]
        z = out.reshape(self.m, F, self.Ho * self.Wo)
        if self.gather:
            np.matmul(self._matrix(W), self._columns(a), out=z)
        else:
            np.matmul(self._matrix(W), self._columns(a), out=self.rows)
            np.copyto(z, self.rows.reshape(F, self.m, -1).transpose(1, 0, 2))
        if b is not None:
            np.add(z, b.reshape(1, F, 1), out=z)
        return out

    def weight_grad(self, delta, out, a=None):
        """dW into ``out`` (F, C, k, k), or its column-major (F, C k^2) view; the forward's
        columns unless ``a`` is given."""
        C, _, _, F, k, _, _ = self.window
        cols = self._columns(a) if a is not None else self.cols
        if self.gather:
            d = delta.reshape(self.m, F, self.Ho * self.Wo)
            np.matmul(d, cols.transpose(0, 2, 1), out=self.products)
            np.sum(self.products, axis=0, out=self.dkernel)
        else:
            np.matmul(self._delta_rows(delta), cols.T, out=self.dkernel)
        if out.ndim == 2:  # kernel_matrix's view of the (F, C, k, k) gradient
            out = out.reshape((F, C, k, k), order="F")
        np.copyto(out, self.dkernel.reshape(F, C, k, k))
        return out

    def bias_grad(self, delta, out):
        F = self.window[3]
        np.sum(delta.reshape(self.m, F, self.Ho * self.Wo), axis=(0, 2), out=out.reshape(F))
        return out

    def input_grad(self, delta, W, out):
        C, H, W_, F, k, s, P = self.window
        if self.dcols is None:
            self.dcols = np.empty_like(self.cols)
        if self.gather:
            d = delta.reshape(self.m, F, self.Ho * self.Wo)
            np.matmul(self._matrix(W).T, d, out=self.dcols)
            np.matmul(self.dcols.reshape(self.m * C, -1), self.G.T,
                      out=out.reshape(self.m * C, H * W_))
            return out
        if self.dpadded is None:
            self.dpadded = np.empty((self.m, C, H + 2 * P, W_ + 2 * P), self.cols.dtype)
        np.matmul(self._matrix(W).T, self._delta_rows(delta), out=self.dcols)
        d = self.dpadded
        d.fill(0)
        Ho, Wo = self.Ho, self.Wo
        dcols = self.dcols.reshape(C, k, k, self.m, Ho, Wo)
        for p in range(k):  # each kernel offset adds its share of every window back
            for q in range(k):
                d[:, :, p:p + s * (Ho - 1) + 1:s, q:q + s * (Wo - 1) + 1:s] += \
                    dcols[:, p, q].transpose(1, 0, 2, 3)
        np.copyto(out.reshape(self.m, C, H, W_), d[:, :, P:P + H, P:P + W_])
        return out


class Pool2d:
    """Max or average pooling ("max" | "avg") of size x size windows at stride size, on m
    examples stored flat in NCHW order; ``window`` is (C, H, W, C, size, size, 0).
    input_grad sends delta back through each window: to its first maximum in row-major order
    (PyTorch's tie rule), or spread evenly (1/size^2 each); it reads the last forward's
    windows unless ``a`` is given.  A small image's windows are gathered by one BLAS product
    with the 0/1 ``gather_matrix`` (and added back by its transpose), so that each window
    offset is a contiguous slice; a large one's are strided views of the image."""

    def __init__(self, window, m, dtype, how, gather=None):
        C, H, W, _, size, _, _ = window
        self.window, self.m, self.how, self.size = tuple(window), m, how, size
        self.Ho, self.Wo = H // size, W // size
        L = self.Ho * self.Wo
        if gather is None:
            gather = H * W * size * size * L <= GATHER_LIMIT
        self.gather = gather
        shape = (L, m * C) if gather else (m, C, self.Ho, self.Wo)
        self.hit = np.empty(shape, bool)
        self.left = np.empty(shape, dtype)  # the error not yet routed to a maximum
        if gather:  # window offset first: each offset's entries one contiguous block
            self.G = gather_matrix(window, dtype)
            self.windows = np.empty((size * size, L, m * C), dtype)  # [(p, q), (i, j), (n, c)]
            self.dwindows = np.empty_like(self.windows)
            self.zt = np.empty(shape, dtype)  # z as [(i, j), (n, c)]
        self.a = self.z = None

    def _offsets(self, flat):  # (m, C*H*W) -> the size x size strided views [n, c, i, j]
        C, s = self.window[0], self.size
        x = flat.reshape(self.m, C, self.Ho, s, self.Wo, s)
        return [x[:, :, :, p, :, q] for p in range(s) for q in range(s)]

    def forward(self, a, out):
        C, H, W = self.window[:3]
        if self.gather:
            np.matmul(self.G.T, a.reshape(self.m * C, H * W).T,
                      out=self.windows.reshape(-1, self.m * C))
            views, z = list(self.windows), self.zt
        else:
            views = self._offsets(a)
            z = out.reshape(self.m, C, self.Ho, self.Wo)
        if self.how == "max":
            np.maximum(views[0], views[1], out=z) if len(views) > 1 else np.copyto(z, views[0])
            for view in views[2:]:
                np.maximum(z, view, out=z)
        else:
            np.copyto(z, views[0])
            for view in views[1:]:
                np.add(z, view, out=z)
            np.multiply(z, 1.0 / len(views), out=z)
        if self.gather:
            np.copyto(out.reshape(self.m * C, -1), z.T)
        self.a, self.z = a, z
        return out

    def input_grad(self, delta, out, a=None):
        C, H, W = self.window[:3]
        if a is not None:
            self.forward(a, np.empty((self.m, C * self.Ho * self.Wo), a.dtype))
        if self.gather:
            d = self.left if self.how == "max" else self.dwindows[0]
            np.copyto(d, delta.reshape(self.m * C, -1).T)
            targets, sources = list(self.dwindows), list(self.windows)
        else:
            d = delta.reshape(self.hit.shape)
            targets, sources = self._offsets(out), self._offsets(self.a)
        if self.how == "avg":
            for view in targets[::-1]:  # (the first is d itself when gathered: last)
                np.multiply(d, 1.0 / len(targets), out=view)
        else:
            if d is not self.left:
                np.copyto(self.left, d)
            for k, (view, source) in enumerate(zip(targets, sources)):
                np.equal(source, self.z, out=self.hit)  # the window's maximum sits here
                np.multiply(self.hit, self.left, out=view)
                if k + 1 < len(targets):  # routed: later ties get nothing (x - x = 0)
                    np.subtract(self.left, view, out=self.left)
        if self.gather:
            np.matmul(self.dwindows.reshape(-1, self.m * C).T, self.G.T,
                      out=out.reshape(self.m * C, H * W))
        return out


def _window_out(window, m, dtype, rows=None):
    C, H, W, F, k, s, P = window
    width = F * ((H + 2 * P - k) // s + 1) * ((W + 2 * P - k) // s + 1)
    return np.empty((m, width if rows is None else rows), dtype)


def conv2d(a, W, b, window):
    """The convolution of the rows of ``a`` (functional form; see Conv2d)."""
    return Conv2d(window, a.shape[0], a.dtype).forward(a, W, b, _window_out(window, *a.shape[:1], a.dtype))


def conv2d_input_grad(delta, W, window):
    C, H, W_ = window[:3]
    out = np.empty((delta.shape[0], C * H * W_), delta.dtype)
    return Conv2d(window, delta.shape[0], delta.dtype).input_grad(delta, W, out)


def conv2d_weight_grad(delta, a, window):
    C, F, k = window[0], window[3], window[4]
    out = np.empty((F, C, k, k), delta.dtype, order="F")
    return Conv2d(window, delta.shape[0], delta.dtype).weight_grad(delta, out, a=a)


def conv2d_bias_grad(delta, window):
    out = np.empty((window[3],), delta.dtype)
    return Conv2d(window, delta.shape[0], delta.dtype).bias_grad(delta, out)


def pool2d(a, window, how):
    """Max or average pooling of the rows of ``a`` (functional form; see Pool2d)."""
    return Pool2d(window, a.shape[0], a.dtype, how).forward(a, _window_out(window, a.shape[0], a.dtype))


def pool2d_input_grad(delta, a, window, how):
    out = np.empty(a.shape, delta.dtype)
    return Pool2d(window, a.shape[0], delta.dtype, how).input_grad(delta, out, a=a)


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
        # the row sums as a product: NumPy's sum along a short last axis is ~15x slower
        # (0.45 ms for 20,000 rows of 3: a third of a small network's epoch)
        sums = Y @ np.ones(n_out, np.result_type(Y.dtype, np.float32))  # no float64 copy of Y
        if np.any((Y < 0) | (Y > 1)) or not np.allclose(sums, 1.0, atol=1e-6):
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
    dense targets T, ``per_example_loss(cache, T)`` -> (m, 1), ``make_step(params, m, dtype,
    grads, plain, order)`` -> (X buffer, Y buffer, step) and ``epoch_kernel`` (the compiled
    engine's loops over the step's arrays, ``step.arrays``, laid out in ``kernel_order``) are
    the module's printed functions; everything here is the same for every network.
    """

    def __init__(self, *, name, layer_sizes, activations, loss, labels, init, l1, l2, dtype,
                 training, probability, forward, backward, per_example_loss, make_step,
                 epoch_kernel=None, kernel_order="C", make_gradient=None, optimizers=None,
                 schedules=None, legacy_optimizers=None, compiled_max_batch=0, parameters=None,
                 kinds=None, table=None, state=None, image=None, kernel_arrays=None,
                 random_units=0):
        self.name = name
        # input: [C, H, W]: rows hold images flat in NCHW order; X may also be (m, C, H, W)
        self.image = tuple(image) if image else None
        # layer kinds: each layer's kind, the parameters (key, shape, init, penalised) and
        # the running statistics (key, units, initial value); None for a dense stack
        self.kinds = tuple(kinds) if kinds else ("dense",) * (len(layer_sizes) - 1)
        self.table = tuple(table) if table else tuple(
            entry for l, (fan_in, units) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:]), 1)
            for entry in ((f"W{l}", (units, fan_in), init[l - 1], True),
                          (f"b{l}", (units,), "zeros", False)))
        self.state = tuple(state or ())
        self.graph = kinds is not None  # forward takes training, state and rng
        # the activations' and the loss's parameters where any differ from none: a leaky
        # ReLU's alpha, Huber's delta ({"activations": [{...} per layer], "loss": {...}})
        self.parameters = dict(parameters or {})
        self.layer_sizes = tuple(layer_sizes)
        self.activations = tuple(activations)
        self.loss_name = loss
        self.labels = labels
        self.task = TASKS[labels]
        self.init = tuple(init)
        self.l1, self.l2 = float(l1), float(l2)
        self.dtype = float_dtype(dtype)
        self.training = dict(training)
        self.probability = bool(probability)
        self.forward = forward
        self.derived_backward = backward
        self.per_example_loss = per_example_loss
        # the training step (g = rate dJ/dtheta; the plain rule's updates fused in place)
        self.make_step = make_step
        self.epoch_kernel = epoch_kernel  # whole epochs (any rule inside), compiled; or None
        self.kernel_order = kernel_order  # its arrays' layout: "F" for loop kernels
        # layer kinds: make_gradient(params, grads, m, dtype) -> (X, Y, step(X, Y, state, rng))
        self.make_gradient = make_gradient
        # layer kinds' epoch kernel: kernel_arrays(params, grads, state, m, dtype) -> its
        # arrays; random_units: the dropout uniforms it reads per example (U, from the Trainer)
        self.kernel_arrays = kernel_arrays
        self.random_units = random_units
        # name -> the printed rule: its hyperparameters' defaults, state, update functions
        self.optimizers = dict(optimizers or {})
        self.schedules = dict(schedules or {})  # name -> parameters' defaults and rate
        # old optimizer names that meant a batch size of the plain rule: name -> "full" | None
        self.legacy_optimizers = dict(legacy_optimizers or {})        # engine "auto" compiles steps of at most this many examples (where the generator
        # measured the compiled engine faster); 0: never
        self.compiled_max_batch = compiled_max_batch

    @property
    def depth(self):
        return len(self.layer_sizes) - 1

    def make_epoch(self, params, grads, m, dtype, rule=None, state=None):
        """``epoch_kernel`` with ``rule`` (a ``_rules`` function; None: the plain rule) bound to
        the arrays of a step on m examples, allocated once in the kernel's layout:
        f(X, T, order, rate, theta, g, state, t, learning_rate, hyper) -> t; None without
        numba.  Layer kinds: f(U, X, ...), U the batches' dropout uniforms, and ``state`` the
        running statistics the kernel moves."""
        kernel = compiled_kernel(self.epoch_kernel, rule)
        if kernel is None:
            return None
        if self.graph:
            return functools.partial(kernel, *self.kernel_arrays(params, grads, state, m, dtype))
        _, _, step = self.make_step(params, m, dtype, grads, rule is None, self.kernel_order)
        return functools.partial(kernel, *step.arrays)

    # -- parameters -------------------------------------------------------------------
    def init_params(self, seed=0, dtype=None):
        """Initial parameters: W_l drawn by the layer's scheme (INIT), b_l = 0.

        W_l is stored in column-major (Fortran) order: the forward product A W^T is then a
        plain one, which BLAS runs faster.
        """
        dtype = float_dtype(self.dtype if dtype is None else dtype)
        rng = np.random.default_rng(seed)
        params = {}
        for key, shape, init, _ in self.table:
            if len(shape) == 2:
                params[key] = np.asfortranarray(initial_weights(rng, init, *shape), dtype)
            elif len(shape) == 4:  # a kernel (F, C, k, k): fan-in C k^2, fan-out F k^2 (torch's)
                params[key] = np.asfortranarray(initial_kernel(rng, init, shape), dtype)
            else:
                params[key] = np.full(shape, 1.0 if init == "ones" else 0.0, dtype=dtype)
        return params

    def init_state(self, dtype=None):
        """The running statistics at their initial values (batch norm: mean 0, variance 1)."""
        dtype = float_dtype(self.dtype if dtype is None else dtype)
        return {key: np.full((units,), value, dtype=dtype) for key, units, value in self.state}

    def run(self, params, X, state=None):
        """forward() when not training, with ``state``'s running statistics."""
        return self.forward(params, X, state=state) if self.graph else self.forward(params, X)

    def check_params(self, params, dtype):
        """A float copy of params in ``dtype``, laid out as init_params lays it out, checked
        against the layer sizes."""
        checked = {}
        for key, shape, _, _ in self.table:
            if key not in params:
                raise ValueError(f"params has no {key!r}")
            value = np.array(params[key], dtype=dtype, order="F")
            if value.shape != tuple(shape):
                raise ValueError(f"params[{key!r}] must have shape {tuple(shape)}; got {value.shape}")
            checked[key] = value
        return checked

    # -- inputs and targets -----------------------------------------------------------
    def inputs(self, X, dtype):
        """X as an (m, n_0) array: integers become ``dtype``, floats keep their own."""
        X = np.asarray(X)
        n_in = self.layer_sizes[0]
        if self.image is not None and X.ndim == 4 and X.shape[1:] == self.image:
            X = X.reshape(X.shape[0], n_in)  # (m, C, H, W) images: the flat NCHW rows
        if X.ndim != 2 or X.shape[1] != n_in:
            raise ValueError(
                f"X must have shape (m, {n_in}), one example per row"
                + (f", or (m, {', '.join(map(str, self.image))}) images" if self.image else "")
                + f"; got {X.shape}"
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
        weights = [params[key] for key, _, _, penalised in self.table if penalised]
        total = 0.0
        if self.l2:
            total += 0.5 * self.l2 * sum(float(np.sum(W ** 2)) for W in weights)
        if self.l1:
            total += self.l1 * sum(float(np.sum(np.abs(W))) for W in weights)
        return total

    def objective(self, params, cache, Y):
        """J from a forward cache and dense targets Y (as returned by targets())."""
        return float(np.mean(self.per_example_loss(cache, Y))) + self.penalty(params)

    def loss(self, params, X, Y, state=None):
        """J: the mean loss over the batch plus the regularisation, as a float (layer kinds:
        not training, with ``state``'s running statistics)."""
        cache = self.run(params, X, state)
        return self.objective(params, cache, self.targets(Y, cache.A[0].shape[0], cache.output.dtype))

    def backward(self, params, cache, Y):
        """dJ/dtheta for every parameter, by the chain-rule recurrence (same keys as params)."""
        T = self.targets(Y, cache.A[0].shape[0], cache.output.dtype)
        return self.derived_backward(params, cache, T)

    # -- prediction and metrics -------------------------------------------------------
    def predict(self, params, X, state=None):
        """Class labels (classification), 0/1 labels (binary) or output values (regression);
        shape (m,) when the network has one output unit."""
        output = self.run(params, X, state).output
        if self.task == "classification":
            return np.argmax(output, axis=1)
        if self.task == "binary":
            output = (output > 0.5).astype(np.int64)
        return output[:, 0] if output.shape[1] == 1 else output

    def predict_proba(self, params, X, state=None):
        """The output probabilities (m, n_L); only for softmax or sigmoid outputs."""
        if not self.probability:
            raise ValueError(f"{self.name}'s outputs are not probabilities "
                             f"({self.activations[-1]} output); use predict()")
        return self.run(params, X, state).output

    def accuracy(self, output, T):
        """Fraction of correct decisions (None for regression)."""
        return _METRICS[self.task][0](output, T)

    def per_class_accuracy(self, output, T):
        """For each class: the accuracy on the examples of that class (None for regression)."""
        return _METRICS[self.task][1](output, T)

    def evaluate(self, params, X, Y, state=None):
        """Loss, accuracy and per-class accuracy (None for regression), and for regression
        RMSE, MAE and R^2."""
        cache = self.run(params, X, state)
        T = self.targets(Y, cache.A[0].shape[0], cache.output.dtype)
        result = {"loss": self.objective(params, cache, T),
                  "accuracy": self.accuracy(cache.output, T),
                  "per_class_accuracy": self.per_class_accuracy(cache.output, T)}
        if self.task == "regression":
            result.update(_regression_metrics(cache.output, T))
        return result


# ----------------------------------------------------------------------------- raw tables

# every common spelling of a missing cell, compared lower-case and stripped (empty, NA, N/A,
# NaN, nan, null, ?); a float NaN, None and pandas' NA are missing too
MISSING = frozenset({"", "na", "n/a", "nan", "null", "?"})
NUMBER, CATEGORY = "number", "category"  # a table column's kind in a model file's "columns"
_SHOWN = 5  # positions named in a message about missing or unknown cells


def is_missing(value):
    """Whether one cell of a raw table is missing (see MISSING)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ == "NAType"  # pandas.NA, without importing pandas


def _positions(cells):
    """``row 3 column 'sex', ...``: the first few (row, column) of a list, and how many more."""
    shown = ", ".join(f"row {row} column {column!r}" for row, column in cells[:_SHOWN])
    return shown + (f" and {len(cells) - _SHOWN} more" if len(cells) > _SHOWN else "")


def table_columns(X, names):
    """The columns ``names`` of a raw table, each a 1-D array in that order.

    A pandas DataFrame, a NumPy structured array or a mapping (column name -> values) is read
    by column name (other columns are ignored); a plain 2-D array by position, so it must have
    exactly ``len(names)`` columns.  A ValueError says which columns do not match.
    """
    given = None
    if hasattr(X, "columns") and hasattr(X, "__getitem__") and not isinstance(X, np.ndarray):
        given = [str(c) for c in X.columns]
        lookup = {str(c): c for c in X.columns}
        get = lambda name: np.asarray(X[lookup[name]].to_numpy())  # noqa: E731
    elif isinstance(X, np.ndarray) and X.dtype.names:
        given = list(X.dtype.names)
        get = lambda name: np.asarray(X[name])  # noqa: E731
    elif isinstance(X, dict):
        given = [str(c) for c in X]
        lookup = {str(c): c for c in X}
        get = lambda name: np.asarray(X[lookup[name]])  # noqa: E731
    if given is not None:
        absent = [name for name in names if name not in given]
        if absent:
            raise ValueError(
                f"the table has no column {absent[0]!r}"
                + (f" (nor {', '.join(map(repr, absent[1:]))})" if len(absent) > 1 else "")
                + f": it is not the table the model was trained on (the model's columns: "
                f"{', '.join(names)}; the table's: {', '.join(given) or 'none'})")
        columns = [get(name).reshape(-1) for name in names]
        if len({len(c) for c in columns}) > 1:
            raise ValueError("the table's columns have different numbers of rows")
        return columns
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(names):
        got = f"{X.shape[1]} columns" if X.ndim == 2 else f"shape {X.shape}"
        one = " (for one example use X[None, :])" if X.shape == (len(names),) else ""
        raise ValueError(f"X has {got}, but the model takes {len(names)}, one per column: "
                         f"{', '.join(names)} (in this order; a DataFrame or a structured "
                         f"array is matched by column name){one}")
    return [X[:, j] for j in range(X.shape[1])]


def encode_table(columns, specs, missing="error"):
    """Raw table columns (``table_columns``) as the network's real-valued inputs (m, n_0).

    ``specs`` says, per column, its kind (NUMBER or CATEGORY), the value that fills a missing
    cell (``fill``; None: nothing is imputed) and a category column's ``categories``, which
    become one-hot columns in that order.  A missing cell without a fill, a text in a number
    column or a category not among ``categories`` is a ValueError that names the rows and
    columns (``missing``: the strategy the model was trained with, for the message).
    """
    m = len(columns[0]) if columns else 0
    blocks, holes, unseen, texts = [], [], [], []
    for j, (values, spec) in enumerate(zip(columns, specs)):
        name, fill = spec["name"], spec.get("fill")
        if spec["kind"] == CATEGORY:
            categories = list(spec["categories"])
            index = {category: i for i, category in enumerate(categories)}
            block = np.zeros((m, len(categories)))
            for row, value in enumerate(values):
                if is_missing(value):
                    if fill is None:
                        holes.append((row, j, name))
                        continue
                    value = fill
                key = str(value).strip()
                if key not in index:
                    unseen.append((row, name, key, categories))
                    continue
                block[row, index[key]] = 1.0
            blocks.append(block)
            continue
        if values.dtype.kind in "biuf":
            column = values.astype(np.float64)
        else:
            column = np.empty(m)
            for row, value in enumerate(values):
                if is_missing(value):
                    column[row] = np.nan
                    continue
                try:
                    column[row] = float(value)
                except (TypeError, ValueError):
                    texts.append((row, name, str(value) if isinstance(value, str) else value))
                    column[row] = 0.0
        bad = np.isnan(column)
        if bad.any():
            if fill is None:
                holes += [(int(row), j, name) for row in np.flatnonzero(bad)]
            else:
                column[bad] = fill
        if np.isinf(column).any():
            row = int(np.flatnonzero(np.isinf(column))[0])
            raise ValueError(f"row {row} column {name!r}: {column[row]} is not a finite number")
        blocks.append(column.reshape(-1, 1))
    if texts:
        row, name, value = texts[0]
        raise ValueError(f"row {row} column {name!r}: {value!r} is not a number, and the model "
                         f"took {name!r} as a number column"
                         + (f" ({len(texts)} such cells)" if len(texts) > 1 else ""))
    if unseen:
        row, name, value, categories = unseen[0]
        raise ValueError(f"row {row} column {name!r}: {value!r} is a category the model never "
                         f"saw in training (its categories: {', '.join(categories)})"
                         + (f"; {len(unseen)} such cells" if len(unseen) > 1 else ""))
    if holes:
        holes = [(row, name) for row, _, name in sorted(holes)]  # row by row, in column order
        how = ("imputes nothing (trained with missing: "
               f"{missing}; data.missing: mean, median or most_frequent imputes)")
        raise ValueError(f"{len(holes)} missing cell{'s' if len(holes) > 1 else ''} "
                         f"({_positions(holes)}), and the model {how}")
    return np.hstack(blocks) if blocks else np.empty((m, 0))


def number_specs(names):
    """The column specs of a table of number columns that imputes nothing."""
    return [{"name": name, "kind": NUMBER, "fill": None} for name in names]


# ----------------------------------------------------------------------------- training

def _npz_path(path):
    """The path as np.savez writes it: with an .npz suffix."""
    path = str(path)
    return path if path.endswith(".npz") else path + ".npz"


def atomic_save(path, write):
    """``write(file)`` into a temporary file beside ``path``, flushed to disk, then renamed over
    ``path``: a failed or interrupted save leaves the previous file intact, and a symlink at
    ``path`` is replaced, never written through.  The temporary file is named
    ``.<name>.<pid>-XXXX.tmp``: backprop-derive removes those of killed writers."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-",
                                         suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _views(flat, like):
    """Consecutive views into the flat buffer, each shaped (column-major) as ``like``'s array
    of that key."""
    views, start = {}, 0
    for key, array in like.items():
        views[key] = flat[start:start + array.size].reshape(array.shape, order="F")
        start += array.size
    return views


class EarlyStop:
    """Stop when the validation loss has not fallen below its best by ``min_delta`` for
    ``patience`` epochs; ``restore_best`` puts the best epoch's parameters back at the end."""

    def __init__(self, patience=5, min_delta=0.0, restore_best=True):
        if isinstance(patience, bool) or int(patience) != patience or patience < 1:
            raise ValueError(f"early_stopping patience must be a whole number >= 1; got {patience!r}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"early_stopping min_delta must be a number >= 0; got {min_delta!r}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.restore_best = bool(restore_best)

    def settings(self):
        return {"patience": self.patience, "min_delta": self.min_delta,
                "restore_best": self.restore_best}


def _number(name, value, integer=False, low=None, allow_zero=True):
    """``value`` checked: a finite real (whole with ``integer``) >= low."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (not integer or int(value) == value)
    ok = ok and (low is None or value > low or (allow_zero and value == low))
    if not ok:
        kind = "a whole number" if integer else "a finite number"
        bound = "" if low is None else f" {'>=' if allow_zero else '>'} {low}"
        raise ValueError(f"{name} must be {kind}{bound}; got {value!r}")
    return int(value) if integer else float(value)


class Trainer:
    """Training of J by an update rule (PyTorch's algorithms: sgd, momentum, nesterov, adam,
    adamw, rmsprop) on batches of ``batch_size`` examples (an integer, or "full"), with a
    learning-rate schedule per epoch, optional early stopping on the validation loss, and its
    whole state (parameters, optimizer state, step and epoch counts, the shuffling generator)
    in ``save``/``load``, so a resumed run continues exactly as if never stopped.

    A generated module subclasses it with its ``network``; defaults come from the spec's
    ``training:`` section (the module's TRAINING).  ``**hyperparameters`` are the rule's, by
    PyTorch's names (``momentum``, ``betas``, ``eps``, ``alpha``, ``weight_decay``).
    """

    network: Network = None  # set by the generated module's subclass

    def __init__(self, params=None, optimizer=None, learning_rate=None, batch_size=None,
                 epochs=None, shuffle=None, seed=None, dtype=None, engine="auto", schedule=None,
                 early_stopping=None, **hyperparameters):
        net = self.network
        defaults = net.training
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        if engine == "compiled" and net.graph and net.epoch_kernel is None:
            raise ValueError(f"engine='compiled' is not printed for these layer kinds "
                             f"({', '.join(sorted(set(net.kinds) - {'dense'}))}): use "
                             "engine='numpy' or 'auto'")
        if engine == "compiled" and (not _HAVE_NUMBA or net.epoch_kernel is None):
            raise ValueError("engine='compiled' needs numba (pip install numba); "
                             "use engine='numpy' or 'auto'")
        self.engine = engine
        name = defaults["optimizer"] if optimizer is None else optimizer
        if isinstance(name, str) and name in net.legacy_optimizers:
            meant = net.legacy_optimizers[name]
            warnings.warn(f"optimizer={name!r} named a descent variant; it is now spelled "
                          f"optimizer='sgd', batch_size={meant or batch_size or 'B'!r} "
                          "(same meaning)", FutureWarning, stacklevel=2)
            batch_size = meant if meant is not None and batch_size is None else batch_size
            name = "sgd"
        if name not in net.optimizers:
            raise ValueError(f"optimizer must be one of {', '.join(net.optimizers)}; got {name!r}")
        rule = net.optimizers[name]
        same = name == defaults["optimizer"]
        if learning_rate is None:
            learning_rate = defaults["learning_rate"] if same else rule["learning_rate"]
        if batch_size is None:  # an explicit sgd means the documents' SGD: one example
            batch_size = defaults["batch_size"] if same or optimizer is None else (
                1 if name == "sgd" else defaults["batch_size"])
        self.optimizer = name
        self.learning_rate = _number("learning_rate", learning_rate, low=0, allow_zero=False)
        if batch_size != FULL:
            batch_size = _number(f"batch_size (a whole number >= 1 or {FULL!r})", batch_size,
                                 integer=True, low=1)
        self.batch_size = batch_size
        self.epochs = _number("epochs", defaults["epochs"] if epochs is None else epochs,
                              integer=True, low=0)
        self.shuffle = bool(defaults["shuffle"] if shuffle is None else shuffle)
        self.seed = _number("seed", defaults["seed"] if seed is None else seed, integer=True, low=0)
        self.hyperparameters = self._hyperparameters(rule, (defaults["hyperparameters"] if same
                                                            else {}) | hyperparameters)
        self.schedule = self._schedule(defaults["schedule"] if schedule is None else schedule)
        if early_stopping is None:
            early_stopping = defaults.get("early_stopping")
        elif early_stopping is False:
            early_stopping = None
        if isinstance(early_stopping, dict):
            early_stopping = EarlyStop(**early_stopping)
        if early_stopping is not None and not isinstance(early_stopping, EarlyStop):
            raise TypeError("early_stopping must be None, a dict (patience, min_delta, "
                            f"restore_best) or an EarlyStop; got {early_stopping!r}")
        self.early_stopping = early_stopping
        self.dtype = float_dtype(net.dtype if dtype is None else dtype)
        self.history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "lr": []}
        self.epoch = 0  # epochs completed, over every fit() of this run
        self.t = 0  # update steps taken (Adam's bias correction counts them)
        self.best_epoch, self.best_loss, self.waited = None, math.inf, 0
        self.stopped_early = False
        self.interrupted = False
        self._rng = np.random.default_rng(self.seed)
        rows = len(rule["state"])
        self.params = net.init_params(self.seed, self.dtype) if params is None else params
        self.layer_state = net.init_state(self.dtype)  # running statistics (batch norm)
        self._choices = {}  # (engine, batch size) -> (engine, why), decided by the first fit
        self.engine_choice = None  # "engine: why" of the last fit (see compiled())
        self._state = np.zeros((rows, self._flat.size), self.dtype)

    # -- settings ---------------------------------------------------------------------
    def _hyperparameters(self, rule, given):
        known = rule["hyperparameters"]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise TypeError(f"{unknown[0]!r} is not a hyperparameter of {self.optimizer} "
                            f"(its hyperparameters: {', '.join(known) or 'none'})")
        values = {}
        for key, default in known.items():
            value = given.get(key, default)
            entries = list(value) if isinstance(value, (tuple, list)) else [value]
            size = len(default) if isinstance(default, (tuple, list)) else 1
            if len(entries) != size:
                raise ValueError(f"{key} must be {size} numbers; got {value!r}")
            entries = [_number(key, x, low=0) for x in entries]
            if key in ("betas", "momentum", "alpha") and any(x >= 1 for x in entries):
                raise ValueError(f"{key} must be < 1; got {value!r}")
            values[key] = tuple(entries) if size > 1 else entries[0]
        return values

    def _schedule(self, schedule):
        """{"name": ..., parameters...} with every parameter resolved (T_max: the epochs)."""
        net = self.network
        if isinstance(schedule, str):
            schedule = {"name": schedule}
        if not isinstance(schedule, dict) or schedule.get("name") not in net.schedules:
            raise ValueError(f"schedule must be one of {', '.join(net.schedules)} (or a dict with "
                             f"a name and its parameters); got {schedule!r}")
        declared = net.schedules[schedule["name"]]["parameters"]
        params = {key: value for key, value in schedule.items() if key != "name"}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a parameter of the {schedule['name']} "
                             f"schedule (its parameters: {', '.join(declared) or 'none'})")
        resolved = {}
        for key, default in declared.items():
            value = params.get(key, self.epochs if key == "T_max" else default)
            if value is None:
                raise ValueError(f"the {schedule['name']} schedule needs {key}")
            resolved[key] = _number(key, value, low=0)
        return {"name": schedule["name"], **resolved}

    def rate(self, epoch=None):
        """The learning rate of epoch ``epoch`` + 1 (after ``epoch`` epochs; default: the next)."""
        schedule = self.schedule
        params = {key: value for key, value in schedule.items() if key != "name"}
        e = self.epoch if epoch is None else epoch
        return self.network.schedules[schedule["name"]]["rate"](self.learning_rate, e, **params)

    @property
    def plain(self):
        """The rule is theta - eta g with these hyperparameters: the fused plain step runs."""
        when = self.network.optimizers[self.optimizer]["plain_when"]
        return self.network.make_step is not None and when is not None and all(self.hyperparameters[key] == 0 for key in when)

    # -- parameters -------------------------------------------------------------------
    @property
    def params(self):
        """The parameters being trained (the Trainer's own arrays, in its dtype)."""
        return self._params

    @params.setter
    def params(self, params):
        # a checked copy in the Trainer's dtype, in one flat buffer (the update rules run
        # over it in one pass): training never mutates the caller's arrays, and a float64
        # dict given to a float32 Trainer is converted, not silently ignored
        checked = self.network.check_params(params, self.dtype)
        self._flat, self._params = self._flat_views(checked)
        self._gflat, self._grads = self._flat_views(checked, empty=True)
        self._steps = {}  # (kind, batch size) -> (X buffer, Y buffer, step) of the NumPy engine
        self._epochs = {}  # (kind, batch size) -> compiled kernel
        self._random_buffers = {}  # (batch size, batches) -> a compiled call's uniforms
        self.first_call_seconds = 0.0  # the compiled engine's first calls (compiling included)

    def _flat_views(self, arrays, empty=False):
        """One flat buffer and a dict of views into it shaped (and laid out) as ``arrays``."""
        flat = np.zeros(sum(a.size for a in arrays.values()), self.dtype)
        views = _views(flat, arrays)
        if not empty:
            for key, array in arrays.items():
                views[key][...] = array
        return flat, views

    @property
    def optimizer_state(self):
        """The update rule's state by name (velocity, moments) as views shaped like params."""
        names = self.network.optimizers[self.optimizer]["state"]
        return {name: self._flat_views_of(self._state[row]) for row, name in enumerate(names)}

    def _flat_views_of(self, flat):
        """Views into ``flat`` (a row of the optimizer state) shaped as the parameters."""
        return _views(flat, self._params)

    # -- engines ----------------------------------------------------------------------
    def compiled(self, size):
        """True when fit() runs the compiled engine for steps of ``size`` examples: engine
        "compiled"; "auto" with numba by what was measured on this machine (``calibrate``;
        a long fit measures itself), else by the module's rule (``compiled_max_batch``)."""
        return self._choice(size)[0] == "compiled"

    # a fit estimated to take at least this long on the NumPy engine measures both engines
    # first (a fraction of a second, plus numba's first compilation when not cached)
    CALIBRATE_SECONDS = 10.0
    # a shorter fit than this on the NumPy engine keeps it when the kernel is not compiled in
    # this process yet: compiling takes longer (2.5-4.1 s per seed network, AMD EPYC)
    COMPILE_SECONDS = 3.0

    def calibrate(self, X, Y, batch_size=None):
        """Measure both engines here on steps of ``batch_size`` (default: the Trainer's)
        examples of X, keep the figures for this machine and network (``cache_root()``), and
        return the choice ``engine="auto"`` makes from them (also ``self.engine_choice``)."""
        net = self.network
        X = net.inputs(X, self.dtype).astype(self.dtype, copy=False)
        T = net.targets(Y, X.shape[0], self.dtype)
        size = self.step_size(X.shape[0]) if batch_size is None else min(
            _number("batch_size", batch_size, integer=True, low=1), X.shape[0])
        self._choices.pop((self.engine, size), None)
        self.engine_choice = "{}: {}".format(*self._choice(size, X, T, examples=None))
        return self.engine_choice

    def _choice(self, size, X=None, T=None, examples=0):
        """(engine, why) for steps of ``size`` examples.  With the training data (X, T) and
        the examples a fit will step through, a long fit on "auto" measures the engines when
        this machine has no figures for them (``examples=None``: measure whatever the length);
        the choice is then kept for this Trainer."""
        if (self.engine, size) in self._choices:
            return self._choices[self.engine, size]
        net = self.network
        if self.engine == "numpy":
            return "numpy", "engine='numpy' was asked"
        if not _HAVE_NUMBA:
            return "numpy", "numba is not installed (pip install numba)"
        if net.epoch_kernel is None:
            return "numpy", "this network has no compiled engine (a layer kind with no loop form)"
        if self.engine == "compiled":
            return "compiled", "engine='compiled' was asked"
        store = EngineTimes()
        module = sys.modules.get(type(self).__module__)
        key = store.key(module, size, self.dtype, self.plain)
        times = store.get(key)
        if times is None and X is not None:
            times = self._measure(X, T, size, examples)
            if times is not None:
                store.put(key, times)
        estimate = self._estimate if X is not None else None
        if times is None and estimate is not None and estimate < self.COMPILE_SECONDS \
                and size <= net.compiled_max_batch and not self._kernel_ready():
            choice = ("numpy", f"a fit estimated at {estimate:.2g} s on the NumPy engine, shorter "
                               "than compiling its kernel (seconds, once per process unless "
                               "numba's disk cache has it); no figures for this machine yet")
        elif times is None:
            rule = size <= net.compiled_max_batch
            choice = ("compiled" if rule else "numpy",
                      f"the module's rule for batch {size} (compiled up to batch "
                      f"{net.compiled_max_batch}); no figures for this machine yet: a fit "
                      f"estimated at {self.CALIBRATE_SECONDS:g} s or more measures both "
                      "engines, as does Trainer.calibrate(X, Y)")
        else:
            engine = min(("numpy", "compiled"), key=lambda e: times[e])
            choice = (engine, f"measured on this machine ({times.get('cpu', cpu_model())}, "
                              f"batch {size}, {np.dtype(self.dtype).name}): compiled "
                              f"{times['compiled'] * 1e6:.3g} us/example, NumPy "
                              f"{times['numpy'] * 1e6:.3g} us/example")
        if X is not None:
            self._choices[self.engine, size] = choice
        return choice

    _estimate = None  # seconds the last fit measured would take on the NumPy engine

    def _kernel_ready(self):
        """True when this Trainer's kernel (network and rule) is compiled in this process."""
        rule = None if self.plain else self.network.optimizers[self.optimizer]["update"]
        kernel = _KERNELS.get((self.network.epoch_kernel, rule))
        return kernel is not None and not kernel.first

    def _measure(self, X, T, size, examples, rounds=3):
        """Seconds per example of each engine on steps of ``size`` over the first rows of X
        (each engine its own Trainer, copies of the parameters; the engines interleaved, the
        fastest of ``rounds`` runs kept); None when the fit is too short to be worth it."""
        n = min(X.shape[0], size * max(1, -(-256 // size)))
        n -= n % size
        X, T = X[:n], T[:n]
        trials = {engine: type(self)(
            params=self.params, optimizer=self.optimizer, learning_rate=self.learning_rate,
            batch_size=size, epochs=1, shuffle=False, seed=self.seed, dtype=self.dtype,
            engine=engine, early_stopping=False, **self.hyperparameters)
            for engine in ("numpy", "compiled")}
        rate = self.rate()

        def run(engine):
            started = time.perf_counter()
            trials[engine]._epoch(X, T, None, size, rate, None, n // size)
            return (time.perf_counter() - started) / n

        run("numpy")  # buffers allocated
        times = {"numpy": [run("numpy")]}
        if examples is not None:
            self._estimate = times["numpy"][0] * examples
            if self._estimate < self.CALIBRATE_SECONDS:
                return None
        run("compiled")  # compiled (or loaded from numba's cache)
        times["compiled"] = []
        for _ in range(rounds):
            for engine in ("compiled", "numpy"):
                times[engine].append(run(engine))
        return {"numpy": min(times["numpy"]), "compiled": min(times["compiled"]),
                "cpu": cpu_model(), "measured": time.strftime("%Y-%m-%d")}

    def step_size(self, m):
        """Examples per update on a training set of m examples."""
        return m if self.batch_size == FULL else min(self.batch_size, m)

    def _update(self):
        """The rule over the flat parameters: compiled by numba (one fused pass) when it is
        installed, else on whole arrays."""
        rule = self.network.optimizers[self.optimizer]
        return compiled(rule["update"]) or rule["update_arrays"]

    def _numpy_step(self, gradient, count):
        key = ("gradient" if gradient else "plain", count)
        if key not in self._steps:
            net = self.network
            if net.graph:  # layer kinds: the derived backward of a training forward
                self._steps[key] = self._graph_gradient(count)
            else:
                self._steps[key] = net.make_step(self._params, count, self.dtype, self._grads,
                                                 not gradient)
        return self._steps[key]

    def _graph_gradient(self, count):
        """(X buffer, Y buffer, step) for layer kinds: step runs the training forward (batch
        statistics, the running ones moved, dropout masks from the Trainer's generator) and
        writes the derived dJ/dtheta into the Trainer's gradient arrays."""
        net = self.network
        Xb, Yb, printed = net.make_gradient(self._params, self._grads, count, self.dtype)

        def step(X, Y, learning_rate):
            printed(X, Y, self.layer_state, self._rng)

        return Xb, Yb, step

    def _kernel(self, rule, count):
        key = (rule, count)
        first = key not in self._epochs
        if first:
            self._epochs[key] = self.network.make_epoch(self._params, self._grads, count,
                                                        self.dtype, rule, self.layer_state)
        return self._epochs[key], first

    # -- training ---------------------------------------------------------------------
    def fit(self, X, Y, validation=None, callback=None, progress=None, track=True):
        """Train for ``epochs`` more epochs; returns the history (per-epoch loss, accuracy,
        validation loss and accuracy when ``validation=(Xv, Yv)`` is given, and the rate).

        ``callback(epoch, record)`` is called after each epoch with that epoch's figures.
        ``progress(epoch, done, total)`` is called after each update with the number of
        updates done in the epoch; if it returns True, training stops after that update (the
        partial epoch is still recorded) and ``self.interrupted`` is set.
        ``track=False`` skips the per-epoch loss and accuracy (a pass over the data each).
        With ``early_stopping``, training stops when the validation loss has not improved
        for ``patience`` epochs (``self.stopped_early``; ``self.best_epoch``).
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # a diverging run overflows on its way to TrainingDiverged: no warnings
            return self._fit(X, Y, validation, callback, progress, track)

    def _fit(self, X, Y, validation, callback, progress, track):
        net = self.network
        X = net.inputs(X, self.dtype).astype(self.dtype, copy=False)
        m = X.shape[0]
        if m == 0:
            raise ValueError("X has no rows: nothing to train on")
        _finite_rows(X, "X")
        T = net.targets(Y, m, self.dtype)
        if validation is not None:
            Xv = net.inputs(validation[0], self.dtype).astype(self.dtype, copy=False)
            if Xv.shape[0] == 0:
                raise ValueError("the validation set has no rows")
            _finite_rows(Xv, "the validation X")
            Tv = net.targets(validation[1], Xv.shape[0], self.dtype)
        if not np.isfinite(np.sum(self._flat)) and not np.all(np.isfinite(self._flat)):
            raise ValueError("the parameters hold NaN or infinite values: set finite params")
        start = self._record(X, T, "")["loss"] if track else None
        stopping = self.early_stopping if validation is not None and track else None
        best = self._flat.copy() if stopping is not None and stopping.restore_best else None
        size = self.step_size(m)
        total = -(-m // size)
        self.engine_choice = "{}: {}".format(*self._choice(size, X, T, m * self.epochs))
        self.interrupted = self.stopped_early = False
        for _ in range(self.epochs):
            rate = self.rate()
            # one step over all m examples (batch descent) sums the same gradient in any order
            order = self._rng.permutation(m) if self.shuffle and size < m else None
            self.interrupted = self._epoch(X, T, order, size, rate, progress, total)
            self.epoch += 1
            record = {}
            if track:
                record = self._record(X, T, "")
                if validation is not None:
                    record.update(self._record(Xv, Tv, "val_"))
                record["lr"] = rate
                for key, value in record.items():
                    self.history[key].append(value)
                if not np.isfinite(record["loss"]):
                    raise TrainingDiverged(
                        f"the training loss became {record['loss']} in epoch {self.epoch}; "
                        f"try a smaller learning_rate than {self.learning_rate:g}")
                if record["loss"] > DIVERGED_FACTOR * max(start, 0.1):  # 0.1: a resumed,
                    # nearly fitted run may rise some way before it is diverging
                    raise TrainingDiverged(
                        f"the training loss grew from {start:.4g} before training to "
                        f"{record['loss']:.4g} in epoch {self.epoch} (over {DIVERGED_FACTOR:g} "
                        f"times): the run diverged; try a smaller learning_rate than "
                        f"{self.learning_rate:g}")
            if stopping is not None:
                if record["val_loss"] < self.best_loss - stopping.min_delta:
                    self.best_epoch, self.best_loss, self.waited = self.epoch, record["val_loss"], 0
                    if best is not None:
                        best[...] = self._flat
                else:
                    self.waited += 1
                    self.stopped_early = self.waited >= stopping.patience
            if callback is not None:
                callback(self.epoch, record)
            if self.interrupted or self.stopped_early:
                break
        if best is not None and self.best_epoch is not None:
            self._flat[...] = best  # the best epoch's parameters (the views see them)
        return self.history

    def _epoch(self, X, T, order, size, rate, progress, total):
        """One pass over the data in steps of ``size``; True when ``progress`` asked to stop."""
        m = X.shape[0]
        gradient = not self.plain
        hyper = np.array([x for value in self.hyperparameters.values()
                          for x in (value if isinstance(value, tuple) else (value,))])
        if self.compiled(size):  # the epoch in a few compiled calls, the rule inside
            return self._compiled_epoch(X, T, order, size, rate, gradient, hyper, progress,
                                        total)
        update = self._update() if gradient else None
        # the step writes g = scale dJ/dtheta: eta g for the plain rule (which it applies)
        scale = 1.0 if gradient else rate
        for done, start in enumerate(range(0, m, size), start=1):
            stop = min(start + size, m)
            Xb, Yb, step = self._numpy_step(gradient, stop - start)
            if order is None:  # contiguous slices, no copy
                step(X[start:stop], T[start:stop], scale)
            else:  # gather the shuffled rows into the step's buffers
                np.take(X, order[start:stop], axis=0, out=Xb, mode="clip")
                np.take(T, order[start:stop], axis=0, out=Yb, mode="clip")
                step(Xb, Yb, scale)
            self.t += 1  # every rule's steps are counted, the plain one's too
            if gradient:
                update(self._flat, self._gflat, self._state, self.t, rate, hyper)
            if progress is not None and progress(self.epoch + 1, done, total):
                return True
        return False

    def _compiled_epoch(self, X, T, order, size, rate, gradient, hyper, progress, total,
                        calls=16):
        """The full batches in at most ``calls`` compiled calls (consecutive runs of batches:
        the same updates as one call), ``progress`` told after each, then the last partial
        batch; True when ``progress`` asked to stop (after the call it was told of).  A rule
        with state is applied inside the kernel after each batch (the kernel counts t)."""
        m = X.shape[0]
        order = np.arange(m) if order is None else order
        full = m - m % size
        batches = full // size
        step = max(1, -(-batches // calls))
        runs = [(size, order[start * size:min(start + step, batches) * size])
                for start in range(0, batches, step)]
        if m > full:
            runs.append((m - full, order[full:]))
        rule = self.network.optimizers[self.optimizer]["update"] if gradient else None
        lr = self.dtype.type(rate)
        scale = self.dtype.type(1.0) if gradient else lr
        done = 0
        for count, rows in runs:
            kernel, first = self._kernel(rule, count)
            started = time.perf_counter()
            if self.network.graph:  # the batches' dropout uniforms, as the NumPy step draws
                self.t = kernel(self._uniforms(count, rows.shape[0] // count), X, T, rows,
                                scale, self._flat, self._gflat, self._state, self.t, lr, hyper)
            else:
                self.t = kernel(X, T, rows, scale, self._flat, self._gflat, self._state,
                                self.t, lr, hyper)
            if first:
                self.first_call_seconds += time.perf_counter() - started
            done += rows.shape[0] // count
            if progress is not None and progress(self.epoch + 1, done, total):
                return True
        return False

    def _uniforms(self, count, batches):
        """Uniforms for the dropout masks of ``batches`` steps of ``count`` examples, drawn
        from the Trainer's generator in the order the NumPy step draws them (per batch, each
        dropout layer's (count, units) in turn), into a buffer kept per shape."""
        key = (count, batches)
        buffer = self._random_buffers.get(key)
        if buffer is None:
            buffer = self._random_buffers[key] = np.empty(
                (batches, count * self.network.random_units))
        if buffer.size:
            self._rng.random(out=buffer)
        return buffer

    def _record(self, X, T, prefix, chunk=2048):
        """Loss and accuracy over X, T, a chunk of rows at a time (bounded memory)."""
        net = self.network
        m = X.shape[0]
        total_loss, correct = 0.0, 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, m, chunk):
                cache = net.run(self._params, X[start:start + chunk], self.layer_state)
                rows = T[start:start + chunk]
                total_loss += float(np.sum(net.per_example_loss(cache, rows)))
                accuracy = net.accuracy(cache.output, rows)
                correct += 0.0 if accuracy is None else accuracy * rows.shape[0]
        return {
            prefix + "loss": total_loss / m + net.penalty(self._params),
            prefix + "accuracy": None if net.task == "regression" else correct / m,
        }

    preprocessing = None  # a model file's: how raw rows become inputs, outputs answers

    def transform(self, X):
        """Raw rows as the network's inputs.  With a model file's preprocessing: its columns
        matched (by name in a DataFrame, a structured array or a mapping of columns; by
        position in a plain array), missing cells imputed and categories one-hot encoded as
        fitted on the training part, then the fixed scaling and the training part's
        standardisation.  Without one, X itself.  A cell that cannot be answered honestly (a
        NaN nothing imputes, an unseen category, a column the model does not know) is a
        ValueError naming it."""
        prep = self.preprocessing
        if prep is None:
            X = self.network.inputs(X, self.dtype)
            _finite_rows(X, "X")
            return X
        names = prep.get("feature_names") or [f"x{j}" for j in range(self.network.layer_sizes[0])]
        specs = prep.get("columns") or number_specs(names)
        X = encode_table(table_columns(X, names), specs, prep.get("missing") or "error")
        X = X / prep["divide_by"]
        if prep["features"] is not None:
            X = (X - np.asarray(prep["features"]["mean"])) / np.asarray(prep["features"]["scale"])
        return X.astype(self.dtype)

    def predict(self, X):
        """Labels (classification), 0/1 (binary) or values (regression).  A Trainer loaded from
        a model file that ``derive --train`` wrote takes raw rows and answers in the data's
        own terms: class names, and values in the target's units."""
        output = self.network.predict(self._params, self.transform(X), self.layer_state)
        prep = self.preprocessing
        if prep is None:
            return output
        if prep["classes"] is not None and self.network.task != "regression":
            return np.asarray(prep["classes"])[np.asarray(output, dtype=np.int64)]
        if prep["targets"] is not None:
            values = np.asarray(output, dtype=np.float64)
            scale, mean = np.asarray(prep["targets"]["scale"]), np.asarray(prep["targets"]["mean"])
            return (values.reshape(len(values), -1) * scale + mean).reshape(values.shape)
        return output

    def predict_proba(self, X):
        """Output probabilities (m, n_L), of raw rows for a loaded model file."""
        return self.network.predict_proba(self._params, self.transform(X), self.layer_state)

    def evaluate(self, X, Y):
        """Loss, accuracy and per-class accuracy (None for regression), and RMSE, MAE, R^2
        for regression."""
        return self.network.evaluate(self._params, X, Y, self.layer_state)

    # -- saving -----------------------------------------------------------------------
    def settings(self):
        """Everything but the arrays that a resumed run needs, as JSON-ready values."""
        net = self.network
        return {
            "generator": "Generated by backprop-derive",  # codegen.files.SIGNATURE
            "module": net.name, "api": API,
            "layer_sizes": list(net.layer_sizes), "activations": list(net.activations),
            **({"kinds": list(net.kinds)} if net.graph else {}),
            "loss": net.loss_name, "parameters": net.parameters,
            "optimizer": self.optimizer, "learning_rate": self.learning_rate,
            "batch_size": self.batch_size, "epochs": self.epochs, "shuffle": self.shuffle,
            "seed": self.seed, "dtype": self.dtype.name, "engine": self.engine,
            "hyperparameters": self.hyperparameters, "schedule": self.schedule,
            "early_stopping": None if self.early_stopping is None else self.early_stopping.settings(),
            "progress": {"epoch": self.epoch, "t": self.t, "best_epoch": self.best_epoch,
                         "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                         "waited": self.waited, "rng": self._rng.bit_generator.state},
            "history": self.history,
        }

    def save(self, path, extra=None):
        """Save the parameters, the optimizer state and the settings to an .npz file (no
        pickle), atomically; returns its path.  ``extra``: more JSON-ready entries.  ``path``
        may be a binary file open for writing instead (the tool's own writer passes one)."""
        path = path if hasattr(path, "write") else _npz_path(path)
        settings = self.settings() | dict(extra or {})
        arrays = dict(self._params)
        arrays.update({f"__layer__/{key}": value for key, value in self.layer_state.items()})
        names = self.network.optimizers[self.optimizer]["state"]
        for row, name in enumerate(names):
            for key, view in self._flat_views_of(self._state[row]).items():
                arrays[f"__state__/{name}/{key}"] = view
        # the signature as plain bytes too (the settings are stored as UTF-32): the tool
        # may replace its own model files, never a user's (codegen.files.is_generated)
        signature = np.frombuffer(settings["generator"].encode(), dtype=np.uint8)
        def write(file):
            np.savez(file, __generator__=signature, __settings__=np.array(json.dumps(settings)),
                     **arrays)

        if hasattr(path, "write"):
            write(path)
        else:
            atomic_save(path, write)
        return path

    @classmethod
    def load(cls, path):
        """A Trainer with the parameters, optimizer state and settings saved by save(): its
        fit() continues the run exactly where it stopped.  Raises ModelFileError (a
        ValueError), naming the file and the cause, for a file that is missing, damaged,
        truncated, foreign or inconsistent with this module; every declared shape is checked
        against the network before anything is allocated."""
        net = cls.network
        path = _npz_path(path)
        with _ModelFile(path) as stored:
            settings = stored.settings()
            if (_field(settings, "layer_sizes", path) != list(net.layer_sizes)
                    or _field(settings, "activations", path) != list(net.activations)
                    or settings.get("loss", net.loss_name) != net.loss_name):
                raise ModelFileError(
                    f"{path} holds a {settings['layer_sizes']} network with "
                    f"{settings['activations']} and {settings.get('loss')}, not this "
                    f"module's {list(net.layer_sizes)} with {list(net.activations)} and "
                    f"{net.loss_name}")
            if net.graph and settings.get("kinds") != list(net.kinds):
                raise ModelFileError(f"{path} holds a network of the layer kinds "
                                     f"{settings.get('kinds')}, not this module's "
                                     f"{list(net.kinds)}")
            if settings.get("parameters", {}) != net.parameters:
                raise ModelFileError(
                    f"{path} holds a network whose functions take the parameters "
                    f"{settings.get('parameters', {})}, not this module's {net.parameters}")
            optimizer = _field(settings, "optimizer", path)
            if not isinstance(optimizer, str) or optimizer not in net.optimizers:
                raise ModelFileError(f"{path}: its settings name the update rule {optimizer!r}, "
                                     f"which this module does not know")
            shapes = {key: array.shape for key, array in net.init_params().items()}
            params = {key: stored.array(key, shape) for key, shape in shapes.items()}
            state_names = net.optimizers[optimizer]["state"]
            state = {f"{name}/{key}": stored.array(f"__state__/{name}/{key}", shape)
                     for name in state_names for key, shape in shapes.items()}
            layer_state = {key: stored.array(f"__layer__/{key}", array.shape)
                           for key, array in net.init_state().items()}  # running statistics
        _check_preprocessing(settings.get("preprocessing"), net, path)
        try:
            progress = settings["progress"]
            trainer = cls(params=params, optimizer=optimizer,
                          learning_rate=settings["learning_rate"],
                          batch_size=settings["batch_size"], epochs=settings["epochs"],
                          shuffle=settings["shuffle"], seed=settings["seed"],
                          dtype=settings["dtype"], engine=settings["engine"],
                          schedule=settings["schedule"],
                          early_stopping=settings["early_stopping"] or False,
                          **settings["hyperparameters"])
            for row, name in enumerate(state_names):
                views = trainer._flat_views_of(trainer._state[row])
                for key in params:
                    views[key][...] = state[f"{name}/{key}"]
            for key, value in layer_state.items():
                trainer.layer_state[key][...] = value
            for key in ("epoch", "t", "best_epoch", "waited"):
                value = progress[key]
                if key == "best_epoch" and value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"progress.{key} is {value!r}, not a whole number >= 0")
            trainer.epoch, trainer.t = progress["epoch"], progress["t"]
            trainer.best_epoch, trainer.waited = progress["best_epoch"], progress["waited"]
            best = progress["best_loss"]
            trainer.best_loss = math.inf if best is None else float(best)
            trainer._rng.bit_generator.state = progress["rng"]
            history = settings["history"]
        except KeyError as err:
            raise ModelFileError(f"{path}: its settings lack {err}: the file is damaged or "
                                 "was not written by Trainer.save") from None
        except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
            raise ModelFileError(f"{path}: its settings are inconsistent: {err}") from None
        trainer.history = history
        trainer.preprocessing = settings.get("preprocessing")
        trainer.saved_settings = settings
        return trainer


class ModelFileError(ValueError):
    """A model file that ``Trainer.load`` cannot use: missing, damaged, truncated, foreign or
    inconsistent with the module.  The message names the file and the cause."""


_SETTINGS_LIMIT = 1 << 30  # bytes of the settings member (JSON as UTF-32): a header cannot
# make the loader allocate more


def model_file_settings(path):
    """The settings (a dict) of the model file at ``path``, read as ``Trainer.load`` reads
    them; ModelFileError for a file that is not a readable model file."""
    with _ModelFile(_npz_path(path)) as stored:
        return stored.settings()


def _field(settings, key, path):
    try:
        return settings[key]
    except KeyError:
        raise ModelFileError(f"{path}: its settings lack {key!r}: the file is damaged or was "
                             "not written by Trainer.save") from None


class _ModelFile:
    """A model file (.npz: a zip archive of .npy members) read member by member: each
    member's header (dtype, shape) is checked against what is expected and against the bytes
    the member holds before its data is read, so that a damaged or hostile file is a
    ModelFileError, never a MemoryError, an EOFError or a hang."""

    def __init__(self, path):
        import zipfile

        import stat

        self.path = path
        try:
            mode = os.stat(path).st_mode  # before opening: a FIFO would block the open
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except OSError as err:
            raise ModelFileError(f"{path}: cannot read it: {err.strerror or err}") from None
        if stat.S_ISDIR(mode):
            raise ModelFileError(f"{path} is a folder, not a model file")
        if not stat.S_ISREG(mode):
            raise ModelFileError(f"{path} is not a regular file (a FIFO, socket or device), "
                                 "not a model file")
        try:
            self.archive = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise ModelFileError(f"{path} is not a readable model file (not a complete .npz "
                                 f"archive: {err})") from None
        self.members = {info.filename[:-4]: info for info in self.archive.infolist()
                        if info.filename.endswith(".npy")}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.archive.close()

    def settings(self):
        """The JSON settings, a dict."""
        text = self.array("__settings__", (), kinds="U", limit=_SETTINGS_LIMIT)
        try:
            settings = json.loads(str(text[()]))
        except ValueError as err:
            raise ModelFileError(f"{self.path}: its settings are not JSON ({err})") from None
        if not isinstance(settings, dict):
            raise ModelFileError(f"{self.path}: its settings are a JSON "
                                 f"{type(settings).__name__}, not an object")
        return settings

    def array(self, key, shape, kinds="fiu", limit=None):
        """Member ``key``, which must hold an array of ``shape`` and a dtype of ``kinds``;
        float arrays must be finite."""
        info = self.members.get(key)
        if info is None:
            raise ModelFileError(f"{self.path}: the array {key!r} is missing: the file is "
                                 "damaged or holds another network"
                                 + ("" if self.members else " (it holds no arrays at all)"))
        where = f"{self.path}: the array {key!r}"
        try:
            with self.archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    declared, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    declared, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                if dtype.hasobject or dtype.kind not in kinds:
                    raise ValueError(f"holds {dtype}, not numbers" if kinds != "U" else
                                     f"holds {dtype}, not text")
                if tuple(declared) != tuple(shape):
                    raise ValueError(f"declares the shape {tuple(declared)}; this network's "
                                     f"is {tuple(shape)}")
                size = math.prod(declared) * dtype.itemsize
                held = info.file_size - member.tell()
                if size != held or (limit is not None and size > limit):
                    raise ValueError(f"declares {size} bytes of data; the member holds {held}")
                data = member.read()  # to its end: the member's CRC-32 is checked there
        except Exception as err:  # noqa: BLE001
            # whatever parsing damaged bytes raises (numpy reads a header with literal_eval)
            raise ModelFileError(f"{where} cannot be read: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}") from None
        if len(data) != size:
            raise ModelFileError(f"{where} is truncated ({len(data)} of {size} bytes)")
        array = np.frombuffer(data, dtype=dtype).reshape(declared, order="F" if fortran else "C")
        if dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ModelFileError(f"{where} holds NaN or infinite values: the saved run had "
                                 "diverged or the file is damaged")
        return array.copy()


def _numbers(value, length, what, path, nonzero=False):
    """``value``: a finite number or a list of ``length`` finite numbers (non-zero ones)."""
    items = value if isinstance(value, list) else [value]
    ok = isinstance(value, (int, float)) or (isinstance(value, list) and len(value) == length)
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (not nonzero or v != 0) for v in items)
    if not ok:
        need = "non-zero " if nonzero else ""
        raise ModelFileError(f"{path}: its preprocessing's {what} must be {length} finite "
                             f"{need}numbers; it is {str(value)[:80]}")


def _check_preprocessing(prep, net, path):
    """The model file's preprocessing (how raw rows become inputs and outputs answers),
    checked against the network: a scale of 0, a NaN, a wrong length, duplicated names or
    classes would give every row one answer."""
    if prep is None:
        return
    if not isinstance(prep, dict):
        raise ModelFileError(f"{path}: its preprocessing is a {type(prep).__name__}, not an object")
    missing = [key for key in ("divide_by", "features", "classes", "targets") if key not in prep]
    if missing:
        raise ModelFileError(f"{path}: its preprocessing lacks {', '.join(map(repr, missing))}")
    n_in, n_out = net.layer_sizes[0], net.layer_sizes[-1]
    _numbers(prep.get("divide_by", 1.0), n_in, "divide_by", path, nonzero=True)
    for key, length in (("features", n_in), ("targets", n_out)):
        scaling = prep.get(key)
        if scaling is None:
            continue
        if not isinstance(scaling, dict):
            raise ModelFileError(f"{path}: its preprocessing's {key} is "
                                 f"{str(scaling)[:40]!r}, not a scaling (mean and scale)")
        _numbers(scaling.get("mean"), length, f"{key} mean", path)
        _numbers(scaling.get("scale"), length, f"{key} scale", path, nonzero=True)
    for key in ("feature_names", "classes", "target_names"):
        names = prep.get(key)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
            raise ModelFileError(f"{path}: its preprocessing's {key} is not a list of names")
        seen = set()
        for name in names:
            if name in seen:
                raise ModelFileError(f"{path}: its preprocessing names {name!r} twice in {key}")
            seen.add(name)
    classes = prep.get("classes")
    if classes is not None and net.task != "regression":
        wanted = 2 if net.task == "binary" else n_out
        if len(classes) != wanted:
            raise ModelFileError(f"{path}: its preprocessing names {len(classes)} classes; the "
                                 f"network answers {wanted}")
