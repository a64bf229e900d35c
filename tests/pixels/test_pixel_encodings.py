"""Burned-in text redaction on the less common encodings: JPEG-LS, Explicit VR Big Endian,
Deflated Explicit VR Little Endian, bit-packed (1-bit) pixels, and cine loops.

As in test_pixel_redaction: the planted text is readable before, unreadable after, and
nothing outside the blanked rows changes.
"""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from test_pixel_redaction import (
    ALL_TEXT,
    BANNER,
    IDENTITY,
    SENSITIVE,
    _changed_rows,
    _dciodvfy_errors,
    _draw,
    _image,
    _leaks,
    _run,
    _texts,
)

import dicom_deid.pixels.clean as pixels
from dicom_deid.pixels import ocr
from instances import to_bytes


def _screen(kind: str) -> np.ndarray:
    """A 160x360 capture with the banner on its top rows: 8-bit gray, signed 12-bit, RGB."""
    rng = np.random.default_rng(7)
    gray = rng.integers(30, 90, (160, 360), dtype=np.uint8)
    gray[:26] = 0
    gray = _draw(gray, [(8, 5, BANNER)], 250)
    if kind == "int16":
        return (gray.astype(np.int16) * 8 - 1000).astype(np.int16)
    if kind == "rgb":
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rgb[26:, :, 0] //= 2  # a tint below the banner, so the samples differ
        return rgb
    return gray


def _screen_ds(kind: str) -> Dataset:
    arr = _screen(kind)
    return _image(arr, "RGB" if arr.ndim == 3 else "MONOCHROME2", modality="OT",
                  sop_class=SecondaryCaptureImageStorage, signed=kind == "int16",
                  bits_stored=12 if kind == "int16" else None)


@pytest.mark.parametrize("kind", ["uint8", "int16"])
def test_jpeg_ls_lossless_input(kind: str, tmp_path: Path) -> None:
    """JPEG-LS lossless (encoded here with pyjpegls, a dev dependency) is decoded by the
    runtime's pylibjpeg-libjpeg, blanked, and written as RLE Lossless."""
    arr = _screen(kind)
    ds = _screen_ds(kind)
    ds.compress(JPEGLSLossless, arr, generate_instance_uid=False)
    runtime, _ = get_decoder(JPEGLSLossless).as_array(ds, decoding_plugin="pylibjpeg")
    assert np.array_equal(runtime, arr)  # no pyjpegls needed to read it
    data, before, after, boxes, out = _run(ds, ALL_TEXT)
    assert np.array_equal(before.pixel_array, arr)
    assert len(_leaks(_texts(arr))) == 3
    assert after.file_meta.TransferSyntaxUID == RLELossless and boxes >= 1
    assert after.pixel_array.dtype == arr.dtype
    assert _leaks(_texts(after.pixel_array)) == []
    assert max(_changed_rows(arr, after.pixel_array)) < 32
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


@pytest.mark.parametrize("ts", [JPEGExtended12Bit, JPEGLosslessSV1])
def test_jpeg_extended_and_lossless_inputs(ts: str, tmp_path: Path) -> None:
    """12-bit JPEG Extended (process 4) and JPEG Lossless SV1 (process 14), encoded here
    with imagecodecs (a dev dependency), are decoded by the runtime's pylibjpeg-libjpeg,
    blanked, and written as RLE Lossless; rows below the banner keep their decoded values."""
    arr = _screen("uint8").astype(np.uint16) * 16  # 12 bits stored
    ds = _image(arr, "MONOCHROME2", modality="OT", sop_class=SecondaryCaptureImageStorage,
                bits_stored=12)
    lossless = ts == JPEGLosslessSV1
    frame = imagecodecs.jpeg8_encode(arr, level=95, lossless=lossless, bitspersample=12)
    ds.file_meta.TransferSyntaxUID = ts
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if not lossless:
        ds.LossyImageCompression = "01"
    data, before, after, boxes, out = _run(ds, ALL_TEXT)
    decoded = before.pixel_array
    if lossless:
        assert np.array_equal(decoded, arr)
    else:
        assert np.abs(decoded.astype(int) - arr).max() < 200  # a lossy copy of the screen
    assert len(_leaks(_texts(decoded))) == 3
    assert after.file_meta.TransferSyntaxUID == RLELossless and boxes >= 1
    assert _leaks(_texts(after.pixel_array)) == []
    assert max(_changed_rows(decoded, after.pixel_array)) < 32
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


@pytest.mark.parametrize(
    ("ts", "kind"),
    [(ExplicitVRBigEndian, "int16"), (ExplicitVRBigEndian, "rgb"),
     (DeflatedExplicitVRLittleEndian, "int16"), (DeflatedExplicitVRLittleEndian, "rgb")],
)
def test_big_endian_and_deflated_inputs(ts: str, kind: str, tmp_path: Path) -> None:
    """Native pixel data in the two encodings pydicom reads whole: blanked in place and
    written back in the input's own transfer syntax."""
    arr = _screen(kind)
    ds = _screen_ds(kind)
    ds.file_meta.TransferSyntaxUID = ts
    if ts == ExplicitVRBigEndian:
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    data, before, after, boxes, out = _run(ds, ALL_TEXT)
    assert np.array_equal(before.pixel_array, arr)
    assert after.file_meta.TransferSyntaxUID == ts and boxes >= 1
    assert _leaks(_texts(after.pixel_array)) == []
    assert max(_changed_rows(arr, after.pixel_array)) < 32
    assert after.BurnedInAnnotation == "NO"
    out_check, in_check = _inflated(out), _inflated(data)
    assert len(_dciodvfy_errors(out_check, tmp_path)) <= len(_dciodvfy_errors(in_check, tmp_path))


def _inflated(data: bytes) -> bytes:
    """Deflated files re-written as Explicit VR Little Endian (dciodvfy cannot inflate)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        return data
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return to_bytes(ds)


def _pack(planes: np.ndarray, big_endian: bool) -> bytes:
    """PS3.5 8.1.1: bits little-end first; an OW value in big endian swaps each word."""
    packed = np.packbits(planes.ravel(), bitorder="little").tobytes()
    packed += b"\x00" * (len(packed) % 2)
    if big_endian:
        packed = np.frombuffer(packed, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
    return packed


def _unpack(data: bytes, shape: tuple[int, ...], big_endian: bool) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if big_endian:
        raw = raw.reshape(-1, 2)[:, ::-1].ravel()
    bits = np.unpackbits(raw, bitorder="little")
    return bits[: int(np.prod(shape))].reshape(shape)


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_one_bit_pixels(ts: str, tmp_path: Path) -> None:
    """BitsAllocated 1, three frames whose boundaries fall inside bytes: the banner is
    found and blanked in every frame; every other bit, and the padding, is unchanged."""
    rows, cols, frames = 101, 333, 3  # 33,633 bits a frame: not a whole number of bytes
    text = _draw(np.zeros((rows, cols), np.uint8), [(8, 6, BANNER)], 255) > 127
    rng = np.random.default_rng(2)
    planes = np.stack([text | (rng.random((rows, cols)) < 0.02) for _ in range(frames)])
    planes[:, 60:90, 40:300] = True  # a solid shape below the text
    big = ts == ExplicitVRBigEndian
    ds = _image(np.zeros((rows, cols), np.uint8), "MONOCHROME2", modality="OT",
                sop_class=SecondaryCaptureImageStorage)
    ds.file_meta.TransferSyntaxUID = ts
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.NumberOfFrames = 1, 1, 0, frames
    ds.PixelData = _pack(planes, big)
    ds["PixelData"].VR = "OW"
    assert len(_leaks(_texts(planes[0].astype(np.uint8)))) == 3
    data, _, after, boxes, out = _run(ds, ALL_TEXT)
    assert after.file_meta.TransferSyntaxUID == ts and after.BitsAllocated == 1
    assert boxes >= 1
    raw = after.PixelData
    assert len(raw) == len(ds.PixelData) and raw[-1:] == ds.PixelData[-1:]  # padding kept
    result = _unpack(raw, planes.shape, big)
    for frame in result:
        assert _leaks(_texts(frame * np.uint8(255))) == []
    changed = np.nonzero((result != planes).any(axis=(0, 2)))[0]
    assert changed.size and changed.max() < 32
    assert np.array_equal(result[:, 32:], planes[:, 32:])
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


def _cine_with_a_held_frame() -> Dataset:
    """Four frames of changing speckle under a fixed banner; frame 1 repeats frame 0 and
    frame 2 alone carries an ID."""
    rng = np.random.default_rng(9)
    frames = []
    for f in range(4):
        rgb = np.repeat(rng.integers(20, 110, (120, 360, 1), dtype=np.uint8), 3, axis=2)
        rgb[:26] = 0
        lines = [(8, 5, BANNER)] + ([(20, 70, "MRN7654321")] if f == 2 else [])
        frames.append(_draw(rgb, lines, (255, 255, 255)))
    frames[1] = frames[0]  # a held frame
    return _image(np.stack(frames), "RGB", sop_class=UltrasoundMultiFrameImageStorage, frames=4)


def _count_frames_read(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for each frame the cleaner reads, whether it asked for recognition."""
    calls: list[bool] = []

    def counting(image: np.ndarray, recognise: bool = True) -> list[ocr.TextLine]:
        calls.append(recognise)
        return ocr.find_text(image, recognise)

    monkeypatch.setattr(pixels, "find_text", counting)
    return calls


def test_cine_reads_each_distinct_frame_and_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cine loop: a repeated frame is not read twice, a line already recognised in an
    earlier frame is not recognised again, and text in a single frame is still found."""
    calls = _count_frames_read(monkeypatch)
    rec = ocr._recognizer()
    assert rec is not None, "the rapidocr recogniser could not be wrapped"
    rec.calls = 0
    _, _, after, boxes, _ = _run(_cine_with_a_held_frame(), SENSITIVE)
    assert calls == [True] * 3  # frames 0, 2 and 3; frame 1 repeats frame 0
    assert 2 <= rec.calls < 4  # banner once (identical pixels on a black band), the MRN once
    assert boxes >= 2
    for frame in after.pixel_array:
        assert _leaks(_texts(frame), (*IDENTITY, "7654321")) == []


def test_all_text_mode_never_recognises(monkeypatch: pytest.MonkeyPatch) -> None:
    """REDACT_ALL_TEXT blanks every line whatever it says: lines are detected, never read,
    and the same text is gone as when they were."""
    calls = _count_frames_read(monkeypatch)
    rec = ocr._recognizer()
    assert rec is not None
    rec.calls = 0
    _, _, after, boxes, _ = _run(_cine_with_a_held_frame(), ALL_TEXT)
    assert calls == [False] * 3 and rec.calls == 0
    assert boxes >= 2
    for frame in after.pixel_array:
        assert _leaks(_texts(frame), (*IDENTITY, "7654321")) == []
