"""Find text lines in an image with the OCR models packaged inside the ``rapidocr`` wheel.

The engine is created lazily, once per process, the first time an image actually needs
OCR: runs without burned-in text redaction never import onnxruntime. Models are given
by explicit file path, so rapidocr never tries to download anything, and inference runs
single-threaded (workers are already one process per core) which also keeps the output
deterministic from run to run. Recognised text is returned to the caller for matching
and must never be logged.

Multi-frame images (cine loops) repeat most of their text from frame to frame: inside
:func:`line_cache` a line image whose pixels were already read is not recognised again
(detection still runs on every frame, so text that appears in one frame only is found).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Box", "TextLine", "find_text", "line_cache", "to_detection_image"]

_DET_MODEL = "PP-OCRv6_det_small.onnx"
_REC_MODEL = "PP-OCRv6_rec_small.onnx"
_MAX_SIDE = 960
"""Images are never upscaled for detection; larger ones are scaled down to this side."""
_MAX_LINE_FRACTION = 0.15
_MAX_LINE_MIN = 64
"""A "line" taller than max(64 px, 15 % of the image) is the detector outlining image
content (an ultrasound sector, a bright organ), not text: such boxes are dropped."""


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
    """One detected line of text: where it is and what it reads (PHI: never log ``text``)."""

    box: Box
    text: str
    score: float

    def __repr__(self) -> str:
        return f"TextLine({self.box!r}, <{len(self.text)} chars>, {self.score:.2f})"


def _models_dir() -> Path:
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


@cache
def _engine() -> Any:
    """The OCR engine of this process, built on first use from the wheel's own models."""
    from rapidocr import RapidOCR

    models = _models_dir()
    for name in (_DET_MODEL, _REC_MODEL):
        if not (models / name).is_file():
            raise RuntimeError(f"rapidocr model {name} is missing from the installed wheel")
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.use_cls": False,  # burned-in annotations are upright
            "Global.text_score": 0.0,  # keep every detected line: dropping one leaks it
            "Det.model_path": str(models / _DET_MODEL),
            "Rec.model_path": str(models / _REC_MODEL),
            "Det.limit_type": "max",
            "Det.limit_side_len": _MAX_SIDE,
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


def find_text(image: np.ndarray) -> list[TextLine]:
    """Text lines in an 8-bit RGB image (see :func:`to_detection_image`), top to bottom."""
    # Flags are passed every time: rapidocr keeps call arguments as its new defaults.
    result = _engine()(image, use_det=True, use_cls=False, use_rec=True)
    boxes = getattr(result, "boxes", None)
    if boxes is None or len(boxes) == 0:
        return []
    texts = result.txts or ("",) * len(boxes)
    scores = result.scores or (0.0,) * len(boxes)
    lines = []
    tallest = max(_MAX_LINE_MIN, round(image.shape[0] * _MAX_LINE_FRACTION))
    for quad, text, score in zip(boxes, texts, scores, strict=True):
        pts = np.asarray(quad, dtype=np.float64)
        box = Box(
            int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min())),
            int(np.ceil(pts[:, 0].max())) + 1, int(np.ceil(pts[:, 1].max())) + 1,
        )
        if box.y1 - box.y0 <= tallest:
            lines.append(TextLine(box, str(text), float(score)))
    lines.sort(key=lambda line: (line.box.y0, line.box.x0))
    return lines
