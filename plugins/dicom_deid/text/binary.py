"""Text written inside binary values: the runs ``strings`` finds, 8-bit and UTF-16.

A kept binary value can spell a name or an ID as text: an ICC profile's description
(UTF-16, as its ``mluc`` tags write it), an encapsulated document, a vendor's blob. The
residual sweep reads these runs as text and overwrites what matches byte for byte, so
the value keeps its length and whatever offsets its format holds; the verification gate
reads the same runs of an output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["TextRun", "overwrite", "text_runs", "unit_texts", "wide_runs"]

_LEAST = 4
"""The fewest characters a run must have (as ``strings``: shorter ones are noise)."""
_NARROW = re.compile(rb"[\x20-\x7e\x80-\xff]{%d,}" % _LEAST)
_WIDE = {
    # a unit of Latin-1 text (its high byte zero), Latin Extended-A (Polish, Czech,
    # Turkish, Baltic: 01), Greek (03) or Cyrillic (04): aligned by construction, since
    # text read from the wrong byte has those high bytes where its letters should be
    "utf-16-le": re.compile(
        rb"(?:[\x20-\x7e\xa0-\xff]\x00|[\x00-\x7f]\x01|[\x70-\xff]\x03|[\x00-\xff]\x04)"
        rb"{%d,}" % _LEAST),
    "utf-16-be": re.compile(
        rb"(?:\x00[\x20-\x7e\xa0-\xff]|\x01[\x00-\x7f]|\x03[\x70-\xff]|\x04[\x00-\xff])"
        rb"{%d,}" % _LEAST),
}


class TextRun(NamedTuple):
    """A run of text at ``start`` in a binary value, decoded with ``codec``."""

    start: int
    text: str
    codec: str

    def byte_span(self, first: int, stop: int) -> tuple[int, int]:
        """The bytes of the value that characters ``first``..``stop`` of the run occupy."""
        if self.codec.startswith("utf-16"):
            return self.start + 2 * first, self.start + 2 * stop
        if self.codec == "latin-1":
            return self.start + first, self.start + stop
        text = self.text
        return (self.start + len(text[:first].encode(self.codec)),
                self.start + len(text[:stop].encode(self.codec)))


def text_runs(value: bytes) -> Iterator[TextRun]:
    """The runs of printable text in ``value``: 8-bit ones (UTF-8 when they decode as
    such, else Latin-1) and UTF-16 ones of European letters (Latin, Greek, Cyrillic),
    either byte order."""
    for m in _NARROW.finditer(value):
        raw = m.group()
        try:
            yield TextRun(m.start(), raw.decode("utf-8"), "utf-8")
        except UnicodeDecodeError:
            yield TextRun(m.start(), raw.decode("latin-1"), "latin-1")
    yield from wide_runs(value)


def wide_runs(value: bytes) -> Iterator[TextRun]:
    """The UTF-16 runs of :func:`text_runs` alone (the 8-bit ones are the bytes as they
    are, which a search of the value itself already sees)."""
    if b"\x00" not in value:
        return
    for codec, pattern in _WIDE.items():
        for m in pattern.finditer(value):
            yield TextRun(m.start(), m.group().decode(codec), codec)


def unit_texts(value: bytes) -> Iterator[TextRun]:
    """``value`` read whole as UTF-16, in either byte order from either byte: one
    character per unit, so a span maps back to bytes (a name in CJK or Hangul letters,
    which no run of European letters finds). Costly on large values: for a context that
    holds such letters only."""
    for codec in ("utf-16-le", "utf-16-be"):
        for align in (0, 1):
            units = (len(value) - align) // 2
            if units < 2:
                continue
            raw = value[align:align + 2 * units]
            text = raw.decode(codec, "surrogatepass")
            if len(text) != units:  # a surrogate pair read as one character: unit by unit
                text = "".join(chr(int.from_bytes(raw[i:i + 2], "little" if codec.endswith(
                    "le") else "big")) for i in range(0, len(raw), 2))
            yield TextRun(align, text, codec)


def overwrite(value: bytes, spans: list[tuple[TextRun, int, int]]) -> bytes:
    """``value`` with characters ``first``..``stop`` of each run written over with ``X``
    in the run's own encoding: the same number of bytes, so the value keeps its length."""
    out = bytearray(value)
    for run, first, stop in spans:
        lo, hi = run.byte_span(first, stop)
        unit = "X".encode(run.codec)
        out[lo:hi] = unit * ((hi - lo) // len(unit))
    return bytes(out)
