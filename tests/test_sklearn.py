"""``derive.sklearn``: scikit-learn's own ``check_estimator`` passes for both estimators (every
check), and they work in Pipeline, GridSearchCV, cross_val_score, clone and pickle; a spec is
derived once per architecture."""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import derive.sklearn as derived
from derive.sklearn import DerivedClassifier, DerivedRegressor

SMALL = {"hidden_layer_sizes": (16,), "max_iter": 60, "learning_rate_init": 0.01,
         "random_state": 0}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The generated modules go to this test's folder, and this process derives afresh."""
    monkeypatch.setenv("BACKPROP_DERIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(derived, "_MODULES", {})
    return tmp_path / "cache"


def test_check_estimator_passes_for_both_within_three_minutes():
    started = time.perf_counter()
    for estimator in (DerivedClassifier(**SMALL), DerivedRegressor(**SMALL)):
        results = check_estimator(estimator, on_fail=None)
        failed = [(r["check_name"], str(r["exception"])[:300]) for r in results
                  if r["status"] == "failed"]
        assert not failed, failed
        ran = {r["check_name"] for r in results if r["status"] == "passed"}
        assert {"check_fit_idempotent", "check_estimators_pickle", "check_n_features_in",
                "check_estimators_nan_inf", "check_estimators_unfitted"} <= ran
    assert time.perf_counter() - started < 180


def test_grid_search_on_iris_against_mlpclassifier_on_the_same_folds():
    X, y = load_iris(return_X_y=True)
    grid = {"net__hidden_layer_sizes": [(8,), (16,)], "net__alpha": [1e-4, 1e-2]}
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = {}
    for net in (DerivedClassifier(learning_rate_init=0.01, random_state=0),
                MLPClassifier(learning_rate_init=0.01, random_state=0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("net", net)]), grid,
                                  cv=folds).fit(X, y)
        scores[type(net).__name__] = search.best_score_
    assert scores["DerivedClassifier"] >= 0.95, scores
    # the same folds, within one iris of a fold (30 rows) of MLPClassifier's best
    assert scores["DerivedClassifier"] >= scores["MLPClassifier"] - 1 / 30, scores


def test_pipeline_cross_val_score_clone_and_pickle():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = make_pipeline(StandardScaler(), DerivedClassifier(**SMALL))
    assert cross_val_score(model, X, names, cv=3).mean() > 0.85
    fitted = model.fit(X, names)
    assert set(fitted.predict(X)) <= set(names)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    copy = clone(model)
    assert copy.get_params()["derivedclassifier__hidden_layer_sizes"] == (16,)
    assert not hasattr(copy[-1], "classes_")
    assert fitted[-1].n_iter_ == len(fitted[-1].loss_curve_) >= 1
    assert fitted[-1].loss_curve_[-1] < fitted[-1].loss_curve_[0]


def test_a_pickled_model_predicts_in_a_process_that_never_derived_it(monkeypatch):
    X, y = load_iris(return_X_y=True)
    fitted = DerivedClassifier(**SMALL).fit(X, y)
    blob = pickle.dumps(fitted)
    monkeypatch.setattr(derived, "_MODULES", {})  # as a new process: from the cache folder
    calls = []
    import derive.derivation

    monkeypatch.setattr(derive.derivation, "derive",
                        lambda spec: calls.append(spec) or pytest.fail("derived again"))
    np.testing.assert_array_equal(pickle.loads(blob).predict(X), fitted.predict(X))
    assert not calls


def test_fit_derives_once_per_architecture(monkeypatch):
    import derive.derivation

    real, calls = derive.derivation.derive, []

    def counting(spec):
        calls.append(spec.layer_sizes)
        return real(spec)

    monkeypatch.setattr(derive.derivation, "derive", counting)
    X, y = load_iris(return_X_y=True)
    cross_val_score(DerivedClassifier(**SMALL), X, y, cv=5)  # five fits of one network
    DerivedClassifier(**{**SMALL, "max_iter": 5}).fit(X[:120], y[:120])  # other settings
    assert calls == [(4, 16, 3)]
    DerivedClassifier(**{**SMALL, "hidden_layer_sizes": (8, 8)}).fit(X[:120], y[:120])
    assert calls == [(4, 16, 3), (4, 8, 8, 3)]


def test_regressor_multioutput_and_layers_of_any_kind():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    Y = np.column_stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2]])
    model = DerivedRegressor(layers=[{"units": 16, "activation": "tanh"}], max_iter=150,
                             learning_rate_init=0.01, random_state=0).fit(X, Y)
    assert model.predict(X).shape == (200, 2) and model.score(X, Y) > 0.9
    assert DerivedRegressor(**SMALL).fit(X, Y[:, 0]).predict(X).shape == (200,)


@pytest.mark.parametrize("params, expected", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be positive integers"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ({"activation": "sign"}, "not a valid spec"),
    ({"layers": ["relu"]}, "layers must be a list of a spec's layers"),
])
def test_bad_parameters_are_clear_errors(params, expected):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=expected):
        DerivedClassifier(**{**SMALL, **params}).fit(X, y)


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = load_iris(return_X_y=True)
    model = DerivedClassifier(**{**SMALL, "max_iter": 300}, early_stopping=True,
                              n_iter_no_change=3).fit(StandardScaler().fit_transform(X), y)
    assert model.n_iter_ < 300 and np.isfinite(model.best_loss_)
