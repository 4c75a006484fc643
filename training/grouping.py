"""Near-duplicate grouping: the same slice re-encoded, resized, re-cropped or mirrored is one group.

A fingerprint is the head (as `head_box` finds it) stretched to 16x16 and zero-mean/unit-norm, so
crops, aspect-ratio changes and intensity scaling between copies cancel out. Two images are twins
when their fingerprints (or one and the other's mirror image) correlate at or above `threshold`.
Twins are joined transitively (connected components). The default 0.95 was measured on
../shared/data (docs/model.md): it joins 93 of the 98 seed-253/no images to their known twin in
kaggle-4class-train/notumor and never joins a tumour image with a no-tumour one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

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
    subjects: int = 0  # distinct subjects (patients' scans) whose images were joined

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
            "subjects": self.subjects,
        }


def group_near_duplicates(fps: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Grouping:
    """Connected components of the 'correlates >= threshold' graph over fingerprints (n, 256)."""
    return Grouping(groups=_components(len(fps), _twin_pairs(fps, threshold)), threshold=threshold)


def _twin_pairs(fps: np.ndarray, threshold: float) -> Iterator[tuple[int, int]]:
    """(i, j), i < j, for every two fingerprints that correlate >= threshold."""
    for start, hits in _matches(fps, fps, threshold):
        rows, cols = np.nonzero(hits)
        for r, c in zip(rows + start, cols, strict=True):
            if c > r:
                yield int(r), int(c)


def _components(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Connected components of nodes 0..n-1 joined by `pairs` (union-find), numbered 0, 1, ... in
    the order of each component's lowest node."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


def _matches(fps: np.ndarray, reference: np.ndarray, threshold: float) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, hits) for each block of _CHUNK rows of `fps`: hits[i, j] when the row correlates
    >= threshold with reference[j], as it is or mirrored (bounded memory for large sets)."""
    reference = reference.astype(np.float32)
    mirrored = _mirror(reference)
    for start in range(0, len(fps), _CHUNK):
        block = fps[start : start + _CHUNK].astype(np.float32)
        yield start, np.maximum(block @ reference.T, block @ mirrored.T) >= threshold


def subjects_of(relpaths: Sequence[str], listed: Sequence[str], pattern: str) -> list[str]:
    """Each image's subject: the one its labels.csv lists, else the first group of `pattern` (a
    regular expression) matched against its file name, else "" (none known). lgg-flair's names,
    `TCGA_<site>_<patient>_<date>_<slice>.jpg`, give one subject per scan with `^(TCGA_.+)_\\d+\\.\\w+$`."""
    rule = re.compile(pattern) if pattern else None
    out = []
    for relpath, subject in zip(relpaths, listed, strict=True):
        if not subject and rule is not None:
            found = rule.match(relpath.rsplit("/", 1)[-1])
            subject = found.group(1) if found else ""
        out.append(subject)
    return out


def join_subjects(grouping: Grouping, subjects: Sequence[str]) -> Grouping:
    """`grouping` with the groups of all images of one subject joined: a patient's slices are not
    near-duplicates of each other (other levels of the head), yet must stay on one side of a split."""
    first: dict[str, int] = {}
    pairs = []
    for subject, group in zip(subjects, grouping.groups.tolist(), strict=True):
        if subject:
            pairs.append((first.setdefault(subject, group), group))
    if not first:
        return grouping
    joined = _components(grouping.n_groups, pairs)
    return replace(grouping, groups=joined[grouping.groups], subjects=len(first))


_LEVEL = re.compile(r"_(\d+)\.\w+$")


def slice_numbers(relpaths: Sequence[str], subjects: Sequence[str]) -> list[int | None]:
    """The slice number that ends each file name (`..._<number>.jpg`), for images with a subject."""
    found = [
        _LEVEL.search(relpath) if subject else None
        for relpath, subject in zip(relpaths, subjects, strict=True)
    ]
    return [int(f.group(1)) if f else None for f in found]


def subject_spans(subjects: Sequence[str], numbers: Sequence[int | None]) -> dict[str, tuple[int, int]]:
    """Each subject's lowest and highest slice number (images without a number are left out)."""
    spans: dict[str, tuple[int, int]] = {}
    for subject, n in zip(subjects, numbers, strict=True):
        if n is not None:
            low, high = spans.get(subject, (n, n))
            spans[subject] = (min(low, n), max(high, n))
    return spans


def mid_levels(relpaths: Sequence[str], subjects: Sequence[str]) -> np.ndarray:
    """Which images are slices from the middle half of their subject's levels: the file name ends
    in `_<slice number>` and the number lies in the middle half of that subject's numbers. A scan's
    clear slices are mostly at the top and base of the head and its tumour slices mid-brain, so a
    model can tell them apart by level alone; its figures on mid-level slices show whether it does."""
    numbers = slice_numbers(relpaths, subjects)
    spans = subject_spans(subjects, numbers)
    out = np.zeros(len(relpaths), dtype=bool)
    for i, (subject, n) in enumerate(zip(subjects, numbers, strict=True)):
        if n is not None:
            low, high = spans[subject]
            out[i] = high > low and 0.25 <= (n - low) / (high - low) <= 0.75
    return out


def tumour_edges(relpaths: Sequence[str], subjects: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """Which tumour slices are their scan's first or last tumour slice (where a tumour begins and
    ends, often a sliver of it): slices numbered in their file names, of subjects with a name."""
    numbers = slice_numbers(relpaths, subjects)
    spans = subject_spans(subjects, [n if y == 1 else None for n, y in zip(numbers, labels, strict=True)])
    return np.array(
        [
            y == 1 and n is not None and bool(s) and n in spans[s]
            for s, n, y in zip(subjects, numbers, labels, strict=True)
        ],
        dtype=bool,
    )
