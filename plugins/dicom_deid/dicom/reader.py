"""Parse DICOM bytes into a pydicom dataset whose values stay raw until asked for.

Little-endian files (all but two rare transfer syntaxes) are split into raw elements by
the walker (:mod:`.walker`), which checks what pydicom does not (truncation, malformed
headers); big-endian and deflated files go to pydicom's reader. Unknown character sets
are refused here, so nothing downstream decodes text it cannot read. Every refusal is a
:class:`~dicom_deid.errors.BadInput` with a PHI-free reason.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from typing import cast

import pydicom
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from dicom_deid.errors import BadInput

from .files import read_file
from .walker import UNDEFINED, Element, elements, fmt_tag, locate_dataset, sequence_items

# Where the transfer syntax read from / to be written with travels on a parsed dataset: a
# plain attribute (no file meta object per file on the fast path). Pixel cleaning reads
# the first and sets the second when it re-encodes pixel data (see pixels/clean.py).
_INPUT_TS_ATTR = "_dicom_deid_input_ts"
_OUTPUT_TS_ATTR = "_dicom_deid_output_ts"
PYDICOM_ONLY_SYNTAXES = frozenset({ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})
"""Big endian and deflated: read and written whole by pydicom."""
_BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


@dataclass
class Instance:
    """A parsed input: the dataset, and how its bytes were encoded."""

    dataset: Dataset
    transfer_syntax: str
    had_file_meta: bool
    size: int = 0
    """Bytes in the input file."""


def read_instance(path: str | os.PathLike[str]) -> Instance:
    """Parse ``path``; raise :class:`BadInput` with a clear, PHI-free reason when unusable."""
    return parse_instance(read_file(path))


def parse_instance(data: bytes) -> Instance:
    """Parse DICOM bytes (Part 10 file or a raw little-endian dataset).

    Little-endian encodings go through :func:`raw_elements`, which only finds element
    boundaries and leaves every value raw; the others use pydicom's reader.
    """
    ts, implicit, pos, meta, has_preamble = locate_dataset(data, meta_values=True)
    if ts in PYDICOM_ONLY_SYNTAXES:
        return _parse_with_pydicom(data, has_preamble, ts)
    found = raw_elements(data, pos, len(data), implicit)
    ds = Dataset(cast("dict[BaseTag, RawDataElement | DataElement]", found))
    ds.set_original_encoding(implicit, True)
    if meta is not None:
        ds.file_meta = _file_meta(meta)  # read by pixel rules; never written out
    if 0x00080018 not in found or 0x00080016 not in found:
        raise BadInput("not-dicom", "not a DICOM composite instance (no SOP Class/Instance UID)")
    _check_charset(ds)
    object.__setattr__(ds, _INPUT_TS_ATTR, ts)
    return Instance(dataset=ds, transfer_syntax=ts, had_file_meta=meta is not None,
                    size=len(data))


def raw_elements(data: bytes, pos: int, end: int, implicit: bool
                 ) -> dict[BaseTag, RawDataElement]:
    """The elements of one little-endian dataset level as pydicom raw elements (values
    undecoded; pixel data a view of ``data``, not a copy). A repeated tag keeps its last."""
    return _as_raw(data, elements(data, pos, end, implicit), implicit)


def raw_items(data: bytes, implicit: bool, seq_tag: int) -> list[dict[BaseTag, RawDataElement]]:
    """The items of the sequence value ``data`` as raw element maps, like
    :func:`raw_elements` (the metadata export's general path reads sequences this way)."""
    return [_as_raw(data, found, implicit)
            for found in sequence_items(data, 0, len(data), implicit, seq_tag)]


def _as_raw(data: bytes, found: list[Element], implicit: bool) -> dict[BaseTag, RawDataElement]:
    out: dict[BaseTag, RawDataElement] = {}
    view = memoryview(data)
    for tag, vr, _head, start, stop, undefined in found:
        # pixel data is a view (never copied; the writer emits it as it is)
        value = cast("bytes", view[start:stop]) if tag in _BULK_TAGS else data[start:stop]
        length = UNDEFINED if undefined else stop - start
        key = BaseTag(tag)
        out[key] = RawDataElement(key, vr, length, value, start, implicit, True, True, False)
    return out


def _file_meta(values: dict[int, str]) -> FileMetaDataset:
    """The group 0002 text values as read (what CTP pixel rules may test)."""
    meta = FileMetaDataset()
    for tag, text in values.items():
        try:
            meta.add_new(tag, dictionary_VR(tag), text)
        except (KeyError, ValueError):
            continue  # an unknown or malformed group 0002 element: nothing to test against
    return meta


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
    return Instance(dataset=ds, transfer_syntax=ts, size=len(data),
                    had_file_meta="TransferSyntaxUID" in getattr(ds, "file_meta", ()))


def _check_complete(ds: Dataset, size: int) -> None:
    """pydicom silently accepts a short last value: compare declared and present lengths."""
    keys = list(ds.keys())
    if not keys:
        raise BadInput("truncated", "truncated or empty: no data elements after the header")
    last = ds.get_item(keys[-1])
    if (
        isinstance(last, RawDataElement)
        and last.length != UNDEFINED
        and last.value is not None
        and len(last.value) < last.length
    ):
        raise BadInput(
            "truncated",
            f"truncated: element {fmt_tag(last.tag)} declares {last.length} bytes, "
            f"{len(last.value)} present",
        )


_TERM_SHAPE = re.compile(r"(?:ISO[ _](?:2022[ _])?IR[ _]?\d{1,4}|GB18030|GBK)")
"""The form of a Specific Character Set defined term ("ISO_IR 999", "ISO 2022 IR 87"):
an unknown value of another form may be anything a writer put there (a probe found a
patient's name), so a message does not quote it."""


def _check_charset(ds: Dataset) -> None:
    elem = ds.get_item(0x00080005)
    if elem is None:
        return
    value = ds.SpecificCharacterSet
    terms = [value] if isinstance(value, str) else list(value or [])
    for term in terms:
        term = (term or "").strip()
        if term and term not in python_encoding:
            shown = f"'{term}'" if _TERM_SHAPE.fullmatch(term) else "(not shown: no term's form)"
            raise BadInput("bad-charset", f"unknown Specific Character Set term {shown}")


def int_value(ds: Dataset, tag: int) -> int:
    """An integer attribute (US/IS), 0 when absent, empty or not a number."""
    if tag not in ds:
        return 0
    value = ds[tag].value
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


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


PLAIN_TEXT_VRS = frozenset({"LO", "SH", "PN", "LT", "ST", "UT", "UC", "DA", "DT"})


def plain_text(raw: bytes, vr: str) -> str | None:
    """The value pydicom would read from ``raw`` when it is one plain ASCII value of a
    text VR (the common case, read here without pydicom); None otherwise."""
    if vr not in PLAIN_TEXT_VRS or not raw.isascii() or b"\\" in raw or b"\x1b" in raw:
        return None
    return raw.decode("ascii").rstrip("\x00 ")


def element_texts(elem: DataElement) -> list[str]:
    """An element's values as text, one per value (none when empty): what the
    de-identifier matches and rewrites."""
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def raw_texts(raw: bytes, tag: int, vr: str, read_vr: str | None, implicit: bool,
              encodings: list[str]) -> list[str]:
    """The values of one element's raw bytes as the Dataset path decodes them (``vr``:
    its VR; ``read_vr``: as written, None when implicit), in ``encodings``."""
    text = plain_text(raw, vr)
    if text is not None:
        return [text] if text else []
    return element_texts(convert_raw_data_element(
        RawDataElement(BaseTag(tag), read_vr, len(raw), raw, 0, implicit, True),
        encoding=encodings))


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


def element_is_raw(elem: DataElement | RawDataElement) -> bool:
    """True while an element has not been decoded (used by tests: pixels stay raw)."""
    return isinstance(elem, RawDataElement)
