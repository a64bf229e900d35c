"""Secret keys as files and environment variables: the one parser every kind of key shares.

A key is 32+ random bytes written as hex by ``dicom-deid keygen`` (base64 or raw bytes
read too). Readable text that is neither is a passphrase and is refused. No kind of key
ever has a default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from dicom_deid.errors import KeyConfigError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "generate_key_file", "key_fingerprint", "load_key",
           "parse_key"]

KEY_ENV = "DICOM_DEID_KEY"
"""Environment variable holding the pseudonym key (hex or base64) when no file is given."""
MIN_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 64 * 1024
"""A key file larger than this is no key file (``keygen`` writes 65 bytes)."""

log = logging.getLogger(__name__)
log.setLevel(logging.WARNING)  # a key open to others is said whatever the verbosity


def parse_key(text_or_bytes: bytes, *, hex_only: bool = False) -> bytes:
    """Decode a key given as hex (what ``dicom-deid keygen`` writes), base64, or raw
    binary bytes; enforce the minimum length. Readable text that is neither hex nor
    base64 is a passphrase, not a key, and is refused: a password of 32 characters has
    far less than 32 bytes of entropy. ``hex_only`` (an Airflow connection's password)
    accepts the keygen format alone."""
    stripped = text_or_bytes.strip()
    key: bytes | None = None
    try:
        text: str | None = stripped.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            if hex_only:
                raise KeyConfigError(
                    "the key must be the hex text `dicom-deid keygen` writes") from None
            try:
                key = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise KeyConfigError(
                    "the key is readable text but neither hex nor base64: a passphrase "
                    "is not a key; create one with `dicom-deid keygen KEYFILE`") from None
    elif hex_only:
        raise KeyConfigError("the key must be the hex text `dicom-deid keygen` writes")
    if key is None:
        key = text_or_bytes  # binary: raw key bytes
    if len(key) < MIN_KEY_BYTES:
        raise KeyConfigError(
            f"the de-identification key must hold at least {MIN_KEY_BYTES} bytes "
            f"(got {len(key)}); create one with `dicom-deid keygen KEYFILE`"
        )
    return key


def load_key(key_file: Path | None = None, *, environ: dict[str, str] | None = None,
             env_var: str = KEY_ENV, what: str = "de-identification key",
             how: str = "pass --key-file or set ${var} (create a key with `dicom-deid "
                        "keygen KEYFILE`)") -> bytes:
    """The key from ``key_file`` if given, else from ``$DICOM_DEID_KEY`` (``env_var``);
    never a default. ``what`` and ``how`` word the refusal for another kind of key."""
    if key_file is not None:
        return parse_key(_read_key_file(Path(key_file), what))
    env = os.environ if environ is None else environ
    value = env.get(env_var)
    if not value:
        raise KeyConfigError(f"no {what}: {how.replace('{var}', env_var)}")
    return parse_key(value.encode())


def _read_key_file(path: Path, what: str) -> bytes:
    """The bytes of a key file: a regular file (a link to one is followed) of at most
    :data:`MAX_KEY_FILE_BYTES`, opened without blocking (a FIFO or ``/dev/zero`` given by
    mistake is refused at once, never waited on nor read without end). A key file that
    group or others may read is used, with a warning logged (shown on the command line
    whatever its verbosity; naming the file, no key material)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise KeyConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyConfigError(f"{what} file {path} is not a regular file")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyConfigError(f"{what} file {path} is larger than "
                                 f"{MAX_KEY_FILE_BYTES // 1024} KiB: not a key file")
        os.set_blocking(fd, True)
        data = b""
        while len(data) <= MAX_KEY_FILE_BYTES and (
                more := os.read(fd, MAX_KEY_FILE_BYTES + 1 - len(data))):
            data += more
    except OSError as exc:
        raise KeyConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:  # grew while read
        raise KeyConfigError(f"{what} file {path} is larger than "
                             f"{MAX_KEY_FILE_BYTES // 1024} KiB: not a key file")
    if st.st_mode & 0o077:
        log.warning("%s file %s is open to group or others (mode %04o); a key should be "
                    "readable by its owner only: chmod 600 it", what, path,
                    stat.S_IMODE(st.st_mode))
    return data


def generate_key_file(path: Path, *, overwrite: bool = False) -> None:
    """Write a fresh 32-byte random key as hex, readable by the owner only."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyConfigError(
            f"{path} exists; refusing to overwrite a key (pseudonyms depend on it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")


def key_fingerprint(key: bytes, domain: bytes) -> str:
    """A public id of a key (16 hex digits: SHA-256 over an HMAC of ``domain`` under the
    key): tells keys apart in files, runs and audits, and cannot be turned back into the
    key. Each kind of key has its own ``domain``, so one key gives unrelated ids."""
    return hashlib.sha256(hmac.new(key, domain, hashlib.sha256).digest()).hexdigest()[:16]
