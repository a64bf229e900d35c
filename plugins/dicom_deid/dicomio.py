"""Read DICOM files defensively and write them fast, keeping the transfer syntax.

Reading uses pydicom (lazily: values stay raw bytes until asked for) plus the checks
pydicom does not make (truncation, unknown character sets). Writing re-emits raw
elements byte for byte and lets pydicom encode only the elements that changed: the
per-element overhead of ``dcmwrite`` is the main cost of a plain round trip.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pydicom
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from . import __version__

IMPLEMENTATION_CLASS_UID = "2.25." + str(
    uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/dicom-deid/dicom-deid").int
)
IMPLEMENTATION_VERSION_NAME = ("DICOM_DEID_" + __version__.replace(".", ""))[:16]

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                       b"UT", b"SV", b"UV"})
_SEQ_DELIM = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_START_UNDEF = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
_ITEM_DELIM = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF
# Where the transfer syntax read from / to be written with travels on a parsed dataset: a
# plain attribute (no file meta object per file on the fast path). Pixel cleaning reads
# the first and sets the second when it re-encodes pixel data (see pixels.py).
_INPUT_TS_ATTR = "_dicom_deid_input_ts"
_OUTPUT_TS_ATTR = "_dicom_deid_output_ts"
# Plausible first groups of a raw (preamble-less) dataset.
_RAW_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020})
# Big endian and deflated: read and written whole by pydicom.
PYDICOM_ONLY_SYNTAXES = frozenset({ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})


class BadInput(Exception):
    """An input file that cannot be de-identified; ``reason`` is safe to log (no PHI)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Instance:
    """A parsed input: the dataset, and how its bytes were encoded."""

    dataset: Dataset
    transfer_syntax: str
    had_file_meta: bool
    size: int = 0
    """Bytes in the input file."""


def _safe_token(text: object) -> str:
    """A short printable rendering of a coded value (for messages; never free text)."""
    s = "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in str(text))
    return s[:24]


def read_instance(path: Path) -> Instance:
    """Parse ``path``; raise :class:`BadInput` with a clear, PHI-free reason when unusable."""
    return parse_instance(read_file(path))


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``; an unreadable file is a :class:`BadInput`."""
    source = open_input(path, head_bytes=0, whole_up_to=sys.maxsize)
    os.close(source.fd)
    return source.head


class DatasetStart(NamedTuple):
    """Where a file's dataset starts and how it is encoded (see :func:`locate_dataset`)."""

    transfer_syntax: str
    implicit: bool
    pos: int
    meta: dict[int, str] | None
    """Group 0002 text values; None for a raw dataset without file meta."""
    has_preamble: bool


def locate_dataset(data: bytes) -> DatasetStart:
    """Preamble, file meta and transfer syntax of DICOM bytes (Part 10 or a raw
    little-endian dataset); :class:`BadInput` when there is no dataset to read."""
    if not data:
        raise BadInput("zero-byte", "zero-byte file")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    first_group = struct.unpack_from("<H", data, 0)[0] if len(data) >= 8 else -1
    if has_preamble or first_group == 0x0002:  # a meta group, with or without preamble
        meta, pos = _scan_meta(data, 132 if has_preamble else 0)
        ts = meta.get(0x00020010, "")
        if not ts:
            raise BadInput("unreadable", "file meta has no Transfer Syntax UID")
        return DatasetStart(ts, ts == ImplicitVRLittleEndian, pos, meta, has_preamble)
    if first_group not in _RAW_FIRST_GROUPS:
        raise BadInput("not-dicom", "not a DICOM file (no 'DICM' prefix, no dataset found)")
    implicit = data[4:6] not in _ALL_VRS
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return DatasetStart(ts, implicit, 0, None, False)


def parse_instance(data: bytes) -> Instance:
    """Parse DICOM bytes (Part 10 file or a raw little-endian dataset).

    Little-endian encodings (all but two retired/rare transfer syntaxes) go through
    :func:`_scan`, which only finds element boundaries and leaves every value raw;
    the others use pydicom's reader.
    """
    ts, implicit, pos, meta, has_preamble = locate_dataset(data)
    if ts in PYDICOM_ONLY_SYNTAXES:
        return _parse_with_pydicom(data, has_preamble, ts)
    had_meta = meta is not None
    elements = _scan(data, pos, len(data), implicit)
    ds = Dataset(elements)
    ds.set_original_encoding(implicit, True)
    if meta is not None:
        ds.file_meta = _file_meta(meta)  # read by pixel rules; never written out
    if 0x00080018 not in elements or 0x00080016 not in elements:
        raise BadInput("not-dicom", "not a DICOM composite instance (no SOP Class/Instance UID)")
    _check_charset(ds)
    object.__setattr__(ds, _INPUT_TS_ATTR, ts)
    return Instance(dataset=ds, transfer_syntax=ts, had_file_meta=had_meta, size=len(data))


_ALL_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS",
                      b"LO", b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH",
                      b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
                      b"UR", b"US", b"UT", b"UV"})
_ITEM_TAGS = (0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD)
_BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _file_meta(values: dict[int, str]) -> FileMetaDataset:
    """The group 0002 text values as read (what CTP pixel rules may test)."""
    meta = FileMetaDataset()
    for tag, text in values.items():
        try:
            meta.add_new(tag, dictionary_VR(tag), text)
        except (KeyError, ValueError):
            continue  # an unknown or malformed group 0002 element: nothing to test against
    return meta


def _fmt_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _scan_meta(data: bytes, pos: int) -> tuple[dict[int, str], int]:
    """Read group 0002 (explicit VR little endian); return its UI/text values and the end."""
    values: dict[int, str] = {}
    end = len(data)
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                break
            length = struct.unpack_from("<I", data, pos + 8)[0]
            start = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            start = pos + 8
        if start + length > end:
            raise BadInput("truncated", "truncated inside the file meta information")
        if vr in (b"UI", b"SH", b"AE"):
            values[0x00020000 | elem] = data[start:start + length].rstrip(b"\x00 ").decode(
                "ascii", "replace")
        pos = start + length
    return values, pos


def _scan(data: bytes, pos: int, end: int, implicit: bool) -> dict[BaseTag, RawDataElement]:
    """Split a little-endian dataset into raw elements without decoding any value."""
    out: dict[BaseTag, RawDataElement] = {}
    unpack = struct.unpack_from
    view = memoryview(data)  # pixel data is sliced, not copied: it is never decoded here
    while pos < end:
        if pos + 8 > end:
            raise BadInput("truncated", "truncated: the file ends inside an element header")
        group, elem, = unpack("<HH", data, pos)
        tag = group << 16 | elem
        if implicit:
            vr = None
            length = unpack("<I", data, pos + 4)[0]
            start = pos + 8
        else:
            vr_bytes = data[pos + 4:pos + 6]
            if vr_bytes in _LONG_VRS:
                if pos + 12 > end:
                    raise BadInput("truncated",
                                   "truncated: the file ends inside an element header")
                length = unpack("<I", data, pos + 8)[0]
                start = pos + 12
            elif vr_bytes in _ALL_VRS:
                length = unpack("<H", data, pos + 6)[0]
                start = pos + 8
            else:
                raise BadInput("unreadable",
                               f"invalid VR at element {_fmt_tag(tag)}: not explicit VR")
            vr = vr_bytes.decode("ascii")
        if tag in _ITEM_TAGS:
            raise BadInput("unreadable", f"unexpected item delimiter {_fmt_tag(tag)}")
        if length == _UNDEFINED:
            stop = _undefined_end(data, start, end, implicit or vr == "UN", tag)
            value = view[start:stop] if tag in _BULK_TAGS else data[start:stop]
            pos = stop + 8  # skip the sequence delimitation item
        else:
            if start + length > end:
                raise BadInput(
                    "truncated",
                    f"truncated: element {_fmt_tag(tag)} declares {length} bytes, "
                    f"{max(end - start, 0)} present",
                )
            value = view[start:start + length] if tag in _BULK_TAGS else data[start:start + length]
            pos = start + length
        if tag == 0xFFFCFFFC:
            continue  # Data Set Trailing Padding: never carried over
        out[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), vr, length, value, start, implicit, True, True, False)
    return out


def _undefined_end(data: bytes, pos: int, end: int, implicit: bool, tag: int) -> int:
    """Offset of the sequence delimiter closing an undefined-length value at ``pos``."""
    unpack = struct.unpack_from
    while pos + 8 <= end:
        item_tag = unpack("<HH", data, pos)
        item_tag_int = item_tag[0] << 16 | item_tag[1]
        length = unpack("<I", data, pos + 4)[0]
        if item_tag_int == 0xFFFEE0DD:
            return pos
        if item_tag_int != 0xFFFEE000:
            raise BadInput("unreadable", f"malformed sequence in element {_fmt_tag(tag)}")
        pos += 8
        if length == _UNDEFINED:
            pos = _item_end(data, pos, end, implicit, tag)
        else:
            pos += length
    raise BadInput("truncated", f"truncated: element {_fmt_tag(tag)} has no end")


def _item_end(data: bytes, pos: int, end: int, implicit: bool, seq_tag: int) -> int:
    """Offset just after the item delimiter of an undefined-length item at ``pos``."""
    unpack = struct.unpack_from
    while pos + 8 <= end:
        group, elem = unpack("<HH", data, pos)
        tag = group << 16 | elem
        if tag == 0xFFFEE00D:
            return pos + 8
        if implicit:
            length = unpack("<I", data, pos + 4)[0]
            start = pos + 8
        else:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                length = unpack("<I", data, pos + 8)[0]
                start = pos + 12
            else:
                length = unpack("<H", data, pos + 6)[0]
                start = pos + 8
        if length == _UNDEFINED:
            pos = _undefined_end(data, start, end, implicit, tag) + 8
        else:
            pos = start + length
    raise BadInput("truncated", f"truncated: element {_fmt_tag(seq_tag)} has no end")


def _parse_with_pydicom(data: bytes, has_preamble: bool, ts: str) -> Instance:
    """Big endian and deflated files: pydicom reads (and later writes) them whole."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        except InvalidDicomError:
            raise BadInput("not-dicom", "not a DICOM file") from None
        except (EOFError, struct.error, IndexError):
            raise BadInput("truncated", "truncated: the file ends inside an element") from None
        except Exception as exc:  # pydicom raises many types; their text may hold values
            raise BadInput("unreadable", f"unreadable DICOM ({type(exc).__name__})") from None
    for w in caught:
        if "End of file reached" in str(w.message):
            raise BadInput("truncated", "truncated: a sequence or pixel data has no end")
    _check_complete(ds, len(data))
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise BadInput("not-dicom", "not a DICOM composite instance (no SOP Class/Instance UID)")
    _check_charset(ds)
    object.__setattr__(ds, _INPUT_TS_ATTR, ts)
    return Instance(dataset=ds, transfer_syntax=ts, had_file_meta=True, size=len(data))


def _check_complete(ds: Dataset, size: int) -> None:
    """pydicom silently accepts a short last value: compare declared and present lengths."""
    keys = list(ds.keys())
    if not keys:
        raise BadInput("truncated", "truncated or empty: no data elements after the header")
    last = ds.get_item(keys[-1])
    if (
        isinstance(last, RawDataElement)
        and last.length != _UNDEFINED
        and last.value is not None
        and len(last.value) < last.length
    ):
        raise BadInput(
            "truncated",
            f"truncated: element {_fmt_tag(last.tag)} declares {last.length} bytes, "
            f"{len(last.value)} present",
        )


def _check_charset(ds: Dataset) -> None:
    elem = ds.get_item(0x00080005)
    if elem is None:
        return
    value = ds.SpecificCharacterSet
    terms = [value] if isinstance(value, str) else list(value or [])
    for term in terms:
        term = (term or "").strip()
        if term and term not in python_encoding:
            raise BadInput(
                "bad-charset", f"unknown Specific Character Set term '{_safe_token(term)}'"
            )


def text_value(ds: Dataset, tag: int) -> str:
    """A single-valued string attribute; raw ASCII bytes are decoded without pydicom."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement):
        raw = elem.value or b""
        if raw.isascii():
            return ascii_text(raw)
    value = ds[tag].value
    return "" if value is None else str(value).strip()


def ascii_text(raw: bytes) -> str:
    """A single ASCII value less its padding (NULs and spaces) and leading spaces."""
    return raw.rstrip(b"\x00 ").lstrip(b" ").decode("ascii")


def input_transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax ``ds`` was read in ("" if it was not read by this module)."""
    found = ds.__dict__.get(_INPUT_TS_ATTR)
    if found:
        return str(found)
    meta = ds.__dict__.get("file_meta")
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def set_output_transfer_syntax(ds: Dataset, transfer_syntax: str) -> None:
    """Record that ``ds`` must be written in ``transfer_syntax`` (its pixel data was
    re-encoded); :func:`encode_instance_chunks` honours it over the input's."""
    object.__setattr__(ds, _OUTPUT_TS_ATTR, transfer_syntax)


def output_transfer_syntax(ds: Dataset, default: str) -> str:
    """The transfer syntax to write ``ds`` in: the re-encoded one, else ``default``."""
    return str(ds.__dict__.get(_OUTPUT_TS_ATTR) or default)


def build_file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    """A fresh file meta group: nothing of the original's (source AE titles etc.) survives."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def encode_instance(ds: Dataset, transfer_syntax: str, encodings: list[str]) -> bytes:
    """The Part 10 bytes of ``ds`` in ``transfer_syntax`` (which must be the input's)."""
    return b"".join(encode_instance_chunks(ds, transfer_syntax, encodings))


def encode_instance_chunks(
    ds: Dataset, transfer_syntax: str, encodings: list[str]
) -> list[bytes | memoryview]:
    """Like :func:`encode_instance`, as chunks to write one after another (no big copy).

    ``transfer_syntax`` is the input's; when pixel cleaning re-encoded the pixel data
    the dataset carries its new one (:func:`set_output_transfer_syntax`), used instead.
    """
    transfer_syntax = output_transfer_syntax(ds, transfer_syntax)
    if transfer_syntax in PYDICOM_ONLY_SYNTAXES:
        # Rare encodings: pydicom's own writer handles byte swapping and deflate.
        ds.file_meta = build_file_meta(ds, transfer_syntax)
        buf = DicomBytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        return [buf.getvalue()]
    implicit = transfer_syntax == ImplicitVRLittleEndian
    chunks: list[bytes | memoryview] = [_encode_file_meta(
        text_value(ds, 0x00080016), text_value(ds, 0x00080018), transfer_syntax)]
    _encode_dataset(ds, implicit, encodings, chunks)
    return chunks


def _encode_file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and group 0002 (always explicit VR little endian, PS3.10 7.1)."""
    body = [b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"]
    texts = {0x0002: sop_class, 0x0003: sop_instance, 0x0010: transfer_syntax,
             0x0012: IMPLEMENTATION_CLASS_UID, 0x0013: IMPLEMENTATION_VERSION_NAME}
    for elem, text in texts.items():
        value = text.encode("ascii")
        vr = b"SH" if elem == 0x0013 else b"UI"
        if len(value) % 2:
            value += b" " if vr == b"SH" else b"\x00"
        body.append(struct.pack("<HH", 2, elem) + vr + struct.pack("<H", len(value)) + value)
    group = b"".join(body)
    length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(group))
    return b"\x00" * 128 + b"DICM" + length + group


def _encode_dataset(
    ds: Dataset, implicit: bool, encodings: list[str], out: list[bytes | memoryview]
) -> None:
    for tag in sorted(ds.keys(), key=int):  # int keys: C comparisons, not BaseTag.__lt__
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            out.append(_raw_header(elem, implicit))
            if elem.value:
                out.append(elem.value)
            if elem.length == _UNDEFINED:
                out.append(_SEQ_DELIM)
        elif elem.VR == "SQ":
            _encode_sequence(elem, implicit, encodings, out)
        else:
            buf = DicomBytesIO()
            buf.is_little_endian = True
            buf.is_implicit_VR = implicit
            write_data_element(buf, elem, encodings)
            out.append(buf.getvalue())


def _raw_header(elem: RawDataElement, implicit: bool) -> bytes:
    length = elem.length if elem.length == _UNDEFINED else len(elem.value or b"")
    return element_header(elem.tag, elem.VR or "UN", length, implicit)


def element_header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    """A little-endian element header (tag, VR unless implicit, length)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", length)
    code = vr.encode("ascii")
    if code in _LONG_VRS:
        return head + code + b"\x00\x00" + struct.pack("<I", length)
    return head + code + struct.pack("<H", length)


def _encode_sequence(elem: DataElement, implicit: bool, encodings: list[str],
                     out: list[bytes | memoryview]) -> None:
    items: Sequence = elem.value
    out.append(element_header(elem.tag, "SQ", _UNDEFINED, implicit))
    for item in items:
        out.append(_ITEM_START_UNDEF)
        item_encodings = encodings
        if "SpecificCharacterSet" in item:
            from pydicom.charset import convert_encodings

            item_encodings = convert_encodings(item.SpecificCharacterSet)
        _encode_dataset(item, implicit, item_encodings, out)
        out.append(_ITEM_DELIM)
    out.append(_SEQ_DELIM)


def encode_element_value(elem: DataElement, implicit: bool) -> bytes:
    """The value bytes (no header) of one ASCII-only element, sequences included."""
    chunks: list[bytes] = []
    if elem.VR == "SQ":
        for item in elem.value:
            chunks.append(_ITEM_START_UNDEF)
            _encode_dataset(item, implicit, ["iso8859"], chunks)
            chunks.append(_ITEM_DELIM)
        return b"".join(chunks)
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = True
    write_data_element(buf, elem, ["iso8859"])
    return buf.getvalue()[8:]  # implicit header: tag (4) + length (4)


_IOV_MAX = 1024  # chunks per writev (Linux's UIO_MAXIOV)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
HEAD_BYTES = 1 << 16
"""How much of a large input :func:`open_input` reads: the header, not the pixel data."""


class FileRange(NamedTuple):
    """An output chunk that is bytes ``offset`` to ``offset + length`` of the input file:
    :func:`write_atomic` copies it inside the kernel (``copy_file_range``), so pixel data
    kept as it is never passes through this process."""

    offset: int
    length: int


Chunk = bytes | memoryview | FileRange


class InputFile(NamedTuple):
    """An open input: its descriptor, size, and first bytes (all of them when small)."""

    fd: int
    size: int
    head: bytes

    def whole(self) -> bytes:
        """Every byte of the file (the head plus the rest, read now)."""
        rest = _read_at(self.fd, len(self.head), self.size - len(self.head))
        return self.head + rest if rest else self.head


def open_input(
    path: str | os.PathLike[str], head_bytes: int = HEAD_BYTES, whole_up_to: int | None = None,
) -> InputFile:
    """Open ``path`` and read its head: the whole file when it is at most ``whole_up_to``
    bytes (default twice ``head_bytes``); the caller closes ``fd``. Unreadable:
    :class:`BadInput`."""
    if whole_up_to is None:
        whole_up_to = 2 * head_bytes
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
    try:
        try:
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
        want = size if size <= whole_up_to else head_bytes
        head = _read_at(fd, 0, want)
        if len(head) < want:
            size = len(head)  # shrank while read: what is there (the parser says why)
        return InputFile(fd, size, head)
    except BaseException:
        os.close(fd)
        raise


def _read_at(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` (fewer at end of file)."""
    try:
        data = os.pread(fd, length, offset) if length > 0 else b""
        while 0 < len(data) < length:
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None


def write_atomic(
    path: str | os.PathLike[str], data: bytes | list[Chunk], source_fd: int | None = None,
) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: no half files, ever.

    The chunks go out with ``writev`` on a raw descriptor (no buffered writer copying the
    small ones); :class:`FileRange` chunks are copied from ``source_fd``. The folder is
    made only when the first open fails.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, _NEW_FILE, 0o666)
    except FileNotFoundError:  # first file of its folder (most files skip this)
        try:
            os.mkdir(folder)  # a new series of a known study: its parent exists
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:  # made meanwhile by another worker
            pass
        fd = os.open(tmp, _NEW_FILE, 0o666)
    try:
        try:
            _write_chunks(fd, [data] if isinstance(data, bytes) else data, source_fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_chunks(fd: int, chunks: list[Chunk], source_fd: int | None) -> None:
    """Buffers in one ``writev`` per run of them; file ranges copied between."""
    run: list[bytes | memoryview] = []
    for chunk in chunks:
        if isinstance(chunk, FileRange):
            if source_fd is None:
                raise ValueError("a FileRange chunk needs the source file's descriptor")
            _write_all(fd, run)
            run = []
            _copy_range(source_fd, fd, chunk.offset, chunk.length)
        else:
            run.append(chunk)
    _write_all(fd, run)


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``src`` from ``offset`` to ``dst``: in the kernel where
    it can (a third of a millisecond less per 400 KB than a read and a write here),
    else through a buffer (another filesystem, an old kernel)."""
    kernel_copy = getattr(os, "copy_file_range", None)
    while length > 0:
        if kernel_copy is not None:
            try:
                done = kernel_copy(src, dst, length, offset)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                kernel_copy = None
                continue
        else:
            block = os.pread(src, min(length, 1 << 20), offset)
            _write_all(dst, [block])
            done = len(block)
        if not done:
            raise BadInput("truncated", "file shrank while it was being copied")
        offset += done
        length -= done


def _write_all(fd: int, chunks: list[bytes | memoryview]) -> None:
    """``writev`` every chunk: one call in the common case, resumed after a short write."""
    if not chunks:
        return
    written = os.writev(fd, chunks[:_IOV_MAX])
    if len(chunks) <= _IOV_MAX and written == sum(map(len, chunks)):
        return
    views = [memoryview(c) for c in chunks if len(c)]
    i = 0
    while True:
        while i < len(views) and written >= len(views[i]):
            written -= len(views[i])
            i += 1
        if i == len(views):
            return
        if written:
            views[i] = views[i][written:]
        written = os.writev(fd, views[i:i + _IOV_MAX])
        if not written:
            raise OSError(errno.EIO, "write made no progress")


def element_is_raw(elem: DataElement | RawDataElement) -> bool:
    """True while an element has not been decoded (used by tests: pixels stay raw)."""
    return isinstance(elem, RawDataElement)
