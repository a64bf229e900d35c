"""Build the int8 text detector shipped in ``data/`` (a developer's tool; never run while
de-identifying).

Detection is four fifths of the cost of burned-in text redaction; the 8-bit integer copy of
rapidocr's PP-OCRv6 detection model runs about four times faster on a CPU with VNNI and
found the same text lines as the original on held-out images (see ``data/SOURCE.md``).
Static quantisation (QOperator, uint8 activations, int8 weights per output channel, MinMax
ranges) calibrated on generated images: text drawn with Pillow's bundled fonts over black,
smooth and speckled ultrasound-like sectors, gradients and light backgrounds. Needs the
``onnx`` package, which de-identification does not::

    pip install onnx && python -m dicom_deid.pixels.quantize [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .ocr import DET_INT8_MODEL, MAX_SIDE, models_dir

_SEED = 7
_IMAGES = 24
_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz0123456789/:-.,^"
_BACKGROUNDS = ("black", "sector", "speckle", "gradient", "light")
_COLOURS = ((255, 255, 255), (200, 200, 200), (255, 255, 0), (0, 255, 0))


def _background(kind: str, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A gray backdrop of one kind (uint8, rows x cols)."""
    if kind == "black":
        return np.zeros((rows, cols), np.uint8)
    if kind == "light":
        return np.full((rows, cols), 235, np.uint8)
    y = np.linspace(-1.0, 1.0, rows)[:, None]
    x = np.linspace(-1.0, 1.0, cols)[None, :]
    if kind == "gradient":
        return np.broadcast_to(40 + 60 * (x + 1), (rows, cols)).astype(np.uint8)
    r = np.sqrt((y + 1.0) ** 2 + x * x)
    theta = np.arctan2(x, y + 1.0)
    fan = (np.abs(theta) < 0.7) & (r < 1.9) & (r > 0.12)
    if kind == "sector":
        tex = 80 + 45 * np.sin(r * 14 + rng.uniform(0, 6)) * np.cos(theta * 9)
    else:  # speckle
        tex = rng.rayleigh(45, (rows, cols)) * (0.6 + 0.4 * np.cos(r * 6))
    return np.where(fan, np.clip(tex, 0, 255), 0).astype(np.uint8)


def calibration_images(seed: int = _SEED, count: int = _IMAGES) -> Iterator[np.ndarray]:
    """Deterministic 8-bit RGB images with lines of random text drawn in (calibration)."""
    from PIL import Image, ImageDraw, ImageFont

    rng, pick = np.random.default_rng(seed), random.Random(seed)
    for i in range(count):
        rows, cols = (480, 640) if i % 3 else (512, 512)
        kind = _BACKGROUNDS[i % len(_BACKGROUNDS)]
        img = Image.fromarray(np.repeat(_background(kind, rng, rows, cols)[..., None], 3, 2))
        draw = ImageDraw.Draw(img)
        for _ in range(pick.randint(2, 5)):
            size = pick.choice((9, 11, 13, 16, 20, 24))
            font = (ImageFont.load_default() if pick.random() < 0.25
                    else ImageFont.load_default(size=size))
            colour = (0, 0, 0) if kind == "light" else pick.choice(_COLOURS)
            text = "".join(pick.choice(_CHARS) for _ in range(pick.randint(6, 30)))
            draw.text((pick.randint(0, cols // 2), pick.randint(0, rows - 30)), text,
                      fill=colour, font=font)
        yield np.asarray(img)


def build(out: Path) -> str:
    """Quantise the wheel's detection model into ``out``; return the new file's SHA-256."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    # the engine's own detection pre-processing (ocr.py: longest side at most MAX_SIDE)
    det_preprocess = DetPreProcess(MAX_SIDE, "max", [0.5] * 3, [0.5] * 3)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            self.batches = ({"x": det_preprocess(img)} for img in calibration_images())

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "det.onnx"
        quant_pre_process(str(models_dir() / "PP-OCRv6_det_small.onnx"), str(prepared),
                          skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Reader(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "data" / DET_INT8_MODEL)
    args = parser.parse_args()
    print(f"{args.out}: sha256 {build(args.out)}")


if __name__ == "__main__":
    main()
