"""What planning learns of each file before scoring it: its series, its frames, or why to skip it.

A DICOM file's header (never its pixels) names its study, series, place and frames; a file that
holds no MR image (a report, a presentation state, a DICOMDIR, a CT) is skipped with the reason.
Other images form one series per folder, the folder being their study. A file whose header cannot
be read is planned as one image anyway: scoring then records why it failed, so nothing is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from db.series import SeriesFound
from training.dataset import ImageRecord
from training.decode import RASTER_SUFFIXES
from training.dicom_header import DicomHeader, HeaderError, NotAnImage, read_header


@dataclass(frozen=True)
class FileImages:
    """The images one file holds: its series and, per image, the frame (0: the file is one image)."""

    series: SeriesFound | None
    frames: tuple[int, ...]
    instance_number: int | None = None


@dataclass(frozen=True)
class Skipped:
    reason: str


def images_of(record: ImageRecord, *, key: bytes) -> FileImages | Skipped:
    """What `record` holds to be scored; `key` keys the PatientID hash."""
    if PurePosixPath(record.relpath).suffix.lower() in RASTER_SUFFIXES:
        return FileImages(folder_series(record), (0,))
    try:
        header = read_header(record.path, key=key)
    except (HeaderError, OSError):
        return FileImages(None, (0,))
    if isinstance(header, NotAnImage):
        return Skipped(header.reason)
    frames = tuple(range(1, header.frames + 1)) if header.frames > 1 else (0,)
    return FileImages(dicom_series(header, record), frames, header.instance_number)


def dicom_series(header: DicomHeader, record: ImageRecord) -> SeriesFound:
    """The series a header names; a file without UIDs falls back on its folder as both keys."""
    folder = folder_of(record)
    return SeriesFound(
        study_key=header.study_uid or folder,
        series_key=header.series_uid or folder,
        dicom=True,
        patient_key=header.patient_key or None,
        description=header.series_description[:255],
        modality=header.modality[:16],
        sequence=header.sequence[:255],
        plane=header.plane,
        site=header.site[:255],
        image_type=header.image_type[:255],
        not_assessed=not_assessed(header),
    )


ALONE = r"(?<![a-z0-9])({})(?![a-z0-9])"  # a word, with _ - and spaces as separators (ep2d_diff_ADC)
LOCALISER_WORDS = re.compile(
    ALONE.format(r"loc|locali[sz]er|scout|survey|3[- ]?plane|tri-?pilot"), re.IGNORECASE
)
MAP_WORDS = re.compile(ALONE.format(r"e?adc|fa|trace|cbf|cbv|mtt|ttp|perfusion|mip|mpr|sub"), re.IGNORECASE)


def not_assessed(header: DicomHeader) -> str | None:
    """Why the model is not fit for a series, from its header; None when it is. The model was
    trained on acquired slices of the brain: a localiser (scout) or a derived map (ADC, FA,
    perfusion, MIP...) is not one, and a negative verdict on it would mean nothing."""
    types = {t.upper() for t in header.image_type.split("\\")}
    if "LOCALIZER" in types or LOCALISER_WORDS.search(header.series_description):
        return "a localiser (scout) series"
    words = " ".join((header.series_description, *types))
    derived = MAP_WORDS.search(words)
    if derived and ("DERIVED" in types or not types - {""}):
        return f"a derived map ({derived.group(0).upper()})"
    return None


def folder_series(record: ImageRecord) -> SeriesFound:
    """Images outside DICOM: their folder is their series and study (its patient is unknown)."""
    folder = folder_of(record)
    return SeriesFound(study_key=folder, series_key=folder, dicom=False)


def folder_of(record: ImageRecord) -> str:
    parent = PurePosixPath(record.relpath).parent.as_posix()
    return parent[:1024]
