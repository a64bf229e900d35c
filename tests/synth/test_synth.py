"""The synthetic corpus: deterministic, readable, truthful answer key, PHI only where the
Basic Profile removes it, bad inputs present, references resolving."""

from __future__ import annotations

import copy
import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
)

import dicom_deid
from dicom_deid.synth import (
    BAD_REASONS,
    JAPANESE_NAMES,
    UID_ROOT,
    AnswerKey,
    FileRecord,
    generate,
    load_answer_key,
    main_args,
    planted_byte_patterns,
    value_patterns,
)

PATIENTS = 8
SEED = 5
PROFILE_CSV = Path(dicom_deid.__file__).parent / "config" / "data" / "ps3_15" / "basic_profile.csv"
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate(root, patients=PATIENTS, seed=SEED, small=True)


@pytest.fixture(scope="module")
def datasets(corpus: tuple[Path, AnswerKey]) -> dict[str, Dataset]:
    """Every good file, read once (raw datasets need force=True)."""
    root, key = corpus
    return {
        r.path: pydicom.dcmread(root / "dicom" / r.path, force=not r.has_file_meta)
        for r in key.files
    }


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_arguments_give_byte_identical_corpus(
    corpus: tuple[Path, AnswerKey], tmp_path: Path
) -> None:
    again = generate(tmp_path, patients=PATIENTS, seed=SEED, small=True)
    assert again == corpus[1]
    assert _tree(tmp_path) == _tree(corpus[0])


def test_other_seed_gives_other_identities(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", patients=1, seed=1, small=True, bad_inputs=False)
    b = generate(tmp_path / "b", patients=1, seed=2, small=True, bad_inputs=False)
    assert not set(a.uids) & set(b.uids)
    assert a.phi != b.phi


def test_answer_key_round_trips_and_sits_outside_the_tree(corpus: tuple[Path, AnswerKey]) -> None:
    root, key = corpus
    assert load_answer_key(root) == key
    text = (root / "answer_key.json").read_text(encoding="utf-8")
    assert text == key.to_json()
    assert not list((root / "dicom").rglob("*.json"))
    on_disk = set(_tree(root / "dicom"))
    assert on_disk == {r.path for r in key.files} | {b.path for b in key.bad_inputs}


def test_every_good_file_matches_its_record(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    root, key = corpus
    for rec in key.files:
        ds = datasets[rec.path]
        assert ds.SOPInstanceUID == rec.sop_uid
        assert ds.SOPClassUID == rec.sop_class_uid
        assert ds.StudyInstanceUID == rec.study_uid
        assert ds.SeriesInstanceUID == rec.series_uid
        assert ds.Modality == rec.modality
        assert ds.PatientID == rec.patient_id
        charset = ds.get("SpecificCharacterSet", "")
        assert (charset if isinstance(charset, str) else "\\".join(charset)) == rec.charset
        raw = (root / "dicom" / rec.path).read_bytes()
        if rec.has_file_meta:
            assert raw[128:132] == b"DICM"
            assert ds.file_meta.TransferSyntaxUID == rec.transfer_syntax_uid
            assert ds.file_meta.MediaStorageSOPInstanceUID == rec.sop_uid
        else:
            assert raw[:4] == b"\x08\x00\x05\x00" or raw[:2] == b"\x08\x00"
            assert rec.transfer_syntax_uid == ImplicitVRLittleEndian
        assert int(ds.get("NumberOfFrames", 1)) == rec.number_of_frames


def test_corpus_covers_every_kind(corpus: tuple[Path, AnswerKey]) -> None:
    files = corpus[1].files
    assert {f.modality for f in files} == {"CT", "MR", "US", "CR", "SR", "OT"}
    assert {f.transfer_syntax_uid for f in files} == {
        ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit
    }  # fmt: skip
    assert {f.charset for f in files} == {
        "", "ISO_IR 6", "ISO_IR 100", "\\ISO 2022 IR 87", "ISO_IR 192"
    }  # fmt: skip
    classes = {f.sop_class_uid for f in files}
    assert {ComprehensiveSRStorage, BasicTextSRStorage, UltrasoundMultiFrameImageStorage} <= classes
    assert any(not f.has_file_meta for f in files)
    assert any(f.path.endswith(".dcm") for f in files)
    assert any("." not in f.path.rsplit("/", 1)[1] for f in files)
    assert {f.modality for f in files if f.burned_in} == {"US", "OT"}


def test_character_sets_decode_to_the_planted_names(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    scripts = {"ISO_IR 100": "[À-ÿ]", "\\ISO 2022 IR 87": "[\u3040-\u30ff\u4e00-\u9fff]",
               "ISO_IR 192": "[^\x00-\xff]"}  # fmt: skip
    for rec in corpus[1].files:
        name = str(datasets[rec.path].PatientName)
        assert name in rec.phi
        if rec.charset in scripts:
            assert re.search(scripts[rec.charset], name), (rec.charset, name)
        else:
            assert name.isascii()
    jp = next(r for r in corpus[1].files if "IR 87" in r.charset)
    assert str(datasets[jp.path].PatientName).count("=") == 2


def test_phi_lists_are_complete(corpus: tuple[Path, AnswerKey]) -> None:
    """A value planted for the patient and found in a file is listed for that file
    (unless it only occurs inside a longer listed value)."""
    root, key = corpus
    by_patient: dict[str, set[str]] = {}
    for rec in key.files:
        by_patient.setdefault(rec.patient_id, set()).update(rec.phi)
    for rec in key.files:
        data = (root / "dicom" / rec.path).read_bytes()
        for value in by_patient[rec.patient_id] - set(rec.phi):
            if any(p in data for p in value_patterns(value, rec.charset)):
                assert any(value in listed for listed in rec.phi), (rec.path, value)


def test_japanese_names_never_encode_a_backslash() -> None:
    for names in JAPANESE_NAMES:
        for text in names[2:]:
            assert b"\\" not in text.encode("iso2022_jp"), text


def test_every_planted_value_is_in_its_file_bytes(corpus: tuple[Path, AnswerKey]) -> None:
    root, key = corpus
    assert key.phi and planted_byte_patterns(key)
    assert key.phi == tuple(sorted({v for r in key.files for v in r.phi}))
    for rec in key.files:
        data = (root / "dicom" / rec.path).read_bytes()
        assert rec.phi
        for value in rec.phi:
            assert len(value) >= 5, value
            assert any(p in data for p in value_patterns(value, rec.charset)), (rec.path, value)


def test_retained_by_names_profile_options(corpus: tuple[Path, AnswerKey]) -> None:
    key = corpus[1]
    with PROFILE_CSV.open(encoding="utf-8") as fh:
        columns = set(next(csv.reader(fh)))
    assert key.retained_by and set(key.retained_by) <= set(key.phi)
    assert set(key.retained_by.values()) == {"rtn_long_full_dates", "rtn_dev_id", "rtn_inst_id"}
    assert set(key.retained_by.values()) <= columns


def _profile_tags() -> tuple[set[int], list[tuple[int, int]]]:
    """Tags (and masks like 60xx) the Basic Profile touches; every row removes or replaces."""
    exact: set[int] = set()
    masks: list[tuple[int, int]] = []
    with PROFILE_CSV.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            assert row["basic"] and row["basic"] != "K"
            if row["tag"].startswith("(gggg"):
                continue  # private attributes: handled by Tag.is_private
            digits = row["tag"].strip("()").replace(",", "")
            if "x" in digits.lower():
                mask = int("".join("0" if c in "xX" else "F" for c in digits), 16)
                masks.append((mask, int("".join("0" if c in "xX" else c for c in digits), 16)))
            else:
                exact.add(int(digits, 16))
    return exact, masks


def _strip(ds: Dataset, exact: set[int], masks: list[tuple[int, int]]) -> None:
    """A naive Basic Profile: drop profiled and private elements, recurse into the rest."""
    for elem in list(ds):
        tag = int(elem.tag)
        if elem.tag.is_private or tag in exact or any(tag & m == v for m, v in masks):
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                _strip(item, exact, masks)


def test_phi_sits_only_where_the_basic_profile_removes_it(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    exact, masks = _profile_tags()
    for rec in corpus[1].files:
        ds = copy.deepcopy(datasets[rec.path])
        _strip(ds, exact, masks)
        assert "Modality" in ds and "SOPClassUID" in ds
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        data = fp.getvalue()
        for value in rec.phi:
            assert not any(p in data for p in value_patterns(value, rec.charset)), (
                rec.path, value
            )  # fmt: skip
        assert "PixelData" in ds or rec.modality == "SR"


def _bad(key: AnswerKey, reason: str) -> Iterator[Path]:
    return (Path(b.path) for b in key.bad_inputs if b.reason == reason)


def test_bad_inputs_are_present_and_broken(corpus: tuple[Path, AnswerKey]) -> None:
    root, key = corpus
    dicom = root / "dicom"
    assert {b.reason for b in key.bad_inputs} == set(BAD_REASONS)
    assert all(set(vars(b)) == {"path", "reason"} for b in key.bad_inputs)
    assert not {b.path for b in key.bad_inputs} & {r.path for r in key.files}
    assert all((dicom / p).stat().st_size == 0 for p in _bad(key, "zero-byte"))
    for path in _bad(key, "not-dicom"):
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(dicom / path)
    truncated = list(_bad(key, "truncated"))
    assert len(truncated) == 2
    for path in truncated:  # pydicom reads leniently; the pixel data is what is missing
        ds = pydicom.dcmread(dicom / path)
        with pytest.raises((ValueError, AttributeError)):
            _ = ds.pixel_array
    (charset_file,) = _bad(key, "bad-charset")
    assert b"ISO_IR 999" in (dicom / charset_file).read_bytes()
    with pytest.warns(UserWarning, match="ISO_IR 999"):
        ds = pydicom.dcmread(dicom / charset_file)
    assert any(byte > 127 for byte in ds.get_item(0x00100010).value)


def test_references_resolve_within_the_study(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    files = corpus[1].files
    by_uid: dict[str, FileRecord] = {f.sop_uid: f for f in files}
    assert len(by_uid) == len(files)
    assert any(f.references for f in files if f.modality in ("CT", "MR"))
    for rec in files:
        for ref in rec.references:
            assert by_uid[ref].study_uid == rec.study_uid
        listed = {
            str(e.value) for e in datasets[rec.path].iterall()
            if e.keyword == "ReferencedSOPInstanceUID" and str(e.value) in by_uid
        }  # fmt: skip
        assert listed == set(rec.references), rec.path
    for sr in (f for f in files if f.modality == "SR"):
        assert sr.references
        images = {f.sop_uid for f in files if f.study_uid == sr.study_uid and f.modality != "SR"}
        assert set(sr.references) == images


def test_uids_are_private_root_and_valid(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    key = corpus[1]
    for uid in key.uids:
        assert uid.startswith(UID_ROOT) and len(uid) <= 64 and UID_RE.match(uid), uid
    written = {f.sop_uid for f in key.files} | {f.study_uid for f in key.files}
    written |= {f.series_uid for f in key.files}
    written |= {
        str(ds.FrameOfReferenceUID) for ds in datasets.values() if "FrameOfReferenceUID" in ds
    }
    assert written <= set(key.uids)


def test_paths_hold_no_phi(corpus: tuple[Path, AnswerKey]) -> None:
    key = corpus[1]
    paths = [r.path for r in key.files] + [b.path for b in key.bad_inputs]
    lowered = [v.lower() for v in key.phi]
    for path in paths:
        assert re.fullmatch(r"p\d{4}/st\d{2}/se\d{2}/(IM\d{6}|\d{6}\.dcm)", path), path
        assert not any(v in path.lower() for v in lowered)


def test_pixels_decode_in_every_transfer_syntax(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    seen: set[tuple[str, str]] = set()
    for rec in corpus[1].files:
        kind = (rec.modality, rec.transfer_syntax_uid)
        if rec.modality == "SR" or not rec.has_file_meta or kind in seen:
            continue
        seen.add(kind)
        ds = datasets[rec.path]
        arr = ds.pixel_array
        assert arr.shape[-3 if ds.SamplesPerPixel == 3 else -2 :][:2] == (ds.Rows, ds.Columns)
        if rec.modality in ("CT", "MR", "CR"):
            assert int(arr.max()) < 4096  # keeps ASCII out of the 16-bit pixel stream
    assert len(seen) >= 8


def test_burned_in_annotation_flag_and_safe_private_block(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    for rec in corpus[1].files:
        ds = datasets[rec.path]
        if rec.modality == "SR":
            continue
        assert ds.BurnedInAnnotation == ("YES" if rec.burned_in else "NO")
        assert not rec.burned_in or rec.patient_id in rec.burned_in
        if rec.modality == "CT":
            block = ds.private_block(0x00E1, "ELSCINT1")
            value = block[0x21].value
            value = value.decode() if isinstance(value, bytes) else str(value)
            float(value)
            assert value not in corpus[1].phi
        assert ds.private_block(0x0009, "ACME PHI 1.0")[0x11].value in (
            rec.patient_id, rec.patient_id.encode()
        )  # fmt: skip
    overlays = [ds for ds in datasets.values() if 0x60003000 in ds]
    assert overlays and all(0x60004000 in ds for ds in overlays)


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, patients=0, seed=1)
    with pytest.raises(ValueError):
        generate(tmp_path, patients=1, seed=1, burned_in_fraction=1.5)
    generate(tmp_path, patients=1, seed=1, small=True, bad_inputs=False)
    with pytest.raises(FileExistsError):
        generate(tmp_path, patients=1, seed=1, small=True)


def test_main_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--patients", "1", "--seed", "3", "--small", "--no-bad-inputs"]
    assert main_args(argv) == 0
    key = load_answer_key(tmp_path)
    assert key.files and not key.bad_inputs and key.small
    assert "DICOM files" in capsys.readouterr().out
