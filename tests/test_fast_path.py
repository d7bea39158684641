"""The Trainer's fast path (in-place, preallocated) against the functional API it mirrors.

Both are printed from the same Derivation; here k descent steps of ``_make_step`` must leave
the same parameters as k steps of ``params -= lr * backward(params, forward(params, X), Y)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from codegen.fdcheck import random_targets
from test_codegen import GRID, grid_spec


def reference_steps(net, params, batches, lr):
    params = {k: v.copy() for k, v in params.items()}
    for X, Y in batches:
        grads = net.backward(params, net.forward(params, X), Y)
        for key in params:
            params[key] -= lr * grads[key]
    return params


def fast_steps(net, params, batches, lr):
    params = {k: v.copy() for k, v in params.items()}
    steps = {}
    for X, Y in batches:
        if len(X) not in steps:
            steps[len(X)] = net._make_step(params, len(X), np.float64)
        Xb, Yb, step = steps[len(X)]
        np.copyto(Xb, X)
        np.copyto(Yb, net.targets(Y, len(X), np.float64))
        step(Xb, Yb, lr)
    return params


def assert_fast_step_equals_functional(net, sizes=(5, 1, 5, 2, 1), scale=1.0, seed=1):
    """k in-place steps (several batch sizes, the one-example rank-1 path too) leave the
    parameters that k functional steps leave."""
    rng = np.random.default_rng(seed)
    params = net.init_params(seed=3, dtype=np.float64)
    batches = [(scale * rng.standard_normal((m, net.LAYER_SIZES[0])), random_targets(net, m, rng))
               for m in sizes]
    expected = reference_steps(net, params, batches, 0.05)
    got = fast_steps(net, params, batches, 0.05)
    for key in params:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("hidden,out,loss,regularized", GRID)
def test_fast_step_equals_functional_step(build, hidden, out, loss, regularized):
    assert_fast_step_equals_functional(build(grid_spec(hidden, out, loss, regularized)))


def test_trainer_fit_equals_functional_updates_float32(build):
    """Trainer.fit (shuffled mini-batches, float32) follows the functional updates."""
    net = build(grid_spec("relu", "softmax", "categorical_crossentropy", True))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((23, 3)).astype(np.float32)
    y = rng.integers(0, 3, 23)
    trainer = net.Trainer(learning_rate=0.1, batch_size=4, epochs=2, optimizer="sgd",
                          seed=5, dtype=np.float32)
    start = {k: v.copy() for k, v in trainer.params.items()}
    trainer.fit(X, y, track=False)
    order_rng = np.random.default_rng(5)
    batches = []
    for _ in range(2):
        order = order_rng.permutation(23)
        batches += [(X[order[s:s + 4]], y[order[s:s + 4]]) for s in range(0, 23, 4)]
    expected = reference_steps(net, start, batches, 0.1)
    for key in start:
        assert trainer.params[key].dtype == np.float32
        np.testing.assert_allclose(trainer.params[key], expected[key], rtol=2e-5, atol=2e-6)


def test_steady_state_step_allocates_no_arrays(build):
    import tracemalloc

    net = build(grid_spec("relu", "softmax", "categorical_crossentropy", False))
    params = net.init_params(dtype=np.float32)
    Xb, Yb, step = net._make_step(params, 16, np.float32)
    Xb[:] = 0.5
    Yb[:] = 0
    Yb[:, 0] = 1
    step(Xb, Yb, 0.01)  # warm up
    tracemalloc.start()
    for _ in range(50):  # one-time allocations of the interpreter and NumPy land here
        step(Xb, Yb, 0.01)
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(200):
        step(Xb, Yb, 0.01)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before <= 1024 and peak - before <= 4096, (after - before, peak - before)
