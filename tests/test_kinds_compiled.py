"""The compiled engine (numba) for stacks of layer kinds: its epochs give the NumPy engine's
parameters, running statistics and dropout masks (the same draws from the Trainer's
generator) for every kind, with and without a bias, under a skip, at batch sizes 1, 2 and with
a last partial batch, for a plain and a stateful rule; nothing is allocated per epoch; a
statement the loop printer does not know leaves the module without a kernel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from derive.spec import load_spec_text

pytest.importorskip("numba")

# every kind: dense without a bias, batch norm, layer norm, dropout, a skip, dense with a bias
SPEC = """name: kinds_compiled
input: 3
layers:
  - {units: 5, activation: relu, bias: false}
  - {kind: batch_norm, activation: tanh}
  - {units: 5, activation: sigmoid}
  - {kind: layer_norm}
  - {kind: dropout, rate: 0.3}
  - {units: 5, activation: relu, skip: 3}
  - {units: 3, activation: softmax}
loss: categorical_crossentropy
regularization: {l2: 0.01}
dtype: float64
"""


@pytest.fixture(scope="module")
def net(build):
    return build(load_spec_text(SPEC))


def _data(rows=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 3)), rng.integers(0, 3, rows)


def _fit(net, engine, dtype=np.float64, **options):
    X, Y = _data()
    trainer = net.Trainer(engine=engine, epochs=2, seed=4, dtype=dtype, shuffle=True,
                          **options)
    trainer.fit(X, Y, track=False)
    return trainer


def _same(a, b, rtol=1e-10, atol=1e-10):
    for key in a.params:
        np.testing.assert_allclose(b.params[key], a.params[key], rtol=rtol, atol=atol,
                                   err_msg=key)
    for key in a.layer_state:
        np.testing.assert_allclose(b.layer_state[key], a.layer_state[key], rtol=rtol,
                                   atol=atol, equal_nan=True, err_msg=key)
    assert a.t == b.t
    # the same draws from the generator: the same masks (and the same shuffles after)
    assert a._rng.bit_generator.state == b._rng.bit_generator.state


def test_the_kinds_module_has_a_kernel(net):
    assert net.NETWORK.epoch_kernel is not None and net.NETWORK.random_units == 5
    assert net.Trainer(engine="compiled").compiled(32)
    # "auto" without figures for this machine: the module's rule, as for a dense stack
    auto = net.Trainer(engine="auto")
    limit = net.NETWORK.compiled_max_batch
    assert limit == 128 and auto.compiled(limit) and not auto.compiled(limit + 1)


@pytest.mark.parametrize("optimizer", [{"optimizer": "sgd", "learning_rate": 0.05},
                                       {"optimizer": "adam", "learning_rate": 0.01}])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_compiled_epochs_equal_numpy_epochs(net, optimizer, batch_size):
    # 11 rows: batches of 2 and 4 end with a partial one (of 1 and 3); batch norm on one
    # example gives the NumPy engine's NaN running variance (m / (m - 1)), here too
    numpy = _fit(net, "numpy", batch_size=batch_size, **optimizer)
    compiled = _fit(net, "compiled", batch_size=batch_size, **optimizer)
    assert compiled.engine_choice.startswith("compiled")
    _same(numpy, compiled)


def test_running_statistics_move_in_the_kernel(net):
    trainer = _fit(net, "compiled", batch_size=4, optimizer="sgd", learning_rate=0.05)
    fresh = net.init_state()
    for key, value in trainer.layer_state.items():
        assert np.all(np.isfinite(value)) and not np.allclose(value, fresh[key]), key


def test_dropout_masks_follow_the_seed(net):
    a = _fit(net, "compiled", batch_size=4, optimizer="sgd", learning_rate=0.05)
    b = _fit(net, "compiled", batch_size=4, optimizer="sgd", learning_rate=0.05)
    other = net.Trainer(engine="compiled", epochs=2, seed=5, dtype=np.float64, batch_size=4,
                        optimizer="sgd", learning_rate=0.05, params=a.network.init_params(4))
    other.fit(*_data(), track=False)
    _same(a, b, rtol=0, atol=0)
    assert any(not np.allclose(other.params[k], a.params[k]) for k in a.params)


def test_float32_within_float32_precision(net):
    options = {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 4}
    numpy = _fit(net, "numpy", np.float32, **options)
    compiled = _fit(net, "compiled", np.float32, **options)
    assert compiled.params["W1"].dtype == np.float32
    _same(numpy, compiled, rtol=2e-4, atol=2e-5)


def test_no_allocation_per_epoch(net):
    import tracemalloc

    X, Y = _data(400)
    trainer = net.Trainer(engine="compiled", optimizer="sgd", learning_rate=0.05, batch_size=4,
                          epochs=1, dtype=np.float64, shuffle=False)
    trainer.fit(X, Y, track=False)  # compiles, allocates the buffers
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trainer.fit(X, Y, track=False)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # fit()'s one-hot targets and the epoch's order array (rows x (3 + 1) x 8 bytes) and its
    # own small objects; nothing per step (the masks' uniforms in buffers kept per shape)
    assert peak - before < 400 * 4 * 8 + 16384, (after - before, peak - before)


def test_an_unknown_statement_leaves_no_kernel():
    from codegen.printers.graph_loops import print_graph_kernel
    from derive.graph import derive_graph

    derivation = derive_graph(load_spec_text(SPEC))
    assert print_graph_kernel(derivation) is not None

    @dataclasses.dataclass(frozen=True)
    class Pool:  # a kind's statement this printer has no loop form for
        target: object
        op = "max_pool"
        reads = ()

    odd = dataclasses.replace(derivation, backward=derivation.backward + (Pool(None),))
    assert print_graph_kernel(odd) is None
    # an array of a shape class it does not know (an image kind's (m, c, h, w), say)
    shapes = dict(derivation.shapes)
    shapes[next(iter(shapes))] = ("image", 8)
    assert print_graph_kernel(dataclasses.replace(derivation, shapes=shapes)) is None


BINARY = """name: kinds_compiled_binary
input: 4
layers:
  - {units: 6, activation: gelu}
  - {kind: layer_norm, activation: leaky_relu}
  - {kind: dropout, rate: 0.5}
  - {units: 6, activation: tanh, skip: 2, bias: false}
  - {kind: batch_norm, momentum: 0.3, eps: 0.001}
  - {units: 1, activation: sigmoid}
loss: binary_crossentropy
regularization: {l1: 0.001}
dtype: float64
"""


def test_one_output_unit_and_other_options(build):
    # a one-row weight (its gradient typed row-major by numba), math.erf (gelu), the l1
    # term, batch norm's own momentum and eps; 13 rows in batches of 3 (a last one of 1)
    net = build(load_spec_text(BINARY))
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((13, 4)), rng.integers(0, 2, 13)
    trainers = {}
    for engine in ("numpy", "compiled"):
        trainers[engine] = net.Trainer(engine=engine, batch_size=3, epochs=2, seed=2,
                                       optimizer="sgd", learning_rate=0.05)
        trainers[engine].fit(X, Y, track=False)
    _same(trainers["numpy"], trainers["compiled"])


def test_the_kernels_mask_is_the_generators_draw(net):
    import inspect

    X, Y = _data(8)
    trainer = net.Trainer(engine="compiled", epochs=1, seed=7, batch_size=8, shuffle=False,
                          optimizer="sgd", learning_rate=0.05)
    trainer.fit(X, Y, track=False)
    (kernel,) = trainer._epochs.values()
    names = list(inspect.signature(net._epoch_kernel).parameters)
    mask = kernel.args[names.index("mask5")]
    # the NumPy step's draw: one (m, units) block of uniforms per dropout layer and batch
    expected = (np.random.default_rng(7).random((8, 5)) < 0.7).astype(float)
    np.testing.assert_array_equal(mask, expected)
    assert 0 < mask.sum() < mask.size
