"""Fit a trained model's out-of-distribution reference (training.ood) and measure how well it
tells other sources and other contrasts from the sources the model trained on.

    python bench/card_ood.py models/brainscan.keras ../shared/data [--write]
    python bench/card_ood.py tests/models/trained-without-lgg-flair.keras ../shared/data \\
        --exclude lgg-flair --other lgg-flair --write

`brainscan train` fits the reference itself; a model trained before has none. This rebuilds the
model's splits from its card (the same images, checked by the data fingerprint; the split drawn
by its recipe's seed; the test figures checked equal to the card's), fits the reference on the
training split with its threshold from the validation split, and reports, on images the model
never trained on:

- AUROC of the distance, the model's own test split (in-source) against each `--other` source
  (every image of it) and against the test split with its head's grey levels inverted (a
  contrast the model never saw: bright CSF as on T2 where it trained on T1-like images, say);
- the share of each beyond the threshold (the in-source test split's should be near 1 %);
- the distance's cost: images/s of the forward pass with and without the features, same run.

`--write` saves `<model>.ood.npz` and the card's `ood`, with a note saying how it was made.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

from card_args import card_parser, command_line  # noqa: E402


def inverted_head(inputs: np.ndarray) -> np.ndarray:
    """The slices with the head's grey levels inverted (255 - v) and the background left black."""
    head = inputs > 8
    out = inputs.copy()
    out[head] = 255 - inputs[head]
    return out


def throughput(model: object, inputs: np.ndarray, rounds: int = 3) -> float:
    """Images per second of `model.predict_on_batch` over `inputs` in batches of 64, best of rounds."""
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(inputs) - 63, 64):
            model.predict_on_batch(inputs[start : start + 64])  # type: ignore[attr-defined]
        best = max(best, (len(inputs) // 64 * 64) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = card_parser(__doc__)
    parser.add_argument("--other", action="append", default=[], help="a source to measure as out of it")
    parser.add_argument("--write", action="store_true", help="save the reference and the card's `ood`")
    parser.add_argument("--dump", type=Path, help="also save every feature array here (.npz), to study")
    args = parser.parse_args()

    from training.backend import import_backend

    import_backend()
    from sklearn.metrics import roc_auc_score

    from training.card import card_path_for
    from training.ood import card_entry, features_of, fit_reference, reference_path_for, with_features
    from training.prepare import prepare
    from training.rebuild import RebuildError, rebuild_final_split
    from training.recipes import Recipe
    from training.scorer import Scorer

    scorer = Scorer.load(args.model)
    card, recipe = scorer.card, Recipe.from_dict(scorer.card.recipe)
    try:
        rebuilt = rebuild_final_split(scorer, args.data, exclude=args.exclude)
    except RebuildError as exc:
        sys.exit(str(exc))
    task, x, y = rebuilt.task, rebuilt.data.loaded.inputs, rebuilt.data.loaded.labels
    _, test_features = features_of(scorer.model, x[task.test])
    _, train_features = features_of(scorer.model, x[task.train])  # as training.ood.fit_on_task
    _, val_features = features_of(scorer.model, x[task.val])
    reference = fit_reference(train_features, y[task.train], val_features)
    inside = reference.distances(test_features)

    def against(name: str, distances: np.ndarray) -> dict[str, object]:
        truth = np.r_[np.zeros(len(inside)), np.ones(len(distances))]
        return {
            "images": len(distances),
            "auroc": round(float(roc_auc_score(truth, np.r_[inside, distances])), 4),
            "beyond_threshold": round(float(np.mean(distances > reference.threshold)), 4),
        }

    report: dict[str, object] = {
        "model": card.version,
        "threshold": round(reference.threshold, 3),
        "features": int(test_features.shape[1]),
        "train": len(task.train),
        "validation": len(task.val),
        "test_in_source": {
            "images": len(inside),
            "beyond_threshold": round(float(np.mean(inside > reference.threshold)), 4),
        },
    }
    _, inverted = features_of(scorer.model, inverted_head(x[task.test]))
    report["test_inverted_contrast"] = against("inverted", reference.distances(inverted))
    arrays = {"train": train_features, "train_labels": y[task.train], "validation": val_features}
    arrays |= {"test": test_features, "inverted": inverted}
    if args.other:
        everything = prepare(args.data, recipe)
        for source in args.other:
            chosen = np.array([source in r.source for r in everything.loaded.records])
            _, other = features_of(scorer.model, everything.loaded.inputs[chosen])
            report[f"other_source {source}"] = against(source, reference.distances(other))
            arrays[f"other {source}"] = other
    if args.dump:
        np.savez(args.dump, **arrays)
    sample = x[task.test][: 64 * (min(len(task.test), 640) // 64)]
    plain, both = throughput(scorer.model, sample), throughput(with_features(scorer.model), sample)
    report["images_per_second"] = {"score": round(plain), "score_and_features": round(both)}
    print(json.dumps(report, indent=2))
    if args.write:
        path = reference_path_for(args.model)
        reference.save(path)
        card.ood = card_entry(reference, path, trained=len(task.train), validated=len(task.val))
        card.notes.append(
            "ood: fitted afterwards by "
            f"`{command_line('card_ood.py', args, *(f'--other {o}' for o in args.other), '--write')}` "
            "(the card's splits rebuilt, its test figures checked equal); measured: "
            + json.dumps({k: v for k, v in report.items() if k not in ("model",)})
        )
        card.save(card_path_for(args.model))
        print(f"written: {path} and the card's ood")


if __name__ == "__main__":
    main()
