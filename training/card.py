"""The model card: a JSON file beside the model that says what it is, how it was made and how good."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_SUFFIX = ".card.json"


def card_path_for(model_path: Path) -> Path:
    """models/brainscan.keras -> models/brainscan.card.json"""
    return model_path.with_name(model_path.stem + CARD_SUFFIX)


def json_safe(value: Any) -> Any:
    """NaN (an undefined ratio such as specificity with no negatives) becomes null: valid JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def known_settings(cls: type[Any], data: dict[str, Any], what: str) -> dict[str, Any]:
    """A card's `what` settings, checked against the dataclass `cls` that takes them. A card older
    than a field lacks it and gets the default (what it was made with); a field this code does not
    know would be silently dropped, rebuilding something other than what was saved: refused."""
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"{what} setting(s) {', '.join(unknown)} unknown to this version of brainscan: "
            "the model needs a newer one"
        )
    return dict(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of what produced the model (recorded so a result can be reproduced)."""
    import keras
    import numpy
    import PIL
    import sklearn

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "scikit-learn": sklearn.__version__,
    }
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return versions


# What cards written before recipes (2026-12-04) hold, and how they read now. Their settings sat
# in `input`, `architecture` and `training`; a missing one had the default of its day.
_OLD_ARCHITECTURE = {
    "arch": "resnet",
    "stem_width": 24,
    "widths": [32, 64, 128, 192],
    "blocks": [1, 1, 2, 1],
    "separable_from": 1,
    "squeeze_excite": True,
    "dropout": 0.3,
    "weight_decay": 1e-4,  # now the network's kernel_l2
    "members": 1,
}
_OLD_OPTIMISATION = {
    "epochs": 30,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "warmup_epochs": 2,
    "weight_decay": 1e-4,
    "label_smoothing": 0.05,
    "keep_last": False,
    "patience": 12,
    "augment_strength": 1.0,
    "balance_classes": True,
    "source_balance": 0.0,
}
_OLD_POLICY = {
    "seed": 1337,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    "recall_target": 0.99,
    "specificity_floor": 0.0,
    "recall_counts_edges": True,
}
# Experiments that were measured and dropped; their code is at commit 55eff61 (docs/experiments.md).
# A card made with one of them on cannot be rebuilt by this version; off, the setting is dropped.
_RETIRED = {
    "equalise": 0.0,
    "flip_tta": False,
    "extra": {},
    "style_augment": 0.0,
    "contrast_augment": 0.0,
    "mixup": 0.0,
    "lesions": 0.0,
    "focal_gamma": 0.0,
    "ema": 0.0,
    "distill": 0.0,
    "domain_adapt": 0.0,
    "subtype_aux": 0.0,
    "source_balance": 0.0,
    "member": 0,
}
_RUN_FACTS = ("epochs_run", "best_epoch", "member_best_epochs", "seconds", "device", "params", "command")


def upgrade(card: dict[str, Any]) -> dict[str, Any]:
    """A card as this version writes it. A card written before recipes is converted: its settings
    are grouped into `recipe` (name "" : it was made before recipes had names), a renamed setting
    takes its new name, and settings of dropped experiments go if they were off (refused if on)."""
    if "recipe" in card:
        return card
    old_input = dict(card.get("input") or {})
    old_arch = {**_OLD_ARCHITECTURE, **(card.get("architecture") or {})}
    old_training = dict(card.get("training") or {})
    if old_arch["arch"] == "seed" and "dropout" not in (card.get("architecture") or {}):
        old_arch["dropout"] = 0.5  # the seed network's dropout was fixed, whatever the setting
    on = {
        key: value
        for section in (old_input, old_arch, old_training)
        for key, value in section.items()
        if key in _RETIRED and value != _RETIRED[key]
    }
    if on:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(on.items()))
        raise ValueError(
            f"this model was made with {settings}, an experiment this version of brainscan no longer "
            "has (docs/experiments.md names the commit that does)"
        )
    size = old_arch.pop("input_size", old_input.get("size"))
    if size is not None and old_input.get("size", size) != size:
        raise ValueError(f"the card's input size {old_input.get('size')} and network input {size} differ")
    old_arch["kernel_l2"] = old_arch.pop("weight_decay")
    grouping = (card.get("data") or {}).get("grouping") or {}
    recipe = {
        "name": "",
        "input": {
            **{k: v for k, v in old_input.items() if k not in _RETIRED},
            **({"size": size} if size else {}),
        },
        "network": {k: v for k, v in old_arch.items() if k not in _RETIRED},
        "optimisation": {k: old_training.get(k, v) for k, v in _OLD_OPTIMISATION.items()},
        "policy": {
            **{k: old_training.get(k, card.get(k, v)) for k, v in _OLD_POLICY.items()},
            "group_threshold": grouping.get("threshold", 0.95),
            "subject_pattern": "",
        },
    }
    new = {
        k: v
        for k, v in card.items()
        if k not in ("input", "architecture", "recall_target", "specificity_floor")
    }
    new["recipe"] = recipe
    new["training"] = {k: old_training[k] for k in _RUN_FACTS if k in old_training}
    return new


@dataclass
class ModelCard:
    """Everything needed to trust, reproduce and correctly use one trained model."""

    version: str
    created: str
    threshold: float
    recipe: dict[str, Any]  # `training.recipes.Recipe.to_dict()`: its name and every setting
    training: dict[str, Any]  # what the fit did: epochs run, best epochs, device, seconds, command
    data: dict[str, Any]  # fingerprint, counts per class/source, groups, split sizes
    metrics: dict[str, Any] = field(default_factory=dict)  # "validation", "test", "cv", "cross_source"
    threshold_sweep: list[dict[str, float]] = field(default_factory=list)
    evaluation_set: str = "test"  # the held-out split the sweep and plots describe
    plots: dict[str, str] = field(default_factory=dict)  # plot name -> file name beside the card
    libraries: dict[str, str] = field(default_factory=dict)
    model_file: str = ""
    model_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    reference: dict[str, Any] = field(default_factory=dict)  # held-out scores (training.drift)
    ood: dict[str, Any] = field(default_factory=dict)  # out-of-distribution reference (training.ood)
    study: dict[str, Any] | None = None  # study rule, threshold and figures (training.studies.study_card)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(json_safe(asdict(self)), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        data = upgrade(json.loads(path.read_text()))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
