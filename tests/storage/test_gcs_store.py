"""GcsStore against fake-gcs-server: paging, ranged reads that fetch only the range,
server-side copies, generation-pinned reads, and the release protocol (objects under
their final names, a manifest written last as the commit marker, a pointer moved after
it, reruns idempotent, a half-published release never taken as complete)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from google.cloud.storage import Client

from dicom_deid.errors import StorageError
from dicom_deid.storage import open_store
from dicom_deid.storage.gcs import GcsStore
from dicom_deid.storage.releases import ReleaseManifest
from emulators import Cloud


@dataclass
class Traffic:
    """What the client sent and got: (method, path and query, bytes in the response)."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def downloaded(self) -> int:
        return sum(n for m, url, n in self.calls if (m == "GET" and "alt=media" in url)
                   or "/download/" in url)

    def urls(self, method: str) -> list[str]:
        return [url for m, url, _ in self.calls if m == method]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def traffic(gcs_client: Client) -> Iterator[Traffic]:
    seen = Traffic()

    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        size = int(response.headers.get("Content-Length") or len(response.content or b""))
        seen.calls.append((response.request.method, response.request.url, size))

    hooks = gcs_client._http.hooks["response"]
    hooks.append(hook)
    yield seen
    hooks.remove(hook)


def _blob(client: Client, bucket: str, name: str) -> Any:
    return client.bucket(bucket).get_blob(name)


# -- opening -----------------------------------------------------------------------------


def test_open_store_talks_to_the_emulator_with_no_client_given(
        gcloud_env: Cloud, bucket: str) -> None:
    store = open_store(f"gs://{bucket}/some/prefix/")
    assert isinstance(store, GcsStore) and store.url == f"gs://{bucket}/some/prefix"
    store.write_bytes("x/y.dcm", b"y")
    assert store.read_bytes("x/y.dcm") == b"y"
    assert store.uri("x/y.dcm") == f"gs://{bucket}/some/prefix/x/y.dcm"
    assert open_store(f"gs://{bucket}").list_files() == [
        open_store(f"gs://{bucket}").stat("some/prefix/x/y.dcm")]
    for bad in ("gs://", "gs:///path", "s3://bucket/x", "http://host/x"):
        with pytest.raises(StorageError):
            open_store(bad)


# -- listing and reading -----------------------------------------------------------------


def test_listing_pages_through_the_prefix(gcs: GcsStore, traffic: Traffic) -> None:
    for i in range(5):
        gcs.write_bytes(f"land/{i}.dcm", b"x" * i)
    traffic.clear()
    listed = gcs.list_files("land")
    assert [(f.rel, f.size) for f in listed] == [(f"land/{i}.dcm", i) for i in range(5)]
    assert all(f.generation and f.checksum and f.checksum.startswith("md5:") for f in listed)
    pages = [u for u in traffic.urls("GET") if "/o?" in u or u.endswith("/o")]
    assert len(pages) == 3 and sum("pageToken=" in u for u in pages) == 2  # 2 + 2 + 1


def test_ranged_reads_fetch_only_the_range(gcs: GcsStore, traffic: Traffic) -> None:
    data = os.urandom(3 * 1024 * 1024)
    gcs.write_bytes("big.dcm", data)
    traffic.clear()
    assert gcs.read_range("big.dcm", 1000, 16) == data[1000:1016]
    assert traffic.downloaded() == 16
    traffic.clear()
    with gcs.open_read("big.dcm") as fh:  # a header parse: the first bytes only
        assert fh.read(132) == data[:132]
        fh.seek(2000)
        assert fh.read(100) == data[2000:2100]
    assert 0 < traffic.downloaded() <= gcs.read_chunk + 1  # one chunk, not 3 MiB


def test_a_reader_is_pinned_to_the_generation_it_opened(gcs: GcsStore) -> None:
    data = os.urandom(600 * 1024)
    gcs.write_bytes("f.dcm", data)
    old = gcs.stat("f.dcm").generation
    fh = gcs.open_read("f.dcm")
    assert fh.read(10) == data[:10]
    gcs.write_bytes("f.dcm", b"replaced")
    with pytest.raises(FileNotFoundError, match="changed or went away"):
        fh.seek(len(data) - 10)
        fh.read()  # never the new object's bytes as the old one's
    fh.close()
    with pytest.raises(FileNotFoundError):
        gcs.read_range("f.dcm", 0, 4, generation=old)
    new = gcs.stat("f.dcm").generation
    assert gcs.read_range("f.dcm", 0, 4, generation=new) == b"repl"


def test_copy_is_server_side(gcs: GcsStore, traffic: Traffic) -> None:
    data = os.urandom(100_000)
    gcs.write_bytes("a.dcm", data)
    traffic.clear()
    gcs.copy("a.dcm", "b/a.dcm")
    assert [m for m, _, _ in traffic.calls] == ["POST"]
    assert "/rewriteTo/" in traffic.calls[0][1] and traffic.downloaded() == 0
    assert traffic.calls[0][2] < 10_000  # the answer is metadata, not the object
    assert gcs.read_bytes("b/a.dcm") == data


def test_a_local_copy_is_a_temporary_download(gcs: GcsStore) -> None:
    data = os.urandom(200_000)
    gcs.write_bytes("s/a.dcm", data)
    with gcs.local_copy("s/a.dcm") as path:
        assert path.read_bytes() == data and path.suffix == ".dcm"
        folder = path.parent
    assert not folder.exists()  # the temporary download is gone


@pytest.mark.parametrize("hint", [None, "exact", "too small", "too large"])
def test_a_download_gives_the_object_whatever_the_size_hint(
    gcs: GcsStore, traffic: Traffic, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
    hint: str | None,
) -> None:
    """The listing's size only chooses how the response is read (in one piece up to
    SINGLE_READ_UP_TO, else streamed); a stale hint never changes what arrives, and
    either way it is one request, the checksum checked by the client."""
    import dicom_deid.storage.gcs as gcs_module

    monkeypatch.setattr(gcs_module, "SINGLE_READ_UP_TO", 300_000)
    data = os.urandom(500_000)
    gcs.write_bytes("d/a.bin", data)
    size = {None: None, "exact": 500_000, "too small": 10, "too large": 10**9}[hint]
    traffic.clear()
    gcs.copy_to_local("d/a.bin", tmp_path / "a.bin", size=size)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert len(traffic.calls) == 1


def test_large_uploads_are_resumable_in_chunks(gcs: GcsStore, traffic: Traffic,
                                               tmp_path: Any) -> None:
    data = os.urandom(9 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    traffic.clear()
    gcs.upload_file(big, "up/big.bin")
    assert any("uploadType=resumable" in u for u in traffic.urls("POST"))
    assert gcs.stat("up/big.bin").size == len(data)
    assert gcs.sha256(["up/big.bin"]) == {"up/big.bin": hashlib.sha256(data).hexdigest()}


# -- releases ----------------------------------------------------------------------------


def _stage(store: GcsStore, release: str, files: dict[str, bytes]) -> dict[str, str]:
    for path, data in files.items():
        store.write_bytes(f".staging-proj/{release}/{path}", data)
    return {path: f".staging-proj/{release}/{path}" for path in files}


def _manifest(client: Client, bucket: str, release: str) -> ReleaseManifest:
    blob = client.bucket(bucket).blob(f"root/proj/_releases/{release}.json")
    return ReleaseManifest.from_bytes(blob.download_as_bytes())


def _seen(store: GcsStore) -> dict[str, bytes]:
    """A reader following the contract: the pointer's manifest, each file at its
    generation."""
    out = {}
    for f in store.release_files("proj"):
        with store.open_read(f.rel, generation=f.generation) as fh:
            out[f.rel.removeprefix("proj/")] = fh.read()
    return out


def test_a_manifest_lists_every_file_as_written(gcs: GcsStore, gcs_client: Client,
                                                bucket: str) -> None:
    gcs.publish_release("proj", "r1", _stage(gcs, "r1", {"a.dcm": b"a1", "b.dcm": b"b1"}),
                        (), {"manifests/r1.json": b"{}"})
    gcs.publish_release("proj", "r2", _stage(gcs, "r2", {"b.dcm": b"b2"}), ["a.dcm"], {})
    manifest = _manifest(gcs_client, bucket, "r2")
    assert (manifest.release, manifest.base) == ("r2", "r1")
    assert (manifest.added, manifest.removed, manifest.replaced) == (
        ("b.dcm",), ("a.dcm",), ("b.dcm",))
    for path, entry in manifest.files.items():
        blob = _blob(gcs_client, bucket, f"root/proj/{path}")
        assert (entry.size, entry.generation, entry.crc32c, entry.md5) == (
            blob.size, blob.generation, blob.crc32c, blob.md5_hash)
    assert sorted(manifest.files) == ["b.dcm", "manifests/r1.json"]
    assert _blob(gcs_client, bucket, "root/proj/a.dcm") is None  # removed after the commit
    pointer = json.loads(gcs_client.bucket(bucket).blob("root/proj/_release")
                         .download_as_bytes())
    assert pointer == {"release": "r2"}
    names = {b.name for b in gcs_client.list_blobs(bucket, prefix="root/proj/_")}
    assert names == {"root/proj/_release", "root/proj/_releases/r1.json",
                     "root/proj/_releases/r2.json"}  # no lock, no intent left
    gcs.publish_release("proj", "r3", _stage(gcs, "r3", {"c.dcm": b"c"}), (), {})
    names = {b.name for b in gcs_client.list_blobs(bucket, prefix="root/proj/_releases/")}
    assert names == {"root/proj/_releases/r2.json", "root/proj/_releases/r3.json"}


class _CrashBefore(GcsStore):
    """A publisher that dies when it is about to write a given object."""

    crash_at = ""

    def _put(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> Any:
        if self.crash_at and key.endswith(self.crash_at):
            raise RuntimeError("publisher died")
        return super()._put(key, data, if_generation_match=if_generation_match)


def test_a_half_published_release_is_never_taken_as_complete(
        bucket: str, gcs_client: Client) -> None:
    gcs = _CrashBefore(f"gs://{bucket}/root", client=gcs_client, lock_poll=0.01)
    gcs.publish_release("proj", "r1", _stage(gcs, "r1", {"a.dcm": b"a1", "b.dcm": b"b1"}),
                        (), {})
    before = _seen(gcs)
    # r2 replaces b and adds c; it dies before its manifest (the commit marker).
    gcs.crash_at = "_releases/r2.json"
    add = _stage(gcs, "r2", {"b.dcm": b"b2", "c.dcm": b"c2"})
    with pytest.raises(RuntimeError):
        gcs.publish_release("proj", "r2", add, ["a.dcm"], {})
    assert gcs.release_of("proj") == "r1"
    assert [f.rel for f in gcs.release_files("proj")] == ["proj/a.dcm", "proj/b.dcm"]
    assert "proj/c.dcm" in {f.rel for f in gcs.list_files("proj")}  # written, not released
    # b was overwritten in place: a reader of r1 is told, it never gets r2's bytes as r1's.
    with pytest.raises(FileNotFoundError):
        _seen(gcs)
    assert gcs.read_bytes("proj/a.dcm") == before["a.dcm"]
    # No other release may build on r1 now: its objects are not all r1's any more.
    with pytest.raises(StorageError, match="publish r2 again"):
        gcs.publish_release("proj", "r3", _stage(gcs, "r3", {"d.dcm": b"d"}), (), {})
    # It dies again after the manifest, before the pointer: still r1 for readers.
    gcs.crash_at = "proj/_release"
    with pytest.raises(RuntimeError):
        gcs.publish_release("proj", "r2", add, ["a.dcm"], {})
    assert gcs.release_of("proj") == "r1"
    # The rerun finishes it: readers move to r2, whole.
    gcs.crash_at = ""
    done = gcs.publish_release("proj", "r2", add, ["a.dcm"], {})
    assert (done.files, done.added, done.removed) == (2, 2, 1)
    assert gcs.release_of("proj") == "r2" and _seen(gcs) == {"b.dcm": b"b2", "c.dcm": b"c2"}
    assert not gcs.exists("proj/a.dcm")


def test_a_rerun_writes_nothing_and_a_different_release_is_refused(
        gcs: GcsStore, gcs_client: Client, bucket: str, traffic: Traffic) -> None:
    add = _stage(gcs, "r1", {"a.dcm": b"a1"})
    gcs.publish_release("proj", "r1", add, (), {"m.json": b"{}"})
    manifest = _blob(gcs_client, bucket, "root/proj/_releases/r1.json").generation
    traffic.clear()
    gcs.publish_release("proj", "r1", add, (), {"m.json": b"{}"})
    assert not any("rewriteTo" in u for u in traffic.urls("POST"))  # nothing copied again
    assert _blob(gcs_client, bucket, "root/proj/_releases/r1.json").generation == manifest
    gcs.write_bytes(".staging-proj/r1/a.dcm", b"other bytes")
    with pytest.raises(StorageError, match="different content"):
        gcs.publish_release("proj", "r1", add, (), {"m.json": b"{}"})
    with pytest.raises(StorageError, match="different content"):
        gcs.publish_release("proj", "r1", add, (), {"m.json": b"{changed}"})


def test_an_abandoned_release_of_new_files_only_is_cleared(gcs: GcsStore) -> None:
    gcs.publish_release("proj", "r1", _stage(gcs, "r1", {"a.dcm": b"a"}), (), {})
    crashing = _CrashBefore(gcs.url, client=gcs.client)
    crashing.crash_at = "_releases/r2.json"
    with pytest.raises(RuntimeError):
        crashing.publish_release("proj", "r2", _stage(gcs, "r2", {"new.dcm": b"n"}), (), {})
    assert gcs.exists("proj/new.dcm")
    gcs.publish_release("proj", "r3", _stage(gcs, "r3", {"c.dcm": b"c"}), (), {})
    assert _seen(gcs) == {"a.dcm": b"a", "c.dcm": b"c"}
    assert [f.rel for f in gcs.list_files("proj")] == ["proj/a.dcm", "proj/c.dcm"]


# -- the lock ----------------------------------------------------------------------------


class _CountingWaits(GcsStore):
    waits = 0

    def _wait_for_lock(self, attempt: int) -> None:
        type(self).waits += 1
        super()._wait_for_lock(attempt)


def test_lock_holders_serialize_and_the_waiter_polls(bucket: str, gcs_client: Client
                                                     ) -> None:
    first = _CountingWaits(f"gs://{bucket}/root", client=gcs_client, lock_poll=0.01)
    second = _CountingWaits(f"gs://{bucket}/root", client=gcs_client, lock_poll=0.01)
    order: list[str] = []
    waiting = threading.Event()

    class _Signal(_CountingWaits):
        def _wait_for_lock(self, attempt: int) -> None:
            waiting.set()
            super()._wait_for_lock(attempt)

    second.__class__ = _Signal

    def other() -> None:
        with second.lock("proj"):
            order.append("second in")

    with first.lock("proj"):
        order.append("first in")
        thread = threading.Thread(target=other)
        thread.start()
        assert waiting.wait(30)  # the second holder found the lock taken and waits
        order.append("first out")
    thread.join(30)
    assert order == ["first in", "first out", "second in"]
    assert not second.exists("proj/_lock")  # released


def test_a_stale_lock_is_taken_over(bucket: str, gcs_client: Client) -> None:
    # A holder that died: its lock object stays, never renewed.
    gcs_client.bucket(bucket).blob("root/proj/_lock").upload_from_string(b"")
    store = GcsStore(f"gs://{bucket}/root", client=gcs_client, lock_poll=0.01,
                     lock_stale_after=timedelta(0))
    with store.lock("proj"):
        owner = _blob(gcs_client, bucket, "root/proj/_lock").metadata
    assert owner and owner.get("owner")
    assert _blob(gcs_client, bucket, "root/proj/_lock") is None


def test_a_lock_taken_over_while_held_is_reported(bucket: str, gcs_client: Client) -> None:
    store = GcsStore(f"gs://{bucket}/root", client=gcs_client, lock_poll=0.01)
    with pytest.raises(StorageError, match="taken over"), store.lock("proj"):
        lock = _blob(gcs_client, bucket, "root/proj/_lock")
        lock.upload_from_string(b"", if_generation_match=lock.generation)  # another holder


def test_an_input_is_fetched_in_one_request_when_its_listing_gave_its_time(
    bucket: str, gcs_client: Client, traffic: Traffic, tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a de-identification worker does per input (storage.download)."""
    from dicom_deid.storage import download, factory

    store = GcsStore(f"gs://{bucket}", client=gcs_client)
    monkeypatch.setitem(factory._OPENED, f"gs://{bucket}", store)
    data = os.urandom(300_000)
    store.write_bytes("in/a.dcm", data)
    [listed] = store.list_files("in")
    traffic.clear()
    local = download(f"gs://{bucket}/in/a.dcm", tmp_path, mtime_ns=listed.mtime_ns)
    assert local.read_bytes() == data and local.name != "a.dcm"
    assert os.stat(local).st_mtime_ns == listed.mtime_ns
    assert len(traffic.calls) == 1 and traffic.downloaded() == len(data)
    traffic.clear()
    again = download(f"gs://{bucket}/in/a.dcm", tmp_path)  # no time given: looked up
    assert os.stat(again).st_mtime_ns == listed.mtime_ns and len(traffic.calls) == 2
    with pytest.raises(FileNotFoundError):
        download(f"gs://{bucket}/in/gone.dcm", tmp_path, mtime_ns=listed.mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([local.name, again.name])
