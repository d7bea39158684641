"""scikit-learn estimators over the derived networks: ``DerivedClassifier``, ``DerivedRegressor``.

``fit`` writes the network as a spec (the estimator's parameters, and the data's number of
features, classes or targets), derives it, generates its NumPy module and trains the module's
Trainer; predictions come from the module's forward pass with the trained parameters.  A
spec is derived once: the module is cached by the spec's content, in this process and in a
folder on disk (``$BACKPROP_DERIVE_CACHE``, else the user's cache folder, else a temporary
one), so a grid search or a cross-validation derives each architecture once.

The parameters are ``MLPClassifier``'s where the meaning is the same, ``alpha`` included: the
L2 term is ``alpha / (2 n_samples) * sum ||W||^2`` as scikit-learn's, so the spec's
``regularization.l2`` is ``alpha / n_samples``.  Inputs are not scaled (as with
``MLPClassifier``: put a ``StandardScaler`` before it in a ``Pipeline``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import yaml
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["DerivedClassifier", "DerivedRegressor", "cache_folder"]

# MLPClassifier's activation names -> this tool's
_ACTIVATIONS = {"logistic": "sigmoid", "identity": "identity", "tanh": "tanh", "relu": "relu"}
_MODULES: dict[str, object] = {}  # spec text -> generated module, for this process
_LOCK = threading.Lock()
ENGINE = "numpy"  # the Trainer's engine: no compile per architecture (numba's takes seconds)


def cache_folder() -> Path:
    """Where generated modules are kept between processes: ``$BACKPROP_DERIVE_CACHE``, else
    the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) under backprop-derive/, in a
    subfolder of this tool's version and runtime (a module runs with its own runtime)."""
    from codegen import runtime

    from . import __version__

    root = Path(runtime.cache_root())
    stamp = hashlib.sha256(Path(runtime.__file__).read_bytes()).hexdigest()[:10]
    return root / "sklearn" / f"{__version__}-{stamp}"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, delete=True)
        probe.close()
        return True
    except OSError:
        return False


def _module(text: str):
    """The generated module of a spec's text: from this process's cache, from the cache
    folder, or derived and written there now."""
    with _LOCK:
        module = _MODULES.get(text)
        if module is not None:
            return module
        from codegen.emit import write_module
        from codegen.files import import_module_from

        from .derivation import derive
        from .spec import load_spec_text

        spec = load_spec_text(text, "<derive.sklearn>")
        folder = cache_folder()
        if not _writable(folder):
            folder = Path(tempfile.gettempdir()) / f"backprop-derive-{os.getuid()}" / folder.name
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{spec.name}.py"
        module = None
        if path.is_file() and (folder / "_runtime.py").is_file():
            try:
                module = import_module_from(path)
                if tuple(module.LAYER_SIZES) != spec.layer_sizes:
                    module = None
            except Exception:  # a damaged cache entry is derived again
                module = None
        if module is None:
            module = import_module_from(write_module(derive(spec), folder, force=True))
        _MODULES[text] = module
        return module


def _spec_text(n_in: int, hidden: list[dict], output: dict, loss: str, l2: float,
               optimizer: str) -> str:
    """A spec's YAML for the network, named by a digest of its content."""
    body = {"input": int(n_in), "layers": [*hidden, output], "loss": loss,
            "regularization": {"l2": float(l2)}, "init": "xavier", "dtype": "float64",
            "training": {"optimizer": optimizer}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None)
    name = "derived_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"name: {name}\n{text}"


class _Convergence:
    """MLPClassifier's stopping rule without early stopping: training ends when the training
    loss has not improved by ``tol`` for more than ``n_iter_no_change`` epochs."""

    def __init__(self, tol: float, patience: int):
        self.tol, self.patience = tol, patience
        self.best, self.waited, self.stop = np.inf, 0, False

    def epoch_end(self, epoch: int, record: dict) -> None:
        loss = record["loss"]
        self.waited = self.waited + 1 if loss > self.best - self.tol else 0
        self.best = min(self.best, loss)
        self.stop = self.waited > self.patience

    def progress(self, epoch: int, done: int, total: int) -> bool:
        return self.stop and done == total


class _Derived(BaseEstimator):
    """The parameters and the fitting both estimators share."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, random_state=None,
                 tol=1e-4, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 optimizer="adam", layers=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.optimizer = optimizer
        self.layers = layers

    # -- the network ------------------------------------------------------------------
    def _hidden(self) -> list[dict]:
        """The hidden layers as a spec writes them: ``layers``, or ``hidden_layer_sizes``
        with ``activation``."""
        if self.layers is not None:
            if not isinstance(self.layers, (list, tuple)) or not all(
                    isinstance(layer, dict) for layer in self.layers):
                raise ValueError("layers must be a list of a spec's layers (mappings such as "
                                 f"{{'units': 16, 'activation': 'relu'}}); got {self.layers!r}")
            return [dict(layer) for layer in self.layers]
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got "
                             f"{self.hidden_layer_sizes!r}")
        activation = _ACTIVATIONS.get(self.activation, self.activation)
        if not isinstance(activation, str):
            raise ValueError(f"activation must be a name such as 'relu'; got {self.activation!r}")
        return [{"units": int(s), "activation": activation} for s in sizes]

    def _check_parameters(self) -> None:
        def bad(name, wanted):
            raise ValueError(f"{name} must be {wanted}; got {getattr(self, name)!r}")

        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            bad("max_iter", "an integer >= 1")
        if not (np.isscalar(self.alpha) and np.isfinite(self.alpha) and self.alpha >= 0):
            bad("alpha", "a finite number >= 0")
        if not (np.isscalar(self.learning_rate_init) and self.learning_rate_init > 0):
            bad("learning_rate_init", "a number > 0")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer))
                                              and self.batch_size >= 1):
            bad("batch_size", "'auto' or an integer >= 1")
        if not (np.isscalar(self.tol) and self.tol >= 0):
            bad("tol", "a number >= 0")
        if not 0 < self.validation_fraction < 1:
            bad("validation_fraction", "a number in (0, 1)")
        if not (isinstance(self.n_iter_no_change, (int, np.integer))
                and self.n_iter_no_change >= 1):
            bad("n_iter_no_change", "an integer >= 1")

    def _train(self, X, T, output: dict, loss: str, stratify=None):
        """Derive (or take from the cache), generate and train: the fitted attributes."""
        from .errors import SpecError

        self._check_parameters()
        m = X.shape[0]
        text = _spec_text(X.shape[1], self._hidden(), output, loss, self.alpha / m,
                          self.optimizer)
        try:
            module = _module(text)
        except SpecError as err:
            raise ValueError(f"the estimator's network is not a valid spec: {err}") from None
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        validation = None
        if self.early_stopping:
            X, Xv, T, Tv = train_test_split(X, T, test_size=self.validation_fraction,
                                            random_state=seed, stratify=stratify)
            validation = (Xv, Tv)
        batch = min(200, X.shape[0]) if self.batch_size == "auto" else int(self.batch_size)
        stopping = ({"patience": int(self.n_iter_no_change), "restore_best": True}
                    if self.early_stopping else False)
        watch = _Convergence(float(self.tol), int(self.n_iter_no_change))
        try:
            trainer = module.Trainer(optimizer=self.optimizer,
                                     learning_rate=float(self.learning_rate_init),
                                     batch_size=min(batch, X.shape[0]),
                                     epochs=int(self.max_iter), shuffle=True, seed=seed,
                                     engine=ENGINE, early_stopping=stopping)
            history = trainer.fit(X, T, validation=validation,
                                  callback=None if self.early_stopping else watch.epoch_end,
                                  progress=watch.progress)
        except FloatingPointError as err:  # the module's TrainingDiverged
            raise ValueError(f"training diverged: {err} (lower learning_rate_init)") from None
        self._spec = text
        self._params = {key: np.array(value) for key, value in trainer.params.items()}
        self.loss_curve_ = [float(loss) for loss in history["loss"]]
        self.n_iter_ = len(self.loss_curve_)
        self.coefs_ = [self._params[f"W{l}"].T for l in range(1, module.NETWORK.depth + 1)]
        self.intercepts_ = [self._params[f"b{l}"] for l in range(1, module.NETWORK.depth + 1)]
        if validation is not None:
            self.best_loss_ = float(trainer.best_loss)
        return self

    def _output(self, X):
        """The network's outputs (m, n_L) for X, checked as at fit."""
        check_is_fitted(self, "_params")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        module = _module(self._spec)
        return module.forward(self._params, X).output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False  # a NaN is refused, never answered
        return tags


class DerivedClassifier(ClassifierMixin, _Derived):
    """A classifier whose network is derived by this tool: softmax outputs, one per class,
    trained with categorical cross-entropy; ``MLPClassifier``'s parameters (``layers``: a
    spec's hidden layers, of any kind, in place of ``hidden_layer_sizes``/``activation``)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the target holds one class only ({self.classes_[0]!r}): a "
                             "classifier needs at least 2 classes")
        output = {"units": int(len(self.classes_)), "activation": "softmax"}
        return self._train(X, codes.astype(np.int64), output, "categorical_crossentropy",
                           stratify=codes if self.early_stopping else None)

    def predict_proba(self, X):
        """Each class's probability, columns in the order of ``classes_``."""
        return self._output(X)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        probabilities = self.predict_proba(X)  # first: NotFittedError before classes_
        return self.classes_[np.argmax(probabilities, axis=1)]


class DerivedRegressor(RegressorMixin, _Derived):
    """A regressor whose network is derived by this tool: identity outputs, one per target,
    trained with the squared error (½‖a − y‖², as ``MLPRegressor``'s)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._one_target = y.ndim == 1
        Y = y.reshape(len(y), -1).astype(np.float64)
        output = {"units": int(Y.shape[1]), "activation": "identity"}
        return self._train(X, Y, output, "mse")

    def predict(self, X):
        output = self._output(X)
        return output[:, 0] if self._one_target else output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one output unit per target column
        return tags

