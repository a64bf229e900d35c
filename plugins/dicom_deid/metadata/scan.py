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
(:func:`.export.instance_row`) uses the general pydicom-backed path,
whose rows, errors and malformed-value records this path reproduces exactly (the tests
compare both paths over the synthetic corpus).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import DicomDictionary, private_dictionary_VR

from dicom_deid.dicom.reader import PYDICOM_ONLY_SYNTAXES
from dicom_deid.dicom.walker import Element, elements, locate_dataset, sequence_items
from dicom_deid.errors import BadInput

from . import schema as ms
from .values import (
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
    to_json,
    typed_column,
)

Encodings = tuple[str, ...]  # Python codecs of a dataset's Specific Character Set


class Fallback(Exception):
    """This input needs the general (pydicom-backed) path; carries no value, no PHI."""


_CHARSET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103
_PYDICOM_ONLY = PYDICOM_ONLY_SYNTAXES  # big endian, deflated: the general path

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

    __slots__ = ("block", "cache", "cached", "encoded", "fast", "keyword", "kind", "length_key",
                 "miss", "mode", "multi", "name", "read_vr", "spec", "suffix", "un", "vr")

    def __init__(self, tag: int, vr: str | None) -> None:
        self.read_vr: object = vr
        self.fast = False  # mode is _CACHED: the hot loop tests this one flag
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
        self.spec = spec = ms.spec_for_tag(tag)
        if spec is None:
            self.mode = _SKIP if group == 0x0002 or not elem else _UNKNOWN
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
        self.fast = self.mode == _CACHED

    def dictionary_vr(self) -> str:
        """The VR to read the value with: the file's, else the dictionary's."""
        return self.vr or _spec(self).vr


# tag -> the column of the VR last seen with it (a VR is compared by identity: the walker
# gives interned names, None when implicit), one table for implicit VR files and one for
# explicit (a corpus mixing both does not swap columns at each change); (tag, VR) -> column
# for every VR seen.
_BY_TAG: dict[bool, dict[int, _Column]] = {True: {}, False: {}}
_NO_COLUMN = _Column(0x00000000, None)  # a tag not seen yet: its read_vr matches no VR
_NO_COLUMN.read_vr = object()
_BY_TAG_VR: dict[tuple[int, str | None], _Column] = {}
_ENCODED_MAX = 4_096  # per tag, non-ASCII text values (names, descriptions)


def _column(tag: int, vr: str | None) -> _Column:
    """The column of ``tag`` read with ``vr`` (made once per process)."""
    col = _BY_TAG_VR.get((tag, vr))
    if col is None:
        col = _BY_TAG_VR[(tag, vr)] = _Column(tag, vr)
    _BY_TAG[vr is None][tag] = col
    return col


def _spec(col: _Column) -> ms.ColumnSpec:
    """The column spec of a standard element's column (cache misses only)."""
    assert col.spec is not None, "a standard element's column has a spec"
    return col.spec


def _text(col: _Column, raw: bytes, encodings: Encodings) -> tuple[Any, bool]:
    """Typed text value of a column (a cache miss): cached by bytes, or bytes+charset."""
    if raw.isascii() and b"\x1b" not in raw:
        hit = text_column(_spec(col), raw, encodings)[:2]
        cache_text(col.cache, raw, hit)
        return hit
    key = (raw, encodings)
    found = col.encoded.get(key)
    if found is None:
        found = text_column(_spec(col), raw, encodings)[:2]
        if len(col.encoded) >= _ENCODED_MAX:
            col.encoded.clear()
        col.encoded[key] = found
    return found


def _numbers(col: _Column, raw: bytes, encodings: Encodings) -> tuple[Any, bool]:
    """Typed binary numbers of a column (a cache miss), cached by bytes."""
    try:
        values = raw_values(raw, _spec(col).vr, encodings, col.kind, True)
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
    for col in _BY_TAG_VR.values():
        if col.spec is not None:
            col.encoded.clear()
    clear_text_caches()


def scan_row(data: bytes, end: int | None = None) -> tuple[dict[str, Any], ms.Shape, int]:
    """Typed columns of a little-endian DICOM file: (row, keyword shape, malformed count).

    The same result as the general path; raises :class:`Fallback` when the general path
    is needed (see the module docstring). ``end``: where the dataset ends when ``data`` is
    only its head (:mod:`.heads`: the last value, the pixel data, lies past the bytes).
    """
    try:
        ts, implicit, pos, _meta, _preamble = locate_dataset(data)
    except BadInput:
        raise Fallback from None  # the general path says why the file is not usable
    if ts in _PYDICOM_ONLY:
        raise Fallback
    scan = _Scan(data)
    try:
        found = elements(data, pos, len(data) if end is None else end, implicit, ordered=True)
        row, shape = scan.dataset(found,
                                  implicit, ("iso8859",), "", True)
    except BadInput:
        raise Fallback from None
    if "SOPClassUID" not in row or "SOPInstanceUID" not in row:
        raise Fallback  # the general path says why the file is not usable
    row["transfer_syntax_uid"] = ts
    row["sop_class_uid"] = row["SOPClassUID"]
    row[ms.PRIVATE_JSON] = to_json(scan.private) if scan.private \
        else None
    row[ms.MALFORMED_JSON] = to_json(scan.malformed) \
        if scan.malformed else None
    return row, shape, len(scan.malformed)


class _Scan:
    """One file's scan: its bytes and the private/malformed values found so far."""

    __slots__ = ("data", "malformed", "private")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.private: dict[str, Any] = {}
        self.malformed: dict[str, str] = {}

    def dataset(  # noqa: C901 - the per-element hot loop, inlined on purpose
            self, found: list[Element], implicit: bool, encodings: Encodings, prefix: str,
            top: bool = False) -> tuple[dict[str, Any], ms.Shape]:
        """Row (or item struct) and keyword shape of one level's elements (as walked)."""
        data = self.data
        by_tag, no_column = _BY_TAG[implicit], _NO_COLUMN
        malformed = self.malformed
        row: dict[str, Any] = {}
        sequences: ms.Shape = {}  # keyword -> item shape; other keywords: the row's keys
        creators: dict[tuple[int, int], str] = {}
        private_before = len(self.private)
        pixel_rep: bytes | None = None
        for tag, vr, _head, start, stop, undefined in found:
            try:
                col = by_tag[tag]  # a dict index: no call (a tag never seen: rare)
            except KeyError:
                col = no_column
            if col.read_vr is not vr:
                col = _column(tag, vr)
            if undefined and col.un and not top:
                raise Fallback  # the general path walks these two ways
            if col.fast:  # the common case, inline
                raw = data[start:stop]
                hit = col.cache.get(raw)
                if hit is None:
                    hit = col.miss(col, raw, encodings)
                row[col.keyword] = hit[0]
                if hit[1]:
                    malformed[prefix + col.keyword] = raw_text(raw)
                continue
            mode = col.mode
            if mode == _SKIP:
                continue
            if mode == _PRIVATE:
                creator = creators.get(col.block) if col.block else None
                key = prefix + (col.name if creator is None
                                else f"{col.name[:5]}{creator},{col.suffix}")
                self._store_private(key, tag, col, start, stop, implicit, encodings, creator)
                continue
            if mode == _CREATOR:
                creators[(tag >> 16, tag & 0xFFFF)] = decode_text(data[start:stop], encodings,
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
        return row, _shape(row, sequences)

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
        for sub, sub_shape, _ in self._items(tag, start, stop, implicit, encodings,
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

    def _items(self, tag: int, start: int, stop: int, implicit: bool, encodings: Encodings,
               path: str, fresh: bool) -> list[tuple[dict[str, Any], ms.Shape, _Scan]]:
        """The items of the sequence value of ``tag`` at ``start:stop``, each converted.

        Items are converted by this scan with prefixes ``path[i].``, or, when ``fresh``
        (private sequences), each by a new scan of its own with no prefix.
        """
        out: list[tuple[dict[str, Any], ms.Shape, _Scan]] = []
        for item in sequence_items(self.data, start, stop, implicit, tag, ordered=True):
            scan = _Scan(self.data) if fresh else self
            prefix = "" if fresh else f"{path}[{len(out)}]."
            sub, sub_shape = scan.dataset(item, implicit, encodings, prefix)
            out.append((sub, sub_shape, scan))
        return out

    def _store_private(self, key: str, tag: int, col: _Column, start: int, stop: int,
                       implicit: bool, encodings: Encodings, creator: str | None) -> None:
        """A private or unknown element as a JSON value: text, numbers as text, or base64."""
        vr = col.vr
        if vr is None and creator is not None:
            vr = _private_vr(tag, creator)
        if vr == "SQ":
            self.private[key] = self._private_sequence(key, tag, start, stop,
                                                       implicit or col.un, encodings)
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

    def _private_sequence(self, key: str, tag: int, start: int, stop: int, implicit: bool,
                          encodings: Encodings) -> list[dict[str, Any]]:
        """A private sequence as JSON items: each item's columns and its own private."""
        items = []
        for i, (row, _, sub) in enumerate(self._items(tag, start, stop, implicit, encodings,
                                                      key, True)):
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
