"""Decode one 2-D slice (JPEG, PNG, BMP, TIFF or DICOM) into an 8-bit grey array."""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

RASTER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES
MIN_SIDE = 32  # smaller images cannot hold a readable slice
DEFAULT_MAX_PIXELS = 4096 * 4096  # 8x the largest slice in ../shared/data; decoding stays < ~0.5 GB
MAX_FILE_BYTES = 256 * 1024**2  # one slice (or a multi-frame series) is far smaller; larger is refused unread
EXACT_PERCENTILE_PIXELS = 4_000_000  # above this, the rescale window comes from a regular subsample

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit before decoding, with a clear reason


class ImageError(Exception):
    """An image could not be used; `reason` says why in words an operator understands.

    `permanent`: the bytes themselves are no usable slice, so trying again fails the same way
    (corrupt, not an image, too small...); false when a later try may pass (the file was missing,
    could not be read, was empty or still growing: a copy in progress, a share that dropped).
    """

    def __init__(self, reason: str, *, permanent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def has_dicom_preamble(head: bytes) -> bool:
    """True when the bytes start with a DICOM file preamble (128 bytes, then 'DICM')."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def image_by_name(name: str) -> bool | None:
    """Whether a file of this name is an image by its suffix; None for no suffix, when only its
    first bytes can tell (a DICOM preamble: `has_dicom_preamble`)."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES if suffix else None


def is_image_candidate(path: Path) -> bool:
    """Whether a file should be treated as an image: known suffix, or no suffix and a DICM preamble."""
    by_name = image_by_name(path.name)
    if by_name is not None:
        return by_name
    try:
        with path.open("rb") as fh:
            return has_dicom_preamble(fh.read(132))
    except OSError:
        return False


def decode_image(
    source: Path | bytes, *, draft_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS, frame: int = 0
) -> np.ndarray:
    """Return the slice as a 2-D uint8 array; raise ImageError with a reason when impossible.

    draft_side > 0 lets the JPEG decoder skip detail beyond that many pixels a side (DCT scaling),
    which is several times faster and loses nothing the model can see. frame > 0: that frame of a
    multi-frame DICOM file.
    """
    data = source if isinstance(source, bytes) else read_image_bytes(Path(source))
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(_too_large(len(data)))
    if not data:
        raise ImageError("empty file (0 bytes)", permanent=False)
    if has_dicom_preamble(data[:132]):
        from training.dicom import decode_dicom

        return _check_side(decode_dicom(data, max_pixels=max_pixels, frame=frame))
    if frame:
        raise ImageError(f"frame {frame} asked of a file that is not DICOM")
    return _check_side(_decode_raster(data, draft_side=draft_side, max_pixels=max_pixels))


def read_image_bytes(path: Path) -> bytes:
    """A file's bytes, or ImageError saying why they cannot be read; a file above MAX_FILE_BYTES
    (a sparse multi-GB 'image', say) is refused from its size, never read whole."""
    try:
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageError("not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise ImageError(_too_large(info.st_size))
            data = fh.read(info.st_size + 1)  # read(n) reserves n bytes: ask for what is there
    except IsADirectoryError as exc:
        raise ImageError("is a directory, not an image file") from exc
    except FileNotFoundError as exc:
        raise ImageError("file not found", permanent=False) from exc
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}", permanent=False) from exc
    if len(data) > info.st_size:
        raise ImageError("the file grew while it was read (still being copied?)", permanent=False)
    return data


def _too_large(size: int) -> str:
    return f"file is {size / 2**20:,.0f} MiB, above the limit of {MAX_FILE_BYTES // 2**20} MiB for one image"


def _decode_raster(data: bytes, *, draft_side: int, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image header: {exc}") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} pixels, above the limit of {max_pixels:,} "
            "(possible decompression bomb)"
        )
    if img.format == "JPEG" and draft_side > 0:
        img.draft("L", (draft_side, draft_side))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"corrupt or truncated image data: {exc}") from exc
    return _to_grey(img)


def _to_grey(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return rescale_to_uint8(np.asarray(img))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")  # drop alpha; MRI slices are opaque
    if mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8)


def rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth image to 0..255 by its 0.5th..99.5th percentiles.

    Works in place on one float64 copy (as the arithmetic always was), not a chain of temporaries.
    Images above EXACT_PERCENTILE_PIXELS take the percentiles of a regular subsample.
    """
    step = max(1, int(np.ceil(np.sqrt(values.size / EXACT_PERCENTILE_PIXELS))))
    sample = np.asarray(values[::step, ::step] if values.ndim == 2 else values, dtype=np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ImageError("image holds no finite pixel values")
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    del sample, finite
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.array(values, dtype=np.float64)  # the one working copy
    np.nan_to_num(scaled, copy=False, nan=lo)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    np.clip(scaled, 0, 255, out=scaled)
    grey: np.ndarray = scaled.astype(np.uint8)
    return grey


def _check_side(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2:
        raise ImageError(f"expected one 2-D slice, got an array of shape {arr.shape}")
    height, width = arr.shape
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"image is {width}x{height} pixels, too small for a brain slice")
    return arr
