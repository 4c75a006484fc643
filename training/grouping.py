"""Near-duplicate grouping: the same slice re-encoded, resized, re-cropped or mirrored is one group.

A fingerprint is the head (as `head_box` finds it) stretched to 16x16 and zero-mean/unit-norm, so
crops, aspect-ratio changes and intensity scaling between copies cancel out. Two images are twins
when their fingerprints (or one and the other's mirror image) correlate at or above `threshold`.
Twins are joined transitively (connected components). The default 0.95 was measured on
../shared/data (docs/model.md): it joins 93 of the 98 seed-253/no images to their known twin in
kaggle-4class-train/notumor and never joins a tumour image with a no-tumour one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.preprocess import PreprocessSpec, head_box

FINGERPRINT_SIDE = 16
DEFAULT_THRESHOLD = 0.95
_CHUNK = 2048  # rows per block of the similarity matrix: bounded memory for large sets


def fingerprint(grey: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A (256,) float32 unit vector describing the head's coarse appearance."""
    top, bottom, left, right = head_box(grey, spec)
    head = Image.fromarray(np.ascontiguousarray(grey[top:bottom, left:right]))
    small = np.asarray(head.resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE), Image.Resampling.BOX))
    return _unit(small.astype(np.float32).ravel())


def _unit(vec: np.ndarray) -> np.ndarray:
    centred = vec - vec.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    out: np.ndarray = centred / np.maximum(norm, 1e-6)
    return out


def _mirror(fps: np.ndarray) -> np.ndarray:
    side = FINGERPRINT_SIDE
    return np.ascontiguousarray(fps.reshape(-1, side, side)[:, :, ::-1].reshape(len(fps), -1))


@dataclass(frozen=True)
class Grouping:
    """Group id per image, plus the figures a report needs."""

    groups: np.ndarray  # int group id per image, 0..n_groups-1
    threshold: float

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1 if self.groups.size else 0

    def summary(self) -> dict[str, int | float]:
        sizes = np.bincount(self.groups) if self.groups.size else np.zeros(0, dtype=int)
        in_multi = int((sizes[self.groups] > 1).sum()) if self.groups.size else 0
        return {
            "images": int(self.groups.size),
            "groups": self.n_groups,
            "multi_image_groups": int((sizes > 1).sum()),
            "images_in_multi_image_groups": in_multi,
            "largest_group": int(sizes.max()) if sizes.size else 0,
            "threshold": self.threshold,
        }


def group_near_duplicates(fps: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Grouping:
    """Connected components of the 'correlates >= threshold' graph over fingerprints (n, 256)."""
    n = len(fps)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for start, hits in _matches(fps, fps, threshold):
        rows, cols = np.nonzero(hits)
        for r, c in zip(rows + start, cols, strict=True):
            if c > r:
                a, b = find(int(r)), find(int(c))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, groups = np.unique(roots, return_inverse=True)
    return Grouping(groups=groups.astype(np.int64), threshold=threshold)


def _matches(fps: np.ndarray, reference: np.ndarray, threshold: float) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, hits) for each block of _CHUNK rows of `fps`: hits[i, j] when the row correlates
    >= threshold with reference[j], as it is or mirrored (bounded memory for large sets)."""
    reference = reference.astype(np.float32)
    mirrored = _mirror(reference)
    for start in range(0, len(fps), _CHUNK):
        block = fps[start : start + _CHUNK].astype(np.float32)
        yield start, np.maximum(block @ reference.T, block @ mirrored.T) >= threshold
