"""The metadata export from an object store: header-only ranged reads give the rows a
local export gives, on files the project did not write as well as on its own corpus."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from google.cloud.storage import Client

from dicom_deid.metadata.export import Listed, export_metadata, instance_row
from dicom_deid.metadata.heads import FIRST_RANGE, read_head
from dicom_deid.metadata.scan import scan_row
from dicom_deid.storage import open_store
from dicom_deid.synth import generate
from emulators import Cloud

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
# Not the store's business: where and when the file was, and how its content is named.
_PLACE = {"source_uri", "mtime", "content_sha256", "ingest_run_id"}


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """pydicom's own test files (other writers, other syntaxes) and a small synthetic set."""
    generate(tmp_path / "synth", patients=1, seed=11, bad_inputs=False)
    files = {f"pydicom/{p.name}": p for p in sorted(PYDICOM_FILES.glob("*.dcm"))}
    synth = tmp_path / "synth" / "dicom"
    files |= {f"synth/{p.relative_to(synth).as_posix()}": p
              for p in sorted(synth.rglob("*")) if p.is_file()}
    big = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")  # a 2 MiB image: a real CT's size
    big.Rows = big.Columns = 1024
    big.PixelData = bytes(2 * 1024 * 1024)
    big.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    big.save_as(tmp_path / "big.dcm")
    files["big/ct.dcm"] = tmp_path / "big.dcm"
    return files


def _rows(parts: list[Path]) -> dict[str, dict[str, object]]:
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")
    return {r["SOPInstanceUID"] + "|" + str(r["size_bytes"]): r for r in table.to_pylist()}


def test_head_is_cut_at_the_pixel_data_of_files_written_elsewhere() -> None:
    """Directly on pydicom's files: the head's rows equal the whole file's, and a head is
    far smaller than the file when the file is large."""
    cut = 0
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        raw = path.read_bytes()
        reads: list[tuple[int, int]] = []

        def read(offset: int, length: int, raw: bytes = raw,
                 reads: list[tuple[int, int]] = reads) -> bytes:
            reads.append((offset, length))
            return raw[offset:offset + length]

        head = read_head(read, len(raw))
        assert head.bytes_read == sum(n for _, n in reads) <= len(raw)
        assert reads[0] == (0, min(FIRST_RANGE, len(raw)))
        if head.end is None:
            assert head.data == raw
            continue
        try:
            whole = instance_row(raw)
        except Exception:
            continue  # not usable DICOM: the whole-file path says why
        assert scan_row(head.data, head.end)[0] == whole[0], path.name
        cut += 1
    assert cut >= 5  # the pydicom files larger than the first range


def test_export_from_gcs_matches_local_and_reads_headers_only(
    gcloud_env: Cloud, tmp_path: Path
) -> None:
    files = _inputs(tmp_path)
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    client = Client()
    client.create_bucket(bucket)
    for rel, path in files.items():
        client.bucket(bucket).blob(f"dicom/{rel}").upload_from_filename(str(path))

    local = export_metadata(list(files.values()), tmp_path / "local", run_id="l",
                            ingest_date=date(2026, 12, 1), workers=1)
    store = open_store(f"gs://{bucket}/dicom")
    listed = [Listed(store.uri(f.rel), f.size, f.mtime_ns, f.generation, f.checksum)
              for f in store.list_files()]
    remote = export_metadata(listed, tmp_path / "remote", run_id="r",
                             ingest_date=date(2026, 12, 1), workers=2)

    assert remote.exported == local.exported > 40
    assert sorted(u for u, _ in remote.errors) == sorted(
        store.uri(rel) for rel, p in files.items() if str(p) in dict(local.errors))
    assert remote.remote_files == len(files)
    # A file with pixel data costs its first range (its header is in it); one without is
    # read whole; the 2 MiB image costs 64 KiB.
    budget = sum(min(len(raw), FIRST_RANGE) if b"\xe0\x7f\x10\x00" in raw else len(raw)
                 for raw in (p.read_bytes() for p in files.values()))
    assert remote.remote_bytes <= budget
    assert remote.remote_bytes / remote.remote_files <= 128 * 1024
    mine, theirs = _rows(local.parts), _rows(remote.parts)
    assert mine.keys() == theirs.keys()
    for key, row in mine.items():
        other = theirs[key]
        assert other["source_uri"].startswith(f"gs://{bucket}/dicom/")
        assert {k: v for k, v in row.items() if k not in _PLACE} == \
            {k: v for k, v in other.items() if k not in _PLACE}, key

    # A rerun opens nothing but the failures (tried again); a replaced object (same name,
    # new content) is exported again.
    again = export_metadata(listed, tmp_path / "remote", run_id="r2",
                            ingest_date=date(2026, 12, 2), workers=1)
    assert again.exported == 0
    assert again.skipped_unchanged == len(listed) - len(remote.errors) == again.files_seen - \
        again.remote_files
    first = "big/ct.dcm"
    client.bucket(bucket).blob(f"dicom/{first}").upload_from_filename(
        str(PYDICOM_FILES / "CT_small.dcm"))
    changed = store.stat(first)
    moved = [Listed(store.uri(first), changed.size, changed.mtime_ns)]
    third = export_metadata(moved, tmp_path / "remote", run_id="r3",
                            ingest_date=date(2026, 12, 3), workers=1)
    assert third.exported == 1 and third.remote_files == 1


def test_unreadable_objects_are_listed_not_fatal(gcloud_env: Cloud, tmp_path: Path) -> None:
    bucket = f"bad-{uuid.uuid4().hex[:8]}"
    client = Client()
    client.create_bucket(bucket)
    good = next(iter(sorted(PYDICOM_FILES.glob("CT_small.dcm"))))
    client.bucket(bucket).blob("ok.dcm").upload_from_filename(str(good))
    client.bucket(bucket).blob("empty.dcm").upload_from_string(b"")
    client.bucket(bucket).blob("text.dcm").upload_from_string(b"not dicom at all " * 10)
    uris = [f"gs://{bucket}/{n}" for n in ("ok.dcm", "empty.dcm", "text.dcm", "gone.dcm")]
    summary = export_metadata(uris, tmp_path / "out", run_id="b",
                              ingest_date=date(2026, 12, 1), workers=1)
    assert summary.exported == 1
    reasons = dict(summary.errors)
    assert set(reasons) == set(uris[1:])
    assert "zero-byte" in reasons[uris[1]]
    assert all(bucket not in reason for reason in reasons.values())


@pytest.mark.parametrize("first", [16, 200])
def test_small_first_range_grows_until_the_header_is_in(first: int) -> None:
    raw = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    head = read_head(lambda o, n: raw[o:o + n], len(raw), first=first)
    assert head.end is not None and scan_row(head.data, head.end)[0] == instance_row(raw)[0]


def test_a_listed_object_is_read_without_a_metadata_request(
    gcloud_env: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing's generation and checksum are enough: one ranged read per object."""
    from dicom_deid.storage.gcs import GcsStore

    bucket = f"one-{uuid.uuid4().hex[:8]}"
    Client().create_bucket(bucket)
    Client().bucket(bucket).blob("a/ct.dcm").upload_from_filename(
        str(PYDICOM_FILES / "CT_small.dcm"))
    store = open_store(f"gs://{bucket}/a")
    [found] = store.list_files()

    def no_stat(self: GcsStore, rel: str) -> None:
        raise AssertionError("a metadata request for a listed object")

    monkeypatch.setattr(GcsStore, "stat", no_stat)
    summary = export_metadata(
        [Listed(store.uri(found.rel), found.size, found.mtime_ns, found.generation,
                found.checksum)], tmp_path / "out", run_id="o",
        ingest_date=date(2026, 12, 1), workers=1)
    assert (summary.exported, summary.errors) == (1, [])
    assert summary.remote_bytes == found.size  # a small file: its one range is all of it


def test_an_object_replaced_after_its_listing_is_listed_as_changed_not_fatal(
    gcloud_env: Cloud, tmp_path: Path
) -> None:
    """The export reads the generation its listing saw: a newer one is not mixed in."""
    bucket = f"moved-{uuid.uuid4().hex[:8]}"
    client = Client()
    client.create_bucket(bucket)
    for name in ("a.dcm", "b.dcm"):
        client.bucket(bucket).blob(name).upload_from_filename(
            str(PYDICOM_FILES / "CT_small.dcm"))
    store = open_store(f"gs://{bucket}")
    listed = [Listed(store.uri(f.rel), f.size, f.mtime_ns, f.generation, f.checksum)
              for f in store.list_files()]
    client.bucket(bucket).blob("a.dcm").upload_from_filename(  # replaced meanwhile
        str(PYDICOM_FILES / "MR_small.dcm"))
    summary = export_metadata(listed, tmp_path / "out", run_id="m",
                              ingest_date=date(2026, 12, 1), workers=1)
    assert summary.exported == 1
    assert summary.errors == [(f"gs://{bucket}/a.dcm", "object changed or gone since it was "
                                                       "listed (read again next run)")]
