"""Image kinds (conv2d, max_pool, avg_pool, flatten): the derived gradients equal torch.autograd's
for the same torch.nn network (Conv2d with stride and padding, MaxPool2d, AvgPool2d, Flatten,
Linear) in float64; the Trainer's step equals the functional backward; images given as
(m, C, H, W) or flat; a trained model answers one row as in a batch; the exact proof checks the
rules SymPy derived from the index form and refutes a planted wrong one; every misuse is a
located error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sympy as sp

from derive.errors import SpecError
from derive.layers import LAYER_KINDS
from derive.spec import load_spec_text

torch = pytest.importorskip("torch")

WORST: dict[str, float] = {}  # case -> worst relative difference to torch.autograd


def _spec(image, layers, name="cnn_net", loss="categorical_crossentropy", extra=""):
    body = "".join(f"  - {entry}\n" for entry in layers)
    return load_spec_text(f"name: {name}\ninput: {list(image)}\nlayers:\n{body}loss: {loss}\n"
                          f"dtype: float64\n{extra}")


def _torch_net(spec, params):
    """The torch.nn network of the same kinds (each kind's declared constructor), with our
    parameters copied in (PyTorch's shapes: nothing is reshaped)."""
    modules = []
    for l, layer in enumerate(spec.layers, start=1):
        kind = LAYER_KINDS[layer.kind]
        options = {o.key: o.default for o in kind.options} | layer.option_dict
        image = spec.image_in(l)
        options |= {"units": layer.units, "image": image, "n_in": spec.layer_sizes[l - 1]}
        module = eval(kind.torch.format(**options), {"torch": torch}).double()
        for ours, theirs in kind.torch_params:
            if f"{ours}{l}" in params:
                getattr(module, theirs).data = torch.tensor(np.ascontiguousarray(params[f"{ours}{l}"]))
        modules.append(module)
    return modules


def _torch_grads(spec, params, X, Y):
    modules = _torch_net(spec, params)
    a = torch.tensor(X.reshape((X.shape[0], *spec.image)))
    for layer, module in zip(spec.layers, modules):
        a = module(a)
        name = layer.activation.name
        if name not in ("identity", "softmax"):
            a = getattr(torch.nn.functional, name)(a)
    torch.nn.functional.cross_entropy(a, torch.tensor(Y)).backward()
    grads = {}
    for l, (layer, module) in enumerate(zip(spec.layers, modules), start=1):
        for ours, theirs in LAYER_KINDS[layer.kind].torch_params:
            if f"{ours}{l}" in params:
                grads[f"{ours}{l}"] = getattr(module, theirs).grad.numpy()
    return grads


# (image, layers): stride 1 and 2, padding 0 and 1, 1 and 3 channels, both pools, flatten
CASES = {
    "1ch_s1_p1_max": ((1, 6, 6), ["{kind: conv2d, filters: 2, kernel: 3, padding: 1, activation: relu}",
                                  "{kind: max_pool, size: 2}", "{kind: flatten}",
                                  "{units: 3, activation: softmax}"]),
    "3ch_s2_p1_avg": ((3, 7, 7), ["{kind: conv2d, filters: 4, kernel: 3, stride: 2, padding: 1, activation: tanh}",
                                  "{kind: avg_pool, size: 2}", "{kind: flatten}",
                                  "{units: 3, activation: softmax}"]),
    "3ch_s1_p0_two_convs": ((3, 6, 6), ["{kind: conv2d, filters: 3, kernel: 2, activation: sigmoid}",
                                        "{kind: conv2d, filters: 2, kernel: 2, stride: 2, padding: 1, activation: relu}",
                                        "{kind: max_pool, size: 3}", "{kind: flatten}",
                                        "{units: 4, activation: tanh}", "{units: 3, activation: softmax}"]),
    "1ch_s2_p0_no_bias": ((1, 9, 9), ["{kind: conv2d, filters: 2, kernel: 3, stride: 2, bias: false}",
                                      "{kind: avg_pool, size: 2}", "{kind: max_pool, size: 2}",
                                      "{kind: flatten}", "{units: 3, activation: softmax}"]),
}


@pytest.mark.parametrize("case", CASES)
def test_gradients_equal_torch_autograd(case, build):
    image, layers = CASES[case]
    spec = _spec(image, layers)
    net = build(spec)
    rng = np.random.default_rng(0)
    params = net.init_params(seed=1, dtype=np.float64)
    for key in params:
        params[key] = params[key] + 0.1 * rng.standard_normal(params[key].shape)
    X = rng.standard_normal((5, spec.input))
    Y = rng.integers(0, 3, 5)
    grads = net.backward(params, net.forward(params, X, training=True), Y)
    expected = _torch_grads(spec, params, X, Y)
    assert set(grads) == set(expected) == set(params)
    worst = 0.0
    for key in params:
        assert grads[key].shape == params[key].shape
        scale = max(np.abs(expected[key]).max(), 1e-12)
        worst = max(worst, float(np.abs(grads[key] - expected[key]).max() / scale))
    WORST[case] = worst
    print(f"{case}: worst relative difference to torch.autograd {worst:.1e}")
    assert worst < 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_preallocated_step_equals_the_functional_backward(dtype, build):
    image, layers = CASES["3ch_s1_p0_two_convs"]  # with penalties on the kernels
    net = build(_spec(image, layers, name="cnn_penalised",
                      extra="regularization: {l2: 0.01, l1: 0.001}\n"))
    rng = np.random.default_rng(0)
    # the Trainer's layout: column-major arrays (the step reads the kernels as views)
    params = {k: np.asfortranarray(v + 0.1 * rng.standard_normal(v.shape), dtype)
              for k, v in net.init_params(seed=1, dtype=dtype).items()}
    X = rng.standard_normal((7, net.LAYER_SIZES[0])).astype(dtype)
    Y = rng.integers(0, 3, 7)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    _, _, step = net.NETWORK.make_gradient(params, grads, 7, dtype)
    for _ in range(2):  # buffers reused: the second step gives the same
        step(X, net.targets(Y, 7, dtype), {}, None)
    expected = net.backward(params, net.forward(params, X, training=True), Y)
    tolerance = 1e-12 if dtype == np.float64 else 1e-4
    for key in params:
        scale = max(np.abs(expected[key]).max(), 1e-30)
        assert grads[key].dtype == dtype
        assert np.abs(grads[key] - expected[key]).max() / scale < tolerance, key


def test_images_as_four_axes_and_one_row_as_in_a_batch_after_training(build, tmp_path):
    image, layers = CASES["1ch_s1_p1_max"]
    net = build(_spec(image, layers))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 1, 6, 6)), rng.integers(0, 3, 40)
    trainer = net.Trainer(epochs=3, batch_size=8, seed=0, engine="auto")
    trainer.fit(X, Y)
    np.testing.assert_array_equal(trainer.predict_proba(X), trainer.predict_proba(X.reshape(40, -1)))
    path = trainer.save(tmp_path / "model.npz")
    loaded = net.Trainer.load(path)
    batch = loaded.predict_proba(X)
    rows = np.vstack([loaded.predict_proba(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(rows, batch, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(batch, trainer.predict_proba(X))
    with pytest.raises(ValueError, match=r"or \(m, 1, 6, 6\) images"):
        net.predict(trainer.params, np.zeros((2, 1, 5, 6)))
    with pytest.raises(ValueError, match="not printed for these layer kinds"):
        net.Trainer(engine="compiled")  # the NumPy engine only, as for every kind
    # a fresh process loads the model file and answers each row as in the batch
    import subprocess
    import sys

    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "batch.npy", batch)
    script = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('cnn_fresh', {net.__file__!r})\n"
        "net = importlib.util.module_from_spec(spec); spec.loader.exec_module(net)\n"
        f"trainer = net.Trainer.load({str(path)!r})\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r}); batch = np.load({str(tmp_path / 'batch.npy')!r})\n"
        "rows = np.vstack([trainer.predict_proba(X[i:i + 1]) for i in range(len(X))])\n"
        "np.testing.assert_allclose(rows, batch, rtol=1e-12, atol=1e-15)\n"
        "print('fresh process: rows as in the batch')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_weights_load_into_torch_unchanged(build):
    image, layers = CASES["3ch_s2_p1_avg"]
    spec = _spec(image, layers)
    net = build(spec)
    params = net.init_params(seed=3, dtype=np.float64)
    assert params["W1"].shape == (4, 3, 3, 3) and params["b1"].shape == (4,)
    X = np.random.default_rng(1).standard_normal((4, spec.input))
    modules = _torch_net(spec, params)
    a = torch.tensor(X.reshape(4, *spec.image))
    for layer, module in zip(spec.layers, modules):
        a = module(a)
        if layer.activation.name == "tanh":
            a = torch.tanh(a)
    np.testing.assert_allclose(net.predict_proba(params, X), torch.softmax(a, 1).detach().numpy(),
                               rtol=1e-12)


# ----------------------------------------------------------------------------- the proof

def _proof_spec():
    """1 channel 4x4, 2 filters 2x2 -> 2x3x3, then a stride-2 padded convolution -> 2x2x2
    (every conv rule with and without stride and padding) and a max pool -> 2x1x1."""
    return _spec((1, 4, 4), ["{kind: conv2d, filters: 2, kernel: 2, activation: tanh}",
                             "{kind: conv2d, filters: 2, kernel: 2, stride: 2, padding: 1}",
                             "{kind: max_pool, size: 2}", "{kind: flatten}",
                             "{units: 2, activation: softmax}"], name="cnn_proof")


def test_the_rules_are_derived_from_the_index_form():
    """The input gradient is the full correlation of delta with the flipped kernel, the weight
    gradient the correlation of the input with delta: as SymPy derived them."""
    from derive.indexform import ARRAYS, INDEX, SIZES, max_routes_to_first_maximum, rule

    S, A = SIZES, ARRAYS
    n, c, u, v = (sp.Symbol(x + "'", integer=True, nonnegative=True) for x in "ncuv")
    expr, free = rule("conv_input")
    f, i, j = INDEX.f, INDEX.i, INDEX.j
    assert free == (n, c, u, v)
    assert expr.function.args[0].expr == A.W[f, c, u + S.P - S.s * i, v + S.P - S.s * j] * A.delta[n, f, i, j]
    expr, _ = rule("conv_weight")
    p, q = (sp.Symbol(x + "'", integer=True, nonnegative=True) for x in "pq")
    assert expr.function == A.a[INDEX.n, c, S.s * i + p - S.P, S.s * j + q - S.P] * A.delta[INDEX.n, sp.Symbol("f'", integer=True, nonnegative=True), i, j]
    assert max_routes_to_first_maximum()


def test_the_exact_proof_checks_every_rule_and_refutes_a_planted_wrong_one():
    from derive.derivation import derive
    from derive.proof import prove_kinds

    derivation = derive(_proof_spec())
    rules = {st.op for st in derivation.backward}
    assert {"conv_input", "conv_weight", "conv_bias", "max_pool_input"} <= rules
    report = prove_kinds(derivation, points=1, examples=2)
    assert report.ok, report.summary()
    # the kernel transposed (W[f, c, q, p] read for W[f, c, p, q]) in the input gradient
    def transposed(e):
        return sp.Indexed(e.base, *e.indices[:2], e.indices[3], e.indices[2])

    wrong = [dataclasses.replace(st, expr=st.expr.replace(
        lambda e: isinstance(e, sp.Indexed) and str(e.base) == "W", transposed))
        if st.op == "conv_input" else st for st in derivation.backward]
    assert wrong != list(derivation.backward)
    report = prove_kinds(dataclasses.replace(derivation, backward=tuple(wrong)), points=1,
                         examples=2)
    assert not report.ok and "dW1" in report.wrong_quantities


def test_avg_pool_rule_planted_wrong_is_refuted():
    from derive.derivation import derive
    from derive.proof import prove_kinds

    derivation = derive(_spec((1, 4, 4), ["{kind: conv2d, filters: 1, kernel: 1}",
                                          "{kind: avg_pool, size: 2}", "{kind: flatten}",
                                          "{units: 2, activation: softmax}"], name="avg_proof"))
    assert prove_kinds(derivation, points=1, examples=2).ok
    wrong = tuple(dataclasses.replace(st, expr=st.expr * 2) if st.op == "avg_pool_input" else st
                  for st in derivation.backward)
    report = prove_kinds(dataclasses.replace(derivation, backward=wrong), points=1, examples=2)
    assert not report.ok and "dW1" in report.wrong_quantities


def test_claims_name_the_quantities_of_an_image_stack():
    """W1 is the (F, C k^2) matrix of the kernel, Z1/A1/dA1 the flat NCHW rows as columns; a
    claim about the dense layer after flatten is proven, its slip (no 1/m) refuted."""
    from derive.claims import check_claims, load_claims_text
    from derive.derivation import derive

    spec = _spec((1, 4, 4), ["{kind: conv2d, filters: 2, kernel: 2, padding: 1, activation: relu}",
                             "{kind: max_pool, size: 1}", "{kind: flatten}",
                             "{units: 3, activation: softmax}"], name="cnn_claims")
    report = check_claims(derive(spec), load_claims_text(
        'claims:\n  - claim: "dW4 = (1/m) delta4 A3^T"\n'
        '  - {claim: "dW4 = delta4 A3^T", expect: false}\n'
        '  - {claim: "db1 = 2 db1", expect: false}\n'))
    assert report.ok, report.summary()
    assert "W1 = [[" in report.summary()  # the kernel shown as its (F, C k^2) matrix


# ----------------------------------------------------------------------------- the spec

def _error(image, layers) -> SpecError:
    with pytest.raises(SpecError) as info:
        _spec(image, layers)
    return info.value


DENSE_OUT = "{units: 3, activation: softmax}"


@pytest.mark.parametrize("image, layers, field, words", [
    ((1, 4, 4), ["{kind: conv2d, filters: 2, kernel: 7}", "{kind: flatten}", DENSE_OUT],
     "layers[0].kernel", "larger than its input"),
    ((1, 6, 6), ["{kind: max_pool, size: 4}", "{kind: flatten}", DENSE_OUT],
     "layers[0].size", "does not divide"),
    ((1, 6, 6), ["{units: 4}", DENSE_OUT], "layers[0]", "add {kind: flatten}"),
    ((1, 6, 6), ["{kind: batch_norm}", "{kind: flatten}", DENSE_OUT], "layers[0].kind",
     "takes a flat vector"),
    ((1, 6, 6), ["{kind: flatten}", "{kind: conv2d, filters: 2, kernel: 3}", DENSE_OUT],
     "layers[1].kind", "flattened below"),
    ((1, 6, 6), ["{kind: conv2d, filters: 0, kernel: 3}", "{kind: flatten}", DENSE_OUT],
     "layers[0].filters", "from 1 to 4096"),
    ((1, 6, 6), ["{kind: conv2d, kernel: 3}", "{kind: flatten}", DENSE_OUT],
     "layers[0].filters", "missing required key"),
    ((1, 6, 6), ["{kind: conv2d, filters: 2, kernel: 3, padding: 3}", "{kind: flatten}",
                 DENSE_OUT], "layers[0].padding", "not smaller than the kernel"),
    ((1, 6, 6), ["{kind: conv2d, filters: 2, kernel: 3}", DENSE_OUT], "layers[1]",
     "add {kind: flatten}"),
])
def test_misuse_is_a_located_error(image, layers, field, words):
    err = _error(image, layers)
    assert err.field == field and err.line is not None, (err.field, err.message)
    assert words in err.message + (err.hint or ""), err.message


@pytest.mark.parametrize("value, words", [
    ("[1, 8]", "three whole numbers"), ("[1, 0, 8]", "from 1 to 4096"),
    ("[1, 8, x]", "from 1 to 4096"), ("[1000, 1000, 1000]", "more than"),
])
def test_a_malformed_image_input_is_a_located_error(value, words):
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: n\ninput: {value}\nlayers:\n  - {{kind: flatten}}\n"
                       f"  - {DENSE_OUT}\nloss: categorical_crossentropy\n")
    assert info.value.field.startswith("input") and info.value.line == 2
    assert words in info.value.message + (info.value.hint or ""), info.value.message


def test_an_image_that_does_not_fit_the_data_is_refused():
    from derive.errors import DataError
    from derive.training.data import load_dataset
    from derive.training.prepare import check_fits

    spec = load_spec_text("name: n\ninput: [1, 8, 12]\nlayers:\n  - {kind: flatten}\n"
                          f"  - {DENSE_OUT.replace('3', '10')}\nloss: categorical_crossentropy\n"
                          "data: {dataset: digits}\n")
    with pytest.raises(DataError, match=r"input is \[1, 8, 12\] = 96 \(give input: \[C, H, W\] "
                                        r"with C·H·W = 64\)"):
        check_fits(spec, "classification", load_dataset("digits"))


def test_a_conv_on_a_flat_input_is_refused():
    with pytest.raises(SpecError) as info:
        load_spec_text("name: n\ninput: 36\nlayers:\n  - {kind: conv2d, filters: 2, kernel: 3}\n"
                       f"  - {DENSE_OUT}\nloss: categorical_crossentropy\n")
    assert "takes an image" in info.value.message and "input: [C, H, W]" in info.value.hint


# ----------------------------------------------------------------------------- backends

BACKEND_SPEC = ((3, 8, 8), [
    "{kind: conv2d, filters: 4, kernel: 3, padding: 1, activation: relu}",
    "{kind: avg_pool, size: 2}",
    "{kind: conv2d, filters: 2, kernel: 3, stride: 2, padding: 1, activation: tanh}",
    "{kind: max_pool, size: 2}", "{kind: flatten}", "{units: 3, activation: softmax}"])


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from codegen.emit import write_backend, write_module
    from codegen.files import import_module_from
    from derive.derivation import derive

    spec = _spec(*BACKEND_SPEC, name="cnn_backends", extra="regularization: {l2: 0.01}\n")
    folder = tmp_path_factory.mktemp("cnn_backends")
    derivation = derive(spec)
    modules = {"numpy": import_module_from(write_module(derivation, folder))}
    for backend in ("torch", "jax"):
        modules[backend] = import_module_from(write_backend(derivation, backend, folder))
    rng = np.random.default_rng(0)
    net = modules["numpy"]
    params = {k: v + 0.1 * rng.standard_normal(v.shape)
              for k, v in net.init_params(seed=1, dtype=np.float64).items()}
    X, Y = rng.standard_normal((5, spec.input)), rng.integers(0, 3, 5)
    expected = net.backward(params, net.forward(params, X, training=True), Y)
    return modules, params, X, Y, expected, net.loss(params, X, Y)


def _worst(got, expected):
    return max(float(np.abs(np.asarray(got[k], np.float64) - v).max() / np.abs(v).max())
               for k, v in expected.items())


def test_torch_backend_gives_the_derived_gradients(backends):
    modules, params, X, Y, expected, J = backends
    module = modules["torch"]
    model = module.Network.from_numpy(params, dtype=torch.float64)
    loss = module.loss(model, torch.from_numpy(X.reshape(5, 3, 8, 8)), torch.from_numpy(Y))
    loss.backward()
    assert abs(loss.item() - J) < 1e-12 * abs(J)
    worst = _worst({k: p.grad.numpy() for k, p in model.named_parameters()}, expected)
    print(f"torch backend vs numpy backward: worst relative difference {worst:.1e}")
    assert worst < 1e-10


def test_jax_backend_gives_the_derived_gradients(backends):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        modules, params, X, Y, expected, J = backends
        module = modules["jax"]
        jparams = module.from_numpy(params, jnp.float64)
        value, grads = jax.jit(jax.value_and_grad(module.loss))(jparams, X, Y)
        assert abs(float(value) - J) < 1e-12 * abs(J)
        worst = _worst(grads, expected)
        print(f"jax backend vs numpy backward: worst relative difference {worst:.1e}")
        assert worst < 1e-10
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("gather", [True, False], ids=["gathered-by-BLAS", "strided"])
def test_both_ways_of_the_runtime_equal_torch(gather):
    """The runtime's two ways of reaching an image's windows (the 0/1 gather matrix for small
    images, strided views and one pass per kernel offset for large ones) against torch."""
    from codegen import runtime

    rng = np.random.default_rng(0)
    F_ = torch.nn.functional
    for C, H, W, F, k, s, P in [(1, 6, 6, 2, 3, 1, 1), (3, 7, 7, 4, 3, 2, 1), (2, 5, 6, 3, 2, 1, 0)]:
        m, window = 3, (C, H, W, F, k, s, P)
        a, b = rng.standard_normal((m, C * H * W)), rng.standard_normal(F)
        Wk = np.asfortranarray(rng.standard_normal((F, C, k, k)))
        conv = runtime.Conv2d(window, m, np.float64, gather=gather)
        Ho, Wo = (H + 2 * P - k) // s + 1, (W + 2 * P - k) // s + 1
        z = conv.forward(a, Wk, b, np.empty((m, F * Ho * Wo)))
        ta, tW, tb = (torch.tensor(x, requires_grad=True) for x in
                      (a.reshape(m, C, H, W), np.ascontiguousarray(Wk), b))
        tz = F_.conv2d(ta, tW, tb, stride=s, padding=P)
        d = rng.standard_normal(z.shape)
        tz.backward(torch.tensor(d.reshape(tz.shape)))
        np.testing.assert_allclose(z, tz.detach().numpy().reshape(m, -1), atol=1e-12)
        np.testing.assert_allclose(conv.input_grad(d, Wk, np.empty_like(a)),
                                   ta.grad.numpy().reshape(m, -1), atol=1e-12)
        np.testing.assert_allclose(conv.weight_grad(d, np.empty((F, C, k, k), order="F")),
                                   tW.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(conv.bias_grad(d, np.empty(F)), tb.grad.numpy(), atol=1e-12)
    for how, pool in (("max", F_.max_pool2d), ("avg", F_.avg_pool2d)):
        for size in (2, 3):
            m, window = 2, (3, 6, 6, 3, size, size, 0)
            a = rng.standard_normal((m, 108))
            a[0, :4] = 1.0  # ties: the first maximum takes the error, as in torch
            layer = runtime.Pool2d(window, m, np.float64, how, gather=gather)
            z = layer.forward(a, np.empty((m, 3 * (6 // size) ** 2)))
            ta = torch.tensor(a.reshape(m, 3, 6, 6), requires_grad=True)
            tz = pool(ta, size)
            d = rng.standard_normal(z.shape)
            tz.backward(torch.tensor(d.reshape(tz.shape)))
            np.testing.assert_allclose(z, tz.detach().numpy().reshape(m, -1), atol=1e-12)
            np.testing.assert_allclose(layer.input_grad(d, np.empty_like(a)),
                                       ta.grad.numpy().reshape(m, -1), atol=1e-12)
