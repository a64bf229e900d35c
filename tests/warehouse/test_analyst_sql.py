"""Analyst SQL on the embedded warehouse: ``dicom-deid query`` and cohorts only read.

A read-only warehouse is the analysts' view: its ``query`` takes one SELECT over the
warehouse's tables, run with DuckDB's configuration locked and external access off (no
``COPY ... TO``, no ``read_text``), and its failures never carry DuckDB's message. A
read-write one (the pipeline's) checks cohort SQL the same way but keeps its engine
open: its own loads need files later in the same process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicom_deid.cli.main import main
from dicom_deid.errors import CohortError, WarehouseError
from dicom_deid.warehouse.base import Typed
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

SECRET = "c0ffee51de0f7a6e5d4c3b2a1908f7e6d5c4b3a2"
PATIENT_ID = "MRN424242"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    (tmp_path / "vault.key").write_text(SECRET + "\n")
    with DuckDBWarehouse(tmp_path / "w.duckdb") as wh:
        wh.ensure_schema()
        wh.insert_rows("dicom_metadata", [{
            "source_uri": "file:///landing/a.dcm", "content_sha256": "h",
            "StudyInstanceUID": "1.2.3", "PatientID": PATIENT_ID, "PatientName": "DOE^JANE"}])
        wh.insert_rows("deid_runs", [{"run_id": "r1", "status": "success"}])
    return tmp_path / "w.duckdb"


@pytest.fixture
def ro(path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(path, read_only=True) as wh:
        yield wh


def test_copy_to_is_refused_and_writes_nothing(path: Path, ro: DuckDBWarehouse,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = path.parent / "exfil.csv"
    copy = f"COPY (SELECT PatientID, PatientName FROM dicom_metadata) TO '{target}'"
    with pytest.raises(WarehouseError, match="exactly one SELECT"):
        ro.query(copy)
    assert main(["query", copy, "--warehouse", f"duckdb://{path}"]) == 2
    assert "exactly one SELECT" in capsys.readouterr().err
    assert not target.exists()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('{key}')",
    "SELECT * FROM read_csv('{key}', header = false)",
    "SELECT * FROM '{key}'",
    "SELECT * FROM \"{key}\"",
    "SELECT * FROM glob('{dir}/*')",
    "SELECT * FROM deid_runs, LATERAL (SELECT * FROM read_text('{key}'))",
    "WITH k AS (SELECT * FROM read_blob('{key}')) SELECT * FROM k",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM system.main.duckdb_settings",
    "SELECT current_setting('temp_directory')",
    "SUMMARIZE deid_runs",
    "SELECT * FROM (SUMMARIZE SELECT * FROM read_text('{key}'))",
    "DROP TABLE deid_runs",
    "ATTACH '{dir}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "EXPORT DATABASE '{dir}/out'",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; SELECT 2",
])
def test_query_only_reads_the_warehouse_tables(sql: str, path: Path,
                                               ro: DuckDBWarehouse) -> None:
    text = sql.format(key=path.parent / "vault.key", dir=path.parent)
    with pytest.raises(WarehouseError) as caught:
        ro.query(text)
    assert SECRET not in str(caught.value)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "vault.key", "w.duckdb", "w_restricted.duckdb"]


def test_ordinary_queries_still_work_and_the_engine_is_locked(path: Path,
                                                              ro: DuckDBWarehouse) -> None:
    assert ro.query("SELECT count(*) AS n FROM dicom_metadata").to_pylist() == [{"n": 1}]
    joined = ro.query(
        "WITH runs AS (SELECT run_id FROM deid_runs) SELECT m.PatientID, r.run_id "
        "FROM dicom_metadata AS m, runs AS r WHERE m.StudyInstanceUID = $s",
        {"s": "1.2.3"}).to_pylist()
    assert joined == [{"PatientID": PATIENT_ID, "run_id": "r1"}]  # the restricted file too
    many = [f"f{i}" for i in range(600)] + ["success"]  # a long list: a registered table
    assert ro.query("SELECT count(*) AS n FROM deid_runs WHERE list_contains($l, status)",
                    {"l": many}).to_pylist() == [{"n": 1}]
    assert ro.run_cohort("SELECT COUNT(*) AS n FROM deid_runs WHERE status IN UNNEST(@l)",
                         {"l": Typed("ARRAY<STRING>", many)}).to_pylist() == [{"n": 1}]
    # Past the first analyst statement, DuckDB itself refuses files and settings.
    con = ro.connection
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_text('{path.parent / 'vault.key'}')")
    with pytest.raises(duckdb.Error, match="locked"):
        con.execute("SET enable_external_access = true")


def test_query_failures_name_the_class_not_the_value(path: Path, ro: DuckDBWarehouse,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    sql = "SELECT CAST(PatientName AS INTEGER) FROM dicom_metadata"
    with pytest.raises(WarehouseError, match="ConversionException") as caught:
        ro.query(sql)
    assert "DOE" not in str(caught.value) and caught.value.__cause__ is None
    assert main(["query", sql, "--warehouse", f"duckdb://{path}"]) == 2
    err = capsys.readouterr().err
    assert "ConversionException" in err and "DOE" not in err and "Traceback" not in err


def test_duckdbs_own_parser_checks_what_sqlglot_checked(ro: DuckDBWarehouse) -> None:
    # The SQL DuckDB runs, checked by DuckDB's parser too (not only by sqlglot's reading
    # of it): table functions, files, qualified names, SUMMARIZE, CTEs out of scope.
    tables = {"deid_runs"}
    for sql in ["SELECT * FROM read_text('x')", "SELECT * FROM 'x.csv'",
                "SELECT * FROM main.deid_runs", "SELECT * FROM (SUMMARIZE deid_runs)",
                "SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c), c",
                "WITH c AS (SELECT * FROM c) SELECT * FROM c",
                "WITH \"x.csv\" AS (SELECT 1) SELECT * FROM \"x.csv\"",
                "SELECT * FROM main.unnest([1])", "SELECT current_setting('x')"]:
        with pytest.raises(CohortError):
            ro._check_only_reads(sql, tables)
    for sql in ["SELECT * FROM deid_runs", "WITH c AS (SELECT 1 AS x) SELECT * FROM c",
                "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r "
                "WHERE n < 3) SELECT * FROM r",
                "SELECT * FROM UNNEST([1, 2]) AS t(x)", "FROM deid_runs SELECT run_id"]:
        ro._check_only_reads(sql, tables)


def test_the_pipelines_warehouse_keeps_its_file_access_after_a_cohort(
        tmp_path: Path) -> None:
    part = tmp_path / "part.parquet"
    pq.write_table(pa.table({"run_id": ["r2"], "status": ["success"]}), part)
    with DuckDBWarehouse(tmp_path / "w.duckdb") as wh:
        wh.ensure_schema()
        with pytest.raises(CohortError, match="table functions"):
            wh.run_cohort(f"SELECT * FROM read_parquet('{part}')")
        assert wh.run_cohort("SELECT COUNT(*) AS n FROM deid_runs").to_pylist() == [{"n": 0}]
        assert wh.load_parquet("deid_runs", part) == 1  # a load after it reads its file
        # the pipeline's own SQL (query on a read-write warehouse) is not analyst SQL
        assert wh.query("CREATE TABLE scratch AS SELECT 1 AS x").num_rows == 0
