"""Cohort SQL only reads the warehouse's tables, and its errors never echo data.

A cohort file is an analyst's: it must not read files (the restricted key beside the
warehouse, /etc/passwd), write, or change settings, and what it returns that is no UID
(a PatientID, a name through a failed CAST) must not come back in an error message, on
the pipeline's path (:meth:`Cohort.run`) as on the command line (``dicom-deid cohort``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dicom_deid.cli.main import main
from dicom_deid.cohort.cohorts import (
    Cohort,
    cohort_to_filter,
    load_cohort,
    parse_cohort,
    shipped_cohort_dir,
)
from dicom_deid.cohort.filter_file import parse_filter
from dicom_deid.errors import CohortError, FilterFileError
from dicom_deid.warehouse.bigquery_backend import BigQueryWarehouse
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.sql import parse_query

SECRET = "407fdfaa9495eefd3709a870d29c2068a0fb3076"
PATIENT_ID = "MRN777001"
PATIENT_NAME = "SMITHERS^WAYLON"
STUDY = "1.2.826.0.1.3680043.9.7"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with one identified row, and files beside it a cohort must not read."""
    root = tmp_path_factory.mktemp("confinement")
    (root / "rkey").write_text(SECRET + "\n")
    (root / "passwd.csv").write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    with DuckDBWarehouse(root / "w.duckdb") as wh:
        wh.ensure_schema()
        wh.insert_rows("dicom_metadata", [{
            "source_uri": "file:///landing/a.dcm", "content_sha256": "h",
            "StudyInstanceUID": STUDY, "SeriesInstanceUID": f"{STUDY}.1",
            "SOPInstanceUID": f"{STUDY}.1.1", "PatientID": PATIENT_ID,
            "PatientName": PATIENT_NAME, "Modality": "CT", "StudyDate": date(2024, 1, 2),
            "PatientAge": "045Y", "PatientSex": "F", "BodyPartExamined": "CHEST",
            "StudyDescription": "CT CHEST", "SeriesDescription": "AX",
            "ScanningSequence": ["SE"]}])
    return root


@pytest.fixture
def warehouse(files: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(files / "w.duckdb") as wh:
        yield wh


def _reads(root: Path) -> list[str]:
    key, csv = root / "rkey", root / "passwd.csv"
    return [
        f"SELECT SUBSTR(content, 1, 40) AS StudyInstanceUID FROM read_text('{key}')",
        f"SELECT column0 AS StudyInstanceUID FROM read_csv('{csv}', header=false)",
        f"SELECT * FROM read_parquet('{root}/*.parquet')",
        f"SELECT file AS StudyInstanceUID FROM glob('{root}/*')",
        f"SELECT * FROM `{csv}`",
        f"SELECT m.StudyInstanceUID FROM dicom_metadata AS m, read_text('{key}') AS k",
        f"SELECT m.StudyInstanceUID FROM dicom_metadata AS m CROSS JOIN LATERAL "
        f"read_text('{key}')",
        f"SELECT (SELECT content FROM read_text('{key}')) AS StudyInstanceUID",
        f"WITH k AS (SELECT * FROM read_text('{key}')) SELECT content AS StudyInstanceUID "
        "FROM k",
    ]


def test_a_cohort_reading_a_file_is_refused_without_its_content(
        files: Path, warehouse: DuckDBWarehouse) -> None:
    for sql in _reads(files):
        for run in (lambda s: parse_cohort(s),  # loading the file: the pipeline's first step
                    lambda s: warehouse.run_cohort(s)):  # the backend, as the CLI calls it
            with pytest.raises(CohortError) as caught:
                run(sql)
            message = str(caught.value)
            # (sqlglot does not even parse DuckDB's glob(): refused all the same)
            assert "may only read the warehouse's tables" in message or \
                "does not parse" in message, sql
            assert SECRET not in message and "root:" not in message


def test_the_cli_refuses_a_file_reading_cohort_and_prints_no_content(
        files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for number, sql in enumerate(_reads(files)[:2]):
        cohort = tmp_path / f"c{number}.sql"
        cohort.write_text(sql + "\n")
        out = tmp_path / f"c{number}.filter"
        assert main(["cohort", str(cohort), "--out", str(out),
                     "--warehouse", f"duckdb://{files / 'w.duckdb'}"]) == 2
        err = capsys.readouterr().err
        assert "table functions" in err
        assert SECRET not in err and "root:" not in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM deid_runs INTO t2",
    "SELECT * INTO t2 FROM dicom_metadata",
    "INSERT INTO deid_runs (run_id) VALUES ('x')",
    "DELETE FROM dicom_metadata WHERE TRUE",
    "SELECT 1; DROP TABLE deid_runs",
    "SELECT current_setting('temp_directory') AS StudyInstanceUID",
    "SELECT * FROM x.dicom_metadata",
    "SELECT * FROM somewhere_else",
    "SELECT * FROM EXTERNAL_QUERY('conn', 'SELECT 1')",
    "SELECT * FROM ML.PREDICT(MODEL m, TABLE dicom_metadata)",
    # a CTE out of its scope is no CTE: it would name a stored table (or a file)
    "SELECT * FROM (WITH c AS (SELECT 1 AS x) SELECT * FROM c), c",
])
def test_only_reads_of_the_warehouse_tables_pass(sql: str,
                                                warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(CohortError):
        parse_query(sql)
    with pytest.raises(CohortError):
        warehouse.run_cohort(sql)


def test_ordinary_cohort_sql_still_passes(warehouse: DuckDBWarehouse) -> None:
    for sql in [
        "SELECT DISTINCT StudyInstanceUID FROM dicom_metadata WHERE Modality = 'CT'",
        "WITH c AS (SELECT StudyInstanceUID AS s FROM dicom_metadata) SELECT s FROM c",
        "WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT x FROM b",
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT COUNT(*) AS n FROM r",
        "SELECT u FROM UNNEST(['1.2', '1.3']) AS u",
        "SELECT StudyInstanceUID FROM dicom_metadata AS m WHERE StudyInstanceUID IN "
        "(SELECT StudyInstanceUID FROM dicom_metadata) UNION DISTINCT "
        "SELECT StudyInstanceUID FROM dicom_metadata",
    ]:
        assert warehouse.run_cohort(sql).num_rows >= 1, sql


def test_the_shipped_examples_run_on_the_analysts_read_only_view(files: Path) -> None:
    args = {"start_date": "2000-01-01", "end_date": "2030-12-31"}
    with DuckDBWarehouse(files / "w.duckdb", read_only=True) as ro:
        for path in sorted(shipped_cohort_dir().glob("*.sql")):
            cohort = load_cohort(path)
            wanted = {k: v for k, v in args.items() if k in {p.name for p in cohort.params}}
            cohort_to_filter(cohort.run(ro, wanted))
        got = cohort_to_filter(load_cohort("chest_ct_adults").run(ro, {
            **args, "min_age": "0"}))
        assert [e.study_uid for e in got] == [STUDY]


def test_a_patient_id_returned_as_a_uid_is_not_echoed(
        files: Path, warehouse: DuckDBWarehouse, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT PatientID AS StudyInstanceUID FROM dicom_metadata"
    with pytest.raises(CohortError) as caught:
        cohort_to_filter(warehouse.run_cohort(sql))
    message = str(caught.value)
    assert "row 1" in message and "StudyInstanceUID" in message and "not a UID" in message
    assert PATIENT_ID not in message
    for column in ("SeriesInstanceUID", "SOPInstanceUID"):
        table = pa.table({"StudyInstanceUID": [STUDY, STUDY], "SeriesInstanceUID":
                          [f"{STUDY}.1", f"{STUDY}.1"], column: ["1.2", PATIENT_ID]})
        with pytest.raises(CohortError, match=f"row 2: .*column {column}") as caught:
            cohort_to_filter(table)
        assert PATIENT_ID not in str(caught.value)
    cohort = tmp_path / "pid.sql"
    cohort.write_text(sql + "\n")
    warehouse.close()  # the command opens the file read-only, in its own connection
    assert main(["cohort", str(cohort), "--out", str(tmp_path / "pid.filter"),
                 "--warehouse", f"duckdb://{files / 'w.duckdb'}"]) == 2
    err = capsys.readouterr().err
    assert "not a UID" in err and PATIENT_ID not in err and "Traceback" not in err


def test_a_failed_cast_does_not_echo_the_value(
        files: Path, warehouse: DuckDBWarehouse, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT CAST(PatientName AS INT64) AS StudyInstanceUID FROM dicom_metadata"
    with pytest.raises(CohortError) as caught:
        warehouse.run_cohort(sql)
    assert "ConversionException" in str(caught.value)
    assert "SMITHERS" not in str(caught.value) and caught.value.__cause__ is None
    cohort = tmp_path / "cast.sql"
    cohort.write_text(sql + "\n")
    warehouse.close()  # the command opens the file read-only, in its own connection
    assert main(["cohort", str(cohort), "--out", str(tmp_path / "cast.filter"),
                 "--warehouse", f"duckdb://{files / 'w.duckdb'}"]) == 2
    err = capsys.readouterr().err
    assert "ConversionException" in err and "SMITHERS" not in err and "Traceback" not in err


def test_a_failure_names_the_columns_the_sql_has_not_values(
        warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(CohortError, match=r"BinderException.*\(NoSuchColumn\)"):
        warehouse.run_cohort("SELECT NoSuchColumn AS StudyInstanceUID FROM dicom_metadata")


def test_malformed_sql_is_a_clean_error(files: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    unterminated = f"SELECT StudyInstanceUID FROM dicom_metadata WHERE PatientID = '{PATIENT_ID}"
    for sql, expected in [(unterminated, "does not parse"),
                          ("SELECT StudyInstanceUID FROM\nWHERE (", "line 2")]:
        with pytest.raises(CohortError, match=expected) as caught:
            parse_cohort(sql)
        assert PATIENT_ID not in str(caught.value)
        cohort = tmp_path / "bad.sql"
        cohort.write_text(sql + "\n")
        assert main(["cohort", str(cohort), "--out", str(tmp_path / "bad.filter"),
                     "--warehouse", f"duckdb://{files / 'w.duckdb'}"]) == 2
        err = capsys.readouterr().err
        assert expected in err and PATIENT_ID not in err and "Traceback" not in err


class _Failing:
    """A warehouse whose engine fails with a message quoting a value (BigQuery's do)."""

    def run_cohort(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        raise RuntimeError(f"400 Bad int64 value: {PATIENT_NAME} at [3:12]")


def test_a_backend_failure_is_reported_by_class_and_place_only() -> None:
    cohort = Cohort(name="c", sql="SELECT StudyInstanceUID FROM dicom_metadata")
    with pytest.raises(CohortError) as caught:
        cohort.run(_Failing())  # type: ignore[arg-type]
    assert str(caught.value) == ("cohort c failed on the warehouse: RuntimeError at line 3, "
                                 "column 12")
    assert caught.value.__cause__ is None


def test_bigquery_cohorts_get_the_same_check() -> None:
    bq = BigQueryWarehouse.__new__(BigQueryWarehouse)  # no client: refused before any call
    for sql in ["SELECT * FROM EXTERNAL_QUERY('conn', 'SELECT 1')",
                "SELECT * FROM other_dataset.patients", "SELECT * FROM patients",
                "SELECT 1; SELECT 2"]:
        with pytest.raises(CohortError):
            bq.run_cohort(sql)


def test_a_filter_file_error_does_not_echo_the_line() -> None:
    for text in (f"{SECRET}\n", f"/studies/{SECRET}\n", f"/{SECRET}/1\n",
                 f"/studies/1/{SECRET}\n", f"/studies/{PATIENT_ID}\n"):
        with pytest.raises(FilterFileError) as caught:
            parse_filter(text)
        assert SECRET not in str(caught.value) and PATIENT_ID not in str(caught.value)
        assert str(caught.value).startswith("line 1: ")
