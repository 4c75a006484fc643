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


@dataclass
class ModelCard:
    """Everything needed to trust, reproduce and correctly use one trained model."""

    version: str
    created: str
    threshold: float
    recall_target: float
    input: dict[str, Any]  # preprocessing spec: size, crop, normalisation
    architecture: dict[str, Any]  # ModelConfig as a dict
    training: dict[str, Any]  # TrainConfig, epochs run, device, duration
    data: dict[str, Any]  # fingerprint, counts per class/source, groups, split sizes
    metrics: dict[str, Any] = field(default_factory=dict)  # "validation", "test", "cv", "cross_source"
    threshold_sweep: list[dict[str, float]] = field(default_factory=list)
    specificity_floor: float = 0.0  # validation specificity the threshold was lowered to (0: none)
    evaluation_set: str = "test"  # the held-out split the sweep and plots describe
    plots: dict[str, str] = field(default_factory=dict)  # plot name -> file name beside the card
    libraries: dict[str, str] = field(default_factory=dict)
    model_file: str = ""
    model_sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(json_safe(asdict(self)), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
