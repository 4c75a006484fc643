"""What a DICOM file's header says about where its pixels belong: study, series, sequence, plane.

Planning reads every DICOM file's header (never its pixels) to group images into studies and
series and to skip files that hold no MR image. Only what screening needs is kept: UIDs, instance
number, modality, series description, sequence hints, plane, the site (manufacturer and station),
and a keyed hash of PatientID that links a patient's studies without naming them. PatientName,
BirthDate and every other identifier are never read into a `DicomHeader`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from training.dicom_scan import CHARACTER_SET, HEAD_BYTES, dataset_of, deflated_data_set, inflate_up_to

# SOP classes whose instances are MR (or generic) images this model can be fit for
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image",
}
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR
HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstanceNumber",
    "NumberOfFrames",
    "Modality",
    "SeriesDescription",
    "ImageType",
    "ScanningSequence",
    "SequenceVariant",
    "SequenceName",
    "ContrastBolusAgent",
    "ImageOrientationPatient",
    "Manufacturer",
    "StationName",
    "PatientID",
    "SharedFunctionalGroupsSequence",
    "PulseSequenceName",
)
PLANES = ("sagittal", "coronal", "axial")  # the patient axis (x, y, z) a slice's normal follows
OBLIQUE_BELOW = 0.8  # a normal's largest direction cosine under this: an oblique slice


@dataclass(frozen=True)
class SeriesHeader:
    """What a DICOM file's header says of its series: the same in each of the series' files."""

    description: str  # SeriesDescription
    image_type: str  # e.g. ORIGINAL\PRIMARY\M\ND; DERIVED and LOCALIZER mark series not assessed
    sequence: str  # hints joined by "; ": scanning sequence, variant, name, "contrast"
    plane: str  # axial, coronal, sagittal, oblique, or "" when the header does not say
    site: str  # manufacturer / station name: where the image was made
    patient_key: str  # keyed hash of PatientID (`patient_key`), "" without one


@dataclass(frozen=True)
class DicomHeader:
    """The screening-relevant header of one DICOM image file: what places the image (read with
    the header), and `series`, what its series is (read from the header when first asked: planning
    asks the first file of each series only, a third of its header reading saved)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    instance_number: int | None
    frames: int  # 1 for a single-frame image
    modality: str
    _ds: Any = field(repr=False, compare=False)  # the elements read (HEADER_KEYWORDS), for `series`
    _key: bytes = field(repr=False, compare=False)

    @functools.cached_property
    def series(self) -> SeriesHeader:
        ds = self._ds
        site = (element_text(ds, "Manufacturer"), element_text(ds, "StationName"))
        return SeriesHeader(
            description=element_text(ds, "SeriesDescription"),
            image_type="\\".join(element_texts(ds, "ImageType")),
            sequence=_sequence_hints(ds),
            plane=plane_of(_orientation(ds)),
            site=" / ".join(s for s in site if s),
            patient_key=patient_key(element_text(ds, "PatientID"), key=self._key),
        )


@dataclass(frozen=True)
class NotAnImage:
    """A DICOM file with nothing to screen, and why (a report, a DICOMDIR, a CT...)."""

    reason: str


class HeaderError(Exception):
    """The file is not readable DICOM."""


def read_header(source: Path | bytes, *, key: bytes) -> DicomHeader | NotAnImage:
    """The header of a DICOM file, read without its pixels; NotAnImage when it holds no MR image.
    `key` keys the PatientID hash (the deployment's secret: equal keys give equal hashes)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = dataset_of(source, stop_before_pixels=True, wanted=_header_tags(), inflate=_inflate_head)
        if ds is None:  # not explicit VR little endian, or not as simply laid out
            if deflated_data_set(_head(source)) is not None:  # pydicom would inflate it whole
                raise HeaderError(
                    f"a deflated DICOM file whose header is not within its first "
                    f"{HEAD_INFLATED_BYTES // 2**20} MiB inflated"
                )
            fp: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=list(_header_tags()))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, zlib.error) as exc:
        raise HeaderError(f"corrupt DICOM file: {exc}") from exc
    meta = getattr(ds, "file_meta", None) or {}
    sop_class = element_text(ds, "SOPClassUID") or str(meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class:
        raise HeaderError("corrupt DICOM file: it names no SOP class (what kind of object it is)")
    if sop_class == MEDIA_DIRECTORY:
        return NotAnImage("DICOMDIR (a directory of the other files)")
    if sop_class not in IMAGE_SOP_CLASSES:
        return NotAnImage(f"not an image: {_sop_class_name(sop_class)}")
    modality = element_text(ds, "Modality")
    if modality and modality != "MR":
        return NotAnImage(f"modality {modality}, not MR")
    return DicomHeader(
        study_uid=element_text(ds, "StudyInstanceUID"),
        series_uid=element_text(ds, "SeriesInstanceUID"),
        sop_uid=element_text(ds, "SOPInstanceUID"),
        instance_number=_int_or_none(element_text(ds, "InstanceNumber")),
        frames=_int_or_none(element_text(ds, "NumberOfFrames")) or 1,
        modality=modality,
        _ds=ds,
        _key=key,
    )


HEAD_INFLATED_BYTES = 2**20  # of a deflated file, planning inflates no more to read its header


def _inflate_head(deflated: bytes) -> tuple[bytes, bool]:
    """The start of a deflated data set, inflated up to HEAD_INFLATED_BYTES, and whether that was
    all of it: its header precedes its pixels, which planning does not read (and which may
    inflate to gigabytes)."""
    return inflate_up_to(deflated, HEAD_INFLATED_BYTES)


def _head(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:HEAD_BYTES]
    with open(source, "rb") as fp:
        return fp.read(HEAD_BYTES)


def element_texts(ds: Any, keyword: str) -> list[str]:
    """An element's values as text, each stripped of padding; [] when absent or empty. Read from
    the raw bytes where they are ASCII, as UIDs, codes and numbers always are and most names are:
    pydicom's conversion of every value it is asked for was half the time of planning a DICOM file
    (bench/dicom_speed.py). Other bytes go through pydicom, which knows the character set."""
    return _texts(ds, keyword, getattr(ds.get_item(_tag(keyword)), "value", None))


def _texts(ds: Any, keyword: str, raw: Any) -> list[str]:
    """element_texts of the element's value as read (`raw`: its bytes, or pydicom's value)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return [str(v).strip(" \0") for v in _values(ds.get(keyword))]
        return [v.strip(" \0") for v in text.split("\\")] if text.strip(" \0") else []
    return [str(v).strip(" \0") for v in _values(raw)]  # converted already, or None


def element_text(ds: Any, keyword: str) -> str:
    """An element's value as one stripped string (several values joined by backslashes)."""
    return "\\".join(element_texts(ds, keyword))


BINARY_INTEGERS = {"US": (2, False), "SS": (2, True), "UL": (4, False), "SL": (4, True)}  # bytes, signed


def element_number(ds: Any, keyword: str, default: float) -> float:
    """An element's first value as a number (US, SS, UL, SL from their bytes; IS and DS from their
    text), `default` when absent, empty or unreadable; without pydicom's conversion, as above."""
    element = ds.get_item(_tag(keyword))
    raw = getattr(element, "value", None)
    if isinstance(raw, bytes):  # binary by its VR as read, or the dictionary's in an implicit VR file
        binary = BINARY_INTEGERS.get(element.VR or _dictionary_vr(element.tag))
        if binary is not None:
            size, signed = binary
            if len(raw) < size:
                return default
            return int.from_bytes(raw[:size], "little" if element.is_little_endian else "big", signed=signed)
    texts = _texts(ds, keyword, raw)  # text, or converted already, or absent
    try:
        return float(texts[0]) if texts and texts[0] else default
    except ValueError:
        return default


@functools.cache
def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword  # pydicom is imported when a DICOM file is read

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"no DICOM keyword {keyword}")
    return tag


@functools.cache
def _header_tags() -> frozenset[int]:
    """The tags a header is read for, and the character set their text is in."""
    return frozenset((CHARACTER_SET, *(_tag(keyword) for keyword in HEADER_KEYWORDS)))


@functools.cache
def _dictionary_vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    return str(dictionary_VR(tag))


def patient_key(patient_id: str, *, key: bytes) -> str:
    """A keyed hash (HMAC-SHA256, 16 hex digits) of a PatientID: links one patient's studies and
    keeps their images on one side of a training split, without storing the identifier."""
    if not patient_id.strip():
        return ""
    return hmac.new(key, patient_id.strip().encode(), hashlib.sha256).hexdigest()[:16]


def plane_of(orientation: list[float] | None) -> str:
    """The acquisition plane from ImageOrientationPatient's row and column direction cosines."""
    if orientation is None or len(orientation) != 6:
        return ""
    (rx, ry, rz), (cx, cy, cz) = orientation[:3], orientation[3:]
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)  # row x column, in plain floats:
    length = math.sqrt(sum(n * n for n in normal))  # numpy's cross was a tenth of reading a header
    if not math.isfinite(length) or length < 0.5:
        return ""
    axis = max(range(3), key=lambda i: abs(normal[i]))
    return PLANES[axis] if abs(normal[axis]) >= OBLIQUE_BELOW * length else "oblique"


def _orientation(ds: Any) -> list[float] | None:
    """ImageOrientationPatient, or the one shared by every frame of an enhanced multi-frame image."""
    if values := element_texts(ds, "ImageOrientationPatient"):
        try:
            return [float(v) for v in values]
        except ValueError:
            return None
    for shared in ds.get("SharedFunctionalGroupsSequence", []) or []:
        for plane in shared.get("PlaneOrientationSequence", []) or []:
            if "ImageOrientationPatient" in plane:
                return [float(v) for v in plane.ImageOrientationPatient]
    return None


SEQUENCE_HINTS = ("ScanningSequence", "SequenceVariant", "SequenceName", "PulseSequenceName")


def _sequence_hints(ds: Any) -> str:
    hints = [element_text(ds, k) for k in SEQUENCE_HINTS]
    if element_text(ds, "ContrastBolusAgent"):
        hints.append("contrast")
    return "; ".join(h for h in hints if h)


def _values(value: Any) -> list[Any]:
    """A DICOM value as a list: pydicom gives one value as itself, several as a MultiValue."""
    if value is None or value == "":
        return []
    if isinstance(value, str | int | float):
        return [value]
    return list(value)


def _int_or_none(value: str) -> int | None:
    """An IS value ("12", " 12 ", "12.0") as an int; None when empty or not a whole number."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"


ALONE = r"(?<![a-z0-9])({})(?![a-z0-9])"  # a word, with _ - and spaces as separators (ep2d_diff_ADC)
LOCALISER_WORDS = re.compile(
    ALONE.format(r"loc|locali[sz]er|scout|survey|3[- ]?plane|tri-?pilot"), re.IGNORECASE
)
MAP_WORDS = re.compile(ALONE.format(r"e?adc|fa|trace|cbf|cbv|mtt|ttp|perfusion|mip|mpr|sub"), re.IGNORECASE)


def not_assessed(series: SeriesHeader) -> str | None:
    """Why the model is not fit for a series, from its header; None when it is. The model was
    trained on acquired slices of the brain: a localiser (scout) or a derived map (ADC, FA,
    perfusion, MIP...) is not one, and a negative verdict on it would mean nothing."""
    types = {t.upper() for t in series.image_type.split("\\")}
    if "LOCALIZER" in types or LOCALISER_WORDS.search(series.description):
        return "a localiser (scout) series"
    words = " ".join((series.description, *types))
    derived = MAP_WORDS.search(words)
    if derived and ("DERIVED" in types or not types - {""}):
        return f"a derived map ({derived.group(0).upper()})"
    return None


@dataclass(frozen=True)
class FileContents:
    """The images a file holds: per image its frame (0: the file is one image); for DICOM its header
    (None for other images, and for a DICOM file whose header cannot be read: scoring then says why)."""

    header: DicomHeader | None
    frames: tuple[int, ...] = (0,)


def contents_of(path: Path, relpath: str, *, key: bytes) -> FileContents | NotAnImage:
    """What a file holds to be scored, from its name or its DICOM header (not its pixels): one
    image, one per frame of a multi-frame file, or nothing (a report, a DICOMDIR, a CT...) and why.
    `key` keys the PatientID hash."""
    from training.decode import RASTER_SUFFIXES

    if PurePosixPath(relpath).suffix.lower() in RASTER_SUFFIXES:
        return FileContents(None)
    try:
        header = read_header(path, key=key)
    except (HeaderError, OSError):
        return FileContents(None)
    if isinstance(header, NotAnImage):
        return header
    return FileContents(header, tuple(range(1, header.frames + 1)) if header.frames > 1 else (0,))
