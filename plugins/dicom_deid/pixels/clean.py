"""Burned-in text redaction: Google ``cleanImage`` / ``cleanImageTag``, PS3.15 Clean Pixel
Data and Clean Graphics, and known-region rules (CTP DicomPixelAnonymizer format).

Per instance, decided from attributes only (no decoding): which known regions apply
(:mod:`.rules`) and whether the image is read by OCR (:class:`~dicom_deid.config.model.OcrScope`).
Only when one of them has something to do is the pixel data decoded. Every frame is
read; the boxes found in any frame are blanked in all frames, except in a tiled image (a
whole-slide level, :mod:`.tiles`), whose planes are read whole and whose boxes are blanked
in the tiles under them. Machine-readable codes (QR, Data Matrix, barcodes: :mod:`.codes`)
are blanked whatever they say, and a whole-slide LABEL image, which shows nothing but the
slide's label (printed, handwritten, coded), is blanked whole.

Output encoding: native (uncompressed) input — Implicit/Explicit VR Little Endian,
Explicit VR Big Endian, Deflated Explicit VR Little Endian, 8/16/32 bits or bit-packed
1-bit — is changed in place in its own byte layout and written back in its own transfer
syntax, so every byte (every bit, for 1-bit data) outside the boxes stays as it was.
Encapsulated input is decoded (colour to RGB), blanked and re-encoded losslessly as RLE
Lossless (or written as Explicit VR Little Endian when RLE cannot hold it), with the
Image Pixel attributes rewritten to describe the new data; a lossy original keeps its
LossyImageCompression "01". Nothing of the recognised text is kept or logged.

Under the sensitive modes a line is blanked when :func:`~dicom_deid.text.banner.line_spans`
finds anything in it: the instance's values written exactly or as banners spell them
(cut, misread, romanised, abbreviated), generic dates, phones and IDs, and facility,
address and person-name layouts whatever they name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, get_decoder, get_encoder, pack_bits, unpack_bits
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicom_deid.config.model import INFO_TYPES, DeidConfig, OcrScope, Option, TextRedactionMode
from dicom_deid.dicom.reader import (
    input_transfer_syntax,
    int_value,
    set_output_transfer_syntax,
    text_value,
)
from dicom_deid.errors import BadInput
from dicom_deid.text.banner import line_spans
from dicom_deid.text.context import PhiContext

from .codes import find_codes
from .ocr import Box, TextLine, find_text, line_cache, to_detection_image
from .risk import RISK_TAGS, TEXT_PRONE_MODALITIES, at_risk_by_header
from .rules import RuleSet, load_rules
from .tiles import Tile, tile_layout, window_starts

__all__ = ["DEFAULT_IMAGE_INFO_TYPES", "RISK_TAGS", "TEXT_PRONE_MODALITIES", "OcrReadout",
           "PixelCleaner", "at_risk_by_header", "read_text_lines"]

PIXEL_DATA = 0x7FE00010
_BURNED_IN = 0x00280301
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                     "1.2.840.10008.1.2.1.99"})

DEFAULT_IMAGE_INFO_TYPES = INFO_TYPES - {"AGE", "URL", "IP_ADDRESS"}
"""What REDACT_SENSITIVE_TEXT looks for unless additionalInfoTypes adds the others."""
_MARGIN_FRACTION = 0.2
"""OCR boxes are grown by this fraction of their thickness (height, or width if narrower;
at least 2 px) on every side."""


_SLIDE_MICROSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.6"
_FLAT_RANGE = 16
"""A window of a tiled image whose samples span fewer grey levels (bare glass, an empty
corner of the matrix) holds no legible text: not read."""


@dataclass
class _Job:
    """What one instance needs: rule boxes, whether OCR reads it, and whether it is
    blanked whole (a slide label)."""

    rule_boxes: list[Box]
    ocr: bool
    whole: bool = False


@dataclass(frozen=True)
class _View:
    """One image OCR reads: a frame (its boxes are blanked in every frame: a loop repeats
    its text), or a window of one plane of a tiled image at ``y``, ``x`` (its boxes are
    blanked in the tiles under them)."""

    image: np.ndarray
    plane: int | None = None
    y: int = 0
    x: int = 0


@dataclass
class _Boxes:
    """Boxes to blank: in every frame, and in one plane of a tiled image."""

    every: set[Box] = field(default_factory=set)
    planes: dict[int, set[Box]] = field(default_factory=dict)

    def add(self, view: _View, box: Box) -> None:
        if view.plane is None:
            self.every.add(box)
        else:
            self.planes.setdefault(view.plane, set()).add(
                Box(box.x0 + view.x, box.y0 + view.y, box.x1 + view.x, box.y1 + view.y))

    def __len__(self) -> int:
        return len(self.every) + sum(len(b) for b in self.planes.values())


@dataclass
class OcrReadout:
    """What OCR read in one image and left in place: the verification gate judges these
    lines again instead of reading the image twice (pixels outside the blanked boxes are
    unchanged). PHI until judged: kept in the worker's memory only, never logged."""

    read: bool = False
    """OCR read every distinct frame of the image."""
    kept: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    """The rectangles blanked in every frame (rules and OCR), for a reviewer to see."""


class PixelCleaner:
    """Applies one configuration's pixel settings to datasets, in place."""

    def __init__(self, config: DeidConfig) -> None:
        image = config.image
        self.mode = image.text_redaction_mode
        self.scope = config.ocr_scope
        self.include = DEFAULT_IMAGE_INFO_TYPES | frozenset(image.additional_info_types)
        # Excluded types are dropped after overlaps resolve (text/banner.py line_spans), so
        # an excluded date such as "20230514" is not then taken for a record number.
        self.exclude = frozenset(image.exclude_info_types)
        self.rules: RuleSet | None = load_rules(config.pixel_rules) if config.pixel_rules else None
        self.clean_graphics = Option.CLEAN_GRAPHICS in config.options

    @property
    def uses_context(self) -> bool:
        """True when boxes are kept or redacted by what their text says."""
        return self.mode in (TextRedactionMode.REDACT_SENSITIVE_TEXT,
                             TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS)

    # -- deciding (attributes only) ---------------------------------------------------
    def wants_ocr(self, ds: Dataset) -> bool:
        """Whether this instance's pixels are read by OCR (no pixel is decoded here)."""
        return PIXEL_DATA in ds and self.ocr_by_header(
            {tag: text_value(ds, tag) for tag in RISK_TAGS})

    def ocr_by_header(self, header: Mapping[int, str]) -> bool:
        """:meth:`wants_ocr` from the top-level attributes :data:`RISK_TAGS` (tag -> text,
        missing or "" when absent) of an image with pixel data: the byte path and the
        verification gate ask it without a Dataset."""
        if self.mode is TextRedactionMode.REDACT_NO_TEXT:
            return False
        return self.scope is OcrScope.ALL or at_risk_by_header(header)

    def may_change_by_header(self, has_pixels: bool, has_overlay_data: bool,
                             header: Mapping[int, str]) -> bool:
        """Whether :meth:`clean` could change an instance with these attributes: False
        means it returns 0 and leaves every byte as it is (the file may take the byte
        path). Region rules match on the Dataset, so with rules this is always True."""
        if self.rules is not None or (self.clean_graphics and has_overlay_data):
            return True
        return has_pixels and self.ocr_by_header(header)

    def _job(self, ds: Dataset) -> _Job:
        boxes = []
        rows, cols = int_value(ds, 0x00280010), int_value(ds, 0x00280011)
        if self.rules is not None and PIXEL_DATA in ds and rows and cols:
            boxes = self.rules.boxes_for(ds, rows, cols)
        ocr = self.wants_ocr(ds)
        if ocr and rows and cols and _is_slide_label(ds):
            return _Job([*boxes, Box(0, 0, cols, rows)], False, True)
        return _Job(boxes, ocr)

    # -- doing --------------------------------------------------------------------------
    def clean(self, ds: Dataset, context: Callable[[], PhiContext],
              readout: OcrReadout | None = None) -> int:
        """Redact ``ds``'s pixel data and overlays in place; return the number of boxes.

        ``context`` builds the instance's identifying values; it is called at most once,
        and only when OCR found text to judge. ``readout`` receives the lines OCR read and
        kept. Raises :class:`BadInput` when pixel data that must be cleaned cannot be
        decoded.
        """
        ctx_cache: list[PhiContext] = []

        def keep_line(line: TextLine) -> bool:
            if not self.uses_context:
                return False
            if not ctx_cache:
                ctx_cache.append(context())
            return not line_spans(line.text, ctx_cache[0], include=self.include,
                                  exclude=self.exclude)

        count = self._clean_overlays(ds) if self.clean_graphics else 0
        job = self._job(ds)
        if not job.rule_boxes and not job.ocr:
            return count
        pixels = _open_pixels(ds)
        boxes = _Boxes(set(job.rule_boxes))
        if job.ocr:
            self._ocr_boxes(pixels, keep_line, boxes, readout, self.uses_context)
        if boxes:
            pixels.fill(sorted(boxes.every))
            for plane, found in boxes.planes.items():
                pixels.fill_plane(plane, sorted(found))
            pixels.store(ds)
            if readout is not None:
                readout.boxes = sorted(boxes.every | {b for found in boxes.planes.values()
                                                      for b in found})
        if job.whole or (job.ocr and (boxes or text_value(ds, _BURNED_IN).upper() != "YES")):
            # OCR read every frame and every identifying line it found is now black.
            ds[_BURNED_IN] = DataElement(_BURNED_IN, "CS", "NO")
        return count + len(boxes)

    @staticmethod
    def _ocr_boxes(pixels: _Pixels, keep_line: Callable[[TextLine], bool], boxes: _Boxes,
                   readout: OcrReadout | None = None, recognise: bool = True) -> None:
        """Add the boxes of the text lines and codes to blank, read from every distinct
        frame (or every window of a tiled image's planes).

        A frame identical to one already read adds nothing and is skipped; within one
        image a line whose pixels were already recognised is not recognised again. Without
        ``recognise`` (all text is blanked, whatever it says) lines are only detected.
        Codes are blanked whatever they say.
        """
        for view, line, code in _distinct_lines(pixels, recognise):
            rows, cols = view.image.shape[:2]
            box = (line.box if code else _padded(line.box)).clip(rows, cols)
            if box is None:
                continue
            if not code and keep_line(line):
                if readout is not None:
                    readout.kept.append(line.text)
            else:
                boxes.add(view, box)
        if readout is not None:
            readout.read = True

    def _clean_overlays(self, ds: Dataset) -> int:
        """Clean Graphics: blank text found in 1-bit overlay planes (60xx,3000)."""
        count = 0
        for group in range(0x6000, 0x6020, 2):
            tag = group << 16 | 0x3000
            if tag not in ds:
                continue
            rows, cols = int_value(ds, group << 16 | 0x0010), int_value(ds, group << 16 | 0x0011)
            frames = int_value(ds, group << 16 | 0x0015) or 1
            raw = _bytes_of(ds, tag)
            if not rows or not cols or ds.original_encoding[1] is False or raw is None:
                _delete_group(ds, group)  # cannot read it: privacy first
                continue
            count += _clean_overlay(ds, tag, raw, rows, cols, frames)
        return count


def _clean_overlay(ds: Dataset, tag: int, raw: bytes, rows: int, cols: int,
                   frames: int) -> int:
    """OCR one overlay plane (set bits drawn white) and clear the bits of text lines."""
    size = rows * cols
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    if bits.size < size * frames:
        _delete_group(ds, tag >> 16)
        return 0
    planes = bits[: size * frames].reshape(frames, rows, cols).copy()
    boxes: set[Box] = set()
    for plane in planes:
        if not plane.any():
            continue
        image = np.repeat((plane * 255).astype(np.uint8)[..., None], 3, axis=2)
        for line in find_text(image, recognise=False):  # every line is blanked
            box = _padded(line.box).clip(rows, cols)
            if box is not None:
                boxes.add(box)
    if not boxes:
        return 0
    for box in boxes:
        planes[:, box.y0:box.y1, box.x0:box.x1] = 0
    out = bits.copy()
    out[: size * frames] = planes.ravel()
    packed = np.packbits(out, bitorder="little").tobytes()[: len(raw)]
    _set_bytes(ds, tag, packed)
    return len(boxes)


# -- pixel storage ------------------------------------------------------------------------


class _Pixels:
    """Decoded frames for OCR, and the stored pixels the boxes are drawn into."""

    def __init__(self, ds: Dataset, ts: str) -> None:
        self.ts = ts
        self.rows = int_value(ds, 0x00280010)
        self.cols = int_value(ds, 0x00280011)
        self.frames = max(int_value(ds, 0x00280008), 1)
        self.spp = int_value(ds, 0x00280002) or 1
        self.bits = int_value(ds, 0x00280100)
        self.signed = int_value(ds, 0x00280103) == 1
        self.photometric = text_value(ds, 0x00280004).upper()
        self.palette = self.photometric == "PALETTE COLOR"
        self._ds = ds
        self.meta: dict[str, str | int] = {}
        self.decoded = self._decode(ds, ts)
        self.tiles: list[Tile] | None = tile_layout(ds, self.frames, self.rows, self.cols)

    def _decode(self, ds: Dataset, ts: str) -> np.ndarray:
        """All frames as (frames, rows, cols, samples), colour as RGB (pydicom's decoders)."""
        if "file_meta" not in ds.__dict__:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(ts)
        elem = ds.get_item(PIXEL_DATA)
        if isinstance(elem, RawDataElement) and isinstance(elem.value, memoryview):
            # the reader slices pixel data without copying; pydicom's decoders want bytes.
            ds._dict[BaseTag(PIXEL_DATA)] = elem._replace(value=bytes(elem.value))
        try:
            # pydicom annotates **kwargs with its options TypedDict itself, not Unpack[...]
            arr, self.meta = get_decoder(UID(ts)).as_array(
                ds, as_rgb=True)  # type: ignore[arg-type]
        except Exception as exc:  # decoder errors name plugins and formats, never values
            raise BadInput(
                "pixel-decode", f"pixel data cannot be decoded ({type(exc).__name__}, "
                f"transfer syntax {ts})") from None
        return arr.reshape(self.frames, self.rows, self.cols, -1)

    def detection_image(self, data: np.ndarray) -> np.ndarray:
        """A frame (or a window of tiles) as 8-bit RGB, for OCR only."""
        if self.palette:
            return to_detection_image(apply_color_lut(data[..., 0], self._ds))
        if data.shape[2] == 1:
            return to_detection_image(data[..., 0], invert=self.photometric == "MONOCHROME1")
        return to_detection_image(data)

    def views(self) -> Iterator[_View]:
        """What OCR reads: every distinct frame, or the tile-sized windows of a tiled
        image's planes assembled from its tiles (:mod:`.tiles`)."""
        if self.tiles is None:
            seen: set[bytes] = set()
            for frame in self.decoded:
                image = self.detection_image(frame)
                if self.frames > 1:
                    digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
                    if digest in seen:
                        continue
                    seen.add(digest)
                yield _View(image)
            return
        for plane in sorted({t.plane for t in self.tiles}):
            members = [(f, t) for f, t in enumerate(self.tiles) if t.plane == plane]
            height = max(t.row for _, t in members) + self.rows
            width = max(t.col for _, t in members) + self.cols
            grid = {(t.row, t.col): f for f, t in members}
            on_grid = all(t.row % self.rows == 0 and t.col % self.cols == 0 for _, t in members)
            for y in window_starts(height, self.rows):
                for x in window_starts(width, self.cols):
                    window = Box(x, y, min(x + self.cols, width), min(y + self.rows, height))
                    data = np.zeros((window.y1 - y, window.x1 - x, self.decoded.shape[3]),
                                    self.decoded.dtype)
                    # a window of a tile's size meets at most four tiles of the grid
                    near = members if not on_grid else [
                        (grid[key], self.tiles[grid[key]]) for key in (
                            (r, c) for r in {y - y % self.rows, y - y % self.rows + self.rows}
                            for c in {x - x % self.cols, x - x % self.cols + self.cols})
                        if key in grid]
                    for f, t in near:
                        part = t.local(window, self.rows, self.cols)
                        if part is not None:
                            data[t.row + part.y0 - y:t.row + part.y1 - y,
                                 t.col + part.x0 - x:t.col + part.x1 - x] = \
                                self.decoded[f, part.y0:part.y1, part.x0:part.x1]
                    image = self.detection_image(data)
                    if int(image.max()) - int(image.min()) >= _FLAT_RANGE:
                        yield _View(image, plane, y, x)

    def fill_plane(self, plane: int, boxes: list[Box]) -> None:
        """Blank ``boxes`` (in the plane's coordinates) in the tiles of one plane."""
        assert self.tiles is not None
        for f, tile in enumerate(self.tiles):
            if tile.plane == plane:
                local = [b for b in (tile.local(box, self.rows, self.cols) for box in boxes)
                         if b is not None]
                if local:
                    self.fill(local, (f,))

    def fill_value(self, frame: int) -> np.ndarray:
        """The black of this frame in stored values (per sample)."""
        data = self.decoded[frame]
        if self.palette:
            values = np.unique(data)
            rgb = apply_color_lut(values, self._ds).reshape(len(values), -1)
            return np.array([values[int(np.argmin(rgb.astype(np.int64).sum(axis=1)))]])
        if data.shape[2] == 1:
            return np.array([data.max() if self.photometric == "MONOCHROME1" else data.min()])
        return np.zeros(data.shape[2], data.dtype)

    def fill(self, boxes: list[Box],
             frames: Iterable[int] | None = None) -> None:  # pragma: no cover - abstract
        """Blank ``boxes`` in ``frames`` (every frame when None)."""
        raise NotImplementedError

    def store(self, ds: Dataset) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _NativePixels(_Pixels):
    """Uncompressed pixel data, changed in place in its own byte layout."""

    def __init__(self, ds: Dataset, ts: str) -> None:
        super().__init__(ds, ts)
        raw = _bytes_of(ds, PIXEL_DATA)
        if raw is None or self.bits not in (8, 16, 32):
            raise BadInput("pixel-decode", f"native pixel data with {self.bits} bits allocated "
                           "is not supported for pixel cleaning")
        self.buffer = bytearray(raw)
        order = ">" if ts == ExplicitVRBigEndian else "<"
        dtype = np.dtype(f"{order}{'i' if self.signed else 'u'}{self.bits // 8}")
        self.planar = self.spp > 1 and int_value(ds, 0x00280006) == 1
        if self.photometric == "YBR_FULL_422":  # Y1 Y2 Cb Cr per pair of pixels
            dtype, shape = np.dtype(np.uint8), (self.frames, self.rows, self.cols // 2, 4)
            self.planar = False
        elif self.planar:
            shape = (self.frames, self.spp, self.rows, self.cols)
        else:
            shape = (self.frames, self.rows, self.cols, self.spp)
        count = int(np.prod(shape))
        if len(self.buffer) < count * dtype.itemsize:
            raise BadInput("pixel-decode", "pixel data is shorter than its description")
        self.view = np.frombuffer(self.buffer, dtype, count).reshape(shape)

    def fill(self, boxes: list[Box], frames: Iterable[int] | None = None) -> None:
        for f in range(self.frames) if frames is None else frames:
            value = self.fill_value(f)
            for b in boxes:
                if self.photometric == "YBR_FULL_422":
                    c0, c1 = b.x0 // 2, (b.x1 + 1) // 2
                    self.view[f, b.y0:b.y1, c0:c1, 0:2] = 0
                    self.view[f, b.y0:b.y1, c0:c1, 2:4] = 128
                elif self.planar:
                    for s in range(self.spp):
                        self.view[f, s, b.y0:b.y1, b.x0:b.x1] = _ybr_black(self.photometric, s)
                elif self.spp > 1:
                    for s in range(self.spp):
                        self.view[f, b.y0:b.y1, b.x0:b.x1, s] = _ybr_black(self.photometric, s)
                else:
                    self.view[f, b.y0:b.y1, b.x0:b.x1, 0] = value[0]

    def store(self, ds: Dataset) -> None:
        _set_bytes(ds, PIXEL_DATA, bytes(self.buffer))


class _BitPixels(_Pixels):
    """Bit-packed native pixel data (BitsAllocated 1): unpacked to one byte per pixel,
    blanked, and packed back into the same bytes, so every bit outside the boxes (frame
    boundaries inside a byte and trailing padding too) keeps its value.

    Bits are packed little-end first (PS3.5 8.1.1), as pydicom's ``unpack_bits`` reads
    them; in Explicit VR Big Endian an OW value is a run of 16-bit words, so its bytes are
    swapped in pairs before unpacking and after packing.
    """

    def _decode(self, ds: Dataset, ts: str) -> np.ndarray:
        raw = _bytes_of(ds, PIXEL_DATA)
        if raw is None or self.spp != 1:
            raise BadInput("pixel-decode", "1-bit pixel data is supported for pixel cleaning "
                           "only uncompressed, with one sample per pixel")
        elem = ds.get_item(PIXEL_DATA)
        self.swap = ts == ExplicitVRBigEndian and elem is not None and elem.VR == "OW"
        buffer = np.frombuffer(raw, np.uint8)
        if self.swap:
            buffer = _swap_pairs(buffer)
        unpacked = unpack_bits(buffer.tobytes(), as_array=True)
        self.unpacked = np.array(unpacked, np.uint8)  # writable, one byte per bit
        count = self.frames * self.rows * self.cols
        if self.unpacked.size < count:
            raise BadInput("pixel-decode", "pixel data is shorter than its description")
        return self.unpacked[:count].reshape(self.frames, self.rows, self.cols, 1)

    def fill(self, boxes: list[Box], frames: Iterable[int] | None = None) -> None:
        black = 1 if self.photometric == "MONOCHROME1" else 0
        for f in range(self.frames) if frames is None else frames:
            for b in boxes:
                self.decoded[f, b.y0:b.y1, b.x0:b.x1, 0] = black  # a view on self.unpacked

    def store(self, ds: Dataset) -> None:
        packed = np.frombuffer(pack_bits(self.unpacked, pad=False), np.uint8)
        if self.swap:
            packed = _swap_pairs(packed)
        _set_bytes(ds, PIXEL_DATA, packed.tobytes())


class _EncapsulatedPixels(_Pixels):
    """Compressed pixel data: decoded (colour as RGB), blanked, re-encoded losslessly."""

    def __init__(self, ds: Dataset, ts: str) -> None:
        super().__init__(ds, ts)
        self.work = np.array(self.decoded)

    def fill(self, boxes: list[Box], frames: Iterable[int] | None = None) -> None:
        for f in range(self.frames) if frames is None else frames:
            value = self.fill_value(f)
            for b in boxes:
                self.work[f, b.y0:b.y1, b.x0:b.x1, :] = value

    def store(self, ds: Dataset) -> None:
        meta = self.meta
        spp = int(meta.get("samples_per_pixel", self.spp))
        photometric = str(meta.get("photometric_interpretation", self.photometric))
        if spp == 3 and photometric.startswith("YBR"):
            photometric = "RGB"
        bits = int(meta.get("bits_allocated", self.work.dtype.itemsize * 8))
        stored = int(meta.get("bits_stored", int_value(ds, 0x00280101) or bits))
        signed = int(meta.get("pixel_representation", int(self.signed)))
        arr = self.work if spp > 1 else self.work[..., 0]
        if self.frames == 1:
            arr = arr[0]  # the encoders take (rows, cols[, samples]) for one frame
        opts = {"rows": self.rows, "columns": self.cols, "samples_per_pixel": spp,
                "bits_allocated": bits, "bits_stored": stored, "pixel_representation": signed,
                "photometric_interpretation": photometric, "number_of_frames": self.frames,
                "planar_configuration": 0}
        for tag in _EXTENDED_OFFSETS:
            if tag in ds:
                del ds[tag]
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
        ds.PixelRepresentation = signed
        if spp > 1:
            ds.PlanarConfiguration = 0
        if bits in (8, 16) and spp in (1, 3) and _rle_available():
            frames = list(get_encoder(RLELossless).iter_encode(
                arr, **opts))  # type: ignore[arg-type]  # as above: pydicom's **kwargs type
            data = encapsulate(frames, has_bot=True)
            ds._dict[BaseTag(PIXEL_DATA)] = RawDataElement(
                BaseTag(PIXEL_DATA), "OB", 0xFFFFFFFF, data, 0, False, True, True, False)
            out_ts = RLELossless
        else:
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            data += b"\x00" * (len(data) % 2)
            vr = "OB" if bits <= 8 else "OW"
            ds._dict[BaseTag(PIXEL_DATA)] = RawDataElement(
                BaseTag(PIXEL_DATA), vr, len(data), data, 0, False, True, True, False)
            out_ts = ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = UID(out_ts)
        set_output_transfer_syntax(ds, out_ts)


def _distinct_lines(pixels: _Pixels, recognise: bool = True
                    ) -> Iterator[tuple[_View, TextLine, bool]]:
    """The text lines and the codes (flagged True) of every view (an identical frame is
    read once; within one image a line whose pixels were already recognised is not
    recognised again)."""
    with line_cache():
        for view in pixels.views():
            for code in find_codes(view.image):
                yield view, code, True
            for line in find_text(view.image, recognise=recognise):
                yield view, line, False


def read_text_lines(ds: Dataset) -> list[str]:
    """The text OCR reads in ``ds``'s pixel data, every distinct frame, and what its codes
    say (the verification gate's read-back of an output image at risk)."""
    return [line.text for _, line, _ in _distinct_lines(_open_pixels(ds))]


def _is_slide_label(ds: Dataset) -> bool:
    """A whole-slide LABEL image (ImageType value 3): a picture of the slide's label."""
    image_type = [v.strip().upper() for v in text_value(ds, 0x00080008).split("\\")]
    return len(image_type) > 2 and image_type[2] == "LABEL" and (
        text_value(ds, 0x00080016) == _SLIDE_MICROSCOPY
        or text_value(ds, 0x00080060).strip().upper() == "SM")


def _open_pixels(ds: Dataset) -> _Pixels:
    ts = input_transfer_syntax(ds)
    if not ts:
        raise BadInput("pixel-decode", "transfer syntax unknown: cannot clean pixel data")
    if int_value(ds, 0x00280100) == 1:
        if ts not in _NATIVE:
            raise BadInput("pixel-decode", "1-bit pixel data is supported for pixel cleaning "
                           "only uncompressed")
        return _BitPixels(ds, ts)
    if ts in _NATIVE:
        return _NativePixels(ds, ts)
    return _EncapsulatedPixels(ds, ts)


def _swap_pairs(data: np.ndarray) -> np.ndarray:
    """The bytes of ``data`` with each pair swapped (16-bit words of the other endianness)."""
    if data.size % 2:
        raise BadInput("pixel-decode", "OW pixel data has an odd length")
    return data.reshape(-1, 2)[:, ::-1].ravel()


def _rle_available() -> bool:
    return get_encoder(RLELossless).is_available


def _ybr_black(photometric: str, sample: int) -> int:
    """Black for one colour sample: 0, except chroma of YCbCr (centred on 128)."""
    return 128 if photometric.startswith("YBR") and sample > 0 else 0


def _padded(box: Box) -> Box:
    """The box grown by a fraction of the line's thickness: its height, or its width for
    a vertical line (grown by its length, a label along the edge took five times its
    area)."""
    thickness = min(box.y1 - box.y0, box.x1 - box.x0)
    return box.grow(max(2, round(thickness * _MARGIN_FRACTION)))


def _bytes_of(ds: Dataset, tag: int) -> bytes | None:
    """The value bytes of a native OB/OW element (None if absent or encapsulated)."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        if elem.length == 0xFFFFFFFF:
            return None
        return bytes(elem.value or b"")
    value = elem.value
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def _set_bytes(ds: Dataset, tag: int, data: bytes) -> None:
    """Replace the value of a native OB/OW element, keeping its VR."""
    elem = ds.get_item(tag)
    assert elem is not None
    if isinstance(elem, RawDataElement):
        ds._dict[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), elem.VR, len(data), data, 0, elem.is_implicit_VR,
            elem.is_little_endian, True, False)
    else:
        elem.value = data


def _delete_group(ds: Dataset, group: int) -> None:
    for tag in [t for t in ds.keys() if t >> 16 == group]:
        del ds[tag]
