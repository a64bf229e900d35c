"""gs:// inputs fetched ahead by each worker, gs:// outputs uploaded as the batch publishes
them: the same objects as a local run (newer duplicates replacing older ones, on one path
and on two), failures that stop the batch with a PHI-free message, and nothing left on
local disk."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import pydicom
import pytest
from google.cloud.storage import Client

from dicom_deid.cli.main import main
from dicom_deid.deid import batch
from dicom_deid.deid.batch import Source
from dicom_deid.errors import BadInput
from dicom_deid.storage import factory
from dicom_deid.storage.gcs import GcsStore
from dicom_deid.storage.prefetch import AHEAD
from emulators import Cloud
from instances import KEY

CT = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"


def _bucket(client: Client, stem: str) -> str:
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(name)
    return name


def _copies(folder: Path, names: list[str]) -> None:
    """One instance (pydicom's CT, not ours) under several names, each with other pixels:
    the same SOP Instance UID, different bytes (a re-send with corrected content)."""
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        ds = pydicom.dcmread(CT)
        pixels = bytearray(ds.PixelData)
        pixels[0] = i
        ds.PixelData = bytes(pixels)
        ds.save_as(folder / name)


def _upload_in_order(client: Client, bucket: str, folder: Path, prefix: str) -> None:
    """One object after the other, so their update times follow the names; each local
    file then gets its object's time (the duplicate rule compares them on both sides)."""
    for path in sorted(folder.iterdir()):
        blob = client.bucket(bucket).blob(f"{prefix}/{path.name}")
        blob.upload_from_filename(str(path))
        os.utime(path, (blob.updated.timestamp(), blob.updated.timestamp()))
        time.sleep(0.01)


def _objects(client: Client, bucket: str, prefix: str) -> dict[str, bytes]:
    return {b.name.removeprefix(f"{prefix}/"): b.download_as_bytes()
            for b in client.list_blobs(bucket, prefix=f"{prefix}/")}


def _key_and_private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[Path, Path]:
    """A key file, and a temporary folder of the test's own for everything the command
    makes with ``tempfile`` (so what it leaves behind can be seen)."""
    key = tmp_path / "k"
    key.write_text(KEY.hex())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return key, scratch


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.parametrize("layout", ["uid", "relative"])
def test_newer_duplicates_replace_what_was_uploaded_as_on_local_disk(
    gcloud_env: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], layout: str,
) -> None:
    """Three versions of one instance, newest last in input order: each in turn wins and is
    uploaded. With the uid layout all three go to one object, which must end as the
    newest's bytes (uploads of one path keep their order); with the relative layout the
    two older objects must be deleted again. Either way the bucket equals the local run."""
    client = Client()
    bucket = _bucket(client, "dups")
    _copies(tmp_path / "src", ["a.dcm", "b.dcm", "c.dcm"])
    _upload_in_order(client, bucket, tmp_path / "src", "in")
    key, scratch = _key_and_private_tmp(tmp_path, monkeypatch)
    common = ["--key-file", str(key), "--no-progress", "--layout", layout, "--workers", "1"]

    assert main(["deidentify", str(tmp_path / "src"), str(tmp_path / "out"), *common]) == 3
    assert main(["deidentify", f"gs://{bucket}/in", f"gs://{bucket}/out", *common]) == 3
    capsys.readouterr()

    local, remote = _files(tmp_path / "out"), _objects(client, bucket, "out")
    assert len(local) == 1 and local == remote
    if layout == "relative":
        assert set(remote) == {"c.dcm"}
    assert pydicom.dcmread(tmp_path / "out" / next(iter(local))).PixelData[0] == 2
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # nothing left staged


def test_an_upload_that_fails_stops_the_batch_without_naming_the_object(
    gcloud_env: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The output bucket does not exist: the first failed upload (the client's retries
    spent) stops the batch; the message gives the store and the error's type, no object
    name or server text, and the private folder is gone."""
    client = Client()
    bucket = _bucket(client, "in")
    _copies(tmp_path / "src", ["a.dcm"])
    _upload_in_order(client, bucket, tmp_path / "src", "in")
    key, scratch = _key_and_private_tmp(tmp_path, monkeypatch)
    missing = f"gone-{uuid.uuid4().hex[:8]}"

    code = main(["deidentify", f"gs://{bucket}/in", f"gs://{missing}/out", "--key-file",
                 str(key), "--no-progress", "--workers", "1"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"an upload to gs://{missing}/out failed (NotFound)" in err
    assert "Traceback" not in err and ".dcm" not in err
    assert not list(scratch.iterdir())


def test_a_worker_fetches_ahead_in_order_and_leaves_no_copy_behind(
    gcloud_env: Cloud, tmp_path: Path
) -> None:
    """The fetch window directly (production's path for gs:// inputs): copies are made
    ahead of the consumer, at most AHEAD + 1 at a time, handed over in input order;
    a missing object is that input's error only; copies the consumer never took are
    removed when it stops early."""
    client = Client()
    bucket = _bucket(client, "ahead")
    names = [f"f{i:02d}.bin" for i in range(12)]
    for name in names:
        client.bucket(bucket).blob(f"in/{name}").upload_from_string(name.encode())
    sources = [Source(f"gs://{bucket}/in/{name}", name) for name in names]
    sources.insert(3, Source(f"gs://{bucket}/in/missing.bin", "missing.bin"))
    folder_of = batch._DOWNLOADS

    window = batch._fetched_ahead(sources)
    first, fetched = next(window)
    assert first is sources[0] and fetched is not None
    time.sleep(0.5)  # the window's other copies are made meanwhile
    on_disk = len(list(folder_of[0].iterdir()))
    assert 2 <= on_disk <= AHEAD + 1
    fetched.result().unlink()

    taken = [first]
    for src, pending in window:
        assert pending is not None
        taken.append(src)
        if src.rel == "missing.bin":
            with pytest.raises(BadInput, match="object not found"):
                pending.result()
            continue
        copy = pending.result()
        assert copy.read_bytes() == src.rel.encode()
        copy.unlink()
        if len(taken) == 7:
            break
    window.close()
    assert taken == sources[:7]
    time.sleep(0.5)  # copies still in flight when the window closed are removed too
    assert not list(folder_of[0].iterdir())
    # the one folder the fetch threads made between them when no run gave one (a run
    # removes its own): not left behind
    assert len(folder_of) == 1
    folder_of.pop().rmdir()


def test_a_forked_worker_opens_its_own_client(gcloud_env: Cloud) -> None:
    """A parent's store (its client's pooled sockets) is not a forked child's."""
    factory.object_at("gs://some-bucket/x")
    assert factory._OPENED
    pid = os.fork()
    if pid == 0:  # the child: exits 0 only if it inherited no store
        os._exit(0 if not factory._OPENED else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_proxy_settings_are_read_once_for_the_endpoint(
    gcloud_env: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy variables as requests would read them, fixed on the client once (and
    NO_PROXY still honoured), instead of scanned on every request."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = GcsStore("gs://any-bucket").client._http
    assert proxied.proxies.get("http") == "http://127.0.0.1:9"
    assert proxied.trust_env is False

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = GcsStore("gs://any-bucket")
    assert "http" not in direct.client._http.proxies
    client = Client()
    bucket = _bucket(client, "proxy")
    client.bucket(bucket).blob("x/a").upload_from_string(b"a")
    monkeypatch.setenv("NO_PROXY", "")  # read once: a later change does not apply
    assert [f.rel for f in GcsStore(f"gs://{bucket}/x", client=direct.client).list_files()
            ] == ["a"]


def test_a_batch_that_stops_leaves_no_fetched_input_on_disk(
    gcloud_env: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers fetch ahead; when the batch fails half way its pool is terminated (workers
    killed with copies of identified inputs fetched and not yet opened): the run's
    download folder goes with it."""
    from dicom_deid.config.model import DeidConfig
    from dicom_deid.deid.batch import run_batch

    client = Client()
    bucket = _bucket(client, "stop")
    names = [f"{i:02d}.dcm" for i in range(40)]
    for name in names:
        client.bucket(bucket).blob(f"in/{name}").upload_from_filename(str(CT))
    sources = [Source(f"gs://{bucket}/in/{name}", name) for name in names]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    class Failing:
        """Stops the batch at its third published output."""

        def __init__(self) -> None:
            self.seen = 0

        def published(self, path: str, rel: str) -> None:
            self.seen += 1
            os.unlink(path)
            if self.seen == 3:
                raise OSError("the destination went away")

        def removed(self, rel: str) -> None:
            pass

    with pytest.raises(OSError, match="went away"):
        run_batch(sources, tmp_path / "out", DeidConfig(), KEY, workers=2,
                  layout="relative", progress=False, sink=Failing())
    assert not list(scratch.iterdir())
