"""REDACT_SENSITIVE_TEXT end to end on a banner that spells its values its own way: the
institution cut to 30 characters, the patient in romaji where the header has kanji and
kana only, another patient's name, another hospital; ordinary settings lines stay.

One image, read by the real OCR engine: before, after, and after with the exact matcher
only (what the sensitive mode did before banners were judged this way).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from test_pixel_redaction import SENSITIVE, Run, _draw, _image, _run, _texts

import dicom_deid.pixels.clean as clean
from dicom_deid.text.find import find_spans

INSTITUTION = "Wexcombe Valley Imaging Partners of the North"
SENSITIVE_LINES = (INSTITUTION.upper()[:30], "YAMADA TARO", "DOE^JANE", "Klinikum Nord")
ORDINARY_LINES = ("C5-1 ABD   FR 25Hz", "Depth 16 cm   G 50")


def _squash(text: str) -> str:
    return text.upper().replace(" ", "")


def _readable(text: str, lines: tuple[str, ...]) -> list[str]:
    """Which of ``lines`` OCR output ``text`` still holds (spaces aside)."""
    return [line for line in lines if _squash(line) in _squash(text)]


@pytest.fixture(scope="module")
def banner() -> Dataset:
    """Ultrasound, RGB: six banner lines over a black band above a speckled sector."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 150, (300, 420, 3), dtype=np.uint8)
    arr[:140] = 0
    lines = [*SENSITIVE_LINES, *ORDINARY_LINES]
    ds = _image(_draw(arr, [(6, 4 + 22 * i, t) for i, t in enumerate(lines)], (255, 255, 255)),
                "RGB")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "=山田^太郎=やまだ^たろう"  # no alphabetic group: the banner romanises
    ds.InstitutionName = INSTITUTION
    return ds


@pytest.fixture(scope="module")
def before_text(banner: Dataset) -> str:
    return _texts(banner.pixel_array)


@pytest.fixture(scope="module")
def sensitive_run(banner: Dataset) -> Run:
    return _run(banner, SENSITIVE)


def test_ocr_reads_every_planted_line(before_text: str) -> None:
    assert _readable(before_text, SENSITIVE_LINES + ORDINARY_LINES) == [
        *SENSITIVE_LINES, *ORDINARY_LINES]


def test_differently_spelled_lines_are_redacted_ordinary_lines_kept(
        sensitive_run: Run) -> None:
    _, before, after, boxes, _ = sensitive_run
    after_text = _texts(after.pixel_array)
    assert _readable(after_text, SENSITIVE_LINES) == []
    assert _readable(after_text, ORDINARY_LINES) == list(ORDINARY_LINES)
    assert boxes == len(SENSITIVE_LINES)
    # the sector below the banner is untouched
    assert np.array_equal(before.pixel_array[150:], after.pixel_array[150:])


def test_the_exact_matcher_alone_kept_them(banner: Dataset, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """With the free-text matcher in place of the banner judge, only the institution's
    line (by a run of its words) and the patient's name in romaji (the header's kana
    read so, as the sweep reads it since probe 15) are found: the rest of the redaction
    above is this feature's doing."""
    def exact_only(text: str, ctx: object, **kw: frozenset[str]) -> object:
        return find_spans(text, ctx, include=kw.get("include"))  # type: ignore[arg-type]

    monkeypatch.setattr(clean, "line_spans", exact_only)
    _, _, after, boxes, _ = _run(banner, SENSITIVE)
    assert boxes == 2
    assert _readable(_texts(after.pixel_array), SENSITIVE_LINES) == list(SENSITIVE_LINES[2:])
