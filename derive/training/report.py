"""The figures of a trained network, computed from its predictions, and how they are printed.

Classification: accuracy, the confusion matrix (rows: true class, columns: predicted) and the
per-class accuracy (the accuracy on the examples of each class, as seed 003 defines it: the
diagonal over the row sums).  Regression: RMSE, MAE and R² in the targets' original units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ClassificationMetrics", "RegressionMetrics", "classification_metrics",
           "regression_metrics", "confusion_matrix", "score", "write_json"]


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: examples of true class i predicted as class j."""
    truth, predicted = np.asarray(truth).reshape(-1), np.asarray(predicted).reshape(-1)
    pairs = truth.astype(np.int64) * n_classes + predicted.astype(np.int64)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True, eq=False)
class ClassificationMetrics:
    confusion: np.ndarray  # (K, K) counts, rows: true class, columns: predicted class
    class_names: tuple[str, ...]

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else math.nan

    @property
    def per_class(self) -> tuple[tuple[str, int, int, float | None], ...]:
        """(name, correct, examples, accuracy or None without examples) per class."""
        rows = []
        for c, name in enumerate(self.class_names):
            count, hit = int(self.confusion[c].sum()), int(self.confusion[c, c])
            rows.append((name, hit, count, hit / count if count else None))
        return tuple(rows)

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "examples": self.total,
            "per_class_accuracy": {name: acc for name, _, _, acc in self.per_class},
            "confusion_matrix": self.confusion.tolist(),
        }

    def table(self) -> str:
        """The confusion matrix with each class's accuracy at the end of its row."""
        K = len(self.class_names)
        named = any(name != str(c) for c, name in enumerate(self.class_names))
        labels = [f"{c} {name}" if named else name for c, name in enumerate(self.class_names)]
        left = max(len(label) for label in labels)
        width = max(len(str(int(self.confusion.max(initial=0)))), len(str(K - 1))) + 1
        head = " " * (left + 2) + "".join(f"{c:>{width}}" for c in range(K)) + "   accuracy"
        lines = [head]
        for label, row, (_, hit, count, acc) in zip(labels, self.confusion, self.per_class):
            figure = f"{acc:.3f} ({hit}/{count})" if acc is not None else "-  (no examples)"
            lines.append(f"  {label:<{left}}" + "".join(f"{int(v):>{width}}" for v in row)
                         + f"   {figure}")
        return "\n".join(lines)


def classification_metrics(truth: np.ndarray, predicted: np.ndarray,
                           class_names: tuple[str, ...]) -> ClassificationMetrics:
    return ClassificationMetrics(confusion_matrix(truth, predicted, len(class_names)),
                                 tuple(class_names))


@dataclass(frozen=True)
class RegressionMetrics:
    rmse: float
    mae: float
    r2: float  # 1 - SSE / SST, SST about the mean of the true values (pooled over columns)
    examples: int

    def as_dict(self) -> dict:
        return {"rmse": self.rmse, "mae": self.mae, "r2": self.r2, "examples": self.examples}


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> RegressionMetrics:
    truth = np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)
    error = np.asarray(predicted, dtype=np.float64).reshape(truth.shape) - truth
    spread = float(np.sum((truth - truth.mean(axis=0)) ** 2))
    sse = float(np.sum(error ** 2))
    return RegressionMetrics(rmse=float(np.sqrt(np.mean(error ** 2))),
                             mae=float(np.mean(np.abs(error))),
                             r2=1.0 - sse / spread if spread > 0 else math.nan,
                             examples=len(truth))


def score(task: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    """The per-epoch figure: accuracy for classes, R² for values."""
    if task == "regression":
        return regression_metrics(truth, predicted).r2
    return float(np.mean(np.asarray(truth).reshape(-1) == np.asarray(predicted).reshape(-1)))


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_json(path: Path, content: dict) -> None:
    """Write ``content`` as indented, strict JSON (NaN -> null), atomically."""
    from codegen.files import atomic_write

    atomic_write(path, json.dumps(_finite(content), indent=2, allow_nan=False) + "\n")
