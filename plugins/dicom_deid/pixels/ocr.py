"""Find text lines in an image with rapidocr's OCR models.

The engine is created lazily, once per process, the first time an image actually needs
OCR: runs without burned-in text redaction never import onnxruntime. Models are given
by explicit file path, so rapidocr never tries to download anything, and inference runs
single-threaded (workers are already one process per core) which also keeps the output
deterministic from run to run. Recognised text is returned to the caller for matching
and must never be logged.

Detection, four fifths of the cost, runs an 8-bit integer copy of the wheel's detection
model (``data/``, built by :mod:`.quantize`: about four times faster, and it found
every line the original found on held-out images) on CPUs whose integer dot products
cannot saturate (VNNI); elsewhere the wheel's own model. A caller that needs no text
(``REDACT_ALL_TEXT``) skips recognition of ordinary lines.

The detector sees an image at most :data:`MAX_SIDE` pixels on its longest side. A larger
one (a mammogram, a CR, a stitched long-leg view) is also read in overlapping tiles at
its own scale, so a 14 px label is not shrunk to 4 px and lost; the pieces of a line cut
by a tile's edge are joined again. A region thicker than a line of text can be (the
detector outlining an organ, or very large lettering) is kept only when it reads as
text. Vertical lines are read both ways up (a label written bottom to top as well as
top to bottom).

Multi-frame images (cine loops) repeat most of their text from frame to frame: inside
:func:`line_cache` a line image whose pixels were already read is not recognised again
(detection still runs on every frame, so text that appears in one frame only is found).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_SIDE", "Box", "TextLine", "detect", "detection_model", "find_text",
           "line_cache", "models_dir", "read_lines", "to_detection_image"]

_DET_MODEL = "PP-OCRv6_det_small.onnx"
_REC_MODEL = "PP-OCRv6_rec_small.onnx"
DET_INT8_MODEL = "PP-OCRv6_det_small.int8.onnx"
"""The detection model quantised to 8-bit integers, in this package's ``data/``."""
_EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
"""x86 features whose uint8 x int8 dot products never saturate: without them onnxruntime
multiplies with an instruction that can clamp intermediate sums, which may cost recall."""
MAX_SIDE = 960
"""Images are never upscaled for detection; larger ones are scaled down to this side."""
_MAX_LINE_FRACTION = 0.15
_MAX_LINE_MIN = 64
"""A "line" thicker than max(64 px, 15 % of the image) is usually the detector outlining
image content (an ultrasound sector, a bright organ): kept only if it reads as text."""
_THICK_MIN_SCORE = 0.7
"""How sure the recogniser must be that a thick region is text (anatomy reads as noise
with low confidence; large clean lettering reads at 0.9 and more)."""
_THICK_MIN_ASPECT = 2.0
"""A thick region is read only if it is at least this many times longer than thick (a
word of two letters or more): a rounder one is an organ or the image outlined."""
_TILE_ABOVE = 1.25
"""An image whose longest side exceeds this many times MAX_SIDE is also read in tiles."""
_TILE_OVERLAP = 160
"""Tiles overlap by this many pixels: a word shorter than that lies whole in one tile."""
_FLAT_RANGE = 16
"""A tile whose samples span fewer grey levels holds no legible text (skipped)."""


@dataclass(frozen=True, order=True)
class Box:
    """An axis-aligned pixel rectangle, ``x0``/``y0`` inclusive, ``x1``/``y1`` exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    def clip(self, rows: int, cols: int) -> Box | None:
        """This box limited to a ``rows`` x ``cols`` image (None when nothing is left)."""
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x1, cols), min(self.y1, rows)
        return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def grow(self, margin: int) -> Box:
        """The box with ``margin`` pixels added on every side (not clipped)."""
        return Box(self.x0 - margin, self.y0 - margin, self.x1 + margin, self.y1 + margin)


@dataclass(frozen=True)
class TextLine:
    """One detected line of text: where it is and what it reads (PHI: never log ``text``);
    ``text`` is empty and ``score`` 0 when the line was only detected."""

    box: Box
    text: str
    score: float

    def __repr__(self) -> str:
        return f"TextLine({self.box!r}, <{len(self.text)} chars>, {self.score:.2f})"


def models_dir() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).resolve().parent / "models"


class _CachedRecognizer:
    """Wraps rapidocr's text recogniser: while :attr:`active`, a line image with the same
    pixels as one already recognised gets the same result without running the model."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.active = False
        self.results: dict[bytes, tuple[str, float, Any]] = {}
        self.calls = 0
        """Line images actually sent to the model (for tests and benchmarks)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, args: Any) -> Any:
        imgs = [args.img] if isinstance(args.img, np.ndarray) else list(args.img)
        if not self.active:
            self.calls += len(imgs)
            return self.inner(args)
        keys = [_pixels_key(img) for img in imgs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.results))
        if todo:
            first = [imgs[keys.index(k)] for k in todo]
            self.calls += len(todo)
            out = self.inner(type(args)(img=first, return_word_box=args.return_word_box))
            for k, txt, score, words in zip(todo, out.txts, out.scores, out.word_results,
                                            strict=True):
                self.results[k] = (txt, score, words)
        found = [self.results[k] for k in keys]
        return _rec_output_type()(imgs, tuple(f[0] for f in found), [f[1] for f in found],
                                  tuple(f[2] for f in found), 0.0)


def _rec_output_type() -> Any:
    from rapidocr.ch_ppocr_rec.typings import TextRecOutput

    return TextRecOutput


def _pixels_key(img: np.ndarray) -> bytes:
    digest = hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16)
    digest.update(repr((img.shape, img.dtype.str)).encode())
    return digest.digest()


@contextmanager
def line_cache() -> Iterator[None]:
    """Within this block, recognise each distinct line image once (one image's frames)."""
    rec = _recognizer()
    if rec is None:
        yield
        return
    rec.active, rec.results = True, {}
    try:
        yield
    finally:
        rec.active, rec.results = False, {}


def _recognizer() -> _CachedRecognizer | None:
    rec = getattr(_engine(), "text_rec", None)
    return rec if isinstance(rec, _CachedRecognizer) else None


def _cpu_flags() -> frozenset[str]:
    """The instruction set flags Linux reports for this CPU (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def detection_model() -> Path:
    """The detection model this process uses: the int8 copy where its arithmetic is exact."""
    if _cpu_flags() & _EXACT_INT8_FLAGS:
        return Path(__file__).resolve().parent / "data" / DET_INT8_MODEL
    return models_dir() / _DET_MODEL


@cache
def _engine() -> Any:
    """The OCR engine of this process, built on first use: the wheel's recognition model,
    the detection model :func:`detection_model` chooses."""
    from rapidocr import RapidOCR

    models = models_dir()
    for name in (_DET_MODEL, _REC_MODEL):
        if not (models / name).is_file():
            raise RuntimeError(f"rapidocr model {name} is missing from the installed wheel")
    det_model = detection_model()
    if not det_model.is_file():
        raise RuntimeError(f"detection model {det_model.name} is missing from the package")
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.use_cls": False,  # burned-in annotations are upright
            "Global.text_score": 0.0,  # keep every detected line: dropping one leaks it
            "Det.model_path": str(det_model),
            "Rec.model_path": str(models / _REC_MODEL),
            "Det.limit_type": "max",
            "Det.limit_side_len": MAX_SIDE,
            "Det.mean": [0.5, 0.5, 0.5],  # as _NORMALISED computes them
            "Det.std": [0.5, 0.5, 0.5],
            "Rec.rec_batch_num": 1,  # see read_lines
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    load_rec = getattr(engine, "_load_rec_model", None)
    if callable(load_rec) and hasattr(engine, "text_rec"):  # rapidocr 3.x internals
        setattr(engine, "text_rec", _CachedRecognizer(load_rec()))  # noqa: B010 - untyped
    return engine


def to_detection_image(frame: np.ndarray, invert: bool = False) -> np.ndarray:
    """An 8-bit RGB rendering of one frame for OCR only (the stored pixels are untouched).

    Monochrome frames of any depth are windowed linearly from their minimum to their
    maximum (burned-in text sits at an extreme of the range, so it stays crisp);
    ``invert`` flips MONOCHROME1 so text appears as displayed.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3:  # colour deeper than 8 bits
        arr = arr.astype(np.float64)
        top = float(arr.max()) or 1.0
        return np.ascontiguousarray((arr * (255.0 / top)).astype(np.uint8))
    lo, hi = float(arr.min()), float(arr.max())
    if hi > lo:
        gray = ((arr.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    else:
        gray = np.zeros(arr.shape, np.uint8)
    if invert:
        gray = 255 - gray
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


@dataclass(frozen=True, eq=False)
class _Found:
    """One detected region: its quadrilateral (4 x 2 float32), enclosing box, and whether
    it is thicker than a line of text (kept only if it reads as text)."""

    quad: np.ndarray
    box: Box
    thick: bool


def _box_of(quad: np.ndarray) -> Box:
    return Box(int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
               int(np.ceil(quad[:, 0].max())) + 1, int(np.ceil(quad[:, 1].max())) + 1)


def _sides(quad: np.ndarray) -> tuple[float, float]:
    """The quadrilateral's length along its first edge and across it (as rapidocr crops)."""
    along = max(float(np.linalg.norm(quad[0] - quad[1])), float(np.linalg.norm(quad[2] - quad[3])))
    across = max(float(np.linalg.norm(quad[0] - quad[3])), float(np.linalg.norm(quad[1] - quad[2])))
    return along, across


def _is_vertical(quad: np.ndarray) -> bool:
    """Whether rapidocr's crop of this line is turned a quarter (a vertical line)."""
    along, across = _sides(quad)
    return along > 0 and across / along >= 1.5


def find_text(image: np.ndarray, recognise: bool = True) -> list[TextLine]:
    """Text lines in an 8-bit RGB image (see :func:`to_detection_image`), top to bottom.

    Without ``recognise`` every detected line is returned with empty text (its box is all
    a caller blanking all text needs); otherwise lines read as blank are left out. Thick
    regions are always recognised, and kept only when they read as text.
    """
    found = detect(image)
    if not found:
        return []
    read = [f for f in found if recognise or f.thick]
    texts = dict(zip((id(f) for f in read), read_lines(image, [f.quad for f in read]),
                     strict=True))
    lines = []
    for f in found:
        text, score = texts.get(id(f), ("", 0.0))
        if f.thick and not _reads_as_text(text, score):
            continue  # image content the detector outlined
        if recognise and not text.strip():
            continue
        lines.append(TextLine(f.box, text if recognise else "", score if recognise else 0.0))
    lines.sort(key=lambda line: (line.box.y0, line.box.x0))
    return lines


def _reads_as_text(text: str, score: float) -> bool:
    return score >= _THICK_MIN_SCORE and sum(ch.isalnum() for ch in text) >= 2


def detect(image: np.ndarray) -> list[_Found]:
    """The text regions detected in an 8-bit RGB image, each marked thick when it is
    thicker than a line of text can be (the detector outlining image content, or very
    large lettering: :func:`find_text` keeps those only if they read as text); a thick
    region less than twice as long as it is thick is no line and is left out.

    An image larger than :data:`MAX_SIDE` (by :data:`_TILE_ABOVE`) is read whole, scaled
    down, for lettering too large for a tile, and in overlapping tiles at its own scale;
    the pieces of one line are joined (:func:`_joined`).
    """
    rows, cols = image.shape[:2]
    quads = _detect_once(image)
    if max(rows, cols) > MAX_SIDE * _TILE_ABOVE:
        # the scaled-down pass only for what no tile can hold whole
        quads = [q for q in quads if min(_sides(q)) > _TILE_OVERLAP / 2]
        for y0 in _tile_starts(rows):
            for x0 in _tile_starts(cols):
                tile = image[y0:y0 + MAX_SIDE, x0:x0 + MAX_SIDE]
                if int(tile.max()) - int(tile.min()) < _FLAT_RANGE:
                    continue
                offset = np.array([x0, y0], np.float32)
                quads += [q + offset for q in _detect_once(np.ascontiguousarray(tile))]
        quads = _joined(quads)
    # what the detector saw: the image, or on a large one a tile (a 614 px "line" on a
    # 4,096-row mammogram is an outline of tissue, not lettering to blank unread)
    thickest = max(_MAX_LINE_MIN, round(min(rows, MAX_SIDE) * _MAX_LINE_FRACTION))
    found = []
    for q in quads:
        short, long = sorted(_sides(q))
        thick = short > thickest
        if thick and long < short * _THICK_MIN_ASPECT:
            continue  # an organ, a sector, the image itself: no line of lettering
        found.append(_Found(np.ascontiguousarray(q, np.float32), _box_of(q), thick))
    return found


def _tile_starts(size: int) -> list[int]:
    if size <= MAX_SIDE:
        return [0]
    step = MAX_SIDE - _TILE_OVERLAP
    return [*range(0, size - MAX_SIDE, step), size - MAX_SIDE]


def _joined(quads: list[np.ndarray]) -> list[np.ndarray]:
    """Regions found in overlapping tiles, with the pieces of one line (cut by a tile's
    edge, or found whole in one tile and in part in the next) joined into the smallest
    rectangle around them, turned as the line runs; a region that joins nothing keeps
    its own quadrilateral. A join that comes out thicker than its pieces (lines one
    above the other, however slanted) is undone: each piece stays a line of its own."""
    shapes = [_Shape.of(q) for q in quads]
    parent = list(range(len(quads)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):
            if _same_line(shapes[i], shapes[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(quads)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(quads[members[0]])
            continue
        joined = _enclosing(np.concatenate([quads[i] for i in members]))
        if min(_sides(joined)) > 1.5 * max(shapes[i].thickness for i in members):
            out += [quads[i] for i in members]
        else:
            out.append(joined)
    return out


@dataclass(frozen=True)
class _Shape:
    """A region as a line: its centre, the unit vector it runs along, its length along
    that and its thickness across it."""

    centre: np.ndarray
    along: np.ndarray
    length: float
    thickness: float

    @classmethod
    def of(cls, quad: np.ndarray) -> _Shape:
        first, second = _sides(quad)
        vector, length, thickness = (quad[1] - quad[0], first, second) if first >= second \
            else (quad[3] - quad[0], second, first)
        norm = float(np.linalg.norm(vector))
        along = vector / norm if norm else np.array([1.0, 0.0], np.float32)
        return cls(quad.mean(axis=0), along, length, thickness)


def _same_line(a: _Shape, b: _Shape) -> bool:
    """Whether two regions are pieces of one line: running the same way (the longer
    piece's direction), their centres on one line across it (within half the thinner
    one's thickness), and overlapping or touching along it."""
    ref = a if a.length >= b.length else b
    thickness = min(a.thickness, b.thickness)
    offset = b.centre - a.centre
    across = abs(float(offset[0] * ref.along[1] - offset[1] * ref.along[0]))
    gap = abs(float(offset @ ref.along)) - (a.length + b.length) / 2
    return across <= 0.5 * thickness and gap <= 0.25 * thickness


def _enclosing(points: np.ndarray) -> np.ndarray:
    """The smallest rectangle around ``points``, clockwise from its top left (the first
    edge along the top: a tall one is then read as a vertical line)."""
    import cv2

    corners = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32)))
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    top_left, bottom_left = left[np.argsort(left[:, 1], kind="stable")]
    top_right, bottom_right = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([top_left, top_right, bottom_right, bottom_left], np.float32)


def _detect_once(image: np.ndarray) -> list[np.ndarray]:
    """rapidocr's own detection steps (its bounds on the image size, vertical padding of
    very wide images, resizing to multiples of 32, DB post-processing) with the input
    normalised by table lookup: the quadrilaterals found, in ``image``'s coordinates."""
    from rapidocr.utils.process_img import (
        apply_vertical_padding,
        map_boxes_to_original,
        resize_image_within_bounds,
    )

    engine = _engine()
    det = engine._load_det_model()
    rows, cols = image.shape[:2]
    img, ratio_h, ratio_w = resize_image_within_bounds(image, engine.min_side_len,
                                                       engine.max_side_len)
    record: dict[str, Any] = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
    img, record = apply_vertical_padding(img, record, engine.width_height_ratio,
                                         engine.min_height)
    tensor = _det_input(img)
    if tensor is None:
        return []
    pred = det.session(tensor)
    quads, _scores = det.postprocess_op(pred, img.shape[:2])
    if len(quads) == 0:
        return []
    mapped = map_boxes_to_original(np.asarray(quads, np.float32), record, rows, cols)
    return [np.asarray(q, np.float32) for q in mapped]


def _det_input(img: np.ndarray) -> np.ndarray | None:
    """The detector's input tensor for an 8-bit RGB image, as rapidocr builds it (None for
    an image too small to detect in)."""
    resized = _det_resize()(img)
    if resized is None:
        return None
    return np.take(_NORMALISED, resized.transpose(2, 0, 1))[None]


@cache
def _det_resize() -> Callable[[np.ndarray], np.ndarray | None]:
    """The detector's resizing to multiples of 32 (its longest side at most MAX_SIDE)."""
    resize: Callable[[np.ndarray], np.ndarray | None] = (
        _engine()._load_det_model().get_preprocess().resize)
    return resize


def _normalised_table() -> np.ndarray:
    """float32 input value of each 8-bit sample, computed as rapidocr's detector does:
    ``(x * (1/255) - 0.5) / 0.5`` (mean and std of every channel are 0.5)."""
    values = np.arange(256, dtype=np.float32) * np.float32(1 / 255.0)
    return ((values.astype(np.float64) - 0.5) / 0.5).astype(np.float32)


_NORMALISED = _normalised_table()


def read_lines(image: np.ndarray, quads: list[np.ndarray]) -> list[tuple[str, float]]:
    """Recognise the text inside each quadrilateral of ``image``: (text, confidence) each.

    The recogniser runs the lines one at a time (``Rec.rec_batch_num`` 1): a batch pads
    every line to the widest one's length, which cost more than it saved here.
    """
    from rapidocr.ch_ppocr_rec.typings import TextRecInput
    from rapidocr.utils.process_img import get_rotate_crop_image

    if not quads:
        return []
    crops = [get_rotate_crop_image(image, quad.copy()) for quad in quads]
    # A vertical line's crop is turned a quarter one way; its text may run the other way
    # (bottom to top): it is read upside down too, and both readings are judged.
    turned = [i for i, quad in enumerate(quads) if _is_vertical(quad)]
    batch = crops + [np.ascontiguousarray(np.rot90(crops[i], 2)) for i in turned]
    out = _engine()._load_rec_model()(TextRecInput(img=batch, return_word_box=False))
    read = [(str(text), float(score)) for text, score in zip(out.txts, out.scores, strict=True)]
    lines = read[:len(quads)]
    for i, (text, score) in zip(turned, read[len(quads):], strict=True):
        first, first_score = lines[i]
        lines[i] = ("\n".join(t for t in (first, text) if t.strip()), max(first_score, score))
    return lines
