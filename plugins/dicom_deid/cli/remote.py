"""The command line on object stores: ``gs://`` inputs listed from their bucket, ``gs://``
outputs uploaded one by one as the batch publishes them.

Inputs are never copied as a whole: each worker fetches the files it works on, a few
ahead (see :mod:`dicom_deid.deid.batch`). Outputs are written to a private local folder
first, because a batch stages, renames and takes back files while it applies the
duplicate rule; each output the rule publishes is then handed to an upload lane at once,
so the uploads overlap the work instead of following it, and the local copy is removed as
soon as it is stored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from dicom_deid.deid.batch import OutputSink, Source
from dicom_deid.errors import StorageError
from dicom_deid.storage import Store, is_object_uri, open_store

__all__ = ["UPLOAD_LANES", "Upload", "location", "staged_output", "store_sources"]

UPLOAD_LANES = 32
"""Uploads in flight at once: an object store answers each after tens of ms (and a
write takes longer than a read), while the client's own CPU per upload is about 2 ms."""


def location(text: str) -> Path | str:
    """An argument naming a local path (a :class:`Path`) or an object URI (kept as text)."""
    return text if is_object_uri(text) else Path(text)


def store_sources(url: str) -> list[Source]:
    """Every file under ``url`` (hidden names skipped), by URI, named relative to it, with
    the update time the listing gave (the worker then fetches it in one request)."""
    store = open_store(url)
    return [Source(store.uri(f.rel), f.rel, f.mtime_ns, f.size) for f in store.list_files()]


class Upload(OutputSink):
    """Stores each published output under its path in ``store`` as soon as it is published.

    The file is moved out of the batch's folder at once (so a later duplicate may take
    its path) into ``hold``, and sent by one of ``lanes`` single-thread uploaders chosen
    by the path: two versions of one path (a newer duplicate) and a removal are sent in
    the order the batch decided them. The first failure (after the client's retries)
    stops the batch at its next publication and is raised by :meth:`finish`.
    """

    def __init__(self, store: Store, hold: Path, lanes: int = UPLOAD_LANES) -> None:
        self.store, self.hold = store, hold
        self.hold.mkdir(mode=0o700, exist_ok=True)
        self._lanes: list[ThreadPoolExecutor] = []
        self._size = max(1, lanes)
        self._count = 0
        self._failed: BaseException | None = None
        self._lock = threading.Lock()

    def _lane(self, rel: str) -> ThreadPoolExecutor:
        if not self._lanes:  # on first use: the batch's workers are forked by then
            self._lanes = [ThreadPoolExecutor(1, f"dicom-deid-upload-{i}")
                           for i in range(self._size)]
        return self._lanes[zlib.crc32(rel.encode()) % self._size]

    def _watch(self, future: Future[None]) -> None:
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            with self._lock:
                self._failed = self._failed or exc

    def _check(self) -> None:
        if self._failed is not None:  # the client's text may name the object: its type only
            raise StorageError(f"an upload to {self.store.url} failed "
                               f"({type(self._failed).__name__})") from self._failed

    def published(self, path: str, rel: str) -> None:
        self._check()
        self._count += 1
        held = self.hold / str(self._count)
        os.replace(path, held)
        self._watch(self._lane(rel).submit(self._send, held, rel))

    def _send(self, held: Path, rel: str) -> None:
        try:
            self.store.upload_file(held, rel)
        finally:
            held.unlink(missing_ok=True)

    def removed(self, rel: str) -> None:
        self._check()
        self._watch(self._lane(rel).submit(self.store.delete_tree, rel))

    def finish(self) -> None:
        """Wait for every upload; raise the first that failed."""
        for lane in self._lanes:
            lane.shutdown(wait=True)
        self._check()

    def abandon(self) -> None:
        """Stop: what has not started is not sent."""
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)


@contextmanager
def staged_output(output: Path | str, workers: int = UPLOAD_LANES
                  ) -> Iterator[tuple[Path, OutputSink | None]]:
    """The local folder to write into and where published outputs go from there:
    ``output`` itself and nothing, or for an object URI a private temporary folder and an
    :class:`Upload` to ``output`` (waited for when the block ends; the folder removed
    either way). As on local disk, a batch that stops half way leaves stored what it had
    published."""
    if isinstance(output, Path):
        yield output, None
        return
    store = open_store(output)
    scratch = Path(tempfile.mkdtemp(prefix="dicom-deid-out-"))  # 0700
    upload = Upload(store, scratch / ".upload", workers)
    tree = scratch / "tree"
    tree.mkdir(mode=0o700)
    try:
        yield tree, upload
        upload.finish()
    except BaseException:
        upload.abandon()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
