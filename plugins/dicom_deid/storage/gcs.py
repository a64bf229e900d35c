"""Google Cloud Storage (``gs://bucket[/prefix]``): landing zones and research trees in a
bucket, on google-cloud-storage.

The client is ``google.cloud.Client()`` unless one is given: Application Default
Credentials in production; with ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server) the
library itself talks to the emulator, anonymously, with ``GOOGLE_CLOUD_PROJECT`` as the
project, so callers never special-case it. Every request has explicit timeouts and the
library's retry policy; transfers of many objects run on a bounded thread pool.

Reader contract of a release tree
---------------------------------

A release tree ``<tree>/`` grows by releases. Objects are written under their final names
(no rename exists in an object store); what makes a release real is its manifest.

- ``<tree>/_releases/<release>.json`` -- the **manifest**, the commit marker: every path
  of the release with its size, the object generation it was written as, CRC32C and MD5,
  what the release added, replaced and removed, and the release it was built on. It is
  written last, with ``if_generation_match=0``, after every object it names.
- ``<tree>/_release`` -- the **pointer**: ``{"release": name}``, the release the tree
  shows. It moves (with a generation precondition, under the tree's lock) only after the
  manifest it names exists.
- ``<tree>/_lock``, ``<tree>/_releases/<release>.pending.json`` -- a publisher's lock and
  its intent while it writes. Like every ``.``/``_`` path segment, not data.

A reader that wants a release, never a half-published batch:

1. reads the pointer (:meth:`GcsStore.release_of`) and that release's manifest
   (:meth:`GcsStore.release_files`): the files of the release are exactly those, whatever
   else a listing of the prefix shows (objects of a release being written, or removed
   ones not yet deleted, are not in it);
2. reads each file at the generation its manifest names (``open_read(rel,
   generation=f.generation)``; a plain ``gsutil``/``gcloud storage`` reader can compare the
   object's generation or CRC32C with the manifest's);
3. treats :class:`FileNotFoundError` for a listed file (its generation is gone: a newer
   release replaced or removed it) as "the tree moved on": read the pointer again and
   start over from its manifest. If the pointer still names the same release, a release
   is being published (or was left half-published and is published again by its rerun):
   try again later. A reader never mixes files of two manifests.

Writers (:meth:`GcsStore.publish_release`), holding the tree's lock: write an intent;
copy every staged object to its final name (server-side) and write the small files;
write the manifest (``if_generation_match=0``); move the pointer (generation
precondition); delete what the release removed, the intent and manifests older than the
release it was built on. A rerun of a release whose manifest exists checks that the
request describes the same release (paths, base, sizes, CRC32C) and finishes the
remaining steps; a different release under that name is refused. A release left
half-published after it replaced objects of the release shown (a crash before its pointer
moved) blocks every other release until it is published again: releases built on a base
whose objects were overwritten would name generations that no longer exist.

In a bucket without object versioning, replacing a file overwrites the object readers of
the previous release pinned: they get :class:`FileNotFoundError` and move to the new
release (step 3), they never read the new bytes as the old release's. With versioning,
they keep reading the old release until they finish.

A release that withdraws files (``publish_release(..., withdraw=True)``) deletes, once its
pointer has moved, every stored generation of them, noncurrent ones included: a reader of
an earlier release gets :class:`FileNotFoundError` for them (step 3), and no version of a
withdrawn file is left in the bucket (a soft-delete retention policy is the bucket's).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

import google_crc32c
import requests
import requests.adapters
from google.api_core import exceptions as gexc
from google.cloud.storage import Blob, Bucket, Client
from google.cloud.storage.retry import DEFAULT_RETRY

from dicom_deid.errors import StorageError

from .base import (
    AlreadyExists,
    OutputSink,
    Release,
    Store,
    StoredFile,
    is_hidden,
    parallel,
    split_rel,
)
from .releases import FileEntry, ReleaseManifest, next_manifest
from .upload import UPLOAD_LANES, Upload

__all__ = ["GcsStore"]

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 120.0)
"""Seconds to connect and to wait for each response (every request passes it)."""
READ_CHUNK = 256 * 1024
"""Bytes one ranged request of :meth:`GcsStore.open_read` fetches: a DICOM header parse
(the first 64 KiB) costs one request, not the object."""
SINGLE_READ_UP_TO = 8 * 1024 * 1024
"""Objects up to this size (by their listing) are downloaded in one read of the response
instead of the library's 8 KiB pieces (a third of the client's CPU per object); larger
ones stream, so a multi-frame file is never held in memory whole."""
RESUMABLE_ABOVE = 8 * 1024 * 1024
"""Files larger than this go up as resumable uploads in :data:`UPLOAD_CHUNK` pieces,
each retried on its own."""
UPLOAD_CHUNK = 16 * 1024 * 1024  # a multiple of 256 KiB, as the API requires
CONNECTIONS = 64
"""Connections a client keeps open for reuse: one per transfer a process has in flight
(upload lanes, read-ahead threads, parallel copies), with room to spare."""
POINTER = "_release"
RELEASES = "_releases"
LOCK = "_lock"
_PENDING = ".pending.json"
_SCRATCH = "dicom-deid-scratch-"


class GcsStore(Store):
    """Objects under ``gs://bucket/prefix``; releases committed by a manifest written last.

    ``client`` (or ``credentials``/``project`` for a new one) lets an adapter such as an
    Airflow connection supply its own; by default the client is made on first use.
    """

    def __init__(
        self,
        url: str,
        *,
        client: Client | None = None,
        credentials: Any = None,
        project: str | None = None,
        workers: int = 8,
        page_size: int = 1000,
        read_chunk: int = READ_CHUNK,
        timeout: float | tuple[float, float] = TIMEOUT,
        lock_stale_after: timedelta = timedelta(minutes=10),
        lock_poll: float = 1.0,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise StorageError("a GCS store URL is gs://bucket[/prefix]")
        self.bucket_name = parsed.netloc
        self.prefix = "/".join(split_rel(parsed.path))
        self.url = f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else \
            f"gs://{self.bucket_name}"
        self.workers = max(1, workers)
        self.page_size = page_size
        self.read_chunk = read_chunk
        self.timeout = timeout
        self.lock_stale_after = lock_stale_after
        self.lock_poll = lock_poll
        self._client = client
        self._client_args: dict[str, Any] = {
            k: v for k, v in (("credentials", credentials), ("project", project))
            if v is not None}
        self._made = threading.Lock()

    # -- the client --------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The storage client (made on first use, so opening a store costs nothing)."""
        with self._made:
            if self._client is None:
                # project left out unless given: the library then takes it from the
                # credentials, or from GOOGLE_CLOUD_PROJECT when talking to an emulator.
                self._client = Client(**self._client_args)
                _environment_read_once(self._client)
            return self._client

    @property
    def bucket(self) -> Bucket:
        """The bucket (no request: a handle)."""
        return self.client.bucket(self.bucket_name)

    def _key(self, rel: str) -> str:
        return "/".join([*split_rel(self.prefix), *split_rel(rel)])

    def _folder(self, rel: str) -> str:
        """The object-name prefix of everything under folder ``rel``."""
        key = self._key(rel)
        return f"{key}/" if key else ""

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def _blob(self, rel: str, generation: int | None = None) -> Blob:
        return self.bucket.blob(self._key(rel), generation=generation)

    def _names(self, folder: str) -> list[str]:
        """Every object name under ``folder`` (hidden ones too), paged."""
        return [b.name for b in self.client.list_blobs(
            self.bucket_name, prefix=folder, page_size=self.page_size,
            fields="items(name),nextPageToken", timeout=self.timeout, retry=DEFAULT_RETRY)]

    # -- listing and reading -----------------------------------------------------------

    def list_files(
        self,
        prefix: str = "",
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[StoredFile]:
        for bound in (modified_from, modified_to):
            if bound is not None and bound.tzinfo is None:
                raise StorageError("modification bounds must be timezone-aware")
        folder = self._folder(prefix)
        found = []
        for blob in self.client.list_blobs(
                self.bucket_name, prefix=folder, page_size=self.page_size,
                fields="items(name,size,updated,generation,md5Hash,crc32c),nextPageToken",
                timeout=self.timeout, retry=DEFAULT_RETRY):
            below = blob.name[len(folder):]
            if not below or below.endswith("/") or is_hidden(below):
                continue  # folder placeholders, staging, state
            modified = blob.updated
            if (modified_from is not None and modified < modified_from) or (
                    modified_to is not None and modified >= modified_to):
                continue
            found.append(self._stored(blob))
        found.sort(key=lambda f: f.rel)
        return found

    def _stored(self, blob: Blob) -> StoredFile:
        checksum = f"md5:{blob.md5_hash}" if blob.md5_hash else (
            f"crc32c:{blob.crc32c}" if blob.crc32c else None)
        return StoredFile(self._rel(blob.name), int(blob.size), blob.updated,
                          int(blob.generation), checksum)

    def stat(self, rel: str) -> StoredFile:
        blob = self.bucket.get_blob(self._key(rel), timeout=self.timeout, retry=DEFAULT_RETRY)
        if blob is None:
            raise FileNotFoundError(f"no object at {rel}")
        return self._stored(blob)

    def exists(self, rel: str) -> bool:
        key = self._key(rel)
        if key and self.bucket.blob(key).exists(timeout=self.timeout, retry=DEFAULT_RETRY):
            return True
        return any(True for _ in self.client.list_blobs(
            self.bucket_name, prefix=self._folder(rel), max_results=1,
            timeout=self.timeout, retry=DEFAULT_RETRY))

    def read_bytes(self, rel: str) -> bytes:
        try:
            return cast(bytes, self._blob(rel).download_as_bytes(
                timeout=self.timeout, retry=DEFAULT_RETRY))
        except gexc.NotFound:
            raise FileNotFoundError(f"no object at {rel}") from None

    def open_read(self, rel: str, *, generation: int | None = None) -> BinaryIO:
        # The generation is fixed first, so every chunk comes from the same object even
        # if it is replaced while being read (then reads fail rather than mix two files).
        blob = self.bucket.get_blob(self._key(rel), generation=generation,
                                    timeout=self.timeout, retry=DEFAULT_RETRY)
        if blob is None:
            raise FileNotFoundError(f"no object at {rel}")
        pinned = self.bucket.blob(blob.name, generation=blob.generation)
        reader = pinned.open("rb", chunk_size=self.read_chunk, timeout=self.timeout,
                             retry=DEFAULT_RETRY)
        return cast(BinaryIO, _Reader(reader, rel))

    def read_range(self, rel: str, start: int, length: int, *,
                   generation: int | None = None) -> bytes:
        if length <= 0:
            return b""
        try:
            return cast(bytes, self._blob(rel, generation).download_as_bytes(
                start=start, end=start + length - 1, timeout=self.timeout,
                retry=DEFAULT_RETRY))
        except gexc.NotFound:
            raise FileNotFoundError(f"no object at {rel}") from None
        except gexc.RequestRangeNotSatisfiable:
            return b""  # at or past the end, as a local read

    def _download(self, rel: str, path: Path, size: int | None = None) -> Path:
        try:
            self._blob(rel).download_to_filename(
                str(path), timeout=self.timeout, retry=DEFAULT_RETRY,
                single_shot_download=size is not None and size <= SINGLE_READ_UP_TO)
        except gexc.NotFound:
            raise FileNotFoundError(f"no object at {rel}") from None
        return path

    @contextmanager
    def _temporary(self, rel: str) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix="dicom-deid-copy-"))
        try:
            suffix = PurePosixPath(rel).suffix
            name = "object" + (suffix if suffix[1:].isalnum() and len(suffix) <= 8 else "")
            yield self._download(rel, folder / name)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def local_copy(self, rel: str) -> AbstractContextManager[Path]:
        return self._temporary(rel)

    def copy_to_local(self, rel: str, target: Path, *, size: int | None = None) -> None:
        self._download(rel, target, size)

    def sha256(self, rels: Collection[str], *, workers: int = 8) -> dict[str, str]:
        def one(rel: str) -> str:
            sink = _HashSink()
            try:
                self._blob(rel).download_to_file(sink, timeout=self.timeout,
                                                 retry=DEFAULT_RETRY)
            except gexc.NotFound:
                raise FileNotFoundError(f"no object at {rel}") from None
            return sink.hash.hexdigest()

        return dict(zip(rels, parallel(one, rels, workers), strict=True))

    # -- writing -----------------------------------------------------------------------

    def _put(self, key: str, data: bytes, *, if_generation_match: int | None = None
             ) -> Blob:
        blob = self.bucket.blob(key)
        blob.upload_from_string(data, content_type="application/octet-stream",
                                if_generation_match=if_generation_match,
                                timeout=self.timeout, retry=DEFAULT_RETRY)
        return blob

    def write_bytes(self, rel: str, data: bytes, *, if_absent: bool = False) -> None:
        try:
            self._put(self._key(rel), data, if_generation_match=0 if if_absent else None)
        except gexc.PreconditionFailed:
            raise AlreadyExists(f"{rel} exists already") from None

    def upload_file(self, local: Path, rel: str) -> None:
        size = os.stat(local).st_size
        blob = self.bucket.blob(self._key(rel),
                                chunk_size=UPLOAD_CHUNK if size > RESUMABLE_ABOVE else None)
        blob.upload_from_filename(str(local), timeout=self.timeout, retry=DEFAULT_RETRY)

    def _copy_key(self, src: str, dst: str) -> Blob:
        """Server-side copy (``rewrite``, continued until done for large objects)."""
        source = self.bucket.blob(src)
        target = self.bucket.blob(dst)
        token = None
        try:
            while True:
                token, _, _ = target.rewrite(source, token=token, timeout=self.timeout,
                                             retry=DEFAULT_RETRY)
                if token is None:
                    return target
        except gexc.NotFound:
            raise FileNotFoundError(f"no object at {self._rel(src)}") from None

    def copy(self, src_rel: str, dst_rel: str) -> None:
        self._copy_key(self._key(src_rel), self._key(dst_rel))

    def scratch_dir(self, rel: str) -> Path:
        del rel  # built on local disk, uploaded by put_tree
        return Path(tempfile.mkdtemp(prefix=_SCRATCH))  # 0700: unverified outputs

    def put_tree(self, scratch: Path, rel: str) -> None:
        if not scratch.name.startswith(_SCRATCH) or not scratch.is_dir():
            raise StorageError("put_tree expects a folder made by scratch_dir")
        try:
            before = self._names(self._folder(rel))
            self._keep_only(rel, before, self._store_folder(scratch, rel))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _store_folder(self, local: Path, rel: str) -> set[str]:
        """Upload every file under local folder ``local`` to ``rel/<its path>`` (on the
        store's pool); their paths below ``rel``."""
        files = {p.relative_to(local).as_posix(): p
                 for p in sorted(local.rglob("*")) if p.is_file()}
        parallel(lambda item: self.upload_file(item[1], f"{rel}/{item[0]}" if rel else item[0]),
                 files.items(), self.workers)
        return set(files)

    def _keep_only(self, rel: str, before: Collection[str], kept: Collection[str]) -> None:
        """Delete the objects listed ``before`` under folder ``rel`` that are not ``kept``
        (paths below ``rel``): a replaced tree's leftovers."""
        folder = self._folder(rel)
        self._delete_keys([n for n in before if n[len(folder):] not in kept])

    @contextmanager
    def tree_writer(self, rel: str, *, replace: bool = True
                    ) -> Iterator[tuple[Path, OutputSink | None]]:
        # Built in a private local folder; each output the batch publishes is uploaded at
        # once (Upload), anything else left in the folder when the block ends after it.
        before = self._names(self._folder(rel)) if replace else []
        scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH))  # 0700: unverified outputs
        tree = scratch / "tree"
        tree.mkdir(mode=0o700)
        upload = Upload(self, scratch / ".upload", prefix=rel, lanes=UPLOAD_LANES)
        try:
            yield tree, upload
            upload.finish()
            rest = self._store_folder(tree, rel)
            if replace:
                self._keep_only(rel, before, upload.stored | rest)
        except BaseException:
            upload.abandon()
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _delete_keys(self, keys: Collection[str]) -> None:
        def one(key: str) -> None:
            with suppress(gexc.NotFound):
                self.bucket.blob(key).delete(timeout=self.timeout, retry=DEFAULT_RETRY)

        parallel(one, keys, self.workers)

    def delete_tree(self, rel: str) -> None:
        keys = self._names(self._folder(rel))
        key = self._key(rel)
        self._delete_keys([*keys, key] if key else keys)

    def make_private(self, rel: str) -> None:
        del rel  # access is the bucket's IAM policy

    # -- release trees -----------------------------------------------------------------

    def lock(self, tree: str) -> AbstractContextManager[None]:
        return self._tree_lock(_tree_name(tree))

    @contextmanager
    def _tree_lock(self, tree: str) -> Iterator[None]:
        key = self._key(f"{tree}/{LOCK}")
        owner = (self.bucket_name, key, threading.get_ident())
        with _HELD_GUARD:
            again = owner in _HELD
            if again:
                _HELD[owner] += 1
        if again:
            try:
                yield
            finally:
                with _HELD_GUARD:
                    _HELD[owner] -= 1
            return
        lease = _Lease(self, key)
        lease.acquire()
        with _HELD_GUARD:
            _HELD[owner] = 1
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[owner]
            lease.release()

    def _wait_for_lock(self, attempt: int) -> None:
        """Pause before trying a held lock again (jittered, so waiters do not march)."""
        del attempt
        time.sleep(self.lock_poll * random.uniform(0.5, 1.5))

    def _pointer(self, tree: str) -> tuple[str | None, int]:
        """The release the tree's pointer names and the pointer's generation (0: none)."""
        blob = self.bucket.get_blob(self._key(f"{tree}/{POINTER}"), timeout=self.timeout,
                                    retry=DEFAULT_RETRY)
        if blob is None:
            return None, 0
        pinned = self.bucket.blob(blob.name, generation=blob.generation)
        try:
            name = json.loads(pinned.download_as_bytes(timeout=self.timeout,
                                                       retry=DEFAULT_RETRY))["release"]
        except gexc.NotFound:  # moved meanwhile (a reader without the lock): again
            return self._pointer(tree)
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"{self.uri(tree)}: unreadable release pointer") from None
        return str(name), int(blob.generation)

    def _manifest_key(self, tree: str, release: str) -> str:
        return self._key(f"{tree}/{RELEASES}/{release}.json")

    def _manifest(self, tree: str, release: str) -> ReleaseManifest | None:
        try:
            data = self.bucket.blob(self._manifest_key(tree, release)).download_as_bytes(
                timeout=self.timeout, retry=DEFAULT_RETRY)
        except gexc.NotFound:
            return None
        return ReleaseManifest.from_bytes(data)

    def release_of(self, tree: str) -> str | None:
        return self._pointer(_tree_name(tree))[0]

    def release_files(self, tree: str) -> list[StoredFile]:
        tree = _tree_name(tree)
        shown, _ = self._pointer(tree)
        if shown is None:
            return []
        manifest = self._manifest(tree, shown)
        if manifest is None:
            raise StorageError(f"{self.uri(tree)}: release {shown} has no manifest")
        return [StoredFile(f"{tree}/{path}", e.size,
                           datetime.fromisoformat(e.updated), e.generation)
                for path, e in sorted(manifest.files.items())]

    def publish_release(self, tree: str, release: str, add: Mapping[str, str],
                        remove: Collection[str], files: Mapping[str, bytes], *,
                        withdraw: bool = False) -> Release:
        tree = _tree_name(tree)
        _check_release_name(release)
        # Tree paths as the manifest names them ('..' refused, no empty segments).
        add = {_path(p): staged for p, staged in add.items()}
        files = {_path(p): data for p, data in files.items()}
        remove = {_path(p) for p in remove}
        with self.lock(tree):
            shown, pointer = self._pointer(tree)
            existing = self._manifest(tree, release)
            if shown == release and existing is None:
                raise StorageError(f"{self.uri(tree)}: the pointer names {release}, "
                                   "which has no manifest")
            base_name = existing.base if shown == release and existing else shown
            base = self._manifest(tree, base_name) if base_name else None
            if base_name and base is None:
                raise StorageError(f"{self.uri(tree)}: release {base_name} has no manifest; "
                                   f"cannot build {release}")
            self._settle_pending(tree, release, shown, base)
            if existing is None:
                manifest = self._write_release(tree, release, base, add, remove, files)
            else:
                manifest = existing
                self._check_same(tree, existing, base, add, remove, files)
            if shown != release:
                try:
                    self._put(self._key(f"{tree}/{POINTER}"),
                              json.dumps({"release": release}).encode(),
                              if_generation_match=pointer)
                except gexc.PreconditionFailed:
                    raise StorageError(f"{self.uri(tree)}: its pointer changed while its "
                                       "lock was held (a writer without the lock?)") from None
            self._after_commit(tree, manifest, base)
            if withdraw:
                self._withdraw_versions(tree, remove - set(manifest.files))
            before = base.files if base is not None else {}
            return Release(release, len(manifest.files), len(add),
                           sum(1 for p in set(remove) if p in before))

    def _write_release(self, tree: str, release: str, base: ReleaseManifest | None,
                       add: Mapping[str, str], remove: Collection[str],
                       files: Mapping[str, bytes]) -> ReleaseManifest:
        """Objects under their final names, then the manifest (the commit marker)."""
        before = base.files if base is not None else {}
        writes = sorted({*add, *files})
        intent = {"release": release, "base": base.release if base else None,
                  "writes": writes, "replaced": [p for p in writes if p in before]}
        self._put(self._key(f"{tree}/{RELEASES}/{release}{_PENDING}"),
                  json.dumps(intent, sort_keys=True).encode())
        copied = parallel(lambda item: (item[0], _entry(self._copy_key(
            self._key(item[1]), self._key(f"{tree}/{item[0]}")))), add.items(), self.workers)
        written = parallel(lambda item: (item[0], _entry(self._put(
            self._key(f"{tree}/{item[0]}"), item[1]))), files.items(), self.workers)
        manifest = next_manifest(release, base, dict([*copied, *written]), remove)
        try:
            self._put(self._manifest_key(tree, release), manifest.to_bytes(),
                      if_generation_match=0)
        except gexc.PreconditionFailed:  # written meanwhile (a retried request): the same?
            other = self._manifest(tree, release)
            if other is None or not other.same_content(manifest):
                raise StorageError(f"{self.uri(tree)}: release {release} was published with "
                                   "different content; publish under a new name") from None
            return other
        return manifest

    def _check_same(self, tree: str, existing: ReleaseManifest, base: ReleaseManifest | None,
                    add: Mapping[str, str], remove: Collection[str],
                    files: Mapping[str, bytes]) -> None:
        """A release published already: this request must describe the same release."""
        def staged(item: tuple[str, str]) -> tuple[str, FileEntry]:
            blob = self.bucket.get_blob(self._key(item[1]), timeout=self.timeout,
                                        retry=DEFAULT_RETRY)
            if blob is None:
                raise StorageError(f"{self.uri(tree)}: release {existing.release} is "
                                   f"published and its staged file {item[1]} is gone; "
                                   "cannot check the request against it")
            return item[0], _entry(blob)

        wanted = dict(parallel(staged, add.items(), self.workers))
        wanted.update({p: FileEntry(len(d), 0, _crc32c(d)) for p, d in files.items()})
        if not existing.same_content(next_manifest(existing.release, base, wanted, remove)):
            raise StorageError(f"{self.uri(tree)}: release {existing.release} was published "
                               "with different content; publish under a new name")

    def _settle_pending(self, tree: str, release: str, shown: str | None,
                        base: ReleaseManifest | None) -> None:
        """Other releases' intents left by crashed publishers: those of the release shown
        are done (deleted); one that wrote only new paths is abandoned (its objects,
        manifest and intent deleted); one that replaced files of the release shown must be
        published again first (raised)."""
        folder = self._folder(f"{tree}/{RELEASES}")
        for key in self._names(folder):
            name = key[len(folder):]
            if not name.endswith(_PENDING) or name[:-len(_PENDING)] == release:
                continue
            other = name[:-len(_PENDING)]
            if other == shown:
                self._delete_keys([key])
                continue
            try:
                intent = json.loads(self.bucket.blob(key).download_as_bytes(
                    timeout=self.timeout, retry=DEFAULT_RETRY))
            except gexc.NotFound:
                continue
            if intent.get("replaced"):
                raise StorageError(
                    f"{self.uri(tree)}: release {other} was left half-published after "
                    f"replacing {len(intent['replaced'])} file(s) of release {shown}; "
                    f"publish {other} again before another release")
            log.warning("%s: release %s was abandoned half-published (new files only): "
                        "its %d object(s) removed", self.uri(tree), other,
                        len(intent.get("writes", ())))
            kept = base.files if base is not None else {}
            self._delete_keys([*(self._key(f"{tree}/{p}") for p in intent.get("writes", ())
                                 if p not in kept),
                               self._manifest_key(tree, other), key])

    def _after_commit(self, tree: str, manifest: ReleaseManifest,
                      base: ReleaseManifest | None) -> None:
        """Once the pointer names the release: delete what it (and, if a crash stopped
        that, its base) removed, its intent, and manifests older than its base."""
        gone = {*manifest.removed, *(base.removed if base else ())} - set(manifest.files)
        keep = {f"{manifest.release}.json", *((f"{base.release}.json",) if base else ())}
        folder = self._folder(f"{tree}/{RELEASES}")
        old = [k for k in self._names(folder) if k[len(folder):].endswith(".json")
               and not k[len(folder):].endswith(_PENDING) and k[len(folder):] not in keep]
        self._delete_keys([*(self._key(f"{tree}/{p}") for p in sorted(gone)), *old,
                           self._key(f"{tree}/{RELEASES}/{manifest.release}{_PENDING}")])


    def _withdraw_versions(self, tree: str, paths: Collection[str]) -> None:
        """Delete every stored generation of the tree ``paths`` (the live object, and in
        a bucket with object versioning the noncurrent ones readers of earlier releases
        pinned); one left is a :class:`StorageError` naming no path (the withdrawal is
        then not done, and is finished by asking again). A bucket's soft-delete
        retention is its own: see the README."""
        keys = sorted({self._key(f"{tree}/{p}") for p in paths})

        def versions(key: str) -> list[tuple[str, int]]:
            return [(b.name, int(b.generation)) for b in self.client.list_blobs(
                self.bucket_name, prefix=key, versions=True, page_size=self.page_size,
                fields="items(name,generation),nextPageToken", timeout=self.timeout,
                retry=DEFAULT_RETRY) if b.name == key]

        def delete(item: tuple[str, int]) -> None:
            with suppress(gexc.NotFound):
                self.bucket.blob(item[0], generation=item[1]).delete(
                    timeout=self.timeout, retry=DEFAULT_RETRY)

        stored = [v for found in parallel(versions, keys, self.workers) for v in found]
        parallel(delete, stored, self.workers)
        left = sum(len(found) for found in parallel(versions, keys, self.workers))
        if left:
            raise StorageError(f"{self.uri(tree)}: {left} stored version(s) of withdrawn "
                               "files could not be deleted: the withdrawal is not complete")


_HELD: dict[tuple[str, str, int], int] = {}
"""(bucket, lock object, thread) -> how many times this thread holds that lock."""
_HELD_GUARD = threading.Lock()


class _Lease:
    """A tree's lock held as an object created with ``if_generation_match=0``: renewed
    while held (a holder that died stops renewing, and its lock turns stale), deleted on
    release."""

    def __init__(self, store: GcsStore, key: str) -> None:
        self.store = store
        self.key = key
        self.token = uuid.uuid4().hex
        self.generation = 0
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _create(self, generation: int) -> int:
        blob = self.store.bucket.blob(self.key)
        blob.metadata = {"owner": self.token}
        blob.upload_from_string(b"", content_type="application/octet-stream",
                                if_generation_match=generation,
                                timeout=self.store.timeout, retry=DEFAULT_RETRY)
        return int(blob.generation)

    def acquire(self) -> None:
        store = self.store
        attempt = 0
        while True:
            try:
                self.generation = self._create(0)
                break
            except gexc.PreconditionFailed:
                pass
            held = store.bucket.get_blob(self.key, timeout=store.timeout, retry=DEFAULT_RETRY)
            if held is None:
                continue  # released meanwhile
            if (held.metadata or {}).get("owner") == self.token:
                self.generation = int(held.generation)  # our create, its answer lost
                break
            age = datetime.now(UTC) - held.updated
            if age >= store.lock_stale_after:
                log.warning("%s: taking over a lock not renewed for %s (its holder stopped)",
                            store.uri(store._rel(self.key)), age)
                with suppress(gexc.NotFound, gexc.PreconditionFailed):
                    held.delete(if_generation_match=held.generation, timeout=store.timeout,
                                retry=DEFAULT_RETRY)
                continue
            attempt += 1
            store._wait_for_lock(attempt)
        every = store.lock_stale_after.total_seconds() / 4
        if every > 0:
            self._renewer = threading.Thread(target=self._renew, args=(every,), daemon=True,
                                             name="dicom-deid-lock")
            self._renewer.start()

    def _renew(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.generation = self._create(self.generation)
            except (gexc.PreconditionFailed, gexc.NotFound):
                self.lost = True
                log.error("%s: the lock was taken over while held",
                          self.store.uri(self.store._rel(self.key)))
                return
            except gexc.GoogleAPIError as exc:  # renewed at the next turn
                log.warning("lock renewal failed (%s); trying again", type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost:
            # Looked at first too: the precondition alone would do on GCS, but emulators
            # ignore preconditions on deletes, and another holder's lock must survive.
            held = self.store.bucket.get_blob(self.key, timeout=self.store.timeout,
                                              retry=DEFAULT_RETRY)
            if held is None or int(held.generation) != self.generation:
                self.lost = True
            else:
                try:
                    held.delete(if_generation_match=self.generation,
                                timeout=self.store.timeout, retry=DEFAULT_RETRY)
                except (gexc.NotFound, gexc.PreconditionFailed):
                    self.lost = True
        if self.lost:
            raise StorageError(f"{self.store.uri(self.store._rel(self.key))}: the lock was "
                               "taken over while held (stale timeout too short?)")


class _Reader(io.RawIOBase):
    """The library's chunked reader, with a generation gone since it was opened reported
    as :class:`FileNotFoundError` (as a missing local file) and ``readinto`` for
    ``hashlib.file_digest`` and buffered readers."""

    def __init__(self, reader: Any, rel: str) -> None:
        self._reader = reader
        self._rel = rel

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._reader.seek, offset, whence)

    def tell(self) -> int:
        return int(self._reader.tell())

    def read(self, size: int = -1) -> bytes:
        return self._call(self._reader.read, size)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except gexc.NotFound:
            raise FileNotFoundError(f"{self._rel} changed or went away while read") from None


class _HashSink:
    """A write-only file object that hashes what is written (a streamed download)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def _environment_read_once(client: Client) -> None:
    """Read the proxy and CA-bundle variables (``HTTPS_PROXY``, ``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``...) once for the client's endpoint instead of on every request:
    ``requests`` scans the whole environment twice per request, an eighth of the client's
    CPU per object. The settings then hold for the client's life, as for a new process.
    The connection pool keeps :data:`CONNECTIONS` open (requests' default, 10, is fewer
    than a process's transfers in flight: the rest would reconnect for every object)."""
    session = getattr(client, "_http", None)
    if not isinstance(session, requests.Session) or not session.trust_env:
        return  # a caller's own transport: left as given
    endpoint = getattr(client, "api_endpoint", None) or client._connection.API_BASE_URL
    found = session.merge_environment_settings(endpoint, {}, None, None, None)
    session.proxies.update(found["proxies"])
    if found["verify"] is not True:
        session.verify = found["verify"]
    session.trust_env = False
    for prefix, adapter in list(session.adapters.items()):
        if type(adapter) is requests.adapters.HTTPAdapter:  # the default: 10 connections
            session.mount(prefix, requests.adapters.HTTPAdapter(
                pool_maxsize=CONNECTIONS, max_retries=adapter.max_retries))


def _entry(blob: Blob) -> FileEntry:
    """A manifest entry from an object's metadata as the server returned it."""
    updated = blob.updated
    return FileEntry(size=int(blob.size), generation=int(blob.generation), crc32c=blob.crc32c,
                     md5=blob.md5_hash, updated=updated.isoformat() if updated else "")


def _crc32c(data: bytes) -> str:
    """CRC32C of ``data`` as GCS reports it (base64 of the big-endian 4 bytes)."""
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _path(path: str) -> str:
    """A path in a tree, normalized; an empty one or ``..`` refused."""
    name = "/".join(split_rel(path))
    if not name:
        raise StorageError("a file of a release needs a path in the tree")
    return name


def _tree_name(tree: str) -> str:
    name = "/".join(split_rel(tree))
    if not name or is_hidden(name):
        raise StorageError("a release tree is a non-hidden folder under the store's root")
    return name


def _check_release_name(release: str) -> None:
    if not release or "/" in release or is_hidden(release) or release in (".", ".."):
        raise StorageError("a release name is one non-hidden path segment")
