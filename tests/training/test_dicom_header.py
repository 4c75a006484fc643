"""DICOM headers: what planning keeps of a file, what it skips, and that no identifier survives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tests.images import write_dicom
from training.dicom_header import DicomHeader, HeaderError, NotAnImage, patient_key, plane_of, read_header

KEY = b"k" * 32
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _write(path: Path, sop_class: str, **fields: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "TCGA_CS_4941", "DOE^JANE", "19600101"
    for name, value in fields.items():
        setattr(ds, name, value)
    if "Rows" in fields:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = np.zeros((ds.Rows, ds.Columns), dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_mr_slice_header_keeps_what_screening_needs_and_no_identifier(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "IM1.dcm",
        "1.2.840.10008.5.1.4.1.1.4",
        Modality="MR",
        InstanceNumber=7,
        SeriesDescription="AX FLAIR ",
        ImageType=["ORIGINAL", "PRIMARY", "M", "ND"],
        ScanningSequence=["SE", "IR"],
        SequenceVariant="SK",
        SequenceName="*tir2d1_15",
        ImageOrientationPatient=AXIAL,
        Manufacturer="SIEMENS",
        StationName="MRC40123",
        Rows=64,
        Columns=64,
    )
    header = read_header(path, key=KEY)
    assert isinstance(header, DicomHeader)
    assert (header.study_uid, header.series_uid, header.instance_number) == ("1.2.3.4", "1.2.3.4.5", 7)
    series = header.series
    assert (header.modality, series.description, series.plane) == ("MR", "AX FLAIR", "axial")
    assert series.image_type == "ORIGINAL\\PRIMARY\\M\\ND"
    assert series.sequence == "SE\\IR; SK; *tir2d1_15"
    assert series.site == "SIEMENS / MRC40123"
    assert header.frames == 1
    assert (
        series.patient_key
        == patient_key("TCGA_CS_4941", key=KEY)
        != patient_key("TCGA_CS_4941", key=b"x" * 32)
    )
    for text in (repr(header), repr(series)):
        assert "TCGA_CS_4941" not in text and "DOE" not in text and "1960" not in text
    from_bytes = read_header(path.read_bytes(), key=KEY)
    assert isinstance(from_bytes, DicomHeader)
    assert from_bytes == header and from_bytes.series == series


@pytest.mark.parametrize(
    ("sop_class", "fields", "reason"),
    [
        ("1.2.840.10008.5.1.4.1.1.88.11", {"Modality": "SR"}, "not an image: Basic Text SR"),
        ("1.2.840.10008.5.1.4.1.1.11.1", {"Modality": "PR"}, "Grayscale Softcopy Presentation State"),
        ("1.2.840.10008.5.1.4.1.1.88.59", {"Modality": "KO"}, "Key Object Selection"),
        ("1.2.840.10008.5.1.4.1.1.2", {"Modality": "CT"}, "not an image: CT Image Storage"),
        ("1.2.840.10008.5.1.4.1.1.7", {"Modality": "CT"}, "modality CT, not MR"),
    ],
)
def test_files_with_nothing_to_screen_say_why(
    tmp_path: Path, sop_class: str, fields: dict[str, object], reason: str
) -> None:
    result = read_header(_write(tmp_path / "f.dcm", sop_class, **fields), key=KEY)
    assert isinstance(result, NotAnImage) and reason in result.reason


def test_a_dicomdir_is_not_an_image(tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    image = _write(
        tmp_path / "IM1",
        "1.2.840.10008.5.1.4.1.1.4",
        Modality="MR",
        StudyDate="20240101",
        StudyTime="120000",
        StudyID="1",
        AccessionNumber="A1",
        SeriesNumber=1,
        InstanceNumber=1,
        PatientName="DOE^JANE",
        Rows=32,
        Columns=32,
    )
    fs = FileSet()
    fs.add(pydicom.dcmread(image))
    fs.write(tmp_path / "out")
    result = read_header(tmp_path / "out" / "DICOMDIR", key=KEY)
    assert isinstance(result, NotAnImage) and "DICOMDIR" in result.reason


def test_planes_from_orientation() -> None:
    assert plane_of(AXIAL) == "axial"
    assert plane_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert plane_of([1, 0, 0, 0, 0, -1]) == "coronal"
    assert plane_of([1, 0, 0, 0, 0.7071, 0.7071]) == "oblique"
    assert plane_of(None) == plane_of([0, 0, 0, 0, 0, 0]) == ""


def test_a_patient_key_is_stable_keyed_and_empty_without_an_id() -> None:
    assert patient_key(" A1 ", key=KEY) == patient_key("A1", key=KEY)
    assert len(patient_key("A1", key=KEY)) == 16
    assert patient_key("", key=KEY) == ""


def test_a_corrupt_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    with pytest.raises(HeaderError, match="corrupt DICOM"):
        read_header(bad, key=KEY)


def test_a_deflated_file_is_read_from_its_first_mebibyte_inflated(tmp_path: Path) -> None:
    """Planning inflates no more than 1 MiB of a deflated data set (pydicom's reader inflates it
    whole): the header within it is read; one beyond it is left to scoring, which says why."""
    path = write_dicom(
        tmp_path / "small.dcm", np.zeros((64, 64)), syntax=pydicom.uid.DeflatedExplicitVRLittleEndian
    )
    header = read_header(path, key=KEY)
    assert isinstance(header, DicomHeader) and header.modality == "MR"
    long = pydicom.dcmread(path)
    long.ImageComments = "x" * (2 * 2**20)  # (0020,4000), before the pixels: the header outgrows 1 MiB
    long.save_as(tmp_path / "long.dcm")
    with pytest.raises(HeaderError, match="not within its first 1 MiB inflated"):
        read_header(tmp_path / "long.dcm", key=KEY)


def test_text_in_another_character_set_and_implicit_vr_read_alike(tmp_path: Path) -> None:
    """Values are read from their raw bytes where ASCII; others through pydicom's character sets.
    Implicit VR files (no VR in the bytes) read the same."""
    path = _write(
        tmp_path / "IM1.dcm",
        "1.2.840.10008.5.1.4.1.1.4",
        SpecificCharacterSet="ISO_IR 100",
        Modality="MR",
        InstanceNumber="12 ",
        SeriesDescription="Schädel FLAIR",
        StationName="Zürich MR1",
        ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"],
    )
    header = read_header(path, key=KEY)
    assert isinstance(header, DicomHeader)
    assert (header.series.description, header.series.site, header.instance_number) == (
        "Schädel FLAIR",
        "Zürich MR1",
        12,
    )
    assert header.series.plane == "coronal"
    implicit = pydicom.dcmread(path)
    implicit.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    implicit.save_as(tmp_path / "IM2.dcm", enforce_file_format=True)
    implicit_header = read_header(tmp_path / "IM2.dcm", key=KEY)
    assert isinstance(implicit_header, DicomHeader)
    assert implicit_header == header and implicit_header.series == header.series


@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian],
)
def test_numbers_are_read_from_raw_bytes_as_pydicom_converts_them(tmp_path: Path, syntax: UID) -> None:
    """US from its bytes in either byte order, VR named or implied; IS and DS from their text."""
    from training.dicom_header import element_number

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation = 300, 64, 16, 1
    ds.NumberOfFrames, ds.RescaleSlope, ds.RescaleIntercept = "12", "0.5", "-1024"
    ds.save_as(tmp_path / "x.dcm", implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    raw = pydicom.dcmread(tmp_path / "x.dcm", force=True)
    read = {
        k: element_number(raw, k, -1) for k in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation")
    }
    assert read == {"Rows": 300, "Columns": 64, "BitsAllocated": 16, "PixelRepresentation": 1}
    assert element_number(raw, "NumberOfFrames", 1) == 12
    assert (element_number(raw, "RescaleSlope", 1), element_number(raw, "RescaleIntercept", 0)) == (
        0.5,
        -1024,
    )
    assert element_number(raw, "BitsStored", 8) == 8  # absent
    assert element_number(raw, "Rows", -1) == raw.Rows == 300  # converted by pydicom now: still read
