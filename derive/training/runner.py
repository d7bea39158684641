"""One training run: ``NetSpec`` + generated module -> trained parameters, summary, report.

Steps: import the module; load the spec's data (digits by default); check it against the spec,
split, scale and encode it (``prepare``); train with the spec's ``training:`` settings and the
command line's overrides, showing progress; evaluate on the test set; print the report; save the
parameters (``Trainer.save``, .npz) and a JSON summary; draw the plots if asked.

Ctrl-C during training sets a flag that the Trainer's progress hook returns, so training stops
cleanly after the current batch; the network as it is then is evaluated, reported and saved,
and ``RunResult.interrupted`` is True (the command exits with 130).  A second Ctrl-C aborts.
"""

from __future__ import annotations

import functools
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np

from ..errors import DataError
from ..netspec import DataSpec, NetSpec
from ..optimizers import FULL_BATCH, OPTIMIZERS, SCHEDULES, variant_of
from .data import REGRESSION, ColumnError, Dataset, load_dataset
from .prepare import LABELS, Prepared, encoded_names, output_units, prepare, task_of
from .progress import QUIET, EpochDisplay, choose_mode
from .report import (ClassificationMetrics, RegressionMetrics, classification_metrics,
                     regression_metrics, score, write_json)

__all__ = ["TrainOptions", "RunResult", "StopFlag", "TrainingFailed", "run", "stop_on_interrupt",
           "training_settings", "DEFAULT_RUNS_DIR", "new_run_folder", "sized", "load_prepared"]

DEFAULT_RUNS_DIR = Path("runs")
SUMMARY_NAME = "summary.json"


class TrainingFailed(Exception):
    """Training could not go on (the loss became NaN or infinite)."""


@dataclass(frozen=True)
class TrainOptions:
    """What the command line adds to the spec: overrides of ``training:``, where to save, how
    much to show.  None keeps the spec's value."""

    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | str | None = None
    optimizer: str | None = None
    schedule: str | None = None
    patience: int | None = None
    seed: int | None = None
    resume: str | Path | None = None  # a model file to continue
    save_dir: str | Path | None = None  # None: a new runs/<name>/<n>/
    plot: str | Path | None = None  # the curves' PNG; the confusion matrix goes next to it
    quiet: bool = False  # only the final report
    verbose: bool = False  # also per-epoch timings and the stages' times
    progress: str | None = None  # bar | lines | quiet; None: a bar on a terminal, else lines
    backend: str = "numpy"  # numpy (the generated Trainer) | torch | jax (training/backends.py)
    device: str = "cpu"  # torch: cpu | cuda
    workers: int = 1  # torch: processes under DistributedDataParallel

    def overrides(self) -> dict:
        keys = ("epochs", "learning_rate", "batch_size", "optimizer", "schedule", "patience",
                "seed")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}


@dataclass(frozen=True, eq=False)
class RunResult:
    name: str
    interrupted: bool  # stopped by Ctrl-C (or the stop flag) before the last epoch ended
    epochs_completed: int  # whole epochs done
    metrics: ClassificationMetrics | RegressionMetrics | None  # on the test set (None: none)
    history: tuple[dict, ...]  # per epoch: loss, accuracy or r2, test_loss, test_..., seconds
    params_path: Path
    summary_path: Path
    plots: tuple[Path, ...]
    summary: dict = field(repr=False)


class StopFlag:
    """Asks training to stop after the current batch; the progress hook returns ``is_set``."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


@contextmanager
def stop_on_interrupt(flag: StopFlag, notify: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While inside: the first Ctrl-C (SIGINT) sets ``flag`` and calls ``notify``; a second one
    raises KeyboardInterrupt as usual.  Outside the main thread signals cannot be caught, and
    nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum, frame):
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        notify()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def training_settings(spec: NetSpec, options: TrainOptions) -> dict:
    """The Trainer's keyword arguments that differ from the module's TRAINING (the spec's
    ``training:``): the command line's overrides."""
    settings = {key: value for key, value in options.overrides().items()
                if key not in ("patience", "schedule")}
    if options.schedule is not None:
        settings["schedule"] = options.schedule
    if options.patience is not None:
        stopping = spec.training.early_stopping
        settings["early_stopping"] = {
            "patience": options.patience,
            "min_delta": stopping.min_delta if stopping else 0.0,
            "restore_best": stopping.restore_best if stopping else True}
    return settings


# ----------------------------------------------------------------------------- the run

def run(spec: NetSpec, module_path: str | Path, options: TrainOptions = TrainOptions(), *,
        stream: TextIO | None = None, stop: StopFlag | None = None,
        data: tuple[Dataset, Prepared] | None = None) -> RunResult:
    """Train the generated module at ``module_path`` on the spec's data; report and save.

    ``data`` is the spec's data as ``load_prepared`` gives it, when the caller loaded it
    already (the CLI does, before writing the module, so that bad data writes nothing).
    Raises ``DataError`` for data that cannot be used (missing, damaged, or not fitting the
    spec) or a save folder that cannot be made, ``TrainingFailed`` if the loss diverges, and
    ``PlotUnavailable`` for ``plot`` without matplotlib (all before any training but the second).
    """
    from codegen.files import import_module_from

    from .plot import require_matplotlib

    stream = stream if stream is not None else sys.stdout
    started = time.perf_counter()
    if options.plot is not None:
        require_matplotlib()
    module = import_module_from(module_path)
    trainer = _trainer(spec, module, options)
    settings = trainer.settings()
    dataset, prepared = data if data is not None else load_prepared(spec, module.TASK)
    save_dir = Path(options.save_dir) if options.save_dir else new_run_folder(spec.name)
    _make_folder(save_dir)
    if options.plot is not None:
        _make_folder(Path(options.plot).parent, "the plots")
    timings = {"load_seconds": time.perf_counter() - started}

    session = _Session(trainer, prepared, options, stream, stop if stop is not None else StopFlag(),
                       module_path)
    if session.display.mode != QUIET:
        print(_header(spec, dataset, prepared, settings), file=stream, flush=True)
    session.train()
    timings["train_seconds"] = session.seconds

    evaluating = time.perf_counter()
    test = test_loss = None
    if session.X_test is not None:
        test = evaluate(session.trainer, prepared, session.X_test, prepared.truth_test)
        test_loss = session.trainer.evaluate(session.X_test, prepared.Y_test)["loss"]
    train = evaluate(session.trainer, prepared, session.X_train, prepared.truth_train)
    validation = (evaluate(session.trainer, prepared, session.X_val, prepared.truth_val)
                  if session.X_val is not None else None)
    timings["evaluate_seconds"] = time.perf_counter() - evaluating
    print(_report(spec, dataset, test, train, validation, test_loss, session, timings,
                  options.verbose), file=stream, flush=True)

    from codegen.files import atomic_write

    params_path = save_dir / f"{spec.name}.npz"
    extra = _model_extra(spec, dataset, prepared)
    atomic_write(params_path, lambda file: session.trainer.save(file, extra=extra))
    plots = _plots(options.plot, spec, dataset, session, test, train)
    summary_path = save_dir / SUMMARY_NAME
    timings["total_seconds"] = time.perf_counter() - started
    summary = _summary(spec, module_path, dataset, prepared, session.trainer.settings(), options,
                       session, test, train, validation, test_loss, timings, params_path, plots)
    write_json(summary_path, summary)
    saved = f"saved {params_path} and {summary_path}"
    if plots:
        saved += "\nplots " + " and ".join(map(str, plots))
    print(saved, file=stream, flush=True)
    return RunResult(spec.name, session.interrupted, session.epochs_completed, test,
                     tuple(session.history), params_path, summary_path, plots, summary)


def new_run_folder(name: str, root: Path = DEFAULT_RUNS_DIR) -> Path:
    """``runs/<name>/<n>/`` with n one more than any run before: a run never replaces
    another's files."""
    base = root / name
    done = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
    return base / str(max(done, default=0) + 1)


def _model_extra(spec: NetSpec, dataset: Dataset, prepared: Prepared) -> dict:
    """What the model file holds besides the Trainer's state: the preprocessing and the spec
    (its text), so that the file alone predicts raw rows (``derive predict``)."""
    text = None
    if spec.source and Path(spec.source).is_file():
        text = Path(spec.source).read_text(encoding="utf-8")
    preprocessing = prepared.preprocessing(dataset)
    preprocessing["target_columns"] = list(spec.data.targets) if spec.data else None
    preprocessing["delimiter"] = spec.data.delimiter if spec.data else ","
    return {"preprocessing": preprocessing, "spec": text,
            "spec_name": Path(spec.source).name if spec.source else None,
            "dataset": dataset.name}


def _trainer(spec: NetSpec, module, options: TrainOptions):
    """A new Trainer with the spec's settings and the overrides, or the resumed one."""
    import warnings

    overrides = training_settings(spec, options)
    if options.resume is None:
        with warnings.catch_warnings():  # an old optimizer name was reported with the spec
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return module.Trainer(**overrides)
            except (TypeError, ValueError) as err:
                raise DataError(f"training settings: {err}") from None
    path = Path(options.resume)
    if not path.is_file():
        raise DataError(f"--resume {path}: no such model file")
    try:
        trainer = module.Trainer.load(path)
    except (TypeError, ValueError) as err:
        raise DataError(f"--resume {path}: {err}") from None
    trainer.preprocessing = None  # the run prepares its data itself
    changed = sorted(set(overrides) - {"epochs"})
    if changed:
        raise DataError(f"--resume continues the saved run with its own settings; "
                        f"--{changed[0].replace('_', '-')} cannot change it")
    done = trainer.epoch
    more = options.epochs if options.epochs is not None else spec.training.epochs - done
    if more < 1:
        raise DataError(f"--resume {path}: the run already has {done} epochs (the spec's "
                        f"training.epochs is {spec.training.epochs}); give --epochs N to train "
                        "N more")
    trainer.epochs = more
    return trainer


def load_prepared(spec: NetSpec, task: str | None = None) -> tuple[Dataset, Prepared]:
    """The spec's data (digits without a ``data:`` section), checked, split and scaled, for a
    module of ``task`` (the spec's own by default).  A column the spec names that the table
    lacks is located at the spec's line."""
    data_spec = spec.data or DataSpec()
    task = task or task_of(spec)
    base_dir = Path(spec.source).parent if spec.source else None
    try:
        dataset = load_dataset(data_spec.dataset, target=data_spec.target, base_dir=base_dir,
                               classes=task != "regression", features=data_spec.features,
                               drop=data_spec.drop, delimiter=data_spec.delimiter,
                               test=data_spec.test, missing=data_spec.missing,
                               categorical=data_spec.categorical)
    except ColumnError as err:
        line = data_spec.line_of(err.field)
        where = ":".join(str(part) for part in (spec.source, line) if part)
        location = ": ".join(part for part in (where, f"data.{err.field}") if part)
        raise DataError(err.message, location=location, hint=err.hint) from None
    try:
        return dataset, prepare(spec, task, dataset, data_spec.test_fraction,
                                data_spec.split_seed, data_spec.validation_fraction,
                                data_spec.scaling)
    except DataError as err:
        if spec.data is not None:
            raise
        from ..datasets import written_names

        raise DataError(f"{err}\n  the spec has no data: section, so --train used the default "
                        f"data set, {data_spec.dataset}; add one, e.g. data: {{dataset: iris}} "
                        f"(one of: {', '.join(written_names())})") from None


def sized(spec: NetSpec, dataset: Dataset, prepared: Prepared) -> NetSpec:
    """The spec with its ``auto`` sizes taken from the prepared data (itself without any)."""
    if not spec.auto_sizes:
        return spec
    return spec.sized(prepared.X_train.shape[1], output_units(spec, task_of(spec), dataset))


def evaluate(trainer, prepared: Prepared, X: np.ndarray,
             truth: np.ndarray) -> ClassificationMetrics | RegressionMetrics:
    """The trained network's figures on (X, truth), from its predictions."""
    predicted = prepared.predictions(trainer.predict(X))
    if prepared.task == REGRESSION:
        return regression_metrics(truth, predicted)
    return classification_metrics(truth, predicted, prepared.class_names)


class _Session:
    """The Trainer and its hooks: progress after each update, a record after each epoch."""

    def __init__(self, trainer, prepared: Prepared, options: TrainOptions, stream: TextIO,
                 stop: StopFlag, module_path: str | Path = ""):
        self.prepared, self.stop, self.trainer = prepared, stop, trainer
        self.first_epoch = trainer.epoch  # > 0 when resumed
        self.epochs = trainer.epoch + trainer.epochs
        self.verbose = options.verbose
        self.score = "r2" if prepared.task == REGRESSION else "accuracy"
        self.display = EpochDisplay(self.epochs, self.score, verbose=options.verbose,
                                    mode=options.progress or choose_mode(stream, options.quiet),
                                    stream=stream)
        self.fit = self.trainer.fit
        if options.backend != "numpy":  # the same run on a framework's engine
            from .backends import BackendOptions, fit

            backend = BackendOptions(options.backend, options.device, options.workers)
            self.fit = functools.partial(fit, backend, self.trainer, str(module_path))
        # once, in the Trainer's dtype, so that neither fit() nor predict() converts them again
        self.X_train = prepared.X_train.astype(self.trainer.dtype)
        self.X_test = None if prepared.X_test is None else prepared.X_test.astype(self.trainer.dtype)
        self.X_val = None if prepared.X_val is None else prepared.X_val.astype(self.trainer.dtype)
        self.history: list[dict] = []
        self.position = (0, 0, 0)  # epoch, updates done in it, updates per epoch
        self.seconds = 0.0
        self._last = 0.0

    @property
    def interrupted(self) -> bool:
        return bool(self.trainer.interrupted)

    @property
    def epochs_completed(self) -> int:
        return self.first_epoch + sum(1 for record in self.history if not record.get("partial"))

    def train(self) -> None:
        started = self._last = time.perf_counter()
        # a diverging run overflows on its way to the Trainer's clear message: no warnings
        with stop_on_interrupt(self.stop, self._notify), \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                validation = (None if self.X_val is None else (self.X_val, self.prepared.Y_val))
                self.fit(self.X_train, self.prepared.Y_train, validation=validation,
                                 callback=self._epoch_end, progress=self._progress)
            except FloatingPointError as err:  # the module's TrainingDiverged
                raise TrainingFailed(str(err)) from None
            finally:
                self.display.close()
        self.seconds = time.perf_counter() - started

    def _progress(self, epoch: int, done: int, total: int) -> bool:
        self.position = (epoch, done, total)
        self.display.update(epoch, done, total)
        return self.stop.is_set

    def _epoch_end(self, epoch: int, figures: dict) -> None:
        record = {"epoch": epoch, "loss": figures["loss"], "val_loss": figures.get("val_loss"),
                  "lr": figures.get("lr")}
        parts = [("", self.X_train, self.prepared.truth_train)]
        if self.X_val is not None:
            parts.append(("val_", self.X_val, self.prepared.truth_val))
        if self.verbose and self.X_test is not None:  # test figures per epoch only when asked
            parts.append(("test_", self.X_test, self.prepared.truth_test))
            record["test_loss"] = self.trainer.evaluate(self.X_test, self.prepared.Y_test)["loss"]
        if self.prepared.decode == LABELS:
            record[self.score] = figures["accuracy"]
            if self.X_val is not None:
                record["val_" + self.score] = figures.get("val_accuracy")
            parts = [part for part in parts if part[0] == "test_"]
        for prefix, X, truth in parts:  # from the predictions, in the data's own terms
            predicted = self.prepared.predictions(self.trainer.predict(X))
            record[prefix + self.score] = score(self.prepared.task, truth, predicted)
        if self.trainer.best_epoch == epoch:
            record["best"] = True
        now = time.perf_counter()
        record["seconds"] = now - self._last
        _, done, total = self.position
        if done < total:
            record["partial"] = True
        self.history.append(record)
        self.display.epoch_end(epoch, record)
        self._last = time.perf_counter()

    def _notify(self) -> None:
        self.display.message("derive: Ctrl-C: stopping after this batch, then evaluating and "
                             "saving (press Ctrl-C again to abort)", stream=sys.stderr)


def _make_folder(folder: Path, what: str = "the trained parameters") -> None:
    """``folder`` made, and a file created and removed in it: a read-only folder or disk is
    found before training."""
    from codegen.files import check_folder_writable

    try:
        check_folder_writable(folder)
    except OSError as exc:
        raise DataError(f"cannot write into the folder {folder} for {what}: "
                        f"{exc.strerror or exc}") from None


# ----------------------------------------------------------------------------- text

def _settings_text(settings: dict, dtype) -> str:
    """``Adam (torch.optim.Adam), mini-batch gradient descent: ...`` from the declarations."""
    rule = OPTIMIZERS[settings["optimizer"]]
    variant = variant_of(settings["batch_size"])
    batch = ("all examples per step" if settings["batch_size"] == FULL_BATCH else
             "one example per step" if settings["batch_size"] == 1 else
             f"batch size {settings['batch_size']}")
    hyper = ", ".join(f"{key} {_value_text(value)}"
                      for key, value in settings["hyperparameters"].items())
    schedule = settings["schedule"]
    rate = f"learning rate {settings['learning_rate']:g}"
    if schedule["name"] != "constant":
        params = ", ".join(f"{k} {_value_text(v)}" for k, v in schedule.items() if k != "name")
        rate += f" with {SCHEDULES[schedule['name']].title.lower()} ({params})"
    stopping = settings["early_stopping"]
    stop = (f", early stopping (patience {stopping['patience']}"
            f"{', restoring the best epoch' if stopping['restore_best'] else ''})"
            if stopping else "")
    return (f"{rule.title} ({rule.source}; {hyper}), {variant.description}: {rate}, {batch}, "
            f"{settings['epochs']} epochs, {'shuffled' if settings['shuffle'] else 'in order'}, "
            f"seed {settings['seed']}, {np.dtype(dtype).name}{stop}")


def _value_text(value) -> str:
    return ", ".join(f"{x:g}" for x in value) if isinstance(value, (tuple, list)) else f"{value:g}"


def _scaling_text(dataset: Dataset, prepared: Prepared) -> str:
    """How the features were scaled: the fixed scaling, then the training part's statistics."""
    fitted = {"standard": "standardised with the training part's mean and deviation",
              "minmax": "scaled to [0, 1] by the training part's minimum and range"}
    parts = [f"scaled {dataset.scaling}"] if dataset.scaling else []
    if prepared.features is not None:
        parts.append(fitted[prepared.features.kind])
    return ", then ".join(parts) or "as they are"


def _data_text(dataset: Dataset, prepared: Prepared) -> str:
    scaling = _scaling_text(dataset, prepared)
    if prepared.task == REGRESSION:
        what = (f"{dataset.n_targets} target{'s' if dataset.n_targets > 1 else ''}"
                + (" (standardised for training; figures in the original units)"
                   if prepared.targets is not None else ""))
    else:
        what = f"{dataset.n_classes} classes"
    validation = (f", {len(prepared.X_val)} validation" if prepared.X_val is not None else "")
    tested = 0 if prepared.X_test is None else len(prepared.X_test)
    features = f"{dataset.n_features} features"
    if prepared.columns is not None:
        categories = sum(1 for column in prepared.columns if column["kind"] == "category")
        filled = ("" if dataset.missing not in ("mean", "median", "most_frequent")
                  else f", missing cells filled ({dataset.missing} of the training part)")
        features = (f"{dataset.n_features} columns ({categories} one-hot encoded{filled}) -> "
                    f"{prepared.X_train.shape[1]} features")
    if dataset.dropped:
        features = (f"{dataset.dropped} row{'s' if dataset.dropped > 1 else ''} with a missing "
                    f"cell left out; {features}")
    return (f"{features} {scaling}, {what}; {len(prepared.X_train)} training"
            f"{validation} and {tested} test examples ({prepared.split})")


def _header(spec: NetSpec, dataset: Dataset, prepared: Prepared, settings: dict) -> str:
    sizes = "-".join(map(str, spec.layer_sizes))
    return (f"training {spec.name} ({sizes}, {spec.loss}) on {dataset.name}: "
            f"{_data_text(dataset, prepared)}\n{_settings_text(settings, spec.dtype)}")


def _report(spec: NetSpec, dataset: Dataset, test, train, validation, test_loss: float | None,
            session: _Session, timings: dict, verbose: bool) -> str:
    lines = []
    trainer = session.trainer
    if session.interrupted:
        epoch, done, total = session.position
        lines.append(f"stopped by Ctrl-C in epoch {epoch} of {session.epochs}, after {done} of "
                     f"{total} updates; the figures are for the network as it was then")
    if trainer.stopped_early:
        lines.append(f"early stopping: the validation loss has not improved for "
                     f"{trainer.early_stopping.patience} epochs")
    if trainer.best_epoch is not None and trainer.early_stopping is not None \
            and trainer.early_stopping.restore_best:
        lines.append(f"restored the best epoch, {trainer.best_epoch} (validation loss "
                     f"{trainer.best_loss:.4f}): the figures below and the saved model are its")
    done = f"after {session.epochs_completed} epoch{'s' if session.epochs_completed != 1 else ''}"
    if session.interrupted and session.history and session.history[-1].get("partial"):
        done += " and part of one"
    done += f" in {session.seconds:.2f} s"
    lines += _figures(spec, dataset, test, train, validation, test_loss, done)
    if verbose:
        per_epoch = session.seconds / max(len(session.history), 1)
        lines.append(f"times: data {timings['load_seconds']:.2f} s, training "
                     f"{timings['train_seconds']:.2f} s ({per_epoch:.3f} s per epoch), "
                     f"evaluation {timings['evaluate_seconds']:.2f} s")
        compiling = getattr(session.trainer, "first_call_seconds", 0.0)
        if compiling:
            lines.append(f"compiled engine: first calls {compiling:.2f} s, numba's compiling "
                         "included (cached on disk beside the module for the next run)")
    return "\n".join(lines)


def _figures(spec: NetSpec, dataset: Dataset, test, train, validation, test_loss: float | None,
             done: str) -> list[str]:
    """The report's figures: on the test set, then the training and validation parts; without
    a test set (test_fraction 0), the training part's figures lead and say so."""
    lead = f"{spec.name} on {dataset.name} {done}: "
    if test is None:
        lead += "no test set (test_fraction 0); "
    if isinstance(train, RegressionMetrics):
        target = ", ".join(dataset.target_names)
        figures = [] if test is None else [
            f"test R² {test.r2:.4f}, RMSE {test.rmse:.4g}, MAE {test.mae:.4g} "
            f"({target}, original units)"]
        if test is None:
            figures.append(f"train R² {train.r2:.4f}, RMSE {train.rmse:.4g}, MAE "
                           f"{train.mae:.4g} ({target}, original units)")
        else:
            figures.append(f"train R² {train.r2:.4f}")
        if validation is not None:
            figures.append(f"validation R² {validation.r2:.4f}")
    else:
        figures = [] if test is None else [
            f"test accuracy {test.accuracy:.4f} ({test.correct}/{test.total})"]
        figures.append(f"train accuracy {train.accuracy:.4f}"
                       + (f" ({train.correct}/{train.total})" if test is None else ""))
        if validation is not None:
            figures.append(f"validation accuracy {validation.accuracy:.4f}")
    if test_loss is not None:
        figures.append(f"test loss {test_loss:.4f}")
    lines = [lead + "; ".join(figures)]
    if isinstance(train, ClassificationMetrics):
        shown, which = (test, "test") if test is not None else (train, "training")
        lines.append(f"{which} confusion matrix (rows: true class, columns: predicted class) "
                     "and per-class accuracy:")
        lines.append(shown.table())
    return lines


# ----------------------------------------------------------------------------- files

def _plots(plot: str | Path | None, spec: NetSpec, dataset: Dataset, session: _Session,
           test, train) -> tuple[Path, ...]:
    if plot is None or not session.history:
        return ()
    from .plot import confusion_path, plot_confusion, plot_history

    title = f"{spec.name} on {dataset.name}"
    paths = [plot_history(session.history, plot, title=title, score=session.score)]
    if isinstance(test, ClassificationMetrics):
        paths.append(plot_confusion(test, confusion_path(plot), title=title))
    elif test is None and isinstance(train, ClassificationMetrics):  # no test set
        paths.append(plot_confusion(train, confusion_path(plot), title=f"{title} (training part)"))
    return tuple(paths)


def _engine(trainer, options: TrainOptions, m: int) -> dict:
    """What trained: the backend, and the generated Trainer's engine (numpy or compiled)."""
    engine = why = None
    if options.backend == "numpy":
        engine = "compiled" if trainer.compiled(trainer.step_size(m)) else "numpy"
        why = getattr(trainer, "engine_choice", None)  # "engine: why" of its last fit
        why = why.split(": ", 1)[1] if why else None
    return {"backend": options.backend, "engine": engine, "why": why,
            "device": options.device if options.backend == "torch" else None,
            "workers": options.workers if options.backend == "torch" else None}


def _summary(spec: NetSpec, module_path, dataset: Dataset, prepared: Prepared, settings: dict,
             options: TrainOptions, session: _Session, test, train, validation,
             test_loss: float, timings: dict, params_path: Path,
             plots: tuple[Path, ...]) -> dict:
    from .. import __version__

    data = {
        "dataset": dataset.name,
        "task": prepared.task,
        "features": dataset.n_features,
        "feature_names": list(dataset.feature_names) or None,
        "train_examples": len(prepared.X_train),
        "validation_examples": 0 if prepared.X_val is None else len(prepared.X_val),
        "test_examples": 0 if prepared.X_test is None else len(prepared.X_test),
        "split": prepared.split,
        # the rows of each part (positions among the data set's examples, after any rows left
        # out for a missing cell) and the method and seed that reproduce them
        "split_rows": prepared.split_rows,
        "rows_left_out": dataset.dropped,
        "missing": dataset.missing if dataset.kinds is not None or dataset.dropped else None,
        "columns": prepared.columns,
        "encoded_features": encoded_names(prepared.columns) if prepared.columns else None,
        # the fixed scaling (x/16), then the fitted one (standard, minmax); or none
        "scaling": ", ".join(part for part in (
            dataset.scaling, prepared.features.kind if prepared.features else "") if part)
                   or "none",
        "feature_standardisation": prepared.features.as_dict() if prepared.features else None,
    }
    if prepared.task == REGRESSION:
        data["targets"] = list(dataset.target_names)
        data["target_standardisation"] = prepared.targets.as_dict() if prepared.targets else None
    else:
        data["classes"] = list(dataset.class_names)
        data["label_mapping"] = dataset.label_mapping
    return {
        "generator": f"Generated by backprop-derive {__version__}",
        "name": spec.name,
        "spec": spec.source,
        "module": str(module_path),
        "layer_sizes": list(spec.layer_sizes),
        "activations": [layer.activation.name for layer in spec.layers],
        "loss": spec.loss,
        "loss_parameters": dict(spec.loss_params),
        "data": data,
        "settings": {key: settings[key] for key in (
            "optimizer", "learning_rate", "batch_size", "epochs", "shuffle", "seed", "dtype",
            "hyperparameters", "schedule", "early_stopping")},
        "split_seed": (spec.data or DataSpec()).split_seed,
        "best_epoch": session.trainer.best_epoch,
        "stopped_early": session.trainer.stopped_early,
        "overrides": options.overrides(),
        "engine": _engine(session.trainer, options, len(prepared.X_train)),
        "epochs_completed": session.epochs_completed,
        "interrupted": session.interrupted,
        "history": session.history,
        "test": None if test is None else {"loss": test_loss, **test.as_dict()},
        "train": {"loss": session.trainer.evaluate(session.X_train, prepared.Y_train)["loss"],
                  **train.as_dict()},
        "validation": None if validation is None else {
            "loss": session.trainer.evaluate(session.X_val, prepared.Y_val)["loss"],
            **validation.as_dict()},
        "timings": timings,
        "files": {"parameters": params_path.name, "plots": [str(p) for p in plots]},
        "versions": {"backprop_derive": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
