"""Reading is defensive (clear, PHI-free reasons) and writing keeps the encoding."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from dicom_deid.dicom.files import Chunk, FileRange, open_input, read_file, write_atomic
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.errors import BadInput
from instances import deidentify_bytes, make_instance, to_bytes


def _reason(data: bytes) -> BadInput:
    with pytest.raises(BadInput) as info:
        parse_instance(data)
    assert "Smith" not in info.value.reason and "MRN" not in info.value.reason
    return info.value


def test_zero_byte() -> None:
    assert _reason(b"").kind == "zero-byte"


def test_not_dicom() -> None:
    assert _reason(b"hello, this is a text file\n" * 20).kind == "not-dicom"
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 300).kind == "not-dicom"


def test_truncated_in_pixel_data_and_in_header() -> None:
    data = to_bytes(make_instance())
    bad = _reason(data[:-3])
    assert bad.kind == "truncated" and "(7FE0,0010)" in bad.reason
    assert _reason(data[:400]).kind == "truncated"


def test_unknown_character_set() -> None:
    ds = make_instance()
    ds.SpecificCharacterSet = "ISO_IR 999"
    bad = _reason(to_bytes(ds))
    assert bad.kind == "bad-charset" and "ISO_IR 999" in bad.reason
    # Probe 13: a value of no term's form may be anything a writer put there (a name):
    # never quoted
    ds.SpecificCharacterSet = "KOWALSKI^J"
    bad = _reason(to_bytes(ds))
    assert bad.kind == "bad-charset" and "KOWALSKI" not in bad.reason


def test_raw_implicit_dataset_without_preamble_becomes_part10() -> None:
    ds = make_instance()
    buf = io.BytesIO()
    del ds.file_meta  # a bare implicit VR dataset, as older systems wrote them
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    raw = buf.getvalue()
    assert raw[:2] == b"\x08\x00"
    out, _, out_bytes = deidentify_bytes(raw)
    assert out_bytes[128:132] == b"DICM"
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.Modality == "CT" and out.PixelData == ds.PixelData


def test_raw_big_endian_dataset_without_preamble_becomes_part10() -> None:
    """Read like its little-endian twin (pydicom's ExplVR_BigEndNoMeta.dcm was refused as
    'not a DICOM file' while ExplVR_LitEndNoMeta.dcm was accepted)."""
    ds = make_instance()
    del ds.file_meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=False)
    raw = buf.getvalue()
    assert raw[:4] == b"\x00\x08\x00\x16" and raw[4:6] == b"UI"  # (0008,0016) big endian
    out, result, out_bytes = deidentify_bytes(raw)
    assert out_bytes[128:132] == b"DICM"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert out.PixelData == ds.PixelData and out.Modality == "CT"
    assert out.PatientID and out.PatientID != ds.PatientID
    assert result.original_sop_uid == ds.SOPInstanceUID != result.sop_uid


def _jpeg_frame() -> bytes:
    """The frame of pydicom's own baseline JPEG test file (written by dcmtk)."""
    from pydicom.encaps import generate_frames

    src = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files"
                          / "SC_rgb_jpeg_dcmtk.dcm")
    return next(generate_frames(src.PixelData, number_of_frames=1))


def _rle_frame(ds: pydicom.Dataset) -> bytes:
    """``ds``'s native image as one RLE frame (pydicom's encoder)."""
    from pydicom.pixels import get_encoder

    return next(get_encoder(RLELossless).iter_encode(ds))


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit])
def test_transfer_syntax_and_pixel_bytes_preserved(ts: str) -> None:
    ds = make_instance()
    ds.file_meta.TransferSyntaxUID = ts
    if ts != ImplicitVRLittleEndian:
        # frames are walked (a JPEG frame's markers, an RLE frame's segments): real ones
        frame = _jpeg_frame() if ts == JPEGBaseline8Bit else _rle_frame(ds)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True)
    out, _, _ = deidentify_bytes(buf.getvalue())
    assert out.file_meta.TransferSyntaxUID == ts
    assert out.PixelData == ds.PixelData


def test_write_atomic_writes_every_chunk_and_resumes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More chunks than one writev takes, and a kernel that writes 7 bytes at a time."""
    chunks: list[bytes | memoryview] = [bytes([i % 251]) * (i % 5 + 1) for i in range(2500)]
    expected = b"".join(chunks)
    write_atomic(tmp_path / "new" / "a.dcm", chunks)  # the folder does not exist yet
    assert (tmp_path / "new" / "a.dcm").read_bytes() == expected

    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, bufs: real_writev(fd, [bytes(bufs[0])[:7]]))
    write_atomic(tmp_path / "b.dcm", [memoryview(expected)[:100], expected[100:]])
    assert (tmp_path / "b.dcm").read_bytes() == expected
    write_atomic(tmp_path / "c.dcm", chunks)
    assert (tmp_path / "c.dcm").read_bytes() == expected
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["b.dcm", "c.dcm", "new"]  # no temp file left


def test_write_atomic_leaves_neither_half_file_nor_temp_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.dcm").write_bytes(b"old")

    def full_disk(fd: int, bufs: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "a.dcm", [b"new"])
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]
    assert (tmp_path / "a.dcm").read_bytes() == b"old"


def test_read_file_reads_whole_files_and_reports_unreadable_ones(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3000
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(tmp_path / "f") == data
    assert read_file(str(tmp_path / "empty")) == b""
    for missing in (tmp_path / "nope", tmp_path):  # absent, and a folder
        with pytest.raises(BadInput) as info:
            read_file(missing)
        assert info.value.kind == "unreadable"
        assert str(tmp_path) not in info.value.reason  # reasons carry no path


def test_open_input_reads_the_head_of_large_files_only(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "small").write_bytes(data[:1500])
    big, small = open_input(tmp_path / "big", head_bytes=1000), open_input(
        tmp_path / "small", head_bytes=1000)
    try:
        assert (big.size, big.head) == (300_000, data[:1000])
        assert big.whole() == data
        assert (small.size, small.head) == (1500, data[:1500])  # up to twice the head: all
    finally:
        os.close(big.fd)
        os.close(small.fd)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_file_ranges_are_copied_from_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    """copy_file_range, or (another filesystem, an old kernel) a read and a write."""
    data = os.urandom(300_000)
    (tmp_path / "in").write_bytes(data)
    if not kernel_copy:
        def cross_device(*args: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", cross_device)
    chunks: list[Chunk] = [b"head", FileRange(1000, 200_000), memoryview(data)[5:10],
                           FileRange(250_000, 50_000)]
    fd = os.open(tmp_path / "in", os.O_RDONLY)
    try:
        write_atomic(tmp_path / "out", chunks, fd)
    finally:
        os.close(fd)
    expected = b"head" + data[1000:201_000] + data[5:10] + data[250_000:]
    assert (tmp_path / "out").read_bytes() == expected


def test_an_input_that_shrinks_before_its_tail_is_copied_leaves_no_output(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").write_bytes(os.urandom(300_000))
    source = open_input(tmp_path / "in", head_bytes=1000)
    try:
        os.truncate(tmp_path / "in", 100_000)  # rewritten in the landing zone meanwhile
        with pytest.raises(BadInput) as info:
            write_atomic(tmp_path / "out.dcm",
                         [source.head, FileRange(1000, source.size - 1000)], source.fd)
    finally:
        os.close(source.fd)
    assert info.value.kind == "truncated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_value_read_without_a_vr_is_written_with_its_dictionarys() -> None:
    """An item of a UN sequence is read implicitly: its values have no VR. Written in an
    explicit-VR file they take the data dictionary's (the bytes are the same), and stay
    UN where the dictionary has none, where it is ambiguous or a sequence."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from dicom_deid.dicom.writer import raw_header

    def vr_written(tag: int, value: bytes, length: int | None = None) -> bytes:
        elem = RawDataElement(BaseTag(tag), None, len(value) if length is None else length,
                              value, 0, True, True)
        return raw_header(elem, implicit=False)[4:6]

    assert vr_written(0x00080102, b"99LOCAL ") == b"SH"  # CodingSchemeDesignator
    assert vr_written(0x00090010, b"ACME") == b"UN"  # private
    assert vr_written(0x00280106, b"\x00\x00") == b"UN"  # US or SS
    assert vr_written(0x00400275, b"", 0xFFFFFFFF) == b"UN"  # a sequence, items implicit
