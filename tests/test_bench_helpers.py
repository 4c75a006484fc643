"""Helpers the benchmarks report figures with (the training runs themselves are too long for CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import SHIPPED_MODEL
from tests.conftest import load_bench as _load


def test_recall_at_specificity_keeps_the_allowed_false_alarms() -> None:
    variants = _load("variants")
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.75, 0.5, 0.05])
    recall, threshold = variants.recall_at_specificity(y, p, 0.80)  # 2 false alarms allowed
    assert 0.8 < threshold <= 0.85
    assert recall == 0.25  # only 0.85 reaches it
    flagged_negatives = int(np.sum(p[y == 0] >= threshold))
    assert flagged_negatives <= 2
    assert variants.recall_at_specificity(y, p, 0.0) == (1.0, 0.0)
    recall, threshold = variants.recall_at_specificity(y, p, 1.0)  # no false alarm at all
    assert threshold > 0.95 and recall == 0.0


def test_model_speed_times_an_untrained_shape_of_the_shipped_recipe() -> None:
    model_speed = _load("model_speed")
    from training.scorer import Scorer

    shipped = Scorer.load(SHIPPED_MODEL)
    small = model_speed.untrained_like(shipped, "size=96,dropout=0.2")
    assert small.spec.size == 96 and small.card.recipe["network"]["dropout"] == 0.2
    assert small.spec.crop == shipped.spec.crop and small.threshold == shipped.threshold
    assert small.card.version.endswith("+untrained:size=96,dropout=0.2")
    probabilities = small.score_arrays(np.zeros((3, 96, 96), dtype=np.uint8))
    assert probabilities.shape == (3,) and np.all((probabilities >= 0) & (probabilities <= 1))
    one = model_speed.untrained_like(shipped, "members=1")  # whatever the shipped model's count
    pair = model_speed.untrained_like(shipped, "members=2")
    assert pair.model.count_params() == 2 * one.model.count_params()


def test_levels_splits_one_sources_figures_at_mid_level_slices() -> None:
    levels = _load("levels")
    # one patient, slices 1..9: tumour on 4..6 (mid), clear elsewhere; the model flags 1, 4, 5, 6
    paths = [f"/d/lgg/{'yes' if n in (4, 5, 6) else 'no'}/TCGA_A_1_2000_{n}.jpg" for n in range(1, 10)]
    probs = np.array([0.9, 0.1, 0.1, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1])
    rows = {name: m for name, m, _ in levels.level_rows(paths, probs, np.full(9, 0.5), levels.LGG_PATTERN)}
    assert rows["all"].n == 9 and rows["all"].recall == 1.0 and rows["all"].fp == 1
    assert rows["mid-level"].n == 5 and rows["mid-level"].specificity == 1.0  # slices 3..7
    assert rows["top and base"].n == 4 and rows["top and base"].fp == 1
    assert rows["tumour edges"].n == 2 and rows["other tumour"].n == 1  # slices 4 and 6; 5


def test_dicom_speed_times_the_archives_own_slices_as_jpeg(lgg_flair: Path, tmp_path: Path) -> None:
    """The JPEG baseline of bench/dicom_speed.py holds exactly the slices its DICOM archive holds."""
    import pydicom

    dicom_speed = _load("dicom_speed")
    summary = dicom_speed.build_archive(lgg_flair, tmp_path / "dicom", patients=2)
    copied = dicom_speed.jpeg_baseline(lgg_flair, tmp_path / "jpeg", patients=2)
    archived = set()
    for path in (tmp_path / "dicom").rglob("*"):
        if not path.is_file() or path.name in ("DICOMDIR", "labels.csv"):
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "MR":  # a slice per instance, or per frame of the multi-frame file
            frames = ds.get("PerFrameFunctionalGroupsSequence")
            numbers = [f.FrameContentSequence[0].FrameAcquisitionNumber for f in frames or []]
            for n in numbers or [ds.InstanceNumber]:
                archived.add(f"{ds.PatientID}_{ds.StudyDate}_{n}.jpg")
    assert len(copied) == summary.frames == len(archived)
    assert {p.name for p in copied} == archived
    assert all(p.read_bytes() == (lgg_flair / p.parent.name / p.name).read_bytes() for p in copied)


def test_threshold_rules_choose_on_validation_and_judge_on_test() -> None:
    """bench/threshold_rules.py: the shipped rule keeps 0.993 of validation tumours; without tumour
    edges it may rise above an edge slice's score; on every source it meets the target in each."""
    rules = _load("threshold_rules")
    y = np.array([1] * 10 + [0] * 10)
    p = np.array([0.9] * 8 + [0.2, 0.05] + [0.1] * 10)
    edge = np.zeros(20, dtype=bool)
    edge[9] = True  # the 0.05 tumour slice is a scan's last tumour slice
    source = np.array(["a"] * 5 + ["b"] * 5 + ["a"] * 10)
    assert rules.RULES["recall 0.993 (shipped)"](y, p, edge, source) == 0.05
    assert rules.RULES["0.993 without edges"](y, p, edge, source) == 0.2
    assert rules.RULES["0.98 on every source"](y, p, edge, source) == 0.05  # b's lowest tumour


def test_a_card_note_quotes_the_command_that_added_to_the_card() -> None:
    card_args = _load("card_args")
    args = card_args.card_parser("doc").parse_args(["m.keras", "a", "b", "--exclude", "lgg-flair"])
    assert card_args.command_line("card_loso.py", args, "--write") == (
        "python bench/card_loso.py m.keras a b --exclude lgg-flair --write"
    )


def test_dicom_decode_groups_the_archive_s_single_frame_slices_by_syntax(
    lgg_flair: Path, tmp_path: Path
) -> None:
    """bench/dicom_decode.py times every single-frame slice once, under its own transfer syntax."""
    dicom_decode = _load("dicom_decode")
    summary = dicom_decode.build_archive(lgg_flair, tmp_path, patients=2)
    groups = dicom_decode.by_syntax(tmp_path)
    assert {
        "Explicit VR Little Endian",
        "JPEG 2000 Image Compression (Lossless Only)",
        "RLE Lossless",
    } <= set(groups)
    frames_in_multi_frame = summary.frames - summary.instances + 1  # the Enhanced MR file's frames
    assert sum(len(paths) for paths in groups.values()) == summary.frames - frames_in_multi_frame
    calls: list[int] = []
    assert dicom_decode.per_item_ms([1, 2, 3], calls.append, threads=2) >= 0 and sorted(calls) == [1, 2, 3]
