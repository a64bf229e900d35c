"""Machine-readable codes drawn into pixels: QR, Data Matrix, Aztec, PDF417, 1D barcodes.

A slide label, a specimen photograph or a scanned request form often carries the case
in a code beside the printed text (``MRN^NAME^ACCESSION`` in a QR code, an accession in
a Data Matrix): OCR does not read it, and it decodes as well as the text it repeats. The
codes are found by zxing-cpp (one library for the 2D and 1D symbologies; OpenCV finds
QR and 1D codes only) in the images OCR reads. Every code found is blanked whatever it
says (a code on a medical image names a patient, a specimen or an order), and its
decoded text is judged by the verification gate's read-back like a line of text. The
text is PHI: never logged.
"""

from __future__ import annotations

import numpy as np

from .ocr import Box, TextLine

__all__ = ["find_codes"]

_QUIET_ZONE = 0.1
"""A code's box is grown by this fraction of its shorter side: the quiet zone around it,
and the print spread a decoder tolerates."""


def find_codes(image: np.ndarray) -> list[TextLine]:
    """The codes in an 8-bit RGB image, each as a line: its box (quiet zone included)
    and its decoded text, score 1."""
    import cv2
    import zxingcpp

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    found = []
    for code in zxingcpp.read_barcodes(gray):
        pos = code.position
        points = [(p.x, p.y) for p in (pos.top_left, pos.top_right, pos.bottom_right,
                                       pos.bottom_left)]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = Box(min(xs), min(ys), max(xs) + 1, max(ys) + 1)
        short = max(1, min(box.x1 - box.x0, box.y1 - box.y0))
        found.append(TextLine(box.grow(max(4, round(short * _QUIET_ZONE))), code.text, 1.0))
    return found
