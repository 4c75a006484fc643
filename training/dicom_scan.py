"""A DICOM file's data set in one pass over its bytes, for the files almost every archive holds.

pydicom's reader costs about 6 us an element before any value is converted (a file object read,
tell and seek per element, a hook per value): two thirds of planning a DICOM slice, and most of
what scoring one cost beyond its pixels (bench/dicom_speed.py). A Part-10 file in explicit VR
little endian (uncompressed, encapsulated in any compressed syntax, or deflated once inflated)
is laid out simply enough to walk with `struct` over bytes already in memory. `scan_dataset`
does that and hands pydicom the same raw elements its own reader would have made, in a pydicom
`Dataset`: values, character sets, sequences, LUTs and codecs stay pydicom's. Anything else
(implicit VR, big endian, no preamble, an element that is malformed or runs past the end)
returns None, and the caller reads the file with `pydicom.dcmread`, which reads it or says why
not.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PREAMBLE = 128
MAGIC = b"DICM"
META_GROUP = 0x0002
TRANSFER_SYNTAX = 0x00020010
CHARACTER_SET = 0x00080005
PIXEL_TAGS = frozenset((0x7FE00008, 0x7FE00009, 0x7FE00010))  # float, double float, pixel data
UNDEFINED = 0xFFFFFFFF
ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)
ELEMENT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
LONG_LENGTH = struct.Struct("<L")
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())  # 2 reserved bytes, 4-byte length
SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
SCAN_MAX_BYTES = 8 * 2**20  # larger files (long multi-frame) are read by pydicom, up to what it needs


class _NotSimple(Exception):
    """The bytes are not laid out as this scanner reads them: pydicom's reader takes the file."""


class _Short(_NotSimple):
    """The bytes end before the walk does: more of the file (or of its inflation) may complete it."""


Inflate = Callable[[bytes], tuple[bytes, bool]]  # deflated bytes -> (inflated, whether the stream ended)
HEAD_BYTES = 64 * 1024  # what is read first of a file whose header alone is wanted


def dataset_of(
    source: Path | bytes,
    *,
    stop_before_pixels: bool = False,
    wanted: Collection[int] | None = None,
    inflate: Inflate | None = None,
) -> Dataset | None:
    """`scan_dataset` of bytes or of a file; None when pydicom's reader must read it (or the file
    cannot be read: pydicom then says why). Of a file whose header alone is wanted, its first
    HEAD_BYTES are read, the rest only when the header runs on: planning an archive on network
    storage reads a few KB of each slice, not the slice. A file is read whole when it is at most
    SCAN_MAX_BYTES, else left to pydicom, which reads what it needs."""
    options: dict[str, Any] = {"stop_before_pixels": stop_before_pixels, "wanted": wanted, "inflate": inflate}
    if isinstance(source, bytes):
        return scan_dataset(source, **options)
    try:
        with open(source, "rb") as fp:
            size = fp.seek(0, io.SEEK_END)
            fp.seek(0)
            if stop_before_pixels and size > HEAD_BYTES:
                try:
                    return _scan(fp.read(HEAD_BYTES), complete=False, **options)
                except (_Short, *PYDICOM_ERRORS):
                    pass  # a long header (a sequence pydicom could not finish, too): read on, as below
                except _NotSimple:
                    return None
                fp.seek(0)
            if size < PREAMBLE + len(MAGIC) or size > SCAN_MAX_BYTES:
                return None
            data = fp.read()
    except OSError:
        return None
    return scan_dataset(data, **options)


def scan_dataset(
    data: bytes,
    *,
    stop_before_pixels: bool = False,
    wanted: Collection[int] | None = None,
    inflate: Inflate | None = None,
) -> Dataset | None:
    """The data set of a Part-10 file in explicit VR little endian, as pydicom.dcmread reads it
    (its file meta as `file_meta`), or None where pydicom's reader must read it. `wanted`: only
    these top-level tags are kept (as dcmread's specific_tags, and cheaper); `stop_before_pixels`
    as dcmread's. `inflate` inflates a deflated data set (raw deflate, the caller's byte limit in
    it, and whether the stream ended within it); without it a deflated file is left to pydicom."""
    try:
        return _scan(
            data, complete=True, stop_before_pixels=stop_before_pixels, wanted=wanted, inflate=inflate
        )
    except (_NotSimple, *PYDICOM_ERRORS):
        return None  # pydicom's reader reads it, or says what is wrong with it


PYDICOM_ERRORS = (ValueError, UnicodeDecodeError, struct.error, EOFError, OSError)  # of a malformed sequence


def _scan(
    data: bytes,
    *,
    complete: bool,
    stop_before_pixels: bool,
    wanted: Collection[int] | None,
    inflate: Inflate | None,
) -> Dataset | None:
    """scan_dataset's work; `complete`: `data` is the whole file. Raises _Short when the data
    set runs on past the bytes at hand (or past what `inflate` gave) and they are not all."""
    from pydicom.dataset import Dataset, FileMetaDataset

    if data[PREAMBLE : PREAMBLE + len(MAGIC)] != MAGIC:
        return None
    meta, layout = _file_meta(data)
    if meta.pos >= len(data) and not complete:
        raise _Short("the file meta runs on")
    if layout is None:
        return None
    if layout == "deflated":
        if inflate is None:
            return None
        inflated, ended = inflate(data[meta.pos :])
        walk, whole = _Walk(inflated, 0), complete and ended
    else:
        walk, whole = _Walk(data, meta.pos), complete
    start = walk.pos
    walk.read(stop_before_pixels=stop_before_pixels, wanted=wanted)
    if walk.pos >= len(walk.data) and not whole:
        raise _Short("the data set runs on past the bytes read")
    if walk.pos == start:
        return None  # nothing after the file meta: pydicom says what it makes of that
    ds = Dataset(walk.found)
    ds.file_meta = FileMetaDataset(meta.found)
    ds.set_original_encoding(False, True, walk.encoding)
    return ds


def _file_meta(data: bytes) -> tuple[_Walk, str | None]:
    """The walk over a Part-10 file's meta group (it ends where the data set starts) and the
    `_layout` of the transfer syntax it names (None without one)."""
    meta = _Walk(data, PREAMBLE + len(MAGIC))
    meta.read(only_group=META_GROUP)
    syntax = meta.found.get(TRANSFER_SYNTAX)
    return meta, _layout(bytes(syntax.value).rstrip(b" \0").decode("ascii")) if syntax else None


def inflate_up_to(deflated: bytes, limit: int) -> tuple[bytes, bool]:
    """A raw deflate stream inflated to at most `limit` bytes, and whether it ended within them."""
    stream = zlib.decompressobj(-zlib.MAX_WBITS)
    return stream.decompress(deflated, limit), stream.eof


@functools.cache
def _layout(syntax: str) -> str | None:
    """ "plain" for explicit VR little endian data sets (the uncompressed syntax and every
    encapsulated one), "deflated" for one deflated whole, None for what is left to pydicom."""
    from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    uid = UID(syntax)
    if uid == DeflatedExplicitVRLittleEndian:
        return "deflated"
    return "plain" if uid == ExplicitVRLittleEndian or (uid.is_encapsulated and not uid.is_deflated) else None


class _Walk:
    """One walk over top-level elements from `pos`: the raw elements found, keyed by tag as
    pydicom's reader keys them, where the walk stopped, and the character set met on the way."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos
        self.found: dict[Any, Any] = {}
        self.encoding: str | list[str] = "iso8859"  # pydicom's default_encoding

    def read(
        self,
        *,
        only_group: int | None = None,
        stop_before_pixels: bool = False,
        wanted: Collection[int] | None = None,
    ) -> None:
        """Walk to the end, to the first element outside `only_group`, or to the pixels."""
        from pydicom.dataelem import RawDataElement, empty_value_for_VR
        from pydicom.tag import BaseTag

        data, pos, end = self.data, self.pos, len(self.data)
        while pos < end:
            if pos + 8 > end:
                raise _Short("an element's header runs past the end")
            group, number, vr, length = ELEMENT.unpack_from(data, pos)
            tag = group << 16 | number
            if (only_group is not None and group != only_group) or (stop_before_pixels and tag in PIXEL_TAGS):
                break
            value_at = pos + 8
            if vr in LONG_VRS:
                (length,) = LONG_LENGTH.unpack_from(data, value_at)
                value_at += 4
            elif vr not in SHORT_VRS:
                raise _NotSimple(f"VR {vr!r} of ({group:04X},{number:04X})")
            if length == UNDEFINED:
                element, pos = self._undefined_length(BaseTag(tag), vr, value_at)
            else:
                pos = value_at + length
                if pos > end:
                    raise _Short("an element's value runs past the end")
                if wanted is not None and tag not in wanted and tag != CHARACTER_SET:
                    continue
                name = vr.decode("ascii")
                value = (
                    data[value_at:pos] if length else cast("bytes | None", empty_value_for_VR(name, raw=True))
                )
                element = RawDataElement(BaseTag(tag), name, length, value, value_at, False, True)
                if tag == CHARACTER_SET:
                    self.encoding = _encoding(element)
            if wanted is None or tag in wanted:
                self.found[element.tag] = element
        self.pos = pos

    def _undefined_length(self, tag: Any, vr: bytes, value_at: int) -> tuple[Any, int]:
        """An undefined-length element and where it ends: a sequence (read by pydicom, as its
        reader does), or encapsulated pixel data (its fragment items walked to the delimiter)."""
        from pydicom.dataelem import DataElement, RawDataElement
        from pydicom.filereader import read_sequence

        if vr == b"SQ":
            fp = io.BytesIO(self.data)
            fp.seek(value_at)
            sequence = read_sequence(fp, False, True, UNDEFINED, self.encoding)
            return DataElement(tag, "SQ", sequence, value_at, is_undefined_length=True), fp.tell()
        if tag not in PIXEL_TAGS or vr not in (b"OB", b"OW"):
            raise _NotSimple(f"undefined length {vr!r} of {tag}")
        data, pos = self.data, value_at
        while True:  # items (FFFE,E000) of stated length, then the delimiter (FFFE,E0DD)
            item = data[pos : pos + 4]
            if len(item) < 4 or pos + 8 > len(data):
                raise _Short("encapsulated pixel data without its delimiter")
            (length,) = LONG_LENGTH.unpack_from(data, pos + 4)
            if item == SEQUENCE_DELIMITER:
                value = data[value_at:pos]
                return RawDataElement(
                    tag, vr.decode("ascii"), UNDEFINED, value, value_at, False, True
                ), pos + 8
            if item != ITEM or length == UNDEFINED:
                raise _NotSimple("encapsulated pixel data not laid out in items")
            pos += 8 + length


def _encoding(charset: Any) -> str | list[str]:
    """The Python encodings of a Specific Character Set element, as pydicom's reader finds them."""
    from pydicom.charset import convert_encodings
    from pydicom.values import convert_string

    return convert_encodings(convert_string(charset.value or b"", True))


def deflated_data_set(data: bytes) -> bytes | None:
    """The still deflated data set of a file whose transfer syntax is Deflated Explicit VR Little
    Endian (all of it that `data` holds), None for any other file: the check to make before
    pydicom's reader, which inflates a deflated data set whole (a few hundred KB can hold
    gigabytes of zeros). The file meta is walked as `scan_dataset` walks it, or read by pydicom
    where it is not laid out simply: the data set starts where pydicom's reader would start it."""
    try:
        if data[PREAMBLE : PREAMBLE + len(MAGIC)] == MAGIC:
            meta, layout = _file_meta(data)
            if TRANSFER_SYNTAX in meta.found:
                return data[meta.pos :] if layout == "deflated" else None
    except (_NotSimple, *PYDICOM_ERRORS):
        pass
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stream = io.BytesIO(data)
    try:
        read_preamble(stream, False)
        meta_read = _read_file_meta_info(stream)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError):
        return None  # not DICOM as pydicom reads it either: its reader will say so
    deflated = meta_read.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    return data[stream.tell() :] if deflated else None
