"""Training-time augmentation for MRI slices, on the CPU in NumPy/Pillow, for any Keras backend.

Pose: small rotations, zoom and shifts in one affine warp; left-right flips (brains are nearly
symmetric and tumours occur on either side; up-down flips are not used: no scanner shows a head
upside down). Intensity: gamma (contrast) and gain (brightness), which vary between scanners and
sequences. (A random monotone curve through the head's greys, half of them inverted, to mimic
other sequences was measured and dropped: experiment 37.) Doing this outside the graph keeps the
saved model free of augmentation layers and runs the same under any Keras backend (Keras' image
layers were the bottleneck under JAX on the GPU machine).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from PIL import Image


def augment_one(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """One augmented copy of a uint8 (size, size) slice, as float32 in 0..255."""
    s = strength
    size = img.shape[0]
    angle = math.radians(rng.uniform(-12, 12) * s)
    zoom = 1 + rng.uniform(-0.12, 0.12) * s
    shift = rng.uniform(-0.06, 0.06, 2) * s * size
    flip = rng.random() < 0.5
    # inverse map (output -> input) of: flip, rotate and zoom about the centre, then shift
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    c = (size - 1) / 2
    fx = -1.0 if flip else 1.0
    a, b = fx * cos, fx * sin
    d, e = -sin, cos
    ox, oy = c + shift[0], c + shift[1]
    coeffs = (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy)
    warped = Image.fromarray(img).transform(
        (size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    out = np.asarray(warped, dtype=np.float32)
    gamma = math.exp(rng.uniform(-0.3, 0.3) * s)  # contrast curve: differs between sequences
    gain = 1 + rng.uniform(-0.2, 0.2) * s  # overall brightness; background stays black
    clipped: np.ndarray = np.clip(255.0 * gain * (out / 255.0) ** gamma, 0, 255)
    return clipped


def augmented_views(x: np.ndarray, idx: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The slices x[idx] (uint8, (n, size, size, 1)), each augmented by `augment_one` in order
    (strength 0: unchanged), as a float32 (len(idx), size, size, 1) batch in 0..255."""
    if strength <= 0:
        plain: np.ndarray = x[idx].astype(np.float32)
        return plain
    return np.stack([augment_one(x[i, :, :, 0], rng, strength) for i in idx])[..., None]


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, augmented (x, y, sample_weight) batches; reproducible from the seed and epoch.
    `weights`: one loss weight per sample (class balance, `train.sample_weights`)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        strength: float,
        seed: int,
        weights: np.ndarray | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.x, self.y = x, y.astype(np.float32)
        self.batch_size, self.strength, self.seed = batch_size, strength, seed
        self.weights = (np.ones(len(y)) if weights is None else weights).astype(np.float32)
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def batch_indices(self, index: int) -> np.ndarray:
        """Which training slices batch `index` of this epoch holds, in its order."""
        return self.order[index * self.batch_size : (index + 1) * self.batch_size]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.batch_indices(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        batch = augmented_views(self.x, idx, rng, self.strength)
        return np.rint(batch).astype(np.uint8), self.y[idx], self.weights[idx]  # uint8: the model's input

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
