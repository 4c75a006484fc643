"""Which series the model is not fit for, from their headers alone."""

from __future__ import annotations

import pytest

from training.dicom_header import DicomHeader, not_assessed


def _header(description: str, image_type: str) -> DicomHeader:
    return DicomHeader("1.2", "1.2.3", "1.2.3.4", 1, 1, "MR", description, image_type, "", "axial", "", "")


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
    assert not_assessed(_header(description, image_type)) == reason
