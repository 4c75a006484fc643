"""Helpers the benchmarks report figures with (the training runs themselves are too long for CI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def _fits(probabilities: list[np.ndarray], test_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Saved predictions (crossval.save_predictions' layout) of one fold: validation 0..5, test rest."""
    out = {
        "labels": np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1]),
        "groups": np.arange(10),
        "tasks": np.array(["fold 1/1"]),
        "0_val_idx": np.arange(6),
        "0_test_idx": test_idx,
    }
    val, test = probabilities
    for name in ("served", "other"):
        out.update({f"0_{name}_val": val, f"0_{name}_test": test, f"0_{name}_threshold": np.array(0.5)})
    return out


def test_an_ensemble_averages_members_and_tunes_on_the_averaged_validation_scores() -> None:
    policy = _load("threshold_policy")
    test_idx = np.arange(6, 10)
    # member a ranks the test part badly (a tumour below a clear slice), member b the other way
    a = _fits([np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8]), np.array([0.2, 0.7, 0.6, 0.9])], test_idx)
    b = _fits([np.array([0.2, 0.1, 0.2, 0.7, 0.8, 0.9]), np.array([0.3, 0.1, 0.4, 0.8])], test_idx)
    mean = policy.average([a, b])
    np.testing.assert_allclose(mean["0_served_test"], [0.25, 0.4, 0.5, 0.85])
    np.testing.assert_array_equal(mean["0_test_idx"], test_idx)
    alone = policy.pooled(a, (1.0, 0.0), "served")  # threshold 0.6 flags the clear slice at 0.7
    assert (alone["recall"], alone["specificity"], alone["auc"]) == (1.0, 0.5, 0.75)
    together = policy.pooled(mean, (1.0, 0.0), "served")  # threshold: lowest val tumour, 0.65
    assert (together["recall"], together["specificity"], together["auc"]) == (0.5, 1.0, 1.0)
    # hindsight: every held-out tumour kept (0.98 of 2 needs both), threshold set on the test part
    assert (alone["hindsight_0.98"], together["hindsight_0.98"]) == (0.5, 1.0)


def test_members_must_share_their_splits() -> None:
    policy = _load("threshold_policy")
    scores = [np.linspace(0, 1, 6), np.linspace(0, 1, 4)]
    other = _fits(scores, np.array([6, 7, 9, 8]))
    try:
        policy.average([_fits(scores, np.arange(6, 10)), other])
    except ValueError as error:
        assert "0_test_idx" in str(error)
    else:
        raise AssertionError("members with different splits were averaged")


def test_model_speed_times_an_untrained_shape_of_the_shipped_recipe() -> None:
    model_speed = _load("model_speed")
    from training.scorer import Scorer

    shipped = Scorer.load(BENCH.parent / "models" / "brainscan.keras")
    small = model_speed.untrained_like(shipped, "size=96,input_size=96")
    assert small.spec.size == 96 and small.card.architecture["input_size"] == 96
    assert small.spec.crop == shipped.spec.crop and small.threshold == shipped.threshold
    assert small.card.version.endswith("+untrained:size=96,input_size=96")
    probabilities = small.score_arrays(np.zeros((3, 96, 96), dtype=np.uint8))
    assert probabilities.shape == (3,) and np.all((probabilities >= 0) & (probabilities <= 1))
    one = model_speed.untrained_like(shipped, "members=1")  # whatever the shipped model's count
    pair = model_speed.untrained_like(shipped, "members=2")
    assert pair.model.count_params() == 2 * one.model.count_params()
    assert model_speed.untrained_like(shipped, "input_size=96").spec.size == 96  # one setting


def _two_fold_predictions(test_probs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Saved predictions of two folds over 12 images: fold 1 tests 0..5, fold 2 tests 6..11; each
    validates on the other half with perfectly ranked scores, so the threshold is the lowest
    validation tumour's score (0.6)."""
    labels = np.array([1, 1, 1, 0, 0, 0] * 2)
    names = ["glioma", "glioma", "yes", "notumor", "notumor", "no"] * 2
    relpaths = np.array([f"data/src/src/{n}/img{i}.png" for i, n in enumerate(names)])
    val_probs = np.where(labels[:6] == 1, 0.6, 0.1)
    out = {
        "labels": labels,
        "groups": np.arange(12),
        "relpaths": relpaths,
        "tasks": np.array(["fold 1/2", "fold 2/2"]),
    }
    for i, (val, test) in enumerate(((np.arange(6, 12), np.arange(6)), (np.arange(6), np.arange(6, 12)))):
        out.update({f"{i}_val_idx": val, f"{i}_test_idx": test})
        for name in ("served", "other"):
            out.update(
                {
                    f"{i}_{name}_val": val_probs,
                    f"{i}_{name}_test": test_probs[i],
                    f"{i}_{name}_threshold": np.array(0.6),
                }
            )
    return out


def test_errors_finds_each_fits_misses_and_false_alarms_and_how_deep_a_miss_sits() -> None:
    errors = _load("errors")
    # fold 1: image 2 (a tumour) at 0.2 is missed, below 1 of the 3 negatives (0.3); image 5
    # (clear) at 0.7 is a false alarm; fold 2: everything right
    data = _two_fold_predictions(
        (np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.7]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1]))
    )
    fit = errors.fit_errors(data)
    assert fit.missed == {2} and fit.false_alarms == {5}
    assert fit.depth[2] == pytest.approx(2 / 3)  # 0.3 and 0.7 score above it
    assert len(fit.probs) == 12 and fit.probs[4] == 0.3
    other = errors.fit_errors(
        _two_fold_predictions(
            (np.array([0.9, 0.1, 0.2, 0.1, 0.1, 0.1]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.9]))
        )
    )
    assert other.missed == {1, 2} and other.false_alarms == {11}
    assert errors.folder("data/src/src/glioma/img0.png") == "src/glioma"
    assert errors.folder("seed-253/yes/Y 1.jpg") == "yes"
    with pytest.raises(ValueError, match="no cross-validation folds"):
        errors.fit_errors({**data, "tasks": np.array(["cross-source seed-253", "x"])})


def test_errors_report_and_contact_sheet_show_what_every_fit_gets_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    errors = _load("errors")
    first = errors.fit_errors(
        _two_fold_predictions(
            (np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.7]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1]))
        )
    )
    second = errors.fit_errors(
        _two_fold_predictions(
            (np.array([0.9, 0.1, 0.2, 0.1, 0.1, 0.1]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.9]))
        )
    )
    relpaths = _two_fold_predictions((np.zeros(6), np.zeros(6)))["relpaths"]
    errors.report([Path("a.npz"), Path("b.npz")], [first, second], relpaths)
    text = capsys.readouterr().out
    assert "errors at the rule validation recall >= 0.99, by folder" in text
    assert "missed tumours: 1 made by all 2 fits, 2 by at least one" in text
    assert "false alarms: 0 made by all 2 fits, 2 by at least one" in text
    assert "median 0.333" in text  # 2/3 of the clear slices above it in one fit, none in the other
    root = tmp_path / "data"
    yy, xx = np.mgrid[:64, :64]
    head = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 600, 60 + 2 * xx, 0).astype(np.uint8)
    for rel in relpaths:
        path = root.joinpath(*str(rel).split("/")[2:])  # the folder training was given is src's parent
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(head).save(path)
    assert errors.resolve(root, str(relpaths[2])) == root / "src" / "yes" / "img2.png"
    assert errors.resolve(root, "data/elsewhere/x.png") is None
    sheet = tmp_path / "sheet.png"
    assert errors.contact_sheet(sheet, root, relpaths, [first, second], size=64) == 1  # image 2
    with Image.open(sheet) as img:
        assert img.size == (8 * 68, 64 + 34)
        assert np.asarray(img)[:64, :64].max() == 255  # the slice, stretched as the model sees it


def test_errors_set_aside_recomputes_the_figures_without_doubtful_images(tmp_path: Path) -> None:
    errors = _load("errors")
    data = _two_fold_predictions(
        (np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.7]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1]))
    )
    fit = errors.fit_errors(data)  # image 2 missed, image 5 a false alarm
    listed = tmp_path / "suspect.txt"
    listed.write_text("# doubtful labels\nimg5.png  # the false alarm\n\nnot-held-out.png\n")
    names = errors.read_names(listed)
    assert names == {"img5.png", "not-held-out.png"}
    full, dropped = errors.without(fit, data["labels"], data["relpaths"], set())
    assert dropped == 0 and full == {"recall": 5 / 6, "specificity": 5 / 6}
    rest, dropped = errors.without(fit, data["labels"], data["relpaths"], names)
    assert dropped == 1 and rest == {"recall": 5 / 6, "specificity": 1.0}
    # the shipped list names real files: 20 of them, none twice
    shipped = errors.read_names(BENCH / "suspect_labels.txt")
    assert len(shipped) == 20 and all(n.lower().endswith((".jpg", ".jpeg")) for n in shipped)


@pytest.mark.data
def test_the_suspect_label_list_names_no_tumour_images_of_the_data(shared_data: Path) -> None:
    errors = _load("errors")
    names = errors.read_names(BENCH / "suspect_labels.txt")
    found = {p.name: p.parent.name for p in shared_data.rglob("*") if p.name in names}
    assert set(found) == names
    assert set(found.values()) == {"notumor", "no"}  # all labelled 'no tumour' in the data


def test_unread_half_scores_cross_source_tasks_on_the_slices_adaptation_never_read() -> None:
    from training.domain import adaptation_split

    policy = _load("threshold_policy")
    data = _fits([np.linspace(0, 1, 6), np.array([0.2, 0.9, 0.1, 0.8])], np.arange(6, 10))
    data["tasks"] = np.array(["cross-source x"])
    data["groups"] = np.array([0, 1, 2, 3, 4, 5, 6, 6, 7, 8])  # test groups 6, 7, 8
    cut = policy.unread_half(data, seed=5)
    read, unread = adaptation_split(data["groups"], np.arange(6, 10), seed=5)
    np.testing.assert_array_equal(cut["0_test_idx"], unread)
    assert not set(cut["0_test_idx"]) & set(read)
    where = [int(i) - 6 for i in unread]  # each kept image keeps its own probability
    np.testing.assert_array_equal(cut["0_served_test"], data["0_served_test"][where])
    np.testing.assert_array_equal(cut["0_val_idx"], data["0_val_idx"])
    fold = _fits([np.linspace(0, 1, 6), np.array([0.2, 0.9, 0.1, 0.8])], np.arange(6, 10))
    np.testing.assert_array_equal(policy.unread_half(fold, seed=5)["0_test_idx"], np.arange(6, 10))
