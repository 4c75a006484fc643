"""training.dicom_scan reads what pydicom's reader reads, element for element, or leaves the file
to it: pydicom's own test files (every syntax, sequences, odd lengths, a delimiter inside a JPEG
2000 fragment), files written here, and every truncation of one."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from tests.images import assert_read_as_pydicom_reads, create_random_slice, write_dicom, write_sparse_file
from training.dicom_scan import HEAD_BYTES, dataset_of, scan_dataset

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _pydicom_files() -> list[Path]:
    if not PYDICOM_FILES.is_dir():
        pytest.fail(f"pydicom's test files are missing from its installed package ({PYDICOM_FILES})")
    return sorted(PYDICOM_FILES.rglob("*.dcm"))


def test_pydicom_s_own_test_files_read_alike_or_are_left_to_pydicom() -> None:
    scanned, left = [], []
    for path in _pydicom_files():
        for stop in (False, True):
            mine = dataset_of(path, stop_before_pixels=stop)
            if mine is None:
                left.append(path.name)
                continue
            scanned.append(path.name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert_read_as_pydicom_reads(mine, path, stop_before_pixels=stop)
    assert len(scanned) > len(left)  # most of them are explicit VR little endian
    for name in ("MR_small.dcm", "JPEG2000-embedded-sequence-delimiter.dcm", "MR_small_RLE.dcm"):
        assert name in scanned
    for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm"):
        assert name in left


@pytest.mark.parametrize(
    ("syntax", "scanned"),
    [
        (ExplicitVRLittleEndian, True),
        (JPEG2000Lossless, True),  # encapsulated: its fragments walked to the delimiter
        (ImplicitVRLittleEndian, False),
        (ExplicitVRBigEndian, False),
        (DeflatedExplicitVRLittleEndian, False),
    ],
)
def test_what_is_scanned_and_what_is_left_to_pydicom(tmp_path: Path, syntax: str, scanned: bool) -> None:
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(64), syntax=syntax, window=(2000, 4000))
    if syntax in (ImplicitVRLittleEndian, ExplicitVRBigEndian):  # written as explicit VR little endian
        ds = Dataset(pydicom.dcmread(path))
        ds.file_meta = pydicom.dcmread(path).file_meta
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(
            path,
            implicit_vr=syntax == ImplicitVRLittleEndian,
            little_endian=syntax != ExplicitVRBigEndian,
            enforce_file_format=True,
        )
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    mine = dataset_of(path)
    assert (mine is not None) == scanned
    if mine is not None:
        assert_read_as_pydicom_reads(mine, path, stop_before_pixels=False)


def test_a_deflated_data_set_is_walked_once_inflated(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "x.dcm",
        create_random_slice(64),
        syntax=DeflatedExplicitVRLittleEndian,
        window=(2000, 4000),
    )
    inflated: list[int] = []

    def inflate(deflated: bytes) -> tuple[bytes, bool]:
        inflated.append(len(deflated))
        return zlib.decompress(deflated, -zlib.MAX_WBITS), True

    mine = scan_dataset(path.read_bytes(), inflate=inflate)
    assert mine is not None and inflated
    assert_read_as_pydicom_reads(mine, path, stop_before_pixels=False)


def test_wanted_keeps_those_elements_and_the_character_set(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(64))
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet, ds.SeriesDescription, ds.PatientName = "ISO_IR 100", "Séquence FLAIR", "Doe^Jane"
    ds.save_as(path)
    wanted = {0x0008103E, 0x00080060, 0x00080005}
    mine = dataset_of(path, stop_before_pixels=True, wanted=wanted)
    assert mine is not None
    assert set(mine.keys()) == wanted
    assert mine.SeriesDescription == "Séquence FLAIR"  # decoded in the file's character set
    assert "PatientName" not in mine


def test_every_truncation_is_read_alike_or_left_to_pydicom(tmp_path: Path) -> None:
    """A file cut anywhere (a copy still being written): the scanner never raises, and what it
    does read, pydicom reads the same."""
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(16), window=(2000, 4000))
    data = path.read_bytes()
    pixels_at = data.index(b"\xe0\x7f\x10\x00")
    taken = 0
    for end in [*range(0, pixels_at + 16), *range(pixels_at + 16, len(data), 37)]:
        mine = scan_dataset(data[:end])
        if mine is not None:
            taken += 1
            assert_read_as_pydicom_reads(mine, data[:end], stop_before_pixels=False)
    assert taken > 0
    assert scan_dataset(data[: len(data) - 1]) is None  # the pixel data runs past the end


def test_encapsulated_pixels_without_their_delimiter_are_left_to_pydicom(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(64), syntax=JPEG2000Lossless)
    data = path.read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert scan_dataset(data) is not None
    assert scan_dataset(data[:-8]) is None
    assert (
        scan_dataset(data[:-8] + b"\xfe\xff\x00\xe0\xff\xff\xff\xff") is None
    )  # an item of undefined length


def test_files_that_are_not_part_10_are_left_to_pydicom(tmp_path: Path) -> None:
    assert scan_dataset(b"") is None
    assert scan_dataset(b"\0" * 200) is None
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(16))
    data = bytearray(path.read_bytes())
    data[132 + 4 : 132 + 6] = b"ZZ"  # an unknown VR
    assert scan_dataset(bytes(data)) is None
    assert dataset_of(tmp_path / "missing.dcm") is None


def test_a_header_is_read_from_the_file_s_head(tmp_path: Path) -> None:
    """Of a file whose header alone is wanted, the first HEAD_BYTES are read: a header before
    100 MB of pixels (a hole here) is read without them, as pydicom reads it."""
    head = write_dicom(tmp_path / "x.dcm", create_random_slice(64)).read_bytes()
    big = write_sparse_file(tmp_path / "big.dcm", head, 100 * 2**20)
    mine = dataset_of(big, stop_before_pixels=True)
    assert mine is not None
    assert_read_as_pydicom_reads(mine, big, stop_before_pixels=True)
    assert dataset_of(big) is None  # the whole file is beyond SCAN_MAX_BYTES: pydicom's to read


@pytest.mark.parametrize("shift", [-9, -1, 0, 1, 7])
def test_a_header_longer_than_the_head_is_read_on(tmp_path: Path, shift: int) -> None:
    """A header that runs past HEAD_BYTES (an element ending just before, at or after it, or a
    sequence across it) is read on to its end, never cut at the head's edge."""
    path = write_dicom(tmp_path / "x.dcm", create_random_slice(64))
    ds = pydicom.dcmread(path)
    ds.ImageComments = "x"
    ds.save_as(path)
    data = path.read_bytes()
    comment_end = data.index(b"\x20\x00\x00\x40LT") + 8 + 2  # (0020,4000) LT, its value (padded to 2)
    ds.ImageComments = "x" * (HEAD_BYTES - comment_end + 2 + shift - (shift % 2))  # even lengths
    ds.save_as(path)
    mine = dataset_of(path, stop_before_pixels=True)
    assert mine is not None and mine.ImageComments == ds.ImageComments
    assert_read_as_pydicom_reads(mine, path, stop_before_pixels=True)
    ds.ReferencedImageSequence = [Dataset() for _ in range(3)]
    for item in ds.ReferencedImageSequence:
        item.ReferencedSOPInstanceUID = "1.2.3." + "4" * 40
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.save_as(path)
    mine = dataset_of(path, stop_before_pixels=True)
    assert mine is not None and len(mine.ReferencedImageSequence) == 3
    assert_read_as_pydicom_reads(mine, path, stop_before_pixels=True)
