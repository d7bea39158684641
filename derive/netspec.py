"""The typed network spec: what ``derive.spec.load_spec`` returns and the derivation reads."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ActivationSpec", "LayerSpec", "Regularization", "ScheduleSpec", "EarlyStopping",
           "TrainingSpec", "DataSpec", "NetSpec", "SCALINGS", "AUTO",
           "IMPUTATIONS", "MISSING_CHOICES"]


@dataclass(frozen=True)
class ActivationSpec:
    """An activation by canonical registry name, with its parameters (name, value) sorted."""

    name: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def param_dict(self) -> dict[str, float]:
        return dict(self.params)


AUTO = "auto"  # input: auto, and the last layer's units: auto: sizes taken from the data


@dataclass(frozen=True)
class LayerSpec:
    """Entry l of ``layers:``: its kind (derive.layers.LAYER_KINDS), width, activation (identity
    for a kind that takes none), the kind's options given other than their defaults (key,
    value) sorted, and ``skip``: the
    index K of an earlier layer whose output a_K is added to z_l (None: no skip)."""

    units: int  # AUTO (the last layer, until ``NetSpec.sized``) is taken from the data
    activation: ActivationSpec
    kind: str = "dense"
    options: tuple[tuple[str, object], ...] = ()
    skip: int | None = None
    image: tuple[int, int, int] | None = None  # the output's (C, H, W) where it is an image

    @property
    def option_dict(self) -> dict:
        return dict(self.options)

    @property
    def plain_dense(self) -> bool:
        """A dense layer with a bias and no skip: the documents' layer."""
        return self.kind == "dense" and self.option_dict.get("bias", True) and self.skip is None


@dataclass(frozen=True)
class Regularization:
    l1: float = 0.0
    l2: float = 0.0


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule by registry name (derive.optimizers.SCHEDULES), with its
    parameters (name, value) sorted."""

    name: str = "constant"
    params: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience``
    epochs; ``restore_best``: keep the best epoch's parameters."""

    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass(frozen=True)
class TrainingSpec:
    """The defaults of the generated Trainer.  ``optimizer`` is an update rule (a name in
    derive.optimizers.OPTIMIZERS); ``hyperparameters`` holds those the spec gives, by
    PyTorch's names; ``learning_rate`` None: the optimizer's default."""

    optimizer: str = "adam"
    learning_rate: float | None = None
    batch_size: int | str = 32  # an integer, or "full" (batch gradient descent)
    epochs: int = 200  # enough for Adam's small default rate on the bundled data sets
    shuffle: bool = True
    seed: int = 0
    hyperparameters: tuple[tuple[str, object], ...] = ()
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    early_stopping: EarlyStopping | None = None
    given: tuple[str, ...] = ()  # the keys the spec wrote (the rest are defaults)

    @property
    def hyperparameter_dict(self) -> dict:
        return dict(self.hyperparameters)


SCALINGS = ("standard", "minmax", "none")  # data.scaling: how the feature columns are scaled
# data.missing: what a missing cell of a table does; the last three fill it with a value fitted
# on the training part (a category column: its most frequent category, whichever is asked)
IMPUTATIONS = ("mean", "median", "most_frequent")
MISSING_CHOICES = ("error", "drop", *IMPUTATIONS)


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"  # a name in derive.datasets.DATASETS; a path kind as mnist:DIR
    test_fraction: float = 0.2  # 0: no test set (every example trains; no test figures)
    target: str | tuple[str, ...] | None = None  # csv: the label column, or the value columns
    validation_fraction: float = 0.1  # of the training part; 0: no validation set
    split_seed: int = 0  # the split's own seed, independent of training.seed
    features: tuple[str, ...] | None = None  # csv: the feature columns; None: all but the rest
    drop: tuple[str, ...] = ()  # csv: columns that are neither features nor targets (an id)
    test: str | None = None  # csv:PATH: a separate test table with the same columns
    scaling: str | None = None  # standard | minmax | none; None: the data set's own default
    delimiter: str = ","  # csv: the field separator (one character)
    missing: str = "error"  # csv: error | drop | mean | median | most_frequent
    categorical: str | tuple[str, ...] | None = None  # csv: auto | the category columns
    # field ("features[1]") -> its line in the spec, for messages; not part of the content
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def targets(self) -> tuple[str, ...]:
        """The target column(s) as a tuple: () without a target."""
        if self.target is None:
            return ()
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def line_of(self, field: str) -> int | None:
        """The spec's line of ``field`` (``features[1]``, ``target``), or of its list."""
        lines = dict(self.lines)
        return lines.get(field, lines.get(field.partition("[")[0]))


@dataclass(frozen=True)
class NetSpec:
    name: str
    input: int  # AUTO: the width of the encoded data, until ``sized``
    layers: tuple[LayerSpec, ...]
    loss: str  # canonical loss name
    regularization: Regularization = field(default_factory=Regularization)
    init: str | None = None  # he | xavier | normal | zeros; None: by activation
    dtype: str = "float32"
    training: TrainingSpec = field(default_factory=TrainingSpec)
    data: DataSpec | None = None
    source: str | None = None  # file the spec was read from, for messages
    notices: tuple[str, ...] = ()  # located notes for the user (an old spelling, and its new one)
    claims: str | None = None  # a claims file about this network (derive.claims), its path
    loss_params: tuple[tuple[str, float], ...] = ()  # the loss's parameters (name, value) sorted
    image: tuple[int, int, int] | None = None  # input: [C, H, W]: rows are images, NCHW flat

    def image_in(self, l: int) -> tuple[int, int, int] | None:
        """The (C, H, W) of layer l's input (1-based) where it is an image, else None."""
        return self.image if l == 1 else self.layers[l - 2].image

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.input, *(layer.units for layer in self.layers))

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def plain_dense(self) -> bool:
        """Every layer a dense one with a bias and no skip: the documents' networks, derived
        by the chain-rule recurrence of ``derive.derivation``; any other stack of layer kinds
        is derived from the kinds' declared forwards (``derive.graph``)."""
        return all(layer.plain_dense for layer in self.layers)

    @property
    def auto_sizes(self) -> bool:
        """Whether ``input`` or the last layer's ``units`` is ``auto`` (taken from the data)."""
        return self.input == AUTO or self.layers[-1].units == AUTO

    def sized(self, inputs: int, outputs: int) -> "NetSpec":
        """This spec with ``input: auto`` and the last layer's ``units: auto`` replaced by the
        data's sizes (the encoded feature columns; the classes or target columns)."""
        from dataclasses import replace

        layers = self.layers
        if layers[-1].units == AUTO:
            layers = (*layers[:-1], replace(layers[-1], units=outputs))
        return replace(self, input=inputs if self.input == AUTO else self.input, layers=layers)
