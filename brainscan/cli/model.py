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
    from training.backend import import_backend, serve_from_heap
    from training.scorer import ModelError, Scorer

    import_backend()
    serve_from_heap()
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def evaluate(
    paths: tuple[Path, ...], model_path: Path | None, threshold: float | None, as_json: bool
) -> None:
    """Score labelled images and report the confusion matrix, recall, specificity and speed."""
    from training.card import json_safe
    from training.metrics import compute_metrics, format_confusion

    found = _discover(paths)
    scorer = _scorer(model_path, threshold)
    labels = {str(r.path): r.label for r in found.images}
    started = time.perf_counter()
    results = scorer.score_paths([r.path for r in found.images])
    seconds = time.perf_counter() - started
    scored = [r for r in results if r.error is None]
    known = [r for r in scored if labels[r.path] is not None]
    errors = [r for r in results if r.error is not None]
    for r in errors:
        click.echo(f"unreadable: {r.path}: {r.error}", err=True)
    if not known:
        raise click.ClickException(
            "no labelled image could be scored, so nothing to evaluate "
            "(labels come from folder names, N/Y file prefixes or labels.csv)"
        )
    import numpy as np

    m = compute_metrics(
        np.array([labels[r.path] for r in known]), np.array([r.probability for r in known]), scorer.threshold
    )
    report = {
        **m.to_dict(),
        "images_per_second": round(len(results) / seconds, 1),
        "model_version": scorer.version,
        "errors": len(errors),
        "unlabelled": len(scored) - len(known),
        "seconds": round(seconds, 3),
    }
    human = (
        f"{format_confusion(m)}\nunreadable {len(errors)}   unlabelled "
        f"{report['unlabelled']}   {report['images_per_second']} images/s   "
        f"model {scorer.version}"
    )
    if as_json:
        click.echo(human, err=True)
        click.echo(json.dumps(json_safe(report), allow_nan=False))
    else:
        click.echo(human)


@click.command()
@PATHS
@MODEL
@click.option("--threshold", type=click.FloatRange(0, 1), help="Override the card's threshold.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def score(paths: tuple[Path, ...], model_path: Path | None, threshold: float | None, fmt: str) -> None:
    """Score images: one row per image with path, probability, flagged and error."""
    found = _discover(paths)
    scorer = _scorer(model_path, threshold)
    fields = ["path", "probability", "flagged", "error"]
    out = sys.stdout
    writer = csv.DictWriter(out, fieldnames=fields) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    else:
        out.write("[")
    failures = 0
    for i, result in enumerate(scorer.iter_scores(r.path for r in found.images)):
        failures += result.error is not None
        row = {k: getattr(result, k) for k in fields}
        if writer:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            out.write(("," if i else "") + "\n" + json.dumps(row))
    if not writer:
        out.write("\n]\n")
    out.flush()
    if failures:
        click.echo(
            f"{failures} of {len(found.images)} images could not be scored (see the error column)", err=True
        )
    if failures == len(found.images):
        sys.exit(1)


COMMANDS: list[click.Command] = [evaluate, score]
