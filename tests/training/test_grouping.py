"""Near-duplicate grouping: copies of a slice share a group; different slices do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images import create_random_slice, save_image
from training.dataset import discover
from training.grouping import (
    Grouping,
    fingerprint,
    group_near_duplicates,
    join_subjects,
    mid_levels,
    subjects_of,
)
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


def test_one_subjects_images_join_one_group_on_top_of_near_duplicates() -> None:
    # images 0-1 twins (group 0); 2, 3, 4 distinct; 2 and 4 are one patient's
    near = Grouping(groups=np.array([0, 0, 1, 2, 3]), threshold=0.95)
    joined = join_subjects(near, ["", "", "p1", "", "p1"])
    assert joined.groups.tolist() == [0, 0, 1, 2, 1] and joined.subjects == 1
    assert join_subjects(near, [""] * 5) is near  # no subject: the grouping as it was
    # a subject spanning two near-duplicate groups joins them, and everything stays numbered 0..n-1
    chained = join_subjects(near, ["a", "", "a", "b", "b"])
    assert chained.groups.tolist() == [0, 0, 0, 1, 1] and chained.n_groups == 2
    assert chained.summary()["subjects"] == 2


def test_a_subject_comes_from_labels_csv_first_then_from_the_file_name_pattern() -> None:
    names = ["lgg/yes/TCGA_CS_4941_19960909_12.jpg", "lgg/no/TCGA_CS_4941_19960909_2.jpg", "k/no/Tr-no_1.jpg"]
    pattern = r"^(TCGA_.+)_\d+\.\w+$"
    assert subjects_of(names, ["", "", ""], pattern) == ["TCGA_CS_4941_19960909"] * 2 + [""]
    assert subjects_of(names, ["", "", "listed"], pattern)[2] == "listed"
    assert subjects_of(names, ["", "", ""], "") == ["", "", ""]


@pytest.mark.data
def test_lgg_flair_names_its_110_patients(shared_data: Path) -> None:
    """The data README: 110 patients, everything before the last `_` of a file name names one scan."""
    records = [r for r in discover([shared_data / "lgg-flair"]).images]
    subjects = subjects_of(
        [r.relpath for r in records], [r.subject for r in records], r"^(TCGA_.+)_\d+\.\w+$"
    )
    assert all(subjects) and len(set(subjects)) == 110
    by_subject: dict[str, set[int | None]] = {}
    for record, subject in zip(records, subjects, strict=True):
        by_subject.setdefault(subject, set()).add(record.label)
    assert sum(labels == {0, 1} for labels in by_subject.values()) > 100  # tumour and clear slices each


def test_a_patients_slices_never_straddle_a_fold(tmp_path: Path) -> None:
    """With the recipe's subject_pattern, every fold holds each patient whole: in training or tested."""
    from training.crossval import cv_tasks
    from training.prepare import prepare
    from training.recipes import SHIPPED

    for patient in range(6):
        for level in range(4):  # four different slices per patient: no two are near-duplicates
            label = "yes" if level in (1, 2) else "no"
            blocks = np.random.default_rng(100 * patient + level).integers(30, 255, (8, 8), dtype=np.uint8)
            image = np.kron(blocks, np.ones((12, 12), dtype=np.uint8))  # unlike any other slice
            save_image(tmp_path / "site" / label / f"TCGA_XX_{patient:04d}_20000101_{level + 1}.png", image)
    recipe = SHIPPED.with_settings((r"subject_pattern=^(TCGA_.+)_\d+\.\w+$",))
    data = prepare([tmp_path / "site"], recipe)
    assert data.grouping.subjects == 6 and data.grouping.n_groups == 6
    patients = np.array([r.relpath.split("_")[2] for r in data.loaded.records])
    for task in cv_tasks(data, k=3, recipe=recipe):
        assert not set(patients[task.test]) & set(patients[np.concatenate([task.train, task.val])])
    plain = prepare([tmp_path / "site"], SHIPPED.with_settings(("subject_pattern=",)))
    assert plain.grouping.subjects == 0 and plain.grouping.n_groups > 6  # without it slices split apart


def test_mid_levels_are_the_middle_half_of_each_subjects_slices() -> None:
    names = [f"s/TCGA_A_{p}_2000_{n}.jpg" for p in (1, 2) for n in range(1, 10)] + ["k/Tr-no_5.jpg"]
    subjects = subjects_of(names, [""] * len(names), r"^(TCGA_.+)_\d+\.\w+$")
    mid = mid_levels(names, subjects)
    assert mid[:9].tolist() == [False, False, True, True, True, True, True, False, False]
    assert mid[9:18].tolist() == mid[:9].tolist() and not mid[18]  # no subject: no level
