"""The one element walker: its strictness, and that every user of it reports a damaged file
as a BadInput (or declines it), never with a struct.error or an IndexError."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_deid.config.google import config_from_options
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.walker import (
    ITEM,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    elements,
    locate_dataset,
    sequence_items,
)
from dicom_deid.errors import BadInput
from dicom_deid.metadata.scan import Fallback, scan_row
from instances import KEY, make_instance, to_bytes


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return head + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _explicit_le(ds: Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return to_bytes(ds)


def _body(data: bytes) -> tuple[int, bool]:
    start = locate_dataset(data)
    return start.pos, start.implicit


def test_elements_of_a_real_file_tile_its_bytes() -> None:
    data = _explicit_le(make_instance())
    pos, implicit = _body(data)
    found = elements(data, pos, len(data), implicit, ordered=True)
    assert found[0][2] == pos
    for (_, vr, _, _, stop, undefined), nxt in itertools.pairwise(found):
        assert nxt[2] == (stop + 8 if undefined else stop)  # no gap, no overlap
        assert vr is not None
    assert found[-1][0] == 0x7FE00010 and found[-1][4] == len(data)
    assert [e[0] for e in found] == sorted(e[0] for e in found)


def test_reserved_bytes_of_a_long_vr_must_be_zero() -> None:
    good = _explicit(0x00081030, b"LO", b"CT HEAD ") + _explicit(0x00091010, b"OB", b"\x01\x02")
    assert len(elements(good, 0, len(good), False)) == 2
    bad = bytearray(good)
    bad[len(_explicit(0x00081030, b"LO", b"CT HEAD ")) + 6] = 1  # OB's reserved bytes
    with pytest.raises(BadInput, match=r"reserved bytes not zero") as info:
        elements(bytes(bad), 0, len(bad), False)
    assert info.value.kind == "unreadable" and "(0009,1010)" in info.value.reason


def test_an_unknown_vr_and_a_stray_item_tag_are_refused() -> None:
    with pytest.raises(BadInput, match=r"invalid VR at element \(0008,1030\)"):
        elements(_explicit(0x00081030, b"XX", b"ab"), 0, 12, False)
    stray = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    with pytest.raises(BadInput, match="unexpected item tag"):
        elements(stray, 0, len(stray), True)


def test_order_is_checked_only_when_asked() -> None:
    data = _explicit(0x00100020, b"LO", b"ID") + _explicit(0x00100010, b"PN", b"A^B ")
    assert [e[0] for e in elements(data, 0, len(data), False)] == [0x00100020, 0x00100010]
    with pytest.raises(BadInput) as info:
        elements(data, 0, len(data), False, ordered=True)
    assert info.value.kind == "unordered"


def test_a_value_longer_than_the_file_names_the_element() -> None:
    data = _explicit(0x00081030, b"LO", b"CT HEAD ")[:-3]
    with pytest.raises(BadInput, match=r"element \(0008,1030\) declares 8 bytes, 5 present"):
        elements(data, 0, len(data), False)


def test_a_head_may_end_inside_the_last_value_never_inside_a_header() -> None:
    data = _explicit(0x00081030, b"LO", b"CT HEAD ") + _explicit(0x7FE00010, b"OW", b"\0" * 64)
    head = data[:40]
    found = elements(head, 0, len(data), False)
    assert found[-1][4] == len(data) > len(head)  # the value reaches past the head
    with pytest.raises(BadInput, match="ends inside an element header"):
        elements(data[:20], 0, len(data), False)  # the second header is cut


def _undefined_sequence(item_length_defined: bool) -> bytes:
    inner = _explicit(0x00080100, b"SH", b"R07.4 ") + _explicit(0x00080104, b"LO", b"Pain")
    if item_length_defined:
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
    else:
        item = (struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + inner
                + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
    head = struct.pack("<HH", 0x0032, 0x1064) + b"SQ\x00\x00" + struct.pack("<I", UNDEFINED)
    return head + item + item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


@pytest.mark.parametrize("defined", [True, False])
def test_undefined_length_sequences_and_their_items(defined: bool) -> None:
    data = _undefined_sequence(defined) + _explicit(0x00400254, b"LO", b"Exam")
    found = elements(data, 0, len(data), False)
    assert [e[0] for e in found] == [0x00321064, 0x00400254]
    seq = found[0]
    assert seq[5] and data[seq[4]:seq[4] + 8] == struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    walked = sequence_items(data, seq[3], seq[4], False, seq[0])  # each item walked once
    assert [[e[0] for e in item] for item in walked] == [[0x00080100, 0x00080104]] * 2
    for item in walked:  # offsets point into the file's bytes
        assert data[item[1][3]:item[1][4]] == b"Pain"


def test_delimiters_with_a_length_are_malformed() -> None:
    data = bytearray(_undefined_sequence(False))
    data[-4:] = struct.pack("<I", 4)  # the sequence delimiter claims 4 bytes
    with pytest.raises(BadInput, match=r"malformed sequence in element \(0032,1064\)"):
        elements(bytes(data), 0, len(data), False)
    item_delim = bytes(_undefined_sequence(False)).index(struct.pack("<HH", 0xFFFE, 0xE00D))
    data = bytearray(_undefined_sequence(False))
    data[item_delim + 4:item_delim + 8] = struct.pack("<I", 2)
    with pytest.raises(BadInput, match="malformed sequence item"):
        elements(bytes(data), 0, len(data), False)


def test_trailing_padding_is_skipped() -> None:
    data = _explicit(0x00081030, b"LO", b"CT") + _explicit(0xFFFCFFFC, b"OB", b"\0" * 6)
    assert [e[0] for e in elements(data, 0, len(data), False)] == [0x00081030]


def _variants() -> list[tuple[str, bytes]]:
    """Files with sequences (defined and undefined), private blocks and pixel data."""
    explicit = _explicit_le(make_instance())
    ds = make_instance()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = to_bytes(ds)
    nested = make_instance()
    nested.ProcedureCodeSequence = Sequence([Dataset()])
    nested.ProcedureCodeSequence[0].CodeMeaning = "CT chest"
    nested.ProcedureCodeSequence[0].CodeValue = "71250"
    nested.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return [("explicit", explicit), ("implicit", implicit), ("nested", to_bytes(nested))]


@pytest.mark.parametrize(("name", "data"), _variants(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_truncation_is_a_bad_input_for_every_user(name: str, data: bytes) -> None:
    """Cut the file after every byte: the walker, the reader and the metadata scanner raise
    only their own errors, and the byte path declines (its caller then reports why)."""
    byte_path = ByteDeidentifier(Deidentifier(config_from_options("basic", []), KEY))
    assert byte_path.deidentify(data) is not None  # the whole file is taken
    parse_instance(data)
    scan_row(data)
    refused = 0
    for cut in range(1, len(data)):
        part = data[:cut]
        with contextlib.suppress(BadInput):
            pos, implicit = _body(part)
            elements(part, pos, len(part), implicit)
        try:
            parse_instance(part)
        except BadInput:
            refused += 1
            assert byte_path.deidentify(part) is None, cut  # never writes what is refused
        with contextlib.suppress(Fallback):
            scan_row(part)
    assert refused > len(data) // 2  # most cuts fall inside an element


def test_items_refuse_what_is_not_an_item() -> None:
    data = _explicit(0x00081030, b"LO", b"CT")
    with pytest.raises(BadInput, match=r"malformed sequence in element \(0032,1064\)"):
        sequence_items(data, 0, len(data), False, 0x00321064)
    long_item = struct.pack("<HHI", 0xFFFE, 0xE000, 100) + b"\0" * 8
    with pytest.raises(BadInput, match="longer than its sequence"):
        sequence_items(long_item, 0, len(long_item), False, 0x00321064)
    assert ITEM == 0xFFFEE000 and SEQUENCE_DELIMITER == 0xFFFEE0DD
