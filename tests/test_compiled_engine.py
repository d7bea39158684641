"""The compiled engine (the step printed as a numba loop kernel, whole epochs in one call)
against the NumPy engine, itself tested against the functional ``backward``.

Specs: a pairwise cover (``test_codegen.covering_cases``, one numba compilation each) — every
loss with an output activation of each kind it accepts (linear, smooth, in cases, softmax), every
output and every hidden activation at least once, with and without regularisation: every form
the kernel printer writes; batch sizes 1, 2 and 5 with a last partial batch; float64 to 1e-10
and float32 to float32 precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from codegen.fdcheck import random_targets

numba = pytest.importorskip("numba")

from test_codegen import case_id, covering_cases, grid_spec  # noqa: E402

COVERING = covering_cases()


def _train(net, engine, dtype, batch_size, X, Y, epochs=2):
    trainer = net.Trainer(engine=engine, optimizer="sgd", batch_size=batch_size,
                          learning_rate=0.05, epochs=epochs, seed=4, dtype=dtype)
    trainer.fit(X, Y, track=False)
    return trainer.params


@pytest.mark.parametrize("hidden,out,loss,regularized", COVERING,
                         ids=[case_id(*case) for case in COVERING])
def test_compiled_epochs_equal_numpy_epochs(build, hidden, out, loss, regularized):
    net = build(grid_spec(hidden, out, loss, regularized))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((11, net.LAYER_SIZES[0]))
    Y = random_targets(net, 11, rng)
    for batch_size in (1, 2, 5):  # 11 = 2 x 5 + 1: a last partial batch
        numpy_params = _train(net, "numpy", np.float64, batch_size, X, Y)
        compiled_params = _train(net, "compiled", np.float64, batch_size, X, Y)
        for key in numpy_params:
            np.testing.assert_allclose(compiled_params[key], numpy_params[key], rtol=1e-10,
                                       atol=1e-12, err_msg=f"{key}, batch {batch_size}")


def test_float32_within_float32_precision(build):
    net = build(grid_spec("relu", "softmax", "categorical_crossentropy", True))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    Y = rng.integers(0, 3, 64)
    a = _train(net, "numpy", np.float32, 8, X, Y, epochs=3)
    b = _train(net, "compiled", np.float32, 8, X, Y, epochs=3)
    for key in a:
        assert b[key].dtype == np.float32
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_the_mnist_kernel_uses_blas_and_equals_numpy():
    """Large layers take BLAS products, one-example steps gemv and rank-one loops."""
    import generated.mnist_mlp as net

    rng = np.random.default_rng(1)
    X = rng.random((7, 784))
    Y = rng.integers(0, 10, 7)
    for batch_size in (1, 3):
        a = _train(net, "numpy", np.float64, batch_size, X, Y, epochs=1)
        b = _train(net, "compiled", np.float64, batch_size, X, Y, epochs=1)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_engine_choice(build):
    net = build(grid_spec("relu", "softmax", "categorical_crossentropy", False))
    assert net.Trainer(engine="auto").compiled(32)  # a small network: loops
    assert net.Trainer(engine="auto").compiled(20000)  # a whole data set per step too
    assert not net.Trainer(engine="numpy").compiled(32)
    import generated.mnist_mlp as mnist

    # a large network too, at every batch size: its products call NumPy's BLAS
    assert mnist.Trainer(engine="auto").compiled(1) and mnist.Trainer().compiled(1024)
    assert mnist.Trainer(engine="compiled").compiled(32)
    with pytest.raises(ValueError, match="engine must be one of"):
        net.Trainer(engine="jit")


def test_no_allocation_per_epoch(build):
    import tracemalloc

    net = build(grid_spec("tanh", "sigmoid", "binary_crossentropy", False))
    trainer = net.Trainer(engine="compiled", optimizer="sgd", batch_size=4, epochs=1,
                          dtype=np.float64, shuffle=False)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((400, 3)), rng.integers(0, 2, (400, 3))
    trainer.fit(X, Y, track=False)  # compiles, allocates the buffers
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trainer.fit(X, Y, track=False)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the order array of one epoch and fit()'s own small objects; nothing per step
    assert peak - before < 400 * 8 + 16384, (after - before, peak - before)
