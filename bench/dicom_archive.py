"""Build the realistic DICOM test archive issue 36 names ("made by a script in the repo from real
slices"): what a PACS export of lgg-flair's scans looks like, so study-aware screening is tested on
the objects a hospital sends rather than on JPEGs or hand-made single files.

    python bench/dicom_archive.py ../shared/data/lgg-flair /tmp/archive --patients 3 --seed 0

Each patient's scan (`TCGA_<site>_<patient>_<date>_<slice>.jpg`) becomes one study with one axial
FLAIR series: an MR Image Storage file per slice, in slice order, with the headers a scanner writes
(UIDs, a synthetic name and birth date, FLAIR timings, geometry, one of a few fake sites' scanners)
and 8-bit MONOCHROME2 pixels that are the JPEG's grey values. In every such study some instances
are stored in each compressed transfer syntax brainscan must read (JPEG Baseline, JPEG Lossless
SV1, JPEG-LS, JPEG 2000 lossless, RLE, deflated), the rest uncompressed. The second patient's
series is one Enhanced MR multi-frame file instead; the first study also holds a Basic Text SR
report and a Grayscale Softcopy Presentation State. A DICOMDIR indexes every object and labels.csv
labels the image files for `training.dataset` (1 from `yes/`, 0 from `no/`, the multi-frame file 1
when any of its slices is; subject = patient ID).

File IDs in a DICOMDIR allow 8 characters of A-Z, 0-9 and _ per folder or file name, hence no
suffix and a short patient key: OUT/<site>_<patient>/<study date>/<series number>_<kind>/<file>,
e.g. OUT/CS_4941/19960909/3_FLAIR/IM0011 (slice 11), .../3_FLAIR/MF0001 (the multi-frame file),
.../90_SR/SR0001, .../91_PR/PR0001. UIDs come from the seed and the patient, not the patient's
place in the list, so a rerun writes the same bytes and a smaller build is a part of a larger one.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package
from dicomdir import write_dicomdir

COMPRESSED = (
    uid.JPEGBaseline8Bit,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.RLELossless,
    uid.DeflatedExplicitVRLittleEndian,
)
SLICES_PER_COMPRESSED = 12  # each compressed syntax once per 12 slices: about half a series
FLAIR_SERIES, REPORT_SERIES, STATE_SERIES = 3, 90, 91
FIELD_OF_VIEW = 220.0  # mm, an adult head
SLICE_THICKNESS, SLICE_SPACING = 5.0, 6.0  # mm: 2-D FLAIR slices with a 1 mm gap
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
JPEG_QUALITY = 90  # a PACS's usual lossy setting
SOURCE_NAME = re.compile(r"^TCGA_([A-Z0-9]+)_([A-Z0-9]+)_(\d{8})_(\d+)$")


@dataclass(frozen=True)
class Scanner:
    """One fake site's MR scanner."""

    manufacturer: str
    model: str
    institution: str
    station: str
    tesla: float
    sequence_name: str


SCANNERS = (
    Scanner("SIEMENS", "Avanto", "Riverside General Hospital", "RGHMR01", 1.5, "*tir2d1_16"),
    Scanner("GE MEDICAL SYSTEMS", "SIGNA HDxt", "Lakeside Medical Center", "LMCMR2", 1.5, "FLAIR"),
    Scanner("Philips Medical Systems", "Ingenia", "St Elsewhere Clinic", "STEMR3", 3.0, "IR_TSE"),
)
SCANNER_BY_SITE = {"CS": 0, "DU": 1, "EZ": 2, "FG": 2, "HT": 0}  # the TCGA sites in lgg-flair
NAMES = (("DOE", "JANE", "F"), ("ROE", "JOHN", "M"), ("MILLER", "ANNA", "F"), ("GARCIA", "LUIS", "M"))


@dataclass(frozen=True)
class SourceSlice:
    path: Path
    number: int
    label: int  # 1 from yes/, 0 from no/


@dataclass(frozen=True)
class Scan:
    """One patient's scan: the source slices of one file-name prefix, in slice order."""

    site: str
    patient: str
    date: str
    slices: tuple[SourceSlice, ...]

    @property
    def patient_id(self) -> str:
        return f"TCGA_{self.site}_{self.patient}"

    @property
    def scanner(self) -> Scanner:
        return SCANNERS[SCANNER_BY_SITE.get(self.site, 0)]


@dataclass
class ArchiveSummary:
    """What build_archive wrote: DICOM files per transfer syntax name, DICOMDIR and labels.csv aside."""

    studies: int = 0
    instances: int = 0  # image files (the multi-frame file counts once)
    frames: int = 0
    non_image_files: int = 0  # the SR and the presentation state
    files_by_syntax: Counter[str] = field(default_factory=Counter)  # every DICOM file but the DICOMDIR
    slice_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # single-frame sizes


@dataclass
class Written:
    """One file written: its path under the archive, its header (no pixel data), its frames' labels."""

    relpath: str
    header: Dataset
    labels: tuple[int, ...] = ()  # empty for the SR and the presentation state


def find_scans(src: Path) -> list[Scan]:
    """Every patient's scan under src/yes and src/no, sorted by file-name prefix."""
    by_prefix: dict[tuple[str, ...], list[SourceSlice]] = defaultdict(list)
    for label, folder in ((1, "yes"), (0, "no")):
        for path in sorted((src / folder).glob("*.jpg")):
            if match := SOURCE_NAME.match(path.stem):
                by_prefix[match.groups()[:3]].append(SourceSlice(path, int(match[4]), label))
    return [
        Scan(site, patient, date, tuple(sorted(slices, key=lambda s: s.number)))
        for (site, patient, date), slices in sorted(by_prefix.items())
    ]


def build_archive(
    src: Path, out: Path, *, patients: int | None = None, seed: int = 0, compressed: bool = True
) -> ArchiveSummary:
    """Write the archive of the first `patients` scans under src (all by default) into an empty out;
    compressed=False: every slice uncompressed (Explicit VR Little Endian), as many PACS export."""
    if patients is not None and patients < 1:
        raise ValueError(f"patients must be at least 1, not {patients}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: the archive is written into an empty folder")
    scans = find_scans(src)[:patients]
    if not scans:
        raise FileNotFoundError(f"no TCGA_*.jpg slices under {src}/yes or {src}/no")
    written: list[Written] = []
    for index, scan in enumerate(scans):
        study = study_header(scan, seed=seed)
        if index == 1:  # one series as a single Enhanced MR file, as newer scanners send it
            written.append(_save(enhanced_series(study, scan, seed=seed), out, "MF0001", scan.slices))
            continue
        series = [
            _save(ds, out, f"IM{s.number:04d}", (s,))
            for ds, s in flair_series(study, scan, seed=seed, compressed=compressed)
        ]
        written += series
        if index == 0:
            images = [w.header for w in series]
            written.append(_save(text_report(study, images, seed=seed), out, "SR0001"))
            written.append(_save(presentation_state(study, images, seed=seed), out, "PR0001"))
    write_dicomdir(out, [(w.relpath, w.header) for w in written], file_set_uid=_uid(seed, "file set"))
    write_labels(out, written)
    return _summary(out, written, studies=len(scans))


def _summary(out: Path, written: list[Written], *, studies: int) -> ArchiveSummary:
    summary = ArchiveSummary(studies=studies)
    for item in written:
        name = item.header.file_meta.TransferSyntaxUID.name
        summary.files_by_syntax[name] += 1
        if len(item.labels) == 1:
            summary.slice_bytes[name].append((out / item.relpath).stat().st_size)
        summary.instances += bool(item.labels)
        summary.frames += len(item.labels)
        summary.non_image_files += not item.labels
    return summary


def _uid(seed: int, *parts: object) -> uid.UID:
    return uid.generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def _rng(seed: int, scan: Scan, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *scan.patient_id.encode()])


def study_header(scan: Scan, *, seed: int) -> Dataset:
    """The patient, study and equipment attributes every object of the scan's study shares."""
    rng = _rng(seed, scan, 0)
    family, given, sex = NAMES[int(rng.integers(len(NAMES)))]
    age, month, day = int(rng.integers(25, 75)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    scanner, ds = scan.scanner, Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientSex = f"{family}^{given}", scan.patient_id, sex
    ds.PatientBirthDate, ds.PatientAge = f"{int(scan.date[:4]) - age:04d}{month:02d}{day:02d}", f"{age:03d}Y"
    ds.StudyInstanceUID = _uid(seed, scan.patient_id, "study")
    ds.StudyDate, ds.StudyTime = scan.date, f"{int(rng.integers(8, 17)):02d}{int(rng.integers(60)):02d}00"
    ds.StudyID, ds.AccessionNumber = "1", f"A{int(rng.integers(10**7, 10**8))}"
    ds.StudyDescription, ds.ReferringPhysicianName = "MR BRAIN WITHOUT CONTRAST", ""
    ds.Manufacturer, ds.ManufacturerModelName = scanner.manufacturer, scanner.model
    ds.InstitutionName, ds.StationName = scanner.institution, scanner.station
    return ds


def _mr_series(study: Dataset, scan: Scan, *, seed: int) -> Dataset:
    """What the FLAIR series' images share, single-frame or enhanced."""
    ds = deepcopy(study)
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", FLAIR_SERIES, "AX FLAIR"
    ds.SeriesInstanceUID = _uid(seed, scan.patient_id, "series", FLAIR_SERIES)
    ds.FrameOfReferenceUID = _uid(seed, scan.patient_id, "frame of reference")
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = scan.date
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = ds.StudyTime[:2] + "1500"
    ds.BodyPartExamined, ds.PatientPosition = "HEAD", "HFS"
    ds.MagneticFieldStrength = scan.scanner.tesla
    ds.file_meta = FileMetaDataset()
    return ds


def flair_series(
    study: Dataset, scan: Scan, *, seed: int, compressed: bool = True
) -> Iterator[tuple[Dataset, SourceSlice]]:
    """One single-frame MR image per slice, each in the transfer syntax the plan gives it (without
    `compressed`, every one uncompressed)."""
    series = _mr_series(study, scan, seed=seed)
    series.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    series.ScanningSequence, series.SequenceVariant = ["SE", "IR"], ["SK", "SP", "MP"]
    series.ScanOptions, series.SequenceName = "IR", scan.scanner.sequence_name
    series.MRAcquisitionType, series.ImagedNucleus = "2D", "1H"
    series.RepetitionTime, series.EchoTime, series.InversionTime = 9000.0, 89.0, 2500.0  # ms: a FLAIR
    series.FlipAngle, series.EchoTrainLength, series.NumberOfAverages = 150.0, 16, 1.0
    series.ImagingFrequency = round(42.577 * float(series.MagneticFieldStrength), 3)  # MHz, 1H
    series.SliceThickness, series.SpacingBetweenSlices = SLICE_THICKNESS, SLICE_SPACING
    series.ImageOrientationPatient = AXIAL
    syntaxes = _syntax_plan(len(scan.slices), rng=_rng(seed, scan, 1), compressed=compressed)
    for source, syntax in zip(scan.slices, syntaxes, strict=True):
        ds = deepcopy(series)
        ds.SOPClassUID, ds.SOPInstanceUID = uid.MRImageStorage, _uid(seed, scan.patient_id, source.number)
        ds.InstanceNumber = source.number
        _set_pixels(ds, _grey(source.path), syntax)
        ds.PixelSpacing = [FIELD_OF_VIEW / ds.Columns] * 2
        ds.ImagePositionPatient = _position(ds.Columns, source.number)
        ds.SliceLocation = ds.ImagePositionPatient[2]
        yield ds, source


def _syntax_plan(slices: int, *, rng: np.random.Generator, compressed: bool = True) -> list[uid.UID]:
    """Each compressed syntax for at least one slice, at seeded places; the rest uncompressed."""
    per_syntax = max(1, slices // SLICES_PER_COMPRESSED) if compressed else 0
    plan = [s for s in COMPRESSED for _ in range(per_syntax)][:slices]
    plan += [uid.ExplicitVRLittleEndian] * (slices - len(plan))
    return [plan[i] for i in rng.permutation(slices)]


def _position(columns: int, number: int) -> list[float]:
    """The first pixel's centre in patient coordinates (mm) for slice `number`, slices foot to head."""
    corner = (FIELD_OF_VIEW / columns - FIELD_OF_VIEW) / 2
    return [corner, corner, -60.0 + (number - 1) * SLICE_SPACING]


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _set_pixels(ds: Dataset, pixels: np.ndarray, syntax: uid.UID) -> None:
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    if syntax == uid.RLELossless:  # the one pydicom encodes itself
        ds.compress(syntax, encoding_plugin="pydicom", generate_instance_uid=False)
    elif syntax == uid.JPEGBaseline8Bit:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        _encapsulate(ds, buffer.getvalue(), syntax)
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.LossyImageCompressionRatio = round(pixels.size / len(buffer.getvalue()), 2)
    elif syntax.is_encapsulated:  # pydicom encodes these only with pylibjpeg's plugins: GDCM does
        _encapsulate(ds, gdcm_frame(pixels, syntax), syntax)
    else:  # Explicit VR Little Endian, or deflated as a whole when saved
        ds.file_meta.TransferSyntaxUID = syntax


def _encapsulate(ds: Dataset, frame: bytes, syntax: uid.UID) -> None:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax


def gdcm_frame(pixels: np.ndarray, syntax: uid.UID, *, stored: int = 8) -> bytes:
    """One grey frame (uint8, or uint16 holding `stored` bits) encoded by GDCM, the way pydicom's
    GDCM plugin encodes RLE."""
    import gdcm

    writer = gdcm.ImageWriter()  # owns the image, so it must outlive it
    image = writer.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((pixels.shape[1], pixels.shape[0], 1))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2)
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ImplicitVRLittleEndian))
    bits = pixels.dtype.itemsize * 8
    image.SetPixelFormat(gdcm.PixelFormat(1, bits, stored, stored - 1, 0))
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetByteStringValue(pixels.tobytes())
    image.SetDataElement(element)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(syntax))))
    change.SetInput(image)
    if not change.Change():
        raise RuntimeError(f"GDCM could not encode {syntax.name}")
    fragments = change.GetOutput().GetDataElement().GetSequenceOfFragments()
    return b"".join(
        fragments.GetFragment(i).GetByteValue().GetBuffer().encode("utf-8", "surrogateescape")
        for i in range(fragments.GetNumberOfFragments())
    )


def enhanced_series(study: Dataset, scan: Scan, *, seed: int) -> Dataset:
    """The whole FLAIR series as one Enhanced MR Image, a frame per slice in slice order."""
    ds = _mr_series(study, scan, seed=seed)
    ds.SOPClassUID, ds.SOPInstanceUID = uid.EnhancedMRImageStorage, _uid(seed, scan.patient_id, "enhanced")
    ds.ImageType, ds.InstanceNumber = ["ORIGINAL", "PRIMARY", "M", "NONE"], 1
    ds.PixelPresentation, ds.VolumetricProperties = "MONOCHROME", "VOLUME"
    ds.VolumeBasedCalculationTechnique, ds.EchoTrainLength = "NONE", 16
    ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "FLUID_ATTENUATED"
    ds.ContentQualification, ds.BurnedInAnnotation, ds.LossyImageCompression = "PRODUCT", "NO", "00"
    ds.PresentationLUTShape, ds.PulseSequenceName, ds.EchoPulseSequence = "IDENTITY", "FLAIR", "SPIN"
    ds.MRAcquisitionType, ds.AcquisitionDateTime = "2D", scan.date + ds.AcquisitionTime
    ds.set_pixel_data(
        np.stack([_grey(s.path) for s in scan.slices]), "MONOCHROME2", 8, generate_instance_uid=False
    )
    _add_functional_groups(ds, scan, organisation=_uid(seed, scan.patient_id, "dimensions"))
    return ds


def _add_functional_groups(ds: Dataset, scan: Scan, *, organisation: str) -> None:
    """What the frames share (spacing, orientation, timings) and what each has (order, position)."""
    spacing = _item(PixelSpacing=[FIELD_OF_VIEW / ds.Columns] * 2, SliceThickness=SLICE_THICKNESS)
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PixelMeasuresSequence=[spacing],
            PlaneOrientationSequence=[_item(ImageOrientationPatient=AXIAL)],
            MRTimingAndRelatedParametersSequence=[_item(RepetitionTime=9000.0, FlipAngle=150.0)],
            MREchoSequence=[_item(EffectiveEchoTime=89.0)],
            MRModifierSequence=[_item(InversionRecovery="YES", InversionTimes=[2500.0])],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = []
    for position, source in enumerate(scan.slices, 1):
        content = _item(StackID="1", InStackPositionNumber=position, DimensionIndexValues=[1, position])
        content.FrameAcquisitionNumber = source.number  # the source slice number
        plane = _item(ImagePositionPatient=_position(ds.Columns, source.number))
        ds.PerFrameFunctionalGroupsSequence.append(
            _item(FrameContentSequence=[content], PlanePositionSequence=[plane])
        )
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organisation)]
    ds.DimensionIndexSequence = [  # frames in order of stack, then position in the stack
        _item(
            DimensionIndexPointer=pointer,
            FunctionalGroupPointer=0x00209111,
            DimensionOrganizationUID=organisation,
        )
        for pointer in (0x00209056, 0x00209057)  # Stack ID, In-Stack Position Number
    ]


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _about_images(study: Dataset, *, seed: int, series: int, modality: str) -> Dataset:
    """A new series' first object in the study: an SR or a presentation state."""
    ds = deepcopy(study)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series, 1
    ds.SeriesInstanceUID = _uid(seed, ds.PatientID, "series", series)
    ds.SOPInstanceUID = _uid(seed, ds.PatientID, modality)
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime[:2] + "4500"
    ds.file_meta = FileMetaDataset()
    return ds


def _references(images: list[Dataset]) -> list[Dataset]:
    return [
        _item(ReferencedSOPClassUID=i.SOPClassUID, ReferencedSOPInstanceUID=i.SOPInstanceUID) for i in images
    ]


def text_report(study: Dataset, images: list[Dataset], *, seed: int) -> Dataset:
    """A Basic Text SR (TID 2000): a short 'no acute findings' report on the FLAIR series."""
    ds = _about_images(study, seed=seed, series=REPORT_SERIES, modality="SR")
    ds.SOPClassUID, ds.SeriesDescription = uid.BasicTextSRStorage, "Radiology report"
    series = _item(SeriesInstanceUID=images[0].SeriesInstanceUID, ReferencedSOPSequence=_references(images))
    evidence = _item(StudyInstanceUID=ds.StudyInstanceUID, ReferencedSeriesSequence=[series])
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    ds.ReferencedPerformedProcedureStepSequence, ds.PerformedProcedureCodeSequence = [], []
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContentTemplateSequence = [_item(MappingResource="DCMR", TemplateIdentifier="2000")]
    ds.ContentSequence = [
        _section(
            ("121070", "Findings"), ("121071", "Finding"), "Axial FLAIR. No acute intracranial haemorrhage."
        ),
        _section(("121072", "Impressions"), ("121073", "Impression"), "No acute findings."),
    ]
    return ds


def _section(heading: tuple[str, str], entry: tuple[str, str], text: str) -> Dataset:
    line = _item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue=text)
    line.ConceptNameCodeSequence = [_code(entry[0], "DCM", entry[1])]
    section = _item(RelationshipType="CONTAINS", ValueType="CONTAINER", ContinuityOfContent="SEPARATE")
    section.ConceptNameCodeSequence = [_code(heading[0], "DCM", heading[1])]
    section.ContentSequence = [line]
    return section


def presentation_state(study: Dataset, images: list[Dataset], *, seed: int) -> Dataset:
    """A Grayscale Softcopy Presentation State: a full-range window over the FLAIR series."""
    ds = _about_images(study, seed=seed, series=STATE_SERIES, modality="PR")
    series = _item(SeriesInstanceUID=images[0].SeriesInstanceUID, ReferencedImageSequence=_references(images))
    ds.ReferencedSeriesSequence = [series]
    ds.SOPClassUID, ds.SeriesDescription = uid.GrayscaleSoftcopyPresentationStateStorage, "FLAIR display"
    ds.ContentLabel, ds.ContentDescription = "FLAIR_WINDOW", "Reading window"
    ds.ContentCreatorName = "READER^A"
    ds.PresentationCreationDate, ds.PresentationCreationTime = ds.ContentDate, ds.ContentTime
    corner = [int(images[0].Columns), int(images[0].Rows)]
    ds.DisplayedAreaSelectionSequence = [
        _item(
            DisplayedAreaTopLeftHandCorner=[1, 1],
            DisplayedAreaBottomRightHandCorner=corner,
            PresentationSizeMode="SCALE TO FIT",
            PresentationPixelSpacing=images[0].PixelSpacing,
        )
    ]
    ds.SoftcopyVOILUTSequence = [_item(WindowCenter=127.5, WindowWidth=256.0)]
    ds.PresentationLUTShape, ds.ImageRotation, ds.ImageHorizontalFlip = "IDENTITY", 0, "N"
    return ds


def _save(ds: Dataset, out: Path, name: str, sources: tuple[SourceSlice, ...] = ()) -> Written:
    """Write one object into its series folder, keeping its header (not its pixels) for the DICOMDIR."""
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    kind = "FLAIR" if ds.Modality == "MR" else ds.Modality
    relpath = f"{ds.PatientID.removeprefix('TCGA_')}/{ds.StudyDate}/{ds.SeriesNumber}_{kind}/{name}"
    (out / relpath).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out / relpath, enforce_file_format=True)
    if "PixelData" in ds:
        del ds.PixelData
    return Written(relpath, ds, tuple(s.label for s in sources))


def write_labels(out: Path, written: list[Written]) -> None:
    """OUT/labels.csv as training.dataset reads it: path, label, subject per image file."""
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(["path", "label", "subject"])
        rows.writerows([w.relpath, max(w.labels), w.header.PatientID] for w in written if w.labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("src", type=Path, help="lgg-flair: a folder with yes/ and no/ TCGA_*.jpg slices")
    parser.add_argument("out", type=Path, help="an empty or new folder for the archive")
    parser.add_argument("--patients", type=int, default=None, help="the first N patients only")
    parser.add_argument("--seed", type=int, default=0, help="UIDs, names and syntax placement follow it")
    parser.add_argument("--uncompressed", action="store_true", help="every slice uncompressed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = build_archive(
            args.src, args.out, patients=args.patients, seed=args.seed, compressed=not args.uncompressed
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(f"{summary.studies} studies, {summary.instances} image files ({summary.frames} frames), ", end="")
    print(f"{summary.non_image_files} non-image files in {seconds:.1f} s: {args.out}")
    print("files per transfer syntax; single-frame mean size against uncompressed (Explicit VR LE):")
    baseline = float(np.mean(summary.slice_bytes[uid.ExplicitVRLittleEndian.name]))
    for name, count in sorted(summary.files_by_syntax.items()):
        size = float(np.mean(sizes)) if (sizes := summary.slice_bytes.get(name)) else float("nan")
        print(f"  {count:5d}  {size / 1024:6.1f} KiB  {size / baseline:4.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
