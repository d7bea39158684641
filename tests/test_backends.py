"""The PyTorch and JAX backends: the derived gradients against each framework's own autograd.

For every registered activation x loss pair the spec reader accepts, the generated
``<name>_torch.py`` and ``<name>_jax.py`` are written and imported; the gradients of their
``loss`` (the derived recurrence, through a torch.autograd.Function / a jax.custom_vjp) equal,
in float64 to 1e-10 relative, the framework's autograd of the same network written
independently with ``torch.nn.functional`` / ``jax.nn`` (``Reference`` below; an activation
or loss it does not know is checked against autograd of the module's own printed forward),
and the NumPy module's ``backward``.  Skipped when torch or jax is not installed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from codegen.emit import render_backend, write_backend
from codegen.files import import_module_from
from conftest import loss_value
from derive.activations import ACTIVATIONS
from derive.derivation import derive
from derive.errors import SpecError
from derive.losses import LOSSES
from derive.optimizers import OPTIMIZERS
from test_codegen import make_spec

RTOL = 1e-10
M = 7


def _flow_value(name: str) -> str:
    """``name`` as a spec's activation value, parameters moved off their defaults."""
    act = ACTIVATIONS[name]
    params = {}
    for key, param in act.params.items():
        value = round(param.default * 0.5 + 0.1, 6)
        params[key] = value if param.check(value) else param.default
    return name if not params else \
        "{name: " + name + "".join(f", {k}: {v}" for k, v in params.items()) + "}"


def _first_output_for(loss: str) -> str | None:
    for name in ACTIVATIONS:
        try:
            make_spec("tanh", _flow_value(name), loss=loss_value(loss))
            return name
        except SpecError:
            continue
    return None


def _pairs():
    """(activation, loss, spec) for every registered pair: the activation on the hidden layer
    (when element-wise) and on the output when the loss takes it there, else on the hidden
    layer only, under the first output the loss takes.  Every third pair is regularised."""
    elementwise = next(name for name in ACTIVATIONS if not ACTIVATIONS[name].vector)
    out = []
    for i, act in enumerate(ACTIVATIONS):
        for j, loss in enumerate(LOSSES):
            hidden = act if not ACTIVATIONS[act].vector else elementwise
            output = act
            try:
                make_spec(_flow_value(hidden), _flow_value(output), loss=loss_value(loss))
            except SpecError:
                output = _first_output_for(loss)
                if ACTIVATIONS[act].vector or output is None:
                    continue  # softmax only goes on the output; this loss does not take it
            reg = {"l1": 0.01, "l2": 0.02} if (i + j) % 3 == 0 else {}
            spec = make_spec(_flow_value(hidden), _flow_value(output), loss=loss_value(loss),
                             sizes=(3, 4, 3), name=f"net_{act}_{loss}", **reg)
            out.append(pytest.param(act, loss, spec, id=f"{act}-{loss}" + ("-l1l2" if reg else "")))
    return out


PAIRS = _pairs()


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """spec -> {"numpy", "torch", "jax": module}, written and imported once per spec."""
    cache = {}

    def get(spec, backend):
        if spec not in cache:
            folder = tmp_path_factory.mktemp(spec.name)
            derivation = derive(spec)
            cache[spec] = {b: write_backend(derivation, b, folder) for b in ("torch", "jax")}
            cache[spec]["numpy"] = folder / f"{spec.name}.py"
        return import_module_from(cache[spec][backend])
    return get


def _data(net, spec, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M, spec.input)) * 1.5
    n_out = spec.layer_sizes[-1]
    if net.TASK == "classification":
        Y = rng.integers(0, n_out, size=M)
    elif net.TASK == "binary":
        Y = rng.integers(0, 2, size=(M, n_out)).astype(np.float64)
    else:
        Y = rng.standard_normal((M, n_out))
    params = net.init_params(seed=seed, dtype=np.float64)
    for key in params:  # biases off zero, so that every branch of an activation is reached
        params[key] = params[key] + 0.3 * rng.standard_normal(params[key].shape)
    return X, Y, params


def _max_rel(got: dict, expected: dict) -> float:
    worst = 0.0
    for key, value in expected.items():
        value = np.asarray(value, dtype=np.float64)
        scale = max(float(np.max(np.abs(value))), 1e-300)
        worst = max(worst, float(np.max(np.abs(np.asarray(got[key], np.float64) - value))) / scale)
    return worst


# ----------------------------------------------------------------------------- references

class Reference:
    """Each activation and loss written with the framework's own functions (``F`` is
    torch.nn.functional or jax.nn, ``xp`` torch or jax.numpy), independent of the derivation.
    Losses take the output a, dense targets y and class labels, and return the batch mean."""

    identity = linear = staticmethod(lambda F, xp, z: z)
    sigmoid = staticmethod(lambda F, xp, z: F.sigmoid(z))
    tanh = staticmethod(lambda F, xp, z: xp.tanh(z))
    relu = staticmethod(lambda F, xp, z: F.relu(z))
    leaky_relu = staticmethod(lambda F, xp, z, alpha: F.leaky_relu(z, alpha))
    elu = staticmethod(lambda F, xp, z, alpha: F.elu(z, alpha))
    softplus = staticmethod(lambda F, xp, z: F.softplus(z))
    swish = silu = staticmethod(lambda F, xp, z: F.silu(z))
    gelu = staticmethod(lambda F, xp, z: F.gelu(z, approximate="none") if xp.__name__ == "torch"
                        else F.gelu(z, approximate=False))
    softmax = staticmethod(lambda F, xp, z: F.softmax(z, dim=1) if xp.__name__ == "torch"
                           else F.softmax(z, axis=1))

    @staticmethod
    def mse(F, xp, a, y, labels):
        return xp.sum((a - y) ** 2) / (2 * a.shape[0])

    @staticmethod
    def binary_crossentropy(F, xp, a, y, labels):
        if xp.__name__ == "torch":
            return F.binary_cross_entropy(a, y, reduction="sum") / a.shape[0]
        return -xp.sum(y * xp.log(a) + (1 - y) * xp.log1p(-a)) / a.shape[0]

    @staticmethod
    def categorical_crossentropy(F, xp, a, y, labels):
        if xp.__name__ == "torch":
            return F.nll_loss(xp.log(a), labels)
        return -xp.mean(xp.take_along_axis(xp.log(a), labels[:, None], axis=1))

    sparse_categorical_crossentropy = categorical_crossentropy

    @staticmethod
    def mae(F, xp, a, y, labels):
        if xp.__name__ == "torch":
            return F.l1_loss(a, y, reduction="sum") / a.shape[0]
        return xp.sum(xp.abs(a - y)) / a.shape[0]

    @staticmethod
    def huber(F, xp, a, y, labels, delta):
        if xp.__name__ == "torch":
            return F.huber_loss(a, y, reduction="sum", delta=delta) / a.shape[0]
        r = xp.abs(a - y)
        return xp.sum(xp.where(r <= delta, r ** 2 / 2, delta * (r - delta / 2))) / a.shape[0]


def _reference_objective(spec, F, xp, module, dense, labels):
    """J(params) written with the framework's functions; None when some piece has no
    Reference (then the module's printed forward, differentiated by autograd, stands in)."""
    acts = [getattr(Reference, layer.activation.name, None) for layer in spec.layers]
    loss = getattr(Reference, spec.loss, None)
    if None in acts or loss is None:
        return None

    def objective(params, X):
        a = X
        for l, layer in enumerate(spec.layers, start=1):
            z = a @ params[f"W{l}"].T + params[f"b{l}"]
            a = acts[l - 1](F, xp, z, **layer.activation.param_dict)
        J = loss(F, xp, a, dense, labels, **dict(spec.loss_params))
        W = [params[f"W{l}"] for l in range(1, spec.depth + 1)]
        J = J + 0.5 * spec.regularization.l2 * sum(xp.sum(w ** 2) for w in W)
        return J + spec.regularization.l1 * sum(xp.sum(xp.abs(w)) for w in W)
    return objective


# ----------------------------------------------------------------------------- torch

@pytest.mark.parametrize("act, loss, spec", PAIRS)
def test_torch_gradients_equal_autograd_and_numpy(modules, act, loss, spec):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net, module = modules(spec, "numpy"), modules(spec, "torch")
    X, Y, params = _data(net, spec)
    model = module.Network.from_numpy(params, dtype=torch.float64)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    J = module.loss(model, Xt, Yt)
    J.backward()
    derived = {key: p.grad.numpy() for key, p in model.named_parameters()}

    dense = module.targets(Yt, M, torch.float64)
    labels = Yt.long() if net.TASK == "classification" else None
    leaves = {key: torch.tensor(value, requires_grad=True) for key, value in params.items()}
    objective = _reference_objective(spec, F, torch, module, dense, labels)
    if objective is None:  # autograd through the printed forward, without the derived backward
        def objective(p, X):
            Z, A = module._forward(p, X)
            return torch.mean(module._per_example_loss(Z, A, dense)) + module._penalty(p)
    reference = objective(leaves, Xt)
    reference.backward()
    assert math.isclose(J.item(), reference.item(), rel_tol=1e-12)
    assert _max_rel(derived, {k: v.grad.numpy() for k, v in leaves.items()}) < RTOL
    assert _max_rel(derived, net.backward(params, net.forward(params, X), Y)) < RTOL


# ----------------------------------------------------------------------------- jax

@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("act, loss, spec", PAIRS)
def test_jax_gradients_equal_jax_grad_and_numpy(modules, jax64, act, loss, spec):
    jax = jax64
    import jax.numpy as jnp

    net, module = modules(spec, "numpy"), modules(spec, "jax")
    X, Y, params = _data(net, spec)
    jparams = module.from_numpy(params, dtype=jnp.float64)
    derived = jax.grad(module.loss)(jparams, X, Y)
    dense = module.targets(Y, M, jnp.float64)
    labels = jnp.asarray(Y, jnp.int32) if net.TASK == "classification" else None
    objective = _reference_objective(spec, jax.nn, jnp, module, dense, labels)
    if objective is None:
        def objective(p, X):
            Z, A = module._forward(p, X)
            return jnp.mean(module._per_example_loss(Z, A, dense)) + module._penalty(p)
    reference = jax.grad(objective)(jparams, jnp.asarray(X))
    assert math.isclose(float(module.loss(jparams, X, Y)), float(objective(jparams, X)),
                        rel_tol=1e-12)
    assert _max_rel(derived, reference) < RTOL
    assert _max_rel(derived, net.backward(params, net.forward(params, X), Y)) < RTOL


# ----------------------------------------------------------------------------- declarations

def test_declarations_the_package_does_not_ship_print_in_both_backends(tmp_path, jax64):
    """mish, hard tanh (Piecewise, Max/Min, And/Or), Huber and absolute error: declared only,
    the backends print them (no edit) and their gradients equal the NumPy module's."""
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from test_codegen_declarations import network
    from test_declarations import PROVED, declared

    with declared():
        for name, hidden, output, loss, units in PROVED:
            spec = network(name, hidden, output, loss, units)
            folder = tmp_path / name
            derivation = derive(spec)
            paths = {b: write_backend(derivation, b, folder) for b in ("torch", "jax")}
            net = import_module_from(folder / f"{spec.name}.py")
            X, Y, params = _data(net, spec, seed=3)
            expected = net.backward(params, net.forward(params, X), Y)
            module = import_module_from(paths["torch"])
            model = module.Network.from_numpy(params, dtype=torch.float64)
            module.loss(model, torch.from_numpy(X), torch.from_numpy(Y)).backward()
            assert _max_rel({k: p.grad.numpy() for k, p in model.named_parameters()},
                            expected) < RTOL, name
            module = import_module_from(paths["jax"])
            grads = jax64.grad(module.loss)(module.from_numpy(params, jnp.float64), X, Y)
            assert _max_rel(grads, expected) < RTOL, name


# ----------------------------------------------------------------------------- contract

CLF = make_spec("relu", "softmax", loss="categorical_crossentropy", sizes=(5, 6, 3), name="clf",
                l2=0.01)


def test_torch_module_contract(modules):
    torch = pytest.importorskip("torch")
    net, module = modules(CLF, "numpy"), modules(CLF, "torch")
    model = module.Network(seed=0)
    assert [name for name, _ in model.named_parameters()] == list(module.KEYS)
    initial = net.init_params(seed=0, dtype=np.float32)
    for key, p in model.named_parameters():
        assert p.dtype == torch.float32 and tuple(p.shape) == initial[key].shape
        np.testing.assert_array_equal(p.detach().numpy(), initial[key])
    X = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    out = model(torch.from_numpy(X))
    assert out.dtype == torch.float32 and tuple(out.shape) == (4, 3)
    np.testing.assert_allclose(out.detach().numpy(), net.forward(initial, X).output, rtol=1e-5)
    # float32 gradients stay float32; the round trip through the NumPy dict is exact
    module.loss(model, X, np.array([0, 1, 2, 1])).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    back = module.Network.from_numpy(model.to_numpy(), dtype=torch.float32)
    assert all(torch.equal(getattr(back, k), getattr(model, k)) for k in module.KEYS)
    # bad input: a clear ValueError
    with pytest.raises(ValueError, match=r"X must have shape \(m, 5\)"):
        model(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="one target per example"):
        module.loss(model, X, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"params\['W1'\] must have shape"):
        module.Network.from_numpy({**initial, "W1": np.zeros((2, 2))})


def test_torch_state_dict_loads_into_the_equivalent_sequential(modules):
    torch = pytest.importorskip("torch")
    module = modules(CLF, "torch")
    model = module.Network(dtype=torch.float64, seed=1)
    sequential = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3),
                                     torch.nn.Softmax(dim=1)).double()
    sequential.load_state_dict(model.linear_state_dict())
    X = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(sequential(X), model(X), rtol=1e-14, atol=1e-15)


def test_torch_trains_with_torch_optim_and_loads_a_model_file(modules, tmp_path):
    torch = pytest.importorskip("torch")
    net, module = modules(CLF, "numpy"), modules(CLF, "torch")
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((64, 5)))
    Y = torch.from_numpy((X[:, 0] > 0).long().numpy() + (X[:, 1] > 0).long().numpy())
    for optimizer in (torch.optim.SGD, torch.optim.Adam):
        model = module.Network(dtype=torch.float64)
        opt = optimizer(model.parameters(), lr=0.05)
        first = module.loss(model, X, Y).item()
        for _ in range(30):
            opt.zero_grad()
            module.loss(model, X, Y).backward()
            opt.step()
        assert module.loss(model, X, Y).item() < 0.8 * first, optimizer.__name__
    trainer = net.Trainer(params=model.to_numpy(), dtype=np.float64)
    path = trainer.save(tmp_path / "model")
    loaded = module.Network.load(path, dtype=torch.float64)
    assert all(torch.equal(getattr(loaded, k), getattr(model, k).detach()) for k in module.KEYS)


@pytest.mark.slow  # compiling takes ~15 s
def test_torch_compile(modules):
    """torch.compile of a training step through the derived autograd.Function."""
    torch = pytest.importorskip("torch")
    module = modules(CLF, "torch")
    model = module.Network(dtype=torch.float64)
    eager = module.Network(dtype=torch.float64)
    X = torch.randn(16, 5, dtype=torch.float64)
    T = module.targets(torch.randint(0, 3, (16,)), 16, torch.float64)
    compiled = torch.compile(module.loss)
    compiled(model, X, T).backward()
    module.loss(eager, X, T).backward()
    for key in module.KEYS:
        torch.testing.assert_close(getattr(model, key).grad, getattr(eager, key).grad,
                                   rtol=1e-12, atol=1e-14)


def test_jax_module_under_jit_vmap_and_scan(modules, jax64):
    jax = jax64
    import jax.numpy as jnp

    net, module = modules(CLF, "numpy"), modules(CLF, "jax")
    params = module.init_params(seed=0, dtype=jnp.float64)
    initial = net.init_params(seed=0, dtype=np.float64)
    assert list(params) == list(initial)
    assert all(np.array_equal(params[k], initial[k]) for k in params)
    assert module.init_params(dtype=jnp.float32)["W1"].dtype == jnp.float32
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 10, 5))
    Y = rng.integers(0, 3, size=(4, 10))
    T = jnp.stack([module.targets(y, 10, jnp.float64) for y in Y])
    grad = jax.jit(jax.grad(module.objective))
    batched = jax.vmap(grad, in_axes=(None, 0, 0))(params, X, T)
    for b in range(4):
        expected = net.backward(initial, net.forward(initial, X[b]), Y[b])
        assert _max_rel({k: v[b] for k, v in batched.items()}, expected) < RTOL
    # the scan epoch of the sgd rule is four plain SGD steps
    trained, state, t, losses = module.train_epoch(params, {}, X, T, 0.1, rule="sgd")
    by_hand = dict(initial)
    for b in range(4):
        g = net.backward(by_hand, net.forward(by_hand, X[b]), Y[b])
        by_hand = {k: by_hand[k] - 0.1 * g[k] for k in by_hand}
    assert _max_rel(trained, by_hand) < 1e-12
    assert losses.shape == (4,) and state == {} and int(t) == 4
    assert set(module.RULES) == set(OPTIMIZERS)
    with pytest.raises(ValueError, match="'momentum' is not a hyperparameter of sgd"):
        module.train_step(params, {}, X[0], T[0], 0.1, 0, {"momentum": 0.9}, rule="sgd")
    with pytest.raises(ValueError, match="rule must be one of"):
        module.init_state(params, "lion")
    with pytest.raises(ValueError, match=r"X must have shape \(m, 5\)"):
        module.loss(params, np.zeros((3, 4)), np.zeros(3))


def test_rendering_is_deterministic_and_stamped():
    derivation = derive(CLF)
    for backend in ("torch", "jax"):
        text = render_backend(derivation, backend)
        assert text == render_backend(derivation, backend)
        assert "do not edit" in text.splitlines()[0]
        assert "# delta2 = dl/dZ2" in text  # the formulas in comments
    assert "        # m <- beta_1*m + g*(1 - beta_1)\n        m_ = " in text  # the rules' too
    with pytest.raises(ValueError, match="unknown backend"):
        render_backend(derivation, "tensorflow")


# ----------------------------------------------------------------------------- training

def _epoch_setup(modules, m=42, size=8, seed=5):
    net = modules(CLF, "numpy")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 5))
    Y = rng.integers(0, 3, size=m)
    params = net.init_params(seed=seed, dtype=np.float64)
    settings = {"rates": [0.2], "size": size, "epochs": 1, "shuffle": True, "dtype": "float64",
                "rng": np.random.default_rng(seed).bit_generator.state, "t": 0,
                "optimizer": "sgd", "hyperparameters": {"weight_decay": 0.0}}
    return net, X, Y, params, settings


def _numpy_epoch(net, X, Y, params, settings):
    """The same epoch by the NumPy module's functional backward, step by step."""
    from derive.training.backends import batches, epoch_orders

    params = dict(params)
    (order, _), = epoch_orders(len(X), settings["size"], 1, settings["shuffle"], settings["rng"])
    for rows in batches(order, settings["size"]):
        g = net.backward(params, net.forward(params, X[rows]), Y[rows])
        params = {k: params[k] - settings["rates"][0] * g[k] for k in params}
    return params


def test_ddp_two_processes_equal_one(modules):
    """Two CPU processes under DDP (gloo, loopback), each on half of every global batch, end
    the epoch with the parameters of one process on the whole batches, and of the NumPy
    module's backward step by step."""
    pytest.importorskip("torch")
    from derive.training.backends import BackendOptions, backend_path, torch_epochs

    # batches of 7 split 4 + 3, and a last batch of one example: one process gets none
    net, X, Y, params, settings = _epoch_setup(modules, m=43, size=7)
    path = backend_path(net.__file__, "torch")
    (one, _, t, rng), = torch_epochs(path, params, X, Y, settings, BackendOptions("torch"))
    (two, _, t2, rng2), = torch_epochs(path, params, X, Y, settings,
                                       BackendOptions("torch", workers=2))
    assert _max_rel(two, one) < 1e-12 and t == t2 == 7 and rng == rng2
    assert _max_rel(one, _numpy_epoch(net, X, Y, params, settings)) < 1e-12
    # a rule with state: the moments come back from rank 0 as from the one process
    adam = settings | {"optimizer": "adam", "rates": [0.01],
                       "hyperparameters": {"betas": [0.9, 0.999], "eps": 1e-8,
                                           "weight_decay": 0.0}}
    (one, state, *_), = torch_epochs(path, params, X, Y, adam, BackendOptions("torch"))
    (two, state2, *_), = torch_epochs(path, params, X, Y, adam, BackendOptions("torch", workers=2))
    assert _max_rel(two, one) < 1e-12
    assert all(_max_rel(state2[name], state[name]) < 1e-12 for name in ("m", "v"))


_SHARDED = """
import json, sys
import numpy as np
import jax
from codegen.files import import_module_from
from derive.training.backends import jax_epochs
assert len(jax.devices()) == 2, jax.devices()
job = json.loads(sys.argv[1])
with np.load(job["data"]) as d:
    X, T, params = d["X"], d["T"], {k[2:]: d[k] for k in d.files if k.startswith("p_")}
runs = [next(jax_epochs(job["module"], params, X, T, job["settings"], devices=devices))
        for devices in (jax.devices(), jax.devices()[:1])]
pairs = [(runs[0][0], runs[1][0])] + [(runs[0][1][name], runs[1][1][name]) for name in runs[1][1]]
print(json.dumps([len(pairs), runs[0][2], runs[1][2],
                  max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k])))
                      for a, b in pairs for k in params)]))
"""


def test_jax_sharded_over_two_host_devices_equals_one(modules, tmp_path):
    """JAX with two host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2, in a
    fresh process): an Adam epoch (the scan, the batch axis sharded, then a short last batch)
    equals one device's, parameters and moments."""
    pytest.importorskip("jax")
    import json
    import os
    import subprocess
    import sys

    from derive.training.backends import backend_path

    net, X, Y, params, settings = _epoch_setup(modules, m=42)  # 5 batches of 8, then 2
    settings |= {"optimizer": "adam", "rates": [0.01],
                 "hyperparameters": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}}
    modules(CLF, "jax")  # written beside the NumPy module
    data = tmp_path / "data.npz"
    np.savez(data, X=X, T=net.targets(Y, len(Y), np.float64),
             **{f"p_{k}": v for k, v in params.items()})
    job = {"data": str(data), "module": str(backend_path(net.__file__, "jax")), "settings": settings}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join(filter(None, (str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH")))))
    done = subprocess.run([sys.executable, "-c", _SHARDED, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    pairs, t, t_one, worst = json.loads(done.stdout.strip().splitlines()[-1])
    assert pairs == 3 and t == t_one == 6 and worst < 1e-12


# ----------------------------------------------------------------------------- the command

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp.yaml"


def test_cli_writes_the_backend_module_beside_the_numpy_one(tmp_path, capsys):
    from derive.cli import main

    for backend in ("torch", "jax"):
        assert main(["--spec", str(DIGITS), "--out", str(tmp_path), "--backend", backend]) == 0
        assert (tmp_path / f"digits_mlp_{backend}.py").exists()
        assert f"digits_mlp_{backend}.py" in capsys.readouterr().out
    assert (tmp_path / "digits_mlp.py").exists() and (tmp_path / "_runtime.py").exists()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "--workers is a training option"),
    (["--train", "--workers", "2"], "--workers goes with --backend torch"),
    (["--train", "--backend", "jax", "--device", "cuda"], "--device goes with --backend torch"),
    (["--backend", "tensorflow"], "invalid choice"),
])
def test_cli_refuses_misplaced_backend_options(tmp_path, capsys, argv, message):
    from derive.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--spec", str(DIGITS), "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_trains_on_a_backend_with_the_numpy_runs_figures(tmp_path, capsys, backend):
    """The same run on the framework: same report, history and model file as the NumPy one."""
    pytest.importorskip(backend)
    import json

    from derive.cli import main

    summaries = {}
    for name, extra in (("numpy", []), (backend, ["--backend", backend])):  # the spec's Adam
        runs = tmp_path / name
        assert main(["--spec", str(DIGITS), "--out", str(tmp_path / "gen"), "--train",
                     "--epochs", "2", "--batch-size", "16", "--schedule", "cosine",
                     "--save-dir", str(runs), "-q", *extra]) == 0
        summaries[name] = json.loads((runs / "summary.json").read_text())
        assert (runs / "digits_mlp.npz").exists()
    ours, theirs = summaries[backend], summaries["numpy"]
    assert len(ours["history"]) == len(theirs["history"]) == 2
    for mine, reference in zip(ours["history"], theirs["history"]):
        assert math.isclose(mine["loss"], reference["loss"], rel_tol=1e-4)
    assert abs(ours["test"]["accuracy"] - theirs["test"]["accuracy"]) <= 2 / 359
    capsys.readouterr()


def test_every_rule_declares_where_torch_keeps_its_state():
    for name in OPTIMIZERS:
        rule = OPTIMIZERS[name]
        assert {state for state, _ in rule.torch_state} == {str(s) for s, _ in rule.state}, name


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_backend_trains_every_rule_as_the_numpy_trainer_and_hands_its_state_back(
        modules, request, backend, optimizer):
    """Two epochs on the backend (torch: the rule's torch.optim class; jax: the rule the module
    prints from its declaration), with a cosine schedule, shuffled batches with a short last
    one and every hyperparameter off its default, equal two on the NumPy Trainer; the state
    the backend hands back continues on NumPy exactly as three epochs straight."""
    pytest.importorskip(backend)
    if backend == "jax":
        request.getfixturevalue("jax64")  # float64 (jax_epochs turns it on; this turns it back)
    from derive.training.backends import BackendOptions, fit

    net = modules(CLF, "numpy")
    modules(CLF, backend)
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((43, 5)), rng.integers(0, 3, size=43)
    off = {"momentum": 0.8, "betas": (0.8, 0.99), "eps": 1e-6, "alpha": 0.9,
           "weight_decay": 0.02}  # every hyperparameter off its default (adamw's is 0.01)
    hyper = {key: off[key] for key in net.NETWORK.optimizers[optimizer]["hyperparameters"]}

    def trainer(epochs):
        return net.Trainer(optimizer=optimizer, learning_rate=0.05, batch_size=8, epochs=epochs,
                           seed=2, dtype="float64", engine="numpy", **hyper,
                           schedule={"name": "cosine", "T_max": 3})

    straight = trainer(3)
    straight.fit(X, Y)
    numpy_two, backend_two = trainer(2), trainer(2)
    numpy_two.fit(X, Y)
    fit(BackendOptions(backend), backend_two, net.__file__, X, Y)
    assert _max_rel(backend_two.params, numpy_two.params) < 1e-10
    for name, arrays in numpy_two.optimizer_state.items():
        assert _max_rel(backend_two.optimizer_state[name], arrays) < 1e-10, name
    assert backend_two.t == numpy_two.t == 12 and backend_two.epoch == 2
    assert backend_two.history["lr"] == numpy_two.history["lr"]
    backend_two.epochs = 1  # the third epoch on NumPy, from the state the backend handed back
    backend_two.fit(X, Y)
    assert _max_rel(backend_two.params, straight.params) < 1e-10


def test_cli_says_how_to_install_a_missing_framework(tmp_path, capsys, monkeypatch):
    import builtins

    from derive.cli import main

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert main(["--spec", str(DIGITS), "--out", str(tmp_path), "--train", "--backend",
                 "torch"]) == 2
    assert "pip install 'backprop-derive[torch]'" in capsys.readouterr().err


def test_piecewise_as_max_or_min_only_where_sympy_proves_it():
    """The torch printer's clamp form of a two-branch Piecewise: taken where the difference
    simplifies to 0 (ReLU, leaky ReLU, two mins), refused otherwise (ELU, a step, a kinked
    line that is neither)."""
    import sympy as sp

    from codegen.printers.frameworks import as_max_min

    z = sp.Symbol("z", real=True)
    alpha = sp.Rational(1, 10)
    assert as_max_min(sp.Piecewise((0, z <= 0), (z, True))) == sp.Max(0, z)
    assert as_max_min(sp.Piecewise((alpha * z, z <= 0), (z, True))) == sp.Max(alpha * z, z)
    assert as_max_min(sp.Piecewise((z, z <= 1), (1, True))) == sp.Min(1, z)
    assert as_max_min(sp.Piecewise((sp.exp(z) - 1, z <= 0), (z, True))) is None
    assert as_max_min(sp.Piecewise((0, z <= 0), (1, True))) is None
    assert as_max_min(sp.Piecewise((z, z <= 0), (0, True))) == sp.Min(0, z)
    assert as_max_min(sp.Piecewise((0, z <= 0), (2 * z - 1, True))) is None  # -1/2 at z = 1/4


def test_a_hand_written_file_is_not_overwritten_and_unprintable_is_a_clear_error(tmp_path):
    import sympy as sp

    from codegen.emit import Unprintable
    from codegen.files import WriteRefused
    from codegen.printers.frameworks import JaxCodePrinter, TorchCodePrinter

    mine = tmp_path / "clf_torch.py"
    mine.write_text("# my own file\n")
    with pytest.raises(WriteRefused):
        write_backend(derive(CLF), "torch", tmp_path)
    assert mine.read_text() == "# my own file\n"
    assert write_backend(derive(CLF), "torch", tmp_path, force=True) == mine
    z = sp.Symbol("z")
    for printer in (TorchCodePrinter, JaxCodePrinter):  # no spelling, no definition
        with pytest.raises(NotImplementedError, match="no spelling for"):
            printer({z: "z"}).doprint(sp.loggamma(z))
    from derive.activations import ACTIVATIONS, Activation
    from derive.netspec import ActivationSpec, LayerSpec, NetSpec

    lgamma = Activation("lgamma1p", r"\operatorname{lg}", lambda x: sp.loggamma(1 + x ** 2))
    with ACTIVATIONS.temporarily("lgamma1p", lgamma):
        spec = NetSpec("lg", 2, (LayerSpec(3, ActivationSpec("lgamma1p")),
                                 LayerSpec(1, ActivationSpec("identity"))), "mse")
        derivation = derive(spec)
        for backend in ("torch", "jax"):
            with pytest.raises(Unprintable, match=f"no {backend} spelling for .*_{backend}code"):
                render_backend(derivation, backend)


def test_cli_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    from derive.cli import main

    assert main(["--spec", str(DIGITS), "--out", str(tmp_path), "--train", "--backend", "torch",
                 "--device", "cuda"]) == 2
    assert "PyTorch sees no CUDA device here" in capsys.readouterr().err
