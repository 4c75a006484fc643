"""Safe extraction of uploaded .zip / .tar.gz / .tgz archives.

Every member is checked before a byte of it is written: no absolute names, no `..`, no links, no
devices or other special files; the file count, the total uncompressed size and the ratio of that
size to the archive's are bounded while extracting (member headers can lie, the bytes cannot).
Files are created with O_EXCL under a fresh folder that holds no links, so nothing can be written
outside it. Only what a job reads is written: images (by suffix, or a DICOM preamble for files
without one) and labels.csv; other members are skipped unwritten. Any violation, and any error
the file system raises, becomes an ArchiveError, and the caller removes the partial folder.
"""

from __future__ import annotations

import gzip
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from training.dataset import LABELS_CSV
from training.decode import has_dicom_preamble, image_by_name

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
CHUNK = 1024 * 1024
MAX_DEPTH = 32  # folders deep: a study tree is under ten; a thousand-deep zip is an attack
MAX_PATH_BYTES = 1024  # a member's path; file systems refuse 255 bytes a name, 4096 a path
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(Exception):
    """An archive refused: status 400 (malformed or unsafe) or 413 (over a limit), a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Limits:
    """Bounds on what one archive may unpack to, and the running totals checked against them."""

    max_files: int
    max_bytes: int
    max_ratio: float
    archive_bytes: int
    files: int = field(default=0)
    written: int = field(default=0)
    skipped: int = field(default=0)  # members that are neither images nor labels.csv, not written

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise ArchiveError(413, f"the archive holds more than {self.max_files:,} files")

    def add_bytes(self, count: int, name: str) -> None:
        self.written += count
        if self.written > self.max_bytes:
            raise ArchiveError(413, f"the archive unpacks to more than {self.max_bytes:,} bytes")
        if self.written > self.max_ratio * max(self.archive_bytes, 1):
            raise ArchiveError(
                413,
                f"the archive unpacks to more than {self.max_ratio:g} times its own size "
                f"(at {name}): refused as a possible decompression bomb",
            )


def archive_kind(filename: str) -> str | None:
    """'zip' or 'tar.gz' from the file name, or None for anything else."""
    lower = filename.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return None


def member_path(name: str) -> PurePosixPath | None:
    """The member's path relative to the extraction folder; None for the folder itself.

    Raises ArchiveError for an absolute name or one that climbs out with `..`.
    """
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ArchiveError(400, f"the archive member {name!r} has an absolute path")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(400, f"the archive member {name!r} points outside the archive ('..')")
    if len(parts) > MAX_DEPTH or len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise ArchiveError(
            400,
            f"the archive member {shown!r} is nested deeper than {MAX_DEPTH} folders "
            f"or its path is longer than {MAX_PATH_BYTES} bytes",
        )
    return PurePosixPath(*parts) if parts else None


def _wanted(rel: PurePosixPath, source: IO[bytes]) -> bytes | None:
    """The member's first bytes when a job would read it (an image or labels.csv), else None.
    A file without a suffix is an image only if it starts with a DICOM preamble."""
    by_name = image_by_name(rel.name)
    if by_name or rel.as_posix() == LABELS_CSV:
        return b""
    if by_name is False:
        return None
    head = source.read(132)
    return head if has_dicom_preamble(head) else None


def _target(dest: Path, rel: PurePosixPath) -> Path:
    target = dest.joinpath(*rel.parts)
    if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces: dest holds no links
        raise ArchiveError(400, f"the archive member {rel} points outside the archive")
    return target


def _copy(source: IO[bytes], target: Path, rel: PurePosixPath, limits: Limits) -> None:
    head = _wanted(rel, source)
    if head is None:
        limits.skipped += 1
        return
    limits.add_file(str(rel))
    limits.add_bytes(len(head), str(rel))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("xb") as out:
            out.write(head)
            while chunk := source.read(CHUNK):
                limits.add_bytes(len(chunk), str(rel))
                out.write(chunk)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        raise ArchiveError(400, f"the archive member {rel} appears twice or clashes with a folder") from exc


def _zip_members(archive: zipfile.ZipFile, limits: Limits) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = archive.infolist()
    if sum(1 for info in infos if not info.is_dir()) > limits.max_files:
        raise ArchiveError(413, f"the archive holds more than {limits.max_files:,} files")
    if sum(info.file_size for info in infos) > limits.max_bytes:
        raise ArchiveError(413, f"the archive unpacks to more than {limits.max_bytes:,} bytes")
    for info in infos:
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(400, f"the archive member {info.filename!r} is a link: links are refused")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix type recorded
            raise ArchiveError(400, f"the archive member {info.filename!r} is not a regular file")
        rel = member_path(info.filename)
        if rel is not None:
            yield info, rel


def _extract_zip(path: Path, dest: Path, limits: Limits) -> None:
    with zipfile.ZipFile(path) as archive:
        for info, rel in _zip_members(archive, limits):
            target = _target(dest, rel)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with archive.open(info) as source:
                _copy(source, target, rel, limits)


def _extract_tar(path: Path, dest: Path, limits: Limits) -> None:
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if member.issym() or member.islnk():
                raise ArchiveError(400, f"the archive member {member.name!r} is a link: links are refused")
            if not (member.isreg() or member.isdir()):
                raise ArchiveError(400, f"the archive member {member.name!r} is a device or special file")
            rel = member_path(member.name)
            if rel is None:
                continue
            target = _target(dest, rel)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            source = archive.extractfile(member)
            if source is None:
                raise ArchiveError(400, f"the archive member {member.name!r} cannot be read")
            with source:
                _copy(source, target, rel, limits)


def extract_archive(path: Path, kind: str, dest: Path, limits: Limits) -> int:
    """Unpack the archive at `path` into the new folder `dest`; returns the number of files."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        if kind == "zip":
            _extract_zip(path, dest, limits)
        else:
            _extract_tar(path, dest, limits)
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(400, f"the archive is corrupt or truncated ({exc})") from exc
    except NotImplementedError as exc:  # zipfile: a compression method it cannot read
        raise ArchiveError(400, f"the archive uses an unsupported compression method ({exc})") from exc
    except OSError as exc:  # a name the file system refuses, a full disk
        raise ArchiveError(400, f"the archive cannot be unpacked here: {exc.strerror or exc}") from exc
    if limits.files == 0:
        what = f" ({limits.skipped} other file(s) skipped)" if limits.skipped else ""
        raise ArchiveError(400, f"the archive holds no images{what}")
    return limits.files
