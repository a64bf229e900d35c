"""The one small interface every storage backend implements, and the values it returns.

A :class:`Store` is a tree of files (objects) addressed by ``/``-separated paths relative
to its root. Path segments starting with ``.`` or ``_`` are not data: staging areas,
temporary files, release manifests, pointers and locks live there, and listings skip
them. Nothing here logs or raises a file's content, only store-relative paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from dicom_deid.errors import StorageError

__all__ = [
    "HIDDEN",
    "AlreadyExists",
    "OutputSink",
    "Release",
    "Store",
    "StoredFile",
    "epoch_ns",
    "file_sha256",
    "is_hidden",
    "parallel",
    "split_rel",
]

HIDDEN = (".", "_")
"""A path segment starting with one of these is not data (staging, state, temporary)."""

T = TypeVar("T")
R = TypeVar("R")


class AlreadyExists(StorageError):
    """A conditional create (``write_bytes(..., if_absent=True)``) found the file there."""


@dataclass(frozen=True)
class Release:
    """What publishing one release did: files in the tree now, added or replaced ones,
    removed ones."""

    release: str
    files: int
    added: int
    removed: int


@dataclass(frozen=True)
class StoredFile:
    """One file in a store: its store-relative path, size, last modification (UTC) and,
    on object stores, the generation a reader can pin and the server's checksum of the
    content (``md5:<base64>``, or ``crc32c:<base64>`` for composed objects); both None on
    local disk."""

    rel: str
    size: int
    modified: datetime
    generation: int | None = None
    checksum: str | None = None

    @property
    def mtime_ns(self) -> int:
        """``modified`` in nanoseconds since the epoch (microsecond precision)."""
        return epoch_ns(self.modified)


def epoch_ns(moment: datetime) -> int:
    """A timezone-aware time in nanoseconds since the epoch (exact to the microsecond)."""
    if moment.tzinfo is None:
        raise StorageError("times must be timezone-aware")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def is_hidden(rel: str) -> bool:
    """True if any segment of ``rel`` starts with ``.`` or ``_`` (not data)."""
    return any(part.startswith(HIDDEN) for part in rel.split("/") if part)


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on at most ``workers`` threads, results in order; the first
    failure cancels what has not started and is raised."""
    todo = list(items)
    if not todo:
        return []
    if workers <= 1 or len(todo) == 1:
        return [fn(item) for item in todo]
    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        futures = [pool.submit(fn, item) for item in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for other in futures:
                other.cancel()
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


class OutputSink(Protocol):
    """Where published outputs go from a batch's folder, file by file as the batch
    publishes them."""

    def published(self, path: str, rel: str) -> None:
        """``rel`` was published at local ``path``; the sink takes the file away. The same
        ``rel`` published again (a newer duplicate) replaces the earlier one."""

    def removed(self, rel: str) -> None:
        """The output published as ``rel`` is taken back (a newer duplicate won elsewhere)."""


class Store(ABC):
    """A tree of files addressed by ``/``-separated paths relative to the store's root.

    Missing files raise :class:`FileNotFoundError` on every backend.
    """

    url: str

    # -- listing and reading -----------------------------------------------------------

    @abstractmethod
    def list_files(
        self,
        prefix: str = "",
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[StoredFile]:
        """Files under folder ``prefix`` (sorted; hidden ``.``/``_`` segments below the
        prefix skipped), optionally only those modified in ``[modified_from, modified_to)``."""

    @abstractmethod
    def stat(self, rel: str) -> StoredFile:
        """The file at ``rel`` as a listing would show it (one request on object stores)."""

    @abstractmethod
    def exists(self, rel: str) -> bool:
        """True if a file or folder exists at ``rel``."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The content of the file at ``rel``."""

    @abstractmethod
    def open_read(self, rel: str, *, generation: int | None = None) -> BinaryIO:
        """A seekable binary reader of ``rel`` that fetches only what is read (on object
        stores: ranged requests of a chunk each), all from one generation of the file:
        ``generation`` (from :meth:`stat`, :meth:`list_files` or :meth:`release_files`) or
        the current one; a generation replaced since is :class:`FileNotFoundError`."""

    def read_range(self, rel: str, start: int, length: int, *,
                   generation: int | None = None) -> bytes:
        """Bytes ``start`` to ``start + length`` of ``rel`` (fewer at its end), of
        ``generation`` if given (see :meth:`open_read`)."""
        with self.open_read(rel, generation=generation) as fh:
            fh.seek(start)
            return fh.read(length)

    @abstractmethod
    def local_copy(self, rel: str) -> AbstractContextManager[Path]:
        """A local path holding ``rel`` while the context lasts: the file itself on local
        disk (nothing copied), a temporary download on object stores (removed on exit)."""

    def fetch(self, rels: Collection[str], folder: Path, *, workers: int = 8
              ) -> dict[str, Path]:
        """Copy many files into ``folder`` (each at ``folder/<rel>``) on at most
        ``workers`` threads; returns rel -> local path."""
        def one(rel: str) -> Path:
            target = Path(folder, *split_rel(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_to_local(rel, target)
            return target

        return dict(zip(rels, parallel(one, rels, workers), strict=True))

    def copy_to_local(self, rel: str, target: Path, *, size: int | None = None) -> None:
        """Copy the whole file at ``rel`` to the local path ``target`` (on object stores
        one download, its checksum checked). ``size``: what a listing said, a hint."""
        del size
        with self.open_read(rel) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def sha256(self, rels: Collection[str], *, workers: int = 8) -> dict[str, str]:
        """SHA-256 (hex) of each file, read and hashed on at most ``workers`` threads."""
        def one(rel: str) -> str:
            digest = hashlib.sha256()
            with self.open_read(rel) as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            return digest.hexdigest()

        return dict(zip(rels, parallel(one, rels, workers), strict=True))

    def local_path(self, rel: str) -> Path:
        """The local file of ``rel``: only stores on a local filesystem have one (callers
        that must also work on object stores use :meth:`local_copy` or :meth:`fetch`)."""
        raise StorageError(f"{self.uri(rel)} has no local path; use local_copy() or fetch()")

    # -- writing -----------------------------------------------------------------------

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write ``data`` to ``rel`` atomically (readers see the old or the new file).
        ``if_absent``: create only, raising :class:`AlreadyExists` if ``rel`` exists."""

    @abstractmethod
    def upload_file(self, local: Path, rel: str) -> None:
        """Store local file ``local`` at ``rel``, streamed (not read into memory)."""

    @abstractmethod
    def copy(self, src_rel: str, dst_rel: str) -> None:
        """Copy ``src_rel`` to ``dst_rel`` inside the store (server-side on object stores)."""

    @abstractmethod
    def scratch_dir(self, rel: str) -> Path:
        """An empty local folder to build the tree that :meth:`put_tree` will store at ``rel``."""

    @abstractmethod
    def put_tree(self, scratch: Path, rel: str) -> None:
        """Make ``rel`` hold exactly the tree built in ``scratch``, replacing what was there."""

    @contextmanager
    def tree_writer(self, rel: str, *, replace: bool = True
                    ) -> Iterator[tuple[Path, OutputSink | None]]:
        """A local folder to write a batch's outputs into for ``rel``, and the sink that
        stores each output as the batch publishes it (None: the folder is the store's own,
        or is stored when the block ends).

        ``replace``: ``rel`` then holds exactly what the block wrote, replacing what was
        there (on a failure the unfinished folder is removed). Otherwise the outputs are
        added to what ``rel`` holds, as they come."""
        if not replace:
            folder = self.local_path(rel)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder, None
            return
        scratch = self.scratch_dir(rel)
        try:
            yield scratch, None
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self.put_tree(scratch, rel)

    @abstractmethod
    def delete_tree(self, rel: str) -> None:
        """Remove ``rel`` and everything under it; missing is fine."""

    @abstractmethod
    def make_private(self, rel: str) -> None:
        """Make folder ``rel`` readable by the pipeline only (unverified outputs live
        there); an object store relies on its bucket's permissions and does nothing."""

    # -- release trees -----------------------------------------------------------------

    @abstractmethod
    def publish_release(self, tree: str, release: str, add: Mapping[str, str],
                        remove: Collection[str], files: Mapping[str, bytes], *,
                        withdraw: bool = False) -> Release:
        """Make ``release`` the content of the growing tree at ``tree`` in one step: the
        current tree without the paths in ``remove``, with each staged file of ``add``
        (tree path -> store-relative staged path) added or replacing the file at its
        path, and the small ``files`` written. Readers see the old tree or the new one,
        never a mix; releases of one tree are built one at a time. Publishing a release
        again (its record was lost: a crash between the release and the ledger) is
        idempotent: it is built on the release it was built on, never on itself.

        The release shown until now is kept for the readers that resolved it, until the
        next release. ``withdraw``: the paths in ``remove`` are withdrawn, and that
        overrides it: once the release is shown, before this returns, no copy of them is
        left in the store (taken out of every earlier release still kept, and on object
        stores every stored version of them deleted); a reader of an earlier release
        finds them gone (:class:`FileNotFoundError`), as a reader of a replaced file
        does."""

    @abstractmethod
    def lock(self, tree: str) -> AbstractContextManager[None]:
        """Hold the tree's exclusive lock: whoever plans and makes a release of it (a
        night's publish, a withdrawal) holds it from reading the ledger to writing it, so
        neither works from a state the other is changing. Re-entrant in one thread."""

    @abstractmethod
    def release_of(self, tree: str) -> str | None:
        """The release ``tree`` shows now (None: nothing published yet)."""

    @abstractmethod
    def release_files(self, tree: str) -> list[StoredFile]:
        """The files of the release ``tree`` shows now (store-relative paths under
        ``tree``, sorted; empty before the first release), as its publisher recorded
        them: the one list a reader of a release tree trusts (see
        :mod:`dicom_deid.storage.gcs` for the reader contract)."""

    def uri(self, rel: str) -> str:
        """A full URI/path of ``rel``, for manifests and warehouse rows."""
        return f"{self.url.rstrip('/')}/{rel}" if rel else self.url


def split_rel(rel: str) -> list[str]:
    """The segments of store-relative path ``rel`` (empty and ``.`` ones dropped); ``..``
    is refused, so no path leaves the store's root."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise StorageError("store paths may not contain '..'")
    return parts


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a local file, read in the kernel-sized chunks ``file_digest`` uses."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
