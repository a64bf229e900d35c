"""The three analyst steps through the CLI on the embedded default: export metadata ->
cohort SQL -> filter file -> de-identify only the selected instances -> load back."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_deid.cli.main import main
from dicom_deid.cohort.cohorts import shipped_cohort_dir
from dicom_deid.cohort.filter_file import read_filter
from dicom_deid.synth import generate
from dicom_deid.warehouse.factory import open_warehouse
from instances import KEY

COHORTS = shipped_cohort_dir()


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    generate(root / "landing", patients=5, seed=21, small=True, bad_inputs=True)
    wh = f"duckdb://{root / 'wh.duckdb'}"
    key = root / "k"
    key.write_text(KEY.hex())
    code = main(["export-metadata", str(root / "landing" / "dicom"), "--out",
                 str(root / "meta"), "--warehouse", wh, "--ingest-date", "2026-11-20"])
    assert code == 3  # the planted bad inputs are reported, the rest exported
    return root, wh, key


def _count(wh: str, sql: str) -> int:
    with open_warehouse(wh) as warehouse:
        return int(warehouse.query(sql).column(0)[0].as_py())


def test_export_is_incremental_and_idempotent(landing: tuple[Path, str, Path]) -> None:
    root, wh, _ = landing
    before = _count(wh, "SELECT COUNT(*) FROM dicom_metadata")
    assert before > 0
    assert main(["export-metadata", str(root / "landing" / "dicom"), "--out",
                 str(root / "meta"), "--warehouse", wh, "--ingest-date", "2026-11-21"]) == 3
    assert _count(wh, "SELECT COUNT(*) FROM dicom_metadata") == before
    assert _count(wh, "SELECT COUNT(DISTINCT source_uri) FROM dicom_metadata") == before


def test_cohort_filter_and_deidentify_only_the_selection(
    landing: tuple[Path, str, Path]
) -> None:
    root, wh, key = landing
    filt = root / "us.filter"
    assert main(["cohort", str(COHORTS / "patients_with_us.sql"), "--warehouse", wh,
                 "--param", "start_date=2000-01-01", "--param", "end_date=2030-12-31",
                 "--out", str(filt)]) == 0
    studies = {e.study_uid for e in read_filter(filt)}
    assert studies
    quoted = ", ".join(f"'{s}'" for s in sorted(studies))
    files = _count(wh, f"SELECT COUNT(*) FROM dicom_metadata "
                       f"WHERE StudyInstanceUID IN ({quoted})")
    # The corpus re-sends some instances (same SOP Instance UID, another file): one output
    # each, the others listed as duplicates, so the run reports failures (exit 3).
    expected = _count(wh, f"SELECT COUNT(DISTINCT SOPInstanceUID) FROM dicom_metadata "
                          f"WHERE StudyInstanceUID IN ({quoted})")
    assert expected < files
    out = root / "deid"
    errors = root / "restricted" / "errors.csv"
    assert main(["deidentify", str(root / "landing" / "dicom"), str(out), "--filter", str(filt),
                 "--warehouse", wh, "--key-file", str(key), "--no-progress",
                 "--errors", str(errors)]) == 3
    assert [line.split(",")[1] for line in errors.read_text().splitlines()[1:]] == [
        "duplicate"] * (files - expected)
    outputs = list(out.rglob("*.dcm"))
    assert len(outputs) == expected
    assert len({pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID
                for p in outputs}) == len(studies)
    assert main(["export-metadata", str(out), "--out", str(root / "deid-meta"),
                 "--table", "deid_metadata", "--warehouse", wh]) == 0
    assert _count(wh, "SELECT COUNT(*) FROM deid_metadata") == expected
    assert _count(wh, f"SELECT COUNT(*) FROM deid_metadata "
                      f"WHERE StudyInstanceUID IN ({quoted})") == 0


def test_a_load_that_cannot_run_exports_nothing_and_no_part_is_left_unloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An external probe: without the restricted key, the load failed with a traceback
    after the export had recorded every file, so no later run loaded the rows."""
    generate(tmp_path / "landing", patients=1, seed=3, small=True, bad_inputs=False,
             duplicates=False)
    key = tmp_path / "k"
    key.write_text(KEY.hex())
    assert main(["deidentify", str(tmp_path / "landing" / "dicom"), str(tmp_path / "deid"),
                 "--key-file", str(key), "--no-progress"]) == 0
    out, wh = tmp_path / "meta", f"duckdb://{tmp_path / 'wh.duckdb'}"
    args = ["export-metadata", str(tmp_path / "deid"), "--out", str(out),
            "--warehouse", wh, "--table", "deid_metadata"]
    with monkeypatch.context() as mp:
        mp.delenv("DICOM_DEID_RESTRICTED_KEY")
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dicom-deid: ") and "restricted" in err and "Traceback" not in err
    assert not list(out.rglob("*.parquet"))  # checked before anything was exported
    # Exported without a load (or a load that failed): the next run loads those parts,
    # although it finds every file unchanged.
    assert main([*args, "--no-load"]) == 0
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "exported 0," in printed and "an earlier run did not load" in printed
    assert _count(wh, "SELECT COUNT(*) FROM deid_metadata") == len(
        [p for p in (tmp_path / "deid").rglob("*") if p.is_file()])
    assert main(args) == 0 and "loaded" not in capsys.readouterr().out  # nothing pending


def test_identified_files_are_never_loaded_into_the_analysts_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 13: the landing folder given by mistake to ``export-metadata --table
    deid_metadata`` put names, IDs and landing paths into the analysts' table, exit 0.
    Only files dicom-deid wrote are rows there; the others are listed as failures."""
    generate(tmp_path / "landing", patients=1, seed=4, small=True, bad_inputs=False)
    landing = tmp_path / "landing" / "dicom"
    files = [p for p in landing.rglob("*") if p.is_file()]
    wh = f"duckdb://{tmp_path / 'wh.duckdb'}"
    assert main(["export-metadata", str(landing), "--out", str(tmp_path / "meta"),
                 "--warehouse", wh, "--table", "deid_metadata"]) == 3
    err = capsys.readouterr().err
    assert "file(s): not an output of dicom-deid" in err and str(landing) not in err
    with open_warehouse(wh) as warehouse:
        warehouse.ensure_schema()
        assert warehouse.query("SELECT COUNT(*) FROM deid_metadata").column(0)[0].as_py() == 0
    names = {str(pydicom.dcmread(p, stop_before_pixels=True, force=True).get("PatientName"))
             for p in files} - {"None", ""}
    analysts = (tmp_path / "wh.duckdb").read_bytes()
    assert names and not [n for n in names if n.split("^")[0].encode() in analysts]


def test_the_identified_export_is_its_owners_only(tmp_path: Path) -> None:
    """Probe 13: the command line wrote the identified export 0755/0644 (the DAG 0700/0600,
    as the README says); with --no-load and no restricted key its Parquet is plain."""
    generate(tmp_path / "landing", patients=1, seed=5, small=True, bad_inputs=False)
    out = tmp_path / "meta" / "dicom_metadata"
    assert main(["export-metadata", str(tmp_path / "landing" / "dicom"), "--out", str(out),
                 "--no-load"]) == 0
    found = [p for p in out.rglob("*") if p.suffix == ".parquet" or p.is_dir()]
    assert any(p.suffix == ".parquet" for p in found)
    assert out.stat().st_mode & 0o777 == 0o700
    for path in found:
        assert path.stat().st_mode & 0o077 == 0, path
