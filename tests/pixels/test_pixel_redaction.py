"""Burned-in text redaction end to end, with the real OCR engine on drawn text.

Every image is built here with known text at a known place. Each test checks that the
input OCR really reads the planted strings (so "not found afterwards" means something),
that none of them is readable after de-identification, that pixels away from the text
are unchanged, and that the output is valid DICOM. Fixtures are module-scoped: OCR costs
a few hundred milliseconds per frame.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

import dicom_deid.pixels.clean as pixels
from dicom_deid.config.model import DeidConfig, ImageConfig, Option, TextRedactionMode
from dicom_deid.deid.batch import iter_sources, run_batch
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.dicom.reader import element_is_raw, parse_instance
from dicom_deid.pixels.ocr import find_text, to_detection_image
from instances import KEY, ROOT, deidentify_bytes, make_instance, to_bytes

NAME_LINE = "SMITH, JOHN"
IDENTITY = ("SMITH", "1234567", "14/05/2023")
"""make_instance(): PatientName Smith^John, PatientID MRN1234567, StudyDate 20230514."""
BANNER = f"{NAME_LINE}   MRN1234567   14/05/2023"
ALL_TEXT = DeidConfig(clean_image=ImageConfig(TextRedactionMode.REDACT_ALL_TEXT))
SENSITIVE = DeidConfig(clean_image=ImageConfig(TextRedactionMode.REDACT_SENSITIVE_TEXT))


def _draw(arr: np.ndarray, lines: list[tuple[int, int, str]], fill: object,
          size: int = 16) -> np.ndarray:
    """Draw (x, y, text) lines into a copy of an 8-bit gray or RGB image."""
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    for x, y, text in lines:
        draw.text((x, y), text, fill=fill, font=font)  # type: ignore[arg-type]
    return np.array(img)


def _image(arr: np.ndarray, photometric: str, *, modality: str = "US",
           sop_class: str = UltrasoundImageStorage, signed: bool = False,
           bits_stored: int | None = None, frames: int = 1) -> Dataset:
    """make_instance()'s header (with its PHI) around native pixel data ``arr``."""
    ds = make_instance()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    shape = arr.shape[1:] if frames > 1 else arr.shape
    ds.Rows, ds.Columns = shape[:2]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}9.{ds.Rows}"
    ds.SamplesPerPixel = 3 if len(shape) == 3 else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    return ds


def _texts(frame: np.ndarray, invert: bool = False) -> str:
    return " | ".join(line.text for line in find_text(to_detection_image(frame, invert)))


def _frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr if frames > 1 else arr[None, ...]


def _leaks(text: str, strings: tuple[str, ...] = IDENTITY) -> list[str]:
    folded = text.upper().replace(" ", "")
    return [s for s in strings if s.upper().replace(" ", "") in folded]


def _changed_rows(before: np.ndarray, after: np.ndarray) -> set[int]:
    diff = before != after
    while diff.ndim > 2:
        diff = diff.any(axis=-1) if diff.shape[-1] in (1, 3) else diff.any(axis=0)
    return set(np.nonzero(diff)[0].tolist())


def _dciodvfy_errors(data: bytes, tmp: Path) -> list[str]:
    found = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(found).exists(), "dciodvfy missing: install the dev extra"
    path = tmp / "check.dcm"
    path.write_bytes(data)
    proc = subprocess.run([found, "-new", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=60, check=False)
    return [line.split(" - ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Error")]


Run = tuple[bytes, Dataset, Dataset, int, bytes]
"""input bytes, input dataset, output dataset, redacted boxes, output bytes"""


def _run(ds: Dataset, config: DeidConfig) -> Run:
    data = to_bytes(ds)
    out, result, out_bytes = deidentify_bytes(data, config)
    return data, pydicom.dcmread(io.BytesIO(data)), out, result.redacted_boxes, out_bytes


# -- images ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def us_banner() -> Dataset:
    """Ultrasound, RGB: a speckled sector under a black top banner naming the patient."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 160, (240, 400, 3), dtype=np.uint8)
    arr[:24] = 0
    return _image(_draw(arr, [(4, 3, BANNER)], (255, 255, 255)), "RGB")


@pytest.fixture(scope="module")
def us_run(us_banner: Dataset) -> Run:
    return _run(us_banner, ALL_TEXT)


@pytest.fixture(scope="module")
def dose_screen() -> Dataset:
    """Secondary capture dose screen: white on black, identity and dose lines."""
    lines = [NAME_LINE, "ID MRN1234567", "Exam 14/05/2023", "CTDIvol 11.1 mGy",
             "Total DLP 763.8 mGy-cm"]
    arr = _draw(np.zeros((200, 320), np.uint8), [(6, 6 + 24 * i, t) for i, t in
                                                 enumerate(lines)], 255, size=18)
    return _image(arr, "MONOCHROME2", modality="OT", sop_class=SecondaryCaptureImageStorage)


# -- tests ----------------------------------------------------------------------------------


def test_planted_text_is_readable_before(us_banner: Dataset, dose_screen: Dataset) -> None:
    assert len(_leaks(_texts(us_banner.pixel_array))) == 3
    assert len(_leaks(_texts(dose_screen.pixel_array))) == 3


def test_us_banner_all_text(us_run: Run, tmp_path: Path) -> None:
    data, before, after, boxes, out = us_run
    assert boxes >= 1
    assert _leaks(_texts(after.pixel_array)) == []
    # native input: same transfer syntax, and not one byte changes below the banner
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert max(_changed_rows(before.pixel_array, after.pixel_array)) < 32
    assert after.BurnedInAnnotation == "NO"
    assert any(item.CodeValue == "113101" for item in after.DeidentificationMethodCodeSequence)
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


def test_rerun_is_byte_identical(us_banner: Dataset, us_run: Run) -> None:
    assert _run(us_banner, ALL_TEXT)[4] == us_run[4]


def test_dose_screen_sensitive_keeps_dose_values(dose_screen: Dataset, tmp_path: Path) -> None:
    data, _, after, boxes, out = _run(dose_screen, SENSITIVE)
    text = _texts(after.pixel_array)
    assert boxes == 3
    assert _leaks(text) == []
    assert "DLP" in text and "mGy" in text  # dose lines are not identifying: kept
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))
    # excludeInfoTypes DATE: the date line stays; the name and ID lines still go
    keep_dates = DeidConfig(clean_image=ImageConfig(
        TextRedactionMode.REDACT_SENSITIVE_TEXT, exclude_info_types=("DATE",)))
    _, _, after_dates, boxes_dates, _ = _run(dose_screen, keep_dates)
    assert boxes_dates == 2
    assert _leaks(_texts(after_dates.pixel_array)) == ["14/05/2023"]


def test_dark_text_on_light_background() -> None:
    """A scanned form: black text on white paper, read and removed the same way."""
    arr = np.full((160, 360), 235, np.uint8)
    arr = _draw(arr, [(10, 20, BANNER), (10, 90, "Signed: Dr Ruth")], 0)
    ds = _image(arr, "MONOCHROME2", modality="DOC", sop_class=SecondaryCaptureImageStorage)
    _, before, after, boxes, _ = _run(ds, ALL_TEXT)
    assert len(_leaks(_texts(before.pixel_array))) == 3
    assert boxes == 2
    assert _leaks(_texts(after.pixel_array) + _texts(after.pixel_array, invert=True)) == []


def test_ct_16_bit_rle_input(tmp_path: Path) -> None:
    """Signed 12-in-16-bit CT with text at the top of the range, RLE compressed: windowed
    for OCR only, blanked with the image's own minimum, written back as RLE Lossless."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :256]
    body = ((yy - 140) ** 2 + (xx - 128) ** 2) < 100**2
    arr = np.where(body, rng.integers(-100, 300, (256, 256)), -1000).astype(np.int16)
    text = _draw(np.zeros((256, 256), np.uint8), [(6, 4, BANNER[:28])], 255, size=14)
    arr[text > 127] = 2047
    ds = _image(arr, "MONOCHROME2", modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2",
                signed=True, bits_stored=12)
    ds.BurnedInAnnotation = "YES"
    ds.compress(RLELossless, arr, generate_instance_uid=False)
    data, before, after, boxes, out = _run(ds, ALL_TEXT)
    assert len(_leaks(_texts(before.pixel_array), IDENTITY[:2])) == 2
    assert after.file_meta.TransferSyntaxUID == RLELossless and boxes >= 1
    assert _leaks(_texts(after.pixel_array)) == []
    assert max(_changed_rows(before.pixel_array, after.pixel_array)) < 30
    assert after.pixel_array.dtype == np.int16 and after.BitsStored == 12
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


def test_jpeg_baseline_multiframe(tmp_path: Path) -> None:
    """Lossy YBR_FULL_422 cine, text on different rows in each frame: every frame is read,
    every box is blanked in every frame, and the result is lossless RLE in RGB."""
    rng = np.random.default_rng(4)
    frames = []
    for f, row in enumerate((4, 200)):
        rgb = np.repeat(rng.integers(20, 120, (240, 400, 1), dtype=np.uint8), 3, axis=2)
        rgb[row - 4 : row + 22] = 0
        frames.append(_draw(rgb, [(4, row, BANNER if f == 0 else "MRN1234567")],
                            (255, 255, 255)))
    ds = _image(np.stack(frames), "YBR_FULL_422", sop_class=UltrasoundMultiFrameImageStorage,
                frames=2)
    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=90, subsampling=1)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    data, before, after, boxes, out = _run(ds, ALL_TEXT)
    assert _leaks(_texts(_frames(before)[0])) and _leaks(_texts(_frames(before)[1]))
    assert after.file_meta.TransferSyntaxUID == RLELossless
    assert after.PhotometricInterpretation == "RGB" and after.LossyImageCompression == "01"
    assert boxes >= 2
    for frame in _frames(after):
        assert _leaks(_texts(frame)) == []
    changed = _changed_rows(_frames(before), _frames(after))
    assert changed and all(r < 32 or 190 <= r < 230 for r in changed)
    assert len(_dciodvfy_errors(out, tmp_path)) <= len(_dciodvfy_errors(data, tmp_path))


def test_jpeg2000_lossless_input() -> None:
    arr = _draw(np.full((160, 360), 40, np.uint8), [(8, 8, BANNER)], 250)
    ds = _image(arr, "MONOCHROME2", modality="OT", sop_class=SecondaryCaptureImageStorage)
    ds.compress(JPEG2000Lossless, arr, generate_instance_uid=False)
    _, before, after, boxes, _ = _run(ds, ALL_TEXT)
    assert len(_leaks(_texts(before.pixel_array))) == 3
    assert after.file_meta.TransferSyntaxUID == RLELossless and boxes == 1
    assert _leaks(_texts(after.pixel_array)) == []
    assert max(_changed_rows(before.pixel_array, after.pixel_array)) < 32


def test_images_needing_no_ocr_are_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CT without BurnedInAnnotation YES is not an OCR candidate under the AUTO scope:
    its pixel data stays the raw bytes that were read."""

    def refuse(image: object) -> list[object]:
        raise AssertionError("OCR ran on an image that needs none")

    monkeypatch.setattr(pixels, "find_text", refuse)
    data = to_bytes(make_instance())
    inst = parse_instance(data)
    result = Deidentifier(ALL_TEXT, KEY).deidentify(inst.dataset)
    assert element_is_raw(inst.dataset.get_item(0x7FE00010))
    assert result.redacted_boxes == 0
    out, _, _ = deidentify_bytes(data, ALL_TEXT)
    assert out.PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData


def test_clean_graphics_cleans_overlay_text() -> None:
    """Clean Graphics keeps an overlay and blanks only the text drawn into it."""
    plane = np.zeros((128, 320), np.uint8)
    plane = _draw(plane, [(6, 6, BANNER)], 255)
    plane[100, 40:280] = 255  # a graphic line, not text
    bits = np.packbits(plane.ravel() > 127, bitorder="little").tobytes()
    ds = _image(np.zeros((128, 320), np.uint8), "MONOCHROME2", modality="CT",
                sop_class="1.2.840.10008.5.1.4.1.1.2")
    for elem, vr, value in ((0x0010, "US", 128), (0x0011, "US", 320), (0x0040, "CS", "G"),
                            (0x0050, "SS", [1, 1]), (0x0100, "US", 1), (0x0102, "US", 0),
                            (0x3000, "OW", bits)):
        ds.add_new(0x6000_0000 | elem, vr, value)
    out, result, _ = deidentify_bytes(to_bytes(ds), DeidConfig(
        options=frozenset({Option.CLEAN_GRAPHICS})))
    after = np.unpackbits(np.frombuffer(out[0x60003000].value, np.uint8),
                          bitorder="little")[: 128 * 320].reshape(128, 320)
    assert result.redacted_boxes >= 1
    assert after[100, 40:280].all()  # the line survives
    assert not after[:40].any()
    assert len(_leaks(_texts(plane))) == 3


def test_mapping_records_redacted_boxes(us_banner: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "us.dcm").write_bytes(to_bytes(us_banner))
    (src / "ct.dcm").write_bytes(to_bytes(make_instance()))
    mapping = tmp_path / "mapping.parquet"
    summary = run_batch(iter_sources(src), tmp_path / "out", ALL_TEXT, KEY, workers=1,
                        mapping_path=mapping, progress=False)
    assert summary.processed == 2
    rows = {r["source_path"]: r["redacted_boxes"] for r in pq.read_table(mapping).to_pylist()}
    assert rows["ct.dcm"] == 0 and rows["us.dcm"] >= 1


def test_undecodable_pixels_fail_the_file_not_leak(monkeypatch: pytest.MonkeyPatch,
                                                   us_banner: Dataset) -> None:
    """When pixel data that must be cleaned cannot be decoded, the file is rejected with
    a PHI-free reason instead of being written with its text."""
    from pydicom.pixels.decoders.base import Decoder

    from dicom_deid.errors import BadInput

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("codec says: SMITH")

    monkeypatch.setattr(Decoder, "as_array", broken)
    with pytest.raises(BadInput) as caught:
        deidentify_bytes(to_bytes(us_banner), ALL_TEXT)
    assert caught.value.kind == "pixel-decode" and "SMITH" not in caught.value.reason
