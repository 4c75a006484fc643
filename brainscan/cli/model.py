"""Model commands: `train`, `evaluate`, `score`."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from brainscan.cli.context import cli_settings

PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
MODEL = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Model file (default: BRAINSCAN_MODEL_PATH, else models/brainscan.keras).",
)


def _scorer(model_path: Path | None, threshold: float | None) -> Any:
    from training.backend import import_backend, one_blas_thread, serve_from_heap
    from training.scorer import ModelError, Scorer

    import_backend()
    serve_from_heap()
    one_blas_thread()
    settings = cli_settings()
    try:
        return Scorer.load(
            model_path or settings.model_path,
            threshold=threshold if threshold is not None else settings.threshold,
            threads=settings.decode_threads,
            max_pixels=settings.max_image_pixels,
        )
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


def _discover(paths: tuple[Path, ...]) -> Any:
    from training.dataset import DatasetError, discover

    try:
        return discover(paths)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@PATHS
@MODEL
@click.option("--threshold", type=click.FloatRange(0, 1), help="Override the card's threshold.")
@click.option(
    "--level",
    type=click.Choice(["image", "study"]),
    default="image",
    show_default=True,
    help="Count images, or studies (flagged when a slice of a series the model is fit for is).",
)
@click.option(
    "--subject-pattern",
    default="",
    help="For images outside DICOM: a regular expression whose first group, on the file name, names "
    "the patient's study (labels.csv's subject column comes first; else the folder is the study).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def evaluate(
    paths: tuple[Path, ...],
    model_path: Path | None,
    threshold: float | None,
    level: str,
    subject_pattern: str,
    as_json: bool,
) -> None:
    """Score labelled images and report the confusion matrix, recall, specificity and speed, per
    image or per study. DICOM files are read as a job reads them: one image per frame, files that
    hold no MR image skipped."""
    from training.card import json_safe
    from training.metrics import compute_metrics, format_confusion, sweep_table
    from training.studies import slices_of

    found = _discover(paths)
    slices, skipped = slices_of(found.images, subject_pattern=subject_pattern)
    scorer = _scorer(model_path, threshold)
    started = time.perf_counter()
    results = scorer.score_paths([s.source for s in slices])
    seconds = time.perf_counter() - started
    for r in results:
        if r.error is not None:
            click.echo(f"unreadable: {r.path}: {r.error}", err=True)
    probs = [r.probability for r in results]
    y, p, extra = _counted(slices, probs, level)
    if len(y) == 0:
        raise click.ClickException(
            f"no labelled {level} could be scored, so nothing to evaluate "
            "(labels come from folder names, N/Y file prefixes or labels.csv)"
        )
    m = compute_metrics(y, p, scorer.threshold)
    errors = sum(r.error is not None for r in results)
    report = {
        **m.to_dict(),
        **extra,
        "sweep": sweep_table(y, p),
        "images_per_second": round(len(results) / seconds, 1),
        "model_version": scorer.version,
        "errors": errors,
        "unlabelled": sum(s.label is None for s, q in zip(slices, probs, strict=True) if q is not None),
        "skipped": dict(skipped),
        "seconds": round(seconds, 3),
    }
    what = (
        f"{report['studies']} studies ({report['not_assessed']} not assessed)   " if level == "study" else ""
    )
    human = (
        f"{format_confusion(m)}\n{what}unreadable {errors}   unlabelled {report['unlabelled']}   "
        f"skipped {sum(skipped.values())}   {report['images_per_second']} images/s   model {scorer.version}"
    )
    if as_json:
        click.echo(human, err=True)
        click.echo(json.dumps(json_safe(report), allow_nan=False))
    else:
        click.echo(human)


def _counted(slices: list[Any], probs: list[float | None], level: str) -> tuple[Any, Any, dict[str, Any]]:
    """Labels and scores to count (images, or studies by the max rule), and what to add to the report."""
    import numpy as np

    from training.studies import studies_of, study_arrays

    if level == "study":
        studies = studies_of(slices, probs)
        y, p = study_arrays(studies)
        return (
            y,
            p,
            {"level": "study", "studies": len(studies.keys), "not_assessed": studies.scores.count(None)},
        )
    known = [
        (s.label, q) for s, q in zip(slices, probs, strict=True) if s.label is not None and q is not None
    ]
    y, p = np.array([k[0] for k in known], dtype=np.int64), np.array([k[1] for k in known], dtype=np.float64)
    return y, p, {"level": "image"}


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return f"{value:.6f}" if isinstance(value, float) else value


@click.command()
@PATHS
@MODEL
@click.option("--threshold", type=click.FloatRange(0, 1), help="Override the card's threshold.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def score(paths: tuple[Path, ...], model_path: Path | None, threshold: float | None, fmt: str) -> None:
    """Score images: one row per image with path, probability, flagged, error, frame and
    out_of_distribution (1: unlike the training images, so an unflagged one is not assessed; empty
    where the model has no out-of-distribution reference). DICOM files
    are read as a job reads them: a multi-frame file gives one row per frame (frame 1..N; 0 for a
    file holding one image), files that hold no MR image are skipped (counted on stderr)."""
    from training.studies import slices_of

    found = _discover(paths)
    slices, skipped = slices_of(found.images)
    scorer = _scorer(model_path, threshold)
    fields = ["path", "probability", "flagged", "error", "frame", "out_of_distribution"]
    out = sys.stdout
    writer = csv.DictWriter(out, fieldnames=fields) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    else:
        out.write("[")
    failures = 0
    for i, (piece, result) in enumerate(
        zip(slices, scorer.iter_scores(s.source for s in slices), strict=True)
    ):
        failures += result.error is not None
        row = {"path": str(piece.path), "frame": piece.frame} | {
            k: getattr(result, k) for k in ("probability", "flagged", "error", "out_of_distribution")
        }
        row = {k: row[k] for k in fields}
        if writer:  # as the REST CSV writes them: score to 6 places, flagged 1 or 0
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        else:
            out.write(("," if i else "") + "\n" + json.dumps(row))
    if not writer:
        out.write("\n]\n")
    out.flush()
    for reason, n in sorted(skipped.items()):
        click.echo(f"skipped {n} file{'' if n == 1 else 's'}: {reason}", err=True)
    if failures:
        click.echo(f"{failures} of {len(slices)} images could not be scored (see the error column)", err=True)
    if failures == len(slices):
        sys.exit(1)


@click.group()
def threshold() -> None:
    """Choose a threshold for a site from a labelled sample of its slices."""


@threshold.command("suggest")
@PATHS
@MODEL
@click.option("--recall", "recall_target", type=click.FloatRange(0.5, 1.0), default=0.95, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def suggest(paths: tuple[Path, ...], model_path: Path | None, recall_target: float, as_json: bool) -> None:
    """The highest threshold that keeps RECALL on the sample's labelled slices, and the specificity it
    gives there (the training's own rule). Set it with BRAINSCAN_THRESHOLD or a site profile."""
    from training.card import json_safe
    from training.metrics import compute_metrics, tune_threshold
    from training.studies import slices_of

    found = _discover(paths)
    slices, _ = slices_of(found.images)
    scorer = _scorer(model_path, None)
    results = scorer.score_paths([s.source for s in slices])
    y, p, _ = _counted(slices, [r.probability for r in results], "image")
    if len(y) == 0 or y.min() == y.max():
        raise click.ClickException("the sample needs labelled slices of both classes (yes/ and no/ folders)")
    chosen = tune_threshold(y, p, recall_target)
    m = compute_metrics(y, p, chosen)
    report = {
        "threshold": chosen,
        "recall_target": recall_target,
        "model_threshold": scorer.threshold,
        **m.to_dict(),
    }
    human = (
        f"threshold {chosen:.4f} keeps recall {m.recall:.3f} (target {recall_target}) at specificity "
        f"{m.specificity:.3f} on {m.n} labelled slices ({m.tp + m.fn} tumour); the model's own is "
        f"{scorer.threshold:.4f}. Use it: BRAINSCAN_THRESHOLD={chosen:.4f}, or a site profile (docs/api.md)."
    )
    click.echo(json.dumps(json_safe(report), allow_nan=False) if as_json else human)


COMMANDS: list[click.Command] = [evaluate, score, threshold]
