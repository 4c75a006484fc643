"""The equalised input channel (the network's `equalised`, experiment 46): the head's greys as ranks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from tests.training.tiny import TINY  # noqa: E402
from training.model import HeadEqualised, build_model  # noqa: E402


def _heads(seed: int) -> np.ndarray:
    """Two 40x40 slices: a disc of random greys (1..255) on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40]
    disc = np.hypot(yy - 20, xx - 20) < 16
    greys = rng.integers(1, 256, (2, 40, 40))
    return np.where(disc, greys, 0)[..., None].astype(np.uint8)


def test_each_head_grey_becomes_its_rank_among_the_heads_and_the_background_stays_black() -> None:
    x = _heads(0)
    out = np.asarray(HeadEqualised(stride=1)(x))
    for image, ranked in zip(x[..., 0], out[..., 0], strict=True):
        head = image[image > 0]
        share = np.array([np.mean(head <= v) for v in image.ravel()]).reshape(image.shape)
        np.testing.assert_allclose(ranked, np.where(image > 0, 1 + 254 * share, 0), atol=1e-3)
    assert out.shape == x.shape


def test_an_increasing_change_of_contrast_leaves_the_view_unchanged() -> None:
    x = _heads(1)
    curve = np.round(1 + 254 * (np.arange(256) / 255) ** 2.5).astype(np.uint8)  # increasing, 0 -> 1
    curve[0] = 0
    darker = curve[x]
    assert not np.array_equal(darker, x)
    layer = HeadEqualised(stride=2)
    # ties the curve makes between neighbouring dark greys are the only difference
    np.testing.assert_allclose(np.asarray(layer(darker)), np.asarray(layer(x)), atol=40)
    assert np.mean(np.abs(np.asarray(layer(darker)) - np.asarray(layer(x)))) < 2


def test_a_network_with_the_equalised_channel_reads_two_views_and_saves_and_loads(tmp_path: Path) -> None:
    network = dataclasses.replace(TINY.network, equalised=True)
    model = build_model(network, 40)
    plain = build_model(TINY.network, 40)
    stem = TINY.network.stem_width
    assert model.count_params() - plain.count_params() == 3 * 3 * stem  # one more input channel
    x = _heads(2)
    model.save(tmp_path / "equalised.keras")
    loaded = keras.models.load_model(tmp_path / "equalised.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_the_seed_network_has_no_equalised_channel() -> None:
    with pytest.raises(ValueError, match="equalised"):
        dataclasses.replace(TINY.network, arch="seed", equalised=True)
