"""How threshold-tuning policies do on held-out data, from saved held-out predictions.

    python bench/threshold_policy.py runs/predictions.npz \\
        [--targets 0.99,0.995,0.997] [--floors 0.95,0.97,0.98]

The .npz comes from `brainscan train --predictions` or `bench/variants.py --predictions`. A policy
is a validation recall target, optionally with a specificity floor (`tune_threshold`: the highest
threshold meeting the recall target, then lowered while validation specificity stays >= the
floor). For each policy every cross-validation fold tunes its threshold on its own validation part
(as `brainscan train` does) and is scored on its test fold; rows are the pooled held-out confusion
matrices. A cross-source task in the file gets the same policies, tuned on its validation part
(the training sources) and scored on the held-out source. The baseline is the shipped policy
(recall target 0.99, no floor) from the same file. Nothing is retrained, and no threshold is
fitted to test data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.metrics import compute_metrics, tune_threshold  # noqa: E402

Policy = tuple[float, float]  # (recall target, specificity floor)


def _tasks(data: np.lib.npyio.NpzFile, prefix: str) -> list[int]:
    return [i for i, name in enumerate(data["tasks"]) if str(name).startswith(prefix)]


def pooled(data: np.lib.npyio.NpzFile, policy: Policy, variant: str,
           prefix: str = "fold") -> dict[str, float]:
    """Pooled held-out figures of the tasks named `prefix...` when each tunes by `policy` on validation."""
    labels = data["labels"]
    flags, truth, probs = [], [], []
    for i in _tasks(data, prefix):
        val_idx, test_idx = data[f"{i}_val_idx"], data[f"{i}_test_idx"]
        threshold = tune_threshold(labels[val_idx], data[f"{i}_{variant}_val"], *policy)
        test_p = data[f"{i}_{variant}_test"]
        flags.append(test_p >= threshold)
        truth.append(labels[test_idx])
        probs.append(test_p)
    y = np.concatenate(truth)
    m = compute_metrics(y, np.concatenate(flags).astype(float), 0.5)
    auc = compute_metrics(y, np.concatenate(probs), 0.5).auc
    return {"recall": m.recall, "specificity": m.specificity, "fn": m.fn, "fp": m.fp, "auc": auc or 0.0}


def _name(policy: Policy) -> str:
    target, floor = policy
    return f"recall {target:.3f}" + (f", spec floor {floor:.2f}" if floor else "")


def _report(data: np.lib.npyio.NpzFile, policies: list[Policy], variant: str, prefix: str) -> None:
    base = pooled(data, (0.99, 0.0), variant, prefix)
    print(f"{'validation policy':>30} {'recall':>8} {'specificity':>12} {'missed':>7} {'false alarms':>13} "
          f"{'missed vs shipped':>18}")
    for policy in policies:
        row = pooled(data, policy, variant, prefix)
        ratio = f"{row['fn'] / base['fn']:.2f}x" if base["fn"] else "n/a"
        print(f"{_name(policy):>30} {row['recall']:>8.4f} {row['specificity']:>12.4f} {row['fn']:>7.0f} "
              f"{row['fp']:>13.0f} {ratio:>18}")
    print(f"AUC {base['auc']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--targets", default="0.99,0.993,0.995,0.997,0.999")
    parser.add_argument("--floors", default="0.95,0.96,0.97,0.98,0.99",
                        help="specificity floors, each with recall target 0.99")
    parser.add_argument("--variant", choices=["served", "other"], default="served")
    args = parser.parse_args()
    data = np.load(args.predictions)
    policies = [(float(t), 0.0) for t in args.targets.split(",") if t]
    policies += [(0.99, float(f)) for f in args.floors.split(",") if f]
    if _tasks(data, "fold"):
        print(f"cross-validation, {len(_tasks(data, 'fold'))} folds pooled")
        _report(data, policies, args.variant, "fold")
    for i in _tasks(data, "cross-source"):
        print(f"\n{data['tasks'][i]}: tuned on the training sources' validation part")
        _report(data, policies, args.variant, str(data["tasks"][i]))


if __name__ == "__main__":
    main()
