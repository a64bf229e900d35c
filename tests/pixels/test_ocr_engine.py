"""The OCR engine's faster paths keep what it finds.

The int8 detection model must find every line the wheel's original model finds, on text
drawn here (sizes, fonts, colours and backgrounds other than the ones it was calibrated
on); the detection input must be rapidocr's own; regions too thick for a line are kept
only when they read as text; large images are read in tiles at their own scale, the
pieces of a line joined; vertical lines are read either way up; and in a cine loop, text
in one late frame and text that never changes are both blanked in every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    UltrasoundMultiFrameImageStorage,
)
from test_pixel_redaction import IDENTITY, NAME_LINE, SENSITIVE, _draw, _image, _leaks, _run, _texts

from dicom_deid.pixels import ocr
from dicom_deid.pixels.clean import _padded

_LINES = ("GARCIA LOPEZ, MARIA", "ID 0047 1192", "Acc A7731920", "03-JUN-2021 14:07",
          "St. Olav Hospital", "Gain 54 dB  FR 32Hz", "O'NEILL^P", "2019.07.08")


def _backdrop(kind: str, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Gray backgrounds unlike the calibration's: noise, a ramp, a light screen, black."""
    if kind == "speckle":
        return np.clip(rng.rayleigh(40, (rows, cols)), 0, 255).astype(np.uint8)
    if kind == "ramp":
        return np.tile(np.linspace(20, 150, cols).astype(np.uint8), (rows, 1))
    if kind == "light":
        return np.full((rows, cols), 225, np.uint8)
    return np.zeros((rows, cols), np.uint8)


def _held_out() -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Images with text lines drawn in, and each line's ink (the pixels it changed)."""
    rng = np.random.default_rng(2024)
    sizes = (10, 12, 14, 18)
    colours = ((255, 255, 255), (170, 170, 170), (255, 220, 0), (80, 255, 80))
    for i, kind in enumerate(("black", "speckle", "ramp", "light") * 2):
        img = Image.fromarray(np.repeat(_backdrop(kind, rng, 200, 360)[..., None], 3, 2))
        draw = ImageDraw.Draw(img)
        inks = []
        for j in range(3):
            size = sizes[(i + j) % len(sizes)]
            font = ImageFont.load_default() if (i + j) % 5 == 0 else ImageFont.load_default(
                size=size)
            fill = (20, 20, 20) if kind == "light" else colours[(i + j) % len(colours)]
            before = np.asarray(img).copy()
            draw.text((6 + 30 * j, 10 + 60 * j), _LINES[(i + 3 * j) % len(_LINES)],
                      fill=fill, font=font)
            inks.append(np.any(np.asarray(img) != before, axis=2))
        yield np.ascontiguousarray(np.asarray(img)), inks


def _covered(image: np.ndarray, inks: list[np.ndarray]) -> list[bool]:
    """For each line, whether the padded boxes OCR finds cover all of its ink."""
    mask = np.zeros(image.shape[:2], bool)
    for found in ocr.detect(image):
        box = found.box
        padded = _padded(box).clip(*image.shape[:2])
        assert padded is not None
        mask[padded.y0:padded.y1, padded.x0:padded.x1] = True
    return [bool((ink & mask).sum() == ink.sum()) for ink in inks]


def test_int8_detector_finds_every_line_the_original_finds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    images = list(_held_out())
    int8 = Path(ocr.__file__).parent / "data" / ocr.DET_INT8_MODEL
    original = ocr.models_dir() / ocr._DET_MODEL
    found = {}
    try:
        for path in (original, int8):
            monkeypatch.setattr(ocr, "detection_model", lambda path=path: path)
            ocr._engine.cache_clear()  # the next call builds an engine around ``path``
            found[path.name] = [_covered(img, inks) for img, inks in images]
    finally:
        ocr._engine.cache_clear()  # later tests build the default engine again
    lines = sum(len(inks) for _, inks in images)
    by_original = sum(map(sum, found[original.name]))
    assert by_original >= lines - 2  # the comparison means something: the original reads them
    for before, after in zip(found[original.name], found[int8.name], strict=True):
        for was, now in zip(before, after, strict=True):
            assert now or not was


def test_int8_model_only_where_its_products_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert ocr.detection_model() == ocr.models_dir() / ocr._DET_MODEL
    monkeypatch.setattr(ocr, "_cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert ocr.detection_model().name == ocr.DET_INT8_MODEL
    assert ocr.detection_model().is_file()  # shipped with the package


def test_detection_input_is_rapidocrs_own() -> None:
    """The table lookup gives the exact float32 tensor rapidocr's detector would build."""
    det = ocr._engine()._load_det_model()
    rng = np.random.default_rng(3)
    for shape in ((480, 640, 3), (101, 333, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = ocr._det_input(img)
        assert ours is not None and ours.dtype == np.float32
        assert np.array_equal(ours, det.get_preprocess()(img))


class _FakeEngine:
    """Detects one text line, one region twice as long as it is thick (large lettering,
    or an organ outlined) and one as round as the image; reads the thick ones as
    ``region_reads`` (text, confidence) and the line as "TEXT"; records what it reads."""

    def __init__(self, inner: Any, region_reads: tuple[str, float]) -> None:
        self.inner = inner
        self.region_reads = region_reads
        self.read: list[tuple[int, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _load_det_model(self) -> Any:
        real = self.inner._load_det_model()
        line = np.array([[10, 10], [150, 10], [150, 30], [10, 30]], np.float32)
        region = np.array([[0, 100], [199, 100], [199, 189], [0, 189]], np.float32)
        blob = np.array([[0, 0], [199, 0], [199, 199], [0, 199]], np.float32)
        return SimpleNamespace(
            session=lambda tensor: np.zeros((1, 1, *tensor.shape[2:]), np.float32),
            postprocess_op=lambda pred, shape: (np.stack([line, region, blob]), [0.9] * 3),
            get_preprocess=real.get_preprocess)

    def _load_rec_model(self) -> Any:
        def recognise(args: Any) -> Any:
            self.read.extend(img.shape for img in args.img)
            reads = [("TEXT", 0.9) if img.shape[0] <= 25 else self.region_reads
                     for img in args.img]
            return SimpleNamespace(txts=[t for t, _ in reads], scores=[c for _, c in reads])
        return recognise


def test_regions_too_thick_for_a_line_are_kept_only_when_they_read_as_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An organ the detector outlines as a long region reads as noise and is dropped;
    lettering too large for the line rule (an 80 px name) reads as text and is kept, in
    every mode: also when the caller blanks all text and recognises nothing else. A
    region as round as the image is no line: never read, never kept."""
    image = np.zeros((200, 200, 3), np.uint8)
    noise = _FakeEngine(ocr._engine(), ("~.", 0.3))
    lettering = _FakeEngine(ocr._engine(), ("HALVORSEN", 0.95))
    monkeypatch.setattr(ocr, "_engine", lambda: noise)
    assert [line.box for line in ocr.find_text(image)] == [ocr.Box(10, 10, 151, 31)]
    assert len(noise.read) == 2  # the line and the long region, not the round one
    assert [line.box for line in ocr.find_text(image, recognise=False)] == [
        ocr.Box(10, 10, 151, 31)]
    assert len(noise.read) == 3 and noise.read[-1][0] > 25  # without recognise: the region
    monkeypatch.setattr(ocr, "_engine", lambda: lettering)
    for recognise in (True, False):
        assert sorted(line.box for line in ocr.find_text(image, recognise=recognise)) == [
            ocr.Box(0, 100, 200, 190), ocr.Box(10, 10, 151, 31)]


def test_pieces_of_a_line_are_joined_and_stacked_lines_are_not() -> None:
    """A line cut by a tile's edge, and found whole in the next tile, is one line; two
    lines one above the other stay two; a vertical line's pieces join along it."""
    def quad(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)

    def turned(x0: float, y0: float, length: float, thickness: float, degrees: float
               ) -> np.ndarray:
        a = np.radians(degrees)
        along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        start = np.array([x0, y0])
        return np.array([start, start + along * length,
                         start + along * length + across * thickness,
                         start + across * thickness], np.float32)

    pieces = [quad(700, 100, 960, 120), quad(800, 101, 1100, 121),  # one line, two tiles
              quad(700, 124, 1000, 144),  # the next line, 4 px below
              quad(20, 300, 40, 700), quad(21, 650, 41, 1000)]  # a vertical line
    joined = sorted((ocr._box_of(q) for q in ocr._joined(pieces)), key=lambda b: (b.x0, b.y0))
    assert joined == [ocr.Box(20, 300, 42, 1001), ocr.Box(700, 100, 1101, 122),
                      ocr.Box(700, 124, 1001, 145)]
    # three lines slanted 10 degrees, each cut in two at a seam: three lines again
    slanted = [piece for row in range(3) for piece in (
        turned(700, 100 + 40 * row, 200, 24, 10), turned(890, 133 + 40 * row, 200, 24, 10))]
    lines = ocr._joined(slanted)
    assert len(lines) == 3
    assert all(min(ocr._sides(q)) < 30 and max(ocr._sides(q)) > 380 for q in lines)


def _mammogram(rows: int, cols: int, lines: list[tuple[int, int, str]], size: int
               ) -> np.ndarray:
    """A 12-bit breast-like gradient on black, with ``lines`` burned in at full white."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = np.clip(3000 - np.hypot(yy - rows / 2, xx) * 1.4, 0, 2600).astype(np.uint16)
    label = Image.new("L", (cols, rows))
    draw = ImageDraw.Draw(label)
    font = ImageFont.load_default(size=size)
    for x, y, text in lines:
        draw.text((x, y), text, fill=255, font=font)
    ink = np.array(label) > 0
    tissue[ink] = 4095
    return tissue


def test_small_labels_on_a_large_image_are_read_at_its_own_scale() -> None:
    """A 4,096 x 3,328 mammogram with 15 px labels: scaled to 960 px they are 3.5 px and
    only the name is read; read in tiles, every label is, and blanked (one crosses a
    tile's edge), and the image is released without them."""
    rows, cols = 3328, 4096
    lines = [(cols - 900, 60, f"{NAME_LINE}   MRN1234567"), (cols - 900, 95, "DOB 14/05/2023"),
             (700, rows - 100, "SMITH JOHN 1234567")]  # x 700-870: across the first seam
    arr = _mammogram(rows, cols, lines, 15)
    assert _leaks(_texts(arr)) == list(IDENTITY)  # every label, at the image's own scale
    ds = _image(arr, "MONOCHROME2", modality="MG",
                sop_class=DigitalMammographyXRayImageStorageForPresentation, bits_stored=12)
    ds.BurnedInAnnotation = "YES"
    _, _, after, boxes, _ = _run(ds, SENSITIVE)
    assert boxes >= 3
    assert _leaks(_texts(after.pixel_array)) == []
    assert not (after.pixel_array[arr == 4095] == 4095).any()  # no ink left


def test_a_slanted_banner_on_a_large_image_is_blanked() -> None:
    """Three lines turned 10 degrees on a 2,048 px CR: their upright boxes overlap, so
    joining tile pieces by upright boxes made them one unreadable region, dropped (an
    external probe's leak); pieces are joined along the way each line runs."""
    rows = cols = 2048
    layer = Image.new("L", (600, 140))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=22)
    for y, text in ((10, f"{NAME_LINE}   MRN1234567"), (50, "DOB 14/05/2023"),
                    (90, "St Elsewhere Hospital")):
        draw.text((10, y), text, fill=255, font=font)
    turned = np.array(layer.rotate(10, expand=True, resample=Image.Resampling.BICUBIC))
    arr = _mammogram(rows, cols, [], 15)
    y0, x0 = 700, 640  # across the seam of the first tiles (800 px)
    ink = np.zeros((rows, cols), bool)
    ink[y0:y0 + turned.shape[0], x0:x0 + turned.shape[1]] = turned > 96
    arr[ink] = 4095
    assert _leaks(_texts(arr)) == list(IDENTITY)
    ds = _image(arr, "MONOCHROME2", modality="CR",
                sop_class="1.2.840.10008.5.1.4.1.1.1", bits_stored=12)
    ds.BurnedInAnnotation = "YES"
    _, _, after, boxes, _ = _run(ds, SENSITIVE)
    assert boxes >= 1 and _leaks(_texts(after.pixel_array)) == []
    assert not (after.pixel_array[ink] == 4095).any()


@pytest.mark.parametrize("turn", [1, 3], ids=["bottom-to-top", "top-to-bottom"])
def test_vertical_labels_are_read_either_way_up(turn: int) -> None:
    """A name and ID written along the left edge, turned either way: read and blanked
    as sensitive, the rest of the image untouched."""
    rng = np.random.default_rng(3)
    strip = _draw(np.zeros((30, 360, 3), np.uint8), [(4, 6, f"{NAME_LINE}  MRN1234567")],
                  (255, 255, 255))
    rgb = np.repeat(rng.integers(20, 110, (480, 640, 1), dtype=np.uint8), 3, axis=2)
    rgb[40:400, :30] = np.rot90(strip, turn)
    ds = _image(rgb, "RGB")
    before = ds.pixel_array.copy()
    _, _, after, boxes, _ = _run(ds, SENSITIVE)
    assert boxes >= 1
    out = after.pixel_array
    assert not out[40:400, :30].any()
    assert np.array_equal(out[:, 80:], before[:, 80:])


def test_lettering_larger_than_a_line_is_blanked() -> None:
    """An 80 px name on a 480-row ultrasound (thicker than 15 % of the rows)."""
    rng = np.random.default_rng(4)
    rgb = np.repeat(rng.integers(20, 110, (480, 640, 1), dtype=np.uint8), 3, axis=2)
    rgb[300:420] = 0
    drawn = _draw(rgb, [(20, 310, "SMITH JOHN")], (255, 255, 255), size=80)
    assert "SMITH" in _leaks(_texts(drawn))
    _, _, after, boxes, _ = _run(_image(drawn, "RGB"), SENSITIVE)
    assert boxes >= 1 and _leaks(_texts(after.pixel_array)) == []


def test_cine_late_text_and_unchanging_text_are_blanked_in_every_frame() -> None:
    """Five frames whose speckle changes every frame under a banner that never changes;
    an ID drawn into the changing speckle of frame 3 only. Both are gone from every
    frame: boxes found in any frame are blanked in all."""
    rng = np.random.default_rng(11)
    banner = (8, 5, f"{NAME_LINE}   14/05/2023")
    late = (40, 100, "MRN7654321")
    frames, inks = [], np.zeros((160, 360), bool)
    for f in range(5):
        rgb = np.repeat(rng.integers(20, 110, (160, 360, 1), dtype=np.uint8), 3, axis=2)
        rgb[:26] = 0
        drawn = _draw(rgb, [banner, late] if f == 3 else [banner], (255, 255, 255))
        if f == 3:
            inks |= np.any(drawn != rgb, axis=2)  # both lines' pixels
        frames.append(drawn)
    stack = np.stack(frames)
    assert _leaks(_texts(stack[3]), ("7654321",)) == ["7654321"]  # readable before
    ds = _image(stack, "RGB", sop_class=UltrasoundMultiFrameImageStorage, frames=5)
    _, _, after, boxes, _ = _run(ds, SENSITIVE)
    out = after.pixel_array
    assert boxes >= 2
    for f in range(5):
        assert _leaks(_texts(out[f]), (*IDENTITY, "7654321")) == []
        assert not out[f][inks].any()  # every pixel of both lines is black in every frame
