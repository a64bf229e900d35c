"""Write a dataset as Part 10 bytes in the input's transfer syntax, fast.

Raw elements (never decoded) are re-emitted byte for byte; pydicom encodes only the
elements that changed: the per-element overhead of ``dcmwrite`` is the main cost of a
plain round trip. Every output gets a fresh file meta group of ours.
"""

from __future__ import annotations

import struct
import uuid

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.uid import UID, ImplicitVRLittleEndian

from dicom_deid import __version__

from .reader import PYDICOM_ONLY_SYNTAXES, output_transfer_syntax, text_value
from .walker import LONG_VRS, SEQ_DELIM_ITEM, UNDEFINED

IMPLEMENTATION_CLASS_UID = "2.25." + str(
    uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/dicom-deid/dicom-deid").int
)
IMPLEMENTATION_VERSION_NAME = ("DICOM_DEID_" + __version__.replace(".", ""))[:16]
ITEM_START_UNDEFINED = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
"""An item of undefined length begins (how this writer writes every item)."""
ITEM_DELIM_ITEM = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
"""An item delimitation item as written."""
_LONG_VR_BYTES = frozenset(vr.encode("ascii") for vr in LONG_VRS)


METHOD_TOOL = "dicom-deid"
"""The tool's name, the first word of the De-identification Method of every output it
writes (what the analysts' metadata export recognises its outputs by)."""


def build_file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    """A fresh file meta group: nothing of the original's (source AE titles etc.) survives."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
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
    chunks: list[bytes | memoryview] = [encode_file_meta(
        text_value(ds, 0x00080016), text_value(ds, 0x00080018), transfer_syntax)]
    _encode_dataset(ds, implicit, encodings, chunks)
    return chunks


def encode_file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
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
    """Append the elements of ``ds`` in tag order: raw ones as read, changed ones encoded."""
    for tag in sorted(ds.keys(), key=int):  # int keys: C comparisons, not BaseTag.__lt__
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            out.append(raw_header(elem, implicit))
            if elem.value:
                out.append(elem.value)
            if elem.length == UNDEFINED:
                out.append(SEQ_DELIM_ITEM)
        elif elem.VR == "SQ":
            _encode_sequence(elem, implicit, encodings, out)
        else:
            buf = DicomBytesIO()
            buf.is_little_endian = True
            buf.is_implicit_VR = implicit
            write_data_element(buf, elem, encodings)
            out.append(buf.getvalue())


def raw_header(elem: RawDataElement, implicit: bool) -> bytes:
    """The header of a raw element as this writer writes it (its length recomputed)."""
    length = elem.length if elem.length == UNDEFINED else len(elem.value or b"")
    return element_header(elem.tag, elem.VR or _vr_read_implicitly(elem.tag, length),
                          length, implicit)


def _vr_read_implicitly(tag: int, length: int) -> str:
    """The explicit VR of a value read without one (an item of a UN sequence): the data
    dictionary's for a public leaf element whose value fits it (implicit and explicit
    little endian encode values alike), else UN (a sequence's items stay implicit)."""
    if tag >> 16 & 1 or length == UNDEFINED:
        return "UN"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if vr == "SQ" or " or " in vr or (vr not in LONG_VRS and length > 0xFFFF):
        return "UN"
    return str(vr)


def element_header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    """A little-endian element header (tag, VR unless implicit, length)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", length)
    code = vr.encode("ascii")
    if code in _LONG_VR_BYTES:
        return head + code + b"\x00\x00" + struct.pack("<I", length)
    return head + code + struct.pack("<H", length)


def _encode_sequence(elem: DataElement, implicit: bool, encodings: list[str],
                     out: list[bytes | memoryview]) -> None:
    items: Sequence = elem.value
    out.append(element_header(elem.tag, "SQ", UNDEFINED, implicit))
    for item in items:
        out.append(ITEM_START_UNDEFINED)
        item_encodings = encodings
        if "SpecificCharacterSet" in item:
            item_encodings = convert_encodings(item.SpecificCharacterSet)
        _encode_dataset(item, implicit, item_encodings, out)
        out.append(ITEM_DELIM_ITEM)
    out.append(SEQ_DELIM_ITEM)


def encode_element_value(elem: DataElement, implicit: bool) -> bytes:
    """The value bytes (no header) of one ASCII-only element, sequences included."""
    chunks: list[bytes | memoryview] = []
    if elem.VR == "SQ":
        for item in elem.value:
            chunks.append(ITEM_START_UNDEFINED)
            _encode_dataset(item, implicit, ["iso8859"], chunks)
            chunks.append(ITEM_DELIM_ITEM)
        return b"".join(chunks)
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = True
    write_data_element(buf, elem, ["iso8859"])
    return buf.getvalue()[8:]  # implicit header: tag (4) + length (4)
