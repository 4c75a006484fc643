"""Training variants side by side on the cross-source task: train without one source, test on it.

    python bench/cross_source.py ../shared/data --holdout seed-253 \\
        --variant contrast_augment=0.5 --variant contrast_augment=0.5,style_augment=0.5

Every variant (and the baseline, the shipped recipe, fitted again in the same run) trains on the
same group-aware train/validation carve of the other sources, tunes its threshold on that
validation part (recall target 0.99, as `brainscan train` does) and is scored on the held-out
source. Columns: recall and specificity on the held-out source at that tuned threshold, its AUC,
the held-out recall at the threshold that keeps its specificity >= 0.80 (chosen with the held-out
labels: what a department's own labelled sample could reach, not a deployable figure), and the
validation AUC on the training sources (did the change cost accuracy there?). Fits run in parallel
processes (--workers); each line is printed when its fit ends, the table at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def recall_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float) -> tuple[float, float]:
    """(recall, threshold) at the lowest threshold whose specificity on y == 0 is >= `specificity`."""
    negatives = np.sort(p[y == 0])
    if not len(negatives):
        return float("nan"), float("nan")
    allowed = int(np.floor((1 - specificity) * len(negatives)))  # false alarms we may keep
    if allowed >= len(negatives):
        return 1.0, 0.0
    # just above the (allowed + 1)-th highest negative: at most `allowed` negatives reach it
    threshold = float(np.nextafter(negatives[len(negatives) - 1 - allowed], np.inf))
    return float(np.mean(p[y == 1] >= threshold)), threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--holdout", default="seed-253")
    parser.add_argument("--variant", action="append", default=[],
                        help="comma-separated FIELD=VALUE overrides (repeatable)")
    parser.add_argument("--no-baseline", action="store_true", help="skip refitting the shipped recipe")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here as JSON too")
    args = parser.parse_args()

    from brainscan.cli.train import _configs, apply_overrides
    from training import crossval
    from training.metrics import compute_metrics
    from training.pipeline import prepare

    names = ([] if args.no_baseline else [""]) + args.variant
    configs = [apply_overrides(_configs("brainscan", None, {}), tuple(filter(None, v.split(","))))
               for v in names]
    spec = configs[0][0]
    if any(c[0] != spec for c in configs):
        sys.exit("variants must share the preprocessing (the images are decoded once)")
    data = prepare(args.paths, spec)
    y = data.loaded.labels
    runs = []
    for (_, model_cfg, cfg), _name in zip(configs, names, strict=True):
        task = crossval.cross_source_task(data, holdout=args.holdout, cfg=cfg)
        run = crossval.HeldOutRuns(data, model_cfg, cfg, workers=2 if args.workers > 1 else 1)
        run.start([task])  # one process each; they share the cores
        runs.append(run)
    rows: list[dict[str, Any]] = []
    for name, run in zip(names, runs, strict=True):
        result = run.results()[0]
        task = result.task
        test_y = y[task.test]
        m = compute_metrics(test_y, result.probs, result.threshold)
        r80, t80 = recall_at_specificity(test_y, result.probs, 0.80)
        val = compute_metrics(y[task.val], result.scores.val, result.threshold)
        rows.append({"variant": name or "baseline (shipped recipe)", "recall": m.recall,
                     "specificity": m.specificity, "auc": m.auc, "threshold": result.threshold,
                     "recall_at_spec_0.80": r80, "threshold_at_spec_0.80": t80,
                     "validation_auc": val.auc, "best_epoch": result.best_epoch})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nheld-out source {args.holdout}: {len(task.test)} images; trained on {len(task.train)}, "
          f"validated on {len(task.val)}")
    print(f"{'variant':<48} {'recall':>7} {'spec':>6} {'AUC':>6} {'thr':>6} {'recall@spec.80':>15} "
          f"{'val AUC':>8}")
    for r in rows:
        print(f"{r['variant']:<48} {r['recall']:>7.3f} {r['specificity']:>6.3f} {r['auc']:>6.3f} "
              f"{r['threshold']:>6.3f} {r['recall_at_spec_0.80']:>15.3f} {r['validation_auc']:>8.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
