"""`brainscan train`: fit a recipe on labelled folders, with optional held-out figures, into a model."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from brainscan.settings import DEFAULT_MODEL

RECIPE_NAMES = ("shipped", "seed")  # training.recipes.RECIPES, named here without importing TensorFlow


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model file to write; the card and plots go beside it.",
)
@click.option(
    "--recipe",
    type=click.Choice(RECIPE_NAMES),
    default="shipped",
    show_default=True,
    help="Every setting at once (training/recipes.py): 'shipped' makes the shipped model, "
    "'seed' the seed notebook's network and training (the baseline).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Change one of the recipe's settings, e.g. epochs=10 or members=1 (repeatable; "
    "a field given twice, here or by name, must agree).",
)
@click.option("--size", type=int, help="Input side in pixels (shipped 160; seed 128).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--learning-rate", type=float)
@click.option("--seed", type=int, help="Seed of the splits, initialisation and augmentation.")
@click.option(
    "--recall-target",
    type=click.FloatRange(0.5, 1.0),
    help="Recall the tuned threshold must reach on validation (shipped 0.993).",
)
@click.option(
    "--specificity-floor",
    type=click.FloatRange(0.0, 1.0),
    help="Then lower the threshold while validation specificity stays at or above this "
    "(more recall for an accepted false-alarm rate; default 0: off).",
)
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5))
@click.option("--test-fraction", type=click.FloatRange(0.0, 0.5))
@click.option("--limit", type=int, help="Train on a stratified sample of this many images.")
@click.option("--exclude", multiple=True, help="Leave out sources matching this (repeatable).")
@click.option(
    "--cv",
    "cv_folds",
    type=click.IntRange(2, 20),
    help="Also run group-aware K-fold cross-validation and record it in the card.",
)
@click.option("--cross-source", help="Also train without this source and test on it (card).")
@click.option(
    "--leave-one-source-out",
    is_flag=True,
    help="Also train without each source in turn and test on it (card: leave_one_source_out).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run the held-out (CV, cross-source) fits in this many parallel processes.",
)
@click.option("--report", type=click.Path(path_type=Path), help="Write the metrics JSON here too.")
@click.option(
    "--predictions",
    type=click.Path(path_type=Path),
    help="Save every held-out fit's validation and test probabilities here (.npz).",
)
def train(
    paths: tuple[Path, ...],
    out: Path,
    recipe: str,
    assignments: tuple[str, ...],
    limit: int | None,
    exclude: tuple[str, ...],
    cv_folds: int | None,
    cross_source: str | None,
    leave_one_source_out: bool,
    workers: int,
    report: Path | None,
    predictions: Path | None,
    **named: Any,
) -> None:
    """Train the screening model on labelled image folders and write model, card and plots."""
    from training.backend import import_backend

    import_backend()
    from training import pipeline
    from training.dataset import DatasetError
    from training.prepare import prepare
    from training.recipes import RECIPES, SettingError

    try:
        resolved = RECIPES[recipe].with_settings(assignments, named)
    except SettingError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    try:
        data = prepare(paths, resolved, exclude=exclude, limit=limit)
        card = pipeline.train(
            data,
            resolved,
            out,
            cv_folds=cv_folds,
            cross_source=cross_source,
            leave_one_source_out=leave_one_source_out,
            workers=workers,
            command="brainscan " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            predictions=predictions,
        )
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if report:
        report.write_text(json.dumps(card.metrics, indent=2) + "\n")
    _print_summary(card, out)


def _print_summary(card: Any, out: Path) -> None:
    click.echo(f"model written: {out} (version {card.version}, threshold {card.threshold:.4f})")
    for name in ("validation", "test"):
        m = card.metrics.get(name)
        if m:
            click.echo(
                f"{name:>10}: n {m['n']}  recall {m['recall']:.4f}  specificity "
                f"{m['specificity']:.4f}  AUC {m['auc'] or float('nan'):.4f}  missed {m['fn']}"
            )
    cv = card.metrics.get("cv")
    if cv:
        p = cv["pooled"]
        click.echo(
            f"{cv['k']}-fold CV: recall {p['recall']:.4f}  specificity "
            f"{p['specificity']:.4f}  AUC {p['auc']:.4f}  missed {p['fn']} of "
            f"{p['tp'] + p['fn']}"
        )
    crossed = [card.metrics["cross_source"]] if card.metrics.get("cross_source") else []
    for xs in crossed + list(card.metrics.get("leave_one_source_out", {}).values()):
        a = xs["all"]
        click.echo(
            f"cross-source ({xs['holdout']}): recall {a['recall']:.4f}  specificity "
            f"{a['specificity']:.4f}  AUC {a['auc'] or float('nan'):.4f}"
        )


COMMANDS: list[click.Command] = [train]
