"""Text carried by compressed frames outside the image: JPEG and JPEG-LS comment (COM) and
application (APPn: EXIF, XMP, ICC, IPTC, thumbnails) segments, JPEG 2000 comment markers
and JP2 metadata boxes. Found and removed by walking a frame's marker segments, never by
decoding it: the pixels a decoder produces stay exactly the same.

Copying Pixel Data as it is would carry them into an output (``img2dcm`` copies a JPEG
file's comment and EXIF), and no search for identifying values can look inside
compressed bytes. Kept: what decoding needs (APP14 "Adobe", the colour transform; in
JPEG-LS APP8 "mrfx", HP's colour transform) and a plain JFIF header (its presence tells
a decoder the colours are YCbCr), each cut to its standard length. A frame that is not a
well-formed codestream raises :class:`~dicom_deid.errors.BadInput`: nothing is guessed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_fragmented_frames
from pydicom.tag import BaseTag
from pydicom.uid import MPEGTransferSyntaxes

from dicom_deid.dicom.reader import input_transfer_syntax, output_transfer_syntax, text_value
from dicom_deid.dicom.walker import Element
from dicom_deid.errors import BadInput
from dicom_deid.pixels.excess import dataset_layout, written_layout

__all__ = ["CODESTREAM_SYNTAXES", "RLE_SYNTAX", "VIDEO_SYNTAXES", "Encapsulated", "Planes",
           "Segment", "carries_metadata", "frame_segments", "pixel_data_segments",
           "planes_of", "remove_frame_metadata", "without_frame_metadata", "without_metadata"]

JPEG_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # baseline, extended
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # lossless
    # the retired processes (spectral selection, progressive, hierarchical...): the same
    # marker segments, and writers still use them
    *(f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64,
                                           65, 66)),
})
JPEG_LS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
J2K_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
})
JXL_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112",
})
RLE_SYNTAX = "1.2.840.10008.1.2.5"
CODESTREAM_SYNTAXES = JPEG_SYNTAXES | JPEG_LS_SYNTAXES | J2K_SYNTAXES | JXL_SYNTAXES | {
    RLE_SYNTAX}
"""Transfer syntaxes whose frames are walked here."""
VIDEO_SYNTAXES = frozenset(MPEGTransferSyntaxes)
"""MPEG-2, MPEG-4 AVC and HEVC streams: neither decoded nor walked here, so nothing can
tell whether their frames or user data (SEI messages) carry text; never de-identified."""

PIXEL_DATA = 0x7FE00010
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
_UNDEFINED = 0xFFFFFFFF

# Where the entropy-coded data of a scan ends: the first 0xFF that is neither stuffing
# (JPEG: 0xFF 0x00; JPEG-LS: 0xFF then a byte below 0x80), a restart marker nor a fill
# byte (the last 0xFF of a run of them is the marker's).
_JPEG_NEXT = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_JPEG_LS_NEXT = re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")
_FILLS = re.compile(rb"\xff+")
_PADDING = re.compile(rb"[\x00\xff]*")
"""What may follow the end of a codestream: DICOM's pad byte (and fill bytes)."""
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JP2_KEPT = frozenset({b"jP  ", b"ftyp", b"rreq", b"jp2h", b"jp2c"})
_JP2_NAMES = {b"xml ": "a JP2 XML box", b"uuid": "a JP2 UUID box",
              b"uinf": "a JP2 UUID info box", b"jp2i": "a JP2 IPR box"}
_SPIFF_EOD = b"\x00\x00\x00\x01"
_JXL_SIGNATURE = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_JXL_KEPT = frozenset({b"JXL ", b"ftyp", b"jxll", b"jxlc", b"jxlp"})
"""A JPEG XL container's image boxes; Exif, XML, JUMBF, Brotli-compressed boxes and the
JPEG reconstruction data (the original JPEG's own segments) go."""
_JXL_CODESTREAM = b"\xff\x0a"
"""A SPIFF end-of-directory entry (APP8): an SOI marker follows it (ITU-T T.84 F.2)."""


@dataclass(frozen=True)
class Segment:
    """A metadata segment of one frame: a PHI-free name and where it lies (``start`` to
    ``end``); ``keep``: what stays in its place (a segment cut to its standard form)."""

    name: str
    start: int
    end: int
    keep: bytes = b""


class Planes(NamedTuple):
    """What an RLE frame's segments must hold: ``size`` bytes each (rows x columns), and
    ``segments`` of them (samples x bytes a sample)."""

    size: int
    segments: int


class Encapsulated(NamedTuple):
    """Pixel Data rebuilt: its value (Basic Offset Table and one fragment per frame), the
    Extended Offset Table and its lengths when the input had one (else None), and how
    many metadata segments left its frames."""

    value: bytes
    extended: tuple[bytes, bytes] | None
    removed: int


def _bad(reason: str) -> BadInput:
    return BadInput("bad-codestream", f"compressed pixel data: {reason}")


# -- one frame ------------------------------------------------------------------------


def frame_segments(frame: bytes, transfer_syntax: str, planes: Planes | None = None
                   ) -> list[Segment]:
    """The metadata segments of one compressed frame (none when ``transfer_syntax`` is
    not walked here); :class:`BadInput` when it is not a well-formed codestream.
    ``planes``: an RLE frame's layout (without it, RLE frames are not walked)."""
    return _walk(frame, transfer_syntax, planes)[0]


def without_frame_metadata(frame: bytes, transfer_syntax: str,
                           planes: Planes | None = None) -> bytes:
    """``frame`` without its metadata segments (``frame`` itself when it has none)."""
    found, fixes = _walk(frame, transfer_syntax, planes)
    return _spliced(frame, found + fixes) if found else frame


def _spliced(frame: bytes, edits: list[Segment]) -> bytes:
    """``frame`` with each edit's bytes replaced by what it keeps."""
    out = []
    pos = 0
    for seg in sorted(edits, key=lambda s: s.start):
        out += [frame[pos:seg.start], seg.keep]
        pos = seg.end
    out.append(frame[pos:])
    return b"".join(out)


def _walk(frame: bytes, transfer_syntax: str, planes: Planes | None = None
          ) -> tuple[list[Segment], list[Segment]]:
    """(metadata segments, the edits their removal needs elsewhere: lengths, indexes)."""
    if transfer_syntax == RLE_SYNTAX:
        return list(_rle(frame, planes)), []
    if transfer_syntax in J2K_SYNTAXES:
        if frame[:12] == _JP2_SIGNATURE:
            return _jp2(frame)
        return _j2k(frame, 0, len(frame))
    if transfer_syntax in JPEG_SYNTAXES:
        return _jpeg(frame, False), []
    if transfer_syntax in JPEG_LS_SYNTAXES:
        return _jpeg(frame, True), []
    if transfer_syntax in JXL_SYNTAXES:
        if frame[:12] == _JXL_SIGNATURE:
            return _jp2(frame, _JXL_KEPT, None)
        if frame[:2] != _JXL_CODESTREAM:
            raise _bad("a JPEG XL frame is neither a codestream nor a container")
        return [], []  # a bare codestream holds no text
    return [], []


def _jpeg(frame: bytes, ls: bool) -> list[Segment]:  # noqa: C901 - one marker walk
    """JPEG / JPEG-LS: header segments by their lengths from SOI; after a scan, the next
    marker by a search of the entropy-coded data; then nothing but padding after EOI."""
    n = len(frame)
    if frame[:2] != b"\xff\xd8":
        raise _bad("a JPEG frame does not begin with a start of image")
    next_marker = _JPEG_LS_NEXT if ls else _JPEG_NEXT
    found: list[Segment] = []
    pos = 2
    while True:
        if pos + 1 >= n or frame[pos] != 0xFF:
            raise _bad("a JPEG frame has no marker where one must be (truncated?)")
        fills = _FILLS.match(frame, pos)
        pos = fills.end() - 1 if fills else pos
        if pos + 1 >= n:
            raise _bad("a JPEG frame ends inside a marker")
        marker = frame[pos + 1]
        if marker == 0xD9:  # EOI
            end = pos + 2
            break
        if marker == 0xD8:  # SOI again: only right after a SPIFF directory's end
            last = found[-1] if found else None
            if last is None or last.end != pos or frame[last.start + 4:last.end] != _SPIFF_EOD:
                raise _bad("a JPEG frame holds a second start of image")
            found[-1] = Segment(last.name, last.start, pos + 2)
            pos += 2
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            pos += 2
            continue
        if marker == 0x00 or pos + 4 > n:
            raise _bad("a JPEG frame has an invalid marker")
        end = pos + 2 + (frame[pos + 2] << 8 | frame[pos + 3])
        if end < pos + 4 or end > n:
            raise _bad("a JPEG marker segment runs past its frame")
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:
            seg = _jpeg_metadata(frame, marker, pos, end, ls)
            if seg is not None:
                found.append(seg)
        if marker == 0xDA:  # SOS: the scan's data runs to the next marker
            after = next_marker.search(frame, end)
            if after is None:
                raise _bad("a JPEG scan has no end (no end of image)")
            pos = after.start()
        else:
            pos = end
    trailing = _trailing(frame, end, "JPEG")
    if trailing is not None:
        found.append(trailing)
    return found


def _jpeg_metadata(frame: bytes, marker: int, pos: int, end: int, ls: bool) -> Segment | None:
    """The segment to remove (or cut) for a COM or APPn marker segment; None: kept."""
    data = frame[pos + 4:end]
    if marker == 0xFE:
        return Segment("a JPEG COM segment", pos, end)
    name = f"a JPEG APP{marker - 0xE0} segment"
    if marker == 0xEE and data[:5] == b"Adobe":
        return _cut(frame, pos, end, 12, name)  # colour transform: decoding needs it
    if marker == 0xE8 and ls and data[:4] == b"mrfx":
        return _cut(frame, pos, end, 5, name)  # HP colour transform (JPEG-LS)
    if marker == 0xE0 and data[:5] == b"JFIF\x00" and len(data) >= 14:
        if len(data) == 14 and data[12:14] == b"\x00\x00":
            return None  # a plain JFIF header: no thumbnail, nothing else
        # The header stays (a decoder takes JFIF as YCbCr), the thumbnail goes.
        keep = b"\xff\xe0\x00\x10" + data[:12] + b"\x00\x00"
        return Segment("a JPEG APP0 thumbnail", pos, end, keep)
    return Segment(name, pos, end)


def _cut(frame: bytes, pos: int, end: int, size: int, name: str) -> Segment | None:
    """A segment decoding needs, kept up to its standard ``size`` (None: no longer)."""
    if end - pos - 4 <= size:
        return None
    keep = frame[pos:pos + 2] + struct.pack(">H", size + 2) + frame[pos + 4:pos + 4 + size]
    return Segment(name, pos, end, keep)


def _trailing(frame: bytes, end: int, kind: str) -> Segment | None:
    """Bytes after the end of a codestream: padding is fine, a second codestream is a
    frame split wrongly (refused), anything else is removed."""
    padding = _PADDING.match(frame, end)
    if padding is None or padding.end() == len(frame):
        return None
    rest = frame[end:]
    if b"\xff\xd8" in rest or b"\xff\x4f\xff\x51" in rest:
        raise _bad(f"a {kind} frame holds more than one codestream")
    return Segment(f"data after the end of a {kind} codestream", end, len(frame))


_RLE_HEADER = 64
_RLE_SEGMENTS = 15


@lru_cache(maxsize=32)  # a multi-frame file's frames, walked again by the gate
def _rle(frame: bytes, planes: Planes | None) -> tuple[Segment, ...]:
    """An RLE frame (PS3.5 G): a 64-byte header of segment offsets, then one segment per
    byte plane, each decoding to rows x columns bytes. A decoder reads nothing else, so
    anything else is hidden there: offsets in the header's unused slots, bytes before the
    first segment, after a segment's last packet (beyond its one pad byte), segments
    beyond the image's. One edit rebuilds such a frame without them; a clean frame (each
    segment checked by decoding it, in Rust) has none. The worker that copies a frame
    then verifies its output walks the same bytes twice: remembered (by the bytes)."""
    if planes is None or planes.size <= 0:
        return ()
    if len(frame) < _RLE_HEADER:
        raise _bad("an RLE frame is shorter than its header")
    header = struct.unpack_from("<16I", frame)
    count, offsets = header[0], header[1:]
    if not 1 <= count <= _RLE_SEGMENTS:
        raise _bad("an RLE frame's header gives no valid number of segments")
    starts = offsets[:count]
    limits = (*starts[1:], len(frame))
    if starts[0] < _RLE_HEADER or any(a > b for a, b in zip(starts, limits, strict=True)):
        raise _bad("an RLE frame's segment offsets are out of order")
    kept = min(count, planes.segments)
    ends = [_rle_segment_end(frame, a, b, planes.size) for a, b in
            zip(starts[:kept], limits[:kept], strict=True)]
    clean = (starts[0] == _RLE_HEADER and not any(offsets[count:]) and kept == count
             and all(b - e <= 1 for e, b in zip(ends, limits, strict=True)))
    if clean:
        return ()
    segments = [frame[a:e] + b"\x00" * ((e - a) % 2)
                for a, e in zip(starts[:kept], ends, strict=True)]
    table, at = [], _RLE_HEADER
    for segment in segments:
        table.append(at)
        at += len(segment)
    rebuilt = struct.pack("<16I", kept, *table, *([0] * (_RLE_SEGMENTS - kept)))
    return (Segment("data outside an RLE frame's segments", 0, len(frame),
                    rebuilt + b"".join(segments)),)


def _rle_segment_end(frame: bytes, start: int, limit: int, size: int) -> int:
    """Where the segment at ``start`` (up to ``limit``) ends: after the packet that
    completes ``size`` bytes; ``limit`` itself when it decodes to exactly ``size`` (the
    usual case, told in compiled code)."""
    from rle.rle import decode_segment  # pylibjpeg-rle: decoding is all it does here

    try:
        if len(decode_segment(frame[start:limit])) == size:
            return limit
    except ValueError:
        pass  # it ends inside a packet: bytes past the image, or a short segment
    pos, produced = start, 0
    while produced < size:
        if pos >= limit:
            raise _bad("an RLE segment holds less than its image")
        head = frame[pos]
        if head < 128:
            pos, produced = pos + head + 2, produced + head + 1
        elif head > 128:
            pos, produced = pos + 2, produced + 257 - head
        else:
            pos += 1
    if pos > limit:
        raise _bad("an RLE segment's last packet runs past it")
    return pos


def _j2k(frame: bytes, start: int, stop: int) -> tuple[list[Segment], list[Segment]]:
    """A JPEG 2000 codestream at ``start``..``stop`` of ``frame``: COM in the main header
    and in tile-part headers; removing one from a tile-part changes its Psot, and drops
    TLM (an optional index of tile-part lengths)."""
    if frame[start:start + 4] != b"\xff\x4f\xff\x51":
        raise _bad("a JPEG 2000 frame does not begin with SOC and SIZ")
    found: list[Segment] = []
    indexes: list[Segment] = []
    pos = _j2k_header(frame, start + 2, stop, 0xFF90, found, indexes)
    fixes: list[Segment] = []
    end = stop
    while pos < stop:
        marker = frame[pos] << 8 | frame[pos + 1] if pos + 1 < stop else 0
        if marker == 0xFFD9:  # EOC
            end = pos + 2
            break
        if _PADDING.fullmatch(frame, pos, stop):  # no EOC, then the pad byte
            end = pos
            break
        if marker != 0xFF90 or pos + 12 > stop or frame[pos + 2:pos + 4] != b"\x00\x0a":
            raise _bad("a JPEG 2000 tile-part does not begin with SOT")
        psot = int.from_bytes(frame[pos + 6:pos + 10], "big")
        if psot:
            part_end = pos + psot
        else:  # the last tile-part: to EOC
            eoc = frame.rfind(b"\xff\xd9", pos + 12, stop)
            part_end = eoc if eoc >= 0 else stop
        if part_end > stop or part_end < pos + 14:
            raise _bad("a JPEG 2000 tile-part runs past its frame")
        before = len(found)
        _j2k_header(frame, pos + 12, part_end, 0xFF93, found, [])
        removed = sum(s.end - s.start - len(s.keep) for s in found[before:])
        if removed and psot:
            fixes.append(Segment("Psot", pos + 6, pos + 10,
                                 (psot - removed).to_bytes(4, "big")))
        pos = part_end
    if fixes:
        fixes += indexes
    if stop == len(frame):
        trailing = _trailing(frame, end, "JPEG 2000")
        if trailing is not None:
            found.append(trailing)
    return found, fixes


def _j2k_header(frame: bytes, pos: int, stop: int, last: int, found: list[Segment],
                indexes: list[Segment]) -> int:
    """Walk marker segments from ``pos`` to the ``last`` marker (SOT after the main
    header: where it is; SOD after a tile-part header: where the data begins); COM goes
    to ``found``, TLM to ``indexes``."""
    while True:
        if pos + 4 > stop:
            raise _bad("a JPEG 2000 header runs past its frame")
        marker = frame[pos] << 8 | frame[pos + 1]
        if marker == last:
            return pos if last == 0xFF90 else pos + 2
        if marker >> 8 != 0xFF or marker < 0xFF30:
            raise _bad("a JPEG 2000 header has no marker where one must be")
        if marker <= 0xFF3F:  # reserved markers without parameters (T.800 Table A.1)
            pos += 2
            continue
        end = pos + 2 + (frame[pos + 2] << 8 | frame[pos + 3])
        if end < pos + 4 or end > stop:
            raise _bad("a JPEG 2000 marker segment runs past its frame")
        if marker == 0xFF64:
            found.append(Segment("a JPEG 2000 COM marker", pos, end))
        elif marker == 0xFF55:
            indexes.append(Segment("TLM", pos, end))
        pos = end


def _jp2(frame: bytes, kept: frozenset[bytes] = _JP2_KEPT, codestream: bytes | None = b"jp2c"
         ) -> tuple[list[Segment], list[Segment]]:
    """A JP2 file in a frame (PS3.5 forbids it; some writers do it), or a JPEG XL
    container: boxes other than ``kept`` (signature, file type, requirements, header and
    codestream) are removed; a JP2 codestream box is walked (its length changes with what
    leaves it)."""
    found: list[Segment] = []
    fixes: list[Segment] = []
    pos, n = 0, len(frame)
    while pos < n:
        if pos + 8 > n:
            if not _PADDING.fullmatch(frame, pos):
                raise _bad("a JP2 box header runs past its frame")
            break
        size, kind = int.from_bytes(frame[pos:pos + 4], "big"), frame[pos + 4:pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > n:
                raise _bad("a JP2 box header runs past its frame")
            size, head = int.from_bytes(frame[pos + 8:pos + 16], "big"), 16
        end = n if size == 0 else pos + size
        if end > n or end < pos + head:
            raise _bad("a JP2 box runs past its frame")
        if kind == codestream:
            inner, inner_fixes = _j2k(frame, pos + head, end)
            found += inner
            fixes += inner_fixes
            removed = sum(s.end - s.start - len(s.keep) for s in inner)
            if removed and size:
                at, width = (pos + 8, 8) if head == 16 else (pos, 4)
                fixes.append(Segment("JP2 box length", at, at + width,
                                     (size - removed).to_bytes(width, "big")))
        elif kind not in kept:
            found.append(Segment(_JP2_NAMES.get(kind, "a JP2 metadata box") if codestream
                                 else "a JPEG XL metadata box", pos, end))
        pos = end
    return found, fixes


# -- Pixel Data -------------------------------------------------------------------------


def _frames(value: bytes | bytearray | memoryview, number_of_frames: int | None,
            extended: tuple[bytes, bytes] | None) -> Iterator[bytes]:
    """Each frame of encapsulated Pixel Data, its fragments joined (pydicom's reading:
    the Basic or Extended Offset Table, else the number of frames, else end markers)."""
    try:
        for fragments in generate_fragmented_frames(
                value if isinstance(value, bytes) else bytes(value),
                number_of_frames=number_of_frames or None, extended_offsets=extended):
            yield fragments[0] if len(fragments) == 1 else b"".join(fragments)
    except (ValueError, TypeError, struct.error, EOFError) as exc:
        raise _bad(f"frames cannot be read ({type(exc).__name__})") from None


def pixel_data_segments(value: bytes | bytearray | memoryview, transfer_syntax: str,
                        number_of_frames: int | None = None,
                        extended: tuple[bytes, bytes] | None = None,
                        planes: Planes | None = None,
                        first_only: bool = False) -> list[tuple[int, Segment]]:
    """(frame number from 1, segment) for each metadata segment in encapsulated Pixel
    Data (its value: the items after the tag); ``first_only``: stop at the first."""
    if transfer_syntax not in CODESTREAM_SYNTAXES:
        return []
    found = []
    for number, frame in enumerate(_frames(value, number_of_frames, extended), 1):
        found += [(number, seg) for seg in frame_segments(frame, transfer_syntax, planes)]
        if found and first_only:
            break
    return found


def carries_metadata(value: bytes | bytearray | memoryview, transfer_syntax: str,
                     number_of_frames: int | None = None,
                     extended: tuple[bytes, bytes] | None = None,
                     planes: Planes | None = None) -> bool:
    """Whether any frame of encapsulated Pixel Data carries a metadata segment."""
    return bool(pixel_data_segments(value, transfer_syntax, number_of_frames, extended,
                                    planes, first_only=True))


def without_metadata(value: bytes | bytearray | memoryview, transfer_syntax: str,
                     number_of_frames: int | None = None,
                     extended: tuple[bytes, bytes] | None = None,
                     planes: Planes | None = None) -> Encapsulated | None:
    """Encapsulated Pixel Data rebuilt without its frames' metadata segments, one
    fragment per frame with a Basic Offset Table (an Extended Offset Table instead when
    the input had one); None when no frame carries any (nothing to change)."""
    if transfer_syntax not in CODESTREAM_SYNTAXES:
        return None
    frames = []
    removed = 0
    for frame in _frames(value, number_of_frames, extended):
        found, fixes = _walk(frame, transfer_syntax, planes)
        frames.append(_spliced(frame, found + fixes) if found else frame)
        removed += len(found)
    if not removed:
        return None
    if extended is None:
        try:
            return Encapsulated(encapsulate(frames, has_bot=True), None, removed)
        except ValueError:  # offsets past 4 GiB: only the Extended Offset Table holds them
            pass
    data, offsets, lengths = encapsulate_extended(frames)
    return Encapsulated(data, (offsets, lengths), removed)


_LAYOUT_TAGS = (0x00280008, 0x7FE00001, 0x7FE00002)
"""NumberOfFrames, Extended Offset Table, Extended Offset Table Lengths."""


def frame_layout(data: bytes | memoryview, by_tag: Mapping[int, Element]
                 ) -> tuple[int | None, tuple[bytes, bytes] | None, Planes | None]:
    """How an encapsulated Pixel Data's frames are found, from the walked elements of
    ``data`` (tag -> element): :func:`number_of_frames`, the Extended Offset Table
    (its offsets and lengths; None without one) and an RLE frame's :class:`Planes`, as
    :func:`pixel_data_segments` takes them."""
    frames, offsets, lengths = (b"" if e is None else bytes(data[e[3]:e[4]])
                                for e in (by_tag.get(t) for t in _LAYOUT_TAGS))
    return (number_of_frames(frames), (offsets, lengths) if offsets and lengths else None,
            planes_of(*written_layout(data, by_tag)))


def planes_of(rows: int, columns: int, samples: int, bits: int) -> Planes | None:
    """An RLE frame's :class:`Planes` for this layout (None when it is incomplete)."""
    if min(rows, columns, samples, bits) <= 0 or bits % 8:
        return None  # (RLE holds whole bytes a sample: 1-bit images are not RLE's)
    return Planes(rows * columns, samples * ((bits + 7) // 8))


def number_of_frames(raw: bytes | str | None) -> int | None:
    """NumberOfFrames as written: 1 when absent or empty, None when not a number (pydicom
    then reads the offset tables or the fragments alone)."""
    text = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw or "").strip(" \x00")
    if not text:
        return 1
    try:
        found = int(text)
    except ValueError:
        return None
    return found if found > 0 else None


def remove_frame_metadata(ds: Dataset) -> int:
    """Rewrite ``ds``'s encapsulated Pixel Data without its frames' metadata segments
    (the Dataset path); returns how many were removed (0: ``ds`` untouched)."""
    elem = ds.get_item(PIXEL_DATA)
    if elem is None:
        return 0
    ts = output_transfer_syntax(ds, input_transfer_syntax(ds))
    if ts not in CODESTREAM_SYNTAXES or not _undefined(elem):
        return 0
    value = elem.value
    if not isinstance(value, bytes | bytearray | memoryview):
        return 0
    extended = None
    if all(t in ds for t in _EXTENDED_OFFSETS):
        offsets, lengths = (_bytes(ds, t) for t in _EXTENDED_OFFSETS)
        extended = (offsets, lengths) if offsets and lengths else None
    rebuilt = without_metadata(value, ts, number_of_frames(text_value(ds, 0x00280008)),
                               extended, planes_of(*dataset_layout(ds)))
    if rebuilt is None:
        return 0
    elements = ds._dict
    elements[BaseTag(PIXEL_DATA)] = RawDataElement(
        BaseTag(PIXEL_DATA), "OB", _UNDEFINED, rebuilt.value, 0, False, True, True, False)
    for tag, table in zip(_EXTENDED_OFFSETS, rebuilt.extended or (None, None), strict=True):
        if table is None:
            if tag in ds:
                del ds[tag]
        else:
            elements[BaseTag(tag)] = RawDataElement(
                BaseTag(tag), "OV", len(table), table, 0, False, True, True, False)
    return rebuilt.removed


def _undefined(elem: DataElement | RawDataElement) -> bool:
    if isinstance(elem, RawDataElement):
        return bool(elem.length == _UNDEFINED)
    return bool(elem.is_undefined_length)


def _bytes(ds: Dataset, tag: int) -> bytes:
    elem = ds.get_item(tag)
    value = elem.value if elem is not None else None
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
