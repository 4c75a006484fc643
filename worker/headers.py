"""What planning learns of each file before scoring it: its series, its frames, or why to skip it.

A DICOM file's header (never its pixels) names its study, series, place and frames; a file that
holds no MR image (a report, a presentation state, a DICOMDIR, a CT) is skipped with the reason.
Other images form one series per folder, the folder being their study. A file whose header cannot
be read is planned as one image anyway: scoring then records why it failed, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from db.series import SeriesFound
from training.dataset import ImageRecord
from training.decode import RASTER_SUFFIXES
from training.dicom_header import DicomHeader, NotAnImage, contents_of, not_assessed


@dataclass(frozen=True)
class FileImages:
    """The images one file holds: its series and, per image, the frame (0: the file is one image)."""

    series: SeriesFound | None
    frames: tuple[int, ...]
    instance_number: int | None = None


def images_of(record: ImageRecord, *, key: bytes, seen: dict[str, SeriesFound]) -> FileImages | NotAnImage:
    """What `record` holds to be scored, in its series; `key` keys the PatientID hash. `seen`: the
    DICOM series met so far by their UID, the caller's (a series' files describe it alike: its
    first file's header is read for it, the others' for their place in it only)."""
    contents = contents_of(record.path, record.relpath, key=key)
    if isinstance(contents, NotAnImage):
        return contents
    if contents.header is None:
        raster = PurePosixPath(record.relpath).suffix.lower() in RASTER_SUFFIXES
        return FileImages(folder_series(record) if raster else None, contents.frames)
    header = contents.header
    series = seen.get(header.series_uid) if header.series_uid else None
    if series is None:
        series = dicom_series(header, record)
        if header.series_uid:
            seen[header.series_uid] = series
    return FileImages(series, contents.frames, header.instance_number)


def dicom_series(header: DicomHeader, record: ImageRecord) -> SeriesFound:
    """The series a header names; a file without UIDs falls back on its folder as both keys."""
    folder = folder_of(record)
    series = header.series
    return SeriesFound(
        study_key=header.study_uid or folder,
        series_key=header.series_uid or folder,
        dicom=True,
        patient_key=series.patient_key or None,
        description=series.description[:255],
        modality=header.modality[:16],
        sequence=series.sequence[:255],
        plane=series.plane,
        site=series.site[:255],
        image_type=series.image_type[:255],
        not_assessed=not_assessed(series),
    )


def folder_series(record: ImageRecord) -> SeriesFound:
    """Images outside DICOM: their folder is their series and study (its patient is unknown), and
    the job's top folder their site."""
    folder = folder_of(record)
    return SeriesFound(
        study_key=folder, series_key=folder, dicom=False, site=record.source.split("/")[0][:255]
    )


def folder_of(record: ImageRecord) -> str:
    parent = PurePosixPath(record.relpath).parent.as_posix()
    return parent[:1024]
