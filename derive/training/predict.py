"""``derive predict``: a model file that ``derive --train`` wrote, applied to raw data.

The model file holds the spec's text and the preprocessing; the module is generated again from
the spec into a temporary folder (the same bytes as the one trained), the Trainer is loaded
from the file, and its ``predict`` takes the raw rows and answers in the data's own terms.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, SpecError
from .data import load_dataset, read_columns, read_features

__all__ = ["Predictions", "predict_file", "read_model_settings"]


@dataclass(frozen=True, eq=False)
class Predictions:
    names: tuple[str, ...]  # the columns the predictions go under (the model's targets)
    values: np.ndarray  # labels (strings) or values: (rows,) or (rows, len(names))
    truth: list[list[str]] | None  # the data's own answers, row by row, when it has them
    rows: int

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
        writer.writerow(["row", *map(_cell, self.names)])
        values = self.values.reshape(len(self.values), -1)
        for i, row in enumerate(values):
            writer.writerow([i, *(_cell(v) if isinstance(v, str) else f"{float(v):.6g}"
                                  for v in row)])
        return out.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A text cell as a spreadsheet shows it and never runs it: one that starts like a formula
    (= + - @, tab, carriage return) gets a leading apostrophe (OWASP's advice on CSV
    injection); the csv writer then quotes what needs quoting."""
    return "'" + text if text.startswith(_FORMULA_START) else text


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


def predict_file(model: str | Path, data: str) -> Predictions:
    """Predictions of the model file for ``data``: ``csv:PATH`` (the model's feature columns
    by name; other columns ignored) or a bundled data set's name."""
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
    with tempfile.TemporaryDirectory(prefix="derive_predict_") as folder:
        module = import_module_from(write_module(derive(spec), folder))
        try:
            trainer = module.Trainer.load(model)
        except (TypeError, ValueError) as err:
            raise DataError(f"{model}: {err}") from None
        X, truth = _raw_rows(data, prep)
        if X.shape[0] == 0:
            raise DataError(f"{data}: no rows of data below the header: nothing to predict")
        if X.shape[1] != spec.input:
            raise DataError(f"{data} has {X.shape[1]} features; the model takes {spec.input}")
        values = np.asarray(trainer.predict(X))
    names = tuple(_targets(prep)) or ("prediction",)
    if values.ndim > 1 and values.shape[1] == 1:
        values = values[:, 0]
    return Predictions(names, values, truth, len(values))


def _targets(prep: dict) -> list[str]:
    """The model's target columns (a table's), or its target names (a bundled data set's)."""
    old = prep.get("target_column")  # a file written before list targets
    old = [old] if isinstance(old, str) else old
    return prep.get("target_columns") or old or prep.get("target_names") or []


def _raw_rows(data: str, prep: dict) -> tuple[np.ndarray, list[list[str]] | None]:
    kind, _, path = data.partition(":")
    if kind == "csv" and path:
        names = prep.get("feature_names")
        if not names:
            raise DataError("the model was not trained on a table with named columns: give "
                            "its data set by name")
        delimiter = prep.get("delimiter") or ","
        X, _ = read_features(path, tuple(names), delimiter)
        return X, read_columns(path, tuple(_targets(prep)), delimiter)
    dataset = load_dataset(data)
    truth = [[dataset.class_names[i]] for i in dataset.y] if dataset.class_names else None
    return dataset.X * dataset.divide_by, truth
