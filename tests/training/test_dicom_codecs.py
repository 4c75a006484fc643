"""training.dicom_codecs decodes compressed grey frames exactly as pydicom's pixel_array does, or
leaves them to it: every syntax it takes at 8, 12 and 16 bits, frame by frame, files it must not
take, and pydicom's own compressed test files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array

from tests.conftest import load_bench
from tests.images import write_dicom
from training.decode import ImageError, decode_image
from training.dicom import PixelLayout, _compressed_pixels
from training.dicom_codecs import CODECS
from training.dicom_scan import scan_dataset

dicom_archive = load_bench("dicom_archive")
LOSSY_JPEG = (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit)  # libjpeg builds may differ by one level


def _pixels(stored: int, *, frames: int = 1, seed: int = 0) -> np.ndarray:
    """Every value `stored` bits can hold somewhere, with a smooth head-like blob for lossy codecs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :40]
    blob = np.exp(-((yy - 24) ** 2 + (xx - 20) ** 2) / 300.0)
    top = 2**stored - 1
    stack = [
        np.clip(blob * top + rng.integers(-top // 8, top // 8 + 1, blob.shape), 0, top) for _ in range(frames)
    ]
    for image in stack:
        image[0, :2] = (0, top)
    return np.asarray(stack, dtype=np.uint8 if stored <= 8 else np.uint16)


def _encode(pixels: np.ndarray, syntax: str, stored: int) -> bytes:
    if syntax == uid.JPEGBaseline8Bit:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()
    if syntax == uid.RLELossless:
        from pydicom.pixels.encoders import RLELosslessEncoder

        return bytes(
            RLELosslessEncoder.encode(
                pixels,
                encoding_plugin="pydicom",
                rows=pixels.shape[0],
                columns=pixels.shape[1],
                samples_per_pixel=1,
                bits_allocated=pixels.dtype.itemsize * 8,
                bits_stored=stored,
                pixel_representation=0,
                photometric_interpretation="MONOCHROME2",
                number_of_frames=1,
            )
        )
    return dicom_archive.gdcm_frame(pixels, uid.UID(syntax), stored=stored)


def _file(path: Path, stack: np.ndarray, syntax: str, stored: int, photometric: str = "MONOCHROME2") -> Path:
    """`stack`'s frames, each encoded in `syntax`, in one file (a multi-frame one for several)."""
    return write_dicom(
        path,
        stack,
        photometric=photometric,
        frames=len(stack),
        syntax=syntax,
        pixel_data=encapsulate([_encode(frame, syntax, stored) for frame in stack]),
        bits=(stack.dtype.itemsize * 8, stored),
    )


def _fast(path: Path, frame: int = 0) -> np.ndarray | None:
    """What decoding takes from the codec module for this file: None where it is left to pydicom."""
    ds = scan_dataset(path.read_bytes())
    assert ds is not None
    return _compressed_pixels(ds, PixelLayout.of(ds), frame)


def _pydicom_s(path: Path, frame: int = 0) -> np.ndarray:
    ds = pydicom.dcmread(path)
    syntax = ds.file_meta.TransferSyntaxUID
    plugin = "pillow" if syntax in LOSSY_JPEG else ""  # the codec this module calls for it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(pixel_array(ds, index=frame - 1 if frame else None, decoding_plugin=plugin))


CASES = [
    (uid.JPEGBaseline8Bit, 8),
    *(
        (syntax, stored)
        for syntax in (uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEG2000Lossless, uid.RLELossless)
        for stored in (8, 12, 16)
    ),
    (uid.JPEGLossless, 12),
    (uid.JPEG2000, 12),
]


@pytest.mark.parametrize(
    ("syntax", "stored"), CASES, ids=[f"{uid.UID(s).name[:24]}-{b}bit" for s, b in CASES]
)
def test_each_codec_decodes_as_pydicom_does(tmp_path: Path, syntax: str, stored: int) -> None:
    path = _file(tmp_path / "x.dcm", _pixels(stored), syntax, stored)
    found, expected = _fast(path), _pydicom_s(path)
    assert found is not None, "left to pydicom"
    assert found.dtype == expected.dtype
    np.testing.assert_array_equal(found, expected)


def test_every_syntax_the_archive_uses_has_a_codec() -> None:
    assert {str(s) for s in dicom_archive.COMPRESSED if s.is_encapsulated} <= set(CODECS)


@pytest.mark.parametrize("syntax", [uid.JPEG2000Lossless, uid.JPEGLSLossless, uid.RLELossless])
def test_a_multi_frame_file_decodes_frame_by_frame(tmp_path: Path, syntax: str) -> None:
    stack = _pixels(12, frames=3, seed=1)
    path = _file(tmp_path / "mf.dcm", stack, syntax, 12)
    for frame in (1, 2, 3):
        found = _fast(path, frame)
        assert found is not None
        np.testing.assert_array_equal(found, _pydicom_s(path, frame))
        np.testing.assert_array_equal(found, stack[frame - 1])  # lossless


@pytest.mark.parametrize(
    ("syntax", "stored"), [(uid.JPEGLSLossless, 8), (uid.JPEG2000Lossless, 12), (uid.JPEGLosslessSV1, 12)]
)
def test_monochrome1_is_decoded_as_stored_and_inverted_by_the_caller(
    tmp_path: Path, syntax: str, stored: int
) -> None:
    pixels = _pixels(stored)
    path = _file(tmp_path / "m1.dcm", pixels, syntax, stored, photometric="MONOCHROME1")
    found = _fast(path)
    assert found is not None
    np.testing.assert_array_equal(found, _pydicom_s(path))
    np.testing.assert_array_equal(found, pixels[0])
    if stored == 8:
        np.testing.assert_array_equal(decode_image(path), 255 - pixels[0])


def test_what_is_left_to_pydicom(tmp_path: Path) -> None:
    pixels = _pixels(12)
    signed = _file(tmp_path / "signed.dcm", pixels, uid.JPEG2000Lossless, 12)
    ds = pydicom.dcmread(signed)
    ds.PixelRepresentation = 1
    ds.save_as(signed)
    assert _fast(signed) is None

    for syntax, stored in ((uid.JPEG2000Lossless, 12), (uid.JPEGLosslessSV1, 12), (uid.JPEGBaseline8Bit, 8)):
        larger = _file(tmp_path / "larger.dcm", _pixels(stored), syntax, stored)
        ds = pydicom.dcmread(larger)
        ds.Rows, ds.Columns = 24, 20  # the codestream holds 48x40: never decoded here
        ds.save_as(larger)
        assert _fast(larger) is None, syntax
        with pytest.raises(ImageError):  # and pydicom's decoders refuse it too
            decode_image(larger)

    narrow = _file(tmp_path / "narrow.dcm", _pixels(8), uid.JPEG2000Lossless, 8)
    ds = pydicom.dcmread(narrow)
    ds.BitsAllocated = 16  # an 8-bit codestream in 16 bits: pydicom decodes it to 8 bits, then widens
    ds.save_as(narrow)
    assert _fast(narrow) is None
    np.testing.assert_array_equal(_pydicom_s(narrow), _pixels(8)[0])

    colour = tmp_path / "rgb.dcm"
    ds = pydicom.dcmread(_file(colour, _pixels(8), uid.JPEGBaseline8Bit, 8))
    buffer = io.BytesIO()
    Image.new("RGB", (40, 48), (200, 30, 30)).save(buffer, format="JPEG")
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.save_as(colour)
    assert _fast(colour) is None
    assert decode_image(colour).shape == (48, 40)  # pydicom decodes it; luminance as before


def test_a_corrupt_frame_is_reported_by_pydicom(tmp_path: Path) -> None:
    path = _file(tmp_path / "bad.dcm", _pixels(12), uid.JPEGLSLossless, 12)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 40])
    ds.save_as(path)
    assert _fast(path) is None
    with pytest.raises(ImageError):
        decode_image(path)


def test_pydicom_s_compressed_test_files_decode_alike_or_are_left_to_it() -> None:
    fast = []
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        data = path.read_bytes()
        ds = scan_dataset(data)
        if ds is None or not ds.file_meta.TransferSyntaxUID.is_encapsulated or "PixelData" not in ds:
            continue
        layout = PixelLayout.of(ds)
        for frame in range(1, layout.frames + 1) if layout.frames > 1 else [0]:
            found = _compressed_pixels(ds, layout, frame)
            if found is not None:
                expected = _pydicom_s(path, frame)
                assert found.dtype == expected.dtype, path.name
                np.testing.assert_array_equal(found, expected, err_msg=path.name)
                fast.append(path.name)
    # most of pydicom's files are colour or signed (left to it); the unsigned grey JPEG-LS ones are not
    assert {"JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm"} <= set(fast), fast
    assert not {"MR_small_jp2klossless.dcm", "JPGExtended.dcm", "SC_rgb_rle.dcm"} & set(
        fast
    )  # signed, 12-bit JPEG, RGB
