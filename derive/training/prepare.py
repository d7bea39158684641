"""``Dataset`` + spec -> ``Prepared``: the sizes checked, train/test split, scaled, encoded.

The split is stratified for class labels (each class keeps its share in both parts) and seeded;
standardisation uses the training part's statistics only, so nothing of the test set leaks into
training.  Targets are encoded for the generated module's task: class indices for softmax or
sigmoid outputs, one-hot rows for an MSE network on classes, standardised values for regression
(predictions are mapped back to the original units for the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codegen.runtime import CATEGORY, NUMBER, encode_table

from ..errors import DataError
from ..netspec import AUTO, IMPUTATIONS, NetSpec
from .data import CLASSIFICATION, REGRESSION, Dataset

__all__ = ["Prepared", "Standardizer", "check_fits", "prepare", "fit_columns", "encoded_names",
           "output_units", "random_split", "task_of",
           "stratified_split", "held_out_count"]

# how the module's predict() output becomes a prediction for the report
LABELS, ARGMAX, THRESHOLD, VALUES = "labels", "argmax", "threshold", "values"


@dataclass(frozen=True, eq=False)
class Standardizer:
    """x -> (x - mean) / scale per column, with the statistics of the data it was fitted on.

    ``kind`` says which: ``standard`` (mean, standard deviation) or ``minmax`` (minimum,
    range: the training part lands in [0, 1]).  A constant column gets scale 1.
    """

    mean: np.ndarray
    scale: np.ndarray
    kind: str = "standard"

    @classmethod
    def fit(cls, X: np.ndarray, kind: str = "standard") -> "Standardizer":
        if kind == "minmax":
            low = X.min(axis=0)
            spread = X.max(axis=0) - low
            return cls(low, np.where(spread > 0, spread, 1.0), kind)
        # each column divided by its largest magnitude first: the squares of a column near
        # 1e160 would overflow (its deviation came out inf and the column was zeroed)
        peak = np.max(np.abs(X), axis=0) if len(X) else np.ones(X.shape[1:])
        peak = np.where((peak > 0) & np.isfinite(peak), peak, 1.0)
        unit = X / peak
        std = unit.std(axis=0) * peak
        return cls(unit.mean(axis=0) * peak, np.where(std > 0, std, 1.0), kind)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.scale + self.mean

    def as_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.tolist(), "scale": self.scale.tolist()}


@dataclass(frozen=True, eq=False)
class Prepared:
    """The arrays the Trainer takes, and what the report needs to read its predictions."""

    X_train: np.ndarray
    Y_train: np.ndarray  # targets as the module takes them
    X_test: np.ndarray | None  # None: no test set (data.test_fraction: 0)
    Y_test: np.ndarray | None
    truth_train: np.ndarray  # class indices (m,), or values (m, k) in the original units
    truth_test: np.ndarray | None
    task: str  # of the data: CLASSIFICATION | REGRESSION
    decode: str  # LABELS | ARGMAX | THRESHOLD | VALUES
    class_names: tuple[str, ...]
    split: str  # how the test set was chosen, for the report
    features: Standardizer | None = None
    targets: Standardizer | None = None
    X_val: np.ndarray | None = None  # the validation part, taken from the training part
    Y_val: np.ndarray | None = None
    truth_val: np.ndarray | None = None
    columns: list[dict] | None = None  # a table's columns as fitted (runtime.encode_table)
    split_rows: dict | None = None  # the split: method, seed, and the rows of each part

    def preprocessing(self, data) -> dict:
        """What a model file needs to take raw rows and answer in the data's own terms: the
        fixed scaling, the feature standardisation, the feature and class names, the target
        scaling (the generated runtime applies it: ``Trainer.load(path).predict(X_raw)``)."""
        return {
            "divide_by": data.divide_by,
            "features": self.features.as_dict() if self.features is not None else None,
            "feature_names": list(data.feature_names) or None,
            "classes": list(self.class_names) or None,
            "targets": self.targets.as_dict() if self.targets is not None else None,
            "target_names": list(data.target_names) or None,
            "columns": self.columns,
            "missing": data.missing,
        }

    def predictions(self, output: np.ndarray) -> np.ndarray:
        """The module's predict() output as class indices or values in the original units."""
        if self.decode == LABELS:
            return np.asarray(output).reshape(-1).astype(np.int64)
        if self.decode == ARGMAX:
            return np.argmax(output, axis=1)
        if self.decode == THRESHOLD:
            return (np.asarray(output).reshape(-1) > 0.5).astype(np.int64)
        values = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
        return self.targets.inverse(values) if self.targets is not None else values


# ----------------------------------------------------------------------------- the sizes

def task_of(spec: NetSpec) -> str:
    """The TASK of the module the spec generates: classification | binary | regression."""
    from codegen.runtime import TASKS

    from ..losses import LOSSES

    return TASKS[LOSSES[spec.loss].labels]


def check_fits(spec: NetSpec, task: str, data: Dataset) -> str:
    """How the targets are encoded for a module of ``task``; a ``DataError`` if they cannot be.

    ``task`` is the generated module's TASK: classification | binary | regression.
    """
    units, last = spec.layers[-1].units, spec.layers[-1].activation.name
    if units == AUTO:
        units = output_units(spec, task, data)
    if data.kinds is None and spec.input != AUTO and data.n_features != spec.input:
        image = getattr(spec, "image", None)
        given = f"[{', '.join(map(str, image))}] = {spec.input}" if image else f"{spec.input}"
        fix = (f"give input: [C, H, W] with C·H·W = {data.n_features}" if image
               else f"set input: {data.n_features}")
        raise DataError(f"{data.name} has {data.n_features} features, the spec's input is "
                        f"{given} ({fix})")
    if data.task == REGRESSION:
        if task != "regression":
            raise DataError(f"{data.name} is a regression data set (real-valued targets), but "
                            f"{spec.loss} needs class labels: use an identity output layer "
                            "with loss: mse")
        if units != data.n_targets:
            columns = "column" if data.n_targets == 1 else "columns"
            raise DataError(f"{data.name} has {data.n_targets} target {columns}, the spec's "
                            f"output layer has {units} units: regression needs one output "
                            "unit per target column")
        return VALUES
    K = data.n_classes
    if task == "classification":
        if units != K:
            also = ", or 1 sigmoid unit with binary_crossentropy" if K == 2 else ""
            raise DataError(f"{data.name} has {K} classes, the spec's output layer has {units} "
                            f"{last} units: {K} classes need {K} softmax units{also}")
        return LABELS
    if task == "binary":
        if K != 2:
            raise DataError(f"{data.name} has {K} classes, but {spec.loss} on a sigmoid output "
                            f"separates 2: use {K} softmax units with categorical_crossentropy")
        if units != 1:
            raise DataError(f"{spec.loss} with {units} sigmoid units predicts {units} separate "
                            f"yes/no labels, but {data.name} has one label of 2 classes per "
                            "example: use 1 sigmoid unit")
        return LABELS
    if units == K:  # an MSE network on classes learns one-hot targets (seed 002 and 004)
        return ARGMAX
    if units == 1 and K == 2:
        return THRESHOLD
    raise DataError(f"{data.name} has {K} classes; a network trained with {spec.loss} learns "
                    f"them as one-hot targets, which needs {K} output units, but the spec's "
                    f"output layer has {units}")


# ----------------------------------------------------------------------------- the split

def held_out_count(m: int, test_fraction: float) -> int:
    """Examples in the test part: round(fraction * m), at least 1, leaving at least 1 to train."""
    if m < 2:
        raise DataError(f"{m} example{'s' if m != 1 else ''}: a train/test split needs at least 2")
    return min(max(int(round(test_fraction * m)), 1), m - 1)


def random_split(m: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): a seeded random choice of rows for the test part."""
    n_test = held_out_count(m, test_fraction)
    order = np.random.default_rng(seed).permutation(m)
    return order[n_test:], order[:n_test]


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) with each class's share of the test part as in the whole.

    Each class gets floor(fraction of the test part) rows; the rows left over go to the classes
    with the largest remainders (first class first on ties). A class keeps at least one training
    row. Rows within a class are chosen by a generator seeded with ``seed``.
    """
    labels = np.asarray(labels).reshape(-1)
    m = labels.shape[0]
    n_test = held_out_count(m, test_fraction)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / m
    take = np.minimum(np.floor(quota).astype(np.int64), counts - 1)
    leftover = n_test - int(take.sum())
    for i in np.argsort(-(quota - take), kind="stable"):  # largest remainders, room permitting
        if leftover and take[i] < counts[i] - 1:
            take[i] += 1
            leftover -= 1
    if not take.any():
        raise DataError(f"every one of the {len(classes)} classes has a single example, and "
                        "each class keeps one to train on, so a stratified split leaves no "
                        "example to test on: give the data at least two examples of some class")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, k in zip(classes, take):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.append(rows[:k])
        train.append(rows[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# ----------------------------------------------------------------------------- all of it

def prepare(spec: NetSpec, task: str, data: Dataset, test_fraction: float,
            seed: int, validation_fraction: float = 0.0,
            scaling: str | None = None) -> Prepared:
    """Check ``data`` against the spec, split it (test, then ``validation_fraction`` of the
    training part for validation, both seeded by ``seed``), encode a table's columns (missing
    cells imputed, category columns one-hot) and scale it with the training part's statistics,
    and encode its targets.

    ``test_fraction`` 0 keeps no test set (unless the data set has its own).  ``scaling``:
    ``standard`` or ``minmax`` fit on the training part, ``none``; None is the data set's own
    choice (standard for tables, none for images, which have their fixed scaling).  A
    regression target is standardised unless the scaling is ``none``.  A spec whose sizes are
    ``auto`` is checked against the data once ``NetSpec.sized`` has given them.
    """
    decode = check_fits(spec, task, data)
    classes = data.task == CLASSIFICATION
    rows = np.arange(data.n_examples)
    train = test = None
    if data.test is not None:
        X_train, y_train = data.X, data.y
        X_test, y_test = data.test
        split = (f"the test table {data.test_source}" if data.test_source
                 else "the data set's own test set")
        method = "given"
    elif test_fraction == 0:
        X_train, y_train, X_test, y_test = data.X, data.y, None, None
        split = "no test set (test_fraction 0)"
        method = "none"
    else:
        train, test = (stratified_split(data.y, test_fraction, seed) if classes
                       else random_split(data.n_examples, test_fraction, seed))
        X_train, y_train, X_test, y_test = data.X[train], data.y[train], data.X[test], data.y[test]
        split = (f"{'stratified ' if classes else ''}random {100 * test_fraction:g}% test "
                 f"split, seed {seed}")
        method = "stratified" if classes else "random"
    rows_train = rows if train is None else rows[train]
    X_val = y_val = None
    rows_val = None
    if validation_fraction > 0:
        # the validation part's own stream of the split seed
        keep, held = (stratified_split(y_train, validation_fraction, seed + 1) if classes
                      else random_split(len(y_train), validation_fraction, seed + 1))
        X_train, y_train, X_val, y_val = X_train[keep], y_train[keep], X_train[held], y_train[held]
        rows_train, rows_val = rows_train[keep], rows_train[held]
        split += f"; {100 * validation_fraction:g}% of the training part for validation"
    record = {"method": method, "seed": seed, "test_fraction": test_fraction,
              "validation_fraction": validation_fraction,
              "train": rows_train.tolist(), "validation": None if rows_val is None
              else rows_val.tolist(), "test": None if test is None else rows[test].tolist()}
    columns = None
    if data.kinds is not None:  # a table's columns: fitted on the training part only
        columns = fit_columns(X_train, data.feature_names, data.kinds, data.missing)
        X_train = _encoded(X_train, columns, data.missing, "the training part")
        X_test = None if X_test is None else _encoded(X_test, columns, data.missing,
                                                      "the test part")
        X_val = None if X_val is None else _encoded(X_val, columns, data.missing,
                                                    "the validation part")
        if not spec.auto_sizes and X_train.shape[1] != spec.input:
            raise DataError(f"{data.name}'s columns encode to {X_train.shape[1]} features "
                            f"({', '.join(encoded_names(columns))}), the spec's input is "
                            f"{spec.input} (set input: {X_train.shape[1]}, or input: auto)")
    kind = scaling if scaling is not None else ("standard" if data.standardize else "none")
    features = Standardizer.fit(X_train, kind) if kind != "none" else None
    if features is not None:
        X_train = features.transform(X_train)
        X_test = None if X_test is None else features.transform(X_test)
        X_val = None if X_val is None else features.transform(X_val)
    targets = Standardizer.fit(y_train) if decode == VALUES and kind != "none" else None
    for X in (X_train, X_val, X_test):
        _check_fits_dtype(X, spec.dtype, data, kind)

    def encode(y):
        return None if y is None else _encode(decode, data, targets, y)

    return Prepared(X_train, encode(y_train), X_test, encode(y_test), y_train, y_test,
                    data.task, decode, data.class_names, split, features, targets, X_val,
                    encode(y_val), y_val, columns, record)


def output_units(spec: NetSpec, task: str, data: Dataset) -> int:
    """The last layer's size that ``units: auto`` stands for: one unit per class (1 for a
    sigmoid output of two classes), or per target column."""
    if data.task == REGRESSION:
        return data.n_targets
    return 1 if task == "binary" else data.n_classes


# ----------------------------------------------------------------------------- table columns

def fit_columns(X: np.ndarray, names: tuple[str, ...], kinds: tuple[str, ...],
                missing: str) -> list[dict]:
    """Per column of a table's training part: its kind, a category column's categories (in
    sorted order) and, when ``missing`` imputes, the value that fills a missing cell (the mean,
    median or most frequent value; a category column's most frequent category)."""
    specs = []
    for j, (name, kind) in enumerate(zip(names, kinds)):
        column = X[:, j]
        if kind == CATEGORY:
            present = [v for v in column if v is not None]
            if not present:
                raise DataError(f"the category column {name!r} has no value in the training part")
            categories, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
            fill = str(categories[np.argmax(counts)]) if missing in IMPUTATIONS else None
            specs.append({"name": name, "kind": CATEGORY, "fill": fill,
                          "categories": [str(c) for c in categories]})
            continue
        values = np.asarray(column, dtype=np.float64)
        present = values[~np.isnan(values)]
        fill = None
        if missing in IMPUTATIONS:
            if present.size == 0:
                raise DataError(f"the column {name!r} has no value in the training part to "
                                f"fill its missing cells with ({missing})")
            if missing == "mean":
                fill = float(present.mean())
            elif missing == "median":
                fill = float(np.median(present))
            else:
                found, counts = np.unique(present, return_counts=True)
                fill = float(found[np.argmax(counts)])
        specs.append({"name": name, "kind": NUMBER, "fill": fill})
    return specs


def encoded_names(columns: list[dict]) -> list[str]:
    """The names of the encoded features: a number column's own, ``column=category`` for each
    one-hot column."""
    return [name for spec in columns for name in (
        [f"{spec['name']}={c}" for c in spec["categories"]] if spec["kind"] == CATEGORY
        else [spec["name"]])]


def _encoded(X: np.ndarray, columns: list[dict], missing: str, part: str) -> np.ndarray:
    try:
        return encode_table([X[:, j] for j in range(X.shape[1])], columns, missing)
    except ValueError as err:
        raise DataError(f"{part}: {err}") from None


def _check_fits_dtype(X: np.ndarray | None, dtype: str, data: Dataset, kind: str) -> None:
    """A DataError naming the first column with a value that the spec's dtype cannot hold
    (it would become infinite in training)."""
    if X is None or not np.issubdtype(np.dtype(dtype), np.floating):
        return
    largest = np.finfo(dtype).max
    with np.errstate(invalid="ignore"):
        beyond = np.abs(X) > largest
    if not np.any(beyond):
        return
    row, column = (int(i[0]) for i in np.nonzero(beyond))
    name = (repr(data.feature_names[column]) if column < len(data.feature_names)
            else f"{column + 1}")
    hint = ("scale the features (data.scaling: standard or minmax)" if kind == "none" else
            "use dtype: float64")
    raise DataError(f"{data.name}: column {name} holds {X[row, column]:.6g}"
                    f"{' after scaling' if kind != 'none' else ''}, beyond {dtype}'s largest "
                    f"value {largest:.6g}; {hint}")


def _encode(decode: str, data: Dataset, targets: Standardizer | None, y: np.ndarray) -> np.ndarray:
    """Targets as the module takes them."""
    if decode == VALUES:
        return targets.transform(y) if targets is not None else y
    if decode == ARGMAX:
        return np.eye(data.n_classes)[y]
    if decode == THRESHOLD:
        return y.astype(np.float64).reshape(-1, 1)
    return y
