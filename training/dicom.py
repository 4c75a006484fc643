"""DICOM slices to 8-bit grey: modality rescale, VOI LUT or window, MONOCHROME1 inversion; 8-bit
grey without either as stored. An enhanced (multi-frame) image keeps each frame's rescale and
window in its functional groups, shared or per frame: a frame is read with its own."""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.decode import MAX_FILE_BYTES, ImageError, rescale_to_uint8
from training.dicom_codecs import Frame, frame_pixels
from training.dicom_header import element_number, element_text
from training.dicom_scan import Inflate, deflated_data_set, inflate_up_to, scan_dataset

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010
MAX_BYTES_PER_PIXEL = 6  # 16-bit, three samples: the most a screening slice can use


def decode_dicom(data: bytes, *, max_pixels: int, frame: int = 0) -> np.ndarray:
    """Decode one DICOM image to uint8, as a radiologist's default window shows it: a single-frame
    file (frame 0), or frame `frame` (1..) of a multi-frame one; `max_pixels` bounds one frame."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        inflate = _inflater(max_pixels)
        ds = scan_dataset(data, inflate=inflate)  # most files; pydicom's reader takes the others
        if ds is None:
            _refuse_deflate_bomb(data, inflate)
            ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, zlib.error) as exc:
        raise ImageError(f"corrupt DICOM file: {exc}") from exc
    if "PixelData" not in ds:
        raise ImageError("DICOM file holds no pixel data")
    layout = PixelLayout.of(ds)
    rows, cols, frames = layout.rows, layout.columns, layout.frames
    if rows * cols * (frames if frame == 0 else 1) > max_pixels:
        raise ImageError(
            f"DICOM image is {cols}x{rows} pixels x {frames} frame(s), above the limit of {max_pixels:,}"
        )
    if frames > 1 and frame == 0:
        raise ImageError(
            f"multi-frame DICOM ({frames} frames): a job scores it frame by frame; here, submit one "
            "slice per file"
        )
    if frame > frames:
        raise ImageError(f"the file holds {frames} frame(s), not frame {frame}")
    _check_pixel_data_length(ds, layout)
    pixels = _pixel_array(ds, layout, frame)
    photometric = layout.photometric or "MONOCHROME2"
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim == 3:  # colour DICOM (secondary capture): luminance only
            return np.asarray(pixels[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
        raise ImageError(f"unsupported DICOM photometric interpretation {photometric}")
    shown = frame_view(ds, frame)
    grey = pixels if _holds_display_grey(shown, pixels) else _windowed(shown, pixels)
    if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
        grey = 255 - grey
    return grey


@dataclass(frozen=True)
class PixelLayout:
    """How a DICOM file's pixels are stored, read once from its raw elements: each value pydicom
    converts costs about 20 us, and a slice asked for some twenty (bench/dicom_speed.py)."""

    syntax: UID | None
    rows: int
    columns: int
    frames: int
    bits: int  # BitsAllocated; 0 when the header does not say
    stored: int  # BitsStored
    signed: bool  # PixelRepresentation 1
    samples: int
    photometric: str  # PhotometricInterpretation upper-cased; "" when the header does not say

    @classmethod
    def of(cls, ds: Dataset) -> PixelLayout:
        bits = int(element_number(ds, "BitsAllocated", 0))
        return cls(
            syntax=getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None),
            rows=int(element_number(ds, "Rows", 0)),
            columns=int(element_number(ds, "Columns", 0)),
            frames=int(element_number(ds, "NumberOfFrames", 1)) or 1,
            bits=bits,
            stored=int(element_number(ds, "BitsStored", bits)),
            signed=element_number(ds, "PixelRepresentation", 0) == 1,
            samples=int(element_number(ds, "SamplesPerPixel", 1)) or 1,
            photometric=element_text(ds, "PhotometricInterpretation").upper(),
        )


FRAME_TRANSFORMS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")  # rescale; window


def frame_view(ds: Dataset, frame: int) -> Dataset:
    """`ds` as frame `frame` (1..) of an enhanced multi-frame image is to be displayed: its rescale
    (Pixel Value Transformation) and window (Frame VOI LUT) from the shared functional groups,
    overridden by the frame's own, set at the top level where pydicom's LUT functions read them.
    `ds` itself when the file has no functional groups (or for a single-frame file)."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = [*shared[:1], *per_frame[frame - 1 : frame]] if frame else []
    found = [g[name][0] for g in groups for name in FRAME_TRANSFORMS if g.get(name)]
    if not found:
        return ds
    from pydicom.dataset import Dataset as Plain

    view = Plain()
    for element in ds:  # the image pixel attributes the LUT functions need, without the pixels
        if element.keyword not in ("PixelData", *FRAME_TRANSFORMS, "PerFrameFunctionalGroupsSequence"):
            view.add(element)
    for item in found:  # shared first, the frame's own after: the frame's win
        for element in item:
            view.add(element)
    return view


def _holds_display_grey(ds: Dataset, pixels: np.ndarray) -> bool:
    """8-bit grey with no rescale and no window already holds display values (a slice exported
    from a JPEG, a secondary capture): kept as stored, as the raster path keeps a JPEG's, so one
    slice scores the same whether it came as JPEG or DICOM. A percentile stretch would not."""
    identity = element_number(ds, "RescaleSlope", 1) == 1 and element_number(ds, "RescaleIntercept", 0) == 0
    lookups = any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence", "WindowCenter"))
    full_byte = element_number(ds, "BitsStored", 8) == 8
    return pixels.dtype == np.uint8 and pixels.ndim == 2 and full_byte and identity and not lookups


def _windowed(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Modality rescale, then the file's first VOI LUT or window if any, then 0..255."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut  # type: ignore[attr-defined]

    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
    return rescale_to_uint8(np.asarray(values, dtype=np.float32))


def _inflater(max_pixels: int) -> Inflate:
    """Inflates a deflated data set with a byte limit, as pydicom would inflate it whole: a few
    hundred KB can hold gigabytes of zeros. The limit is what the largest image allowed can need
    (16-bit RGB), plus a megabyte of header."""
    limit = min(MAX_FILE_BYTES, max_pixels * MAX_BYTES_PER_PIXEL + 2**20)

    def inflate(deflated: bytes) -> tuple[bytes, bool]:
        inflated, ended = inflate_up_to(deflated, limit + 1)
        if len(inflated) > limit:
            raise ImageError(
                f"deflated DICOM inflates beyond {limit // 2**20} MiB, more than an image of "
                f"{max_pixels:,} pixels can hold (possible decompression bomb)"
            )
        return inflated, ended

    return inflate


def _refuse_deflate_bomb(data: bytes, inflate: Inflate) -> None:
    """A deflated file the scanner left to pydicom is inflated once with `inflate`'s limit
    before pydicom inflates it whole."""
    deflated = deflated_data_set(data)
    if deflated is not None:
        inflate(deflated)


def _check_pixel_data_length(ds: Dataset, layout: PixelLayout) -> None:
    """Uncompressed pixel data must be as long as the header says: pydicom would otherwise infer
    extra frames from the length (8,192 of them from a 128x128 header, the probe found)."""
    if layout.syntax is None or layout.syntax.is_encapsulated:
        return  # compressed frames decode to the declared size, checked above
    pixel_count = layout.rows * layout.columns * layout.frames * layout.samples
    expected = (pixel_count * (layout.bits or 16) + 7) // 8
    found = len(_pixel_bytes(ds))
    if not expected <= found <= expected + 1:  # one byte of padding to an even length
        raise ImageError(
            f"DICOM pixel data holds {found:,} bytes where the header declares {expected:,} "
            f"({layout.columns}x{layout.rows}, {layout.frames} frame(s), {layout.bits or 16}-bit)"
        )


def _pixel_bytes(ds: Dataset) -> bytes:
    """Uncompressed pixel data as stored, without pydicom's conversion."""
    element = ds.get_item(PIXEL_DATA)
    value = getattr(element, "value", None)
    return value if isinstance(value, bytes) else b""


NATIVE_TYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2"}  # (bits, signed)


def _native_pixels(ds: Dataset, layout: PixelLayout, frame: int) -> np.ndarray | None:
    """Uncompressed little-endian grey pixels straight from the bytes, masked to BitsStored (and
    sign-extended) as pydicom's pixel_array gives them, without its decoder set-up: a third of an
    uncompressed slice's decode time (bench/dicom_speed.py). None for anything else."""
    syntax = layout.syntax
    if syntax is None or syntax.is_encapsulated or not syntax.is_little_endian:
        return None
    bits, signed, stored = layout.bits, int(layout.signed), layout.stored
    kind = NATIVE_TYPES.get((bits, signed))
    if kind is None or layout.samples != 1 or not 0 < stored <= bits:
        return None
    rows, cols = layout.rows, layout.columns
    offset = (frame - 1) * rows * cols * bits // 8 if frame else 0
    pixels = np.frombuffer(_pixel_bytes(ds), dtype=kind, count=rows * cols, offset=offset).reshape(rows, cols)
    if stored == bits:
        return pixels
    unsigned = pixels.view(kind.replace("i", "u")) & ((1 << stored) - 1)
    if not signed:
        return unsigned
    sign = 1 << (stored - 1)
    return ((unsigned.astype(np.int32) ^ sign) - sign).astype(pixels.dtype)


def _compressed_pixels(ds: Dataset, layout: PixelLayout, frame: int) -> np.ndarray | None:
    """A compressed grey unsigned frame through the fastest codec, called directly
    (training/dicom_codecs.py); None for anything else."""
    syntax = layout.syntax
    if syntax is None or not syntax.is_encapsulated or layout.samples != 1 or layout.signed:
        return None
    spec = Frame(
        syntax=str(syntax),
        photometric=layout.photometric,
        rows=layout.rows,
        columns=layout.columns,
        bits=layout.bits,
        stored=layout.stored,
    )
    return frame_pixels(_pixel_bytes(ds), spec, index=max(frame - 1, 0), frames=layout.frames)


def _pixel_array(ds: Dataset, layout: PixelLayout, frame: int) -> np.ndarray:
    """The single frame's pixels, or frame `frame` (1..) alone of a multi-frame file."""
    from pydicom.pixels import pixel_array  # type: ignore[attr-defined]

    fast = _native_pixels(ds, layout, frame)
    if fast is None:
        fast = _compressed_pixels(ds, layout, frame)
    if fast is not None:
        return fast
    try:
        # the function, not ds.pixel_array: that caches by ids of the pixel module's elements,
        # which cost a compressed slice a fifth of its decode, for a dataset read once
        return np.asarray(pixel_array(ds, index=frame - 1 if frame else None))
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(layout.syntax, "name", str(layout.syntax))
        raise ImageError(
            f"compressed DICOM transfer syntax '{name}' cannot be decoded here "
            "(install python-gdcm, or pylibjpeg with its plugins, or send uncompressed DICOM)"
        ) from exc
    except (ValueError, AttributeError, KeyError, EOFError) as exc:
        raise ImageError(f"corrupt DICOM pixel data: {exc}") from exc
