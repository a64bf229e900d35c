"""The re-identification audit: records chained by HMACs under the vault key, a head file
against truncation; ``verify`` names the first changed, removed, inserted, duplicated or
reordered record, a wrong key fails at record 1; concurrent appenders keep one chain; the
asked values are never written; ``dicom-deid audit verify`` exits 0/1/2."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import re
import stat
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dicom_deid.cli.audit_cmd import add_parser, run
from dicom_deid.vault.audit import (
    FIELDS,
    AuditEntry,
    AuditError,
    append,
    head_path,
    request_digest,
    verify,
)
from dicom_deid.vault.keys import VAULT_KEY_ENV, derive, vault_key_id

KEY = hashlib.sha256(b"audit test vault key").digest()
OTHER_KEY = hashlib.sha256(b"another vault key").digest()
T0 = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)


def entry(i: int = 0, **changes: Any) -> AuditEntry:
    """The i-th re-identification of a made-up series of requests."""
    fields: dict[str, Any] = {
        "requester": f"Dr. Requester {i}",
        "purpose": "clinical follow-up of an incidental finding",
        "kinds": {"study_uid": 2, "patient_id": 1},
        "found": 2,
        "request_sha256": hashlib.sha256(f"request {i}".encode()).hexdigest(),
        "source": "mapping.parquet.enc",
        "vault_key_id": vault_key_id(KEY),
        "at": T0 + timedelta(minutes=i),
    }
    fields.update(changes)
    return AuditEntry(**fields)


def make_log(folder: Path, n: int = 5, key: bytes = KEY) -> Path:
    """An audit log of ``n`` records in ``folder``."""
    path = folder / "audit.jsonl"
    for i in range(n):
        append(path, entry(i), key)
    return path


def subdir(folder: Path, name: str) -> Path:
    (folder / name).mkdir()
    return folder / name


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def spec_mac(key: bytes, record: dict[str, Any]) -> str:
    """The record MAC as the design states it, computed here independently."""
    body = {k: v for k, v in record.items() if k != "mac"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(derive(key, "audit"), record["prev"].encode() + canon.encode(),
                    hashlib.sha256).hexdigest()


def dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode() + b"\n"


# -- appending -------------------------------------------------------------------------

def test_five_records_verify(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    report = verify(path, KEY)
    assert report.ok, report.problem
    assert (report.records, report.first_bad, report.problem) == (5, None, "")


def test_record_fields_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    plus_two = timezone(timedelta(hours=2))
    written = [append(path, entry(i, at=datetime(2026, 6, 1, 14, i, tzinfo=plus_two)), KEY)
               for i in range(3)]
    on_disk = [json.loads(line) for line in read_lines(path)]
    assert on_disk == written
    for i, record in enumerate(written):
        assert set(record) == set(FIELDS)
        assert record["seq"] == i + 1
        assert record["prev"] == ("" if i == 0 else written[i - 1]["mac"])
        assert record["mac"] == spec_mac(KEY, record)
        assert record["at"] == f"2026-06-01T12:0{i}:00.000000+00:00"  # +02:00 -> UTC
        assert record["kinds"] == {"study_uid": 2, "patient_id": 1}
        assert (record["asked"], record["found"]) == (3, 2)
        assert record["requester"] == f"Dr. Requester {i}"
        assert record["source"] == "mapping.parquet.enc"
        assert record["vault_key_id"] == vault_key_id(KEY)
    head = json.loads(head_path(path).read_text())
    assert (head["seq"], head["mac"]) == (3, written[-1]["mac"])


def test_default_time_is_now_in_utc(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    record = append(tmp_path / "a.jsonl", entry(at=None), KEY)
    at = datetime.fromisoformat(record["at"])
    assert at.utcoffset() == timedelta(0)
    assert before <= at <= datetime.now(UTC)


def test_files_are_private(tmp_path: Path) -> None:
    path = make_log(tmp_path, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(head_path(path).stat().st_mode) == 0o600
    # no temporary head file left behind
    assert {p.name for p in tmp_path.iterdir()} == {"audit.jsonl", "audit.jsonl.head"}


def test_unicode_requester_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    append(path, entry(requester="Dr. Zoë Ångström-Øvergaard", purpose="tumour board — "
                       "Ärztliche Rückfrage"), KEY)
    append(path, entry(1), KEY)
    assert "Zoë".encode() in path.read_bytes()  # written as UTF-8, not \\u escapes
    assert verify(path, KEY).ok


def _bad_entries() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("empty requester", {"requester": ""}),
        ("blank requester", {"requester": "   "}),
        ("long requester", {"requester": "R" * 101}),
        ("requester with a line break", {"requester": "Dr. X\nseq 99"}),
        ("empty purpose", {"purpose": ""}),
        ("long purpose", {"purpose": "p" * 301}),
        ("purpose with a tab", {"purpose": "a\tb"}),
        ("no kinds", {"kinds": {}}),
        ("unknown kind", {"kinds": {"patient_name": 1}}),
        ("negative count", {"kinds": {"study_uid": -1, "patient_id": 2}}),
        ("count not whole", {"kinds": {"study_uid": 1.5}}),
        ("nothing asked", {"kinds": {"study_uid": 0}}),
        ("found more than asked", {"found": 4}),
        ("found negative", {"found": -1}),
        ("request digest not hex", {"request_sha256": "PAT12345"}),
        ("request digest upper case", {"request_sha256": "AB" * 32}),
        ("empty source", {"source": ""}),
        ("source with credentials", {"source": "bigquery://svc:s3cret@project/dataset"}),
        ("key id not hex", {"vault_key_id": "my key"}),
        ("naive time", {"at": datetime(2026, 6, 1, 9, 30)}),
    ]


@pytest.mark.parametrize(("what", "change"), _bad_entries(), ids=[w for w, _ in _bad_entries()])
def test_bad_entries_are_refused(tmp_path: Path, what: str, change: dict[str, Any]) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(AuditError) as caught:
        append(path, entry(**change), KEY)
    assert not path.exists() and not head_path(path).exists()
    for value in ("Dr. X", "PAT12345", "s3cret", "R" * 20):  # nothing echoed
        assert value not in str(caught.value)


def test_limits_are_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    append(path, entry(requester="R" * 100, purpose="p" * 300, found=0), KEY)
    assert verify(path, KEY).ok


# -- tampering -------------------------------------------------------------------------

EDITS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "seq": lambda r: r["seq"] + 10,
    "at": lambda r: "2026-06-01T09:31:00.000001+00:00",
    "requester": lambda r: "Dr. Someone Else",
    "purpose": lambda r: "clinical follow-up of an incidental finding.",
    "kinds": lambda r: {**r["kinds"], "patient_id": 0},
    "asked": lambda r: r["asked"] - 1,
    "found": lambda r: r["found"] - 1,
    "request_sha256": lambda r: "0" * 64,
    "source": lambda r: "other.parquet.enc",
    "vault_key_id": lambda r: vault_key_id(OTHER_KEY),
    "prev": lambda r: "f" * 64,
    "mac": lambda r: "0" + r["mac"][1:] if r["mac"][0] != "0" else "1" + r["mac"][1:],
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_changed_field_names_its_line(tmp_path: Path, name: str) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    record = json.loads(lines[2])
    record[name] = EDITS[name](record)
    lines[2] = dump(record)
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 5, 3)
    assert "changed record" in report.problem


def test_same_content_other_bytes_is_a_change(tmp_path: Path) -> None:
    """Re-spelled JSON (spaces, \\u escapes, CRLF) holds the same values: still flagged."""
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines[3] = json.dumps(json.loads(lines[3])).encode() + b"\n"  # default separators
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 4)
    assert "not the bytes written" in report.problem

    path = make_log(subdir(tmp_path, "crlf"), 3)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 1)


def test_deleted_middle_record(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    del lines[2]
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 4, 3)
    assert "removed before it" in report.problem


def test_deleted_first_record(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    write_lines(path, read_lines(path)[1:])
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 1)
    assert "removed before it: seq 2 where seq 1 was expected" in report.problem


def test_swapped_records(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 2)
    assert "out of order" in report.problem and "seq 2 is at line 3" in report.problem


def test_duplicated_record(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines.insert(2, lines[1])
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 6, 3)
    assert "duplicate of the record at line 2" in report.problem


def test_duplicated_last_record_with_the_head_moved_on(tmp_path: Path) -> None:
    """The duplicate is named even where the head cannot help (it is not the last line)."""
    path = make_log(tmp_path, 3)
    lines = read_lines(path)
    write_lines(path, [*lines, lines[0]])
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 4)
    assert "duplicate of the record at line 1" in report.problem


def test_inserted_forged_record(tmp_path: Path) -> None:
    """A record that fits the chain in every visible way but was MAC'd with another key."""
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    second = json.loads(lines[1])
    forged = {**second, "seq": 3, "prev": second["mac"], "requester": "Dr. Forger",
              "at": "2026-06-01T09:31:30.000000+00:00"}
    forged["mac"] = spec_mac(OTHER_KEY, forged)
    # the later records renumbered and rechained the same way, as a forger would
    rest = []
    prev = forged["mac"]
    for line in lines[2:]:
        record = json.loads(line)
        record.update(seq=record["seq"] + 1, prev=prev)
        record["mac"] = spec_mac(OTHER_KEY, record)
        prev = record["mac"]
        rest.append(dump(record))
    write_lines(path, [*lines[:2], dump(forged), *rest])
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 6, 3)
    assert "not written with this vault key" in report.problem


def test_forged_record_at_the_end(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    last = json.loads(read_lines(path)[-1])
    forged = {**last, "seq": 6, "prev": last["mac"]}
    forged["mac"] = spec_mac(OTHER_KEY, forged)
    with path.open("ab") as f:
        f.write(dump(forged))
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 6)
    assert "MAC mismatch" in report.problem


def test_removed_last_record(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    write_lines(path, read_lines(path)[:-1])
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 4, 5)
    assert "removed from the end" in report.problem


def test_removed_last_two_records(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    write_lines(path, read_lines(path)[:-2])
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 4)


def test_emptied_log(tmp_path: Path) -> None:
    path = make_log(tmp_path, 2)
    path.write_bytes(b"")
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 0, 1)


def test_removed_log_with_head_left(tmp_path: Path) -> None:
    path = make_log(tmp_path, 2)
    path.unlink()
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 1)
    assert "missing" in report.problem


def test_missing_head(tmp_path: Path) -> None:
    path = make_log(tmp_path, 3)
    head_path(path).unlink()
    report = verify(path, KEY)
    assert (report.ok, report.records, report.first_bad) == (False, 3, None)
    assert "head file audit.jsonl.head is missing" in report.problem


def test_changed_head(tmp_path: Path) -> None:
    path = make_log(tmp_path, 3)
    head = json.loads(head_path(path).read_text())
    head["seq"] = 2
    head_path(path).write_text(json.dumps(head))
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, None)
    assert "MAC mismatch in the head file" in report.problem


def test_wrong_key_fails_at_record_one(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    report = verify(path, OTHER_KEY)
    assert (report.ok, report.first_bad) == (False, 1)
    assert "wrong vault key or changed record" in report.problem


def test_a_line_that_is_not_json(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.first_bad, report.problem) == (False, 3, "not a JSON record")


@pytest.mark.parametrize("line", [b"\n", b"[1, 2]\n", b"\xff\xfe{}\n", b'{"seq": 3}\n'])
def test_other_lines_that_are_not_records(tmp_path: Path, line: bytes) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines.insert(2, line)
    write_lines(path, lines)
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 3)


def test_torn_last_line(tmp_path: Path) -> None:
    path = make_log(tmp_path, 5)
    path.write_bytes(path.read_bytes()[:-1])  # the final line end is gone
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 5)
    assert "incomplete last line" in report.problem


def test_empty_log_without_head_is_intact_and_no_log_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    assert verify(path, KEY) == verify(path, OTHER_KEY)
    assert verify(path, KEY).ok and verify(path, KEY).records == 0
    with pytest.raises(AuditError, match="no audit log"):
        verify(tmp_path / "elsewhere.jsonl", KEY)


# -- append refuses to extend a broken chain ---------------------------------------------

def test_append_refuses_a_torn_last_line(tmp_path: Path) -> None:
    path = make_log(tmp_path, 3)
    path.write_bytes(path.read_bytes()[:-20])
    before = path.read_bytes()
    with pytest.raises(AuditError, match="refusing to extend"):
        append(path, entry(9), KEY)
    assert path.read_bytes() == before


def test_append_refuses_a_changed_last_record(tmp_path: Path) -> None:
    path = make_log(tmp_path, 3)
    lines = read_lines(path)
    lines[-1] = lines[-1].replace(b"Dr. Requester 2", b"Dr. Requester 7")
    write_lines(path, lines)
    with pytest.raises(AuditError, match="does not match its MAC"):
        append(path, entry(9), KEY)
    with pytest.raises(AuditError, match="does not match its MAC"):
        append(make_log(subdir(tmp_path, "k"), 2), entry(9), OTHER_KEY)


def test_append_after_truncation_keeps_the_evidence(tmp_path: Path) -> None:
    """Appending over a truncated log would rewrite the head and hide the removal."""
    path = make_log(tmp_path, 5)
    write_lines(path, read_lines(path)[:-2])
    with pytest.raises(AuditError, match="head file says record 5, its last record is 3"):
        append(path, entry(9), KEY)
    assert verify(path, KEY).first_bad == 4
    head_path(path).unlink()
    with pytest.raises(AuditError, match=re.escape("head file audit.jsonl.head is missing")):
        append(path, entry(9), KEY)
    path.write_bytes(b"")  # emptied, and the head put back
    one = make_log(subdir(tmp_path, "h"), 1)
    head_path(path).write_bytes(head_path(one).read_bytes())
    with pytest.raises(AuditError, match="log is empty but its head file says 1"):
        append(path, entry(9), KEY)


def test_an_interrupted_append_is_repaired_by_the_next(tmp_path: Path) -> None:
    """A crash between the record and the head leaves the head one behind: verify says
    so, the next append (which checks the head names the record before) repairs it."""
    path = make_log(tmp_path, 4)
    old_head = head_path(path).read_bytes()
    append(path, entry(4), KEY)
    head_path(path).write_bytes(old_head)
    report = verify(path, KEY)
    assert (report.ok, report.first_bad) == (False, 5)
    assert "interrupted" in report.problem
    record = append(path, entry(5), KEY)
    assert record["seq"] == 6
    assert verify(path, KEY).ok


# -- concurrency -----------------------------------------------------------------------

def _append_many(path: str, worker: int, start: Any) -> None:
    """A process that waits for the others, then appends 10 records."""
    start.wait()
    for i in range(10):
        append(Path(path), entry(i, requester=f"worker {worker}"), KEY)


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_append_many, args=(str(path), w, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    report = verify(path, KEY)
    assert (report.ok, report.records) == (True, 40), report.problem
    records = [json.loads(line) for line in read_lines(path)]
    assert [r["seq"] for r in records] == list(range(1, 41))
    assert Counter(r["requester"] for r in records) == {f"worker {w}": 10 for w in range(4)}


# -- the request, never its values -------------------------------------------------------

def test_request_digest_ignores_order_within_a_kind() -> None:
    a = request_digest({"patient_id": ["PAT2", "PAT1"], "study_uid": ["1.2.3", "1.2.4"]})
    b = request_digest({"study_uid": ("1.2.4", "1.2.3"), "patient_id": iter(["PAT1", "PAT2"])})
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != request_digest({"patient_id": ["PAT1"], "study_uid": ["1.2.3", "1.2.4"]})
    assert request_digest({"patient_id": ["X"], "study_uid": []}) == request_digest(
        {"patient_id": ["X"]})


def test_request_digest_differs_across_kinds() -> None:
    assert request_digest({"patient_id": ["12345"]}) != request_digest({"accession": ["12345"]})
    assert request_digest({"patient_id": ["1", "2"]}) != request_digest(
        {"patient_id": ["1"], "accession": ["2"]})


def test_keyed_request_digest() -> None:
    """A plain digest of one short patient ID is found by trying every ID; a keyed one
    needs the vault key."""
    asked = {"patient_id": ["PAT12345"]}
    keyed = request_digest(asked, vault_key=KEY)
    assert keyed == request_digest({"patient_id": ("PAT12345",)}, vault_key=KEY)
    assert keyed != request_digest(asked)
    assert keyed != request_digest(asked, vault_key=OTHER_KEY)


def test_request_digest_refuses_unknown_kinds_and_non_text() -> None:
    with pytest.raises(AuditError, match="unknown identifier kind"):
        request_digest({"PatientName": ["DOE^JOHN"]})
    with pytest.raises(AuditError, match="must be strings"):
        request_digest({"patient_id": [12345]})  # type: ignore[list-item]


def test_asked_values_are_never_written(tmp_path: Path) -> None:
    asked = {"patient_id": ["PAT12345", "PAT67890"], "accession": ["ACC0042"],
             "study_uid": ["1.2.826.0.1.3680043.8.498.4711"]}
    path = tmp_path / "audit.jsonl"
    for vault_key in (None, KEY):
        digest = request_digest(asked, vault_key=vault_key)
        record = append(path, entry(kinds={k: len(v) for k, v in asked.items()}, found=3,
                                    request_sha256=digest), KEY)
        assert record["request_sha256"] == digest
        assert (record["asked"], record["kinds"]) == (4, {"patient_id": 2, "accession": 1,
                                                          "study_uid": 1})
    written = path.read_bytes() + head_path(path).read_bytes()
    assert b'"request_sha256"' in written
    for value in (v for values in asked.values() for v in values):
        assert value.encode() not in written
        assert value.encode("utf-16-le") not in written
        assert value.encode()[2:-2] not in written  # not even most of it
    assert verify(path, KEY).ok


# -- the command line --------------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dicom-deid")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return parser.parse_args(argv)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault.key"
    path.write_text(KEY.hex() + "\n")
    return path


def test_cli_intact(tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(tmp_path, 5)
    args = parse(["audit", "verify", str(path), "--vault-key-file", str(key_file)])
    assert args.command == "audit" and args.handler is run
    assert run(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"audit {path}: 5 record(s), chain intact"
    assert err == ""


def test_cli_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(tmp_path, 2)
    monkeypatch.setenv(VAULT_KEY_ENV, KEY.hex())
    assert run(parse(["audit", "verify", str(path)])) == 0
    assert "2 record(s), chain intact" in capsys.readouterr().out
    monkeypatch.setenv(VAULT_KEY_ENV, OTHER_KEY.hex())
    assert run(parse(["audit", "verify", str(path)])) == 1
    assert f"audit {path}: record 1: " in capsys.readouterr().err


def test_cli_names_the_bad_record(tmp_path: Path, key_file: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(tmp_path, 5)
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"found":2', b'"found":1')
    write_lines(path, lines)
    assert run(parse(["audit", "verify", str(path), "--vault-key-file", str(key_file)])) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"audit {path}: record 3: MAC mismatch: changed record")
    assert "Dr. Requester" not in err and "follow-up" not in err


def test_cli_head_problem_names_no_record(tmp_path: Path, key_file: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(tmp_path, 2)
    head_path(path).unlink()
    assert run(parse(["audit", "verify", str(path), "--vault-key-file", str(key_file)])) == 1
    assert capsys.readouterr().err.startswith(f"audit {path}: the head file")


def test_cli_usage_errors(tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(tmp_path, 2)
    monkeypatch.delenv(VAULT_KEY_ENV, raising=False)
    assert run(parse(["audit", "verify", str(path)])) == 2
    assert "no vault key" in capsys.readouterr().err
    assert run(parse(["audit", "verify", str(path), "--vault-key-file",
                      str(tmp_path / "none.key")])) == 2
    assert "cannot read vault key file" in capsys.readouterr().err
    short = tmp_path / "short.key"
    short.write_text("abcd")
    assert run(parse(["audit", "verify", str(path), "--vault-key-file", str(short)])) == 2
    capsys.readouterr()
    assert run(parse(["audit", "verify", str(tmp_path / "no.jsonl"), "--vault-key-file",
                      str(key_file)])) == 2
    assert "no audit log" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["audit"])  # verify is required
