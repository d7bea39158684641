"""The generated module: its contract, its gradients, its numbers, its stability, its Trainer."""

from __future__ import annotations

import ast
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen.fdcheck import finite_difference_check
from codegen.emit import render_module, render_runtime
from codegen.files import GENERATED_MARKER
from conftest import activation_values, loss_value
from derive.activations import ACTIVATIONS
from derive.derivation import derive
from derive.errors import SpecError
from derive.local import local_activation
from derive.losses import LOSSES
from derive.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]

HIDDEN = tuple(activation_values())
ELEMENTWISE = tuple(name for name in ACTIVATIONS if not ACTIVATIONS[name].vector)
CROSS_ENTROPIES = tuple(name for name in LOSSES if LOSSES[name].needs_probabilities)


def _valid_output_loss_pairs():
    """Every (output activation, loss) pair the spec reader accepts."""
    pairs = []
    for out in ACTIVATIONS:
        for loss in LOSSES:
            try:
                make_spec("tanh", out, loss=loss)
            except SpecError:
                continue
            pairs.append((out, loss))
    return pairs


def make_spec(*acts: str, loss: str, sizes=(3, 4, 3), l1: float = 0.0, l2: float = 0.0,
              name: str = "net", dtype: str = "float64", extra: str = ""):
    """A NetSpec from activations (YAML flow values) and layer sizes, through the spec reader."""
    assert len(acts) == len(sizes) - 1
    layers = "".join(f"  - {{units: {n}, activation: {a}}}\n" for n, a in zip(sizes[1:], acts))
    reg = f"regularization: {{l1: {l1}, l2: {l2}}}\n" if (l1 or l2) else ""
    text = (f"name: {name}\ninput: {sizes[0]}\nlayers:\n{layers}loss: {loss}\n{reg}"
            f"dtype: {dtype}\n{extra}")
    return load_spec_text(text, f"{name}.yaml")


@contextmanager
def strict_floats():
    """Any overflow, invalid operation or division by zero is an error (underflow to 0 is fine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            yield


def _grid_cases():
    """Pairwise: every hidden activation with every output activation, the loss taken in
    rotation over those the output accepts, so that every valid (output, loss) pair occurs,
    with and without regularisation (the full product of all three would be 9 x 35 modules)."""
    cases = []
    outputs = list(dict.fromkeys(out for out, _ in OUTPUT_LOSS))
    for j, out in enumerate(outputs):
        takers = [loss for o, loss in OUTPUT_LOSS if o == out]
        for i, hidden in enumerate(HIDDEN):
            loss = takers[(i + j) % len(takers)]
            regularized = (i // 3 + j) % 2 == 0
            cases.append(pytest.param(hidden, out, loss, regularized,
                                      id=case_id(hidden, out, loss, regularized)))
    return cases


def case_id(hidden, out, loss, regularized) -> str:
    label = f"{hidden.split(',')[0].strip('{').removeprefix('name: ')}-{out}-{loss}"
    return label + ("-l1l2" if regularized else "")


def output_kind(name: str) -> str:
    """What the printers write differently for an output activation: a Jacobian (softmax),
    g' = 1 (nothing to multiply), g' in cases (ReLU-like), or a smooth g'."""
    if ACTIVATIONS[name].vector:
        return "vector"
    derivative = local_activation(name).derivative
    return "linear" if derivative == 1 else "cases" if derivative.has(sp.Piecewise) else "smooth"


def covering_cases():
    """A small pairwise cover for the costly tests (one numba compilation each): every loss
    with one output of each kind it accepts (rotating over the outputs of that kind), every
    output with some loss, every hidden activation in rotation over them."""
    pairs = []
    losses = list(dict.fromkeys(loss for _, loss in OUTPUT_LOSS))
    for j, loss in enumerate(losses):
        by_kind: dict[str, list[str]] = {}
        for out, taken in OUTPUT_LOSS:
            if taken == loss:
                by_kind.setdefault(output_kind(out), []).append(out)
        pairs += [(outs[j % len(outs)], loss) for outs in by_kind.values()]
    for i, out in enumerate(dict.fromkeys(out for out, _ in OUTPUT_LOSS)):
        if all(out != o for o, _ in pairs):
            takers = [loss for o, loss in OUTPUT_LOSS if o == out]
            pairs.append((out, takers[i % len(takers)]))
    pairs = [pair for pair in OUTPUT_LOSS if pair in pairs]  # registry order
    assert len(pairs) >= len(HIDDEN)  # so that the rotation reaches every hidden activation
    return [(HIDDEN[k % len(HIDDEN)], out, loss, k % 2 == 1) for k, (out, loss) in enumerate(pairs)]


OUTPUT_LOSS = _valid_output_loss_pairs()
GRID = _grid_cases()


def grid_spec(hidden, out, loss, regularized):
    reg = {"l1": 0.01, "l2": 0.02} if regularized else {}
    return make_spec(hidden, out, loss=loss_value(loss), **reg)


# ----------------------------------------------------------------------------- contract

CONTRACT = {
    # name: (spec, task)
    "classification": (make_spec("relu", "tanh", "softmax", loss="categorical_crossentropy",
                                 sizes=(5, 6, 4, 3), name="clf"), "classification"),
    "sparse": (make_spec("sigmoid", "softmax", loss="sparse_categorical_crossentropy",
                         sizes=(4, 5, 3), name="sparse"), "classification"),
    "binary": (make_spec("tanh", "sigmoid", loss="binary_crossentropy", sizes=(4, 5, 1),
                         name="binary"), "binary"),
    "multilabel": (make_spec("relu", "sigmoid", loss="binary_crossentropy", sizes=(4, 5, 2),
                             name="multilabel"), "binary"),
    "regression": (make_spec("tanh", "identity", loss="mse", sizes=(3, 5, 1), name="reg"),
                   "regression"),
    "regression2": (make_spec("elu", "identity", loss="mse", sizes=(3, 5, 2), name="reg2"),
                    "regression"),
}


@pytest.fixture(params=sorted(CONTRACT), scope="module")
def contract(request, build):
    spec, task = CONTRACT[request.param]
    return spec, task, build(spec)


def targets_for(net, m, rng):
    n_out = net.LAYER_SIZES[-1]
    if net.TASK == "classification":
        return rng.integers(0, n_out, size=m)
    if net.TASK == "binary":
        return rng.integers(0, 2, size=(m,) if n_out == 1 else (m, n_out))
    return rng.standard_normal((m,) if n_out == 1 else (m, n_out))


def test_layer_sizes_and_task(contract):
    spec, task, net = contract
    assert net.LAYER_SIZES == spec.layer_sizes
    assert isinstance(net.LAYER_SIZES, tuple)
    assert net.TASK == task
    assert net.LOSS == spec.loss
    assert len(net.ACTIVATIONS) == spec.depth


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_params_keys_shapes_dtype(contract, dtype):
    spec, _, net = contract
    params = net.init_params(seed=0, dtype=dtype)
    sizes = spec.layer_sizes
    expected = {}
    for l in range(1, len(sizes)):
        expected[f"W{l}"] = (sizes[l], sizes[l - 1])
        expected[f"b{l}"] = (sizes[l],)
    assert list(params) == list(expected)
    assert {k: v.shape for k, v in params.items()} == expected
    assert all(v.dtype == dtype for v in params.values())
    assert all(not np.any(params[f"b{l}"]) for l in range(1, len(sizes)))
    # same seed, same numbers; another seed, other numbers
    again = net.init_params(seed=0, dtype=dtype)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    other = net.init_params(seed=1, dtype=dtype)
    assert not np.array_equal(params["W1"], other["W1"])


def test_init_params_refuses_integer_dtype(contract):
    _, _, net = contract
    with pytest.raises(ValueError, match="floating"):
        net.init_params(dtype=np.int32)


def test_forward_cache(contract):
    spec, _, net = contract
    rng = np.random.default_rng(1)
    params = net.init_params(seed=0, dtype=np.float64)
    X = rng.standard_normal((7, spec.input))
    cache = net.forward(params, X)
    L = spec.depth
    assert len(cache.Z) == len(cache.A) == L + 1
    assert cache.Z[0] is None
    assert cache.A[0] is X
    assert cache.output is cache.A[L]
    assert cache.output.shape == (7, spec.layer_sizes[-1])
    for l in range(1, L + 1):
        assert cache.Z[l].shape == cache.A[l].shape == (7, spec.layer_sizes[l])
        expected_Z = cache.A[l - 1] @ params[f"W{l}"].T + params[f"b{l}"]
        np.testing.assert_allclose(cache.Z[l], expected_Z, rtol=1e-12, atol=1e-12)


def test_loss_is_float_and_backward_matches_params(contract):
    spec, _, net = contract
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        params = net.init_params(seed=0, dtype=dtype)
        X = rng.standard_normal((6, spec.input)).astype(dtype)
        Y = targets_for(net, 6, rng)
        value = net.loss(params, X, Y)
        assert type(value) is float and np.isfinite(value) and value >= 0
        grads = net.backward(params, net.forward(params, X), Y)
        assert list(grads) == list(params)
        for key in params:
            assert grads[key].shape == params[key].shape, key
            assert grads[key].dtype == dtype, key


def test_predict(contract):
    spec, task, net = contract
    rng = np.random.default_rng(3)
    params = net.init_params(seed=0, dtype=np.float64)
    for key in params:
        params[key] += rng.standard_normal(params[key].shape)
    X = rng.standard_normal((20, spec.input))
    output = net.forward(params, X).output
    labels = net.predict(params, X)
    n_out = spec.layer_sizes[-1]
    if task == "classification":
        assert labels.shape == (20,)
        assert labels.dtype.kind in "iu"
        np.testing.assert_array_equal(labels, np.argmax(output, axis=1))
        assert set(labels) <= set(range(n_out))
    elif task == "binary":
        assert labels.shape == ((20,) if n_out == 1 else (20, n_out))
        assert set(np.unique(labels)) <= {0, 1}
        np.testing.assert_array_equal(labels, (output > 0.5).astype(int).reshape(labels.shape))
    else:
        assert labels.shape == ((20,) if n_out == 1 else (20, n_out))
        np.testing.assert_array_equal(labels, output.reshape(labels.shape))


def test_targets_accepted_forms(build):
    """Equivalent target forms give the same loss: labels, (m, 1) labels, one-hot, (m,) vs (m, 1)."""
    rng = np.random.default_rng(4)
    clf = build(CONTRACT["classification"][0])
    params = clf.init_params(seed=0, dtype=np.float64)
    X = rng.standard_normal((5, 5))
    y = np.array([0, 2, 1, 1, 0])
    one_hot = np.eye(3)[y]
    values = [clf.loss(params, X, y), clf.loss(params, X, y[:, None]), clf.loss(params, X, one_hot),
              clf.loss(params, X, y.astype(float))]
    assert max(values) - min(values) < 1e-12
    binary = build(CONTRACT["binary"][0])
    params = binary.init_params(seed=0, dtype=np.float64)
    X = rng.standard_normal((5, 4))
    t = np.array([0, 1, 1, 0, 1])
    assert binary.loss(params, X, t) == binary.loss(params, X, t[:, None])
    reg = build(CONTRACT["regression"][0])
    params = reg.init_params(seed=0, dtype=np.float64)
    X = rng.standard_normal((5, 3))
    v = rng.standard_normal(5)
    assert reg.loss(params, X, v) == reg.loss(params, X, v[:, None])


def test_loss_definition_mean_plus_regularization(build):
    """J = mean per-example loss + (l2/2) sum ||W||^2 + l1 sum |W| (weights only)."""
    spec = make_spec("tanh", "identity", loss="mse", sizes=(3, 4, 2), l1=0.03, l2=0.05,
                     name="regdef")
    net = build(spec)
    rng = np.random.default_rng(5)
    params = net.init_params(seed=0, dtype=np.float64)
    for key in params:
        params[key] += rng.standard_normal(params[key].shape)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    A1 = np.tanh(X @ params["W1"].T + params["b1"])
    A2 = A1 @ params["W2"].T + params["b2"]
    data = np.mean(0.5 * np.sum((A2 - Y) ** 2, axis=1))
    weights = [params["W1"], params["W2"]]
    expected = (data + 0.025 * sum(np.sum(W ** 2) for W in weights)
                + 0.03 * sum(np.sum(np.abs(W)) for W in weights))
    assert net.L1 == 0.03 and net.L2 == 0.05
    assert abs(net.loss(params, X, Y) - expected) < 1e-12


# ----------------------------------------------------------------------------- gradients

def test_the_pairwise_designs_cover_the_registries():
    """GRID: every hidden with every output activation and every valid (output, loss) pair;
    the cover: every hidden, every output, and every loss with each kind of output it takes."""
    assert {(c.values[0], c.values[1]) for c in GRID} == {
        (hidden, out) for hidden in HIDDEN for out, _ in OUTPUT_LOSS}
    assert {(c.values[1], c.values[2]) for c in GRID} == set(OUTPUT_LOSS)
    cover = covering_cases()
    assert {hidden for hidden, *_ in cover} == set(HIDDEN)
    assert {out for _, out, *_ in cover} == {out for out, _ in OUTPUT_LOSS}
    assert {(output_kind(out), loss) for _, out, loss, _ in cover} == {
        (output_kind(out), loss) for out, loss in OUTPUT_LOSS}
    assert {r for *_, r in cover} == {True, False}


@pytest.mark.parametrize("hidden,out,loss,regularized", GRID)
def test_finite_differences(build, hidden, out, loss, regularized):
    net = build(grid_spec(hidden, out, loss, regularized))
    report = finite_difference_check(net, m=4, seed=0, tolerance=1e-6)
    assert report.ok, report.summary()
    assert sum(r.checked for r in report.results) > 0.5 * (4 * 3 + 4 + 3 * 4 + 3), report.summary()
    if regularized:
        assert net.L1 == 0.01 and net.L2 == 0.02


@pytest.mark.parametrize("wrong,right", [("delta2 = A2 - Y", "delta2 = 1.01 * (A2 - Y)"),
                                         ("G1 = 1 - A1**2", "G1 = 1 - A1")])
def test_finite_differences_catch_a_wrong_backward(tmp_path, wrong, right):
    """The check above has teeth: a slightly wrong output error or g' is caught."""
    from codegen.emit import write_module
    from codegen.files import import_module_from

    derivation = derive(make_spec("tanh", "softmax", loss="categorical_crossentropy", l2=0.02,
                                  name="broken"))
    source = render_module(derivation)
    line = f"\n    {wrong}\n"  # the functional backward's line (the step's comment is indented more)
    assert source.count(line) == 1
    path = write_module(derivation, tmp_path, source=source.replace(line, f"\n    {right}\n"))
    report = finite_difference_check(import_module_from(path), tolerance=1e-6)
    assert not report.ok
    assert "DISAGREE" in report.summary()


@pytest.mark.parametrize("hidden,out,loss,regularized", GRID)
def test_float32_stays_float32(build, hidden, out, loss, regularized):
    net = build(grid_spec(hidden, out, loss, regularized))
    rng = np.random.default_rng(6)
    params = net.init_params(seed=0, dtype=np.float32)
    X = rng.standard_normal((5, 3)).astype(np.float32)
    Y = targets_for(net, 5, rng)
    cache = net.forward(params, X)
    assert all(a.dtype == np.float32 for a in cache.A)
    assert all(z.dtype == np.float32 for z in cache.Z[1:])
    assert type(net.loss(params, X, Y)) is float
    grads = net.backward(params, cache, Y)
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in params}
    # and float64 stays float64
    params64 = net.init_params(seed=0, dtype=np.float64)
    cache64 = net.forward(params64, X.astype(np.float64))
    assert cache64.output.dtype == np.float64
    grads64 = net.backward(params64, cache64, Y)
    assert all(g.dtype == np.float64 for g in grads64.values())
    # float32 and float64 agree to float32 precision
    np.testing.assert_allclose(cache.output, cache64.output, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- seed 003

SEED003_BINARY_W1 = np.array([[0.9, 0.2, 0.4, 0.3], [-0.5, 0.4, 0.3, 0.3],
                              [0.1, 0.1, -0.1, 0.2], [-0.2, 0.5, 0.5, 0.7]])
SEED003_MULTI_W1 = np.array([[0.1, 0.3, 0.8, -0.4], [-0.3, -0.2, 0.5, 0.5],
                             [-0.3, 0.1, 0.5, 0.4], [0.2, 0.5, -0.9, 0.7]])
SEED003_MULTI_W2 = np.array([[0.3, 0.8, -0.2, -0.4], [0.5, -0.2, -0.3, 0.5],
                             [0.3, 0.1, 0.6, 0.6]])


def test_seed003_binary_worked_example():
    import generated.sigmoid_bce_4_4_1 as net

    params = {"W1": SEED003_BINARY_W1, "b1": np.full(4, 0.5),
              "W2": np.array([[0.5, 0.8, -0.6, 0.3]]), "b2": np.array([0.3])}
    x = np.array([[0.3, 0.5, -0.4, 0.3]])
    cache = net.forward(params, x)
    np.testing.assert_allclose(cache.Z[1][0], [0.8, 0.52, 0.68, 0.7], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.round(cache.A[1][0], 2), [0.69, 0.63, 0.66, 0.67])
    assert abs(cache.Z[2][0, 0] - 0.948) < 1e-3  # printed 0.948 (from the rounded h1)
    y_hat = cache.output[0, 0]
    assert abs(y_hat - 0.720898) < 1e-6  # erratum: the document's 0.7207 rounds h1 first
    assert round(y_hat, 3) == round(0.7207, 3) == 0.721
    L = net.loss(params, x, [1])
    assert abs(L - 0.327258) < 1e-6
    assert abs(L + np.log(y_hat)) < 1e-12  # L = -log(y_hat) for y = 1
    assert round(L, 3) == 0.327
    assert net.predict(params, x).tolist() == [1]


@pytest.mark.parametrize("case", [1, 2])
def test_seed003_multiclass_worked_examples(case):
    import generated.sigmoid_softmax_4_4_3 as net

    params = {"W1": SEED003_MULTI_W1, "b1": np.zeros(4), "W2": SEED003_MULTI_W2, "b2": np.zeros(3)}
    if case == 1:
        x, y = np.array([[0.2, 0.5, -0.3, 0.3]]), np.array([[0, 1, 0]])
        z1, h1, z2 = [-0.19, -0.16, -0.04, 0.77], [0.45, 0.46, 0.49, 0.68], [0.13, 0.33, 0.89]
        y_hat, L = [0.2303, 0.2804, 0.4893], 1.2716
    else:
        x, y = np.array([[0.6, 0.4, 0.6, 0.1]]), np.array([[0, 0, 1]])
        z1, h1, z2 = [0.62, 0.09, 0.2, -0.15], [0.65, 0.52, 0.55, 0.46], [0.32, 0.29, 0.85]
        y_hat, L = [0.2718, 0.2634, 0.4648], 0.7661
    cache = net.forward(params, x)
    np.testing.assert_allclose(cache.Z[1][0], z1, rtol=0, atol=1e-12)
    if case == 1:
        assert abs(cache.Z[1][0, 2] - (-0.04)) < 1e-12  # erratum: the document prints -0.09
    np.testing.assert_array_equal(np.round(cache.A[1][0], 2), h1)
    np.testing.assert_array_equal(np.round(cache.Z[2][0], 2), z2)
    np.testing.assert_array_equal(np.round(cache.output[0], 4), y_hat)
    loss_value = net.loss(params, x, y)
    assert round(loss_value, 4) == L
    assert net.loss(params, x, np.argmax(y, axis=1)) == loss_value  # labels or one-hot
    if case == 1:
        assert round(-np.log(0.28), 4) == 1.2730  # the document's 1.2729 is -ln 0.28 = 1.27297 cut
        assert abs(loss_value - 1.2729) > 5e-5


# ----------------------------------------------------------------------------- dtypes, I/O

def test_trainer_float32_save_load_round_trip(build, tmp_path):
    net = build(CONTRACT["classification"][0])  # a float64 spec, trained in float32
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((30, 5)).astype(np.float32), rng.integers(0, 3, 30)
    trainer = net.Trainer(dtype=np.float32, learning_rate=0.05, batch_size=8, epochs=3,
                          optimizer="sgd", seed=11, shuffle=True)
    trainer.fit(X, y, validation=(X[:10], y[:10]))
    assert all(v.dtype == np.float32 for v in trainer.params.values())
    path = tmp_path / "model.npz"
    trainer.save(path)
    with np.load(path, allow_pickle=False) as stored:  # no pickled objects in the file
        assert "__settings__" in stored.files
    loaded = net.Trainer.load(path)
    assert list(loaded.params) == list(trainer.params)
    for key, value in trainer.params.items():
        assert loaded.params[key].dtype == np.float32
        assert np.array_equal(loaded.params[key], value)
    for attr in ("learning_rate", "batch_size", "epochs", "optimizer", "shuffle", "seed", "dtype"):
        assert getattr(loaded, attr) == getattr(trainer, attr), attr
    assert loaded.history == trainer.history
    np.testing.assert_array_equal(loaded.predict(X), trainer.predict(X))


def test_integer_inputs_are_accepted(build):
    net = build(CONTRACT["classification"][0])
    X = np.arange(15).reshape(3, 5) % 4
    for dtype in (np.float32, np.float64):
        params = net.init_params(seed=0, dtype=dtype)
        cache = net.forward(params, X)
        assert cache.A[0].dtype == dtype and cache.output.dtype == dtype
        np.testing.assert_allclose(cache.output, net.forward(params, X.astype(dtype)).output)
        assert np.isfinite(net.loss(params, X, [0, 1, 2]))
        assert net.predict(params, X.tolist()).shape == (3,)  # lists too
    trainer = net.Trainer(epochs=1)
    trainer.fit(X, [0, 1, 2])
    assert len(trainer.history["loss"]) == 1


def test_non_numeric_inputs_refused(build):
    net = build(CONTRACT["classification"][0])
    params = net.init_params(seed=0)
    with pytest.raises(ValueError, match="real numbers"):
        net.forward(params, np.array([["a"] * 5]))


# ----------------------------------------------------------------------------- stability

@pytest.mark.parametrize("out,loss", [("softmax", "categorical_crossentropy"),
                                      ("softmax", "sparse_categorical_crossentropy"),
                                      ("sigmoid", "binary_crossentropy"),
                                      ("sigmoid", "categorical_crossentropy")])
def test_extreme_logits(build, out, loss):
    net = build(make_spec("tanh", out, loss=loss, sizes=(3, 4, 3), name="extreme"))
    params = net.init_params(seed=0, dtype=np.float64)
    params["b2"] = np.array([1000.0, -1000.0, 0.0])
    X = np.random.default_rng(8).standard_normal((3, 3))
    if net.TASK == "binary":
        Ys = [np.array([[1, 0, 1]] * 3), np.array([[0, 1, 0]] * 3)]  # right and wrong
    else:
        Ys = [np.array([0, 0, 0]), np.array([1, 1, 1])]
    with strict_floats():
        cache = net.forward(params, X)
        assert cache.Z[2].max() > 999 and cache.Z[2].min() < -999
        for Y in Ys:
            value = net.loss(params, X, Y)
            assert np.isfinite(value)
            grads = net.backward(params, cache, Y)
            assert all(np.all(np.isfinite(g)) for g in grads.values())
        if out == "softmax" and net.TASK == "classification":
            assert net.loss(params, X, Ys[0]) < 1e-3
            assert abs(net.loss(params, X, Ys[1]) - 2000.0) < 1.0  # lse(z) - z_1 ~ 1000 + 1000


@pytest.mark.parametrize("scale", [1000.0, 1e4])
def test_extreme_logits_scaled_weights(build, scale):
    """Scaling the last layer's weights instead of its bias, in float32 as well."""
    for out, loss in (("softmax", "categorical_crossentropy"), ("sigmoid", "binary_crossentropy")):
        net = build(make_spec("tanh", out, loss=loss, sizes=(3, 4, 3), name="extreme"))
        for dtype in (np.float32, np.float64):
            params = net.init_params(seed=0, dtype=dtype)
            params["W2"] = (params["W2"] * scale).astype(dtype)
            X = np.random.default_rng(9).standard_normal((4, 3)).astype(dtype) * 5
            Y = (np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]) if net.TASK == "binary"
                 else np.array([0, 1, 2, 1]))
            with strict_floats():
                value = net.loss(params, X, Y)
                grads = net.backward(params, net.forward(params, X), Y)
            assert np.isfinite(value)
            assert all(np.all(np.isfinite(g)) and g.dtype == dtype for g in grads.values())


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hidden_activations_with_huge_inputs(build, hidden, dtype):
    net = build(make_spec(hidden, "sigmoid", loss="binary_crossentropy", sizes=(3, 4, 1),
                          name="huge"))
    params = net.init_params(seed=0, dtype=dtype)
    X = (1000.0 * np.array([[1, -1, 1], [-1, 1, -1], [1, 1, 1], [-1, -1, -1]])).astype(dtype)
    Y = np.array([1, 0, 1, 0])
    with strict_floats():
        cache = net.forward(params, X)
        value = net.loss(params, X, Y)
        grads = net.backward(params, cache, Y)
    assert np.abs(cache.Z[1]).max() > 100
    assert all(np.all(np.isfinite(a)) for a in cache.A)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) and g.dtype == dtype for g in grads.values())


# ----------------------------------------------------------------------------- validation

@pytest.fixture(scope="module")
def validation_modules(build):
    return {key: build(CONTRACT[key][0]) for key in ("classification", "sparse", "binary",
                                                      "multilabel", "regression2")}


@pytest.mark.parametrize("kind,Y,match", [
    ("classification", [0, 1, 2], r"3 rows but X has 4"),
    ("classification", [0, 1, 2, 3], r"0\.\.2.*got 3 at row 3"),
    ("classification", [0, -1, 2, 1], r"0\.\.2.*got -1 at row 1"),
    ("classification", [0, 1.5, 2, 1], r"whole numbers"),
    ("classification", np.eye(4), r"one-hot rows \(m, 3\).*\(4, 4\)"),
    ("classification", np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), r"sum to 1"),
    ("classification", np.array([[0.5, 0.2, 0.2]] * 4), r"sum to 1"),
    ("classification", np.array([[2, -1, 0]] * 4), r"\[0, 1\]"),
    ("classification", np.array(["a", "b", "c", "a"]), r"numbers"),
    ("classification", 1, r"0 rows but X has 4"),
    ("sparse", np.eye(3)[[0, 1, 2, 0]], r"integer class labels"),
    ("sparse", [0, 3, 1, 1], r"0\.\.2"),
    ("binary", [0, 2, 1, 0], r"binary targets must be 0 or 1"),
    ("binary", [0, -1, 1, 0], r"binary targets must be 0 or 1"),
    ("binary", np.zeros((4, 2)), r"\(m,\) or \(m, 1\); got \(4, 2\)"),
    ("multilabel", [0, 1, 1, 0], r"\(m, 2\); got \(4,\)"),
    ("regression2", np.zeros((4, 3)), r"\(m, 2\); got \(4, 3\)"),
    ("regression2", np.full((4, 2), np.nan), r"finite"),
    ("regression2", np.zeros((5, 2)), r"5 rows but X has 4"),
])
def test_bad_targets_raise_clear_value_error(validation_modules, kind, Y, match):
    net = validation_modules[kind]
    params = net.init_params(seed=0, dtype=np.float64)
    X = np.zeros((4, net.LAYER_SIZES[0]))
    with pytest.raises(ValueError, match=match):
        net.loss(params, X, Y)
    with pytest.raises(ValueError, match=match):
        net.backward(params, net.forward(params, X), Y)
    with pytest.raises(ValueError, match=match):
        net.Trainer(epochs=1).fit(X, Y)


@pytest.mark.parametrize("X,match", [
    (np.zeros((4, 4)), r"X must have shape \(m, 5\), one example per row; got \(4, 4\)"),
    (np.zeros(5), r"for one example use X\[None, :\]"),
    (np.zeros(4), r"X must have shape \(m, 5\)"),
    (np.zeros((2, 5, 1)), r"X must have shape \(m, 5\)"),
])
def test_bad_inputs_raise_clear_value_error(validation_modules, X, match):
    net = validation_modules["classification"]
    params = net.init_params(seed=0)
    with pytest.raises(ValueError, match=match):
        net.forward(params, X)
    with pytest.raises(ValueError, match=match):
        net.predict(params, X)
    with pytest.raises(ValueError, match=match):
        net.loss(params, X, [0])


def test_trainer_refuses_bad_settings_and_params(validation_modules):
    net = validation_modules["classification"]
    with pytest.raises(ValueError, match="optimizer must be one of sgd, momentum"):
        net.Trainer(optimizer="adagrad")
    with pytest.raises(ValueError, match="learning_rate"):
        net.Trainer(learning_rate=0)
    with pytest.raises(ValueError, match="batch_size"):
        net.Trainer(batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        net.Trainer(epochs=-1)
    params = net.init_params()
    params["W2"] = params["W2"][:, :-1]
    with pytest.raises(ValueError, match=r"params\['W2'\] must have shape \(4, 6\)"):
        net.Trainer(params=params)
    params = net.init_params()
    del params["b3"]
    with pytest.raises(ValueError, match="no 'b3'"):
        net.Trainer(params=params)


# ----------------------------------------------------------------------------- the source

def _imports(source: str) -> set[tuple[str, tuple[str, ...]]]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(alias.name, ()) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.module or "", tuple(sorted(alias.name for alias in node.names))))
    return found


SOURCE_SPECS = [make_spec("relu", "softmax", loss="categorical_crossentropy", name="plain"),
                make_spec("gelu", "sigmoid", loss="binary_crossentropy", name="with_gelu"),
                make_spec("swish", "gelu", loss="mse", l1=0.1, l2=0.2, name="gelu_out")]


@pytest.mark.parametrize("spec", SOURCE_SPECS, ids=lambda s: s.name)
def test_render_is_deterministic_and_stamped(spec):
    first = render_module(derive(spec))
    second = render_module(derive(spec))
    assert first.encode() == second.encode()
    head = first.splitlines()[0]
    assert head.startswith(GENERATED_MARKER) and head.startswith("# Generated by backprop-derive")
    assert "do not edit" in head
    compile(first, f"{spec.name}.py", "exec")


def test_stamp_ignores_the_spec_path():
    text = "name: same\ninput: 2\nlayers:\n  - {units: 2, activation: relu}\n" \
           "  - {units: 1, activation: identity}\nloss: mse\n"
    a = render_module(derive(load_spec_text(text, "dir_a/x.yaml")))
    b = render_module(derive(load_spec_text(text, "dir_b/x.yaml")))
    assert a == b


def _example_sources():
    yield from ((p.stem, render_module(derive(load_spec(p))))
                for p in sorted((ROOT / "examples").glob("*.yaml")))
    for spec in SOURCE_SPECS:
        yield spec.name, render_module(derive(spec))


def test_module_imports_only_numpy_its_runtime_and_scipy_erf():
    """A module: NumPy, its folder's runtime and rules (importlib only to load them by path),
    SciPy's erf only for GELU.  The runtime: the standard library, NumPy, and SciPy's BLAS
    and numba only optionally."""
    loading = {("importlib.util", ()), ("pathlib", ())}
    for name, source in _example_sources():
        imports = _imports(source)
        uses_gelu = "gelu" in source.split("ACTIVATIONS = ", 1)[1].splitlines()[0]
        scipy = {imp for imp in imports if imp[0].startswith("scipy")}
        assert imports - scipy - loading - {("math", ()), ("functools", ())} == {
            ("numpy", ()), ("", ("_rules", "_runtime"))}, (name, imports)
        assert scipy == ({("scipy.special", ("erf",))} if uses_gelu else set()), (name, imports)
        assert "import numpy as np" in source
    runtime = _imports(render_runtime())
    assert runtime == {("__future__", ("annotations",)), ("hashlib", ()), ("json", ()), ("numpy", ()),
                       ("scipy.linalg", ("blas",)), ("numba", ()), ("time", ()),
                       ("importlib.util", ()), ("math", ()), ("os", ()), ("sys", ()), ("tempfile", ()),
                       ("pathlib", ()), ("zlib", ()), ("zipfile", ()), ("stat", ()),
                       ("warnings", ()), ("types", ()), ("functools", ()),
                       ("numba.core", ("caching", "config")), ("platform", ()),
                       ("numba", ("types",)), ("numba.extending", ("intrinsic",)),
                       ("llvmlite", ("ir",)), ("llvmlite", ("binding",)), ("ctypes", ()),
                       ("glob", ()), ("numba.extending", ("overload",)),
                       ("numba.np.linalg", ("_BLAS", "get_blas_kind"))}, runtime
    # zipfile, stat: model files read safely; types, functools: the kernels bound per rule;
    # numba.core.caching: kernels kept by module content; platform: the CPU a figure is of;
    # numba.extending, llvmlite (numba's own): the kernels' vectorised exp; ctypes, glob,
    # numba.np.linalg: the kernels' gemm, NumPy's BLAS by name (SciPy's where it is not found)
    guarded = render_runtime().split("try:", 1)[1].split("except ImportError", 1)[0]
    assert "from scipy.linalg import blas" in guarded


def test_module_works_without_scipy_blas(build, monkeypatch):
    """The one-example fast path falls back to NumPy when SciPy's BLAS is absent."""
    net = build(make_spec("relu", "softmax", loss="categorical_crossentropy", name="noblas"))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    with_blas = net.Trainer(optimizer="sgd", epochs=2, dtype=np.float64)
    with_blas.fit(X, y, track=False)
    monkeypatch.setattr(net._runtime, "_blas", None)
    without = net.Trainer(optimizer="sgd", epochs=2, dtype=np.float64)
    without.fit(X, y, track=False)
    for key in with_blas.params:
        np.testing.assert_allclose(with_blas.params[key], without.params[key], rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- trainer

def _blobs(n_per_class=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    X = np.concatenate([c + 0.6 * rng.standard_normal((n_per_class, 2)) for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    return X, y


@pytest.fixture(scope="module")
def blob_net(build):
    spec = make_spec("tanh", "softmax", loss="categorical_crossentropy", sizes=(2, 8, 3),
                     name="blobs", extra="training: {epochs: 15, learning_rate: 0.1, batch_size: 10}\n")
    return build(spec)


@pytest.mark.parametrize("batch_size,lr,steps", [("full", 0.5, 1), (1, 0.05, 90), (10, 0.2, 9)])
def test_trainer_variants_reduce_the_loss(blob_net, batch_size, lr, steps):
    X, y = _blobs()
    trainer = blob_net.Trainer(optimizer="sgd", batch_size=batch_size, learning_rate=lr,
                               epochs=15, seed=0)
    start = blob_net.loss(trainer.params, X, y)
    history = trainer.fit(X, y)
    assert history is trainer.history
    assert len(history["loss"]) == len(history["accuracy"]) == 15
    assert history["loss"][-1] < 0.5 * start
    assert history["loss"][-1] == pytest.approx(blob_net.loss(trainer.params, X, y), rel=1e-5)
    assert history["accuracy"][-1] >= 0.9
    assert history["val_loss"] == history["val_accuracy"] == []
    assert -(-90 // trainer.step_size(90)) == steps


def test_trainer_defaults_come_from_the_spec(blob_net):
    trainer = blob_net.Trainer()
    assert (trainer.epochs, trainer.learning_rate, trainer.batch_size) == (15, 0.1, 10)
    assert blob_net.TRAINING["epochs"] == 15
    assert trainer.dtype == np.float64 == blob_net.DTYPE


def test_trainer_is_deterministic(blob_net):
    X, y = _blobs()
    p0 = blob_net.init_params(seed=3, dtype=np.float64)

    def fit(seed, shuffle=True):
        trainer = blob_net.Trainer(params=p0, optimizer="sgd", learning_rate=0.1,
                                   batch_size=8, epochs=3, shuffle=shuffle, seed=seed)
        trainer.fit(X, y)
        return trainer.params

    a, b, c = fit(1), fit(1), fit(2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    # without shuffling the seed does not matter (params given explicitly)
    d, e = fit(1, shuffle=False), fit(2, shuffle=False)
    assert all(np.array_equal(d[k], e[k]) for k in d)
    # the Trainer copied p0 rather than updating it in place
    assert all(np.array_equal(p0[k], blob_net.init_params(seed=3, dtype=np.float64)[k]) for k in p0)


def test_trainer_history_with_validation_and_callback(blob_net):
    X, y = _blobs()
    seen = []
    trainer = blob_net.Trainer(epochs=4, seed=0)
    history = trainer.fit(X[::2], y[::2], validation=(X[1::2], y[1::2]),
                          callback=lambda epoch, record: seen.append((epoch, dict(record))))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 4, key
        assert all(isinstance(v, float) for v in history[key])
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1]["val_loss"] == history["val_loss"][-1]
    assert history["val_loss"][-1] == pytest.approx(blob_net.loss(trainer.params, X[1::2], y[1::2]))


def test_trainer_evaluate_matches_numpy(blob_net):
    X, y = _blobs()
    trainer = blob_net.Trainer(epochs=2, seed=0)
    trainer.fit(X, y)
    result = trainer.evaluate(X, y)
    assert set(result) == {"loss", "accuracy", "per_class_accuracy"}
    guess = np.argmax(blob_net.forward(trainer.params, X).output, axis=1)
    np.testing.assert_array_equal(trainer.predict(X), guess)
    assert result["loss"] == pytest.approx(blob_net.loss(trainer.params, X, y), rel=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean(guess == y))
    assert result["per_class_accuracy"] == pytest.approx(
        {c: np.mean(guess[y == c] == c) for c in range(3)})
    # one-hot targets give the same figures
    assert trainer.evaluate(X, np.eye(3)[y]) == result


def test_trainer_evaluate_binary_and_regression(build):
    rng = np.random.default_rng(10)
    binary = build(CONTRACT["binary"][0])
    trainer = binary.Trainer(epochs=1)
    X, t = rng.standard_normal((40, 4)), rng.integers(0, 2, 40)
    result = trainer.evaluate(X, t)
    out = binary.forward(trainer.params, X).output[:, 0]
    assert result["accuracy"] == pytest.approx(np.mean((out > 0.5) == t))
    assert result["per_class_accuracy"] == pytest.approx(
        {c: np.mean((out[t == c] > 0.5) == c) for c in (0, 1)})
    reg = build(CONTRACT["regression"][0])
    trainer = reg.Trainer(epochs=1)
    X, v = rng.standard_normal((40, 3)), rng.standard_normal(40)
    result = trainer.evaluate(X, v)
    assert result["accuracy"] is None and result["per_class_accuracy"] is None
    error = reg.predict(trainer.params, X) - v
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(error ** 2)))
    assert result["mae"] == pytest.approx(np.mean(np.abs(error)))
    assert result["r2"] == pytest.approx(1 - np.sum(error ** 2) / np.sum((v - v.mean()) ** 2))


def test_huge_learning_rate_raises_training_diverged(build):
    net = build(make_spec("identity", "identity", loss="mse", sizes=(3, 4, 2), name="diverge"))
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    trainer = net.Trainer(learning_rate=1e6, optimizer="sgd", batch_size="full", epochs=200, seed=0)
    with np.errstate(all="ignore"), pytest.raises(net.TrainingDiverged) as info:
        trainer.fit(X, Y)
    assert isinstance(info.value, FloatingPointError)
    message = str(info.value)
    assert "smaller learning_rate" in message and "1e+06" in message
    assert len(trainer.history["loss"]) < 200


def test_load_refuses_another_network(build, blob_net, tmp_path):
    other = build(CONTRACT["sparse"][0])
    path = tmp_path / "other.npz"
    other.Trainer(epochs=0).save(path)
    with pytest.raises(ValueError, match=r"holds a \[4, 5, 3\] network.*not this module's \[2, 8, 3\]"):
        blob_net.Trainer.load(path)
    # same sizes, other activations: refused too
    same_sizes = build(make_spec("relu", "softmax", loss="categorical_crossentropy",
                                 sizes=(2, 8, 3), name="blobs_relu"))
    path = tmp_path / "relu.npz"
    same_sizes.Trainer(epochs=0).save(path)
    with pytest.raises(ValueError, match="relu"):
        blob_net.Trainer.load(path)
    # same sizes and activations, another loss: refused too
    other_loss = build(make_spec("tanh", "softmax", loss="mse", sizes=(2, 8, 3),
                                 name="blobs_mse"))
    path = tmp_path / "mse.npz"
    other_loss.Trainer(epochs=0).save(path)
    with pytest.raises(ValueError, match=r"and mse, not this module's .* and categorical_crossentropy"):
        blob_net.Trainer.load(path)


def test_load_refuses_a_network_whose_functions_take_other_parameters(build, tmp_path):
    """Same sizes and function names, another leaky ReLU alpha or Huber delta: refused."""
    def net(alpha, delta, name):
        return build(make_spec(f"{{name: leaky_relu, alpha: {alpha}}}", "identity",
                               loss=f"{{name: huber, delta: {delta}}}", sizes=(2, 4, 1),
                               name=name))

    saved = net(0.1, 2.5, "params_a")
    path = tmp_path / "a.npz"
    saved.Trainer(epochs=0).save(path)
    saved.Trainer.load(path)  # its own module loads it
    for alpha, delta, name in ((0.2, 2.5, "params_b"), (0.1, 1.0, "params_c")):
        with pytest.raises(ValueError, match=r"functions take the parameters .*'alpha': 0\.1"):
            net(alpha, delta, name).Trainer.load(path)


# ----------------------------------------------------------------------------- digits

def test_digits_reaches_95_percent(build):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = make_spec("relu", "relu", "softmax", loss="categorical_crossentropy",
                     sizes=(64, 64, 32, 10), name="digits_mlp", dtype="float32")
    net = build(spec)
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    trainer = net.Trainer(optimizer="sgd", learning_rate=0.1, batch_size=32, epochs=30,
                          seed=0)
    history = trainer.fit(X_train, y_train, validation=(X_test, y_test))
    assert all(v.dtype == np.float32 for v in trainer.params.values())
    result = trainer.evaluate(X_test, y_test)
    assert result["accuracy"] >= 0.95, result
    assert history["val_accuracy"][-1] == result["accuracy"]
    assert min(result["per_class_accuracy"].values()) >= 0.75


def test_save_without_suffix_loads_back(build, tmp_path):
    net = build(make_spec("relu", "softmax", loss="categorical_crossentropy", name="suffix"))
    trainer = net.Trainer(epochs=0)
    written = trainer.save(tmp_path / "model")
    assert written.endswith("model.npz")
    again = net.Trainer.load(tmp_path / "model")
    assert all(np.array_equal(again.params[k], trainer.params[k]) for k in trainer.params)


def test_templates_are_compiled_once_per_process(monkeypatch):
    """Rendering a second module reuses the compiled templates (recompiling them cost 0.3 s of
    every spec the fuzzer generates)."""
    import jinja2

    from codegen.emit import render_module, render_rules
    from derive.derivation import derive
    from derive.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    derivation = derive(load_spec(root / "examples" / "seed003_multiclass.yaml"))
    render_module(derivation), render_rules(derivation)
    compiled = []
    original = jinja2.Environment.compile

    def counting(self, *args, **kwargs):
        compiled.append(args[1:2])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    render_module(derivation), render_rules(derivation)
    assert compiled == []
