"""A small grey PNG preview of one slice, for people to look at (the web view's thumbnails).

Decoding goes through training.decode, the one decoder, with its limits; this module imports no
model code, so the API's preview processes (api.thumbnails) start light.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from training.decode import decode_image

THUMBNAIL_SIDE = 192  # pixels; shown at 96 CSS px, sharp on high-density screens
FULL_SIDE = 1024  # the whole slice for a reader: as stored up to this, larger ones scaled down


def thumbnail_png(path: Path | str, *, side: int = THUMBNAIL_SIDE, max_pixels: int, frame: int = 0) -> bytes:
    """The image at `path` (frame `frame` of a multi-frame file) as a grey PNG at most `side` pixels
    a side; ImageError when unreadable."""
    grey = decode_image(Path(path), draft_side=side, max_pixels=max_pixels, frame=frame)
    image = Image.fromarray(grey)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
