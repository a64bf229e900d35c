"""The synthetic corpus: deterministic, readable, truthful answer key; removed-place PHI only
where the Basic Profile removes it and kept-place plants only where it keeps them; validity
plants, re-sent duplicates and bad inputs present; references resolving."""

from __future__ import annotations

import contextlib
import copy
import csv
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
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
    KEPT_KINDS,
    KEPT_PLACES,
    UID_ROOT,
    AnswerKey,
    FileRecord,
    KeptPlant,
    generate,
    kept_byte_patterns,
    load_answer_key,
    main_args,
    planted_byte_patterns,
    value_patterns,
)

PATIENTS = 8
SEED = 5
PS3_15 = Path(dicom_deid.__file__).parent / "config" / "data" / "ps3_15"
PROFILE_CSV = PS3_15 / "basic_profile.csv"
SAFE_PRIVATE_CSV = PS3_15 / "safe_private.csv"
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


def _mtimes(root: Path, key: AnswerKey) -> dict[str, int]:
    return {p: (root / "dicom" / p).stat().st_mtime_ns for d in key.duplicates for p in d.paths}


def test_same_arguments_give_byte_identical_corpus(
    corpus: tuple[Path, AnswerKey], tmp_path: Path
) -> None:
    again = generate(tmp_path, patients=PATIENTS, seed=SEED, small=True)
    assert again == corpus[1]
    assert _tree(tmp_path) == _tree(corpus[0])
    assert _mtimes(tmp_path, again) == _mtimes(corpus[0], corpus[1])  # the re-sends too


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
    (unless it only occurs inside a longer listed value or a kept-place plant)."""
    root, key = corpus
    by_patient: dict[str, set[str]] = {}
    for rec in key.files:
        by_patient.setdefault(rec.patient_id, set()).update(rec.phi)
        by_patient[rec.patient_id].update(k.value for k in rec.kept_planted)
    for rec in key.files:
        data = (root / "dicom" / rec.path).read_bytes()
        listed = set(rec.phi) | {k.value for k in rec.kept_planted}
        for value in by_patient[rec.patient_id] - listed:
            if any(p in data for p in value_patterns(value, rec.charset)):
                assert any(value in v for v in listed), (rec.path, value)


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
        for plant, patterns in kept_byte_patterns(rec).items():
            assert len(plant.value) >= 4 or plant.kind == "name-native", plant
            assert any(p in data for p in patterns), (rec.path, plant.path)


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


def _safe_private() -> set[tuple[int, str, int, str]]:
    """Table E.3.10-1 as (group, creator, element byte, VR): what Retain Safe Private keeps."""
    with SAFE_PRIVATE_CSV.open(encoding="utf-8") as fh:
        return {(int(r["tag"][1:5], 16), r["private_creator"], int(r["tag"][8:10], 16), r["vr"])
                for r in csv.DictReader(fh)}


def _strip(ds: Dataset, exact: set[int], masks: list[tuple[int, int]]) -> None:
    """A naive Basic Profile: drop profiled and private elements, recurse into the rest."""
    for elem in list(ds):
        tag = int(elem.tag)
        if elem.tag.is_private or tag in exact or any(tag & m == v for m, v in masks):
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                _strip(item, exact, masks)


def _locate(ds: Dataset, path: str) -> tuple[Dataset, int]:
    """The dataset holding the element a kept plant's path names, and its tag."""
    steps = path.split("/")
    for tag_text, index in zip(steps[:-1:2], steps[1::2], strict=True):
        ds = ds[int(tag_text, 16)].value[int(index)]
    return ds, int(steps[-1], 16)


def _bytes(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def _holds(elem: DataElement, value: str, charset: str) -> bool:
    """True when ``elem`` holds ``value`` (a private element read as UN holds raw bytes)."""
    if isinstance(elem.value, bytes):
        return any(p in elem.value for p in value_patterns(value, charset))
    return value in str(elem.value)


def test_removed_place_phi_sits_only_where_the_basic_profile_removes_it(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    """Each ``phi`` value occurs outside the recorded kept plants, and the profile's places
    and those plants hold every identifier: nothing is left once the profile's places and
    the plants' values (not the whole elements holding them) are removed."""
    exact, masks = _profile_tags()
    for rec in corpus[1].files:
        ds = copy.deepcopy(datasets[rec.path])
        for plant in rec.kept_planted:
            parent, tag = _locate(ds, plant.path)
            elem = parent[tag]
            if isinstance(elem.value, bytes):
                for pattern in value_patterns(plant.value, rec.charset):
                    elem.value = elem.value.replace(pattern, b"")
            else:
                elem.value = str(elem.value).replace(plant.value, "")
        data = _bytes(ds)
        for value in rec.phi:  # not only inside a kept plant
            assert any(p in data for p in value_patterns(value, rec.charset)), (rec.path, value)
        _strip(ds, exact, masks)
        assert "Modality" in ds and "SOPClassUID" in ds
        data = _bytes(ds)
        for value in [*rec.phi, *(k.value for k in rec.kept_planted)]:
            assert not any(p in data for p in value_patterns(value, rec.charset)), (
                rec.path, value
            )  # fmt: skip
        assert "PixelData" in ds or rec.modality == "SR"


_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "ł": "l", "Ł": "L"})


def _written_dates(text: str) -> set[str]:
    """DA values a written date can mean (03/02/1970 reads either way)."""
    found = set()
    for form in ("%d/%m/%Y", "%m/%d/%Y", "%d %b %Y"):
        with contextlib.suppress(ValueError):
            found.add(datetime.strptime(text, form).strftime("%Y%m%d"))
    return found


def _words(text: str) -> set[str]:
    """Case-folded words without diacritics (non-Latin letters kept, unlike ``fold``)."""
    plain = unicodedata.normalize("NFKD", text.translate(_FOLD))
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return set(re.split(r"[\s^,=]+", plain.casefold())) - {""}


def _repeats_source(plant: KeptPlant, source: str) -> bool:
    """True when the plant's value is the source attribute's value spelled another way."""
    kind, value = plant.kind, plant.value
    if kind in ("name-upper", "name-reordered", "name-folded", "staff-name"):
        words = _words(value)
        return value not in source and bool(words) and words <= _words(source.split("=")[0])
    if kind == "name-native":
        return value == "".join(source.split("=")[1].split("^"))
    if kind == "id-bare":
        return value.isdigit() and bool(re.fullmatch(rf"[A-Za-z\-]*0*{value}", source))
    if kind == "birth-date-written":
        return source in _written_dates(value)
    return kind == "institution" and value.casefold() == source.casefold()


def test_kept_place_plants_sit_where_the_basic_profile_keeps_them(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    """Every kept plant is in an attribute no row of Table E.1-1 touches (at every level of
    its path) or in a safe private element, and repeats, spelled differently, a top-level
    value the profile removes: only a search for the instance's own values can find it. A
    change of the profile table that made a place removed would fail here."""
    exact, masks = _profile_tags()
    safe = _safe_private()
    key = corpus[1]
    for rec in key.files:
        ds = datasets[rec.path]
        for plant in rec.kept_planted:
            assert plant.kind in KEPT_KINDS and plant.place in KEPT_PLACES, plant
            for tag in (int(t, 16) for t in plant.path.split("/")[::2]):
                if tag >> 16 & 1:
                    assert plant.place == "safe-private"
                else:
                    assert tag not in exact and not any(tag & m == v for m, v in masks), plant
            parent, tag = _locate(ds, plant.path)
            if plant.place == "safe-private":
                group, element = tag >> 16, tag & 0xFFFF
                creator = parent[(group << 16) | element >> 8].value
                assert creator == plant.private_creator
                assert (group, creator, element & 0xFF, plant.vr) in safe
            else:
                assert plant.vr == parent[tag].VR
            assert _holds(parent[tag], plant.value, rec.charset), (rec.path, plant.path)
            source_tag = int(ds[plant.source].tag)
            assert source_tag in exact, plant.source  # removed: the sweep searches for it
            assert _repeats_source(plant, str(ds[plant.source].value)), (rec.path, plant)
    planted = [r for r in key.files if r.kept_planted]
    assert len(planted) >= len(key.files) // 2
    assert {k.kind for r in planted for k in r.kept_planted} == set(KEPT_KINDS)
    assert {k.place for r in planted for k in r.kept_planted} == set(KEPT_PLACES)
    assert {r.modality for r in planted} == {f.modality for f in key.files}
    local = [ds for r in planted if "ProcedureCodeSequence" in (ds := datasets[r.path])]
    assert local and all(
        ds.ProcedureCodeSequence[0].CodingSchemeDesignator == "99LOCAL" for ds in local
    )


_ROLES = {"OWNER", "PARENT", "CHILD", "SPOUSE", "SIBLING", "RELATIVE", "GUARDIAN",
          "CUSTODIAN", "AGENT", "INVESTIGATOR", "VETERINARIAN"}  # PS3.3 C.7.1.1 defined terms


def test_validity_plants_type3_sequences_and_conditional_dependents(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    """Type 3 sequences the profile removes (X/Z) carry items, and Type 1C attributes stand
    beside the attribute their condition names, which the profile removes while keeping or
    dummying them: a de-identifier that empties or orphans them shows up as less valid."""
    exact, _ = _profile_tags()
    key = corpus[1]
    studies = {f.study_uid: f.patient_id for f in key.files}
    refs = [(r, ds) for r in key.files if "ReferencedStudySequence" in (ds := datasets[r.path])]
    assert refs and {r.modality for r, _ in refs} >= {"CT", "MR", "US", "CR", "SR"}
    assert any(studies.get(ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID)
               == r.patient_id for r, ds in refs)  # a prior study of the same patient
    for _, ds in refs:
        assert len(ds.ReferencedStudySequence) >= 1
        assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID in key.uids
    persons = [(r, ds) for r in key.files if "ResponsiblePerson" in (ds := datasets[r.path])]
    assert persons
    for r, ds in persons:
        assert str(ds.ResponsiblePerson) in r.phi and ds.ResponsiblePersonRole in _ROLES
    trials = [(r, ds) for r in key.files
              if "ClinicalTrialProtocolEthicsCommitteeApprovalNumber" in (ds := datasets[r.path])]
    assert trials
    for r, ds in trials:
        assert ds.ClinicalTrialSubjectID in r.phi and ds.ClinicalTrialProtocolEthicsCommitteeName
    # The profile removes the conditions and keeps or dummies what depends on them.
    for keyword in ("ResponsiblePerson", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
                    "ReferencedStudySequence", "ClinicalTrialProtocolEthicsCommitteeName"):
        assert tag_for_keyword(keyword) in exact, keyword
    assert tag_for_keyword("ResponsiblePersonRole") not in exact


def test_duplicates_are_resends_with_distinct_times_and_a_named_winner(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    root, key = corpus
    by_path = {f.path: f for f in key.files}
    counts = Counter(f.sop_uid for f in key.files)
    assert {uid for uid, n in counts.items() if n > 1} == {d.sop_uid for d in key.duplicates}
    assert len(key.duplicates) >= 2
    assert len({by_path[d.paths[0]].series_uid for d in key.duplicates}) == len(key.duplicates)
    winners_first = set()
    for dup in key.duplicates:
        assert len(dup.paths) == 2 and list(dup.paths) == sorted(dup.paths)
        times = tuple((root / "dicom" / p).stat().st_mtime_ns for p in dup.paths)
        assert times == dup.mtimes_ns and len(set(times)) == len(times)
        assert dup.winner == max(dup.paths, key=lambda p: times[dup.paths.index(p)])
        winners_first.add(dup.winner == dup.paths[0])
        a, b = (datasets[p] for p in dup.paths)
        ra, rb = (by_path[p] for p in dup.paths)
        assert a.SOPInstanceUID == b.SOPInstanceUID == dup.sop_uid
        assert ra.phi == rb.phi and ra.kept_planted == rb.kept_planted
        assert ra.transfer_syntax_uid != rb.transfer_syntax_uid  # a re-send, recoded
        assert (a.pixel_array == b.pixel_array).all()
        assert str(a.PatientName) == str(b.PatientName)
    assert winners_first == {True, False}  # the newer is sometimes the original


def test_us_banners_spell_identity_unlike_the_header(
    corpus: tuple[Path, AnswerKey], datasets: dict[str, Dataset]
) -> None:
    banners = [(r, datasets[r.path]) for r in corpus[1].files if r.modality == "US" and r.burned_in]
    assert banners
    forms = set()
    for rec, ds in banners:
        name, patient_id, _, institution = rec.burned_in
        header = str(ds.PatientName)
        assert name.isascii() and name != header and patient_id == ds.PatientID
        family = header.split("^")[0]
        if "=" in header:  # kanji in the header: romaji on the screen
            assert name.split(",")[0].split("^")[0] == family.upper()
        forms.add("^" if "^" in name else ",")
        assert institution == str(ds.InstitutionName)[:30].rstrip()
    assert forms == {"^", ","}
    assert any(len(str(ds.InstitutionName)) > 30 for _, ds in banners)  # a cut name
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
    assert len(by_uid) == len(files) - len(corpus[1].duplicates)
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
    argv = [str(tmp_path), "--patients", "1", "--seed", "3", "--small", "--no-bad-inputs",
            "--no-duplicates"]
    assert main_args(argv) == 0
    key = load_answer_key(tmp_path)
    assert key.files and not key.bad_inputs and key.small and not key.duplicates
    assert len({f.sop_uid for f in key.files}) == len(key.files)
    assert "DICOM files" in capsys.readouterr().out
