"""DICOM slices to 8-bit grey: modality rescale, VOI LUT or window, MONOCHROME1 inversion."""

from __future__ import annotations

import io

import numpy as np

from training.decode import ImageError, rescale_to_uint8


def decode_dicom(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode one single-frame DICOM image to uint8, as a radiologist's default window shows it."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut  # type: ignore[attr-defined]

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ImageError(f"corrupt DICOM file: {exc}") from exc
    if "PixelData" not in ds:
        raise ImageError("DICOM file holds no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageError(f"DICOM image is {cols}x{rows} pixels, above the limit of {max_pixels:,}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"multi-frame DICOM ({frames} frames); submit one slice per file")
    pixels = _pixel_array(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim == 3:  # colour DICOM (secondary capture): luminance only
            return np.asarray(pixels[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114]).astype(
                np.uint8
            )
        raise ImageError(f"unsupported DICOM photometric interpretation {photometric}")
    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
    grey = rescale_to_uint8(np.asarray(values, dtype=np.float32))
    if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
        grey = 255 - grey
    return grey


def _pixel_array(ds: object) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)  # type: ignore[attr-defined]
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageError(
            f"compressed DICOM transfer syntax '{name}' cannot be decoded here "
            "(install pylibjpeg with its JPEG plugins, or send uncompressed DICOM)"
        ) from exc
    except (ValueError, AttributeError, KeyError, EOFError) as exc:
        raise ImageError(f"corrupt DICOM pixel data: {exc}") from exc
