"""Whole-slide images and machine-readable codes, with the real OCR engine and zxing-cpp.

A tiled whole-slide level is one picture cut into frames: a box belongs to the tiles
under it (not to every frame, as in a cine loop), and a line across a tile's edge must be
read whole. A code on a label repeats the identity OCR reads beside it; a slide's LABEL
image shows nothing else.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import zxingcpp
from pydicom.dataset import Dataset
from test_pixel_redaction import _dciodvfy_errors, _draw, _image, _leaks, _run, _texts

from dicom_deid.config.model import privacy_first
from dicom_deid.pixels.codes import find_codes
from dicom_deid.pixels.ocr import to_detection_image
from dicom_deid.pixels.tiles import Tile, tile_layout, window_starts

WSM = "1.2.840.10008.5.1.4.1.1.77.1.6"
TILE, ACROSS, DOWN = 256, 4, 3
NAME = "JOHN SMITH"  # make_instance(): Smith^John


def _tissue(seed: int) -> np.ndarray:
    """A pale pink tile with a few purple blobs (nuclei), as H&E tissue looks."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((TILE, TILE, 3), np.float32) + np.array([235, 205, 222], np.float32)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for _ in range(25):
        cx, cy, r = rng.integers(0, TILE, 3) % [TILE, TILE, 5] + [0, 0, 3]
        arr[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (120, 70, 150)
    return np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)


def _slide(mosaic: np.ndarray, image_type: str = "VOLUME") -> Dataset:
    """A TILED_FULL VL Whole Slide Microscopy level cut from ``mosaic`` (rows, cols, 3)."""
    tiles = [mosaic[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
             for r in range(mosaic.shape[0] // TILE) for c in range(mosaic.shape[1] // TILE)]
    ds = _image(np.stack(tiles), "RGB", modality="SM", sop_class=WSM, frames=len(tiles))
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = mosaic.shape[:2]
    ds.BurnedInAnnotation = "NO"
    return ds


def _mosaic() -> np.ndarray:
    return np.concatenate(
        [np.concatenate([_tissue(r * ACROSS + c) for c in range(ACROSS)], axis=1)
         for r in range(DOWN)], axis=0)


def _tiles_of(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array).reshape(-1, TILE, TILE, 3)


def test_tile_layout_of_full_and_sparse_tiling() -> None:
    ds = _slide(_mosaic())
    layout = tile_layout(ds, ACROSS * DOWN, TILE, TILE)
    assert layout is not None and layout[5] == Tile(0, TILE, TILE)
    assert layout[-1] == Tile(0, 2 * TILE, 3 * TILE)
    two_planes = tile_layout(ds, 2 * ACROSS * DOWN, TILE, TILE)
    assert two_planes is not None and two_planes[ACROSS * DOWN] == Tile(1, 0, 0)
    assert tile_layout(ds, ACROSS * DOWN + 1, TILE, TILE) is None  # inconsistent: a loop
    del ds.DimensionOrganizationType
    assert tile_layout(ds, ACROSS * DOWN, TILE, TILE) is None  # a cine loop
    assert window_starts(768, 256) == [0, 128, 256, 384, 512]


def test_a_box_on_one_tile_is_blanked_in_that_tile_only(tmp_path: Path) -> None:
    mosaic = _draw(_mosaic(), [(TILE + 30, TILE + 100, "MRN1234567")], (20, 20, 20), size=24)
    ds = _slide(mosaic)
    assert _leaks(_texts(_tiles_of(ds)[ACROSS + 1]), ("1234567",))  # tile 5 reads it
    data, before, after, boxes, out = _run(ds, privacy_first())
    assert boxes >= 1
    changed = [i for i, (a, b) in enumerate(zip(_tiles_of(before), _tiles_of(after),
                                                strict=True)) if (a != b).any()]
    assert changed == [ACROSS + 1]
    assert not _leaks(_texts(_tiles_of(after)[ACROSS + 1]), ("1234567",))
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


@pytest.mark.parametrize("x", [TILE - 60, TILE - 110])
def test_a_name_across_two_tiles_is_blanked_whole(x: int) -> None:
    """The name runs over the edge between tiles 5 and 6: read tile by tile, neither
    piece is the name, and the piece beyond the edge was left."""
    mosaic = _draw(_mosaic(), [(TILE + x, TILE + 120, NAME)], (20, 20, 20), size=22)
    _data, _before, after, boxes, _out = _run(_slide(mosaic), privacy_first())
    assert boxes >= 1
    text = np.asarray(after.pixel_array).reshape(-1, TILE, TILE, 3)
    row = np.concatenate([text[ACROSS + 1], text[ACROSS + 2]], axis=1)
    assert _leaks(_texts(row), ("SMITH", "JOHN")) == []
    dark = (row[120:150].max(axis=2) < 60) & (row[120:150].min(axis=2) > 0)
    assert not dark.any()  # no stroke of the lettering is left (the fill is 0)


def _qr(text: str, scale: int = 4) -> np.ndarray:
    code = cv2.QRCodeEncoder.create().encode(text)
    return cv2.resize(code, (code.shape[1] * scale, code.shape[0] * scale),
                      interpolation=cv2.INTER_NEAREST)


def test_codes_are_found_with_their_text() -> None:
    image = np.full((300, 500, 3), 210, np.uint8)
    qr = _qr("MRN1234567^SMITH^JOHN")
    image[40:40 + qr.shape[0], 300:300 + qr.shape[1]] = qr[..., None]
    matrix = np.asarray(zxingcpp.create_barcode(
        "ACC55172", zxingcpp.BarcodeFormat.DataMatrix).to_image(scale=6))
    image[60:60 + matrix.shape[0], 40:40 + matrix.shape[1]] = matrix[..., None]
    found = find_codes(image)
    assert sorted(line.text for line in found) == ["ACC55172", "MRN1234567^SMITH^JOHN"]
    qr_box = next(line.box for line in found if "SMITH" in line.text)
    assert qr_box.x0 <= 316 and qr_box.x1 >= 300 + qr.shape[1] - 16  # the code inside it
    assert find_codes(np.full((100, 100, 3), 90, np.uint8)) == []


def test_a_code_on_an_image_at_risk_is_blanked_whatever_it_says(tmp_path: Path) -> None:
    """An ultrasound's printed case code holds nothing the gate could match, yet it
    names the case in the hospital's system: blanked in the default run."""
    arr = np.random.default_rng(3).integers(0, 120, (360, 480, 3), dtype=np.uint8)
    qr = _qr("CASE-8834-2291-XR")
    arr[20:20 + qr.shape[0], 340:340 + qr.shape[1]] = qr[..., None]
    ds = _image(arr, "RGB")
    assert [c.text for c in find_codes(arr)] == ["CASE-8834-2291-XR"]
    data, _before, after, boxes, out = _run(ds, privacy_first())
    assert boxes >= 1 and find_codes(np.asarray(after.pixel_array)) == []
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


def test_a_slide_label_image_is_blanked_whole() -> None:
    """A LABEL image shows the slide's label only: printed, handwritten (which OCR does
    not read) and coded; it is blanked whole and says so."""
    label = np.full((256, 512, 3), 240, np.uint8)
    label = _draw(label, [(10, 10, "S26-1187 A1"), (10, 40, "H&E")], (0, 0, 0), size=20)
    ds = _image(label, "RGB", modality="SM", sop_class=WSM)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    ds.BurnedInAnnotation = "YES"
    _data, _before, after, boxes, _out = _run(ds, privacy_first())
    assert boxes == 1
    assert not np.asarray(after.pixel_array).any()
    assert after.BurnedInAnnotation == "NO"


_PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def test_pydicoms_images_at_risk_hold_no_code() -> None:
    """Images the project did not make: nothing in pydicom's own ultrasound and secondary
    captures reads as a code (a false code would blank a piece of the image)."""
    checked = 0
    for path in sorted(_PYDICOM_FILES.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
            if ds.get("Modality") not in ("US", "OT", "SC") or "PixelData" not in ds:
                continue
            frames = np.asarray(ds.pixel_array)
        except Exception:  # a file pydicom itself cannot decode here
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) == 1:
            frames = frames[None]
        for frame in frames[:3]:
            assert find_codes(to_detection_image(frame)) == [], path.name
        checked += 1
    assert checked >= 15


def test_a_code_planted_in_pydicoms_ultrasound_is_blanked(tmp_path: Path) -> None:
    """pydicom's own RGB ultrasound with a case code planted in it: the code is blanked
    by the default run, and every pixel away from it is as it was."""
    ds = pydicom.dcmread(_PYDICOM_FILES / "examples_rgb_color.dcm")
    arr = np.array(ds.pixel_array)
    qr = _qr("MRN1234567^SMITH^JOHN", scale=2)
    arr[4:4 + qr.shape[0], 4:4 + qr.shape[1]] = qr[..., None]
    ds.PixelData = arr.tobytes()
    assert [c.text for c in find_codes(arr)] == ["MRN1234567^SMITH^JOHN"]
    data, _before, after, boxes, out = _run(ds, privacy_first())
    result = np.asarray(after.pixel_array)
    assert boxes >= 1 and find_codes(result) == []
    edge = 4 + qr.shape[0] + 20
    assert (result[edge:] == arr[edge:]).all() and (result[:, edge:] == arr[:, edge:]).all()
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))
