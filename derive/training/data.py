"""Data sources for ``derive --train``: each gives a ``Dataset`` (X float64 (m, n), y, metadata).

Each data set is declared once in ``derive.datasets.DATASETS``, which names its loader here.
scikit-learn's bundled data sets are read from the installed package (no download);
``mnist:DIR`` reads the MNIST IDX files of a folder; ``csv:PATH`` reads a table with a header
row.  Fixed scalings
(digits x/16, MNIST x/255) are applied here; tabular sources are marked for standardisation,
which ``prepare`` does after the split with the training set's statistics only.
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import (CLASSIFICATION, DATASETS, REGRESSION, SKLEARN, DataRequest,
                        written_names)
from codegen.runtime import CATEGORY, MISSING, NUMBER

from ..errors import DataError
from ..netspec import IMPUTATIONS, MISSING_CHOICES
from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

__all__ = ["Dataset", "MISSING_CHOICES", "IMPUTATIONS", "load_dataset", "load_csv", "load_mnist", "read_csv", "read_mnist",
           "load_digits", "load_iris", "load_breast_cancer", "load_diabetes", "ColumnError",
           "read_table", "read_columns",
           "CLASSIFICATION", "REGRESSION", "MAX_CSV_BYTES", "MAX_CSV_LINE"]

# a CSV is read into Python lists first (several times its size in memory): bounded, and so is
# each line, so that a file without line breaks is refused instead of filling the memory
MAX_CSV_BYTES = 1 << 30
MAX_CSV_LINE = 1 << 20  # characters
_MISSING_SPELLINGS = "empty, NA, N/A, NaN, null or ?"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Examples along axis 0, with what is needed to check them against a spec and report."""

    name: str  # as the spec writes it: "digits", "mnist:DIR", "csv:PATH"
    X: np.ndarray  # (m, n_features) float64
    y: np.ndarray  # classification: (m,) int64 class indices; regression: (m, k) float64
    task: str  # CLASSIFICATION | REGRESSION
    class_names: tuple[str, ...] = ()  # class index -> name
    target_names: tuple[str, ...] = ()  # regression: the target columns
    feature_names: tuple[str, ...] = ()  # tabular sources: the feature columns
    standardize: bool = False  # standardise X (and a regression y) with training statistics
    scaling: str = ""  # the fixed scaling already applied, for the report ("x/16")
    test: tuple[np.ndarray, np.ndarray] | None = None  # a fixed test set (MNIST's t10k files)
    label_mapping: dict[str, int] | None = None  # CSV class labels -> index
    divide_by: float = 1.0  # the fixed scaling: X is the raw values / divide_by
    test_source: str | None = None  # where ``test`` came from, when the spec named it
    # a table whose columns are encoded after the split (``prepare``): each feature column's
    # kind (NUMBER, CATEGORY); X then holds floats with NaN for a missing cell, or (with a
    # category column) objects: floats and strings, None for a missing cell.  None: X is ready
    kinds: tuple[str, ...] | None = None
    missing: str = "error"  # data.missing: error | drop | mean | median | most_frequent
    dropped: int = 0  # rows left out for a missing cell (data.missing: drop, or no label)

    @property
    def n_examples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_targets(self) -> int:
        return self.y.shape[1] if self.task == REGRESSION else 1


def load_dataset(dataset: str = "digits", *, target: str | tuple[str, ...] | None = None,
                 base_dir: str | Path | None = None, classes: bool | None = None,
                 features: tuple[str, ...] | None = None, drop: tuple[str, ...] = (),
                 delimiter: str = ",", test: str | None = None, missing: str = "error",
                 categorical: str | tuple[str, ...] | None = None) -> Dataset:
    """The data set a spec's ``data.dataset`` names (a name in ``derive.datasets.DATASETS``).

    ``mnist:DIR`` and ``csv:PATH`` (and ``test``, a separate ``csv:PATH`` test table) are read
    relative to ``base_dir`` (the spec's folder) unless absolute.  A table's options:
    ``target`` (the label column, or a tuple of value columns), ``features`` or ``drop``,
    ``delimiter``, ``missing``, ``categorical`` (``load_csv``); ``classes`` says whether its target holds class labels (True), real values
    (False) or whichever it looks like (None).
    """
    kind, colon, rest = dataset.partition(":")
    declaration = DATASETS[kind] if kind in DATASETS else None
    if declaration is None or bool(colon) != bool(declaration.path):
        raise DataError(f"unknown data set {dataset!r} "
                        f"(expected one of: {', '.join(written_names())})")
    if not declaration.path:
        return declaration.load()
    test_path = _resolve(test.partition(":")[2], base_dir) if test else None
    return declaration.load(DataRequest(dataset, _resolve(rest, base_dir), target, classes,
                                        features, drop, delimiter, test_path, missing,
                                        categorical))


def _resolve(path: str, base_dir: str | Path | None) -> Path:
    """``path`` relative to ``base_dir`` (the spec's folder) unless absolute."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = Path(base_dir) / resolved
    return resolved


# ----------------------------------------------------------------------------- scikit-learn

def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError:
        bundled = ", ".join(name for name in DATASETS if DATASETS[name].package == SKLEARN)
        raise DataError(f"the bundled data sets ({bundled}) come from {SKLEARN}, which is "
                        f"not installed: pip install {SKLEARN}") from None
    return datasets


def load_digits() -> Dataset:
    """1797 8x8 handwritten digits, pixel intensities 0..16 scaled by 1/16 to [0, 1]."""
    bunch = _sklearn_datasets().load_digits()
    return Dataset("digits", np.asarray(bunch.data, dtype=np.float64) / 16.0,
                   np.asarray(bunch.target, dtype=np.int64), CLASSIFICATION,
                   class_names=tuple(str(c) for c in bunch.target_names), scaling="x/16",
                   divide_by=16.0)


def load_iris() -> Dataset:
    """150 irises, 4 measurements, 3 species."""
    bunch = _sklearn_datasets().load_iris()
    return Dataset("iris", np.asarray(bunch.data, dtype=np.float64),
                   np.asarray(bunch.target, dtype=np.int64), CLASSIFICATION,
                   class_names=tuple(bunch.target_names), standardize=True,
                   feature_names=tuple(bunch.feature_names))


def load_breast_cancer() -> Dataset:
    """569 tumours, 30 features, malignant (0) or benign (1)."""
    bunch = _sklearn_datasets().load_breast_cancer()
    return Dataset("breast_cancer", np.asarray(bunch.data, dtype=np.float64),
                   np.asarray(bunch.target, dtype=np.int64), CLASSIFICATION,
                   class_names=tuple(bunch.target_names), standardize=True,
                   feature_names=tuple(bunch.feature_names))


def load_diabetes() -> Dataset:
    """442 patients, 10 features in their original units, disease progression after a year."""
    bunch = _sklearn_datasets().load_diabetes(scaled=False)
    y = np.asarray(bunch.target, dtype=np.float64).reshape(-1, 1)
    return Dataset("diabetes", np.asarray(bunch.data, dtype=np.float64), y, REGRESSION,
                   target_names=("disease progression",), standardize=True,
                   feature_names=tuple(bunch.feature_names))


# ----------------------------------------------------------------------------- MNIST

_MNIST_PARTS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path | None:
    """``stem``, ``stem.gz`` or the ``.idx3-ubyte`` spelling some mirrors use."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray] | None:
    images_stem, labels_stem = _MNIST_PARTS[part]
    images_path, labels_path = _find(folder, images_stem), _find(folder, labels_stem)
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        have, missing = ((labels_path, images_stem) if images_path is None
                         else (images_path, labels_stem))
        raise DataError(f"{folder} has {have.name} but no {missing}[.gz] to go with it")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] == 0:
        raise DataError(f"{images_path} holds 0 images (its header says so): nothing to "
                        "train or test on; download it again")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} "
                        f"holds {labels.shape[0]} labels; they must match")
    if labels.size and labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise DataError(f"{labels_path}: label {labels[row]} at index {row} is not a digit 0..9")
    X = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    return X, labels.astype(np.int64)


def read_mnist(request: DataRequest) -> Dataset:
    """``mnist:DIR``: the loader its declaration names."""
    return load_mnist(request.path, name=request.written)


def load_mnist(folder: str | Path, name: str | None = None) -> Dataset:
    """MNIST from its IDX files in ``folder``: pixels / 255 flattened to rows of 28*28 = 784.

    The t10k files, when present, are the test set; otherwise the training files are split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder (mnist:DIR names the folder that holds "
                        "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz)")
    train = _mnist_part(folder, "train")
    if train is None:
        raise DataError(f"{folder} holds no MNIST training files (expected "
                        "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], and "
                        "optionally t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz])")
    test = _mnist_part(folder, "t10k")
    if test is not None and test[0].shape[1] != train[0].shape[1]:
        raise DataError(f"the t10k images in {folder} have {test[0].shape[1]} pixels, the "
                        f"training images {train[0].shape[1]}")
    present = np.unique(train[1])
    if present.size < 2:
        raise DataError(f"the training labels in {folder} hold a single class "
                        f"({int(present[0])}): a classifier needs at least two")
    return Dataset(name or f"mnist:{folder}", train[0], train[1], CLASSIFICATION,
                   class_names=tuple(str(d) for d in range(10)), scaling="x/255", test=test,
                   divide_by=255.0)


# ----------------------------------------------------------------------------- CSV

def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class _LineTooLong(Exception):
    pass


def _bounded_lines(handle):
    """The file's lines, each read with at most ``MAX_CSV_LINE`` characters."""
    limit = MAX_CSV_LINE
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            raise _LineTooLong
        yield line


def _read_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of each non-blank row."""
    reader = None
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise DataError(f"{path} has {size:,} bytes, more than the {MAX_CSV_BYTES:,} a CSV "
                            "may have here (it is read into memory whole): sample it, or split "
                            "it into smaller files")
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(_bounded_lines(handle), delimiter=delimiter)
            header, rows = None, []
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue
                if header is None:
                    header = [field.strip() for field in fields]
                else:
                    rows.append((reader.line_num, fields))
    except _LineTooLong:
        line = (reader.line_num if reader is not None else 0) + 1
        raise DataError(f"{path}, line {line}: longer than {MAX_CSV_LINE:,} characters (a "
                        "file without line breaks, or not a CSV file?)") from None
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header is None:
        raise DataError(f"{path} is empty (expected a header row naming the columns)")
    if len(set(header)) != len(header):
        twice = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{path}: the header names column {twice!r} twice")
    return header, rows


class ColumnError(DataError):
    """A column the spec names (``field``: ``target``, ``features[1]``, ...) that the table
    does not have; the runner adds the spec's file and line as the location."""

    def __init__(self, message: str, field: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.field = field


_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'", ",": "','"}


def _delimiter_hint(header: list[str], delimiter: str) -> str | None:
    """A hint when the whole header is one column holding another separator."""
    if len(header) != 1:
        return None
    found = [sep for sep in _SEPARATORS if sep != delimiter and sep in header[0]]
    if not found:
        return None
    return (f"the header is a single column, {header[0]!r}: the file looks separated by "
            f"{_SEPARATORS[found[0]]}, so set data.delimiter: {_SEPARATORS[found[0]]}")


def _column(path: Path, header: list[str], name: str, field: str, delimiter: str,
            what: str = "column") -> int:
    """The index of column ``name``; a located ColumnError with the nearest name if missing."""
    if name in header:
        return header.index(name)
    hint = _delimiter_hint(header, delimiter)
    if hint is None:
        same_case = [h for h in header if h.lower() == name.lower()]
        near = same_case or difflib.get_close_matches(name, header, n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}?" if near else None
    raise ColumnError(f"{path} has no {what} {name!r} (its columns: {', '.join(header)})",
                      field, hint)


def _class_codes(values: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices in sorted order of the labels: numerically if all are numbers."""
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        first: dict[float, str] = {}
        for value, number in zip(values, numbers):
            first.setdefault(number, value)
        order = sorted(first)
        index = {number: i for i, number in enumerate(order)}
        return np.array([index[n] for n in numbers], dtype=np.int64), tuple(first[n] for n in order)
    names = tuple(sorted(set(values)))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def read_table(path: str | Path, delimiter: str = ",") -> dict[str, np.ndarray]:
    """Every column of a CSV file with a header, as text (object arrays), by column name: the
    raw table that a model file's ``Trainer.predict`` matches by name and encodes."""
    path = Path(path)
    header, rows = _read_rows(path, delimiter)
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{path}, line {line}: {len(fields)} fields, but the header has "
                            f"{len(header)} columns")
    return {name: np.array([fields[c].strip() for _, fields in rows], dtype=object)
            for c, name in enumerate(header)}


def read_columns(path: str | Path, names: tuple[str, ...],
                 delimiter: str = ",") -> list[list[str]] | None:
    """The columns ``names`` of a CSV file as text, row by row; None unless it has them all."""
    header, rows = _read_rows(Path(path), delimiter)
    if not names or any(name not in header for name in names):
        return None
    columns = [header.index(name) for name in names]
    return [[fields[c].strip() if c < len(fields) else "" for c in columns] for _, fields in rows]


def _is_missing(text: str) -> bool:
    return text.lower() in MISSING


def _cells(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
           features: list[int], targets: list[int]) -> tuple[list[list[str]], list[list[str]]]:
    """The feature fields (one list per feature column) and the target fields (one list per
    row), as stripped text."""
    columns: list[list[str]] = [[] for _ in features]
    labels = []
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{path}, line {line}: {len(fields)} fields, but the header has "
                            f"{len(header)} columns")
        for column, c in zip(columns, features):
            column.append(fields[c].strip())
        labels.append([fields[c].strip() for c in targets])
    return columns, labels


def _table(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
           features: list[int], targets: list[int]) -> tuple[np.ndarray, list[list[str]]]:
    """The feature columns as floats (rows, len(features)), and the target fields as text:
    a complete table of numbers (a missing cell is an error)."""
    table = _read_table(path, header, rows, features, targets, None, "error")
    return table.X, table.labels


@dataclass(frozen=True, eq=False)
class _Table:
    X: np.ndarray  # floats, or objects when a column is a category column
    labels: list[list[str]]
    rows: list[tuple[int, list[str]]]  # the rows kept
    kinds: tuple[str, ...]
    dropped: int


def _read_table(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
                features: list[int], targets: list[int],
                categorical: str | tuple[str, ...] | None, missing: str,
                kinds: tuple[str, ...] | None = None) -> _Table:
    """The feature columns of a table, its missing cells handled as ``missing`` says and its
    columns' kinds decided (``categorical``: ``auto``, the category columns by name, or None:
    none), or as ``kinds`` gives them (a test table takes the training table's)."""
    columns, labels = _cells(path, header, rows, features, targets)
    names = [header[c] for c in features]
    if kinds is None:
        auto = categorical == "auto"
        listed = set(categorical) if isinstance(categorical, tuple) else set()
        kinds = tuple(CATEGORY if name in listed or (auto and any(
            not _is_missing(t) and _number(t) is None for t in column)) else NUMBER
                      for name, column in zip(names, columns))
    holes = [(rows[r][0], names[j]) for j, column in enumerate(columns)
             for r, text in enumerate(column) if _is_missing(text)]
    no_label = [(rows[r][0], header[c]) for r, row in enumerate(labels)
                for c, text in zip(targets, row) if _is_missing(text)]
    if missing == "error" and (holes or no_label):
        cells = sorted(holes + no_label)
        shown = ", ".join(f"line {line} column {name!r}" for line, name in cells[:5])
        more = f" and {len(cells) - 5} more" if len(cells) > 5 else ""
        raise DataError(f"{path}: {len(cells)} missing cell{'s' if len(cells) > 1 else ''} "
                        f"({_MISSING_SPELLINGS}): {shown}{more}",
                        hint="set data.missing: drop (leave such rows out) or mean, median or "
                             "most_frequent (fill them with the training part's value)")
    # a row without its label cannot be learnt from, whichever the strategy
    skip = {line for line, _ in no_label} | ({line for line, _ in holes} if missing == "drop"
                                             else set())
    keep = [r for r, (line, _) in enumerate(rows) if line not in skip]
    X = np.empty((len(keep), len(features)),
                 dtype=object if CATEGORY in kinds else np.float64)
    for j, (column, name, kind) in enumerate(zip(columns, names, kinds)):
        for i, r in enumerate(keep):
            text = column[r]
            if kind == CATEGORY:
                X[i, j] = None if _is_missing(text) else text
            else:
                X[i, j] = np.nan if _is_missing(text) else _feature(text, path, rows[r][0], name)
    return _Table(X, [labels[r] for r in keep], [rows[r] for r in keep], kinds,
                  len(rows) - len(keep))


def read_csv(request: DataRequest) -> Dataset:
    """``csv:PATH``: the loader its declaration names."""
    return load_csv(request.path, request.target, classes=request.classes, name=request.written,
                    features=request.features, drop=request.drop, delimiter=request.delimiter,
                    test=request.test, missing=request.missing, categorical=request.categorical)


def load_csv(path: str | Path, target: str | tuple[str, ...] | None, *,
             classes: bool | None = None, name: str | None = None,
             features: tuple[str, ...] | None = None, drop: tuple[str, ...] = (),
             delimiter: str = ",", test: str | Path | None = None, missing: str = "error",
             categorical: str | tuple[str, ...] | None = None) -> Dataset:
    """A table with a header row: feature columns and the ``target`` column(s).

    ``target`` is one label column, or a tuple of value columns (regression, one output unit
    each).  The features are the columns ``features`` names, in that order, or else every
    column but the targets and those in ``drop``.  ``classes``: the target holds class labels
    (True; strings or numbers, encoded in sorted order), real values (False), or whichever it
    looks like (None: labels if any is not a number).  ``test`` is a separate test table with
    the same columns (its class labels must be among the training table's).
    ``missing``: what a missing cell does (``MISSING_CHOICES``; the cells are spelt empty, NA,
    N/A, NaN, nan, null or ?); ``categorical``: ``auto`` (every feature column holding text),
    the category columns by name, or None (every feature column must hold numbers).  Category
    columns and imputed cells are encoded by ``prepare``, fitted on the training part.
    """
    path = Path(path)
    header, rows = _read_rows(path, delimiter)
    if target is None:
        raise DataError(f"{path}: name the label column with data.target in the spec")
    single = isinstance(target, str)
    targets = (target,) if single else tuple(target)
    fields = ["target"] if single else [f"target[{i}]" for i in range(len(targets))]
    target_columns = [_column(path, header, t, field, delimiter, "target column")
                      for t, field in zip(targets, fields)]
    dropped = {_column(path, header, d, f"drop[{i}]", delimiter) for i, d in enumerate(drop)}
    if features is not None:
        feature_columns = [_column(path, header, f, f"features[{i}]", delimiter)
                           for i, f in enumerate(features)]
    else:
        feature_columns = [c for c in range(len(header))
                           if c not in target_columns and c not in dropped]
    if not feature_columns:
        raise DataError(f"{path}: no feature columns are left (columns: {', '.join(header)}; "
                        f"target: {', '.join(targets)}{'; dropped: ' if drop else ''}"
                        f"{', '.join(drop)})")
    if isinstance(categorical, tuple):
        for i, column in enumerate(categorical):
            if _column(path, header, column, f"categorical[{i}]", delimiter) not in feature_columns:
                raise ColumnError(f"{path}: {column!r} is not a feature column, so it cannot be "
                                  "categorical", f"categorical[{i}]")
    if not rows:
        raise DataError(f"{path} has a header but no rows of data")
    table = _read_table(path, header, rows, feature_columns, target_columns, categorical, missing)
    if not table.rows:
        raise DataError(f"{path}: every one of its {len(rows)} rows has a missing cell, so "
                        "data.missing: drop leaves nothing",
                        hint="impute instead: data.missing: mean, median or most_frequent")
    X, labels, rows = table.X, table.labels, table.rows
    encoded = CATEGORY in table.kinds or missing in IMPUTATIONS
    extra = {"kinds": table.kinds if encoded else None, "missing": missing,
             "dropped": table.dropped}
    feature_names = tuple(header[c] for c in feature_columns)
    if classes is None:
        classes = any(_number(v) is None for row in labels for v in row)
    name = name or f"csv:{path}"
    test_table = None
    if test is not None:
        test_table = _test_table(Path(test), header, feature_names, targets, delimiter,
                                 table.kinds, missing)
    if classes:
        if len(targets) > 1:
            raise ColumnError(f"{path}: class labels come from one column, but the spec names "
                              f"{len(targets)} target columns (a list target is for real values, "
                              "one output unit per column)", "target")
        y, class_names = _class_codes([row[0] for row in labels])
        if len(class_names) < 2:
            raise DataError(f"{path}: the target {target!r} holds a single class "
                            f"({class_names[0]!r}); classification needs at least two")
        mapping = {label: i for i, label in enumerate(class_names)}
        if test_table is not None:
            test_table = (test_table[0], _test_classes(test_table[1], test_table[2], class_names,
                                                       targets[0], Path(test), path))
        return Dataset(name, X, y, CLASSIFICATION, class_names=class_names, standardize=True,
                       label_mapping=mapping, feature_names=feature_names, test=test_table,
                       test_source=str(test) if test is not None else None, **extra)
    values = _values(labels, rows, path, targets)
    if test_table is not None:
        test_table = (test_table[0], _values(test_table[1], test_table[2], Path(test), targets))
    return Dataset(name, X, values, REGRESSION, target_names=targets, standardize=True,
                   feature_names=feature_names, test=test_table,
                   test_source=str(test) if test is not None else None, **extra)


def _test_table(path: Path, train_header: list[str], features: tuple[str, ...],
                targets: tuple[str, ...], delimiter: str, kinds: tuple[str, ...],
                missing: str):
    """(X, target fields, rows) of the separate test table: the training table's features and
    targets, by name, its columns of the training table's kinds."""
    header, rows = _read_rows(path, delimiter)
    for name in (*features, *targets):
        if name not in header:
            raise ColumnError(f"{path} (the test table) has no column {name!r}, which the "
                              f"training table has (its columns: {', '.join(header)})", "test",
                              _delimiter_hint(header, delimiter))
    if not rows:
        raise DataError(f"{path} (the test table) has a header but no rows of data")
    table = _read_table(path, header, rows, [header.index(f) for f in features],
                        [header.index(t) for t in targets], None, missing, kinds)
    if not table.rows:
        raise DataError(f"{path} (the test table): every row has a missing cell")
    return table.X, table.labels, table.rows


def _test_classes(labels: list[list[str]], rows, class_names: tuple[str, ...], target: str,
                  path: Path, train: Path) -> np.ndarray:
    """The test table's labels as the training table's class indices."""
    numeric = all(_number(name) is not None for name in class_names)
    index = {(_number(n) if numeric else n): i for i, n in enumerate(class_names)}
    codes = np.empty(len(labels), dtype=np.int64)
    for r, (label,) in enumerate(labels):
        key = _number(label) if numeric else label
        if key not in index:
            raise DataError(f"{path}, line {rows[r][0]}: the target {target!r} is {label!r}, a class "
                            f"that {train} does not have (its classes: {', '.join(class_names)})")
        codes[r] = index[key]
    return codes


def _values(labels: list[list[str]], rows, path: Path, targets: tuple[str, ...]) -> np.ndarray:
    """The target fields as real values (m, k)."""
    values = np.empty((len(labels), len(targets)), dtype=np.float64)
    for r, row in enumerate(labels):
        for k, text in enumerate(row):
            values[r, k] = _target_value(text, path, rows[r][0], targets[k])
    return values


def _feature(text: str, path: Path, line: int, column: str) -> float:
    """A cell of a number column (not a missing one) as a finite float."""
    value = _number(text)
    if value is None:
        raise DataError(f"{path}, line {line}, column {column!r}: {text!r} is not a number",
                        hint=f"data.categorical: auto (or [{column}]) one-hot encodes a column "
                             "of text; a missing cell is spelt empty, NA, N/A, NaN, null or ?")
    if not math.isfinite(value):
        raise DataError(f"{path}, line {line}, column {column!r}: {text!r} is not a finite "
                        "number")
    return value


def _target_value(text: str, path: Path, line: int, column: str) -> float:
    value = _number(text)
    if value is None or not math.isfinite(value):
        raise DataError(f"{path}, line {line}: the target {column!r} is {text!r}, but a "
                        "regression loss (mse and the like) needs a finite number there (for "
                        "class labels use softmax with categorical_crossentropy, or sigmoid "
                        "with binary_crossentropy)")
    return value

