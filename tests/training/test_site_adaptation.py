"""`brainscan train --adapt-to`: a new site's slices, read without labels, in every fit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from brainscan.cli import main
from tests.images import create_labelled_folder, create_random_slice, save_image
from training.card import ModelCard, card_path_for
from training.dataset import DatasetError
from training.pipeline import prepare, prepare_adaptation
from training.preprocess import PreprocessSpec

SPEC = PreprocessSpec(size=64)


def _site(root: Path) -> Path:
    """Six new slices (filed under yes/no: the labels must not matter) and two re-exposed copies
    of training slices (`create_labelled_folder`'s seeds 0 and 100), and a file that is no image."""
    for i in range(6):
        save_image(
            root / ("yes" if i % 2 else "no") / f"s{i}.png",
            create_random_slice(seed=500 + i, lesion=i % 2 == 1),
        )
    for seed in (0, 100):
        copy = (create_random_slice(seed=seed, lesion=seed == 0) * 0.8).astype(np.uint8)
        save_image(root / "scanner" / f"copy{seed}.png", copy)
    (root / "scanner" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_a_sample_of_the_site_is_read_without_labels_and_twins_are_counted(tmp_path: Path) -> None:
    data = prepare([create_labelled_folder(tmp_path / "train", n_per_class=4)], SPEC)
    site = prepare_adaptation(_site(tmp_path / "site"), SPEC, data, limit=100)
    summary = site.summary()
    assert summary["found"] == 9 and summary["labels_read"] is False
    assert (len(site.inputs), site.unreadable) == (8, 1) and site.inputs.shape[1:] == (64, 64, 1)
    assert site.inputs.dtype == data.loaded.inputs.dtype
    assert site.near_duplicates == 2  # the two copies, kept
    sampled = prepare_adaptation(tmp_path / "site", SPEC, data, limit=5, seed=1)
    assert sampled.found == 9 and len(sampled.inputs) + sampled.unreadable == 5
    assert sampled.fingerprint != site.fingerprint
    again = prepare_adaptation(tmp_path / "site", SPEC, data, limit=5, seed=1)
    np.testing.assert_array_equal(again.inputs, sampled.inputs)  # the sample follows the seed


def test_training_images_are_not_a_site(tmp_path: Path) -> None:
    root = create_labelled_folder(tmp_path / "train", n_per_class=4)
    data = prepare([root], SPEC)
    with pytest.raises(DatasetError, match=r"4 of the 4 images under .* are training images too"):
        prepare_adaptation(root / "yes", SPEC, data, limit=100)
    out = tmp_path / "m.keras"
    result = CliRunner().invoke(
        main, ["train", str(root), "--out", str(out), "--size", "64", "--adapt-to", str(root / "no")]
    )
    assert result.exit_code == 1 and "are training images too" in result.output, result.output
    assert not out.exists()


@pytest.mark.data
@pytest.mark.slow
def test_train_adapted_to_a_site_reads_it_in_every_fit(shared_data: Path, tmp_path: Path) -> None:
    """The per-site workflow: train without seed-253's labels, adapted to its slices; the CV folds
    read them too, so the folds measure the adapted recipe."""
    out = tmp_path / "m" / "site.keras"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(shared_data),
            "--out",
            str(out),
            "--exclude",
            "seed-253",
            "--limit",
            "120",
            "--epochs",
            "1",
            "--size",
            "64",
            "--seed",
            "3",
            "--cv",
            "2",
            "--adapt-to",
            str(shared_data / "seed-253"),
            "--adapt-limit",
            "40",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.load(card_path_for(out))
    site = card.data["adaptation"]
    assert (site["images"], site["found"], site["labels_read"]) == (40, 253, False)
    assert 0 <= site["flagged_at_threshold"] <= 40 and site["near_duplicates_of_training"] >= 0
    assert card.training["domain_adapt"] == 0.1  # the default weight
    assert card.data["by_source"] and not any("seed-253" in s for s in card.data["by_source"])
    assert card.metrics["cv"]["k"] == 2
    folder = (shared_data / "seed-253").resolve()
    assert site["folder"] == str(folder)
    assert f"adapted to {folder} (40 slices read without labels)" in result.output
    # the final fit and both folds trained with the critic (the log goes to stderr)
    assert result.stderr.count("domain_loss") >= 3, result.stderr[-2000:]
    for fold in ("fold 1/2", "fold 2/2"):
        assert f"[{fold}] epoch" in result.stderr
        assert re.search(
            rf"\[{fold}\] train \d+, validation \d+, test \d+; 40 site slices read "
            "unlabelled in training",
            result.stderr,
        )
