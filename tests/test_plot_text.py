"""Plots show names from the data (class labels, paths, network names) as plain text: a
``$...$`` in them is never read as matplotlib's mathtext (an unknown macro made the save fail
after training)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from derive.training.plot import plot_confusion, plot_history  # noqa: E402
from derive.training.report import ClassificationMetrics  # noqa: E402

TEX = r"$\undefinedmacro{x}$"


def test_a_class_label_with_tex_is_drawn_as_plain_text(tmp_path):
    metrics = ClassificationMetrics(np.array([[3, 1], [0, 4]]), (TEX, "$x^2$"))
    path = plot_confusion(metrics, tmp_path / "c.png", title=f"net on csv:{TEX}.csv")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_title_with_tex_is_drawn_as_plain_text(tmp_path):
    history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}, {"epoch": 2, "loss": 0.5,
                                                             "accuracy": 0.7}]
    path = plot_history(history, tmp_path / "h.png", title=f"net on csv:{TEX}.csv")
    assert path.read_bytes().startswith(b"\x89PNG")
