"""A DICOM file's header read by byte ranges: the metadata export's way into object stores.

Downloading a whole object to read its header costs the pixel data's bytes again; a ranged
read of the first 64 KiB holds the header of nearly every file. :func:`read_head` reads
ranges from the start (64 KiB, then four times more each time) until the top-level Pixel
Data element's header is in hand, and returns those bytes with the pixel value's length:
the scanner then types the same columns as from the whole file (``PixelData_length``
included). Files whose header cannot be cut this way (no pixel data, big-endian or
deflated syntaxes, an unreadable start) are read whole, and the whole-file path decides.

What a head does not show: elements *after* the pixel data (trailing padding, a digital
signature at the end of the file) and the pixel value itself. Encapsulated pixel data is
taken to run to the file's end, its sequence delimiter last (where writers put it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from dicom_deid.dicom.reader import PYDICOM_ONLY_SYNTAXES
from dicom_deid.dicom.walker import elements, locate_dataset
from dicom_deid.errors import BadInput

__all__ = ["FIRST_RANGE", "Head", "read_head"]

FIRST_RANGE = 64 * 1024
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_UNDEFINED = 0xFFFFFFFF
_DELIMITER = 8  # the sequence delimitation item closing encapsulated pixel data


@dataclass(frozen=True)
class Head:
    """The bytes read of one file: through the pixel data element's header (``end`` is
    where its value ends), or the whole file (``end`` None)."""

    data: bytes
    size: int
    bytes_read: int
    end: int | None


def read_head(read: Callable[[int, int], bytes], size: int, first: int = FIRST_RANGE
              ) -> Head:
    """The head of a ``size``-byte file through ``read(offset, length)``, which reads one
    byte range (see the module docstring)."""
    data = read(0, min(first, size)) if size else b""
    want = first
    while len(data) < size:
        cut = _pixel_header(data, size)
        if cut is not None:
            head, end = cut
            return Head(head, size, len(data), end)
        want *= 4
        more = read(len(data), min(want, size) - len(data))
        if not more:
            break  # the object shrank under us: the whole-file path says what is wrong
        data += more
    return Head(data, size, len(data), None)


def _pixel_header(data: bytes, size: int) -> tuple[bytes, int] | None:
    """``data`` cut after the top-level Pixel Data header (an undefined length rewritten
    as the value's length) and where the value ends; None while more bytes are needed."""
    try:
        ts, implicit, pos, _meta, _preamble = locate_dataset(data)
    except BadInput:
        return None
    if ts in PYDICOM_ONLY_SYNTAXES:
        return None  # big endian or deflated: only the whole file can be parsed
    at = data.find(_PIXEL_TAG, pos)
    while at != -1:
        header = _header_at(data, at, pos, implicit)
        if header is not None:
            start, length = header
            if length == _UNDEFINED:
                length = size - start - _DELIMITER
                if length < 0:
                    return None
                packed = struct.pack("<I", length)
                return data[:start - 4] + packed, start + length
            return data[:start], start + length
        at = data.find(_PIXEL_TAG, at + 1)
    return None


def _header_at(data: bytes, at: int, pos: int, implicit: bool) -> tuple[int, int] | None:
    """(value start, declared length) if a top-level element starts at ``at`` (the
    elements before it end exactly there), else None."""
    try:
        found = elements(data, pos, at, implicit)
    except BadInput:
        return None  # ``at`` lies inside a value (an icon's pixel data, a private blob)
    if found:
        _tag, _vr, _head, _start, stop, undefined = found[-1]
        if (stop + _DELIMITER if undefined else stop) != at:
            return None
    if implicit:
        start = at + 8
        fmt = "<I"
        offset = at + 4
    else:
        vr = data[at + 4:at + 6]
        if vr not in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
            return None
        start, fmt, offset = at + 12, "<I", at + 8
    if start > len(data):
        return None
    return start, struct.unpack_from(fmt, data, offset)[0]
