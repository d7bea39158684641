"""Layer kinds (derive.layers): every declared kind, between dense layers and under a skip,
gives the gradients torch.autograd gives for the same torch.nn network (float64); running
statistics move as torch's; a trained model answers one row as it answers it in a batch; every
misuse of a kind in a spec is a located error."""

from __future__ import annotations

import numpy as np
import sympy as sp
import pytest

from derive.errors import SpecError
from derive.layers import LAYER_KINDS
from derive.spec import load_spec_text

torch = pytest.importorskip("torch")



def _torch_activation(name: str):
    """torch's function of that name; the identity for a vector one (softmax: it is in
    torch's cross-entropy) and for one torch has not (identity)."""
    from derive.activations import ACTIVATIONS

    same = None if ACTIVATIONS[name].vector else getattr(torch.nn.functional, name, None)
    return same or (lambda x: x)


def _kind_entry(name: str) -> str:
    """A spec entry of kind ``name`` with its required options and, where it takes one, an
    activation."""
    kind = LAYER_KINDS[name]
    values = {"units": 4, "rate": 0.25}
    options = "".join(f", {o.key}: {values[o.key]}" for o in kind.options if o.default is None)
    act = ", activation: tanh" if kind.activation else ""
    return "{kind: " + name + options + act + "}"


def _spec(middle: list[str], loss="categorical_crossentropy", out="softmax", units=3):
    layers = "".join(f"  - {entry}\n" for entry in
                     ["{units: 4, activation: relu, bias: false}", *middle,
                      f"{{units: {units}, activation: {out}}}"])
    return load_spec_text(f"name: kinds_net\ninput: 3\nlayers:\n{layers}loss: {loss}\n"
                          "dtype: float64\n")


def _torch_grads(spec, params, X, Y, cache, loss):
    """The same network from torch.nn modules (each kind's declared constructor), training
    mode, dropout with the module's own mask; autograd's gradients under our keys."""
    t = {k: torch.tensor(v) for k, v in params.items()}
    modules, A = [], [torch.tensor(X)]
    n_in = spec.input
    for l, layer in enumerate(spec.layers, start=1):
        kind = LAYER_KINDS[layer.kind]
        options = {o.key: o.default for o in kind.options} | layer.option_dict
        options |= {"units": layer.units, "n_in": n_in}
        module = eval(kind.torch.format(**options), {"torch": torch}).double()
        for ours, theirs in kind.torch_params:
            if f"{ours}{l}" in t:
                getattr(module, theirs).data = t[f"{ours}{l}"].clone()
        modules.append(module)
        a = A[-1]
        if kind.randoms:  # the same mask as the module's forward drew
            module.eval()
            (r, _), = [(r.symbol.name, None) for r in kind.randoms]
            z = module(a) * torch.tensor(cache.saved[f"{r}{l}"]) / (1 - options["rate"])
        else:
            module.train()
            z = module(a)
        if layer.skip is not None:
            z = z + A[layer.skip]
        A.append(_torch_activation(layer.activation.name)(z))
        n_in = layer.units
    if loss == "categorical_crossentropy":
        value = torch.nn.functional.cross_entropy(A[-1], torch.tensor(Y))
    else:
        value = 0.5 * ((A[-1] - torch.tensor(Y, dtype=torch.float64)) ** 2).sum(1).mean()
    value.backward()
    grads = {}
    for l, (layer, module) in enumerate(zip(spec.layers, modules), start=1):
        for ours, theirs in LAYER_KINDS[layer.kind].torch_params:
            if f"{ours}{l}" in params:
                grads[f"{ours}{l}"] = getattr(module, theirs).grad.numpy()
    return grads, modules


# the kinds that take a flat vector (or either): the image kinds (conv2d, the pools,
# flatten) need an image input, and tests/test_conv_kinds.py checks them the same ways
FLAT = [name for name in LAYER_KINDS if name != "dense" and LAYER_KINDS[name].image != "image"]
# kinds with a torch.nn counterpart (a kind without one is checked by the proof and FD alone)
COMPARED = [name for name in FLAT if LAYER_KINDS[name].torch]
CASES = [([_kind_entry(name)], "categorical_crossentropy", "softmax") for name in COMPARED]
CASES += [([_kind_entry(name) for name in COMPARED]
           + ["{units: 4, activation: sigmoid, skip: 1}"], "mse", "identity")]


@pytest.mark.parametrize("middle, loss, out", CASES, ids=lambda c: str(c)[:60])
def test_gradients_equal_torch_autograd(middle, loss, out, build):
    spec = _spec(middle, loss, out)
    net = build(spec)
    rng = np.random.default_rng(0)
    params = net.init_params(seed=1, dtype=np.float64)
    for key in params:
        params[key] = params[key] + 0.1 * rng.standard_normal(params[key].shape)
    X = rng.standard_normal((6, 3))
    Y = rng.integers(0, 3, 6) if loss != "mse" else rng.standard_normal((6, 3))
    state = net.init_state(np.float64)
    cache = net.forward(params, X, training=True, state=state, rng=np.random.default_rng(2))
    grads = net.backward(params, cache, Y)
    expected, modules = _torch_grads(spec, params, X, Y, cache, loss)
    assert set(grads) == set(expected) == set(params)
    for key in params:
        scale = max(np.abs(expected[key]).max(), 1e-12)
        assert np.abs(grads[key] - expected[key]).max() / scale < 1e-10, key
    for l, module in enumerate(modules, start=1):  # running statistics as torch moved them
        for ours, theirs in (("running_mean", "running_mean"), ("running_var", "running_var")):
            if f"{ours}{l}" in state:
                np.testing.assert_allclose(state[f"{ours}{l}"], getattr(module, theirs).numpy(),
                                           rtol=1e-12)


@pytest.mark.parametrize("name", FLAT)
def test_one_row_is_answered_as_in_a_batch_after_training(name, build, tmp_path):
    spec = _spec([_kind_entry(name)])
    net = build(spec)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 3)), rng.integers(0, 3, 40)
    trainer = net.Trainer(epochs=3, batch_size=8, seed=0, engine="auto")
    trainer.fit(X, Y)
    path = trainer.save(tmp_path / "model.npz")
    loaded = net.Trainer.load(path)
    batch = loaded.predict_proba(X)
    rows = np.vstack([loaded.predict_proba(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(rows, batch, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(batch, trainer.predict_proba(X))
    for key, value in trainer.layer_state.items():
        np.testing.assert_array_equal(loaded.layer_state[key], value)


def test_dropout_masks_follow_the_seed(build):
    spec = _spec([_kind_entry("dropout")])
    net = build(spec)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 3)), rng.integers(0, 3, 30)
    runs = [net.Trainer(epochs=2, batch_size=5, seed=seed).fit(X, Y)["loss"]
            for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def _error(entries: list[str]) -> SpecError:
    with pytest.raises(SpecError) as info:
        _spec(entries)
    return info.value


@pytest.mark.parametrize("entry, field, words", [
    ("{kind: dropout, rate: 1}", "layers[1].rate", "[0, 1)"),
    ("{kind: dropout, rate: -0.1}", "layers[1].rate", "[0, 1)"),
    ("{kind: dropout}", "layers[1].rate", "missing required key 'rate'"),
    ("{kind: dropout, rate: 0.1, activation: relu}", "layers[1].activation", "unknown key"),
    ("{kind: batch_norm, eps: 0}", "layers[1].eps", "positive"),
    ("{kind: batch_norm, momentum: 1.5}", "layers[1].momentum", "(0, 1]"),
    ("{kind: batch_nrom}", "layers[1].kind", "did you mean 'batch_norm'"),
    ("{units: 4, activation: relu, skip: 2}", "layers[1].skip", "earlier layer"),
    ("{units: 5, activation: relu, skip: 1}", "layers[1].skip", "4 units and layer 2 has 5"),
    ("{units: 4, bias: maybe}", "layers[1].bias", "true or false"),
])
def test_misuse_is_a_located_error(entry, field, words):
    err = _error([entry])
    assert err.field == field and err.line is not None
    assert words in err.message + (err.hint or ""), err.message


def test_a_kind_after_the_output_layer_is_refused():
    with pytest.raises(SpecError) as info:
        load_spec_text("name: n\ninput: 3\nlayers:\n  - {units: 2, activation: softmax}\n"
                       "  - {kind: batch_norm}\nloss: categorical_crossentropy\n")
    assert "output layer and must be dense" in info.value.message
    assert info.value.line == 5


def test_plain_dense_specs_keep_the_recurrence():
    from derive.derivation import Derivation, derive

    plain = load_spec_text("name: n\ninput: 3\nlayers:\n  - {units: 4, activation: relu}\n"
                           "  - {units: 2, activation: softmax}\nloss: categorical_crossentropy\n")
    assert isinstance(derive(plain), Derivation)  # the documents' networks: unchanged
    assert not isinstance(derive(_spec([_kind_entry("layer_norm")])), Derivation)


# ----------------------------------------------------------------------------- the proof

def _every_kind() -> list[str]:
    """Every declared kind but dense (which surrounds them), then a skip over them all."""
    return [_kind_entry(name) for name in FLAT] + \
        ["{units: 4, activation: sigmoid, skip: 1}"]


@pytest.mark.parametrize("name", FLAT)
def test_a_planted_wrong_backward_of_each_kind_is_caught(name):
    """The adjoint a kind sends to its input, scaled by 3/2: the proof names a gradient."""
    import dataclasses

    from derive.derivation import derive
    from derive.proof import prove_kinds, shrink_kinds

    small, _ = shrink_kinds(_spec([_kind_entry(name)]))
    derivation = derive(small)
    node = derivation.nodes[1]  # the kind, after the first dense layer
    into = f"dA{node.index - 1}"
    backward = [dataclasses.replace(st, expr=st.expr * sp.Rational(3, 2))
                if st.op == "let" and st.target.name == into else st
                for st in derivation.backward]
    assert backward != list(derivation.backward), f"no statement writes {into}"
    report = prove_kinds(dataclasses.replace(derivation, backward=tuple(backward)), points=1)
    assert not report.ok and "dW1" in report.wrong_quantities


def test_check_proves_every_kind_and_runs_finite_differences(tmp_path):
    """--check on a stack of every kind and a skip: the exact proof, then float64 FD."""
    import subprocess
    import sys

    spec = tmp_path / "kinds.yaml"
    spec.write_text("name: kinds_check\ninput: 3\nlayers:\n" + "".join(
        f"  - {entry}\n" for entry in ["{units: 4, bias: false}", *_every_kind(),
                                       "{units: 3, activation: softmax}"])
        + "loss: categorical_crossentropy\n")
    done = subprocess.run([sys.executable, "-m", "derive", "--spec", str(spec), "--out",
                           str(tmp_path / "gen"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "agree with SymPy's diff" in done.stdout and "finite differences" in done.stdout


# ----------------------------------------------------------------------------- claims

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_the_published_batch_norm_backward_is_proven_and_its_slips_refuted():
    """Ioffe & Szegedy's backward through mu_B and sigma^2_B, and the compact form, about
    layer 2 (as in examples/digits_bn.yaml, on a smaller stack): every verdict as the claims
    file expects, in the batch reading."""
    from derive.claims import check_claims, load_claims
    from derive.derivation import derive

    report = check_claims(derive(_spec([_kind_entry("batch_norm")])),
                          load_claims(ROOT / "examples" / "claims" / "ioffe_szegedy.yaml"))
    assert report.ok, report.summary()
    verdicts = {v.claim.equation.lhs: v for v in report.verdicts}
    assert {"dvar2", "dmu2", "dA1", "dgamma2", "dbeta2"} <= set(verdicts)
    assert sum(not v.proven for v in report.verdicts) == 2
    assert all(v.reading.startswith("batch") for v in report.verdicts)


def test_a_claim_names_only_quantities_the_stack_has():
    from derive.claims import check_claims, load_claims_text
    from derive.derivation import derive

    derivation = derive(_spec([_kind_entry("batch_norm")]))
    with pytest.raises(SpecError) as info:  # layer 1 is dense: it has no gamma
        check_claims(derivation, load_claims_text('claims:\n  - claim: "gamma1 = beta2"\n'))
    assert "unknown quantity 'gamma1'" in info.value.message and info.value.line == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_preallocated_step_equals_the_functional_backward(dtype, build):
    """The Trainer's NumPy step (buffers allocated once, ufuncs with out=) gives the
    functional backward's gradients and moves the running statistics alike, same mask."""
    net = build(_spec(_every_kind()))
    rng = np.random.default_rng(0)
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(dtype)
              for k, v in net.init_params(seed=1, dtype=dtype).items()}
    X = rng.standard_normal((7, 3)).astype(dtype)
    Y = rng.integers(0, 3, 7)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    _, _, step = net.NETWORK.make_gradient(params, grads, 7, dtype)
    states = net.init_state(dtype), net.init_state(dtype)
    step(X, net.targets(Y, 7, dtype), states[0], np.random.default_rng(5))
    cache = net.forward(params, X, training=True, state=states[1], rng=np.random.default_rng(5))
    expected = net.backward(params, cache, Y)
    tolerance = 1e-12 if dtype == np.float64 else 1e-4
    for key in params:
        scale = max(np.abs(expected[key]).max(), 1e-30)
        assert grads[key].dtype == dtype
        assert np.abs(grads[key] - expected[key]).max() / scale < tolerance, key
    for key in states[0]:
        np.testing.assert_allclose(states[0][key], states[1][key], rtol=tolerance)
