"""Every data set ``derive --train`` can read, declared once: name, loader, task, description.

A declaration names its loader as ``"module:function"``, imported only when the data is
loaded, so that reading a spec (which checks ``data.dataset`` against this registry) never
imports scikit-learn or NumPy.  A *path kind* (``mnist:DIR``, ``csv:PATH``) is written with a
path after the colon; its loader is given a ``DataRequest`` with the resolved path.  The spec
reader, ``derive.training.data.load_dataset`` and the tests all read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from .registry import Registry

__all__ = ["DatasetDecl", "DataRequest", "DATASETS", "CLASSIFICATION", "REGRESSION",
           "FROM_TARGET", "SKLEARN", "written_names"]

CLASSIFICATION, REGRESSION = "classification", "regression"
FROM_TARGET = "from the target column"  # DatasetDecl.task of a table: labels or real values


@dataclass(frozen=True)
class DataRequest:
    """What a path kind's loader is asked for: the path resolved against the spec's folder."""

    written: str  # as the spec writes it: "csv:data/t.csv"
    path: Path
    target: str | tuple[str, ...] | None = None  # the label column, or value columns (a table)
    classes: bool | None = None  # the target holds class labels; None: whichever it looks like
    features: tuple[str, ...] | None = None  # a table's feature columns; None: all the others
    drop: tuple[str, ...] = ()  # a table's columns that are neither features nor targets
    delimiter: str = ","  # a table's field separator
    test: Path | None = None  # a separate test table with the same columns
    missing: str = "error"  # a table's missing cells: error | drop | mean | median | most_frequent
    categorical: str | tuple[str, ...] | None = None  # auto | the category columns | None


@dataclass(frozen=True)
class DatasetDecl:
    """One data set: ``loader`` is ``"module:function"``; ``path`` is the placeholder a path
    kind is written with (``"DIR"``, ``"PATH"``), None for a named set that takes no path."""

    name: str
    loader: str
    task: str  # CLASSIFICATION | REGRESSION | FROM_TARGET
    description: str
    path: str | None = None
    takes_target: bool = False  # needs data.target (the label column)
    package: str | None = None  # the package the loader reads from, for a message if missing

    @property
    def written(self) -> str:
        """How a spec writes it: ``digits``, ``mnist:DIR``."""
        return f"{self.name}:{self.path}" if self.path else self.name

    def load(self, request: DataRequest | None = None) -> Any:
        """Import the loader and call it: with the request for a path kind, without otherwise."""
        module, _, function = self.loader.partition(":")
        loader = getattr(import_module(module), function)
        if self.path is None:
            return loader()
        if request is None:
            raise ValueError(f"data set {self.name!r} is read from a {self.path}: "
                             f"give a DataRequest")
        return loader(request)


DATASETS: Registry[DatasetDecl] = Registry("dataset")
SKLEARN = "scikit-learn"
_DATA = "derive.training.data"

DATASETS.add("digits", DatasetDecl(
    "digits", f"{_DATA}:load_digits", CLASSIFICATION,
    "1797 8x8 handwritten digits, pixels x/16", package=SKLEARN))
DATASETS.add("iris", DatasetDecl(
    "iris", f"{_DATA}:load_iris", CLASSIFICATION,
    "150 irises, 4 measurements, 3 species", package=SKLEARN))
DATASETS.add("breast_cancer", DatasetDecl(
    "breast_cancer", f"{_DATA}:load_breast_cancer", CLASSIFICATION,
    "569 tumours, 30 features, malignant or benign", package=SKLEARN))
DATASETS.add("diabetes", DatasetDecl(
    "diabetes", f"{_DATA}:load_diabetes", REGRESSION,
    "442 patients, 10 features, disease progression after a year", package=SKLEARN))
DATASETS.add("mnist", DatasetDecl(
    "mnist", f"{_DATA}:read_mnist", CLASSIFICATION,
    "MNIST's IDX files in a folder, pixels x/255", path="DIR"))
DATASETS.add("csv", DatasetDecl(
    "csv", f"{_DATA}:read_csv", FROM_TARGET,
    "a table with a header row, numeric features and the data.target column",
    path="PATH", takes_target=True))


def written_names() -> tuple[str, ...]:
    """Every data set as a spec writes it: ``digits, ..., mnist:DIR, csv:PATH``."""
    return tuple(DATASETS[name].written for name in DATASETS)
