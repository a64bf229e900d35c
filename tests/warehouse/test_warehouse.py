"""Warehouse backends: DuckDB for real; BigQuery's pure helpers, and boundary tests (a
recording client) for what the emulator cannot check. The BigQuery backend itself runs
against bqemulator in test_bigquery_emulator.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from dicom_deid.deid.mapping import MAPPING_SCHEMA
from dicom_deid.errors import WarehouseError
from dicom_deid.warehouse import bigquery_backend
from dicom_deid.warehouse.base import DEFAULT_KEYS, RESTRICTED_TABLES, TABLES, Typed
from dicom_deid.warehouse.bigquery_backend import (
    STAGE_TTL,
    BigQueryWarehouse,
    arrow_to_bigquery,
    bigquery_to_arrow,
    emulator_endpoint,
    qualify_tables,
    to_query_parameter,
)
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.factory import default_duckdb_path, open_warehouse
from dicom_deid.warehouse.restricted_file import attach_restricted, load_restricted_key


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
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    bq = open_warehouse("bigquery://proj/ds?location=EU", client=RecordingClient())
    assert isinstance(bq, BigQueryWarehouse) and bq.dataset_id == "proj.ds"
    assert bq.location == "EU" and bq.restricted_dataset_id == "proj.ds_restricted"
    assert bq.endpoint is None and not bq.emulator
    assert bq.table_id("dicom_metadata") == "proj.ds_restricted.dicom_metadata"
    assert bq.table_id("deid_metadata") == "proj.ds.deid_metadata"
    bq = open_warehouse("bigquery://proj/ds?restricted=phi&endpoint=localhost:9050",
                        client=RecordingClient())
    assert isinstance(bq, BigQueryWarehouse) and bq.restricted_dataset_id == "proj.phi"
    assert bq.endpoint == "http://localhost:9050" and bq.emulator
    for bad in ("bigquery://proj", "postgres://x", "bigquery://p/a/b",
                "bigquery://p/a?restricted=a", "bigquery://p/a?restriced=b",
                "bigquery://p/a?restricted=no-dash"):
        with pytest.raises(WarehouseError):
            open_warehouse(bad, client=RecordingClient())


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


# -- BigQuery: pure helpers ----------------------------------------------------------------


def test_bigquery_query_parameters_are_typed() -> None:
    typed = {name: to_query_parameter(name, value) for name, value in {
        "d": date(2024, 1, 2), "n": 3, "f": 1.5, "b": True, "s": "CT",
        "ts": datetime(2024, 1, 1, tzinfo=UTC), "null": Typed("DATE", None),
        "uids": Typed("ARRAY<STRING>", ["1.2", "1.3"]), "none": Typed("ARRAY<STRING>", [])}.items()}
    assert [(n, typed[n].type_, typed[n].value) for n in ("d", "n", "f", "b", "s", "null")] == [
        ("d", "DATE", date(2024, 1, 2)), ("n", "INT64", 3), ("f", "FLOAT64", 1.5),
        ("b", "BOOL", True), ("s", "STRING", "CT"), ("null", "DATE", None)]
    assert typed["ts"].type_ == "TIMESTAMP"
    assert isinstance(typed["uids"], bigquery.ArrayQueryParameter)
    assert (typed["uids"].array_type, typed["uids"].values) == ("STRING", ["1.2", "1.3"])
    assert typed["none"].values == []


def test_bigquery_emulator_endpoint_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    assert emulator_endpoint() is None
    assert emulator_endpoint("127.0.0.1:9050") == "http://127.0.0.1:9050"
    assert emulator_endpoint("https://bq.example:443/") == "https://bq.example:443"
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "localhost:9050")
    assert emulator_endpoint() == "http://localhost:9050"
    assert emulator_endpoint("http://other:1") == "http://other:1"


DATASETS = {"dicom_metadata": "p.r", "deid_runs": "p.a"}


@pytest.mark.parametrize(("sql", "expected"), [
    # Table references only: the comment, the literal and the column keep their names.
    ("SELECT dicom_metadata.x FROM dicom_metadata -- dicom_metadata\nWHERE y = 'deid_runs'",
     "SELECT dicom_metadata.x FROM `p.r.dicom_metadata` -- dicom_metadata\nWHERE y = 'deid_runs'"),
    ("SELECT 'çağla 🙂' AS x FROM `dicom_metadata` AS m JOIN deid_runs USING (run_id)",
     "SELECT 'çağla 🙂' AS x FROM `p.r.dicom_metadata` AS m JOIN `p.a.deid_runs` USING (run_id)"),
    # Qualified names, other tables and other spellings are left as written.
    ("SELECT * FROM ds.dicom_metadata, `p.x.deid_runs`, other, DICOM_METADATA",
     "SELECT * FROM ds.dicom_metadata, `p.x.deid_runs`, other, DICOM_METADATA"),
    # A CTE of the same name shadows the table where it is visible, and only there.
    ("WITH deid_runs AS (SELECT 1 AS run_id) SELECT * FROM deid_runs",
     "WITH deid_runs AS (SELECT 1 AS run_id) SELECT * FROM deid_runs"),
    ("WITH deid_runs AS (SELECT * FROM deid_runs) SELECT * FROM deid_runs",
     "WITH deid_runs AS (SELECT * FROM `p.a.deid_runs`) SELECT * FROM deid_runs"),
    ("WITH a AS (SELECT 1 AS x), Deid_Runs AS (SELECT * FROM a) "
     "SELECT * FROM (SELECT * FROM deid_runs)",
     "WITH a AS (SELECT 1 AS x), Deid_Runs AS (SELECT * FROM a) "
     "SELECT * FROM (SELECT * FROM deid_runs)"),
    ("SELECT * FROM deid_runs WHERE EXISTS ("
     "WITH deid_runs AS (SELECT 1 AS x) SELECT * FROM deid_runs)",
     "SELECT * FROM `p.a.deid_runs` WHERE EXISTS ("
     "WITH deid_runs AS (SELECT 1 AS x) SELECT * FROM deid_runs)"),
    ("WITH r AS (SELECT run_id FROM deid_runs) SELECT * FROM r JOIN dicom_metadata ON TRUE",
     "WITH r AS (SELECT run_id FROM `p.a.deid_runs`) SELECT * FROM r JOIN "
     "`p.r.dicom_metadata` ON TRUE"),
    # Statements and scripts too.
    ("DELETE FROM deid_runs WHERE TRUE; INSERT INTO dicom_metadata (a) SELECT a FROM deid_runs",
     "DELETE FROM `p.a.deid_runs` WHERE TRUE; INSERT INTO `p.r.dicom_metadata` (a) "
     "SELECT a FROM `p.a.deid_runs`"),
    ("SELECT FROM WHERE dicom_metadata (", "SELECT FROM WHERE dicom_metadata ("),  # no parse
])
def test_bigquery_qualifies_the_pipeline_tables_named_in_sql(sql: str, expected: str) -> None:
    assert qualify_tables(sql, DATASETS) == expected


def test_bigquery_types_of_parquet_columns_round_trip() -> None:
    person = pa.struct([("Alphabetic", pa.string()), ("Ideographic", pa.string())])
    schema = pa.schema([
        ("s", pa.string()), ("i", pa.int64()), ("f", pa.float64()), ("b", pa.bool_()),
        ("d", pa.date32()), ("t", pa.time64("us")), ("ts", pa.timestamp("us", tz="UTC")),
        ("dt", pa.timestamp("us")), ("raw", pa.binary()), ("n", pa.decimal128(38, 9)),
        ("seq", pa.list_(pa.string())), ("pn", person),
        ("items", pa.list_(pa.struct([("code", pa.string()), ("sub", pa.list_(person))]))),
    ])
    fields = [arrow_to_bigquery(f) for f in schema]
    assert [(f.field_type, f.mode) for f in fields] == [
        ("STRING", "NULLABLE"), ("INT64", "NULLABLE"), ("FLOAT64", "NULLABLE"),
        ("BOOL", "NULLABLE"), ("DATE", "NULLABLE"), ("TIME", "NULLABLE"),
        ("TIMESTAMP", "NULLABLE"), ("DATETIME", "NULLABLE"), ("BYTES", "NULLABLE"),
        ("NUMERIC", "NULLABLE"), ("STRING", "REPEATED"), ("RECORD", "NULLABLE"),
        ("RECORD", "REPEATED")]
    assert fields[-1].fields[1].mode == "REPEATED"
    assert [bigquery_to_arrow(f) for f in fields] == schema.types
    for bad in (pa.field("x", pa.null()), pa.field("x", pa.list_(pa.list_(pa.int64())))):
        with pytest.raises(WarehouseError, match="column x"):
            arrow_to_bigquery(bad)


# -- BigQuery boundary tests: what the emulator cannot check ------------------------------


class RecordingRows(list[tuple[Any, ...]]):
    def to_arrow(self, create_bqstorage_client: bool = True) -> pa.Table:
        assert create_bqstorage_client is False  # else the client calls Google's Storage API
        return pa.table({})


class RecordingJob:
    def __init__(self, client: RecordingClient, schema: list[bigquery.SchemaField] | None = None
                 ) -> None:
        self.client = client
        self.schema = schema
        self.num_dml_affected_rows = 0

    def result(self, **kwargs: Any) -> RecordingRows:
        self.client.waits.append(kwargs)
        return RecordingRows([(1, 0)])  # the staged-rows check: one row, no NULL key


class RecordingClient:
    """Records every call with its arguments; a dry run answers with ``columns``."""

    def __init__(self, columns: dict[str, list[bigquery.SchemaField]] | None = None) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.waits: list[dict[str, Any]] = []
        self.columns = columns or {}

    def named(self, name: str) -> list[tuple[Any, dict[str, Any]]]:
        return [(arg, kwargs) for called, arg, kwargs in self.calls if called == name]

    def _job(self, name: str, arg: Any, kwargs: dict[str, Any]) -> RecordingJob:
        self.calls.append((name, arg, kwargs))
        return RecordingJob(self)

    def query(self, sql: str, **kwargs: Any) -> RecordingJob:
        job = self._job("query", sql, kwargs)
        if kwargs["job_config"].dry_run:
            job.schema = self.columns.get(sql.split("`")[1], [])
        return job

    def load_table_from_file(self, handle: Any, destination: str, **kwargs: Any
                             ) -> RecordingJob:
        return self._job("load_table_from_file", destination, kwargs | {"magic": handle.read(4)})

    def load_table_from_uri(self, uris: list[str], destination: str, **kwargs: Any
                            ) -> RecordingJob:
        return self._job("load_table_from_uri", (uris, destination), kwargs)

    def create_dataset(self, dataset: bigquery.Dataset, **kwargs: Any) -> None:
        self.calls.append(("create_dataset", dataset.dataset_id, kwargs))

    def create_table(self, table: bigquery.Table, **kwargs: Any) -> None:
        self.calls.append(("create_table", table, kwargs))

    def delete_table(self, table_id: str, **kwargs: Any) -> None:
        self.calls.append(("delete_table", table_id, kwargs))

    def close(self) -> None:
        self.calls.append(("close", None, {}))


def declared(table: str) -> list[bigquery.SchemaField]:
    from dicom_deid.warehouse.ddl import schema_ddl
    from dicom_deid.warehouse.sql import ddl_columns

    return [bigquery.SchemaField(n, t) for n, t in ddl_columns(schema_ddl(table))]


def test_boundary_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gap: the emulator takes any credentials, only Google checks them. Without an
    endpoint the client gets Application Default Credentials (``credentials=None``) or the
    ones given (an Airflow connection's); an endpoint gets anonymous ones unless given."""
    made: list[dict[str, Any]] = []

    def client(**kwargs: Any) -> RecordingClient:
        made.append(kwargs)
        return RecordingClient()

    monkeypatch.setattr(bigquery_backend.bigquery, "Client", client)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    given = AnonymousCredentials()
    BigQueryWarehouse("proj", "ds", location="EU")
    BigQueryWarehouse("proj", "ds", credentials=given)
    BigQueryWarehouse("proj", "ds", endpoint="localhost:1")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "localhost:2")
    BigQueryWarehouse("proj", "ds", credentials=given)
    assert made[0] == {"project": "proj", "location": "EU", "credentials": None}
    assert made[1] == {"project": "proj", "location": None, "credentials": given}
    assert isinstance(made[2]["credentials"], AnonymousCredentials)
    assert made[2]["client_options"].api_endpoint == "http://localhost:1"
    assert made[3]["credentials"] is given
    assert made[3]["client_options"].api_endpoint == "http://localhost:2"


class LocalBlob:
    """A ``gs://`` object served from a local file (what the footer reads need)."""

    def __init__(self, path: Path, name: str = "") -> None:
        self.path = path
        self.name = name

    def bucket(self, name: str) -> LocalBlob:
        return self

    def blob(self, name: str) -> LocalBlob:
        return LocalBlob(self.path, name)

    def open(self, mode: str, chunk_size: int) -> Any:
        return open(self.path, mode)


def test_boundary_every_call_and_wait_is_bounded(tmp_path: Path) -> None:
    """Gap: the emulator answers what it does not support with an immediate 500 and has no
    passing faults; against BigQuery the client's default retries a 5xx for 600 s and waits
    for a job forever. Every call and every wait here carries a finite retry and timeout."""
    client = RecordingClient({"proj.ds_restricted.dicom_metadata": declared("dicom_metadata")})
    night = write(tmp_path / "b.parquet", [meta("f/2")])
    wh = BigQueryWarehouse("proj", "ds", client=client, storage_client=LocalBlob(night))
    wh.ensure_schema()
    wh.load_parquet("dicom_metadata", [write(tmp_path / "a.parquet", [meta("f/1")]),
                                       "gs://bucket/night/b.parquet"], mode="merge")
    (uris, _), _ = client.named("load_table_from_uri")[0]
    assert uris == ["gs://bucket/night/b.parquet"]
    wh.delete_in("deid_errors", "path", ["a"])
    for name in ("query", "create_dataset", "create_table", "delete_table",
                 "load_table_from_uri", "load_table_from_file"):
        assert client.named(name), name
        for _, kwargs in client.named(name):
            assert 0 < kwargs["timeout"] <= 3600, name
            if name != "load_table_from_file":  # its upload has its own bounded retries
                assert 0 < kwargs["retry"].timeout <= 120, name
    assert client.waits
    for kwargs in client.waits:
        assert 0 < kwargs["timeout"] <= 3600 and 0 < kwargs["retry"].timeout <= 120


def test_boundary_stage_tables_expire(tmp_path: Path) -> None:
    """Gap: the emulator keeps no table expiration. On BigQuery a staging table that a dead
    load left behind drops itself after STAGE_TTL."""
    client = RecordingClient({"proj.ds_restricted.dicom_metadata": declared("dicom_metadata")})
    now = datetime.now(UTC)
    before = now.replace(microsecond=now.microsecond // 1000 * 1000)  # expires keeps ms
    BigQueryWarehouse("proj", "ds", client=client).load_parquet(
        "dicom_metadata", write(tmp_path / "a.parquet", [meta("f/1")]), mode="merge")
    (stage, _), = client.named("create_table")
    assert stage.table_id.startswith("_stage_dicom_metadata_")
    assert stage.dataset_id == "ds_restricted"  # beside its table
    assert before + STAGE_TTL <= stage.expires <= datetime.now(UTC) + STAGE_TTL
    assert [table_id for table_id, _ in client.named("delete_table")] == [
        f"proj.ds_restricted.{stage.table_id}"]


@pytest.mark.parametrize("endpoint", [None, "localhost:9050"])
def test_boundary_new_columns_in_one_alter_statement(
    tmp_path: Path, endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gap: the emulator takes one ALTER command per statement, so it gets a statement per
    column. BigQuery allows 5 metadata updates per table per 10 s: a night's new keywords
    must reach it as one statement."""
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    client = RecordingClient({"proj.ds_restricted.dicom_metadata": declared("dicom_metadata")})
    wh = BigQueryWarehouse("proj", "ds", client=client, endpoint=endpoint)
    wh.load_parquet("dicom_metadata", write(tmp_path / "a.parquet", [meta(
        "f/1", Modality="CT", EchoTime=1.5)]), mode="merge")
    alters = [sql for sql, _ in client.named("query") if "ALTER TABLE" in sql]
    adds = ["ADD COLUMN IF NOT EXISTS `ingest_date` DATE",
            "ADD COLUMN IF NOT EXISTS `Modality` STRING",
            "ADD COLUMN IF NOT EXISTS `EchoTime` FLOAT64"]
    target = "ALTER TABLE `proj.ds_restricted.dicom_metadata`"
    if endpoint is None:
        assert alters == [f"{target} " + ", ".join(adds)]
    else:
        assert alters == ["".join(f"{target} {add};\n" for add in adds)]


def test_boundary_ddl_as_written_in_its_dataset() -> None:
    """Gap: the emulator accepts CLUSTER BY and drops it (its tables report no
    clustering): the DDL must reach BigQuery as written, run in the table's own dataset."""
    from dicom_deid.warehouse.ddl import schema_ddl

    client = RecordingClient({
        f"proj.{'ds_restricted' if t in RESTRICTED_TABLES else 'ds'}.{t}": declared(t)
        for t in TABLES})
    BigQueryWarehouse("proj", "ds", client=client).ensure_schema()
    assert [name for name, _ in client.named("create_dataset")] == ["ds", "ds_restricted"]
    ddl = [(sql, kwargs["job_config"]) for sql, kwargs in client.named("query")
           if not kwargs["job_config"].dry_run]
    assert [sql for sql, _ in ddl] == [schema_ddl(t) for t in TABLES]  # no ALTER: all there
    for (_, config), table in zip(ddl, TABLES, strict=True):
        expected = "ds_restricted" if table in RESTRICTED_TABLES else "ds"
        assert config.default_dataset.dataset_id == expected
    assert "CLUSTER BY run_id" in schema_ddl("deid_mapping")


# -- DuckDB: the restricted tables in a file of their own ------------------------------


def _tables(path: Path) -> set[str]:
    """The tables of a DuckDB file; a restricted one is opened as the warehouse does."""
    import duckdb

    if path.stem.endswith("_restricted"):
        with duckdb.connect(":memory:") as con:
            attach_restricted(con, str(path), "r", load_restricted_key(), read_only=True)
            return {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_catalog = 'r'").fetchall()}
    with duckdb.connect(str(path), read_only=True) as con:
        return {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}


def test_duckdb_keeps_restricted_tables_out_of_the_analysts_file(tmp_path: Path) -> None:
    main = tmp_path / "wh" / "w.duckdb"
    with open_warehouse(f"duckdb://{main}") as wh:
        wh.ensure_schema()
        secret = "Doe^Jane-7f3a9c"
        wh.insert_rows("deid_errors", [{"run_id": "r", "path": f"/landing/{secret}/1.dcm",
                                        "stage": "read", "reason": "zero-byte file"}])
        wh.insert_rows("deid_runs", [{"run_id": "r", "status": "success"}])
        # Unqualified SQL reaches both files, joins included.
        joined = wh.run_cohort("SELECT e.path FROM deid_errors e JOIN deid_runs r "
                               "USING (run_id)").column(0).to_pylist()
        assert joined == [f"/landing/{secret}/1.dcm"]
    restricted = main.with_name("w_restricted.duckdb")
    assert _tables(main) == set(TABLES) - RESTRICTED_TABLES == {"deid_metadata", "deid_runs"}
    assert _tables(restricted) == set(RESTRICTED_TABLES)
    assert secret.encode() not in main.read_bytes()  # the analysts' file: no landing path
    # Read only, as an analyst's tool would open it: the restricted tables come along only
    # when their file is there.
    with DuckDBWarehouse(main, read_only=True) as ro:
        assert ro.query("SELECT count(*) AS n FROM deid_errors").column(0)[0].as_py() == 1


def test_duckdb_splits_a_single_file_of_an_earlier_version(tmp_path: Path) -> None:
    import duckdb

    main = tmp_path / "old.duckdb"
    with duckdb.connect(str(main)) as con:  # the earlier layout: everything in one file
        con.execute("CREATE TABLE deid_mapping (run_id VARCHAR, sop_uid VARCHAR)")
        con.execute("INSERT INTO deid_mapping VALUES ('r1', '2.25.1'), ('r1', '2.25.2')")
        con.execute("CREATE TABLE deid_runs (run_id VARCHAR)")
        con.execute("INSERT INTO deid_runs VALUES ('r1')")
    with open_warehouse(f"duckdb://{main}") as wh:
        wh.ensure_schema()
        rows = wh.query("SELECT run_id, sop_uid FROM deid_mapping ORDER BY sop_uid")
        assert rows.to_pylist() == [{"run_id": "r1", "sop_uid": "2.25.1"},
                                    {"run_id": "r1", "sop_uid": "2.25.2"}]
        assert wh.query("SELECT count(*) FROM deid_runs").column(0)[0].as_py() == 1
    assert "deid_mapping" not in _tables(main)
    assert "deid_mapping" in _tables(main.with_name("old_restricted.duckdb"))


def test_duckdb_long_list_parameters_give_what_bound_ones_give(tmp_path: Path) -> None:
    # A night's lookups pass thousands of landing paths; past a few hundred they are read
    # from a registered table, not bound (binding costs 0.1 ms an element). The query
    # must not notice: same rows, the same list in the same order, NULLs kept, quoted
    # text and longer parameter names untouched, nothing left registered.
    with DuckDBWarehouse(tmp_path / "w.duckdb") as wh:
        wh.query("CREATE TABLE t (u VARCHAR)")
        wh.query("INSERT INTO t SELECT 'f' || range::VARCHAR FROM range(3000)")
        wanted = [f"f{i}" for i in range(2999, -1, -3)] + [None]
        sql = ("SELECT count(*) AS n, $u AS l, $u2 AS l2, '$u' AS literal FROM t "
               "WHERE list_contains($u, u)")
        for values in (wanted, [*wanted[:100], None]):
            got = wh.run_cohort(
                "SELECT COUNT(*) AS n, ANY_VALUE(@u2) AS l2, '@u' AS literal FROM t "
                "WHERE u IN UNNEST(@u)", {"u": Typed("ARRAY<STRING>", values),
                                          "u2": ["x"]}).to_pylist()
            assert got == [{"n": len(values) - 1, "l2": ["x"], "literal": "@u"}]
            raw = wh.query(sql, {"u": values, "u2": ["y"]}).to_pylist()
            assert raw == [{"n": len(values) - 1, "l": values, "l2": ["y"], "literal": "$u"}]
        left = wh.query("SELECT count(*) AS n FROM duckdb_views() "
                        "WHERE view_name LIKE '__dicom_deid_param%'").to_pylist()
        assert left == [{"n": 0}]
        # The long one is the one read from a table; the short one stays bound.
        views: list[str] = []
        rewritten, bound = wh._long_lists_as_tables(sql, {"u": wanted, "u2": ["y"]}, views)
        assert len(views) == 1 and views[0].startswith("__dicom_deid_param_u_")
        assert bound == {"u2": ["y"]}
        assert "$u2" in rewritten and "'$u'" in rewritten and "$u " not in rewritten
        for view in views:
            wh.connection.unregister(view)
