"""Native Pixel Data longer than its image: the tail is cut, never copied (probe 15)."""

from __future__ import annotations

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
