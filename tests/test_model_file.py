"""A model file that ``derive --train`` writes is self-contained: loaded in a fresh process it
predicts raw rows in the data's own terms; ``derive predict`` applies it to a file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from derive.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_breast_cancer_model_predicts_raw_rows_in_a_fresh_process(tmp_path, capsys):
    spec = ROOT / "examples" / "breast_cancer_mlp.yaml"
    assert main(["--spec", str(spec), "--out", str(tmp_path / "gen"), "--train", "-q",
                 "--save-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    script = textwrap.dedent(f"""
        import importlib.util, json
        import numpy as np
        from sklearn.datasets import load_breast_cancer
        spec = importlib.util.spec_from_file_location("bc", {str(tmp_path / "gen" / "breast_cancer_mlp.py")!r})
        net = importlib.util.module_from_spec(spec); spec.loader.exec_module(net)
        trainer = net.Trainer.load({str(tmp_path / "run" / "breast_cancer_mlp.npz")!r})
        data = load_breast_cancer()
        labels = trainer.predict(data.data)             # raw rows, as scikit-learn ships them
        truth = data.target_names[data.target]
        print(json.dumps({{"accuracy": float(np.mean(labels == truth)),
                          "labels": sorted(set(labels.tolist())),
                          "proba": trainer.predict_proba(data.data[:3]).shape}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["accuracy"] >= 0.95
    assert result["labels"] == ["benign", "malignant"] and result["proba"] == [3, 1]


CSV_SPEC = """\
name: pets
input: 2
layers:
  - {units: 6, activation: tanh}
  - {units: 2, activation: softmax}
loss: categorical_crossentropy
training: {optimizer: adam, learning_rate: 0.05, epochs: 30}
data: {dataset: "csv:pets.csv", target: species, test_fraction: 0.25}
"""


def _pets(path: Path, rows: int, seed: int, extra: bool = False) -> None:
    """A table of cats and dogs; ``extra``: with an id column (prediction ignores it)."""
    rng = np.random.default_rng(seed)
    lines = ["weight,height,species" + (",id" if extra else "")]
    for i in range(rows):
        cat = rng.random() < 0.5
        w, h = (rng.normal(4, 1), rng.normal(25, 3)) if cat else (rng.normal(20, 4), rng.normal(55, 8))
        lines.append(f"{w:.2f},{h:.2f},{'cat' if cat else 'dog'}" + (f",{i}" if extra else ""))
    path.write_text("\n".join(lines) + "\n")


def test_derive_predict_writes_the_data_s_own_labels(tmp_path, capsys):
    _pets(tmp_path / "pets.csv", 120, 0)
    (tmp_path / "pets.yaml").write_text(CSV_SPEC)
    assert main(["--spec", str(tmp_path / "pets.yaml"), "--out", str(tmp_path / "gen"),
                 "--train", "-q", "--save-dir", str(tmp_path / "run")]) == 0
    _pets(tmp_path / "new.csv", 40, 1, extra=True)
    model, preds = str(tmp_path / "run" / "pets.npz"), tmp_path / "preds.csv"
    assert main(["predict", "--model", model, "--data", f"csv:{tmp_path / 'new.csv'}",
                 "--output", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert lines[0] == "row,species" and len(lines) == 41
    assert {line.split(",")[1] for line in lines[1:]} <= {"cat", "dog"}
    err = capsys.readouterr().err
    assert float(err.rsplit(" ", 1)[1]) >= 0.9  # the file's own species column
    before = preds.read_bytes()
    assert main(["predict", "--model", model, "--data", f"csv:{tmp_path / 'new.csv'}",
                 "--output", str(preds)]) == 2
    assert "add --force" in capsys.readouterr().err and preds.read_bytes() == before


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable model file"), (b"PK\x03\x04garbage", "not a readable model file")])
def test_damaged_model_files_are_clear_errors(tmp_path, capsys, content, message):
    model = tmp_path / "bad.npz"
    model.write_bytes(content)
    assert main(["predict", "--model", str(model), "--data", "iris"]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_model_file_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.npz"), "--data", "iris"]) == 2
    assert "no such model file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- nothing overwritten

SMALL = ROOT / "examples" / "seed002_relu_sigmoid.yaml"


def _refused(capsys, path: Path, argv: list[str]) -> None:
    """The command exits 2 naming ``path``, which keeps its bytes."""
    before = path.read_bytes()
    assert main(argv) == 2
    assert f"{path} exists and was not written by backprop-derive" in capsys.readouterr().err
    assert path.read_bytes() == before


@pytest.mark.parametrize("case", ["latex", "pdf", "plot", "confusion", "summary", "model"])
def test_a_users_file_is_never_overwritten_without_force(tmp_path, capsys, case):
    out = ["--spec", str(SMALL), "--out", str(tmp_path / "gen"), "-q"]
    argv = {
        "latex": (tmp_path / "notes.tex", ["--latex", str(tmp_path / "notes.tex")]),
        "pdf": (tmp_path / "notes.pdf", ["--latex", str(tmp_path / "notes.tex"), "--pdf"]),
        "plot": (tmp_path / "c.png", ["--train", "--plot", str(tmp_path / "c.png")]),
        "confusion": (tmp_path / "c_confusion.png", ["--train", "--plot", str(tmp_path / "c.png")]),
        "summary": (tmp_path / "d" / "summary.json", ["--train", "--save-dir", str(tmp_path / "d")]),
        "model": (tmp_path / "d" / "relu_sigmoid_mse.npz", ["--train", "--save-dir", str(tmp_path / "d")]),
    }[case]
    path, extra = argv
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"a user's own file\n")
    _refused(capsys, path, out + extra)
    assert not (tmp_path / "gen").exists()  # refused before anything was written


def test_each_run_gets_its_own_folder_and_a_save_dir_holding_a_model_needs_force(
        tmp_path, monkeypatch, capsys):
    from derive.training.runner import new_run_folder

    monkeypatch.chdir(tmp_path)
    assert new_run_folder("net") == Path("runs/net/1")
    (tmp_path / "runs" / "net" / "1").mkdir(parents=True)
    (tmp_path / "runs" / "net" / "7").mkdir()
    assert new_run_folder("net") == Path("runs/net/8")
    digits = ROOT / "examples" / "digits_mlp.yaml"
    argv = ["--spec", str(digits), "--out", "gen", "--train", "-q", "--epochs", "1",
            "--save-dir", "mine"]
    assert main(argv) == 0
    capsys.readouterr()
    first = (tmp_path / "mine" / "digits_mlp.npz").read_bytes()
    assert main(argv) == 2  # the second would replace the first's model: refused
    assert "--save-dir mine holds the model of an earlier run" in capsys.readouterr().err
    assert (tmp_path / "mine" / "digits_mlp.npz").read_bytes() == first
    assert main(argv + ["--force"]) == 0  # asked for: replaced
    capsys.readouterr()


# ----------------------------------------------------------------------------- damaged files

def _members(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(path: Path, members: dict[str, bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def _settings(members: dict[str, bytes]) -> dict:
    import io
    import json

    return json.loads(str(np.load(io.BytesIO(members["__settings__.npy"]))))


def _with_settings(members: dict[str, bytes], change) -> dict[str, bytes]:
    import json

    settings = _settings(members)
    change(settings)
    return {**members, "__settings__.npy": _npy(np.array(json.dumps(settings)))}


def _without(settings: dict, *keys) -> None:
    target = settings
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]


def _prep(settings: dict, key: str, value) -> None:
    settings["preprocessing"][key] = value


def _shape_header(shape) -> bytes:
    """A .npy header declaring ``shape`` of float32, with no data after it."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                               "shape": tuple(shape)})
    return out.getvalue()


def _damage(good: Path, how: str, target: Path) -> None:
    data = good.read_bytes()
    members = _members(good)
    if how.startswith("truncated"):
        cut = {"truncated-half": len(data) // 2, "truncated-100": 100,
               "truncated-end": len(data) - 10}[how]
        target.write_bytes(data[:cut])
    elif how == "crc":  # one byte of W1's data changed in place: the member's CRC-32 fails
        at = data.index(members["W1.npy"][-64:]) + 10
        target.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    elif how == "bare-npy":
        np.save(target.with_suffix(".npy"), np.zeros(3))
        target.with_suffix(".npy").rename(target)
    elif how == "foreign-zip":
        _zip(target, {"readme.txt": b"hello"})
    elif how == "empty-member":
        _zip(target, {**members, "W1.npy": b""})
    elif how == "header-only-member":
        _zip(target, {**members, "W1.npy": members["W1.npy"][:128]})
    elif how == "missing-member":
        _zip(target, {k: v for k, v in members.items() if k != "b2.npy"})
    elif how == "huge-shape":
        _zip(target, {**members, "W1.npy": _shape_header((10**6, 10**6))})
    elif how == "wrong-shape":
        _zip(target, {**members, "W1.npy": _npy(np.zeros((3, 3), np.float32))})
    elif how == "object-member":
        _zip(target, {**members, "W1.npy": members["W1.npy"].replace(b"<f4", b"|O ")})
    elif how in ("nan-weight", "inf-weight"):
        import io

        W1 = np.load(io.BytesIO(members["W1.npy"]))
        W1[0, 0] = np.nan if how == "nan-weight" else np.inf
        _zip(target, {**members, "W1.npy": _npy(W1)})
    elif how == "settings-not-json":
        _zip(target, {**members, "__settings__.npy": _npy(np.array("{not json"))})
    elif how == "settings-a-list":
        _zip(target, {**members, "__settings__.npy": _npy(np.array("[1, 2]"))})
    else:
        change = {
            "no-optimizer": lambda s: _without(s, "optimizer"),
            "no-progress": lambda s: _without(s, "progress"),
            "no-rng": lambda s: _without(s, "progress", "rng"),
            "bad-dtype": lambda s: s.update(dtype="complex64"),
            "bad-epoch": lambda s: s["progress"].update(epoch="three"),
            "scale-zero": lambda s: s["preprocessing"]["features"]["scale"].__setitem__(0, 0.0),
            "scale-short": lambda s: s["preprocessing"]["features"]["scale"].pop(),
            "mean-nan": lambda s: s["preprocessing"]["features"].__setitem__("mean", [None, 1.0]),
            "divide-zero": lambda s: _prep(s, "divide_by", 0),
            "duplicate-features": lambda s: _prep(s, "feature_names", ["weight", "weight"]),
            "duplicate-classes": lambda s: _prep(s, "classes", ["cat", "cat"]),
            "classes-short": lambda s: _prep(s, "classes", ["cat"]),
            "preprocessing-a-string": lambda s: _prep(s, "features", "standard"),
        }[how]
        _zip(target, _with_settings(members, change))


DAMAGES = ["truncated-half", "truncated-100", "truncated-end", "crc", "bare-npy", "foreign-zip",
           "empty-member", "header-only-member", "missing-member", "huge-shape", "wrong-shape",
           "object-member", "nan-weight", "inf-weight", "settings-not-json", "settings-a-list",
           "no-optimizer", "no-progress", "no-rng", "bad-dtype", "bad-epoch", "scale-zero",
           "scale-short", "mean-nan", "divide-zero", "duplicate-features", "duplicate-classes",
           "classes-short", "preprocessing-a-string"]


@pytest.fixture(scope="module")
def pets_model(tmp_path_factory):
    """A model file ``derive --train`` wrote, and its generated module."""
    folder = tmp_path_factory.mktemp("pets")
    _pets(folder / "pets.csv", 80, 0)
    (folder / "pets.yaml").write_text(CSV_SPEC.replace("epochs: 30", "epochs: 3"))
    assert main(["--spec", str(folder / "pets.yaml"), "--out", str(folder / "gen"), "--train",
                 "-q", "--save-dir", str(folder / "run")]) == 0
    from codegen.files import import_module_from

    return folder / "run" / "pets.npz", import_module_from(folder / "gen" / "pets.py"), folder


@pytest.mark.parametrize("how", DAMAGES)
def test_every_damaged_model_file_is_one_located_error(pets_model, tmp_path, capsys, how):
    good, module, folder = pets_model
    bad = tmp_path / f"{how}.npz"
    _damage(good, how, bad)
    with pytest.raises(ValueError) as caught:
        module.Trainer.load(bad)
    assert type(caught.value).__name__ == "ModelFileError"  # the runtime's one type
    assert str(bad) in str(caught.value)
    capsys.readouterr()
    status = main(["predict", "--model", str(bad), "--data", f"csv:{folder / 'pets.csv'}"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert str(bad) in err and "internal error" not in err and "Traceback" not in err


def test_the_undamaged_model_file_loads(pets_model, capsys):
    good, module, folder = pets_model
    assert module.Trainer.load(good).predict(np.array([[4.0, 25.0]])).tolist() == ["cat"]
    assert main(["predict", "--model", str(good), "--data", f"csv:{folder / 'pets.csv'}"]) == 0


# ----------------------------------------------------------------------------- predictions out

def _train_table(folder: Path, labels: tuple[str, str], name: str = "t") -> Path:
    """A model trained on a table whose classes are ``labels``; returns the model file."""
    rng = np.random.default_rng(0)
    lines = ["weight,height,species"]
    for _ in range(60):
        cat = rng.random() < 0.5
        lines.append(f"{rng.normal(4 if cat else 20, 1):.2f},{rng.normal(25 if cat else 55, 3):.2f},"
                     f"{labels[0] if cat else labels[1]}")
    (folder / "pets.csv").write_text("\n".join(lines) + "\n")
    (folder / "pets.yaml").write_text(CSV_SPEC.replace("name: pets", f"name: {name}"))
    assert main(["--spec", str(folder / "pets.yaml"), "--out", str(folder / "gen"), "--train",
                 "-q", "--save-dir", str(folder / "run")]) == 0
    return folder / "run" / f"{name}.npz"


def test_labels_that_look_like_formulas_are_quoted_in_the_predictions(tmp_path, capsys):
    model = _train_table(tmp_path, ("=cmd|' /C calc'!A0", "@dog"))
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--data", f"csv:{tmp_path / 'pets.csv'}",
                 "--output", str(tmp_path / "p.csv")]) == 0
    cells = [line.split(",", 1)[1] for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert cells and all(cell.startswith(("'=", "'@")) for cell in cells), cells[:3]


def test_labels_are_compared_as_the_values_they_are(tmp_path, capsys):
    model = _train_table(tmp_path, ("0", "1"))
    text = (tmp_path / "pets.csv").read_text()
    (tmp_path / "floats.csv").write_text(text.replace(",0\n", ",0.0\n").replace(",1\n", ",1.0\n"))
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--data", f"csv:{tmp_path / 'floats.csv'}"]) == 0
    err = capsys.readouterr().err
    assert "accuracy" in err and float(err.split(": ")[-1]) > 0.9, err


@pytest.mark.parametrize("where", ["folder", "device", "symlink", "full disk"])
def test_an_output_that_cannot_be_written_is_exit_2(tmp_path, capsys, monkeypatch, where):
    model = _train_table(tmp_path, ("cat", "dog"))
    output = {"folder": tmp_path / "out", "device": Path("/dev/null"),
              "symlink": tmp_path / "link.csv", "full disk": tmp_path / "p.csv"}[where]
    if where == "folder":
        output.mkdir()
    elif where == "symlink":
        output.symlink_to(model)
    elif where == "full disk":
        import errno

        import codegen.files

        def full(path, data):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(codegen.files, "atomic_write", full)
    before = model.read_bytes()
    capsys.readouterr()
    argv = ["predict", "--model", str(model), "--data", f"csv:{tmp_path / 'pets.csv'}",
            "--output", str(output)]
    assert main(argv + (["--force"] if where == "device" else [])) == 2
    err = capsys.readouterr().err
    assert str(output) in err and "Traceback" not in err and "internal error" not in err
    assert model.read_bytes() == before


def test_a_header_only_table_is_exit_2(tmp_path, capsys):
    model = _train_table(tmp_path, ("cat", "dog"))
    (tmp_path / "empty.csv").write_text("weight,height,species\n")
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--data", f"csv:{tmp_path / 'empty.csv'}"]) == 2
    err = capsys.readouterr().err
    assert "empty.csv" in err and "internal error" not in err


def test_loading_a_fifo_or_folder_is_an_error_not_a_hang(pets_model, tmp_path):
    import os
    import threading

    good, module, folder = pets_model
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    caught = []
    thread = threading.Thread(target=lambda: caught.append(_load_error(module, fifo)), daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # unblock it
        pytest.fail("Trainer.load hung on a FIFO")
    assert "not a regular file" in caught[0]
    assert "folder" in _load_error(module, tmp_path)


def _load_error(module, path) -> str:
    try:
        module.Trainer.load(path)
    except ValueError as err:
        assert type(err).__name__ == "ModelFileError"
        return str(err)
    return "loaded"
