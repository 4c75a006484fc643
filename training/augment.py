"""Training-time augmentation for MRI slices, on the CPU in NumPy/Pillow, for any Keras backend.

Pose: small rotations, zoom and shifts in one affine warp; left-right flips (brains are nearly
symmetric and tumours occur on either side; up-down flips are not used: no scanner shows a head
upside down). Intensity: gamma (contrast) and gain (brightness), which vary between scanners and
sequences. Optional: image-quality degradation (`degrade`) and random tissue-contrast curves
(`remap_contrast`), both aimed at sources that look different from the training data, and mixup
(`mix_batch`: each slice blended with another of its batch, labels blended alike), and synthetic
masses (`add_lesion`: a clear slice turned into a tumour example). Doing this
outside the graph keeps the saved model free of augmentation layers and runs the same under any
Keras backend (Keras' image layers were the bottleneck under JAX on the GPU machine).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import keras
import numpy as np
from PIL import Image, ImageFilter


def degrade(img: Image.Image, rng: np.random.Generator, p: float) -> Image.Image:
    """Image quality of another source, each with probability p: blur, lost resolution, JPEG."""
    size = img.size[0]
    if rng.random() < p:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.4)))
    if rng.random() < p:
        small = max(32, int(size * rng.uniform(0.35, 0.8)))
        img = img.resize((small, small), Image.Resampling.BILINEAR).resize(
            (size, size), Image.Resampling.BILINEAR
        )
    if rng.random() < p:
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=int(rng.integers(25, 80)))
        img = Image.open(buffer)
        img.load()
    return img


def remap_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pass a float slice (0..255, background 0) through a random intensity curve through (0, 0).

    T1, T2 and FLAIR order the same tissues differently (CSF dark in one, bright in another), so
    half the curves are not monotonic. The result is stretched again so the head's 99th percentile
    is 255, as preprocessing does. Aimed at a model that learns "this sequence means no tumour".
    """
    knots = np.linspace(0.0, 255.0, 6)
    values = np.concatenate([[0.0], rng.uniform(20.0, 255.0, 5)])
    if rng.random() < 0.5:
        values[1:] = np.sort(values[1:])
    mapped = np.interp(img, knots, values)
    head = mapped[img > 0]
    top = float(np.percentile(head, 99)) if head.size else 255.0
    out: np.ndarray = np.clip(mapped * (255.0 / max(top, 1.0)), 0, 255).astype(np.float32)
    return out


def augment_one(
    img: np.ndarray, rng: np.random.Generator, strength: float, style: float = 0.0, contrast: float = 0.0
) -> np.ndarray:
    """One augmented copy of a uint8 (size, size) slice, as float32 in 0..255.

    style > 0 also degrades image quality (see `degrade`) and adds noise, each with that probability;
    contrast > 0 is the chance of a random tissue-contrast curve (see `remap_contrast`).
    """
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
    source = degrade(Image.fromarray(img), rng, style) if style > 0 else Image.fromarray(img)
    warped = source.transform(
        (size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    out = np.asarray(warped, dtype=np.float32)
    if contrast > 0 and rng.random() < contrast:
        out = remap_contrast(out, rng)
    if style > 0 and rng.random() < style:
        noise = rng.normal(0.0, rng.uniform(2.0, 8.0), out.shape).astype(np.float32)
        out = np.clip(out + noise * (out > 0), 0, 255)
    gamma = math.exp(rng.uniform(-0.3, 0.3) * s)  # contrast curve: differs between sequences
    gain = 1 + rng.uniform(-0.2, 0.2) * s  # overall brightness; background stays black
    clipped: np.ndarray = np.clip(255.0 * gain * (out / 255.0) ** gamma, 0, 255)
    return clipped


def augmented_views(
    x: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    strength: float,
    style: float = 0.0,
    contrast: float = 0.0,
) -> np.ndarray:
    """The slices x[idx] (uint8, (n, size, size, 1)), each augmented by `augment_one` in order
    (strength 0: unchanged), as a float32 (len(idx), size, size, 1) batch in 0..255."""
    if strength <= 0:
        plain: np.ndarray = x[idx].astype(np.float32)
        return plain
    return np.stack([augment_one(x[i, :, :, 0], rng, strength, style, contrast) for i in idx])[..., None]


def add_lesion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic mass drawn into a float slice (0..255, background 0): an ellipse with a soft
    edge and mottled inside, bright (as a tumour or its oedema on T2/FLAIR) or, one time in three,
    a bright rim around a darker core (as a ring-enhancing lesion), placed inside the head. Aimed at
    the shortcut the error analysis found (docs/model.md): tumours on T2/FLAIR slices are rare in
    the training data, so a clear slice of that look teaches "no tumour" whatever it shows."""
    size = img.shape[0]
    head = np.argwhere(img > 0.25 * max(float(img.max()), 1.0))
    if len(head) < 50:
        return img
    inner = head[np.all(np.abs(head - head.mean(axis=0)) < 0.6 * np.ptp(head, axis=0) / 2, axis=1)]
    cy, cx = (inner if len(inner) else head)[rng.integers(len(inner) if len(inner) else len(head))]
    radius = rng.uniform(0.05, 0.16) * size
    aspect, angle = rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / radius
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / (radius * aspect)
    dist = np.sqrt(u * u + v * v)
    coarse = rng.uniform(0.65, 1.0, (10, 10)).astype(np.float32)  # mottled inside
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    mask = 1.0 / (1.0 + np.exp((dist - 1.0) * rng.uniform(6.0, 14.0)))  # soft edge
    if rng.random() < 1 / 3:  # ring: bright rim, core at a fraction of it
        mask = mask * np.where(dist < 0.65, rng.uniform(0.2, 0.5), 1.0)
    level = rng.uniform(0.75, 1.0) * 255.0
    mask = mask * (img > 0)  # never outside the head
    out: np.ndarray = np.clip(img * (1 - mask) + level * texture * mask, 0, 255).astype(np.float32)
    return out


def mix_batch(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixup: each sample blended with a random partner of its batch, lam ~ Beta(alpha, alpha)
    folded to >= 0.5 so every mixed slice stays mostly itself; images, labels and sample weights
    are blended with the same lam. x is float (n, h, w, 1), y and w float (n,)."""
    lam = rng.beta(alpha, alpha, len(x)).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)
    partner = rng.permutation(len(x))
    mixed_x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
    return mixed_x, lam * y + (1 - lam) * y[partner], lam * w + (1 - lam) * w[partner]


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, augmented (x, y, sample_weight) batches; reproducible from the seed and epoch.
    `weights`: one loss weight per sample (class and source balance, `train.sample_weights`).
    `teacher` (distillation): scores a finished batch, P(tumour) per slice; each target becomes
    (1 - teacher_weight) * label + teacher_weight * that score, on the very view the student sees."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        strength: float,
        seed: int,
        weights: np.ndarray | None = None,
        style: float = 0.0,
        contrast: float = 0.0,
        mixup: float = 0.0,
        lesions: float = 0.0,
        teacher: Callable[[np.ndarray], np.ndarray] | None = None,
        teacher_weight: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.x, self.y = x, y.astype(np.float32)
        self.batch_size, self.strength, self.seed = batch_size, strength, seed
        self.style, self.contrast, self.mixup, self.lesions = style, contrast, mixup, lesions
        self.teacher, self.teacher_weight = teacher, np.float32(teacher_weight)
        self.weights = (np.ones(len(y)) if weights is None else weights).astype(np.float32)
        positive = self.weights[y == 1]  # a synthetic tumour weighs as a real one on average
        self.positive_weight = np.float32(positive.mean() if positive.size else 1.0)
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
        y, w = self.y[idx], self.weights[idx]
        batch = augmented_views(self.x, idx, rng, self.strength, self.style, self.contrast)
        if self.lesions > 0:
            chosen = np.flatnonzero((y == 0) & (rng.random(len(y)) < self.lesions))
            if chosen.size:
                y, w = y.copy(), w.copy()
                for i in chosen:
                    batch[i, :, :, 0] = add_lesion(batch[i, :, :, 0], rng)
                y[chosen], w[chosen] = 1.0, self.positive_weight
        if self.mixup > 0:
            batch, y, w = mix_batch(batch, y, w, rng, self.mixup)
        batch = np.rint(batch).astype(np.uint8)  # uint8: the model's input type
        if self.teacher is not None and self.teacher_weight > 0:
            scores = np.asarray(self.teacher(batch), dtype=np.float32).reshape(-1)
            y = (1 - self.teacher_weight) * y + self.teacher_weight * scores
        return batch, y, w

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
