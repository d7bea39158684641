"""``derive --train``: the run end to end, its report against an independent computation
(scikit-learn's metrics), the saved files, progress output, plots, errors and Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

import derive.training.runner as training_run
from codegen.files import import_module_from
from codegen.emit import write_module
from derive.cli import main
from derive.derivation import derive
from derive.spec import load_spec
from derive.training import StopFlag, TrainOptions, run
from derive.training.progress import BAR, EpochDisplay, choose_mode, epoch_line
from derive.training.report import (classification_metrics, confusion_matrix,
                                    regression_metrics, write_json)
from derive.training.runner import load_prepared, stop_on_interrupt

from test_data import write_mnist

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DIGITS = EXAMPLES / "digits_mlp.yaml"
BREAST_CANCER = EXAMPLES / "breast_cancer_mlp.yaml"
DIABETES = EXAMPLES / "diabetes_mlp.yaml"


def _train(capsys, spec: Path, tmp_path: Path, *extra: str, status: int = 0):
    """``derive --spec SPEC --out tmp/gen --train --save-dir tmp/run EXTRA``: its output and
    summary."""
    argv = ["--spec", str(spec), "--out", str(tmp_path / "gen"), "--train",
            "--save-dir", str(tmp_path / "run"), *extra]
    assert main(argv) == status
    printed = capsys.readouterr()
    summary_path = tmp_path / "run" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return printed, summary


def _trained(tmp_path: Path, spec_path: Path, summary: dict):
    """The saved network reloaded with the generated module's own Trainer.load, and the
    test split rebuilt from the spec: everything a later user has."""
    spec = load_spec(spec_path)
    module = import_module_from(tmp_path / "gen" / f"{spec.name}.py")
    trainer = module.Trainer.load(tmp_path / "run" / summary["files"]["parameters"])
    assert trainer.preprocessing is not None  # it would take raw rows (tests/test_model_file.py)
    trainer.preprocessing = None  # here: the prepared rows, as the run predicted them
    _, prepared = load_prepared(spec, module.TASK)
    return module, trainer, prepared


# ----------------------------------------------------------------------------- end to end

def test_digits_end_to_end(tmp_path, capsys):
    printed, summary = _train(capsys, DIGITS, tmp_path, "--epochs", "3")
    out = printed.out
    assert printed.err == ""
    assert "training digits_mlp (64-128-64-10, categorical_crossentropy) on digits" in out
    assert ("1294 training, 144 validation and 359 test examples (stratified random 20% test "
            "split, seed 0; 10% of the training part for validation)") in out
    assert ("Adam (torch.optim.Adam; betas 0.9, 0.999, eps 1e-08, weight_decay 0), mini-batch "
            "gradient descent: learning rate 0.001, batch size 32, 3 epochs") in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    # validation figures each epoch; the test set only once, at the end
    assert all("val accuracy" in line and "test" not in line for line in epoch_lines)
    assert "digits_mlp on digits after 3 epochs in" in out and "test accuracy 0." in out
    assert "test confusion matrix (rows: true class, columns: predicted class)" in out
    run_dir = tmp_path / "run"
    assert f"saved {run_dir / 'digits_mlp.npz'} and {run_dir / 'summary.json'}" in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["digits_mlp.npz", "summary.json"]
    # the module --train wrote is the committed one
    assert ((tmp_path / "gen" / "digits_mlp.py").read_text()
            == (ROOT / "generated" / "digits_mlp.py").read_text())

    assert summary["name"] == "digits_mlp" and summary["layer_sizes"] == [64, 128, 64, 10]
    assert summary["settings"] == {
        "optimizer": "adam", "learning_rate": 0.001, "batch_size": 32, "epochs": 3,
        "shuffle": True, "seed": 0, "dtype": "float32",
        "hyperparameters": {"betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0},
        "schedule": {"name": "constant"}, "early_stopping": None}
    assert summary["overrides"] == {"epochs": 3}
    assert summary["epochs_completed"] == 3 and summary["interrupted"] is False
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3]
    assert set(summary["history"][0]) == {"epoch", "loss", "accuracy", "val_loss",
                                          "val_accuracy", "lr", "seconds"}
    data = summary["data"]
    assert data["dataset"] == "digits" and data["classes"] == list("0123456789")
    assert data["train_examples"] == 1294 and data["validation_examples"] == 144
    assert data["test_examples"] == 359
    assert data["scaling"] == "x/16" and data["label_mapping"] is None
    test = summary["test"]
    assert np.sum(test["confusion_matrix"]) == 359 == test["examples"]
    assert 0 < test["loss"] < summary["history"][0]["loss"]
    assert set(summary["timings"]) == {"load_seconds", "train_seconds", "evaluate_seconds",
                                       "total_seconds"}


def test_classification_report_matches_scikit_learn(tmp_path, capsys):
    _, summary = _train(capsys, DIGITS, tmp_path, "--epochs", "2", "-q")
    module, trainer, prepared = _trained(tmp_path, DIGITS, summary)
    truth, predicted = prepared.truth_test, trainer.predict(prepared.X_test)
    test = summary["test"]
    assert test["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert test["correct"] == int(np.sum(truth == predicted))
    np.testing.assert_array_equal(test["confusion_matrix"],
                                  skm.confusion_matrix(truth, predicted, labels=range(10)))
    recall = skm.recall_score(truth, predicted, average=None, labels=range(10))
    np.testing.assert_allclose([test["per_class_accuracy"][str(c)] for c in range(10)], recall)
    # and the generated module's own figures agree
    figures = trainer.evaluate(prepared.X_test, truth)
    assert figures["accuracy"] == pytest.approx(test["accuracy"])
    assert figures["loss"] == pytest.approx(test["loss"], rel=1e-5)
    assert {str(c): v for c, v in figures["per_class_accuracy"].items()} == \
        pytest.approx(test["per_class_accuracy"])


def test_binary_report(tmp_path, capsys):
    printed, summary = _train(capsys, BREAST_CANCER, tmp_path, "--epochs", "5")
    assert "0 malignant" in printed.out and "1 benign" in printed.out
    module, trainer, prepared = _trained(tmp_path, BREAST_CANCER, summary)
    truth, predicted = prepared.truth_test, trainer.predict(prepared.X_test)
    assert summary["data"]["classes"] == ["malignant", "benign"]
    assert summary["data"]["feature_standardisation"] is not None
    np.testing.assert_array_equal(summary["test"]["confusion_matrix"],
                                  skm.confusion_matrix(truth, predicted, labels=[0, 1]))
    assert summary["test"]["per_class_accuracy"]["malignant"] == pytest.approx(
        skm.recall_score(truth, predicted, pos_label=0))


def test_regression_report_in_original_units(tmp_path, capsys):
    printed, summary = _train(capsys, DIABETES, tmp_path, "--epochs", "20")
    assert "test R² 0." in printed.out and "(disease progression, original units)" in printed.out
    assert all(" R² " in line for line in printed.out.splitlines() if line.startswith("epoch"))
    module, trainer, _ = _trained(tmp_path, DIABETES, summary)
    # rebuild the predictions from the saved files alone: raw data, the split, saved scalings
    from derive.training.data import load_dataset
    from derive.training.prepare import random_split

    data = load_dataset("diabetes")
    _, test_rows = random_split(data.n_examples, 0.2, summary["split_seed"])
    features, target = (summary["data"]["feature_standardisation"],
                        summary["data"]["target_standardisation"])
    X = (data.X[test_rows] - features["mean"]) / features["scale"]
    predicted = trainer.predict(X.astype(np.float32)) * target["scale"] + target["mean"]
    truth = data.y[test_rows]
    test = summary["test"]
    assert test["r2"] == pytest.approx(skm.r2_score(truth, predicted), rel=1e-5)
    rmse = np.sqrt(skm.mean_squared_error(truth, predicted))
    assert test["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert test["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted), rel=1e-5)
    assert test["rmse"] > 20  # in the target's units (about 25..346), not standardised ones
    assert "test_r2" not in summary["history"][-1]  # test figures only at the end
    assert summary["validation"]["r2"] == pytest.approx(summary["history"][-1]["val_r2"], rel=1e-5)


def test_csv_with_string_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["width,height,species"]
    for i in range(90):
        kind = ("setosa", "virginica", "versicolor")[i % 3]
        centre = {"setosa": (0, 0), "versicolor": (4, 0), "virginica": (0, 4)}[kind]
        x, y = rng.normal(centre, 0.5)
        rows.append(f"{x:.3f},{100 + 10 * y:.3f},{kind}")
    (tmp_path / "plants.csv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "plants.yaml"
    spec.write_text("name: plants\ninput: 2\nlayers:\n  - {units: 8, activation: tanh}\n"
                    "  - {units: 3, activation: softmax}\nloss: categorical_crossentropy\n"
                    "training: {epochs: 40, learning_rate: 0.2, batch_size: 8}\n"
                    "data: {dataset: 'csv:plants.csv', target: species, test_fraction: 0.3}\n")
    printed, summary = _train(capsys, spec, tmp_path)
    assert summary["data"]["label_mapping"] == {"setosa": 0, "versicolor": 1, "virginica": 2}
    assert summary["data"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert summary["data"]["test_examples"] == 27
    assert summary["test"]["accuracy"] > 0.9
    assert "2 virginica" in printed.out


def test_mse_network_on_classes_reports_accuracy(tmp_path, capsys):
    """Seed 002's network shape (3 sigmoid outputs, quadratic cost) on iris: one-hot targets."""
    spec = tmp_path / "iris_mse.yaml"
    spec.write_text("name: iris_mse\ninput: 4\nlayers:\n  - {units: 8, activation: relu}\n"
                    "  - {units: 3, activation: sigmoid}\nloss: mse\n"
                    "training: {epochs: 30, learning_rate: 0.5, batch_size: 8}\n"
                    "data: {dataset: iris}\n")
    printed, summary = _train(capsys, spec, tmp_path)
    assert all(r["accuracy"] is not None for r in summary["history"])
    assert summary["test"]["accuracy"] > 0.8
    assert "versicolor" in printed.out


def test_mnist_folder_uses_its_t10k_files(tmp_path, capsys):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=15)
    spec = tmp_path / "tiny_mnist.yaml"
    spec.write_text("name: tiny_mnist\ninput: 784\nlayers:\n  - {units: 10, activation: softmax}\n"
                    "loss: categorical_crossentropy\ntraining: {epochs: 2}\n"
                    "data: {dataset: 'mnist:mnist'}\n")
    printed, summary = _train(capsys, spec, tmp_path)
    assert summary["data"]["train_examples"] == 36 and summary["data"]["test_examples"] == 15
    assert summary["data"]["validation_examples"] == 4  # 10% of the 40 training images
    assert summary["data"]["split"] == ("the data set's own test set; 10% of the training part "
                                        "for validation")
    assert summary["data"]["scaling"] == "x/255"


def test_several_specs_get_a_folder_each(tmp_path, capsys):
    argv = ["--spec", str(BREAST_CANCER), str(DIABETES), "--out", str(tmp_path / "gen"),
            "--train", "--epochs", "1", "--save-dir", str(tmp_path / "runs"), "-q"]
    assert main(argv) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["breast_cancer_mlp",
                                                                     "diabetes_mlp"]


def test_default_save_dir_is_a_new_runs_name_n(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("1", "2"):  # a second run does not replace the first
        assert main(["--spec", str(DIABETES), "--out", "gen", "--train", "--epochs", "1",
                     "-q"]) == 0
        assert (tmp_path / "runs" / "diabetes_mlp" / folder / "summary.json").is_file()
        assert (tmp_path / "runs" / "diabetes_mlp" / folder / "diabetes_mlp.npz").is_file()


# ----------------------------------------------------------------------------- output

def test_quiet_prints_only_the_final_report(tmp_path, capsys):
    printed, _ = _train(capsys, DIGITS, tmp_path, "--epochs", "2", "-q")
    assert not any(line.startswith(("epoch", "training", "examples/", str(DIGITS)))
                   for line in printed.out.splitlines())
    assert printed.out.startswith("digits_mlp on digits after 2 epochs")
    assert "per-class accuracy" in printed.out and "saved " in printed.out


def test_verbose_adds_times(tmp_path, capsys):
    printed, _ = _train(capsys, DIABETES, tmp_path, "--epochs", "2", "--verbose")
    epoch_lines = [line for line in printed.out.splitlines() if line.startswith("epoch")]
    assert all(line.endswith(" s") for line in epoch_lines) and len(epoch_lines) == 2
    assert "times: data " in printed.out and " s per epoch" in printed.out


def test_epoch_line():
    record = {"loss": 0.5, "accuracy": 0.875, "val_loss": 0.625, "val_accuracy": 0.75,
              "seconds": 0.123}
    assert epoch_line(3, 12, record) == ("epoch  3/12  loss 0.5000  accuracy 0.8750  "
                                         "val loss 0.6250  val accuracy 0.7500")
    assert epoch_line(3, 12, record, verbose=True).endswith("0.7500  0.12 s")
    record |= {"test_loss": 0.7, "test_accuracy": 0.7, "best": True}  # with --verbose
    assert epoch_line(3, 12, record).endswith(
        "(verbose) test loss 0.7000  (verbose) test accuracy 0.7000  *best")
    regression = {"loss": 0.5, "r2": 0.25, "val_loss": 0.5, "val_r2": 0.125, "partial": True}
    assert "R² 0.2500  val loss" in epoch_line(1, 1, regression, "r2")
    assert epoch_line(1, 1, regression, "r2").endswith("(stopped early in this epoch)")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_then_lines():
    assert choose_mode(io.StringIO()) == "lines"
    assert choose_mode(_Terminal(), quiet=True) == "quiet"
    terminal = _Terminal()
    assert choose_mode(terminal) == BAR
    display = EpochDisplay(2, mode=BAR, stream=terminal)
    record = {"loss": 1.0, "accuracy": 0.5, "test_loss": 1.0, "test_accuracy": 0.5}
    for epoch in (1, 2):
        for done in range(1, 6):
            display.update(epoch, done, 5)
        display.epoch_end(epoch, record)
    text = terminal.getvalue()
    assert "epoch 1/2:" in text and "/5 [" in text and "batch/s" in text  # the bars
    assert "epoch 2/2  loss 1.0000  accuracy 0.5000" in text  # the lines that replace them


# ----------------------------------------------------------------------------- plots

def test_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "pictures" / "digits.png"
    printed, summary = _train(capsys, DIGITS, tmp_path, "--epochs", "3", "--plot", str(plot))
    confusion = tmp_path / "pictures" / "digits_confusion.png"
    for path in (plot, confusion):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert summary["files"]["plots"] == [str(plot), str(confusion)]
    assert f"plots {plot} and {confusion}" in printed.out


@pytest.mark.parametrize("low, labelled", [(1e-5, set()), (0.05, {"0.2", "0.5", "0.05"})])
def test_a_wide_loss_axis_is_logarithmic_and_its_labels_never_crowd(low, labelled):
    """Five decades: only the powers of ten are labelled; under two: also 2s and 5s."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from derive.training.plot import log_scale_if_wide

    figure, axes = plt.subplots()
    values = list(np.geomspace(1.0, low, 50))
    axes.plot(values)
    log_scale_if_wide(axes, values)
    figure.canvas.draw()
    bottom, top = axes.get_ylim()
    minor = {t.get_text() for t in axes.yaxis.get_minorticklabels()
             if t.get_text() and bottom <= t.get_position()[1] <= top}  # those in view
    plt.close(figure)
    assert axes.get_yscale() == "log" and minor == labelled


def test_regression_plot_has_no_confusion_matrix(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "diabetes.png"
    _, summary = _train(capsys, DIABETES, tmp_path, "--epochs", "3", "--plot", str(plot))
    assert plot.is_file() and summary["files"]["plots"] == [str(plot)]
    assert not (tmp_path / "diabetes_confusion.png").exists()


def test_plot_without_matplotlib_exits_2_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    printed, summary = _train(capsys, DIGITS, tmp_path, "--plot", str(tmp_path / "p.png"),
                              status=2)
    assert "--plot needs matplotlib" in printed.err and "backprop-derive[plot]" in printed.err
    assert "Traceback" not in printed.err and "epoch" not in printed.out
    assert summary is None and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- errors

def _spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return path


def test_input_size_mismatch_exits_2_with_the_message(tmp_path, capsys):
    spec = _spec_file(tmp_path, "name: big\ninput: 784\nlayers:\n"
                                "  - {units: 10, activation: softmax}\n"
                                "loss: categorical_crossentropy\n")  # no data: -> digits
    printed, summary = _train(capsys, spec, tmp_path, status=2)
    assert printed.err.strip().startswith(f"derive: {spec}: digits has 64 features, the spec's "
                                          "input is 784 (set input: 64)\n  the spec has no data:")
    assert summary is None and not (tmp_path / "run").exists()


def test_class_count_mismatch_exits_2(tmp_path, capsys):
    spec = _spec_file(tmp_path, "name: three\ninput: 64\nlayers:\n"
                                "  - {units: 3, activation: softmax}\n"
                                "loss: categorical_crossentropy\n")
    printed, _ = _train(capsys, spec, tmp_path, status=2)
    assert ("digits has 10 classes, the spec's output layer has 3 softmax units: 10 classes "
            "need 10 softmax units") in printed.err


def test_missing_data_file_exits_2(tmp_path, capsys):
    spec = _spec_file(tmp_path, "name: t\ninput: 2\nlayers:\n"
                                "  - {units: 2, activation: softmax}\n"
                                "loss: categorical_crossentropy\n"
                                "data: {dataset: 'csv:nowhere.csv', target: y}\n")
    printed, _ = _train(capsys, spec, tmp_path, status=2)
    assert f"{tmp_path / 'nowhere.csv'} does not exist" in printed.err
    assert "Traceback" not in printed.err


def test_training_options_need_train(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--spec", str(DIGITS), "--epochs", "3"])
    assert info.value.code == 2
    assert "--epochs is a training option: add --train" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--learning-rate", "-1"),
                                         ("--learning-rate", "nan"), ("--batch-size", "x"),
                                         ("--optimizer", "adagrad"), ("--schedule", "linear"),
                                         ("--patience", "0")])
def test_bad_training_option_values(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--spec", str(DIGITS), "--train", flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_diverging_training_exits_1(tmp_path, capsys):
    printed, summary = _train(capsys, DIABETES, tmp_path, "--learning-rate", "1000", status=1)
    assert "the training loss became" in printed.err and "smaller learning_rate" in printed.err
    assert "Traceback" not in printed.err and "Warning" not in printed.err
    assert summary is None


# ----------------------------------------------------------------------------- Ctrl-C

class _SetFlag(StopFlag):
    """A stop flag already set: as if Ctrl-C came during the first batch."""

    def __init__(self):
        super().__init__()
        self.set()


def test_stop_flag_stops_after_the_current_batch_and_still_saves(tmp_path):
    spec = load_spec(DIGITS)
    module_path = write_module(derive(spec), tmp_path / "gen")
    stream = io.StringIO()
    result = run(spec, module_path, TrainOptions(save_dir=tmp_path / "run"), stream=stream,
                 stop=_SetFlag())
    assert result.interrupted and result.epochs_completed == 0
    assert len(result.history) == 1 and result.history[0]["partial"] is True
    assert result.params_path.is_file() and result.summary_path.is_file()
    summary = json.loads(result.summary_path.read_text())
    assert summary["interrupted"] is True and summary["epochs_completed"] == 0
    text = stream.getvalue()
    # after the current batch (NumPy engine) or the current call of the compiled engine, which
    # runs an epoch's 41 updates in at most 16 calls (ceil(41 / 16) = 3 each)
    done = re.search(r"stopped by Ctrl-C in epoch 1 of 30, after (\d+) of 41 updates", text)
    assert done and 1 <= int(done.group(1)) <= 3, text
    assert "after 0 epochs and part of one" in text and "(stopped early in this epoch)" in text


def test_ctrl_c_in_the_cli_exits_130_after_saving(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training_run, "StopFlag", _SetFlag)
    printed, summary = _train(capsys, DIGITS, tmp_path, status=130)
    assert "stopped by Ctrl-C" in printed.out and "saved " in printed.out
    assert summary["interrupted"] is True
    assert (tmp_path / "run" / "digits_mlp.npz").is_file()


def test_sigint_handler_sets_the_flag_then_a_second_one_aborts():
    flag, notes = StopFlag(), []
    before = signal.getsignal(signal.SIGINT)
    with stop_on_interrupt(flag, lambda: notes.append("stopping")):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert flag.is_set and notes == ["stopping"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is before


def test_real_ctrl_c_on_the_command(tmp_path):
    """SIGINT to a running ``python -m derive --train``: it finishes the batch, reports, saves."""
    argv = [sys.executable, "-m", "derive", "--spec", str(DIGITS), "--out", str(tmp_path / "gen"),
            "--train", "--epochs", "100000", "--save-dir", str(tmp_path / "run")]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        for line in process.stdout:  # wait until training is under way
            if line.startswith("epoch "):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Ctrl-C: stopping after this batch" in err and "Traceback" not in err
    assert "stopped by Ctrl-C in epoch" in out and "saved " in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["epochs_completed"] >= 1


# ----------------------------------------------------------------------------- the figures

def test_confusion_and_per_class_against_scikit_learn():
    rng = np.random.default_rng(1)
    truth, predicted = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    predicted[truth == 3] = 3  # class 3 all right
    found = classification_metrics(truth, predicted, ("a", "b", "c", "d"))
    np.testing.assert_array_equal(found.confusion, skm.confusion_matrix(truth, predicted))
    assert found.accuracy == pytest.approx(skm.accuracy_score(truth, predicted))
    np.testing.assert_allclose([acc for *_, acc in found.per_class],
                               skm.recall_score(truth, predicted, average=None))
    assert found.per_class[3][3] == 1.0
    assert "  3 d " in found.table() and "1.000 (" in found.table()


def test_class_without_test_examples():
    found = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), ("0", "1", "2"))
    assert found.per_class[2] == ("2", 0, 0, None)
    assert found.as_dict()["per_class_accuracy"]["2"] is None
    assert "no examples" in found.table()
    np.testing.assert_array_equal(confusion_matrix([0, 0, 1], [0, 2, 1], 3),
                                  [[1, 0, 1], [0, 1, 0], [0, 0, 0]])


def test_regression_metrics_against_scikit_learn():
    rng = np.random.default_rng(2)
    truth = rng.normal(100, 30, size=(50, 2))
    predicted = truth + rng.normal(0, 10, size=(50, 2))
    found = regression_metrics(truth, predicted)
    assert found.rmse == pytest.approx(np.sqrt(skm.mean_squared_error(truth, predicted)))
    assert found.mae == pytest.approx(skm.mean_absolute_error(truth, predicted))
    one = regression_metrics(truth[:, :1], predicted[:, 0])
    assert one.r2 == pytest.approx(skm.r2_score(truth[:, 0], predicted[:, 0]))


def test_summary_json_is_strict(tmp_path):
    write_json(tmp_path / "s.json", {"r2": float("nan"), "x": [np.float32(0.5), float("inf")],
                                     "n": np.int64(3)})
    assert json.loads((tmp_path / "s.json").read_text()) == {"r2": None, "x": [0.5, None], "n": 3}


# ----------------------------------------------------------------------------- the examples

@pytest.mark.parametrize("spec_path, key, least", [
    (DIGITS, "accuracy", 0.97),  # the main job
    (BREAST_CANCER, "accuracy", 0.96),
    (DIABETES, "r2", 0.45),
    (EXAMPLES / "wine_table.yaml", "accuracy", 0.93),  # a table: ';', id column, test table
])
def test_examples_reach_their_figures(tmp_path, spec_path, key, least):
    spec = load_spec(spec_path)
    started = time.perf_counter()
    result = run(spec, ROOT / "generated" / f"{spec.name}.py",
                 TrainOptions(save_dir=tmp_path, quiet=True), stream=io.StringIO())
    assert getattr(result.metrics, key) >= least
    assert time.perf_counter() - started < 60
