"""Domain-adversarial training (DANN, Ganin et al. 2016) with unlabelled slices of a target source.

An experiment tool for the cross-source target (docs/model.md, experiment 30), not used by the
shipped model. Beside the tumour classifier, a small critic reads the network's pooled features
and learns to tell the training sources' slices from unlabelled slices of the target source; a
gradient-reversal layer between the two makes the network's features work *against* the critic,
so they keep what tells tumours apart and lose what tells the sources apart. No target label is
read: the target slices carry a tumour loss weight of 0. Everything here is backend-agnostic
Keras (the reversal is `stop_gradient` arithmetic), so it runs under TensorFlow and JAX alike.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from training.augment import AugmentedBatches, augmented_views
from training.model import FEATURES


@keras.saving.register_keras_serializable(package="brainscan")
class GradientReversal(layers.Layer):
    """Identity going forward; multiplies the gradient by -strength going back. `strength` is a
    non-trainable variable, ramped up during training by `ReversalSchedule`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False, name="strength")

    def call(self, inputs: Any) -> Any:
        held = ops.stop_gradient(inputs)
        # value: held (= inputs); d/d inputs: -strength
        return held + ops.cast(self.strength, inputs.dtype) * (held - inputs)


def reversal_strength(progress: float, peak: float) -> float:
    """DANN's ramp: 0 at the start, rising smoothly to `peak` (2 / (1 + exp(-10 p)) - 1), so the
    critic's noisy early gradients do not disturb the features before they mean anything."""
    return peak * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class ReversalSchedule(keras.callbacks.Callback):
    """Sets the reversal layer's strength at each epoch's start from the training progress."""

    def __init__(self, layer: GradientReversal, peak: float, epochs: int) -> None:
        super().__init__()
        self.layer, self.peak, self.epochs = layer, peak, epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.layer.strength.assign(reversal_strength(epoch / max(1, self.epochs), self.peak))


def adversarial_model(net: keras.Model, hidden: int = 64) -> tuple[keras.Model, GradientReversal]:
    """A training graph over `net`'s own layers (weights shared, so training it trains `net`) with
    two outputs: "tumour" (net's output) and "domain" (the critic's P(target source), read through
    the reversal from the pooled features). Returns the graph and its reversal layer."""
    features = net.get_layer(FEATURES).output
    reversal = GradientReversal(name="gradient_reversal")
    h = layers.Dense(hidden, activation="relu", name="critic_hidden")(reversal(features))
    domain = layers.Dense(1, activation="sigmoid", name="critic", dtype="float32")(h)
    model = keras.Model(net.input, {"tumour": net.output, "domain": domain}, name=f"{net.name}_adversarial")
    return model, reversal


class DomainBatches(keras.utils.PyDataset):
    """Each labelled batch of `labelled` followed by `target_batch` unlabelled target slices, drawn
    at random (reproducibly from the seed, epoch and index) and given the labelled ones' pose and
    intensity augmentation (at its strength; not its optional quality or contrast degradation).
    Yields (x, targets, weights) dicts for `adversarial_model`'s outputs: target slices weigh 0 in
    the tumour loss; in the domain loss each domain weighs as much in total as the other."""

    def __init__(
        self,
        labelled: AugmentedBatches,
        target: np.ndarray,
        *,
        target_batch: int,
        seed: int,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if len(target) == 0:
            raise ValueError("domain-adversarial training needs unlabelled target slices")
        self.labelled, self.target = labelled, target
        self.target_batch, self.seed, self.epoch = max(1, target_batch), seed, 0

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        x, y, w = self.labelled[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pick = rng.choice(len(self.target), self.target_batch, replace=len(self.target) < self.target_batch)
        views = augmented_views(self.target, pick, rng, self.labelled.strength)
        xt = np.rint(views).astype(np.uint8)
        n, m = len(x), len(xt)
        none = np.zeros(m, dtype=np.float32)
        targets = {
            "tumour": np.concatenate([y, none]),
            "domain": np.concatenate([np.zeros(n), np.ones(m)]).astype(np.float32),
        }
        weights = {
            "tumour": np.concatenate([w, none]),
            "domain": np.concatenate([np.ones(n), np.full(m, n / m)]).astype(np.float32),
        }
        return np.concatenate([x, xt]), targets, weights

    def on_epoch_end(self) -> None:
        self.labelled.on_epoch_end()
        self.epoch += 1


def adaptation_split(groups: np.ndarray, target_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The target source's images cut in two by near-duplicate group, without reading a label:
    (the half whose slices training may see unlabelled, the half it never sees). Scoring the second
    half measures adaptation to *new* slices of the source, not to slices it has looked at."""
    ids = np.unique(groups[target_idx])
    chosen = set(np.random.default_rng(seed).permutation(ids)[: len(ids) // 2].tolist())
    seen = np.array([g in chosen for g in groups[target_idx]], dtype=bool)
    return target_idx[seen], target_idx[~seen]
