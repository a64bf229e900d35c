"""Files sealed under the vault key: an AES-256-GCM envelope with a per-file data key.

A sealed file is one line of JSON header, then the ciphertext::

    DDVAULT1 {"alg": "A256GCM", "kek": <vault key id>, "dek": <wrapped data key>, ...}\\n
    <AES-256-GCM ciphertext of the file, tag included>

The data key is fresh for every file and wrapped (AES-256-GCM) under a subkey of the
vault key; the header is the ciphertext's associated data, so neither can be changed
unnoticed. Without the vault key nothing of the content can be read; deleting the vault
key makes every file sealed under it unreadable for good (crypto-shredding). Built on
``cryptography``'s AEAD, nothing hand-rolled.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_deid.dicom.files import write_atomic
from dicom_deid.errors import KeyConfigError

from .keys import derive, vault_key_id

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MAGIC", "VaultError", "is_sealed", "open_sealed", "read_sealed_table", "reseal",
           "seal", "seal_table"]

MAGIC = b"DDVAULT1 "
_WRAP = "wrap"


class VaultError(KeyConfigError):
    """A sealed file that cannot be opened: the wrong vault key, or a damaged file."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal(data: bytes, vault_key: bytes) -> bytes:
    """``data`` sealed under ``vault_key`` (a fresh data key and nonces every call)."""
    dek = AESGCM.generate_key(bit_length=256)
    wrap_nonce, nonce = os.urandom(12), os.urandom(12)
    kek_id = vault_key_id(vault_key)
    wrapped = AESGCM(derive(vault_key, _WRAP)).encrypt(wrap_nonce, dek, kek_id.encode())
    header = MAGIC + json.dumps(
        {"alg": "A256GCM", "kek": kek_id, "dek": _b64(wrapped), "wrap_nonce": _b64(wrap_nonce),
         "nonce": _b64(nonce)}, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return header + AESGCM(dek).encrypt(nonce, data, header)


def is_sealed(path: Path) -> bool:
    """Whether the file at ``path`` is a sealed envelope."""
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def _header(blob: bytes) -> tuple[dict[str, str], bytes, bytes]:
    if not blob.startswith(MAGIC):
        raise VaultError("not a sealed file (it was written without a vault key)")
    end = blob.find(b"\n")
    if end < 0:
        raise VaultError("a damaged sealed file: its header has no end")
    header = blob[:end + 1]
    try:
        fields = json.loads(header[len(MAGIC):])
    except ValueError:
        raise VaultError("a damaged sealed file: its header is not readable") from None
    return fields, header, blob[end + 1:]


def open_sealed(blob: bytes, vault_key: bytes) -> bytes:
    """The content of a sealed envelope; :class:`VaultError` for the wrong key or a
    changed byte (the two cannot be told apart, by design)."""
    fields, header, body = _header(blob)
    if fields.get("kek") != vault_key_id(vault_key):
        raise VaultError(f"sealed under another vault key (key id {fields.get('kek')!s:.16}, "
                         f"not {vault_key_id(vault_key)})")
    try:
        dek = AESGCM(derive(vault_key, _WRAP)).decrypt(
            base64.b64decode(fields["wrap_nonce"]), base64.b64decode(fields["dek"]),
            str(fields["kek"]).encode())
        return AESGCM(dek).decrypt(base64.b64decode(fields["nonce"]), body, header)
    except (InvalidTag, KeyError, ValueError):
        raise VaultError("a sealed file that does not open with this vault key: a wrong "
                         "key or a changed byte") from None


def reseal(path: Path, old_key: bytes, new_key: bytes) -> None:
    """Re-encrypt one sealed file under ``new_key`` (a fresh data key), in place and
    atomically; the old key opens nothing of it afterwards."""
    data = open_sealed(Path(path).read_bytes(), old_key)
    write_atomic(Path(path), seal(data, new_key))
    os.chmod(path, 0o600)


def seal_table(table: pa.Table, vault_key: bytes) -> bytes:
    """An Arrow table as sealed Parquet (never written in clear, not even to a
    temporary file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return seal(sink.getvalue().to_pybytes(), vault_key)


def read_sealed_table(path: Path, vault_key: bytes) -> pa.Table:
    """A sealed Parquet file's table, opened in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(open_sealed(Path(path).read_bytes(), vault_key)))
