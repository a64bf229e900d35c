"""The release ledger: what each project has published, and what a night must add.

``deid_ledger`` (restricted) holds one row per release of one instance: its landing file
and content hash, the pseudonymous identifiers and tree path of the released file, the
config fingerprint and key id it was made under, the batch, and a status -- ``released``
(in the project's tree now), ``superseded`` (a later release replaced it) or
``withdrawn``. The rows with status ``released`` are exactly the project's tree.

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
from dicom_deid.vault.columns import blind_index, is_encrypted
from dicom_deid.warehouse.base import DEFAULT_KEYS, Typed, Warehouse

__all__ = ["RELEASED", "SUPERSEDED", "WITHDRAWN", "LedgerRow", "pending_instances"]

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
released AS (
  SELECT source_uri, source_sha256, config_sha256, key_id FROM deid_ledger
  WHERE project = @project AND status = 'released'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY source_uri ORDER BY released_at DESC) = 1
),
done AS (
  SELECT DISTINCT source_uri, source_sha256 FROM deid_ledger
  WHERE project = @project AND config_sha256 = @config AND key_id = @key_id
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
                 output_paths: Sequence[str] = (), exclude_batch: str = "") -> list[LedgerRow]:
    """The project's released rows for these landing files or tree paths (the ones a
    release replaces), except those of ``exclude_batch`` (a rerun of the same batch)."""
    found: dict[tuple[str, str], LedgerRow] = {}
    uris, paths = list(source_uris), list(output_paths)
    for start in range(0, max(len(uris), len(paths)), CHUNK):
        table = warehouse.run_cohort(
            "SELECT * FROM deid_ledger WHERE project = @project AND status = 'released' "
            "AND batch_id != @batch AND (source_uri IN UNNEST(@uris) "
            "OR output_path IN UNNEST(@paths))",
            {"project": project, "batch": exclude_batch,
             "uris": Typed("ARRAY<STRING>", uris[start:start + CHUNK]),
             "paths": Typed("ARRAY<STRING>", paths[start:start + CHUNK])})
        for row in _ledger_rows(table):
            found[(row.batch_id, row.source_uri)] = row
    return sorted(found.values(), key=lambda r: (r.output_path, r.source_uri))


def rows_where(warehouse: Warehouse, project: str, column: str, values: Sequence[str]
               ) -> list[LedgerRow]:
    """The project's released rows whose ``column`` (a pseudonymous identifier or a tree
    path) is one of ``values``."""
    if column not in {"patient_id", "study_uid", "series_uid", "sop_uid", "output_path"}:
        raise ValueError(f"no ledger lookup by {column!r}")
    table = warehouse.run_cohort(
        f"SELECT * FROM deid_ledger WHERE project = @project AND status = 'released' "
        f"AND {column} IN UNNEST(@values) ORDER BY output_path",
        {"project": project, "values": Typed("ARRAY<STRING>", list(values))})
    return _ledger_rows(table)


def _ledger_rows(table: pa.Table) -> list[LedgerRow]:
    """``deid_ledger`` rows as queried (``SELECT *``), as :class:`LedgerRow` s."""
    return [LedgerRow(**{f: r.get(f) for f in LedgerRow.__dataclass_fields__})
            for r in table.to_pylist()]


def write_rows(warehouse: Warehouse, rows: Iterable[LedgerRow]) -> int:
    """Upsert rows by (project, batch_id, source_uri): a rerun writes the same rows."""
    listed = [r.as_dict() for r in rows]
    if not listed:
        return 0
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
