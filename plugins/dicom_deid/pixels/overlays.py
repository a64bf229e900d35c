"""Overlays embedded in pixel data: retired, and still in old archives.

Before DICOM 2004 an overlay plane could live in the unused high bits of native pixel
data (a 60xx group with Overlay Bit Position and no Overlay Data (60xx,3000)); viewers
still draw it, and sites drew the patient's name and ID there. PS3.15 removes Overlay
Data, and an embedded plane is Overlay Data stored elsewhere: its bits are cleared and its
60xx group removed, without decoding anything but those bits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

__all__ = ["OVERLAY_DATA_TAG", "embedded_overlay_groups", "remove_embedded_overlays"]

_OVERLAY_BIT_POSITION = 0x0102
_OVERLAY_DATA = 0x3000
OVERLAY_DATA_TAG = 0x60003000
"""Overlay Data of the first overlay group (the profile acts on every group alike)."""
_PIXEL_DATA = 0x7FE00010


def embedded_overlay_groups(tags: Iterable[int]) -> list[int]:
    """The overlay groups (0x6000-0x601E) among ``tags`` that describe a plane embedded
    in the pixel data: an Overlay Bit Position without Overlay Data."""
    if not isinstance(tags, (set, frozenset, dict)):  # (a set, or a dict's keys, as it is)
        tags = set(tags)
    return [g for g in range(0x6000, 0x6020, 2)
            if g << 16 | _OVERLAY_BIT_POSITION in tags and g << 16 | _OVERLAY_DATA not in tags]


def remove_embedded_overlays(ds: Dataset) -> int:
    """Clear the bits of every embedded overlay plane in ``ds``'s native pixel data and
    remove its 60xx group; the number of planes removed. Compressed pixel data cannot hold
    one (the group alone goes)."""
    groups = embedded_overlay_groups(int(t) for t in ds.keys())
    if not groups:
        return 0
    pixels = ds.get_item(_PIXEL_DATA)  # raw as read: a view of the file, never decoded
    allocated = _int(ds, 0x00280100)
    value = pixels.value if pixels is not None else None
    encapsulated = pixels is not None and (
        pixels.length == 0xFFFFFFFF if isinstance(pixels, RawDataElement)
        else pixels.is_undefined_length)
    if pixels is not None and not encapsulated and allocated in (8, 16, 32) \
            and isinstance(value, bytes | bytearray | memoryview):
        little = ds.original_encoding[1] is not False
        dtype = np.dtype(f"{'<' if little else '>'}u{allocated // 8}")
        raw = bytes(value)
        usable = len(raw) - len(raw) % dtype.itemsize
        mask = _overlay_bits(ds, groups, allocated)
        if mask:
            values = np.frombuffer(raw[:usable], dtype).copy()
            values &= np.array(~mask & ((1 << allocated) - 1), dtype)
            vr = pixels.VR if pixels.VR in ("OB", "OW") else ("OB" if allocated == 8 else "OW")
            ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, values.tobytes() + raw[usable:])
    for g in groups:
        for tag in [t for t in ds.keys() if int(t) >> 16 == g]:
            del ds[tag]
    return len(groups)


def _overlay_bits(ds: Dataset, groups: list[int], allocated: int) -> int:
    """The mask of the planes' bits, never a bit of the stored pixel value: a group at
    bit 0 of a 12-bit image (what an earlier de-identification leaves: a description
    without its Overlay Data) is no embedded plane, and its pixels stay. A plane whose
    bit position cannot be read takes every bit outside the stored value with it."""
    stored = _int(ds, 0x00280101) or allocated
    high = _int(ds, 0x00280102, stored - 1)
    kept = ((1 << stored) - 1) << max(0, high - stored + 1)
    unused = ~kept & ((1 << allocated) - 1)
    mask = 0
    for group in groups:
        position = _int(ds, group << 16 | _OVERLAY_BIT_POSITION, -1)
        mask |= (1 << position) & unused if 0 <= position < allocated else unused
    return mask


def _int(ds: Dataset, tag: int, default: int = 0) -> int:
    elem = ds.get(tag)
    try:
        value = elem.value if elem is not None else None
        return int(value[0] if isinstance(value, (list, tuple)) else value) \
            if value not in (None, "", b"") else default
    except (TypeError, ValueError, IndexError):
        return default
