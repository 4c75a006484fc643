"""adapt_batchnorm: every batch normalisation layer takes its statistics from the unlabelled slices."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import pytest

from training.adapt import adapt_batchnorm, batchnorm_layers
from training.backend import import_backend
from training.model import ModelConfig, build_model

import_backend()

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


SMALL = ModelConfig(input_size=32, stem_width=8, widths=(8, 16), blocks=(1, 1))


def _slices(n: int, mean: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, 30, (n, 32, 32, 1)), 0, 255).astype(np.uint8)


def _normalised_outputs(model: keras.Model, x: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """Each BN layer and its inference-mode output on x, flattened to (pixels, channels)."""
    out = []
    for layer in batchnorm_layers(model):
        net = next(n for n in [*model.layers, model] if isinstance(n, keras.Model) and layer in n.layers)
        values = np.asarray(keras.Model(net.input, layer.output).predict_on_batch(x))
        out.append((layer, values.reshape(-1, values.shape[-1])))
    return out


@pytest.mark.parametrize("members", [1, 2])
def test_adapted_layers_normalise_the_new_slices_and_the_original_is_unchanged(members: int) -> None:
    keras.utils.set_random_seed(3)
    model = build_model(dataclasses.replace(SMALL, members=members))
    before = [w.copy() for w in model.get_weights()]
    new_source = _slices(40, 180, seed=1)  # brighter than anything the untrained statistics expect
    adapted = adapt_batchnorm(model, new_source, batch_size=16)  # several batches: moments pooled

    assert len(batchnorm_layers(adapted)) == len(batchnorm_layers(model)) > 0
    for layer, flat in _normalised_outputs(adapted, new_source):
        # untrained gamma 1, beta 0: (v - mean) / sqrt(var + eps) has mean 0, variance var / (var + eps)
        var = np.asarray(layer.moving_variance)
        np.testing.assert_allclose(flat.mean(0), 0, atol=2e-3)
        np.testing.assert_allclose(flat.var(0), var / (var + layer.epsilon), rtol=1e-3, atol=1e-5)
    first = _normalised_outputs(model, new_source)[0][1]  # the original still uses its own statistics
    assert np.abs(first.mean(0)).max() > 0.05
    for old, now in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, now)
    # only the statistics moved: every trainable weight is the original's
    for old, new in zip(model.trainable_weights, adapted.trainable_weights, strict=True):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_scores_change_only_through_the_statistics() -> None:
    keras.utils.set_random_seed(4)
    model = build_model(SMALL)
    x = _slices(24, 120, seed=2)
    same = adapt_batchnorm(model, x)
    again = adapt_batchnorm(same, x)  # adapting twice on the same slices is a fixed point
    np.testing.assert_allclose(same.predict_on_batch(x), again.predict_on_batch(x), atol=1e-5)
    assert not np.allclose(model.predict_on_batch(x), same.predict_on_batch(x), atol=1e-4)


def test_depth_adapts_only_each_networks_first_layers() -> None:
    keras.utils.set_random_seed(5)
    model = build_model(dataclasses.replace(SMALL, members=2))
    adapted = adapt_batchnorm(model, _slices(16, 200, seed=3), depth=1)
    firsts = {id(batchnorm_layers(net)[0]) for net in model.layers if isinstance(net, keras.Model)}
    assert len(firsts) == 2  # one first layer per member
    for old, new in zip(batchnorm_layers(model), batchnorm_layers(adapted), strict=True):
        moved = not np.allclose(np.asarray(old.moving_mean), np.asarray(new.moving_mean))
        assert moved == (id(old) in firsts), old.name


def test_refuses_fewer_than_two_slices() -> None:
    with pytest.raises(ValueError, match="at least 2 slices"):
        adapt_batchnorm(build_model(SMALL), _slices(1, 100, seed=0))
