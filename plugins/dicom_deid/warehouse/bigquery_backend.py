"""BigQuery warehouse (google-cloud-bigquery): the production backend.

- Schema: the dataset and the tables of ``ddl/`` (run as written, with the
  dataset as default so DDL stays unqualified).
- ``append`` loads Parquet straight into the table (``WRITE_APPEND`` with
  ``ALLOW_FIELD_ADDITION``, so new keywords become new columns).
- ``merge`` / ``replace_partition`` load into a short-lived staging table
  (``WRITE_TRUNCATE``), add the staging table's new columns to the target, then run one
  ``MERGE`` (or a ``DELETE`` + ``INSERT`` transaction) and drop the staging table:
  reruns never duplicate rows.
- Queries use named, typed query parameters (``ScalarQueryParameter`` /
  ``ArrayQueryParameter``); cohort SQL runs exactly as written.

The client is injectable so the boundary can be unit-tested with a fake.
"""

from __future__ import annotations

import glob
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from dicom_deid.errors import WarehouseError

from .base import (
    EVOLVING_TABLES,
    TABLES,
    LoadMode,
    PathsOrGlob,
    Typed,
    Warehouse,
    check_identifier,
    expand_paths,
    infer_type,
    resolve_keys,
    unwrap,
)
from .ddl import schema_ddl
from .sql import ddl_columns

_DELETE_CHUNK = 5_000

__all__ = ["BigQueryWarehouse", "merge_sql", "replace_sql", "to_query_parameter"]

STAGE_TTL = timedelta(hours=6)


def to_query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | Any:
    """One typed BigQuery query parameter from a Python value or :class:`Typed`."""
    bq_type = infer_type(value)
    plain = unwrap(value)
    if bq_type.startswith("ARRAY<") and bq_type.endswith(">"):
        return bigquery.ArrayQueryParameter(name, bq_type[6:-1], list(plain or ()))
    return bigquery.ScalarQueryParameter(name, bq_type, plain)


def _q(name: str) -> str:
    return f"`{check_identifier(name)}`"


def _assert_keys(stage: str, keys: Sequence[str]) -> str:
    """An ASSERT that fails the script if any staged row has a NULL key column."""
    null_key = " OR ".join(f"{_q(k)} IS NULL" for k in keys)
    return (
        f"ASSERT NOT EXISTS (SELECT 1 FROM `{stage}` WHERE {null_key})\n"
        f"  AS 'rows with NULL key columns {', '.join(keys)}';\n"
    )


def merge_sql(target: str, stage: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """MERGE the staging table into ``target`` on ``keys`` (one source row per key)."""
    on = " AND ".join(f"t.{_q(k)} IS NOT DISTINCT FROM s.{_q(k)}" for k in keys)
    update = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in columns if c not in keys)
    names = ", ".join(_q(c) for c in columns)
    values = ", ".join(f"s.{_q(c)}" for c in columns)
    partition = ", ".join(_q(k) for k in keys)
    matched = f"WHEN MATCHED THEN UPDATE SET {update}\n" if update else ""
    return _assert_keys(stage, keys) + (
        f"MERGE `{target}` AS t\n"
        f"USING (SELECT * FROM `{stage}` WHERE TRUE\n"
        f"       QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition}) = 1) AS s\n"
        f"ON {on}\n"
        f"{matched}"
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values});"
    )


def replace_sql(target: str, stage: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """Replace every partition (key value) present in the stage, atomically."""
    match = " AND ".join(f"t.{_q(k)} IS NOT DISTINCT FROM s.{_q(k)}" for k in keys)
    names = ", ".join(_q(c) for c in columns)
    return _assert_keys(stage, keys) + (
        "BEGIN TRANSACTION;\n"
        f"DELETE FROM `{target}` AS t WHERE EXISTS (SELECT 1 FROM `{stage}` AS s WHERE {match});\n"
        f"INSERT INTO `{target}` ({names}) SELECT {names} FROM `{stage}`;\n"
        "COMMIT TRANSACTION;"
    )


def _json_value(value: Any) -> Any:
    """Make a row value JSON-serialisable the way BigQuery's JSON loader expects."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _nullable(field: bigquery.SchemaField) -> bigquery.SchemaField:
    """The field with REQUIRED relaxed to NULLABLE (new columns must be nullable)."""
    api = field.to_api_repr()
    if api.get("mode", "NULLABLE") == "REQUIRED":
        api["mode"] = "NULLABLE"
    return bigquery.SchemaField.from_api_repr(api)


class BigQueryWarehouse(Warehouse):
    """The :class:`~.base.Warehouse` on a BigQuery dataset."""

    dialect = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        client: Any | None = None,
        location: str | None = None,
    ) -> None:
        self.project = project
        self.dataset = check_identifier(dataset)
        self.location = location
        self.client = client if client is not None else bigquery.Client(
            project=project, location=location
        )

    @property
    def dataset_id(self) -> str:
        """``project.dataset``."""
        return f"{self.project}.{self.dataset}"

    def table_id(self, table: str) -> str:
        """``project.dataset.table``."""
        return f"{self.dataset_id}.{check_identifier(table)}"

    # -- schema ------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the dataset and every table of ``ddl/`` if missing, and add the declared
        columns an older version's table lacks (nullable, at the end; one ``ALTER`` only
        when something is missing)."""
        dataset = bigquery.Dataset(self.dataset_id)
        if self.location:
            dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        for table in TABLES:
            ddl = schema_ddl(table)
            self._run(ddl)
            have = {f.name.lower() for f in self.client.get_table(self.table_id(table)).schema}
            missing = [(n, t) for n, t in ddl_columns(ddl) if n.lower() not in have]
            if missing:
                self._run(f"ALTER TABLE {table} " + ", ".join(
                    f"ADD COLUMN IF NOT EXISTS {n} {t}" for n, t in missing))

    # -- queries -----------------------------------------------------------------

    def _job_config(self, params: Mapping[str, Any] | None) -> bigquery.QueryJobConfig:
        return bigquery.QueryJobConfig(
            default_dataset=self.dataset_id,
            query_parameters=[to_query_parameter(n, v) for n, v in (params or {}).items()],
        )

    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        job = self.client.query(sql, job_config=self._job_config(params), location=self.location)
        return job.result()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run BigQuery SQL with typed ``@name`` parameters; return Arrow."""
        result = self._run(sql, params)
        return result.to_arrow(create_bqstorage_client=False)

    def run_cohort(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Cohort SQL is BigQuery SQL already: run it as written."""
        return self.query(sql_text, params)

    # -- loads -------------------------------------------------------------------

    def _load_config(self, disposition: str, *, add_fields: bool) -> bigquery.LoadJobConfig:
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=disposition,
        )
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # LIST columns load as REPEATED, not RECORD
        config.parquet_options = options
        if add_fields:
            config.schema_update_options = [bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION]
        return config

    def _load_files(self, sources: list[str], destination: str, disposition: str) -> int:
        """Load GCS URIs in one job and local files one job each; return rows loaded."""
        uris = [s for s in sources if s.startswith("gs://")]
        local: list[str] = []
        for source in (s for s in sources if not s.startswith("gs://")):
            matches = sorted(glob.glob(source)) if glob.has_magic(source) else [source]
            if not matches:
                raise WarehouseError(f"no Parquet file matches {source}")
            local += matches
        rows = 0
        jobs: list[tuple[str, Any]] = [("uri", uris)] if uris else []
        jobs += [("file", path) for path in local]
        for kind, source in jobs:
            add_fields = disposition == bigquery.WriteDisposition.WRITE_APPEND
            config = self._load_config(disposition, add_fields=add_fields)
            if kind == "uri":
                job = self.client.load_table_from_uri(
                    source, destination, job_config=config, location=self.location
                )
            else:
                with open(source, "rb") as handle:
                    job = self.client.load_table_from_file(
                        handle, destination, job_config=config, location=self.location
                    )
            job.result()
            rows += int(getattr(job, "output_rows", 0) or 0)
            disposition = bigquery.WriteDisposition.WRITE_APPEND
        return rows

    def load_parquet(
        self,
        table: str,
        paths_or_glob: PathsOrGlob,
        *,
        mode: LoadMode = "append",
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Append, or stage + MERGE / replace partitions (see the module docstring)."""
        keys = resolve_keys(table, mode, key_columns)
        sources = expand_paths(paths_or_glob)
        target = self.table_id(table)
        if mode == "append":
            return self._load_files(sources, target, bigquery.WriteDisposition.WRITE_APPEND)
        stage = self._stage_id(table)
        try:
            rows = self._load_files(sources, stage, bigquery.WriteDisposition.WRITE_TRUNCATE)
            self._apply_stage(table, stage, mode, keys)
        finally:
            self.client.delete_table(stage, not_found_ok=True)
        return rows

    def _stage_id(self, table: str) -> str:
        return self.table_id(f"_stage_{table}_{uuid.uuid4().hex[:12]}")

    def _apply_stage(self, table: str, stage: str, mode: str, keys: tuple[str, ...]) -> None:
        """Expire the stage, widen the target if allowed, then MERGE or replace."""
        staged = self.client.get_table(stage)
        staged.expires = datetime.now(UTC) + STAGE_TTL
        self.client.update_table(staged, ["expires"])
        columns = [f.name for f in staged.schema]
        missing = [k for k in keys if k not in columns]
        if missing:
            raise WarehouseError(f"key columns {missing} not in the rows loaded into {table}")
        if table in EVOLVING_TABLES:
            self._add_columns(table, staged.schema)
        build = merge_sql if mode == "merge" else replace_sql
        self._run(build(self.table_id(table), stage, columns, keys))

    def _add_columns(self, table: str, fields: Sequence[bigquery.SchemaField]) -> None:
        """Add the fields the target lacks (nullable), like ALLOW_FIELD_ADDITION does."""
        target = self.client.get_table(self.table_id(table))
        known = {f.name.lower() for f in target.schema}
        new = [_nullable(f) for f in fields if f.name.lower() not in known]
        if new:
            target.schema = [*target.schema, *new]
            self.client.update_table(target, ["schema"])

    def insert_rows(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Batch-load rows as JSON with the table's schema (no streaming buffer);
        with ``key_columns``, through a staging table and MERGE."""
        batch = [{k: _json_value(v) for k, v in row.items()} for row in rows]
        if not batch:
            return 0
        keys = tuple(check_identifier(k) for k in key_columns or ())
        target = self.client.get_table(self.table_id(table))
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=target.schema,
            write_disposition=(
                bigquery.WriteDisposition.WRITE_TRUNCATE
                if keys
                else bigquery.WriteDisposition.WRITE_APPEND
            ),
        )
        destination = self._stage_id(table) if keys else self.table_id(table)
        try:
            job = self.client.load_table_from_json(
                batch, destination, job_config=config, location=self.location
            )
            job.result()
            if keys:
                self._apply_stage(table, destination, "merge", keys)
        finally:
            if keys:
                self.client.delete_table(destination, not_found_ok=True)
        return len(batch)

    def delete_partition(self, table: str, values: Mapping[str, Any]) -> None:
        """One DML ``DELETE`` with typed parameters."""
        if not values:
            raise WarehouseError("delete_partition needs at least one column")
        names = {f"p{i}": (column, value) for i, (column, value) in enumerate(values.items())}
        where = " AND ".join(f"{_q(column)} = @{p}" for p, (column, _) in names.items())
        self._run(f"DELETE FROM `{self.table_id(table)}` WHERE {where}",
                  {p: value for p, (_, value) in names.items()})

    def delete_in(self, table: str, column: str, values: Sequence[str]) -> int:
        """One DML ``DELETE`` with the values as an ``ARRAY<STRING>`` parameter."""
        listed = list(values)
        for start in range(0, len(listed), _DELETE_CHUNK):  # within a query's size limit
            self._run(f"DELETE FROM `{self.table_id(table)}` WHERE {_q(column)} "
                      "IN UNNEST(@values)",
                      {"values": Typed("ARRAY<STRING>", listed[start:start + _DELETE_CHUNK])})
        return len(listed)

    def close(self) -> None:
        """Close the client's HTTP session."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

