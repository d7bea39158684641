"""The ``derive`` command: exit codes, messages, safe and atomic writes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import codegen.files
import derive
import derive.proof
from codegen.files import GENERATED_MARKER
from derive.cli import EXIT_INTERRUPTED, build_parser, main
from derive.optimizers import LEGACY_OPTIMIZERS, OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "examples" / "seed003_sigmoid_2_2_1.yaml"  # name: sigmoid_2_2_1
TARGET = "sigmoid_2_2_1.py"
RUNTIME = "_runtime.py"  # the code every generated module shares, beside it
RULES = "_rules.py"  # the update rules and schedules every module shares
WRITTEN = ["__init__.py", RULES, RUNTIME, TARGET]

BAD_SPEC = """\
name: bad_net
input: 3
layers:
  - {units: 4, activation: rleu}
  - {units: 3, activation: softmax}
loss: categorical_crossentropy
"""

HAND_WRITTEN = "# my own module, written by hand\nVALUE = 42\n"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_writes_module_and_package_init(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--spec", str(SMALL), "--out", str(out)]) == 0
    assert _files(out) == WRITTEN
    text = (out / TARGET).read_text(encoding="utf-8")
    assert text.startswith(GENERATED_MARKER)
    assert (out / "__init__.py").read_text(encoding="utf-8").startswith(GENERATED_MARKER)
    printed = capsys.readouterr()
    assert f"-> {out / TARGET}" in printed.out
    assert "2-2-1" in printed.out and "binary_crossentropy" in printed.out
    assert printed.err == ""
    # the same bytes as the committed module of the same spec
    assert text == (ROOT / "generated" / TARGET).read_text(encoding="utf-8")


def test_several_specs_and_quiet(tmp_path, capsys):
    specs = [str(ROOT / "examples" / n) for n in ("seed003_binary.yaml", "seed002_relu_sigmoid.yaml")]
    assert main(["--spec", *specs, "--out", str(tmp_path), "-q"]) == 0
    assert _files(tmp_path) == ["__init__.py", RULES, RUNTIME, "relu_sigmoid_mse.py",
                               "sigmoid_bce_4_4_1.py"]
    assert capsys.readouterr().out == ""


def test_written_files_are_readable_like_any_new_file(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the result must get the usual mode."""
    mask = os.umask(0)
    os.umask(mask)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "-q"]) == 0
    for name in ("__init__.py", TARGET):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o666 & ~mask, f"{name} has mode {oct(mode)}"


def test_python_dash_m_derive(tmp_path):
    out = tmp_path / "gen"
    done = subprocess.run([sys.executable, "-m", "derive", "--spec", str(SMALL), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _files(out) == WRITTEN
    assert TARGET in done.stdout
    # the written package imports from its parent folder
    check = subprocess.run([sys.executable, "-c",
                            "import gen.sigmoid_2_2_1 as n; print(n.LAYER_SIZES)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "(2, 2, 1)"


def test_check_passes(tmp_path, capsys):
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check"]) == 0
    printed = capsys.readouterr()
    assert "proof of sigmoid_2_2_1" in printed.out
    assert "finite differences" in printed.out and "agree" in printed.out
    assert "DISAGREE" not in printed.out + printed.err and "FAILED" not in printed.out + printed.err


def test_failed_proof_exits_1(tmp_path, capsys, monkeypatch):
    def failing(spec, **kwargs):
        return derive.proof.ProofReport(
            spec_name=spec.name, instance=spec.layer_sizes,
            activations=tuple(layer.activation.name for layer in spec.layers), loss=spec.loss,
            note="", parameters=9, points=1, seconds=0.0,
            mismatches=(derive.proof.Mismatch("dW1", (1, 1), 0, 1.0, 2.0),))

    monkeypatch.setattr(derive.proof, "prove_spec", failing)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check"]) == 1
    printed = capsys.readouterr()
    assert "FAILED for dW1" in printed.err
    assert "Traceback" not in printed.err


def test_failed_finite_differences_exit_1(tmp_path, capsys, monkeypatch):
    import codegen.fdcheck

    real = codegen.fdcheck.finite_difference_check
    monkeypatch.setattr(codegen.fdcheck, "finite_difference_check",
                        lambda module, **kw: real(module, tolerance=0.0, **kw))
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check"]) == 1
    assert "DISAGREE" in capsys.readouterr().err


def test_bad_spec_exits_2_without_traceback_or_output(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--spec", str(spec), "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert f"{spec}:4:" in printed.err
    assert "layers[0].activation" in printed.err and "unknown activation 'rleu'" in printed.err
    assert "hint: did you mean 'relu'?" in printed.err
    assert "Traceback" not in printed.err
    assert printed.out == ""
    assert _files(out) == []


def test_bad_spec_among_good_ones_still_writes_the_good_ones(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    assert main(["--spec", str(spec), str(SMALL), "--out", str(tmp_path / "out")]) == 2
    assert _files(tmp_path / "out") == WRITTEN
    assert "rleu" in capsys.readouterr().err


def test_missing_spec_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["--spec", str(missing), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr()
    assert str(missing) in printed.err and "cannot read" in printed.err
    assert "Traceback" not in printed.err
    assert _files(tmp_path / "out") == []


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "--spec" in capsys.readouterr().err


def test_optimizer_choices_are_the_update_rules(capsys):
    parser = build_parser()
    for name in [*OPTIMIZERS.names(), *LEGACY_OPTIMIZERS]:
        assert parser.parse_args(["--spec", "x", "--optimizer", name]).optimizer == name
    help_text = " ".join(parser.format_help().split())
    assert all(OPTIMIZERS[name].title in help_text for name in OPTIMIZERS)
    with pytest.raises(SystemExit) as info:
        main(["--spec", str(SMALL), "--train", "--optimizer", "adagrad"])
    assert info.value.code == 2 and "invalid choice: 'adagrad'" in capsys.readouterr().err


def test_ctrl_c_exits_with_the_interrupted_status(tmp_path, capsys, monkeypatch):
    import derive.spec

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(derive.spec, "load_spec", interrupted)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path)]) == EXIT_INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err
    assert _files(tmp_path) == []


def test_version_is_written_once():
    """pyproject.toml reads the version from derive.__version__ instead of repeating it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "derive.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", derive.__version__)


def test_refuses_to_overwrite_a_hand_written_file(tmp_path, capsys):
    target = tmp_path / TARGET
    target.write_text(HAND_WRITTEN, encoding="utf-8")
    assert main(["--spec", str(SMALL), "--out", str(tmp_path)]) == 2
    printed = capsys.readouterr()
    assert "was not written by backprop-derive" in printed.err and "--force" in printed.err
    assert "Traceback" not in printed.err
    assert target.read_text(encoding="utf-8") == HAND_WRITTEN
    assert not [n for n in _files(tmp_path) if n.endswith(".tmp")]

    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--force"]) == 0
    assert target.read_text(encoding="utf-8").startswith(GENERATED_MARKER)


def test_regenerated_file_is_overwritten_without_force(tmp_path):
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "-q"]) == 0
    target = tmp_path / TARGET
    fresh = target.read_text(encoding="utf-8")
    target.write_text(fresh.splitlines(keepends=True)[0] + "# stale body\n", encoding="utf-8")
    target.chmod(0o640)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "-q"]) == 0
    assert target.read_text(encoding="utf-8") == fresh
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the file keeps its mode


def test_write_is_atomic(tmp_path, capsys, monkeypatch):
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "-q"]) == 0
    assert _files(tmp_path) == WRITTEN  # no temporary file left over
    target = tmp_path / TARGET
    stale = target.read_text(encoding="utf-8").splitlines(keepends=True)[0] + "# stale body\n"
    target.write_text(stale, encoding="utf-8")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(codegen.files.os, "replace", fail)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path)]) == 2
    printed = capsys.readouterr()
    assert "cannot write" in printed.err and "No space left on device" in printed.err
    assert "Traceback" not in printed.err
    assert target.read_text(encoding="utf-8") == stale
    assert _files(tmp_path) == WRITTEN


# ----------------------------------------------------------------------------- exit statuses

def test_an_internal_error_is_one_line_with_status_3(tmp_path, capsys, monkeypatch):
    import derive.derivation
    from derive.cli import EXIT_INTERNAL

    def broken(spec):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(derive.derivation, "derive", broken)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path)]) == EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error, please report it: ZeroDivisionError: division by zero" in err
    assert "--verbose" in err
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--verbose"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error, please report it" in err


def test_ctrl_c_in_training_stops_the_whole_command(tmp_path, monkeypatch):
    import derive.training

    calls = []

    class Interrupted:
        interrupted = True

    def run(spec, target, options, data=None):
        calls.append(spec.name)
        return Interrupted()

    monkeypatch.setattr(derive.training, "run", run)
    specs = [str(ROOT / "examples" / n) for n in ("breast_cancer_mlp.yaml", "digits_mlp.yaml")]
    assert main(["--spec", *specs, "--out", str(tmp_path), "--train", "-q"]) == EXIT_INTERRUPTED
    assert calls == ["breast_cancer_mlp"]  # the second spec never started


def test_two_specs_with_one_name_are_refused_before_writing(tmp_path, capsys):
    other = tmp_path / "copy.yaml"
    other.write_text(SMALL.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--spec", str(SMALL), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other}: network name 'sigmoid_2_2_1' is also the name in {SMALL}" in err
    assert "nothing was written" in err and not out.exists()


@pytest.mark.parametrize("out, message", [("afile.txt", "is a file, not a folder"),
                                          ("", "--out needs a folder name")])
def test_a_bad_out_argument_is_a_usage_error(tmp_path, capsys, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["--spec", str(SMALL), "--out", out])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt"]


def test_the_runtime_name_is_refused_before_writing(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(SMALL.read_text(encoding="utf-8").replace("name: sigmoid_2_2_1",
                                                              "name: _runtime"), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--spec", str(spec), "--out", str(out)]) == 2
    assert "is taken by a file every" in capsys.readouterr().err and not out.exists()


def test_a_proof_budget_that_runs_out_exits_1(tmp_path, capsys):
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check",
                 "--proof-budget", "0"]) == 1
    err = capsys.readouterr().err
    assert "INCOMPLETE" in err and "--proof-budget" in err and "Traceback" not in err


def test_proof_budget_goes_with_check(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--spec", str(SMALL), "--proof-budget", "5"])
    assert info.value.code == 2 and "--proof-budget goes with --check" in capsys.readouterr().err


def test_proof_progress_is_shown_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check"]) == 0
    shown = terminal.getvalue()
    assert "\r" in shown and "checks" in shown and shown.endswith("\r")  # cleared at the end
    monkeypatch.undo()
    assert main(["--spec", str(SMALL), "--out", str(tmp_path), "--check"]) == 0
    assert "\r" not in capsys.readouterr().err  # a pipe or log gets no progress line


def test_latex_file_gets_its_suffix_and_several_specs_need_a_folder(tmp_path, capsys):
    spec = str(ROOT / "examples" / "seed002_relu_sigmoid.yaml")
    assert main(["--spec", spec, "--out", str(tmp_path / "g"), "--latex",
                 str(tmp_path / "notes"), "-q"]) == 0
    assert (tmp_path / "notes.tex").is_file() and not (tmp_path / "notes").exists()
    other = str(ROOT / "examples" / "seed000_shallow.yaml")
    with pytest.raises(SystemExit) as info:
        main(["--spec", spec, other, "--latex", str(tmp_path / "two.tex")])
    assert info.value.code == 2 and "names a folder" in capsys.readouterr().err
    assert not (tmp_path / "two.tex").exists()


def test_train_without_a_data_section_says_what_to_set(tmp_path, capsys):
    spec = str(ROOT / "examples" / "seed002_relu_sigmoid.yaml")  # 4 inputs, no data:
    assert main(["--spec", spec, "--out", str(tmp_path / "g"), "--train", "--epochs", "1",
                 "--save-dir", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "the spec has no data: section, so --train used the default data set, digits" in err
    assert "data: {dataset: iris}" in err
