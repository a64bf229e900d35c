"""The vault key: the secret that protects the mapping, apart from the pseudonym key.

The pseudonym key makes pseudonyms; the vault key encrypts the original identifiers
they replace (and keys the audit's hash chain). A site may give them to different
people: whoever holds only the pseudonym key can make pseudonyms for linkage but cannot
read the mapping; whoever holds only the vault key can read the mapping but cannot make
new pseudonyms. Same formats as the pseudonym key (``dicom-deid keygen`` writes either);
no default, ever.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dicom_deid.deid.keys import load_key
from dicom_deid.keyfile import key_fingerprint

__all__ = ["VAULT_KEY_ENV", "derive", "load_vault_key", "vault_key_id"]

VAULT_KEY_ENV = "DICOM_DEID_VAULT_KEY"
"""Environment variable holding the vault key (hex or base64) when no key file is given."""
_ID_DOMAIN = b"dicom-deid/vault-key-id/v1"


def load_vault_key(key_file: Path | None = None, *,
                   environ: dict[str, str] | None = None) -> bytes:
    """The vault key from ``key_file`` if given, else from ``$DICOM_DEID_VAULT_KEY``."""
    return load_key(key_file, environ=environ, env_var=VAULT_KEY_ENV, what="vault key",
                    how="pass --vault-key-file or set ${var} (create one with "
                        "`dicom-deid keygen --vault KEYFILE`)")


def vault_key_id(key: bytes) -> str:
    """A public fingerprint of a vault key (16 hex digits): tells keys apart in files and
    audits, and cannot be turned back into the key."""
    return key_fingerprint(key, _ID_DOMAIN)


def derive(key: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of the vault key for one purpose (HKDF-SHA256): the key that wraps
    data keys and the key that chains the audit never coincide."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"dicom-deid/vault/{purpose}/v1".encode()).derive(key)
