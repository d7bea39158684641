"""Tables as people have them (shared/DESIGN.md, "Real tables"): missing cells in every common
spelling, text columns one-hot encoded, ``input: auto`` and ``units: auto``, everything fitted
on the training part only and stored in the model file; and honest prediction from Python and
from ``derive predict``: columns matched by name, the stored encoding applied, and a clear
refusal (an exception; exit 2) for what the model cannot answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_penguins

from derive.cli import main
from derive.errors import DataError, SpecError
from derive.spec import load_spec_text
from derive.training.data import load_csv
from derive.training.prepare import stratified_split
from derive.training.runner import load_prepared, sized

ROOT = Path(__file__).resolve().parents[1]

PENGUINS_SPEC = """name: penguins
input: auto
layers:
  - {units: 16, activation: relu}
  - {units: auto, activation: softmax}
loss: categorical_crossentropy
training: {optimizer: adam, learning_rate: 0.01, batch_size: 16, epochs: 40}
data:
  dataset: csv:penguins.csv
  target: species
  missing: drop
  categorical: auto
"""


def _write_spec(folder: Path, text: str = PENGUINS_SPEC, name: str = "penguins.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The penguins-style table trained from the command line: (folder, spec, model file)."""
    folder = tmp_path_factory.mktemp("penguins")
    write_penguins(folder / "penguins.csv")
    spec = _write_spec(folder)
    status = main(["--spec", str(spec), "--out", str(folder / "gen"), "--train", "-q",
                   "--save-dir", str(folder / "run")])
    assert status == 0
    return folder, spec, folder / "run" / "penguins.npz"


def _load(model: Path, folder: Path):
    """The Trainer of a model file, from the module the run generated."""
    from codegen.files import import_module_from

    module = import_module_from(folder / "gen" / "penguins.py")
    return module.Trainer.load(model)


# ----------------------------------------------------------------------------- training

def test_penguins_train_with_drop_and_auto_to_97_percent(trained):
    folder, _, model = trained
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.97, summary["test"]
    data = summary["data"]
    written = (folder / "penguins.csv").read_text().splitlines()[1:]
    missing = sum(1 for line in written if any(
        cell.strip().lower() in ("", "na", "n/a", "nan", "?") for cell in line.split(",")))
    assert missing > 0 and data["rows_left_out"] == missing
    assert summary["layer_sizes"][0] == 10  # 3 islands + 4 numbers + 2 sexes + year
    assert summary["layer_sizes"][-1] == 3
    assert "island=Biscoe" in data["encoded_features"]
    assert summary["engine"]["backend"] == "numpy"
    assert summary["engine"]["engine"] in ("numpy", "compiled")


def test_the_summary_records_the_split_and_its_recipe_reproduces_it(trained):
    folder, spec_path, _ = trained
    split = json.loads((folder / "run" / "summary.json").read_text())["data"]["split_rows"]
    assert split["method"] == "stratified" and split["seed"] == 0
    parts = [split["train"], split["validation"], split["test"]]
    rows = sorted(r for part in parts for r in part)
    assert rows == list(range(len(rows)))  # every kept row in exactly one part
    from derive.spec import load_spec

    dataset, _ = load_prepared(load_spec(spec_path))
    train, test = stratified_split(dataset.y, split["test_fraction"], split["seed"])
    assert sorted(test.tolist()) == sorted(split["test"])


def test_missing_cells_in_every_spelling_are_an_error_that_counts_and_locates_them(tmp_path):
    text = "a,b,kind\n1,2,x\n,2,y\nNA,3,x\nN/A,4,y\nNaN,5,x\nnan,6,y\nnull,7,x\n?,8,y\n1,2,x\n3,4,y\n"
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_csv(path, "kind")
    message = str(info.value)
    assert "7 missing cells" in message
    assert "line 3 column 'a', line 4 column 'a'" in message and "and 2 more" in message
    assert "data.missing: drop" in message
    assert load_csv(path, "kind", missing="drop").n_examples == 3


@pytest.mark.parametrize("missing, statistic", [
    ("mean", np.mean), ("median", np.median),
    ("most_frequent", lambda v: np.unique(v)[np.argmax(np.unique(v, return_counts=True)[1])])])
def test_imputation_is_fitted_on_the_training_part_only(tmp_path, missing, statistic):
    rows = ["a,b,kind"] + [f"{[1, 1, 2, 4, 7][i % 5]},{i},{'xy'[i % 2]}" for i in range(100)]
    rows.append("NA,1,x")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    spec = load_spec_text(
        "name: t\ninput: auto\nlayers:\n  - {units: auto, activation: softmax}\n"
        "loss: categorical_crossentropy\ndata: {dataset: csv:t.csv, target: kind, "
        f"missing: {missing}}}\n", str(tmp_path / "t.yaml"))
    dataset, prepared = load_prepared(spec)
    values = np.array([float(line.split(",")[0]) for line in rows[1:-1]])
    train = [r for r in prepared.split_rows["train"] if r < 100]
    fill = prepared.columns[0]["fill"]
    assert fill == pytest.approx(statistic(values[train]))
    # the rows of the test and validation parts set to 1000: the same value is fitted
    held = set(prepared.split_rows["test"]) | set(prepared.split_rows["validation"])
    changed = [rows[0]] + [("1000" + line[line.index(","):]) if i in held else line
                           for i, line in enumerate(rows[1:])]
    path.write_text("\n".join(changed) + "\n")
    assert load_prepared(spec)[1].columns[0]["fill"] == fill
    # the filled cell is in the training part's standardised units like any other
    row = 100
    for part, X in (("train", prepared.X_train), ("test", prepared.X_test),
                    ("validation", prepared.X_val)):
        if row in prepared.split_rows[part]:
            at = prepared.split_rows[part].index(row)
            expected = (fill - prepared.features.mean[0]) / prepared.features.scale[0]
            assert X[at, 0] == pytest.approx(expected)


def test_categories_come_from_the_training_part(tmp_path):
    rows = ["colour,size,kind"] + [f"{'red' if i % 2 else 'blue'},{i % 7},{'xy'[i % 2]}"
                                   for i in range(40)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    spec = load_spec_text(
        "name: t\ninput: auto\nlayers:\n  - {units: auto, activation: softmax}\n"
        "loss: categorical_crossentropy\ndata: {dataset: csv:t.csv, target: kind, "
        "categorical: [colour]}\n", str(tmp_path / "t.yaml"))
    dataset, prepared = load_prepared(spec)
    assert prepared.columns[0] == {"name": "colour", "kind": "category", "fill": None,
                                   "categories": ["blue", "red"]}
    assert sized(spec, dataset, prepared).layer_sizes == (3, 2)
    # a colour that only the test part has is refused, naming it
    test_row = prepared.split_rows["test"][0]
    rows[1 + test_row] = "green" + rows[1 + test_row][rows[1 + test_row].index(","):]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="the test part: .*'green' is a category the model never"):
        load_prepared(spec)


def test_a_text_column_without_categorical_says_how_to_encode_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("colour,kind\nred,x\nblue,y\n")
    with pytest.raises(DataError, match="'red' is not a number") as info:
        load_csv(path, "kind")
    assert "data.categorical: auto" in info.value.hint


@pytest.mark.parametrize("text, expected", [
    ("name: t\ninput: 4\nlayers:\n  - {units: auto, activation: relu}\n"
     "  - {units: 3, activation: softmax}\nloss: categorical_crossentropy\n"
     "data: {dataset: iris}\n", "units: auto is for the last layer only"),
    ("name: t\ninput: auto\nlayers:\n  - {units: 3, activation: softmax}\n"
     "loss: categorical_crossentropy\n", "taken from the data, but the spec has no data"),
    ("name: t\ninput: 4\nlayers:\n  - {units: 3, activation: softmax}\n"
     "loss: categorical_crossentropy\ndata: {dataset: csv:t.csv, target: y, missing: zero}\n",
     "unknown missing-value strategy 'zero'"),
    ("name: t\ninput: 4\nlayers:\n  - {units: 3, activation: softmax}\n"
     "loss: categorical_crossentropy\ndata: {dataset: iris, categorical: auto}\n",
     "'categorical' is only used with"),
])
def test_spec_errors_of_the_table_keys(text, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec_text(text, "t.yaml")


def test_auto_sizes_from_a_bundled_data_set():
    spec = load_spec_text("name: t\ninput: auto\nlayers:\n  - {units: 5, activation: relu}\n"
                          "  - {units: auto, activation: sigmoid}\nloss: binary_crossentropy\n"
                          "data: {dataset: breast_cancer}\n", "t.yaml")
    assert sized(spec, *load_prepared(spec)).layer_sizes == (30, 5, 1)


# ----------------------------------------------------------------------------- prediction

PENGUIN = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
           "flipper_length_mm": 217.0, "body_mass_g": 5000.0, "sex": "female", "year": 2008}


def test_python_predict_matches_columns_by_name(trained):
    folder, _, model = trained
    trainer = _load(model, folder)
    order = list(PENGUIN)
    columns = {name: [PENGUIN[name]] for name in reversed(order)}  # another order, by name
    columns["id"] = ["p1"]  # a column the model does not use is ignored
    assert list(trainer.predict(columns)) == ["Gentoo"]
    structured = np.array([tuple(PENGUIN[n] for n in order)],
                          dtype=[(n, object) for n in order])
    assert list(trainer.predict(structured)) == ["Gentoo"]
    plain = np.array([[PENGUIN[n] for n in order]], dtype=object)
    assert list(trainer.predict(plain)) == ["Gentoo"]
    assert trainer.predict_proba(columns).shape == (1, 3)
    with pytest.raises(ValueError, match="X has 6 columns, but the model takes 7, one per "
                                         "column: island, bill_length_mm"):
        trainer.predict(plain[:, 1:])


def test_python_predict_with_pandas(trained):
    pd = pytest.importorskip("pandas")
    folder, _, model = trained
    frame = pd.DataFrame([PENGUIN, {**PENGUIN, "bill_length_mm": None}])
    with pytest.raises(ValueError, match="1 missing cell \\(row 1 column 'bill_length_mm'\\)"):
        _load(model, folder).predict(frame)
    assert list(_load(model, folder).predict(frame.iloc[:1])) == ["Gentoo"]


@pytest.mark.parametrize("change, expected", [
    ({"bill_length_mm": float("nan")}, "1 missing cell \\(row 0 column 'bill_length_mm'\\), "
                                       "and the model imputes nothing \\(trained with missing: drop"),
    ({"bill_length_mm": "NA"}, "1 missing cell"),
    ({"island": "Atlantis"}, "row 0 column 'island': 'Atlantis' is a category the model never "
                             "saw in training \\(its categories: Biscoe, Dream, Torgersen\\)"),
    ({"body_mass_g": "heavy"}, "'heavy' is not a number"),
])
def test_python_predict_refuses_what_it_cannot_answer(trained, change, expected):
    folder, _, model = trained
    with pytest.raises(ValueError, match=expected):
        _load(model, folder).predict({name: [value] for name, value in
                                      {**PENGUIN, **change}.items()})


def test_a_model_that_imputes_fills_at_prediction(tmp_path):
    write_penguins(tmp_path / "penguins.csv", rows=120)
    spec = _write_spec(tmp_path, PENGUINS_SPEC.replace("missing: drop", "missing: median")
                       .replace("epochs: 40", "epochs: 2"))
    assert main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "--train", "-q",
                 "--save-dir", str(tmp_path / "run")]) == 0
    trainer = _load(tmp_path / "run" / "penguins.npz", tmp_path)
    fills = {c["name"]: c["fill"] for c in trainer.preprocessing["columns"]}
    filled = {**PENGUIN, "bill_length_mm": fills["bill_length_mm"], "sex": fills["sex"]}
    holes = {**PENGUIN, "bill_length_mm": None, "sex": "NA"}
    np.testing.assert_allclose(trainer.predict_proba({k: [v] for k, v in holes.items()}),
                               trainer.predict_proba({k: [v] for k, v in filled.items()}))


def _penguin_csv(path: Path, rows: list[dict], extra: str = "") -> Path:
    names = list(rows[0])
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(str(r[n]) for n in names)
                                                       for r in rows) + "\n" + extra)
    return path


def test_derive_predict_exits_2_naming_the_cause(trained, tmp_path, capsys):
    _, _, model = trained
    cases = {
        "csv:" + str(_penguin_csv(tmp_path / "nan.csv", [{**PENGUIN, "sex": "NA"}])):
            "1 missing cell (row 0 column 'sex'), and the model imputes nothing",
        "csv:" + str(_penguin_csv(tmp_path / "island.csv", [{**PENGUIN, "island": "Atlantis"}])):
            "'Atlantis' is a category the model never saw in training",
        "iris": "the table has no column 'island'",
        "digits": "X has 64 columns, but the model takes 7",
    }
    for data, expected in cases.items():
        assert main(["predict", "--model", str(model), "--data", data]) == 2, data
        captured = capsys.readouterr()
        assert expected in captured.err and not captured.out, (data, captured.err)


def test_derive_predict_proba_and_keep(trained, tmp_path, capsys):
    _, _, model = trained
    data = _penguin_csv(tmp_path / "ok.csv", [{"id": "p1", **PENGUIN},
                                              {"id": "p2", **PENGUIN, "island": "Torgersen",
                                               "bill_length_mm": 39.1, "bill_depth_mm": 18.7,
                                               "flipper_length_mm": 181, "body_mass_g": 3750}])
    assert main(["predict", "--model", str(model), "--data", f"csv:{data}", "--proba",
                 "--keep", "id"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "row,id,species,P(Adelie),P(Chinstrap),P(Gentoo)"
    assert lines[1].startswith("0,p1,Gentoo,") and lines[2].startswith("1,p2,Adelie,")
    assert abs(sum(float(p) for p in lines[1].split(",")[3:]) - 1) < 1e-4
    assert main(["predict", "--model", str(model), "--data", f"csv:{data}", "--keep",
                 "name"]) == 2
    assert "--keep name: " in capsys.readouterr().err


def test_help_lists_predict(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "derive predict --model MODEL.npz" in capsys.readouterr().out
