"""Training a generated network on real data: ``derive --spec net.yaml --train``.

The stages, one module each::

    data.load_dataset -> Dataset -> prepare.prepare -> Prepared -> runner.run -> RunResult
                                                                  (progress, report, plot)

``idx`` reads MNIST's IDX files; ``report`` computes and prints the figures; ``plot`` draws them.
"""

from __future__ import annotations

from ..errors import DataError
from .data import Dataset, load_dataset
from .plot import PlotUnavailable
from .prepare import Prepared, prepare, stratified_split
from .runner import RunResult, StopFlag, TrainingFailed, TrainOptions, run

__all__ = ["DataError", "Dataset", "PlotUnavailable", "Prepared", "RunResult", "StopFlag",
           "TrainOptions", "TrainingFailed", "load_dataset", "prepare", "run", "stratified_split"]
