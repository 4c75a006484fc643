"""Training augmentation: ranges, reproducibility, and the background staying black."""

from __future__ import annotations

import numpy as np

from training.augment import AugmentedBatches, augment_one


def _head(size: int = 64) -> np.ndarray:
    """A bright ellipse with darker 'tissue' inside, on a black background."""
    yy, xx = np.mgrid[:size, :size]
    r = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.3)) ** 2
    img = np.where(r < 1, 200, 0).astype(np.uint8)
    img[(r < 0.3)] = 90
    return img


def test_augment_one_keeps_shape_range_and_is_reproducible() -> None:
    img = _head()
    for strength in (0.5, 1.0, 2.0):
        a = augment_one(img, np.random.default_rng(7), strength)
        b = augment_one(img, np.random.default_rng(7), strength)
        assert a.shape == img.shape and a.dtype == np.float32
        assert a.min() >= 0 and a.max() <= 255
        np.testing.assert_array_equal(a, b)
        assert np.all(a[:2, :2] == 0)  # the corners stay background
    assert not np.array_equal(
        augment_one(img, np.random.default_rng(1), 1.0), augment_one(img, np.random.default_rng(2), 1.0)
    )


def test_augmented_batches_are_reproducible_and_weighted() -> None:
    x = np.stack([_head()] * 10)[..., None]
    y = np.array([0, 1] * 5)

    def make() -> AugmentedBatches:
        return AugmentedBatches(
            x,
            y,
            batch_size=4,
            strength=1.0,
            seed=3,
            weights=np.where(y == 1, 0.5, 2.0),
        )

    first, second = make(), make()
    assert len(first) == 3
    xb, yb, wb = first[0]
    assert xb.shape == (4, 64, 64, 1) and xb.dtype == np.uint8
    np.testing.assert_array_equal(xb, second[0][0])
    np.testing.assert_array_equal(wb, np.where(yb == 1, 0.5, 2.0))
    first.on_epoch_end()
    assert not np.array_equal(first[0][0], xb)  # a new epoch: new order and new draws
