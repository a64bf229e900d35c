"""Identifying columns encrypted value by value, for tables in a warehouse.

The warehouse's ``deid_mapping`` keeps its pseudonym columns in clear (re-identification
looks rows up by them) and its identifying ones -- original UIDs, patient ID, accession
number, the source path -- as ``v1.<vault key id>.<base64 of nonce + AES-256-GCM
ciphertext>``, each value under a subkey of the vault key. The associated data binds a
value to its column and its row (the run and the pseudonymous SOP Instance UID): a value
moved to another column or another row does not open, so nobody without the key can make
a pseudonym point at another patient. The same text works in DuckDB and BigQuery
(client-side encryption: the warehouse never sees a key). Projects may have vault keys of
their own: each value names its key, and a key opens only its rows.

The release ledger ``deid_ledger`` is the mirror image: its landing path stays in clear
(the nightly planner joins on it in SQL), so its pseudonymous side -- the released file's
UIDs, patient ID, tree path and hash -- is encrypted the same way (:func:`seal_ledger`,
bound to the column and to the row's key project, batch and landing path), with a blind
index per looked-up column, scoped to the project (:func:`ledger_index`), to find rows by
a pseudonymous value without it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .envelope import VaultError
from .keys import derive, vault_key_id

if TYPE_CHECKING:
    import pyarrow as pa

    from dicom_deid.warehouse.base import Warehouse

__all__ = ["LEDGER_INDEXES", "LEDGER_SEALED", "MAPPING_IDENTIFYING", "ROW_KEYS",
           "blind_index", "decrypt_columns", "decrypt_values", "encrypt_columns",
           "encrypt_values", "is_encrypted", "ledger_index", "ledger_indexes",
           "ledger_row_name", "open_ledger", "open_values", "rotate_ledger", "rotate_mapping",
           "rotate_withdrawals", "rows_under", "seal_ledger"]

#: The mapping's columns that identify a patient (the rest are pseudonyms and counts).
MAPPING_IDENTIFYING = ("source_path", "original_study_uid", "original_series_uid",
                       "original_sop_uid", "original_patient_id", "original_accession")
#: The columns that name a mapping row (bound into every encrypted value of the row).
ROW_KEYS = ("run_id", "sop_uid")
#: The ledger's pseudonymous side: beside its landing path (in clear) these would turn a
#: pseudonym back into a landing file, so under a vault key they are encrypted.
LEDGER_SEALED = ("study_uid", "series_uid", "sop_uid", "patient_id", "output_path",
                 "output_sha256")
#: Ledger column -> the column of its blind index (rows are looked up by these values).
LEDGER_INDEXES = {"patient_id": "patient_id_index", "study_uid": "study_uid_index",
                  "series_uid": "series_uid_index", "sop_uid": "sop_uid_index",
                  "output_path": "output_path_index"}
#: Kept out of the warehouse when the mapping is encrypted: with a shifted date of
#: ``deid_metadata`` it gives the true date back.
CLEARED = ("date_shift_days",)
_VERSION = "v1"


def is_encrypted(value: str | None) -> bool:
    """Whether a cell holds a value this module encrypted."""
    return bool(value) and str(value).startswith(f"{_VERSION}.")


def key_id_of(value: str | None) -> str | None:
    """The vault key id an encrypted value names (None for a clear or empty one)."""
    if not is_encrypted(value):
        return None
    return str(value).split(".", 2)[1]


def blind_index(vault_key: bytes | None, scope: str, value: str) -> str:
    """A keyed, deterministic stand-in for an identifier: ``i1.<vault key id>.<HMAC-SHA256
    of scope and value under a subkey of the vault key>``. Equal values give equal indexes
    (rows can be matched and deduplicated without the value); without the key it tells
    nothing, not even whether two scopes hold the same value. With no vault key (a mapping
    kept in clear, engine-level use only) the value stands for itself."""
    if vault_key is None:
        return value
    return _Indexer(vault_key)(scope, value)


class _Indexer:
    """:func:`blind_index` under one vault key, its subkey derived once (a night seals
    one index per identifier of every row it releases)."""

    def __init__(self, vault_key: bytes) -> None:
        self._key, self._kid = derive(vault_key, "index"), vault_key_id(vault_key)

    def __call__(self, scope: str, value: str) -> str:
        mac = hmac.new(self._key, f"{scope}|{value}".encode(), hashlib.sha256)
        return f"i1.{self._kid}.{mac.hexdigest()}"


def _aad(column: str, row: str) -> bytes:
    return f"{column}|{row}".encode()


def encrypt_values(values: Iterable[str | None], vault_key: bytes, column: str,
                   rows: Iterable[str]) -> list[str | None]:
    """Each value encrypted, bound to ``column`` and its ``rows`` entry (a fresh nonce
    each: equal values do not look equal); None and empty stay as they are."""
    aead, kid = AESGCM(derive(vault_key, "columns")), vault_key_id(vault_key)
    out: list[str | None] = []
    for value, row in zip(values, rows, strict=True):
        if value is None or value == "":
            out.append(value)
            continue
        nonce = os.urandom(12)
        blob = nonce + aead.encrypt(nonce, str(value).encode("utf-8"), _aad(column, row))
        out.append(f"{_VERSION}.{kid}.{base64.b64encode(blob).decode('ascii')}")
    return out


def decrypt_values(values: Iterable[str | None], vault_key: bytes, column: str,
                   rows: Iterable[str]) -> list[str | None]:
    """The clear values (:class:`VaultError` for a value under another key, a changed
    one, or one moved from another column or row)."""
    aead, kid = AESGCM(derive(vault_key, "columns")), vault_key_id(vault_key)
    out: list[str | None] = []
    for value, row in zip(values, rows, strict=True):
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
            out.append(aead.decrypt(blob[:12], blob[12:], _aad(column, row)).decode("utf-8"))
        except (InvalidTag, ValueError):
            raise VaultError(f"{column}: a value that does not open with this vault key: "
                             "changed, or moved from another column or row") from None
    return out


def open_values(values: Iterable[str | None], vault_key: bytes | None, column: str,
                rows: Iterable[str]) -> list[str | None]:
    """Like :func:`decrypt_values`, but a clear value (a table written before its column
    was encrypted, or without a vault key) reads as itself; an encrypted one without a
    vault key is a :class:`VaultError`."""
    values, rows = list(values), list(rows)
    if len(values) != len(rows):
        raise ValueError("one row name per value")
    sealed = [i for i, v in enumerate(values) if is_encrypted(v)]
    if not sealed:
        return values
    if vault_key is None:
        raise VaultError(f"{column}: encrypted under a vault key, and none was given")
    opened = decrypt_values([values[i] for i in sealed], vault_key, column,
                            [rows[i] for i in sealed])
    out = list(values)
    for i, value in zip(sealed, opened, strict=True):
        out[i] = value
    return out


def ledger_row_name(project: str, batch_id: str, source_uri: str) -> str:
    """What a ``deid_ledger`` value is bound to: its row's key (project, batch, landing
    path), written unambiguously (a batch id or path may hold any character)."""
    return json.dumps([project, batch_id, source_uri], separators=(",", ":"))


def ledger_index(vault_key: bytes, project: str, column: str, value: str) -> str:
    """The blind index of a ledger value: scoped to the project and the column, so equal
    pseudonyms of two projects, or of two columns, do not look equal."""
    return blind_index(vault_key, _ledger_scope(project, column), value)


def ledger_indexes(vault_key: bytes, project: str, column: str, values: Iterable[str]
                   ) -> list[str]:
    """:func:`ledger_index` of each of ``values`` (the subkey derived once)."""
    indexer, scope = _Indexer(vault_key), _ledger_scope(project, column)
    return [indexer(scope, v) for v in values]


def _ledger_scope(project: str, column: str) -> str:
    return f"{project}|ledger|{column}"


def seal_ledger(rows: Sequence[Mapping[str, Any]], vault_key: bytes) -> list[dict[str, Any]]:
    """``deid_ledger`` rows with :data:`LEDGER_SEALED` encrypted under ``vault_key`` (a
    value encrypted already is opened first: re-sealed, not sealed twice) and the blind
    indexes of :data:`LEDGER_INDEXES` set (None for an empty value)."""
    names = [ledger_row_name(r["project"], r["batch_id"], r["source_uri"]) for r in rows]
    out = [dict(r) for r in rows]
    indexer = _Indexer(vault_key)
    for column in LEDGER_SEALED:
        clear = open_values([r.get(column) for r in rows], vault_key, column, names)
        sealed = encrypt_values(clear, vault_key, column, names)
        index = LEDGER_INDEXES.get(column)
        for row, value, stored in zip(out, clear, sealed, strict=True):
            row[column] = stored
            if index:
                row[index] = (indexer(_ledger_scope(row["project"], column), value)
                              if value else None)
    return out


def open_ledger(rows: Iterable[Mapping[str, Any]], vault_key: bytes | None
                ) -> list[dict[str, Any]]:
    """``deid_ledger`` rows with :data:`LEDGER_SEALED` in clear (clear values as they are;
    :class:`VaultError` for a value that does not open with ``vault_key``, or for an
    encrypted one without a key)."""
    out = [dict(r) for r in rows]
    names = [ledger_row_name(r["project"], r["batch_id"], r["source_uri"]) for r in out]
    for column in LEDGER_SEALED:
        clear = open_values([r.get(column) for r in out], vault_key, column, names)
        for row, value in zip(out, clear, strict=True):
            row[column] = value
    return out


def _row_names(table: pa.Table) -> list[str]:
    columns = [table.column(k).to_pylist() for k in ROW_KEYS]
    return ["|".join("" if v is None else str(v) for v in row) for row in zip(*columns,
                                                                             strict=True)]


def _replace(table: pa.Table, columns: Sequence[str], vault_key: bytes, encrypt: bool
             ) -> pa.Table:
    import pyarrow as pa

    rows = _row_names(table)
    for name in columns:
        if name not in table.column_names:
            continue
        values = table.column(name).to_pylist()
        done = (encrypt_values if encrypt else decrypt_values)(values, vault_key, name, rows)
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(done, pa.string()))
    return table


def encrypt_columns(table: pa.Table, vault_key: bytes,
                    columns: Sequence[str] = MAPPING_IDENTIFYING) -> pa.Table:
    """``table`` with ``columns`` encrypted row by row and :data:`CLEARED` emptied (the
    others as they were)."""
    import pyarrow as pa

    for name in CLEARED:
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, pa.nulls(table.num_rows, table.field(i).type))
    return _replace(table, columns, vault_key, True)


def decrypt_columns(table: pa.Table, vault_key: bytes,
                    columns: Sequence[str] = MAPPING_IDENTIFYING) -> pa.Table:
    """``table`` with ``columns`` decrypted (every row must be under ``vault_key``)."""
    return _replace(table, columns, vault_key, False)


def rows_under(table: pa.Table, vault_key: bytes, column: str = "original_sop_uid"
               ) -> pa.Table:
    """The rows of ``table`` encrypted under ``vault_key`` (another project's key, or
    rows loaded in clear, are not this key's to open)."""
    import pyarrow as pa

    kid = vault_key_id(vault_key)
    keep = [key_id_of(v) == kid for v in table.column(column).to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


def rotate_mapping(warehouse: Warehouse, old_key: bytes, new_key: bytes, scratch: Path) -> int:
    """Re-encrypt the ``deid_mapping`` rows under ``old_key`` with ``new_key``: every one
    of them opened first (nothing changes when one does not open), then each of their
    runs' rows replaced at once; rows under other keys are left alone. Returns the rows
    re-encrypted."""
    import pyarrow.parquet as pq

    every = warehouse.query("SELECT * FROM deid_mapping")
    table = rows_under(every, old_key)
    if not table.num_rows:
        if every.num_rows:
            raise VaultError(f"no deid_mapping row is encrypted under the old vault key (key "
                             f"id {vault_key_id(old_key)}): nothing rotated")
        return 0
    rotated = encrypt_columns(decrypt_columns(table, old_key), new_key)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = scratch / ".deid_mapping.rotated.parquet"
    try:
        pq.write_table(rotated, path)  # ciphertext and pseudonyms only
        return warehouse.load_parquet("deid_mapping", str(path), mode="replace_partition")
    finally:
        path.unlink(missing_ok=True)


def rotate_withdrawals(warehouse: Warehouse, old_key: bytes, new_key: bytes) -> int:
    """Re-encrypt and re-index the ``deid_withdrawals`` rows under ``old_key`` with
    ``new_key`` (all opened first). The new rows are written before the old ones are
    deleted: a withdrawal is never lost in between (a crash leaves both, and rotating
    again finishes). Returns the rows rotated."""
    every = warehouse.query("SELECT * FROM deid_withdrawals").to_pylist()
    old_id = vault_key_id(old_key)
    rows = [r for r in every if key_id_of(r.get("original_value")) == old_id]
    if not rows:
        return 0
    clear = [decrypt_values([r["original_value"]], old_key, "original_value",
                            [r["original_index"]])[0] for r in rows]
    rotated = []
    for row, value in zip(rows, clear, strict=True):
        index = blind_index(new_key, f"{row['project']}|{row['level']}", str(value))
        rotated.append({**row, "original_index": index, "original_value": encrypt_values(
            [value], new_key, "original_value", [index])[0]})
    warehouse.insert_rows("deid_withdrawals", rotated,
                          key_columns=("project", "level", "original_index"))
    warehouse.delete_in("deid_withdrawals", "original_index",
                        [r["original_index"] for r in rows])
    return len(rows)


def _ledger_key_ids(row: Mapping[str, Any]) -> set[str | None]:
    """The vault key ids a ledger row's values name (``{None}`` for a row in clear)."""
    return {key_id_of(row.get(c)) for c in LEDGER_SEALED if row.get(c)} or {None}


def rotate_ledger(warehouse: Warehouse, old_key: bytes, new_key: bytes, scratch: Path) -> int:
    """Re-encrypt and re-index the ``deid_ledger`` rows under ``old_key`` with ``new_key``,
    and encrypt the rows in clear (a ledger from before its columns were encrypted) of the
    projects that are the old key's (they have ledger rows under it, or batches whose
    ``deid_mapping`` rows are). All of them are opened first (nothing changes when one does
    not open), then their batches' rows are replaced in one load; rows under other keys
    are left alone. Needs the table's index columns (``ensure_schema``). Returns the rows
    rotated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = f"{_VERSION}.{vault_key_id(old_key)}."
    projects = sorted(set(warehouse.run_cohort(
        "SELECT DISTINCT project FROM deid_ledger WHERE STARTS_WITH(COALESCE(sop_uid, ''), "
        "@prefix) OR STARTS_WITH(COALESCE(output_path, ''), @prefix) UNION DISTINCT "
        "SELECT DISTINCT l.project FROM deid_ledger AS l JOIN (SELECT DISTINCT run_id FROM "
        "deid_mapping WHERE STARTS_WITH(COALESCE(original_sop_uid, ''), @prefix)) AS m "
        "ON l.batch_id = m.run_id", {"prefix": prefix}).column(0).to_pylist()))
    if not projects:
        return 0
    from dicom_deid.warehouse.base import Typed

    table = warehouse.run_cohort(
        "SELECT * FROM deid_ledger WHERE batch_id IN (SELECT DISTINCT batch_id FROM "
        "deid_ledger WHERE project IN UNNEST(@projects))",
        {"projects": Typed("ARRAY<STRING>", projects)})
    missing = [c for c in LEDGER_INDEXES.values() if c not in table.column_names]
    if missing:
        raise VaultError(f"deid_ledger has no {', '.join(missing)} column(s): update its "
                         "schema first (ensure_schema)")
    rows = table.to_pylist()
    old_id, mine = vault_key_id(old_key), set(projects)
    chosen = [i for i, r in enumerate(rows) if _ledger_key_ids(r) == {old_id} or (
        _ledger_key_ids(r) == {None} and r["project"] in mine)]
    if not chosen:
        return 0
    opened = open_ledger([rows[i] for i in chosen], old_key)  # all open, or none changes
    for i, row in zip(chosen, seal_ledger(opened, new_key), strict=True):
        rows[i] = row
    batches = {rows[i]["batch_id"] for i in chosen}
    rotated = pa.Table.from_pylist([r for r in rows if r["batch_id"] in batches],
                                   schema=table.schema)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = scratch / ".deid_ledger.rotated.parquet"
    try:
        pq.write_table(rotated, path)  # ciphertext, blind indexes and landing paths only
        warehouse.load_parquet("deid_ledger", str(path), mode="replace_partition")
    finally:
        path.unlink(missing_ok=True)
    return len(chosen)
