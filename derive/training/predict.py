"""``derive predict``: a model file that ``derive --train`` wrote, applied to raw data.

The model file holds the spec's text and the preprocessing; the module is generated again from
the spec into a temporary folder (the same bytes as the one trained), the Trainer is loaded
from the file, and its ``predict`` takes the raw rows and answers in the data's own terms.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, SpecError
from .data import load_dataset, read_columns, read_table

__all__ = ["Predictions", "predict_file", "read_model_settings"]


@dataclass(frozen=True, eq=False)
class Predictions:
    names: tuple[str, ...]  # the columns the predictions go under (the model's targets)
    values: np.ndarray  # labels (strings) or values: (rows,) or (rows, len(names))
    truth: list[list[str]] | None  # the data's own answers, row by row, when it has them
    rows: int
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # --keep: columns passed through
    probabilities: np.ndarray | None = None  # --proba: (rows, classes)
    classes: tuple[str, ...] = ()  # the probabilities' columns

    @property
    def name(self) -> str:
        return ", ".join(self.names)

    @property
    def accuracy(self) -> float | None:
        """The share of rows whose prediction equals the data's label (classification)."""
        if self.truth is None or self.values.dtype.kind not in "UO":
            return None
        return float(np.mean([_same_label(str(p), t[0]) for p, t in zip(self.values, self.truth)]))

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        shown = [f"P({c})" for c in self.classes] if self.probabilities is not None else []
        writer.writerow(["row", *map(_cell, [*self.kept, *self.names, *shown])])
        values = self.values.reshape(len(self.values), -1)
        for i, row in enumerate(values):
            kept = [_text(column[i]) for column in self.kept.values()]
            probabilities = ([f"{p:.6g}" for p in self.probabilities[i]]
                             if self.probabilities is not None else [])
            writer.writerow([i, *kept, *(_cell(v) if isinstance(v, str) else f"{float(v):.6g}"
                                         for v in row), *probabilities])
        return out.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A text cell as a spreadsheet shows it and never runs it: one that starts like a formula
    (= + - @, tab, carriage return) gets a leading apostrophe (OWASP's advice on CSV
    injection); the csv writer then quotes what needs quoting."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _text(value) -> str:
    """A passed-through cell: text with its formula start neutralised, numbers as they are."""
    return _cell(value) if isinstance(value, str) else value


def _row_count(table) -> int:
    """Rows of a table given as columns by name, or as an array."""
    if isinstance(table, dict):
        return len(next(iter(table.values()))) if table else 0
    return len(table)


def _same_label(predicted: str, truth: str) -> bool:
    """Labels equal as the values they are: 0 and 0.0 are one class, as are "cat" and "cat"."""
    if predicted == truth:
        return True
    try:
        a, b = float(predicted), float(truth)
    except ValueError:
        return False
    return a == b


def read_model_settings(path: Path) -> dict:
    """The JSON settings of a model file, checked for what prediction needs."""
    from codegen.runtime import ModelFileError, model_file_settings

    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    try:
        settings = model_file_settings(path)
    except ModelFileError as err:
        raise DataError(f"{err}") from None
    if not settings.get("spec") or not settings.get("preprocessing"):
        raise DataError(f"{path} holds no spec or preprocessing: it was not written by "
                        "`derive --train` (a Trainer.save file predicts from Python only)")
    return settings


def predict_file(model: str | Path, data: str, *, proba: bool = False,
                 keep: tuple[str, ...] = ()) -> Predictions:
    """Predictions of the model file for ``data``: ``csv:PATH`` (the model's feature columns
    by name; other columns ignored) or a bundled data set's name.  ``proba``: also the class
    probabilities; ``keep``: columns of the data passed through beside the predictions (an id).
    Data the model cannot answer honestly (a missing cell it does not impute, a category it
    never saw, columns that are not its own) is a DataError naming why."""
    from codegen.emit import write_module
    from codegen.files import import_module_from

    from ..derivation import derive
    from ..spec import load_spec_text

    model = Path(model)
    settings = read_model_settings(model)
    prep = settings["preprocessing"]
    try:
        spec = load_spec_text(settings["spec"], f"{model} (its spec)")
    except SpecError as err:
        raise DataError(f"{model}: the spec it holds is not valid: {err}") from None
    if spec.auto_sizes:  # the sizes the data gave when it was trained
        sizes = settings.get("layer_sizes") or []
        if len(sizes) != spec.depth + 1:
            raise DataError(f"{model}: its spec's sizes are auto, and it records no sizes")
        spec = spec.sized(sizes[0], sizes[-1])
    table, truth = _raw_rows(data, prep)
    if _row_count(table) == 0:
        raise DataError(f"{data}: no rows of data below the header: nothing to predict")
    kept = {}
    for column in keep:
        if not isinstance(table, dict) or column not in table:
            have = ", ".join(table) if isinstance(table, dict) else "none by name"
            raise DataError(f"--keep {column}: {data} has no column {column!r} (its columns: "
                            f"{have})")
        kept[column] = table[column]
    with tempfile.TemporaryDirectory(prefix="derive_predict_") as folder:
        module = import_module_from(write_module(derive(spec), folder))
        try:
            trainer = module.Trainer.load(model)
        except (TypeError, ValueError) as err:
            raise DataError(f"{model}: {err}") from None
        classes = tuple(prep.get("classes") or ())
        if proba and (not classes or module.TASK == "regression"):
            raise DataError(f"--proba: {model} predicts values, not classes: it has no "
                            "probabilities")
        try:
            values = np.asarray(trainer.predict(table))
            probabilities = None
            if proba:
                probabilities = np.asarray(trainer.predict_proba(table), dtype=np.float64)
                if module.TASK == "binary":  # one sigmoid unit: P(the second class)
                    probabilities = np.hstack([1 - probabilities, probabilities])
        except ValueError as err:
            raise DataError(f"{data} cannot be predicted by {model.name}: {err}") from None
    names = tuple(_targets(prep)) or ("prediction",)
    if values.ndim > 1 and values.shape[1] == 1:
        values = values[:, 0]
    return Predictions(names, values, truth, len(values), kept, probabilities,
                       classes if proba else ())


def _targets(prep: dict) -> list[str]:
    """The model's target columns (a table's), or its target names (a bundled data set's)."""
    old = prep.get("target_column")  # a file written before list targets
    old = [old] if isinstance(old, str) else old
    return prep.get("target_columns") or old or prep.get("target_names") or []


def _raw_rows(data: str, prep: dict) -> tuple[dict | np.ndarray, list[list[str]] | None]:
    """The data as the Trainer takes raw rows: a table's columns by name, or a bundled data
    set's (by name when it names its features), and its own answers when it has them."""
    kind, _, path = data.partition(":")
    if kind == "csv" and path:
        if not prep.get("feature_names"):
            raise DataError("the model was not trained on a table with named columns: give "
                            "its data set by name")
        delimiter = prep.get("delimiter") or ","
        return read_table(path, delimiter), read_columns(path, tuple(_targets(prep)), delimiter)
    dataset = load_dataset(data)
    truth = [[dataset.class_names[i]] for i in dataset.y] if dataset.class_names else None
    X = dataset.X * dataset.divide_by
    if dataset.feature_names:
        return {name: X[:, j] for j, name in enumerate(dataset.feature_names)}, truth
    return X, truth
