"""Which images the screening rule gets wrong, from saved held-out predictions.

    python bench/errors.py runs/cv2mix.0.npz runs/cv2mix.1.npz --data ../shared/data \\
        --sheet runs/errors.png

Each file comes from `bench/variants.py --predictions` or `brainscan train --predictions`; several
files must be fits of the same splits (variants or re-seeded members of one run). For each fit,
every cross-validation fold's test part is scored at the threshold its own validation part gives
under the shipped rule (validation recall >= 0.99): the held-out missed tumours and false alarms,
counted by folder (source and class). Then across fits: errors that every fit makes and errors
that only some make. An error that every fit makes, whatever its seed or recipe, points at the
image (a tumour not visible in that slice, a label, a look no training image has) rather than at
the fit; errors that come and go are the fits' spread. For the missed tumours, how deep they sit:
the share of held-out clear slices (same fold) that score above each one.

With --data and --sheet, a contact sheet (PNG) of the errors every fit makes, each image as the
model sees it (cropped and stretched), captioned with its folder, file and mean probability: look
at them before trusting any explanation.

With --set-aside FILE (one file name per line, `#` comments; bench/suspect_labels.txt), each fit's
pooled recall and specificity are given again without those images, at the same thresholds: what
the figures would be if those labels are wrong. Not a replacement figure: the labels are the data's.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.threshold_policy import Predictions, check_same_splits, task_indices  # noqa: E402
from training.metrics import tune_threshold  # noqa: E402


@dataclass
class FitErrors:
    """One fit's held-out errors over its cross-validation folds (image indices into the file)."""

    missed: set[int]
    false_alarms: set[int]
    probs: dict[int, float]  # every held-out image's probability
    depth: dict[int, float]  # missed tumour -> share of its fold's held-out negatives scoring above it
    recall_target: float  # the rule the thresholds came from


def fit_errors(data: Predictions, recall_target: float = 0.99, variant: str = "served") -> FitErrors:
    labels = data["labels"]
    out = FitErrors(set(), set(), {}, {}, recall_target)
    folds = task_indices(data, "fold")
    if not folds:
        raise ValueError("no cross-validation folds in these predictions")
    for i in folds:
        val_idx, test_idx = data[f"{i}_val_idx"], data[f"{i}_test_idx"]
        threshold = tune_threshold(labels[val_idx], data[f"{i}_{variant}_val"], recall_target)
        probs = np.asarray(data[f"{i}_{variant}_test"], dtype=np.float64)
        truth = labels[test_idx]
        negatives = probs[truth == 0]
        for index, p, y in zip(test_idx.tolist(), probs.tolist(), truth.tolist(), strict=True):
            out.probs[index] = p
            if y == 1 and p < threshold:
                out.missed.add(index)
                out.depth[index] = float(np.mean(negatives > p)) if negatives.size else 0.0
            elif y == 0 and p >= threshold:
                out.false_alarms.add(index)
    return out


def folder(relpath: str) -> str:
    """'data/kaggle-4class-train/kaggle-4class-train/glioma/x.jpg' -> 'kaggle-4class-train/glioma':
    the saved name's folders without the training root's name and without repeats."""
    parts = relpath.split("/")[1:-1] or relpath.split("/")[:-1]
    kept = [p for n, p in enumerate(parts) if n == 0 or p != parts[n - 1]]
    return "/".join(kept) or "."


def resolve(root: Path, relpath: str) -> Path | None:
    """The file a saved name points at under `root` (the folder training was given)."""
    parts = relpath.split("/")
    for start in range(1, len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def read_names(path: Path) -> set[str]:
    """File names listed one per line; blank lines and `#` comments ignored."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def without(
    fit: FitErrors, labels: np.ndarray, relpaths: np.ndarray, names: set[str]
) -> tuple[dict[str, float], int]:
    """Pooled recall and specificity at the fit's thresholds with images named in `names` left out,
    and how many held-out images were left out."""
    kept = [i for i in fit.probs if str(relpaths[i]).split("/")[-1] not in names]
    positives = [i for i in kept if labels[i] == 1]
    negatives = [i for i in kept if labels[i] == 0]
    recall = 1 - len(fit.missed.intersection(positives)) / max(len(positives), 1)
    specificity = 1 - len(fit.false_alarms.intersection(negatives)) / max(len(negatives), 1)
    return {"recall": recall, "specificity": specificity}, len(fit.probs) - len(kept)


def _row(name: str, kind: str, relpaths: np.ndarray, indices: set[int], folders: list[str]) -> str:
    counts = Counter(folder(str(relpaths[i])) for i in indices)
    return f"{name[:22]:>22} {kind:>7} {len(indices):>5}  " + "  ".join(
        f"{counts.get(f, 0):>10}" for f in folders
    )


def report(paths: list[Path], fits: list[FitErrors], relpaths: np.ndarray) -> None:
    scored = sorted(set().union(*(f.probs for f in fits)))
    folders = sorted({folder(str(relpaths[i])) for i in scored})
    totals = Counter(folder(str(relpaths[i])) for i in scored)
    print("held-out images by folder: " + ", ".join(f"{f} {totals[f]}" for f in folders))
    rules = ", ".join(f"{t:g}" for t in sorted({f.recall_target for f in fits}))
    print(f"\nerrors at the rule validation recall >= {rules}, by folder")
    print(f"{'':>22} {'':>7} {'all':>5}  " + "  ".join(f"{f.split('/')[-1][:10]:>10}" for f in folders))
    for path, f in zip(paths, fits, strict=True):
        print(_row(path.name, "missed", relpaths, f.missed, folders))
        print(_row("", "alarms", relpaths, f.false_alarms, folders))
    if len(fits) < 2:
        return
    for kind, sets in (
        ("missed tumours", [f.missed for f in fits]),
        ("false alarms", [f.false_alarms for f in fits]),
    ):
        every, some = set.intersection(*sets), set.union(*sets)
        mean = np.mean([len(s) for s in sets])
        print(
            f"\n{kind}: {len(every)} made by all {len(fits)} fits, {len(some)} by at least one "
            f"(a fit makes {mean:.1f} on average)"
        )
        print(_row("made by all", "", relpaths, every, folders))
        print(_row("by only some", "", relpaths, some - every, folders))
    every_missed = set.intersection(*(f.missed for f in fits))
    if every_missed:
        depths = np.array([np.mean([f.depth[i] for f in fits]) for i in sorted(every_missed)])
        print(
            f"\nmissed by all: share of the fold's clear slices scoring above each (mean over fits): "
            f"median {np.median(depths):.3f}, max {depths.max():.3f}; "
            f"{int(np.sum(depths > 0.5))} of {len(depths)} sit below half the clear slices"
        )


def contact_sheet(
    out: Path, root: Path, relpaths: np.ndarray, fits: list[FitErrors], size: int = 160, columns: int = 8
) -> int:
    """Errors every fit makes, as the model sees them; returns how many tiles were drawn."""
    from PIL import Image, ImageDraw

    from training.preprocess import PreprocessSpec, load_input

    spec = PreprocessSpec(size=size)
    every = [("missed", i) for i in sorted(set.intersection(*(f.missed for f in fits)))]
    every += [("false alarm", i) for i in sorted(set.intersection(*(f.false_alarms for f in fits)))]
    tiles = []
    for kind, index in every:
        rel = str(relpaths[index])
        path = resolve(root, rel)
        tile = Image.new("L", (size, size + 30), 40)
        if path is not None:
            tile.paste(Image.fromarray(load_input(path, spec)), (0, 0))
        mean = float(np.mean([f.probs[index] for f in fits]))
        draw = ImageDraw.Draw(tile)
        draw.text((3, size + 2), f"{kind} p={mean:.3f}", fill=255)
        draw.text((3, size + 15), f"{folder(rel).split('/')[-1]}/{rel.split('/')[-1]}"[:26], fill=200)
        tiles.append(tile)
    if not tiles:
        return 0
    rows = -(-len(tiles) // columns)
    sheet = Image.new("L", (columns * (size + 4), rows * (size + 34)), 0)
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % columns) * (size + 4), (n // columns) * (size + 34)))
    sheet.save(out)
    return len(tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("predictions", type=Path, nargs="+", help="fits of the same splits")
    parser.add_argument(
        "--recall-target",
        type=float,
        default=0.99,
        help="the threshold rule (the shipped model's card says its own; default 0.99)",
    )
    parser.add_argument("--data", type=Path, help="the folder training was given (for --sheet)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of the shared errors here")
    parser.add_argument("--set-aside", type=Path, help="file names whose labels are in doubt")
    args = parser.parse_args()
    if args.sheet and not args.data:
        parser.error("--sheet needs --data")
    files = [np.load(path) for path in args.predictions]
    first = files[0]
    try:
        check_same_splits(files)
    except ValueError as exc:
        sys.exit(f"{', '.join(map(str, args.predictions))}: {exc}")
    fits = [fit_errors(f, args.recall_target) for f in files]
    report(args.predictions, fits, first["relpaths"])
    if args.set_aside:
        names = read_names(args.set_aside)
        print(f"\nwithout the {len(names)} images of {args.set_aside} (same thresholds)")
        for path, fit in zip(args.predictions, fits, strict=True):
            full, _ = without(fit, first["labels"], first["relpaths"], set())
            rest, dropped = without(fit, first["labels"], first["relpaths"], names)
            print(
                f"{path.name[:22]:>22}  recall {full['recall']:.4f} -> {rest['recall']:.4f}  "
                f"specificity {full['specificity']:.4f} -> {rest['specificity']:.4f}  "
                f"({dropped} held-out images left out)"
            )
    if args.sheet:
        drawn = contact_sheet(args.sheet, args.data, first["relpaths"], fits)
        print(f"\ncontact sheet: {drawn} images -> {args.sheet}")


if __name__ == "__main__":
    main()
