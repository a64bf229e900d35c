"""The warehouse interface: one small API over DuckDB (default) and BigQuery.

Callers (the CLI, the Airflow adapters, :mod:`dicom_deid.cohort`) only see
:class:`Warehouse`; :func:`open_warehouse` picks the backend from a URL:

- ``duckdb:///abs/path/file.duckdb``, ``duckdb://relative/file.duckdb``,
  ``duckdb://:memory:``, or ``duckdb://`` / ``None`` for the default file under the
  project's data folder (``$DICOM_DEID_DATA_DIR``, else ``./var``);
- ``bigquery://project/dataset`` (optional ``?location=EU``, ``?restricted=NAME`` for the
  dataset of :data:`RESTRICTED_TABLES`, default ``<dataset>_restricted``, and
  ``?endpoint=http://host:port`` for an emulator).

Table DDL lives in ``ddl/<table>.sql`` (package data) as BigQuery Standard SQL (the source of
truth); the DuckDB backend transpiles it with sqlglot. Query parameters are plain
Python values (type inferred) or :class:`Typed` when the type cannot be inferred
(NULLs, empty arrays).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pyarrow as pa

from dicom_deid.errors import WarehouseError

__all__ = [
    "DEFAULT_KEYS",
    "EVOLVING_TABLES",
    "PARTITION_KEYS",
    "RESTRICTED_TABLES",
    "TABLES",
    "LoadMode",
    "PathsOrGlob",
    "Typed",
    "Warehouse",
    "infer_type",
    "restricted_path",
]

LoadMode = Literal["append", "replace_partition", "merge"]
LOAD_MODES: tuple[str, ...] = ("append", "replace_partition", "merge")
PathsOrGlob = str | Path | Sequence[str | Path]

#: Every table the pipeline owns, in creation order.
TABLES: tuple[str, ...] = (
    "dicom_metadata",
    "deid_metadata",
    "deid_mapping",
    "deid_runs",
    "deid_errors",
    "deid_ledger",
    "deid_withdrawals",
)
#: Tables holding original identifiers (identified metadata, the mapping, landing paths):
#: on BigQuery they live in a dataset of their own that analysts are not granted; the
#: others (de-identified metadata, run records) in the analysts' dataset.
RESTRICTED_TABLES = frozenset(
    {"dicom_metadata", "deid_mapping", "deid_errors", "deid_ledger", "deid_withdrawals"})
#: Tables whose columns come from the exported Parquet and may grow between loads.
EVOLVING_TABLES = frozenset({"dicom_metadata", "deid_metadata"})
#: Row identity used by ``mode="merge"`` (delete rows with the same key, insert new).
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "dicom_metadata": ("source_uri", "content_sha256"),
    "deid_metadata": ("source_uri", "content_sha256"),
    "deid_mapping": ("run_id", "source_path"),
    "deid_runs": ("run_id",),
    "deid_errors": ("run_id", "path", "stage"),
    "deid_ledger": ("project", "batch_id", "source_uri"),
    "deid_withdrawals": ("project", "level", "original_index"),
}
#: Partition identity used by ``mode="replace_partition"`` (replace everything loaded
#: before for the same partition values).
PARTITION_KEYS: dict[str, tuple[str, ...]] = {
    "dicom_metadata": ("ingest_date",),
    "deid_metadata": ("ingest_date",),
    "deid_mapping": ("run_id",),
    "deid_runs": ("run_id",),
    "deid_errors": ("run_id",),
    "deid_ledger": ("batch_id",),
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")




@dataclass(frozen=True)
class Typed:
    """A query parameter with an explicit BigQuery type, e.g. ``Typed("DATE", None)``.

    ``type`` is a BigQuery type name (``STRING``, ``INT64``, ``FLOAT64``, ``BOOL``,
    ``DATE``, ``DATETIME``, ``TIMESTAMP``, ``NUMERIC``, ``BYTES``) or ``ARRAY<T>``.
    """

    type: str
    value: Any


def infer_type(value: Any) -> str:
    """The BigQuery type of a Python parameter value (``STRING`` for ``None``).

    >>> infer_type(True), infer_type(3), infer_type(date(2024, 1, 2)), infer_type(["a"])
    ('BOOL', 'INT64', 'DATE', 'ARRAY<STRING>')
    """
    if isinstance(value, Typed):
        return value.type
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, list | tuple | frozenset | set):
        items = [v for v in value if v is not None]
        return f"ARRAY<{infer_type(items[0]) if items else 'STRING'}>"
    return "STRING"


def unwrap(value: Any) -> Any:
    """The plain Python value of a parameter (drops :class:`Typed`)."""
    return value.value if isinstance(value, Typed) else value


def restricted_path(path: str) -> str:
    """The restricted file beside the analysts' one: ``<name>_restricted.duckdb`` (the
    identified metadata, the mapping, the ledger, errors and withdrawals), so the
    analysts' file can be handed out alone."""
    if path == ":memory:":
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}_restricted{p.suffix or '.duckdb'}"))


def used_params(names: Sequence[str], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters a query uses (``names``), all of them given; else a clear error."""
    given = dict(params or {})
    missing = [n for n in names if n not in given]
    if missing:
        raise WarehouseError(f"missing query parameters: {', '.join(missing)}")
    return {n: given[n] for n in names}


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier (no quoting games), else raise."""
    if not _IDENTIFIER.fullmatch(name):
        raise WarehouseError(f"not a plain identifier: {name!r}")
    return name


def resolve_keys(table: str, mode: str, key_columns: Sequence[str] | None) -> tuple[str, ...]:
    """The key columns for an idempotent load of ``table`` in ``mode``."""
    if mode not in LOAD_MODES:
        raise WarehouseError(f"unknown load mode {mode!r}; expected one of {LOAD_MODES}")
    if mode == "append":
        return ()
    if key_columns is None:
        defaults = DEFAULT_KEYS if mode == "merge" else PARTITION_KEYS
        if table not in defaults:
            raise WarehouseError(f"mode={mode!r} on {table!r} needs key_columns")
        key_columns = defaults[table]
    keys = tuple(check_identifier(k) for k in key_columns)
    if not keys:
        raise WarehouseError(f"mode={mode!r} needs at least one key column")
    return keys


def expand_paths(paths_or_glob: PathsOrGlob) -> list[str]:
    """Normalise one path/glob/URI or a sequence of them to a list of strings."""
    items = [paths_or_glob] if isinstance(paths_or_glob, str | Path) else list(paths_or_glob)
    if not items:
        raise WarehouseError("no Parquet paths given")
    return [str(p) for p in items]


class Warehouse(ABC):
    """Load Parquet, run (cohort) SQL, record runs. One subclass per backend.

    SQL given to :meth:`query` is in the backend's own dialect; SQL given to
    :meth:`run_cohort` is BigQuery Standard SQL on every backend.
    """

    #: sqlglot dialect name of :meth:`query`'s SQL.
    dialect: str = ""

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the dataset/tables from ``ddl/`` if missing (idempotent)."""

    @abstractmethod
    def load_parquet(
        self,
        table: str,
        paths_or_glob: PathsOrGlob,
        *,
        mode: LoadMode = "append",
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Load Parquet files into ``table``; return the number of rows loaded.

        ``append`` adds rows; ``merge`` first deletes rows whose ``key_columns`` match a
        loaded row (default :data:`DEFAULT_KEYS`); ``replace_partition`` first deletes
        every row whose partition key (default :data:`PARTITION_KEYS`) occurs in the
        load. Both are atomic, so rerunning a load never duplicates rows. Tables in
        :data:`EVOLVING_TABLES` gain the new columns of the Parquet.
        """

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL in the backend's dialect with named parameters; return Arrow."""

    @abstractmethod
    def run_cohort(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run BigQuery Standard SQL (``@name`` parameters) on this backend."""

    @abstractmethod
    def insert_rows(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Insert small row batches (run records, errors); with ``key_columns``, upsert."""

    @abstractmethod
    def delete_partition(self, table: str, values: Mapping[str, Any]) -> None:
        """Delete every row of ``table`` whose columns equal ``values`` (e.g. one run's
        rows, when its rerun has none to load in their place)."""

    @abstractmethod
    def delete_in(self, table: str, column: str, values: Sequence[str]) -> int:
        """Delete every row of ``table`` whose ``column`` is one of ``values`` (e.g. the
        metadata rows of files a release removed); the number of rows deleted."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection/client."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
