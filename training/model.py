"""The screening CNN: a small residual network on one grey slice, built from a saved config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import keras
from keras import layers

from training.card import known_settings

FEATURES = "pooled_features"  # the pooled features before the classifier (read by training.domain)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; stored in the card so the network can be rebuilt from the file alone."""

    arch: str = "resnet"  # "resnet" (shipped) or "seed" (the seed notebook's 3-layer CNN, baseline)
    input_size: int = 160  # preprocessing output side; 160 px keeps small lesions visible
    stem_width: int = 24  # strided 3x3 stem: halves resolution before any costly layer
    widths: tuple[int, ...] = (32, 64, 128, 192)  # one stage per width, each halves resolution
    blocks: tuple[int, ...] = (1, 1, 2, 1)  # residual blocks per stage
    separable_from: int = 1  # stages from this index use depthwise-separable convolutions
    squeeze_excite: bool = True  # channel attention: cheap, helps contrast-defined lesions
    dropout: float = 0.3  # before the classifier; the data set is small
    weight_decay: float = 1e-4
    flip_tta: bool = False  # serve the mean of P(slice) and P(mirrored slice): 2x inference cost
    members: int = 1  # networks trained apart (re-seeded) and served as one graph averaging them
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"], data["blocks"] = list(self.widths), list(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = known_settings(cls, data, "architecture")
        for key in ("widths", "blocks"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def _conv(x: Any, width: int, stride: int, separable: bool, decay: float) -> Any:
    reg = keras.regularizers.L2(decay) if decay else None
    if separable:
        x = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, depthwise_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        return layers.Conv2D(width, 1, use_bias=False, kernel_regularizer=reg)(x)
    return layers.Conv2D(width, 3, stride, padding="same", use_bias=False, kernel_regularizer=reg)(x)


def _squeeze_excite(x: Any, width: int) -> Any:
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(max(8, width // 8), 1, activation="relu")(s)
    s = layers.Conv2D(width, 1, activation="sigmoid")(s)
    return layers.Multiply()([x, s])


def _block(x: Any, width: int, stride: int, cfg: ModelConfig, separable: bool) -> Any:
    shortcut = x
    y = _conv(x, width, stride, separable, cfg.weight_decay)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = _conv(y, width, 1, separable, cfg.weight_decay)
    y = layers.BatchNormalization()(y)
    if cfg.squeeze_excite:
        y = _squeeze_excite(y, width)
    if stride != 1 or shortcut.shape[-1] != width:
        if stride != 1:
            shortcut = layers.AveragePooling2D(stride, padding="same")(shortcut)
        shortcut = layers.Conv2D(width, 1, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_model(cfg: ModelConfig) -> keras.Model:
    """Input: uint8 (size, size, 1) preprocessed slices. Output: P(tumour), shape (batch, 1).
    With members > 1, that many networks side by side and the mean of their probabilities; each
    member is trained on its own (`training.train.fit`) and its weights copied in."""
    if cfg.members < 1:
        raise ValueError(f"members must be >= 1, not {cfg.members}")
    if cfg.members == 1:
        return _network(cfg)
    inputs = keras.Input((cfg.input_size, cfg.input_size, 1), dtype="uint8", name="slice")
    nets = [_network(cfg, name=f"member_{i}") for i in range(cfg.members)]
    mean = layers.Average(name="tumour", dtype="float32")([net(inputs) for net in nets])
    return keras.Model(inputs, mean, name=f"brainscan_ensemble_{cfg.members}")


def _network(cfg: ModelConfig, name: str | None = None) -> keras.Model:
    inputs = keras.Input((cfg.input_size, cfg.input_size, 1), dtype="uint8", name="slice")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(layers.Identity(dtype="float32")(inputs))
    if cfg.arch == "seed":
        return _seed_network(inputs, x, name or "seed_cnn")
    if cfg.arch != "resnet":
        raise ValueError(f"unknown architecture {cfg.arch!r}")
    x = layers.Conv2D(cfg.stem_width, 3, 2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for stage, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
        separable = stage >= cfg.separable_from
        for i in range(count):
            x = _block(x, width, 2 if i == 0 else 1, cfg, separable)
    x = layers.GlobalAveragePooling2D(name=FEATURES)(x)
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="tumour", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or "brainscan_cnn")


def _seed_network(inputs: Any, x: Any, name: str) -> keras.Model:
    """The seed notebook's network: three conv/pool layers, a dense layer, dropout."""
    for width in (32, 64, 128):
        x = layers.Conv2D(width, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="tumour", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="brainscan")
class MirrorLeftRight(layers.Layer):
    """Mirror a batch of slices left to right (for flip test-time augmentation)."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=2)


def for_serving(net: keras.Model, cfg: ModelConfig) -> keras.Model:
    """The network as saved: with flip_tta, one graph that averages the slice and its mirror."""
    if not cfg.flip_tta:
        return net
    inputs = keras.Input(net.input_shape[1:], dtype="uint8", name="slice")
    both = layers.Average()([net(inputs), net(MirrorLeftRight()(inputs))])
    return keras.Model(inputs, both, name=f"{net.name}_flip_tta")
