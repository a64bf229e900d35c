"""The metadata export's fast path: little-endian DICOM bytes -> one typed row, in one pass.

:func:`scan_row` walks the element headers with ``struct`` and converts each value to
its column type as it goes: no pydicom ``Dataset``/``DataElement`` objects, no second
walk, and pixel data is skipped by its length (encapsulated fragments by their item
headers). Values that repeat from file to file (most of a series' header) are typed once
per worker and cached, per tag, by their raw bytes.

It covers well-formed explicit and implicit VR little endian files, which are nearly all
files in practice. Anything else raises :class:`Fallback` -- big endian or deflated
encodings, truncation, elements out of tag order or duplicated, a Specific Character Set
that is not the first element of its dataset, odd sequence encodings -- and the caller
(:func:`dicom_deid.metadata_export.instance_row`) uses the general pydicom-backed path,
whose rows, errors and malformed-value records this path reproduces exactly (the tests
compare both paths over the synthetic corpus).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from pydicom.datadict import DicomDictionary, private_dictionary_VR

from . import metadata_schema as ms
from .dicomio import PYDICOM_ONLY_SYNTAXES
from .metadata_values import (
    STRUCT_CODES,
    TEXT_KINDS,
    cache_text,
    charset_encodings,
    clear_text_caches,
    decode_text,
    jsonable,
    known_charset_term,
    private_scalar,
    raw_text,
    raw_values,
    text_cache,
    text_column,
    typed_column,
)

Encodings = tuple[str, ...]  # Python codecs of a dataset's Specific Character Set


class Fallback(Exception):
    """This input needs the general (pydicom-backed) path; carries no value, no PHI."""


_HHHH = struct.Struct("<HHHH").unpack_from
_HHI = struct.Struct("<HHI").unpack_from
_I = struct.Struct("<I").unpack_from
_H = struct.Struct("<H").unpack_from

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_PADDING = 0xFFFCFFFC
_CHARSET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_PYDICOM_ONLY = PYDICOM_ONLY_SYNTAXES  # big endian, deflated: the general path
_RAW_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020})

_ALL_VRS = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB",
            "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
            "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")
_LONG_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV")


def _code(vr: str) -> int:
    """A VR's two bytes read as a little-endian uint16 (how the header scan sees it)."""
    return ord(vr[0]) | ord(vr[1]) << 8


_VR_OF_CODE = {_code(vr): vr for vr in _ALL_VRS}
_LONG = frozenset(_code(vr) for vr in _LONG_VRS)  # VRs with a 4-byte length
_UN = _code("UN")
_META_TEXT = frozenset(_code(vr) for vr in ("UI", "SH", "AE"))
_ALL_VR_BYTES = frozenset(vr.encode("ascii") for vr in _ALL_VRS)

# Sequence values typed once per worker: (tag, raw bytes, encodings, implicit) -> (items,
# item shape); only sequences that put nothing into private_json/malformed_json.
_SEQ_CACHE: dict[tuple[int, bytes, tuple[str, ...], bool], tuple[Any, ms.Shape]] = {}
_SEQ_CACHE_MAX_BYTES = 32 << 20
_seq_cache_bytes = 0
_PRIVATE_VR: dict[tuple[int, str], str | None] = {}
# Private non-sequence values as JSON text: (VR, raw bytes, encodings) -> value.
_PRIVATE_VALUES: dict[tuple[str | None, bytes, tuple[str, ...]], str | None] = {}
_PRIVATE_VALUES_MAX = 50_000


# What the scan does with an element (_Column.mode).
_CACHED, _BULK, _SEQ, _OTHER, _SKIP, _UNKNOWN, _SPECIAL, _CREATOR, _PRIVATE = range(9)
_SPECIAL_TAGS = frozenset({_CHARSET, _PIXEL_REPRESENTATION})


class _Column:
    """What the scan does with one (tag, VR as written) pair, worked out once per process.

    ``vr`` is the VR the file gives (None when implicit or UN, as in the general path).
    """

    __slots__ = ("block", "cache", "cached", "encoded", "keyword", "kind", "length_key", "long",
                 "miss", "mode", "multi", "name", "spec", "suffix", "un", "vr")

    def __init__(self, tag: int, vr: str | None) -> None:
        self.long = vr in _LONG_VRS
        self.un = vr == "UN"
        self.vr = None if self.un else vr
        self.spec: ms.ColumnSpec | None = None
        group, elem = tag >> 16, tag & 0xFFFF
        self.name = f"{group:04X},{elem:04X}"  # its private_json key without a creator
        if group & 1:
            self.mode = _SKIP if not elem else _CREATOR if 0x0010 <= elem <= 0x00FF \
                else _PRIVATE
            self.block = (group, elem >> 8) if elem >= 0x1000 else None
            self.suffix = f"{elem & 0xFF:02X}"  # its key after "group,creator,"
            return
        self.spec = spec = ms.spec_for_tag(tag) if tag != _PADDING else None
        if spec is None:
            self.mode = _SKIP if group == 0x0002 or not elem or tag == _PADDING else _UNKNOWN
            return
        self.keyword = spec.keyword
        self.length_key = spec.keyword + ms.LENGTH_SUFFIX
        self.kind = spec.kind
        self.multi = spec.multi
        # Values typed from their bytes alone when of the dictionary VR (text, and binary
        # numbers): cached per tag, raw bytes -> (typed value, malformed?).
        self.cache = text_cache(tag)
        self.encoded: dict[tuple[bytes, Encodings], tuple[Any, bool]] = {}  # non-ASCII text
        numbers = spec.vr in STRUCT_CODES and spec.kind in ("int", "float")
        self.miss = _text if spec.kind in TEXT_KINDS else _numbers
        self.cached = cached = (spec.kind in TEXT_KINDS or numbers) and vr in (None, spec.vr)
        # keywords are unique in the dictionary, but repeating groups (60xx...) share one
        shared = tag not in DicomDictionary
        self.mode = _SKIP if group == 0x0002 \
            else _SPECIAL if tag in _SPECIAL_TAGS or shared \
            else _CACHED if cached \
            else _BULK if spec.kind == "bulk" else _SEQ if spec.kind == "sq" else _OTHER

    def dictionary_vr(self) -> str:
        """The VR to read the value with: the file's, else the dictionary's."""
        return self.vr or self.spec.vr


# (tag << 16 | VR code) -> column, for explicit VR; tag -> column, for implicit VR.
_EXPLICIT: dict[int, _Column] = {}
_IMPLICIT: dict[int, _Column] = {}
_ENCODED_MAX = 4_096  # per tag, non-ASCII text values (names, descriptions)


def _explicit_column(tag: int, vrc: int) -> _Column:
    vr = _VR_OF_CODE.get(vrc)
    if vr is None:
        raise Fallback  # not a VR: the general path reports the file
    col = _EXPLICIT[tag << 16 | vrc] = _Column(tag, vr)
    return col


def _implicit_column(tag: int) -> _Column:
    col = _IMPLICIT[tag] = _Column(tag, None)
    return col


def _text(col: _Column, raw: bytes, encodings: Encodings) -> tuple[Any, bool]:
    """Typed text value of a column (a cache miss): cached by bytes, or bytes+charset."""
    if raw.isascii() and b"\x1b" not in raw:
        hit = text_column(col.spec, raw, encodings)[:2]
        cache_text(col.cache, raw, hit)
        return hit
    key = (raw, encodings)
    found = col.encoded.get(key)
    if found is None:
        found = text_column(col.spec, raw, encodings)[:2]
        if len(col.encoded) >= _ENCODED_MAX:
            col.encoded.clear()
        col.encoded[key] = found
    return found


def _numbers(col: _Column, raw: bytes, encodings: Encodings) -> tuple[Any, bool]:
    """Typed binary numbers of a column (a cache miss), cached by bytes."""
    try:
        values = raw_values(raw, col.spec.vr, encodings, col.kind, True)
    except Exception:  # a bad binary length: kept raw, as malformed
        values = None
    hit = (None, True) if values is None else typed_column(col.kind, col.multi, values)
    cache_text(col.cache, raw, hit)
    return hit


def _shape(row: dict[str, Any], sequences: ms.Shape) -> ms.Shape:
    """The keyword shape of a converted level: its keys, with item shapes of sequences."""
    shape: ms.Shape = dict.fromkeys(row)
    if sequences:
        shape.update(sequences)
    return shape


def _private_vr(tag: int, creator: str) -> str | None:
    """VR of a private element from pydicom's private dictionary (None: not in it)."""
    key = (tag, creator)
    try:
        return _PRIVATE_VR[key]
    except KeyError:
        pass
    try:
        vr: str | None = private_dictionary_VR(tag, creator)
    except KeyError:
        vr = None
    if len(_PRIVATE_VR) > 65_536:
        _PRIVATE_VR.clear()
    _PRIVATE_VR[key] = vr
    return vr


def clear_caches() -> None:
    """Forget every value cached by the scan (and the shared text caches)."""
    global _seq_cache_bytes
    _SEQ_CACHE.clear()
    _seq_cache_bytes = 0
    _PRIVATE_VALUES.clear()
    _PRIVATE_VR.clear()
    for columns in (_EXPLICIT, _IMPLICIT):
        for col in columns.values():
            if col.spec is not None:
                col.encoded.clear()
    clear_text_caches()


def scan_row(data: bytes) -> tuple[dict[str, Any], ms.Shape, int]:
    """Typed columns of a little-endian DICOM file: (row, keyword shape, malformed count).

    The same result as the general path; raises :class:`Fallback` when the general path
    is needed (see the module docstring).
    """
    n = len(data)
    if n < 8:
        raise Fallback
    first_group = _H(data, 0)[0]
    if (n >= 132 and data[128:132] == b"DICM") or first_group == 0x0002:
        ts, pos = _scan_meta(data, 132 if data[128:132] == b"DICM" and n >= 132 else 0)
        if not ts or ts in _PYDICOM_ONLY:
            raise Fallback
        implicit = ts == _IMPLICIT_LE
    else:
        if first_group not in _RAW_FIRST_GROUPS:
            raise Fallback
        pos = 0
        implicit = data[4:6] not in _ALL_VR_BYTES
        ts = _IMPLICIT_LE if implicit else _EXPLICIT_LE
    scan = _Scan(data)
    row, shape, _ = scan.dataset(pos, n, implicit, ("iso8859",), "", False, True)
    if "SOPClassUID" not in row or "SOPInstanceUID" not in row:
        raise Fallback  # the general path says why the file is not usable
    row["transfer_syntax_uid"] = ts
    row["sop_class_uid"] = row["SOPClassUID"]
    row[ms.PRIVATE_JSON] = json.dumps(scan.private, ensure_ascii=False) if scan.private \
        else None
    row[ms.MALFORMED_JSON] = json.dumps(scan.malformed, ensure_ascii=False) \
        if scan.malformed else None
    return row, shape, len(scan.malformed)


def _explicit_value(data: bytes, pos: int, end: int, vrc: int, length: int) -> tuple[int, int]:
    """(value start, value length) of the explicit VR element at ``pos``, whose header
    gave ``vrc`` and the 2-byte ``length``: a long VR's 4-byte length follows instead."""
    if vrc in _LONG:
        if pos + 12 > end:
            raise Fallback
        return pos + 12, _I(data, pos + 8)[0]
    return pos + 8, length


def _scan_meta(data: bytes, pos: int) -> tuple[str, int]:
    """Group 0002 (explicit VR little endian): the Transfer Syntax UID and where it ends."""
    ts = ""
    end = len(data)
    while pos + 8 <= end:
        group, elem, vrc, length = _HHHH(data, pos)
        if group != 0x0002:
            break
        start, length = _explicit_value(data, pos, end, vrc, length)
        if start + length > end:
            raise Fallback
        if elem == 0x0010 and vrc in _META_TEXT:
            ts = data[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return ts, pos


def _undefined_end(data: bytes, pos: int, end: int, implicit: bool) -> int:
    """Offset of the sequence delimiter closing an undefined-length value at ``pos``."""
    while pos + 8 <= end:
        group, elem, length = _HHI(data, pos)
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            return pos
        if tag != _ITEM:
            raise Fallback
        pos += 8
        pos = _item_end(data, pos, end, implicit) if length == _UNDEFINED else pos + length
    raise Fallback


def _item_end(data: bytes, pos: int, end: int, implicit: bool) -> int:
    """Offset just after the delimiter of an undefined-length item starting at ``pos``."""
    while pos + 8 <= end:
        group, elem, vrc, length = _HHHH(data, pos)
        tag = group << 16 | elem
        if tag == _ITEM_DELIM:
            return pos + 8
        if implicit:
            length = _I(data, pos + 4)[0]
            start = pos + 8
        else:
            start, length = _explicit_value(data, pos, end, vrc, length)
        pos = _undefined_end(data, start, end, implicit) + 8 if length == _UNDEFINED \
            else start + length
    raise Fallback


class _Scan:
    """One file's scan: its bytes and the private/malformed values found so far."""

    __slots__ = ("data", "malformed", "private")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.private: dict[str, Any] = {}
        self.malformed: dict[str, str] = {}

    def dataset(  # noqa: C901 - the per-element hot loop, inlined on purpose
            self, pos: int, end: int, implicit: bool, encodings: Encodings, prefix: str,
            delimited: bool, top: bool = False) -> tuple[dict[str, Any], ms.Shape, int]:
        """Row (or item struct) and keyword shape of the elements from ``pos``.

        Stops at ``end``, or, when ``delimited``, at an item delimiter (returning the
        offset after it).
        """
        data = self.data
        columns = _IMPLICIT if implicit else _EXPLICIT
        malformed = self.malformed
        row: dict[str, Any] = {}
        sequences: ms.Shape = {}  # keyword -> item shape; other keywords: the row's keys
        creators: dict[tuple[int, int], str] = {}
        private_before = len(self.private)
        prev = -1
        pixel_rep: bytes | None = None
        while pos < end:
            if pos + 8 > end:
                raise Fallback
            group, elem, vrc, length = _HHHH(data, pos)
            tag = group << 16 | elem
            if tag <= prev or group == 0xFFFE:
                if tag == _ITEM_DELIM and delimited:
                    return row, _shape(row, sequences), pos + 8
                raise Fallback
            prev = tag
            if implicit:
                length = vrc | length << 16
                try:
                    col = columns[tag]
                except KeyError:
                    col = _implicit_column(tag)
                start = pos + 8
            else:
                try:
                    col = columns[tag << 16 | vrc]
                except KeyError:
                    col = _explicit_column(tag, vrc)
                if col.long:
                    if pos + 12 > end:
                        raise Fallback
                    length = _I(data, pos + 8)[0]
                    start = pos + 12
                else:
                    start = pos + 8
            if length == _UNDEFINED:
                if col.un and not top:
                    raise Fallback  # the general path walks these two ways
                stop = _undefined_end(data, start, end, implicit or col.un)
                pos = stop + 8
            else:
                stop = pos = start + length
                if stop > end:
                    raise Fallback
            mode = col.mode
            if mode == _CACHED:  # the common case, inline
                raw = data[start:stop]
                hit = col.cache.get(raw)
                if hit is None:
                    hit = col.miss(col, raw, encodings)
                row[col.keyword] = hit[0]
                if hit[1]:
                    malformed[prefix + col.keyword] = raw_text(raw)
                continue
            if mode == _SKIP:
                continue
            if mode == _PRIVATE:
                creator = creators.get(col.block) if col.block else None  # type: ignore[arg-type]
                key = prefix + (col.name if creator is None
                                else f"{col.name[:5]}{creator},{col.suffix}")
                self._store_private(key, tag, col, start, stop, implicit, encodings, creator)
                continue
            if mode == _CREATOR:
                creators[(group, elem)] = decode_text(data[start:stop], encodings,
                                                      col.vr or "LO").strip()
                continue
            if mode == _SPECIAL:
                if tag == _CHARSET:
                    if row or creators or len(self.private) != private_before:
                        raise Fallback  # elements before it were read with the parent's
                    encodings = _charset(data[start:stop], top)
                elif tag == _PIXEL_REPRESENTATION:
                    pixel_rep = data[start:stop]
                elif col.keyword in row or col.length_key in row:  # a repeating group's
                    mode = _UNKNOWN                                 # second keyword
            if mode == _UNKNOWN:
                self._store_private(prefix + col.name, tag, col, start, stop, implicit,
                                    encodings, None)
                continue
            self._convert(col, tag, start, stop, implicit, encodings, prefix, row,
                          sequences, pixel_rep)
        if delimited:
            raise Fallback  # an undefined-length item without its delimiter
        return row, _shape(row, sequences), pos

    def _convert(self, col: _Column, tag: int, start: int, stop: int, implicit: bool,
                 encodings: Encodings, prefix: str, row: dict[str, Any],
                 sequences: ms.Shape, pixel_rep: bytes | None) -> None:
        """A standard element off the inline path: bulk, sequence, binary, other VRs."""
        kind = col.kind
        kw = col.keyword
        data = self.data
        if kind == "bulk":
            row[col.length_key] = stop - start
            return
        if kind == "sq":
            self._sequence(col, tag, start, stop, implicit or col.un, encodings, prefix, row,
                           sequences)
            return
        raw = data[start:stop]
        if col.cached:  # a special column that is a cached one (charset, ...)
            hit = col.cache.get(raw) or col.miss(col, raw, encodings)
        else:
            vr = col.dictionary_vr()
            if vr == "US or SS":  # implicit VR: signedness follows Pixel Representation
                if tag < _PIXEL_REPRESENTATION:
                    raise Fallback  # would need to look ahead
                vr = "SS" if pixel_rep is not None and pixel_rep[:1] == b"\x01" else "US"
            try:
                values = raw_values(raw, vr, encodings, kind, True)
            except Exception:  # a bad binary length: kept raw, as malformed
                values = None
            hit = (None, True) if values is None else typed_column(kind, col.multi, values)
        row[kw] = hit[0]
        if hit[1]:
            self.malformed[prefix + kw] = raw_text(raw)

    def _sequence(self, col: _Column, tag: int, start: int, stop: int, implicit: bool,
                  encodings: Encodings, prefix: str, row: dict[str, Any],
                  sequences: ms.Shape) -> None:
        """A standard sequence: a list of item structs (cached by its bytes)."""
        global _seq_cache_bytes
        kw = col.keyword
        raw = self.data[start:stop]
        key = (tag, raw, encodings, implicit)
        hit = _SEQ_CACHE.get(key)
        if hit is not None:  # the same sequence bytes (a series repeats most of them)
            row[kw], sequences[kw] = hit
            return
        before = (len(self.private), len(self.malformed))
        items: list[dict[str, Any]] = []
        item_shape: ms.Shape = {}
        for sub, sub_shape, _ in self._items(start, stop, implicit, encodings,
                                             f"{prefix}{kw}", False):
            items.append(sub)
            ms.merge_shape(item_shape, sub_shape)
        row[kw] = items
        sequences[kw] = item_shape
        if before == (len(self.private), len(self.malformed)):
            if _seq_cache_bytes + len(raw) > _SEQ_CACHE_MAX_BYTES:
                _SEQ_CACHE.clear()
                _seq_cache_bytes = 0
            _SEQ_CACHE[key] = (items, item_shape)  # cached only when nothing went aside
            _seq_cache_bytes += len(raw) + 200

    def _items(self, start: int, stop: int, implicit: bool, encodings: Encodings,
               path: str, fresh: bool) -> list[tuple[dict[str, Any], ms.Shape, _Scan]]:
        """The items of a sequence value at ``start:stop``, each converted.

        Items are converted by this scan with prefixes ``path[i].``, or, when ``fresh``
        (private sequences), each by a new scan of its own with no prefix.
        """
        data = self.data
        out: list[tuple[dict[str, Any], ms.Shape, _Scan]] = []
        pos = start
        while pos + 8 <= stop:
            group, elem, length = _HHI(data, pos)
            tag = group << 16 | elem
            if tag == _SEQ_DELIM:
                break
            if tag != _ITEM:
                raise Fallback
            scan = _Scan(data) if fresh else self
            prefix = "" if fresh else f"{path}[{len(out)}]."
            if length == _UNDEFINED:
                sub, sub_shape, pos = scan.dataset(pos + 8, stop, implicit, encodings, prefix,
                                                   True)
            else:
                item_end = pos + 8 + length
                if item_end > stop:
                    raise Fallback
                sub, sub_shape, _ = scan.dataset(pos + 8, item_end, implicit, encodings,
                                                 prefix, False)
                pos = item_end
            out.append((sub, sub_shape, scan))
        return out

    def _store_private(self, key: str, tag: int, col: _Column, start: int, stop: int,
                       implicit: bool, encodings: Encodings, creator: str | None) -> None:
        """A private or unknown element as a JSON value: text, numbers as text, or base64."""
        vr = col.vr
        if vr is None and creator is not None:
            vr = _private_vr(tag, creator)
        if vr == "SQ":
            self.private[key] = self._private_sequence(key, start, stop, implicit or col.un,
                                                       encodings)
            return
        raw = self.data[start:stop]
        cache_key = (vr, raw, encodings)
        try:
            self.private[key] = _PRIVATE_VALUES[cache_key]
            return
        except KeyError:
            pass
        try:
            value: str | None = private_scalar(raw, vr, encodings, True)
        except Exception:
            value = None
        self.private[key] = value
        if len(_PRIVATE_VALUES) >= _PRIVATE_VALUES_MAX:
            _PRIVATE_VALUES.clear()
        _PRIVATE_VALUES[cache_key] = value

    def _private_sequence(self, key: str, start: int, stop: int, implicit: bool,
                          encodings: Encodings) -> list[dict[str, Any]]:
        """A private sequence as JSON items: each item's columns and its own private."""
        items = []
        for i, (row, _, sub) in enumerate(self._items(start, stop, implicit, encodings, key,
                                                      True)):
            self.malformed.update({f"{key}[{i}].{k}": v for k, v in sub.malformed.items()})
            items.append({**jsonable(row), **sub.private})
        return items


def _charset(raw: bytes, top: bool) -> Encodings:
    """Encodings of a Specific Character Set value; at the top level, only known terms."""
    if top:
        body = raw.rstrip(b" \x00")
        if not all(32 <= c < 127 for c in body):
            raise Fallback  # let pydicom judge odd bytes
        for term in body.decode("ascii").split("\\"):
            term = term.strip()
            if term and not known_charset_term(term):
                raise Fallback  # the general path rejects the file with its reason
    return tuple(charset_encodings(raw))
