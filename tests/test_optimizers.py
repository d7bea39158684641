"""Update rules and schedules: the generated Trainer (every engine) equals an independent
float64 NumPy implementation of PyTorch's documented algorithms step for step; a resumed run
equals a straight one bit for bit; early stopping keeps the best epoch; nothing allocates per
step; old optimizer names keep their meaning and say the new spelling."""

from __future__ import annotations

import importlib.util
import math
import shutil
import tracemalloc
import warnings

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen.emit import write_module
from codegen.files import import_module_from
from derive.derivation import derive
from derive.netspec import ActivationSpec, LayerSpec, NetSpec, Regularization, TrainingSpec
from derive.optimizers import ETA, GRADIENT, OPTIMIZERS, SCHEDULES, THETA, Optimizer
from derive.spec import load_spec_text

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
ENGINES = ["numpy", "compiled"] if HAVE_NUMBA else ["numpy"]
EPOCHS = 3



def _away(default):
    """A hyperparameter value away from PyTorch's default, so that each one shows."""
    if isinstance(default, tuple):
        return tuple(round(0.97 * x, 6) for x in default)
    return 0.01 if default == 0 else round(0.9 * default, 12)


# every optimizer with every hyperparameter moved off its default
SETTINGS = {name: {h.name: _away(h.default) for h in OPTIMIZERS[name].hyperparameters}
            for name in OPTIMIZERS}


# ----------------------------------------------------------------------------- reference

REFERENCE = {}  # optimizer name -> one step of PyTorch's algorithm, written independently


def reference(name):
    def register(step):
        REFERENCE[name] = step
        return step
    return register


def _sgd_family(g, theta, state, t, lr, h, nesterov=False):
    """torch.optim.SGD as documented (dampening 0)."""
    g = g + h.get("weight_decay", 0.0) * theta
    mu = h.get("momentum", 0.0)
    if mu:
        state["b"] = g.copy() if t == 1 else mu * state["b"] + g
        g = g + mu * state["b"] if nesterov else state["b"]
    return theta - lr * g


@reference("sgd")
def _sgd(theta, g, state, t, lr, h):
    return _sgd_family(g, theta, state, t, lr, h)


@reference("momentum")
def _momentum(theta, g, state, t, lr, h):
    return _sgd_family(g, theta, state, t, lr, h)


@reference("nesterov")
def _nesterov(theta, g, state, t, lr, h):
    return _sgd_family(g, theta, state, t, lr, h, nesterov=True)


def _adam_family(theta, g, state, t, lr, h):
    """torch.optim.Adam's moments and step (amsgrad off), without its weight decay."""
    b1, b2 = h["betas"]
    state["m"] = b1 * state.get("m", 0 * g) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0 * g) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1 ** t)
    v_hat = state["v"] / (1 - b2 ** t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + h["eps"])


@reference("adam")
def _adam(theta, g, state, t, lr, h):
    return _adam_family(theta, g + h["weight_decay"] * theta, state, t, lr, h)


@reference("adamw")
def _adamw(theta, g, state, t, lr, h):
    return _adam_family(theta * (1 - lr * h["weight_decay"]), g, state, t, lr, h)


@reference("rmsprop")
def _rmsprop(theta, g, state, t, lr, h):
    """torch.optim.RMSprop as documented (not centered, no momentum)."""
    g = g + h["weight_decay"] * theta
    state["v"] = h["alpha"] * state.get("v", 0 * g) + (1 - h["alpha"]) * g * g
    return theta - lr * g / (np.sqrt(state["v"]) + h["eps"])


def torch_step(name, theta, g, state, t, lr, h):
    """One step of the PyTorch algorithm ``name`` for one tensor."""
    return REFERENCE[name](theta, g, state, t, lr, h)


def test_every_declared_optimizer_has_a_reference():
    assert set(REFERENCE) == set(OPTIMIZERS.names())


RATES = {}  # schedule name -> torch.optim.lr_scheduler's closed form after e epochs


def rate(name):
    def register(function):
        RATES[name] = function
        return function
    return register


@rate("constant")
def _constant(lr0, e, **_):
    return lr0


@rate("step")
def _step(lr0, e, step_size, gamma=0.1):
    return lr0 * gamma ** (e // step_size)


@rate("exponential")
def _exponential(lr0, e, gamma):
    return lr0 * gamma ** e


@rate("cosine")
def _cosine(lr0, e, T_max, eta_min=0.0):
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * e / T_max)) / 2


def torch_rate(schedule, lr0, e):
    params = {k: v for k, v in schedule.items() if k != "name"}
    return RATES[schedule["name"]](lr0, e, **params)


def _schedule_settings(name):
    """Every parameter of the schedule set: whole numbers of epochs, factors below 1."""
    values = {"step_size": 2, "T_max": 4, "gamma": 0.6, "eta_min": 0.001}
    return {"name": name, **{p: values[p] for p, _, _ in SCHEDULES[name].parameters}}


def reference_run(net, params, X, Y, name, hyper, lr0, batch, epochs, seed, schedule):
    """The Trainer's run recomputed with the module's functional backward and torch_step."""
    defaults = {key: value for key, value in net.NETWORK.optimizers[name]["hyperparameters"].items()}
    h = defaults | hyper
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    state = {k: {} for k in params}
    rng = np.random.default_rng(seed)
    m, t = X.shape[0], 0
    for e in range(epochs):
        lr = torch_rate(schedule, lr0, e)
        order = rng.permutation(m)
        for start in range(0, m, batch):
            rows = order[start:start + batch]
            grads = net.backward(params, net.forward(params, X[rows]), Y[rows])
            t += 1
            params = {k: torch_step(name, params[k], grads[k], state[k], t, lr, h) for k in params}
    return params


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A 3-5-4-3 tanh/relu/softmax network with an L2 penalty."""
    spec = NetSpec("opt_net", 3, (LayerSpec(5, ActivationSpec("tanh")), LayerSpec(4, ActivationSpec("relu")),
                                  LayerSpec(3, ActivationSpec("softmax"))),
                   "categorical_crossentropy", Regularization(l2=0.01))
    return import_module_from(write_module(derive(spec), tmp_path_factory.mktemp("opt")))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((37, 3))
    return X, rng.integers(0, 3, 37)


def _relative(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(b[k]) + 1e-12))) for k in b)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_equals_pytorchs_algorithm(net, data, name, engine):
    X, y = data
    hyper = SETTINGS[name]
    trainer = net.Trainer(optimizer=name, learning_rate=0.02, batch_size=8, epochs=EPOCHS,
                          seed=5, dtype=np.float64, engine=engine, **hyper)
    start = {k: v.copy() for k, v in trainer.params.items()}
    trainer.fit(X, y)
    Y = net.targets(y, len(y), np.float64)
    expected = reference_run(net, start, X, Y, name, hyper, 0.02, 8, EPOCHS, 5,
                             {"name": "constant"})
    assert _relative(trainer.params, expected) < 1e-10
    assert trainer.t == EPOCHS * math.ceil(37 / 8)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_equals_pytorchs(net, data, name, engine):
    schedule = _schedule_settings(name)
    X, y = data
    trainer = net.Trainer(optimizer="momentum", learning_rate=0.05, batch_size=10, epochs=4,
                          seed=2, dtype=np.float64, engine=engine, schedule=schedule)
    start = {k: v.copy() for k, v in trainer.params.items()}
    trainer.fit(X, y)
    assert trainer.history["lr"] == pytest.approx([torch_rate(schedule, 0.05, e) for e in range(4)],
                                                  rel=1e-14)
    expected = reference_run(net, start, X, net.targets(y, len(y), np.float64), "momentum", {},
                             0.05, 10, 4, 2, schedule)
    assert _relative(trainer.params, expected) < 1e-10


def test_every_declared_schedule_has_a_reference():
    assert set(RATES) == set(SCHEDULES.names())


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_plain_rule_takes_the_fused_step_and_others_the_gradient_step(net, name):
    trainer = net.Trainer(optimizer=name)
    assert trainer.plain == (name == "sgd")
    assert net.Trainer(optimizer="sgd", weight_decay=0.1).plain is False


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_rule_counts_its_steps(net, data, name, engine):
    """``t`` is the number of updates taken, the plain rule's fused steps included."""
    X, Y = data
    trainer = net.Trainer(optimizer=name, batch_size=8, epochs=3, engine=engine)
    trainer.fit(X, Y)
    assert trainer.t == 3 * -(-len(X) // 8)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_resumed_run_equals_a_straight_one_bit_for_bit(net, data, tmp_path, name):
    X, y = data
    common = dict(optimizer=name, learning_rate=0.01, batch_size=6, seed=4, dtype=np.float64,
                  schedule={"name": "cosine", "T_max": 10}, **SETTINGS[name])
    straight = net.Trainer(epochs=10, **common)
    straight.fit(X, y)
    first = net.Trainer(epochs=5, **common)
    first.fit(X, y)
    path = first.save(tmp_path / "half.npz")
    resumed = net.Trainer.load(path)
    assert resumed.epoch == 5 and resumed.t == first.t
    resumed.fit(X, y)
    for key in straight.params:
        assert np.array_equal(resumed.params[key], straight.params[key]), key
    assert resumed.history["loss"] == straight.history["loss"]


def test_early_stopping_keeps_the_best_epoch(net, data, tmp_path):
    X, y = data
    rng = np.random.default_rng(9)
    Xv, yv = rng.standard_normal((20, 3)), rng.integers(0, 3, 20)  # noise: it overfits
    trainer = net.Trainer(optimizer="adam", learning_rate=0.05, batch_size=8, epochs=200,
                          seed=1, dtype=np.float64,
                          early_stopping={"patience": 3, "restore_best": True})
    history = trainer.fit(X, y, validation=(Xv, yv))
    assert trainer.stopped_early and len(history["val_loss"]) < 200
    best = int(np.argmin(history["val_loss"])) + 1
    assert trainer.best_epoch == best
    assert len(history["val_loss"]) == best + 3
    path = trainer.save(tmp_path / "best.npz")
    saved = net.Trainer.load(path)
    assert saved.evaluate(Xv, yv)["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-12)


def test_optimizer_state_is_in_the_model_file(net, data, tmp_path):
    X, y = data
    trainer = net.Trainer(optimizer="adam", epochs=2, dtype=np.float64)
    trainer.fit(X, y)
    loaded = net.Trainer.load(trainer.save(tmp_path / "m"))
    for name in ("m", "v"):
        for key, value in trainer.optimizer_state[name].items():
            assert np.array_equal(loaded.optimizer_state[name][key], value)
            assert np.any(value != 0)


@pytest.mark.skipif(not HAVE_NUMBA, reason="the fused update is compiled by numba")
def test_a_step_with_state_allocates_nothing_per_step(tmp_path):
    spec = NetSpec("alloc_net", 64, (LayerSpec(256, ActivationSpec("relu")),
                                     LayerSpec(10, ActivationSpec("softmax"))),
                   "categorical_crossentropy")
    net = import_module_from(write_module(derive(spec), tmp_path))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = net.targets(rng.integers(0, 10, 512), 512, np.float32)  # dense: fit() copies nothing
    trainer = net.Trainer(optimizer="adam", batch_size=8, epochs=1, shuffle=False, engine="numpy")
    trainer.fit(X, y, track=False)  # buffers made, update compiled
    parameter_bytes = trainer._flat.nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        trainer.fit(X, y, track=False)  # 64 steps
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # fit's own checks of the targets take ~16 KB once; one temporary as large as the
    # parameters (what a NumPy update rule makes each step) would take 77 KB
    assert peak < parameter_bytes / 4, (peak, parameter_bytes)


def test_a_declared_optimizer_is_printed_and_trains_by_its_formula(tmp_path, data):
    """A rule declared in one place (sign descent: theta - eta sign(g), no state) is printed
    into the folder's _rules.py and the Trainer follows it exactly."""
    signs = Optimizer("sign_descent", "Sign descent", "no PyTorch class", (), (),
                      ((THETA, THETA - ETA * sp.sign(GRADIENT)),))
    with OPTIMIZERS.temporarily("sign_descent", signs):
        assert signs.plain_when is None
        spec = NetSpec("signs_net", 3, (LayerSpec(4, ActivationSpec("tanh")),
                                        LayerSpec(3, ActivationSpec("softmax"))),
                       "categorical_crossentropy", training=TrainingSpec(optimizer="sign_descent"))
        net = import_module_from(write_module(derive(spec), tmp_path))
    X, y = data
    trainer = net.Trainer(learning_rate=0.01, batch_size=37, epochs=3, dtype=np.float64)
    expected = {k: v.copy() for k, v in trainer.params.items()}
    trainer.fit(X, y)
    Y = net.targets(y, len(y), np.float64)
    for _ in range(3):
        grads = net.backward(expected, net.forward(expected, X), Y)
        expected = {k: expected[k] - 0.01 * np.sign(grads[k]) for k in expected}
    assert _relative(trainer.params, expected) < 1e-12


# ----------------------------------------------------------------------------- spellings

BASE = ("name: n\ninput: 3\nlayers:\n  - {units: 3, activation: softmax}\n"
        "loss: categorical_crossentropy\n")


@pytest.mark.parametrize("old, batch", [("batch", "full"), ("minibatch", 16)])
def test_old_optimizer_names_keep_their_meaning_and_say_the_new_spelling(old, batch):
    extra = ", batch_size: 16" if old == "minibatch" else ""
    spec = load_spec_text(BASE + f"training: {{optimizer: {old}{extra}}}\n", "old.yaml")
    assert (spec.training.optimizer, spec.training.batch_size) == ("sgd", batch)
    assert spec.training.learning_rate == 0.1  # the old default
    assert any("now spelled" in notice and "old.yaml:6" in notice for notice in spec.notices)


def test_sgd_with_a_batch_size_is_told_that_it_is_now_used():
    spec = load_spec_text(BASE + "training: {optimizer: sgd, batch_size: 8}\n", "s.yaml")
    assert spec.training.batch_size == 8
    assert any("now uses batch_size" in notice for notice in spec.notices)
    assert load_spec_text(BASE + "training: {optimizer: sgd}\n").training.batch_size == 1


def test_the_trainer_takes_old_names_with_a_warning(net, data):
    X, y = data
    with pytest.warns(FutureWarning, match="now spelled"):
        trainer = net.Trainer(optimizer="batch")
    assert (trainer.optimizer, trainer.batch_size, trainer.step_size(37)) == ("sgd", "full", 37)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert net.Trainer(optimizer="sgd").batch_size == 1  # the documents' SGD


def test_without_a_training_section_adam_at_pytorchs_rate():
    spec = load_spec_text(BASE)
    use = derive(spec).optimizer
    assert (use.name, use.learning_rate, use.batch_size) == ("adam", 1e-3, 32)
    assert spec.notices == ()


@pytest.mark.parametrize("text, message", [
    ("{optimizer: adam, momentum: 0.9}", "'momentum' is a hyperparameter of momentum, nesterov"),
    ("{optimizer: adam, betas: 0.9}", "expected a list of 2 numbers"),
    ("{optimizer: momentum, momentum: 1.5}", "expected a number >= 0 and < 1"),
    ("{batch_size: half}", "expected a whole number from 1 to 10000000 or 'full'"),
    ("{schedule: {name: step}}", "schedule step needs step_size"),
    ("{schedule: {name: cosine, T_max: 0}}", "expected a whole number >= 1"),
    ("{early_stopping: {patience: 0}}", "from 1 to"),
])
def test_bad_training_settings_are_located_errors(text, message):
    from derive.errors import SpecError

    with pytest.raises(SpecError) as info:
        load_spec_text(BASE + f"training: {text}\n", "t.yaml")
    assert message in str(info.value) and info.value.line == 6


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "adamax"}, "optimizer must be one of"),
    ({"optimizer": "adam", "momentum": 0.9}, "not a hyperparameter of adam"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": "0.1"}, "learning_rate must be"),
    ({"epochs": math.inf}, "epochs must be"),
    ({"schedule": "linear"}, "schedule must be one of"),
])
def test_bad_trainer_arguments_are_clear_errors(net, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        net.Trainer(**kwargs)


# ----------------------------------------------------------------------------- LaTeX, CLI

@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_the_latex_shows_each_rule_with_its_state_and_hyperparameters(name):
    from derive.latex import render_latex

    spec = load_spec_text(BASE + f"training: {{optimizer: {name}, schedule: {{name: step, "
                                 "step_size: 3}}\n", "rule.yaml")
    tex = render_latex(derive(spec), body_only=True)
    rule = OPTIMIZERS[name]
    assert rf"\subsection{{The update rule: {rule.title}}}" in tex
    for _, meaning in rule.state + rule.locals_:
        assert meaning in tex
    for h in rule.hyperparameters:
        assert h.name.replace("_", r"{\char95}\allowbreak{}") in tex
    assert r"\leftarrow" in tex and "step decay schedule" in tex


def test_the_adam_rule_golden_fragment():
    from derive.latex import render_latex

    tex = render_latex(derive(load_spec_text(BASE + "training: {optimizer: adam}\n", "a.yaml")),
                       body_only=True)
    assert "\n".join([
        r"g &\leftarrow g + \lambda_{wd} \theta \notag \\",
        r"m &\leftarrow \beta_{1} m + g \left(1 - \beta_{1}\right) \notag \\",
        r"v &\leftarrow \beta_{2} v + g^{2} \left(1 - \beta_{2}\right) \notag \\",
        r"\hat{m} &\leftarrow \frac{m}{1 - \beta_{1}^{t}} \notag \\",
        r"\hat{v} &\leftarrow \frac{v}{1 - \beta_{2}^{t}} \notag \\",
        r"\theta &\leftarrow \theta - \frac{\eta \hat{m}}{\epsilon + \sqrt{\hat{v}}} \notag",
    ]) in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not on PATH")
def test_a_document_with_adam_and_a_schedule_compiles(tmp_path):
    from derive.latex import write_latex

    spec = load_spec_text(BASE + "training: {optimizer: adamw, schedule: cosine}\n", "w.yaml")
    out = write_latex(derive(spec), tmp_path / "w.tex", pdf=True)
    assert out.pdf.exists() and "AdamW" in (tmp_path / "w.tex").read_text()


DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp.yaml"


def test_cli_resume_continues_exactly(tmp_path, capsys):
    from derive.cli import main

    common = ["--spec", str(DIGITS), "--out", str(tmp_path / "gen"), "--train", "-q"]
    assert main(common + ["--epochs", "3", "--save-dir", str(tmp_path / "straight")]) == 0
    assert main(common + ["--epochs", "2", "--save-dir", str(tmp_path / "half")]) == 0
    assert main(common + ["--resume", str(tmp_path / "half" / "digits_mlp.npz"), "--epochs", "1",
                          "--save-dir", str(tmp_path / "resumed")]) == 0
    with np.load(tmp_path / "straight" / "digits_mlp.npz") as a, \
            np.load(tmp_path / "resumed" / "digits_mlp.npz") as b:
        for key in a.files:
            if key != "__settings__":
                assert np.array_equal(a[key], b[key]), key
    assert main(common + ["--resume", str(tmp_path / "half" / "digits_mlp.npz"),
                          "--optimizer", "sgd"]) == 2
    assert "cannot change it" in capsys.readouterr().err


def test_cli_patience_keeps_the_best_epoch(tmp_path, capsys):
    import json

    from derive.cli import main

    assert main(["--spec", str(DIGITS), "--out", str(tmp_path / "gen"), "--train", "-q",
                 "--epochs", "40", "--learning-rate", "0.02", "--patience", "2",
                 "--save-dir", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    history = [record["val_loss"] for record in summary["history"]]
    assert summary["best_epoch"] == int(np.argmin(history)) + 1
    assert summary["validation"]["loss"] == pytest.approx(min(history), rel=1e-6)
    assert "restored the best epoch" in capsys.readouterr().out


# ----------------------------------------------------------------------------- faults

def test_a_loss_that_grows_far_above_its_start_is_divergence_without_warnings(net, data):
    import warnings as w

    X, y = data
    trainer = net.Trainer(optimizer="sgd", batch_size=4, learning_rate=900.0, epochs=30,
                          dtype=np.float64)
    with w.catch_warnings():
        w.simplefilter("error")  # no RuntimeWarning on the way
        with pytest.raises(net.TrainingDiverged, match="grew from|became"):
            trainer.fit(X, y)


@pytest.mark.parametrize("where", ["X", "validation"])
def test_non_finite_inputs_are_refused_up_front(net, data, where):
    X, y = data
    bad = X.copy()
    bad[4, 1] = np.nan
    trainer = net.Trainer(epochs=1)
    with pytest.raises(ValueError, match="row 4, column 1"):
        if where == "X":
            trainer.fit(bad, y)
        else:
            trainer.fit(X, y, validation=(bad, y))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [1, 4, "full"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_no_update_is_ever_lost(net, data, engine, dtype, batch_size, name):
    """Every dtype x engine x batch size, the plain and a stateful rule: after one epoch from
    parameters given in the other dtype, every parameter array has moved, by the functional
    step's amount for the plain rule."""
    X, y = data
    other = np.float64 if dtype == np.float32 else np.float32
    given = net.init_params(seed=3, dtype=other)
    trainer = net.Trainer(params=given, optimizer=name, learning_rate=0.01, batch_size=batch_size,
                          epochs=1, shuffle=False, dtype=dtype, engine=engine)
    assert all(v.dtype == dtype for v in trainer.params.values())
    trainer.fit(X, y, track=False)
    for key, value in trainer.params.items():
        assert np.all(np.isfinite(value))
        assert np.max(np.abs(value - given[key].astype(dtype))) > 1e-6, key
    if name == "sgd":
        expected = {k: v.astype(np.float64) for k, v in given.items()}
        size = len(y) if batch_size == "full" else batch_size
        Y = net.targets(y, len(y), np.float64)
        for start in range(0, len(y), size):
            grads = net.backward(expected, net.forward(expected, X[start:start + size]),
                                 Y[start:start + size])
            expected = {k: expected[k] - 0.01 * grads[k] for k in expected}
        tolerance = 1e-9 if dtype == np.float64 else 2e-4
        for key in expected:
            np.testing.assert_allclose(trainer.params[key], expected[key], rtol=tolerance,
                                       atol=tolerance, err_msg=key)
