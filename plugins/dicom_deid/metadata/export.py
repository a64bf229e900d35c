"""Export DICOM metadata to Parquet, one row per instance, incrementally and in parallel.

Each file is read once (its bytes are hashed and the header parsed; pixel data is skipped,
never decoded), its elements converted to the typed columns of
:mod:`.schema`, and rows written as zstd Parquet under
``out_dir/ingest_date=YYYY-MM-DD/part-<run_id>-<n>.parquet``. A manifest of exported files
(``out_dir/_state/exported.manifest``, Parquet) makes reruns idempotent.

Two conversion paths give the same rows: the one-pass scanner of
:mod:`.scan` for little-endian files (nearly all), and the general path
here, over elements parsed by :mod:`dicom_deid.dicom.reader`/pydicom, for everything the
scanner declines. Both type values with :mod:`.values`.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import io
import math
import os
import re
import stat
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import read_sequence
from pydicom.sequence import Sequence as DicomSequence

from dicom_deid.arrow_build import string_array
from dicom_deid.dicom.files import write_atomic
from dicom_deid.dicom.reader import parse_instance, raw_items
from dicom_deid.dicom.writer import METHOD_TOOL
from dicom_deid.errors import BadInput, KeyConfigError, StorageError
from dicom_deid.pools import start_pool
from dicom_deid.storage import is_object_uri, object_at
from dicom_deid.storage.local import NOT_A_FILE, not_a_file, open_regular, path_text
from dicom_deid.storage.prefetch import prefetched

from . import schema as ms
from . import values as mv
from .heads import read_head
from .scan import clear_caches as clear_scan_caches
from .scan import scan_row

STATE_DIR = "_state"
STATE_FILE = "exported.manifest"  # Parquet; not *.parquet, so globs of parts skip it
PENDING_FILE = "pending-load.txt"
"""Parts written but not loaded into the warehouse yet (names relative to the export)."""


def pending_parts(out_dir: Path) -> list[Path]:
    """The parts of ``out_dir`` that no load has taken yet (an earlier load failed, or
    the export ran with ``--no-load``): the next load takes them too, so none is lost
    when a later run finds every file unchanged."""
    path = Path(out_dir) / STATE_DIR / PENDING_FILE
    if not path.exists():
        return []
    names = path.read_text(encoding="utf-8").split("\n")
    return [Path(out_dir) / n for n in names if n and (Path(out_dir) / n).is_file()]


def set_pending_parts(out_dir: Path, parts: Iterable[Path]) -> None:
    """Record the parts no load has taken yet (none: the record goes)."""
    path = Path(out_dir) / STATE_DIR / PENDING_FILE
    names = sorted({Path(p).relative_to(out_dir).as_posix() for p in parts})
    if not names:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, ("\n".join(names) + "\n").encode("utf-8"))


DEFAULT_ROWS_PER_FILE = 20_000
_BATCH_ROWS = 1_000  # files per batch in process (one worker): rows converted at a time
_BATCH_FILES = 256  # files per batch sent to a pool worker: small, to keep all cores busy
_UNDEFINED = 0xFFFFFFFF

_STATE_SCHEMA = pa.schema([
    pa.field("uri", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("part", pa.string()),
])


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class StateEntry:
    """What was exported for one URI: its size, mtime, content hash and the part holding it."""

    size: int
    mtime_ns: int
    sha256: str
    part: str | None


class ExportState:
    """Manifest of exported files (uri -> size, mtime, sha256, part), saved atomically as Parquet.

    It holds every file ever exported, so it is kept compact rather than as one object per
    file: a dict uri -> row, and per row an int64 size and mtime, the raw 32-byte digest and
    an index into the (few) part names: 112 bytes per file plus its URI string, against
    about 410 as a ``StateEntry`` each. :attr:`entries` gives the ``StateEntry`` view.
    """

    def __init__(self, path: Path | None = None, key: bytes | None = None) -> None:
        """``key``: the manifest is saved encrypted under it (it lists landing paths)."""
        self.path = path
        self.key = key
        self._rows: dict[str, int] = {}
        self._size = array("q")
        self._mtime = array("q")
        self._sha = bytearray()  # 32 bytes per row
        self._part = array("i")  # index into _parts; 0 is None
        self._parts: list[str | None] = [None]
        self._part_ids: dict[str | None, int] = {None: 0}
        self._unsaved = True
        """Whether :meth:`save` has anything to write (a night with nothing new rewrites
        nothing: the manifest grows with the archive, and is encrypted)."""

    @classmethod
    def for_export(cls, out_dir: Path, key: bytes | None = None) -> ExportState:
        """The state kept next to an export: ``out_dir/_state/exported.manifest`` (Parquet;
        encrypted under ``key`` when one is given)."""
        return cls.load(Path(out_dir) / STATE_DIR / STATE_FILE, key)

    @classmethod
    def load(cls, path: Path, key: bytes | None = None) -> ExportState:
        """Read a manifest (clear, or encrypted under ``key``); a missing file is an empty
        state. A clear manifest read with a key is saved encrypted from then on."""
        path = Path(path)
        state = cls(path=path, key=key)
        if not path.exists():
            return state
        from dicom_deid.duckdb_crypto import is_encrypted_parquet, read_encrypted_parquet

        encrypted = is_encrypted_parquet(path)
        if encrypted:
            if key is None:
                raise KeyConfigError(f"the export manifest {path.name} is encrypted: it "
                                     "opens with the restricted key only")
            table = read_encrypted_parquet(path, key)
        else:
            table = pq.ParquetFile(path).read()  # not pq.read_table: that imports pandas
        state._rows = {u: i for i, u in enumerate(table.column("uri").to_pylist())}
        state._size = array("q", table.column("size").to_pylist())
        state._mtime = array("q", table.column("mtime_ns").to_pylist())
        state._sha = bytearray(bytes.fromhex("".join(table.column("sha256").to_pylist())))
        if len(state._sha) != 32 * table.num_rows:
            raise ValueError("manifest has a malformed sha256 value")
        state._part = array("i", map(state._part_id, table.column("part").to_pylist()))
        state._unsaved = key is not None and not encrypted  # to be encrypted when saved
        return state

    def _part_id(self, part: str | None) -> int:
        pid = self._part_ids.get(part)
        if pid is None:
            pid = self._part_ids[part] = len(self._parts)
            self._parts.append(part)
        return pid

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, uri: str) -> StateEntry | None:
        """The entry of ``uri``, or None if it was never exported."""
        row = self._rows.get(uri)
        if row is None:
            return None
        return StateEntry(self._size[row], self._mtime[row],
                          self._sha[32 * row:32 * row + 32].hex(), self._parts[self._part[row]])

    def put(self, uri: str, size: int, mtime_ns: int, digest: bytes, part: str | None) -> None:
        """Record ``uri`` as exported (``digest``: the raw 32-byte SHA-256) in ``part``."""
        if len(digest) != 32:
            raise ValueError("digest must be a raw SHA-256 (32 bytes)")
        pid = self._part_id(part)
        self._unsaved = True
        row = self._rows.get(uri)
        if row is None:
            self._rows[uri] = len(self._size)
            self._size.append(size)
            self._mtime.append(mtime_ns)
            self._sha += digest
            self._part.append(pid)
            return
        self._size[row], self._mtime[row], self._part[row] = size, mtime_ns, pid
        self._sha[32 * row:32 * row + 32] = digest

    def is_current(self, uri: str, size: int, mtime_ns: int) -> bool:
        """True if ``uri`` was exported with this size and mtime: it is skipped on a stat
        alone, never opened (a changed size or mtime sends it to be hashed again)."""
        row = self._rows.get(uri)
        return row is not None and self._size[row] == size and self._mtime[row] == mtime_ns

    @property
    def entries(self) -> Mapping[str, StateEntry]:
        """Read-only view uri -> :class:`StateEntry` (entries made on access)."""
        return _EntriesView(self)

    def save(self) -> None:
        """Write the manifest atomically (tmp file + rename); no-op for an in-memory state
        and for one that is as it was read.

        Columns are built from the compact arrays as Arrow buffers, rows in URI order: no
        Python -> Arrow object conversion (which would import pandas into this process).
        """
        if self.path is None or not self._unsaved:
            return
        uris = sorted(self._rows)
        rows = [self._rows[u] for u in uris]
        size, mtime, sha = self._size, self._mtime, self._sha
        n = len(rows)

        def int64(values: Iterable[int]) -> pa.Array:
            return pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(array("q", values))])

        table = pa.Table.from_arrays([
            string_array(uris),
            int64(size[r] for r in rows),
            int64(mtime[r] for r in rows),
            string_array(b"".join(sha[32 * r:32 * r + 32] for r in rows).hex(), width=64),
            string_array([self._parts[self._part[r]] for r in rows]),
        ], schema=_STATE_SCHEMA)
        del uris, rows
        _write_parquet_atomic(table, self.path, row_group_size=max(n, 1), key=self.key)
        self._unsaved = False

    def committed_parts(self) -> set[str]:
        """Part files (relative to the export folder) that hold rows of this manifest."""
        used = set(self._part)
        return {p for i, p in enumerate(self._parts) if p and i in used}


class _EntriesView(Mapping[str, StateEntry]):
    """``ExportState.entries``: the compact manifest seen as uri -> StateEntry."""

    def __init__(self, state: ExportState) -> None:
        self._state = state

    def __getitem__(self, uri: str) -> StateEntry:
        entry = self._state.get(uri)
        if entry is None:
            raise KeyError(uri)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._state._rows)

    def __len__(self) -> int:
        return len(self._state)


@dataclass
class ExportSummary:
    """Counts of one export run; ``errors`` are (uri, PHI-free reason) of unreadable files."""

    run_id: str
    ingest_date: date
    files_seen: int = 0
    exported: int = 0
    skipped_unchanged: int = 0
    unchanged_content: int = 0
    malformed_values: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    remote_files: int = 0  # files read from an object store, by byte ranges
    remote_bytes: int = 0  # bytes those reads fetched (a header, not the pixels)


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class _Task:
    uri: str
    size: int
    mtime_ns: int
    prev_sha: str | None  # set when the file was exported before with another size/mtime
    prev_part: str | None
    listed: StoredObject | None = None  # an object's generation and checksum, as listed
    path: str | None = None  # a local file's name as on disk, when ``uri`` escapes it


@dataclass
class _Plan:
    """Files to export, in URI order, kept compact (the plan spans the whole corpus).

    ``_Task`` objects are made per batch, just before a worker needs them.
    """

    uris: list[str] = field(default_factory=list)
    sizes: array[int] = field(default_factory=lambda: array("q"))
    mtimes: array[int] = field(default_factory=lambda: array("q"))
    prev: dict[int, StateEntry] = field(default_factory=dict)  # changed since exported
    objects: dict[int, StoredObject] = field(default_factory=dict)  # as a listing gave them
    paths: dict[int, str] = field(default_factory=dict)  # names not UTF-8, as on disk

    def task(self, i: int) -> _Task:
        prev = self.prev.get(i)
        return _Task(self.uris[i], self.sizes[i], self.mtimes[i],
                     prev.sha256 if prev else None, prev.part if prev else None,
                     self.objects.get(i), self.paths.get(i))


@dataclass
class _BatchResult:
    """What a worker sends back for one batch: rows as Arrow IPC bytes, never row dicts."""

    table: bytes | None = None  # an LZ4-compressed Arrow IPC stream (see _IPC_OPTIONS)
    shape: ms.Shape = field(default_factory=dict)
    malformed: int = 0
    unchanged_content: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    # (index in the batch, raw SHA-256, part holding its row) of each file done
    done: list[tuple[int, bytes, str | None]] = field(default_factory=list)
    remote_files: int = 0
    remote_bytes: int = 0


@dataclass(frozen=True)
class _BatchJob:
    part: int  # index into the run's parts; a part's batches are consecutive
    tasks: tuple[_Task, ...]
    part_rel: str
    run_id: str
    ingest_date: date
    deidentified_only: bool = False


# Batches travel as LZ4-compressed IPC: the parent holds up to a part's worth of them
# (rows_per_file rows), and LZ4 makes that ~3.3x smaller for ~7 us of worker CPU per row.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
_POOL = pa.system_memory_pool()  # Arrow memory of part writing (see _write_part)


def export_metadata(
    sources: Iterable[Source],
    out_dir: Path,
    *,
    run_id: str,
    ingest_date: date,
    state: ExportState | None = None,
    workers: int | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    start_method: str = "fork",
    key: bytes | None = None,
    deidentified_only: bool = False,
) -> ExportSummary:
    """Export one row per new or changed DICOM file in ``sources`` to Parquet under ``out_dir``.

    ``deidentified_only`` (the analysts' ``deid_metadata``): a file that is no output of
    dicom-deid (no De-identification Method value of its own) is an error, not a row: a
    landing folder given by mistake must not put identified metadata where analysts read.

    ``state`` defaults to the manifest ``out_dir/_state/exported.manifest``; it is updated
    and saved after the parts are written. Rows come out in sorted-URI order (part n, n+1...).
    Sources are local paths or object store URIs (``gs://bucket/path``; a :class:`Listed`
    carries the size and update time a listing gave): objects are read by byte ranges,
    header only (:mod:`.heads`), and ``content_sha256`` is then taken over the store's
    checksum of the object (see :func:`_read_object`).
    ``start_method`` of the worker pool: use "forkserver" inside threaded processes
    (Airflow tasks), where a plain fork can inherit a lock held by another thread.
    ``key``: parts (and a default ``state``) are written encrypted under it (DuckDB's
    Parquet encryption: the identified catalog at rest), readable with the key only.

    Workers read, hash and convert batches of files (small batches, so all cores stay busy
    to the end) and send rows back as Arrow IPC; this process only concatenates each
    part's batches, in order, writes the part, and then the manifest.

    Memory: the pool is started before planning, so workers do not inherit the plan; the
    plan and the manifest are compact arrays; the parent holds at most one part's batches
    (compressed) and one part's table while writing it. What grows with the corpus is the
    plan (25 bytes per file) and the manifest (112 bytes per file ever exported, plus the
    URI string).
    """
    if not re.fullmatch(r"[A-Za-z0-9._=+-]{1,128}", run_id):
        raise ValueError("run_id must be 1-128 characters of [A-Za-z0-9._=+-]")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    state = ExportState.for_export(out_dir, key) if state is None else state
    summary = ExportSummary(run_id=run_id, ingest_date=ingest_date)
    partition = f"ingest_date={ingest_date.isoformat()}"
    (out_dir / partition).mkdir(parents=True, exist_ok=True)
    first_index = _clear_orphans(out_dir / partition, partition, run_id, state)
    workers = max(1, workers or len(os.sched_getaffinity(0)))
    if isinstance(sources, Sized) and len(sources) <= 1:
        workers = 1
    with _Runner(workers, start_method) as runner:  # forked before the plan exists
        plan = _plan(sources, state, summary)
        n = len(plan.uris)
        chunk = max(1, min(rows_per_file, math.ceil(n / workers))) if n else 1
        parts = [f"{partition}/part-{run_id}-{first_index + i:05d}.parquet"
                 for i in range(math.ceil(n / chunk))]
        ranges = _batch_ranges(n, chunk, workers)

        def jobs() -> Iterator[_BatchJob]:
            for part, b, e in ranges:
                yield _BatchJob(part, tuple(map(plan.task, range(b, e))), parts[part], run_id,
                                ingest_date, deidentified_only)

        part_batches: list[bytes] = []
        part_shape: ms.Shape = {}
        results = runner.map(_export_batch, jobs(), local=len(ranges) <= 1)
        for i, ((part, b, _), result) in enumerate(zip(ranges, results, strict=True)):
            summary.malformed_values += result.malformed
            summary.unchanged_content += result.unchanged_content
            summary.errors.extend(result.errors)
            summary.remote_files += result.remote_files
            summary.remote_bytes += result.remote_bytes
            for k, digest, done_part in result.done:
                state.put(plan.uris[b + k], plan.sizes[b + k], plan.mtimes[b + k], digest,
                          done_part)
            if result.table is not None:
                part_batches.append(result.table)
                ms.merge_shape(part_shape, result.shape)
            del result
            if i + 1 < len(ranges) and ranges[i + 1][0] == part:
                continue
            if part_batches:  # the part's last batch: write it
                path = out_dir / parts[part]
                summary.exported += _write_part(part_batches, part_shape, path, key)
                summary.parts.append(path)
            part_batches, part_shape = [], {}
    state.save()
    summary.seconds = time.perf_counter() - started
    return summary


def _batch_ranges(n: int, chunk: int, workers: int) -> list[tuple[int, int, int]]:
    """(part index, start, end) of each batch of ``n`` planned files, parts of ``chunk``
    files, in order; the last few batches are halved so that the workers finish close
    together."""
    batch = _BATCH_FILES if workers > 1 else _BATCH_ROWS
    ranges = [(i, b, min(b + batch, s + chunk, n))
              for i, s in enumerate(range(0, n, chunk))
              for b in range(s, min(s + chunk, n), batch)]
    if workers > 1:
        head, tail = ranges[:-2 * workers], ranges[-2 * workers:]
        ranges = head + [r for i, b, e in tail
                         for r in (((i, b, (b + e) // 2), (i, (b + e) // 2, e)) if e - b > 1
                                   else ((i, b, e),))]
    return ranges


def _clear_orphans(folder: Path, partition: str, run_id: str, state: ExportState) -> int:
    """Delete parts of ``run_id`` not in the manifest (a crashed attempt); next free index."""
    committed = state.committed_parts()
    keep_all = state.path is None  # an in-memory state cannot tell orphans: delete nothing
    next_index = 0
    pattern = re.compile(rf"part-{re.escape(run_id)}-(\d+)\.parquet")
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None:
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
            continue
        if keep_all or f"{partition}/{path.name}" in committed:
            next_index = max(next_index, int(match.group(1)) + 1)
        else:
            path.unlink()
    return next_index


def _plan(sources: Iterable[Source], state: ExportState, summary: ExportSummary) -> _Plan:
    """Files that are new or whose size/mtime changed since the manifest, in URI order.

    A local file's URI is its path as text (:func:`~dicom_deid.storage.local.path_text`:
    a name that is not UTF-8 escaped, read by its name on disk); an entry that is no
    regular file (a symbolic link, never followed; a FIFO, a device; a folder the walk
    could not list) is listed with its reason, never opened."""
    plan = _Plan()
    listed: dict[str, Listed] = {}
    named: dict[str, str] = {}  # URI -> the name on disk
    for source in sources:
        if isinstance(source, Listed):
            listed[source.uri] = source
        else:
            path = os.fspath(source)
            named[path_text(path)] = path
    for uri in sorted(listed.keys() | named.keys()):
        summary.files_seen += 1
        try:
            size, mtime_ns = (listed[uri].size, listed[uri].mtime_ns) if uri in listed \
                else _stat(named[uri])
        except BadInput as exc:
            summary.errors.append((uri, exc.reason))
            continue
        except (OSError, StorageError) as exc:  # a store's text may name the object
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                      else "not found" if isinstance(exc, FileNotFoundError)
                      else "unreadable in its store")
            summary.errors.append((uri, f"cannot read file: {reason}"))
            continue
        if state.is_current(uri, size, mtime_ns):
            summary.skipped_unchanged += 1
            continue
        prev = state.get(uri)
        if prev is not None:
            plan.prev[len(plan.uris)] = prev
        if uri in listed and (found := listed[uri]).generation and found.checksum:
            plan.objects[len(plan.uris)] = StoredObject(found.generation, found.checksum)
        if named.get(uri, uri) != uri:
            plan.paths[len(plan.uris)] = named[uri]
        plan.uris.append(uri)
        plan.sizes.append(size)
        plan.mtimes.append(mtime_ns)
    return plan


class Listed(NamedTuple):
    """A source file as a store listed it (no second look needed to plan the export, nor,
    with an object's generation and checksum, to read it)."""

    uri: str
    size: int
    mtime_ns: int
    generation: int | None = None
    checksum: str | None = None


class StoredObject(NamedTuple):
    """The generation of an object a listing saw, and the store's checksum of it."""

    generation: int
    checksum: str


Source = Path | str | Listed


def _stat(uri: str) -> tuple[int, int]:
    """(size, mtime in ns) of a local path or an object store URI; a local entry that is
    no regular file (not followed, if a link) is a :class:`BadInput`."""
    if not is_object_uri(uri):
        st = os.lstat(uri)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(NOT_A_FILE, not_a_file(uri, st.st_mode))
        return st.st_size, st.st_mtime_ns
    store, rel = object_at(uri)
    found = store.stat(rel)
    return found.size, found.mtime_ns


def _read_object(task: _Task) -> tuple[bytes, int | None, bytes, int]:
    """An object's head (or whole bytes), where its dataset ends when only the head was
    read, its content digest and the bytes fetched.

    The digest is SHA-256 over the store's own checksum of the object (and its size),
    not over bytes never fetched: it changes when the content does, which is what the
    export's manifest and the release ledger compare. Reads are pinned to the generation
    the listing saw (else one looked up now), so the head and the checksum describe the
    same content: one request per file when the header fits the first range.
    """
    store, rel = object_at(task.uri)
    generation: int | None
    checksum: str | None
    if task.listed is not None:
        size, (generation, checksum) = task.size, task.listed
    else:
        found = store.stat(rel)
        size, generation, checksum = found.size, found.generation, found.checksum
    head = read_head(partial(store.read_range, rel, generation=generation), size)
    if checksum is None:  # no server checksum: hash the bytes themselves
        if head.end is None:
            return head.data, None, hashlib.sha256(head.data).digest(), head.bytes_read
        data = store.read_range(rel, 0, size, generation=generation)
        return data, None, hashlib.sha256(data).digest(), len(data) + head.bytes_read
    digest = hashlib.sha256(f"{checksum}:{size}".encode()).digest()
    return head.data, head.end, digest, head.bytes_read


class _Runner:
    """Runs batch jobs in a worker pool, or in this process for one worker.

    Pool workers block the import of pandas: pyarrow imports it (about 0.45 s of CPU) the
    first time it converts Python objects, and nothing a worker does needs it. This
    process builds no Arrow data from Python objects in a pool run (the manifest is built
    from buffers), so its imports stay as they were.
    """

    def __init__(self, workers: int, start_method: str) -> None:
        self.workers = workers
        self.start_method = start_method
        self.pool: Any = None

    def __enter__(self) -> _Runner:
        if self.workers > 1:
            self.pool = start_pool(self.workers, self.start_method, __name__, _worker_init)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is None:
            return
        if exc[0] is not None:
            self.pool.terminate()  # a failed run: do not wait for the queued batches
        else:
            self.pool.close()
        self.pool.join()

    def map(self, fn: Any, jobs: Iterable[Any], *, local: bool = False) -> Iterator[Any]:
        """``fn`` over ``jobs``, results in order (one job at a time per worker); ``local``
        runs them in this process even with a pool (a single job is not worth a worker)."""
        if self.pool is None or local:
            return map(fn, jobs)
        return self.pool.imap(fn, jobs)


class _NoPandas(importlib.abc.MetaPathFinder):
    """Import hook of pool workers: pandas is not available (pyarrow then goes without)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("pandas is not used by metadata export workers")


def _worker_init() -> None:
    """Pool worker setup: make pyarrow skip its pandas import (see :class:`_Runner`), and
    allocate Arrow memory with the system allocator: mimalloc (pyarrow's default) kept
    ~15 MiB more per worker on a long run, for no measurable speed difference."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    pa.set_memory_pool(pa.system_memory_pool())


def _export_batch(job: _BatchJob) -> _BatchResult:
    """Read, hash and convert one batch of files into an Arrow table."""
    result = _BatchResult()
    rows: list[dict[str, Any]] = []
    shapes = ms.ShapeMerger()
    # Object heads are read a few files ahead, on threads: against a store tens of ms
    # away, one request after another would leave the worker waiting most of the time.
    heads = prefetched(job.tasks, _read_object, lambda task: is_object_uri(task.uri))
    for k, (task, head) in enumerate(heads):
        end: int | None = None
        remote = head is not None
        try:
            if head is not None:
                data, end, digest, fetched = head.result()
                result.remote_files += 1
                result.remote_bytes += fetched
            else:
                data = _read(task.path or task.uri, task.size)
                digest = hashlib.sha256(data).digest()
        except BadInput as exc:
            result.errors.append((task.uri, exc.reason))
            continue
        except FileNotFoundError:  # replaced or removed since it was listed
            result.errors.append((task.uri, "object changed or gone since it was listed "
                                            "(read again next run)"))
            continue
        except (StorageError, OSError):  # the store's text may name the object: not kept
            result.errors.append((task.uri, "cannot read object from its store"))
            continue
        sha = digest.hex()
        if task.prev_sha == sha:
            result.unchanged_content += 1  # touched, same bytes: the old row stands
            result.done.append((k, digest, task.prev_part))
            continue
        try:
            if end is not None:
                try:
                    row, row_shape, malformed = scan_row(data, end)
                except Exception:  # the scanner declined the head: the whole file decides
                    store, rel = object_at(task.uri)
                    data = store.read_range(rel, 0, task.size)
                    result.remote_bytes += len(data)
                    end = None
            if end is None:
                row, row_shape, malformed = instance_row(data)
        except BadInput as exc:
            result.errors.append((task.uri, exc.reason))
            continue
        except Exception as exc:  # a converter bug must not stop the night; no value in text
            result.errors.append((task.uri, f"metadata conversion failed ({type(exc).__name__})"))
            continue
        if job.deidentified_only and not _deidentified_here(row):
            result.errors.append((task.uri, NOT_DEIDENTIFIED))
            continue
        row.update(source_uri=task.uri, size_bytes=task.size if remote else len(data),
                   mtime=datetime.fromtimestamp(task.mtime_ns / 1e9, UTC),
                   content_sha256=sha, ingest_run_id=job.run_id, ingest_date=job.ingest_date)
        shapes.add(row_shape)
        rows.append(row)
        result.malformed += malformed
        result.done.append((k, digest, job.part_rel))
    result.shape = shapes.shape
    if rows:
        table = _to_table(rows, result.shape)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(table)
        result.table = sink.getvalue().to_pybytes()
    return result


def _write_part(batches: list[bytes], shape: ms.Shape, path: Path,
                key: bytes | None = None) -> int:
    """Write a part from its batches (IPC bytes, emptied as they are read), in the part's
    schema (tag order).

    Each batch is brought to the part's schema on its own and its IPC bytes dropped, so
    the part is in memory about once (a concatenation of all the batches, then a cast,
    held it up to three times). Its Arrow memory comes from the system allocator rather
    than the process's default pool (mimalloc), which left a few MiB more resident.
    """
    schema = ms.schema_for_shape(shape)
    empty = pa.Table.from_batches([], schema=schema)  # not empty_table(): imports pandas
    tables: list[pa.Table] = []
    batches.reverse()
    while batches:
        table = pa.ipc.open_stream(batches.pop(), memory_pool=_POOL).read_all()
        table = pa.concat_tables([empty, table], promote_options="permissive",
                                 memory_pool=_POOL).select(schema.names)
        if table.schema != schema:  # struct fields in first-seen order: put them in tag order
            table = table.cast(schema)
        tables.append(table)
    table = pa.concat_tables(tables)
    del tables
    _write_parquet_atomic(table, path, row_group_size=DEFAULT_ROWS_PER_FILE, key=key)
    return table.num_rows


def _to_table(rows: list[dict[str, Any]], shape: ms.Shape) -> pa.Table:
    """Rows of one batch as an Arrow table typed by the batch's keyword shape."""
    return pa.Table.from_pylist(rows, schema=ms.schema_for_shape(shape))


NOT_DEIDENTIFIED = ("not an output of dicom-deid (no De-identification Method value of its "
                    "own): not loaded into the de-identified metadata")


def _deidentified_here(row: dict[str, Any]) -> bool:
    """Whether a file's row says dicom-deid wrote it (its De-identification Method names
    the tool and version first: see the de-identifier's method elements)."""
    methods = row.get("DeidentificationMethod") or ()
    return any(isinstance(m, str) and m.startswith(f"{METHOD_TOOL} ") for m in methods)


def _read(uri: str, size: int = 0) -> bytes:
    """The whole file (hashed and parsed from memory: one read, pixels never decoded).

    ``size`` (from the plan's stat) sizes the first read; a file that changed since is
    still read to its end. Anything but a regular file is a :class:`BadInput` before a
    byte is read (:func:`~dicom_deid.storage.local.open_regular`: a FIFO put where a file
    was never blocks the worker).
    """
    fd, _st = open_regular(uri)
    try:
        try:
            data = os.read(fd, size + 1)
            more = os.read(fd, 1 << 20) if data else b""  # b"" at the end (the usual)
            if more:
                chunks = [data, more]
                while more := os.read(fd, 1 << 20):
                    chunks.append(more)
                data = b"".join(chunks)
            return data
        finally:
            os.close(fd)
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None


def _write_parquet_atomic(table: pa.Table, path: Path, *, row_group_size: int,
                          key: bytes | None = None) -> None:
    """Write zstd Parquet (encrypted under ``key`` if given) to a temporary name in the
    same folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if key is not None:
        from dicom_deid.duckdb_crypto import write_encrypted_parquet

        write_encrypted_parquet(table, tmp, key, row_group_size=row_group_size)
    else:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size,
                       memory_pool=_POOL)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- conversion


def instance_row(data: bytes) -> tuple[dict[str, Any], ms.Shape, int]:
    """Typed columns of one DICOM file's bytes: (row, keyword shape, malformed count).

    Little-endian files go through the one-pass scanner of :mod:`.scan`; when it
    declines (or fails), the general path below parses with the reader (pydicom) and gives
    the same row. Raises :class:`BadInput` (PHI-free reason) for files that are not
    usable DICOM.
    """
    try:
        return scan_row(data)
    except Exception:  # Fallback, or a scanner bug: the general path decides
        return general_row(data)


def clear_caches() -> None:
    """Forget the values both conversion paths cache (tests; long-lived processes)."""
    _SEQ_CACHE.clear()
    clear_scan_caches()


def general_row(data: bytes) -> tuple[dict[str, Any], ms.Shape, int]:
    """:func:`instance_row` through pydicom-parsed elements (any transfer syntax)."""
    instance = parse_instance(data)
    ds = instance.dataset
    conv = _Converter()
    elements = dict(ds.items())  # raw elements: nothing decoded by pydicom
    row, shape = conv.dataset(elements, _encodings(elements, ["iso8859"]), "")
    row["transfer_syntax_uid"] = instance.transfer_syntax
    sop = row.get("SOPClassUID")
    row["sop_class_uid"] = sop
    row[ms.PRIVATE_JSON] = mv.to_json(conv.private) if conv.private else None
    row[ms.MALFORMED_JSON] = (mv.to_json(conv.malformed)
                              if conv.malformed else None)
    return row, shape, len(conv.malformed)


def _encodings(elements: Elements, inherited: list[str]) -> list[str]:
    """Python encodings of a dataset's Specific Character Set (items inherit the parent's)."""
    elem = elements.get(0x00080005)
    if elem is None:
        return inherited
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes | memoryview):
        return mv.charset_encodings(bytes(raw))
    value = elem.value
    return mv.terms_encodings([value] if isinstance(value, str) else list(value or []))


Elements = dict[Any, Any]  # tag -> RawDataElement | DataElement, one dataset level

# (tag, raw sequence bytes, encodings, implicit items) -> (items, item shape), when no
# private/malformed.
_SEQ_CACHE: dict[tuple[int, bytes, tuple[str, ...], bool], tuple[Any, ms.Shape]] = {}
_SEQ_CACHE_MAX = 20_000


class _Converter:
    """Converts one instance; collects its private/unknown and malformed values by path."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.malformed: dict[str, str] = {}

    def dataset(self, ds: Elements, encodings: list[str], prefix: str
                ) -> tuple[dict[str, Any], ms.Shape]:
        """Row (or item struct) of a dataset's elements and its keyword shape."""
        row: dict[str, Any] = {}
        shape: ms.Shape = {}
        creators: dict[tuple[int, int], str] = {}
        for tag, elem in ds.items():
            t = int(tag)
            group = t >> 16
            if group == 0x0002 or t & 0xFFFF == 0 or t == 0xFFFCFFFC:
                continue
            if group & 1:
                self._private(ds, elem, t, creators, encodings, prefix)
                continue
            spec = ms.spec_for_tag(t)
            if spec is None or spec.keyword in row or spec.keyword + ms.LENGTH_SUFFIX in row:
                self._store_private(f"{prefix}{group:04X},{t & 0xFFFF:04X}",
                                    ds, elem, t, encodings, None)
                continue
            if self._fast_text(elem, spec, encodings, prefix, row):
                shape[spec.keyword] = None
            else:
                self._standard(ds, elem, spec, encodings, prefix, row, shape)
        return row, shape

    def _fast_text(self, elem: Any, spec: ms.ColumnSpec, encodings: list[str], prefix: str,
                   row: dict[str, Any]) -> bool:
        """The common case inline: a raw text value of the dictionary's VR (False: not it)."""
        value = elem.value
        if spec.kind not in mv.TEXT_KINDS or type(value) is not bytes \
                or elem.VR not in (None, spec.vr):
            return False
        cache = mv.text_cache(spec.tag)
        hit = cache.get(value)  # only ASCII values are cached: charset-independent
        if hit is None:
            result, bad, cacheable = mv.text_column(spec, value, encodings)
            if cacheable:
                mv.cache_text(cache, value, (result, bad))
        else:
            result, bad = hit
        row[spec.keyword] = result
        if bad:
            self.malformed[prefix + spec.keyword] = _raw_text(elem)
        return True

    def _standard(self, ds: Elements, elem: Any, spec: ms.ColumnSpec, encodings: list[str],
                  prefix: str, row: dict[str, Any], shape: ms.Shape) -> None:
        kw = spec.keyword
        if spec.kind == "bulk":
            row[kw + ms.LENGTH_SUFFIX] = _length(elem)
            shape[kw + ms.LENGTH_SUFFIX] = None
            return
        if spec.kind == "sq":
            self._sequence(elem, spec, encodings, prefix, row, shape)
            return
        vr = _elem_vr(elem) or spec.vr
        if vr == "US or SS":  # implicit VR: signedness follows Pixel Representation
            pr = ds.get(0x00280103)
            signed = pr is not None and isinstance(pr.value, bytes) and pr.value[:1] == b"\x01"
            vr = "SS" if signed else "US"
        try:
            values = _values(elem, vr, encodings, spec.kind)
        except Exception:  # undecodable bytes: keep what we can, as malformed
            values = None
        if values is None:
            self.malformed[prefix + kw] = _raw_text(elem)
            row[kw] = None
            shape[kw] = None
            return
        row[kw], bad = mv.typed_column(spec.kind, spec.multi, values)
        if bad:
            self.malformed[prefix + kw] = _raw_text(elem)
        shape[kw] = None

    def _sequence(self, elem: Any, spec: ms.ColumnSpec, encodings: list[str], prefix: str,
                  row: dict[str, Any], shape: ms.Shape) -> None:
        kw = spec.keyword
        value = elem.value
        implicit = bool(elem.is_implicit_VR) or elem.VR == "UN"  # how its items are read
        key = (spec.tag, value, tuple(encodings), implicit) if type(value) is bytes else None
        hit = _SEQ_CACHE.get(key) if key is not None else None
        if hit is not None:  # the same sequence bytes (a series repeats most of them)
            row[kw], shape[kw] = hit
            return
        try:
            seq = _sequence_items(elem)
        except Exception:
            self.malformed[prefix + kw] = "<unparseable sequence>"
            return
        before = (len(self.private), len(self.malformed))
        items: list[dict[str, Any]] = []
        item_shape: ms.Shape = {}
        for i, item in enumerate(seq):
            sub, sub_shape = self.dataset(item, _encodings(item, encodings),
                                          f"{prefix}{kw}[{i}].")
            items.append(sub)
            ms.merge_shape(item_shape, sub_shape)
        row[kw] = items
        shape[kw] = item_shape
        if key is not None and before == (len(self.private), len(self.malformed)):
            if len(_SEQ_CACHE) > _SEQ_CACHE_MAX:
                _SEQ_CACHE.clear()
            _SEQ_CACHE[key] = (items, item_shape)  # cached only when nothing went aside

    def _private(self, ds: Elements, elem: Any, t: int, creators: dict[tuple[int, int], str],
                 encodings: list[str], prefix: str) -> None:
        group, el = t >> 16, t & 0xFFFF
        if 0x0010 <= el <= 0x00FF:  # a private creator: recorded through its block's keys
            creators[(group, el)] = _text(elem, encodings).strip()
            return
        creator = creators.get((group, el >> 8)) if el >= 0x1000 else None
        if creator is None:
            key = f"{prefix}{group:04X},{el:04X}"
        else:
            key = f"{prefix}{group:04X},{creator},{el & 0xFF:02X}"
        self._store_private(key, ds, elem, t, encodings, creator)

    def _store_private(self, key: str, ds: Elements, elem: Any, t: int, encodings: list[str],
                       creator: str | None) -> None:
        """A private or unknown element as a JSON value: text, numbers as text, or base64."""
        try:
            self.private[key] = self._json_value(ds, elem, t, encodings, creator, key)
        except Exception:
            self.private[key] = None

    def _json_value(self, ds: Elements, elem: Any, t: int, encodings: list[str],
                    creator: str | None, key: str) -> Any:
        vr = _elem_vr(elem)
        if vr in (None, "UN") and creator is not None:
            try:
                vr = private_dictionary_VR(t, creator)
            except KeyError:
                vr = None
        if vr == "SQ":
            items = []
            for i, item in enumerate(_sequence_items(elem)):
                sub = _Converter()
                row, _ = sub.dataset(item, _encodings(item, encodings), "")
                self.malformed.update({f"{key}[{i}].{k}": v for k, v in sub.malformed.items()})
                items.append({**mv.jsonable(row), **sub.private})
            return items
        if isinstance(elem, DataElement) and not isinstance(elem.value, bytes | memoryview):
            return str(elem.value)
        return mv.private_scalar(bytes(elem.value or b""), vr, encodings,
                                 getattr(elem, "is_little_endian", True))


def _sequence_items(elem: Any) -> list[Elements]:
    """The items of an SQ element as element maps; raw bytes are split here, not by pydicom."""
    value = elem.value
    if isinstance(value, DicomSequence | list):
        return [dict(item.items()) for item in value]
    if not isinstance(value, bytes | memoryview):
        raise ValueError("not a sequence")
    raw = bytes(value)
    implicit = bool(elem.is_implicit_VR) or elem.VR == "UN"
    if not getattr(elem, "is_little_endian", True) and elem.VR != "UN":
        # big endian (a UN value is always little endian): pydicom splits the items, and
        # leaves their values raw, big endian, as the converter reads them
        items = read_sequence(io.BytesIO(raw), implicit, False, len(raw), "iso8859")
        return [dict(item.items()) for item in items]
    return [dict(item) for item in raw_items(raw, implicit, int(elem.tag))]


def _elem_vr(elem: Any) -> str | None:
    vr = elem.VR
    return None if vr in (None, "UN") else str(vr)


def _length(elem: Any) -> int:
    """Byte length of a bulk value (the real length, also for undefined-length pixel data)."""
    value = elem.value
    if value is None:
        return 0
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED:
        return int(elem.length)
    try:
        return len(value)
    except TypeError:
        return 0


def _text(elem: Any, encodings: list[str]) -> str:
    value = elem.value
    if isinstance(value, bytes | memoryview):
        return mv.decode_text(bytes(value), encodings, _elem_vr(elem) or "LO")
    return "" if value is None else str(value)


def _raw_text(elem: Any) -> str:
    """The raw value as text, for ``malformed_json`` (undecodable bytes escaped)."""
    value = elem.value
    if isinstance(value, bytes | memoryview):
        return mv.raw_text(bytes(value))
    return str(value)


def _values(elem: Any, vr: str, encodings: list[str], kind: str) -> list[Any] | None:
    """The element's values: strings for text VRs, numbers for binary VRs."""
    value = elem.value
    if not isinstance(value, bytes | memoryview):  # already converted by pydicom
        if value is None or value == "":
            return []
        seq = list(value) if isinstance(value, list | tuple) or type(value).__name__ == \
            "MultiValue" else [value]
        return [v if isinstance(v, int | float) else str(v) for v in seq]
    return mv.raw_values(bytes(value), vr, encodings, kind,
                         getattr(elem, "is_little_endian", True))
