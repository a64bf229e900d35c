"""Open the store a URL names: a local folder (the embedded default) or a GCS bucket."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

from dicom_deid.errors import StorageError

from .base import Store
from .local import LocalStore

__all__ = ["download", "is_object_uri", "object_at", "open_store"]

_OPENED: dict[str, Store] = {}
"""Bucket URL -> its store, per process: workers reuse one client (and its connections)."""
os.register_at_fork(after_in_child=_OPENED.clear)  # a parent's sockets are not the child's


def open_store(url: str | Path) -> Store:
    """The store for ``url``: ``/abs/path``, ``relative/path`` or ``file:///abs/path`` is a
    :class:`~.local.LocalStore`; ``gs://bucket[/prefix]`` a :class:`~.gcs.GcsStore` (its
    client made on first use, from Application Default Credentials or, with
    ``STORAGE_EMULATOR_HOST`` set, for the emulator)."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and text[1:3] == ":\\"):
        return LocalStore(parsed.path if parsed.scheme == "file" else text)
    if parsed.scheme == "gs":
        from .gcs import GcsStore  # google-cloud-storage loads only for gs:// URLs

        return GcsStore(text)
    raise StorageError(f"storage scheme {parsed.scheme!r} is not supported: use a local "
                       "folder, file:///path or gs://bucket[/prefix]")


def is_object_uri(uri: str | Path) -> bool:
    """True for an object store URI (``gs://...``), False for a local path."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def object_at(uri: str) -> tuple[Store, str]:
    """The store of an object URI's bucket (opened once per process) and the object's
    path in it."""
    scheme, _, rest = uri.partition("://")
    bucket, _, rel = rest.partition("/")
    root = f"{scheme}://{bucket}"
    if root not in _OPENED:
        _OPENED[root] = open_store(root)
    return _OPENED[root], rel


def download(uri: str, folder: Path, *, mtime_ns: int | None = None,
             size: int | None = None) -> Path:
    """A local copy of the object at ``uri`` in ``folder`` (a fresh name, never the
    object's), with its update time as the copy's modification time: ``mtime_ns`` when
    a listing gave it (one request: the download, its checksum checked by the client),
    else looked up first. Local readers then see the time the store gives the object (the
    de-identification's duplicate rule). ``size``: the listing's, a hint of how to read."""
    store, rel = object_at(uri)
    if mtime_ns is None:
        mtime_ns = store.stat(rel).mtime_ns
    target = Path(folder) / f"{uuid.uuid4().hex}.part"
    try:
        store.copy_to_local(rel, target, size=size)
        os.utime(target, ns=(mtime_ns, mtime_ns))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
