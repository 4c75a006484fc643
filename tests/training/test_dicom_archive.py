"""The DICOM test archive (bench/dicom_archive.py) built from real lgg-flair slices: every transfer
syntax in it decodes to the source's pixels, and its multi-frame file, DICOMDIR, report, presentation
state and labels.csv are what a PACS export and brainscan's training expect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.fileset import FileSet
from pydicom.uid import DeflatedExplicitVRLittleEndian, EnhancedMRImageStorage, JPEGBaseline8Bit

from tests.conftest import load_bench
from tests.images import assert_read_as_pydicom_reads
from training.dataset import iter_records
from training.decode import ImageError, decode_image
from training.dicom_scan import dataset_of

pytestmark = pytest.mark.data
PATIENTS = 3  # the first three scans: 60 slices, about half a second to build


dicom_archive = load_bench("dicom_archive")


@pytest.fixture(scope="module")
def archive(lgg_flair: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("archive")
    return out, dicom_archive.build_archive(lgg_flair, out, patients=PATIENTS, seed=0)


def _dicom_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("DICOMDIR", "labels.csv"))


def _headers(out: Path) -> dict[Path, pydicom.Dataset]:
    return {p: pydicom.dcmread(p, stop_before_pixels=True) for p in _dicom_files(out)}


def _source(lgg_flair: Path, ds: pydicom.Dataset, number: int) -> Path:
    name = f"{ds.PatientID}_{ds.StudyDate}_{number}.jpg"
    return next(p for p in (lgg_flair / "yes" / name, lgg_flair / "no" / name) if p.is_file())


def _slice_numbers(path: Path, ds: pydicom.Dataset) -> list[int]:
    """The source slice numbers an image file holds: its instance number, or each frame's."""
    if ds.SOPClassUID != EnhancedMRImageStorage:
        return [int(ds.InstanceNumber)]
    frames = pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    return [int(f.FrameContentSequence[0].FrameAcquisitionNumber) for f in frames]


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def _first_scans(lgg_flair: Path) -> dict[str, list[Path]]:
    """The source slices of the first PATIENTS scans, by file-name prefix, found without the builder."""
    scans: dict[str, list[Path]] = {}
    for path in sorted((lgg_flair / "yes").glob("*.jpg")) + sorted((lgg_flair / "no").glob("*.jpg")):
        scans.setdefault(path.stem.rsplit("_", 1)[0], []).append(path)
    return {prefix: scans[prefix] for prefix in sorted(scans)[:PATIENTS]}


def test_the_archive_holds_every_source_slice_in_every_syntax(
    lgg_flair: Path, archive: tuple[Path, object]
) -> None:
    out, summary = archive
    scans = _first_scans(lgg_flair)
    headers = _headers(out)
    images = [ds for ds in headers.values() if ds.Modality == "MR"]
    assert summary.studies == len({ds.StudyInstanceUID for ds in headers.values()}) == PATIENTS
    assert (
        summary.frames
        == sum(int(ds.get("NumberOfFrames", 1)) for ds in images)
        == sum(map(len, scans.values()))
    )
    assert summary.instances == len(images) and summary.non_image_files == 2
    assert sum(summary.files_by_syntax.values()) == len(headers)
    single_frame_studies = {ds.StudyInstanceUID for ds in images if ds.SOPClassUID != EnhancedMRImageStorage}
    wanted = {str(s) for s in dicom_archive.COMPRESSED} | {pydicom.uid.ExplicitVRLittleEndian}
    for study in single_frame_studies:  # every compressed syntax in every single-frame study
        assert {ds.file_meta.TransferSyntaxUID for ds in images if ds.StudyInstanceUID == study} == wanted


def test_headers_read_like_a_scanners(lgg_flair: Path, archive: tuple[Path, object]) -> None:
    out, _ = archive
    series: dict[str, list[pydicom.Dataset]] = {}
    for ds in _headers(out).values():
        if ds.SOPClassUID == pydicom.uid.MRImageStorage:
            series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for slices in series.values():
        slices.sort(key=lambda ds: int(ds.InstanceNumber))
        first = slices[0]
        assert _source(
            lgg_flair, first, int(first.InstanceNumber)
        ).is_file()  # StudyDate, PatientID from its name
        assert first.SeriesDescription == "AX FLAIR" and first.InversionTime > first.EchoTime > 0
        assert "^" in str(first.PatientName) and len(first.PatientBirthDate) == 8  # identifiers to keep out
        assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        heights = [float(ds.ImagePositionPatient[2]) for ds in slices]
        assert heights == sorted(heights) and heights == [float(ds.SliceLocation) for ds in slices]
        assert first.BitsStored == 8 and first.PhotometricInterpretation == "MONOCHROME2"


def test_every_single_frame_file_decodes_to_its_source_slice(
    lgg_flair: Path, archive: tuple[Path, object]
) -> None:
    out, _ = archive
    decoded_by_syntax: dict[str, int] = {}
    for path, ds in _headers(out).items():
        if ds.SOPClassUID != pydicom.uid.MRImageStorage:
            continue
        pixels, source = decode_image(path), _grey(_source(lgg_flair, ds, int(ds.InstanceNumber)))
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax == JPEGBaseline8Bit:  # lossy: close to the source, not equal
            assert np.abs(pixels.astype(int) - source).mean() < 2.0
        else:
            np.testing.assert_array_equal(pixels, source, err_msg=f"{path} ({syntax.name})")
        decoded_by_syntax[syntax.name] = decoded_by_syntax.get(syntax.name, 0) + 1
    assert len(decoded_by_syntax) == 7


def test_the_multi_frame_file_holds_one_frame_per_slice_in_order(
    lgg_flair: Path, archive: tuple[Path, object]
) -> None:
    out, _ = archive
    (path,) = [p for p, ds in _headers(out).items() if ds.SOPClassUID == EnhancedMRImageStorage]
    ds = pydicom.dcmread(path)
    numbers = _slice_numbers(path, ds)
    assert ds.NumberOfFrames == len(numbers) == len(_first_scans(lgg_flair)[f"{ds.PatientID}_{ds.StudyDate}"])
    assert numbers == sorted(numbers)
    heights = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence
    ]
    assert heights == sorted(heights)
    for frame, number in zip(ds.pixel_array, numbers, strict=True):
        np.testing.assert_array_equal(frame, _grey(_source(lgg_flair, ds, number)))
        np.testing.assert_array_equal(decode_image(path, frame=numbers.index(number) + 1), frame)
    with pytest.raises(ImageError, match=r"multi-frame DICOM .* frame by frame"):
        decode_image(path)  # the whole file as one image
    with pytest.raises(ImageError, match="not frame"):
        decode_image(path, frame=len(numbers) + 1)


def test_the_scanner_reads_every_file_as_pydicom_does(archive: tuple[Path, object]) -> None:
    """training.dicom_scan takes every file but the deflated ones (the multi-frame file's functional
    groups, the report's nested sequences and the DICOMDIR's records included) and reads them
    element for element as pydicom's reader does."""
    out, _ = archive
    left = []
    for path in [*_dicom_files(out), out / "DICOMDIR"]:
        for stop in (False, True):
            mine = dataset_of(path, stop_before_pixels=stop)
            if mine is None:
                left.append(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            else:
                assert_read_as_pydicom_reads(mine, path, stop_before_pixels=stop)
    assert set(left) == {DeflatedExplicitVRLittleEndian}


def test_the_dicomdir_lists_every_instance(archive: tuple[Path, object]) -> None:
    out, _ = archive
    headers = _headers(out)
    file_set = FileSet(out / "DICOMDIR")
    assert {Path(i.path) for i in file_set} == set(headers)
    assert {i.SOPInstanceUID for i in file_set} == {ds.SOPInstanceUID for ds in headers.values()}
    assert len(file_set.find(Modality="SR")) == len(file_set.find(Modality="PR")) == 1
    assert len(file_set.find_values("PatientID")) == PATIENTS


def test_the_report_and_presentation_state_refer_to_the_flair_series(archive: tuple[Path, object]) -> None:
    out, _ = archive
    headers = _headers(out)
    (report,) = [pydicom.dcmread(p) for p, ds in headers.items() if ds.Modality == "SR"]
    (state,) = [pydicom.dcmread(p) for p, ds in headers.items() if ds.Modality == "PR"]
    assert report.SOPClassUID == pydicom.uid.BasicTextSRStorage
    texts = [item.ContentSequence[0].TextValue for item in report.ContentSequence]
    assert "No acute findings." in texts
    assert state.SOPClassUID == pydicom.uid.GrayscaleSoftcopyPresentationStateStorage
    shown = {r.ReferencedSOPInstanceUID for r in state.ReferencedSeriesSequence[0].ReferencedImageSequence}
    in_study = {ds.SOPInstanceUID for ds in headers.values() if ds.Modality == "MR"}
    assert shown and shown <= in_study
    for path in (Path(report.filename), Path(state.filename)):  # not images: refused with a reason
        with pytest.raises(ImageError, match="no pixel data"):
            decode_image(path)


def test_labels_csv_labels_each_image_by_its_source_folder(
    lgg_flair: Path, archive: tuple[Path, object]
) -> None:
    out, _ = archive
    headers = _headers(out)
    records = {r.path: r for r in iter_records(out)}
    for path, ds in headers.items():
        record = records[path.resolve()]
        if ds.Modality != "MR":
            assert record.label is None
            continue
        labels = [_source(lgg_flair, ds, n).parent.name == "yes" for n in _slice_numbers(path, ds)]
        assert record.label == int(any(labels)) and record.category == "labels.csv"
        assert record.subject == ds.PatientID


def test_a_rebuild_writes_the_same_files_and_another_seed_new_uids(
    lgg_flair: Path, archive: tuple[Path, object], tmp_path: Path
) -> None:
    out, _ = archive
    dicom_archive.build_archive(lgg_flair, tmp_path / "again", patients=2, seed=0)
    again = _dicom_files(tmp_path / "again")
    assert len(again) > 20
    for path in again:  # a smaller build is the first patients of a larger one, byte for byte
        assert path.read_bytes() == (out / path.relative_to(tmp_path / "again")).read_bytes(), path
    dicom_archive.build_archive(lgg_flair, tmp_path / "seed1", patients=1, seed=1)
    first = {ds.StudyInstanceUID for ds in _headers(tmp_path / "seed1").values()}
    assert first.isdisjoint(ds.StudyInstanceUID for ds in _headers(out).values())
