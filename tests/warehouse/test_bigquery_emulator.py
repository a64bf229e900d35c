"""The BigQuery warehouse for real: every test runs against bqemulator (and fake-gcs-server
for ``gs://`` loads), started by the ``gcloud`` fixture (tests/emulators.py). Each test
has datasets (and buckets) of its own: the servers are shared within a session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from dicom_deid.cohort.cohorts import (
    cohort_to_filter,
    load_cohort,
    resolve_filter,
    shipped_cohort_dir,
)
from dicom_deid.deid.mapping import MAPPING_SCHEMA
from dicom_deid.errors import WarehouseError
from dicom_deid.metadata.export import export_metadata
from dicom_deid.synth import generate
from dicom_deid.warehouse.base import DEFAULT_KEYS, RESTRICTED_TABLES, TABLES
from dicom_deid.warehouse.bigquery_backend import BigQueryWarehouse
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.factory import open_warehouse
from emulators import Cloud

DAY = date(2024, 1, 1)


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def meta(uri: str, sha: str = "h", **extra: Any) -> dict[str, Any]:
    return {"source_uri": uri, "content_sha256": sha, "StudyInstanceUID": "1.2",
            "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": uri.rsplit("/", 1)[-1],
            "ingest_date": DAY, **extra}


def open_bq(cloud: Cloud, dataset: str | None = None) -> BigQueryWarehouse:
    wh = open_warehouse(f"bigquery://{cloud.project}/{dataset or unique()}")
    assert isinstance(wh, BigQueryWarehouse)
    return wh


@pytest.fixture
def bq(gcloud_env: Cloud) -> Iterator[BigQueryWarehouse]:
    """A warehouse on two fresh datasets, found through ``$BIGQUERY_EMULATOR_HOST``."""
    wh = open_bq(gcloud_env)
    wh.ensure_schema()
    yield wh
    wh.close()


def count(wh: BigQueryWarehouse, table: str) -> int:
    return int(wh.query(f"SELECT COUNT(*) AS n FROM {table}").column("n")[0].as_py())


def uris(wh: BigQueryWarehouse, table: str = "dicom_metadata") -> list[tuple[str, str]]:
    got = wh.query(f"SELECT source_uri, content_sha256 FROM {table} ORDER BY 1, 2").to_pylist()
    return [(r["source_uri"], r["content_sha256"]) for r in got]


def table_names(wh: BigQueryWarehouse, dataset_id: str) -> set[str]:
    return {t.table_id for t in wh.client.list_tables(dataset_id)}


# -- client and schema ------------------------------------------------------------------


def test_endpoint_from_the_url_or_the_environment(
    gcloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    dataset = unique()
    with open_warehouse(f"bigquery://{gcloud.project}/{dataset}?endpoint={gcloud.bq_endpoint}"
                        f"&restricted={dataset}_phi") as wh:
        assert isinstance(wh, BigQueryWarehouse) and wh.endpoint == gcloud.bq_endpoint
        wh.ensure_schema()
        assert table_names(wh, f"{gcloud.project}.{dataset}_phi") == RESTRICTED_TABLES
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", gcloud.bq_endpoint.removeprefix("http://"))
    with open_bq(gcloud, dataset) as wh:  # host:port, as the variable is often written
        assert wh.endpoint == gcloud.bq_endpoint
        assert wh.restricted_dataset == f"{dataset}_restricted"
        assert count(wh, "deid_runs") == 0


def test_schema_in_two_datasets_created_idempotently(bq: BigQueryWarehouse) -> None:
    bq.ensure_schema()
    assert table_names(bq, bq.dataset_id) == set(TABLES) - RESTRICTED_TABLES
    assert table_names(bq, bq.restricted_dataset_id) == RESTRICTED_TABLES
    assert bq.query("SELECT * FROM deid_mapping LIMIT 0").column_names == MAPPING_SCHEMA.names
    runs = bq.query("SELECT * FROM deid_runs LIMIT 0").schema
    assert runs.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert runs.field("processed").type == pa.int64()


def test_ensure_schema_adds_the_declared_columns_an_older_table_lacks(gcloud_env: Cloud) -> None:
    wh = open_bq(gcloud_env)
    wh.client.create_dataset(wh.dataset_id)
    wh.query("CREATE TABLE deid_runs (run_id STRING, started_at TIMESTAMP, status STRING)")
    wh.insert_rows("deid_runs", [{"run_id": "r0", "status": "success"}])
    wh.ensure_schema()
    got = wh.query("SELECT run_id, status, key_id, engine, project, reviewer FROM deid_runs")
    assert got.to_pylist() == [{"run_id": "r0", "status": "success", "key_id": None,
                                "engine": None, "project": None, "reviewer": None}]


# -- loads ------------------------------------------------------------------------------


def gcs_uploader(cloud: Cloud) -> tuple[storage.Client, storage.Bucket]:
    client = storage.Client(project=cloud.project, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": cloud.gcs_endpoint})
    return client, client.create_bucket(unique("b"))


@pytest.mark.parametrize("where", ["local", "gs"])
def test_load_modes_rerun_without_duplicates(
    bq: BigQueryWarehouse, gcloud_env: Cloud, tmp_path: Path, where: str
) -> None:
    files = {
        "night1": write(tmp_path / "night1.parquet", [meta("f/1"), meta("f/2")]),
        "changed": write(tmp_path / "changed.parquet", [meta("f/1", sha="h2")]),
        "day": write(tmp_path / "day.parquet", [meta("f/3")]),
    }
    names: dict[str, str] = {k: str(v) for k, v in files.items()}
    if where == "gs":  # plain folder names: the emulator reads gs:// from fake-gcs's folder
        client, bucket = gcs_uploader(gcloud_env)
        for key, path in files.items():
            bucket.blob(f"export/{key}/part-0.parquet").upload_from_filename(str(path))
        names = {k: f"gs://{bucket.name}/export/{k}/part-0.parquet" for k in files}
        names["night1"] = f"gs://{bucket.name}/export/night1/*.parquet"  # a wildcard
        client.close()

    assert bq.load_parquet("dicom_metadata", names["night1"], mode="merge") == 2
    assert bq.load_parquet("dicom_metadata", names["night1"], mode="merge") == 2
    assert bq.load_parquet("dicom_metadata", [names["night1"]] * 2, mode="merge") == 2
    assert uris(bq) == [("f/1", "h"), ("f/2", "h")]
    # A changed file (new hash) is a new version; the old row stays as history.
    assert bq.load_parquet("dicom_metadata", names["changed"], mode="merge") == 1
    assert uris(bq) == [("f/1", "h"), ("f/1", "h2"), ("f/2", "h")]
    # replace_partition: the day's rows are replaced by the load, every time.
    for _ in range(2):
        assert bq.load_parquet("dicom_metadata", names["day"], mode="replace_partition") == 1
        assert uris(bq) == [("f/3", "h")]
    assert bq.load_parquet("dicom_metadata", names["day"]) == 1  # append: no dedupe, by design
    assert uris(bq) == [("f/3", "h"), ("f/3", "h")]
    assert not [t for t in table_names(bq, bq.restricted_dataset_id) if t.startswith("_stage")]


def test_new_keywords_become_columns(bq: BigQueryWarehouse, tmp_path: Path) -> None:
    """Files of different column sets load together (by name) and widen the table."""
    a = write(tmp_path / "a.parquet", [meta("f/1", Modality="CT")])
    bq.load_parquet("dicom_metadata", a, mode="merge")
    names = bq.query("SELECT * FROM dicom_metadata LIMIT 0").column_names
    assert "Modality" in names and "EchoTime" not in names
    person = pa.struct([("Alphabetic", pa.string())])
    b = write(tmp_path / "b.parquet", [meta("f/2", Modality="MR", EchoTime=90.0,
                                            ScanningSequence=["SE", "IR"],
                                            PerformingPhysicianName=[{"Alphabetic": "X^Y"}])],
              pa.schema([("source_uri", pa.string()), ("content_sha256", pa.string()),
                         ("StudyInstanceUID", pa.string()), ("SeriesInstanceUID", pa.string()),
                         ("SOPInstanceUID", pa.string()), ("ingest_date", pa.date32()),
                         ("Modality", pa.string()), ("EchoTime", pa.float64()),
                         ("ScanningSequence", pa.list_(pa.string())),
                         ("PerformingPhysicianName", pa.list_(person))]))
    assert bq.load_parquet("dicom_metadata", [a, b], mode="merge") == 2
    got = bq.query("SELECT SOPInstanceUID, Modality, EchoTime, ScanningSequence, "
                   "PerformingPhysicianName FROM dicom_metadata ORDER BY 1")
    assert got.schema.field("EchoTime").type == pa.float64()
    assert got.schema.field("ScanningSequence").type == pa.list_(pa.string())
    rows = got.to_pylist()
    assert [(r["SOPInstanceUID"], r["Modality"], r["EchoTime"]) for r in rows] == [
        ("1", "CT", None), ("2", "MR", 90.0)]
    assert rows[1]["ScanningSequence"] == ["SE", "IR"]
    assert rows[1]["PerformingPhysicianName"] == [{"Alphabetic": "X^Y"}]


def test_merge_replaces_whole_rows(bq: BigQueryWarehouse, tmp_path: Path) -> None:
    """A new version of a row without a column leaves it NULL, not last night's value."""
    bq.load_parquet("dicom_metadata", write(tmp_path / "a.parquet",
                                            [meta("f/1", PatientName="OLD^NAME")]), mode="merge")
    bq.load_parquet("dicom_metadata", write(tmp_path / "b.parquet", [meta("f/1")]), mode="merge")
    assert bq.query("SELECT source_uri, PatientName FROM dicom_metadata").to_pylist() == [
        {"source_uri": "f/1", "PatientName": None}]


def test_refused_loads_change_nothing_and_leave_no_stage(
    bq: BigQueryWarehouse, tmp_path: Path
) -> None:
    row = {f.name: 0 if pa.types.is_integer(f.type) else "x" for f in MAPPING_SCHEMA} | {
        "run_id": "r1"}
    good = write(tmp_path / "m.parquet", [row, row | {"source_path": "y"}], MAPPING_SCHEMA)
    assert bq.load_parquet("deid_mapping", good, mode="merge") == 2
    nokey = write(tmp_path / "nokey.parquet", [row | {"source_path": None}], MAPPING_SCHEMA)
    with pytest.raises(WarehouseError, match="1 rows loaded into deid_mapping have NULL key"):
        bq.load_parquet("deid_mapping", nokey, mode="merge")
    with pytest.raises(WarehouseError, match="key columns"):
        bq.load_parquet("deid_mapping", good, mode="merge", key_columns=["nope"])
    extra = write(tmp_path / "extra.parquet", [{"run_id": "r1", "surprise": "x"}])
    with pytest.raises(WarehouseError, match=r"\['surprise'\] are not in deid_errors"):
        bq.load_parquet("deid_errors", extra)
    with pytest.raises(WarehouseError, match="no Parquet file matches"):
        bq.load_parquet("deid_errors", str(tmp_path / "none*.parquet"))
    assert count(bq, "deid_mapping") == 2 and count(bq, "deid_errors") == 0
    assert not [t for t in table_names(bq, bq.restricted_dataset_id) if t.startswith("_stage")]


# -- rows and deletes -------------------------------------------------------------------


def test_insert_rows_with_and_without_keys(bq: BigQueryWarehouse) -> None:
    start = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)
    run = {"run_id": "r1", "started_at": start, "user": "ana", "status": "running"}
    assert bq.insert_rows("deid_runs", [run], key_columns=["run_id"]) == 1
    done = run | {"status": "success", "processed": 10, "failed": 0, "skipped": 1}
    assert bq.insert_rows("deid_runs", [done], key_columns=["run_id"]) == 1
    assert bq.query("SELECT run_id, started_at, status, processed, reviewer FROM deid_runs"
                    ).to_pylist() == [{"run_id": "r1", "started_at": start, "status": "success",
                                       "processed": 10, "reviewer": None}]
    error = {"run_id": "r1", "path": "a", "stage": "read", "kind": "InvalidDicom",
             "reason": "no preamble"}
    assert bq.insert_rows("deid_errors", [error]) == 1
    assert bq.insert_rows("deid_errors", [error]) == 1  # without keys: appended
    assert count(bq, "deid_errors") == 2
    ledger = {"project": "p", "batch_id": "b1", "source_uri": "/l/a.dcm", "status": "released",
              "released_at": start}
    for status in ("released", "superseded"):
        bq.insert_rows("deid_ledger", [ledger | {"status": status}],
                       key_columns=DEFAULT_KEYS["deid_ledger"])
    assert bq.query("SELECT status FROM deid_ledger").to_pylist() == [{"status": "superseded"}]
    assert bq.insert_rows("deid_errors", []) == 0


def test_delete_partition_and_delete_in(bq: BigQueryWarehouse) -> None:
    rows = [{"run_id": f"r{i % 2}", "path": f"p{i}", "stage": "read"} for i in range(5)]
    bq.insert_rows("deid_errors", rows)
    assert bq.delete_in("deid_errors", "path", ["p1", "p3", "nowhere"]) == 2
    assert bq.query("SELECT path FROM deid_errors ORDER BY path").column("path").to_pylist() == [
        "p0", "p2", "p4"]
    assert bq.delete_in("deid_errors", "path", []) == 0
    bq.delete_partition("deid_errors", {"run_id": "r0"})
    assert count(bq, "deid_errors") == 0
    with pytest.raises(WarehouseError):
        bq.delete_in("deid_errors", "path; DROP TABLE deid_runs", ["p0"])


# -- where tables live, what queries see ----------------------------------------------


def test_restricted_tables_live_apart_and_queries_find_them(
    bq: BigQueryWarehouse, tmp_path: Path
) -> None:
    bq.load_parquet("dicom_metadata", write(tmp_path / "a.parquet", [meta("f/1"), meta("f/2")]))
    bq.insert_rows("deid_runs", [{"run_id": "r1"}])
    client = bq.client
    client.get_table(f"{bq.restricted_dataset_id}.dicom_metadata")
    direct = client.query(f"SELECT COUNT(*) FROM `{bq.restricted_dataset_id}.dicom_metadata`")
    assert list(next(iter(direct.result()))) == [2]
    with pytest.raises(NotFound):
        client.get_table(f"{bq.dataset_id}.dicom_metadata")
    client.get_table(f"{bq.dataset_id}.deid_runs")
    with pytest.raises(NotFound):
        client.get_table(f"{bq.restricted_dataset_id}.deid_runs")
    assert count(bq, "dicom_metadata") == 2  # unqualified: found in the restricted dataset
    joined = bq.query("SELECT m.source_uri, r.run_id FROM dicom_metadata AS m "
                      "CROSS JOIN deid_runs AS r ORDER BY 1").to_pylist()
    assert joined == [{"source_uri": "f/1", "run_id": "r1"}, {"source_uri": "f/2", "run_id": "r1"}]
    # A CTE named like a table is the CTE; a qualified name is used as written.
    shadow = "WITH deid_runs AS (SELECT 'cte' AS run_id) SELECT run_id FROM deid_runs"
    assert bq.query(shadow).to_pylist() == [{"run_id": "cte"}]
    written = f"SELECT COUNT(*) AS n FROM `{bq.restricted_dataset_id}.dicom_metadata`"
    assert bq.query(written).to_pylist() == [{"n": 2}]
    assert bq.run_cohort("SELECT COUNT(*) AS n FROM dicom_metadata WHERE source_uri = @u",
                         {"u": "f/2", "unused": 1}).to_pylist() == [{"n": 1}]
    with pytest.raises(WarehouseError, match="missing query parameters: u"):
        bq.run_cohort("SELECT source_uri FROM dicom_metadata WHERE source_uri = @u", {})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The metadata Parquet of a small synthetic corpus (CT, MR, US, CR, SR...)."""
    root = tmp_path_factory.mktemp("corpus")
    generate(root, patients=8, seed=5, small=True, instances_per_series=1, bad_inputs=False,
             duplicates=False)
    files = sorted(p for p in (root / "dicom").rglob("*") if p.is_file())
    summary = export_metadata(files, root / "export", run_id="night1", ingest_date=DAY,
                              workers=1)
    assert summary.exported == len(files) and not summary.errors
    return [str(p) for p in summary.parts]


def lowered(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with lower-cased column names, sorted (the emulator lower-cases some names)."""
    rows = [{k.lower(): v for k, v in r.items()} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: sorted((k, str(v)) for k, v in r.items()))


@pytest.fixture(scope="module")
def both(gcloud: Cloud, exported: list[str]) -> Iterator[tuple[BigQueryWarehouse, DuckDBWarehouse]]:
    """The corpus's metadata loaded into BigQuery (the emulator) and into DuckDB."""
    bq = open_warehouse(f"bigquery://{gcloud.project}/{unique()}?endpoint={gcloud.bq_endpoint}")
    duck = DuckDBWarehouse(":memory:")
    assert isinstance(bq, BigQueryWarehouse)
    loaded = []
    for wh in (bq, duck):
        wh.ensure_schema()
        loaded.append(wh.load_parquet("dicom_metadata", exported, mode="merge"))
    assert loaded[0] == loaded[1] == count(bq, "dicom_metadata") > 0
    yield bq, duck
    bq.close()
    duck.close()


@pytest.mark.parametrize("name", sorted(p.stem for p in shipped_cohort_dir().glob("*.sql")))
def test_shipped_cohorts_give_the_rows_duckdb_gives(
    both: tuple[BigQueryWarehouse, DuckDBWarehouse], name: str
) -> None:
    """Each shipped cohort, as written with its declared parameters, selects the same rows
    on BigQuery as on DuckDB, and its filter resolves to the same instances."""
    bq, duck = both
    cohort = load_cohort(name)
    args = {p.name: "1900-01-01" if p.name.startswith("start") else "2100-12-31"
            for p in cohort.params if not p.has_default}
    on_bq, on_duck = cohort.run(bq, args), cohort.run(duck, args)
    assert on_duck.num_rows, f"the corpus has no row for {name}: pick another seed"
    assert lowered(on_bq) == lowered(on_duck)
    assert on_bq.column_names == on_duck.column_names  # spelled as written, on both
    selected = cohort_to_filter(on_bq)
    assert selected.to_text() == cohort_to_filter(on_duck).to_text()
    assert resolve_filter(bq, selected).uris == resolve_filter(duck, selected).uris
