"""DuckDB warehouse: the embedded default (one file under the project's data folder).

Loads are atomic and idempotent: Parquet is staged in a temporary table, rows with the
same key are deleted and the staged rows inserted in one transaction. Tables in
:data:`~.base.EVOLVING_TABLES` take the columns of whatever Parquet
arrives (``read_parquet(..., union_by_name=true)`` plus ``ALTER TABLE ADD COLUMN``), so
a keyword first seen tonight does not break last night's rows.

Analyst SQL (:meth:`DuckDBWarehouse.run_cohort`, and :meth:`~DuckDBWarehouse.query` on a
read-only warehouse, the analysts' view) only reads the warehouse's tables: sqlglot's
check (:func:`~.sql.confine`) and DuckDB's own parser (:func:`_only_reads`) both refuse
table functions, files, writes and settings; a read-only warehouse also locks DuckDB's
configuration with external access off before it runs any. Its failures are reported by
class and line, never with DuckDB's message (which can quote values).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from dicom_deid.duckdb_crypto import add_parquet_key, is_encrypted_parquet, sql_literal
from dicom_deid.errors import CohortError, KeyConfigError, WarehouseError

from .base import (
    EVOLVING_TABLES,
    RESTRICTED_TABLES,
    TABLES,
    LoadMode,
    PathsOrGlob,
    Warehouse,
    check_identifier,
    expand_paths,
    resolve_keys,
    restricted_path,
    unwrap,
    used_params,
)
from .ddl import schema_ddl
from .restricted_file import HOW, attach_restricted, load_restricted_key
from .sql import READ_ONLY, parse_query, to_duckdb_sql, transpile_ddl

__all__ = ["DuckDBWarehouse"]

_STAGE = "__dicom_deid_stage"


RESTRICTED = "restricted"  # the attached restricted database's name in SQL


_BOUND_LIST_MAX = 256
"""Longer list parameters are read from a registered table (see ``query``)."""
_VIEWS = itertools.count()
"""Numbers the registered parameter tables: no two queries share one."""
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: What a DuckDB failure of analyst SQL is reported as: its class, and this instead of
#: its message (which quotes values: "Could not convert string 'DOE^JANE' to INT64").
_FAILURES = {
    "ConversionException": "a value could not be converted to the type asked for (a CAST, "
                           "or a comparison of different types)",
    "OutOfRangeException": "a value is out of range for its type",
    "InvalidInputException": "a function was given a value it cannot take",
    "BinderException": "a name or function the SQL uses is unknown, or does not fit",
    "CatalogException": "a table, column or function the SQL names does not exist",
    "ParserException": "the SQL does not parse",
    "PermissionException": READ_ONLY,
    "OutOfMemoryException": "out of memory",
    "InterruptException": "interrupted",
}
#: Table references of DuckDB's parse tree analyst SQL may not hold: ``DESCRIBE`` /
#: ``SUMMARIZE`` (which name a file as readily as a table) and the engine's own.
_NOT_READS = frozenset({"SHOW_REF", "COLUMN_DATA", "DELIM_GET"})
#: The one table function analyst SQL may call (BigQuery's ``UNNEST`` transpiled).
_ROW_FUNCTIONS = frozenset({"unnest"})
_CONFIG_FUNCTIONS = frozenset({"current_setting", "getenv"})


def _refused(reason: str) -> CohortError:
    return CohortError(f"{READ_ONLY}: {reason}")


def _only_reads(node: Any, ctes: frozenset[str], tables: frozenset[str]) -> None:
    """Check a node of DuckDB's own parse tree (``json_serialize_sql``) of analyst SQL:
    every table it names is one of ``tables`` (lower case) or a CTE in scope, unqualified;
    no table function but ``UNNEST``; no ``DESCRIBE``/``SUMMARIZE``; no configuration
    functions. What sqlglot checked, checked again by the parser that runs it."""
    if isinstance(node, list):
        for item in node:
            _only_reads(item, ctes, tables)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        ctes = _cte_scope(cte_map, ctes, tables)
    _check_node(node, ctes, tables)
    for key, value in node.items():
        if key != "cte_map":
            _only_reads(value, ctes, tables)


def _cte_scope(cte_map: dict[str, Any], ctes: frozenset[str], tables: frozenset[str]
               ) -> frozenset[str]:
    """Check the bodies of a ``WITH``'s CTEs (each sees those before it, a recursive one
    itself too); the CTE names in scope below it."""
    visible = set(ctes)
    for entry in cte_map.get("map") or []:
        name = str(entry.get("key", ""))
        if not _PLAIN.fullmatch(name):
            raise _refused("a CTE's name must be a plain identifier")
        body = entry.get("value")
        kind = (((body or {}).get("query") or {}).get("node") or {}).get("type")
        itself = {name.lower()} if kind == "RECURSIVE_CTE_NODE" else set()
        _only_reads(body, frozenset(visible | itself), tables)
        visible.add(name.lower())
    return frozenset(visible)


def _check_node(node: dict[str, Any], ctes: frozenset[str], tables: frozenset[str]) -> None:
    """One node of :func:`_only_reads`, without its children."""
    kind = node.get("type") if isinstance(node.get("type"), str) else None
    if "class" in node:  # an expression
        name = str(node.get("function_name", "")).lower()
        if node.get("class") == "FUNCTION" and name in _CONFIG_FUNCTIONS:
            raise _refused(f"no {name.upper()}")
    elif kind == "BASE_TABLE":
        name = str(node.get("table_name", ""))
        if node.get("schema_name") or node.get("catalog_name"):
            raise _refused("name tables unqualified (the warehouse finds them), no files")
        if not _PLAIN.fullmatch(name):
            raise _refused("a table name must be a plain identifier (no files)")
        if name.lower() not in ctes and name.lower() not in tables:
            raise CohortError(f"{READ_ONLY}, and {name} is not one of them")
    elif kind == "TABLE_FUNCTION":
        function = node.get("function") or {}
        name = str(function.get("function_name", ""))
        if name.lower() not in _ROW_FUNCTIONS or function.get("schema") or \
                function.get("catalog"):
            shown = f" ({name.upper()})" if _PLAIN.fullmatch(name) else ""
            raise _refused(f"no table functions{shown}")
    elif kind in _NOT_READS:
        raise _refused("no DESCRIBE, SUMMARIZE or SHOW")


def _failure(exc: duckdb.Error, sql: str) -> str:
    """A DuckDB failure of analyst SQL without DuckDB's message: the class, what it
    means, the line, and the first name it quotes if the SQL itself holds it (a column
    not found: a name of the SQL, never a value of the warehouse)."""
    kind = type(exc).__name__
    text = str(exc)
    line = re.search(r"\bLINE (\d+):", text)
    where = f" at line {line.group(1)}" if line else ""
    names = ""
    if kind in ("BinderException", "CatalogException"):
        quoted = [n for n in re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', text)
                  if re.search(rf"\b{re.escape(n)}\b", sql, re.IGNORECASE)]
        names = f" ({quoted[0]})" if quoted else ""
    return (f"the SQL failed in DuckDB{where}: {kind}: "
            f"{_FAILURES.get(kind, 'DuckDB could not run it')}{names}")


def _replace_parameters(sql: str, replacements: Mapping[str, str]) -> str:
    """``sql`` with each ``$name`` of ``replacements`` replaced, outside quoted strings
    and identifiers."""
    pattern = re.compile(r"\$(" + "|".join(map(re.escape, replacements)) + r")\b")
    parts = _QUOTED.split(sql)  # odd parts: the quoted ones, kept
    return "".join(part if i % 2 else pattern.sub(lambda m: replacements[m.group(1)], part)
                   for i, part in enumerate(parts))


def _quote(name: str) -> str:
    return '"' + check_identifier(name) + '"'


def _ref(table: str) -> str:
    """A pipeline table as SQL: the restricted ones qualified with their database."""
    quoted = _quote(table)
    return f"{RESTRICTED}.{quoted}" if table in RESTRICTED_TABLES else quoted


def _in_its_file(statement: str, table: str) -> str:
    """A DDL statement of ``table`` aimed at the restricted file when the table is one."""
    if table not in RESTRICTED_TABLES:
        return statement
    tree = sqlglot.parse_one(statement, read="duckdb")
    for ref in tree.find_all(exp.Table):
        if ref.name == table and not ref.args.get("db"):
            ref.set("db", exp.to_identifier(RESTRICTED))
    return tree.sql(dialect="duckdb")


def _connect(path: str, read_only: bool, wait_seconds: float = 120.0) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting while another process holds its lock (DuckDB has one writer):
    parallel Airflow tasks then take turns instead of failing."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "version number" in str(exc):  # a file another DuckDB release wrote
                raise WarehouseError(
                    f"{path} was written by a DuckDB release that DuckDB "
                    f"{duckdb.__version__} (the one installed) cannot read; open it with the "
                    "release that wrote it, or name another warehouse file") from None
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@cache
def _declarations() -> dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
    """Each table's DuckDB statements creating it in its file, and the (name, DuckDB type)
    of its declared columns in order: transpiled from the BigQuery DDL once a process."""
    out = {}
    declared = duckdb.connect(":memory:")
    try:
        for table in TABLES:
            statements = transpile_ddl(schema_ddl(table))
            for statement in statements:
                declared.execute(statement)
            columns = declared.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position", [table]).fetchall()
            out[table] = (tuple(_in_its_file(s, table) for s in statements),
                          tuple((str(name), str(dtype)) for name, dtype in columns))
    finally:
        declared.close()
    return out


class DuckDBWarehouse(Warehouse):
    """The :class:`~.base.Warehouse` on an embedded DuckDB database."""

    dialect = "duckdb"

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        connection: duckdb.DuckDBPyConnection | None = None,
        read_only: bool = False,
        restricted_key: bytes | None = None,
    ) -> None:
        """``restricted_key`` opens the encrypted restricted file (default: the one the
        environment names, see :mod:`.restricted_file`); read-only without one, the
        restricted tables are absent."""
        self.path = str(path)
        self.read_only = read_only
        # the analysts' view: its engine is locked down before its first analyst SQL
        # (only when the connection is its own: a caller's may still need files)
        self._lockable = read_only and connection is None
        if connection is not None:
            self._con = connection
        else:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._con = _connect(self.path, read_only)
        self.restricted_path = restricted_path(self.path)
        self._key = restricted_key or load_restricted_key()
        try:
            self._attach_restricted(read_only, self._key)
        except BaseException:
            if connection is None:
                self._con.close()  # DuckDB keeps one configuration per open file
            raise

    def _attach_restricted(self, read_only: bool, key: bytes | None) -> None:
        """Attach the restricted file (the tables of :data:`RESTRICTED_TABLES`) and put it
        on the search path: SQL names every table unqualified, on both files."""
        attached = {row[0] for row in self._con.execute(
            "SELECT database_name FROM duckdb_databases()").fetchall()}
        if RESTRICTED not in attached:
            if read_only and self.restricted_path != ":memory:" and \
                    not Path(self.restricted_path).exists():
                return  # nothing restricted written yet: those tables do not exist
            if not attach_restricted(self._con, self.restricted_path, RESTRICTED, key,
                                     read_only):
                return  # an analyst's read-only view: the restricted tables are absent
        self._con.execute(f"SET search_path = '{sql_literal(self._main())},{RESTRICTED}'")

    def _main(self) -> str:
        """The analysts' database's name in SQL (its file's stem)."""
        row = self._con.execute("SELECT current_database()").fetchone()
        return str(row[0]) if row else "memory"

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The underlying DuckDB connection (for tests and ad-hoc analysis)."""
        return self._con

    # -- schema ------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create every table from ``ddl/`` (BigQuery DDL transpiled) if missing, the
        restricted ones in the restricted file (moved there from an older single file),
        and add the declared columns an older version's table lacks (nullable, at the
        end). Every step of a run opens the warehouse this way: when one look at the
        catalog finds every table where it belongs with its declared columns, that is
        all it costs."""
        main = self._main()
        have = self._tables_present(main)
        for table, (statements, declared) in _declarations().items():
            restricted = table in RESTRICTED_TABLES
            if restricted and (main, table) in have:
                self._move_restricted(table)
                have = self._tables_present(main)
            columns = have.get((RESTRICTED if restricted else main, table))
            if columns is None:
                for statement in statements:
                    self._con.execute(statement)
                columns = {name.lower() for name in self.columns(table)}
            for name, dtype in declared:
                if name.lower() not in columns:
                    self._con.execute(
                        f"ALTER TABLE {_ref(table)} ADD COLUMN {_quote(name)} {dtype}")

    def _tables_present(self, main: str) -> dict[tuple[str, str], set[str]]:
        """(catalog, table) -> its column names (lower case), for every table of the
        analysts' file (``main``) and the restricted one."""
        found: dict[tuple[str, str], set[str]] = {}
        for catalog, table, column in self._con.execute(
                "SELECT table_catalog, table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_catalog IN (?, ?)",
                [main, RESTRICTED]).fetchall():
            found.setdefault((catalog, table), set()).add(column.lower())
        return found

    def _catalog(self, table: str) -> str:
        return RESTRICTED if table in RESTRICTED_TABLES else self._main()

    def _move_restricted(self, table: str) -> None:
        """A restricted table an older version kept in the analysts' file: copied to the
        restricted file, then dropped from the analysts' one once every row of it is found
        there (DuckDB writes one file per transaction: a crash in between leaves a copy
        that the next call drops)."""
        if table not in RESTRICTED_TABLES:
            return
        main = self._main()
        found = self._con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? "
            "AND table_name = ? AND table_schema = 'main'", [main, table]).fetchone()
        if not found or not found[0]:
            return
        source = f"{_quote(main)}.main.{_quote(table)}"
        if not self.columns(table):
            self._con.execute(f"CREATE TABLE {_ref(table)} AS SELECT * FROM {source}")
        names = ", ".join(_quote(c) for c in self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? "
            "AND table_name = ? AND table_schema = 'main'", [main, table]).fetchall()
            for c in c)
        missing = self._con.execute(
            f"SELECT count(*) FROM (SELECT {names} FROM {source} EXCEPT ALL "
            f"SELECT {names} FROM {_ref(table)})").fetchone()
        if missing and missing[0]:
            raise WarehouseError(f"{table}: the analysts' file holds rows the restricted "
                                 "file lacks; move them by hand, then drop the table there")
        self._con.execute(f"DROP TABLE {source}")
        self._con.execute(f"CHECKPOINT {_quote(main)}")  # the analysts' file rewritten

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> DuckDB type of ``table`` (empty if it does not exist)."""
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_catalog = ? AND table_schema = 'main' "
            "ORDER BY ordinal_position",
            [table, self._catalog(table)],
        ).fetchall()
        return {name: dtype for name, dtype in rows}

    def _stage_columns(self) -> dict[str, str]:
        """Staged column -> type, without all-NULL columns of no type (nothing to load)."""
        rows = self._con.execute(f"DESCRIBE {_STAGE}").fetchall()
        return {row[0]: row[1] for row in rows if str(row[1]).strip('"') != "NULL"}

    def _evolve(self, table: str, staged: Mapping[str, str]) -> None:
        """Create ``table`` like the stage, or add the stage's new columns to it."""
        existing = self.columns(table)
        if not existing:
            select = ", ".join(map(_quote, staged))
            self._con.execute(
                f"CREATE TABLE {_ref(table)} AS SELECT {select} FROM {_STAGE} LIMIT 0"
            )
            return
        have = {name.lower(): dtype for name, dtype in existing.items()}
        for name, dtype in staged.items():
            if name.lower() not in have:
                self._con.execute(f"ALTER TABLE {_ref(table)} ADD COLUMN {_quote(name)} {dtype}")
            elif have[name.lower()] != dtype and self._only_nulls(table, name):
                # a column first seen empty (a Parquet null column reads as INTEGER) takes
                # the type of the first file that has values in it
                self._con.execute(f"ALTER TABLE {_ref(table)} ALTER COLUMN {_quote(name)} "
                                  f"TYPE {dtype} USING NULL")

    def _only_nulls(self, table: str, column: str) -> bool:
        row = self._con.execute(
            f"SELECT count({_quote(column)}) FROM {_ref(table)}").fetchone()
        return row is not None and row[0] == 0

    # -- loads -------------------------------------------------------------------

    def load_parquet(
        self,
        table: str,
        paths_or_glob: PathsOrGlob,
        *,
        mode: LoadMode = "append",
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Stage Parquet, then (delete same-key rows and) insert, in one transaction."""
        check_identifier(table)
        keys = resolve_keys(table, mode, key_columns)
        files = expand_paths(paths_or_glob)
        source, params = self._parquet_source(files)
        self._con.execute("BEGIN TRANSACTION")
        try:
            self._con.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS {source}", params)
            count = self._apply_stage(table, mode, keys)
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")
        return count

    def _parquet_source(self, files: list[str]) -> tuple[str, list[Any]]:
        """A SELECT over the files by column name: clear ones as they are, encrypted ones
        (the identified export, see :mod:`dicom_deid.duckdb_crypto`) with the restricted
        key's Parquet key."""
        sealed = [f for f in files if Path(f).is_file() and is_encrypted_parquet(f)]
        encrypted = set(sealed)
        clear = [f for f in files if f not in encrypted]
        parts: list[str] = []
        params: list[Any] = []
        if clear or not sealed:
            parts.append("SELECT * FROM read_parquet(?, union_by_name = true)")
            params.append(clear)
        if sealed:
            if self._key is None:
                raise KeyConfigError("the files to load are encrypted: they open with the "
                                     f"restricted key only ({HOW})")
            option = add_parquet_key(self._con, self._key)
            # one read per file: DuckDB 1.5.5 fails reading encrypted files with
            # union_by_name (an internal error that invalidates the database)
            for path in sealed:
                parts.append(f"SELECT * FROM read_parquet(?, encryption_config = {option})")
                params.append(path)
        return " UNION ALL BY NAME ".join(parts), params

    def _apply_stage(self, table: str, mode: str, keys: tuple[str, ...]) -> int:
        """Move the staged rows into ``table`` (inside the caller's transaction)."""
        staged = self._stage_columns()
        missing = [k for k in keys if k not in staged]
        if missing:
            raise WarehouseError(f"key columns {missing} not in the rows loaded into {table}")
        if keys:
            null_key = " OR ".join(f"{_quote(k)} IS NULL" for k in keys)
            nulls = self._con.execute(f"SELECT count(*) FROM {_STAGE} WHERE {null_key}").fetchone()
            if nulls and nulls[0]:
                raise WarehouseError(
                    f"{nulls[0]} rows loaded into {table} have NULL key columns {list(keys)}"
                )
        if mode == "merge":  # one row per key, so a batch never duplicates itself
            partition = ", ".join(map(_quote, keys))
            self._con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_STAGE}_1 AS SELECT * FROM {_STAGE} "
                f"QUALIFY row_number() OVER (PARTITION BY {partition}) = 1"
            )
            self._con.execute(f"DROP TABLE {_STAGE}")
            self._con.execute(f"ALTER TABLE {_STAGE}_1 RENAME TO {_STAGE}")
        if table in EVOLVING_TABLES or not self.columns(table):
            self._evolve(table, staged)
        if keys:
            match = " AND ".join(f"t.{_quote(k)} IS NOT DISTINCT FROM s.{_quote(k)}" for k in keys)
            self._con.execute(
                f"DELETE FROM {_ref(table)} AS t "
                f"WHERE EXISTS (SELECT 1 FROM {_STAGE} AS s WHERE {match})"
            )
        select = ", ".join(map(_quote, staged))
        self._con.execute(f"INSERT INTO {_ref(table)} BY NAME SELECT {select} FROM {_STAGE}")
        row = self._con.execute(f"SELECT count(*) FROM {_STAGE}").fetchone()
        self._con.execute(f"DROP TABLE {_STAGE}")
        return int(row[0]) if row else 0

    def insert_rows(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        key_columns: Sequence[str] | None = None,
    ) -> int:
        """Insert rows (dicts) by column name; with ``key_columns`` replace same-key rows."""
        check_identifier(table)
        batch = [dict(r) for r in rows]
        if not batch:
            return 0
        keys = tuple(check_identifier(k) for k in key_columns or ())
        arrow = pa.Table.from_pylist(batch)
        self._con.execute("BEGIN TRANSACTION")
        try:
            self._con.register("__dicom_deid_rows", arrow)
            self._con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS SELECT * FROM __dicom_deid_rows"
            )
            count = self._apply_stage(table, "merge" if keys else "append", keys)
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        finally:
            self._con.unregister("__dicom_deid_rows")
        self._con.execute("COMMIT")
        return count

    def delete_partition(self, table: str, values: Mapping[str, Any]) -> None:
        """``DELETE FROM table WHERE col = value AND ...`` (at least one column)."""
        if not values:
            raise WarehouseError("delete_partition needs at least one column")
        where = " AND ".join(f"{_quote(c)} = ?" for c in values)
        self._con.execute(f"DELETE FROM {_ref(table)} WHERE {where}",
                          [unwrap(v) for v in values.values()])

    def delete_in(self, table: str, column: str, values: Sequence[str]) -> int:
        """``DELETE ... WHERE column IN (values)``, the list passed as one parameter."""
        if not values:
            return 0
        found = self._con.execute(
            f"DELETE FROM {_ref(table)} WHERE {_quote(column)} "
            "IN (SELECT UNNEST(?::VARCHAR[]))",
            [list(values)]).fetchone()
        return int(found[0]) if found else 0

    # -- queries -----------------------------------------------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run DuckDB SQL with ``$name`` parameters; an empty table for statements.

        On a read-only warehouse (the analysts' view, ``dicom-deid query``) the SQL is
        analyst SQL: one SELECT that only reads the warehouse's tables (else
        :class:`WarehouseError` saying why), run with the engine locked
        (:meth:`_lock_engine`); its failures are :class:`WarehouseError` naming the
        class and line, never DuckDB's message.
        """
        if not self.read_only:
            return self._execute(sql, params)
        tables = self._readable_tables()
        try:
            parse_query(sql, tables, dialect="duckdb")
            self._check_only_reads(sql, tables)
        except CohortError as exc:
            raise WarehouseError(str(exc)) from None
        self._lock_engine()
        try:
            return self._execute(sql, params)
        except duckdb.Error as exc:
            raise WarehouseError(_failure(exc, sql)) from None

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run DuckDB SQL as :meth:`query` does, unchecked.

        A long list parameter (a night's 5,000 landing files) is not bound as a value:
        DuckDB's Python binding takes about 0.1 ms an element, 0.4-0.7 s for 5,000
        strings, on every query. It is registered as an Arrow table instead, and the
        parameter becomes the list of that table's values (the same LIST, in order)."""
        values = {name: unwrap(value) for name, value in (params or {}).items()}
        views: list[str] = []
        try:
            sql, values = self._long_lists_as_tables(sql, values, views)
            relation = self._con.sql(sql, params=values or None)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        finally:
            for view in views:
                self._con.unregister(view)

    def _long_lists_as_tables(self, sql: str, values: dict[str, Any], views: list[str]
                              ) -> tuple[str, dict[str, Any]]:
        """``sql`` and ``values`` with each list longer than :data:`_BOUND_LIST_MAX` read
        from a registered table (named in ``views``) instead of bound."""
        long = {}
        for name, value in values.items():
            if isinstance(value, (list, tuple)) and len(value) > _BOUND_LIST_MAX:
                try:
                    column = pa.array(value)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    continue  # mixed values: bound as they are
                view = f"__dicom_deid_param_{check_identifier(name)}_{next(_VIEWS)}"
                self._con.register(view, pa.table({
                    "i": pa.array(range(len(value)), pa.int64()), "v": column}))
                views.append(view)
                long[name] = f'(SELECT list(v ORDER BY i) FROM "{view}")'
        if not long:
            return sql, values
        return (_replace_parameters(sql, long),
                {k: v for k, v in values.items() if k not in long})

    def run_cohort(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Transpile BigQuery SQL to DuckDB and run it with the parameters it uses.

        It is analyst SQL: one SELECT that only reads the warehouse's tables, checked by
        sqlglot and again by DuckDB's parser; on a read-only warehouse the engine is
        locked first. Refusals and failures are :class:`CohortError`, naming the class
        and line of a failure, never DuckDB's message (which can quote values)."""
        tables = self._readable_tables()
        sql, names = to_duckdb_sql(sql_text, tables)
        self._check_only_reads(sql, tables)
        values = used_params(names, params)
        self._lock_engine()
        try:
            return self._execute(sql, values)
        except duckdb.Error as exc:
            raise CohortError(_failure(exc, sql_text)) from None

    def _readable_tables(self) -> frozenset[str]:
        """The tables analyst SQL may read (lower case): the stored tables of both files
        (not views: a view could read anything)."""
        rows = self._con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' AND table_catalog IN (?, ?)",
            [self._main(), RESTRICTED]).fetchall()
        return frozenset(str(row[0]).lower() for row in rows)

    def _check_only_reads(self, sql: str, tables: Collection[str]) -> None:
        """DuckDB's own parser on the very SQL it will run: one SELECT reading only
        ``tables`` and its CTEs (:func:`_only_reads`), else :class:`CohortError`."""
        row = self._con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        tree: dict[str, Any] = json.loads(str(row[0])) if row else {"error": True}
        statements = tree.get("statements") or []
        if tree.get("error") or len(statements) != 1:
            raise CohortError("the SQL must be exactly one SELECT query (it may only read)")
        _only_reads(statements[0], frozenset(), frozenset(t.lower() for t in tables))

    def _lock_engine(self) -> None:
        """On a read-only warehouse opened here: no file access but the warehouse's own
        files (already attached), no more settings. For the rest of the connection's
        life: DuckDB cannot turn external access back on while the file is open."""
        if not self._lockable:
            return
        locked = self._con.execute("SELECT current_setting('lock_configuration')").fetchone()
        if not (locked and locked[0]):
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")

    def close(self) -> None:
        """Close the connection (checkpointing the file)."""
        self._con.close()
