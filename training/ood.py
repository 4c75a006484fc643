"""Out of distribution, per image: how unlike the training images a slice looks to the network.

The network's pooled features (the input of its `tumour` head; an ensemble's members' side by
side), scaled to unit length, are modelled as a Gaussian per class with one shared covariance,
fitted on the training split (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples": the Mahalanobis distance to the nearest class mean; the covariance
shrunk by Ledoit-Wolf, since a few thousand slices estimate a 192-dimension covariance poorly).
Unit length: on the model trained without `lgg-flair`, AUROC of its test split against every
`lgg-flair` slice 0.933 against 0.922 unscaled, and 37 % of those slices beyond the threshold
against 23 % (docs/model.md; per-class covariances, one Gaussian, a relative distance and
nearest neighbours were no better). The threshold is a high
quantile of the validation split's distances: a slice beyond it looks less like the training
images than 99 % of held-out slices of the same sources did. Its score then means little, and
an unflagged one is `not assessed` rather than a negative.

The reference is stored beside the model (`<model>.ood.npz`) and described in the card's `ood`.
The features come from the same forward pass as the score, so it costs the matrix products only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTILE = 0.99  # of the validation split's distances: the out-of-distribution threshold
SUFFIX = ".ood.npz"


def reference_path_for(model_path: Path) -> Path:
    """Where a model's out-of-distribution reference lives: beside it, `<stem>.ood.npz`."""
    return model_path.with_name(model_path.stem + SUFFIX)


def with_features(model: Any) -> Any:
    """A Keras model giving [P(tumour), pooled features] from one forward pass of `model`'s
    weights: the features are what its `tumour` head reads (an ensemble's members' side by side,
    its probability their average, as the ensemble computes it)."""
    import keras

    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not members:
        return keras.Model(model.inputs, [model.outputs[0], model.get_layer("tumour").input])
    slice_in = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="slice")
    outputs = [with_features(member)(slice_in) for member in members]
    probability = keras.layers.Average(dtype="float32")([p for p, _ in outputs])
    features = keras.layers.Concatenate()([f for _, f in outputs])
    return keras.Model(slice_in, [probability, features])


@dataclass(frozen=True)
class FeatureReference:
    """Class means and a shared precision matrix of the training split's pooled features, and the
    distance beyond which a slice is out of distribution."""

    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)
    threshold: float
    quantile: float

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (n, d), scaled to unit length, to the
        nearest class mean."""
        features = unit_length(features)
        nearest = np.full(len(features), np.inf)
        for mean in self.means:
            diff = features - mean
            nearest = np.minimum(nearest, np.einsum("ij,ij->i", diff @ self.precision, diff))
        found: np.ndarray = np.sqrt(np.maximum(nearest, 0.0))
        return found

    def save(self, path: Path) -> None:
        with path.open("wb") as out:
            np.savez(
                out,
                means=self.means.astype(np.float32),
                precision=self.precision.astype(np.float32),
                threshold=np.float64(self.threshold),
                quantile=np.float64(self.quantile),
            )

    @classmethod
    def load(cls, path: Path) -> FeatureReference:
        with np.load(path) as stored:
            return cls(
                stored["means"].astype(np.float64),
                stored["precision"].astype(np.float64),
                float(stored["threshold"]),
                float(stored["quantile"]),
            )


def fit_reference(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    validation_features: np.ndarray,
    *,
    quantile: float = QUANTILE,
) -> FeatureReference:
    """Class means and a Ledoit-Wolf shared covariance from the training split; the threshold at
    `quantile` of the validation split's distances."""
    from sklearn.covariance import LedoitWolf

    features = unit_length(train_features)
    labels = np.asarray(train_labels)
    classes = sorted(set(labels.tolist()))
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    shrunk = LedoitWolf(assume_centered=True).fit(centred)
    unfitted = FeatureReference(means, shrunk.precision_, np.inf, quantile)
    threshold = float(np.quantile(unfitted.distances(validation_features), quantile))
    return FeatureReference(means, shrunk.precision_, threshold, quantile)


def unit_length(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a row of zeros stays zero)."""
    rows = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    scaled: np.ndarray = rows / np.where(norms > 0, norms, 1.0)
    return scaled


def card_entry(reference: FeatureReference, path: Path, *, trained: int, validated: int) -> dict[str, Any]:
    """The card's `ood`: where the reference is, what it was fitted on, and its threshold."""
    from training.card import file_sha256

    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "features": int(reference.means.shape[1]),
        "classes": int(reference.means.shape[0]),
        "fitted_on": f"train split ({trained} images)",
        "threshold_from": f"validation split ({validated} images), quantile {reference.quantile}",
        "threshold": reference.threshold,
    }


def fit_on_task(model: Any, inputs: np.ndarray, labels: np.ndarray, task: Any) -> FeatureReference:
    """The reference of a trained model: fitted on its task's training part, the threshold from its
    validation part (`task`: a training.crossval.FitTask)."""
    _, train_features = features_of(model, inputs[task.train])
    _, validation_features = features_of(model, inputs[task.val])
    return fit_reference(train_features, labels[task.train], validation_features)


def features_of(model: Any, inputs: np.ndarray, *, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """P(tumour) (n,) and pooled features (n, d) of preprocessed uint8 slices."""
    both = with_features(model)
    probs, feats = [], []
    for start in range(0, len(inputs), batch_size):
        p, f = both.predict_on_batch(inputs[start : start + batch_size])
        probs.append(np.asarray(p).reshape(-1))
        feats.append(np.asarray(f).reshape(len(p), -1))
    return np.concatenate(probs).astype(np.float64), np.concatenate(feats).astype(np.float64)
