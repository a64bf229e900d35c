"""Synthetic pixel data: phantom-like images, burned-in text, and their native, RLE or JPEG
encoding. Stored values stay small so pixel bytes cannot contain a planted string."""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from .planning import GenerationContext, Patient, Series, Study, is_cine

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""Native (uncompressed) transfer syntaxes: Pixel Data written as plain OB/OW bytes."""

_SIZE = {"CT": (512, 512), "MR": (256, 256), "US": (480, 640), "CR": (1024, 1024), "SC": (512, 512)}
_SMALL_SIZE = {"CT": (32, 32), "MR": (32, 32), "US": (96, 128), "CR": (32, 32), "SC": (96, 128)}
_US_FRAMES = 5


def image_size(kind: str, small: bool) -> tuple[int, int]:
    """(rows, columns) of a series kind's images; tiny ones for tests when ``small``."""
    return (_SMALL_SIZE if small else _SIZE)[kind]


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (open grids, broadcast on use)."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    return y, x


def _ellipse(
    y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse."""
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _ct_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Chest-like slice; stored values 0..~1800 (HU + 1024), always < 4096.

    Keeping 16-bit values below 4096 means every other byte is < 0x10, so the pixel
    stream cannot contain a planted text string.
    """
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.03, 0.03, 4)
    img = np.zeros((rows, cols), np.int16)
    img[_ellipse(y, x, 0.05 + j[0], j[1], 0.62, 0.85)] = 1064
    img[_ellipse(y, x, -0.05, -0.38 + j[2], 0.42, 0.3)] = 224
    img[_ellipse(y, x, -0.05, 0.38 + j[3], 0.42, 0.3)] = 224
    img[_ellipse(y, x, 0.05, 0.1, 0.22, 0.2)] = 1074
    img[_ellipse(y, x, 0.45, 0.0, 0.12, 0.1)] = 1724
    return img


def _mr_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Head-like slice with smooth shading; unsigned values < 4096."""
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.04, 0.04, 2)
    shade = 1.0 - 0.35 * (y * y + x * x)
    img = np.zeros((rows, cols), np.float32)
    img[_ellipse(y, x, j[0], j[1], 0.85, 0.7)] = 700.0
    img[_ellipse(y, x, j[0], j[1], 0.78, 0.63)] = 1500.0
    img[_ellipse(y, x, j[0] - 0.05, j[1] - 0.12, 0.22, 0.07)] = 300.0
    img[_ellipse(y, x, j[0] - 0.05, j[1] + 0.12, 0.22, 0.07)] = 300.0
    return (img * shade).astype(np.uint16)


def _cr_base(nprng: np.random.Generator, rows: int, cols: int, inverse: bool) -> np.ndarray:
    """Chest radiograph-like image; values < 4096, inverted for MONOCHROME1."""
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.03, 0.03, 2)
    img = np.full((rows, cols), 300.0, np.float32)
    img[_ellipse(y, x, 0.1 + j[0], j[1], 0.95, 0.8)] = 2100.0
    img[_ellipse(y, x, -0.05, -0.35, 0.6, 0.28)] = 1100.0
    img[_ellipse(y, x, -0.05, 0.35, 0.6, 0.28)] = 1100.0
    img[:, np.abs(x[0]) < 0.06] = 3200.0
    shaded = img * (1.0 - 0.15 * y)
    out = np.clip(shaded, 0, 4095).astype(np.uint16)
    return (4095 - out).astype(np.uint16) if inverse else out


def _us_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Gray ultrasound sector (uint8), smooth texture."""
    y, x = _grid(rows, cols)
    yy = y + 1.0
    r = np.sqrt(yy * yy + x * x)
    theta = np.arctan2(x, yy)
    fan = (np.abs(theta) < 0.7) & (r < 1.9) & (r > 0.12)
    phase = float(nprng.uniform(0.0, 6.28))
    rings = np.sin(r * 14 + phase) * np.cos(theta * 9)
    tex = 80 + 45 * rings + 60 * np.exp(-((r - 1.0) ** 2) / 0.05)
    tex[_ellipse(y, x, 0.25, 0.12, 0.15, 0.11)] = 12
    return np.where(fan, np.clip(tex, 0, 255), 0).astype(np.uint8)


def base_pixels(ctx: GenerationContext, se: Series) -> np.ndarray:
    """One base image per series; instances vary it cheaply."""
    rows, cols = image_size(se.kind, ctx.small)
    if se.kind == "CT":
        return _ct_base(ctx.nprng, rows, cols)
    if se.kind == "MR":
        return _mr_base(ctx.nprng, rows, cols)
    if se.kind == "CR":
        return _cr_base(ctx.nprng, rows, cols, se.monochrome1)
    if se.kind == "US":
        return _us_base(ctx.nprng, rows, cols)
    return np.zeros((rows, cols), np.uint8)


def _slice_pixels(base: np.ndarray, kind: str, k: int) -> np.ndarray:
    """Instance ``k`` of a series: a per-slice offset or shift of the base image."""
    if kind in ("CT", "MR"):
        return base + (base > 0).astype(base.dtype) * np.asarray(k % 13 * 3, base.dtype)
    if kind == "CR":
        return np.roll(base, k * 3, axis=1)
    return base


def _us_frames(base: np.ndarray, frames: int, k: int) -> np.ndarray:
    """RGB frames (n, rows, cols, 3): a shifted gray sector with a red 'Doppler' blob."""
    out = []
    for f in range(frames):
        gray = np.roll(base, (k + f) * 2, axis=1)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rows, cols = gray.shape
        r0, c0 = rows // 2 + f, cols // 2
        rgb[r0 : r0 + rows // 10, c0 : c0 + cols // 12, 0] = 200
        out.append(rgb)
    return np.stack(out)


def _draw_lines(
    arr: np.ndarray, lines: Sequence[str], font: Any, top: int, banner: bool
) -> np.ndarray:
    """Draw white text lines (optionally over a black top banner) into a uint8 image."""
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    size = int(getattr(font, "size", 10))
    white: int | tuple[int, int, int] = (255, 255, 255) if arr.ndim == 3 else 255
    black: int | tuple[int, int, int] = (0, 0, 0) if arr.ndim == 3 else 0
    if banner:
        draw.rectangle([0, 0, arr.shape[1], top + size * len(lines) + 4], fill=black)
    for i, line in enumerate(lines):
        draw.text((4, top + i * (size + 4)), line, fill=white, font=font)
    return np.asarray(img)


def _burn(ctx: GenerationContext, kind: str) -> bool:
    """Exactly ``burned_in_fraction`` of each kind, evenly spread, the first one included."""
    k = ctx.next_of(ctx.burn_counter, kind)
    f = ctx.burned_in_fraction
    return int((k + 1) * f + 1 - f) > int(k * f + 1 - f)


_BANNER_INSTITUTION_WIDTH = 30
"""Characters an ultrasound banner has for the institution: longer names are cut."""


def banner_name(ctx: GenerationContext, p: Patient) -> str:
    """The patient's name as an ultrasound banner spells it, unlike the header: ASCII
    "FAMILY, GIVEN" or "FAMILY^G" (romaji where the header has kanji, folded Latin)."""
    family, given = p.roman.split(", ", 1)
    forms = (p.roman, f"{family}^{given[0]}")
    return forms[ctx.next_of(ctx.burn_counter, "US-name") % len(forms)]  # each in turn


def _us_pixels(
    ctx: GenerationContext, p: Patient, st: Study, base: np.ndarray, k: int, multiframe: bool
) -> tuple[np.ndarray, list[str]]:
    """US frames, with a top banner naming the patient and the (cut) institution on a
    fraction of them."""
    frames = _us_frames(base, _US_FRAMES if multiframe else 1, k)
    if not _burn(ctx, "US"):
        return frames, []
    text = [banner_name(ctx, p), p.patient_id, st.dmy]
    institution = st.site.name[:_BANNER_INSTITUTION_WIDTH].rstrip()
    font = ctx.font(9 if ctx.small else 16)
    lines = ["   ".join(text), institution]
    frames = np.stack([_draw_lines(f, lines, font, 2, banner=True) for f in frames])
    return frames, [*text, institution]


def _sc_pixels(
    ctx: GenerationContext, p: Patient, st: Study, base: np.ndarray
) -> tuple[np.ndarray, list[str], list[str]]:
    """Dose screen: white text on black; identity lines only on a fraction of them."""
    dlp = ctx.rng.uniform(150, 900)
    ctdi = ctx.rng.uniform(4, 25)
    other = [f"CTDIvol {ctdi:.1f} mGy", f"Total DLP {dlp:.1f} mGy-cm"]
    burned = [p.roman, p.patient_id, st.dmy] if _burn(ctx, "SC") else []
    lines = [burned[0], f"{burned[1]}  {burned[2]}", *other] if burned else other
    font = ctx.font(9 if ctx.small else 20)
    img = _draw_lines(base.copy(), lines, font, 4, banner=False)
    return img[None, ...], burned, other


def image_pixels(
    ctx: GenerationContext, p: Patient, st: Study, se: Series, base: np.ndarray, k: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """This instance's frames, identifying burned-in strings and other burned-in text."""
    if se.kind == "US":
        frames, burned = _us_pixels(ctx, p, st, base, k, multiframe=is_cine(se, k))
        return frames, burned, []
    if se.kind == "SC":
        return _sc_pixels(ctx, p, st, base)
    return _slice_pixels(base, se.kind, k)[None, ...], [], []


def png_bytes() -> bytes:
    """A small PNG (a stray screenshot in the landing zone)."""
    y, x = _grid(48, 64)
    img = (np.clip(128 + 100 * np.sin(6 * x) * np.cos(4 * y), 0, 255)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_frames(frames: np.ndarray) -> list[bytes]:
    """Baseline JPEG per RGB frame, 4:2:2 chroma (matches YBR_FULL_422)."""
    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=90, subsampling=1)
        out.append(buf.getvalue())
    return out


def _packbits_rows(plane: np.ndarray) -> bytes:
    """PackBits-encode each row of a 2-D uint8 array: one DICOM RLE segment (PS3.5 G.3.1).

    Vectorised (pydicom's pure-Python encoder needs ~70 ms per 512x512 frame). Runs of two
    or more equal bytes become replicate packets, the rest literal packets; no packet
    crosses a row, and every packet is at most 128 bytes long.
    """
    cols = plane.shape[1]
    flat = plane.ravel()
    size = flat.size
    change = np.ones(size, bool)
    change[1:] = flat[1:] != flat[:-1]
    change[::cols] = True
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, size))
    pieces = (lengths + 127) // 128
    run = np.repeat(np.arange(starts.size), pieces)
    within = np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    p_start = starts[run] + within * 128
    p_len = np.minimum(lengths[run] - within * 128, 128)
    literal = p_len == 1
    index = np.arange(p_len.size)
    row = p_start // cols
    follows = np.concatenate(([False], literal[:-1] & (row[1:] == row[:-1])))
    seq_start = np.maximum.accumulate(np.where(literal & ~follows, index, 0))
    head = literal & (~follows | ((index - seq_start) % 128 == 0))
    group = np.cumsum(head) - 1
    counts = np.bincount(group[literal], minlength=int(head.sum()))
    out_len = np.where(literal, 1 + head, 2)
    pos = np.cumsum(out_len) - out_len
    out = np.empty(int(out_len.sum()), np.uint8)
    rep = ~literal
    out[pos[rep]] = (257 - p_len[rep]).astype(np.uint8)
    out[pos[rep] + 1] = flat[p_start[rep]]
    out[pos[head]] = (counts[group[head]] - 1).astype(np.uint8)
    out[pos[literal] + head[literal]] = flat[p_start[literal]]
    data = out.tobytes()
    return data + b"\x00" if len(data) % 2 else data


def rle_frame(frame: np.ndarray) -> bytes:
    """One RLE Lossless frame: 64-byte header, then one segment per byte plane (MSB first)."""
    if frame.dtype.itemsize == 2:
        word = np.ascontiguousarray(frame).view(np.uint16)
        planes = [(word >> 8).astype(np.uint8), (word & 0xFF).astype(np.uint8)]
    elif frame.ndim == 3:
        planes = [np.ascontiguousarray(frame[..., i]) for i in range(frame.shape[2])]
    else:
        planes = [frame]
    segments = [_packbits_rows(p) for p in planes]
    offsets = np.cumsum([64] + [len(s) for s in segments[:-1]]).tolist()
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(segments))))
    return header + b"".join(segments)


def set_pixel_data(dyn: Dataset, frames: np.ndarray, ts: str) -> None:
    """Pixel Data in the series' transfer syntax (native, RLE or JPEG Baseline)."""
    if ts in UNCOMPRESSED:
        vr = "OW" if frames.dtype.itemsize > 1 else "OB"
        dyn.add_new(0x7FE00010, vr, frames.tobytes())
        return
    if ts == RLELossless:
        encoded = [rle_frame(f) for f in frames]
    else:
        encoded = _jpeg_frames(frames)
        dyn.LossyImageCompressionRatio = f"{frames.nbytes / sum(map(len, encoded)):.2f}"
    dyn.add_new(0x7FE00010, "OB", encapsulate(encoded, has_bot=len(encoded) > 1))
    dyn["PixelData"].is_undefined_length = True
