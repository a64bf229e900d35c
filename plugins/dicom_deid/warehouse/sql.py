"""SQL helpers every layer above the backends shares: BigQuery SQL read with sqlglot.

Cohorts are BigQuery Standard SQL; on DuckDB they are transpiled here
(:func:`to_duckdb_sql`), as is the DDL (:func:`transpile_ddl`). :func:`parse_query`
insists on exactly one query that only reads the warehouse's tables (:func:`confine`):
no table functions (``read_text``, ``read_csv``, ``EXTERNAL_QUERY``...), no files or
qualified names in ``FROM``, no writes, commands or settings; so an analyst's SQL
(a cohort, ``dicom-deid query``) can neither change the warehouse nor read anything else.
Errors are :class:`~dicom_deid.errors.CohortError` naming the line and the reason,
never echoing data (nor the SQL text, which may hold values too).
"""

from __future__ import annotations

import re
from collections.abc import Collection

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError

from dicom_deid.errors import CohortError

from .base import TABLES

__all__ = ["READ_ONLY", "confine", "is_cte_reference", "parameter_names", "parse_query",
           "to_duckdb_sql", "transpile_ddl"]

READ_ONLY = "the SQL may only read the warehouse's tables"
"""How every refusal of :func:`confine` starts."""

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Nodes no read-only query holds, wherever they are (``SELECT ... INTO`` included).
_NOT_READS: tuple[type[exp.Expr], ...] = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
    exp.TruncateTable, exp.Into, exp.Copy, exp.Export, exp.LoadData, exp.Command, exp.Set,
    exp.Pragma, exp.Use, exp.Attach, exp.Detach, exp.Install, exp.Transaction, exp.Commit,
    exp.Rollback, exp.Describe, exp.Show, exp.Summarize, exp.Refresh, exp.Cache,
    exp.Uncache, exp.Analyze, exp.Grant, exp.Revoke, exp.Kill, exp.Comment, exp.Declare,
    exp.Execute, exp.TableFromRows,
)
#: Scalar functions that read the engine's configuration or environment.
_CONFIG_FUNCTIONS = frozenset({"CURRENT_SETTING", "GETENV"})


def parse_query(sql: str, tables: Collection[str] | None = TABLES, *,
                dialect: str = "bigquery") -> exp.Query:
    """Parse analyst SQL (BigQuery unless ``dialect`` says otherwise) and insist on
    exactly one query that only reads ``tables`` (default: the pipeline's; None: any
    plain table name, for a check where the warehouse is not known yet) and its own CTEs
    (:func:`confine`)."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        raise CohortError(_parse_failure(exc)) from None
    except TokenError:  # its message quotes the SQL
        raise CohortError("the SQL does not parse: an unterminated string, quoted name or "
                          "comment?") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise CohortError("the SQL must be exactly one SELECT query (it may only read)")
    query: exp.Query = statements[0]
    return confine(query, tables)


def _parse_failure(exc: ParseError) -> str:
    """Where the SQL stops parsing and why, without quoting it: sqlglot's descriptions
    may quote the SQL text (then only the place is given)."""
    first = exc.errors[0] if exc.errors else {}
    line, column = first.get("line"), first.get("col")
    where = f"line {line}" + (f", column {column}" if column else "") + ": " if line else ""
    description = str(first.get("description") or "")
    if not description or re.search(r"['\"`<]", description):
        description = "the SQL does not parse"
    return f"{where}{description}"


def confine(tree: exp.Query, tables: Collection[str] | None = TABLES) -> exp.Query:
    """``tree`` if it only reads: every table it names is one of ``tables`` (None: any
    plain name) or a CTE in scope, named unqualified; no table functions (``UNNEST``
    excepted), no writes, commands or settings anywhere; else :class:`CohortError`
    with the reason (names of the SQL at most, never a value)."""
    known = None if tables is None else {t.lower() for t in tables}
    for node in tree.walk():
        if isinstance(node, _NOT_READS):
            raise CohortError(f"{READ_ONLY}: no {type(node).__name__.upper()}")
        if isinstance(node, exp.Lateral) and not isinstance(node.this, exp.Subquery | exp.Query):
            raise CohortError(f"{READ_ONLY}: no table functions")
        if isinstance(node, exp.Func) and _function_name(node).upper() in _CONFIG_FUNCTIONS:
            raise CohortError(f"{READ_ONLY}: no {_function_name(node).upper()}")
        if isinstance(node, exp.CTE) and not _PLAIN.fullmatch(node.alias_or_name):
            raise CohortError(f"{READ_ONLY}: a CTE's name must be a plain identifier")
        if isinstance(node, exp.Table):
            _check_table(node, known)
    return tree


def _function_name(func: exp.Expr) -> str:
    if isinstance(func, exp.Anonymous):
        return str(func.name)
    return func.sql_name() if isinstance(func, exp.Func) else ""


def _check_table(table: exp.Table, known: set[str] | None) -> None:
    if not isinstance(table.this, exp.Identifier):  # read_text(...), ML.PREDICT(...), ...
        name = _function_name(table.this)
        shown = f" ({name.upper()})" if _PLAIN.fullmatch(name) else ""
        raise CohortError(f"{READ_ONLY}: no table functions{shown}")
    if table.args.get("db") is not None or table.args.get("catalog") is not None:
        raise CohortError(f"{READ_ONLY}: name tables unqualified (dicom_metadata, not "
                          "x.dicom_metadata: the warehouse finds their dataset), no files")
    name = table.name
    if not _PLAIN.fullmatch(name):
        raise CohortError(f"{READ_ONLY}: a table name must be a plain identifier (no files)")
    if known is not None and name.lower() not in known and not is_cte_reference(table):
        raise CohortError(f"{READ_ONLY}, and {name} is not one of them")


def _cte_names(with_: exp.With, before: exp.Expr | None) -> set[str]:
    """Names of ``with_``'s CTEs visible from inside ``before`` (a CTE of it: those defined
    earlier, itself too if RECURSIVE), or from the query body (``None``: all)."""
    names: list[str] = []
    for cte in with_.expressions:
        if cte is before and not with_.args.get("recursive"):
            break
        names.append(cte.alias_or_name.lower())
        if cte is before:
            break
    return set(names)


def is_cte_reference(table: exp.Table) -> bool:
    """Whether ``table`` names a CTE in scope rather than a stored table."""
    name = table.name.lower()
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With):
            if name in _cte_names(node, child):
                return True
        else:
            with_ = node.args.get("with_") or node.args.get("with")
            if isinstance(with_, exp.With) and with_ is not child and name in _cte_names(
                    with_, None):
                return True
        child, node = node, node.parent
    return False


def parameter_names(tree: exp.Query) -> tuple[str, ...]:
    """Named ``@parameters`` in order of first appearance."""
    names = [p.name for p in tree.find_all(exp.Parameter, bfs=False) if p.name]
    return tuple(dict.fromkeys(names))


def to_duckdb_sql(sql: str, tables: Collection[str] | None = TABLES
                  ) -> tuple[str, tuple[str, ...]]:
    """BigQuery SQL that only reads ``tables`` (:func:`parse_query`) -> (DuckDB SQL with
    ``$name`` parameters, parameter names in order)."""
    tree = parse_query(sql, tables)
    names = parameter_names(tree)
    return tree.sql(dialect="duckdb", comments=False), names


def transpile_ddl(bigquery_ddl: str) -> list[str]:
    """BigQuery DDL -> DuckDB statements (partitioning/clustering options are dropped)."""
    return [
        sql
        for sql in sqlglot.transpile(
            bigquery_ddl, read="bigquery", write="duckdb", unsupported_level=ErrorLevel.IGNORE
        )
        if sql.strip()
    ]


def ddl_columns(bigquery_ddl: str) -> list[tuple[str, str]]:
    """(name, BigQuery type) of each column a ``CREATE TABLE`` statement declares, in
    order: what an existing table must have (see the backends' ``ensure_schema``)."""
    create = sqlglot.parse_one(bigquery_ddl, read="bigquery")
    schema = create.this if isinstance(create, exp.Create) else None
    if not isinstance(schema, exp.Schema):
        return []
    return [(col.name, col.args["kind"].sql("bigquery")) for col in schema.expressions
            if isinstance(col, exp.ColumnDef) and col.args.get("kind") is not None]
