"""Data for ``--train``: the IDX reader, the MNIST, CSV and bundled loaders, the split, the
scaling, and the checks of a data set against a spec."""

from __future__ import annotations

import gzip
import importlib
from pathlib import Path

import numpy as np
import pytest

from derive.datasets import DATASETS, written_names
from derive.errors import DataError
from derive.spec import load_spec_text
from derive.training.data import (CLASSIFICATION, REGRESSION, Dataset, load_csv, load_dataset,
                                  load_mnist)
from derive.training.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from derive.training.prepare import (ARGMAX, LABELS, THRESHOLD, VALUES, check_fits, prepare,
                                     random_split, stratified_split)

# ----------------------------------------------------------------------------- IDX files

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
          np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader."""
    array = np.asarray(array)
    header = bytes([0, 0, _CODES[array.dtype.newbyteorder("=")], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(folder: Path, n_train: int = 30, n_test: int | None = 12, gz: bool = True,
                seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Random MNIST-shaped IDX files; returns the training images and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    parts = [("train", n_train)] + ([("t10k", n_test)] if n_test else [])
    first = None
    for part, n in parts:
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, gz)
        first = first or (images, labels)
    return first


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_idx_round_trip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == "u1":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_idx(tmp_path / "a.idx", array, gz)
    read = read_idx(path)
    assert read.dtype == np.dtype(dtype) and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_idx_magic_numbers_of_mnist(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert read_idx(images, IMAGES_MAGIC).shape == (2, 28, 28)
    assert read_idx(labels, LABELS_MAGIC).shape == (2,)
    with pytest.raises(DataError) as info:
        read_idx(labels, IMAGES_MAGIC)
    message = str(info.value)
    assert str(labels) in message
    assert "magic number 2049" in message and "expected 2051" in message
    assert "1 dimension" in message and "3 dimensions" in message


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_truncated_file_names_file_and_sizes(tmp_path, gz):
    data = idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100]
    path = tmp_path / ("t.gz" if gz else "t")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as info:
        read_idx(path, IMAGES_MAGIC)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert "5x28x28" in message and f"{len(data)} bytes" in message and "3936" in message


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:9])
    with pytest.raises(DataError, match="shorter than its 16-byte header"):
        read_idx(short)
    long = tmp_path / "long"
    long.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"xyz")
    with pytest.raises(DataError, match="3 bytes after the 3 unsigned bytes"):
        read_idx(long)


@pytest.mark.parametrize("content, expected", [
    (b"", "0 bytes"),
    (b"ab", "2 bytes"),
    (b"<html>not an idx file</html>", "not a magic number"),
    (bytes([0, 0, 0x07, 1, 0, 0, 0, 0]), "not a magic number"),
    (bytes([0, 0, 0x08, 0]), "not a magic number"),
])
def test_idx_not_an_idx_file(tmp_path, content, expected):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_damaged_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 4, 4), np.uint8)))[:-12])
    with pytest.raises(DataError, match="damaged gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_mnist_loader_scales_flattens_and_uses_t10k(tmp_path, gz):
    images, labels = write_mnist(tmp_path, gz=gz)
    data = load_mnist(tmp_path)
    assert data.task == CLASSIFICATION and data.n_classes == 10
    assert data.X.shape == (30, 784) and data.X.dtype == np.float64
    np.testing.assert_array_equal(data.X, images.reshape(30, 784) / 255.0)
    assert 0.0 <= data.X.min() and data.X.max() <= 1.0
    np.testing.assert_array_equal(data.y, labels)
    assert data.test is not None and data.test[0].shape == (12, 784)
    assert data.scaling == "x/255"


def test_mnist_without_t10k_has_no_test_set(tmp_path):
    write_mnist(tmp_path, n_test=None)
    assert load_mnist(tmp_path).test is None


def test_mnist_dotted_file_names(tmp_path):
    write_mnist(tmp_path, n_test=None, gz=False)
    for path in tmp_path.iterdir():
        path.rename(tmp_path / path.name.replace("-idx", ".idx"))
    assert load_mnist(tmp_path).X.shape == (30, 784)


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no MNIST training files"):
        load_mnist(tmp_path)
    write_mnist(tmp_path, n_test=None)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no train-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_mnist_counts_and_labels_checked(tmp_path):
    write_mnist(tmp_path, n_test=None, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        load_mnist(tmp_path)
    write_idx(labels, np.full(30, 11, np.uint8))
    with pytest.raises(DataError, match="label 11 at index 0 is not a digit"):
        load_mnist(tmp_path)


def test_mnist_images_and_labels_swapped(tmp_path):
    write_mnist(tmp_path, n_test=None, gz=False)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    swap = tmp_path / "swap"
    images.rename(swap)
    labels.rename(images)
    swap.rename(labels)
    with pytest.raises(DataError, match="expected 2051") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_mnist_truncated_file_through_load_dataset(tmp_path):
    write_mnist(tmp_path / "mnist", n_test=None, gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated") as info:
        load_dataset("mnist:mnist", base_dir=tmp_path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- CSV

def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_string_labels_sorted(tmp_path):
    path = write_csv(tmp_path / "a.csv", "x1,x2,kind\n1,2,dog\n3,4,cat\n5,6,bird\n7,8,cat\n")
    data = load_csv(path, "kind")
    assert data.task == CLASSIFICATION
    assert data.class_names == ("bird", "cat", "dog")
    assert data.label_mapping == {"bird": 0, "cat": 1, "dog": 2}
    np.testing.assert_array_equal(data.y, [2, 1, 0, 1])
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert data.standardize and data.X.dtype == np.float64
    assert data.feature_names == ("x1", "x2")


def test_csv_target_anywhere_quoted_fields_blank_lines_bom(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes('\ufefflabel,"a",b\n"yes",1.5,-2\n\nno,2.5e1,"3"\n'.encode("utf-8"))
    data = load_csv(path, "label")
    assert data.class_names == ("no", "yes")
    np.testing.assert_array_equal(data.X, [[1.5, -2], [25, 3]])
    np.testing.assert_array_equal(data.y, [1, 0])


def test_csv_numeric_labels_sorted_by_value(tmp_path):
    # seed 003's liver-patient table labels its classes 1 and 2
    path = write_csv(tmp_path / "c.csv", "a,y\n0,10\n1,9\n2,2\n3,9.0\n")
    data = load_csv(path, "y", classes=True)
    assert data.class_names == ("2", "9", "10")
    np.testing.assert_array_equal(data.y, [2, 1, 0, 1])
    assert data.label_mapping == {"2": 0, "9": 1, "10": 2}


def test_csv_numeric_target_is_regression_unless_classes(tmp_path):
    path = write_csv(tmp_path / "r.csv", "a,b,price\n1,2,3.5\n4,5,6.25\n")
    data = load_csv(path, "price")
    assert data.task == REGRESSION and data.y.shape == (2, 1)
    np.testing.assert_array_equal(data.y[:, 0], [3.5, 6.25])
    assert data.target_names == ("price",)
    assert load_csv(path, "price", classes=True).task == CLASSIFICATION


@pytest.mark.parametrize("text, expected", [
    ("a,b,y\n1,2,p\n3,,q\n", r"1 missing cell \(empty, NA, N/A, NaN, null or \?\): line 3 "
                                r"column 'b'"),
    ("a,b,y\n1,2,p\n3,x4,q\n", r"line 3, column 'b': 'x4' is not a number"),
    ("a,b,y\n1,inf,p\n", r"line 2, column 'b': 'inf' is not a finite number"),
    ("a,b,y\n1,nan,p\n", r"1 missing cell .*: line 2 column 'b'"),
    ("a,b,y\n1,2,p\n3,4\n", r"line 3: 2 fields, but the header has 3 columns"),
    ("a,b,y\n1,2,\n", r"1 missing cell .*: line 2 column 'y'"),
    ("a,b,z\n1,2,p\n", r"has no target column 'y' \(its columns: a, b, z\)"),
    ("a,b,Y\n1,2,p\n", r"did you mean 'Y'\?"),
    ("", r"is empty \(expected a header row"),
    ("a,b,y\n", r"has a header but no rows"),
    ("y\n1\n", r"no feature columns are left"),
    ("a,a,y\n1,2,p\n", r"names column 'a' twice"),
    ("a,b,y\n1,2,p\n3,4,p\n", r"holds a single class \('p'\)"),
])
def test_csv_errors_name_file_row_and_column(tmp_path, text, expected):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=expected) as info:
        load_csv(path, "y")
    assert str(path) in str(info.value)


def test_csv_string_target_for_regression_is_an_error(tmp_path):
    path = write_csv(tmp_path / "r.csv", "a,y\n1,2\n3,high\n")
    with pytest.raises(DataError, match=r"line 3: the target 'y' is 'high'.*mse"):
        load_csv(path, "y", classes=False)


def test_csv_unreadable(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "none.csv", "y")
    with pytest.raises(DataError, match="is a folder"):
        load_csv(tmp_path, "y")
    (tmp_path / "latin.csv").write_bytes("a,y\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_csv(tmp_path / "latin.csv", "y")


def test_csv_path_relative_to_the_spec_folder(tmp_path):
    write_csv(tmp_path / "t.csv", "a,y\n1,p\n2,q\n")
    data = load_dataset("csv:t.csv", target="y", base_dir=tmp_path)
    assert data.name == "csv:t.csv" and data.n_examples == 2
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("csv:t.csv", target="y", base_dir=tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- bundled

def test_digits():
    data = load_dataset("digits")
    assert data.X.shape == (1797, 64) and data.X.dtype == np.float64
    assert data.X.min() == 0.0 and data.X.max() == 1.0  # pixel intensities 0..16 / 16
    assert data.class_names == tuple("0123456789") and data.task == CLASSIFICATION
    assert not data.standardize and data.scaling == "x/16"
    assert np.bincount(data.y).min() >= 170


@pytest.mark.parametrize("name, shape, classes", [
    ("iris", (150, 4), ("setosa", "versicolor", "virginica")),
    ("breast_cancer", (569, 30), ("malignant", "benign")),
])
def test_bundled_classification(name, shape, classes):
    data = load_dataset(name)
    assert data.X.shape == shape and data.class_names == classes and data.standardize


def test_diabetes_in_original_units():
    data = load_dataset("diabetes")
    assert data.task == REGRESSION and data.X.shape == (442, 10) and data.y.shape == (442, 1)
    assert data.X[:, 0].max() > 50  # age in years, not scikit-learn's scaled version
    assert 25 <= data.y.min() and data.y.max() <= 346
    assert data.standardize


def test_unknown_dataset():
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    assert str(info.value) == (f"unknown data set 'mnist' "
                               f"(expected one of: {', '.join(written_names())})")
    with pytest.raises(DataError, match="unknown data set 'digits:x'"):
        load_dataset("digits:x")  # a named set takes no path


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_declaration_names_a_loader_and_its_task(name):
    declaration = DATASETS[name]
    module, _, function = declaration.loader.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    if not declaration.path:  # the bundled sets load from the installed package
        assert load_dataset(name).task == declaration.task


# ----------------------------------------------------------------------------- the split

def test_stratified_split_keeps_class_shares():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, test])) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=4), [10, 6, 3, 1])


def test_stratified_split_rounding_and_small_classes():
    labels = np.repeat(np.arange(3), [7, 7, 1])
    for fraction in (0.1, 0.3, 0.5, 0.9):
        train, test = stratified_split(labels, fraction, seed=3)
        assert len(set(train) | set(test)) == 15 and not set(train) & set(test)
        counts, whole = np.bincount(labels[test], minlength=3), np.bincount(labels)
        assert np.all(np.abs(counts - fraction * whole) < 1 + 1e-9)
        assert np.all(np.bincount(labels[train], minlength=3) >= 1)  # every class is learnt


def test_stratified_split_on_digits_is_within_one_per_class():
    data = load_dataset("digits")
    train, test = stratified_split(data.y, 0.2, seed=7)
    share = np.bincount(data.y[test]) / np.bincount(data.y)
    assert np.all(np.abs(share - 0.2) < 1 / 170)
    assert len(test) == round(0.2 * 1797)


def test_splits_are_deterministic_by_seed():
    labels = np.arange(200) % 3
    a, b = stratified_split(labels, 0.25, 5), stratified_split(labels, 0.25, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert set(stratified_split(labels, 0.25, 6)[1]) != set(a[1])
    r1, r2 = random_split(100, 0.3, 1), random_split(100, 0.3, 1)
    np.testing.assert_array_equal(r1[1], r2[1])
    assert len(r1[1]) == 30 and set(random_split(100, 0.3, 2)[1]) != set(r1[1])


def test_split_needs_two_examples():
    with pytest.raises(DataError, match="at least 2"):
        random_split(1, 0.5, 0)
    train, test = random_split(2, 0.01, 0)
    assert len(train) == len(test) == 1


# ----------------------------------------------------------------------------- prepare

def _spec(input_: int, layers: str, loss: str, data: str = "") -> object:
    return load_spec_text(f"name: t\ninput: {input_}\nlayers:\n{layers}\nloss: {loss}\n{data}",
                          "t.yaml")


SOFTMAX3 = "  - {units: 5, activation: relu}\n  - {units: 3, activation: softmax}"
SIGMOID1 = "  - {units: 5, activation: relu}\n  - {units: 1, activation: sigmoid}"
IDENTITY1 = "  - {units: 5, activation: tanh}\n  - {units: 1, activation: identity}"


def _table(task=CLASSIFICATION, m=40, n=4, k=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(5.0, 3.0, size=(m, n))
    if task == REGRESSION:
        return Dataset("table", X, rng.normal(100, 20, size=(m, 1)), REGRESSION,
                       target_names=("v",), standardize=True)
    return Dataset("table", X, np.arange(m) % k, CLASSIFICATION,
                   class_names=tuple(f"c{i}" for i in range(k)), standardize=True)


def test_feature_count_message():
    spec = _spec(784, "  - {units: 10, activation: softmax}", "categorical_crossentropy")
    with pytest.raises(DataError) as info:
        check_fits(spec, "classification", load_dataset("digits"))
    assert str(info.value).startswith("digits has 64 features, the spec's input is 784")


@pytest.mark.parametrize("layers, loss, task, k, expected", [
    (SOFTMAX3, "categorical_crossentropy", "classification", 4,
     "table has 4 classes, the spec's output layer has 3 softmax units: 4 classes need 4 "
     "softmax units"),
    (SOFTMAX3, "categorical_crossentropy", "classification", 2,
     "2 classes need 2 softmax units, or 1 sigmoid unit with binary_crossentropy"),
    (SIGMOID1, "binary_crossentropy", "binary", 3,
     "table has 3 classes, but binary_crossentropy on a sigmoid output separates 2: use 3 "
     "softmax units"),
    ("  - {units: 3, activation: sigmoid}", "binary_crossentropy", "binary", 2,
     "binary_crossentropy with 3 sigmoid units predicts 3 separate yes/no labels"),
    ("  - {units: 3, activation: sigmoid}", "mse", "regression", 4,
     "table has 4 classes; a network trained with mse learns them as one-hot targets, which "
     "needs 4 output units, but the spec's output layer has 3"),
])
def test_class_count_messages(layers, loss, task, k, expected):
    with pytest.raises(DataError) as info:
        check_fits(_spec(4, layers, loss), task, _table(k=k))
    assert expected in str(info.value)


def test_regression_messages():
    data = _table(REGRESSION)
    with pytest.raises(DataError, match="table is a regression data set .* "
                                        "categorical_crossentropy needs class labels"):
        check_fits(_spec(4, SOFTMAX3, "categorical_crossentropy"), "classification", data)
    two = "  - {units: 2, activation: identity}"
    with pytest.raises(DataError, match="table has 1 target column, the spec's output layer "
                                        "has 2 units"):
        check_fits(_spec(4, two, "mse"), "regression", data)


@pytest.mark.parametrize("layers, loss, task, k, decode", [
    (SOFTMAX3, "categorical_crossentropy", "classification", 3, LABELS),
    (SIGMOID1, "binary_crossentropy", "binary", 2, LABELS),
    ("  - {units: 3, activation: sigmoid}", "mse", "regression", 3, ARGMAX),
    (SIGMOID1, "mse", "regression", 2, THRESHOLD),
])
def test_target_encodings(layers, loss, task, k, decode):
    prepared = prepare(_spec(4, layers, loss), task, _table(k=k), 0.25, seed=0)
    assert prepared.decode == decode
    if decode == ARGMAX:
        np.testing.assert_array_equal(prepared.Y_train, np.eye(k)[prepared.truth_train])
    elif decode == THRESHOLD:
        assert prepared.Y_train.shape == (len(prepared.truth_train), 1)
    else:
        np.testing.assert_array_equal(prepared.Y_train, prepared.truth_train)
    outputs = np.eye(k)[prepared.truth_test] if decode == ARGMAX else prepared.truth_test
    np.testing.assert_array_equal(prepared.predictions(outputs), prepared.truth_test)


def test_standardisation_uses_training_statistics_only():
    data = _table(m=60)
    prepared = prepare(_spec(4, SOFTMAX3, "categorical_crossentropy"), "classification", data,
                       0.25, seed=1)
    train, test = stratified_split(data.y, 0.25, 1)
    mean, std = data.X[train].mean(axis=0), data.X[train].std(axis=0)
    np.testing.assert_allclose(prepared.X_train, (data.X[train] - mean) / std)
    np.testing.assert_allclose(prepared.X_test, (data.X[test] - mean) / std)
    np.testing.assert_allclose(prepared.X_train.mean(axis=0), 0, atol=1e-12)
    assert np.all(np.abs(prepared.X_test.mean(axis=0)) > 1e-6)  # the test part's own mean is not 0


def test_regression_targets_standardised_and_mapped_back():
    data = _table(REGRESSION, m=50)
    prepared = prepare(_spec(4, IDENTITY1, "mse"), "regression", data, 0.2, seed=0)
    assert prepared.decode == VALUES and len(prepared.X_test) == 10
    np.testing.assert_allclose(prepared.Y_train.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(prepared.Y_train.std(), 1)
    np.testing.assert_allclose(prepared.predictions(prepared.Y_test), prepared.truth_test)
    assert prepared.truth_test.mean() > 50  # the original units


def test_constant_feature_is_not_divided_by_zero():
    data = _table()
    X = data.X.copy()
    X[:, 2] = 7.0
    data = Dataset("t", X, data.y, CLASSIFICATION, class_names=data.class_names, standardize=True)
    prepared = prepare(_spec(4, SOFTMAX3, "categorical_crossentropy"), "classification", data,
                       0.25, seed=0)
    assert np.all(prepared.X_train[:, 2] == 0) and np.all(np.isfinite(prepared.X_test))


def test_fixed_test_set_is_used_as_is(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    spec = _spec(784, "  - {units: 10, activation: softmax}", "categorical_crossentropy")
    prepared = prepare(spec, "classification", load_mnist(tmp_path), 0.5, seed=0)
    assert len(prepared.X_train) == 20 and len(prepared.X_test) == 10
    assert prepared.split == "the data set's own test set"


# ----------------------------------------------------------------------------- bounded reads

def test_mnist_with_zero_images_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((0,), np.uint8))
    with pytest.raises(DataError, match="holds 0 images") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_mnist_with_a_single_class_is_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full((5,), 7, np.uint8))
    with pytest.raises(DataError, match=r"single class \(7\)"):
        load_mnist(tmp_path)


def test_an_idx_file_that_unpacks_too_big_is_refused(tmp_path, monkeypatch):
    import derive.training.idx

    path = write_idx(tmp_path / "images.gz", np.zeros((50, 28, 28), np.uint8), gz=True)
    monkeypatch.setattr(derive.training.idx, "MAX_IDX_BYTES", 1000)
    with pytest.raises(DataError, match="once unpacked") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    plain = write_idx(tmp_path / "images", np.zeros((50, 28, 28), np.uint8))
    with pytest.raises(DataError, match="more than 1,000 bytes"):
        read_idx(plain)


def test_a_csv_line_without_end_is_refused_with_its_line(tmp_path, monkeypatch):
    import derive.training.data

    monkeypatch.setattr(derive.training.data, "MAX_CSV_LINE", 100)
    path = write_csv(tmp_path / "long.csv", "a,b,label\n1,2,x\n" + "3," * 200 + "y\n")
    with pytest.raises(DataError) as info:
        load_csv(path, "label")
    assert f"{path}, line 3: longer than 100 characters" in str(info.value)


def test_a_csv_larger_than_the_bound_is_refused_before_reading(tmp_path, monkeypatch):
    import derive.training.data

    monkeypatch.setattr(derive.training.data, "MAX_CSV_BYTES", 10)
    path = write_csv(tmp_path / "big.csv", "a,b,label\n1,2,x\n3,4,y\n")
    with pytest.raises(DataError, match="more than the 10 a CSV may have") as info:
        load_csv(path, "label")
    assert str(path) in str(info.value)


def test_each_class_once_leaves_no_test_part_and_says_so():
    with pytest.raises(DataError, match="single example"):
        stratified_split(np.array([0, 1, 2, 3]), 0.25, seed=0)


def test_the_test_part_goes_to_a_class_that_can_spare_an_example():
    labels = np.array([0, 1, 2, 3, 3])  # n_test = 1: only class 3 can give one up
    train, test = stratified_split(labels, 0.2, seed=0)
    assert labels[test].tolist() == [3] and sorted(labels[train].tolist()) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- numerics of scaling

def _two_blobs(factor: float, rows: int = 200) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(rows) % 2
    X = np.column_stack([rng.normal(y * 3.0, 1.0), rng.normal(size=rows)]) * [factor, 1.0]
    return Dataset("csv:t.csv", X, y.astype(np.int64), CLASSIFICATION, ("a", "b"),
                   feature_names=("huge", "plain"), standardize=True)


TWO_CLASSES = """\
name: t
input: 2
layers:
  - {units: 2, activation: softmax}
loss: categorical_crossentropy
dtype: DTYPE
"""


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_scaling_a_feature_near_1e160_loses_nothing(kind):
    spec = load_spec_text(TWO_CLASSES.replace("DTYPE", "float64"), "t.yaml")
    big = prepare(spec, "classification", _two_blobs(1e160), 0.2, 0, scaling=kind)
    plain = prepare(spec, "classification", _two_blobs(1.0), 0.2, 0, scaling=kind)
    assert np.all(np.isfinite(big.X_train)) and np.ptp(big.X_train[:, 0]) > 0.5
    np.testing.assert_allclose(big.X_train, plain.X_train, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(big.features.scale[0] / 1e160, plain.features.scale[0], rtol=1e-9)


def test_values_beyond_the_dtype_are_refused_naming_the_column():
    spec = load_spec_text(TWO_CLASSES.replace("DTYPE", "float32"), "t.yaml")
    with pytest.raises(DataError, match=r"'huge'.*float32") as caught:
        prepare(spec, "classification", _two_blobs(1e40), 0.2, 0, scaling="none")
    assert "scaling" in str(caught.value)  # the hint: scale it
    prepare(spec, "classification", _two_blobs(1e40), 0.2, 0, scaling="standard")  # fine scaled


@pytest.mark.parametrize("shape", [(2**32 - 1,) * 4, (2**32 - 1, 2**32 - 1, 2**31, 2**31),
                                   (2**16, 2**16, 2**16, 2**16)])
def test_idx_sizes_overflowing_int64_are_a_truncated_file(tmp_path, shape):
    path = tmp_path / "images"
    path.write_bytes(bytes([0, 0, 0x08, len(shape)])
                     + b"".join(n.to_bytes(4, "big") for n in shape) + b"\0" * 16)
    with pytest.raises(DataError, match="is truncated") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)
