"""Find images under folders and label them by the design's folder, file-name and labels.csv rules."""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from training.decode import is_image_candidate

NEGATIVE_FOLDERS = frozenset({"no", "notumor", "no_tumor", "normal", "negative"})
POSITIVE_FOLDERS = frozenset({"yes", "tumor", "tumour", "glioma", "meningioma", "pituitary", "positive"})
LABEL_WORDS = {
    **{w: 0 for w in NEGATIVE_FOLDERS | {"0", "false", "n"}},
    **{w: 1 for w in POSITIVE_FOLDERS | {"1", "true", "y"}},
}
_NEG_PREFIX = re.compile(r"^(n|no)(?![a-z])", re.IGNORECASE)
_POS_PREFIX = re.compile(r"^(y|yes)(?![a-z])", re.IGNORECASE)
LABELS_CSV = "labels.csv"


class DatasetError(ValueError):
    """A path given for training, evaluation or scoring cannot be used at all."""


@dataclass(frozen=True)
class ImageRecord:
    """One image file found under a root: where it is and what we know about it."""

    path: Path  # absolute path on disk
    relpath: str  # POSIX path relative to the root it was found under
    label: int | None  # 1 tumour, 0 no tumour, None unknown
    source: str  # the root's folder name plus the first folder under it (per-source counts)
    category: str  # the folder the label came from (glioma, no, ...), or "" when unknown
    subject: str = ""  # whose scan it is (labels.csv's subject column), "" when unknown; training
    # keeps one subject's images on one side of every split and stores or logs no subject


@dataclass
class Discovery:
    """What a walk found: images, and files skipped because they are not images."""

    images: list[ImageRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Counts per label, per source and per category, for reports."""
        names = {0: "negative", 1: "positive", None: "unlabelled"}
        return {
            "by_label": dict(Counter(names[r.label] for r in self.images)),
            "by_source": dict(Counter(r.source for r in self.images)),
            "by_category": dict(Counter(r.category or "unlabelled" for r in self.images)),
        }


def label_from_path(relpath: PurePosixPath) -> tuple[int | None, str]:
    """Label from the nearest labelled parent folder, else a seed-style N.../Y... file prefix."""
    for parent in reversed(relpath.parts[:-1]):
        name = parent.lower()
        if name in NEGATIVE_FOLDERS:
            return 0, name
        if name in POSITIVE_FOLDERS:
            return 1, name
    stem = relpath.name
    if _NEG_PREFIX.match(stem):
        return 0, "N-prefix"
    if _POS_PREFIX.match(stem):
        return 1, "Y-prefix"
    return None, ""


def read_labels_csv(path: Path) -> dict[str, tuple[int | None, str]]:
    """Read a labels.csv whose paths are relative to the file's folder: path -> (label, subject).
    Columns: path, label and, optionally, subject (a patient or scan identifier, used only to keep
    its images together when splitting); a header row names them (`group` and `patient` are read
    as subject). A label word that is not known leaves the image's label to its folder."""
    rows: dict[str, tuple[int | None, str]] = {}
    columns = {"path": 0, "label": 1, "subject": 2}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for number, row in enumerate(csv.reader(fh)):
            cells = [cell.strip() for cell in row]
            if number == 0 and cells and cells[0].lower() == "path":
                names = {"group": "subject", "patient": "subject"}
                columns = {names.get(c.lower(), c.lower()): i for i, c in enumerate(cells)}
                continue
            at = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
            if not at.get("path"):
                continue
            label = LABEL_WORDS.get(at.get("label", "").lower())
            subject = at.get("subject", "")
            if label is not None or subject:
                rows[PurePosixPath(at["path"]).as_posix()] = (label, subject)
    return rows


def storable_relpath(relpath: str) -> str:
    """A relative path as the database keeps and people see it: itself when it is valid UTF-8; else
    (an old export's Latin-1 name, say) with backslashes doubled and each undecodable byte written
    \\xNN, which `file_at` reverses."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system encoding kept as surrogates
        return os.fsencode(relpath.replace("\\", "\\\\")).decode("utf-8", "backslashreplace")
    return relpath


def file_at(root: Path, relpath: str) -> Path:
    """The file a stored relative path names: as written, or, when no such file exists, the name
    `storable_relpath` escaped."""
    path = root / relpath
    if "\\" not in relpath or path.exists():
        return path
    try:
        raw = relpath.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError):
        return path
    return root / os.fsdecode(raw)


def resolves_inside(folder: Path, roots: Iterable[Path]) -> bool:
    """Whether `folder` resolves (links included) inside one of `roots`: a job's folder is checked
    again whenever its files are read, not only at submission, in case it was swapped for a link."""
    resolved = folder.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under root, streaming: a folder of a million files is never listed whole.

    Symbolic links are not followed, so a link cannot lead a walk outside the root.
    """
    subdirs: list[str] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path)
    for sub in sorted(subdirs):
        yield from iter_files(Path(sub))


def iter_records(root: Path, *, on_skip: Callable[[str], object] | None = None) -> Iterator[ImageRecord]:
    """Stream the images under one root (a folder or a single file) with labels and sources.

    on_skip receives the relative path of each file that is not an image (labels.csv excepted).
    """
    root = root.resolve()
    if root.is_file():
        rel = PurePosixPath(root.name)
        label, category = label_from_path(PurePosixPath(root.parent.name) / root.name)
        yield ImageRecord(root, rel.as_posix(), label, root.parent.name, category)
        return
    csv_labels = read_labels_csv(root / LABELS_CSV) if (root / LABELS_CSV).is_file() else {}
    for path in iter_files(root):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if not is_image_candidate(path):
            if rel.as_posix() != LABELS_CSV and on_skip is not None:
                on_skip(rel.as_posix())
            continue
        label, category = label_from_path(PurePosixPath(root.name) / rel)  # the root may be "yes/"
        listed_label, subject = csv_labels.get(rel.as_posix(), (None, ""))
        if listed_label is not None:
            label, category = listed_label, "labels.csv"
        source = "/".join((root.name, *rel.parts[:1])) if len(rel.parts) > 1 else root.name
        yield ImageRecord(path, rel.as_posix(), label, source, category, subject)


def discover(roots: Iterable[Path]) -> Discovery:
    """Walk every root; raise DatasetError for a missing path or when no image is found at all."""
    found = Discovery()
    for root in roots:
        if not root.exists():
            raise DatasetError(f"path does not exist: {root}")
        found.images.extend(iter_records(root, on_skip=found.skipped.append))
    found.images.sort(key=lambda r: (r.source, r.relpath))  # stable order: reproducible splits
    if not found.images:
        names = ", ".join(str(r) for r in roots)
        raise DatasetError(f"no images found under {names} (looked for {_suffix_list()})")
    return found


def _suffix_list() -> str:
    from training.decode import IMAGE_SUFFIXES

    return ", ".join(sorted(IMAGE_SUFFIXES)) + ", or DICOM files without a suffix"
