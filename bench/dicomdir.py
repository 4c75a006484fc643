"""A DICOMDIR over files already written, for bench/dicom_archive.py: PATIENT / STUDY / SERIES /
leaf records that keep each file's own path, in the order the files were written.

pydicom's FileSet renames files to its own PT000000/ST000000/... IDs when it writes, so the records
are laid out here; their offsets come from the encoded lengths, as FileSet does it.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

LEAF_RECORD = {"MR": "IMAGE", "SR": "SR DOCUMENT", "PR": "PRESENTATION"}
RECORD_KEYS = {  # a DICOMDIR record's attributes, copied from the object it indexes
    "PATIENT": "PatientName PatientID",
    "STUDY": "StudyDate StudyTime StudyDescription StudyInstanceUID StudyID AccessionNumber",
    "SERIES": "Modality SeriesInstanceUID SeriesNumber",
    "IMAGE": "InstanceNumber NumberOfFrames",
    "SR DOCUMENT": "InstanceNumber CompletionFlag VerificationFlag ContentDate ContentTime "
    "ConceptNameCodeSequence",
    "PRESENTATION": "PresentationCreationDate PresentationCreationTime InstanceNumber ContentLabel "
    "ContentDescription ContentCreatorName ReferencedSeriesSequence",
}


@dataclass
class _Node:
    record: Dataset
    children: dict[str, _Node] = field(default_factory=dict)
    offset: int = 0  # of its item in the DICOMDIR file


def write_dicomdir(out: Path, files: Sequence[tuple[str, Dataset]], *, file_set_uid: uid.UID) -> None:
    """OUT/DICOMDIR indexing `files`: (path under out with / separators, header) of each object."""
    root = _record_tree(files)
    nodes = list(_below(root))
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = uid.MediaStorageDirectoryStorage
    dicomdir.file_meta.MediaStorageSOPInstanceUID = file_set_uid
    dicomdir.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    dicomdir.FileSetID, dicomdir.FileSetConsistencyFlag = "BRAINSCAN", 0
    dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.DirectoryRecordSequence = [n.record for n in nodes]  # the last element: the records end the file
    sizes = [8 + len(_encoded(n.record)) for n in nodes]  # 8: an item's tag and length
    offset = len(_encoded(dicomdir, whole_file=True)) - sum(sizes)
    for node, size in zip(nodes, sizes, strict=True):
        node.offset, offset = offset, offset + size
    for node in [root, *nodes]:  # offsets are the same length whatever their value: the sizes hold
        children = list(node.children.values())
        for child, after in itertools.pairwise(children):
            child.record.OffsetOfTheNextDirectoryRecord = after.offset
        if children and node is not root:
            node.record.OffsetOfReferencedLowerLevelDirectoryEntity = children[0].offset
    patients = list(root.children.values())
    dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = patients[0].offset
    dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = patients[-1].offset
    dicomdir.save_as(out / "DICOMDIR", enforce_file_format=True)


def _record_tree(files: Sequence[tuple[str, Dataset]]) -> _Node:
    root = _Node(Dataset())
    for relpath, ds in files:
        node = root
        keys = (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
        for kind, key in zip(("PATIENT", "STUDY", "SERIES"), keys, strict=True):
            if key not in node.children:
                node.children[key] = _Node(_record(kind, ds))
            node = node.children[key]
        leaf = _record(LEAF_RECORD[ds.Modality], ds)
        leaf.ReferencedFileID = relpath.split("/")
        leaf.ReferencedSOPClassUIDInFile = ds.SOPClassUID
        leaf.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID
        leaf.ReferencedTransferSyntaxUIDInFile = ds.file_meta.TransferSyntaxUID
        node.children[ds.SOPInstanceUID] = _Node(leaf)
    return root


def _record(kind: str, ds: Dataset) -> Dataset:
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.DirectoryRecordType = kind
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    for keyword in RECORD_KEYS[kind].split():
        if keyword in ds:
            record[keyword] = deepcopy(ds[keyword])
    return record


def _below(node: _Node) -> Iterator[_Node]:
    for child in node.children.values():
        yield child
        yield from _below(child)


def _encoded(ds: Dataset, *, whole_file: bool = False) -> bytes:
    if whole_file:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)  # Explicit VR Little Endian, as a DICOMDIR must be
        return buffer.getvalue()
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()
