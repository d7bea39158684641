"""The regression losses users expect, mae and huber (with its delta), end to end.

Every registry-wide test (codegen, proof, backends, fuzz) runs them with their defaults;
here Huber's delta is taken off 1 in the spec and followed through the proof, the generated
module (against central differences, at points away from the kinks), the Trainer's reported
loss, and PyTorch's own ``huber_loss`` / ``l1_loss`` with its autograd, also exactly at the
kinks (a = y, |a - y| = delta), where the derivative's convention is the one SymPy derives.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from codegen.emit import write_backend, write_module
from codegen.files import import_module_from
from derive.derivation import derive
from derive.proof import prove_spec
from derive.spec import load_spec_text

M = 9


def _spec(loss: str, name: str, output: str = "identity"):
    return load_spec_text(f"name: {name}\ninput: 3\nlayers:\n  - {{units: 4, activation: tanh}}\n"
                          f"  - {{units: 2, activation: {output}}}\nloss: {loss}\ndtype: float64\n",
                          f"{name}.yaml")


LOSSES_WRITTEN = [("{name: huber, delta: 2.5}", "huber_wide"), ("{name: huber, delta: 0.3}", "huber_narrow"),
                  ("huber", "huber_default"), ("mae", "mae_net")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (spec, NumPy module), each written once."""
    out = {}
    for loss, name in LOSSES_WRITTEN:
        spec = _spec(loss, name)
        path = write_module(derive(spec), tmp_path_factory.mktemp(name))
        out[name] = spec, import_module_from(path)
    return out


def _point(net, seed: int, scale: float = 1.0):
    """Parameters, inputs, and targets at a distance of order ``scale`` from the outputs
    (Huber's delta, so that both of its branches are reached)."""
    rng = np.random.default_rng(seed)
    params = {k: v + 0.4 * rng.standard_normal(v.shape)
              for k, v in net.init_params(seed=seed, dtype=np.float64).items()}
    X = rng.standard_normal((M, 3)) * 1.5
    Y = net.forward(params, X).output + 2 * scale * rng.standard_normal((M, 2))
    return params, X, Y


def _delta(spec) -> float | None:
    return dict(spec.loss_params).get("delta")


def _scale(spec) -> float:
    return _delta(spec) or 1.0


# ----------------------------------------------------------------------------- proof

@pytest.mark.parametrize("loss, output", [("{name: huber, delta: 2.5}", "identity"),
                                          ("{name: huber, delta: 0.3}", "sigmoid"),
                                          ("{name: huber, delta: 0.7}", "softmax")])
def test_huber_with_delta_proves(loss, output):
    report = prove_spec(_spec(loss, "proved", output))
    assert report.ok, report.summary()


def test_delta_reaches_the_derivation_exactly():
    """2.5 is 5/2 and 0.3 is 3/10 in every expression, never a float or the default."""
    for written, value in (("{name: huber, delta: 2.5}", sp.Rational(5, 2)),
                           ("{name: huber, delta: 0.3}", sp.Rational(3, 10))):
        output = derive(_spec(written, "exact")).output
        assert output.loss.values == (("delta", value),)
        for expr in (output.per_example, output.dL_da, output.delta):
            assert value in expr.atoms(sp.Rational) and not expr.atoms(sp.Float)


# ----------------------------------------------------------------------------- finite differences

def _central_differences(net, params, X, Y, h=1e-6):
    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + h
            plus = net.loss(params, X, Y)
            value[index] = saved - h
            minus = net.loss(params, X, Y)
            value[index] = saved
            g[index] = (plus - minus) / (2 * h)
        grads[key] = g
    return grads


@pytest.mark.parametrize("name", [name for _, name in LOSSES_WRITTEN])
def test_backward_equals_central_differences_away_from_the_kinks(built, name):
    spec, net = built[name]
    delta = _delta(spec)
    for seed in range(3):
        params, X, Y = _point(net, seed, _scale(spec))
        r = np.abs(net.forward(params, X).output - Y)
        kinks = [0.0] if delta is None else [delta]
        assert min(np.min(np.abs(r - k)) for k in kinks) > 1e-4  # h = 1e-6 crosses none
        if delta is not None:  # both branches are differentiated
            assert np.any(r < delta) and np.any(r > delta)
        derived = net.backward(params, net.forward(params, X), Y)
        numeric = _central_differences(net, params, X, Y)
        for key in params:
            np.testing.assert_allclose(derived[key], numeric[key], rtol=1e-6, atol=1e-8,
                                       err_msg=f"{name}, {key}, seed {seed}")


# ----------------------------------------------------------------------------- PyTorch

def _torch_loss(torch, spec, params, X, Y):
    """J written with torch.nn.functional: the sum over the output units, the mean over the
    examples (torch's reduction="mean" would also divide by the number of units)."""
    F = torch.nn.functional
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    a = torch.tanh(torch.from_numpy(X) @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    y = torch.from_numpy(Y)
    if spec.loss == "mae":
        per_unit = F.l1_loss(a, y, reduction="none")
    else:
        per_unit = F.huber_loss(a, y, reduction="none", delta=_delta(spec))
    J = per_unit.sum() / len(X)
    J.backward()
    return J.item(), {k: v.grad.numpy() for k, v in p.items()}


@pytest.mark.parametrize("name", [name for _, name in LOSSES_WRITTEN])
def test_loss_and_gradients_equal_torch(built, name):
    torch = pytest.importorskip("torch")
    spec, net = built[name]
    for seed in range(3):
        params, X, Y = _point(net, seed, _scale(spec))
        J, grads = _torch_loss(torch, spec, params, X, Y)
        assert net.loss(params, X, Y) == pytest.approx(J, rel=1e-12)
        if spec.loss == "huber":  # torch's own mean over every entry, times the units
            a = torch.from_numpy(net.forward(params, X).output)
            mean = torch.nn.functional.huber_loss(a, torch.from_numpy(Y), delta=_delta(spec))
            assert net.loss(params, X, Y) == pytest.approx(mean.item() * Y.shape[1], rel=1e-12)
        derived = net.backward(params, net.forward(params, X), Y)
        for key in params:
            np.testing.assert_allclose(derived[key], grads[key], rtol=1e-10, atol=1e-13,
                                       err_msg=f"{name}, {key}")


@pytest.mark.parametrize("name", [name for _, name in LOSSES_WRITTEN])
def test_at_the_kinks_the_gradient_is_torchs(built, name):
    """The output made exactly a = y (and, for Huber, |a - y| = delta): MAE's derivative
    there is sign(0) = 0, as SymPy's sign and torch's L1Loss take it; Huber's is continuous
    at |a - y| = delta (both branches give +-delta) and 0 at a = y."""
    torch = pytest.importorskip("torch")
    spec, net = built[name]
    params, X, _ = _point(net, 0)
    params["W2"][:] = 0.0  # the output is b2 for every example, exactly
    params["b2"][:] = [0.75, -0.5]
    gaps = [0.0] if _delta(spec) is None else [0.0, _delta(spec), -_delta(spec)]
    for gap in gaps:
        Y = np.tile(params["b2"] - gap, (M, 1))
        J, grads = _torch_loss(torch, spec, params, X, Y)
        derived = net.backward(params, net.forward(params, X), Y)
        assert net.loss(params, X, Y) == pytest.approx(J, rel=1e-12, abs=1e-15)
        for key in params:
            np.testing.assert_allclose(derived[key], grads[key], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{name}, {key}, a - y = {gap}")
        if gap == 0.0:
            assert not np.any(derived["b2"]) and not np.any(derived["W1"])


def test_the_trainer_reports_the_huber_loss(built):
    """The loss each epoch records and ``evaluate`` gives (what --train prints) is J."""
    torch = pytest.importorskip("torch")
    spec, net = built["huber_wide"]
    _, X, Y = _point(net, 1, _scale(spec))
    trainer = net.Trainer(optimizer="sgd", learning_rate=0.05, batch_size=4, epochs=2, seed=0,
                          dtype=np.float64, engine="numpy")
    trainer.fit(X, Y)
    J, _ = _torch_loss(torch, spec, trainer.params, X, Y)
    assert trainer.history["loss"][-1] == pytest.approx(J, rel=1e-12)
    assert trainer.evaluate(X, Y)["loss"] == pytest.approx(J, rel=1e-12)


def test_backends_and_compiled_engine_take_delta(built, tmp_path):
    """delta = 2.5 reaches the PyTorch backend's loss and its derived backward, and the
    compiled engine's epochs equal the NumPy engine's."""
    torch = pytest.importorskip("torch")
    spec, net = built["huber_wide"]
    params, X, Y = _point(net, 2, _scale(spec))
    module = import_module_from(write_backend(derive(spec), "torch", tmp_path))
    model = module.Network.from_numpy(params, dtype=torch.float64)
    J = module.loss(model, torch.from_numpy(X), torch.from_numpy(Y))
    J.backward()
    reference, grads = _torch_loss(torch, spec, params, X, Y)
    assert J.item() == pytest.approx(reference, rel=1e-12)
    for key, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[key], rtol=1e-10, atol=1e-13)

    pytest.importorskip("numba")
    trained = {}
    for engine in ("numpy", "compiled"):
        trainer = net.Trainer(engine=engine, optimizer="sgd", batch_size=2, learning_rate=0.05,
                              epochs=2, seed=4, dtype=np.float64)
        trainer.fit(X, Y, track=False)
        trained[engine] = trainer.params
    for key in params:
        np.testing.assert_allclose(trained["compiled"][key], trained["numpy"][key], rtol=1e-10,
                                   atol=1e-12, err_msg=key)
