"""Text in compressed frames outside the image (JPEG COM and APPn segments, JPEG 2000
COM markers) never reaches an output, whichever path writes it, and the gate fails an
output that still carries some.

Inputs are pydicom's own JPEG, JPEG-LS and JPEG 2000 files (dcmtk, GDCM, CharLS, Kakadu)
with a comment and EXIF planted in their frames as img2dcm copies them from a JPEG file,
and the patient's identifiers in the header.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames

from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.batch import iter_sources, run_batch
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier, dataset_encodings
from dicom_deid.deid.gate import Gate
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.writer import encode_instance_chunks
from dicom_deid.pixels.codestream import J2K_SYNTAXES, pixel_data_segments
from instances import KEY

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
NAME, PATIENT_ID, BIRTH = "ZARKOVSKY^BELINDA", "48213977", "19630417"
PLANTED = f"Patient {NAME} ID {PATIENT_ID} DOB {BIRTH}".encode()
SOURCES = {  # one file per walked syntax pydicom ships (and a multi-frame one)
    "SC_rgb_jpeg_dcmtk.dcm": "baseline",
    "JPGExtended.dcm": "extended, 12 bits",
    "SC_rgb_jpeg_gdcm.dcm": "lossless SV1",
    "examples_ybr_color.dcm": "baseline, 30 frames",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS near-lossless",
    "JPEG2000.dcm": "JPEG 2000",
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
}
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = PLANTED.decode()  # ImageDescription, as a camera or scanner writes it
    return exif.tobytes()


def _planted(frame: bytes, ts: str) -> bytes:
    """``frame`` with the text as img2dcm leaves it: a comment and EXIF after SOI (JPEG),
    a comment after SIZ (JPEG 2000)."""
    if ts in J2K_SYNTAXES:
        siz_end = 4 + int.from_bytes(frame[4:6], "big")
        com = b"\xff\x64" + (len(PLANTED) + 4).to_bytes(2, "big") + b"\x00\x01" + PLANTED
        return frame[:siz_end] + com + frame[siz_end:]
    exif = b"\xff\xe1" + (len(_exif()) + 2).to_bytes(2, "big") + _exif()
    com = b"\xff\xfe" + (len(PLANTED) + 2).to_bytes(2, "big") + PLANTED
    return frame[:2] + com + exif + frame[2:]


def _source(name: str, plant: bool, uid: str, extended: bool = False) -> bytes:
    """A pydicom test file as an identified CT image (not one at risk of burned-in text:
    the gate then reads no pixels), its frames planted or not."""
    ds = pydicom.dcmread(TEST_FILES / name)
    ts = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames") or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    if plant:
        frames = [_planted(f, ts) for f in frames]
    if extended:
        value, offsets, lengths = encapsulate_extended(frames)
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = offsets, lengths
    else:
        value = encapsulate(frames, has_bot=count > 1)
    ds.PixelData = value
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH
    ds.InstitutionName = "Harborview Quillan Clinic"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.Modality, ds.ImageType, ds.BurnedInAnnotation = "CT", ["ORIGINAL", "PRIMARY"], "NO"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".1", uid + ".2"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dataset_path(deid: Deidentifier, data: bytes) -> bytes:
    inst = parse_instance(data)
    encodings = dataset_encodings(inst.dataset)
    deid.deidentify(inst.dataset)
    return b"".join(encode_instance_chunks(inst.dataset, inst.transfer_syntax, encodings))


def _segments(data: bytes) -> list[tuple[int, str]]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return [(n, s.name) for n, s in pixel_data_segments(
        ds.PixelData, str(ds.file_meta.TransferSyntaxUID), int(ds.get("NumberOfFrames") or 1))]


def _pixels(data: bytes) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(data)).pixel_array


def _identifying(data: bytes) -> list[bytes]:
    return [v for v in (b"ZARKOVSKY", PATIENT_ID.encode(), BIRTH.encode(), b"Harborview")
            if v in data]


@pytest.mark.parametrize("name", list(SOURCES))
def test_both_paths_write_no_planted_text_and_the_same_image(name: str) -> None:
    """The byte path declines a file whose frames carry text; the Dataset path writes it
    without that text and with the same pixels. A file without any keeps the byte path
    and its pixel bytes, and both paths write it alike."""
    deid = Deidentifier(DeidConfig(), KEY)
    fast = ByteDeidentifier(Deidentifier(DeidConfig(), KEY))
    planted = _source(name, True, "2.25.1001")
    assert PLANTED in planted and _segments(planted)
    assert fast.deidentify(planted) is None
    out = _dataset_path(deid, planted)
    assert not _identifying(out) and b"Exif" not in out
    assert _segments(out) == []
    assert np.array_equal(_pixels(out), _pixels(planted))

    plain = _source(name, False, "2.25.1002")
    if _segments(plain):  # JPEG 2000 encoders sign their frames with a comment
        assert name.startswith(("JPEG2000", "MR_small_jp2k"))
        return
    found = fast.deidentify(plain)
    if name != "JPEGLSNearLossless_16.dcm":  # declined for its header (not its frames)
        assert found is not None
    if found is not None:
        written = b"".join(bytes(c) for c in found[0])
        assert written == _dataset_path(deid, plain)
        source, output = pydicom.dcmread(io.BytesIO(plain)), pydicom.dcmread(io.BytesIO(written))
        assert output.PixelData == source.PixelData


def test_an_extended_offset_table_is_rebuilt_by_the_dataset_path() -> None:
    planted = _source("examples_ybr_color.dcm", True, "2.25.1003", extended=True)
    out = _dataset_path(Deidentifier(DeidConfig(), KEY), planted)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert PLANTED not in out and "ExtendedOffsetTable" in ds
    frames = list(generate_frames(ds.PixelData, extended_offsets=(
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)))
    assert len(frames) == 30 and all(f.startswith(b"\xff\xd8") for f in frames)
    assert np.array_equal(ds.pixel_array, _pixels(planted))


def test_a_batch_with_the_gate_writes_no_planted_text(tmp_path: Path) -> None:
    """The pipeline's run (run_batch, the gate in every worker): planted and clean files
    of every walked syntax; no output holds the text and the gate passes them all."""
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(SOURCES):
        (src / f"planted-{i}.dcm").write_bytes(_source(name, True, f"2.25.20{i}"))
        (src / f"plain-{i}.dcm").write_bytes(_source(name, False, f"2.25.30{i}"))
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    summary = run_batch(iter_sources(src), out, DeidConfig(), KEY, workers=2,
                        errors_path=work / "errors.csv", mapping_path=work / "mapping.parquet",
                        progress=False, gate=(), verdicts_path=work / "verdicts.parquet")
    with open(work / "errors.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == []
    assert summary.processed == 2 * len(SOURCES) and summary.rejected == 0
    assert summary.byte_path >= 5  # the plain JPEG and JPEG-LS files
    verdicts = pq.read_table(work / "verdicts.parquet").to_pylist()
    assert len(verdicts) == 2 * len(SOURCES) and all(v["ok"] for v in verdicts)
    for path in out.rglob("*.dcm"):
        data = path.read_bytes()
        assert not _identifying(data), path.name
        assert _segments(data) == [] or b"Kakadu" in data or b"OpenJPEG" in data


# -- the gate -----------------------------------------------------------------------------


def _output_with(name: str, plant_frame: int | None) -> tuple[bytes, bytes]:
    """(source, an output made by hand from its de-identified output: the text planted
    back into frame ``plant_frame``, from 1), as a buggy writer would leave it."""
    source = _source(name, False, "2.25.4001")
    out = pydicom.dcmread(io.BytesIO(_dataset_path(Deidentifier(DeidConfig(), KEY), source)))
    ts = str(out.file_meta.TransferSyntaxUID)
    count = int(out.get("NumberOfFrames") or 1)
    frames = list(generate_frames(out.PixelData, number_of_frames=count))
    if plant_frame is not None:
        frames[plant_frame - 1] = _planted(frames[plant_frame - 1], ts)
    out.PixelData = encapsulate(frames)
    out["PixelData"].VR, out["PixelData"].is_undefined_length = "OB", True
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    return source, buf.getvalue()


@pytest.mark.parametrize(("name", "frame", "expected"), [
    ("SC_rgb_jpeg_dcmtk.dcm", 1, ["pixel data carries a JPEG COM segment in frame 1",
                                  "pixel data carries a JPEG APP1 segment in frame 1"]),
    ("examples_ybr_color.dcm", 17, ["pixel data carries a JPEG COM segment in frame 17",
                                    "pixel data carries a JPEG APP1 segment in frame 17"]),
    ("MR_small_jpeg_ls_lossless.dcm", 1, [
        "pixel data carries a JPEG COM segment in frame 1",
        "pixel data carries a JPEG APP1 segment in frame 1"]),
    ("JPEG2000.dcm", 1, ["pixel data carries a JPEG 2000 COM marker in frame 1"]),
])
def test_the_gate_fails_an_output_whose_frames_carry_text(
        name: str, frame: int, expected: list[str]) -> None:
    gate = Gate()
    source, output = _output_with(name, frame)
    facts = gate.source_facts(source, len(source))
    verdict = gate.check("out.dcm", output, facts, {})
    assert not verdict.ok and verdict.leaks >= 1
    assert [p for p in verdict.problems if "pixel data carries" in p] == expected
    assert not any("ZARKOVSKY" in p or PATIENT_ID in p for p in verdict.problems)
    # the same output without the planted text passes
    source, output = _output_with(name, None)
    assert gate.check("out.dcm", output, gate.source_facts(source, len(source)), {}).ok


def test_the_gate_fails_an_output_whose_frames_it_cannot_walk() -> None:
    gate = Gate()
    source, output = _output_with("SC_rgb_jpeg_dcmtk.dcm", None)
    ds = pydicom.dcmread(io.BytesIO(output))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:2] + b"\xff\xfe\xff\xf0" + PLANTED])  # cut short
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    verdict = gate.check("out.dcm", buf.getvalue(), gate.source_facts(source, len(source)), {})
    # (a colour "CT" is also an image at risk, whose frames cannot be read back either)
    assert verdict.problems[0] == "compressed pixel data cannot be walked (bad-codestream)"
    assert not verdict.ok


def _ct_video() -> tuple[bytes, bytes]:
    """CT_small's header around an H.264 stream whose SEI user data names the patient."""
    source = (Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(source))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x06\x05" + PLANTED + b"\x80"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return source, buf.getvalue()


def test_video_is_never_de_identified(tmp_path: Path) -> None:
    """A stream's user data may hold a name (an external probe released one from a grey
    "CT" video, which no header rule takes to be at risk): listed as failed, both paths,
    and nothing written."""
    _, video = _ct_video()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.dcm").write_bytes(video)
    summary = run_batch(list(iter_sources(tmp_path / "in")), tmp_path / "out", DeidConfig(), KEY,
                        workers=1, progress=False)
    assert summary.failures_by_kind == {"pixel-decode": 1} and summary.processed == 0
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
    assert ByteDeidentifier(Deidentifier(DeidConfig(), KEY)).deidentify(video) is None


def test_the_gate_fails_video_it_cannot_inspect() -> None:
    """The gate too: a video output is never passed, whatever wrote it."""
    source, video = _ct_video()
    buf = io.BytesIO(video)
    gate = Gate()
    verdict = gate.check("out.dcm", buf.getvalue(), gate.source_facts(source, len(source)), {})
    assert not gate.at_risk(gate.source_facts(source, len(source)))
    assert "video pixel data cannot be inspected (its stream may carry text)" in verdict.problems
    assert not verdict.ok
