"""The spec reader: one test per rule, each checking the field, line, expectation and hint."""

from __future__ import annotations

import keyword
import pickle
import re
import subprocess
import sys
import textwrap

import pytest

from derive.datasets import DATASETS
from derive.errors import CheckFailed, SpecError
from derive.netspec import (ActivationSpec, DataSpec, EarlyStopping, LayerSpec, NetSpec,
                            Regularization, ScheduleSpec, TrainingSpec)
from derive.optimizers import OPTIMIZERS
from derive.spec import load_spec, load_spec_text
from derive.yamlread import did_you_mean, expected, nearest, number, read_document

DESIGN_EXAMPLE = """\
name: mnist_mlp                 # Python identifier -> DIR/mnist_mlp.py
input: 784                      # n_0
layers:                         # z_l = W_l a_{l-1} + b_l ;  a_l = g_l(z_l)
  - {units: 128, activation: relu}
  - {units: 64, activation: {name: leaky_relu, alpha: 0.1}}
  - {units: 10, activation: softmax}
loss: categorical_crossentropy
regularization: {l2: 0.0001}    # optional: l1 and/or l2 on weights (not biases)
init: he                        # optional: he | xavier | normal | zeros; default by activation
dtype: float32                  # dtype the trainer uses; proofs and checks use exact/float64
training:                       # defaults of the generated Trainer
  optimizer: adam               # the update rule: sgd | momentum | nesterov | adam | adamw | rmsprop
  learning_rate: 0.001
  betas: [0.9, 0.999]           # adam/adamw; momentum: 0.9 (momentum, nesterov); alpha: 0.99 (rmsprop)
  eps: 1.0e-8                   # adam/adamw/rmsprop; weight_decay: 0.01 (adamw, decoupled)
  batch_size: 32                # examples per update: an integer, or `full` (batch gradient descent)
  schedule: {name: cosine}      # optional: constant | step {step_size, gamma} | exponential {gamma} | cosine
  epochs: 30
  shuffle: true
  seed: 0                       # initialisation and shuffling
  early_stopping: {patience: 5, restore_best: true}   # optional; monitors the validation loss
data:                           # optional: what `derive --train` uses
  dataset: digits               # digits | iris | breast_cancer | diabetes | mnist:DIR | csv:PATH
  test_fraction: 0.2
  validation_fraction: 0.1      # taken from the training part; used by early stopping and reports
  split_seed: 0                 # the split's own seed, independent of training.seed
"""

# A small valid spec; line numbers below refer to it (line 1 is "name: net").
BASE = """\
name: net
input: 4
layers:
  - {units: 3, activation: relu}
  - {units: 2, activation: softmax}
loss: categorical_crossentropy
"""


def spec(text: str = BASE, extra: str = "") -> NetSpec:
    return load_spec_text(textwrap.dedent(text) + textwrap.dedent(extra), "net.yaml")


def error(text: str = BASE, extra: str = "") -> SpecError:
    with pytest.raises(SpecError) as info:
        spec(text, extra)
    return info.value


def with_layers(*layers: str, loss: str = "categorical_crossentropy") -> str:
    """BASE with its layer lines (lines 4, 5, ...) replaced."""
    rows = "".join(f"  - {layer}\n" for layer in layers)
    return f"name: net\ninput: 4\nlayers:\n{rows}loss: {loss}\n"


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


# ----------------------------------------------------------------------------- valid specs

def test_design_example_loads_to_the_expected_netspec(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(DESIGN_EXAMPLE.replace("leaky_relu, alpha: 0.1}}", "leaky_relu}}")
                    .replace("activation: relu}", "activation: silu}"))
    assert load_spec(path) == NetSpec(
        name="mnist_mlp",
        input=784,
        layers=(
            LayerSpec(128, ActivationSpec("swish")),  # alias silu -> swish
            LayerSpec(64, ActivationSpec("leaky_relu", (("alpha", 0.01),))),  # default filled
            LayerSpec(10, ActivationSpec("softmax")),
        ),
        loss="categorical_crossentropy",
        regularization=Regularization(l1=0.0, l2=0.0001),
        init="he",
        dtype="float32",
        training=TrainingSpec(
            "adam", 0.001, 32, 30, True, 0, (("betas", (0.9, 0.999)), ("eps", 1e-8)),
            ScheduleSpec("cosine"), EarlyStopping(5, 0.0, True),
            given=("optimizer", "learning_rate", "betas", "eps", "batch_size", "schedule",
                   "epochs", "shuffle", "seed", "early_stopping")),
        data=DataSpec("digits", 0.2, None, 0.1, 0),
        source=str(path),
    )


def test_design_example_verbatim():
    net = spec(DESIGN_EXAMPLE)
    assert net.layers[1].activation == ActivationSpec("leaky_relu", (("alpha", 0.1),))
    assert net.layer_sizes == (784, 128, 64, 10)


def test_defaults_of_a_minimal_spec():
    net = spec()
    assert net.regularization == Regularization(0.0, 0.0)
    assert (net.init, net.dtype, net.data, net.source) == (None, "float32", None, "net.yaml")
    assert net.training == TrainingSpec()


def test_types_and_aliases():
    net = spec(with_layers("{units: 3, activation: linear}",
                           "{units: 1, activation: {name: elu}}", loss="quadratic"),
               """\
               regularization: {l1: 0, l2: 1}
               training: {learning_rate: 1e-4}
               data: {dataset: "csv:data/x.csv", target: label}
               """)
    assert [layer.activation for layer in net.layers] == [
        ActivationSpec("identity"), ActivationSpec("elu", (("alpha", 1.0),))]
    assert net.loss == "mse"
    assert net.regularization == Regularization(0.0, 1.0)
    assert type(net.regularization.l1) is float
    assert net.training.learning_rate == 1e-4  # YAML 1.1 reads 1e-4 as text; accepted
    assert net.data == DataSpec("csv:data/x.csv", 0.2, "label")


def test_null_optional_sections_mean_defaults():
    net = spec(extra="init:\ntraining:\ndata:\nregularization:\n")
    assert (net.init, net.training, net.data) == (None, TrainingSpec(), None)


def test_anchors_and_aliases_are_plain_yaml():
    net = spec(with_layers("&act {units: 3, activation: {name: leaky_relu, alpha: 0.2}}",
                           "*act", loss="mse"))
    assert net.layers[0] == net.layers[1]


def test_mnist_dataset():
    assert spec(extra="data: {dataset: 'mnist:~/mnist'}").data.dataset == "mnist:~/mnist"


# ----------------------------------------------------------------------------- error format

def test_error_format():
    err = SpecError("unknown activation 'rleu' (expected one of: relu)", file="net.yaml",
                    line=7, field="layers[1].activation", hint="did you mean 'relu'?")
    assert str(err) == ("net.yaml:7: layers[1].activation: unknown activation 'rleu' "
                        "(expected one of: relu)\n  hint: did you mean 'relu'?")
    assert str(SpecError("cannot read", file="x.yaml")) == "x.yaml: cannot read"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.line, copy.field, copy.hint) == ("net.yaml", 7, err.field, err.hint)
    assert issubclass(CheckFailed, Exception)


# ----------------------------------------------------------------------------- files and YAML

def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}: cannot read the spec")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(path)


def test_file_errors_carry_the_file_name(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(BASE.replace("units: 3", "units: 0"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert (info.value.file, info.value.line) == (str(path), 4)


def test_yaml_syntax_error_has_line():
    err = error("name: net\ninput: 4\nlayers: [{units: 3\nloss: mse\n")
    assert err.line == 4 and err.field == ""
    assert "invalid YAML" in err.message


def test_tab_indentation_hint():
    err = error("name: net\ntraining:\n\tseed: 1\n")
    assert err.line == 3 and "tabs" in err.hint


def test_python_tags_are_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    err = error(extra=f'init: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert not marker.exists()
    assert (err.line, err.field) == (7, "init")
    assert "tags are not allowed" in err.message and "read safely" in err.message
    assert "!!python/object/apply:os.system" in err.message


@pytest.mark.parametrize("value", ["!!python/name:os.system", "!custom 3", "!!binary aGk=",
                                   "!!set {a}"])
def test_other_tags_are_refused(value):
    err = error(extra=f"init: {value}\n")
    assert err.line == 7 and "tags are not allowed" in err.message


def test_tagged_top_level_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    err = error(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    assert not marker.exists() and "tags are not allowed" in err.message


@pytest.mark.parametrize("value", ["!!int abc", "!!float x", "!!bool maybe"])
def test_explicit_standard_tag_with_a_bad_value(value):
    err = error(extra=f"init: {value}\n")
    assert (err.line, err.field) == (7, "init") and "cannot be read as" in err.message


def test_control_character():
    err = error(extra="init: he\x00\n")
    assert err.line == 7 and "invalid YAML" in err.message


def test_duplicate_key():
    err = error(extra="loss: mse\n")
    assert (err.line, err.field) == (7, "loss")
    assert "duplicate key 'loss'" in err.message and "line 6" in err.message


def test_duplicate_key_in_a_layer():
    err = error(with_layers("{units: 3, units: 4, activation: relu}",
                            "{units: 2, activation: softmax}"))
    assert (err.line, err.field) == (4, "layers[0].units")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(text):
    err = error(text)
    assert "empty" in err.message and "name, input, layers, loss" in err.message


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just text\n"])
def test_top_level_must_be_a_mapping(text):
    err = error(text)
    assert err.line == 1 and "expected a spec: a mapping" in err.message


def test_multiple_documents():
    err = error(BASE + "---\nname: other\n")
    assert err.line == 7 and "single document" in err.message


def test_recursive_alias():
    err = error(extra="training: &t [*t]\n")
    assert "alias" in err.message


def test_alias_bomb_is_bounded():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefg", "bcdefgh")]
    err = error("\n".join(lines) + "\n")
    assert "more than" in err.message and "values" in err.message


def test_non_string_key():
    err = error(extra="true: 1\n")
    assert err.line == 7 and "key name" in err.message and "boolean" in err.message


def test_merge_keys_are_refused():
    err = error(extra="<<: {init: he}\n")
    assert err.line == 7 and "merge keys" in err.message


def test_reader_keeps_lines_and_field_paths():
    root = read_document("a: 1\nb:\n  - {c: x}\n  - 1e-4\n", "empty")
    c = root.value["b"].value[0].value["c"]
    assert (c.value, c.line, c.key_line, c.path) == ("x", 3, 3, "b[0].c")
    exponent = root.value["b"].value[1]
    assert exponent.value == 1e-4  # YAML 1.2 reads it as a number (YAML 1.1: as text)
    assert number(exponent) == 1e-4 and number(c) is None


def test_reader_messages_name_the_field_and_the_nearest_name():
    item = read_document("key: true\n", "empty").value["key"]
    err = expected(item, "a number", did_you_mean("Relu", ["sigmoid", "relu"]))
    assert (err.line, err.field, err.message, err.hint) == (
        1, "key", "expected a number, got true (a boolean)", "did you mean 'relu'?")
    assert nearest("sigmod", ["sigmoid", "tanh"]) == "sigmoid"
    assert did_you_mean("zzz", ["sigmoid"]) is None


def test_example_values_are_read_by_the_same_reader(tmp_path):
    """Tags are refused in the worked example's values file too, at their line."""
    from derive.derivation import derive
    from derive.latex.example import load_example_text

    marker = tmp_path / "pwned"
    d = derive(spec())
    with pytest.raises(SpecError) as info:
        load_example_text(f'W1: !!python/object/apply:os.system ["touch {marker}"]\n', d,
                          "values.yaml")
    assert not marker.exists()
    assert (info.value.file, info.value.line, info.value.field) == ("values.yaml", 1, "W1")
    assert "tags are not allowed" in info.value.message


# ----------------------------------------------------------------------------- keys

def test_unknown_top_level_key():
    err = error(extra="trainig: {epochs: 3}\n")
    assert (err.line, err.field) == (7, "trainig")
    assert "unknown key 'trainig'" in err.message and "training" in err.message
    assert err.hint == "did you mean 'training'?"


def test_unknown_key_in_a_layer():
    err = error(with_layers("{units: 3, activation: relu}", "{unit: 2, activation: softmax}"))
    assert (err.line, err.field) == (5, "layers[1].unit")
    assert "expected one of: units, activation" in err.message
    assert err.hint == "did you mean 'units'?"


def test_unknown_key_in_training_block_style():
    err = error(extra="training:\n  epochs: 3\n  lerning_rate: 0.5\n")
    assert (err.line, err.field) == (9, "training.lerning_rate")
    assert err.hint == "did you mean 'learning_rate'?"


@pytest.mark.parametrize("key", ["name", "input", "layers", "loss"])
def test_required_top_level_keys(key):
    text = "".join(line + "\n" for line in BASE.splitlines()
                   if not line.startswith(key) and not (key == "layers" and line.startswith(" ")))
    err = error(text)
    assert err.field == key and err.line == 1
    assert f"missing required key {key!r}" in err.message


def test_layer_needs_units_and_takes_identity_without_activation():
    err = error(with_layers("{activation: relu}", "{units: 2, activation: softmax}"))
    assert (err.line, err.field) == (4, "layers[0].units")
    assert "missing required key 'units'" in err.message
    spec = load_spec_text(with_layers("{units: 3}", "{units: 2, activation: softmax}"))
    assert spec.layers[0].activation.name == "identity"  # as torch.nn.Linear: no activation


# ----------------------------------------------------------------------------- name

@pytest.mark.parametrize("name, why, hint", [
    ("class", "keyword", "try 'class_net'"),
    ("match", "keyword", "try 'match_net'"),  # soft keyword
    ("my-net", "not a Python identifier", "try 'my_net'"),
    ("3layers", "not a Python identifier", "try 'net_3layers'"),
    ("'12'", "not a Python identifier", "try 'net_12'"),
    ("réseau", "not a Python identifier", "try 'r_seau'"),
    ("__init__", "reserved", "try 'init'"),
    ("n" * 101, "longer than 100", f"try {'n' * 100!r}"),
])
def test_bad_names(name, why, hint):
    err = error(replace("name: net", f"name: {name}"))
    assert (err.line, err.field) == (1, "name")
    assert why in err.message and "expected a Python identifier" in err.message
    assert err.hint == hint


@pytest.mark.parametrize("value, shown", [("12", "12"), ("[a]", "a list"), ("", "null")])
def test_name_must_be_a_string(value, shown):
    err = error(replace("name: net", f"name: {value}"))
    assert err.field == "name" and shown in err.message


def test_good_names():
    for name in ("_private", "Net2", "x"):
        assert spec(replace("name: net", f"name: {name}")).name == name


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("value, shown", [
    ("0", "got 0"), ("-3", "got -3"), ("3.5", "got 3.5"), ("4.0", "got 4.0"),
    ("true", "true (a boolean)"), ("1000000", "got 1000000"), ("'3'", "'3' (a string)"),
    ("1e3", "got 1e3"), ("[3]", "a list"),
])
def test_bad_units(value, shown):
    err = error(replace("units: 3", f"units: {value}"))
    assert (err.line, err.field) == (4, "layers[0].units")
    assert "expected a whole number from 1 to 100000" in err.message and shown in err.message


@pytest.mark.parametrize("value", ["0", "100001", "2.0", "false"])
def test_bad_input(value):
    err = error(replace("input: 4", f"input: {value}"))
    assert (err.line, err.field) == (2, "input") and "whole number" in err.message


def test_largest_sizes_accepted():
    assert spec(replace("input: 4", "input: 100000")).input == 100000


@pytest.mark.parametrize("value, shown", [("[]", "an empty list"), ("{units: 3}", "a mapping"),
                                          ("relu", "a string")])
def test_layers_must_be_a_non_empty_list(value, shown):
    err = error(f"name: net\ninput: 4\nlayers: {value}\nloss: mse\n")
    assert (err.line, err.field) == (3, "layers")
    assert "non-empty list of layers" in err.message and shown in err.message


def test_too_many_layers():
    err = error(with_layers(*["{units: 1, activation: relu}"] * 1001, loss="mse"))
    assert (err.line, err.field) == (3, "layers") and "at most 1000 layers" in err.message


def test_layer_must_be_a_mapping():
    err = error(with_layers("relu", "{units: 2, activation: softmax}"))
    assert (err.line, err.field) == (4, "layers[0]")
    assert "a layer: a mapping such as {units: 10, activation: relu}" in err.message


# ----------------------------------------------------------------------------- activations

def test_misspelt_activation():
    err = error(replace("activation: relu", "activation: rleu"))
    assert (err.line, err.field) == (4, "layers[0].activation")
    assert "unknown activation 'rleu'" in err.message
    assert "expected one of: identity, sigmoid" in err.message
    assert err.hint == "did you mean 'relu'?"
    assert str(err).startswith("net.yaml:4: layers[0].activation: unknown activation 'rleu'")
    assert str(err).endswith("\n  hint: did you mean 'relu'?")


def test_names_are_case_insensitive_with_the_canonical_spelling_kept():
    net = spec(replace("activation: relu", "activation: ReLU"))
    assert net.layers[0].activation.name == "relu"


def test_misspelt_activation_in_mapping_form():
    err = error(replace("activation: relu", "activation: {name: leaky_rlu}"))
    assert (err.line, err.field) == (4, "layers[0].activation.name")
    assert err.hint == "did you mean 'leaky_relu'?"


@pytest.mark.parametrize("name", ["sign", "step", "heaviside"])
def test_refused_activations(name):
    err = error(replace("activation: relu", f"activation: {name}"))
    assert (err.line, err.field) == (4, "layers[0].activation")
    assert f"activation {name!r} cannot be used" in err.message
    assert "derivative is zero almost everywhere" in err.message


def test_activation_of_wrong_type():
    err = error(replace("activation: relu", "activation: 3"))
    assert err.field == "layers[0].activation" and "an activation name" in err.message


def test_activation_mapping_needs_a_name():
    err = error(replace("activation: relu", "activation: {alpha: 0.1}"))
    assert (err.line, err.field) == (4, "layers[0].activation.name")
    assert "missing required key 'name'" in err.message


@pytest.mark.parametrize("value, shown", [("1.5", "got 1.5"), ("abc", "'abc' (a string)"),
                                          ("0", "got 0"), ("true", "(a boolean)"),
                                          (".nan", "not a finite number")])
def test_bad_leaky_relu_alpha(value, shown):
    err = error(replace("activation: relu", f"activation: {{name: leaky_relu, alpha: {value}}}"))
    assert (err.line, err.field) == (4, "layers[0].activation.alpha")
    assert "expected a number with 0 < alpha < 1" in err.message and shown in err.message


def test_bad_elu_alpha_block_style():
    text = with_layers("{units: 3, activation: relu}", "{units: 2, activation: softmax}")
    text = text.replace("  - {units: 3, activation: relu}\n",
                        "  - units: 3\n    activation:\n      name: elu\n      alpha: -1\n")
    err = error(text)
    assert (err.line, err.field) == (7, "layers[0].activation.alpha")
    assert "a positive number" in err.message


def test_unknown_activation_parameter():
    err = error(replace("activation: relu", "activation: {name: leaky_relu, alhpa: 0.2}"))
    assert (err.line, err.field) == (4, "layers[0].activation.alhpa")
    assert "unknown parameter 'alhpa' of leaky_relu" in err.message
    assert err.hint == "did you mean 'alpha'?"


def test_parameter_of_an_activation_without_parameters():
    err = error(replace("activation: relu", "activation: {name: relu, alpha: 0.2}"))
    assert err.field == "layers[0].activation.alpha" and "takes no parameters" in err.message


def test_softmax_in_a_hidden_layer():
    err = error(with_layers("{units: 3, activation: softmax}", "{units: 2, activation: softmax}"))
    assert (err.line, err.field) == (4, "layers[0].activation")
    assert "only allowed on the last layer" in err.message


def test_softmax_of_one_unit():
    err = error(with_layers("{units: 3, activation: relu}", "{units: 1, activation: softmax}",
                            loss="binary_crossentropy"))
    assert (err.line, err.field) == (5, "layers[1].activation")
    assert "always 1" in err.message and "sigmoid" in err.hint


# ----------------------------------------------------------------------------- loss

def test_misspelt_loss():
    err = error(replace("loss: categorical_crossentropy", "loss: categorial_crossentropy"))
    assert (err.line, err.field) == (6, "loss")
    assert "unknown loss 'categorial_crossentropy'" in err.message and "mse" in err.message
    assert err.hint == "did you mean 'categorical_crossentropy'?"


def test_binary_crossentropy_on_relu_output():
    err = error(with_layers("{units: 3, activation: relu}", "{units: 1, activation: relu}",
                            loss="binary_crossentropy"))
    assert (err.line, err.field) == (6, "loss")
    assert "binary_crossentropy needs outputs in (0, 1)" in err.message
    assert "'relu'" in err.message and "use sigmoid or softmax" in err.message
    assert "sigmoid" in err.hint


def test_categorical_crossentropy_on_identity_output_via_alias():
    err = error(with_layers("{units: 3, activation: relu}", "{units: 2, activation: linear}",
                            loss="cross_entropy"))
    assert err.field == "loss" and "categorical_crossentropy needs outputs in (0, 1)" in err.message
    assert "softmax" in err.hint


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_categorical_loss_with_one_output_unit(loss):
    err = error(with_layers("{units: 3, activation: relu}", "{units: 1, activation: sigmoid}",
                            loss=loss))
    assert (err.line, err.field) == (6, "loss")
    assert "at least 2" in err.message and "binary_crossentropy" in err.hint


def test_cross_entropy_on_probability_outputs_is_fine():
    net = spec(with_layers("{units: 3, activation: relu}", "{units: 1, activation: sigmoid}",
                           loss="bce"))
    assert net.loss == "binary_crossentropy"


REGRESSION = ("{units: 3, activation: relu}", "{units: 2, activation: identity}")


@pytest.mark.parametrize("written, name, params", [
    ("huber", "huber", (("delta", 1.0),)),  # the default filled, as an activation's
    ("{name: huber, delta: 2.5}", "huber", (("delta", 2.5),)),
    ("{name: Huber_Loss, delta: 1e-3}", "huber", (("delta", 0.001),)),
    ("MAE", "mae", ()), ("{name: l1}", "mae", ()), ("mean_absolute_error", "mae", ()),
    ("mse", "mse", ()),
])
def test_loss_with_its_parameters(written, name, params):
    net = spec(with_layers(*REGRESSION, loss=written))
    assert (net.loss, net.loss_params) == (name, params)


def test_huber_in_block_style():
    net = spec(with_layers(*REGRESSION, loss="\n  name: huber\n  delta: 0.5"))
    assert net.loss_params == (("delta", 0.5),)


@pytest.mark.parametrize("value, shown", [("0", "got 0"), ("-1", "got -1"),
                                          ("abc", "'abc' (a string)"), ("true", "(a boolean)"),
                                          (".inf", "not a finite number"), ("[1]", "a list")])
def test_bad_huber_delta(value, shown):
    err = error(with_layers(*REGRESSION, loss=f"{{name: huber, delta: {value}}}"))
    assert (err.line, err.field) == (6, "loss.delta")
    assert "expected a finite number > 0" in err.message and shown in err.message


def test_unknown_loss_parameter():
    err = error(with_layers(*REGRESSION, loss="{name: huber, delat: 2}"))
    assert (err.line, err.field) == (6, "loss.delat")
    assert "unknown parameter 'delat' of huber (its parameters are: delta)" in err.message
    assert err.hint == "did you mean 'delta'?"


def test_parameter_of_a_loss_without_parameters():
    err = error(with_layers(*REGRESSION, loss="{name: mae, delta: 1}"))
    assert err.field == "loss.delta"
    assert "unknown parameter 'delta' of mae (it takes no parameters)" in err.message


def test_loss_mapping_needs_a_name():
    err = error(with_layers(*REGRESSION, loss="{delta: 1}"))
    assert (err.line, err.field) == (6, "loss.name")
    assert "{name: huber, delta: 1.0}" in err.message


def test_loss_of_wrong_type():
    err = error(with_layers(*REGRESSION, loss="3"))
    assert err.field == "loss" and "a loss name such as mse" in err.message


def test_misspelt_loss_in_mapping_form():
    err = error(with_layers(*REGRESSION, loss="{name: hubber, delta: 2}"))
    assert (err.line, err.field) == (6, "loss.name") and err.hint == "did you mean 'huber'?"


# ----------------------------------------------------------------------------- sections

def test_bad_init():
    err = error(extra="init: xavir\n")
    assert (err.line, err.field) == (7, "init")
    assert "he, xavier, normal, zeros" in err.message and err.hint == "did you mean 'xavier'?"


def test_bad_dtype():
    err = error(extra="dtype: float16\n")
    assert (err.line, err.field) == (7, "dtype") and "float32, float64" in err.message


@pytest.mark.parametrize("value, shown", [("-0.1", "got -0.1"), (".inf", "not a finite number"),
                                          ("abc", "(a string)")])
def test_bad_regularization(value, shown):
    err = error(extra=f"regularization:\n  l1: 0\n  l2: {value}\n")
    assert (err.line, err.field) == (9, "regularization.l2")
    assert "a finite number >= 0" in err.message and shown in err.message


def test_section_must_be_a_mapping():
    err = error(extra="training: 3\n")
    assert (err.line, err.field) == (7, "training") and "expected a mapping" in err.message


@pytest.mark.parametrize("value, shown", [(".nan", "not a finite number"), ("0", "got 0"),
                                          ("-1", "got -1"), ("1001", "got 1001"),
                                          ("fast", "(a string)")])
def test_bad_learning_rate(value, shown):
    err = error(extra=f"training:\n  learning_rate: {value}\n")
    assert (err.line, err.field) == (8, "training.learning_rate")
    assert "a finite number > 0 and <= 1000" in err.message and shown in err.message


def test_bad_optimizer():
    err = error(extra="training: {optimizer: adamm}\n")
    assert (err.line, err.field) == (7, "training.optimizer")
    assert ", ".join(OPTIMIZERS.names()) in err.message and err.hint == "did you mean 'adam'?"


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_update_rule_is_an_optimizer(name):
    assert spec(extra=f"training: {{optimizer: {name}}}\n").training.optimizer == name


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", "0", "from 1 to 10000000"), ("batch_size", "64.0", "from 1 to 10000000"),
    ("epochs", "1000001", "from 1 to 1000000"), ("seed", "-1", "from 0 to 4294967295"),
    ("seed", "4294967296", "from 0 to 4294967295"),
    ("shuffle", "1", "true or false"), ("shuffle", "'true'", "true or false"),
    ("shuffle", "yes", "true or false"),
])
def test_bad_training_values(key, value, expected):
    err = error(extra=f"training:\n  {key}: {value}\n")
    assert (err.line, err.field) == (8, f"training.{key}") and expected in err.message


@pytest.mark.parametrize("value", ["1.0", "-0.5", ".nan"])
def test_bad_test_fraction(value):
    err = error(extra=f"data:\n  dataset: iris\n  test_fraction: {value}\n")
    assert (err.line, err.field) == (9, "data.test_fraction")
    assert "0 <= test_fraction < 1 (0: no test set)" in err.message


def test_csv_needs_a_target():
    err = error(extra="data:\n  dataset: csv:data.csv\n")
    assert (err.line, err.field) == (7, "data.target")  # the line of "data:"
    assert "missing required key 'target'" in err.message


def test_target_only_for_csv():
    err = error(extra="data:\n  dataset: iris\n  target: label\n")
    assert (err.line, err.field) == (9, "data.target") and "only used with csv:" in err.message


@pytest.mark.parametrize("value, message, hint", [
    ("irsi", "unknown dataset 'irsi'", "did you mean 'iris'?"),
    ("mnist", "needs a path", None),
    ("'csv:'", "needs a path after the colon", None),
    ("'cvs:x.csv'", "unknown dataset kind 'cvs'", "did you mean 'csv:x.csv'?"),
    ("3", "expected a dataset", None),
])
def test_bad_dataset(value, message, hint):
    err = error(extra=f"data:\n  dataset: {value}\n")
    assert (err.line, err.field) == (8, "data.dataset")
    assert message in err.message and err.hint == hint


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_declared_dataset_is_accepted(name):
    declaration = DATASETS[name]
    value = f"{name}:some/place" if declaration.path else name
    extra = "  target: label\n" if declaration.takes_target else ""
    data = spec(extra=f"data:\n  dataset: {value}\n{extra}").data
    assert data.dataset == value
    if declaration.path:  # a path kind without its path is told how it is written
        err = error(extra=f"data:\n  dataset: {name}\n")
        assert declaration.written in err.message


def test_a_dataset_near_no_name_is_told_what_each_holds():
    err = error(extra="data:\n  dataset: zzzz\n")
    assert "unknown dataset 'zzzz'" in err.message
    for name in DATASETS:
        assert f"{DATASETS[name].written} ({DATASETS[name].description})" in err.hint


def test_reading_a_spec_imports_no_data_library():
    """The data sets' loaders are imported only to load: a spec is checked without them."""
    code = ("import sys; from derive.spec import load_spec_text; "
            f"load_spec_text({BASE + 'data: {dataset: iris}' + chr(10)!r}); "
            "print(sorted(m for m in ('sklearn', 'derive.training.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_unknown_data_key():
    err = error(extra="data: {datset: iris}\n")
    assert (err.line, err.field) == (7, "data.datset") and err.hint == "did you mean 'dataset'?"


def test_softmax_with_binary_crossentropy_is_refused_with_the_reason():
    text = ("name: net\ninput: 3\nlayers:\n  - {units: 4, activation: relu}\n"
            "  - {units: 3, activation: softmax}\nloss: binary_crossentropy\n")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "net.yaml")
    err = info.value
    assert err.line == 6 and err.field == "loss"
    assert "independent" in err.message and "softmax" in err.message
    assert "categorical_crossentropy" in err.hint


# ----------------------------------------------------------------------------- YAML 1.2 numbers

@pytest.mark.parametrize("written, message", [
    ("010", "leading zero"), ("0x10", "hexadecimal number"), ("0o10", "octal number"),
    ("0b101", "binary number"), ("-0x1F", "it is -31 in decimal"),
])
def test_numbers_another_yaml_reads_differently_are_refused(written, message):
    err = error(replace("units: 3,", f"units: {written},"))
    assert (err.line, err.field) == (4, "layers[0].units") and message in err.message


@pytest.mark.parametrize("key, written", [("epochs", "1:00"), ("epochs", "1_000"),
                                          ("batch_size", "1:30:00")])
def test_yaml11_sexagesimal_and_underscores_are_text_with_a_hint(key, written):
    err = error(extra=f"training:\n  {key}: {written}\n")
    assert (err.line, err.field) == (8, f"training.{key}")
    assert f"got '{written}' (a string)" in err.message and "YAML 1.2" in err.hint


@pytest.mark.parametrize("written, value", [("5e3", 5000.0), ("5E-3", 0.005), ("+1e-2", 0.01),
                                            (".5", 0.5), ("1.", 1.0), ("2", 2.0)])
def test_exponent_and_short_forms_are_numbers(written, value):
    assert spec(extra=f"regularization: {{l2: {written}}}\n").regularization.l2 == value


def test_a_number_that_underflows_is_refused_not_zero():
    err = error(extra="regularization: {l2: 1e-400}\n")
    assert err.field == "regularization.l2" and "too small" in err.message


def test_a_whole_number_in_exponent_form_is_told_how_to_write_it():
    err = error(replace("units: 3,", "units: 5e3,"))
    assert "whole number" in err.message and err.hint == "write 5000"


@pytest.mark.parametrize("written", ["yes", "on", "No", "off"])
def test_yaml11_booleans_are_text(written):
    err = error(extra=f"training:\n  shuffle: {written}\n")
    assert f"got '{written}' (a string)" in err.message
    assert spec(replace("name: net", f"name: {written}")).name == written


# ----------------------------------------------------------------------------- shadowing names

def _dependency_modules():
    """Import names of the tool's declared dependencies that are installed here."""
    import importlib.metadata

    from derive.shadowed import DISTRIBUTION

    wanted = {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-")
              for r in importlib.metadata.distribution(DISTRIBUTION).requires or ()}
    return sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                  if not module.startswith("_")
                  and any(d.lower().replace("_", "-") in wanted for d in dists))


@pytest.mark.parametrize("name", sorted({"json", "os", "site", "sys", "random", "math",
                                         "typing", "types", *_dependency_modules(),
                                         "derive", "codegen"}))
def test_names_that_shadow_a_module_are_refused_with_the_reason(name):
    err = error(replace("name: net", f"name: {name}"))
    assert (err.line, err.field) == (1, "name")
    assert "hides it" in err.message and f"'import {name}'" in err.message
    assert err.hint == f"try '{name}_net'"


def test_every_standard_library_module_is_refused():
    for name in sorted(sys.stdlib_module_names):
        if name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__"):
            assert "standard library" in error(replace("name: net", f"name: {name}")).message


def test_names_near_a_module_are_fine():
    for name in ("json_net", "numpy_mlp", "my_os", "net"):
        assert spec(replace("name: net", f"name: {name}")).name == name


def test_sigmoid_outputs_with_categorical_cross_entropy_are_warned_at_the_loss_line():
    text = """\
name: multi
input: 4
layers:
  - {units: 3, activation: sigmoid}
loss: categorical_crossentropy
"""
    spec = load_spec_text(text, "multi.yaml")
    assert len(spec.notices) == 1
    notice = spec.notices[0]
    assert notice.startswith("multi.yaml:5: loss:") and "softmax" in notice
    for fine in (text.replace("sigmoid", "softmax"),
                 text.replace("categorical_crossentropy", "binary_crossentropy")):
        assert load_spec_text(fine, "multi.yaml").notices == ()


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 5000, "1." + "9" * 5000,
                                    "0x" + "f" * 5000, "0" + "7" * 5000])
def test_a_number_of_thousands_of_digits_is_a_located_error(number):
    text = f"name: n\ninput: {number}\nlayers:\n  - {{units: 2, activation: softmax}}\n" \
           "loss: categorical_crossentropy\n"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "n.yaml")
    assert str(info.value).startswith("n.yaml:2: input: a number of") and "at most 400" in str(info.value)
