"""Read DICOM files defensively and write them fast, keeping the transfer syntax.

Reading uses pydicom (lazily: values stay raw bytes until asked for) plus the checks
pydicom does not make (truncation, unknown character sets). Writing re-emits raw
elements byte for byte and lets pydicom encode only the elements that changed: the
per-element overhead of ``dcmwrite`` is the main cost of a plain round trip.
"""

from __future__ import annotations

import io
import os
import struct
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
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
# Plausible first groups of a raw (preamble-less) dataset.
_RAW_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020})


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


def _safe_token(text: object) -> str:
    """A short printable rendering of a coded value (for messages; never free text)."""
    s = "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in str(text))
    return s[:24]


def read_instance(path: Path) -> Instance:
    """Parse ``path``; raise :class:`BadInput` with a clear, PHI-free reason when unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
    return parse_instance(data)


def parse_instance(data: bytes) -> Instance:
    """Parse DICOM bytes (Part 10 file or a raw little-endian dataset)."""
    if not data:
        raise BadInput("zero-byte", "zero-byte file")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    if not has_preamble:
        group = struct.unpack_from("<H", data, 0)[0] if len(data) >= 8 else -1
        if group not in _RAW_FIRST_GROUPS:
            raise BadInput("not-dicom", "not a DICOM file (no 'DICM' prefix, no dataset found)")
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
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    had_meta = bool(ts)
    if not ts:
        implicit, little = ds.original_encoding
        if not little:
            raise BadInput("unsupported", "raw big-endian dataset without file meta")
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return Instance(dataset=ds, transfer_syntax=ts, had_file_meta=had_meta)


def _check_complete(ds: Dataset, size: int) -> None:
    """pydicom silently accepts a short last value: compare declared and present lengths."""
    keys = list(ds.keys())
    if not keys:
        raise BadInput("truncated", "truncated or empty: no data elements after the header")
    last = ds.get_item(keys[-1])
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED and last.value is not None:
        if len(last.value) < last.length:
            tag = f"({last.tag >> 16:04X},{last.tag & 0xFFFF:04X})"
            raise BadInput(
                "truncated",
                f"truncated: element {tag} declares {last.length} bytes, "
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
    meta = build_file_meta(ds, transfer_syntax)
    if transfer_syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        # Rare encodings: pydicom's own writer handles byte swapping and deflate.
        ds.file_meta = meta
        buf = DicomBytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    implicit = transfer_syntax == ImplicitVRLittleEndian
    chunks: list[bytes] = [head.getvalue()]
    _encode_dataset(ds, implicit, encodings, chunks)
    return b"".join(chunks)


def _encode_dataset(ds: Dataset, implicit: bool, encodings: list[str], out: list[bytes]) -> None:
    for tag in sorted(ds.keys()):
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
    tag = struct.pack("<HH", elem.tag >> 16, elem.tag & 0xFFFF)
    length = elem.length if elem.length == _UNDEFINED else len(elem.value or b"")
    if implicit:
        return tag + struct.pack("<I", length)
    vr = (elem.VR or "UN").encode("ascii")
    if vr in _LONG_VRS:
        return tag + vr + b"\x00\x00" + struct.pack("<I", length)
    return tag + vr + struct.pack("<H", length)


def _encode_sequence(elem: DataElement, implicit: bool, encodings: list[str],
                     out: list[bytes]) -> None:
    tag = struct.pack("<HH", elem.tag >> 16, elem.tag & 0xFFFF)
    items: Sequence = elem.value
    out.append(tag + (b"" if implicit else b"SQ\x00\x00") + b"\xff\xff\xff\xff")
    for item in items:
        out.append(_ITEM_START_UNDEF)
        item_encodings = encodings
        if "SpecificCharacterSet" in item:
            from pydicom.charset import convert_encodings

            item_encodings = convert_encodings(item.SpecificCharacterSet)
        _encode_dataset(item, implicit, item_encodings, out)
        out.append(_ITEM_DELIM)
    out.append(_SEQ_DELIM)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: no half files, ever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def element_is_raw(elem: DataElement | RawDataElement) -> bool:
    """True while an element has not been decoded (used by tests: pixels stay raw)."""
    return isinstance(elem, RawDataElement)
