"""Local folders (a local or mounted filesystem): the embedded default store.

Publishing a release is a directory rename, so readers never see a half-published tree;
the tree's lock is an ``flock`` on a file beside it. Nothing in this module logs or raises
a file's content, only store-relative paths.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from dicom_deid.dicom.files import write_atomic, write_staged
from dicom_deid.errors import BadInput, StorageError

from .base import (
    HIDDEN,
    AlreadyExists,
    Release,
    Store,
    StoredFile,
    epoch_ns,
    file_sha256,
    parallel,
    split_rel,
)
from .permissions import private_dir

__all__ = ["NOT_A_FILE", "LocalStore", "not_a_file", "open_regular", "path_text", "text_path"]

log = logging.getLogger(__name__)


def path_text(path: str) -> str:
    """``path`` as text every CSV and Parquet writer takes: ``path`` itself when it is
    UTF-8 (nearly always). A name that is not (bytes of a Latin-1 or Windows sender, which
    Python carries as surrogates, see :func:`os.fsdecode`) has each byte that does not
    decode written as ``\\xHH`` (Python's ``backslashreplace``); :func:`text_path` gives
    the name back."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name holds: escaped as itself
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def text_path(text: str) -> str:
    """The file name :func:`path_text` wrote as ``text`` (each ``\\xHH`` of a byte that is
    not UTF-8 back to that byte, as :func:`os.fsdecode` carries it)."""
    if "\\x" not in text:
        return text
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


_SPECIAL = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def not_a_file(path: str, mode: int) -> str:
    """Why the entry at ``path``, of ``lstat`` mode ``mode``, is not read as an input file
    (naming no path): a symbolic link (never followed: it may lead out of the folder read,
    to another patient's files), a folder that cannot be listed, or a special file."""
    if stat.S_ISLNK(mode):
        try:
            target = os.stat(path).st_mode  # described, never opened
        except OSError as exc:
            what = {errno.ELOOP: "symbolic link loop",
                    errno.ENOENT: "dangling symbolic link"}.get(exc.errno or 0, "symbolic link")
            return f"{what} (links are not followed)"
        to = ("a folder" if stat.S_ISDIR(target) else "a file" if stat.S_ISREG(target)
              else "a special file")
        return f"symbolic link to {to} (links are not followed)"
    if stat.S_ISDIR(mode):
        try:
            os.scandir(path).close()
        except OSError as exc:
            return f"cannot list folder: {exc.strerror}"
        return "a folder, not a file"
    kind = next((name for test, name in _SPECIAL if test(mode)), "special file")
    return f"not a regular file ({kind})"


NOT_A_FILE = "not-a-file"
"""The :class:`BadInput` kind of an input that is no regular file (a link, a FIFO...)."""


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file at ``path`` (blocking reads) and its ``fstat``.
    Opened without blocking and without following a symbolic link, so a FIFO or a device
    put where a file was never hangs the reader: anything but a regular file is a
    :class:`BadInput` (kind :data:`NOT_A_FILE`; ``unreadable`` when it cannot be opened)
    naming no path. A name not there as given may be the text :func:`path_text` made of a
    name that is not UTF-8: that name is tried."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if text_path(path) == path:
                raise
            fd = os.open(text_path(path), flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInput(NOT_A_FILE, "symbolic link (links are not followed)") from None
        if exc.errno == errno.ENXIO:
            raise BadInput(NOT_A_FILE, "not a regular file (socket)") from None
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(NOT_A_FILE, not_a_file(path, st.st_mode))
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class LocalStore(Store):
    """A folder on a local or mounted filesystem; publishing is a directory rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, rel: str) -> Path:
        return self.root.joinpath(*split_rel(rel))

    def list_files(
        self,
        prefix: str = "",
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[StoredFile]:
        lo = epoch_ns(modified_from) if modified_from else None
        hi = epoch_ns(modified_to) if modified_to else None
        base = self._path(prefix)
        if not base.exists():
            return []
        found: list[StoredFile] = []
        # Paths as strings (a landing zone's listing is every night's fixed cost: Path
        # objects made it three times slower); entries are under the root by construction.
        skip = len(os.path.join(str(self.root), ""))
        for entry in _walk(str(base), tolerant=True):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone since it was listed: not in the folder any more
                continue
            too_old = lo is not None and st.st_mtime_ns < lo
            if too_old or (hi is not None and st.st_mtime_ns >= hi):
                continue
            rel = entry.path[skip:].replace(os.sep, "/")
            found.append(StoredFile(rel, st.st_size, _from_ns(st.st_mtime_ns)))
        found.sort(key=lambda f: f.rel)
        return found

    def local_path(self, rel: str) -> Path:
        return self._path(rel)

    def open_read(self, rel: str, *, generation: int | None = None) -> BinaryIO:
        del generation  # a local file has one generation: the file
        return open(self._path(rel), "rb")

    def read_range(self, rel: str, start: int, length: int, *,
                   generation: int | None = None) -> bytes:
        del generation
        fd = os.open(self._path(rel), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    @contextmanager
    def _the_file(self, rel: str) -> Iterator[Path]:
        path = self._path(rel)
        if not path.is_file():
            raise FileNotFoundError(f"no file at {rel}")
        yield path

    def local_copy(self, rel: str) -> AbstractContextManager[Path]:
        return self._the_file(rel)

    def copy_to_local(self, rel: str, target: Path, *, size: int | None = None) -> None:
        del size  # a local copy needs no hint
        # Copies, not links: a hard link would share the landing file's mode (the
        # workspace's files are made 0600) and any change to it.
        shutil.copyfile(self._path(rel), target)

    def sha256(self, rels: Collection[str], *, workers: int = 8) -> dict[str, str]:
        paths = [self._path(rel) for rel in rels]
        return dict(zip(rels, parallel(file_sha256, paths, workers), strict=True))

    def upload_file(self, local: Path, rel: str) -> None:
        _copy_atomic(Path(local), self._path(rel))

    def copy(self, src_rel: str, dst_rel: str) -> None:
        _copy_atomic(self._path(src_rel), self._path(dst_rel))

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

    def release_files(self, tree: str) -> list[StoredFile]:
        link = self._path(tree)
        if not link.is_symlink():
            return []
        folder = link.parent / os.readlink(link)  # resolved once: one release throughout
        name = "/".join(split_rel(tree))
        found = []
        for entry in _walk(folder):
            st = entry.stat(follow_symlinks=False)
            rel = Path(entry.path).relative_to(folder).as_posix()
            found.append(StoredFile(f"{name}/{rel}", st.st_size, _from_ns(st.st_mtime_ns)))
        found.sort(key=lambda f: f.rel)
        return found

    def publish_release(self, tree: str, release: str, add: Mapping[str, str],
                        remove: Collection[str], files: Mapping[str, bytes], *,
                        withdraw: bool = False) -> Release:
        # ``tree`` is a symbolic link to ``.releases-<tree>/<release>/``, a full tree whose
        # unchanged files are hard links to the previous release's: building one costs a
        # link per file, and replacing the link is one atomic rename. The previous
        # release stays (a reader that resolved the link keeps a whole tree), less what
        # a withdrawal withdrew: those paths are unlinked from every release folder kept,
        # and since the files are hard links of each other, no copy of them is left.
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
            if withdraw:
                _withdraw_from(releases, target.name, remove)
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

    def stat(self, rel: str) -> StoredFile:
        st = os.stat(self._path(rel))
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(f"no file at {rel}")
        return StoredFile("/".join(split_rel(rel)), st.st_size, _from_ns(st.st_mtime_ns))

    def make_private(self, rel: str) -> None:
        private_dir(self._path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self._path(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(rel)
        if not if_absent:
            write_atomic(path, data)
            return
        # Written whole under a temporary name, then linked to its name: the link fails
        # if the name exists (O_EXCL semantics), and readers never see a partial file.
        tmp = write_staged(path, data, None, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise AlreadyExists(f"{rel} exists already") from None
        finally:
            os.unlink(tmp)

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


def _withdraw_from(releases: Path, shown: str, paths: Collection[str]) -> None:
    """Unlink the tree ``paths`` from every release folder under ``releases`` but the one
    ``shown`` (which was built without them), folders left empty removed; a path still
    there afterwards is a :class:`StorageError` (naming no path: a withdrawal is then not
    done, and is finished by asking again)."""
    wanted = [split_rel(p) for p in paths]
    left = 0
    for folder in sorted(releases.iterdir()):
        if folder.name == shown or folder.is_symlink() or not folder.is_dir():
            continue
        for parts in wanted:
            path = folder.joinpath(*parts)
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                pass  # counted below
            if os.path.lexists(path):
                left += 1
                continue
            parent = path.parent
            while parent != folder:  # the withdrawn file's now empty folders
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
    if left:
        raise StorageError(f"{left} withdrawn file(s) could not be removed from an earlier "
                           f"release in {releases.name}: the withdrawal is not complete")


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a hidden temporary file and a rename (a kernel
    copy where the filesystem allows); folders made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def _walk(base: str | Path, *, tolerant: bool = False) -> Iterator[os.DirEntry[str]]:
    """The regular files under ``base`` (hidden names skipped; symbolic links and special
    files never listed, nor followed). A folder that cannot be listed is a
    :class:`StorageError` naming no path, or, ``tolerant`` (a landing zone's listing),
    left out with the rest: one warning then counts what was left out, by reason."""
    stack = [str(base)]
    left_out: dict[str, int] = {}
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith(HIDDEN):
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        is_file = not is_dir and entry.is_file(follow_symlinks=False)
                        reason = "" if is_dir or is_file else not_a_file(
                            entry.path, entry.stat(follow_symlinks=False).st_mode)
                    except OSError as exc:
                        is_dir = is_file = False
                        reason = f"cannot read entry: {exc.strerror}"
                    if is_dir:
                        stack.append(entry.path)
                    elif is_file:
                        yield entry
                    else:
                        left_out[reason] = left_out.get(reason, 0) + 1
        except OSError as exc:
            if not tolerant or folder == str(base):
                raise StorageError(f"cannot list a folder of the store: {exc.strerror}"
                                   ) from None
            reason = f"cannot list folder: {exc.strerror}"
            left_out[reason] = left_out.get(reason, 0) + 1
    if left_out:
        log.warning("%d entr(ies) not listed (not regular files, or unreadable): %s",
                    sum(left_out.values()),
                    "; ".join(f"{n} {why}" for why, n in sorted(left_out.items())))


def _from_ns(ns: int) -> datetime:
    """A file time as a datetime, truncated to the microsecond (never rounded up: a
    listed time used as a bound then keeps its file on the same side)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
