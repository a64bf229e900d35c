"""Thumbnails of files this project did not write: pydicom's bundled test files (vendor
files, every compressed syntax, palette, YBR, 1-bit, 32-bit, multi-frame, overlays)."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pydicom.pixels
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicom_deid.errors import BadInput
from dicom_deid.review.thumbnails import (
    MAX_SIDE,
    Thumbnail,
    frames_to_show,
    render_thumbnails,
)

# Not pydicom.data.get_testdata_files: it may try to download.
FILES = Path(pydicom.data.__file__).parent / "test_files"
YELLOW = (255, 255, 0)
RED = (255, 0, 0)


def _bytes(name: str) -> bytes:
    return (FILES / name).read_bytes()


def _pixels(thumb: Thumbnail) -> np.ndarray[Any, Any]:
    with Image.open(BytesIO(thumb.png)) as image:
        assert image.size == (thumb.width, thumb.height)
        return np.asarray(image)


def _as_rgb(thumb: Thumbnail) -> np.ndarray[Any, Any]:
    with Image.open(BytesIO(thumb.png)) as image:
        return np.asarray(image.convert("RGB"))


def _chunk_types(png: bytes) -> list[str]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    types, pos = [], 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        types.append(kind.decode("ascii"))
        pos += 12 + length
    assert pos == len(png)
    return types


def _with(name: str, change: Any) -> bytes:
    """The bundled file `name` after `change(ds)`, written back to bytes."""
    ds = pydicom.dcmread(FILES / name)
    change(ds)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(("count", "shown"), [
    (0, []), (1, [0]), (2, [0, 1]), (3, [0, 1, 2]), (10, [0, 4, 9]), (48, [0, 23, 47]),
])
def test_frames_to_show(count: int, shown: list[int]) -> None:
    assert frames_to_show(count) == shown


# name, (rows, columns), number of frames: what the files say, read here independently
SHOWN = [
    ("MR_small.dcm", (64, 64), 1),  # 16-bit signed, window in the file
    ("CT_small.dcm", (128, 128), 1),  # 16-bit signed, rescale, no window
    ("JPEG2000.dcm", (1024, 256), 1),  # tall: the aspect ratio must survive
    ("JPGExtended.dcm", (1024, 256), 1),  # 12-bit JPEG extended
    ("liver_1frame.dcm", (512, 512), 1),  # 1-bit
    ("image_dfl.dcm", (512, 512), 1),  # deflated, 8-bit
    ("examples_palette.dcm", (350, 800), 1),  # PALETTE COLOR
    ("examples_ybr_color.dcm", (240, 320), 30),  # YBR_FULL_422 JPEG, 30 frames
    ("examples_jpeg2k.dcm", (480, 640), 1),  # YBR_RCT JPEG 2000
    ("SC_rgb_jpeg_dcmtk.dcm", (100, 100), 1),  # YBR_FULL JPEG by dcmtk
    ("SC_rgb_rle_16bit_2frame.dcm", (100, 100), 2),  # 16-bit RGB, 2 frames
    ("rtdose.dcm", (10, 10), 15),  # 32-bit unsigned, 15 frames
    ("MR_small_bigendian.dcm", (64, 64), 1),
    ("examples_overlay.dcm", (300, 484), 1),
]


@pytest.mark.parametrize(("name", "size", "count"), SHOWN)
def test_thumbnails_fit_keep_aspect_and_show_something(
        name: str, size: tuple[int, int], count: int) -> None:
    thumbs, frames, _ = render_thumbnails(_bytes(name))
    rows, columns = size
    assert frames == count
    assert [t.frame for t in thumbs] == frames_to_show(count)
    scale = min(1.0, MAX_SIDE / max(rows, columns))
    for thumb in thumbs:
        assert max(thumb.width, thumb.height) <= MAX_SIDE
        assert abs(thumb.width - columns * scale) <= 1
        assert abs(thumb.height - rows * scale) <= 1
        pixels = _pixels(thumb)
        assert pixels.dtype == np.uint8
        assert pixels.std() > 0, "a blank thumbnail"


def test_small_images_are_never_enlarged_and_max_side_is_honoured() -> None:
    thumbs, _, _ = render_thumbnails(_bytes("MR_small.dcm"))
    assert (thumbs[0].width, thumbs[0].height) == (64, 64)
    thumbs, _, _ = render_thumbnails(_bytes("JPEG2000.dcm"), max_side=40)
    assert (thumbs[0].width, thumbs[0].height) == (10, 40)


def test_the_window_in_the_file_is_applied_as_pydicom_applies_it() -> None:
    ds = pydicom.dcmread(FILES / "MR_small.dcm")
    values = pydicom.pixels.apply_voi_lut(
        pydicom.pixels.apply_modality_lut(ds.pixel_array, ds), ds)
    half = 2 ** (ds.BitsStored - 1)  # signed: pydicom's output range is [-half, half - 1]
    expected = np.round((values + half) / (2 * half - 1) * 255)
    thumbs, _, _ = render_thumbnails(_bytes("MR_small.dcm"))
    assert np.abs(_pixels(thumbs[0]).astype(int) - expected).max() <= 1


def test_without_a_window_the_frame_range_is_stretched() -> None:
    thumbs, _, _ = render_thumbnails(_bytes("CT_small.dcm"))
    pixels = _pixels(thumbs[0])
    assert pixels.min() == 0 and pixels.max() == 255


def test_monochrome1_is_shown_inverted() -> None:
    def mono1(ds: Dataset) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"

    normal = _pixels(render_thumbnails(_bytes("MR_small.dcm"))[0][0]).astype(int)
    inverted = _pixels(render_thumbnails(_with("MR_small.dcm", mono1))[0][0]).astype(int)
    assert np.abs(inverted - (255 - normal)).max() <= 1
    assert normal.std() > 10


def test_ybr_jpeg_is_shown_in_rgb_like_the_uncompressed_rgb_file() -> None:
    rgb = _as_rgb(render_thumbnails(_bytes("SC_rgb_rle.dcm"))[0][0]).astype(int)
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm",
                 "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle_16bit.dcm"):
        other = _as_rgb(render_thumbnails(_bytes(name))[0][0]).astype(int)
        assert np.abs(other - rgb).mean() < 8, name  # lossy JPEG: close, not equal


def test_palette_colour_becomes_colour() -> None:
    pixels = _pixels(render_thumbnails(_bytes("examples_palette.dcm"))[0][0]).astype(int)
    assert pixels.ndim == 3
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 40).mean() > 0.01


def test_only_the_shown_frames_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pydicom.pixels.pixel_array
    asked: list[Any] = []

    def spy(src: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("index"))
        return real(src, **kwargs)

    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    for name, count in (("examples_ybr_color.dcm", 30), ("rtdose_rle.dcm", 15),
                        ("rtdose_expb.dcm", 15)):
        asked.clear()
        render_thumbnails(_bytes(name))
        assert asked == frames_to_show(count), name


def test_boxes_are_outlined_not_filled() -> None:
    data = _bytes("examples_rgb_color.dcm")  # 320 x 240 -> 256 x 192 (scale 0.8)
    plain = _as_rgb(render_thumbnails(data)[0][0])
    thumb = render_thumbnails(data, boxes=[(80, 60, 240, 180)])[0][0]
    boxed = _pixels(thumb)
    assert boxed.ndim == 3
    # border in thumbnail pixels: x 64..191, y 48..143
    for y, x in ((48, 100), (143, 100), (90, 64), (90, 191), (48, 64), (143, 191)):
        assert tuple(boxed[y, x]) == RED, (y, x)
    changed = np.any(boxed != plain, axis=2)
    assert changed[48, 64:192].all() and changed[143, 64:192].all()
    assert not changed[55:137, 71:185].any(), "the inside far from the border changed"
    assert not changed[:40].any() and not changed[152:].any()


def test_boxes_outside_or_empty_are_ignored_and_a_grey_image_turns_rgb() -> None:
    data = _bytes("MR_small.dcm")
    plain = _pixels(render_thumbnails(data)[0][0])
    assert plain.ndim == 2
    thumb = render_thumbnails(data, boxes=[(100, 100, 120, 120), (10, 10, 10, 20)])[0][0]
    pixels = _pixels(thumb)
    assert pixels.ndim == 3
    assert (pixels == np.stack([plain] * 3, axis=2)).all()


def _drop_overlays(ds: Dataset) -> None:
    for tag in [t for t in ds.keys() if t.group == 0x6000]:
        del ds[tag]


def _yellow(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Where `pixels` is overlay yellow (nowhere in a grey image)."""
    if pixels.ndim != 3:
        return np.zeros(pixels.shape, dtype=bool)
    return np.all(pixels == YELLOW, axis=2)


def test_overlay_planes_are_drawn() -> None:
    with_plane, _, drawn = render_thumbnails(_bytes("examples_overlay.dcm"))
    without, _, none = render_thumbnails(_with("examples_overlay.dcm", _drop_overlays))
    assert (drawn, none) == (1, 0)
    shown, plain = _pixels(with_plane[0]), _as_rgb(without[0])
    changed = np.any(shown != plain, axis=2)
    assert changed.sum() > 50
    assert _yellow(shown)[changed].all()


def test_overlay_origin_moves_the_drawing() -> None:
    def shift(ds: Dataset) -> None:
        # 1-based and signed: 10 rows up, 20 columns left (the graphics start at row 36,
        # column 46, so nothing leaves the image)
        ds[0x6000, 0x0050].value = [-9, -19]

    # max_side 1000: no shrinking, compare pixel for pixel
    at_origin = _yellow(_pixels(
        render_thumbnails(_bytes("examples_overlay.dcm"), max_side=1000)[0][0]))
    moved = _yellow(_pixels(
        render_thumbnails(_with("examples_overlay.dcm", shift), max_side=1000)[0][0]))
    assert at_origin.sum() > 100
    assert (moved[:-10, :-20] == at_origin[10:, 20:]).all()
    assert not moved[-10:].any() and not moved[:, -20:].any()


def test_a_multi_frame_overlay_shows_each_frame_its_own_plane() -> None:
    def plant(ds: Dataset) -> None:  # 15 frames of 10 x 10; overlay frame k lights column k
        planes = np.zeros((15, 10, 10), dtype=np.uint8)
        for k in range(10):
            planes[k, :, k] = 1
        planes[10:, 0, :] = 1
        ds.add_new((0x6000, 0x0010), "US", 10)
        ds.add_new((0x6000, 0x0011), "US", 10)
        ds.add_new((0x6000, 0x0015), "IS", 15)
        ds.add_new((0x6000, 0x0040), "CS", "G")
        ds.add_new((0x6000, 0x0050), "SS", [1, 1])
        ds.add_new((0x6000, 0x0100), "US", 1)
        ds.add_new((0x6000, 0x0102), "US", 0)
        ds.add_new((0x6000, 0x3000), "OW", pydicom.pixels.pack_bits(planes))

    thumbs, frames, drawn = render_thumbnails(_with("rtdose.dcm", plant))
    assert (frames, drawn, [t.frame for t in thumbs]) == (15, 1, [0, 7, 14])
    first, middle, last = (_yellow(_pixels(t)) for t in thumbs)
    assert np.argwhere(first)[:, 1].tolist() == [0] * 10
    assert np.argwhere(middle)[:, 1].tolist() == [7] * 10
    assert np.argwhere(last)[:, 0].tolist() == [0] * 10


def test_same_input_same_bytes_and_no_metadata_chunks() -> None:
    for name, boxes in (("MR_small.dcm", ()), ("examples_overlay.dcm", [(5, 5, 60, 40)]),
                        ("examples_ybr_color.dcm", ()), ("examples_palette.dcm", ())):
        first = render_thumbnails(_bytes(name), boxes=boxes)
        again = render_thumbnails(_bytes(name), boxes=boxes)
        assert first == again
        for thumb in first[0]:
            kinds = _chunk_types(thumb.png)
            assert kinds[0] == "IHDR" and kinds[-1] == "IEND"
            assert set(kinds) <= {"IHDR", "IDAT", "IEND"}, kinds


def test_a_file_without_pixel_data_has_no_thumbnail() -> None:
    assert render_thumbnails(_bytes("test-SR.dcm")) == ([], 0, 0)


def _values(ds: Dataset) -> list[str]:
    """Every text value of `ds` long enough to be recognised in a message."""
    found = []
    for elem in ds.iterall():
        if elem.VR not in ("SQ", "OB", "OW", "UN") and len(str(elem.value)) >= 4:
            found.append(str(elem.value))
    return found


def test_truncated_pixel_data_is_bad_input_without_file_values() -> None:
    with pytest.raises(BadInput) as caught:
        render_thumbnails(_bytes("MR_truncated.dcm"))
    assert caught.value.kind == "pixel-decode"
    message = str(caught.value)
    ds = pydicom.dcmread(FILES / "MR_truncated.dcm", stop_before_pixels=True)
    assert not [v for v in _values(ds) if v in message]
    for value in ("8130", "8192"):  # the byte counts pydicom's own message quotes
        assert value not in message


def test_cut_short_files_are_bad_input_without_file_values() -> None:
    def name(ds: Dataset) -> None:
        ds.PatientName = "Truncated^Tess"

    whole = _with("CT_small.dcm", name)
    for keep in (len(whole) - 1000, len(whole) // 2 + 3000):
        with pytest.raises(BadInput) as caught:
            render_thumbnails(whole[:keep])
        assert caught.value.kind == "pixel-decode"
        assert "Tess" not in str(caught.value) and "Truncated^" not in str(caught.value)


def test_per_frame_windows_of_functional_groups_are_used() -> None:
    def windows(ds: Dataset) -> None:  # dose values are 795000..1254000
        def item(center: float, width: float) -> Dataset:
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = center, width
            group = Dataset()
            group.FrameVOILUTSequence = [voi]
            return group

        per_frame = [Dataset() for _ in range(15)]
        per_frame[0] = item(10, 2)  # everything above the window: white
        per_frame[7] = item(1e7, 2)  # everything below: black
        ds.PerFrameFunctionalGroupsSequence = per_frame
        ds.SharedFunctionalGroupsSequence = [item(1_000_000, 200_000)]  # frame 14

    first, middle, last = (_pixels(t) for t in render_thumbnails(_with("rtdose.dcm",
                                                                          windows))[0])
    assert (first == 255).all() and (middle == 0).all()
    assert 0 < (last == 255).mean() < 1 and (last == 0).any()
