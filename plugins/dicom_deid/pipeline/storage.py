"""Where pipeline files live: one small interface over storage backends.

The DAG steps never touch ``os``/``shutil`` on a landing zone or a destination directly;
they go through a :class:`Store` opened from a URL by :func:`open_store`. Local folders
(``/abs/path``, ``relative/path`` or ``file:///abs/path``) are implemented here; other
schemes (``gs://`` next) plug in as another subclass with the same methods. Nothing in
this module logs or raises a file's content, only store-relative paths.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from dicom_deid.dicom.files import write_atomic
from dicom_deid.errors import StorageError

from .restricted import private_dir

__all__ = ["LocalStore", "Release", "StorageError", "Store", "StoredFile", "open_store"]

_HIDDEN = (".", "_")  # staging areas, temporary files and state folders are not data




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
    def publish_release(self, tree: str, release: str, add: Mapping[str, str],
                        remove: Collection[str], files: Mapping[str, bytes]) -> Release:
        """Make ``release`` the content of the growing tree at ``tree`` in one step: the
        current tree without the paths in ``remove``, with each staged file of ``add``
        (tree path -> store-relative staged path) added or replacing the file at its
        path, and the small ``files`` written. Readers see the old tree or the new one,
        never a mix; releases of one tree are built one at a time. A release published
        already is built again on the release it was built on (its record was lost: a
        crash between the release and the ledger)."""

    @abstractmethod
    def lock(self, tree: str) -> AbstractContextManager[None]:
        """Hold the tree's exclusive lock: whoever plans and makes a release of it (a
        night's publish, a withdrawal) holds it from reading the ledger to writing it, so
        neither works from a state the other is changing. Re-entrant in one thread."""

    @abstractmethod
    def release_of(self, tree: str) -> str | None:
        """The release ``tree`` shows now (None: nothing published yet)."""

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

    def lock(self, tree: str) -> AbstractContextManager[None]:
        return _tree_lock(self._path(tree))

    def release_of(self, tree: str) -> str | None:
        return _release_name(_shown_folder(self._path(tree))) or None

    def publish_release(self, tree: str, release: str, add: Mapping[str, str],
                        remove: Collection[str], files: Mapping[str, bytes]) -> Release:
        # ``tree`` is a symbolic link to ``.releases-<tree>/<release>/``, a full tree whose
        # unchanged files are hard links to the previous release's: building one costs a
        # link per file, and replacing the link is one atomic rename. The previous
        # release stays (a reader that resolved the link keeps a whole tree).
        link = self._path(tree)
        if "/" in tree.strip("/") or not tree.strip("/"):
            raise StorageError("a release tree is one folder name under the store's root")
        if link.exists() and not link.is_symlink():
            raise StorageError(f"{tree} is a folder, not a release tree (an older layout): "
                               "move it aside")
        # One release of a tree is built at a time (a night's publish, a withdrawal).
        with self.lock(tree):
            releases = link.with_name(f".releases-{link.name}")
            shown = _shown_folder(link)
            base, target = self._release_dirs(tree, release, releases, shown)
            try:
                kept = _link_all(base, target, {*remove, *add}) if base else 0
                for rel, staged in sorted(add.items()):
                    _place(self._path(staged), target / rel)
                for rel, data in sorted(files.items()):
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(target / rel, data)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            removed = sum(1 for rel in remove if base is not None and (base / rel).exists())
            fresh = link.with_name(f".{link.name}.link-{uuid.uuid4().hex[:8]}")
            os.symlink(os.path.relpath(target, link.parent), fresh)
            os.replace(fresh, link)  # the one step readers see
            # Kept: this release and the one shown until now (readers may have resolved it),
            # with the base records that say what each was built on.
            keep = {target.name, shown, f"{release}.base", f"{_release_name(shown)}.base",
                    *((base.name, f"{base.name}.base") if base else ())}
            for old in releases.iterdir():
                if old.name not in keep:  # older than the previous release, or set aside
                    if old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
                    else:
                        old.unlink(missing_ok=True)
            return Release(release, kept + len(add) + len(files), len(add), removed)

    def _release_dirs(self, tree: str, release: str, releases: Path, folder: str
                      ) -> tuple[Path | None, Path]:
        """The release to build on (the one shown now, in ``folder``; for a release shown
        already, the one it was built on) and an empty folder to build in; the base is
        recorded."""
        shown = _release_name(folder)
        base_file = releases / f"{release}.base"
        if shown == release:  # published before, its record lost: built again on its base
            name = base_file.read_text().strip() if base_file.exists() else ""
        else:
            name = folder
        base = releases / name if name else None
        if base is not None and not base.is_dir():
            raise StorageError(f"{tree}: release {name} is gone; cannot build {release}")
        target = releases / release
        if shown == release:  # built beside the one shown, which readers may be using
            target = releases / f"{release}{_AGAIN}{uuid.uuid4().hex[:8]}"
        elif target.exists():  # an earlier try that did not finish
            shutil.rmtree(target)
        target.mkdir(parents=True)
        base_file.write_text(name + "\n")
        return base, target

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


_AGAIN = ".again-"
"""A release built again keeps this suffix on its folder (the link then names it)."""


def _shown_folder(link: Path) -> str:
    """The release folder a tree's link names now, as on disk ("" before the first)."""
    return Path(os.readlink(link)).name if link.is_symlink() else ""


def _release_name(folder: str) -> str:
    """The release a release folder holds (a release built again has a suffix)."""
    return folder.partition(_AGAIN)[0]
_HELD: dict[tuple[str, int], int] = {}
"""(lock file, thread) -> how many times this thread holds it (``flock`` is per open
file: taken twice by one thread it would wait for itself)."""


@contextmanager
def _tree_lock(link: Path) -> Iterator[None]:
    """Hold the exclusive lock of the release tree at ``link``: a lock file beside it,
    ``.releases-<tree>.lock``, locked with ``flock`` (released when the holder ends)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    path = link.with_name(f".releases-{link.name}.lock")
    owner = (str(path), threading.get_ident())
    if _HELD.get(owner):
        _HELD[owner] += 1
        try:
            yield
        finally:
            _HELD[owner] -= 1
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _HELD[owner] = 1
        try:
            yield
        finally:
            del _HELD[owner]
            fcntl.flock(lock, fcntl.LOCK_UN)


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


def _link_all(base: Path, target: Path, skip: Collection[str]) -> int:
    """Hard-link every file of ``base`` into ``target`` except the paths in ``skip``."""
    count = 0
    for entry in _walk(base):
        rel = Path(entry.path).relative_to(base).as_posix()
        if rel not in skip:
            _place(Path(entry.path), target / rel)
            count += 1
    return count


def _place(src: Path, dst: Path) -> None:
    """``src`` at ``dst`` as a hard link (a copy across filesystems); folders made."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        if not src.exists():
            raise
        dst.parent.mkdir(parents=True, exist_ok=True)
        _place(src, dst)
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
