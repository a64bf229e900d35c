"""The re-identification audit: an append-only JSON-lines log whose records are chained
by HMACs under the vault key, so a changed, removed, inserted or reordered record shows.

Each record says when, who, why, which kinds of identifier and how many were asked for
and found, and a digest of the request -- never the identifiers themselves. Its ``mac``
is HMAC-SHA256, under the vault key's ``audit`` subkey, over the previous record's mac
and the record's canonical JSON: nobody without the vault key can rewrite the chain
after an edit. Removing the *last* records leaves a valid chain, so a sidecar head file
(``<log>.head``, MAC'd too) holds the last record's seq and mac. What no log can show:
a rollback of both the log and its head to an earlier copy; keep copies elsewhere (the
warehouse table ``deid_audit``) when that matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dicom_deid.errors import DicomDeidError

from .keys import derive

__all__ = [
    "KINDS",
    "AuditEntry",
    "AuditError",
    "AuditReport",
    "append",
    "head_path",
    "rekey",
    "request_digest",
    "verify",
]

KINDS = ("patient_id", "accession", "study_uid", "series_uid", "sop_uid")
"""The kinds of identifier a re-identification may ask for."""
MAX_REQUESTER = 100
MAX_PURPOSE = 300
MAX_SOURCE = 1000
FIELDS = ("seq", "at", "requester", "purpose", "kinds", "asked", "found", "request_sha256",
          "source", "vault_key_id", "prev", "mac")
"""A record's fields, all required, no others."""
_HEAD_FIELDS = ("seq", "mac", "head_mac")
_REQUEST_DOMAIN = b"dicom-deid/audit-request/v1\n"
_HEAD_DOMAIN = b"dicom-deid/audit-head/v1\n"
_HEX = frozenset("0123456789abcdef")
_CHUNK = 4096


class AuditError(DicomDeidError):
    """An audit record was refused (a bad entry, a log that is not intact) or the log
    cannot be read or written. Messages never hold a requester, purpose or identifier."""


@dataclass(frozen=True)
class AuditEntry:
    """One re-identification, as the audit records it (the values asked are not here)."""

    requester: str
    """Who asked (required, printable, at most 100 characters)."""
    purpose: str
    """Why (required, printable, at most 300 characters)."""
    kinds: Mapping[str, int]
    """Identifier kind (one of :data:`KINDS`) -> how many of that kind were asked for."""
    found: int
    """How many of the asked identifiers were found."""
    request_sha256: str
    """:func:`request_digest` of the request (64 hex digits)."""
    source: str
    """What was read: a mapping file's name or a warehouse URL without credentials."""
    vault_key_id: str
    """The fingerprint of the vault key that protects what was read."""
    at: datetime | None = field(default=None)
    """When (timezone-aware); None: now, in UTC."""


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify` found: ``ok``, how many records the log holds, and when not
    ok the first bad record's 1-based line (None when no line can be named) and why."""

    ok: bool
    records: int
    first_bad: int | None = None
    problem: str = ""


def head_path(path: Path) -> Path:
    """The head file of the audit log ``path``: ``<path>.head``."""
    path = Path(path)
    return path.with_name(path.name + ".head")


def request_digest(kind_to_values: Mapping[str, Iterable[str]], *,
                   vault_key: bytes | None = None) -> str:
    """A digest of what was asked, to record instead of the values: SHA-256 over a
    canonical JSON (kinds sorted, each kind's values sorted), so the order of the values
    does not matter and the same value under another kind differs.

    Pass ``vault_key`` to key it (HMAC-SHA256 under the vault key's ``audit-request``
    subkey): a plain hash of a single patient ID or accession number is reversed by
    trying every number of its format, a keyed one only by whoever holds the vault key.
    """
    canon: dict[str, list[str]] = {}
    for kind, values in kind_to_values.items():
        if kind not in KINDS:
            raise AuditError(f"unknown identifier kind {kind!r}: expected one of "
                             f"{', '.join(KINDS)}")
        listed = list(values)
        if not all(isinstance(v, str) for v in listed):
            raise AuditError(f"the values asked for as {kind} must be strings")
        if listed:
            canon[kind] = sorted(listed)
    data = _REQUEST_DOMAIN + _canonical(canon)
    if vault_key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(derive(vault_key, "audit-request"), data, hashlib.sha256).hexdigest()


def append(path: Path, entry: AuditEntry, vault_key: bytes) -> dict[str, Any]:
    """Append one record for ``entry`` to the audit log ``path`` (created mode 0600) and
    update its head file; returns the record written.

    Holds an exclusive lock on the log from reading its last record to writing the head,
    so concurrent appenders never fork the chain. Refuses (:class:`AuditError`) to extend
    a log whose last record or head is not intact: extending it would hide the damage.
    """
    path = Path(path)
    record = _record_body(entry)
    mac_key = derive(vault_key, "audit")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        prev_seq, prev_mac = _chain_tip(fd, size, path, mac_key)
        record = {"seq": prev_seq + 1, **record, "prev": prev_mac}
        record["mac"] = _record_mac(mac_key, record)
        line = _canonical(record) + b"\n"
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # no torn line: the next append refuses one
                os.ftruncate(fd, size)
            raise AuditError(f"cannot write audit log {path}: {exc.strerror}") from None
        if size == 0:
            _fsync_dir(path.parent)
        _write_head(path, record["seq"], record["mac"], mac_key)
    finally:
        os.close(fd)  # releases the lock
    return record


def verify(path: Path, vault_key: bytes) -> AuditReport:
    """Check the whole audit log ``path`` and its head file under ``vault_key``: every
    record's MAC, the sequence, the chain and the head. Names the first bad record.

    Raises :class:`AuditError` when there is neither a log nor a head at ``path`` (a
    wrong path rather than a removed log) or the log cannot be read.
    """
    path = Path(path)
    mac_key = derive(vault_key, "audit")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        head = _read_head_checked(path, mac_key)
        if head is None:
            raise AuditError(f"no audit log at {path}") from None
        if isinstance(head, str):
            return AuditReport(False, 0, None, head)
        return AuditReport(False, 0, 1, f"the log is missing but its head file says "
                                        f"{head[0]} record(s)")
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # no append is half done while we read
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        head = _read_head_checked(path, mac_key)
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _verify_bytes(data, head, mac_key, head_path(path).name)


# -- records ---------------------------------------------------------------------------

def rekey(path: Path, old_key: bytes, new_key: bytes) -> int:
    """Chain an intact audit log under a new vault key (``vault rotate``): every record
    is checked under the old key first, then its ``prev``/``mac`` recomputed under the
    new one, content unchanged (each record keeps the key id it was made under); the
    log is replaced atomically under its lock. Returns the records re-chained."""
    path = Path(path)
    report = verify(path, old_key)
    if not report.ok:
        where = f"record {report.first_bad}: " if report.first_bad else ""
        raise AuditError(f"the audit log does not verify under the old vault key "
                         f"({where}{report.problem}): not re-chained")
    mac_key = derive(new_key, "audit")
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        records = [json.loads(line) for line in path.read_bytes().splitlines() if line]
        prev, lines = "", []
        for record in records:
            record["prev"] = prev
            record["mac"] = prev = _record_mac(mac_key, record)
            lines.append(_canonical(record) + b"\n")
        tmp = path.with_name(f".{path.name}.rekey.tmp")
        tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(tmp_fd, b"".join(lines))
            os.fsync(tmp_fd)
        finally:
            os.close(tmp_fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if records:
            _write_head(path, records[-1]["seq"], prev, mac_key)
    finally:
        os.close(fd)
    return len(records)


def _canonical(obj: Any) -> bytes:
    """The one JSON spelling the MACs are computed over (and the log holds)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _record_mac(mac_key: bytes, record: Mapping[str, Any]) -> str:
    """HMAC-SHA256 over the previous mac and the record without its own mac."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(mac_key, record["prev"].encode() + _canonical(body),
                    hashlib.sha256).hexdigest()


def _head_mac(mac_key: bytes, seq: int, mac: str) -> str:
    return hmac.new(mac_key, _HEAD_DOMAIN + _canonical({"mac": mac, "seq": seq}),
                    hashlib.sha256).hexdigest()


def _is_hex(value: object, length: int | None = None) -> bool:
    return (isinstance(value, str) and bool(value) and set(value) <= _HEX
            and (length is None or len(value) == length))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: object, name: str, limit: int) -> str:
    """A required, printable, bounded text field (never echoed in the message)."""
    if not isinstance(value, str) or not value.strip():
        raise AuditError(f"the {name} is required")
    if len(value) > limit:
        raise AuditError(f"the {name} is too long ({len(value)} characters; at most {limit})")
    if not value.isprintable():
        raise AuditError(f"the {name} holds a line break or another unprintable character")
    return value


def _record_body(entry: AuditEntry) -> dict[str, Any]:
    """The record's fields from ``entry``, checked (seq, prev and mac come later)."""
    requester = _text(entry.requester, "requester", MAX_REQUESTER)
    purpose = _text(entry.purpose, "purpose", MAX_PURPOSE)
    if not isinstance(entry.kinds, Mapping) or not entry.kinds:
        raise AuditError("kinds must map at least one identifier kind to a count")
    kinds: dict[str, int] = {}
    for kind, count in entry.kinds.items():
        if kind not in KINDS:
            raise AuditError(f"unknown identifier kind {kind!r}: expected one of "
                             f"{', '.join(KINDS)}")
        if not _is_count(count):
            raise AuditError(f"the count of {kind} must be a whole number >= 0")
        kinds[kind] = count
    asked = sum(kinds.values())
    if asked == 0:
        raise AuditError("a request asks for at least one identifier")
    if not _is_count(entry.found) or entry.found > asked:
        raise AuditError(f"found must be a whole number from 0 to the {asked} asked")
    if not _is_hex(entry.request_sha256, 64):
        raise AuditError("request_sha256 must be 64 lower-case hex digits (request_digest)")
    source = _text(entry.source, "source", MAX_SOURCE)
    try:
        parts = urlsplit(source)
        credentials = bool(parts.username or parts.password)
    except ValueError:
        credentials = False
    if credentials:
        raise AuditError("the source must not carry credentials (user or password)")
    if not _is_hex(entry.vault_key_id) or len(entry.vault_key_id) > 64:
        raise AuditError("vault_key_id must be the key's hex fingerprint (vault_key_id)")
    at = entry.at if entry.at is not None else datetime.now(UTC)
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise AuditError("at must be a timezone-aware datetime")
    return {"at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "requester": requester, "purpose": purpose, "kinds": kinds, "asked": asked,
            "found": entry.found, "request_sha256": entry.request_sha256,
            "source": source, "vault_key_id": entry.vault_key_id}


def _parse_record(line: bytes) -> dict[str, Any] | str:
    """The record on ``line``, or why it is not one (PHI-free: names no value)."""
    try:
        obj = json.loads(line.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError):
        return "not a JSON record"
    if not isinstance(obj, dict):
        return "not a JSON record"
    if set(obj) != set(FIELDS):
        missing = sorted(set(FIELDS) - set(obj))
        extra = len(set(obj) - set(FIELDS))
        what = []
        if missing:
            what.append(f"missing {', '.join(missing)}")
        if extra:
            what.append(f"{extra} unexpected field(s)")
        return f"malformed record ({'; '.join(what)})"
    if not (isinstance(obj["seq"], int) and not isinstance(obj["seq"], bool)
            and obj["seq"] >= 1):
        return "malformed record (seq is not a positive whole number)"
    if not (obj["prev"] == "" or _is_hex(obj["prev"], 64)) or not _is_hex(obj["mac"], 64):
        return "malformed record (prev or mac is not a 64-digit hex MAC)"
    return obj


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


# -- verify ----------------------------------------------------------------------------

def _verify_bytes(data: bytes, head: tuple[int, str] | str | None, mac_key: bytes,
                  head_name: str) -> AuditReport:
    """Verify a log's bytes and its head (parsed and MAC-checked, or why not, or None)."""
    lines = data.split(b"\n")
    complete = lines[-1] == b""
    if complete:
        lines.pop()
    n = len(lines)
    parsed = [_parse_record(line) for line in lines]
    expected, prev_mac = 1, ""
    seen: dict[str, int] = {}  # mac -> line
    for i, (line, rec) in enumerate(zip(lines, parsed, strict=True), start=1):
        problem = rec if isinstance(rec, str) else _record_problem(
            i, line, rec, mac_key, expected, prev_mac, seen, parsed)
        if problem:
            return AuditReport(False, n, i, problem)
        assert isinstance(rec, dict)
        seen[rec["mac"]] = i
        expected, prev_mac = rec["seq"] + 1, rec["mac"]
    if not complete:
        return AuditReport(False, n, n, "incomplete last line (no line end): an interrupted "
                                        "write or an edit")
    return _head_problem(head, n, expected - 1, prev_mac, head_name)


def _record_problem(i: int, line: bytes, rec: dict[str, Any], mac_key: bytes, expected: int,
                    prev_mac: str, seen: Mapping[str, int],
                    parsed: list[dict[str, Any] | str]) -> str | None:
    """What is wrong with the record at line ``i`` (None: nothing), given the chain so far:
    its MAC first (a changed or forged record), then its place in the chain."""
    if not hmac.compare_digest(_record_mac(mac_key, rec), rec["mac"]):
        if i == 1:
            return ("MAC mismatch: wrong vault key or changed record (a wrong key fails at "
                    "the first record)")
        return ("MAC mismatch: changed record, or one not written with this vault key (the "
                "key checks out on the records before it)")
    if _canonical(rec) != line:
        return "changed record: same content, but not the bytes written"
    seq = rec["seq"]
    if seq != expected:
        if rec["mac"] in seen:
            return f"duplicate of the record at line {seen[rec['mac']]}"
        later = next((j for j, r in enumerate(parsed[i:], start=i + 1)
                      if isinstance(r, dict) and r["seq"] == expected), None)
        if later is not None:
            return (f"out of order: seq {seq} where seq {expected} was expected (seq "
                    f"{expected} is at line {later})")
        if seq < expected:
            return f"out of order: seq {seq} where seq {expected} was expected"
        return f"record(s) removed before it: seq {seq} where seq {expected} was expected"
    if rec["prev"] != prev_mac:
        return "does not follow the record before it (prev does not match)"
    return None


def _head_problem(head: tuple[int, str] | str | None, n: int, last: int, last_mac: str,
                  head_name: str) -> AuditReport:
    """The report once every line checked out: does the head name the last record?"""
    if isinstance(head, str):
        return AuditReport(False, n, None, head)
    if head is None:
        if n == 0:
            return AuditReport(True, 0)
        return AuditReport(False, n, None, f"the head file {head_name} is missing: cannot "
                                           "tell whether the last records were removed")
    head_seq, head_mac = head
    if head_seq > last:
        return AuditReport(False, n, last + 1, f"record(s) removed from the end: the head "
                                               f"file says {head_seq} record(s), the log "
                                               f"ends at seq {last}")
    if head_seq < last:
        return AuditReport(False, n, head_seq + 1,
                           f"the head file says {head_seq} record(s), the log has {last}: "
                           "an append was interrupted (the next append repairs it) or the "
                           "head file was rolled back")
    if not hmac.compare_digest(head_mac, last_mac):
        return AuditReport(False, n, n, "the last record is not the one the head file names")
    return AuditReport(True, n)


def _read_head(path: Path) -> bytes | None:
    try:
        return head_path(path).read_bytes()
    except FileNotFoundError:
        return None


def _read_head_checked(path: Path, mac_key: bytes) -> tuple[int, str] | str | None:
    """(seq, mac) from the head file; None when there is none; a problem when it is not
    intact (not JSON, other fields, a MAC that does not match)."""
    data = _read_head(path)
    if data is None:
        return None
    name = head_path(path).name
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return f"the head file {name} is not JSON"
    if (not isinstance(obj, dict) or set(obj) != set(_HEAD_FIELDS)
            or not isinstance(obj["seq"], int) or isinstance(obj["seq"], bool)
            or not _is_hex(obj["mac"], 64) or not isinstance(obj["head_mac"], str)):
        return f"the head file {name} is malformed"
    if not hmac.compare_digest(_head_mac(mac_key, obj["seq"], obj["mac"]), obj["head_mac"]):
        return (f"MAC mismatch in the head file {name}: wrong vault key or changed head "
                "file")
    return obj["seq"], obj["mac"]


# -- append ----------------------------------------------------------------------------

def _chain_tip(fd: int, size: int, path: Path, mac_key: bytes) -> tuple[int, str]:
    """(seq, mac) of the log's last record, checked against its MAC and the head file;
    (0, "") for an empty log. Raises :class:`AuditError` when either is not intact."""
    refuse = (f"refusing to extend the audit log {path}: {{}}; check it with `dicom-deid "
              "audit verify`")
    if size == 0:
        empty_head = _read_head_checked(path, mac_key)
        if isinstance(empty_head, str):
            raise AuditError(refuse.format(empty_head))
        if empty_head is not None and empty_head[0] > 0:
            raise AuditError(refuse.format(
                f"the log is empty but its head file says {empty_head[0]} record(s)"))
        return 0, ""
    line = _last_line(fd, size)
    if line is None:
        raise AuditError(refuse.format("its last line is incomplete"))
    rec = _parse_record(line)
    if isinstance(rec, str):
        raise AuditError(refuse.format(f"its last line is {rec}"))
    if not hmac.compare_digest(_record_mac(mac_key, rec), rec["mac"]):
        raise AuditError(refuse.format(
            "its last record does not match its MAC (wrong vault key or changed record)"))
    head = _read_head_checked(path, mac_key)
    if isinstance(head, str):
        raise AuditError(refuse.format(head))
    if head is None:
        raise AuditError(refuse.format(f"its head file {head_path(path).name} is missing"))
    head_seq, head_mac = head
    intact = head_seq == rec["seq"] and hmac.compare_digest(head_mac, rec["mac"])
    interrupted = head_seq == rec["seq"] - 1 and hmac.compare_digest(head_mac, rec["prev"])
    if not (intact or interrupted):
        raise AuditError(refuse.format(
            f"its head file says record {head_seq}, its last record is {rec['seq']}"))
    return rec["seq"], rec["mac"]


def _last_line(fd: int, size: int) -> bytes | None:
    """The file's last line without its line end; None when the file does not end with
    one (a torn write)."""
    if os.pread(fd, 1, size - 1) != b"\n":
        return None
    pos = size - 1  # the last line ends here
    tail = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        cut = tail.rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1:]
    return tail


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_head(path: Path, seq: int, mac: str, mac_key: bytes) -> None:
    """Replace the head file atomically (a temporary file, fsync, rename, fsync the
    folder): a crash leaves the old head or the new one, never half of one."""
    target = head_path(path)
    data = _canonical({"head_mac": _head_mac(mac_key, seq, mac), "mac": mac, "seq": seq})
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    except OSError as exc:
        raise AuditError(f"cannot write the audit head file {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise AuditError(f"cannot write the audit head file {target}: {exc.strerror}") from None
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a created or renamed entry of ``folder`` durable (best effort)."""
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
