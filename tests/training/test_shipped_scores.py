"""The shipped model scores a fixed sample of real slices as it did when this file was written:
preprocessed inputs bit for bit (their SHA-256), probabilities to 1e-6 (the network's float
arithmetic may differ in the last bits between CPUs with and without AVX-512).

A guard for refactoring the training and scoring code (issue 34): a change that alters
decoding, preprocessing or the serving graph fails here. After a deliberate change (a new
model), rewrite the reference with `python -m tests.training.test_shipped_scores`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHIPPED_MODEL, find_shared_data
from training.card import file_sha256

REFERENCE = Path(__file__).with_name("shipped_scores.json")
FOLDERS = (
    "seed-253/yes",
    "seed-253/no",
    "kaggle-4class-train/glioma",
    "kaggle-4class-train/meningioma",
    "kaggle-4class-train/pituitary",
    "kaggle-4class-train/notumor",
    "lgg-flair/yes",
    "lgg-flair/no",
)
PER_FOLDER = 8  # the first files by name: 64 slices, every source and class
TOLERANCE = 1e-6


def sample(shared: Path) -> list[Path]:
    """The fixed sample: the first PER_FOLDER files by name in each of FOLDERS."""
    return [path for folder in FOLDERS for path in sorted((shared / folder).iterdir())[:PER_FOLDER]]


def score_sample(shared: Path) -> list[dict[str, object]]:
    """Each sampled slice: its path under the shared data, its input's SHA-256, its probability."""
    from training.backend import import_backend
    from training.scorer import Scorer

    import_backend()
    scorer = Scorer.load(SHIPPED_MODEL)
    paths = sample(shared)
    inputs = [scorer.load_input(path) for path in paths]
    probabilities = scorer.score_arrays(np.stack(inputs))
    return [
        {
            "path": path.relative_to(shared).as_posix(),
            "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
            "probability": float(p),
        }
        for path, x, p in zip(paths, inputs, probabilities, strict=True)
    ]


@pytest.mark.data
def test_the_shipped_model_scores_the_reference_sample_as_before(shared_data: Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert reference["model_sha256"] == file_sha256(SHIPPED_MODEL), "a new model: rewrite the reference"
    now = score_sample(shared_data)
    assert [r["path"] for r in now] == [r["path"] for r in reference["slices"]]
    for was, is_ in zip(reference["slices"], now, strict=True):
        assert is_["input_sha256"] == was["input_sha256"], f"{was['path']}: preprocessing changed"
        assert abs(is_["probability"] - was["probability"]) <= TOLERANCE, was["path"]


if __name__ == "__main__":
    shared = find_shared_data()
    assert shared is not None, "the shared data is needed to write the reference"
    REFERENCE.write_text(
        json.dumps({"model_sha256": file_sha256(SHIPPED_MODEL), "slices": score_sample(shared)}, indent=1)
        + "\n"
    )
    print(f"wrote {REFERENCE}")
