"""Where pipeline files live: one small interface over storage backends.

The DAG steps never touch ``os``/``shutil`` on a landing zone or a destination directly;
they go through a :class:`Store` opened from a URL by :func:`open_store`. Local folders
(``/abs/path``, ``relative/path`` or ``file:///abs/path``) are implemented here; other
schemes (``gs://`` next) plug in as another subclass with the same methods. Nothing in
this module logs or raises a file's content, only store-relative paths.
"""

from __future__ import annotations

import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from dicom_deid.dicom.files import write_atomic
from dicom_deid.errors import StorageError

from .restricted import private_dir

__all__ = ["LocalStore", "StorageError", "Store", "StoredFile", "open_store"]

_HIDDEN = (".", "_")  # staging areas, temporary files and state folders are not data




@dataclass(frozen=True)
class StoredFile:
    """One file in a store: its store-relative path, size and last modification (UTC)."""

    rel: str
    size: int
    modified: datetime


class Store(ABC):
    """A tree of files addressed by ``/``-separated paths relative to the store's root."""

    url: str

    @abstractmethod
    def list_files(
        self,
        prefix: str = "",
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[StoredFile]:
        """Files under ``prefix`` (sorted; hidden ``.``/``_`` entries skipped), optionally
        only those modified in ``[modified_from, modified_to)``."""

    @abstractmethod
    def local_path(self, rel: str) -> Path:
        """A local path to read ``rel`` from (the file itself for local stores)."""

    @abstractmethod
    def scratch_dir(self, rel: str) -> Path:
        """An empty local folder to build the tree that :meth:`put_tree` will store at ``rel``."""

    @abstractmethod
    def put_tree(self, scratch: Path, rel: str) -> None:
        """Make ``rel`` hold exactly the tree built in ``scratch``, replacing what was there."""

    @abstractmethod
    def merge_into(self, src_rels: list[str], dst_rel: str) -> int:
        """Replace ``dst_rel`` by the union of the trees at ``src_rels`` (publishing a
        batch from its shards); the sources are removed afterwards. Files published."""

    @abstractmethod
    def exists(self, rel: str) -> bool:
        """True if a file or folder exists at ``rel``."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The content of the file at ``rel``."""

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically (readers see the old or the new file)."""

    @abstractmethod
    def delete_tree(self, rel: str) -> None:
        """Remove ``rel`` and everything under it; missing is fine."""

    @abstractmethod
    def make_private(self, rel: str) -> None:
        """Make folder ``rel`` readable by the pipeline only (unverified outputs live
        there); an object store relies on its bucket's permissions and does nothing."""

    def uri(self, rel: str) -> str:
        """A full URI/path of ``rel``, for manifests and warehouse rows."""
        return f"{self.url.rstrip('/')}/{rel}" if rel else self.url


class LocalStore(Store):
    """A folder on a local or mounted filesystem; publishing is a directory rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, rel: str) -> Path:
        parts = [p for p in rel.split("/") if p]
        if any(p == ".." for p in parts):
            raise StorageError("store paths may not contain '..'")
        return self.root.joinpath(*parts)

    def list_files(
        self,
        prefix: str = "",
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[StoredFile]:
        lo = _epoch_ns(modified_from) if modified_from else None
        hi = _epoch_ns(modified_to) if modified_to else None
        base = self._path(prefix)
        if not base.exists():
            return []
        found: list[StoredFile] = []
        for entry in _walk(base):
            st = entry.stat(follow_symlinks=False)
            too_old = lo is not None and st.st_mtime_ns < lo
            if too_old or (hi is not None and st.st_mtime_ns >= hi):
                continue
            rel = Path(entry.path).relative_to(self.root).as_posix()
            found.append(StoredFile(rel, st.st_size, _from_ns(st.st_mtime_ns)))
        found.sort(key=lambda f: f.rel)
        return found

    def local_path(self, rel: str) -> Path:
        return self._path(rel)

    def scratch_dir(self, rel: str) -> Path:
        # A sibling of the target: same filesystem, so put_tree is a rename.
        target = self._path(rel)
        scratch = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        scratch.mkdir(parents=True)
        return scratch

    def put_tree(self, scratch: Path, rel: str) -> None:
        target = self._path(rel)
        if scratch.parent != target.parent:
            raise StorageError("put_tree expects a folder made by scratch_dir")
        _swap(scratch, target)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def merge_into(self, src_rels: list[str], dst_rel: str) -> int:
        # Hard links into a scratch tree, then one swap: the sources stay whole until
        # the new tree is in place, so a crash at any point can simply be rerun.
        dst = self._path(dst_rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        count = 0
        try:
            for rel in src_rels:
                src = self._path(rel)
                for entry in _walk(src):
                    target = tmp / Path(entry.path).relative_to(src)
                    if target.exists():
                        raise StorageError(f"{target.relative_to(tmp)} is in two sources")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(Path(entry.path), target)
                    count += 1
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap(tmp, dst)
        for rel in src_rels:
            shutil.rmtree(self._path(rel), ignore_errors=True)
        return count

    def exists(self, rel: str) -> bool:
        return self._path(rel).exists()

    def make_private(self, rel: str) -> None:
        private_dir(self._path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self._path(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        write_atomic(self._path(rel), data)

    def delete_tree(self, rel: str) -> None:
        path = self._path(rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _swap(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``: one rename when ``target`` is absent, else
    rename the old tree aside first, so ``target`` is never a mix of old and new."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old)
    else:
        os.rename(new, target)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _walk(base: Path) -> Iterator[os.DirEntry[str]]:
    stack = [base]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith(_HIDDEN):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield entry


def _epoch_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise StorageError("modification bounds must be timezone-aware")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def open_store(url: str | Path) -> Store:
    """The store for ``url``: a local folder today; ``gs://`` is the next backend."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and text[1:3] == ":\\"):
        return LocalStore(parsed.path if parsed.scheme == "file" else text)
    raise StorageError(
        f"storage scheme {parsed.scheme!r} is not supported yet (local folders only); "
        "see README 'Scaling out' for the GCS plan"
    )
