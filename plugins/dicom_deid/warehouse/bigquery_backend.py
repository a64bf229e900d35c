"""BigQuery warehouse (google-cloud-bigquery): the production backend.

- Two datasets: the analysts' one (``deid_metadata``, ``deid_runs``) and a restricted one
  for :data:`~.base.RESTRICTED_TABLES` (identified metadata, mapping, errors, ledger,
  withdrawals), ``<dataset>_restricted`` unless named. Grant analysts the first only.
- SQL given to :meth:`~BigQueryWarehouse.query` and :meth:`~BigQueryWarehouse.run_cohort`
  names the pipeline's tables unqualified (cohort files, the pipeline's own queries): every
  unqualified reference to one of :data:`~.base.TABLES` is qualified with its dataset
  (sqlglot finds them; a CTE of the same name is left alone), the rest of the text is
  untouched, so cohort SQL runs as written.
- Loads go through short-lived staging tables in the target's dataset, created with the
  schema read from the Parquet footers (local files, or ``gs://`` objects read with
  google-cloud-storage), one per distinct file schema, then moved with DML: ``INSERT``
  (``append``), or ``DELETE`` + ``INSERT`` in one transaction (``merge``, one row per key;
  ``replace_partition``). Files with different column sets thus union by name as on
  DuckDB, a rerun never duplicates rows, and ``merge`` replaces whole rows (a column the
  new version lacks becomes NULL, not a stale value). Evolving tables gain new columns
  with ``ALTER TABLE ... ADD COLUMN`` before the DML. :meth:`insert_rows` writes its rows
  as Parquet and takes the same path.
- Client: Application Default Credentials, or the ``credentials`` given (an Airflow
  adapter's); with ``BIGQUERY_EMULATOR_HOST`` or an ``endpoint``, that endpoint with
  anonymous credentials. Every API call and job wait has a bounded retry and timeout (the
  client's default retries a 500 for 600 s; an emulator answers unsupported calls so).

Where bqemulator (the emulator the tests run against) differs from BigQuery, this module
takes a way that works on both: the emulator creates no table on load and loads Parquet
by column position (hence staging tables made with the files' own schema); it takes one
``ALTER`` command per statement (so an ``endpoint`` gets one statement per column, while
BigQuery, which allows 5 table metadata updates per 10 s, gets one in all); and it
lower-cases result column names when it rewrites a function of the query (so, against an
``endpoint``, they get their spelling back).
"""

from __future__ import annotations

import fnmatch
import glob
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dicom_deid.errors import WarehouseError

from .base import (
    EVOLVING_TABLES,
    RESTRICTED_TABLES,
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
    used_params,
)
from .ddl import schema_ddl
from .sql import ddl_columns, is_cte_reference, parameter_names, parse_query

__all__ = [
    "EMULATOR_HOST_ENV",
    "BigQueryWarehouse",
    "arrow_to_bigquery",
    "bigquery_to_arrow",
    "emulator_endpoint",
    "qualify_tables",
    "to_query_parameter",
]

log = logging.getLogger(__name__)

#: The google-cloud-bigquery convention for an emulator's address (``host:port`` or a URL).
EMULATOR_HOST_ENV = "BIGQUERY_EMULATOR_HOST"
#: How long one API call is retried on 429/5xx/connection errors (the client's own default
#: is 600 s). Against an emulator a 500 means "unsupported", not a passing fault.
RETRY_SECONDS = 120.0
EMULATOR_RETRY_SECONDS = 5.0
#: How long one HTTP request may take, and how long to wait for a job to finish.
CALL_TIMEOUT_SECONDS = 120.0
JOB_TIMEOUT_SECONDS = 3600.0
#: Staging tables expire by themselves if a load dies before dropping them.
STAGE_TTL = timedelta(hours=6)
_DELETE_CHUNK = 5_000  # values per DELETE ... IN UNNEST(@values): within a query's size limit
_URIS_PER_LOAD = 10_000  # BigQuery's limit of source URIs per load job
_FOOTER_CHUNK = 256 * 1024  # bytes per ranged read of a gs:// Parquet footer


# -- values, types, names -------------------------------------------------------------


def to_query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | Any:
    """One typed BigQuery query parameter from a Python value or :class:`Typed`."""
    bq_type = infer_type(value)
    plain = unwrap(value)
    if bq_type.startswith("ARRAY<") and bq_type.endswith(">"):
        return bigquery.ArrayQueryParameter(name, bq_type[6:-1], list(plain or ()))
    return bigquery.ScalarQueryParameter(name, bq_type, plain)


def _q(name: str) -> str:
    return f"`{check_identifier(name)}`"


def _scalar_type(name: str, t: pa.DataType) -> str:
    """The BigQuery type of a non-nested Arrow type (what a Parquet load makes of it)."""
    checks: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
        (lambda x: pa.types.is_string(x) or pa.types.is_large_string(x), "STRING"),
        (pa.types.is_boolean, "BOOL"),
        (pa.types.is_integer, "INT64"),
        (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_time, "TIME"),
        (lambda x: pa.types.is_binary(x) or pa.types.is_large_binary(x)
         or pa.types.is_fixed_size_binary(x), "BYTES"),
    )
    for check, bq_type in checks:
        if check(t):
            return bq_type
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz is not None else "DATETIME"
    if pa.types.is_decimal(t):
        return "NUMERIC" if t.precision <= 38 and t.scale <= 9 else "BIGNUMERIC"
    if pa.types.is_null(t):
        raise WarehouseError(f"column {name} has no type (every value NULL): write the "
                             "Parquet with a schema")
    raise WarehouseError(f"column {name}: Arrow type {t} has no BigQuery equivalent")


def arrow_to_bigquery(field: pa.Field, mode: str = "NULLABLE") -> bigquery.SchemaField:
    """The (nullable) BigQuery field a Parquet column of this Arrow type loads into: lists
    become REPEATED (``enable_list_inference``), structs RECORD."""
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = t.value_type
        if pa.types.is_list(inner) or pa.types.is_large_list(inner):
            raise WarehouseError(f"column {field.name}: BigQuery has no list of lists")
        return arrow_to_bigquery(pa.field(field.name, inner), "REPEATED")
    if pa.types.is_struct(t):
        return bigquery.SchemaField(field.name, "RECORD", mode,
                                    fields=[arrow_to_bigquery(f) for f in t])
    return bigquery.SchemaField(field.name, _scalar_type(field.name, t), mode)


_ARROW_OF: dict[str, pa.DataType] = {
    "STRING": pa.string(), "JSON": pa.string(), "GEOGRAPHY": pa.string(),
    "INTEGER": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(), "FLOAT64": pa.float64(),
    "BOOLEAN": pa.bool_(), "BOOL": pa.bool_(), "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATETIME": pa.timestamp("us"),
    "TIME": pa.time64("us"), "BYTES": pa.binary(), "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
}


def bigquery_to_arrow(field: bigquery.SchemaField) -> pa.DataType:
    """The Arrow type whose Parquet loads into ``field`` (the inverse of
    :func:`arrow_to_bigquery`)."""
    kind = field.field_type.upper()
    if kind in ("RECORD", "STRUCT"):
        base: pa.DataType = pa.struct([pa.field(f.name, bigquery_to_arrow(f))
                                       for f in field.fields])
    elif kind in _ARROW_OF:
        base = _ARROW_OF[kind]
    else:
        raise WarehouseError(f"column {field.name}: BigQuery type {kind} is not supported")
    return pa.list_(base) if field.mode == "REPEATED" else base


_SQL_TYPE = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def _sql_type(field: bigquery.SchemaField) -> str:
    """``field``'s type as SQL (``ARRAY<STRUCT<a STRING>>``), for DDL and typed NULLs."""
    kind = field.field_type.upper()
    if kind in ("RECORD", "STRUCT"):
        base = "STRUCT<" + ", ".join(f"{_q(f.name)} {_sql_type(f)}" for f in field.fields) + ">"
    else:
        base = _SQL_TYPE.get(kind, kind)
    return f"ARRAY<{base}>" if field.mode == "REPEATED" else base


def _schema_key(fields: Sequence[bigquery.SchemaField]) -> str:
    return json.dumps([f.to_api_repr() for f in fields], sort_keys=True)


# -- table names in SQL ----------------------------------------------------------------


def qualify_tables(sql: str, datasets: Mapping[str, str]) -> str:
    """``sql`` with every unqualified reference to a table of ``datasets`` (name ->
    ``project.dataset``) written as `` `project.dataset.name` ``; CTE names, qualified
    names and everything else are left as written. SQL sqlglot cannot parse is returned
    unchanged (BigQuery then resolves names in the query's default dataset)."""
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except (ParseError, TokenError):
        log.warning("warehouse SQL not parsed by sqlglot: table names left unqualified")
        return sql
    edits: list[tuple[int, int, str]] = []
    for statement in statements:
        for table in statement.find_all(exp.Table) if statement is not None else ():
            ident = table.this
            if (not isinstance(ident, exp.Identifier) or table.args.get("db") is not None
                    or table.args.get("catalog") is not None or ident.name not in datasets
                    or is_cte_reference(table)):
                continue
            start, end = ident.meta.get("start"), ident.meta.get("end")
            if start is None or end is None or sql[start:end + 1].strip("`") != ident.name:
                raise WarehouseError("sqlglot gave no position for a table name")
            edits.append((start, end + 1, f"`{datasets[ident.name]}.{ident.name}`"))
    for start, end, text in sorted(edits, reverse=True):
        sql = sql[:start] + text + sql[end:]
    return sql


# -- the client ------------------------------------------------------------------------


def emulator_endpoint(endpoint: str | None = None) -> str | None:
    """The emulator URL to use: ``endpoint``, else ``$BIGQUERY_EMULATOR_HOST``; a bare
    ``host:port`` gets ``http://``. ``None`` means BigQuery itself."""
    value = (endpoint or os.environ.get(EMULATOR_HOST_ENV) or "").strip().rstrip("/")
    if not value:
        return None
    return value if "://" in value else f"http://{value}"


def _make_client(project: str, location: str | None, endpoint: str | None,
                 credentials: Credentials | None) -> bigquery.Client:
    """Application Default Credentials unless ``credentials``; an emulator ``endpoint``
    gets anonymous credentials unless ``credentials``."""
    if endpoint is None:
        return bigquery.Client(project=project, location=location, credentials=credentials)
    return bigquery.Client(project=project, location=location,
                           credentials=credentials or AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


@dataclass(frozen=True)
class _Source:
    """One Parquet file to load: a local path, a ``gs://`` URI, or bytes in memory."""

    location: str
    fields: tuple[bigquery.SchemaField, ...]
    rows: int
    data: bytes | None = None

    @property
    def is_uri(self) -> bool:
        return self.location.startswith("gs://")


class BigQueryWarehouse(Warehouse):
    """The :class:`~.base.Warehouse` on two BigQuery datasets (analysts', restricted)."""

    dialect = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        restricted_dataset: str | None = None,
        client: Any | None = None,
        location: str | None = None,
        endpoint: str | None = None,
        credentials: Credentials | None = None,
        storage_client: Any | None = None,
        retry_seconds: float | None = None,
        job_timeout: float = JOB_TIMEOUT_SECONDS,
    ) -> None:
        self.project = project
        self.dataset = check_identifier(dataset)
        self.restricted_dataset = check_identifier(restricted_dataset or f"{dataset}_restricted")
        if self.restricted_dataset == self.dataset:
            raise WarehouseError("the restricted dataset must differ from the analysts' one")
        self.location = location
        self.endpoint = emulator_endpoint(endpoint)
        #: Talking to an emulator (one ALTER command per statement; result names to respell).
        self.emulator = self.endpoint is not None
        self._credentials = credentials
        self.client = client if client is not None else _make_client(
            project, location, self.endpoint, credentials)
        self._storage = storage_client
        seconds = retry_seconds if retry_seconds is not None else (
            EMULATOR_RETRY_SECONDS if self.emulator else RETRY_SECONDS)
        self.retry = DEFAULT_RETRY.with_timeout(seconds)
        self.job_retry = DEFAULT_JOB_RETRY.with_timeout(2 * seconds)
        self.job_timeout = job_timeout

    # -- names ---------------------------------------------------------------------------

    @property
    def dataset_id(self) -> str:
        """``project.dataset`` of the analysts' dataset."""
        return f"{self.project}.{self.dataset}"

    @property
    def restricted_dataset_id(self) -> str:
        """``project.dataset`` of the restricted dataset."""
        return f"{self.project}.{self.restricted_dataset}"

    def dataset_of(self, table: str) -> str:
        """``project.dataset`` that holds ``table``."""
        restricted = check_identifier(table) in RESTRICTED_TABLES
        return self.restricted_dataset_id if restricted else self.dataset_id

    def table_id(self, table: str) -> str:
        """``project.dataset.table``, in the table's own dataset."""
        return f"{self.dataset_of(table)}.{table}"

    # -- schema ------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create both datasets and every table of ``ddl/`` in its dataset if missing, and
        add the declared columns an older version's table lacks (nullable, at the end)."""
        for dataset_id in (self.dataset_id, self.restricted_dataset_id):
            dataset = bigquery.Dataset(dataset_id)
            if self.location:
                dataset.location = self.location
            self.client.create_dataset(dataset, exists_ok=True, retry=self.retry,
                                       timeout=CALL_TIMEOUT_SECONDS)
        for table in TABLES:
            ddl = schema_ddl(table)
            self._run(ddl, default_dataset=self.dataset_of(table))
            have = self._columns(table)
            missing = [(n, t) for n, t in ddl_columns(ddl) if n.lower() not in have]
            if missing:
                self._add_columns(table, missing)

    def _columns(self, table: str) -> dict[str, bigquery.SchemaField]:
        """Lower-cased column name -> field of ``table`` as queries see it (a free dry run;
        an emulator's table metadata can lag its ALTERs)."""
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        try:
            job = self.client.query(f"SELECT * FROM `{self.table_id(table)}`",
                                    job_config=config, location=self.location,
                                    retry=self.retry, timeout=CALL_TIMEOUT_SECONDS,
                                    job_retry=None)
        except NotFound:
            raise WarehouseError(f"no table {self.table_id(table)}: ensure_schema() creates "
                                 "it") from None
        return {f.name.lower(): f for f in job.schema or ()}

    def _add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> None:
        """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` for each (name, SQL type)."""
        target = f"ALTER TABLE `{self.table_id(table)}`"
        adds = [f"ADD COLUMN IF NOT EXISTS {_q(name)} {sql_type}" for name, sql_type in columns]
        if self.emulator:
            self._run("".join(f"{target} {add};\n" for add in adds))
        else:
            self._run(f"{target} " + ", ".join(adds))

    # -- queries -----------------------------------------------------------------------

    def _run(self, sql: str, params: Mapping[str, Any] | None = None, *,
             default_dataset: str | None = None) -> tuple[Any, Any]:
        """Run one query job (a statement or a script), wait for it within bounds: the job
        and its rows."""
        config = bigquery.QueryJobConfig(
            default_dataset=default_dataset or self.dataset_id,
            query_parameters=[to_query_parameter(n, v) for n, v in (params or {}).items()],
        )
        job = self.client.query(sql, job_config=config, location=self.location,
                                retry=self.retry, timeout=CALL_TIMEOUT_SECONDS,
                                job_retry=self.job_retry)
        rows = job.result(retry=self.retry, timeout=self.job_timeout, job_retry=self.job_retry)
        return job, rows

    def _qualified(self, sql: str) -> str:
        return qualify_tables(sql, {t: self.dataset_of(t) for t in TABLES})

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run BigQuery SQL (pipeline tables unqualified) with typed ``@name`` parameters;
        return Arrow (empty for statements)."""
        _, rows = self._run(self._qualified(sql), params)
        table: pa.Table = rows.to_arrow(create_bqstorage_client=False)
        return self._emulator_case(sql, table) if self.emulator else table

    def _emulator_case(self, sql: str, table: pa.Table) -> pa.Table:
        """bqemulator lower-cases the result's column names when it rewrites a function of
        the query (UPPER, CONCAT, ...); BigQuery keeps them as spelled. Give them back the
        spelling of the query's identifiers, else of the queried tables' columns."""
        if all(name != name.lower() for name in table.column_names):
            return table
        try:
            tree = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
        except (ParseError, TokenError):
            return table
        spelled: dict[str, str] = {}
        for ident in (i for statement in tree for i in statement.find_all(exp.Identifier)):
            spelled.setdefault(ident.name.lower(), ident.name)
        if any(name not in spelled for name in table.column_names):
            queried = {t.name for s in tree for t in s.find_all(exp.Table)} & set(TABLES)
            for name in sorted(queried):
                for field in self._columns(name).values():
                    spelled.setdefault(field.name.lower(), field.name)
        return table.rename_columns([spelled.get(n, n) if n == n.lower() else n
                                     for n in table.column_names])

    def run_cohort(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Cohort SQL is BigQuery SQL already: run it as written (one read-only query), with
        the parameters it uses."""
        names = parameter_names(parse_query(sql_text))
        return self.query(sql_text, used_params(names, params))

    # -- loads -------------------------------------------------------------------------

    def _storage_client(self) -> Any:
        if self._storage is None:
            from google.cloud.storage import Client  # only gs:// loads need it

            self._storage = Client(project=self.project, credentials=self._credentials)
        return self._storage

    def _gcs_sources(self, uri: str) -> list[_Source]:
        """The objects a ``gs://bucket/path`` (one ``*`` wildcard allowed) names, with the
        schema and row count of each footer."""
        bucket_name, _, name = uri[len("gs://"):].partition("/")
        client = self._storage_client()
        if "*" in name:
            blobs = [b for b in client.list_blobs(bucket_name, prefix=name.split("*", 1)[0])
                     if fnmatch.fnmatchcase(b.name, name)]
        else:
            blobs = [client.bucket(bucket_name).blob(name)]
        sources = []
        for blob in sorted(blobs, key=lambda b: str(b.name)):
            with blob.open("rb", chunk_size=_FOOTER_CHUNK) as handle:
                meta = pq.ParquetFile(handle).metadata
            sources.append(self._source(f"gs://{bucket_name}/{blob.name}", meta))
        return sources

    @staticmethod
    def _source(location: str, meta: pq.FileMetaData, data: bytes | None = None) -> _Source:
        fields = tuple(arrow_to_bigquery(f) for f in meta.schema.to_arrow_schema())
        return _Source(location, fields, meta.num_rows, data)

    def _sources(self, paths_or_glob: PathsOrGlob) -> list[_Source]:
        """Every Parquet file named (globs expanded), with its schema and row count."""
        sources: list[_Source] = []
        for item in expand_paths(paths_or_glob):
            if item.startswith("gs://"):
                found = self._gcs_sources(item)
            else:
                paths = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
                found = [self._source(p, pq.read_metadata(p)) for p in paths]
            if not found:
                raise WarehouseError(f"no Parquet file matches {item}")
            sources += found
        return sources

    def _new_stage(self, table: str, fields: Sequence[bigquery.SchemaField]) -> str:
        """A new, empty staging table beside ``table`` with ``fields``; it expires."""
        stage_id = f"{self.dataset_of(table)}._stage_{table}_{uuid.uuid4().hex[:12]}"
        stage = bigquery.Table(stage_id, schema=list(fields))
        stage.expires = datetime.now(UTC) + STAGE_TTL
        self.client.create_table(stage, retry=self.retry, timeout=CALL_TIMEOUT_SECONDS)
        return stage_id

    def _fill(self, stage_id: str, sources: Sequence[_Source]) -> None:
        """Load ``sources`` (all of the stage's schema) into the staging table: the
        ``gs://`` URIs in one job, each local file or buffer in a job of its own."""
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # LIST columns load as REPEATED, not RECORD
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                                        create_disposition="CREATE_NEVER",
                                        parquet_options=options)
        uris = [s.location for s in sources if s.is_uri]
        for i in range(0, len(uris), _URIS_PER_LOAD):
            job = self.client.load_table_from_uri(uris[i:i + _URIS_PER_LOAD], stage_id,
                                                  job_config=config, location=self.location,
                                                  retry=self.retry, timeout=CALL_TIMEOUT_SECONDS)
            job.result(retry=self.retry, timeout=self.job_timeout)
        for source in (s for s in sources if not s.is_uri):
            with (io.BytesIO(source.data) if source.data is not None
                  else open(source.location, "rb")) as handle:
                job = self.client.load_table_from_file(handle, stage_id, job_config=config,
                                                       location=self.location,
                                                       timeout=CALL_TIMEOUT_SECONDS)
            job.result(retry=self.retry, timeout=self.job_timeout)

    def _drop(self, stage_ids: Iterable[str]) -> None:
        for stage_id in stage_ids:
            self.client.delete_table(stage_id, not_found_ok=True, retry=self.retry,
                                     timeout=CALL_TIMEOUT_SECONDS)

    def _load(self, table: str, sources: Sequence[_Source], mode: str,
              keys: tuple[str, ...]) -> int:
        """Stage ``sources`` (one table per distinct schema), check, move into ``table``."""
        groups: dict[str, list[_Source]] = {}
        for source in sources:
            groups.setdefault(_schema_key(source.fields), []).append(source)
        columns: dict[str, bigquery.SchemaField] = {}  # lower-cased name -> first field
        for group in groups.values():
            for field in group[0].fields:
                columns.setdefault(field.name.lower(), field)
        absent = [k for k in keys if k.lower() not in columns]
        if absent:
            raise WarehouseError(f"key columns {absent} not in the rows loaded into {table}")
        have = self._columns(table)
        new = [f for name, f in columns.items() if name not in have]
        if new and table not in EVOLVING_TABLES:
            raise WarehouseError(f"columns {[f.name for f in new]} are not in {table}")
        stages: list[str] = []
        try:
            for group in groups.values():
                stages.append(self._new_stage(table, group[0].fields))
                self._fill(stages[-1], group)
            source_sql = _union_sql(stages, [g[0].fields for g in groups.values()], columns)
            if mode == "merge":  # one row per key, so a batch never duplicates itself
                source_sql = (f"SELECT * FROM (\n  {source_sql}\n) WHERE TRUE QUALIFY ROW_NUMBER()"
                              f" OVER (PARTITION BY {', '.join(map(_q, keys))}) = 1")
            rows = self._check(table, source_sql, keys) if keys else sum(
                s.rows for s in sources)
            if new:
                self._add_columns(table, [(f.name, _sql_type(f)) for f in new])
            self._run(_move_sql(self.table_id(table), source_sql,
                                [f.name for f in columns.values()], keys))
        finally:
            self._drop(stages)
        return rows

    def _check(self, table: str, source_sql: str, keys: Sequence[str]) -> int:
        """Rows to move; refuse rows with a NULL key column (they could never be replaced)."""
        null_key = " OR ".join(f"{_q(k)} IS NULL" for k in keys)
        _, counts = self._run(f"SELECT COUNT(*) AS n, COUNTIF({null_key}) AS null_keys "
                              f"FROM (\n  {source_sql}\n)")
        n, nulls = next(iter(counts))
        if nulls:
            raise WarehouseError(f"{nulls} rows loaded into {table} have NULL key columns "
                                 f"{list(keys)}")
        return int(n)

    def load_parquet(
        self,
        table: str,
        paths_or_glob: PathsOrGlob,
        *,
        mode: LoadMode = "append",
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Stage the Parquet, then INSERT, or DELETE + INSERT in one transaction (see the
        module docstring); the number of rows moved into ``table``."""
        keys = resolve_keys(check_identifier(table), mode, key_columns)
        return self._load(table, self._sources(paths_or_glob), mode, keys)

    def insert_rows(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Write the rows as Parquet typed by the table's columns and load them like
        :meth:`load_parquet`; with ``key_columns``, same-key rows are replaced."""
        batch = [dict(row) for row in rows]
        if not batch:
            return 0
        keys = tuple(check_identifier(k) for k in key_columns or ())
        have = self._columns(check_identifier(table))
        names = list(dict.fromkeys(k for row in batch for k in row))
        arrays, fields = [], []
        for name in names:
            known = have.get(name.lower())
            try:
                array = pa.array([row.get(name) for row in batch],
                                 type=bigquery_to_arrow(known) if known is not None else None)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # their messages quote the value
                raise WarehouseError(f"column {name} of {table}: a value does not fit its "
                                     "type") from None
            arrays.append(array)
            fields.append(pa.field(known.name if known is not None else name, array.type))
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), buffer)
        data = buffer.getvalue()
        source = self._source(f"rows for {table}", pq.read_metadata(io.BytesIO(data)), data)
        return self._load(table, [source], "merge" if keys else "append", keys)

    def delete_partition(self, table: str, values: Mapping[str, Any]) -> None:
        """One DML ``DELETE`` with typed parameters."""
        if not values:
            raise WarehouseError("delete_partition needs at least one column")
        names = {f"p{i}": (column, value) for i, (column, value) in enumerate(values.items())}
        where = " AND ".join(f"{_q(column)} = @{p}" for p, (column, _) in names.items())
        self._run(f"DELETE FROM `{self.table_id(table)}` WHERE {where}",
                  {p: value for p, (_, value) in names.items()})

    def delete_in(self, table: str, column: str, values: Sequence[str]) -> int:
        """DML ``DELETE``s with the values as an ``ARRAY<STRING>`` parameter; the rows
        deleted."""
        listed = list(values)
        deleted = 0
        for start in range(0, len(listed), _DELETE_CHUNK):
            chunk = Typed("ARRAY<STRING>", listed[start:start + _DELETE_CHUNK])
            job, _ = self._run(f"DELETE FROM `{self.table_id(table)}` WHERE {_q(column)} "
                               "IN UNNEST(@values)", {"values": chunk})
            deleted += int(job.num_dml_affected_rows or 0)
        return deleted

    def close(self) -> None:
        """Close the clients' HTTP sessions."""
        for client in (self.client, self._storage):
            close = getattr(client, "close", None)
            if callable(close):
                close()


def _union_sql(stages: Sequence[str], schemas: Sequence[Sequence[bigquery.SchemaField]],
               columns: Mapping[str, bigquery.SchemaField]) -> str:
    """One SELECT of every staged row with ``columns`` (lower-cased name -> field): a
    stage lacking a column gives a typed NULL."""
    if len(stages) == 1:
        return f"SELECT * FROM `{stages[0]}`"  # one schema: the stage has every column
    selects = []
    for stage_id, fields in zip(stages, schemas, strict=True):
        own = {f.name.lower() for f in fields}
        selects.append("SELECT " + ", ".join(
            _q(f.name) if name in own else f"CAST(NULL AS {_sql_type(f)}) AS {_q(f.name)}"
            for name, f in columns.items()) + f" FROM `{stage_id}`")
    return "\n  UNION ALL\n  ".join(selects)


def _move_sql(target: str, source_sql: str, columns: Sequence[str],
              keys: Sequence[str]) -> str:
    """DML moving ``source_sql``'s rows into ``target``: an INSERT, or (with ``keys``)
    DELETE of the rows with a key in the source + INSERT, in one transaction."""
    names = ", ".join(map(_q, columns))
    insert = f"INSERT INTO `{target}` ({names})\nSELECT {names} FROM (\n  {source_sql}\n)"
    if not keys:
        return insert
    match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in keys)
    return ("BEGIN TRANSACTION;\n"
            f"DELETE FROM `{target}` AS t WHERE EXISTS (\n  SELECT 1 FROM (\n  {source_sql}\n) "
            f"AS s WHERE {match});\n"
            f"{insert};\n"
            "COMMIT TRANSACTION;")
