"""engine="auto" decides by figures measured on the machine it runs on (kept per machine and
network in the tool's cache folder), else by the module's rule; ``Trainer.engine_choice``
says which engine ran and why."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from codegen import runtime

pytest.importorskip("numba")

from test_codegen import grid_spec  # noqa: E402


@pytest.fixture
def net(build):
    return build(grid_spec("tanh", "softmax", "categorical_crossentropy", False))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_DERIVE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / runtime.EngineTimes.FILE


def _data(net, m=300):
    rng = np.random.default_rng(0)
    return rng.standard_normal((m, net.LAYER_SIZES[0])), rng.integers(0, net.LAYER_SIZES[-1], m)


def test_calibrate_measures_both_engines_and_keeps_the_figures(net, cache, monkeypatch):
    X, y = _data(net)
    said = net.Trainer(batch_size=8).calibrate(X, y)
    assert said.split(":")[0] in ("numpy", "compiled")
    assert "measured on this machine" in said and "batch 8" in said
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["numpy"] > 0 and entry["compiled"] > 0
    # a later Trainer of the same network reads them: it measures nothing
    monkeypatch.setattr(net.Trainer, "_measure", lambda *a: pytest.fail("measured again"))
    trainer = net.Trainer(batch_size=8, epochs=1)
    trainer.fit(X, y, track=False)
    assert trainer.engine_choice == said


@pytest.mark.parametrize("faster", ["numpy", "compiled"])
def test_auto_takes_the_engine_that_was_faster_here(net, cache, faster):
    trainer = net.Trainer(batch_size=16, epochs=1)
    store = runtime.EngineTimes()
    key = store.key(__import__("sys").modules[type(trainer).__module__], 16, trainer.dtype,
                    trainer.plain)
    slower = "compiled" if faster == "numpy" else "numpy"
    store.put(key, {faster: 1e-6, slower: 2e-6})
    X, y = _data(net)
    trainer.fit(X, y, track=False)
    assert trainer.compiled(16) == (faster == "compiled")
    assert trainer.engine_choice.startswith(f"{faster}: measured on this machine")
    # another batch size has no figures: the module's rule, and a note saying so
    other = net.Trainer(batch_size=4, epochs=1)
    other.fit(X, y, track=False)
    assert "the module's rule for batch 4" in other.engine_choice
    assert other.compiled(4) == (4 <= net.Trainer.network.compiled_max_batch)


def test_a_short_fit_does_not_measure_and_a_long_one_does(net, cache, monkeypatch):
    X, y = _data(net)
    short = net.Trainer(batch_size=8, epochs=1)
    short.fit(X, y, track=False)
    assert "no figures for this machine yet" in short.engine_choice and not cache.exists()
    monkeypatch.setattr(net.Trainer, "CALIBRATE_SECONDS", 0.0)  # every fit is long
    long = net.Trainer(batch_size=8, epochs=1)
    long.fit(X, y, track=False)
    assert "measured on this machine" in long.engine_choice and cache.exists()


@pytest.mark.parametrize("ready", [False, True])
def test_a_fit_shorter_than_compiling_keeps_numpy_until_the_kernel_is_compiled(
        net, cache, monkeypatch, ready):
    monkeypatch.setattr(net.Trainer, "_kernel_ready", lambda self: ready)
    X, y = _data(net)
    trainer = net.Trainer(batch_size=8, epochs=1)
    trainer.fit(X, y, track=False)
    if ready:  # compiled in this process already: the module's rule
        assert "the module's rule for batch 8" in trainer.engine_choice
    else:
        assert trainer.engine_choice.startswith("numpy: a fit estimated at ")
        assert "shorter than compiling its kernel" in trainer.engine_choice
    assert "no figures for this machine yet" in trainer.engine_choice and not cache.exists()


def test_an_asked_engine_is_said_and_never_measured(net, cache, monkeypatch):
    monkeypatch.setattr(net.Trainer, "_measure", lambda *a: pytest.fail("measured"))
    X, y = _data(net, 40)
    for engine in ("numpy", "compiled"):
        trainer = net.Trainer(engine=engine, batch_size=8, epochs=1)
        trainer.fit(X, y, track=False)
        assert trainer.engine_choice == f"{engine}: engine='{engine}' was asked"


def test_an_unwritable_or_damaged_cache_is_measured_again_not_an_error(net, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BACKPROP_DERIVE_CACHE", str(blocker / "cache"))
    X, y = _data(net, 64)
    assert "measured on this machine" in net.Trainer(batch_size=8).calibrate(X, y)
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / runtime.EngineTimes.FILE).write_text("{not json")
    monkeypatch.setenv("BACKPROP_DERIVE_CACHE", str(folder))
    assert "measured on this machine" in net.Trainer(batch_size=8).calibrate(X, y)
    assert json.loads((folder / runtime.EngineTimes.FILE).read_text())  # rewritten whole


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BACKPROP_DERIVE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runtime.cache_root() == os.path.join(str(tmp_path), "backprop-derive")
    monkeypatch.setenv("BACKPROP_DERIVE_CACHE", str(tmp_path / "x"))
    assert runtime.cache_root() == str(tmp_path / "x")
