"""Honest accuracy figures: group-aware K-fold cross-validation and a cross-source check."""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from training.metrics import compute_metrics, tune_threshold
from training.model import ModelConfig
from training.pipeline import PreparedData, log
from training.splits import carve, group_kfold
from training.train import TrainConfig, fit, predict


def _fit_and_score(
    data: PreparedData, train_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray,
    model_cfg: ModelConfig, cfg: TrainConfig, prefix: str,
) -> tuple[np.ndarray, float, int]:
    """Train on train_idx, tune the threshold on val_idx, return test probabilities."""
    x, y = data.loaded.inputs, data.loaded.labels
    result = fit(x[train_idx], y[train_idx], x[val_idx], y[val_idx],
                 model_cfg=model_cfg, cfg=cfg, prefix=prefix)
    threshold = tune_threshold(y[val_idx], predict(result.model, x[val_idx]), cfg.recall_target)
    return predict(result.model, x[test_idx]), threshold, result.best_epoch


def cross_validate(
    data: PreparedData, *, k: int, model_cfg: ModelConfig, cfg: TrainConfig
) -> dict[str, Any]:
    """K folds by group; each fold's model tunes its threshold on a group-disjoint validation part.

    Pooled figures sum the K confusion matrices (each at its own fold's tuned threshold); the
    pooled AUC ranks all out-of-fold probabilities together.
    """
    y, groups = data.loaded.labels, data.grouping.groups
    oof = np.zeros(len(y))
    flagged = np.zeros(len(y), dtype=bool)
    folds: list[dict[str, Any]] = []
    for i, (rest, test_idx) in enumerate(group_kfold(y, groups, k, cfg.seed)):
        val_share = cfg.val_fraction / (1 - 1 / k)
        train_idx, val_idx = carve(rest, y, groups, val_share, cfg.seed + i)
        log(f"fold {i + 1}/{k}: train {len(train_idx)}, validation {len(val_idx)}, "
            f"test {len(test_idx)}")
        probs, threshold, best = _fit_and_score(
            data, train_idx, val_idx, test_idx, model_cfg, cfg, f"[fold {i + 1}/{k}] ")
        oof[test_idx], flagged[test_idx] = probs, probs >= threshold
        m = compute_metrics(y[test_idx], probs, threshold)
        folds.append({**m.to_dict(), "best_epoch": best})
        log(f"fold {i + 1}: recall {m.recall:.4f} specificity {m.specificity:.4f} "
            f"AUC {m.auc} at threshold {threshold:.4f}")
    return {"k": k, "folds": folds, **_pooled(y, oof, flagged, folds)}


def _pooled(y: np.ndarray, probs: np.ndarray, flagged: np.ndarray,
            folds: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = compute_metrics(y, flagged.astype(float), 0.5).to_dict()  # counts at fold thresholds
    pooled["auc"] = compute_metrics(y, probs, 0.5).auc
    pooled["threshold"] = None
    per_fold = {key: [f[key] for f in folds] for key in ("recall", "specificity", "auc")}
    spread = {f"{key}_mean": float(np.mean(v)) for key, v in per_fold.items()}
    spread.update({f"{key}_std": float(np.std(v)) for key, v in per_fold.items()})
    return {"pooled": pooled, **spread}


def cross_source(
    data: PreparedData, *, holdout: str, model_cfg: ModelConfig, cfg: TrainConfig
) -> dict[str, Any]:
    """Train without one source (e.g. seed-253), test on it.

    Images of the held-out source whose near-duplicate group also holds training images are
    reported separately, since they are not truly unseen.
    """
    y, groups = data.loaded.labels, data.grouping.groups
    held = np.array([fnmatch.fnmatch(r.source, f"*{holdout}*") for r in data.loaded.records])
    if not held.any():
        raise ValueError(f"no images from a source matching {holdout!r}")
    rest, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    train_idx, val_idx = carve(rest, y, groups, cfg.val_fraction, cfg.seed)
    log(f"cross-source: train {len(train_idx)}, validation {len(val_idx)}, "
        f"held-out {holdout} {len(test_idx)}")
    probs, threshold, _ = _fit_and_score(
        data, train_idx, val_idx, test_idx, model_cfg, cfg, "[cross-source] ")
    seen_groups = set(groups[rest].tolist())
    unseen = np.array([g not in seen_groups for g in groups[test_idx]])
    report: dict[str, Any] = {
        "holdout": holdout,
        "all": compute_metrics(y[test_idx], probs, threshold).to_dict(),
        "images_with_a_twin_in_training": int((~unseen).sum()),
    }
    if unseen.any() and len(np.unique(y[test_idx][unseen])) > 0:
        report["without_twins"] = compute_metrics(
            y[test_idx][unseen], probs[unseen], threshold).to_dict()
    return report
