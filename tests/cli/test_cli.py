"""Command-line contract: exit codes, refusal to touch files on bad config, layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_deid.cli.main import main
from instances import KEY, make_instance, to_bytes


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "in" / "patient-smith"
    src.mkdir(parents=True)
    (src / "img1").write_bytes(to_bytes(make_instance()))
    key = tmp_path / "k"
    key.write_text(KEY.hex())
    return tmp_path, key


def test_success_exit_code_and_summary(setup: tuple[Path, Path], capsys) -> None:
    root, key = setup
    code = main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--workers", "1", "--no-progress"])
    assert code == 0
    line = capsys.readouterr().out
    assert "processed 1, failed 0, skipped 0" in line
    assert "1 by the byte path" in line
    outputs = list((root / "out").rglob("*.dcm"))
    assert len(outputs) == 1 and outputs[0].name.startswith("2.25.")
    assert "smith" not in outputs[0].as_posix().lower()  # input path PHI not carried over


def test_summary_counts_files_the_dataset_path_wrote(setup: tuple[Path, Path], capsys) -> None:
    """Pixel cleaning takes the Dataset path: the summary says the byte path wrote none."""
    root, key = setup
    code = main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--workers", "1", "--no-progress", "--option", "CleanGraphics"])
    assert code == 0
    assert "processed 1, failed 0, skipped 0 " in (line := capsys.readouterr().out)
    assert "0 by the byte path" in line


def test_relative_layout_keeps_paths_that_name_nobody(setup: tuple[Path, Path]) -> None:
    """``--layout relative`` keeps the input's paths, and the gate refuses one that holds
    the source's identifiers (the folder ``patient-smith`` of the patient Smith)."""
    root, key = setup
    errors = root / "errors.csv"
    assert main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--layout", "relative", "--no-progress", "--errors", str(errors)]) == 3
    assert not [p for p in (root / "out").rglob("*") if p.is_file()]
    assert "original PatientName value found in the file's path" in errors.read_text()
    (root / "in" / "patient-smith").rename(root / "in" / "case-0001")
    assert main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--layout", "relative", "--no-progress"]) == 0
    assert (root / "out" / "case-0001" / "img1").exists()


def test_invalid_config_touches_nothing(setup: tuple[Path, Path], capsys) -> None:
    root, key = setup
    cfg = root / "bad.json"
    cfg.write_text(json.dumps({"actions": [{"queries": ["PatientNme"], "keepTag": {}}]}))
    code = main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--config", str(cfg)])
    assert code == 2
    assert "queries[0]" in capsys.readouterr().err
    assert not (root / "out").exists()


def test_missing_key_is_a_usage_error(setup: tuple[Path, Path], monkeypatch, capsys) -> None:
    root, _ = setup
    monkeypatch.delenv("DICOM_DEID_KEY", raising=False)
    assert main(["deidentify", str(root / "in"), str(root / "out")]) == 2
    assert "key" in capsys.readouterr().err
    assert not (root / "out").exists()


def test_clean_image_config_is_accepted(setup: tuple[Path, Path]) -> None:
    root, key = setup
    cfg = root / "img.json"
    cfg.write_text(json.dumps({"options": {"cleanImage": {"textRedactionMode":
                                                          "REDACT_ALL_TEXT"}}}))
    assert main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--config", str(cfg)]) == 0
    assert list((root / "out").rglob("*.dcm"))


def test_restricted_files_refused_inside_output(setup: tuple[Path, Path]) -> None:
    root, key = setup
    code = main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--mapping", str(root / "out" / "mapping.parquet"), "--plain-mapping"])
    assert code == 2


def test_duplicate_instances_reported_once(setup: tuple[Path, Path], capsys) -> None:
    root, key = setup
    copy = root / "in" / "patient-smith" / "img1-copy"
    copy.write_bytes((root / "in" / "patient-smith" / "img1").read_bytes())
    errors = root / "restricted" / "errors.csv"  # a folder that does not exist yet
    code = main(["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
                 "--errors", str(errors), "--workers", "1", "--no-progress"])
    assert code == 3
    assert len(list((root / "out").rglob("*.dcm"))) == 1
    rows = errors.read_text().splitlines()
    assert len(rows) == 2 and "duplicate" in rows[1] and "img1-copy" in rows[1]


def test_mapping_round_trip_without_pandas(tmp_path: Path) -> None:
    """The mapping is built from Arrow buffers: nulls and values survive, and the run does
    not pay pyarrow's import of pandas (checked in a fresh interpreter)."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    script = f"""
import sys
from pathlib import Path
from dicom_deid.deid.mapping import MappingWriter
with MappingWriter(Path({str(tmp_path / "m.parquet")!r}), batch_rows=2) as w:
    for i in range(5):
        w.add({{"run_id": "r", "source_path": f"ü/{{i}}", "date_shift_days": i or None,
               "redacted_boxes": 3 if i == 4 else 0}})
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.column("source_path").to_pylist() == [f"ü/{i}" for i in range(5)]
    assert table.column("date_shift_days").to_pylist() == [None, 1, 2, 3, 4]
    assert table.column("redacted_boxes").to_pylist() == [0, 0, 0, 0, 3]
    assert table.column("patient_id").null_count == 5


def test_the_default_policy_is_privacy_first_and_the_pipelines_is_the_same() -> None:
    """No --config, --profile or --option: Basic Profile + Clean Descriptors + the
    residual sweep + burned-in text of images at risk redacted; a pipeline deployment
    without a policy file gets the very same configuration (one fingerprint)."""
    from dicom_deid.cli.main import _load_deid_config, _parser
    from dicom_deid.config.model import OcrScope, Option, TextRedactionMode, privacy_first
    from dicom_deid.pipeline.projects import RunRequest

    config = _load_deid_config(_parser().parse_args(["deidentify", "in", "out"]))
    assert config == privacy_first()
    assert config.options == frozenset({Option.CLEAN_DESCRIPTORS}) and config.residual_sweep
    assert config.image.text_redaction_mode is \
        TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS
    assert config.ocr_scope is OcrScope.AUTO
    pipeline = RunRequest(cohort="x", cohort_params={}).deid_config()
    assert pipeline.fingerprint() == config.fingerprint()
    explicit = _load_deid_config(_parser().parse_args(
        ["deidentify", "in", "out", "--profile", "basic"]))
    assert explicit.image.text_redaction_mode is TextRedactionMode.REDACT_NO_TEXT


def test_an_option_alone_adds_to_the_default_as_a_project_file_does() -> None:
    """An external probe took ``--option RetainLongitudinalFullDates`` for the default
    plus full dates; it used to be the bare Basic Profile plus full dates (no Clean
    Descriptors, no burned-in text cleaning). It now means what a project's options do."""
    from dicom_deid.cli.main import _load_deid_config, _parser
    from dicom_deid.config.model import Option, TextRedactionMode, privacy_first
    from dicom_deid.pipeline.projects import Policy

    args = ["deidentify", "in", "out", "--option", "RetainLongitudinalFullDates"]
    config = _load_deid_config(_parser().parse_args(args))
    assert config.options == frozenset({Option.CLEAN_DESCRIPTORS,
                                        Option.RETAIN_LONGITUDINAL_FULL_DATES})
    assert config.image.text_redaction_mode is \
        TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS and config.residual_sweep
    project = Policy(options=("RetainLongitudinalFullDates",)).deid_config()
    assert config.fingerprint() == project.fingerprint() != privacy_first().fingerprint()
    bare = _load_deid_config(_parser().parse_args([*args, "--profile", "basic"]))
    assert bare.options == frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES})
    assert bare.image.text_redaction_mode is TextRedactionMode.REDACT_NO_TEXT


def test_verify_removes_what_the_gate_rejects_and_lists_it(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--verify: the gate runs on every output; one that keeps an identifying value (a
    policy keeping the description that names the patient, sweep off) is not written but
    listed (kind leak, attribute named, no value); a clean one is written; a declared
    exception spares what the run keeps on purpose."""
    import csv

    root, key = setup
    clean = make_instance()
    clean.SOPInstanceUID = clean.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    clean.StudyDescription = "Chest"
    (root / "in" / "patient-smith" / "img2").write_bytes(to_bytes(clean))
    config = root / "keep.json"
    config.write_text(json.dumps({
        "dicomTagConfig": {"actions": [{"queries": ["StudyDescription"], "keepTag": {}}]},
        "dicomDeid": {"residualSweep": False}}))
    errors = root / "errors.csv"
    args = ["deidentify", str(root / "in"), str(root / "out"), "--key-file", str(key),
            "--workers", "1", "--no-progress", "--config", str(config), "--errors",
            str(errors), "--verify"]
    assert main(args) == 3
    out = capsys.readouterr()
    assert "gate: 2 checked, 1 rejected" in out.out
    assert len(list((root / "out").rglob("*.dcm"))) == 1
    with open(errors, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["kind"], r["stage"]) for r in rows] == [("leak", "verify")]
    assert "original PatientName value found" in rows[0]["reason"]
    assert "smith" not in rows[0]["reason"].lower()
    assert not list((root / "out").rglob("*.tmp"))  # nothing left staged
    # The same run declaring what it keeps: both written.
    assert main([*args[:2], str(root / "out2"), *args[3:], "--exception", "PatientName",
                 "--exception", "PatientID"]) == 0
    assert len(list((root / "out2").rglob("*.dcm"))) == 2
    assert main([*args, "--exception", "NoSuchThing"]) == 2
    assert main([*args[:-1], "--no-verify", "--exception", "PatientName"]) == 2
    # The gate is the default: the same run without --verify rejects the same output...
    assert main([*args[:2], str(root / "out3"), *args[3:-1]]) == 3
    assert "gate: 2 checked, 1 rejected" in capsys.readouterr().out
    # ...and only --no-verify, an explicit weakening, writes it.
    assert main([*args[:2], str(root / "out4"), *args[3:-1], "--no-verify"]) == 0
    assert len(list((root / "out4").rglob("*.dcm"))) == 2
