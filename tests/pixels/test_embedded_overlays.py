"""An overlay plane embedded in the pixel data's unused bits (retired, still in old
archives) is Overlay Data: the profile removes it, bits and 60xx group.

The image is pydicom's own MR (16 bits allocated), re-described as 12 bits stored with a
plane in bit 15, as an external probe wrote one with dcmtk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

import instances
from dicom_deid.config.model import DeidConfig, ProfileType, privacy_first
from dicom_deid.deid.gate import Gate
from dicom_deid.pixels.overlays import embedded_overlay_groups
from instances import deidentify_bytes, to_bytes

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _with_embedded_plane() -> tuple[Dataset, np.ndarray]:
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    pixels = (ds.pixel_array.astype(np.uint16) & 0x0FFF)
    stored = pixels.copy()
    stored[20:30, 8:56] |= 0x8000  # the plane: a "text" block in bit 15
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = stored.tobytes()
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 15)
    return ds, pixels


def test_the_plane_goes_and_the_image_stays() -> None:
    ds, pixels = _with_embedded_plane()
    declined = instances.BYTE_PATH_RUNS["declined"]
    out, _, data = deidentify_bytes(to_bytes(ds), privacy_first())
    assert instances.BYTE_PATH_RUNS["declined"] == declined + 1  # the Dataset path clears it
    assert not embedded_overlay_groups(int(t) for t in out.keys())
    written = np.frombuffer(out.PixelData, "<u2").reshape(pixels.shape)
    assert np.array_equal(written, pixels)  # bit 15 clear, the stored 12 bits untouched
    assert b"\x00\x60\x02\x01" not in data


@pytest.mark.parametrize("position", [None, "bad"])
def test_a_plane_whose_bit_is_unknown_takes_every_bit_above_the_stored_value(
        position: str | None) -> None:
    ds, pixels = _with_embedded_plane()
    del ds[0x60000102]
    if position is None:
        ds.add_new(0x60000102, "US", None)
    else:
        ds.add_new(0x60000102, "LO", position)
    out, _, _ = deidentify_bytes(to_bytes(ds), privacy_first())
    assert np.array_equal(np.frombuffer(out.PixelData, "<u2").reshape(pixels.shape), pixels)


def test_a_profile_that_keeps_overlay_data_keeps_the_plane() -> None:
    ds, _ = _with_embedded_plane()
    out, _, _ = deidentify_bytes(to_bytes(ds), DeidConfig(profile=ProfileType.KEEP_ALL))
    assert embedded_overlay_groups(int(t) for t in out.keys()) == [0x6000]
    assert (np.frombuffer(out.PixelData, "<u2") >> 15).sum() == 10 * 48


def test_an_overlay_with_its_own_data_is_no_embedded_plane() -> None:
    ds, _ = _with_embedded_plane()
    ds.add_new(0x60003000, "OW", bytes(ds.Rows * ds.Columns // 8))
    assert embedded_overlay_groups(int(t) for t in ds.keys()) == []


def test_the_gate_fails_an_output_that_still_holds_a_plane() -> None:
    ds, _ = _with_embedded_plane()
    data = to_bytes(ds)
    _, _, kept = deidentify_bytes(data, DeidConfig(profile=ProfileType.KEEP_ALL))
    _, _, cleared = deidentify_bytes(data, privacy_first())
    gate = Gate()
    problem = "an overlay plane is embedded in the pixel data"
    assert problem in gate.check("kept.dcm", kept, gate.source_facts(data, len(data)), {}
                                 ).problems
    assert problem not in gate.check("cleared.dcm", cleared,
                                     gate.source_facts(data, len(data)), {}).problems


def test_a_group_without_data_at_a_stored_bit_leaves_the_pixels() -> None:
    """An external probe: an earlier de-identification removed only Overlay Data, leaving
    a group at bit 0 with 1 bit allocated; clearing bit 0 changed half the pixels."""
    ds, pixels = _with_embedded_plane()
    ds.PixelData = pixels.tobytes()  # no plane in bit 15 this time
    ds[0x60000100].value, ds[0x60000102].value = 1, 0
    out, _, _ = deidentify_bytes(to_bytes(ds), privacy_first())
    assert np.array_equal(np.frombuffer(out.PixelData, "<u2").reshape(pixels.shape), pixels)
    assert not embedded_overlay_groups(int(t) for t in out.keys())
