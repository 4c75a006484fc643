"""The screening CNN: a small residual network on one grey slice, built from a saved config."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
from keras import layers

from training.card import known_settings


@dataclass(frozen=True)
class Network:
    """The network's settings (a recipe's `network` group, `training.recipes`). Its input side is
    the preprocessing's `size`: the preprocessed slice is what the network reads."""

    arch: str  # "resnet" (shipped) or "seed" (the seed notebook's 3-layer CNN, the baseline)
    stem_width: int  # strided 3x3 stem: halves resolution before any costly layer
    widths: tuple[int, ...]  # one stage per width, each halves resolution
    blocks: tuple[int, ...]  # residual blocks per stage
    separable_from: int  # stages from this index use depthwise-separable convolutions
    squeeze_excite: bool  # channel attention: cheap, helps contrast-defined lesions
    dropout: float  # before the classifier
    kernel_l2: float  # L2 penalty on the convolution kernels, in the loss (AdamW's decay is apart)
    members: int  # networks trained apart (re-seeded) and served as one graph averaging them

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, not {self.members}")
        if self.arch not in ("resnet", "seed"):
            raise ValueError(f"unknown architecture {self.arch!r} (resnet or seed)")
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks}: one of each per stage")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"], data["blocks"] = list(self.widths), list(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        known = known_settings(cls, data, "network")
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


def _block(x: Any, width: int, stride: int, cfg: Network, separable: bool) -> Any:
    shortcut = x
    y = _conv(x, width, stride, separable, cfg.kernel_l2)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = _conv(y, width, 1, separable, cfg.kernel_l2)
    y = layers.BatchNormalization()(y)
    if cfg.squeeze_excite:
        y = _squeeze_excite(y, width)
    if stride != 1 or shortcut.shape[-1] != width:
        if stride != 1:
            shortcut = layers.AveragePooling2D(stride, padding="same")(shortcut)
        shortcut = layers.Conv2D(width, 1, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_model(cfg: Network, size: int) -> keras.Model:
    """Input: uint8 (size, size, 1) preprocessed slices. Output: P(tumour), shape (batch, 1).
    With members > 1, that many networks side by side and the mean of their probabilities; each
    member is trained on its own (`training.train.fit`) and its weights copied in."""
    if cfg.members == 1:
        return _network(cfg, size)
    inputs = keras.Input((size, size, 1), dtype="uint8", name="slice")
    nets = [_network(cfg, size, name=f"member_{i}") for i in range(cfg.members)]
    mean = layers.Average(name="tumour", dtype="float32")([net(inputs) for net in nets])
    return keras.Model(inputs, mean, name=f"brainscan_ensemble_{cfg.members}")


def _network(cfg: Network, size: int, name: str | None = None) -> keras.Model:
    inputs = keras.Input((size, size, 1), dtype="uint8", name="slice")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(layers.Identity(dtype="float32")(inputs))
    if cfg.arch == "seed":
        return _seed_network(inputs, x, cfg.dropout, name or "seed_cnn")
    x = layers.Conv2D(cfg.stem_width, 3, 2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for stage, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
        separable = stage >= cfg.separable_from
        for i in range(count):
            x = _block(x, width, 2 if i == 0 else 1, cfg, separable)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="tumour", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or "brainscan_cnn")


def _seed_network(inputs: Any, x: Any, dropout: float, name: str) -> keras.Model:
    """The seed notebook's network: three conv/pool layers, a dense layer, dropout."""
    for width in (32, 64, 128):
        x = layers.Conv2D(width, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="tumour", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
