"""Burned-in labels on large images: what OCR finds, and what reading in tiles costs.

An external probe found 14-32 px labels on mammograms and a stitched long-leg view
released: the detector saw each image scaled to 960 px on its longest side, where the
labels were 4-7 px. ``pixels/ocr.py`` now also reads an image larger than 1,200 px in
overlapping 960 px tiles at its own scale. This script draws three labels (name and
record number, birth date, and a name across the first tiles' seam) at several sizes
into grey images of the sizes hospitals store (CR, mammography, long-leg DX) with a
breast-like gradient and noise, and counts, for each, the labels whose values OCR reads
(``find_text`` on the 8-bit detection image, recognition on) and the seconds it takes on
one core (best of ``--repeat``). ``PYTHONPATH=OTHER/plugins`` measures another checkout
the same way (its ``find_text``), for a before/after pair.

    .venv/bin/python benchmarks/bench_ocr_tiles.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dicom_deid.pixels.ocr import find_text, to_detection_image

_SIZES = ((2000, 2500, "CR"), (3328, 4096, "MG"), (1400, 7000, "DX long leg"))
_TEXT_PX = (14, 20, 28)
_VALUES = ("KOWALCZYK", "48213977", "14/03/1961")


def _image(rows: int, cols: int, size: int, seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = np.clip(3000 - np.hypot(yy - rows / 2, xx) * 1.4, 0, 2600)
    rng = np.random.default_rng(seed)
    grey = (tissue + rng.integers(0, 200, (rows, cols))).astype(np.uint16)
    label = Image.new("L", (cols, rows))
    draw = ImageDraw.Draw(label)
    font = ImageFont.load_default(size=size)
    for x, y, text in ((cols - 900, 60, "KOWALCZYK, JAN   MRN 48213977"),
                       (cols - 900, 60 + 2 * size, "DOB 14/03/1961"),
                       (700, rows - 4 * size, "KOWALCZYK JAN 48213977")):
        draw.text((x, y), text, fill=255, font=font)
    grey[np.array(label) > 0] = 4095
    return grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    find_text(np.zeros((64, 64, 3), np.uint8))  # the engine, loaded once
    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
          f"`benchmarks/bench_ocr_tiles.py --repeat {args.repeat}`; one core, Python "
          f"{platform.python_version()}; code: {find_text.__module__} at "
          f"{os.environ.get('PYTHONPATH') or 'the working tree'}.\n")
    print("| image | text px | values read (of 3) | s (best) |")
    print("|---|--:|--:|--:|")
    for rows, cols, kind in _SIZES:
        for size in _TEXT_PX:
            image = to_detection_image(_image(rows, cols, size, seed=size))
            best, text = float("inf"), ""
            for _ in range(args.repeat):
                started = time.perf_counter()
                lines = find_text(image)
                best = min(best, time.perf_counter() - started)
                text = " ".join(line.text for line in lines).upper().replace(" ", "")
            found = sum(v.replace(" ", "") in text for v in _VALUES)
            print(f"| {kind} {cols} x {rows} | {size} | {found} | {best:.2f} |")


if __name__ == "__main__":
    main()
