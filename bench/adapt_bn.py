"""Cross-source check of test-time batch-normalisation adaptation (training/adapt.py), no labels used.

    python bench/adapt_bn.py ../shared/data --models runs/adapt            # fits, then measures
    python bench/adapt_bn.py ../shared/data --models runs/adapt            # again: reuses the fits

Fits the shipped recipe's ensemble members on every source but --holdout (the same carve as
`brainscan train --cross-source`), saves each member under --models (an existing file is reused),
and scores the held-out source at the threshold tuned on the training sources' validation part
(--recall-target, the shipped 0.993):

- as trained (the shipped figures' protocol);
- adapted on all held-out slices (transductive: the slices scored are the slices adapted on), and
  with only each network's first --depths batch normalisation layers adapted (intensity level);
- adapted on one half of the held-out source's near-duplicate groups, scored on the other half,
  both ways round, over --cuts random halvings (the figures are medians);
- adapted on the held-out `no` slices only, and on its `yes` slices only: how much the figures
  depend on the share of tumours in the adaptation sample (a label-free deployment cannot pick it);
- control: adapted on the training sources' validation part and scored there (should change
  little), with the threshold re-tuned on the adapted scores.

Recall and specificity are at the tuned threshold; "recall@.80" is the held-out recall where its
specificity is 0.80, chosen with its labels (the ranking, not a deployable figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def _fit_member(
    inputs_path: str,
    y: np.ndarray,
    sources: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    threads: int,
    out: str,
) -> str:
    from training.backend import import_backend

    import_backend(threads)
    from training.model import ModelConfig
    from training.train import TrainConfig, fit

    x = np.load(inputs_path, mmap_mode="r")
    result = fit(
        x[train],
        y[train],
        x[val],
        y[val],
        model_cfg=ModelConfig.from_dict(model_cfg),
        cfg=TrainConfig.from_dict(cfg),
        prefix=f"[{Path(out).stem}] ",
        sources=sources[train],
    )
    result.model.save(out)
    return out


def _row(name: str, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    from variants import recall_at_specificity

    from training.metrics import compute_metrics

    m = compute_metrics(y, p, threshold)
    return {
        "case": name,
        "n": len(y),
        "recall": m.recall,
        "specificity": m.specificity,
        "auc": m.auc,
        "recall_at_spec_080": recall_at_specificity(y, p, 0.80)[0],
        "threshold": threshold,
        "median_yes": float(np.median(p[y == 1])) if (y == 1).any() else None,
        "median_no": float(np.median(p[y == 0])) if (y == 0).any() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--holdout", default="seed-253")
    parser.add_argument("--models", type=Path, required=True, help="folder for the members' fits")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=["keep_last=true"],
        help="recipe overrides as in `brainscan train --set` (default keep_last=true)",
    )
    parser.add_argument("--recall-target", type=float, default=0.993)
    parser.add_argument("--cuts", type=int, default=3, help="random group halvings of the held-out source")
    parser.add_argument(
        "--depths",
        type=int,
        nargs="*",
        default=[1, 4],
        help="also adapt only each network's first N batch normalisation layers",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from brainscan.cli.train import _configs, apply_overrides
    from training import crossval
    from training.backend import threads_per_process
    from training.pipeline import log, prepare

    spec, model_cfg, cfg = apply_overrides(_configs("brainscan"), tuple(args.set))
    data = prepare(args.paths, spec)
    task = crossval.cross_source_task(data, holdout=args.holdout, cfg=cfg)
    x, y, groups = data.loaded.inputs, data.loaded.labels, data.grouping.groups
    args.models.mkdir(parents=True, exist_ok=True)
    paths = [args.models / f"member{cfg.member + i}.keras" for i in range(args.members)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        log(
            f"fitting members {missing} without {args.holdout} ({len(task.train)} train, "
            f"{len(task.val)} validation)"
        )
        single = dataclasses.replace(model_cfg, members=1)
        with tempfile.TemporaryDirectory(prefix="brainscan-adapt-") as tmp:
            inputs_path = str(Path(tmp) / "inputs.npy")
            np.save(inputs_path, x)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(missing), mp_context=ctx) as pool:
                futures = [
                    pool.submit(
                        _fit_member,
                        inputs_path,
                        y,
                        data.loaded.sources,
                        task.train,
                        task.val,
                        single.to_dict(),
                        dataclasses.replace(cfg, member=cfg.member + i).to_dict(),
                        threads_per_process(len(missing)),
                        str(paths[i]),
                    )
                    for i in missing
                ]
                for f in futures:
                    log(f"saved {f.result()}")

    import keras

    from training.adapt import adapt_batchnorm
    from training.metrics import tune_threshold
    from training.train import predict

    nets = [keras.models.load_model(p) for p in paths]

    def scores(models: list[keras.Model], idx: np.ndarray) -> np.ndarray:
        return np.mean([predict(m, x[idx]) for m in models], axis=0)

    def adapted(idx: np.ndarray, depth: int | None = None) -> list[keras.Model]:
        return [adapt_batchnorm(m, x[idx], depth=depth) for m in nets]

    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        log(json.dumps(row))  # progress: each case as it is measured

    test, val = task.test, task.val
    p_val = scores(nets, val)
    threshold = tune_threshold(y[val], p_val, args.recall_target)
    record(_row("as trained", y[test], scores(nets, test), threshold))
    record(_row("adapted on all held-out slices", y[test], scores(adapted(test), test), threshold))
    for depth in args.depths:
        record(
            _row(
                f"adapted on all held-out slices, first {depth} BN layers only",
                y[test],
                scores(adapted(test, depth), test),
                threshold,
            )
        )
    for label, name in ((0, "no"), (1, "yes")):
        record(
            _row(
                f"adapted on held-out '{name}' only",
                y[test],
                scores(adapted(test[y[test] == label]), test),
                threshold,
            )
        )
    rng = np.random.default_rng(0)
    unique = np.unique(groups[test])
    halves = []
    for _ in range(args.cuts):
        chosen = rng.permutation(unique)[: len(unique) // 2]
        a = test[np.isin(groups[test], chosen)]
        b = test[~np.isin(groups[test], chosen)]
        for fit_idx, score_idx in ((a, b), (b, a)):
            halves.append(_row("", y[score_idx], scores(adapted(fit_idx), score_idx), threshold))
    medians = {
        k: float(np.median([h[k] for h in halves]))
        for k in ("n", "recall", "specificity", "auc", "recall_at_spec_080", "median_yes", "median_no")
    }
    record(
        {
            "case": f"adapted on half the groups, scored on the other (median of {len(halves)})",
            **medians,
            "threshold": threshold,
        }
    )
    record(_row("control: validation part as trained", y[val], p_val, threshold))
    p_val_adapted = scores(adapted(val), val)
    record(
        _row(
            "control: validation part adapted on itself, threshold re-tuned",
            y[val],
            p_val_adapted,
            tune_threshold(y[val], p_val_adapted, args.recall_target),
        )
    )
    print(
        f"\nheld-out source {args.holdout}: {len(test)} slices, threshold {threshold:.4f} "
        f"(validation recall target {args.recall_target})"
    )
    print(
        f"{'case':<72} {'recall':>7} {'spec':>6} {'AUC':>6} {'recall@.80':>11} {'med yes':>8} {'med no':>7}"
    )
    for r in rows:
        print(
            f"{r['case']:<72} {r['recall']:>7.3f} {r['specificity']:>6.3f} {r['auc']:>6.3f} "
            f"{r['recall_at_spec_080']:>11.3f} {r['median_yes']:>8.3f} {r['median_no']:>7.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
