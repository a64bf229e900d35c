"""SQL helpers every layer above the backends shares: BigQuery SQL read with sqlglot.

Cohorts are BigQuery Standard SQL; on DuckDB they are transpiled here
(:func:`to_duckdb_sql`), as is the DDL (:func:`transpile_ddl`). :func:`parse_query`
insists on exactly one read-only query, so a cohort file cannot change the warehouse.
Errors are :class:`~dicom_deid.errors.CohortError` naming the line, never echoing data.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError

from dicom_deid.errors import CohortError

__all__ = ["parameter_names", "parse_query", "to_duckdb_sql", "transpile_ddl"]


def parse_query(sql: str) -> exp.Query:
    """Parse cohort SQL (BigQuery) and insist on exactly one read-only query."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f"line {first.get('line')}: " if first.get("line") else ""
        raise CohortError(f"{where}{first.get('description', 'SQL does not parse')}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise CohortError("a cohort must be exactly one SELECT query")
    query: exp.Query = statements[0]
    return query


def parameter_names(tree: exp.Query) -> tuple[str, ...]:
    """Named ``@parameters`` in order of first appearance."""
    names = [p.name for p in tree.find_all(exp.Parameter, bfs=False) if p.name]
    return tuple(dict.fromkeys(names))


def to_duckdb_sql(sql: str) -> tuple[str, tuple[str, ...]]:
    """BigQuery SQL -> (DuckDB SQL with ``$name`` parameters, parameter names in order)."""
    tree = parse_query(sql)
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
