"""The fuzzer: random valid specs through the whole pipeline, random invalid ones and hostile
data files through the readers.

* A valid spec (every registered activation with random parameters, every output/loss pair
  the spec accepts, L1/L2, every dtype, batch sizes from 1 to more than the examples, so a
  partial last batch too) is derived, written and imported; its backward() agrees with
  central finite differences; every engine's training steps give the parameters of the
  functional steps params -= lr * backward(...); the loss stays finite for inputs of 1e3.
* A spec changed at one place, or YAML text cut, doubled or garbled, is a NetSpec or a
  SpecError with a line; through the command it exits 0 or 2, never with a traceback.
* Hostile CSV and IDX files are a Dataset or a DataError, nothing else.
* Damaged model files (truncated, bits flipped, members dropped, cut, replaced or their
  settings edited) load as a working Trainer or raise the runtime's one ModelFileError naming
  the file, nothing else.

The short profile runs in the default test run (a few seconds); the long one is
``pytest -m fuzz`` (``FUZZ_SPECS``, ``FUZZ_INVALID``, ``FUZZ_FILES``, ``FUZZ_MODELS`` set its
counts; defaults 10,000, 2,000, 500 and 500; the compiled engine, which numba compiles for each spec in seconds, is
checked on one valid spec in ``FUZZ_COMPILED_EVERY``, default 10, the NumPy engine on all).
Every name comes from the registries.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from codegen.emit import write_module
from codegen.fdcheck import finite_difference_check, random_targets
from codegen.files import import_module_from
from codegen.lower import lower
from derive.activations import ACTIVATIONS
from derive.cli import main
from derive.derivation import derive
from derive.errors import DataError, SpecError
from derive.losses import LOSSES
from derive.netspec import NetSpec
from derive.optimizers import OPTIMIZERS
from derive.spec import DTYPES, INITS, load_spec_text
from derive.training.data import load_csv
from derive.training.idx import read_idx

LONG = {"specs": int(os.environ.get("FUZZ_SPECS", 10_000)),
        "invalid": int(os.environ.get("FUZZ_INVALID", 2_000)),
        "files": int(os.environ.get("FUZZ_FILES", 500)),
        "models": int(os.environ.get("FUZZ_MODELS", 500)),
        "compiled_every": int(os.environ.get("FUZZ_COMPILED_EVERY", 10))}


def _profile(examples: int, long: bool = False) -> settings:
    """The short profiles are derandomized (the same examples every run); the long ones draw
    new examples each run."""
    return settings(max_examples=examples, deadline=None, derandomize=not long, database=None,
                    suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------- valid specs

def _small_spec(output: str, loss: str, units: int) -> str:
    return (f"name: probe\ninput: 2\nlayers:\n  - {{units: {units}, activation: {output}}}\n"
            f"loss: {loss}\n")


def _accepted(text: str) -> bool:
    try:
        load_spec_text(text, "probe.yaml")
    except SpecError:
        return False
    return True


# every (output activation, loss) the spec checker accepts on some number of units: the
# rules are the tool's own, asked once
PAIRS = sorted({(out, loss) for out in ACTIVATIONS.names() for loss in LOSSES.names()
                for units in (1, 2, 3) if _accepted(_small_spec(out, loss, units))})
HIDDEN = [name for name in ACTIVATIONS.names() if not ACTIVATIONS[name].last_layer_only]
# the rule the functional steps follow: the plain one (theta - eta g), at its plain settings
STEP_RULE = next(name for name in OPTIMIZERS.names() if OPTIMIZERS[name].plain_when is not None)


@st.composite
def activations(draw, names):
    name = draw(st.sampled_from(names))
    params = {}
    for key, param in ACTIVATIONS[name].params.items():
        value = round(draw(st.floats(0.01, 2.0)), 3)
        params[key] = value if param.check(value) else param.default
    return name if not params else {"name": name, **params}


@st.composite
def valid_specs(draw, max_depth=6, max_width=8):
    depth = draw(st.integers(1, max_depth))
    hidden = [{"units": draw(st.integers(1, max_width)),
               "activation": draw(activations(HIDDEN))} for _ in range(depth - 1)]
    output, loss = draw(st.sampled_from(PAIRS))
    out_act = draw(activations([output]))
    spec = {"name": "fuzz_net", "input": draw(st.integers(1, max_width)),
            "layers": hidden + [{"units": draw(st.integers(1, max_width)),
                                 "activation": out_act}],
            "loss": loss, "dtype": draw(st.sampled_from(DTYPES))}
    penalties = draw(st.sets(st.sampled_from(("l1", "l2"))))
    if penalties:
        spec["regularization"] = {key: draw(st.sampled_from((0.001, 0.01, 0.1)))
                                  for key in sorted(penalties)}
    if draw(st.booleans()):
        spec["init"] = draw(st.sampled_from(INITS))
    text = yaml.safe_dump(spec, sort_keys=False)
    assume(_accepted(text))  # e.g. softmax on one unit: drawn again
    return text


def _functional_steps(net, params, X, Y, size, lr):
    params = {k: v.copy() for k, v in params.items()}
    for start in range(0, X.shape[0], size):
        Xb, Yb = X[start:start + size], Y[start:start + size]
        grads = net.backward(params, net.forward(params, Xb), Yb)
        for key in params:
            params[key] -= params[key].dtype.type(lr) * grads[key]
    return params


def _engines(net, long: bool) -> list[str]:
    """The concrete engines of the runtime (not "auto"); the compiled one in the long run."""
    engines = [e for e in net._runtime.ENGINES if e != "auto"]
    return engines if long else [e for e in engines if e != "compiled"]


def check_valid_spec(text: str, examples: int, batch: int, long: bool) -> None:
    spec = load_spec_text(text, "fuzz.yaml")
    assert isinstance(spec, NetSpec)
    derivation = derive(spec)
    with tempfile.TemporaryDirectory() as tmp:
        net = import_module_from(write_module(derivation, tmp))
        fd = finite_difference_check(net, switches=lower(derivation).switches)
        assert fd.ok, text + fd.summary()
        rng = np.random.default_rng(examples * 31 + batch)
        dtype = np.dtype(spec.dtype)
        X = rng.standard_normal((examples, spec.input)).astype(dtype)
        Y = random_targets(net, examples, rng)
        lr = 0.05
        start = net.init_params(seed=1, dtype=dtype)
        expected = _functional_steps(net, start, X, Y, batch, lr)
        tolerance = {"rtol": 1e-9, "atol": 1e-11} if dtype == np.float64 else \
            {"rtol": 2e-4, "atol": 2e-5}
        event(f"valid: {len(spec.layers)} layers, {spec.dtype}, "
              f"{'partial last batch' if examples % batch else 'whole batches'}"
              f"{', compiled engine too' if long else ''}")
        for engine in _engines(net, long):
            trainer = net.Trainer(params=start, learning_rate=lr, batch_size=batch, epochs=1,
                                  optimizer=STEP_RULE, shuffle=False, seed=1, engine=engine)
            trainer.fit(X, Y, track=False)
            for key in start:
                np.testing.assert_allclose(trainer.params[key], expected[key], **tolerance,
                                           err_msg=f"{engine} {key}\n{text}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an overflow warning is fine if the loss is finite
            extreme = net.loss(start, 1e3 * X.astype(np.float64), Y)
        assert np.isfinite(extreme), f"loss {extreme} at inputs of 1e3\n{text}"


@_profile(6)
@given(valid_specs(max_depth=4, max_width=5), st.integers(1, 9), st.integers(1, 10))
def test_valid_specs_derive_prove_and_train_alike(text, examples, batch):
    check_valid_spec(text, examples, batch, long=False)


@pytest.mark.fuzz
@_profile(LONG["specs"], long=True)
@given(valid_specs(), st.integers(1, 40), st.integers(1, 48),
       st.integers(1, LONG["compiled_every"]))
def test_fuzz_valid_specs(text, examples, batch, draw):
    # numba compiles each spec's kernel (seconds): the compiled engine on one spec in N
    check_valid_spec(text, examples, batch, long=draw == 1)


# ----------------------------------------------------------------------------- invalid specs

BASE = {
    "name": "net", "input": 4,
    "layers": [{"units": 5, "activation": HIDDEN[0]},
               {"units": 3, "activation": next(o for o, _ in PAIRS if ACTIVATIONS[o].vector)}],
    "loss": next(loss for o, loss in PAIRS if ACTIVATIONS[o].vector),
    "regularization": {"l2": 0.001},
    "training": {"optimizer": STEP_RULE, "learning_rate": 0.1, "batch_size": 8, "epochs": 2},
    # a table's every option, so that mutations reach the data section's checks too
    "data": {"dataset": "csv:t.csv", "target": ["y1", "y2"], "drop": ["id"],
             "test": "csv:u.csv", "scaling": "minmax", "delimiter": ";",
             "missing": "median", "categorical": ["c"],
             "validation_fraction": 0.1, "split_seed": 3},
}
NAMES = st.sampled_from([*ACTIVATIONS.names(), *ACTIVATIONS.aliases(), *LOSSES.names(),
                         *LOSSES.aliases(), *OPTIMIZERS.names(), *DTYPES, *INITS])
VALUES = st.one_of(NAMES, st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                   st.lists(st.integers(-3, 3), max_size=3),
                   st.dictionaries(st.text(max_size=6), st.integers(), max_size=2))
NUMBER_TEXT = st.sampled_from(["010", "0x1F", "0o7", "1:00", "1_000", "5e3", "1e-400", "1e400",
                               ".inf", "-.inf", ".nan", "+1", "-0", "0b1", "1.", ".5", "yes",
                               "~", "''", "'3'", "!!int 3", "!!float x", "&a 3", "*a"])


def _places(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _places(value, path + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _places(value, path + (i,))


PLACES = [p for p in _places(BASE) if p]


@st.composite
def mutated_texts(draw):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    kind = draw(st.sampled_from(("value", "delete", "number", "text")))
    place = draw(st.sampled_from(PLACES))
    target = spec
    for key in place[:-1]:
        target = target[key]
    if kind == "value":
        target[place[-1]] = draw(VALUES)
    elif kind == "delete":
        del target[place[-1]]
    text = yaml.safe_dump(spec, sort_keys=False)
    if kind == "number":  # a scalar written as YAML 1.1 or 1.2 reads it differently
        lines = [i for i, line in enumerate(text.splitlines()) if ": " in line]
        index = draw(st.sampled_from(lines))
        rows = text.splitlines()
        rows[index] = rows[index].split(": ")[0] + ": " + draw(NUMBER_TEXT)
        text = "\n".join(rows) + "\n"
    if kind == "text":  # garbled text: a slice cut, doubled or replaced
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 30)))
        text = text[:a] + draw(st.sampled_from(("", text[a:b] * 2, draw(st.text(max_size=8))))) \
            + text[b:]
    return text


def check_invalid_text(text: str) -> None:
    try:
        assert isinstance(load_spec_text(text, "mutant.yaml"), NetSpec)
        event("spec: still valid")
    except SpecError as err:
        event("spec: refused with a located SpecError")
        assert err.file == "mutant.yaml"
        assert err.line is not None and err.line >= 1, f"no line: {err}\n---\n{text}"
        assert str(err).startswith("mutant.yaml:")


def check_invalid_through_the_command(text: str, tmp: Path, capsys) -> None:
    path = tmp / "mutant.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    status = main(["--spec", str(path), "--out", str(tmp / "out"), "-q", "--force"])
    err = capsys.readouterr().err
    assert status in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err
    if status == 2:
        assert err.startswith(f"derive: {path}:"), err


@_profile(120)
@given(mutated_texts())
def test_mutated_specs_are_specs_or_located_errors(text):
    check_invalid_text(text)


@_profile(8)
@given(mutated_texts())
def test_mutated_specs_through_the_command_exit_0_or_2(tmp_path_factory, capsys, text):
    check_invalid_through_the_command(text, tmp_path_factory.mktemp("mutant"), capsys)


@pytest.mark.fuzz
@_profile(LONG["invalid"], long=True)
@given(mutated_texts(), st.booleans())
def test_fuzz_invalid_specs(tmp_path_factory, capsys, text, command):
    check_invalid_text(text)
    if command:
        check_invalid_through_the_command(text, tmp_path_factory.mktemp("mutant"), capsys)


# ----------------------------------------------------------------------------- hostile files

GOOD_CSV = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n"


@st.composite
def hostile_csv(draw):
    text = GOOD_CSV
    for _ in range(draw(st.integers(1, 4))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 10)))
        piece = draw(st.one_of(st.text(max_size=10), st.sampled_from(
            ['"', '""', "\x00", "\r", ",,,,", "nan", "inf", "-1e400", "\ufeff", "\n\n"])))
        text = text[:a] + piece + text[b:]
    return text.encode("utf-8", errors="surrogatepass")


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                        for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@st.composite
def hostile_idx(draw):
    data = bytearray(_idx(np.zeros((draw(st.integers(0, 3)), 2, 2), np.uint8)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = bytes(data[:draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=6))
    return gzip.compress(data) if draw(st.booleans()) else data


# a table's data options (data.target, features, drop, delimiter, test, missing,
# categorical), some naming columns
# the file lacks; the hostile file is also its own test table
TABLE_OPTIONS = st.fixed_dictionaries({"target": st.sampled_from(
    ["label", ("label",), ("a", "label"), "zz"])}, optional={
    "delimiter": st.sampled_from([",", ";", "\t"]),
    "features": st.sampled_from([("a", "b"), ("b",), ("a", "zz")]),
    "drop": st.sampled_from([("a",), ("zz",)]),
    "test": st.just(True),
    "missing": st.sampled_from(["error", "drop", "mean", "median", "most_frequent"]),
    "categorical": st.sampled_from(["auto", ("a",), ("zz",), None]),
    "classes": st.sampled_from([True, False, None])})


def check_hostile_files(csv_bytes: bytes, idx_bytes: bytes, options: dict | None = None) -> None:
    options = dict(options or {"target": "label"})
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "data.csv"
        csv_path.write_bytes(csv_bytes)
        if options.pop("test", False):
            options["test"] = csv_path
        try:
            load_csv(csv_path, **options)
            event("csv: read")
        except DataError as err:
            event("csv: refused with a DataError")
            assert str(csv_path) in str(err)
        idx_path = Path(tmp) / "images"
        idx_path.write_bytes(idx_bytes)
        try:
            read_idx(idx_path)
            event("idx: read")
        except DataError as err:
            event("idx: refused with a DataError")
            assert str(idx_path) in str(err)


@_profile(60)
@given(hostile_csv(), hostile_idx(), TABLE_OPTIONS)
def test_hostile_data_files_are_data_or_a_data_error(csv_bytes, idx_bytes, options):
    check_hostile_files(csv_bytes, idx_bytes, options)


@pytest.mark.fuzz
@_profile(LONG["files"], long=True)
@given(hostile_csv(), hostile_idx(), TABLE_OPTIONS)
def test_fuzz_hostile_files(csv_bytes, idx_bytes, options):
    check_hostile_files(csv_bytes, idx_bytes, options)


# ----------------------------------------------------------------------------- damaged model files

ROOT = Path(__file__).resolve().parents[1]


def _good_model() -> tuple[object, bytes]:
    """A committed module and a model file of it (parameters, Adam's state, preprocessing)."""
    import io

    net = import_module_from(ROOT / "generated" / "shallow_relu_softmax.py")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 6)), np.arange(12) % 4
    trainer = net.Trainer(optimizer="adam", epochs=1, batch_size=4)
    trainer.fit(X, y)
    extra = {"preprocessing": {"divide_by": 1.0, "features": {"kind": "standard",
                                                             "mean": [0.5] * 6, "scale": [2.0] * 6},
                               "feature_names": list("abcdef"), "classes": list("wxyz"),
                               "targets": None, "target_names": ["animal"]}}
    out = io.BytesIO()
    trainer.save(out, extra=extra)
    return net, out.getvalue()


_GOOD_MODEL: list = []


def good_model() -> tuple[object, bytes]:
    if not _GOOD_MODEL:
        _GOOD_MODEL.extend(_good_model())
    return tuple(_GOOD_MODEL)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                        st.floats(allow_nan=True), st.text(max_size=5),
                        st.lists(st.integers(-3, 3), max_size=7))


def _edit_settings(draw, settings: dict) -> dict:
    """One key somewhere in the settings dropped or given another JSON value."""
    target = settings
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys:
            return settings
        key = draw(st.sampled_from(keys))
        if isinstance(target[key], (dict, list)) and target[key] and draw(st.booleans()):
            target = target[key]
            continue
        if isinstance(target, dict) and draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(JSON_VALUES)
        return settings


@st.composite
def damaged_models(draw) -> bytes:
    import io
    import json
    import zipfile

    data = good_model()[1]
    how = draw(st.sampled_from(["truncate", "flip", "member"]))
    event(f"model file: {how}")
    if how == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            flipped[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    name = draw(st.sampled_from(sorted(members)))
    edit = draw(st.sampled_from(["drop", "cut", "replace", "flip", "settings"]))
    if edit == "settings" or (edit == "replace" and name == "__settings__.npy"):
        settings = json.loads(str(np.load(io.BytesIO(members["__settings__.npy"]))))
        out = io.BytesIO()
        np.save(out, np.array(json.dumps(_edit_settings(draw, settings))))
        members["__settings__.npy"] = out.getvalue()
    elif edit == "drop":
        del members[name]
    elif edit == "cut":
        members[name] = members[name][:draw(st.integers(0, len(members[name])))]
    elif edit == "replace":
        out = io.BytesIO()
        shape = draw(st.lists(st.integers(0, 10), max_size=3))
        fill, dtype = draw(st.floats(allow_nan=True)), draw(st.sampled_from(["f4", "f8", "i8",
                                                                            "U3", "c8"]))
        with warnings.catch_warnings():  # NaN cast to an integer, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            np.save(out, np.full(shape, fill, dtype=dtype))
        members[name] = out.getvalue()
    else:
        flipped = bytearray(members[name])
        if flipped:
            flipped[draw(st.integers(0, len(flipped) - 1))] ^= 1 << draw(st.integers(0, 7))
        members[name] = bytes(flipped)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return out.getvalue()


def check_damaged_model(content: bytes) -> None:
    net = good_model()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        path.write_bytes(content)
        try:
            trainer = net.Trainer.load(path)
        except ValueError as err:
            assert type(err).__name__ == "ModelFileError", repr(err)
            assert str(path) in str(err)
            event("model file: refused with a ModelFileError")
            return
        event("model file: loaded")
        labels = trainer.predict(np.ones((2, 6)))
        assert len(labels) == 2


@_profile(60)
@given(damaged_models())
def test_damaged_model_files_load_or_are_one_error(content):
    check_damaged_model(content)


@pytest.mark.fuzz
@_profile(LONG["models"], long=True)
@given(damaged_models())
def test_fuzz_damaged_model_files(content):
    check_damaged_model(content)


def test_the_generator_covers_every_registry_name():
    """Every activation can be drawn hidden or as an output, every loss with some output."""
    outputs = {out for out, _ in PAIRS}
    assert set(HIDDEN) | outputs == set(ACTIVATIONS.names())
    assert {loss for _, loss in PAIRS} == set(LOSSES.names())
