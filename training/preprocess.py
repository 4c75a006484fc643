"""The one preprocessing function shared by training and scoring: grey slice -> model input."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.card import known_settings
from training.decode import DEFAULT_MAX_PIXELS, ImageError, decode_image


@dataclass(frozen=True)
class PreprocessSpec:
    """How a slice becomes a model input; stored in the model card so scoring repeats it exactly."""

    size: int = 160  # model input side in pixels
    crop: bool = True  # trim the background around the head (off only for the seed baseline)
    crop_threshold: float = 0.08  # background is below this fraction of the 99th percentile
    crop_min_fraction: float = 0.02  # a row/column belongs to the head if this share is bright
    crop_margin: float = 0.02  # margin kept around the head, as a fraction of its size
    normalise: bool = True  # stretch the head's 1st..99th percentile to 0..255
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """A card's spec; an unknown field is refused (scoring would feed the model other inputs
        than it was trained on)."""
        return cls(**known_settings(cls, data, "preprocessing"))


def head_box(grey: np.ndarray, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the head: rows/columns with enough bright pixels."""
    ref = float(np.percentile(grey[::2, ::2], 99))
    if ref <= 0:
        raise ImageError("blank image: no bright pixels")
    mask = grey > ref * spec.crop_threshold
    rows = np.flatnonzero(mask.mean(axis=1) > spec.crop_min_fraction)
    cols = np.flatnonzero(mask.mean(axis=0) > spec.crop_min_fraction)
    height, width = grey.shape
    if rows.size < 8 or cols.size < 8:
        return 0, height, 0, width  # nothing head-like: keep the whole frame
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    mh = int((bottom - top) * spec.crop_margin)
    mw = int((right - left) * spec.crop_margin)
    return max(0, top - mh), min(height, bottom + mh), max(0, left - mw), min(width, right + mw)


def preprocess(grey: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Crop to the head, normalise intensity, pad to square and resize: uint8 (size, size)."""
    if grey.max() == grey.min():
        raise ImageError("blank image: every pixel has the same value")
    if spec.crop:
        top, bottom, left, right = head_box(grey, spec)
        grey = grey[top:bottom, left:right]
    head = grey
    if spec.normalise:
        head = _normalise(head, spec)
    side = max(head.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    oy, ox = (side - head.shape[0]) // 2, (side - head.shape[1]) // 2
    square[oy : oy + head.shape[0], ox : ox + head.shape[1]] = head
    img = Image.fromarray(square)
    if side != spec.size:
        img = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def _normalise(head: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Map the head's intensities to 0..255 through one look-up table: its 1st..99th percentile
    stretched linearly."""
    sample = head[::2, ::2]
    bright = sample[sample > 0]
    if bright.size < 16:
        return head
    lo, hi = np.percentile(bright, [1, 99])
    if hi - lo < 1:
        return head
    levels = np.arange(256, dtype=np.float32)
    lut = np.clip((levels - lo) * (255.0 / (hi - lo)), 0, 255)
    out: np.ndarray = lut.astype(np.uint8)[head]
    return out


def load_input(
    source: Path | bytes, spec: PreprocessSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS, frame: int = 0
) -> np.ndarray:
    """Decode and preprocess one file (or one frame of it): the exact path from disk to model input,
    for train and score."""
    grey = decode_image(source, draft_side=spec.size * 2, max_pixels=max_pixels, frame=frame)
    return preprocess(grey, spec)
