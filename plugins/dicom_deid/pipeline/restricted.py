"""Restricted files: what holds original identifiers is readable by its owner only.

The run workspace (filter file, cohort result, instance and shard lists, mapping, error
lists), the export of the identified metadata, the DuckDB warehouse (it holds
``dicom_metadata`` and ``deid_mapping``) and unverified staged outputs are created in
folders of mode 0700, and their files are set to 0600 once written.

Why not a umask: it is per process, so setting it inside a step races with the other
threads of an Airflow task, and a worker pool started meanwhile would inherit it for the
de-identified outputs, which are meant to be shared. Instead the folder is made private
*before* anything is written into it, and the files are tightened after the fact: the
helpers live in :mod:`dicom_deid.storage.permissions` (the local store uses them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicom_deid.storage.permissions import private_dir, restrict
from dicom_deid.warehouse.base import Warehouse, restricted_path
from dicom_deid.warehouse.factory import open_warehouse

__all__ = ["duckdb_file", "open_private_warehouse"]


def duckdb_file(url: str) -> Path | None:
    """The local database file of a ``duckdb://`` warehouse URL (None: other backends,
    in-memory databases)."""
    if not url.startswith("duckdb://"):
        return None
    rest = url[len("duckdb://"):]
    if not rest or rest in ("/", ":memory:", "/:memory:"):
        return None
    return Path(rest)


@contextmanager
def open_private_warehouse(url: str) -> Iterator[Warehouse]:
    """:func:`~dicom_deid.warehouse.factory.open_warehouse`, with DuckDB's files kept in a
    0700 folder and set to 0600: the restricted file holds the identified metadata and the
    mapping; the analysts' one is handed out by choice, not by default."""
    path = duckdb_file(url)
    if path is not None:
        private_dir(path.parent)
    with open_warehouse(url) as warehouse:
        yield warehouse
    if path is not None:
        restricted = Path(restricted_path(str(path)))
        for file in (path, restricted):
            for name in (file.name, f"{file.name}.wal"):
                restrict(file.with_name(name))
