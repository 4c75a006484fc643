"""`brainscan train`: fit a model on labelled folders, with optional cross-validation figures."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from brainscan.settings import DEFAULT_MODEL, parse_bool

RECIPES = ("brainscan", "seed")
# --adapt-to's reversal weight unless --set domain_adapt says otherwise: the best trade measured
# (docs/model.md, experiment 30)
DEFAULT_ADAPT_WEIGHT = 0.1


def _parse(current: Any, raw: str) -> Any:
    if isinstance(current, bool):
        return parse_bool(raw)
    if isinstance(current, tuple):
        return tuple(int(v) for v in raw.split(","))
    return type(current)(raw)


def split_assignments(text: str) -> tuple[str, ...]:
    """FIELD=VALUE settings written as one comma-separated string (the bench scripts' --variant
    and --untrained): split at each comma that starts the next FIELD=, so a tuple value keeps its
    own commas (`widths=32,64,128,256,dropout=0.2` is two settings)."""
    return tuple(part.strip(" ,") for part in re.split(r",(?=\s*\w+=)", text) if part.strip(" ,"))


def apply_overrides(
    configs: tuple[Any, ...], assignments: tuple[str, ...], named: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Apply settings to whichever config (spec, model, training) has that field: first the named
    options (`named`, e.g. {"epochs": 5} from --epochs 5; None means not given), then --set's
    KEY=VALUE strings. A field given twice with different values is refused, whether by name and
    in --set or twice in --set, rather than the last one silently winning.

    The preprocessed slice is the network's input, so the preprocessing `size` and the network's
    `input_size` are one setting: setting either sets both, and setting both differently is refused.
    """
    out = list(configs)
    given = [
        (key, value, f"--{key.replace('_', '-')} {value}")
        for key, value in (named or {}).items()
        if value is not None
    ]
    # the first config with a field owns it (weight_decay: the network's, not the optimiser's)
    owners = {key: i for i in reversed(range(len(out))) for key in out[i].__dataclass_fields__}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or key not in owners:
            raise click.BadParameter(
                f"{assignment!r}: expected FIELD=VALUE with a known field", param_hint="--set"
            )
        try:
            value = _parse(getattr(out[owners[key]], key), raw)
        except ValueError as exc:
            raise click.BadParameter(f"{assignment!r}: {exc}", param_hint="--set") from exc
        given.append((key, value, f"--set {assignment}"))
    assigned: dict[str, tuple[Any, str]] = {}
    for key, value, origin in given:
        if key in assigned and assigned[key][0] != value:
            raise click.BadParameter(
                f"{assigned[key][1]} and {origin} differ: give {key} once", param_hint="--set"
            )
        assigned[key] = (value, origin)
    # Each config takes all its settings in one step, so that its own checks (a range, a field
    # that needs another) see the finished settings, whatever order they were given in.
    owned: dict[int, list[str]] = {}
    for key in assigned:
        owned.setdefault(owners[key], []).append(key)
    for index, keys in owned.items():
        try:
            out[index] = dataclasses.replace(out[index], **{k: assigned[k][0] for k in keys})
        except ValueError as exc:
            raise click.BadParameter(
                f"{', '.join(assigned[k][1] for k in keys)}: {exc}", param_hint="--set"
            ) from exc
    sides = {key: assigned[key] for key in ("size", "input_size") if key in assigned}
    if len({value for value, _ in sides.values()}) > 1:
        raise click.BadParameter(
            f"{sides['size'][1]} and {sides['input_size'][1]} differ: "
            "the preprocessed slice is the network's input; set one of them",
            param_hint="--set",
        )
    if sides:
        value = next(iter(sides.values()))[0]
        out = [
            dataclasses.replace(
                c, **{k: value for k in ("size", "input_size") if k in c.__dataclass_fields__}
            )
            for c in out
        ]
    return tuple(out)


def _configs(recipe: str) -> tuple[Any, Any, Any]:
    """(PreprocessSpec, ModelConfig, TrainConfig) of a recipe, before any option is applied."""
    from training.backend import import_backend

    import_backend()
    from training.model import ModelConfig
    from training.preprocess import PreprocessSpec
    from training.train import TrainConfig

    if recipe == "seed":  # the seed notebook: plain resize, no augmentation, no balancing
        spec = PreprocessSpec(size=128, crop=False, normalise=False)
        model_cfg = ModelConfig(arch="seed", input_size=spec.size)
        cfg = TrainConfig(
            epochs=20,
            learning_rate=1e-3,
            warmup_epochs=0,
            label_smoothing=0.0,
            augment_strength=0.0,
            balance_classes=False,
            weight_decay=0.0,
        )
    else:
        spec = PreprocessSpec()
        model_cfg = ModelConfig(input_size=spec.size)
        cfg = TrainConfig()
    return spec, model_cfg, cfg


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
    type=click.Choice(RECIPES),
    default="brainscan",
    show_default=True,
    help="'seed' reproduces the seed notebook's network and training (the baseline).",
)
@click.option("--size", type=int, help="Input side in pixels (default 160; seed recipe 128).")
@click.option("--epochs", type=int, help="Maximum epochs (early stopping may end sooner).")
@click.option("--batch-size", type=int)
@click.option("--learning-rate", type=float)
@click.option("--seed", type=int, help="Random seed for splits, initialisation and augmentation.")
@click.option(
    "--recall-target",
    type=click.FloatRange(0.5, 1.0),
    help="Recall the tuned threshold must reach on validation (default 0.99).",
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
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set any training, architecture or preprocessing field, e.g. augment_strength=1.5 "
    "(a field given twice, here or by name, must agree).",
)
@click.option(
    "--adapt-to",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A new site's folder of slices, read WITHOUT labels: the network learns features "
    "that do not tell that site from the training sources (domain-adversarial, "
    "weight domain_adapt, default 0.1). Every fit reads them, --cv's too. Measure "
    "the result on a labelled sample of the site before use.",
)
@click.option(
    "--adapt-limit",
    type=click.IntRange(16),
    default=2000,
    show_default=True,
    help="Read at most this many of the site's slices (a random sample).",
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
    size: int | None,
    limit: int | None,
    exclude: tuple[str, ...],
    cv_folds: int | None,
    cross_source: str | None,
    assignments: tuple[str, ...],
    adapt_to: Path | None,
    adapt_limit: int,
    workers: int,
    report: Path | None,
    predictions: Path | None,
    **options: Any,
) -> None:
    """Train the screening model on labelled image folders and write model, card and plots."""
    from training.backend import import_backend

    import_backend()
    from training import crossval
    from training.card import card_path_for
    from training.dataset import DatasetError
    from training.pipeline import prepare, prepare_adaptation, train_and_package

    spec, model_cfg, cfg = apply_overrides(_configs(recipe), assignments, {"size": size, **options})
    if cfg.domain_adapt > 0 and adapt_to is None:
        raise click.BadParameter(
            "domain_adapt reads a new site's slices without their labels: name "
            "its folder with --adapt-to (bench/variants.py --holdout SOURCE "
            "measures it on a held-out source)",
            param_hint="--set",
        )
    if adapt_to is not None and cfg.domain_adapt == 0:
        if any(a.partition("=")[0] == "domain_adapt" for a in assignments):
            raise click.BadParameter(
                "domain_adapt=0 turns the adaptation off: give a weight above 0, or leave out --adapt-to",
                param_hint="--set",
            )
        cfg = dataclasses.replace(cfg, domain_adapt=DEFAULT_ADAPT_WEIGHT)
    if cfg.domain_adapt > 0 and cfg.distill > 0:
        raise click.BadParameter("--adapt-to (domain_adapt) and distill are not combined", param_hint="--set")
    try:
        data = prepare(paths, spec, exclude=exclude, limit=limit, seed=cfg.seed)
        site = (
            prepare_adaptation(adapt_to, spec, data, limit=adapt_limit, seed=cfg.seed)
            if adapt_to is not None
            else None
        )
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    tasks = crossval.cv_tasks(data, k=cv_folds, cfg=cfg) if cv_folds else []
    if cross_source:
        tasks.append(crossval.cross_source_task(data, holdout=cross_source, cfg=cfg, adapt_to_holdout=False))
    runs = crossval.HeldOutRuns(
        data, model_cfg, cfg, workers, unlabelled=site.inputs if site is not None else None
    )
    runs.start(tasks)  # with workers > 1 these train while the final model trains below
    card = train_and_package(data, out, spec=spec, model_cfg=model_cfg, cfg=cfg, adaptation=site)
    card.training["command"] = "brainscan " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = runs.results()
    if predictions and results:
        crossval.save_predictions(predictions, data, results)
    folds = [r for r in results if r.task.name.startswith("fold")]
    other = "cv_without_flip_tta" if model_cfg.flip_tta else "cv_with_flip_tta"
    if folds:
        card.metrics["cv"] = crossval.summarise_cv(data.loaded.labels, folds)
        card.metrics[other] = crossval.summarise_cv(data.loaded.labels, [r.toggled() for r in folds])
    if cross_source:
        card.metrics["cross_source"] = crossval.summarise_cross_source(data, results[-1], cross_source)
        card.metrics["cross_source_" + other[3:]] = crossval.summarise_cross_source(
            data, results[-1].toggled(), cross_source
        )
    card.save(card_path_for(out))
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
    xs = card.metrics.get("cross_source")
    if xs:
        a = xs["all"]
        click.echo(
            f"cross-source ({xs['holdout']}): recall {a['recall']:.4f}  specificity "
            f"{a['specificity']:.4f}  AUC {a['auc'] or float('nan'):.4f}"
        )
    site = card.data.get("adaptation")
    if site:
        click.echo(
            f"adapted to {site['folder']} ({site['images']} slices read without labels): "
            f"{site['flagged_at_threshold']} flagged at the threshold; measure it there on "
            "a labelled sample (brainscan evaluate) before use"
        )


COMMANDS: list[click.Command] = [train]
