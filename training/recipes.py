"""Named training recipes: every setting that decides what `brainscan train` makes, as data.

A recipe is complete: its preprocessing (`input`), its `network`, its `optimisation`, and its
`policy` for splitting the images and choosing the threshold. `brainscan train DATA` trains
`SHIPPED`; `--recipe seed` the baseline; `--set FIELD=VALUE` changes one setting (each name
belongs to one group). The card records the recipe's name and every resolved setting
(`Recipe.to_dict`), so a model says exactly how it was made. docs/experiments.md says why each
value is what it is.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training.card import known_settings
from training.model import Network
from training.preprocess import PreprocessSpec
from training.train import Optimisation

GROUPS = ("input", "network", "optimisation", "policy")


@dataclass(frozen=True)
class Policy:
    """How images are split and the threshold chosen (a recipe's `policy` group)."""

    seed: int  # every split is drawn from this seed; fits are seeded from it too
    val_fraction: float  # share of groups held out to tune the threshold (and, without keep_last, stop)
    test_fraction: float  # share of groups held out for the card's test figures (0: none)
    group_threshold: float  # images whose fingerprints correlate above this are one group
    subject_pattern: str  # a regular expression whose first group, matched against a file name,
    # names the scan it belongs to (one patient's slices then stay together); "" none. labels.csv's
    # subject column comes first
    recall_target: float  # the threshold is the highest one meeting this recall on validation
    specificity_floor: float  # then lowered while validation specificity stays >= this (0: off)
    recall_counts_edges: bool  # False: the recall target leaves out each scan's first and last
    # tumour slice (a sliver of the tumour, often; its other slices still flag the scan); the
    # figures still count every slice (experiment 39)

    def __post_init__(self) -> None:
        if self.subject_pattern:
            try:
                groups = re.compile(self.subject_pattern).groups
            except re.error as exc:
                raise ValueError(f"subject_pattern {self.subject_pattern!r}: {exc}") from exc
            if groups < 1:
                raise ValueError(
                    f"subject_pattern {self.subject_pattern!r} needs a (group) naming the subject"
                )
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError(f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction leave nothing to train on")
        if not 0 < self.recall_target <= 1 or not 0 <= self.specificity_floor <= 1:
            raise ValueError(
                f"recall_target {self.recall_target}, specificity_floor {self.specificity_floor}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        return cls(**known_settings(cls, data, "policy"))


class SettingError(ValueError):
    """A setting that names no field, does not parse, or contradicts another."""


@dataclass(frozen=True)
class Recipe:
    name: str
    input: PreprocessSpec
    network: Network
    optimisation: Optimisation
    policy: Policy

    def to_dict(self) -> dict[str, Any]:
        """The card's `recipe`: the name and every setting, by group."""
        return {"name": self.name, **{group: getattr(self, group).to_dict() for group in GROUPS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return cls(
            data["name"],
            PreprocessSpec.from_dict(data["input"]),
            Network.from_dict(data["network"]),
            Optimisation.from_dict(data["optimisation"]),
            Policy.from_dict(data["policy"]),
        )

    def with_settings(
        self, assignments: Sequence[str] = (), named: Mapping[str, Any] | None = None
    ) -> Recipe:
        """This recipe with settings changed: first `named` (an option's value, e.g. {"epochs": 5}
        from --epochs 5; None means not given), then FIELD=VALUE strings. A field given twice with
        different values is refused, by name and in FIELD=VALUE or twice in FIELD=VALUE, rather
        than the last one silently winning. Each group takes its settings in one step, so that its
        own checks see them all, whatever order they were given in."""
        owners = {key: group for group in GROUPS for key in getattr(self, group).__dataclass_fields__}
        given = [
            (key, value, f"--{key.replace('_', '-')} {value}")
            for key, value in (named or {}).items()
            if value is not None
        ]
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep or key not in owners:
                raise SettingError(f"{assignment!r}: expected FIELD=VALUE with a known field")
            try:
                value = _parse(getattr(getattr(self, owners[key]), key), raw)
            except ValueError as exc:
                raise SettingError(f"{assignment!r}: {exc}") from exc
            given.append((key, value, assignment))
        assigned: dict[str, tuple[Any, str]] = {}
        for key, value, origin in given:
            if key not in owners:
                raise SettingError(f"{origin}: no such setting")
            if key in assigned and assigned[key][0] != value:
                raise SettingError(f"{assigned[key][1]} and {origin} differ: give {key} once")
            assigned[key] = (value, origin)
        changed: dict[str, Any] = {}
        for group in GROUPS:
            keys = [k for k in assigned if owners[k] == group]
            if not keys:
                continue
            try:
                changed[group] = dataclasses.replace(
                    getattr(self, group), **{k: assigned[k][0] for k in keys}
                )
            except ValueError as exc:
                raise SettingError(f"{', '.join(assigned[k][1] for k in keys)}: {exc}") from exc
        return dataclasses.replace(self, **changed)


def _parse(current: Any, raw: str) -> Any:
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a yes/no value")
    if isinstance(current, tuple):
        return tuple(int(v) for v in raw.split(","))
    return type(current)(raw)


def split_assignments(text: str) -> tuple[str, ...]:
    """FIELD=VALUE settings written as one comma-separated string (bench/variants.py --variant):
    split at each comma that starts the next FIELD=, so a tuple value keeps its own commas
    (`widths=32,64,128,256,dropout=0.2` is two settings)."""
    return tuple(part.strip(" ,") for part in re.split(r",(?=\s*\w+=)", text) if part.strip(" ,"))


SHIPPED = Recipe(
    name="shipped",
    input=PreprocessSpec(
        size=160,  # keeps small lesions visible; 192 gained nothing (experiment 12)
        crop=True,  # trim the background around the head
        crop_threshold=0.08,
        crop_min_fraction=0.02,
        crop_margin=0.02,
        normalise=True,  # stretch the head's 1st..99th percentile to 0..255
    ),
    network=Network(
        arch="resnet",  # residual, depthwise-separable after the first stage, squeeze-excite
        stem_width=24,
        widths=(32, 64, 128, 192),
        blocks=(1, 1, 2, 1),
        separable_from=1,  # full convolutions everywhere: within the noise, 0.76x speed (exp. 13)
        squeeze_excite=True,
        dropout=0.3,  # 0.1 and 0.5 both lower (experiment 24)
        kernel_l2=1e-4,
        # one network: two re-seeded ones averaged (experiments 25-26) doubled a fit's time, and on
        # three sources (issue 35) the ensemble is not measured yet; `--set members=2` makes one
        members=1,
    ),
    optimisation=Optimisation(
        epochs=30,  # 50 gained nothing (experiment 11)
        batch_size=32,
        learning_rate=2e-3,  # AdamW, cosine decay after warm-up; 1e-3 no better (experiment 20)
        warmup_epochs=2,
        weight_decay=1e-4,
        label_smoothing=0.05,
        keep_last=True,  # the last epoch, not the best validation one: AUC +0.004 (experiment 27)
        patience=12,
        augment_strength=1.0,  # 1.5 lower (experiment 19)
        balance_classes=True,
        source_balance=0.5,  # a source of n images weighs n^-0.5 each: new sources rank better (exp. 38)
    ),
    policy=Policy(
        seed=1337,
        val_fraction=0.15,
        test_fraction=0.15,
        group_threshold=0.95,
        subject_pattern=r"^(TCGA_.+)_\d+\.\w+$",  # lgg-flair's 110 scans, each one subject
        recall_target=0.993,  # 0.99 missed more tumours for little specificity (experiment 28)
        specificity_floor=0.0,
        # a scan's first and last tumour slices (slivers) left out of the target, all counted in
        # the figures: in-source specificity 0.34 -> 0.53 at the same pooled recall (experiment 39)
        recall_counts_edges=False,
    ),
)

SEED = Recipe(  # the seed notebook: plain resize, its 3-layer CNN, no augmentation, no balancing
    name="seed",
    input=PreprocessSpec(size=128, crop=False, normalise=False),
    network=Network(
        arch="seed",
        stem_width=0,  # the seed network has no stem, stages or L2 penalty: these are unused
        widths=(),
        blocks=(),
        separable_from=0,
        squeeze_excite=False,
        dropout=0.5,
        kernel_l2=0.0,
        members=1,
    ),
    optimisation=Optimisation(
        epochs=20,
        batch_size=32,
        learning_rate=1e-3,
        warmup_epochs=0,
        weight_decay=0.0,
        label_smoothing=0.0,
        keep_last=False,
        patience=12,
        augment_strength=0.0,
        balance_classes=False,
        source_balance=0.0,
    ),
    policy=dataclasses.replace(SHIPPED.policy, recall_target=0.99),
)

RECIPES = {recipe.name: recipe for recipe in (SHIPPED, SEED)}
