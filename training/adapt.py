"""Test-time batch-normalisation adaptation ("AdaBN", Li et al. 2016) to a new source, without labels.

Every batch normalisation layer normalises its input with the mean and variance it saw in training.
On slices from another scanner or protocol those statistics are off, and the network's scores drift
with them. `adapt_batchnorm` re-estimates each layer's statistics on unlabelled slices of the new
source, layer by layer in network order (each layer sees its input as the already adapted layers
before it produce it), and changes nothing else: no weight is trained and no label is read.
"""

from __future__ import annotations

import keras
import numpy as np


def _networks(model: keras.Model) -> list[keras.Model]:
    """The single networks inside `model`: its ensemble members, or the model itself."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return members or [model]


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [
        layer
        for net in _networks(model)
        for layer in net.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _channel_moments(
    net: keras.Model, tensor: object, inputs: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased) variance of `tensor` over every pixel of every input."""
    probe = keras.Model(net.input, tensor)
    total = total_sq = None
    count = 0
    for start in range(0, len(inputs), batch_size):  # eager calls: no graph traced per layer
        out = np.asarray(probe(inputs[start : start + batch_size], training=False), dtype=np.float64)
        flat = out.reshape(-1, out.shape[-1])
        total = flat.sum(0) if total is None else total + flat.sum(0)
        total_sq = (flat**2).sum(0) if total_sq is None else total_sq + (flat**2).sum(0)
        count += flat.shape[0]
    assert total is not None and total_sq is not None
    mean = total / count
    return mean, np.maximum(total_sq / count - mean**2, 0.0)


def adapt_batchnorm(
    model: keras.Model, inputs: np.ndarray, *, batch_size: int = 64, depth: int | None = None
) -> keras.Model:
    """A copy of `model` whose batch normalisation statistics are those of `inputs` (uint8 slices
    preprocessed as the model expects; no labels). `depth`: adapt only each network's first that
    many layers (the low-level, intensity-like statistics), None for all. The original model is
    left unchanged."""
    if len(inputs) < 2:
        raise ValueError(f"adapting batch normalisation needs at least 2 slices, not {len(inputs)}")
    adapted = keras.models.clone_model(model)
    adapted.set_weights(model.get_weights())
    for net in _networks(adapted):
        for layer in batchnorm_layers(net)[:depth]:
            mean, var = _channel_moments(net, layer.input, inputs, batch_size)
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(var.astype(np.float32))
    return adapted
