"""How threshold-tuning policies do on held-out folds, from `brainscan train --predictions` output.

    python bench/threshold_policy.py runs/predictions.npz [--targets 0.99,0.995,0.997]

For each validation recall target, every cross-validation fold tunes its threshold on its own
validation part (as `brainscan train` does) and is scored on its test fold; the rows are the
pooled held-out confusion matrices. The baseline is the shipped policy (target 0.99) in the same
file. Nothing is retrained and no threshold is fitted to the test folds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.metrics import compute_metrics, tune_threshold  # noqa: E402


def pooled(data: np.lib.npyio.NpzFile, target: float, variant: str) -> dict[str, float]:
    """Pooled held-out figures when each fold tunes its threshold for `target` on validation."""
    labels = data["labels"]
    flags, truth, probs = [], [], []
    for i, name in enumerate(data["tasks"]):
        if not str(name).startswith("fold"):
            continue
        val_idx, test_idx = data[f"{i}_val_idx"], data[f"{i}_test_idx"]
        threshold = tune_threshold(labels[val_idx], data[f"{i}_{variant}_val"], target)
        test_p = data[f"{i}_{variant}_test"]
        flags.append(test_p >= threshold)
        truth.append(labels[test_idx])
        probs.append(test_p)
    y = np.concatenate(truth)
    m = compute_metrics(y, np.concatenate(flags).astype(float), 0.5)
    auc = compute_metrics(y, np.concatenate(probs), 0.5).auc
    return {"recall": m.recall, "specificity": m.specificity, "fn": m.fn, "fp": m.fp, "auc": auc or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--targets", default="0.99,0.993,0.995,0.997,0.999")
    parser.add_argument("--variant", choices=["served", "other"], default="served")
    args = parser.parse_args()
    data = np.load(args.predictions)
    base = pooled(data, 0.99, args.variant)
    print(f"{'validation target':>18} {'recall':>8} {'specificity':>12} {'missed':>7} {'false alarms':>13} "
          f"{'missed vs 0.99':>15}")
    for target in (float(t) for t in args.targets.split(",")):
        row = pooled(data, target, args.variant)
        ratio = row["fn"] / base["fn"] if base["fn"] else float("nan")
        print(f"{target:>18.3f} {row['recall']:>8.4f} {row['specificity']:>12.4f} {row['fn']:>7.0f} "
              f"{row['fp']:>13.0f} {ratio:>14.2f}x")
    print(f"pooled out-of-fold AUC {base['auc']:.4f}")


if __name__ == "__main__":
    main()
