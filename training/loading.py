"""Turn discovered image files into model-ready arrays, near-duplicate fingerprints and errors."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from training.dataset import ImageRecord
from training.decode import DEFAULT_MAX_PIXELS, ImageError, decode_image
from training.grouping import fingerprint
from training.preprocess import PreprocessSpec, preprocess


@dataclass
class LoadedImages:
    """The readable images of a discovery, in order, with what was unreadable and why."""

    records: list[ImageRecord]
    inputs: np.ndarray  # uint8 (n, size, size, 1)
    fingerprints: np.ndarray  # float32 (n, 256)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if r.label is None else r.label for r in self.records], dtype=np.int64)

    def subset(self, idx: np.ndarray) -> LoadedImages:
        return LoadedImages(
            [self.records[i] for i in idx], self.inputs[idx], self.fingerprints[idx], self.errors
        )


def _load_one(
    record: ImageRecord, spec: PreprocessSpec, max_pixels: int
) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        grey = decode_image(record.path, draft_side=spec.size * 2, max_pixels=max_pixels)
        return preprocess(grey, spec), fingerprint(grey, spec)
    except ImageError as exc:
        return exc.reason


def load_images(
    records: Sequence[ImageRecord],
    spec: PreprocessSpec,
    *,
    threads: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> LoadedImages:
    """Decode and preprocess every record in a thread pool; unreadable files are listed, not fatal."""
    size = spec.size
    inputs = np.zeros((len(records), size, size, 1), dtype=np.uint8)
    fps = np.zeros((len(records), 256), dtype=np.float32)
    keep: list[int] = []
    errors: list[tuple[str, str]] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = pool.map(lambda r: _load_one(r, spec, max_pixels), records, chunksize=16)
        for i, result in enumerate(results):
            if isinstance(result, str):
                errors.append((str(records[i].path), result))
            else:
                inputs[i, :, :, 0], fps[i] = result
                keep.append(i)
            if progress and (i + 1) % 500 == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                print(f"  loaded {i + 1}/{len(records)} images ({rate:.0f}/s)", file=sys.stderr)
    idx = np.array(keep, dtype=np.int64)
    return LoadedImages([records[i] for i in keep], inputs[idx], fps[idx], errors)
