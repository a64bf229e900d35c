"""Native Pixel Data longer than its image: the tail is cut, never copied (probe 15)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

import instances
from dicom_deid.pixels.excess import image_length
from instances import deidentify_bytes, to_bytes

_FILES = Path(pydicom.data.__file__).parent / "test_files"
_HIDDEN = b"ZYLBERSTEIN MORWENNA PX4821397 "


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_padded.dcm"])
def test_bytes_past_the_image_are_cut(name: str) -> None:
    """pydicom's files with a name and an ID appended to their native pixel data: the
    byte path leaves the file to the Dataset path, which cuts the tail; the image reads
    the same."""
    ds = pydicom.dcmread(_FILES / name)
    before = ds.pixel_array.copy()
    ds.PixelData = ds.PixelData + _HIDDEN + b"\x00"
    declined = instances.BYTE_PATH_RUNS["declined"]
    out, _, raw = deidentify_bytes(to_bytes(ds))
    assert instances.BYTE_PATH_RUNS["declined"] == declined + 1
    assert b"ZYLBERSTEIN" not in raw and b"PX4821397" not in raw
    assert len(out.PixelData) == image_length(
        out.Rows, out.Columns, out.SamplesPerPixel, out.BitsAllocated,
        int(out.get("NumberOfFrames", 1) or 1), out.PhotometricInterpretation)
    assert np.array_equal(out.pixel_array, before)


def test_an_image_of_its_own_length_stays_on_the_byte_path() -> None:
    taken = instances.BYTE_PATH_RUNS["taken"]
    deidentify_bytes((_FILES / "MR_small.dcm").read_bytes())
    assert instances.BYTE_PATH_RUNS["taken"] == taken + 1


@pytest.mark.parametrize(("layout", "size"), [
    ((64, 64, 1, 16, 1, "MONOCHROME2"), 8192),
    ((3, 3, 1, 8, 1, "MONOCHROME2"), 10),  # 9 bytes, padded to even
    ((10, 10, 1, 1, 3, "MONOCHROME2"), 38),  # bits: 300 bits in 38 bytes
    ((4, 4, 3, 8, 2, "YBR_FULL_422"), 64),  # two samples a pixel
    ((0, 4, 1, 8, 1, "MONOCHROME2"), None),  # no rows: nothing is cut
])
def test_image_length(layout: tuple[int, int, int, int, int, str], size: int | None) -> None:
    assert image_length(*layout) == size


def _rle_frames(ds: pydicom.Dataset) -> list[bytes]:
    from pydicom.encaps import generate_frames

    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)
                                                                    or 1)))


def _hide(frame: bytes, where: str) -> bytes:
    """``frame`` (RLE) with the hidden text planted ``where`` a decoder never reads."""
    import struct

    header = list(struct.unpack_from("<16I", frame))
    count, body = header[0], frame[64:]
    if where == "after the last segment":
        return frame + _HIDDEN
    if where == "between two segments":  # after the first, its successors moved on
        first_end = header[2] - 64
        header[2:1 + count] = [o + len(_HIDDEN) for o in header[2:1 + count]]
        return struct.pack("<16I", *header) + body[:first_end] + _HIDDEN + body[first_end:]
    if where == "before the first segment":
        header[1:1 + count] = [o + len(_HIDDEN) for o in header[1:1 + count]]
        return struct.pack("<16I", *header) + _HIDDEN + body
    if where == "in an extra segment":
        header[0], header[1 + count] = count + 1, len(frame)
        return struct.pack("<16I", *header) + body + _HIDDEN
    assert where == "in the header's unused offsets"
    header[1 + count:1 + count + 3] = struct.unpack("<3I", _HIDDEN[:12])
    return struct.pack("<16I", *header) + body


@pytest.mark.parametrize("where", ["after the last segment", "between two segments",
                                   "before the first segment", "in an extra segment",
                                   "in the header's unused offsets"])
@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm",
                                  "SC_rgb_rle_16bit.dcm"])
def test_bytes_an_rle_decoder_never_reads_are_cut(name: str, where: str) -> None:
    """pydicom's RLE files with a name and an ID hidden where a decoder does not look:
    each frame is rebuilt from its segments alone (the Dataset path; the byte path leaves
    it the file) and the image reads the same."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(_FILES / name)
    before = ds.pixel_array.copy()
    ds.PixelData = encapsulate([_hide(f, where) for f in _rle_frames(ds)], has_bot=True)
    if where != "in an extra segment":  # (pydicom refuses a frame of too many segments)
        planted = pydicom.dcmread(io.BytesIO(to_bytes(ds))).pixel_array
        assert np.array_equal(planted, before), "a decoder reads it as the original"
    declined = instances.BYTE_PATH_RUNS["declined"]
    out, _, raw = deidentify_bytes(to_bytes(ds))
    assert instances.BYTE_PATH_RUNS["declined"] == declined + 1
    assert b"ZYLBERSTEIN" not in raw and b"PX4821397" not in raw and b"MORW" not in raw
    assert np.array_equal(out.pixel_array, before)
    assert [f[:4] for f in _rle_frames(out)] == [f[:4] for f in _rle_frames(
        pydicom.dcmread(_FILES / name))]  # as many segments as the image has planes


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "SC_rgb_rle_32bit_2frame.dcm",
                                  "SC_rgb_rle_16bit_2frame.dcm"])
def test_rle_files_as_written_stay_on_the_byte_path(name: str) -> None:
    """A well-formed RLE file (pydicom's, from other tools) has nothing to cut: the fast
    path takes it and copies its frames as they are."""
    data = (_FILES / name).read_bytes()
    taken = instances.BYTE_PATH_RUNS["taken"]
    out, _, _ = deidentify_bytes(data)
    assert instances.BYTE_PATH_RUNS["taken"] == taken + 1
    assert _rle_frames(out) == _rle_frames(pydicom.dcmread(_FILES / name))


def test_an_rle_frame_without_samples_per_pixel_is_read_as_one_sample() -> None:
    """Samples per Pixel is Type 1, but a file may lack it: its layout is read as one
    sample (as for native pixel data), so the frame is still checked and cut."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(_FILES / "MR_small_RLE.dcm")
    ds.PixelData = encapsulate([_hide(f, "after the last segment") for f in _rle_frames(ds)],
                               has_bot=True)
    del ds.SamplesPerPixel
    _, _, raw = deidentify_bytes(to_bytes(ds))
    assert b"ZYLBERSTEIN" not in raw and b"PX4821397" not in raw
