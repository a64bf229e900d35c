"""The release ledger: what each project has published, and what a night must add.

``deid_ledger`` (restricted) holds one row per release of one instance: its landing file
and content hash, the pseudonymous identifiers and tree path of the released file, the
config fingerprint and key id it was made under, the batch, and a status -- ``released``
(in the project's tree now), ``superseded`` (a later release replaced it) or
``withdrawn``. The rows with status ``released`` are exactly the project's tree.

The landing path stays in clear (the planner below joins on it) and the restricted
``dicom_metadata`` ties it to the patient, so the pseudonymous side of a row (UIDs,
patient ID, tree path, file hash) is stored encrypted under the project's vault key
whenever one is given, as the pipeline always does (:func:`write_rows`); rows are found
by a pseudonymous value through its blind index (:func:`rows_where`, :func:`current_rows`)
and read back opened with the key. Rows kept in clear (an older ledger, or engine-level
use without a vault key) read as they are, and ``dicom-deid vault rotate`` encrypts them.

A night selects, in the warehouse (on BigQuery the planner holds only the answer; the
embedded DuckDB works in the planner's process, where the query's hash tables grow by
about 0.8 MB per 1,000 cohort instances and ledger rows: BENCHMARKS.md, bench_nightly),
the standing cohort's instances that have no ledger row with the same content
hash under the same config and key: new files, changed files, and -- after a change of
config or key -- everything, which the run report says. Withdrawn instances have such a
row and are never selected again; new files of a withdrawn patient or study are
de-identified and then held back by :func:`withdrawn_outputs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from dicom_deid.cohort.cohorts import UID_COLUMNS, URI_COLUMN, resolve_params, resolve_sql
from dicom_deid.cohort.filter_file import FilterSet
from dicom_deid.vault.columns import (
    LEDGER_INDEXES,
    blind_index,
    is_encrypted,
    ledger_indexes,
    open_ledger,
    seal_ledger,
)
from dicom_deid.vault.keys import vault_key_id
from dicom_deid.warehouse.base import DEFAULT_KEYS, Typed, Warehouse

__all__ = ["RELEASED", "SUPERSEDED", "WITHDRAWN", "LedgerRow", "current_rows",
           "pending_instances", "released_paths", "rows_where", "sealed_state", "write_rows"]

RELEASED, SUPERSEDED, WITHDRAWN = "released", "superseded", "withdrawn"
TABLE = "deid_ledger"
WITHDRAWALS = "deid_withdrawals"
#: Why an instance is released (again): the run report counts each.
REASONS = ("new", "changed", "policy")
CHUNK = 5_000
"""Values per array parameter of one lookup: a night that releases everything again (a
new key) looks up its files in chunks, within BigQuery's limits on a query's size."""

_PENDING = """
WITH cohort AS (
  SELECT * FROM ({resolve}) WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY source_uri ORDER BY mtime DESC, content_sha256) = 1
),
mine AS (
  SELECT source_uri, source_sha256, config_sha256, key_id, status, released_at
  FROM deid_ledger
  WHERE project = @project AND source_uri IN (SELECT source_uri FROM cohort)
),
released AS (
  SELECT source_uri, source_sha256, config_sha256, key_id FROM mine
  WHERE status = 'released'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY source_uri ORDER BY released_at DESC) = 1
),
done AS (
  SELECT DISTINCT source_uri, source_sha256 FROM mine
  WHERE config_sha256 = @config AND key_id = @key_id
)
SELECT c.*,
  CASE WHEN r.source_uri IS NULL THEN 'new'
       WHEN r.config_sha256 = @config AND r.key_id = @key_id THEN 'changed'
       ELSE 'policy' END AS release_reason
FROM cohort AS c
LEFT JOIN released AS r ON r.source_uri = c.source_uri
LEFT JOIN done AS d ON d.source_uri = c.source_uri AND d.source_sha256 = c.content_sha256
WHERE d.source_uri IS NULL
ORDER BY c.source_uri
"""
_NO_INSTANCES = pa.schema([
    (URI_COLUMN, pa.string()), *((c, pa.string()) for c in UID_COLUMNS),
    ("size_bytes", pa.int64()), ("content_sha256", pa.string()),
    ("mtime", pa.timestamp("us", tz="UTC")), ("release_reason", pa.string()),
]).empty_table()
_COUNT = """
SELECT COUNT(DISTINCT source_uri) AS n FROM ({resolve})
"""


def pending_instances(
    warehouse: Warehouse, filter_set: FilterSet, *, project: str, config_sha256: str,
    key_id: str,
) -> tuple[pa.Table, int]:
    """The filter's instances still to release for ``project`` under this config and key
    (one row per landing file, its newest export; ``release_reason`` new, changed or
    policy), and how many instances the filter selects in all."""
    if not filter_set:
        return _NO_INSTANCES, 0
    columns = ("size_bytes", "content_sha256", "mtime")
    resolve = resolve_sql(filter_set, columns=columns, ordered=False)
    params: dict[str, Any] = {**resolve_params(filter_set), "project": project,
                              "config": config_sha256, "key_id": key_id}
    table = warehouse.run_cohort(_PENDING.format(resolve=resolve), params)
    total = warehouse.run_cohort(_COUNT.format(resolve=resolve), resolve_params(filter_set))
    return table, int(total.column("n")[0].as_py() or 0)


@dataclass(frozen=True)
class LedgerRow:
    """One release of one instance (see the module docstring and ``deid_ledger.sql``)."""

    project: str
    source_uri: str
    source_sha256: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    patient_id: str | None
    output_path: str
    output_sha256: str | None
    config_sha256: str
    key_id: str
    batch_id: str
    released_at: datetime
    status: str = RELEASED
    status_at: datetime | None = None
    status_by: str | None = None
    status_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def current_rows(warehouse: Warehouse, project: str, *, source_uris: Sequence[str] = (),
                 output_paths: Sequence[str] = (), exclude_batch: str = "",
                 vault_key: bytes | None = None) -> list[LedgerRow]:
    """The project's released rows for these landing files or tree paths (the ones a
    release replaces), except those of ``exclude_batch`` (a rerun of the same batch),
    opened with ``vault_key``. Tree paths are matched on their blind indexes; rows kept
    in clear (an older ledger) on the paths, in a query of their own that names no
    landing file: no query pairs landing files with the pseudonymous paths they became."""
    found: dict[tuple[str, str], LedgerRow] = {}
    uris, paths = list(source_uris), list(output_paths)
    indexes = (ledger_indexes(vault_key, project, "output_path", paths)
               if vault_key is not None else [])
    for start in range(0, max(len(uris), len(paths)), CHUNK):
        table = warehouse.run_cohort(
            "SELECT * FROM deid_ledger WHERE project = @project AND status = 'released' "
            "AND batch_id != @batch AND (source_uri IN UNNEST(@uris) "
            "OR output_path_index IN UNNEST(@indexes))",
            {"project": project, "batch": exclude_batch,
             "uris": Typed("ARRAY<STRING>", uris[start:start + CHUNK]),
             "indexes": Typed("ARRAY<STRING>", indexes[start:start + CHUNK])})
        for row in _ledger_rows(table, vault_key):
            found[(row.batch_id, row.source_uri)] = row
    if paths and _has_clear_rows(warehouse, project):
        for start in range(0, len(paths), CHUNK):
            table = warehouse.run_cohort(
                "SELECT * FROM deid_ledger WHERE project = @project AND status = 'released' "
                "AND batch_id != @batch AND output_path_index IS NULL "
                "AND output_path IN UNNEST(@paths)",
                {"project": project, "batch": exclude_batch,
                 "paths": Typed("ARRAY<STRING>", paths[start:start + CHUNK])})
            for row in _ledger_rows(table, vault_key):
                found[(row.batch_id, row.source_uri)] = row
    return sorted(found.values(), key=lambda r: (r.output_path, r.source_uri))


def batch_released(warehouse: Warehouse, batch_id: str) -> bool:
    """Whether the batch has released anything (rows in any status: a later withdrawal
    or supersession does not undo that it was released)."""
    table = warehouse.run_cohort(
        f"SELECT COUNT(*) AS n FROM {TABLE} WHERE batch_id = @batch", {"batch": batch_id})
    return bool(table.column("n")[0].as_py())


def _has_clear_rows(warehouse: Warehouse, project: str) -> bool:
    """Whether ``project`` has released rows kept in clear (no blind index: written
    before the ledger was encrypted, or without a vault key), found only by value."""
    table = warehouse.run_cohort(
        "SELECT COUNT(*) AS n FROM deid_ledger WHERE project = @project "
        "AND status = 'released' AND output_path_index IS NULL "
        "AND LENGTH(COALESCE(output_path, '')) > 0", {"project": project})
    return bool(table.column("n")[0].as_py())


def rows_where(warehouse: Warehouse, project: str, column: str, values: Sequence[str],
               vault_key: bytes | None = None, *, status: str = RELEASED) -> list[LedgerRow]:
    """The project's rows with ``status`` whose ``column`` (a pseudonymous identifier or
    a tree path) is one of ``values``, opened with ``vault_key``: matched on the column's
    blind index under the key, or on the value for rows kept in clear."""
    if column not in LEDGER_INDEXES:
        raise ValueError(f"no ledger lookup by {column!r}")
    wanted = list(values)
    indexes = (ledger_indexes(vault_key, project, column, wanted)
               if vault_key is not None else [])
    table = warehouse.run_cohort(
        f"SELECT * FROM deid_ledger WHERE project = @project AND status = @status "
        f"AND ({LEDGER_INDEXES[column]} IN UNNEST(@indexes) OR ({LEDGER_INDEXES[column]} "
        f"IS NULL AND {column} IN UNNEST(@values)))",
        {"project": project, "status": status,
         "indexes": Typed("ARRAY<STRING>", indexes), "values": Typed("ARRAY<STRING>", wanted)})
    chosen = set(wanted)
    rows = [r for r in _ledger_rows(table, vault_key) if getattr(r, column) in chosen]
    return sorted(rows, key=lambda r: (r.output_path, r.source_uri, r.batch_id))


def released_paths(warehouse: Warehouse, project: str, vault_key: bytes | None = None
                   ) -> list[str]:
    """The tree paths of ``project``'s released files (every one: the whole tree), opened
    with ``vault_key``."""
    table = warehouse.run_cohort(
        "SELECT project, batch_id, source_uri, output_path FROM deid_ledger "
        "WHERE project = @project AND status = 'released' AND LENGTH(output_path) > 0",
        {"project": project})
    return [str(r["output_path"]) for r in open_ledger(table.to_pylist(), vault_key)]


def sealed_state(warehouse: Warehouse, project: str, vault_key: bytes | None
                 ) -> tuple[int, int]:
    """How many of ``project``'s ledger rows are encrypted, and how many of them under
    ``vault_key`` (0 without one): tells "the wrong key" and "no key" from "no such
    value" when a lookup finds nothing."""
    mine = f"v1.{vault_key_id(vault_key)}." if vault_key is not None else "-"
    table = warehouse.run_cohort(
        "SELECT SUM(CASE WHEN STARTS_WITH(COALESCE(output_path, ''), 'v1.') THEN 1 ELSE 0 "
        "END) AS sealed, SUM(CASE WHEN STARTS_WITH(COALESCE(output_path, ''), @mine) "
        "THEN 1 ELSE 0 END) AS mine FROM deid_ledger WHERE project = @project",
        {"project": project, "mine": mine})
    row = table.to_pylist()[0]
    return int(row["sealed"] or 0), int(row["mine"] or 0) if vault_key is not None else 0


def _ledger_rows(table: pa.Table, vault_key: bytes | None = None) -> list[LedgerRow]:
    """``deid_ledger`` rows as queried (``SELECT *``), opened with ``vault_key``, as
    :class:`LedgerRow` s (:class:`~dicom_deid.vault.envelope.VaultError` for a value that
    does not open)."""
    fields = LedgerRow.__dataclass_fields__
    out = []
    for row in open_ledger(table.to_pylist(), vault_key):
        values: dict[str, Any] = {f: row.get(f) for f in fields}
        out.append(LedgerRow(**values))
    return out


def write_rows(warehouse: Warehouse, rows: Iterable[LedgerRow],
               vault_key: bytes | None = None) -> int:
    """Upsert rows by (project, batch_id, source_uri): a rerun writes the same rows. With
    ``vault_key`` their pseudonymous side is stored encrypted, with its blind indexes
    (:func:`~dicom_deid.vault.columns.seal_ledger`); without, in clear."""
    listed = [r.as_dict() for r in rows]
    if not listed:
        return 0
    if vault_key is not None:
        listed = seal_ledger(listed, vault_key)
    else:
        listed = [{**r, **dict.fromkeys(LEDGER_INDEXES.values())} for r in listed]
    return warehouse.insert_rows(TABLE, listed, key_columns=DEFAULT_KEYS[TABLE])


def withdrawn_outputs(warehouse: Warehouse, project: str,
                      mapping: Sequence[Mapping[str, Any]],
                      vault_key: bytes | None = None) -> dict[str, str]:
    """Outputs (tree path -> the withdrawal's level) of ``mapping`` rows that belong to
    something withdrawn from ``project`` (a patient, study, series or instance), matched
    on the original identifiers' blind indexes under the project's vault key, so a
    withdrawal holds across a change of pseudonym key without its value in clear."""
    if not mapping:
        return {}
    table = warehouse.run_cohort(
        "SELECT level, original_value, original_index FROM deid_withdrawals "
        "WHERE project = @project", {"project": project})
    withdrawn: dict[str, set[str]] = {}
    for row in table.to_pylist():
        index = row["original_index"] or (  # a row written before blind indexes
            None if is_encrypted(row["original_value"]) else
            blind_index(vault_key, f"{project}|{row['level']}", row["original_value"]))
        if index:
            withdrawn.setdefault(row["level"], set()).add(index)
    if not withdrawn:
        return {}
    columns = {"patient": "original_patient_id", "study": "original_study_uid",
               "series": "original_series_uid", "instance": "original_sop_uid"}
    out: dict[str, str] = {}
    for m in mapping:
        for level, indexes in withdrawn.items():
            value = m.get(columns.get(level, ""))
            if value and blind_index(vault_key, f"{project}|{level}", value) in indexes:
                out[m["output_path"]] = level
                break
    return out
