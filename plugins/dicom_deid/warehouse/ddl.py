"""The warehouse tables' DDL, shipped inside the package as BigQuery Standard SQL.

``ddl/<table>.sql`` is the source of truth for every backend: BigQuery runs it as
written, DuckDB after transpiling (:func:`~.sql.transpile_ddl`). Being package data,
it travels with a wheel: a deployment needs no checkout of this repository.
"""

from __future__ import annotations

from importlib import resources

from dicom_deid.errors import WarehouseError

from .base import TABLES, check_identifier

__all__ = ["schema_ddl"]


def schema_ddl(table: str) -> str:
    """The BigQuery DDL text of one of :data:`~.base.TABLES`."""
    if check_identifier(table) not in TABLES:
        raise WarehouseError(f"no DDL for table {table!r}; tables: {', '.join(TABLES)}")
    return (resources.files(__package__) / "ddl" / f"{table}.sql").read_text(encoding="utf-8")
