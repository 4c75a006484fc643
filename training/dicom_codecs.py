"""Compressed grey DICOM frames through the fastest installed codec, called directly.

pydicom's `pixel_array` sets up a decoder for every call: it converts and checks some twenty
elements, picks a plugin, then validates and reshapes the codec's bytes. For a slice read once
that costs more than most codecs do (a 256x256 JPEG Baseline slice: about 1 ms of set-up
around 0.25 ms of libjpeg-turbo), and pydicom's preferred plugin is not always the fastest one
installed. Each codec called directly on the test archive's 8-bit slices (2 AVX2 cores, ms a
slice): JPEG Baseline Pillow 0.25, GDCM 0.55; JPEG Lossless Pillow 0.60, GDCM 0.89; JPEG-LS
CharLS 1.15, GDCM 1.27; JPEG 2000 GDCM 3.2 in two threads (in one, as called here, 3.8 on 2
AVX-512 cores), Pillow 4.5; RLE pylibjpeg-rle 0.15, GDCM 0.71.
`bench/dicom_decode.py` measures a slice's whole decode per syntax.

`frame_pixels` decodes the cases a screening archive is made of, a frame of one grey unsigned
sample of 8 or 16 bits, with the fastest codec that takes it, and checks that the codec's image
is the header's (size, and a container of the allocated bits). Anything else, including a frame
every codec refuses, returns None and the caller hands the file to pydicom, which decodes it or
says why not. Tests hold every result equal to pydicom's own (tests/training/test_dicom_codecs.py).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

PIXEL_ERRORS = (  # what the codecs raise for a frame they cannot decode
    OSError,
    ValueError,
    RuntimeError,
    EOFError,
    SyntaxError,
    KeyError,
    AttributeError,
    TypeError,
    struct.error,
)


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
    pixel_array gives it; None where this module does not decode it (pydicom then does). The
    syntax's codecs are tried in turn: the first whose image is the header's wins."""
    codecs = CODECS.get(frame.syntax, ())
    grey = frame.photometric in ("MONOCHROME1", "MONOCHROME2")
    if not codecs or not grey or frame.bits not in (8, 16) or not 0 < frame.stored <= frame.bits:
        return None
    from pydicom.encaps import get_frame

    try:
        encoded = get_frame(pixel_data, index, number_of_frames=frames)
    except PIXEL_ERRORS:
        return None
    wanted = np.uint8 if frame.bits == 8 else np.uint16
    for codec in codecs:
        try:
            pixels = codec(encoded, frame)
        except PIXEL_ERRORS:  # the next codec, or pydicom, which reports the fault in its own words
            continue
        if pixels is not None and pixels.shape == (frame.rows, frame.columns) and pixels.dtype == wanted:
            return pixels
    return None


def _pillow_jpeg(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """8-bit JPEG through libjpeg-turbo, as pydicom's Pillow plugin calls it: Baseline, Extended,
    and Lossless too (libjpeg-turbo 3 reads it; Pillow cannot open 12- or 16-bit Lossless). The
    header is read first: a codestream claiming another image is never decoded here."""
    from PIL import Image

    image = Image.open(io.BytesIO(encoded), formats=("JPEG",))
    if image.size != (frame.columns, frame.rows) or image.mode != "L" or frame.bits != 8:
        return None
    return np.asarray(image)


SIZ = b"\xff\x4f\xff\x51"  # a J2K codestream's start and its image and tile size marker
SIZ_FIELDS = struct.Struct(">4xHHIIII16xHB")  # Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, ..., Csiz, Ssiz0


def _gdcm_j2k(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG 2000 through GDCM's OpenJPEG (a quarter faster than Pillow's here), for one unsigned
    component whose precision needs the allocated bits: pydicom sizes the container by the
    codestream's precision, so anything else is left to it, as are JP2 files (boxes around the
    codestream) and a codestream claiming another image than the header's.

    In one thread: GDCM's default, a thread per CPU, cut a slice's wall time by a third and
    raised its CPU time by a sixth (2.6 ms and 4.4 CPU-ms a slice against 3.8 and 3.8, two
    cores), and a worker already decodes in a thread pool beside TensorFlow's."""
    if not encoded.startswith(SIZ) or len(encoded) < SIZ_FIELDS.size:
        return None
    _, _, width, height, left, top, components, ssiz = SIZ_FIELDS.unpack_from(encoded)
    precision = (ssiz & 0x7F) + 1
    if (width - left, height - top) != (frame.columns, frame.rows) or components != 1 or ssiz & 0x80:
        return None
    if (8 if precision <= 8 else 16) != frame.bits:
        return None
    import gdcm

    codec = _gdcm_described(gdcm.JPEG2000Codec(), frame)
    codec.SetNumberOfThreadsForDecompression(0)  # 0: OpenJPEG's own default, one thread
    decoded = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    if not codec.Decode(_gdcm_pixel_data(encoded), decoded):
        return None
    return _gdcm_samples(decoded.GetByteValue().GetBuffer(), frame)


def _charls(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """JPEG-LS through CharLS (pyjpegls), pydicom's pyjpegls plugin without its set-up."""
    import jpeg_ls

    buffer, info = jpeg_ls.decode_pixel_data(encoded)
    if info["components"] != 1:
        return None
    return _samples(buffer, 8 if info["bits_per_sample"] <= 8 else 16, info["height"], info["width"])


def _gdcm(encoded: bytes, frame: Frame) -> np.ndarray | None:
    """A frame through GDCM, set up as pydicom's GDCM plugin sets it up for one grey unsigned
    frame of the frame's syntax."""
    import gdcm

    image = _gdcm_described(gdcm.Image(), frame)
    image.SetDataElement(_gdcm_pixel_data(encoded))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(frame.syntax)))
    decoded = image.GetBuffer()
    if decoded is None:  # GDCM refused it: a codestream of another image than the header's, say
        return None
    return _gdcm_samples(decoded, frame)


def _gdcm_pixel_data(encoded: bytes) -> Any:
    """One encoded frame as GDCM's encapsulated pixel data element."""
    import gdcm

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(encoded)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    return element


def _gdcm_described(target: Any, frame: Frame) -> Any:
    """A GDCM image or codec told the frame's size, samples and photometric interpretation."""
    import gdcm

    target.SetNumberOfDimensions(2)
    target.SetDimensions((frame.columns, frame.rows, 1))
    target.SetPixelFormat(gdcm.PixelFormat(1, frame.bits, frame.stored, frame.stored - 1, 0))
    photometric = gdcm.PhotometricInterpretation.GetPIType(frame.photometric)
    target.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    return target


def _gdcm_samples(decoded: str, frame: Frame) -> np.ndarray:
    buffer = decoded.encode("utf-8", "surrogateescape")  # GDCM hands char* back as str
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


CODECS: dict[str, tuple[Codec, ...]] = {  # the fastest first (bench/dicom_decode.py)
    "1.2.840.10008.1.2.4.50": (_pillow_jpeg,),  # JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51": (_pillow_jpeg,),  # JPEG Extended (processes 2 and 4), 8-bit only
    "1.2.840.10008.1.2.4.57": (_pillow_jpeg, _gdcm),  # JPEG Lossless (process 14): 8-bit, then any
    "1.2.840.10008.1.2.4.70": (_pillow_jpeg, _gdcm),  # JPEG Lossless, first-order prediction (SV1)
    "1.2.840.10008.1.2.4.80": (_charls,),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": (_charls,),  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": (_gdcm_j2k,),  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": (_gdcm_j2k,),  # JPEG 2000
    "1.2.840.10008.1.2.5": (_rle,),  # RLE Lossless
}
