"""The shipped model: small, described by its card, trained on exactly the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.card import ModelCard, card_path_for, file_sha256
from training.dataset import discover
from training.prepare import data_fingerprint, select_records

BLANK_SLICES = {"lgg-flair/no/TCGA_CS_4942_19970222_1.jpg", "lgg-flair/no/TCGA_CS_4942_19970222_20.jpg"}


def test_model_file_is_small_and_its_card_matches_it(shipped_model: Path) -> None:
    assert shipped_model.stat().st_size <= 20 * 1024 * 1024
    card = ModelCard.load(card_path_for(shipped_model))
    assert card.model_sha256 == file_sha256(shipped_model)
    assert 0 < card.threshold < 1
    # tuned for at least the 0.99 recall that screening asks of it, as the training run recorded
    assert card.recipe["name"] == "shipped" and card.recipe["policy"]["recall_target"] >= 0.99
    for name in card.plots.values():
        assert (shipped_model.parent / name).is_file(), name
    assert card.training["command"].startswith("brainscan train")


def test_card_reports_group_aware_cross_validation_by_source(shipped_model: Path) -> None:
    metrics = ModelCard.load(card_path_for(shipped_model)).metrics
    cv = metrics["cv"]
    assert cv["k"] >= 3 and len(cv["folds"]) == cv["k"]
    pooled = cv["pooled"]
    assert pooled["tp"] + pooled["fn"] + pooled["fp"] + pooled["tn"] == pooled["n"]
    assert sum(f["n"] for f in cv["folds"]) == pooled["n"]
    by_source = cv["by_source"]
    assert set(by_source) == {"data/kaggle-4class-train", "data/lgg-flair", "data/seed-253"}
    assert sum(s["n"] for s in by_source.values()) == pooled["n"]
    assert cv["mid_level"]["n"] > 0  # lgg-flair's mid-level slices, apart


@pytest.mark.data
def test_model_was_trained_on_exactly_the_shared_images(shipped_model: Path, shared_data: Path) -> None:
    card = ModelCard.load(card_path_for(shipped_model))
    records = select_records(discover([shared_data]))
    assert card.data["by_source"] == {
        "data/kaggle-4class-train": 4484,
        "data/lgg-flair": 3800,  # its two blank slices are unreadable, left out
        "data/seed-253": 253,
    }
    blank = [r for r in records if r.relpath in BLANK_SLICES]  # every pixel one value: unreadable
    assert len(blank) == 2 and all(len(np.unique(np.asarray(Image.open(r.path)))) == 1 for r in blank)
    assert card.data["images"] == len(records) - 2 == 8537 and card.data["unreadable"] == 2
    assert card.data["grouping"]["subjects"] == 110  # lgg-flair split by patient
    assert card.data["fingerprint"] == data_fingerprint([r for r in records if r not in blank])
