"""The typed network spec: what ``derive.spec.load_spec`` returns and the derivation reads."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ActivationSpec", "LayerSpec", "Regularization", "TrainingSpec", "DataSpec", "NetSpec"]


@dataclass(frozen=True)
class ActivationSpec:
    """An activation by canonical registry name, with its parameters (name, value) sorted."""

    name: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def param_dict(self) -> dict[str, float]:
        return dict(self.params)


@dataclass(frozen=True)
class LayerSpec:
    units: int
    activation: ActivationSpec


@dataclass(frozen=True)
class Regularization:
    l1: float = 0.0
    l2: float = 0.0


@dataclass(frozen=True)
class TrainingSpec:
    optimizer: str = "minibatch"  # a batching scheme: a name in derive.optimizers.BATCHING
    learning_rate: float = 0.1
    batch_size: int = 64
    epochs: int = 10
    shuffle: bool = True
    seed: int = 0


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"  # a name in derive.datasets.DATASETS; a path kind as mnist:DIR
    test_fraction: float = 0.2
    target: str | None = None  # csv: the label column


@dataclass(frozen=True)
class NetSpec:
    name: str
    input: int
    layers: tuple[LayerSpec, ...]
    loss: str  # canonical loss name
    regularization: Regularization = field(default_factory=Regularization)
    init: str | None = None  # he | xavier | normal | zeros; None: by activation
    dtype: str = "float32"
    training: TrainingSpec = field(default_factory=TrainingSpec)
    data: DataSpec | None = None
    source: str | None = None  # file the spec was read from, for messages
    claims: str | None = None  # a claims file about this network (derive.claims), its path

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.input, *(layer.units for layer in self.layers))

    @property
    def depth(self) -> int:
        return len(self.layers)
