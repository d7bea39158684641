"""Property-based tests (hypothesis): bad input only ever gives a SpecError, and the generated
module stays finite and consistent on arbitrary inputs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive.activations import ACTIVATIONS
from derive.datasets import written_names
from derive.errors import SpecError
from derive.losses import LOSSES
from derive.netspec import NetSpec
from derive.optimizers import OPTIMIZERS
from derive.spec import load_spec_text

from test_codegen import make_spec

VALID = {
    "name": "net",
    "input": 4,
    "layers": [{"units": 5, "activation": "relu"},
               {"units": 3, "activation": {"name": "leaky_relu", "alpha": 0.1}},
               {"units": 3, "activation": "softmax"}],
    "loss": "categorical_crossentropy",
    "regularization": {"l2": 0.001},
    "training": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 8, "epochs": 2},
    "data": {"dataset": "digits", "test_fraction": 0.2},
}
# where a value can be swapped: (path of keys/indices)
PLACES = [("name",), ("input",), ("layers",), ("layers", 0), ("layers", 0, "units"),
          ("layers", 0, "activation"), ("layers", 1, "activation", "alpha"),
          ("layers", 2, "activation"), ("loss",), ("regularization",), ("regularization", "l2"),
          ("training", "optimizer"), ("training", "learning_rate"), ("training", "batch_size"),
          ("training", "epochs"), ("data", "dataset"), ("data", "test_fraction")]
# every declared name, so that a mutation also tries names that are valid somewhere else
NAMES = st.sampled_from([*ACTIVATIONS.names(), *ACTIVATIONS.aliases(), *LOSSES.names(),
                         *OPTIMIZERS.names(), *written_names()])
SCALARS = st.one_of(NAMES, st.none(), st.booleans(), st.integers(-10**7, 10**7),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                              st.integers(), max_size=2))
RELAXED = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@RELAXED
@given(st.text(max_size=300))
def test_any_text_is_a_spec_or_a_spec_error(text):
    try:
        assert isinstance(load_spec_text(text, "fuzz.yaml"), NetSpec)
    except SpecError as err:
        assert err.file == "fuzz.yaml" and str(err)


@RELAXED
@given(st.sampled_from(PLACES), SCALARS)
def test_one_changed_value_is_a_spec_or_a_located_spec_error(place, value):
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    target = spec
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value
    text = yaml.safe_dump(spec, sort_keys=False)
    try:
        assert isinstance(load_spec_text(text, "net.yaml"), NetSpec)
    except SpecError as err:
        assert err.line is not None and err.line >= 1, str(err)


@pytest.fixture(scope="module")
def softmax_net(build):
    return build(make_spec("tanh", "softmax", loss="categorical_crossentropy", sizes=(3, 4, 5),
                           name="prop_softmax", dtype="float32"))


@pytest.fixture(scope="module")
def sigmoid_net(build):
    return build(make_spec("relu", "sigmoid", loss="binary_crossentropy", sizes=(3, 4, 1),
                           name="prop_sigmoid", dtype="float32"))


LOGITS = st.lists(st.floats(-1000, 1000, width=32), min_size=5, max_size=5)


@RELAXED
@given(LOGITS, st.integers(0, 4))
def test_softmax_crossentropy_is_finite_for_any_logits(softmax_net, logits, label):
    net = softmax_net
    params = net.init_params(dtype=np.float32)
    params["W2"][:] = 0
    params["b2"][:] = np.asarray(logits, np.float32)
    X = np.ones((1, 3), np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        cache = net.forward(params, X)
        loss = net.loss(params, X, [label])
        grads = net.backward(params, cache, [label])
    assert np.isfinite(loss) and loss >= 0
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    np.testing.assert_allclose(cache.output.sum(), 1.0, rtol=1e-5)


@RELAXED
@given(st.floats(-1000, 1000, width=32), st.integers(0, 1))
def test_sigmoid_binary_crossentropy_is_finite_for_any_logit(sigmoid_net, logit, label):
    net = sigmoid_net
    params = net.init_params(dtype=np.float32)
    params["W2"][:] = 0
    params["b2"][:] = logit
    X = np.ones((1, 3), np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss = net.loss(params, X, [label])
        grads = net.backward(params, net.forward(params, X), [label])
    assert np.isfinite(loss) and loss >= 0
    assert all(np.all(np.isfinite(g)) for g in grads.values())
