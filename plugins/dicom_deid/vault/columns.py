"""Identifying columns encrypted value by value, for tables in a warehouse.

The warehouse's ``deid_mapping`` keeps its pseudonym columns in clear (re-identification
looks rows up by them) and its identifying ones -- original UIDs, patient ID, accession
number, the source path -- as ``v1.<vault key id>.<base64 of nonce + AES-256-GCM
ciphertext>``, each value under a subkey of the vault key with its column's name as
associated data (a value moved to another column does not open). The same text works in
DuckDB and BigQuery (client-side encryption: the warehouse never sees a key).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .envelope import VaultError
from .keys import derive, vault_key_id

if TYPE_CHECKING:
    import pyarrow as pa

    from dicom_deid.warehouse.base import Warehouse

__all__ = ["MAPPING_IDENTIFYING", "decrypt_columns", "decrypt_values", "encrypt_columns",
           "encrypt_values", "is_encrypted", "rotate_mapping"]

#: The mapping's columns that identify a patient (the rest are pseudonyms and counts).
MAPPING_IDENTIFYING = ("source_path", "original_study_uid", "original_series_uid",
                       "original_sop_uid", "original_patient_id", "original_accession")
_VERSION = "v1"


def is_encrypted(value: str | None) -> bool:
    """Whether a cell holds a value this module encrypted."""
    return bool(value) and str(value).startswith(f"{_VERSION}.")


def encrypt_values(values: Iterable[str | None], vault_key: bytes, column: str
                   ) -> list[str | None]:
    """Each value encrypted (a fresh nonce each: equal values do not look equal); None
    and empty stay as they are."""
    aead, kid, aad = AESGCM(derive(vault_key, "columns")), vault_key_id(vault_key), \
        column.encode()
    out: list[str | None] = []
    for value in values:
        if value is None or value == "":
            out.append(value)
            continue
        nonce = os.urandom(12)
        blob = nonce + aead.encrypt(nonce, str(value).encode("utf-8"), aad)
        out.append(f"{_VERSION}.{kid}.{base64.b64encode(blob).decode('ascii')}")
    return out


def decrypt_values(values: Iterable[str | None], vault_key: bytes, column: str
                   ) -> list[str | None]:
    """The clear values (:class:`VaultError` for a value under another key, a changed
    one, or one of another column)."""
    aead, kid, aad = AESGCM(derive(vault_key, "columns")), vault_key_id(vault_key), \
        column.encode()
    out: list[str | None] = []
    for value in values:
        if value is None or value == "":
            out.append(value)
            continue
        version, _, rest = str(value).partition(".")
        key_id, _, data = rest.partition(".")
        if version != _VERSION or not data:
            raise VaultError(f"{column}: a value that is not encrypted (written without a "
                             "vault key?)")
        if key_id != kid:
            raise VaultError(f"{column}: encrypted under another vault key (key id "
                             f"{key_id[:16]}, not {kid})")
        try:
            blob = base64.b64decode(data)
            out.append(aead.decrypt(blob[:12], blob[12:], aad).decode("utf-8"))
        except (InvalidTag, ValueError):
            raise VaultError(f"{column}: a value that does not open with this vault key: "
                             "changed, or moved from another column") from None
    return out


def _replace(table: pa.Table, columns: Sequence[str], vault_key: bytes, encrypt: bool
             ) -> pa.Table:
    import pyarrow as pa

    for name in columns:
        if name not in table.column_names:
            continue
        values = table.column(name).to_pylist()
        done = (encrypt_values if encrypt else decrypt_values)(values, vault_key, name)
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(done, pa.string()))
    return table


def encrypt_columns(table: pa.Table, vault_key: bytes,
                    columns: Sequence[str] = MAPPING_IDENTIFYING) -> pa.Table:
    """``table`` with ``columns`` encrypted (the others as they were)."""
    return _replace(table, columns, vault_key, True)


def decrypt_columns(table: pa.Table, vault_key: bytes,
                    columns: Sequence[str] = MAPPING_IDENTIFYING) -> pa.Table:
    """``table`` with ``columns`` decrypted."""
    return _replace(table, columns, vault_key, False)


def rotate_mapping(warehouse: Warehouse, old_key: bytes, new_key: bytes, scratch: Path) -> int:
    """Re-encrypt ``deid_mapping``'s identifying columns under ``new_key``: every row
    opened with ``old_key`` first (nothing changes when one does not open), then each
    run's rows replaced at once. Returns the rows re-encrypted."""
    import pyarrow.parquet as pq

    table = warehouse.query("SELECT * FROM deid_mapping")
    if not table.num_rows:
        return 0
    rotated = encrypt_columns(decrypt_columns(table, old_key), new_key)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = scratch / ".deid_mapping.rotated.parquet"
    try:
        pq.write_table(rotated, path)  # ciphertext and pseudonyms only
        return warehouse.load_parquet("deid_mapping", str(path), mode="replace_partition")
    finally:
        path.unlink(missing_ok=True)
