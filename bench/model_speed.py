"""Scoring speed of the shipped model, against a naive pipeline measured in the same run.

    python bench/model_speed.py [--model models/brainscan.keras] [--images ../shared/data] [--n 2000]
    python bench/model_speed.py --untrained size=192                    # a shape not trained yet
    python bench/model_speed.py --untrained members=2                   # an ensemble of 2
    python bench/model_speed.py --glibc-malloc                          # large buffers mmap'd

Prints images/s for:
  model alone      preprocessed uint8 batches of 64 through Scorer.score_arrays (the frozen graph,
                   with the out-of-distribution distance when the card has a reference)
  Keras graph      the same batches through Keras's predict_on_batch, alternated with the above:
                   how the model alone was served until 2026-12-02
  without OOD      the same batches, the frozen graph without the features and the distance
                   (training.ood), alternated: the distance's cost (issue 37: at most 10 %)
  end to end       JPEG files on disk through Scorer.iter_scores (threaded decode overlapping
                   inference), the path `brainscan evaluate` and the worker take
  naive baseline   the same files decoded one by one at full resolution (no JPEG draft scaling,
                   no overlap), then model.predict on the whole array
the process's resident memory after the end-to-end pass (Linux), and the ratio end-to-end /
baseline, all in a process that keeps buffers on the heap as the worker and the CLI do
(training.backend.serve_from_heap), unless --glibc-malloc leaves glibc's mmap of large buffers on
(that setting cannot be compared within one process: the heap the first variant grows serves the
second's buffers too, so compare runs, alternated).
Targets (issue 2): >= 300 model alone, >= 150 end to end.
With --untrained, the figures are for a freshly initialised network of the model's recipe with
those settings changed (the fields `brainscan train --set` takes): speed depends on the graph,
not on the weights, so a candidate shape is timed before anyone spends hours training it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def untrained_like(scorer: Any, assignments: str) -> Any:
    """A Scorer of the same recipe with FIELD=VALUE,... changed, its network freshly initialised."""
    import dataclasses

    from training.model import build_model
    from training.recipes import Recipe, split_assignments
    from training.scorer import Scorer

    card = scorer.card
    recipe = Recipe.from_dict(card.recipe).with_settings(split_assignments(assignments))
    card = dataclasses.replace(
        card,
        recipe=recipe.to_dict(),
        version=f"{card.version}+untrained:{assignments}",
        model_sha256="",
    )
    return Scorer(build_model(recipe.network, recipe.input.size), card, threads=scorer.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "brainscan.keras")
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=2000, help="files to score end to end")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="leave glibc's mmap of large buffers on, as before 2026-12-02",
    )
    parser.add_argument(
        "--untrained",
        default="",
        metavar="FIELD=VALUE,...",
        help="time an untrained network of the model's recipe with these changes",
    )
    args = parser.parse_args()

    from training.backend import import_backend, one_blas_thread, serve_from_heap

    import_backend()
    one_blas_thread()
    if not args.glibc_malloc:
        serve_from_heap()
    from training.dataset import discover
    from training.decode import decode_image
    from training.preprocess import preprocess
    from training.scorer import Scorer

    scorer = Scorer.load(args.model, threads=args.threads)
    if args.untrained:
        scorer = untrained_like(scorer, args.untrained)
    files = [r.path for r in discover([args.images]).images if r.path.suffix.lower() in (".jpg", ".jpeg")]
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[: args.n]]
    for f in files:  # warm the page cache so every variant reads from memory alike
        f.read_bytes()
    size = scorer.spec.size

    batch = np.random.default_rng(1).integers(0, 255, (512, size, size, 1), dtype=np.uint8)
    keras_graph = Scorer(scorer.model, scorer.card, threads=args.threads, frozen=False, ood=scorer.ood)
    plain = Scorer(scorer.model, scorer.card, threads=args.threads)  # no out-of-distribution reference
    alone: dict[Any, list[float]] = {scorer: [], keras_graph: [], plain: []}
    for each in alone:
        each.score_arrays(batch[:64])  # build the graph once
    rounds = 5
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):  # alternated, so a noisy neighbour slows both alike
        for each, rates in alone.items():
            started = time.perf_counter()
            each.score_arrays(batch)
            rates.append(_rate(len(batch), time.perf_counter() - started))
    faults_per_image = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (
        rounds * len(alone) * len(batch)
    )
    model_alone, model_keras, model_plain = (float(np.median(rates)) for rates in alone.values())

    ends: dict[Any, list[float]] = {scorer: [], plain: []}
    for _ in range(3):  # alternated, as above
        for each, rates in ends.items():
            started = time.perf_counter()
            results = list(each.iter_scores(files))
            rates.append(_rate(len(results), time.perf_counter() - started))
    end_to_end, end_plain = (float(np.median(rates)) for rates in ends.values())
    resident_mb = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    started = time.perf_counter()
    arrays = [preprocess(decode_image(f), scorer.spec) for f in files]
    scorer.model.predict(np.stack(arrays)[..., None], batch_size=32, verbose=0)  # type: ignore[attr-defined]
    naive = _rate(len(files), time.perf_counter() - started)

    errors = sum(r.error is not None for r in results)
    print(
        f"model {args.model.name} ({scorer.version}), input {size} px, {len(files)} JPEG files, "
        f"{errors} unreadable"
    )
    print(f"{'model alone (preprocessed batches)':<38} {model_alone:8.0f} images/s   target >= 300")
    print(
        f"{'  the same, Keras graph (not frozen)':<38} {model_keras:8.0f} images/s   "
        f"frozen / Keras {model_alone / model_keras:.2f} x"
    )
    if scorer.ood is not None:
        print(
            f"{'  the same, without OOD distance':<38} {model_plain:8.0f} images/s   "
            f"with / without {model_alone / model_plain:.2f} x"
        )
    print(
        f"{'  minor page faults, model-alone':<38} {faults_per_image:8.0f} per image   "
        f"({'glibc mmap' if args.glibc_malloc else 'heap'} buffers)"
    )
    print(f"{'end to end from JPEG files':<38} {end_to_end:8.0f} images/s   target >= 150")
    if scorer.ood is not None:
        print(
            f"{'  the same, without OOD distance':<38} {end_plain:8.0f} images/s   "
            f"with / without {end_to_end / end_plain:.2f} x"
        )
    print(f"{'resident memory after end to end':<38} {resident_mb:8.0f} MB   peak {peak_mb:.0f} MB")
    print(f"{'naive baseline (same run)':<38} {naive:8.0f} images/s")
    print(f"{'end to end / naive baseline':<38} {end_to_end / naive:8.2f} x")


if __name__ == "__main__":
    main()
