"""DuckDB's own encryption, for what holds identified rows: database files and Parquet.

DuckDB encrypts with AES-GCM; it writes encrypted files only with its httpfs extension
loaded (its OpenSSL), which comes signed from the ``duckdb-extension-httpfs`` wheel (DuckDB
checks the signature on LOAD; nothing is downloaded). Keys given to DuckDB are HMAC
subkeys of the caller's key, one per purpose, never the key itself. An encrypted Parquet
file (magic ``PARE``) opens only through DuckDB with the key; pyarrow refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from dicom_deid.errors import DicomDeidError, KeyConfigError

__all__ = ["PARQUET_KEY_NAME", "add_parquet_key", "is_encrypted_parquet", "load_crypto",
           "read_encrypted_parquet", "sql_literal", "subkey", "write_encrypted_parquet"]

PARQUET_KEY_NAME = "dicom_deid_restricted"
"""The name the Parquet key is registered under in a connection."""


def subkey(key: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of ``key`` for one purpose."""
    return hmac.new(key, f"dicom-deid/duckdb/{purpose}/v1".encode(), hashlib.sha256).digest()


def load_crypto(con: duckdb.DuckDBPyConnection) -> None:
    """Load the signed httpfs build that lets DuckDB write encrypted files (once per
    connection), and encrypt whatever the connection spills to disk."""
    loaded = con.execute("SELECT loaded FROM duckdb_extensions() "
                         "WHERE extension_name = 'httpfs'").fetchone()
    if not (loaded and loaded[0]):
        try:
            import duckdb_extension_httpfs
        except ImportError:
            raise DicomDeidError("encrypted files need DuckDB's httpfs extension: pip "
                                 f"install duckdb-extension-httpfs=={duckdb.__version__}"
                                 ) from None
        path = (Path(duckdb_extension_httpfs.__file__).parent / "extensions"
                / f"v{duckdb.__version__}" / "httpfs.duckdb_extension")
        if not path.is_file():
            raise DicomDeidError(f"duckdb-extension-httpfs has no build for DuckDB "
                                 f"{duckdb.__version__}; install the matching version")
        con.execute(f"LOAD '{sql_literal(str(path))}'")
    con.execute("SET temp_file_encryption = true")


def add_parquet_key(con: duckdb.DuckDBPyConnection, key: bytes) -> str:
    """Register the Parquet subkey of ``key`` in ``con``; the SQL option that uses it."""
    load_crypto(con)
    encoded = base64.b64encode(subkey(key, "parquet")).decode()
    con.execute(f"PRAGMA add_parquet_key('{PARQUET_KEY_NAME}', '{encoded}')")
    return f"{{footer_key: '{PARQUET_KEY_NAME}'}}"


def is_encrypted_parquet(path: str | Path) -> bool:
    """Whether a Parquet file is encrypted (its footer magic is ``PARE``)."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return fh.read(4) == b"PARE"


def write_encrypted_parquet(table: pa.Table, path: Path, key: bytes, *,
                            row_group_size: int) -> None:
    """Write ``table`` as zstd Parquet encrypted under ``key``'s Parquet subkey (the clear
    rows never reach the disk)."""
    con = duckdb.connect(":memory:")
    try:
        option = add_parquet_key(con, key)
        con.register("__dicom_deid_rows", table)
        con.execute(f"COPY __dicom_deid_rows TO '{sql_literal(str(path))}' (FORMAT parquet, "
                    f"COMPRESSION zstd, ROW_GROUP_SIZE {int(row_group_size)}, "
                    f"ENCRYPTION_CONFIG {option})")
    finally:
        con.close()


def read_encrypted_parquet(path: Path, key: bytes) -> pa.Table:
    """An encrypted Parquet file's rows (Arrow types as DuckDB gives them back)."""
    con = duckdb.connect(":memory:")
    try:
        option = add_parquet_key(con, key)
        try:
            reader = con.execute(f"SELECT * FROM read_parquet('{sql_literal(str(path))}', "
                                 f"encryption_config = {option})").arrow()
        except duckdb.Error as exc:
            raise KeyConfigError(f"{Path(path).name} does not open with this key "
                                 f"({type(exc).__name__})") from None
        return reader.read_all() if isinstance(reader, pa.RecordBatchReader) else reader
    finally:
        con.close()


def sql_literal(text: str) -> str:
    """``text`` inside a single-quoted SQL string literal."""
    return text.replace("'", "''")
