"""The memory estimate from a spec, and the refusal of a network that cannot fit."""

from __future__ import annotations

import pytest

import derive.resources
from derive.cli import main
from derive.errors import SpecError
from derive.resources import (ACTIVATION_COPIES, PARAMETER_COPIES, available_memory, check_fits,
                              estimate)
from derive.spec import load_spec_text

HUGE = """\
name: huge
input: 10
layers:
  - {units: 100000, activation: relu}
  - {units: 100000, activation: relu}
  - {units: 10, activation: softmax}
loss: categorical_crossentropy
"""


def _spec(text=HUGE, source="huge.yaml"):
    return load_spec_text(text, source)


def test_the_estimate_counts_parameters_copies_and_one_batch():
    spec = _spec()
    parameters = 10 * 100_000 + 100_000 + 100_000 * 100_000 + 100_000 + 100_000 * 10 + 10
    for dtype, size in (("float32", 4), ("float64", 8)):
        needed = estimate(spec, 64, dtype)
        assert needed.parameters == parameters
        assert needed.parameter_bytes == parameters * size
        activations = 64 * (10 + 100_000 + 100_000 + 10) * ACTIVATION_COPIES
        assert needed.step_bytes == (parameters * PARAMETER_COPIES + activations) * size


def test_a_network_that_does_not_fit_is_refused_with_the_figures(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE, encoding="utf-8")
    spec = load_spec_text(HUGE, str(path))
    with pytest.raises(SpecError) as info:
        check_fits(spec, 64, "float32", "training", available=16 * 2**30)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 5, "layers[1].units")
    assert "10,002,200,010 parameters" in err.message and "37.3 GiB in float32" in err.message
    assert "16.0 GiB of memory is available" in err.message
    assert "100,000 x 100,000" in err.hint


def test_a_small_network_fits():
    spec = _spec(HUGE.replace("100000", "100"))
    assert check_fits(spec, 64, "float32", "training", available=2**30).parameters > 0


def test_available_memory_is_known_here():
    available = available_memory()
    assert available is None or available > 0


@pytest.mark.parametrize("flag", ["--check", "--train"])
def test_the_command_refuses_before_writing_or_allocating(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setattr(derive.resources, "available_memory", lambda: 8 * 2**30)
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--spec", str(path), "--out", str(out), flag]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: layers[1].units:" in err and "8.0 GiB of memory is available" in err
    assert "Traceback" not in err and not out.exists()
