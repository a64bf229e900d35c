"""The embedded warehouse's restricted file, encrypted at rest under the restricted key.

``<name>_restricted.duckdb`` holds the identified catalog (``dicom_metadata``), the
mapping, the ledger, the errors and the withdrawals; DuckDB encrypts the whole file, its
write-ahead log and its spill files (AES-GCM) under a subkey of the *restricted key*: a
site-wide secret apart from the pseudonym key and the projects' vault keys (it guards
all projects' identified rows; a vault key guards one project's mapping values on top).
Whoever copies the file without the key reads nothing; the analysts' file stays clear.

The key comes from ``$DICOM_DEID_RESTRICTED_KEY`` (hex), the file named by
``$DICOM_DEID_RESTRICTED_KEY_FILE``, or, in Airflow, the connection
``dicom_deid_restricted_key`` (the adapter exports it to the task's environment).
``dicom-deid keygen --restricted FILE`` makes one. A restricted file an older version
wrote in clear is encrypted the first time a key is at hand; :func:`rekey` moves a file
to a new key. DuckDB writes encrypted files only with its httpfs extension loaded (its
OpenSSL; see :mod:`dicom_deid.duckdb_crypto`).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from dicom_deid.duckdb_crypto import load_crypto, sql_literal, subkey
from dicom_deid.errors import KeyConfigError, WarehouseError
from dicom_deid.keyfile import key_fingerprint, load_key, parse_key

__all__ = ["RESTRICTED_KEY_ENV", "RESTRICTED_KEY_FILE_ENV", "attach_restricted", "export_key",
           "load_restricted_key", "rekey", "restricted_key_id"]

RESTRICTED_KEY_ENV = "DICOM_DEID_RESTRICTED_KEY"
RESTRICTED_KEY_FILE_ENV = "DICOM_DEID_RESTRICTED_KEY_FILE"
_ID_DOMAIN = b"dicom-deid/restricted-key-id/v1"
HOW = (f"set ${RESTRICTED_KEY_ENV} (hex) or ${RESTRICTED_KEY_FILE_ENV} (a key file), or "
       "in Airflow the connection dicom_deid_restricted_key; create a key with "
       "`dicom-deid keygen --restricted KEYFILE`")


def load_restricted_key(environ: dict[str, str] | None = None) -> bytes | None:
    """The restricted key from the environment, or None when none is configured."""
    env = os.environ if environ is None else environ
    if env.get(RESTRICTED_KEY_FILE_ENV):
        return load_key(Path(env[RESTRICTED_KEY_FILE_ENV]), what="restricted key")
    if env.get(RESTRICTED_KEY_ENV):
        return parse_key(env[RESTRICTED_KEY_ENV].encode())
    return None


def restricted_key_id(key: bytes) -> str:
    """A public fingerprint of a restricted key (16 hex digits), never the key."""
    return key_fingerprint(key, _ID_DOMAIN)


def _file_key(key: bytes) -> str:
    """What DuckDB is given: a subkey for this one use, as hex."""
    return subkey(key, "restricted-file").hex()


def _attach(con: duckdb.DuckDBPyConnection, path: str, alias: str, key: bytes | None,
            read_only: bool) -> None:
    options = [f"ENCRYPTION_KEY '{_file_key(key)}'"] if key is not None else []
    if read_only:
        options.append("READ_ONLY")
    suffix = f" ({', '.join(options)})" if options else ""
    con.execute(f"ATTACH '{sql_literal(path)}' AS {alias}{suffix}")


def _is_encrypted(path: str) -> bool:
    """Whether a DuckDB file is encrypted: its main header's flag (DuckDB 1.4+ layout:
    the 8-byte checksum, the magic ``DUCK``, the version, then the flags)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if head[8:12] != b"DUCK":
        raise WarehouseError(f"{path} is not a DuckDB database file")
    return bool(int.from_bytes(head[20:28], "little") & 1)


def attach_restricted(con: duckdb.DuckDBPyConnection, path: str, alias: str,
                      key: bytes | None, read_only: bool) -> bool:
    """Attach the restricted file as ``alias``; False when it cannot be (read-only, no key
    or no file yet: the restricted tables are then absent). Writing needs the key; a
    clear file from an older version is encrypted on the way (readers need the key too)."""
    if path == ":memory:":
        _attach(con, path, alias, None, read_only)
        return True
    exists = Path(path).exists() and Path(path).stat().st_size > 0
    if key is None:
        if read_only:
            return False
        raise KeyConfigError(f"the restricted tables are kept encrypted: {HOW}")
    load_crypto(con)
    if exists and not _is_encrypted(path):
        if read_only:
            raise WarehouseError("the restricted file is still in clear: open the warehouse "
                                 "for writing once (with the restricted key) to encrypt it")
        _reencrypt(con, path, None, key)
    try:
        _attach(con, path, alias, key, read_only)
    except duckdb.Error as exc:
        if "encryption key" in str(exc).lower():
            raise KeyConfigError("the restricted key does not open the restricted file "
                                 f"(key id {restricted_key_id(key)})") from None
        raise
    return True


def _reencrypt(con: duckdb.DuckDBPyConnection, path: str, old: bytes | None,
               new: bytes) -> None:
    """Copy the file's every table to a fresh file under ``new``, then swap it in (one
    rename: a crash leaves the old file whole). Its write-ahead log is checkpointed in
    first. The old file is unlinked, not overwritten: on a disk that is not itself
    encrypted its blocks keep the old bytes until reused."""
    fresh = f"{path}.rekey"
    for leftover in (fresh, f"{fresh}.wal"):
        Path(leftover).unlink(missing_ok=True)
    _attach(con, path, "__dicom_deid_old", old, read_only=False)
    try:
        con.execute("CHECKPOINT __dicom_deid_old")
        _attach(con, fresh, "__dicom_deid_new", new, read_only=False)
        try:
            con.execute("COPY FROM DATABASE __dicom_deid_old TO __dicom_deid_new")
            con.execute("CHECKPOINT __dicom_deid_new")
        finally:
            con.execute("DETACH __dicom_deid_new")
    finally:
        con.execute("DETACH __dicom_deid_old")
    os.chmod(fresh, 0o600)
    os.replace(fresh, path)
    Path(f"{path}.wal").unlink(missing_ok=True)


def rekey(path: str, old: bytes, new: bytes) -> None:
    """Move the restricted file at ``path`` from the restricted key ``old`` to ``new``
    (no other process may have it open)."""
    if not Path(path).is_file():
        raise WarehouseError(f"no restricted file at {path}")
    con = duckdb.connect(":memory:")
    try:
        load_crypto(con)
        try:
            _reencrypt(con, path, old if _is_encrypted(path) else None, new)
        except duckdb.Error as exc:
            if "encryption key" in str(exc).lower():
                raise KeyConfigError("the old restricted key does not open the file "
                                     f"(key id {restricted_key_id(old)})") from None
            raise
    finally:
        con.close()


def export_key(warehouse_url: str | None, table: str, *, required: bool = True
               ) -> bytes | None:
    """The key a metadata export of ``table`` for the warehouse ``warehouse_url`` is
    encrypted under: the restricted key, when the table is restricted (the identified
    catalog) and the warehouse the embedded one, whose restricted file needs the key
    anyway. None for a de-identified table or BigQuery (which loads clear Parquet; its
    restricted dataset's IAM guards the rows). ``required``: no key is an error (else
    None: a Parquet-only export, in clear, by the caller's choice)."""
    from .base import RESTRICTED_TABLES

    if table not in RESTRICTED_TABLES or (
            warehouse_url and not warehouse_url.startswith("duckdb://")):
        return None
    key = load_restricted_key()
    if key is None and required:
        raise KeyConfigError(f"the identified metadata is kept encrypted: {HOW}")
    return key
