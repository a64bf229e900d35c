"""Thumbnails a reviewer looks at before release: first, middle and last frame of an output.

Each shown frame is decoded on its own (never the whole multi-frame array), mapped for
display the way a viewer would (modality LUT, then the VOI window or LUT, MONOCHROME1
inverted, palette and YBR turned to RGB), shrunk with Pillow, and marked: overlay planes
in yellow (they are graphics a reviewer must see, they may spell a name) and the redacted
rectangles outlined in red (so the reviewer can check they cover the burned-in text).
The PNGs carry no metadata chunk and are byte-for-byte reproducible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_deid.errors import BadInput

__all__ = ["MAX_SIDE", "Thumbnail", "frames_to_show", "render_thumbnails"]

MAX_SIDE = 256  # a thumbnail's longer side, in pixels

OVERLAY_COLOUR = (255, 255, 0)  # yellow: overlay graphics
BOX_COLOUR = (255, 0, 0)  # red: redacted rectangles
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
_MONO = ("MONOCHROME1", "MONOCHROME2")
# What the display mapping of one frame reads; enhanced multi-frame objects carry the
# same attributes per frame in these functional group macros.
_LUT_KEYWORDS = ("PhotometricInterpretation", "BitsStored", "PixelRepresentation",
                 "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence",
                 "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence")
_FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Thumbnail:
    """One shown frame as a PNG file."""

    frame: int  # 0-based frame index in the image
    png: bytes  # the PNG file
    width: int
    height: int


def frames_to_show(count: int) -> list[int]:
    """First, middle and last frame (distinct, sorted) of an image with `count` frames."""
    if count <= 0:
        return []
    return sorted({0, (count - 1) // 2, count - 1})


def render_thumbnails(
    data: bytes,
    boxes: Sequence[tuple[int, int, int, int]] = (),
    max_side: int = MAX_SIDE,
) -> tuple[list[Thumbnail], int, int]:
    """Thumbnails of the first, middle and last frame of the DICOM file `data` (already
    de-identified output bytes), and the image's frame count and number of overlay planes
    drawn. `boxes`: redacted rectangles (x0, y0, x1, y1; x1/y1 exclusive, in the image's
    pixel coordinates) outlined on every thumbnail. Raises
    dicom_deid.errors.BadInput("pixel-decode", <PHI-free reason>) when pixels cannot be
    decoded. A file without pixel data has no thumbnail: ([], 0, 0).
    """
    # Warnings from pydicom may quote element values: never let them reach a log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _read(data)
        if not any(kw in ds for kw in ("PixelData", "FloatPixelData",
                                       "DoubleFloatPixelData")):
            return [], 0, 0
        count = _frame_count(ds)
        rows, columns = _size(ds)
        overlays = _overlay_planes(ds, rows, columns)
        thumbs: list[Thumbnail] = []
        drawn: set[int] = set()
        for frame in frames_to_show(count):
            image = _display(ds, frame, max_side)
            planes = [(g, _plane_for(first, m, frame)) for g, first, m in overlays]
            planes = [(g, p) for g, p in planes if p.any()]
            if planes or boxes:
                image = image.convert("RGB")
            for group, plane in planes:
                _draw_mask(image, plane)
                drawn.add(group)
            _draw_boxes(image, boxes, columns, rows)
            thumbs.append(Thumbnail(frame, _png(image), image.width, image.height))
    return thumbs, count, len(drawn)


def _read(data: bytes) -> Dataset:
    """The dataset in `data`, or BadInput without a word of the file in it."""
    try:
        return pydicom.dcmread(BytesIO(data))
    except Exception as exc:
        raise BadInput("pixel-decode",
                       f"file cannot be read as DICOM ({type(exc).__name__})") from None


def _frame_count(ds: Dataset) -> int:
    """Number of Frames, 1 when absent or empty."""
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise BadInput("pixel-decode", "(0028,0008) Number of Frames is not a number") \
            from None
    if count < 1:
        raise BadInput("pixel-decode", "(0028,0008) Number of Frames is below 1")
    return count


def _size(ds: Dataset) -> tuple[int, int]:
    """(Rows, Columns) of the image."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise BadInput("pixel-decode", "(0028,0010) Rows or (0028,0011) Columns missing") \
            from None
    if rows < 1 or columns < 1:
        raise BadInput("pixel-decode", "(0028,0010) Rows or (0028,0011) Columns is 0")
    return rows, columns


def _decode(ds: Dataset, frame: int) -> Array:
    """Frame `frame` alone, as pydicom decodes it (YBR_FULL/YBR_FULL_422 come back RGB)."""
    try:
        return pydicom.pixels.pixel_array(ds, index=frame)
    except Exception as exc:
        raise BadInput("pixel-decode",
                       f"pixel data of frame {frame + 1} cannot be decoded "
                       f"({type(exc).__name__})") from None


def _display(ds: Dataset, frame: int, max_side: int) -> Image.Image:
    """Frame `frame` shrunk to `max_side`, as 8-bit grey ("L") or "RGB"."""
    arr = _decode(ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if arr.ndim == 2 and photometric == "PALETTE COLOR":
        try:
            rgb = _to_8bit_colour(pydicom.pixels.apply_color_lut(arr, ds), 16)
        except Exception as exc:
            raise BadInput("pixel-decode", "palette colour lookup table cannot be applied "
                           f"({type(exc).__name__})") from None
        return _shrink(Image.fromarray(rgb), max_side)
    if arr.ndim == 3:
        rgb = _to_8bit_colour(arr, int(ds.get("BitsStored") or arr.dtype.itemsize * 8))
        return _shrink(Image.fromarray(rgb), max_side)
    if arr.ndim != 2:
        raise BadInput("pixel-decode", "pixel data of a frame is not one plane")
    view = _frame_view(ds, frame)
    # Shrink the modality values first (Pillow's float mode), window the thumbnail: the
    # same picture at a fraction of the work on a large frame.
    values = np.asarray(_shrink(Image.fromarray(_modality(arr, view)), max_side))
    scaled = _grey(values, view)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255.0).astype(np.uint8))


def _to_8bit_colour(arr: Array, bits: int) -> Array:
    """RGB samples of `bits` bits (clipped when a file says fewer than it uses) to 8-bit."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr[..., :3])
    values = np.nan_to_num(arr[..., :3].astype(np.float64))
    top = float(2 ** min(max(bits, 1), 32) - 1)
    if values.max(initial=0.0) <= 255.0:  # 16-bit LUTs and samples that hold 8-bit values
        top = 255.0
    return np.round(np.clip(values / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """The attributes the grey mapping of `frame` reads, per-frame macros applied over the
    top-level ones (enhanced multi-frame objects); `ds` itself when it has no such macro."""
    items = []
    for keyword, index in (("SharedFunctionalGroupsSequence", 0),
                           ("PerFrameFunctionalGroupsSequence", frame)):
        groups = ds.get(keyword)
        if groups is not None and index < len(groups):
            items += [groups[index][m][0] for m in _FRAME_MACROS
                      if m in groups[index] and len(groups[index][m].value)]
    if not items:
        return ds
    view = Dataset()
    view.file_meta = ds.file_meta  # the LUT readers need the byte order
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    for item in items:
        for elem in item:
            view[elem.tag] = elem
    return view


def _modality(arr: Array, ds: Dataset) -> Array:
    """Stored values through the modality LUT or rescale, as float32 without NaN."""
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr)
    try:
        values = pydicom.pixels.apply_modality_lut(arr, ds)
    except Exception:
        values = arr  # a broken modality LUT: the stored values still show the image
    return np.ascontiguousarray(values, dtype=np.float32)


def _grey(values: Array, ds: Dataset) -> Array:
    """Modality values to [0, 1]: the VOI window or LUT, else the 0.5-99.5 percentile
    range of the frame."""
    values = values.astype(np.float64)
    try:
        windowed = _voi(values, ds)
    except Exception:
        windowed = None  # a broken VOI: fall back to the frame's own range
    if windowed is not None:
        return windowed
    low, high = np.percentile(values, (0.5, 99.5))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _voi(values: Array, ds: Dataset) -> Array | None:
    """The VOI LUT (preferred) or first window of `ds` applied to `values`, in [0, 1];
    None when `ds` has neither (PS3.3 C.11.2)."""
    lut = ds.get("VOILUTSequence")
    if lut and "LUTData" in lut[0] and "LUTDescriptor" in lut[0]:
        entries, first_mapped = int(lut[0].LUTDescriptor[0] or 65536), lut[0].LUTDescriptor[1]
        apply = pydicom.pixels.apply_voi
        out = apply(np.round(values).astype(np.int64), ds).astype(np.float64)
        # The LUT's own output range: descriptors often claim more bits than it uses.
        table = apply(np.arange(first_mapped, first_mapped + entries), ds)
        low, high = float(table.min()), float(table.max())
        return np.clip((out - low) / (high - low), 0.0, 1.0) if high > low else None
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = (float(_first(ds[k].value)) for k in ("WindowCenter", "WindowWidth"))
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function == "SIGMOID" and width > 0:
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT" and width > 0:
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width > 1:  # LINEAR, also for an unknown function
        return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return None


def _first(value: Any) -> Any:
    """The first value of a multi-valued element, the value of a single-valued one."""
    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` with its longer side at most `max_side`, aspect kept, never enlarged."""
    scale = max_side / max(image.width, image.height)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _overlay_planes(ds: Dataset, rows: int, columns: int) -> list[tuple[int, int, Array]]:
    """(group, first image frame, masks) of every overlay plane with Overlay Data: masks
    (overlay frames, rows, columns) in image coordinates (Overlay Origin applied), overlay
    frame k drawn on image frame first + k (Image Frame Origin). Planes pydicom cannot
    read are left out: they are graphics, not the image."""
    planes = []
    for group in _OVERLAY_GROUPS:
        if (group, 0x3000) not in ds:
            continue
        try:
            bits = np.asarray(ds.overlay_array(group)) != 0
            origin = ds.get((group, 0x0050))
            top, left = (int(v) - 1 for v in origin.value) if origin else (0, 0)
            first = ds.get((group, 0x0051))
            first_frame = max(0, int(first.value) - 1) if first and first.value else 0
        except Exception:
            continue
        if bits.ndim == 2:
            bits = bits[np.newaxis]
        masks = np.zeros((bits.shape[0], rows, columns), dtype=bool)
        src = bits[:, max(0, -top):max(0, rows - top), max(0, -left):max(0, columns - left)]
        y, x = max(0, top), max(0, left)
        masks[:, y:y + src.shape[1], x:x + src.shape[2]] = src
        planes.append((group, first_frame, masks))
    return planes


def _plane_for(first_frame: int, masks: Array, frame: int) -> Array:
    """The overlay mask of image frame `frame`: its own when the overlay has one, else
    the overlay's first (a reviewer sees too much rather than too little)."""
    k = frame - first_frame
    return masks[k] if 0 <= k < masks.shape[0] else masks[0]


def _draw_mask(image: Image.Image, mask: Array) -> None:
    """Paint the set pixels of `mask` (image coordinates) on `image` (thumbnail
    coordinates): each set pixel lights the thumbnail pixel it falls in, so a one-pixel
    line survives shrinking."""
    ys, xs = np.nonzero(mask)
    out = np.array(image)
    out[ys * image.height // mask.shape[0], xs * image.width // mask.shape[1]] = \
        OVERLAY_COLOUR
    image.paste(Image.fromarray(out))


def _draw_boxes(image: Image.Image, boxes: Sequence[tuple[int, int, int, int]],
                columns: int, rows: int) -> None:
    """Outline each rectangle (image coordinates, x1/y1 exclusive) on `image`."""
    draw = ImageDraw.Draw(image)
    sx, sy = image.width / columns, image.height / rows
    line = 1 if min(image.width, image.height) < 64 else 2
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(columns, x1), min(rows, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        left, top = int(x0 * sx), int(y0 * sy)
        right = max(left, min(image.width, math.ceil(x1 * sx)) - 1)
        bottom = max(top, min(image.height, math.ceil(y1 * sy)) - 1)
        draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=line)


def _png(image: Image.Image) -> bytes:
    """`image` as PNG bytes: IHDR, IDAT, IEND (PLTE for palette images), nothing else."""
    out = BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()
