"""Warehouse backends: DuckDB for real, BigQuery at its client boundary (a recording fake)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery

from dicom_deid.deid.mapping import MAPPING_SCHEMA
from dicom_deid.errors import WarehouseError
from dicom_deid.warehouse.base import DEFAULT_KEYS, TABLES, Typed
from dicom_deid.warehouse.bigquery_backend import BigQueryWarehouse
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.factory import default_duckdb_path, open_warehouse


def write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def meta(uri: str, sha: str = "h", **extra: Any) -> dict[str, Any]:
    return {
        "source_uri": uri, "content_sha256": sha, "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": uri.rsplit("/", 1)[-1],
        "ingest_date": date(2024, 1, 1), **extra,
    }


@pytest.fixture
def duck(tmp_path: Path) -> DuckDBWarehouse:
    wh = open_warehouse(f"duckdb://{tmp_path}/wh/test.duckdb")
    assert isinstance(wh, DuckDBWarehouse)
    wh.ensure_schema()
    yield wh
    wh.close()


# -- DuckDB -------------------------------------------------------------------------


def test_duckdb_schema_created_idempotently(duck: DuckDBWarehouse) -> None:
    duck.ensure_schema()
    for table in TABLES:
        assert duck.columns(table), table
    assert list(duck.columns("deid_mapping")) == MAPPING_SCHEMA.names
    assert duck.columns("deid_runs")["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert duck.columns("deid_runs")["processed"] == "BIGINT"


def test_duckdb_merge_reload_adds_no_duplicates(duck: DuckDBWarehouse, tmp_path: Path) -> None:
    night1 = write(tmp_path / "n1.parquet", [meta("f/1.1"), meta("f/1.2")])
    assert duck.load_parquet("dicom_metadata", night1, mode="merge") == 2
    assert duck.load_parquet("dicom_metadata", night1, mode="merge") == 2
    assert duck.load_parquet("dicom_metadata", [night1, night1], mode="merge") == 2
    assert duck.query("SELECT count(*) AS n FROM dicom_metadata")["n"][0].as_py() == 2
    # A changed file (new hash) is a new version; the old row stays as history.
    changed = write(tmp_path / "n2.parquet", [meta("f/1.1", sha="h2")])
    duck.load_parquet("dicom_metadata", changed, mode="merge")
    assert duck.query("SELECT count(*) AS n FROM dicom_metadata")["n"][0].as_py() == 3


def test_duckdb_union_of_files_with_different_columns(
    duck: DuckDBWarehouse, tmp_path: Path
) -> None:
    a = write(tmp_path / "ingest_date=2024-01-01" / "a.parquet",
              [meta("f/1.1", Modality="CT", ScanningSequence=None)])
    write(tmp_path / "ingest_date=2024-01-02" / "b.parquet",
          [meta("f/1.2", Modality="MR", ScanningSequence=["SE", "IR"], EchoTime=90.0)])
    duck.load_parquet("dicom_metadata", a, mode="merge")
    cols = duck.columns("dicom_metadata")
    assert "Modality" in cols and "EchoTime" not in cols
    duck.load_parquet("dicom_metadata", str(tmp_path / "*" / "*.parquet"), mode="merge")
    cols = duck.columns("dicom_metadata")
    assert cols["EchoTime"] == "DOUBLE" and cols["ScanningSequence"] == "VARCHAR[]"
    rows = duck.query(
        "SELECT SOPInstanceUID, EchoTime, ScanningSequence FROM dicom_metadata ORDER BY 1"
    ).to_pylist()
    assert rows == [
        {"SOPInstanceUID": "1.1", "EchoTime": None, "ScanningSequence": None},
        {"SOPInstanceUID": "1.2", "EchoTime": 90.0, "ScanningSequence": ["SE", "IR"]},
    ]


def test_duckdb_replace_partition_and_append(duck: DuckDBWarehouse, tmp_path: Path) -> None:
    day = write(tmp_path / "d.parquet", [meta("f/1"), meta("f/2")])
    duck.load_parquet("dicom_metadata", day, mode="replace_partition")
    smaller = write(tmp_path / "d2.parquet", [meta("f/3")])
    duck.load_parquet("dicom_metadata", smaller, mode="replace_partition")
    got = duck.query("SELECT source_uri FROM dicom_metadata")["source_uri"].to_pylist()
    assert got == ["f/3"]
    duck.load_parquet("dicom_metadata", smaller)  # append: no dedupe, by design
    assert duck.query("SELECT count(*) AS n FROM dicom_metadata")["n"][0].as_py() == 2


def test_duckdb_mapping_parquet_and_rollback(duck: DuckDBWarehouse, tmp_path: Path) -> None:
    row = {f.name: 0 if pa.types.is_integer(f.type) else "x" for f in MAPPING_SCHEMA} | {
        "run_id": "r1", "date_shift_days": -12}
    path = write(tmp_path / "m.parquet", [row, row | {"source_path": "y"}], MAPPING_SCHEMA)
    duck.load_parquet("deid_mapping", path, mode="merge")
    duck.load_parquet("deid_mapping", path, mode="merge")
    assert duck.query("SELECT count(*) AS n FROM deid_mapping")["n"][0].as_py() == 2
    with pytest.raises(WarehouseError, match="key columns"):
        duck.load_parquet("deid_mapping", path, mode="merge", key_columns=["nope"])
    nokey = write(tmp_path / "nokey.parquet", [row | {"source_path": None}], MAPPING_SCHEMA)
    with pytest.raises(WarehouseError, match="1 rows loaded into deid_mapping have NULL key"):
        duck.load_parquet("deid_mapping", nokey, mode="merge")
    with pytest.raises(WarehouseError, match="unknown load mode"):
        duck.load_parquet("deid_mapping", path, mode="upsert")  # type: ignore[arg-type]
    assert duck.query("SELECT count(*) AS n FROM deid_mapping")["n"][0].as_py() == 2


def test_duckdb_insert_rows_upsert_and_query_params(duck: DuckDBWarehouse) -> None:
    start = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)
    run = {"run_id": "r1", "started_at": start, "user": "ana", "status": "running"}
    duck.insert_rows("deid_runs", [run], key_columns=["run_id"])
    done = run | {"status": "ok", "processed": 10, "failed": 0, "skipped": 1}
    duck.insert_rows("deid_runs", [done], key_columns=["run_id"])
    duck.insert_rows("deid_errors", [{"run_id": "r1", "path": "a", "stage": "read",
                                      "kind": "InvalidDicom", "reason": "no preamble"}])
    table = duck.query(
        "SELECT run_id, status, processed FROM deid_runs WHERE status = $s AND processed >= $n",
        {"s": "ok", "n": Typed("INT64", 5)},
    )
    assert table.to_pylist() == [{"run_id": "r1", "status": "ok", "processed": 10}]
    assert duck.query("SELECT count(*) AS n FROM deid_errors")["n"][0].as_py() == 1
    assert duck.insert_rows("deid_errors", []) == 0


def test_duckdb_run_cohort_transpiles_bigquery(duck: DuckDBWarehouse, tmp_path: Path) -> None:
    duck.load_parquet("dicom_metadata", write(tmp_path / "m.parquet", [meta("f/1.1")]))
    sql = (
        "SELECT SOPInstanceUID FROM dicom_metadata "
        "WHERE ingest_date >= @d AND SAFE_CAST('x' AS INT64) IS NULL"
    )
    assert duck.run_cohort(sql, {"d": date(2023, 1, 1), "unused": 1}).num_rows == 1
    with pytest.raises(WarehouseError, match="missing query parameters: d"):
        duck.run_cohort(sql, {})


def test_open_warehouse_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_DEID_DATA_DIR", str(tmp_path / "data"))
    assert default_duckdb_path() == tmp_path / "data" / "warehouse" / "dicom_deid.duckdb"
    with open_warehouse() as wh:
        assert isinstance(wh, DuckDBWarehouse)
    assert default_duckdb_path().exists()
    with open_warehouse("duckdb://:memory:") as wh:
        assert isinstance(wh, DuckDBWarehouse) and wh.path == ":memory:"
    bq = open_warehouse("bigquery://proj/ds?location=EU", client=FakeClient())
    assert isinstance(bq, BigQueryWarehouse) and bq.dataset_id == "proj.ds"
    assert bq.location == "EU"
    for bad in ("bigquery://proj", "postgres://x", "bigquery://p/a/b"):
        with pytest.raises(WarehouseError):
            open_warehouse(bad)


# -- BigQuery at its boundary ---------------------------------------------------------


class FakeJob:
    def __init__(self, rows: int = 0, table: pa.Table | None = None) -> None:
        self.output_rows = rows
        self._table = table if table is not None else pa.table({})

    def result(self) -> FakeJob:
        return self

    def to_arrow(self, create_bqstorage_client: bool = True) -> pa.Table:
        assert create_bqstorage_client is False
        return self._table


class FakeTable:
    def __init__(self, table_id: str, schema: list[bigquery.SchemaField]) -> None:
        self.table_id = table_id
        self.schema = schema
        self.expires: datetime | None = None


class FakeClient:
    """Records every call; tables have the schemas given in ``schemas``."""

    def __init__(self, schemas: dict[str, list[bigquery.SchemaField]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.schemas = schemas or {}
        self.result = pa.table({})

    def _named(self, kind: str) -> list[Any]:
        return [args for name, args in self.calls if name == kind]

    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool = False) -> None:
        self.calls.append(("create_dataset", (dataset.dataset_id, dataset.project, exists_ok)))

    def query(self, sql: str, job_config: bigquery.QueryJobConfig, location: Any = None) -> FakeJob:
        self.calls.append(("query", (sql, job_config)))
        return FakeJob(table=self.result)

    def load_table_from_file(self, handle: Any, dest: str, job_config: Any, location: Any = None,
                             ) -> FakeJob:
        data = handle.read()
        self.calls.append(("load_file", (dest, job_config, data[:4])))
        self.schemas.setdefault(dest, [bigquery.SchemaField("source_uri", "STRING", "REQUIRED"),
                                       bigquery.SchemaField("content_sha256", "STRING"),
                                       bigquery.SchemaField("Modality", "STRING")])
        return FakeJob(rows=2)

    def load_table_from_uri(self, uris: list[str], dest: str, job_config: Any,
                            location: Any = None) -> FakeJob:
        self.calls.append(("load_uri", (uris, dest, job_config)))
        return FakeJob(rows=5)

    def load_table_from_json(self, rows: list[dict[str, Any]], dest: str, job_config: Any,
                             location: Any = None) -> FakeJob:
        self.calls.append(("load_json", (rows, dest, job_config)))
        self.schemas.setdefault(dest, job_config.schema)
        return FakeJob(rows=len(rows))

    def get_table(self, table_id: str) -> FakeTable:
        return FakeTable(table_id, list(self.schemas.get(table_id, [])))

    def update_table(self, table: FakeTable, fields: list[str]) -> FakeTable:
        self.calls.append(("update_table", (table.table_id, tuple(fields), table)))
        return table

    def delete_table(self, table_id: str, not_found_ok: bool = False) -> None:
        self.calls.append(("delete_table", (table_id, not_found_ok)))

    def close(self) -> None:
        self.calls.append(("close", None))


def test_bigquery_ensure_schema_runs_ddl_in_dataset() -> None:
    from dicom_deid.warehouse.ddl import schema_ddl
    from dicom_deid.warehouse.sql import ddl_columns

    # Every table exists with its declared columns: nothing to add, one DDL per table.
    client = FakeClient({f"proj.ds.{t}": [bigquery.SchemaField(n, k) for n, k in ddl_columns(
        schema_ddl(t))] for t in TABLES})
    BigQueryWarehouse("proj", "ds", client=client).ensure_schema()
    assert client._named("create_dataset") == [("ds", "proj", True)]
    queries = client._named("query")
    assert len(queries) == len(TABLES)
    for (sql, config), table in zip(queries, TABLES, strict=True):
        assert f"CREATE TABLE IF NOT EXISTS {table}" in sql
        assert config.default_dataset.dataset_id == "ds"
        assert config.default_dataset.project == "proj"
    assert "CLUSTER BY run_id" in queries[2][0]  # BigQuery options kept as written


def test_bigquery_ensure_schema_adds_the_columns_an_older_table_lacks() -> None:
    """A deid_runs table made by an older version (no key_id, engine, project) gains the
    declared columns, nullable, in one ALTER; tables that have them get none."""
    from dicom_deid.warehouse.ddl import schema_ddl
    from dicom_deid.warehouse.sql import ddl_columns

    schemas = {f"proj.ds.{t}": [bigquery.SchemaField(n, k) for n, k in ddl_columns(
        schema_ddl(t))] for t in TABLES}
    schemas["proj.ds.deid_runs"] = [f for f in schemas["proj.ds.deid_runs"]
                                    if f.name not in ("key_id", "engine", "project")]
    client = FakeClient(schemas)
    BigQueryWarehouse("proj", "ds", client=client).ensure_schema()
    alters = [sql for sql, _ in client._named("query") if sql.startswith("ALTER")]
    assert alters == ["ALTER TABLE deid_runs ADD COLUMN IF NOT EXISTS key_id STRING, "
                      "ADD COLUMN IF NOT EXISTS engine STRING, "
                      "ADD COLUMN IF NOT EXISTS project STRING"]


def test_bigquery_query_parameters_are_typed() -> None:
    client = FakeClient()
    client.result = pa.table({"x": [1]})
    wh = BigQueryWarehouse("proj", "ds", client=client)
    out = wh.run_cohort(
        "SELECT 1 AS x WHERE @d > DATE '2000-01-01'",
        {"d": date(2024, 1, 2), "n": 3, "f": 1.5, "b": True, "s": "CT",
         "ts": datetime(2024, 1, 1, tzinfo=UTC), "null": Typed("DATE", None),
         "uids": Typed("ARRAY<STRING>", ["1.2", "1.3"])},
    )
    assert out.to_pylist() == [{"x": 1}]
    sql, config = client._named("query")[0]
    assert sql == "SELECT 1 AS x WHERE @d > DATE '2000-01-01'"  # as written
    params = {p.name: p for p in config.query_parameters}
    assert isinstance(params["d"], bigquery.ScalarQueryParameter)
    assert [(n, params[n].type_, params[n].value) for n in ("d", "n", "f", "b", "s", "null")] == [
        ("d", "DATE", date(2024, 1, 2)), ("n", "INT64", 3), ("f", "FLOAT64", 1.5),
        ("b", "BOOL", True), ("s", "STRING", "CT"), ("null", "DATE", None),
    ]
    assert params["ts"].type_ == "TIMESTAMP"
    assert isinstance(params["uids"], bigquery.ArrayQueryParameter)
    assert params["uids"].array_type == "STRING" and params["uids"].values == ["1.2", "1.3"]


def test_bigquery_append_load_allows_field_addition(tmp_path: Path) -> None:
    client = FakeClient()
    wh = BigQueryWarehouse("proj", "ds", client=client)
    a = write(tmp_path / "a.parquet", [meta("f/1")])
    b = write(tmp_path / "b.parquet", [meta("f/2")])
    assert wh.load_parquet("dicom_metadata", str(tmp_path / "*.parquet")) == 4
    loads = client._named("load_file")
    assert [dest for dest, _, _ in loads] == ["proj.ds.dicom_metadata"] * 2
    for _, config, magic in loads:
        assert magic == b"PAR1"
        assert config.source_format == "PARQUET"
        assert config.write_disposition == "WRITE_APPEND"
        assert config.schema_update_options == ["ALLOW_FIELD_ADDITION"]
        assert config.parquet_options.enable_list_inference is True
    assert a.exists() and b.exists()
    wh.load_parquet("deid_errors", ["gs://bucket/errors/*.parquet"])
    uris, dest, _ = client._named("load_uri")[0]
    assert uris == ["gs://bucket/errors/*.parquet"] and dest == "proj.ds.deid_errors"


def test_bigquery_merge_via_staging_table(tmp_path: Path) -> None:
    target = "proj.ds.dicom_metadata"
    client = FakeClient({target: [bigquery.SchemaField("source_uri", "STRING"),
                                  bigquery.SchemaField("content_sha256", "STRING")]})
    wh = BigQueryWarehouse("proj", "ds", client=client)
    path = write(tmp_path / "a.parquet", [meta("f/1")])
    assert wh.load_parquet("dicom_metadata", path, mode="merge") == 2
    (stage, config, _), = client._named("load_file")
    assert stage.startswith("proj.ds._stage_dicom_metadata_")
    assert config.write_disposition == "WRITE_TRUNCATE"
    assert config.schema_update_options is None or config.schema_update_options == []
    updates = client._named("update_table")
    assert updates[0][:2] == (stage, ("expires",)) and updates[0][2].expires is not None
    assert updates[1][:2] == (target, ("schema",))
    new_fields = updates[1][2].schema
    assert [f.name for f in new_fields] == ["source_uri", "content_sha256", "Modality"]
    assert all(f.mode == "NULLABLE" for f in new_fields)
    (sql, _), = client._named("query")
    assert sql.startswith(
        f"ASSERT NOT EXISTS (SELECT 1 FROM `{stage}` WHERE `source_uri` IS NULL OR "
        "`content_sha256` IS NULL)"
    )
    assert f"MERGE `{target}` AS t\nUSING (SELECT * FROM `{stage}`" in sql
    assert "PARTITION BY `source_uri`, `content_sha256`" in sql
    assert ("ON t.`source_uri` IS NOT DISTINCT FROM s.`source_uri` AND "
            "t.`content_sha256` IS NOT DISTINCT FROM s.`content_sha256`") in sql
    assert "WHEN MATCHED THEN UPDATE SET `Modality` = s.`Modality`" in sql
    assert "WHEN NOT MATCHED THEN INSERT (`source_uri`, `content_sha256`, `Modality`)" in sql
    assert client._named("delete_table") == [(stage, True)]


def test_bigquery_replace_partition_is_one_transaction(tmp_path: Path) -> None:
    client = FakeClient()
    wh = BigQueryWarehouse("proj", "ds", client=client)
    path = write(tmp_path / "a.parquet", [meta("f/1")])
    wh.load_parquet("dicom_metadata", path, mode="replace_partition",
                    key_columns=["content_sha256"])
    (sql, _), = client._named("query")
    assert sql.startswith("ASSERT NOT EXISTS")
    assert "BEGIN TRANSACTION;\nDELETE FROM `proj.ds.dicom_metadata` AS t" in sql
    assert "t.`content_sha256` IS NOT DISTINCT FROM s.`content_sha256`" in sql
    assert sql.endswith("COMMIT TRANSACTION;")
    assert len(client._named("delete_table")) == 1


def test_bigquery_stage_dropped_on_failure(tmp_path: Path) -> None:
    client = FakeClient()
    wh = BigQueryWarehouse("proj", "ds", client=client)
    path = write(tmp_path / "a.parquet", [meta("f/1")])
    with pytest.raises(WarehouseError, match="key columns"):
        wh.load_parquet("deid_runs", path, mode="merge")  # no run_id in these rows
    assert len(client._named("delete_table")) == 1
    with pytest.raises(WarehouseError, match="no Parquet file matches"):
        wh.load_parquet("deid_runs", str(tmp_path / "none*.parquet"))


def test_bigquery_insert_rows_loads_json_with_table_schema() -> None:
    runs = [bigquery.SchemaField("run_id", "STRING"),
            bigquery.SchemaField("started_at", "TIMESTAMP"),
            bigquery.SchemaField("status", "STRING")]
    client = FakeClient({"proj.ds.deid_runs": runs})
    wh = BigQueryWarehouse("proj", "ds", client=client)
    row = {"run_id": "r1", "started_at": datetime(2024, 1, 1, tzinfo=UTC), "status": "ok"}
    assert wh.insert_rows("deid_runs", [row]) == 1
    rows, dest, config = client._named("load_json")[0]
    assert dest == "proj.ds.deid_runs"
    assert rows == [{"run_id": "r1", "started_at": "2024-01-01T00:00:00+00:00", "status": "ok"}]
    assert config.source_format == "NEWLINE_DELIMITED_JSON"
    assert config.write_disposition == "WRITE_APPEND" and config.schema == runs
    wh.insert_rows("deid_runs", [row], key_columns=["run_id"])
    _, stage, config = client._named("load_json")[1]
    assert stage.startswith("proj.ds._stage_deid_runs_")
    assert config.write_disposition == "WRITE_TRUNCATE"
    assert "MERGE `proj.ds.deid_runs`" in client._named("query")[0][0]
    assert client._named("delete_table") == [(stage, True)]
    wh.close()
    assert client.calls[-1] == ("close", None)


def test_duckdb_delete_in_removes_exactly_the_listed_values(duck: DuckDBWarehouse) -> None:
    rows = [{"run_id": f"r{i}", "path": f"p{i}", "stage": "read", "kind": "k", "reason": "x"}
            for i in range(5)]
    duck.insert_rows("deid_errors", rows)
    assert duck.delete_in("deid_errors", "path", ["p1", "p3", "nowhere"]) == 2
    left = duck.query("SELECT path FROM deid_errors ORDER BY path")["path"].to_pylist()
    assert left == ["p0", "p2", "p4"]
    assert duck.delete_in("deid_errors", "path", []) == 0
    with pytest.raises(WarehouseError):
        duck.delete_in("deid_errors", "path; DROP TABLE deid_runs", ["p0"])


def test_duckdb_ledger_table_and_its_merge_key(duck: DuckDBWarehouse) -> None:
    row = {"project": "p", "batch_id": "b1", "source_uri": "/l/a.dcm", "status": "released"}
    duck.insert_rows("deid_ledger", [row], key_columns=DEFAULT_KEYS["deid_ledger"])
    duck.insert_rows("deid_ledger", [row | {"status": "superseded"}],
                     key_columns=DEFAULT_KEYS["deid_ledger"])
    assert duck.query("SELECT status FROM deid_ledger").to_pylist() == [{"status": "superseded"}]


def test_bigquery_delete_in_passes_the_values_as_one_array_parameter() -> None:
    client = FakeClient()
    wh = BigQueryWarehouse("proj", "ds", client=client)
    assert wh.delete_in("deid_metadata", "source_uri", ["a", "b"]) == 2
    sql, config = client._named("query")[-1]
    assert sql == ("DELETE FROM `proj.ds.deid_metadata` WHERE `source_uri` IN UNNEST(@values)")
    (param,) = config.query_parameters
    assert isinstance(param, bigquery.ArrayQueryParameter)
    assert param.array_type == "STRING" and param.values == ["a", "b"]
    assert wh.delete_in("deid_metadata", "source_uri", []) == 0
