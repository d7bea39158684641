"""The torch and JAX backends of stacks of layer kinds (codegen.graph_backends): for every kind
of ``LAYER_KINDS`` between dense layers, and all of them under a skip, the derived gradients of
each backend's ``loss`` (a torch.autograd.Function / a jax.custom_vjp printing the derivation's
backward) equal, in float64 to 1e-10 relative, the NumPy module's ``backward`` and
torch.autograd of the same network built from torch.nn (BatchNorm1d in training mode,
LayerNorm, the skip, Dropout with the same mask); the running statistics move as torch's;
train/eval switch batch statistics and dropout; parameters and state convert to and from the
NumPy dicts.  Skipped when torch or jax is not installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codegen.emit import render_backend, write_backend
from codegen.files import import_module_from
from derive.derivation import derive
from derive.layers import LAYER_KINDS
from test_layer_kinds import _kind_entry, _spec, _torch_grads

RTOL = 1e-10
# the image kinds (conv2d, pools, flatten) need an image input: tests/test_conv_kinds.py
KINDS = [name for name in LAYER_KINDS if name != "dense" and LAYER_KINDS[name].image != "image"]
# each kind alone between dense layers (the first without bias), then every kind under a skip;
# one regularised, so the penalties' gradient terms are printed too
CASES = [pytest.param([_kind_entry(name)], "categorical_crossentropy", "softmax", {}, id=name)
         for name in KINDS]
CASES += [pytest.param([_kind_entry(name) for name in KINDS]
                       + ["{units: 4, activation: sigmoid, skip: 1}"], "mse", "identity", {},
                       id="all-kinds-skip"),
          pytest.param([_kind_entry("batch_norm"), _kind_entry("dropout")],
                       "categorical_crossentropy", "softmax", {"l1": 0.01, "l2": 0.02},
                       id="batch_norm-dropout-l1l2")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """spec -> {"numpy", "torch", "jax": module}, written and imported once per spec."""
    cache = {}

    def get(spec):
        if spec not in cache:
            folder = tmp_path_factory.mktemp(spec.name)
            derivation = derive(spec)
            paths = {b: write_backend(derivation, b, folder) for b in ("torch", "jax")}
            cache[spec] = {"numpy": import_module_from(folder / f"{spec.name}.py"),
                           **{b: import_module_from(p) for b, p in paths.items()}}
        return cache[spec]
    return get


@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", previous)


def _case(middle, loss, out, reg):
    spec = _spec(middle, loss, out)
    if reg:
        from dataclasses import replace

        spec = replace(spec, regularization=replace(spec.regularization, **reg))
    return spec


def _data(net, loss, m=6, seed=0):
    rng = np.random.default_rng(seed)
    params = net.init_params(seed=1, dtype=np.float64)
    for key in params:  # off their initial values, so every term of the backward counts
        params[key] = params[key] + 0.1 * rng.standard_normal(params[key].shape)
    X = rng.standard_normal((m, 3))
    Y = rng.integers(0, 3, m) if loss != "mse" else rng.standard_normal((m, 3))
    return params, X, Y


def _max_rel(got: dict, expected: dict) -> float:
    worst = 0.0
    for key, value in expected.items():
        value = np.asarray(value, dtype=np.float64)
        scale = max(float(np.max(np.abs(value))), 1e-300)
        worst = max(worst, float(np.max(np.abs(np.asarray(got[key], np.float64) - value))) / scale)
    return worst


def _numpy_reference(net, params, X, Y):
    """The NumPy module's training forward (its own masks), backward and moved state."""
    state = net.init_state(np.float64)
    cache = net.forward(params, X, training=True, state=state, rng=np.random.default_rng(2))
    T = net.targets(Y, len(X), np.float64)
    J = net.objective(params, cache, T)
    return cache, net.backward(params, cache, Y), state, J


@pytest.mark.parametrize("middle, loss, out, reg", CASES)
def test_torch_gradients_equal_numpy_and_torch_nn(written, middle, loss, out, reg):
    torch = pytest.importorskip("torch")
    spec = _case(middle, loss, out, reg)
    modules = written(spec)
    net, module = modules["numpy"], modules["torch"]
    params, X, Y = _data(net, loss)
    cache, expected, state, J_numpy = _numpy_reference(net, params, X, Y)
    masks = {key: cache.saved[key] for key, *_ in module.MASKS}
    model = module.Network.from_numpy(params, dtype=torch.float64)
    assert [key for key, _ in model.named_parameters()] == list(module.KEYS) == list(params)
    J = module.loss(model, torch.from_numpy(X), torch.from_numpy(Y), masks=masks)
    J.backward()
    derived = {key: p.grad.numpy() for key, p in model.named_parameters()}
    assert math.isclose(J.item(), J_numpy, rel_tol=1e-12)
    assert _max_rel(derived, expected) < RTOL
    print(f"\ntorch vs numpy backward: worst relative difference {_max_rel(derived, expected):.1e}")
    if not reg:  # torch.nn's own network (its loss has no penalty terms)
        autograd, modules_nn = _torch_grads(spec, params, X, Y, cache, loss)
        assert _max_rel(derived, autograd) < RTOL
        print(f"torch vs torch.nn autograd: worst relative difference "
              f"{_max_rel(derived, autograd):.1e}")
        for l, nn_module in enumerate(modules_nn, start=1):
            for key in ("running_mean", "running_var"):
                if f"{key}{l}" in state:
                    np.testing.assert_allclose(getattr(model, f"{key}{l}").numpy(),
                                               getattr(nn_module, key).numpy(), rtol=1e-12)
    moved = model.state_to_numpy()
    assert set(moved) == set(state)
    assert _max_rel(moved, state) < 1e-12


@pytest.mark.parametrize("middle, loss, out, reg", CASES)
def test_jax_gradients_equal_numpy_and_torch_nn(written, jax64, middle, loss, out, reg):
    jax = jax64
    import jax.numpy as jnp

    spec = _case(middle, loss, out, reg)
    modules = written(spec)
    net, module = modules["numpy"], modules["jax"]
    params, X, Y = _data(net, loss)
    cache, expected, state, J_numpy = _numpy_reference(net, params, X, Y)
    masks = {key: cache.saved[key] for key, *_ in module.MASKS}
    jparams = module.from_numpy(params, jnp.float64)
    grad = jax.jit(jax.value_and_grad(module.loss_and_state, has_aux=True))
    (J, moved), derived = grad(jparams, module.init_state(jnp.float64), X, Y, masks=masks)
    assert math.isclose(float(J), J_numpy, rel_tol=1e-12)
    assert _max_rel(derived, expected) < RTOL
    assert _max_rel(jax.grad(module.loss)(jparams, X, Y, masks=masks), expected) < RTOL
    print(f"\njax vs numpy backward: worst relative difference {_max_rel(derived, expected):.1e}")
    if not reg:
        pytest.importorskip("torch")
        autograd, _ = _torch_grads(spec, params, X, Y, cache, loss)
        assert _max_rel(derived, autograd) < RTOL
        print(f"jax vs torch.nn autograd: worst relative difference "
              f"{_max_rel(derived, autograd):.1e}")
    assert set(moved) == set(state) and _max_rel(moved, state) < 1e-12


def _covering():
    """Every element-wise activation on a normalisation (batch norm and layer norm in turn),
    the losses in turn at the output (under the output activation each takes)."""
    from conftest import _flow_value, loss_value
    from derive.activations import ACTIVATIONS
    from derive.losses import LOSSES

    output = {"categorical": "softmax", "sparse": "softmax", "binary": "sigmoid"}
    losses = list(LOSSES)
    cases = []
    for i, name in enumerate(n for n in ACTIVATIONS if not ACTIVATIONS[n].vector):
        loss = losses[i % len(losses)]
        kind = ("batch_norm", "layer_norm")[i % 2]
        act = _flow_value(name, ACTIVATIONS[name].params)
        out = output.get(LOSSES[loss].labels, "identity")
        cases.append(pytest.param(f"{{kind: {kind}, activation: {act}}}", loss_value(loss), out,
                                  id=f"{kind}-{name}-{loss}"))
    return cases


@pytest.mark.parametrize("entry, loss, out", _covering())
def test_every_activation_and_loss_on_a_normalisation(written, jax64, entry, loss, out):
    """Both backends' derived gradients equal the NumPy module's backward (float64, 1e-10)."""
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    spec = _spec([entry, _kind_entry("dropout")], loss, out)
    modules = written(spec)
    net = modules["numpy"]
    params, X, _ = _data(net, "mse")
    rng = np.random.default_rng(5)
    Y = {"classification": lambda: rng.integers(0, 3, 6),
         "binary": lambda: rng.integers(0, 2, (6, 3)).astype(np.float64)}.get(
        net.TASK, lambda: rng.standard_normal((6, 3)))()
    cache, expected, _, J_numpy = _numpy_reference(net, params, X, Y)
    masks = {key: cache.saved[key] for key, *_ in modules["torch"].MASKS}
    model = modules["torch"].Network.from_numpy(params, dtype=torch.float64)
    J = modules["torch"].loss(model, torch.from_numpy(X), torch.from_numpy(Y), masks=masks)
    J.backward()
    assert math.isclose(J.item(), J_numpy, rel_tol=1e-12)
    assert _max_rel({k: p.grad.numpy() for k, p in model.named_parameters()}, expected) < RTOL
    jax_module = modules["jax"]
    J, grads = jax64.value_and_grad(jax_module.loss)(jax_module.from_numpy(params, jnp.float64),
                                                     X, Y, masks=masks)
    assert math.isclose(float(J), J_numpy, rel_tol=1e-12)
    assert _max_rel(grads, expected) < RTOL


def test_a_kind_declared_only_prints_in_both_backends(tmp_path, jax64):
    """A fifth kind (z = γ ∘ a), declared in a test and nowhere else: both backends print it
    from its statements, and their derived gradients equal the NumPy module's backward."""
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from derive.layers import INPUT, OUTPUT, LayerKind, Let, Param, gamma

    scale = LayerKind(name="scale", title="scale", options=(),
                      params=(Param(gamma, lambda n_in, n: (n,), "ones"),),
                      forward=lambda o: (Let(OUTPUT, gamma * INPUT),))
    with LAYER_KINDS.temporarily("scale", scale):
        spec = _spec(["{kind: scale, activation: tanh}"])
        derivation = derive(spec)
        paths = {b: write_backend(derivation, b, tmp_path) for b in ("torch", "jax")}
        net = import_module_from(tmp_path / f"{spec.name}.py")
        params, X, Y = _data(net, "categorical_crossentropy")
        _, expected, _, _ = _numpy_reference(net, params, X, Y)
        assert "gamma2" in expected
        module = import_module_from(paths["torch"])
        model = module.Network.from_numpy(params, dtype=torch.float64)
        module.loss(model, torch.from_numpy(X), torch.from_numpy(Y)).backward()
        assert _max_rel({k: p.grad.numpy() for k, p in model.named_parameters()}, expected) < RTOL
        module = import_module_from(paths["jax"])
        grads = jax64.grad(module.loss)(module.from_numpy(params, jnp.float64), X, Y)
        assert _max_rel(grads, expected) < RTOL
        with pytest.raises(NotImplementedError, match="layer kind scale"):
            model.torch_nn()


# ----------------------------------------------------------------------------- torch modes

ALL = _spec([_kind_entry(name) for name in KINDS] + ["{units: 4, activation: sigmoid, skip: 1}"])


def test_torch_train_and_eval_modes(written):
    torch = pytest.importorskip("torch")
    net, module = written(ALL)["numpy"], written(ALL)["torch"]
    params, X, Y = _data(net, "categorical_crossentropy", m=8)
    state = net.init_state(np.float64)
    for key in state:
        state[key] = state[key] + np.linspace(0.1, 0.4, state[key].size)  # not the initial ones
    model = module.Network.from_numpy(params, state, dtype=torch.float64)
    assert [key for key, _ in model.named_buffers()] == [key for key, *_ in module.STATE]
    Xt = torch.from_numpy(X)
    # eval: the running statistics, no dropout, nothing moved; a row as in its batch
    model.eval()
    out = model(Xt).detach().numpy()
    np.testing.assert_allclose(out, net.forward(params, X, state=state).output, rtol=1e-12)
    np.testing.assert_allclose(model(Xt[:1]).detach().numpy(), out[:1], rtol=1e-12)
    assert _max_rel(model.state_to_numpy(), state) == 0
    J = module.loss(model, Xt, torch.from_numpy(Y))
    assert math.isclose(J.item(), net.loss(params, X, Y, state), rel_tol=1e-12)
    with pytest.raises(RuntimeError, match="call model.train()"):
        J.backward()
    # train: batch statistics and a mask drawn from the module's generator; the running ones move
    model.train()
    first = model(Xt).detach()
    assert _max_rel(model.state_to_numpy(), state) > 1e-3
    assert not torch.equal(first, model(Xt).detach())  # another mask
    again = module.Network.from_numpy(params, state, dtype=torch.float64)
    torch.testing.assert_close(again(Xt), first, rtol=0, atol=0)  # the same seed, the same mask
    other = module.Network.from_numpy(params, state, dtype=torch.float64, seed=1)
    assert not torch.equal(other(Xt).detach(), first)
    with pytest.raises(ValueError, match="at least 2 examples"):
        model(Xt[:1])
    with pytest.raises(ValueError, match=r"masks\['mask4'\] must have shape \(8, 4\)"):
        module.loss(model, Xt, torch.from_numpy(Y), masks={"mask4": np.ones((2, 4))})
    with pytest.raises(ValueError, match="masks has no 'mask4'"):
        module.loss(model, Xt, torch.from_numpy(Y), masks={})


def test_torch_nn_modules_compute_the_same(written):
    """``model.torch_nn()``: the layers as torch.nn modules holding the same arrays; composed
    with the skip and the activations they give the module's output, in eval and train mode
    (dropout left out: the masks differ), and the running statistics move alike."""
    torch = pytest.importorskip("torch")
    from test_layer_kinds import _torch_activation

    spec = _spec([_kind_entry("batch_norm"), _kind_entry("layer_norm"),
                  "{units: 4, activation: sigmoid, skip: 1}"])
    net, module = written(spec)["numpy"], written(spec)["torch"]
    params, X, _ = _data(net, "categorical_crossentropy", m=8)
    Xt = torch.from_numpy(X)

    def composed(layers):
        A = [Xt]
        for layer, nn_module in zip(spec.layers, layers):
            z = nn_module(A[-1])
            if layer.skip is not None:
                z = z + A[layer.skip]
            act = layer.activation.name
            vector = z.shape[1] > 1 and act == spec.layers[-1].activation.name
            A.append(torch.softmax(z, dim=1) if vector and layer is spec.layers[-1]
                     else _torch_activation(act)(z))
        return A[-1]

    for mode in ("eval", "train"):
        model = module.Network.from_numpy(params, dtype=torch.float64)
        getattr(model, mode)()
        layers = model.torch_nn()
        assert layers.training == (mode == "train")
        torch.testing.assert_close(composed(layers), model(Xt), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layers[1].running_var, model.running_var2, rtol=1e-12,
                                   atol=0)


def test_torch_round_trip_model_file_and_optim(written, tmp_path):
    torch = pytest.importorskip("torch")
    net, module = written(ALL)["numpy"], written(ALL)["torch"]
    rng = np.random.default_rng(4)
    X = rng.standard_normal((48, 3))
    Y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)  # learnable classes
    trainer = net.Trainer(epochs=2, batch_size=8, seed=0, dtype="float64")
    trainer.fit(X, Y)
    model = module.Network.load(trainer.save(tmp_path / "model.npz"), dtype=torch.float64)
    assert _max_rel(model.to_numpy(), trainer.params) == 0
    assert _max_rel(model.state_to_numpy(), trainer.layer_state) == 0
    back = module.Network.from_numpy(model.to_numpy(), model.state_to_numpy(), torch.float64)
    for key in (*module.KEYS, *(key for key, *_ in module.STATE)):
        assert torch.equal(getattr(back, key), getattr(model, key))
    model.eval()
    np.testing.assert_allclose(model(torch.from_numpy(X)).detach().numpy(),
                               trainer.predict_proba(X), rtol=1e-12)
    with pytest.raises(ValueError, match=r"params\['gamma2'\] must have shape \(4,\)"):
        module.Network.from_numpy({**trainer.params, "gamma2": np.ones(3)})
    with pytest.raises(ValueError, match="state has no 'running_var2'"):
        module.Network.from_numpy(trainer.params, {"running_mean2": np.zeros(4)})
    # torch.optim through the derived backward lowers J
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    model.eval()
    with torch.no_grad():
        before = module.loss(model, Xt, Yt).item()
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        module.loss(model, Xt, Yt).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert module.loss(model, Xt, Yt).item() < 0.8 * before


# ----------------------------------------------------------------------------- jax modes

def test_jax_modes_jit_and_scan_epoch(written, jax64):
    jax = jax64
    import jax.numpy as jnp

    net, module = written(ALL)["numpy"], written(ALL)["jax"]
    params, X, Y = _data(net, "categorical_crossentropy", m=8)
    state = {key: value + 0.2 for key, value in net.init_state(np.float64).items()}
    jparams, jstate = module.from_numpy(params, jnp.float64), module.state_from_numpy(state,
                                                                                      jnp.float64)
    assert list(module.init_params(seed=1, dtype=jnp.float64)) == list(net.init_params(seed=1))
    # not training: the running statistics, no dropout; a row as in its batch
    out = jax.jit(module.forward)(jparams, X, state=jstate)
    np.testing.assert_allclose(out, net.forward(params, X, state=state).output, rtol=1e-12)
    np.testing.assert_allclose(module.forward(jparams, X[:1], state=jstate), out[:1], rtol=1e-12)
    assert math.isclose(float(module.evaluate(jparams, jstate, X, Y)),
                        net.loss(params, X, Y, state), rel_tol=1e-12)
    # training: (output, new state), masks by the key
    key = jax.random.key(3)
    a, moved = module.forward(jparams, X, training=True, state=jstate, rng=key)
    b, _ = module.forward(jparams, X, training=True, state=jstate, rng=key)
    c, _ = module.forward(jparams, X, training=True, state=jstate, rng=jax.random.key(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert _max_rel(moved, state) > 1e-3
    with pytest.raises(ValueError, match="pass rng"):
        module.loss(jparams, X, Y)
    with pytest.raises(ValueError, match="at least 2 examples"):
        module.loss(jparams, X[:1], Y[:1], rng=key)
    # vmap over batches, each with its masks: each batch's derived gradients
    T = module.targets(Y, 8, jnp.float64)
    keys = jax.random.split(key, 2)
    batched_masks = jax.vmap(lambda k: module.draw_masks(k, 8, jnp.float64))(keys)
    grad = jax.jit(jax.vmap(jax.grad(module.objective), in_axes=(None, 0, 0, None, 0)))
    grads = grad(jparams, jnp.stack([X, X[::-1]]), jnp.stack([T, T[::-1]]), None, batched_masks)
    for b, (Xb, Tb) in enumerate(((X, T), (X[::-1], T[::-1]))):
        masks = {k: v[b] for k, v in batched_masks.items()}
        expected = jax.grad(module.objective)(jparams, Xb, Tb, masks=masks)
        assert _max_rel({k: v[b] for k, v in grads.items()}, expected) < 1e-12
    # the scan epoch of sgd: step by step with the derived gradients and the same keys
    Xs, Ts = jnp.stack([X, X[::-1], X]), jnp.stack([T, T[::-1], T])
    opt = module.init_optimizer_state(jparams, "sgd")
    trained, _, running, t, losses = module.train_epoch(jparams, opt, jstate, Xs, Ts, 0.1, 0,
                                                        key, rule="sgd")
    by_hand, hand_state = dict(jparams), dict(jstate)
    for step in range(3):
        masks = module.draw_masks(jax.random.fold_in(key, step), 8, jnp.float64)
        (J, hand_state), g = jax.value_and_grad(module.loss_and_state, has_aux=True)(
            by_hand, hand_state, Xs[step], Ts[step], masks=masks)
        assert math.isclose(float(losses[step]), float(J), rel_tol=1e-12)
        by_hand = {k: by_hand[k] - 0.1 * g[k] for k in by_hand}
    assert int(t) == 3 and _max_rel(trained, by_hand) < 1e-12
    assert _max_rel(running, hand_state) < 1e-12
    assert _max_rel(module.to_numpy(trained), {k: np.asarray(v) for k, v in by_hand.items()}) < 1e-12


# ----------------------------------------------------------------------------- the files

def test_rendering_is_deterministic_commented_and_the_cli_writes_both(tmp_path, capsys):
    from derive.cli import main

    derivation = derive(ALL)
    for backend in ("torch", "jax"):
        text = render_backend(derivation, backend)
        assert text == render_backend(derivation, backend)
        assert "do not edit" in text.splitlines()[0]
        assert "# mu2 = mean over the batch of A1" in text  # each formula in a comment
        assert "# dxhat2 = dZ2*gamma2" in text
    spec = tmp_path / "kinds.yaml"
    spec.write_text("name: kinds\ninput: 3\nlayers:\n  - {units: 4, bias: false}\n"
                    "  - {kind: batch_norm, activation: relu}\n  - {kind: dropout, rate: 0.1}\n"
                    "  - {units: 3, activation: softmax}\nloss: categorical_crossentropy\n")
    for backend in ("torch", "jax"):
        assert main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "--backend",
                     backend]) == 0
        assert f"kinds_{backend}.py" in capsys.readouterr().out


# ----------------------------------------------------------------------------- --train

_TRAINED = """name: digits_kinds
input: 64
layers:
  - {units: 16, bias: false}
  - {kind: batch_norm, activation: relu}
  - {units: 16, activation: relu}
  - {kind: layer_norm}
  - {units: 16, activation: tanh, skip: 3}
  - {units: 10, activation: softmax}
loss: categorical_crossentropy
regularization: {l2: 0.001}
dtype: float64
training: {optimizer: adam, learning_rate: 0.01, batch_size: 50, epochs: 2, seed: 0}
data: {dataset: digits, test_fraction: 0.2}
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_trains_kinds_on_a_backend_as_numpy(tmp_path, capsys, backend):
    """Batch norm, layer norm and a skip (no dropout: the masks' generators differ) trained on
    the framework: the NumPy run's history, parameters and running statistics (float64)."""
    pytest.importorskip(backend)
    import json

    from derive.cli import main

    spec = tmp_path / "digits_kinds.yaml"
    spec.write_text(_TRAINED)
    runs = {}
    for name, extra in (("numpy", []), (backend, ["--backend", backend])):
        folder = tmp_path / name
        assert main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "--train",
                     "--save-dir", str(folder), "-q", *extra]) == 0
        summary = json.loads((folder / "summary.json").read_text())
        with np.load(folder / "digits_kinds.npz") as stored:
            runs[name] = summary, {key: stored[key] for key in stored.files
                                   if stored[key].dtype.kind == "f"}
    (ours, mine), (theirs, reference) = runs[backend], runs["numpy"]
    for a, b in zip(ours["history"], theirs["history"], strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-9)
    assert "__layer__/running_var2" in reference
    assert _max_rel(mine, reference) < 1e-9
    if backend == "torch":  # batch norm under DDP would normalise over each process's share
        assert main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "--train", "--backend",
                     "torch", "--workers", "2", "--save-dir", str(tmp_path / "ddp"), "-q"]) == 2
        assert "BatchNorm1d without SyncBatchNorm" in capsys.readouterr().err


def test_ddp_two_processes_equal_one_for_layer_norm_and_a_skip(written):
    """Under DDP (two CPU processes, gloo on loopback), a stack with layer normalisation (per
    example, so a process's share normalises as the whole batch does) and a skip ends the
    epoch with the parameters of one process."""
    pytest.importorskip("torch")
    from derive.training.backends import BackendOptions, backend_path, torch_epochs

    spec = _spec([_kind_entry("layer_norm"), "{units: 4, activation: sigmoid, skip: 1}"])
    net = written(spec)["numpy"]
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((29, 3)), rng.integers(0, 3, 29)
    params = net.init_params(seed=2, dtype=np.float64)
    settings = {"rates": [0.1], "size": 8, "epochs": 1, "shuffle": True, "dtype": "float64",
                "rng": np.random.default_rng(6).bit_generator.state, "t": 0, "seed": 0,
                "optimizer": "sgd", "hyperparameters": {"weight_decay": 0.0}}
    path = backend_path(net.__file__, "torch")
    (one, _, t, _), = torch_epochs(path, params, X, Y, settings, BackendOptions("torch"))
    (two, _, t2, _), = torch_epochs(path, params, X, Y, settings,
                                    BackendOptions("torch", workers=2))
    assert t == t2 == 4 and _max_rel(two, one) < 1e-12


@pytest.mark.slow  # compiling takes ~15 s
def test_torch_compile_of_the_kinds_loss(written):
    """torch.compile of the loss through the derived autograd.Function: the eager gradients
    and running statistics."""
    torch = pytest.importorskip("torch")
    module = written(ALL)["torch"]
    compiled_model, eager = (module.Network(dtype=torch.float64) for _ in range(2))
    X, Y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 3, (16,))
    masks = {key: (torch.rand(16, units) < keep).double() for key, units, keep in module.MASKS}
    torch.compile(module.loss)(compiled_model, X, Y, masks).backward()
    module.loss(eager, X, Y, masks).backward()
    for key in module.KEYS:
        torch.testing.assert_close(getattr(compiled_model, key).grad, getattr(eager, key).grad,
                                   rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(compiled_model.running_var2, eager.running_var2)


_SHARDED = """
import json, sys
import numpy as np
import jax
from derive.training.backends import jax_epochs
assert len(jax.devices()) == 2, jax.devices()
job = json.loads(sys.argv[1])
with np.load(job["data"]) as d:
    X, T = d["X"], d["T"]
    params = {k[2:]: d[k] for k in d.files if k.startswith("p_")}
    running = {k[2:]: d[k] for k in d.files if k.startswith("r_")}
runs = []
for devices in (jax.devices(), jax.devices()[:1]):
    moved = {k: v.copy() for k, v in running.items()}
    trained, state, t, _ = next(jax_epochs(job["module"], params, X, T, job["settings"],
                                           devices=devices, running=moved))
    runs.append((trained, moved, t))
(a, ra, ta), (b, rb, tb) = runs
worst = max(float(np.max(np.abs(x[k] - y[k])) / np.max(np.abs(y[k])))
            for x, y in ((a, b), (ra, rb)) for k in y)
print(json.dumps([ta, tb, worst]))
"""


def test_jax_sharded_batch_norm_over_two_host_devices_equals_one(written, tmp_path):
    """Batch normalisation with the batch axis sharded over two host devices (a fresh process,
    XLA_FLAGS=--xla_force_host_platform_device_count=2): the statistics are the whole batch's,
    so an Adam epoch ends with one device's parameters and running statistics."""
    pytest.importorskip("jax")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from derive.training.backends import backend_path

    spec = _spec([_kind_entry("batch_norm"), _kind_entry("layer_norm")])
    net = written(spec)["numpy"]
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((42, 3)), rng.integers(0, 3, 42)  # 5 batches of 8, then 2
    params = net.init_params(seed=3, dtype=np.float64)
    data = tmp_path / "data.npz"
    np.savez(data, X=X, T=net.targets(Y, 42, np.float64), **{f"p_{k}": v for k, v in params.items()},
             **{f"r_{k}": v for k, v in net.init_state(np.float64).items()})
    settings = {"rates": [0.01], "size": 8, "epochs": 1, "shuffle": True, "dtype": "float64",
                "rng": np.random.default_rng(7).bit_generator.state, "t": 0, "seed": 0,
                "optimizer": "adam",
                "hyperparameters": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}}
    job = {"data": str(data), "module": str(backend_path(net.__file__, "jax")),
           "settings": settings}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join(filter(None, (str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH")))))
    done = subprocess.run([sys.executable, "-c", _SHARDED, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    t, t_one, worst = json.loads(done.stdout.strip().splitlines()[-1])
    assert t == t_one == 6 and worst < 1e-12
