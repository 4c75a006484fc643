"""Make small synthetic test images: brain-like slices, corrupt files and other bad input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def create_random_slice(size: int = 128, seed: int = 0, lesion: bool = False) -> np.ndarray:
    """A grey 'head': a bright ellipse with texture on black, optionally with a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    head = ((xx - 0.5) / 0.38) ** 2 + ((yy - 0.5) / 0.45) ** 2 < 1
    img = np.where(head, 90 + rng.normal(0, 12, (size, size)), rng.normal(3, 2, (size, size)))
    for _ in range(5):  # ventricles and folds: coarse structure that differs between slices
        cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.04, 0.15, 2)
        blob = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[blob & head] = rng.uniform(20, 160)
    if lesion:
        cy, cx = rng.uniform(0.35, 0.65, 2)
        img[((xx - cx) ** 2 + (yy - cy) ** 2) < 0.004] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


def square_slices(
    n: int, seed: int, *, noise: int = 60, square: int | tuple[int, int] = 230
) -> tuple[np.ndarray, np.ndarray]:
    """n noisy 32-px slices (uint8, NHWC) and labels 0, 1, 0, 1, ...: the tumour ones carry a square
    of intensity `square`, a tiny network learns it in an epoch or two. Given a range, each square's
    intensity is drawn from it; one overlapping the noise keeps a few epochs from solving it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, noise, size=(n, 32, 32, 1), dtype=np.uint8)
    y = np.arange(n) % 2
    if isinstance(square, tuple):
        x[y == 1, 10:20, 12:22] = rng.integers(*square, size=((y == 1).sum(), 1, 1, 1), dtype=np.uint8)
    else:
        x[y == 1, 10:20, 12:22] = square
    return x, y


def save_image(path: Path, array: np.ndarray, fmt: str | None = None, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **params)
    return path


def encoded(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def create_labelled_folder(root: Path, n_per_class: int = 4, fmt: str = "png") -> Path:
    """root/yes/*.png with lesions and root/no/*.png without."""
    for i in range(n_per_class):
        save_image(root / "yes" / f"Y ({i}).{fmt}", create_random_slice(seed=i, lesion=True))
        save_image(root / "no" / f"N ({i}).{fmt}", create_random_slice(seed=100 + i))
    return root


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    syntax: str = ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    bits: tuple[int, int] = (16, 12),
) -> Path:
    """A DICOM MR slice (or `frames` of them) of `pixels`, `bits` (allocated, stored) a sample;
    `pixel_data` replaces the pixel bytes whatever the header says (an attacker's file, or
    encapsulated frames); an encapsulated syntax without it gets a stand-in frame."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits[0], bits[1], bits[1] - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    encapsulated = syntax not in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
    if pixel_data is not None:
        ds.PixelData = pixel_data
    elif not encapsulated:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    else:  # an encapsulated (compressed) frame: bytes we cannot and should not decode
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    if encapsulated:
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_deflated_dicom_bomb(path: Path, *, pixel_bytes: int = 256 * 1024**2) -> Path:
    """The probe's file: a 128x128 header over `pixel_bytes` of zeros, deflated to a few hundred KB."""
    return write_dicom(
        path, np.zeros((128, 128)), syntax=DeflatedExplicitVRLittleEndian, pixel_data=bytes(pixel_bytes)
    )


def write_sparse_file(path: Path, head: bytes, size: int) -> Path:
    """A file of `size` bytes that takes no disk: `head`, then a hole."""
    with path.open("wb") as out:
        out.write(head)
        out.truncate(size)
    return path


def assert_read_as_pydicom_reads(mine: Dataset, path: Path | bytes, *, stop_before_pixels: bool) -> None:
    """The same elements (tag, VR, converted value), file meta, encoding and pixels as dcmread's."""
    ref = pydicom.dcmread(
        path if isinstance(path, Path) else io.BytesIO(path),
        stop_before_pixels=stop_before_pixels,
    )
    tags = list(ref.keys())  # iterating a Dataset gives its elements, not their tags
    assert list(mine.keys()) == tags
    for tag in tags:
        assert mine[tag].VR == ref[tag].VR, tag
        assert _same_value(mine[tag].value, ref[tag].value), tag
    meta_tags = list(ref.file_meta.keys())
    assert list(mine.file_meta.keys()) == meta_tags
    assert all(mine.file_meta[tag] == ref.file_meta[tag] for tag in meta_tags)
    assert mine.original_encoding == ref.original_encoding
    assert mine.original_character_set == ref.original_character_set
    if not stop_before_pixels and "PixelData" in ref:
        assert _same_value(_pixels_or_error(mine), _pixels_or_error(ref))


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def _pixels_or_error(ds: Dataset) -> object:
    """The pixel array, or the kind of error pydicom raised for it (no decoder, a corrupt frame)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # both readers must fail alike, whatever the type
        return type(exc).__name__
