"""What training reads: labelled images discovered, decoded once, grouped by near-duplicates."""

from __future__ import annotations

import fnmatch
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.card import file_sha256
from training.dataset import DatasetError, Discovery, ImageRecord, discover
from training.grouping import (
    Grouping,
    group_near_duplicates,
    join_subjects,
    mid_levels,
    subjects_of,
    tumour_edges,
)
from training.loading import LoadedImages, load_images
from training.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from training.recipes import Recipe


@dataclass
class PreparedData:
    """Labelled, decoded, grouped images ready for splitting."""

    discovery: Discovery
    loaded: LoadedImages
    grouping: Grouping
    fingerprint: str
    mid_level: np.ndarray  # bool per image: a slice in the middle half of its subject's levels
    tumour_edge: np.ndarray  # bool per image: its scan's first or last tumour slice
    subjects: list[str] = field(default_factory=list)  # per image, "" where none is known (a study)

    @property
    def sources(self) -> np.ndarray:
        return np.array([r.source for r in self.loaded.records])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select_records(
    found: Discovery, *, exclude: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> list[ImageRecord]:
    """Labelled records, minus excluded sources/paths, optionally a stratified sample of `limit`."""
    records = [
        r
        for r in found.images
        if r.label is not None and not any(_matches(r, pattern) for pattern in exclude)
    ]
    if limit is not None and limit < len(records):
        rng = np.random.default_rng(seed)
        by_label = {lab: [r for r in records if r.label == lab] for lab in (0, 1)}
        share = {lab: round(limit * len(rs) / len(records)) for lab, rs in by_label.items()}
        picked = [
            rs[i]
            for lab, rs in by_label.items()
            for i in sorted(rng.choice(len(rs), min(share[lab], len(rs)), replace=False))
        ]
        records = sorted(picked, key=lambda r: (r.source, r.relpath))
    if not records:
        raise DatasetError("no labelled images to train on (check folder names or labels.csv)")
    return records


def _matches(record: ImageRecord, pattern: str) -> bool:
    return fnmatch.fnmatch(record.source, f"*{pattern}*") or fnmatch.fnmatch(str(record.path), pattern)


def data_fingerprint(records: Sequence[ImageRecord]) -> str:
    """SHA-256 over every (relative path, content hash): identifies the exact training data."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.source, r.relpath)):
        digest.update(f"{r.source}/{r.relpath}\0{file_sha256(r.path)}\n".encode())
    return digest.hexdigest()


def prepare(
    roots: Sequence[Path], recipe: Recipe, *, exclude: Sequence[str] = (), limit: int | None = None
) -> PreparedData:
    """Discover labelled images, decode them once as the recipe's input, and group near-duplicates
    by its policy; `limit`: a stratified sample of that many, drawn from the policy's seed."""
    found = discover(roots)
    records = select_records(found, exclude=exclude, limit=limit, seed=recipe.policy.seed)
    left_out = sum(1 for r in found.images if any(_matches(r, pattern) for pattern in exclude))
    excluded = f", {left_out} of them excluded ({', '.join(exclude)})" if exclude else ""
    log(f"found {len(found.images)} images{excluded}; training on {len(records)} labelled ones")
    loaded = _load(records, recipe.input)
    grouping = group_near_duplicates(loaded.fingerprints, recipe.policy.group_threshold)
    relpaths = [r.relpath for r in loaded.records]
    subjects = subjects_of(relpaths, [r.subject for r in loaded.records], recipe.policy.subject_pattern)
    grouping = join_subjects(grouping, subjects)
    s = grouping.summary()
    log(
        f"groups (near-duplicates, and one subject's images): {s['groups']} groups for "
        f"{s['images']} images; {s['images_in_multi_image_groups']} images sit in "
        f"{s['multi_image_groups']} multi-image groups (largest {s['largest_group']}); "
        f"{s['subjects']} subjects"
    )
    return PreparedData(
        found,
        loaded,
        grouping,
        data_fingerprint(loaded.records),
        mid_levels(relpaths, subjects),
        tumour_edges(relpaths, subjects, loaded.labels.tolist()),
        subjects,
    )


def _load(records: Sequence[ImageRecord], spec: PreprocessSpec) -> LoadedImages:
    """Decode with progress; each unreadable file is logged and skipped."""
    loaded = load_images(records, spec, progress=True)
    for path, reason in loaded.errors:
        log(f"  unreadable, skipped: {path}: {reason}")
    return loaded
