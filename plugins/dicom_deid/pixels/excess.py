"""Bytes native Pixel Data carries beyond its image: cut off, never copied.

A native Pixel Data value longer than its rows, columns, samples, bits and frames need
("excess padding", as pydicom warns) decodes the same without its tail, and nothing
reads the tail: a writer's leftover buffer, or text hidden there (an external probe
appended a name and an MRN to pydicom's MR_small; the output carried them, and no value
search looks inside pixel data). The tail is cut, to the even length DICOM pads to.
Encapsulated frames are walked by :mod:`dicom_deid.pixels.codestream`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dicom_deid.dicom.reader import input_transfer_syntax, output_transfer_syntax, text_value
from dicom_deid.dicom.walker import Element

__all__ = ["LAYOUT_TAGS", "NATIVE_SYNTAXES", "dataset_layout", "image_length",
           "trim_native_excess", "written_layout"]

PIXEL_DATA = 0x7FE00010
_SAMPLES = 0x00280002
NATIVE_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",  # deflated: the dataset is compressed, its pixels native
})
LAYOUT_TAGS = (0x00280010, 0x00280011, 0x00280002, 0x00280100, 0x00280008, 0x00280004)
"""Rows, Columns, Samples per Pixel, Bits Allocated, Number of Frames, Photometric
Interpretation: what an image's length follows from."""


def image_length(rows: int, columns: int, samples: int, bits: int, frames: int,
                 photometric: str) -> int | None:
    """The bytes a native image of this layout needs, padded to even (None when the
    layout is incomplete: nothing is cut then). YBR_FULL_422 stores two samples a pixel."""
    if min(rows, columns, samples, bits, frames) <= 0:
        return None
    values = rows * columns * samples * frames
    if photometric.strip() == "YBR_FULL_422" and samples == 3:
        values = values * 2 // 3
    size = (values * bits + 7) // 8
    return size + size % 2


def written_layout(data: bytes | memoryview, by_tag: Mapping[int, Element]
                   ) -> tuple[int, int, int, int]:
    """Rows, Columns, Samples per Pixel (1 when absent) and Bits Allocated as a walk of
    ``data`` found them (tag -> element), read without pydicom: 0 for one too short."""
    layout = []
    for tag in LAYOUT_TAGS[:4]:
        e = by_tag.get(tag)
        raw = b"" if e is None else data[e[3]:e[4]]
        layout.append(int.from_bytes(raw[:2], "little") if len(raw) >= 2 else
                      (1 if tag == _SAMPLES and e is None else 0))
    rows, columns, samples, bits = layout
    return rows, columns, samples, bits


def dataset_layout(ds: Dataset) -> tuple[int, int, int, int]:
    """The same four of a dataset (the Dataset path)."""
    rows, columns, samples, bits = (
        _number(ds, t, 1 if t == _SAMPLES else 0) for t in LAYOUT_TAGS[:4])
    return rows, columns, samples, bits


def _number(ds: Dataset, tag: int, default: int = 0) -> int:
    try:
        value = ds[tag].value if tag in ds else default
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return 0


def trim_native_excess(ds: Dataset) -> int:
    """Cut ``ds``'s native Pixel Data to its image's length (the Dataset path); returns
    how many bytes went (0: ``ds`` untouched)."""
    elem = ds.get_item(PIXEL_DATA)
    if elem is None:
        return 0
    ts = output_transfer_syntax(ds, input_transfer_syntax(ds))
    value = elem.value
    if ts not in NATIVE_SYNTAXES or not isinstance(value, bytes | bytearray | memoryview):
        return 0
    if isinstance(elem, RawDataElement) and elem.length == 0xFFFFFFFF:
        return 0
    rows, columns, samples, bits = dataset_layout(ds)
    frames = _number(ds, 0x00280008, 1)
    size = image_length(rows, columns, samples, bits, frames, text_value(ds, 0x00280004))
    if size is None or len(value) <= size:
        return 0
    vr = elem.VR if elem.VR in ("OB", "OW") else ("OB" if bits <= 8 else "OW")
    ds._dict[BaseTag(PIXEL_DATA)] = RawDataElement(
        BaseTag(PIXEL_DATA), vr, size, bytes(value[:size]), 0,
        ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2", True, False)
    return len(value) - size
