"""Compressed grey DICOM frames through the fastest installed codec, called directly.

pydicom's `pixel_array` sets up a decoder for every call: it converts and checks some twenty
elements, picks a plugin, then validates and reshapes the codec's bytes. For a slice read once
that costs more than most codecs do (a 256x256 JPEG Baseline slice: about 1.3 ms of set-up
around 0.3 ms of libjpeg-turbo), and pydicom's preferred plugin is not always the fastest one
installed (through pydicom, GDCM took 0.95 ms for that slice where Pillow took 0.48; JPEG-LS,
GDCM 1.6 ms and CharLS 1.3). `bench/dicom_decode.py` measures a slice's decode per syntax.

`frame_pixels` decodes the cases a screening archive is made of, a frame of one grey unsigned
sample of 8 or 16 bits, with the codec this module picks per syntax, and checks that the codec's
image is the header's (size, and a container of the allocated bits). Anything else, including
a frame any codec refuses, returns None and the caller hands the file to pydicom, which decodes
it or says why not. Tests hold every result equal to pydicom's own (tests/training/test_dicom_codecs.py).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

PIXEL_ERRORS = (OSError, ValueError, RuntimeError, EOFError, SyntaxError, KeyError, struct.error)


class Frame(NamedTuple):
    """What a codec must produce: the header's image, one unsigned grey sample per pixel."""

    syntax: str  # the transfer syntax UID
    photometric: str  # MONOCHROME1 or MONOCHROME2
    rows: int
    columns: int
    bits: int  # BitsAllocated, 8 or 16: the container the pixels come in
    stored: int  # BitsStored


Codec = Callable[[bytes, Frame], "np.ndarray | None"]


def frame_pixels(pixel_data: bytes, frame: Frame, *, index: int, frames: int) -> np.ndarray | None:
    """Frame `index` (0..) of encapsulated `pixel_data` holding `frames` frames, as pydicom's
    pixel_array gives it; None where this module does not decode it (pydicom then does)."""
    codec = CODECS.get(frame.syntax)
    grey = frame.photometric in ("MONOCHROME1", "MONOCHROME2")
    if codec is None or not grey or frame.bits not in (8, 16) or not 0 < frame.stored <= frame.bits:
        return None
    from pydicom.encaps import get_frame

    try:
        encoded = get_frame(pixel_data, index, number_of_frames=frames)
        pixels = codec(encoded, frame)
    except PIXEL_ERRORS:  # pydicom decodes it again and reports the fault in its own words
        return None
    wanted = np.uint8 if frame.bits == 8 else np.uint16
    if pixels is None or pixels.shape != (frame.rows, frame.columns) or pixels.dtype != wanted:
        return None
    return pixels


def _opened(encoded: bytes, frame: Frame, formats: tuple[str, ...]) -> Image.Image | None:
    """The codestream opened (its header read, nothing decoded) if it holds the header's image:
    a frame claiming a larger image is never decoded here."""
    from PIL import Image

    image = Image.open(io.BytesIO(encoded), formats=formats)
    return image if image.size == (frame.columns, frame.rows) else None


def _pillow_jpeg(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG Baseline and 8-bit Extended: libjpeg-turbo, as pydicom's Pillow plugin calls it."""
    image = _opened(encoded, frame, ("JPEG",))
    if image is None or image.mode != "L" or frame.bits != 8:
        return None
    return np.asarray(image)


SIZ = b"\xff\x4f\xff\x51"  # a J2K codestream's start and its image and tile size marker
SSIZ_AT = 42  # the first component's sign bit and precision - 1, after SIZ's fixed fields


def _pillow_j2k(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG 2000 through OpenJPEG as Pillow calls it. Pillow stretches an N-bit component to 8 or
    16 bits; shifting it back by the codestream's precision is what pydicom's Pillow plugin does.
    Signed components and JP2 files (boxes around the codestream) are left to pydicom."""
    if not encoded.startswith(SIZ) or len(encoded) <= SSIZ_AT:
        return None
    components = struct.unpack_from(">H", encoded, SSIZ_AT - 2)[0]
    ssiz = encoded[SSIZ_AT]
    precision = (ssiz & 0x7F) + 1
    if components != 1 or ssiz & 0x80 or precision > frame.bits:
        return None
    image = _opened(encoded, frame, ("JPEG2000",))
    if image is None or image.mode != ("L" if frame.bits == 8 else "I;16"):
        return None
    pixels = np.asarray(image)
    if frame.bits == 16:
        pixels = pixels.astype(np.uint16, copy=False)
    shift = frame.bits - precision
    return pixels >> shift if shift else pixels


def _charls(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG-LS through CharLS (pyjpegls), pydicom's pyjpegls plugin without its set-up."""
    import jpeg_ls

    buffer, info = jpeg_ls.decode_pixel_data(encoded)
    if info["components"] != 1:
        return None
    return _samples(buffer, 8 if info["bits_per_sample"] <= 8 else 16, info["height"], info["width"])


def _gdcm_lossless(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG Lossless (process 14, any predictor) through GDCM, set up as pydicom's GDCM plugin
    sets it up for one grey unsigned frame."""
    import gdcm

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(encoded)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((frame.columns, frame.rows, 1))
    image.SetDataElement(element)
    photometric = gdcm.PhotometricInterpretation.GetPIType(frame.photometric)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(frame.syntax)))
    image.SetPixelFormat(gdcm.PixelFormat(1, frame.bits, frame.stored, frame.stored - 1, 0))
    buffer = image.GetBuffer().encode("utf-8", "surrogateescape")  # GDCM hands char* back as str
    return _samples(buffer, frame.bits, frame.rows, frame.columns)


def _rle(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """RLE Lossless through pylibjpeg-rle, little-endian samples as pydicom asks for them."""
    from rle.utils import decode_pixel_data

    buffer = decode_pixel_data(
        encoded, version=2, rows=frame.rows, columns=frame.columns, bits_allocated=frame.bits
    )
    return _samples(buffer, frame.bits, frame.rows, frame.columns)


def _samples(buffer: bytes | bytearray | np.ndarray, bits: int, rows: int, columns: int) -> np.ndarray:
    """A codec's little-endian 8- or 16-bit samples as an image; ValueError when it holds another
    number of them."""
    return np.frombuffer(buffer, dtype=np.uint8 if bits == 8 else np.dtype("<u2")).reshape(rows, columns)


CODECS: dict[str, Codec] = {
    "1.2.840.10008.1.2.4.50": _pillow_jpeg,  # JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51": _pillow_jpeg,  # JPEG Extended (processes 2 and 4), 8-bit only
    "1.2.840.10008.1.2.4.57": _gdcm_lossless,  # JPEG Lossless (process 14)
    "1.2.840.10008.1.2.4.70": _gdcm_lossless,  # JPEG Lossless, first-order prediction (SV1)
    "1.2.840.10008.1.2.4.80": _charls,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _charls,  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": _pillow_j2k,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _pillow_j2k,  # JPEG 2000
    "1.2.840.10008.1.2.5": _rle,  # RLE Lossless
}
