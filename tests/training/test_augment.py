"""Training augmentation: ranges, reproducibility, and the background staying black."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import AugmentedBatches, add_lesion, augment_one, mix_batch, remap_contrast


def _head(size: int = 64) -> np.ndarray:
    """A bright ellipse with darker 'tissue' inside, on a black background."""
    yy, xx = np.mgrid[:size, :size]
    r = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.3)) ** 2
    img = np.where(r < 1, 200, 0).astype(np.uint8)
    img[(r < 0.3)] = 90
    return img


def test_augment_one_keeps_shape_range_and_is_reproducible() -> None:
    img = _head()
    for style, contrast in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        a = augment_one(img, np.random.default_rng(7), 1.0, style, contrast)
        b = augment_one(img, np.random.default_rng(7), 1.0, style, contrast)
        assert a.shape == img.shape and a.dtype == np.float32
        assert a.min() >= 0 and a.max() <= 255
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        augment_one(img, np.random.default_rng(1), 1.0), augment_one(img, np.random.default_rng(2), 1.0)
    )


def test_remap_contrast_keeps_background_black_and_restretches() -> None:
    img = _head().astype(np.float32)
    for seed in range(20):
        out = remap_contrast(img, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == img.shape
        assert np.all(out[img == 0] == 0)
        assert np.percentile(out[img > 0], 99) == pytest.approx(255, abs=1)


def test_remap_contrast_can_reverse_tissue_order() -> None:
    """Some curves swap which tissue is brighter (T1 vs T2), some keep it (monotonic ones)."""
    img = _head().astype(np.float32)
    inner, outer = img == 90, img == 200
    orders = set()
    for seed in range(40):
        out = remap_contrast(img, np.random.default_rng(seed))
        orders.add(bool(out[inner].mean() < out[outer].mean()))
    assert orders == {True, False}


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
            style=0.5,
            contrast=0.5,
        )

    first, second = make(), make()
    assert len(first) == 3
    xb, yb, wb = first[0]
    assert xb.shape == (4, 64, 64, 1) and xb.dtype == np.uint8
    np.testing.assert_array_equal(xb, second[0][0])
    np.testing.assert_array_equal(wb, np.where(yb == 1, 0.5, 2.0))
    first.on_epoch_end()
    assert not np.array_equal(first[0][0], xb)  # a new epoch: new order and new draws


def test_mix_batch_blends_images_labels_and_weights_alike() -> None:
    n = 64
    x = np.stack([np.full((8, 8, 1), 10.0 * i, np.float32) for i in range(n)])  # image i is 10*i
    y = (np.arange(n) % 2).astype(np.float32)
    w = np.where(y == 1, 0.5, 2.0).astype(np.float32)
    mx, my, mw = mix_batch(x, y, w, np.random.default_rng(0), 0.4)
    lam_partner = []
    for i in range(n):
        value = float(mx[i, 0, 0, 0])
        assert np.all(mx[i] == value)  # a blend of two flat images is flat
        # recover (lam, partner): value = lam*10i + (1-lam)*10j, my = lam*y_i + (1-lam)*y_j
        js = [j for j in range(n) if j != i and abs(10.0 * (i - j)) > 1e-6]
        fits = [(j, (value - 10.0 * j) / (10.0 * (i - j))) for j in js]
        fits = [
            (j, lam)
            for j, lam in fits
            if 0.5 - 1e-4 <= lam <= 1 + 1e-4
            and abs(my[i] - (lam * y[i] + (1 - lam) * y[j])) < 1e-4
            and abs(mw[i] - (lam * w[i] + (1 - lam) * w[j])) < 1e-4
        ]
        if value == 10.0 * i:  # paired with itself, or lam == 1
            lam_partner.append(1.0)
            continue
        assert fits, f"sample {i}: no partner and lam >= 0.5 explain the blend"
        lam_partner.append(fits[0][1])
    lams = np.array(lam_partner)
    assert lams.min() >= 0.5 - 1e-4 and lams.max() <= 1 + 1e-4
    assert (lams < 0.9).sum() > 5  # alpha 0.4 often mixes substantially
    assert not set(np.unique(my)) <= {0.0, 1.0}  # soft labels appear


def test_mixup_batches_are_reproducible_and_off_by_default() -> None:
    x = np.stack([_head()] * 8)[..., None]
    x[::2] //= 2  # two kinds of image, so mixing changes pixels
    y = np.array([0, 1] * 4)
    weights = np.where(y == 1, 0.5, 2.0)
    plain = AugmentedBatches(x, y, batch_size=8, strength=0.0, seed=3, weights=weights)
    xb, yb, _ = plain[0]
    assert set(np.unique(yb)) <= {0.0, 1.0}
    np.testing.assert_array_equal(xb, x[plain.order])  # no augmentation, no mixing: the inputs

    def mixed() -> AugmentedBatches:
        return AugmentedBatches(x, y, batch_size=8, strength=0.0, seed=3, weights=weights, mixup=0.4)

    mb, myb, mwb = mixed()[0]
    assert mb.dtype == np.uint8 and mb.shape == xb.shape
    np.testing.assert_array_equal(mb, mixed()[0][0])
    assert not set(np.unique(myb)) <= {0.0, 1.0}  # blended labels
    assert np.all((myb >= 0) & (myb <= 1)) and np.all((mwb >= 0.5) & (mwb <= 2.0))


def test_add_lesion_draws_a_bright_mass_inside_the_head_only() -> None:
    img = _head(96).astype(np.float32)
    for seed in range(10):
        out = add_lesion(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == np.float32
        assert np.all(out[img == 0] == 0)  # the background stays black
        changed = np.abs(out - img) > 20
        assert 30 < changed.sum() < 0.5 * (img > 0).sum()  # a mass, not the whole head
        np.testing.assert_array_equal(out, add_lesion(img, np.random.default_rng(seed)))
    blank = np.zeros((96, 96), np.float32)
    assert np.all(add_lesion(blank, np.random.default_rng(0)) == 0)  # no head: nothing drawn


def test_lesion_batches_turn_chosen_clear_slices_into_tumour_examples() -> None:
    x = np.stack([_head()] * 8)[..., None]
    y = np.array([0, 1] * 4)
    weights = np.where(y == 1, 0.5, 2.0)
    batches = AugmentedBatches(x, y, batch_size=8, strength=0.0, seed=3, weights=weights, lesions=1.0)
    xb, yb, wb = batches[0]
    assert np.all(yb == 1) and np.all(wb == 0.5)  # every clear slice now a (synthetic) tumour
    order = batches.order
    was_clear = y[order] == 0
    assert np.all(xb[~was_clear] == x[order][~was_clear])  # real tumours untouched
    assert all(np.any(xb[i] != x[order][i]) for i in np.flatnonzero(was_clear))
    plain = AugmentedBatches(x, y, batch_size=8, strength=0.0, seed=3, weights=weights)
    np.testing.assert_array_equal(plain[0][1], y[plain.order])  # off by default
