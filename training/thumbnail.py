"""Small PNG previews of source images for the web view.

Decoding goes through training.decode (the one decoder of JPEG, PNG, BMP, TIFF and DICOM, with
its pixel limit against decompression bombs); it imports no model code, so the API stays light.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from training.decode import ImageError, decode_image

THUMBNAIL_SIDE = 192  # pixels; shown at 96 CSS px, sharp on high-density screens


class ThumbnailError(Exception):
    """The image cannot be previewed; the message says why."""


def thumbnail_png(path: Path, *, side: int = THUMBNAIL_SIDE, max_pixels: int) -> bytes:
    """The image at `path` as a grey PNG at most `side` pixels a side."""
    try:
        grey = decode_image(path, draft_side=side, max_pixels=max_pixels)
    except ImageError as exc:
        raise ThumbnailError(exc.reason) from None
    image = Image.fromarray(grey)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
