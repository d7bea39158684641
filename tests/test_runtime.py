"""The runtime (codegen/runtime.py, emitted as DIR/_runtime.py) on its own, without generating.

A one-layer linear network written by hand stands in for a generated module: its forward,
backward, per-example loss and step are the textbook formulas, so each piece of the runtime
(targets, J, prediction, metrics, the Trainer, save and load) is checked against NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from codegen import runtime


def _linear(labels="real", n_in=3, n_out=2, l1=0.0, l2=0.0, dtype=np.float64):
    """A network A1 = Z1 = A0 W1^T + b1 with l = ½‖a − y‖² (or a softmax/sigmoid output)."""
    def forward(params, X):
        A0 = net.inputs(X, params["W1"].dtype)
        Z1 = A0 @ params["W1"].T + params["b1"]
        if labels in ("categorical", "sparse"):
            A1 = runtime.softmax(Z1)
        elif labels == "binary":
            A1 = 1 / (1 + np.exp(-Z1))
        else:
            A1 = Z1
        return runtime.ForwardCache((None, Z1), (A0, A1))

    def per_example_loss(cache, Y):
        A1 = cache.A[1]
        if labels in ("categorical", "sparse"):
            return runtime.logsumexp(cache.Z[1]) - np.sum(Y * cache.Z[1], axis=1, keepdims=True)
        if labels == "binary":
            return -np.sum(Y * np.log(A1) + (1 - Y) * np.log(1 - A1), axis=1, keepdims=True)
        return np.sum((A1 - Y) ** 2, axis=1, keepdims=True) / 2

    def backward(params, cache, Y):
        delta = cache.A[1] - Y
        m = delta.shape[0]
        W = params["W1"]
        return {"W1": delta.T @ cache.A[0] / m + l2 * W + l1 * np.sign(W),
                "b1": delta.sum(axis=0) / m}

    def make_step(params, m, dtype, grads=None, plain=True):  # the printed step's contract
        grads = {key: np.empty_like(value) for key, value in params.items()} if grads is None \
            else grads

        def step(X, Y, rate):  # g = rate dJ/dtheta; the plain rule subtracts it at once
            for key, grad in backward(params, forward(params, X), Y).items():
                grads[key][...] = rate * grad
                if plain:
                    params[key] -= grads[key]
        return np.empty((m, n_in), dtype), np.empty((m, n_out), dtype), step

    net = runtime.Network(
        name="linear", layer_sizes=(n_in, n_out), activations=("identity",), loss="test",
        labels=labels, init=("xavier",), l1=l1, l2=l2, dtype=dtype,
        training={"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 4,
                  "epochs": 3, "shuffle": True, "seed": 0, "hyperparameters": {"weight_decay": 0.0},
                  "schedule": {"name": "constant"}, "early_stopping": None},
        probability=labels != "real", forward=forward, backward=backward,
        per_example_loss=per_example_loss, make_step=make_step, optimizers=RULES,
        schedules={"constant": {"parameters": {}, "rate": lambda eta, e: eta}},
        legacy_optimizers={"batch": "full", "minibatch": None})
    return net


def _sgd(theta, g, state, t, lr, hyper):  # what a generated _rules.py holds, by hand
    theta -= lr * (g + hyper[0] * theta)


# the plain rule only (the hand-written step takes any rule; this table declares one)
RULES = {"sgd": {"title": "Gradient descent", "hyperparameters": {"weight_decay": 0.0},
                 "state": (), "plain_when": ("weight_decay",), "learning_rate": 1e-3,
                 "update": _sgd, "update_arrays": _sgd}}


def _trainer(net):
    return type("Trainer", (runtime.Trainer,), {"network": net})


# ----------------------------------------------------------------------------- numerics

def test_softmax_and_logsumexp_are_stable_and_exact():
    Z = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(2.0), np.log(3.0)]])
    np.testing.assert_allclose(runtime.softmax(Z), [[0.5, 0.5, 0.0], [1 / 6, 2 / 6, 3 / 6]])
    np.testing.assert_allclose(runtime.logsumexp(Z), [[1000 + np.log(2)], [np.log(6.0)]])


@pytest.mark.parametrize("scheme", ["he", "xavier", "normal", "zeros"])
def test_initial_weights_scale(scheme):
    W = runtime.initial_weights(np.random.default_rng(0), scheme, 200, 300)
    expected = {"he": np.sqrt(2 / 300), "xavier": np.sqrt(2 / 500), "normal": 0.01, "zeros": 0.0}
    assert W.shape == (200, 300)
    assert np.std(W) == pytest.approx(expected[scheme], rel=0.02, abs=1e-12)


def test_unknown_initialisation_is_refused():
    with pytest.raises(ValueError, match="unknown initialisation 'glorot'"):
        runtime.initial_weights(np.random.default_rng(0), "glorot", 2, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_one_and_one_row_product_match_numpy(dtype):
    if runtime.rank_one_update(dtype) is None:
        pytest.skip("SciPy's BLAS is not installed")
    rng = np.random.default_rng(0)
    for order in ("C", "F"):
        W = np.array(rng.standard_normal((4, 3)), dtype=dtype, order=order)
        d, a = rng.standard_normal(4).astype(dtype), rng.standard_normal(3).astype(dtype)
        expected = W - np.outer(d, a)
        runtime.rank_one(runtime.rank_one_update(dtype), W, d, a)
        np.testing.assert_allclose(W, expected, rtol=1e-5)
        x, out = rng.standard_normal((1, 4)).astype(dtype), np.empty((1, 3), dtype)
        runtime.one_row_product(dtype)(x, W, out=out)
        np.testing.assert_allclose(out, x @ W, rtol=1e-5)


def test_step_products_use_blas_only_for_one_example():
    product, ger = runtime.step_products(8, np.float32)
    assert product is np.matmul and ger is None
    product, ger = runtime.step_products(1, np.float32)
    assert (ger is None) == (runtime.rank_one_update(np.float32) is None)


# ----------------------------------------------------------------------------- network

def test_init_params_layout_and_dtype():
    params = _linear().init_params(seed=1, dtype=np.float32)
    assert params["W1"].shape == (2, 3) and params["W1"].flags.f_contiguous
    assert params["b1"].shape == (2,) and not params["b1"].any()
    assert {v.dtype for v in params.values()} == {np.dtype(np.float32)}
    with pytest.raises(ValueError, match="floating type"):
        _linear().init_params(dtype=np.int32)


@pytest.mark.parametrize("labels,Y,dense", [
    ("sparse", [2, 0], [[0, 0, 1], [1, 0, 0]]),
    ("categorical", [[0, 1, 0], [1, 0, 0]], [[0, 1, 0], [1, 0, 0]]),
    ("categorical", [[1], [2]], [[0, 1, 0], [0, 0, 1]]),
    ("binary", [[1, 0, 1], [0, 0, 1]], [[1, 0, 1], [0, 0, 1]]),
    ("real", [[0.5, -1, 2], [3, 4, 5]], [[0.5, -1, 2], [3, 4, 5]]),
])
def test_targets_dense_forms(labels, Y, dense):
    T = _linear(labels, n_out=3).targets(np.array(Y), 2, np.float32)
    assert T.dtype == np.float32
    np.testing.assert_array_equal(T, dense)


@pytest.mark.parametrize("labels,Y,match", [
    ("sparse", [[0, 1, 0], [1, 0, 0]], "integer class labels"),
    ("sparse", [3, 0], r"lie in 0\.\.2"),
    ("sparse", [0.5, 1], "whole numbers"),
    ("categorical", [[0.5, 0.6, 0], [1, 0, 0]], "sum to 1"),
    ("binary", [[2, 0, 1], [0, 0, 1]], "binary targets"),
    ("real", [[np.nan, 0, 0], [0, 0, 0]], "finite"),
    ("real", [[0, 0], [0, 0]], r"shape \(m, 3\)"),
    ("real", [[0, 0, 0]], "rows but X has 2"),
    ("real", [["a", "b", "c"], ["d", "e", "f"]], "numbers"),
])
def test_targets_refused_with_a_clear_message(labels, Y, match):
    with pytest.raises(ValueError, match=match):
        _linear(labels, n_out=3).targets(np.array(Y), 2)


def test_objective_is_mean_loss_plus_penalty():
    net = _linear(l1=0.3, l2=0.2)
    params = net.init_params(seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    mean = np.mean(np.sum((X @ params["W1"].T + params["b1"] - Y) ** 2, axis=1) / 2)
    penalty = 0.1 * np.sum(params["W1"] ** 2) + 0.3 * np.sum(np.abs(params["W1"]))
    assert net.loss(params, X, Y) == pytest.approx(mean + penalty)
    assert net.penalty(params) == pytest.approx(penalty)


@pytest.mark.parametrize("labels,n_out", [("sparse", 3), ("binary", 1), ("binary", 2),
                                          ("real", 1), ("real", 2)])
def test_predict_by_task(labels, n_out):
    net = _linear(labels, n_out=n_out)
    params = {k: v + 1.0 for k, v in net.init_params(seed=2).items()}
    X = np.random.default_rng(0).standard_normal((6, 3))
    out, labels_ = net.forward(params, X).output, net.predict(params, X)
    if net.task == "classification":
        np.testing.assert_array_equal(labels_, out.argmax(axis=1))
    elif net.task == "binary":
        np.testing.assert_array_equal(labels_, (out > 0.5).astype(int).reshape(labels_.shape))
    else:
        np.testing.assert_array_equal(labels_, out.reshape(labels_.shape))
    assert labels_.shape == ((6,) if n_out == 1 or net.task == "classification" else (6, n_out))


def test_predict_proba_only_for_probabilities():
    X = np.zeros((2, 3))
    net = _linear("sparse", n_out=3)
    np.testing.assert_allclose(net.predict_proba(net.init_params(), X).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="not probabilities"):
        _linear("real").predict_proba(_linear("real").init_params(), X)


def test_inputs_checked():
    net = _linear()
    assert net.inputs(np.ones((2, 3), np.int64), np.float32).dtype == np.float32
    with pytest.raises(ValueError, match=r"X\[None, :\]"):
        net.inputs(np.ones(3), np.float32)
    with pytest.raises(ValueError, match="real numbers"):
        net.inputs(np.array([["a", "b", "c"]]), np.float32)


# ----------------------------------------------------------------------------- trainer

def test_trainer_params_are_a_checked_copy_in_its_dtype():
    net = _linear(dtype=np.float32)
    Trainer = _trainer(net)
    given = net.init_params(seed=0, dtype=np.float64)
    trainer = Trainer()
    trainer.params = given  # a float64 dict on a float32 Trainer: converted, not ignored
    assert trainer.params["W1"].dtype == np.float32
    before = {k: v.copy() for k, v in given.items()}
    rng = np.random.default_rng(0)
    trainer.fit(rng.standard_normal((8, 3)), rng.standard_normal((8, 2)), track=False)
    assert not np.allclose(trainer.params["W1"], before["W1"])  # it trained
    for key in given:  # and the caller's arrays are untouched
        np.testing.assert_array_equal(given[key], before[key])
    with pytest.raises(ValueError, match=r"params\['W1'\] must have shape \(2, 3\)"):
        trainer.params = {"W1": np.zeros((3, 3)), "b1": np.zeros(2)}


@pytest.mark.parametrize("batch_size, expected", [(None, 4), (3, 3), (20, 10), ("full", 10)])
def test_trainer_step_size_from_the_batch_size(batch_size, expected):
    assert _trainer(_linear())(batch_size=batch_size).step_size(10) == expected  # spec: 4


def test_trainer_follows_plain_gradient_descent():
    net = _linear()
    trainer = _trainer(net)(optimizer="sgd", batch_size="full", learning_rate=0.5, epochs=4)
    start = {k: v.copy() for k, v in trainer.params.items()}
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    trainer.fit(X, Y)
    for _ in range(4):
        grads = net.backward(start, net.forward(start, X), Y)
        start = {k: start[k] - 0.5 * grads[k] for k in start}
    for key in start:
        np.testing.assert_allclose(trainer.params[key], start[key], rtol=1e-12)
    assert len(trainer.history["loss"]) == 4 and trainer.history["accuracy"] == [None] * 4


@pytest.mark.parametrize("settings,match", [({"optimizer": "adam2"}, "optimizer must be one of"),
                                            ({"learning_rate": -1}, "learning_rate"),
                                            ({"batch_size": 0}, "batch_size"),
                                            ({"epochs": 1.5}, "epochs")])
def test_trainer_refuses_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        _trainer(_linear())(**settings)


def test_trainer_diverging_raises():
    trainer = _trainer(_linear())(optimizer="sgd", batch_size="full", learning_rate=1e3, epochs=50)
    rng = np.random.default_rng(0)
    with np.errstate(all="ignore"), pytest.raises(runtime.TrainingDiverged, match="smaller"):
        trainer.fit(rng.standard_normal((8, 3)) * 100, rng.standard_normal((8, 2)))


def test_save_load_round_trip(tmp_path):
    Trainer = _trainer(_linear("sparse", n_out=3))
    trainer = Trainer(epochs=2, seed=3)
    rng = np.random.default_rng(0)
    trainer.fit(rng.standard_normal((12, 3)), rng.integers(0, 3, 12))
    path = trainer.save(tmp_path / "model")
    assert path.endswith(".npz")
    loaded = Trainer.load(tmp_path / "model")
    assert loaded.history == trainer.history and loaded.seed == 3
    for key in trainer.params:
        np.testing.assert_array_equal(loaded.params[key], trainer.params[key])
    other = _trainer(_linear("sparse", n_in=4, n_out=3))
    with pytest.raises(ValueError, match="holds a"):
        other.load(path)


# the kernel helpers: ordinary Python (the kernels run uncompiled too), inlined by numba
@pytest.mark.parametrize("rows", [1, 5])
def test_kernel_helpers_compute_what_they_say(rows):
    rng = np.random.default_rng(rows)
    a, W = rng.standard_normal((rows, 4)), np.asfortranarray(rng.standard_normal((3, 4)))
    out = np.empty((rows, 3))
    runtime.dot_into(a, W.T, out)  # one row: a matrix-vector product
    np.testing.assert_allclose(out, a @ W.T, rtol=1e-12)
    sums = np.empty(3)
    runtime.column_sums(out, sums)
    np.testing.assert_allclose(sums, out.sum(axis=0), rtol=1e-12)
    z, p = rng.standard_normal((rows, 3)) * 500, np.empty((rows, 3))
    runtime.softmax_rows(z, p)
    np.testing.assert_allclose(p, runtime.softmax(z), rtol=1e-12)
    X, T = rng.standard_normal((9, 4)), rng.standard_normal((9, 3))
    A0, Y, order = np.empty((rows, 4)), np.empty((rows, 3)), rng.permutation(9)
    runtime.gather_rows(X, T, order, 2, A0, Y)
    np.testing.assert_array_equal(A0, X[order[2:2 + rows]])
    np.testing.assert_array_equal(Y, T[order[2:2 + rows]])
    before, d = W.copy(), rng.standard_normal(3)
    runtime.subtract_outer(W, d, a[0])
    np.testing.assert_allclose(W, before - np.outer(d, a[0]), rtol=1e-12)
    runtime.subtract(W, before)
    np.testing.assert_allclose(W, -np.outer(d, a[0]), atol=1e-12)
    after = W.copy()
    assert runtime.unchanged(W, before, out=W) is None
    np.testing.assert_array_equal(W, after)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_exp_is_within_one_ulp_of_numpy_and_keeps_its_special_values(dtype):
    """The kernels' exp (``_exp_code``, numba vectorises it) against NumPy's over the whole
    range: within 1 ulp where the result is a normal number, inf above the range, NaN for
    NaN, 0 for an underflow (NumPy gives a subnormal there); the same inside a loop
    compiled with the kernels' fast-math flags (which must not reassociate its reduction)."""
    numba = pytest.importorskip("numba")
    exp = runtime._kernel_helpers().exp
    info = np.finfo(dtype)
    x = np.concatenate([np.linspace(-800, 800, 160_001), np.linspace(-2, 2, 40_001),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 88.72283, 88.7229, -87.3365,
                         709.7827, 709.79, -708.3964, -708.4, -745.2, -1e30, 1e30]]).astype(dtype)

    @numba.njit(fastmath=runtime._FASTMATH, error_model="numpy")
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = exp(x[i])

    got = np.empty_like(x)
    loop(x, got)
    with np.errstate(over="ignore", under="ignore"):
        exact = np.exp(x.astype(np.longdouble))
        numpy = np.exp(x)
    normal = (exact >= info.tiny) & (exact <= info.max)
    ulps = np.abs(got[normal] - exact[normal]) / (exact[normal] * info.eps)
    assert ulps.max() <= 1.0, f"{ulps.max():.2f} ulp at x = {x[normal][np.argmax(ulps)]}"
    np.testing.assert_array_equal(got[np.isinf(numpy)], numpy[np.isinf(numpy)])
    assert np.isnan(got[np.isnan(x)]).all()
    assert (got[exact < info.tiny] == 0).all() and (got[exact < info.tiny] >= 0).all()
    assert got.dtype == dtype and runtime.exp(dtype(1.5)) == np.exp(dtype(1.5))


@pytest.mark.parametrize("blas", ["numpy's", "scipy's"])
def test_compiled_products_match_numpy_in_every_layout(blas, monkeypatch):
    """The kernels' gemm helpers compiled (NumPy's BLAS by its CBLAS names, or the fallback,
    SciPy's through numba) against NumPy: every mix of C and F operands and result, both
    dtypes, the weight step's out -= a b included."""
    numba = pytest.importorskip("numba")
    if blas == "numpy's" and runtime._blas_file() is None:
        pytest.skip("this NumPy carries no OpenBLAS with CBLAS names")
    monkeypatch.setattr(runtime, "_BLAS_FILE", [None] if blas == "scipy's" else [runtime._blas_file()])
    dot_into, matmul_into, subtract_product = runtime._compiled_products()

    @numba.njit
    def run(a, b, out, step):
        matmul_into(a, b, out)
        subtract_product(a, b, step)

    @numba.njit
    def one_row(a, b, out):  # a matrix-vector product into a row-major row, as kernels call it
        dot_into(a[:1], b, out)

    rng = np.random.default_rng(7)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a0, b0, w0 = (rng.standard_normal(shape).astype(dtype) for shape in ((5, 7), (7, 3), (5, 3)))
        for a_order in "CF":
            for b_order in "CF":
                for out_order in "CF":
                    a, b = np.asarray(a0, order=a_order), np.asarray(b0, order=b_order)
                    out = np.zeros((5, 3), dtype, order=out_order)
                    step = np.asarray(w0, order=out_order).copy(order=out_order)
                    run(a, b, out, step)
                    np.testing.assert_allclose(out, a0 @ b0, rtol=tol, atol=tol)
                    np.testing.assert_allclose(step, w0 - a0 @ b0, rtol=tol, atol=tol)
                    row = np.zeros((1, 3), dtype)
                    one_row(np.ascontiguousarray(a), b, row)
                    np.testing.assert_allclose(row, a0[:1] @ b0, rtol=tol, atol=tol)
