"""A table's data options: ``features``/``drop``, a list ``target``, a separate ``test`` table,
``scaling``, ``delimiter``, ``test_fraction: 0``; data errors before anything is written, and
``--no-module``.

Each option is checked where it acts (the Dataset, the prepared arrays) and from the command
line as a user meets it: the report, the summary, the model file and ``derive predict``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from derive.cli import main
from derive.errors import DataError, SpecError
from derive.spec import load_spec, load_spec_text
from derive.training.data import load_csv
from derive.training.prepare import prepare
from derive.training.runner import load_prepared

ROOT = Path(__file__).resolve().parents[1]


def _table(path: Path, rows: int = 60, delimiter: str = ",", seed: int = 0) -> Path:
    """id, three features a b c, a class column `kind` (a letter), two value columns y1 y2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    lines = [delimiter.join(["id", "a", "b", "c", "kind", "y1", "y2"])]
    for i, (a, b, c) in enumerate(X):
        kind = "yes" if a + b > 0 else "no"
        lines.append(delimiter.join([f"id{i}", f"{a:.5f}", f"{b:.5f}", f"{c:.5f}", kind,
                                     f"{a - 2 * c:.5f}", f"{3 * b + 1:.5f}"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _spec(tmp_path: Path, data: str, *, units: int = 2, output: str = "softmax",
          loss: str = "categorical_crossentropy", inputs: int = 3, epochs: int = 5) -> Path:
    path = tmp_path / "net.yaml"
    path.write_text(f"name: tab\ninput: {inputs}\nlayers:\n  - {{units: 6, activation: tanh}}\n"
                    f"  - {{units: {units}, activation: {output}}}\nloss: {loss}\n"
                    f"training: {{epochs: {epochs}, learning_rate: 0.01, seed: 0}}\n"
                    f"data:\n{data}", encoding="utf-8")
    return path


def _cli(tmp_path: Path, spec: Path, *extra: str) -> int:
    return main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "-q", *extra])


def _train(tmp_path: Path, spec: Path, *extra: str) -> int:
    return _cli(tmp_path, spec, "--train", "--save-dir", str(tmp_path / "run"), *extra)


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())


# ----------------------------------------------------------------------------- columns

def test_drop_leaves_an_id_column_out(tmp_path):
    _table(tmp_path / "t.csv")
    spec = load_spec(_spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n"
                                     "  drop: [id, y1, y2]\n"))
    dataset, _ = load_prepared(spec)
    assert dataset.feature_names == ("a", "b", "c") and dataset.class_names == ("no", "yes")


def test_features_choose_the_columns_and_their_order(tmp_path):
    path = _table(tmp_path / "t.csv")
    dataset = load_csv(path, "kind", features=("c", "a"))
    assert dataset.feature_names == ("c", "a")
    raw = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_allclose(dataset.X, np.column_stack([raw["c"], raw["a"]]))


def test_without_features_or_drop_an_id_column_is_a_located_value_error(tmp_path):
    _table(tmp_path / "t.csv")
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n")
    with pytest.raises(DataError, match=r"line 2, column 'id': 'id0' is not a number"):
        load_prepared(load_spec(spec))


def test_a_list_target_gives_one_output_per_column(tmp_path, capsys):
    _table(tmp_path / "t.csv", rows=80)
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: [y1, y2]\n  drop: [id, kind]\n",
                 output="identity", loss="mse", epochs=40)
    dataset, prepared = load_prepared(load_spec(spec))
    assert dataset.target_names == ("y1", "y2") and dataset.y.shape == (80, 2)
    assert prepared.Y_train.shape[1] == 2
    assert _train(tmp_path, spec) == 0
    assert "(y1, y2, original units)" in capsys.readouterr().out
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(tmp_path / "run" / "tab.npz"),
                 "--data", f"csv:{tmp_path / 't.csv'}", "--output", str(out)]) == 0
    header, *rows = out.read_text().splitlines()
    assert header == "row,y1,y2" and len(rows) == 80
    predicted = np.array([[float(v) for v in row.split(",")[1:]] for row in rows])
    assert np.corrcoef(predicted[:, 0], dataset.y[:, 0])[0, 1] > 0.9  # in the data's units


def test_a_list_target_of_class_labels_is_refused_at_its_line(tmp_path):
    _table(tmp_path / "t.csv")
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: [kind, y1]\n  drop: [id, y2]\n")
    with pytest.raises(DataError) as info:
        load_prepared(load_spec(spec))
    assert info.value.location == f"{spec}:10: data.target"
    assert "class labels come from one column" in str(info.value)


@pytest.mark.parametrize("data, field, line, hint", [
    ("  target: knd\n  drop: [id, y1, y2]\n", "target", 10, "did you mean 'kind'?"),
    ("  target: kind\n  features: [a, bb, c]\n", "features[1]", 11, "did you mean 'b'?"),
    ("  target: kind\n  drop: [id, y1, y3]\n", "drop[2]", 11, "did you mean 'y"),
])
def test_a_column_the_table_lacks_is_located_in_the_spec(tmp_path, capsys, data, field, line,
                                                         hint):
    _table(tmp_path / "t.csv")
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n" + data)
    assert _train(tmp_path, spec) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"derive: {spec}:{line}: data.{field}: ")
    assert f"hint: {hint}" in err and "Traceback" not in err
    assert not (tmp_path / "gen").exists()  # a data error writes nothing, the module included


@pytest.mark.parametrize("data, line, message", [
    ("  target: kind\n  features: [a]\n  drop: [id]\n", 12, "either features"),
    ("  target: kind\n  features: [a, kind]\n", 11, "'kind' is the target"),
    ("  target: kind\n  drop: [id, id]\n", 11, "column 'id' is listed twice"),
    ("  target: kind\n  delimiter: ';;'\n", 11, "one character"),
    ("  target: kind\n  scaling: zscore\n", 11, "unknown scaling 'zscore'"),
    ("  target: kind\n  test: t.csv\n", 11, "csv:PATH"),
    ("  target: kind\n  test: csv:u.csv\n  test_fraction: 0.3\n", 12, "data.test gives one"),
    ("  target: []\n", 10, "a column name or a list of column names"),
])
def test_bad_table_options_are_spec_errors(tmp_path, data, line, message):
    text = _spec(tmp_path, "  dataset: csv:t.csv\n" + data).read_text()
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "net.yaml")
    assert info.value.line == line and message in str(info.value)


@pytest.mark.parametrize("key, value", [("features", "[a]"), ("drop", "[id]"),
                                        ("delimiter", "';'"), ("test", "csv:t.csv")])
def test_table_options_with_a_bundled_data_set_are_refused(tmp_path, key, value):
    text = _spec(tmp_path, f"  dataset: iris\n  {key}: {value}\n").read_text()
    with pytest.raises(SpecError, match=rf"'{key}' is only used with csv: datasets"):
        load_spec_text(text, "net.yaml")


# ----------------------------------------------------------------------------- delimiter

def test_a_semicolon_file_gets_a_hint_then_reads_with_its_delimiter(tmp_path, capsys):
    _table(tmp_path / "t.csv", delimiter=";")
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n  drop: [id, y1, y2]\n")
    assert _train(tmp_path, spec) == 2
    err = capsys.readouterr().err
    assert "hint: the header is a single column" in err and "data.delimiter: ';'" in err
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n  drop: [id, y1, y2]\n"
                           "  delimiter: ';'\n")
    assert _train(tmp_path, spec) == 0
    capsys.readouterr()
    # the model file keeps the delimiter: predict reads the same kind of file
    assert main(["predict", "--model", str(tmp_path / "run" / "tab.npz"),
                 "--data", f"csv:{tmp_path / 't.csv'}"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "row,kind"


def test_tab_separated(tmp_path):
    path = _table(tmp_path / "t.tsv", delimiter="\t")
    spec = load_spec(_spec(tmp_path, f"  dataset: csv:{path}\n  target: kind\n"
                                     "  drop: [id, y1, y2]\n  delimiter: tab\n"))
    assert spec.data.delimiter == "\t"
    dataset, _ = load_prepared(spec)
    assert dataset.n_examples == 60 and dataset.feature_names == ("a", "b", "c")


# ----------------------------------------------------------------------------- test table

def test_a_separate_test_table(tmp_path, capsys):
    _table(tmp_path / "train.csv", rows=60, seed=0)
    _table(tmp_path / "test.csv", rows=25, seed=1)
    spec = _spec(tmp_path, "  dataset: csv:train.csv\n  test: csv:test.csv\n  target: kind\n"
                           "  drop: [id, y1, y2]\n  validation_fraction: 0\n")
    dataset, prepared = load_prepared(load_spec(spec))
    assert len(prepared.X_train) == 60 and len(prepared.X_test) == 25
    assert prepared.split.startswith("the test table ") and "test.csv" in prepared.split
    # scaled with the training table's statistics only
    np.testing.assert_allclose(prepared.features.mean, dataset.X.mean(axis=0))
    assert _train(tmp_path, spec) == 0
    assert "/25)" in capsys.readouterr().out
    assert _summary(tmp_path)["data"]["test_examples"] == 25


def test_a_test_table_with_an_unknown_class_names_its_line(tmp_path):
    _table(tmp_path / "train.csv")
    (tmp_path / "test.csv").write_text("id,a,b,c,kind,y1,y2\nq,1,2,3,yes,0,0\nr,1,2,3,maybe,0,0\n")
    spec = _spec(tmp_path, "  dataset: csv:train.csv\n  test: csv:test.csv\n  target: kind\n"
                           "  drop: [id, y1, y2]\n")
    with pytest.raises(DataError, match=r"test.csv, line 3: the target 'kind' is 'maybe', a "
                                        r"class that .*train.csv does not have"):
        load_prepared(load_spec(spec))


# ----------------------------------------------------------------------------- scaling

@pytest.mark.parametrize("scaling", ["standard", "minmax", "none"])
def test_scaling_choices(tmp_path, scaling):
    _table(tmp_path / "t.csv", rows=50)
    spec = load_spec(_spec(tmp_path, f"  dataset: csv:t.csv\n  target: [y1]\n"
                                     f"  drop: [id, kind, y2]\n  scaling: {scaling}\n",
                           units=1, output="identity", loss="mse"))
    dataset, prepared = load_prepared(spec)
    X = prepared.X_train
    if scaling == "standard":
        np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(X.std(axis=0), 1)
    elif scaling == "minmax":
        np.testing.assert_allclose(X.min(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(X.max(axis=0), 1)
    else:
        assert prepared.features is None and prepared.targets is None
    if scaling != "none":
        assert prepared.features.kind == scaling and prepared.targets.kind == "standard"


def test_minmax_model_file_predicts_raw_rows_as_the_run_did(tmp_path):
    path = _table(tmp_path / "t.csv", rows=80)
    spec = _spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n  drop: [id, y1, y2]\n"
                           "  scaling: minmax\n  test_fraction: 0.25\n", epochs=30)
    assert _train(tmp_path, spec) == 0
    from codegen.files import import_module_from

    module = import_module_from(tmp_path / "gen" / "tab.py")
    trainer = module.Trainer.load(tmp_path / "run" / "tab.npz")
    assert trainer.preprocessing["features"]["kind"] == "minmax"
    dataset = load_csv(path, "kind", drop=("id", "y1", "y2"))
    labels = trainer.predict(dataset.X)  # raw rows, answers as the data writes them
    accuracy = np.mean(labels == np.array(dataset.class_names)[dataset.y])
    assert set(labels) <= {"yes", "no"} and accuracy >= 0.85


# ----------------------------------------------------------------------------- no test set

def test_test_fraction_zero_trains_on_every_row_and_reports_no_test_figures(tmp_path, capsys):
    (tmp_path / "xor.csv").write_text("x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    spec = tmp_path / "xor.yaml"
    spec.write_text("name: xor\ninput: 2\nlayers:\n  - {units: 4, activation: tanh}\n"
                    "  - {units: 1, activation: sigmoid}\nloss: binary_crossentropy\n"
                    "training: {epochs: 1500, learning_rate: 0.05, batch_size: full, seed: 0}\n"
                    "data:\n  dataset: csv:xor.csv\n  target: y\n  test_fraction: 0\n"
                    "  validation_fraction: 0\n  scaling: none\n")
    _, prepared = load_prepared(load_spec(spec))
    assert len(prepared.X_train) == 4 and prepared.X_test is None
    assert _train(tmp_path, spec) == 0
    out = capsys.readouterr().out
    assert "no test set (test_fraction 0); train accuracy 1.0000 (4/4)" in out
    assert "test accuracy" not in out and "training confusion matrix" in out
    summary = _summary(tmp_path)
    assert summary["test"] is None and summary["data"]["test_examples"] == 0


def test_prepare_without_a_test_set_keeps_every_row(tmp_path):
    dataset = load_csv(_table(tmp_path / "t.csv"), "kind", drop=("id", "y1", "y2"))
    spec = load_spec(_spec(tmp_path, "  dataset: csv:t.csv\n  target: kind\n"))
    prepared = prepare(spec, "classification", dataset, 0.0, 0, 0.0)
    assert prepared.X_test is None and len(prepared.X_train) == dataset.n_examples


# ----------------------------------------------------------------------------- --no-module

def test_no_module_writes_only_the_latex(tmp_path, capsys):
    spec = ROOT / "examples" / "seed002_relu_sigmoid.yaml"
    tex = tmp_path / "doc" / "net.tex"
    tex.parent.mkdir()
    assert _cli(tmp_path, spec, "--no-module", "--latex", str(tex), "--check") == 0
    assert tex.is_file() and not (tmp_path / "gen").exists()
    out = capsys.readouterr().out
    assert "finite differences on" in out  # --check still checks a module: a temporary one


@pytest.mark.parametrize("flag", [["--train"], ["--backend", "torch"]])
def test_no_module_with_what_needs_one_is_a_usage_error(tmp_path, capsys, flag):
    spec = ROOT / "examples" / "seed002_relu_sigmoid.yaml"
    with pytest.raises(SystemExit) as info:
        _cli(tmp_path, spec, "--no-module", *flag)
    assert info.value.code == 2 and "drop --no-module" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the examples

def test_the_example_tables_are_what_their_script_writes(tmp_path, monkeypatch):
    import importlib.util

    folder = ROOT / "examples" / "data"
    spec = importlib.util.spec_from_file_location("make_tables", folder / "make_tables.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "HERE", tmp_path)
    script.write_wine()
    script.write_linnerud()
    for path in sorted(tmp_path.glob("*.csv")):
        assert path.read_bytes() == (folder / path.name).read_bytes(), path.name


def test_the_several_targets_example_predicts_each_column(tmp_path, capsys):
    spec = ROOT / "examples" / "linnerud_table.yaml"
    assert _train(tmp_path, spec, "--epochs", "20") == 0
    assert "no test set (test_fraction 0); train R²" in capsys.readouterr().out
    assert main(["predict", "--model", str(tmp_path / "run" / "linnerud_table.npz"),
                 "--data", f"csv:{ROOT / 'examples' / 'data' / 'linnerud.csv'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "row,Weight,Waist,Pulse" and len(lines) == 21
