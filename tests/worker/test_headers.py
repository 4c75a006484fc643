"""What planning learns of a series from its headers: which the model is not fit for, read once a series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from db.series import SeriesFound
from tests.images import write_dicom
from training.dataset import ImageRecord
from training.dicom_header import SeriesHeader, not_assessed
from worker.headers import FileImages, images_of


def _series(description: str, image_type: str) -> SeriesHeader:
    return SeriesHeader(description, image_type, sequence="", plane="axial", site="", patient_key="")


@pytest.mark.parametrize(
    ("description", "image_type", "reason"),
    [
        ("AX FLAIR", "ORIGINAL\\PRIMARY\\M\\ND", None),
        ("T1 MPRAGE SAG", "ORIGINAL\\PRIMARY\\M\\NORM\\DIS3D", None),
        ("AAHead_Scout", "ORIGINAL\\PRIMARY\\M\\ND", "a localiser (scout) series"),
        ("3-plane loc", "ORIGINAL\\PRIMARY\\OTHER", "a localiser (scout) series"),
        ("t2_tse", "ORIGINAL\\PRIMARY\\LOCALIZER", "a localiser (scout) series"),
        ("ep2d_diff_ADC", "DERIVED\\PRIMARY\\DIFFUSION\\ADC", "a derived map (ADC)"),
        ("DTI FA map", "DERIVED\\SECONDARY", "a derived map (FA)"),
        ("ADC", "", "a derived map (ADC)"),
        ("T1 post MIP", "DERIVED\\SECONDARY\\MIP", "a derived map (MIP)"),
        ("fallback ADC named ORIGINAL", "ORIGINAL\\PRIMARY\\M", None),  # acquired: assessed
    ],
)
def test_localisers_and_derived_maps_are_not_assessed(
    description: str, image_type: str, reason: str | None
) -> None:
    assert not_assessed(_series(description, image_type)) == reason


def _record(path: Path) -> ImageRecord:
    return ImageRecord(
        path=path, relpath=f"study/{path.name}", label=None, source="archive/study", category=""
    )


def test_a_series_is_described_by_its_first_file(tmp_path: Path) -> None:
    """Planning reads a series' description (sequence, plane, site, patient key) from the first of
    its files; each file still gives its own instance number, and another series its own."""
    import pydicom

    paths = []
    for number, (series_uid, description) in enumerate(
        [("1.2.3.1", "AX FLAIR"), ("1.2.3.1", "AX FLAIR again"), ("1.2.3.2", "ep2d_diff_ADC")], start=1
    ):
        path = write_dicom(tmp_path / f"IM{number}.dcm", np.zeros((8, 8)))
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.3", series_uid, number
        ds.SeriesDescription, ds.ImageType = description, ["DERIVED", "PRIMARY"]
        ds.save_as(path)
        paths.append(path)
    seen: dict[str, SeriesFound] = {}
    first, second, other = (images_of(_record(p), key=b"k" * 32, seen=seen) for p in paths)
    assert isinstance(first, FileImages) and isinstance(second, FileImages) and isinstance(other, FileImages)
    assert first.series is not None and first.series.description == "AX FLAIR"
    assert second.series is first.series and second.instance_number == 2
    assert other.series is not None and other.series.series_key == "1.2.3.2"
    assert other.series.not_assessed == "a derived map (ADC)"
    assert set(seen) == {"1.2.3.1", "1.2.3.2"}
