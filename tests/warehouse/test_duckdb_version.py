"""A warehouse file written by another DuckDB release is a clear error, not a traceback
(an upgrade or downgrade of DuckDB leaves such files behind)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dicom_deid.errors import WarehouseError
from dicom_deid.warehouse import duckdb_backend
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

# What DuckDB 1.5 answers for a file of a newer storage format (seen with a 2.x file).
NEWER = ("IO Error: Trying to read a database file with version number 999, but we can "
         "only read versions between 64 and 68.")


def test_a_file_of_another_duckdb_release_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        raise duckdb.IOException(NEWER)

    monkeypatch.setattr(duckdb_backend.duckdb, "connect", refuse)
    path = tmp_path / "old.duckdb"
    with pytest.raises(WarehouseError, match="written by a DuckDB release") as caught:
        DuckDBWarehouse(path)
    assert str(path) in str(caught.value) and duckdb.__version__ in str(caught.value)


def test_other_io_errors_are_not_taken_for_a_version_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        raise duckdb.IOException("IO Error: Cannot open file: Permission denied")

    monkeypatch.setattr(duckdb_backend.duckdb, "connect", refuse)
    with pytest.raises(duckdb.IOException, match="Permission denied"):
        DuckDBWarehouse(tmp_path / "w.duckdb")
