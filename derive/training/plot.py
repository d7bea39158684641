"""Pictures of a training run (matplotlib, an optional extra): the loss and accuracy (or R²)
curves, train and test, and the test set's confusion matrix.

Figures are drawn with matplotlib's object API on the Agg canvas, so no GUI backend is
needed and pyplot's global state is left alone.
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np

from .report import ClassificationMetrics

__all__ = ["PlotUnavailable", "require_matplotlib", "plot_history", "plot_confusion",
           "log_scale_if_wide",
           "confusion_path"]


class PlotUnavailable(Exception):
    """``--plot`` was asked for but matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise ``PlotUnavailable`` with the command that fixes it, before any training is done."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed: "
                              "pip install 'backprop-derive[plot]' (or pip install matplotlib)") \
            from None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plain_text():
    """Text drawn inside is plain: names from the data (class labels, paths) may hold ``$``,
    which matplotlib would otherwise read as mathtext (and fail on an unknown macro)."""
    from matplotlib import rc_context

    return rc_context({"text.parse_math": False, "text.usetex": False})


def _save(figure, path: Path) -> Path:
    from codegen.files import SIGNATURE, atomic_write

    # through the one safe writer (atomic, never through a link); the tool's signature in the
    # PNG's metadata: a later run may replace it, never a user's
    kind = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda file: figure.savefig(file, format=kind,
                                                   metadata={"Software": SIGNATURE.decode()}))
    return path


def plot_history(history: list[dict], path: str | Path, *, title: str,
                 score: str = "accuracy") -> Path:
    """Loss and ``score`` per epoch (below); every text plain, never mathtext."""
    with _plain_text():
        return _plot_history(history, path, title=title, score=score)


def _plot_history(history: list[dict], path: str | Path, *, title: str,
                  score: str = "accuracy") -> Path:
    """Loss and ``score`` ("accuracy" or "r2") per epoch, train, validation (and test, when
    recorded) side by side;
    returns the file written."""
    figure = _figure(10, 4)
    figure.suptitle(title)
    epochs = [record["epoch"] for record in history]
    for axes, key, label in zip(figure.subplots(1, 2), ("loss", score),
                                 ("loss", {"r2": "R²"}.get(score, score))):
        for prefix, name, style in (("", "train", "-"), ("val_", "validation", "--"),
                                    ("test_", "test", ":")):
            values = [record.get(prefix + key) for record in history]
            if any(v is not None for v in values):
                values = [np.nan if v is None else v for v in values]
                axes.plot(epochs, values, style, marker="o" if len(epochs) < 30 else None,
                          markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
        if key == "loss":
            log_scale_if_wide(axes, [r[k] for r in history for k in ("loss", "val_loss", "test_loss")
                                      if r.get(k) is not None])
    return _save(figure, Path(path))


def log_scale_if_wide(axes, values: list[float]) -> None:
    """A log scale when the values span more than a factor of 10, with plain tick labels."""
    if not values or min(values) <= 0 or max(values) < 10 * min(values):
        return
    from matplotlib.ticker import FuncFormatter

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # minor ticks labelled only where the decades are few (2 and 5 of each), so that labels
    # never crowd: a loss falling through five decades shows 1, 0.1, 0.01, ... alone
    decades = math.log10(max(values) / min(values))

    def minor(value, _):
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
        return f"{value:g}" if decades <= 2 and mantissa in (2, 5) else ""

    axes.yaxis.set_minor_formatter(FuncFormatter(minor))


def confusion_path(path: str | Path) -> Path:
    """Where ``--plot out.png`` puts the confusion matrix: ``out_confusion.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_confusion{path.suffix or '.png'}")


def plot_confusion(metrics: ClassificationMetrics, path: str | Path, *, title: str) -> Path:
    """The confusion matrix (below); class names and title plain text, never mathtext."""
    with _plain_text():
        return _plot_confusion(metrics, path, title=title)


def _plot_confusion(metrics: ClassificationMetrics, path: str | Path, *, title: str) -> Path:
    """The test set's confusion matrix as a heat map with the counts written in."""
    counts = metrics.confusion
    K = counts.shape[0]
    size = min(max(3.5, 0.55 * K + 2), 14)
    figure = _figure(size + 1, size)
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8, label="examples")
    names = list(metrics.class_names)
    axes.set_xticks(range(K), names, rotation=45 if max(map(len, names)) > 3 else 0)
    axes.set_yticks(range(K), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{title}\ntest accuracy {metrics.accuracy:.4f} "
                   f"({metrics.correct}/{metrics.total})")
    if K <= 30:
        threshold = counts.max(initial=0) / 2
        for i in range(K):
            for j in range(K):
                axes.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                          color="white" if counts[i, j] > threshold else "black")
    return _save(figure, Path(path))
