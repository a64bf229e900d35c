"""Outputs stored one by one as a batch publishes them, instead of after the batch.

A de-identification batch writes into a local folder (it stages, renames and takes back
files while it applies the duplicate rule); for an object store, each output the batch
publishes is handed to an :class:`Upload` at once, so the uploads overlap the work, and
the local copy goes as soon as it is stored. :meth:`~dicom_deid.storage.base.Store.tree_writer`
gives the folder and the sink.
"""

from __future__ import annotations

import os
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from dicom_deid.errors import StorageError

from .base import Store

__all__ = ["UPLOAD_LANES", "Upload"]

UPLOAD_LANES = 32
"""Uploads in flight at once: an object store answers each after tens of ms (and a
write takes longer than a read), while the client's own CPU per upload is about 2 ms."""


class Upload:
    """Stores each published output at ``prefix/<rel>`` in ``store`` as soon as it is
    published (a :class:`~.base.OutputSink`).

    The file is moved out of the batch's folder at once (so a later duplicate may take
    its path) into ``hold``, and sent by one of ``lanes`` single-thread uploaders chosen
    by the path: two versions of one path (a newer duplicate) and a removal are sent in
    the order the batch decided them. The first failure (after the client's retries)
    stops the batch at its next publication and is raised by :meth:`finish`.
    """

    def __init__(self, store: Store, hold: Path, *, prefix: str = "",
                 lanes: int = UPLOAD_LANES) -> None:
        self.store, self.hold, self.prefix = store, hold, prefix.strip("/")
        self.hold.mkdir(mode=0o700, exist_ok=True)
        self.stored: set[str] = set()
        """Paths (relative to ``prefix``) published and not taken back."""
        self._lanes: list[ThreadPoolExecutor] = []
        self._size = max(1, lanes)
        self._count = 0
        self._failed: BaseException | None = None
        self._lock = threading.Lock()

    def _key(self, rel: str) -> str:
        """Where ``rel`` is stored."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

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
            raise StorageError(f"an upload to {self.store.uri(self.prefix)} failed "
                               f"({type(self._failed).__name__})") from self._failed

    def published(self, path: str, rel: str) -> None:
        self._check()
        self._count += 1
        held = self.hold / str(self._count)
        os.replace(path, held)
        self.stored.add(rel)
        self._watch(self._lane(rel).submit(self._send, held, rel))

    def _send(self, held: Path, rel: str) -> None:
        try:
            self.store.upload_file(held, self._key(rel))
        finally:
            held.unlink(missing_ok=True)

    def removed(self, rel: str) -> None:
        self._check()
        self.stored.discard(rel)
        self._watch(self._lane(rel).submit(self.store.delete_tree, self._key(rel)))

    def finish(self) -> None:
        """Wait for every upload; raise the first that failed."""
        for lane in self._lanes:
            lane.shutdown(wait=True)
        self._check()

    def abandon(self) -> None:
        """Stop: what has not started is not sent."""
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)
