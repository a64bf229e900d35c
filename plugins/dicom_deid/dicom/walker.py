"""The one little-endian element walker: where each element of DICOM bytes starts and ends.

The reader, the metadata scanner and the byte path all find element boundaries here,
without decoding any value, with one strictness: every header and length is checked
against the bytes present, an explicit VR must be a known VR and a long VR's two
reserved bytes must be zero, items and delimiters must be where PS3.5 puts them. Any
violation is a :class:`~dicom_deid.errors.BadInput` with a PHI-free reason (it names at
most a tag), never a ``struct.error`` or an ``IndexError``.

An element is a plain tuple (:data:`Element`), not an object: the walk runs once per
element of every file, and tuples are what CPython builds fastest.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dicom_deid.errors import BadInput

__all__ = [
    "ALL_VRS",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "ITEM",
    "ITEM_DELIMITER",
    "LONG_VRS",
    "PADDING_TAG",
    "PIXEL_DATA_TAG",
    "SEQUENCE_DELIMITER",
    "SEQ_DELIM_ITEM",
    "UNDEFINED",
    "DatasetStart",
    "Element",
    "elements",
    "fmt_tag",
    "item_end",
    "locate_dataset",
    "sequence_items",
    "undefined_end",
]

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PADDING_TAG = 0xFFFCFFFC
"""Data Set Trailing Padding: skipped by the walk, so never carried into an output."""
PIXEL_DATA_TAG = 0x7FE00010
SEQ_DELIM_ITEM = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
"""A sequence delimitation item as written (its length is always zero)."""

ALL_VRS: frozenset[str] = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD",
    "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
    "UL", "UN", "UR", "US", "UT", "UV"})
LONG_VRS: frozenset[str] = frozenset({
    "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
"""VRs whose explicit header has two reserved bytes and a 4-byte length (PS3.5 7.1.2)."""

# The VR bytes as read -> the interned VR name: consumers compare VRs with ``is``.
_VR_NAMES: dict[bytes, str] = {vr.encode("ascii"): vr for vr in ALL_VRS}
# The same, indexed by the two VR bytes read as a little-endian uint16 (no bytes object
# made, a list index instead of a dict call): one table for the VRs with a 2-byte length,
# one for those with a 4-byte length; None where the code is not that kind of VR.
_SHORT_VR_OF_CODE: list[str | None] = [None] * 0x10000
_LONG_VR_OF_CODE: list[str | None] = [None] * 0x10000
for _vr in ALL_VRS:
    (_LONG_VR_OF_CODE if _vr in LONG_VRS else _SHORT_VR_OF_CODE)[
        ord(_vr[0]) | ord(_vr[1]) << 8] = _vr
_EXPLICIT = struct.Struct("<HHHH").unpack_from  # tag, VR code, 2-byte length (or reserved)
_EXPLICIT_BYTES = struct.Struct("<HH2sH").unpack_from  # the same with the VR as bytes
_IMPLICIT = struct.Struct("<HHI").unpack_from  # tag, 4-byte length
_U16 = struct.Struct("<H").unpack_from
_U16_BE = struct.Struct(">H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_RAW_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020})
_META_TEXT_VRS = frozenset({"UI", "SH", "AE"})

Element = tuple[int, "str | None", int, int, int, bool]
"""One element: (tag, VR as written or None when implicit, offset of its header, of its
value, of the value's end, whether its length was undefined). For an undefined length
the value ends at its sequence delimitation item (8 bytes, not part of the value)."""


def fmt_tag(tag: int) -> str:
    """``(GGGG,EEEE)``: how messages name an element (a tag is never PHI)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _truncated_header() -> BadInput:
    return BadInput("truncated", "truncated: the file ends inside an element header")


def _header(data: bytes, pos: int, limit: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR, value start, value length) of the element header at ``pos``."""
    if pos + 8 > limit:
        raise _truncated_header()
    if implicit:
        group, elem, length = _IMPLICIT(data, pos)
        return group << 16 | elem, None, pos + 8, length
    group, elem, vr_bytes, length = _EXPLICIT_BYTES(data, pos)
    vr = _VR_NAMES.get(vr_bytes)
    tag = group << 16 | elem
    if vr is None:
        if group == 0xFFFE:  # item tags carry no VR, in any encoding
            return tag, None, pos + 8, _U32(data, pos + 4)[0]
        raise BadInput("unreadable", f"invalid VR at element {fmt_tag(tag)}: not explicit VR")
    if vr in LONG_VRS:
        if pos + 12 > limit:
            raise _truncated_header()
        if length:
            raise BadInput("unreadable",
                           f"malformed header at element {fmt_tag(tag)}: reserved bytes not zero")
        return tag, vr, pos + 12, _U32(data, pos + 8)[0]
    return tag, vr, pos + 8, length


def elements(data: bytes, pos: int, end: int, implicit: bool, *,
             ordered: bool = False) -> list[Element]:
    """The elements of one dataset level between ``pos`` and ``end``, in file order.

    Item tags at this level are an error; Data Set Trailing Padding is skipped. With
    ``ordered``, tags must ascend (duplicates and disorder are a :class:`BadInput` of
    kind ``unordered``). ``end`` may lie past ``len(data)`` when ``data`` is the head of
    a longer file: the last value may then reach past the head, a header never does.
    """
    return _walk(data, pos, end, implicit, ordered, False)[0]


def sequence_items(data: bytes, start: int, end: int, implicit: bool, seq_tag: int, *,
                   ordered: bool = False) -> list[list[Element]]:
    """The elements of each item of the sequence value ``data[start:end]`` of ``seq_tag``,
    each item walked once (an undefined-length item up to its delimitation item)."""
    found: list[list[Element]] = []
    pos = start
    limit = min(end, len(data))
    while pos < end:
        if pos + 8 > limit:
            raise _truncated_header()
        group, elem, length = _IMPLICIT(data, pos)
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM:
            raise BadInput("unreadable", f"malformed sequence in element {fmt_tag(seq_tag)}")
        if length == UNDEFINED:
            item, pos = _walk(data, pos + 8, end, implicit, ordered, True, seq_tag)
        else:
            item_end = pos + 8 + length
            if item_end > end:
                raise BadInput("truncated", f"truncated: an item of element {fmt_tag(seq_tag)} "
                                            "is longer than its sequence")
            item = _walk(data, pos + 8, item_end, implicit, ordered, False)[0]
            pos = item_end
        found.append(item)
    return found


def _walk(data: bytes, pos: int, end: int, implicit: bool,  # noqa: C901 - the hot loop
          ordered: bool, delimited: bool, seq_tag: int = 0, collect: bool = True,
          ) -> tuple[list[Element], int]:
    """The elements from ``pos`` to ``end`` (or, when ``delimited``, to an item
    delimitation item), and the offset after them: :func:`elements` without its wrapper.
    Without ``collect`` nothing is listed (finding where an item ends).

    A header past the bytes present makes ``unpack_from`` fail (one check fewer per
    element than testing first); one past ``end`` but inside ``data`` (a nested level)
    is caught by the value's end check, which then names the header as cut."""
    out: list[Element] = []
    append = out.append
    explicit_unpack, implicit_unpack, u32 = _EXPLICIT, _IMPLICIT, _U32
    short_vrs, long_vrs, undefined = _SHORT_VR_OF_CODE, _LONG_VR_OF_CODE, UNDEFINED
    last = -1
    try:
        while pos < end:
            head = pos
            vr: str | None
            if implicit:
                group, elem, length = implicit_unpack(data, pos)
                vr = None
                start = pos + 8
            else:
                group, elem, code, length = explicit_unpack(data, pos)
                vr = short_vrs[code]
                if vr is not None:
                    start = pos + 8
                else:
                    vr = long_vrs[code]
                    if vr is not None:
                        if length:
                            raise BadInput("unreadable", f"malformed header at element "
                                                         f"{fmt_tag(group << 16 | elem)}: "
                                                         "reserved bytes not zero")
                        length = u32(data, pos + 8)[0]
                        start = pos + 12
                    elif group == 0xFFFE:
                        length = length << 16 | code  # an item tag: its 4-byte length
                        start = pos + 8
                    else:
                        raise BadInput("unreadable", f"invalid VR at element "
                                                     f"{fmt_tag(group << 16 | elem)}: not "
                                                     "explicit VR")
            tag = group * 0x10000 + elem  # specialised int ops (<< and | are not, in 3.11)
            if group == 0xFFFE:
                if start > end:
                    raise _truncated_header()
                if delimited and tag == ITEM_DELIMITER:
                    if length:
                        raise BadInput("unreadable",
                                       f"malformed sequence item in element {fmt_tag(seq_tag)}")
                    return _without_padding(out, ordered), start
                raise BadInput("unreadable", f"unexpected item tag {fmt_tag(tag)}")
            if tag <= last and ordered:  # files in order (nearly all) pay one comparison
                raise BadInput("unordered", f"element {fmt_tag(tag)} out of tag order")
            last = tag
            if length > 0x3FFFFFFF and length == undefined:  # (a one-digit int compare first)
                if start > end:
                    raise _truncated_header()
                stop = undefined_end(data, start, end, implicit or vr == "UN", tag)
                pos = stop + 8
                if collect:
                    append((tag, vr, head, start, stop, True))
            else:
                pos = start + length
                if pos > end:
                    if start > end:
                        raise _truncated_header()
                    raise BadInput("truncated", f"truncated: element {fmt_tag(tag)} declares "
                                                f"{length} bytes, {end - start} present")
                if collect:
                    append((tag, vr, head, start, pos, False))
    except struct.error:  # a header, or a long VR's length, past the bytes present
        raise _truncated_header() from None
    if delimited:
        raise BadInput("truncated", f"truncated: element {fmt_tag(seq_tag)} has no end")
    return _without_padding(out, ordered), pos


def _without_padding(found: list[Element], ordered: bool) -> list[Element]:
    """Drop Data Set Trailing Padding: the last element when tags ascend (one test per
    level, not per element), wherever it is otherwise."""
    if ordered:
        if found and found[-1][0] == PADDING_TAG:
            found.pop()
        return found
    return [e for e in found if e[0] != PADDING_TAG]


def leading_elements(data: bytes, pos: int, implicit: bool, last: int) -> list[Element]:
    """The first elements of a dataset level in ``data`` (a file's head), up to tag
    ``last``, as many as are whole in ``data``: a walk that never fails, for reading
    hints from a head (an element cut by the head's end, and what follows, is left)."""
    found: list[Element] = []
    limit = len(data)
    try:
        while pos + 8 <= limit:
            tag, vr, start, length = _header(data, pos, limit, implicit)
            if tag > last:
                break
            undefined = length == UNDEFINED
            end = undefined_end(data, start, limit, implicit or vr == "UN", tag) \
                if undefined else start + length
            if end > limit:
                break
            found.append((tag, vr, pos, start, end, undefined))
            pos = end + 8 if undefined else end
    except BadInput:
        pass  # cut inside a sequence of the head: what was found stands
    return found


def undefined_end(data: bytes, pos: int, end: int, implicit: bool, tag: int) -> int:
    """Offset of the sequence delimitation item that closes the undefined-length value of
    ``tag`` starting at ``pos`` (its items walked to find it)."""
    limit = min(end, len(data))
    while pos + 8 <= limit:
        group, elem, length = _IMPLICIT(data, pos)
        item_tag = group << 16 | elem
        if item_tag == SEQUENCE_DELIMITER:
            if length:
                raise BadInput("unreadable", f"malformed sequence in element {fmt_tag(tag)}")
            return pos
        if item_tag != ITEM:
            raise BadInput("unreadable", f"malformed sequence in element {fmt_tag(tag)}")
        pos += 8
        if length == UNDEFINED:
            pos = item_end(data, pos, end, implicit, tag)
        else:
            pos += length
    raise BadInput("truncated", f"truncated: element {fmt_tag(tag)} has no end")


def item_end(data: bytes, pos: int, end: int, implicit: bool, seq_tag: int) -> int:
    """Offset just after the item delimitation item of an undefined-length item whose
    dataset starts at ``pos``, inside the sequence ``seq_tag`` (walked, not collected)."""
    return _walk(data, pos, end, implicit, False, True, seq_tag, False)[1]


class DatasetStart(NamedTuple):
    """Where a file's dataset starts and how it is encoded (see :func:`locate_dataset`)."""

    transfer_syntax: str
    implicit: bool
    pos: int
    meta: dict[int, str] | None
    """Group 0002 text values (UI, SH, AE); None when not asked for, or for a raw dataset
    without file meta."""
    has_preamble: bool


def locate_dataset(data: bytes, *, meta_values: bool = False) -> DatasetStart:
    """Preamble, file meta and transfer syntax of DICOM bytes (Part 10, or a raw dataset
    without preamble: little endian, or explicit VR big endian); :class:`BadInput` when
    there is none.
    ``meta_values`` also decodes the file meta's text values (else only the transfer
    syntax: the byte path and the scanner need nothing else)."""
    if not data:
        raise BadInput("zero-byte", "zero-byte file")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    first_group = _U16(data, 0)[0] if len(data) >= 8 else -1
    if has_preamble or first_group == 0x0002:  # a meta group, with or without preamble
        meta, pos = _file_meta(data, 132 if has_preamble else 0, meta_values)
        ts = meta.get(0x00020010, "")
        if not ts:
            raise BadInput("unreadable", "file meta has no Transfer Syntax UID")
        return DatasetStart(ts, ts == IMPLICIT_LE, pos, meta if meta_values else None,
                            has_preamble)
    if first_group not in _RAW_FIRST_GROUPS:
        if first_group != -1 and _U16_BE(data, 0)[0] in _RAW_FIRST_GROUPS \
                and data[4:6] in _VR_NAMES:
            # A raw dataset in the retired explicit VR big endian encoding: read big
            # endian, its first group is a dataset's and a VR follows. pydicom reads it.
            return DatasetStart(EXPLICIT_BE, False, 0, None, False)
        raise BadInput("not-dicom", "not a DICOM file (no 'DICM' prefix, no dataset found)")
    implicit = data[4:6] not in _VR_NAMES
    return DatasetStart(IMPLICIT_LE if implicit else EXPLICIT_LE, implicit, 0, None, False)


def _file_meta(data: bytes, pos: int, all_values: bool) -> tuple[dict[int, str], int]:
    """Group 0002 (always explicit VR little endian): its Transfer Syntax UID (with
    ``all_values``, every UI/SH/AE text value), and where the dataset starts."""
    values: dict[int, str] = {}
    end = len(data)
    while pos + 8 <= end:
        group, elem, code, length = _EXPLICIT(data, pos)
        if group != 0x0002:
            break
        vr = _SHORT_VR_OF_CODE[code]
        if vr is not None:
            start = pos + 8
        else:  # a long VR (or a malformed header: _header says which)
            try:
                _tag, vr, start, length = _header(data, pos, end, False)
            except BadInput as exc:
                raise BadInput(exc.kind, f"{exc.reason} (file meta information)") from None
            if length == UNDEFINED:
                raise BadInput("truncated", "truncated inside the file meta information")
        if start + length > end:
            raise BadInput("truncated", "truncated inside the file meta information")
        if elem == 0x0010 or (all_values and vr in _META_TEXT_VRS):
            values[0x00020000 | elem] = data[start:start + length].rstrip(b"\x00 ").decode(
                "ascii", "replace")
        pos = start + length
    return values, pos
