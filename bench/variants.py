"""A recipe's variants side by side on the same held-out tasks: cross-source, and optionally K-fold CV.

    python bench/variants.py ../shared/data --holdout seed-253 --variant members=1
    python bench/variants.py ../shared/data --holdout '' --cv 5 --no-baseline \\
        --variant keep_last=false --predictions runs/early-stopped.npz
    python bench/variants.py ../shared/data --variant widths=32,64,128,256,dropout=0.2

Every variant (and the baseline, the recipe fitted again in the same run unless --no-baseline)
runs the same tasks as `brainscan train --cv K --cross-source SOURCE`: the same group-aware
carves, threshold tuned on each task's validation part by the recipe's policy, scored on its test
part (`training.crossval.run_task`). No final model is trained. Cross-source columns: recall and
specificity on the held-out source at the tuned threshold, its AUC, the held-out recall at the
threshold that keeps its specificity >= 0.80 (chosen with the held-out labels: what a
department's own labelled sample could reach, not a deployable figure), and the validation AUC on
the training sources. CV columns: pooled recall, specificity, AUC and missed tumours, as the card
reports them. Fits run in parallel processes (--workers, default one per task); each variant's
line is printed when its fits end, the table at the end. Variants may change the preprocessing
(the images are then decoded once per distinct preprocessing), not which images form a
near-duplicate group. Results go in docs/experiments.md, one row per experiment.
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
    from training.metrics import specificity_threshold

    if not (y == 0).any():
        return float("nan"), float("nan")
    threshold = specificity_threshold(y, p, specificity)
    if threshold is None:  # every negative may be flagged
        return 1.0, 0.0
    return float(np.mean(p[y == 1] >= threshold)), threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--recipe", default="shipped", help="the recipe the variants change")
    parser.add_argument("--holdout", default="seed-253", help="cross-source task ('' for none)")
    parser.add_argument("--cv", type=int, default=0, help="also run K-fold cross-validation")
    parser.add_argument(
        "--each-source", action="store_true", help="also leave each source out in turn (tested on it)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="comma-separated FIELD=VALUE settings (repeatable; tuples keep their commas)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip refitting the recipe itself")
    parser.add_argument("--exclude", action="append", default=[], help="leave out sources matching this")
    parser.add_argument("--workers", type=int, default=0, help="processes per variant (0: one per task)")
    parser.add_argument(
        "--predictions",
        type=Path,
        help="save held-out probabilities (.npz; a suffix per variant when several)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here as JSON too")
    args = parser.parse_args()

    from training.backend import import_backend

    import_backend()
    from training import crossval
    from training.prepare import prepare
    from training.recipes import RECIPES, split_assignments

    names = ([] if args.no_baseline else [""]) + args.variant
    if not names:
        sys.exit("nothing to run: give --variant or drop --no-baseline")
    recipes = [RECIPES[args.recipe].with_settings(split_assignments(v)) for v in names]
    reads = {(r.input, r.policy.seed, r.policy.group_threshold): r for r in recipes}
    prepared = {key: prepare(args.paths, r, exclude=args.exclude) for key, r in reads.items()}
    first = next(iter(prepared.values()))
    for other in prepared.values():  # a variant's preprocessing may differ, never its images or splits
        if other.loaded.records != first.loaded.records or not np.array_equal(
            other.grouping.groups, first.grouping.groups
        ):
            sys.exit("these variants' preprocessing groups the images differently: run them apart")
    runs = []
    for recipe in recipes:
        data = prepared[(recipe.input, recipe.policy.seed, recipe.policy.group_threshold)]
        tasks = crossval.cv_tasks(data, k=args.cv, recipe=recipe) if args.cv else []
        if args.holdout:
            tasks.append(crossval.cross_source_task(data, holdout=args.holdout, recipe=recipe))
        if args.each_source:
            tasks += crossval.leave_one_source_out_tasks(data, recipe=recipe)
        run = crossval.HeldOutRuns(data, recipe, workers=args.workers or max(2, len(tasks)))
        run.start(tasks)  # every variant's processes start now and share the cores
        runs.append((data, run))
    rows: list[dict[str, Any]] = []
    for index, (name, (data, run)) in enumerate(zip(names, runs, strict=True)):
        results = run.results()
        row: dict[str, Any] = {"variant": name or f"baseline (recipe {args.recipe})"}
        if args.predictions:
            path = args.predictions if len(names) == 1 else args.predictions.with_suffix(f".{index}.npz")
            crossval.save_predictions(path, data, results)
            row["predictions"] = str(path)
        folds = [r for r in results if r.task.name.startswith("fold")]
        if folds:
            summary = crossval.summarise_cv(data, folds)
            pooled = summary["pooled"]
            row.update(
                cv_recall=pooled["recall"],
                cv_specificity=pooled["specificity"],
                cv_auc=pooled["auc"],
                cv_missed=pooled["fn"],
                cv_false_alarms=pooled["fp"],
                cv={k: v for k, v in summary.items() if k in ("by_source", "mid_level")},
            )
        held = [r for r in results if not r.task.name.startswith("fold")]
        if held:
            row["held_out"] = {_source_of(r.task.name): _held_out_figures(data, r) for r in held}
        rows.append(row)
        print(json.dumps(row), flush=True)
    _table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _table(rows: list[dict[str, Any]]) -> None:
    if "cv_recall" in rows[0]:
        print(f"\n{'variant':<48} {'CV recall':>9} {'spec':>6} {'AUC':>7} {'missed':>7}")
        for r in rows:
            print(
                f"{r['variant']:<48} {r['cv_recall']:>9.4f} {r['cv_specificity']:>6.4f} "
                f"{r['cv_auc']:>7.4f} {r['cv_missed']:>7}"
            )
            parts = {
                **r["cv"].get("by_source", {}),
                **({"mid-level slices": r["cv"]["mid_level"]} if "mid_level" in r["cv"] else {}),
            }
            for name, m in parts.items():
                print(
                    f"  {name:<46} {m['recall'] if m['recall'] is not None else float('nan'):>9.4f} "
                    f"{m['specificity'] if m['specificity'] is not None else float('nan'):>6.4f} "
                    f"{m['auc'] if m['auc'] is not None else float('nan'):>7.4f} {m['fn']:>7}"
                )
    for source in rows[0].get("held_out", {}):
        print(f"\nheld-out source {source} (trained and validated without it)")
        print(
            f"{'variant':<48} {'recall':>7} {'spec':>6} {'AUC':>6} {'thr':>6} {'recall@spec.80':>15} "
            f"{'val AUC':>8}"
        )
        for r in rows:
            h = r["held_out"][source]
            print(
                f"{r['variant']:<48} {h['recall']:>7.3f} {h['specificity']:>6.3f} {h['auc']:>6.3f} "
                f"{h['threshold']:>6.3f} {h['recall_at_spec_080']:>15.3f} {h['validation_auc']:>8.4f}"
            )
            if "mid_level" in h:
                m = h["mid_level"]
                print(
                    f"  {'its mid-level slices':<46} {m['recall']:>7.3f} {m['specificity']:>6.3f} "
                    f"{m['auc']:>6.3f}"
                )


def _source_of(task_name: str) -> str:
    from training.crossval import LEFT_OUT

    return task_name.removeprefix(LEFT_OUT).removeprefix("cross-source ")


def _held_out_figures(data: Any, result: Any) -> dict[str, Any]:
    """A held-out source's figures at the threshold tuned without it (as the card reports them,
    `crossval.summarise_cross_source`), the recall a department's own labels could reach at
    specificity 0.80 (not deployable), and the training sources' validation AUC."""
    from training.crossval import summarise_cross_source
    from training.metrics import compute_metrics

    y, task = data.loaded.labels, result.task
    report = summarise_cross_source(data, result, _source_of(task.name))
    r80, t80 = recall_at_specificity(y[task.test], result.probs, 0.80)
    return {
        **report["all"],
        "recall_at_spec_080": r80,
        "threshold_at_spec_080": t80,
        "validation_auc": compute_metrics(y[task.val], result.val_probs, result.threshold).auc,
        "best_epoch": result.best_epoch,
        **({"mid_level": report["mid_level"]} if "mid_level" in report else {}),
    }


if __name__ == "__main__":
    main()
