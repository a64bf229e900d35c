"""Raw DICOM value bytes -> typed metadata-export values (shared by both export paths).

The metadata export reads little-endian files with its own one-pass scanner
(:mod:`.scan`) and everything else through pydicom
(:mod:`.export`); both call these functions on a value's raw bytes and
VR, so a value is typed the same way whichever path read it. Nothing here raises on a bad
value: it comes back as ``None`` plus a "malformed" flag, and the caller records the raw
text in ``malformed_json``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Sequence
from datetime import date, datetime
from datetime import time as dtime
from typing import Any

from pydicom.charset import decode_bytes, python_encoding

from dicom_deid.dicom.dates import parse_da, parse_dt, parse_tm

from . import schema as ms

STRUCT_CODES = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q",
                "UV": "Q", "AT": "I", "OF": "f", "OD": "d", "OL": "I", "OV": "Q"}
TEXT_KINDS = frozenset({"str", "ds", "is", "da", "tm", "dt", "pn"})
NO_SPLIT = frozenset({"LT", "ST", "UT", "UR"})
BINARY_PRIVATE = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
MAX_PRIVATE_BINARY = 65_536  # larger private binary values: only their length is kept
_SINGLE_BYTE_VRS = frozenset({"UI", "AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UR"})
_TEXT_DELIMS = {0x0D, 0x0A, 0x09, 0x0C}
_PN_DELIMS = {0x5C, 0x3D, 0x5E}
_INT_MAX = 2**63 - 1
_IS_RE = re.compile(r"[+-]?\d+")
_DS_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

to_json = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` without building an encoder per call (a few
microseconds a file): private_json and malformed_json of both export paths."""

# Per-tag caches of typed text values: tag -> {raw ASCII bytes: (typed value, malformed?)}.
# Most of a series' header repeats from file to file; typed values are shared between
# rows and never mutated. Bounded: all are cleared past _TEXT_CACHE_MAX entries in total.
_TEXT_CACHES: dict[int, dict[bytes, tuple[Any, bool]]] = {}
_TEXT_CACHE_MAX = 200_000
_text_cache_size = 0


def text_cache(tag: int) -> dict[bytes, tuple[Any, bool]]:
    """The cache of typed text values of one tag (see :func:`cache_text`)."""
    cache = _TEXT_CACHES.get(tag)
    if cache is None:
        cache = _TEXT_CACHES[tag] = {}
    return cache


def cache_text(cache: dict[bytes, tuple[Any, bool]], raw: bytes, hit: tuple[Any, bool]
               ) -> None:
    """Remember ``hit`` for ``raw`` in ``cache`` (a :func:`text_cache`), within the bound."""
    global _text_cache_size
    if _text_cache_size >= _TEXT_CACHE_MAX:
        for each in _TEXT_CACHES.values():
            each.clear()
        _text_cache_size = 0
    cache[raw] = hit
    _text_cache_size += 1


def clear_text_caches() -> None:
    """Forget all cached typed text values (tests compare paths with cold caches)."""
    global _text_cache_size
    for each in _TEXT_CACHES.values():
        each.clear()  # in place: scanner columns hold references to these dicts
    _text_cache_size = 0


def text_column(spec: ms.ColumnSpec, raw: bytes, encodings: Sequence[str]
                ) -> tuple[Any, bool, bool]:
    """A text-family value of the dictionary's VR: (column value, malformed?, cacheable?).

    Cacheable when the bytes are plain ASCII: then the result does not depend on the
    character set, only on (tag, bytes).
    """
    ascii_value = raw.isascii() and b"\x1b" not in raw  # ESC: ISO 2022 code switching
    vr = spec.vr
    if ascii_value and spec.kind == "str" and vr not in NO_SPLIT:  # UIDs, codes: the most
        text = raw.decode("ascii").strip(" \x00")
        if "\\" not in text:
            if spec.multi:
                return ([text] if text else None), False, True
            return (text or None), False, True
    text = raw.decode("ascii") if ascii_value else decode_text(raw, encodings, vr)
    if vr in NO_SPLIT:
        text = text.rstrip(" \x00")
        parts = [text] if text else []
    else:
        text = text.strip(" \x00")
        if not text:
            parts = []
        elif "\\" in text:
            parts = [v.strip(" \x00") for v in text.split("\\")]
        else:
            parts = [text]
    bad = False
    kind = spec.kind
    if kind == "str":
        typed: list[Any] = [v or None for v in parts]
    else:
        typed = [typed_value(kind, v) for v in parts]
        bad = any(t is None and v for t, v in zip(typed, parts, strict=True))
    if spec.multi:
        result = typed or None
    else:
        result = typed[0] if typed else None
        bad = bad or len(typed) > 1
    return result, bad, ascii_value


def raw_values(raw: bytes, vr: str, encodings: Sequence[str], kind: str, little_endian: bool
               ) -> list[Any] | None:
    """A raw value's values: strings for text VRs, numbers for binary VRs (None: unusable).

    Raises ValueError for a binary value whose length is not a multiple of its size.
    """
    if vr in STRUCT_CODES:
        if kind not in ("int", "float"):
            return None
        return unpack_numbers(raw, vr, little_endian)
    text = decode_text(raw, encodings, vr)
    if vr in NO_SPLIT:
        text = text.rstrip(" \x00")
        return [text] if text else []
    text = text.strip(" \x00")
    if not text:
        return []
    return [v.strip(" \x00") for v in text.split("\\")]


def typed_column(kind: str, multi: bool, values: list[Any]) -> tuple[Any, bool]:
    """Values typed for a column of ``kind``: (column value, malformed?)."""
    typed: list[Any] = []
    bad = False
    for v in values:
        out = typed_value(kind, v)
        if out is None and v not in ("", None):
            bad = True
        typed.append(out)
    if multi:
        return typed or None, bad
    return (typed[0] if typed else None), bad or len(typed) > 1


def private_scalar(raw: bytes, vr: str | None, encodings: Sequence[str], little_endian: bool
                   ) -> str:
    """A private/unknown non-sequence value as JSON text: numbers, text, or base64.

    Raises ValueError for a binary value whose length is not a multiple of its size.
    """
    if vr in STRUCT_CODES and vr not in BINARY_PRIVATE:
        return "\\".join(str(v) for v in unpack_numbers(raw, vr, little_endian))
    if vr is None or vr in BINARY_PRIVATE:
        text = printable(raw)
        if text is not None:
            return text
        if len(raw) > MAX_PRIVATE_BINARY:
            return f"<{len(raw)} bytes>"
        return "base64:" + base64.b64encode(raw).decode("ascii")
    return decode_text(raw, encodings, vr).strip(" \x00")


def charset_encodings(raw: bytes) -> list[str]:
    """Python encodings of a raw Specific Character Set value (empty: ``["iso8859"]``)."""
    return terms_encodings(raw.decode("ascii", "replace").strip(" \x00").split("\\"))


def terms_encodings(terms: list[str]) -> list[str]:
    """Python encodings of Specific Character Set terms (unknown terms: ISO 8859-1)."""
    out = [python_encoding.get(t.strip(), "iso8859") for t in terms] or ["iso8859"]
    return out if terms != [""] else ["iso8859"]


def known_charset_term(term: str) -> bool:
    """True for a Specific Character Set term that pydicom can decode."""
    return term in python_encoding


def unpack_numbers(raw: bytes, vr: str, little_endian: bool) -> list[Any]:
    """Binary numbers of a raw value in the given byte order (AT: tags as ints)."""
    code = STRUCT_CODES[vr]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise ValueError("length is not a multiple of the value size")
    order = "<" if little_endian else ">"
    if vr == "AT":
        pairs = struct.unpack(f"{order}{len(raw) // 2}H", raw)
        return [pairs[i] << 16 | pairs[i + 1] for i in range(0, len(pairs), 2)]
    return list(struct.unpack(f"{order}{len(raw) // size}{code}", raw))


def decode_text(raw: bytes, encodings: Sequence[str], vr: str) -> str:
    """Text of a raw value in the dataset's character set (ASCII without pydicom)."""
    if raw.isascii() and b"\x1b" not in raw:
        return raw.decode("ascii")
    if vr in _SINGLE_BYTE_VRS:
        return raw.decode("latin-1")  # these VRs are single-byte by definition
    delims = _PN_DELIMS if vr == "PN" else _TEXT_DELIMS if vr in NO_SPLIT else {0x5C}
    return decode_bytes(raw, encodings, delims)


def raw_text(raw: bytes) -> str:
    """A raw value as text, for ``malformed_json`` (undecodable bytes escaped)."""
    return raw.decode("utf-8", "backslashreplace").strip(" \x00")


def printable(raw: bytes) -> str | None:
    """Unknown-VR bytes as text when they look like text (ASCII printable), else None."""
    body = raw.rstrip(b"\x00 ")
    if body and body.isascii() and all(32 <= c < 127 or c in (9, 10, 13) for c in body):
        return body.decode("ascii").strip()
    return None


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A converted item as JSON-safe values (dates/times as ISO text)."""
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, date | dtime | datetime):
            return v.isoformat()
        return v
    return {k: conv(v) for k, v in row.items()}


def typed_value(kind: str, v: Any) -> Any:
    """One value in the column's type, or None when it does not fit (malformed or empty)."""
    if v is None or v == "":
        return None
    if kind == "str":
        return str(v)
    if kind == "int":
        n = v if isinstance(v, int) else int(v) if _IS_RE.fullmatch(str(v)) else None
        return n if n is not None and -_INT_MAX - 1 <= n <= _INT_MAX else None
    if kind == "float":
        if isinstance(v, int | float):
            return float(v)
        return float(v) if _DS_RE.fullmatch(str(v)) else None
    if kind == "is":
        return str(v) if _IS_RE.fullmatch(str(v)) else None
    if kind == "ds":
        return str(v) if _DS_RE.fullmatch(str(v)) else None
    if kind == "pn":
        parts = str(v).split("=")
        if len(parts) > 3:
            return None
        parts += [""] * (3 - len(parts))
        return {"Alphabetic": parts[0] or None, "Ideographic": parts[1] or None,
                "Phonetic": parts[2] or None}
    if kind == "da":
        return parse_da(str(v))
    if kind == "tm":
        return parse_tm(str(v))
    if kind == "dt":
        return parse_dt(str(v))
    return None
