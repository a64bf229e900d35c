"""The README's command-line flow on Google Cloud -- landing and research store on gs://,
the warehouse on bigquery:// -- against fake-gcs-server and bqemulator, beside the same
flow on local folders and DuckDB: the same filter, the same de-identified bytes, the same
row counts."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from google.cloud.storage import Client

from dicom_deid.cli.main import main
from dicom_deid.cohort.cohorts import shipped_cohort_dir
from dicom_deid.cohort.filter_file import read_filter
from dicom_deid.synth import generate
from dicom_deid.warehouse.factory import open_warehouse
from emulators import Cloud, upload_folder
from instances import KEY

COHORT = str(shipped_cohort_dir() / "patients_with_us.sql")
WINDOW = ["--param", "start_date=2000-01-01", "--param", "end_date=2030-12-31"]


def _count(wh: str, table: str) -> int:
    with open_warehouse(wh) as warehouse:
        return int(warehouse.run_cohort(f"SELECT COUNT(*) FROM {table}").column(0)[0].as_py())


def _flow(tmp: Path, landing: str, out: str, wh: str, key: Path) -> tuple[int, ...]:
    """export -> cohort -> filter -> de-identify -> export the outputs; the exit codes."""
    filt = tmp / "us.filter"
    return (
        main(["export-metadata", landing, "--out", str(tmp / "meta"), "--warehouse", wh,
              "--ingest-date", "2026-11-20"]),
        main(["cohort", COHORT, "--warehouse", wh, *WINDOW, "--out", str(filt)]),
        main(["deidentify", landing, out, "--filter", str(filt), "--warehouse", wh,
              "--key-file", str(key), "--no-progress", "--errors", str(tmp / "errors.csv")]),
        main(["export-metadata", out, "--out", str(tmp / "deid-meta"), "--table",
              "deid_metadata", "--warehouse", wh]),
    )


def test_cli_on_gcs_and_bigquery_matches_local(gcloud_env: Cloud, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "src", patients=4, seed=21, small=True, bad_inputs=True)
    bucket = f"hospital-{uuid.uuid4().hex[:8]}"
    client = Client()
    client.create_bucket(bucket)
    upload_folder(client, bucket, tmp_path / "src" / "dicom", "landing")
    key = tmp_path / "k"
    key.write_text(KEY.hex())

    (tmp_path / "local").mkdir()
    local_wh = f"duckdb://{tmp_path / 'local' / 'wh.duckdb'}"
    local = _flow(tmp_path / "local", str(tmp_path / "src" / "dicom"),
                  str(tmp_path / "local" / "deid"), local_wh, key)
    (tmp_path / "cloud").mkdir()
    cloud_wh = f"bigquery://{gcloud_env.project}/research_{uuid.uuid4().hex[:8]}"
    cloud = _flow(tmp_path / "cloud", f"gs://{bucket}/landing", f"gs://{bucket}/deid",
                  cloud_wh, key)
    printed = capsys.readouterr().out

    assert local == cloud == (3, 0, 3, 0)  # bad inputs and duplicates listed, both sides
    assert "KiB per object on average" in printed
    assert read_filter(tmp_path / "local" / "us.filter") == read_filter(
        tmp_path / "cloud" / "us.filter")
    mine = {p.relative_to(tmp_path / "local" / "deid").as_posix(): p.read_bytes()
            for p in (tmp_path / "local" / "deid").rglob("*") if p.is_file()}
    theirs = {b.name.removeprefix("deid/"): b.download_as_bytes()
              for b in client.list_blobs(bucket, prefix="deid/")}
    assert mine and mine.keys() == theirs.keys()
    assert all(mine[name] == theirs[name] for name in mine)
    for table in ("dicom_metadata", "deid_metadata"):
        assert _count(local_wh, table) == _count(cloud_wh, table) > 0
    local_errors = (tmp_path / "local" / "errors.csv").read_text().splitlines()
    cloud_errors = (tmp_path / "cloud" / "errors.csv").read_text().splitlines()
    assert len(local_errors) == len(cloud_errors) > 1


def test_pydicoms_own_files_from_gcs_give_the_local_bytes_on_both_paths(
    gcloud_env: Cloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files the project did not write (pydicom's bundled test files: other writers, other
    syntaxes), de-identified from gs:// to gs:// and locally: the same outputs, byte for
    byte, made by the byte path and by the Dataset path alike."""
    import re
    import shutil

    import pydicom

    src = tmp_path / "src"
    src.mkdir()
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        shutil.copy(path, src / path.name)
    bucket = f"theirs-{uuid.uuid4().hex[:8]}"
    client = Client()
    client.create_bucket(bucket)

    upload_folder(client, bucket, src, "in")
    key = tmp_path / "k"
    key.write_text(KEY.hex())
    common = ["--key-file", str(key), "--no-progress", "--workers", "2"]
    local = main(["deidentify", str(src), str(tmp_path / "out"), *common])
    local_line = capsys.readouterr().out
    remote = main(["deidentify", f"gs://{bucket}/in", f"gs://{bucket}/out", *common])
    remote_line = capsys.readouterr().out
    assert local == remote
    counts = [re.search(r"processed (\d+).*?(\d+) by the byte path", line)
              for line in (local_line, remote_line)]
    assert counts[0] and counts[1]
    assert counts[0].groups() == counts[1].groups()
    processed, byte_path = map(int, counts[0].groups())
    assert 0 < byte_path < processed  # both paths at work
    mine = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
            for p in (tmp_path / "out").rglob("*") if p.is_file()}
    theirs = {b.name.removeprefix("out/"): b.download_as_bytes()
              for b in client.list_blobs(bucket, prefix="out/")}
    assert len(mine) == processed and mine.keys() == theirs.keys()
    assert all(mine[name] == theirs[name] for name in mine)
