"""Near-duplicate grouping: copies of a slice share a group; different slices do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images import create_random_slice
from training.grouping import fingerprint, group_near_duplicates
from training.preprocess import PreprocessSpec

SPEC = PreprocessSpec()


def _variants(grey: np.ndarray) -> list[np.ndarray]:
    """The ways one slice reappears in public sets: resized, re-framed, mirrored, re-exposed."""
    img = Image.fromarray(grey)
    stretched = np.asarray(img.resize((grey.shape[1], grey.shape[0] * 3 // 4)))
    framed = np.zeros((grey.shape[0] + 60, grey.shape[1] + 20), np.uint8)
    framed[30:-30, 10:-10] = grey
    return [stretched, framed, grey[:, ::-1].copy(), (grey * 0.7).astype(np.uint8)]


def test_copies_group_and_distinct_slices_do_not() -> None:
    originals = [create_random_slice(128, seed=s, lesion=s % 2 == 0) for s in range(6)]
    images = originals + [v for g in originals[:2] for v in _variants(g)]
    grouping = group_near_duplicates(np.stack([fingerprint(g, SPEC) for g in images]))
    groups = grouping.groups
    assert len(set(groups[:6].tolist())) == 6  # six different slices, six groups
    assert set(groups[6:10].tolist()) == {groups[0]}
    assert set(groups[10:14].tolist()) == {groups[1]}
    assert grouping.summary()["images_in_multi_image_groups"] == 10


@pytest.mark.data
def test_seed_no_images_meet_their_kaggle_twins(shared_data: Path) -> None:
    """The data README: 96 of the 98 seed-253/no images have a near-twin in notumor."""
    from training.dataset import discover
    from training.loading import load_images

    found = discover(
        [
            shared_data / "seed-253" / "no",
            shared_data / "kaggle-4class-train" / "notumor",
            shared_data / "kaggle-4class-train" / "glioma",
        ]
    )
    loaded = load_images(found.images, PreprocessSpec(size=64))
    groups = group_near_duplicates(loaded.fingerprints).groups
    cats = np.array([r.category for r in loaded.records])
    notumor_groups = set(groups[cats == "notumor"].tolist())
    twinned = sum(g in notumor_groups for g in groups[cats == "no"])
    assert twinned >= 90, f"only {twinned} of 98 seed-253/no images grouped with a twin"
    labels = loaded.labels
    mixed = [g for g in np.unique(groups) if len(set(labels[groups == g].tolist())) > 1]
    assert not mixed, "a group mixes tumour and no-tumour images"
