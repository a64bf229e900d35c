"""The ledger's selection: what a night still has to release, decided in the warehouse."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from dicom_deid.cohort.cohorts import resolve_params, resolve_sql
from dicom_deid.cohort.filter_file import FilterEntry, FilterSet
from dicom_deid.pipeline import ledger
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _warehouse(tmp_path: Path, rows: list[tuple[str, str, str, datetime]]) -> DuckDBWarehouse:
    """dicom_metadata rows (uri, study, content hash, mtime): two exports of one file
    are two rows."""
    wh = DuckDBWarehouse(":memory:")
    wh.ensure_schema()
    table = pa.table({
        "source_uri": [r[0] for r in rows], "StudyInstanceUID": [r[1] for r in rows],
        "SeriesInstanceUID": ["9"] * len(rows), "SOPInstanceUID": [r[0] for r in rows],
        "content_sha256": [r[2] for r in rows], "size_bytes": [1] * len(rows),
        "mtime": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
        "ingest_run_id": ["r"] * len(rows), "ingest_date": [date(2026, 1, 1)] * len(rows)})
    pq.write_table(table, tmp_path / "m.parquet")
    wh.load_parquet("dicom_metadata", str(tmp_path / "m.parquet"), mode="append")
    return wh


def _row(uri: str, sha: str, batch: str, status: str = ledger.RELEASED, key: str = "k",
         config: str = "c") -> ledger.LedgerRow:
    return ledger.LedgerRow("p", uri, sha, "s", "se", uri, "pid", f"out/{uri}", "o", config,
                            key, batch, T0, status)


def test_a_night_selects_new_changed_and_policy_changes_once_each(tmp_path: Path) -> None:
    later = T0.replace(day=2)
    wh = _warehouse(tmp_path, [
        ("a", "1", "h1", T0), ("a", "1", "h2", later),  # exported twice: changed since
        ("b", "1", "hb", T0),  # released, unchanged
        ("c", "2", "hc", T0),  # new
        ("d", "2", "hd", T0),  # withdrawn: never again under this config and key
        ("e", "3", "he", T0),  # outside the filter
    ])
    ledger.write_rows(wh, [_row("a", "h1", "b1"), _row("b", "hb", "b1"),
                           _row("d", "hd", "b1", ledger.WITHDRAWN),
                           _row("b", "hb", "b0", ledger.RELEASED, key="old")])  # a stray
    wanted = FilterSet.of([FilterEntry("1", None, None), FilterEntry("2", None, None)])
    table, total = ledger.pending_instances(wh, wanted, project="p", config_sha256="c",
                                            key_id="k")
    got = {(r["source_uri"], r["content_sha256"], r["release_reason"])
           for r in table.to_pylist()}
    assert got == {("a", "h2", "changed"), ("c", "hc", "new")} and total == 4
    # Under another key, everything released before is released again, once per file.
    table, _ = ledger.pending_instances(wh, wanted, project="p", config_sha256="c",
                                        key_id="k2")
    assert sorted((r["source_uri"], r["release_reason"]) for r in table.to_pylist()) == [
        ("a", "policy"), ("b", "policy"), ("c", "new"), ("d", "new")]
    # Another project has released nothing.
    table, _ = ledger.pending_instances(wh, wanted, project="q", config_sha256="c",
                                        key_id="k")
    assert table.num_rows == 4
    empty, none = ledger.pending_instances(wh, FilterSet.of([]), project="p",
                                           config_sha256="c", key_id="k")
    assert (empty.num_rows, none) == (0, 0) and "size_bytes" in empty.column_names


def test_the_selection_is_bigquery_sql() -> None:
    """Written for BigQuery (DuckDB runs it transpiled): it must parse as BigQuery."""
    wanted = FilterSet.of([FilterEntry("1", None, None)])
    resolve = resolve_sql(wanted, columns=("size_bytes", "content_sha256", "mtime"),
                          ordered=False)
    sql = ledger._PENDING.format(resolve=resolve)
    parsed = sqlglot.parse_one(sql, read="bigquery")
    assert parsed.find(sqlglot.exp.Qualify) is not None
    assert set(resolve_params(wanted)) == {"studies"}


def test_lookups_of_many_files_go_in_chunks_with_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = _warehouse(tmp_path, [])
    ledger.write_rows(wh, [_row(f"u{i}", "h", "b1") for i in range(7)])
    uris = [f"u{i}" for i in range(7)] + ["other"]
    whole = ledger.current_rows(wh, "p", source_uris=uris, output_paths=["out/u3"])
    monkeypatch.setattr(ledger, "CHUNK", 2)
    assert ledger.current_rows(wh, "p", source_uris=uris, output_paths=["out/u3"]) == whole
    assert [r.source_uri for r in whole] == [f"u{i}" for i in range(7)]
