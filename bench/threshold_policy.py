"""How threshold-tuning policies do on held-out data, from saved held-out predictions.

    python bench/threshold_policy.py runs/predictions.npz \\
        [--targets 0.99,0.995,0.997] [--floors 0.95,0.97,0.98]
    python bench/threshold_policy.py runs/ens.0.npz runs/ens.1.npz   # an ensemble of the two

The .npz comes from `brainscan train --predictions` or `bench/variants.py --predictions`. A policy
is a validation recall target, optionally with a specificity floor (`tune_threshold`: the highest
threshold meeting the recall target, then lowered while validation specificity stays >= the
floor). For each policy every cross-validation fold tunes its threshold on its own validation part
(as `brainscan train` does) and is scored on its test fold; rows are the pooled held-out confusion
matrices. A cross-source task in the file gets the same policies, tuned on its validation part
(the training sources) and scored on the held-out source. The baseline is the shipped policy
(recall target 0.99, no floor) from the same file. Nothing is retrained, and no threshold is
fitted to test data.

The "hindsight" line compares models at the operating point free of threshold-tuning noise: the
specificity at exactly the held-out recall named, with one threshold chosen on the pooled
held-out probabilities themselves. It ranks models; no deployed threshold could be set that way.

Local calibration (cross-source tasks): what a department that labels a sample of its own images
would get. The held-out source is cut in two by near-duplicate group (stratified); the threshold
is tuned on one half, by a recall target or as the lowest threshold whose specificity on that
half's negatives is >= a floor, and scored on the other half; then the halves swap and the two
matrices are pooled. Repeated over --repeats random cuts, median reported.

Domain adaptation (`bench/variants.py --variant domain_adapt=...`): such a fit read half of the
held-out source's groups without labels. `--unread-half` scores every cross-source figure on the
other half only (`training.domain.adaptation_split`, the seed of the fits), so adapted and plain
fits compare on slices no fit has seen.

Ensembles: given several files from fits that share every split (`bench/variants.py --variant
member=1 ...`: the same tasks, initialisation and augmentation re-seeded), the members' validation
and test probabilities are averaged per image, and every figure above is that of the averaged
model, its thresholds tuned on the averaged validation probabilities as for a single model. Each
member's own pooled figures (shipped policy) are printed first, for comparison in the same run.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.metrics import compute_metrics, specificity_threshold, tune_threshold  # noqa: E402
from training.splits import carve  # noqa: E402

Policy = tuple[float, float]  # (recall target, specificity floor)
Predictions = Mapping[str, np.ndarray]  # an opened .npz from crossval.save_predictions, or an average
HINDSIGHT_RECALLS = (0.98, 0.99)
_PROBABILITIES = re.compile(r"^\d+_(served|other)_(val|test)$")


def check_same_splits(members: list[Predictions]) -> None:
    """Raise ValueError unless the files come from the same tasks on the same images (same labels,
    groups, names, task names and split indices): fits whose errors or probabilities compare."""
    first = members[0]
    for other in members[1:]:
        if set(other.keys()) != set(first.keys()):
            raise ValueError("members hold different tasks")
        for key in first:
            if (
                not _PROBABILITIES.match(key)
                and not key.endswith("_threshold")
                and not np.array_equal(first[key], other[key])
            ):
                raise ValueError(f"members differ in {key!r}: not fits of the same splits")


def average(members: list[Predictions]) -> dict[str, np.ndarray]:
    """One set of predictions whose probabilities are the members' mean per image. The members must
    come from the same tasks on the same images (`check_same_splits`)."""
    check_same_splits(members)
    first = members[0]
    out = {key: np.asarray(first[key]) for key in first}
    for key in out:
        if _PROBABILITIES.match(key):
            out[key] = np.mean([np.asarray(m[key], dtype=np.float64) for m in members], axis=0)
    return out


def unread_half(data: Predictions, seed: int) -> dict[str, np.ndarray]:
    """The predictions with each cross-source task's test part cut to the half of its groups that
    domain adaptation never reads (the same cut `training.crossval.cross_source_task` makes)."""
    from training.domain import adaptation_split

    out = {key: np.asarray(data[key]) for key in data}
    for i in task_indices(data, "cross-source"):
        test_idx = out[f"{i}_test_idx"]
        keep = np.isin(test_idx, adaptation_split(out["groups"], test_idx, seed)[1])
        out[f"{i}_test_idx"] = test_idx[keep]
        for variant in ("served", "other"):
            out[f"{i}_{variant}_test"] = out[f"{i}_{variant}_test"][keep]
    return out


def task_indices(data: Predictions, prefix: str) -> list[int]:
    """The saved tasks whose name starts with `prefix` ('fold', 'cross-source')."""
    return [i for i, name in enumerate(data["tasks"]) if str(name).startswith(prefix)]


def pooled(data: Predictions, policy: Policy, variant: str, prefix: str = "fold") -> dict[str, float]:
    """Pooled held-out figures of the tasks named `prefix...` when each tunes by `policy` on validation."""
    labels = data["labels"]
    flags, truth, probs = [], [], []
    for i in task_indices(data, prefix):
        val_idx, test_idx = data[f"{i}_val_idx"], data[f"{i}_test_idx"]
        threshold = tune_threshold(labels[val_idx], data[f"{i}_{variant}_val"], *policy)
        test_p = data[f"{i}_{variant}_test"]
        flags.append(test_p >= threshold)
        truth.append(labels[test_idx])
        probs.append(test_p)
    y, p = np.concatenate(truth), np.concatenate(probs)
    m = compute_metrics(y, np.concatenate(flags).astype(float), 0.5)
    hindsight = {
        f"hindsight_{r}": compute_metrics(y, p, tune_threshold(y, p, r)).specificity
        for r in HINDSIGHT_RECALLS
    }
    return {
        "recall": m.recall,
        "specificity": m.specificity,
        "fn": m.fn,
        "fp": m.fp,
        "auc": compute_metrics(y, p, 0.5).auc or 0.0,
        **hindsight,
    }


def _name(policy: Policy) -> str:
    target, floor = policy
    return f"recall {target:.3f}" + (f", spec floor {floor:.2f}" if floor else "")


def _report(data: Predictions, policies: list[Policy], variant: str, prefix: str) -> None:
    base = pooled(data, (0.99, 0.0), variant, prefix)
    print(
        f"{'validation policy':>30} {'recall':>8} {'specificity':>12} {'missed':>7} {'false alarms':>13} "
        f"{'missed vs shipped':>18}"
    )
    for policy in policies:
        row = pooled(data, policy, variant, prefix)
        ratio = f"{row['fn'] / base['fn']:.2f}x" if base["fn"] else "n/a"
        print(
            f"{_name(policy):>30} {row['recall']:>8.4f} {row['specificity']:>12.4f} {row['fn']:>7.0f} "
            f"{row['fp']:>13.0f} {ratio:>18}"
        )
    print(f"AUC {base['auc']:.4f}")
    at = ", ".join(f"{base[f'hindsight_{r}']:.4f} at recall {r}" for r in HINDSIGHT_RECALLS)
    print(
        f"hindsight specificity {at} (one threshold set on the pooled held-out probabilities: "
        "compares ranking at the operating point; not a deployable figure)"
    )


def local_calibration(data: Predictions, task: int, variant: str, repeats: int) -> None:
    labels, groups = data["labels"], data["groups"]
    test_idx, probs = data[f"{task}_test_idx"], data[f"{task}_{variant}_test"]
    where = {int(i): n for n, i in enumerate(test_idx)}
    rules = [("recall", 0.99), ("recall", 0.95), ("specificity", 0.80), ("specificity", 0.90)]
    print(
        f"\nlocal calibration on half of {data['tasks'][task]} (by group), scored on the other half, "
        f"halves swapped and pooled; median of {repeats} cuts"
    )
    print(f"{'rule':>36} {'recall':>8} {'specificity':>12}")
    for kind, value in rules:
        figures = []
        for r in range(repeats):
            a, b = carve(test_idx, labels, groups, 0.5, seed=r)
            flags, truth = [], []
            for tune, score in ((a, b), (b, a)):
                pt = probs[[where[int(i)] for i in tune]]
                threshold = (
                    tune_threshold(labels[tune], pt, value)
                    if kind == "recall"
                    else specificity_threshold(labels[tune], pt, value) or 0.0
                )
                flags.append(probs[[where[int(i)] for i in score]] >= threshold)
                truth.append(labels[score])
            m = compute_metrics(np.concatenate(truth), np.concatenate(flags).astype(float), 0.5)
            figures.append((m.recall, m.specificity))
        recall, spec = np.median(np.array(figures), axis=0)
        print(f"{f'{kind} {value:.2f} on the local half':>36} {recall:>8.4f} {spec:>12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "predictions",
        type=Path,
        nargs="+",
        help="one file, or several fits of the same splits to average (an ensemble)",
    )
    parser.add_argument("--targets", default="0.99,0.993,0.995,0.997,0.999")
    parser.add_argument(
        "--floors",
        default="0.95,0.96,0.97,0.98,0.99",
        help="specificity floors, each with recall target 0.99",
    )
    parser.add_argument("--variant", choices=["served", "other"], default="served")
    parser.add_argument("--repeats", type=int, default=20, help="random cuts for local calibration")
    parser.add_argument(
        "--unread-half",
        action="store_true",
        help="score cross-source tasks on the half that domain adaptation never reads",
    )
    parser.add_argument("--seed", type=int, default=1337, help="the fits' seed (for --unread-half)")
    args = parser.parse_args()
    members: list[Predictions] = [np.load(path) for path in args.predictions]
    if args.unread_half:
        members = [unread_half(m, args.seed) for m in members]
    data: Predictions = members[0]
    if len(members) > 1:
        print(f"each member alone (recall target 0.99), then the mean of the {len(members)} members")
        for path, member in zip(args.predictions, members, strict=True):
            for prefix in ("fold", "cross-source"):
                if task_indices(member, prefix):
                    row = pooled(member, (0.99, 0.0), args.variant, prefix)
                    print(
                        f"  {path.name:>24} {prefix:>12}: recall {row['recall']:.4f}  specificity "
                        f"{row['specificity']:.4f}  AUC {row['auc']:.4f}  missed {row['fn']:.0f}"
                    )
        data = average(members)
        print()
    policies = [(float(t), 0.0) for t in args.targets.split(",") if t]
    policies += [(0.99, float(f)) for f in args.floors.split(",") if f]
    if task_indices(data, "fold"):
        print(f"cross-validation, {len(task_indices(data, 'fold'))} folds pooled")
        _report(data, policies, args.variant, "fold")
    for i in task_indices(data, "cross-source"):
        part = " (only the half that domain adaptation never reads)" if args.unread_half else ""
        print(f"\n{data['tasks'][i]}{part}: tuned on the training sources' validation part")
        _report(data, policies, args.variant, str(data["tasks"][i]))
        local_calibration(data, i, args.variant, args.repeats)


if __name__ == "__main__":
    main()
