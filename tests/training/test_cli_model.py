"""The model CLI end to end: a short real training run, evaluate and score, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from brainscan.cli import main
from tests.images import create_random_slice, encoded, save_image
from training.backend import threads_per_process
from training.card import ModelCard, card_path_for, file_sha256

EVALUATE_FIELDS = {
    "n",
    "tp",
    "fp",
    "tn",
    "fn",
    "accuracy",
    "recall",
    "specificity",
    "precision",
    "auc",
    "threshold",
    "images_per_second",
    "model_version",
}


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.data
@pytest.mark.slow
def test_cross_validation_with_source_balance_reports_and_saves_held_out_predictions(
    shared_data: Path, tmp_path: Path
) -> None:
    """--cv and --cross-source (in one process), with a setting that needs each image's source."""
    out, saved = tmp_path / "m" / "tiny.keras", tmp_path / "held-out.npz"
    result = run(
        "train",
        str(shared_data),
        "--out",
        str(out),
        "--limit",
        "160",
        "--epochs",
        "1",
        "--size",
        "64",
        "--seed",
        "3",
        "--cv",
        "2",
        "--cross-source",
        "seed-253",
        "--workers",
        "1",
        "--set",
        "source_balance=1.0",
        "--predictions",
        str(saved),
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.load(card_path_for(out))
    assert card.training["source_balance"] == 1.0
    assert card.metrics["cv"]["k"] == 2 and card.metrics["cross_source"]["holdout"] == "seed-253"
    held = np.load(saved)
    assert list(held["tasks"]) == ["fold 1/2", "fold 2/2", "cross-source seed-253"]
    tested = np.concatenate([held["0_test_idx"], held["1_test_idx"]])
    assert sorted(tested.tolist()) == list(range(160))  # every image held out once
    assert all(
        str(p).split("/")[-2] in {"glioma", "meningioma", "pituitary", "notumor", "yes", "no"}
        for p in held["relpaths"]
    )


@pytest.mark.data
@pytest.mark.slow
def test_held_out_fits_in_worker_processes_share_the_cores(
    shared_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """--workers 2: the folds train in two spawned processes, each with its share of the cores, with
    a setting (the tumour-type head) that needs every image's label folder there and in the final fit."""
    out, saved = tmp_path / "m" / "tiny.keras", tmp_path / "held-out.npz"
    result = run(
        "train",
        str(shared_data),
        "--out",
        str(out),
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
        "--workers",
        "2",
        "--predictions",
        str(saved),
        "--set",
        "subtype_aux=0.5",
    )
    assert result.exit_code == 0, result.output
    logged = capfd.readouterr().err  # the children write to the inherited stderr
    threads = threads_per_process(2)
    for fold in ("fold 1/2", "fold 2/2"):
        assert f"[{fold}] in its own process, TensorFlow threads: {threads}" in logged
    card, held = ModelCard.load(card_path_for(out)), np.load(saved)
    assert [f["n"] for f in card.metrics["cv"]["folds"]] == [len(held[f"{i}_test_idx"]) for i in range(2)]
    assert card.metrics["cv"]["pooled"]["n"] == 120
    assert card.training["subtype_aux"] == 0.5
    assert len(keras.models.load_model(out, compile=False).outputs) == 1  # the head is not shipped


@pytest.mark.data
@pytest.mark.slow
def test_short_training_run_writes_a_consistent_model(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m" / "tiny.keras"
    result = run(
        "train",
        str(shared_data),
        "--out",
        str(out),
        "--limit",
        "160",
        "--epochs",
        "2",
        "--size",
        "64",
        "--seed",
        "3",
        "--specificity-floor",
        "0.5",
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.load(card_path_for(out))
    assert card.specificity_floor == card.training["specificity_floor"] == 0.5
    assert card.model_sha256 == file_sha256(out)
    assert card.input["size"] == 64 and card.architecture["input_size"] == 64
    assert 0.0 <= card.threshold <= 1.0 and card.recall_target == 0.99
    assert card.metrics["validation"]["recall"] >= 0.99  # tuned to meet the target; the floor only lowers it
    split = card.data["split"]
    assert split["train"] + split["validation"] + split["test"] == card.data["images"] == 160
    assert card.training["epochs_run"] == 2
    for name in card.plots.values():
        assert (out.parent / name).stat().st_size > 1000
    assert len(card.threshold_sweep) == 19
    # the freshly trained model scores through the same CLI the service uses
    scored = run("score", str(shared_data / "seed-253" / "yes"), "--model", str(out))
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    assert len(rows) == 155 and all(r["error"] == "" for r in rows)


@pytest.mark.data
def test_evaluate_json_contract_on_the_shipped_model(shared_data: Path, shipped_model: Path) -> None:
    result = run("evaluate", str(shared_data / "seed-253"), "--model", str(shipped_model), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report.keys() >= EVALUATE_FIELDS
    assert report["n"] == 253 and report["tp"] + report["fn"] == 155
    assert report["threshold"] == ModelCard.load(card_path_for(shipped_model)).threshold
    assert "predicted tumour" in result.stderr  # the matrix for people goes to stderr


@pytest.mark.data
def test_threshold_override_changes_flags(shared_data: Path, shipped_model: Path) -> None:
    folder = str(shared_data / "seed-253" / "no")
    low = json.loads(
        run("evaluate", folder, "--model", str(shipped_model), "--threshold", "0", "--json").stdout
    )
    assert low["fp"] == 98 and low["threshold"] == 0


def _bad_folder(root: Path) -> Path:
    save_image(root / "yes" / "good.png", create_random_slice(128, seed=1, lesion=True))
    save_image(root / "no" / "good.jpg", create_random_slice(128, seed=2))
    (root / "no" / "empty.jpg").write_bytes(b"")
    (root / "no" / "text.png").write_text("not an image")
    jpeg = encoded(create_random_slice(128, seed=3))
    (root / "no" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    save_image(root / "no" / "dot.png", np.zeros((1, 1), np.uint8))
    save_image(root / "no" / "deep.png", create_random_slice(128, seed=4).astype(np.uint16) * 250)
    (root / "no" / "notes.txt").write_text("skipped: not an image suffix")
    return root


def test_score_reports_each_bad_file_and_goes_on(tmp_path: Path, shipped_model: Path) -> None:
    result = run("score", str(_bad_folder(tmp_path)), "--model", str(shipped_model), "--format", "json")
    assert result.exit_code == 0
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert set(rows) == {
        "good.png",
        "good.jpg",
        "empty.jpg",
        "text.png",
        "truncated.jpg",
        "dot.png",
        "deep.png",
    }
    for name in ("good.png", "good.jpg", "deep.png"):
        assert rows[name]["error"] is None and 0 <= rows[name]["probability"] <= 1
    assert "empty" in rows["empty.jpg"]["error"]
    assert "not a recognised image" in rows["text.png"]["error"]
    assert "truncated" in rows["truncated.jpg"]["error"]
    assert "too small" in rows["dot.png"]["error"]
    assert "4 of 7 images could not be scored" in result.stderr


def test_nothing_scorable_exits_non_zero(tmp_path: Path, shipped_model: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"junk")
    assert run("score", str(tmp_path), "--model", str(shipped_model)).exit_code == 1
    missing = run("evaluate", str(tmp_path / "missing"), "--model", str(shipped_model))
    assert missing.exit_code != 0 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    none = run("score", str(tmp_path / "empty"), "--model", str(shipped_model))
    assert none.exit_code != 0 and "no images found" in none.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", create_random_slice(64))
    result = run("score", str(tmp_path), "--model", str(tmp_path / "nope.keras"))
    assert result.exit_code != 0 and "model file not found" in result.stderr
