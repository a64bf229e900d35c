"""De-identify many files in parallel: walk, process, quarantine bad inputs, summarise.

Workers are forked processes, each holding one :class:`Deidentifier`; results come
back in input order, so error and mapping files are deterministic. Nothing here logs
a value from inside a file: counts and PHI-free reasons only (paths stay in the
restricted errors file).

Duplicates: inputs that hold one SOP Instance UID (a re-send, a compressed and an
uncompressed copy) give one output, that of the **newest input** (latest modification
time; equal times: the path first in sort order). Workers stage each output under a name
of its own; only the driver, which sees every outcome in input order, renames the
winner's into place (replacing an earlier loser's), so no two workers ever write one
output path and the output file, its mapping row and its errors-file entry always
describe the same input, whatever the order or the number of workers. The others are
listed as ``duplicate`` naming the winner.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from dicom_deid.config.model import DeidConfig
from dicom_deid.dicom.files import (
    HEAD_BYTES,
    Chunk,
    InputFile,
    content_sha256,
    open_input,
    staged_name,
    write_staged,
    written_view,
)
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.walker import Element
from dicom_deid.dicom.writer import encode_instance_chunks
from dicom_deid.errors import BadInput, ConfigError, StorageError
from dicom_deid.metadata.export import instance_row
from dicom_deid.metadata.scan import scan_row
from dicom_deid.pools import start_pool
from dicom_deid.review.policy import ReviewPolicy
from dicom_deid.storage import download, is_object_uri
from dicom_deid.storage.base import OutputSink
from dicom_deid.storage.local import NOT_A_FILE, not_a_file, open_regular, path_text
from dicom_deid.storage.prefetch import prefetched

from . import staging
from .byte_path import ByteDeidentifier
from .deidentifier import Deidentifier, InstanceResult, dataset_encodings
from .gate import Gate, SourceFacts, Verdict, expand_exceptions
from .mapping import MappingWriter
from .related import RelatedValues
from .related import gather as gather_related
from .sweep import SWEEP_KEYWORD_TAGS

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3

LAYOUTS = ("uid", "relative")
_TAG_IN_MESSAGE = re.compile(r"\(([0-9A-Fa-f]{4}),\s?([0-9A-Fa-f]{4})\)")
_SKIP_NAMES = frozenset({"DICOMDIR"})


@dataclass(frozen=True)
class Source:
    """One input file: where it is, and its path relative to the input root."""

    path: str | Path
    """A string from :func:`iter_sources` (5,000 Path objects cost 0.1 s to make)."""
    rel: str
    mtime_ns: int | None = None
    """An object store input's update time, as its listing gave it (then one request
    fetches it); local files have their own."""
    size: int | None = None
    """An object store input's size, as its listing gave it (a small object is then read
    in one piece); only a hint."""
    catalogued: tuple[int, int | None, str | None] | None = None
    """Size, modification time (µs) and SOP Instance UID the metadata export read (None:
    not comparable): the pipeline chose the file from that catalogue, so a file that no
    longer matches (replaced since, even at the same size and time) is listed as
    ``changed``, not de-identified (it may be another patient's)."""
    catalogued_sha256: str | None = None
    """SHA-256 (hex) of the bytes the export read (None: not known as a hash of the bytes,
    as an object store's, taken over the store's checksum): the input is hashed once
    opened and is ``changed`` unless its bytes are those, so a file replaced at the same
    size, time and SOP Instance UID is never released in the catalogued one's place
    (nor recorded in the ledger under the catalogued content). Inputs without it (the
    command line) are not hashed."""
    problem: tuple[str, str] | None = None
    """(kind, reason) of an entry the walk found but cannot read as a file (a symbolic
    link, a special file, a folder it cannot list): listed as failed, never opened."""


@dataclass
class FileOutcome:
    """The result of one file, small enough to send between processes."""

    rel: str
    output_rel: str | None = None
    kind: str = "ok"
    stage: str = ""
    reason: str = ""
    result: InstanceResult | None = None
    size: int = 0
    byte_path: bool = False
    """Written by the byte path (False: the Dataset path, see byte_deid)."""
    mtime_ns: int = 0
    """The input's modification time (the duplicate rule)."""
    tag: str = ""
    """The output is staged under ``staged_name(output, tag)`` until the driver takes it."""
    verdict: Verdict | None = None
    """The verification gate's verdict on the output (None: no gate in this run)."""
    metadata: tuple[dict[str, Any], Any] | None = None
    """The output's de-identified metadata row and its keyword shape (when asked for)."""
    review: dict[str, Any] | None = None
    """The reviewer's card of this output (see :class:`ReviewSpec`), when it was selected;
    its thumbnails are staged under ``outcome.tag`` until the driver takes them."""


@dataclass(frozen=True)
class ReviewSpec:
    """Human review of a batch: which outputs a reviewer sees (``policy``), the restricted
    folder that takes their thumbnails, and the Parquet file of their cards. Thumbnails
    are made in the worker from the bytes it wrote, while the gate checks them: no
    second pass over the images."""

    policy: ReviewPolicy
    folder: Path
    rows_path: Path


@dataclass
class BatchSummary:
    """Counts and timing of one run (printed, and recorded by the DAG's run row)."""

    processed: int = 0
    byte_path: int = 0
    """Of ``processed``, files the byte path wrote; the rest took the slower Dataset path."""
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    verified: int = 0
    """Outputs the verification gate checked (0: no gate in this run)."""
    rejected: int = 0
    """Of ``verified``, outputs whose verdict failed (a leak or an unusable file)."""

    def uncount(self, size: int, byte_path: bool) -> None:
        """An input counted as processed turned out to be an older duplicate."""
        self.processed -= 1
        self.byte_path -= byte_path
        self.bytes_in -= size
        self.failed += 1
        self.failures_by_kind["duplicate"] = self.failures_by_kind.get("duplicate", 0) + 1

    def count(self, o: FileOutcome) -> None:
        """Add one file's outcome to the counts."""
        if o.kind == "ok":
            self.processed += 1
            self.byte_path += o.byte_path
            self.bytes_in += o.size
        elif o.kind == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures_by_kind[o.kind] = self.failures_by_kind.get(o.kind, 0) + 1

    @property
    def files_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """The one-line summary the CLI ends with."""
        gate = (f"; gate: {self.verified} checked, {self.rejected} rejected"
                if self.verified else "")
        return (
            f"processed {self.processed}, failed {self.failed}, skipped {self.skipped} "
            f"in {self.seconds:.1f} s ({self.files_per_second:.0f} files/s; "
            f"{self.byte_path} by the byte path{gate})"
        )


def iter_sources(root: Path) -> Iterator[Source]:
    """Every regular file under ``root`` (with or without .dcm), hidden ones skipped, in
    the order of their path parts (a depth-first walk of each folder sorted by name).

    Symbolic links inside ``root`` are never followed (one can lead out of it, to another
    patient's files) and special files (FIFOs, devices, sockets) never opened: each is
    a :class:`Source` with its ``problem`` (kind ``not-a-file``), as is a folder that
    cannot be listed (kind ``unreadable``), so the batch lists them as failed, with their
    reason, and goes on. ``root`` itself is followed. Relative paths (``rel``) are text
    (:func:`~dicom_deid.storage.local.path_text`: a name that is not UTF-8 escaped);
    ``path`` is the name as on disk.

    ``root`` is checked now: one that is neither a folder nor a regular file, or a folder
    that cannot be listed, is a :class:`ConfigError` (naming no path)."""
    root = Path(root)
    try:
        mode = os.stat(root).st_mode
        if stat.S_ISDIR(mode):
            os.scandir(root).close()
    except OSError as exc:
        raise ConfigError(f"cannot read the input: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return iter([Source(os.path.realpath(root), path_text(root.name))])
    if not stat.S_ISDIR(mode):
        raise ConfigError(f"the input is neither a folder nor a file: "
                          f"{not_a_file(os.fspath(root), mode)}")
    return _walk(os.fspath(root), "")


def _walk(folder: str, prefix: str) -> Iterator[Source]:
    try:
        with os.scandir(folder) as it:
            entries = sorted((e.name, _entry_kind(e)) for e in it if not e.name.startswith("."))
    except OSError as exc:  # unlistable (no permission, an I/O error): listed, not raised
        yield Source(folder, path_text(prefix.rstrip("/")) or ".", problem=(
            "unreadable", f"cannot list folder: {exc.strerror}"))
        return
    for name, kind in entries:
        path = f"{folder}/{name}"
        if kind == "dir":
            yield from _walk(path, f"{prefix}{name}/")
        elif kind == "file":
            yield Source(path, path_text(prefix + name))
        else:
            try:
                reason = not_a_file(path, os.lstat(path).st_mode) if kind == "other" else kind
            except OSError as exc:
                reason = f"cannot read entry: {exc.strerror}"
            yield Source(path, path_text(prefix + name), problem=(
                "unreadable" if reason.startswith("cannot") else NOT_A_FILE, reason))


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """"dir", "file" (regular), "other" (a link, a special file), or why it is unreadable."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "other"
    except OSError as exc:
        return f"cannot read entry: {exc.strerror}"


# -- worker side ------------------------------------------------------------------------
_WORKER: tuple[Deidentifier, ByteDeidentifier, Path, str, str, Gate | None, bool,
              ReviewSpec | None] | None = None
_STAGED = [0]  # outputs this worker has staged (part of each staged name)


def _install_warning_filters() -> None:
    """Text that cannot be decoded in its declared character set is an input error."""
    warnings.filterwarnings("error", message="Failed to decode byte string")
    warnings.filterwarnings("error", message="Unknown encoding")
    warnings.filterwarnings("error", message="Incorrect value for Specific Character Set")


def _init_worker(
    config: DeidConfig, key: bytes, out_root: Path, layout: str, token: str,
    gate: frozenset[str] | None, metadata: bool, review: ReviewSpec | None = None,
    downloads: Path | None = None, related: RelatedValues | None = None,
) -> None:
    global _WORKER
    _install_warning_filters()
    if downloads is not None:  # the run's folder for object-store inputs (see _outcomes)
        _DOWNLOADS[:] = [downloads]
    deid = Deidentifier(config, key)
    deid.related = related or {}
    _WORKER = (deid, ByteDeidentifier(deid), out_root, layout, f"{token}-{os.getpid()}-",
               None if gate is None else Gate(gate), metadata, review)


_DOWNLOADS: list[Path] = []  # the folder this worker copies object-store inputs into
_DOWNLOADS_MADE = threading.Lock()  # fetch threads make it once between them


def _forked() -> None:
    global _DOWNLOADS_MADE
    _DOWNLOADS.clear()  # a forked worker makes its own
    _DOWNLOADS_MADE = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def _fetch(src: Source) -> Path:
    """Copy an object-store input into the run's private folder (0700), with the
    object's update time (the listing's, else looked up), which the duplicate rule
    compares. Errors name neither the object nor the store's text (which may)."""
    if not _DOWNLOADS:
        with _DOWNLOADS_MADE:
            if not _DOWNLOADS:
                _DOWNLOADS.append(Path(tempfile.mkdtemp(prefix="dicom-deid-in-")))
    try:
        return download(str(src.path), _DOWNLOADS[0], mtime_ns=src.mtime_ns, size=src.size)
    except FileNotFoundError:
        raise BadInput("unreadable", "object not found in its store") from None
    except (StorageError, OSError) as exc:
        raise BadInput("unreadable", f"cannot read object ({type(exc).__name__})") from None


def _fetched_ahead(sources: Iterable[Source]) -> Iterator[tuple[Source, Future[Path] | None]]:
    """``sources`` in order, each object-store input with the future of its local copy,
    started a few inputs (:data:`~dicom_deid.storage.prefetch.AHEAD`) before it is
    needed: a worker holds at most that many copies on disk, plus the one it works on."""
    return prefetched(sources, _fetch, lambda s: is_object_uri(s.path) and not _skipped(s),
                      discard=lambda copy: copy.unlink(missing_ok=True))


def _open_source(src: Source, fetched: Future[Path] | None = None) -> InputFile:
    """Open one input. An object store's (``gs://...``) is a copy in the run's private
    folder (``fetched``, else made now), unlinked as soon as it is open: a worker holds a
    few inputs at a time on disk, and the run removes the folder whatever happens."""
    if src.problem is not None:
        raise BadInput(*src.problem)
    if not is_object_uri(src.path):
        return _open_local(os.fspath(src.path))
    local = fetched.result() if fetched is not None else _fetch(src)
    try:
        return open_input(local)
    finally:
        local.unlink()


def _open_local(path: str) -> InputFile:
    """Open a local input and read its head (as
    :func:`~dicom_deid.dicom.files.open_input` does), through
    :func:`~dicom_deid.storage.local.open_regular`: anything but a regular file (a FIFO or
    a device put where a catalogued file was, a symbolic link) is a :class:`BadInput`
    before a byte is read, and never blocks the worker."""
    fd, st = open_regular(path)
    size = st.st_size
    want = size if size <= 2 * HEAD_BYTES else HEAD_BYTES
    try:
        head = os.pread(fd, want, 0) if want else b""
        while 0 < len(head) < want and (more := os.pread(fd, want - len(head), len(head))):
            head += more
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None
        raise
    # shrunk while read: what is there (the parser says why)
    return InputFile(fd, len(head) if len(head) < want else size, head, st.st_mtime_ns)


def _skipped(src: Source) -> bool:
    """A file that is never de-identified (a DICOMDIR), so never fetched."""
    return src.problem is None and os.path.basename(src.path).upper() in _SKIP_NAMES


def _safe_reason(stage: str, exc: BaseException) -> str:
    """Exception text from libraries can quote values: keep only the type and a tag."""
    if isinstance(exc, UserWarning) and "decode" in str(exc):
        return "text not decodable with its Specific Character Set"
    if isinstance(exc, OSError) and exc.strerror:  # the system's words, never the path
        return f"{stage} failed: {type(exc).__name__} ({exc.strerror})"
    m = _TAG_IN_MESSAGE.search(str(exc))
    where = f" at ({m.group(1).upper()},{m.group(2).upper()})" if m else ""
    return f"{stage} failed: {type(exc).__name__}{where}"


_UID_NAME = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_NO_UID = {"study": "no-study-uid", "series": "no-series-uid"}


def output_rel_for(result: InstanceResult, source_rel: str, layout: str) -> str:
    """Where a de-identified instance goes: ``<study>/<series>/<sop>.dcm`` of its
    (pseudonymous) UIDs, or the input's relative path. A missing Study or Series UID
    gives a named folder of its own; a path that would not stay inside the output folder
    (a retained UID that is not one, an absolute or ``..`` input path) is a
    :class:`BadInput`: nothing is ever written outside it."""
    if layout == "relative":
        parts = source_rel.split("/")
        if source_rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BadInput("bad-path", "its relative path would leave the output folder")
        return source_rel
    names = []
    for kind, uid in (("study", result.study_uid), ("series", result.series_uid),
                      ("sop", result.sop_uid)):
        if not uid and kind in _NO_UID:
            names.append(_NO_UID[kind])
        elif _UID_NAME.fullmatch(uid) and len(uid) <= 64:
            names.append(uid)
        else:
            raise BadInput("bad-uid", f"its {kind} UID cannot name an output file")
    return f"{names[0]}/{names[1]}/{names[2]}.dcm"


_CHANGED = "changed since the metadata export read it (the next export catalogues it; " \
    "then a run takes it)"
_CONTENT_CHANGED = "changed since the metadata export read it: its content is not what " \
    "the export catalogued, at the same size and modification time (which the export " \
    "does not take for a change: touch the file so the next export catalogues it)"


def _check_catalogued(src: Source, source: InputFile, sop_uid: str | None = None
                      ) -> int | None:
    """:class:`BadInput` ``changed`` when an input is not the file the export catalogued:
    another size or modification time (held to the microsecond, through a float), other
    bytes than those whose SHA-256 it recorded, or, once read (``sop_uid``), another
    instance under the same name.

    Opened (no ``sop_uid``) and hashed: the input's status change time (``st_ctime_ns``,
    which no one can set back) as it was hashed, for :func:`_check_unchanged`; else None."""
    stamp = None
    if src.catalogued is not None:
        size, mtime_us, catalogued_sop = src.catalogued
        if sop_uid is None:
            changed = source.size != size or (
                mtime_us is not None and abs(source.mtime_ns / 1000 - mtime_us) > 2)
        else:
            changed = catalogued_sop is not None and sop_uid != catalogued_sop
        if changed:
            raise BadInput("changed", _CHANGED)
    if sop_uid is None and src.catalogued_sha256 is not None:
        stamp = _ctime_ns(source)
        if content_sha256(source) != src.catalogued_sha256.lower():
            raise BadInput("changed", _CONTENT_CHANGED)
    return stamp


def _ctime_ns(source: InputFile) -> int:
    try:
        return os.fstat(source.fd).st_ctime_ns
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None


def _check_unchanged(source: InputFile, stamp: int | None) -> None:
    """:class:`BadInput` ``changed`` when the input hashed at ``stamp`` (see
    :func:`_check_catalogued`) was written to (or had its times set) while it was
    de-identified: what was released would not be the bytes hashed."""
    if stamp is not None and _ctime_ns(source) != stamp:
        raise BadInput("changed", f"{_CHANGED}; it was written to while it was read")


def process_chunk(chunk: list[Source]) -> list[FileOutcome]:
    """:func:`process_source` over ``chunk`` in order, its object-store inputs fetched
    ahead (a worker's unit of work)."""
    return [process_source(src, fetched) for src, fetched in _fetched_ahead(chunk)]


def process_source(src: Source, fetched: Future[Path] | None = None) -> FileOutcome:
    """Read, de-identify and stage one file's output (runs in a worker; the driver
    publishes it, see the duplicate rule). ``fetched``: the input's copy from an object
    store, being made (see :func:`_fetched_ahead`)."""
    assert _WORKER is not None, "worker not initialised"
    deid, fast_path, out_root, layout, tag_prefix, gate, metadata, review = _WORKER
    outcome = FileOutcome(rel=src.rel)
    if _skipped(src):
        outcome.kind, outcome.stage = "skipped", "read"
        outcome.reason = "DICOMDIR media directory (rebuild it after de-identification)"
        return outcome
    stage = "read"
    source: InputFile | None = None
    try:
        source = _open_source(src, fetched)
        outcome.size, outcome.mtime_ns = source.size, source.mtime_ns
        stamp = _check_catalogued(src, source)
        raw = source.head
        facts = _early_facts(gate, raw, source.size) if gate is not None else None
        deid.nested_values = nested_sweep_values(facts) if facts is not None else ()
        walked = facts.walked if facts is not None else None
        fast = (fast_path.deidentify(raw, source.size, walked) if len(raw) < source.size
                else None)
        if fast is None and len(raw) < source.size:
            raw = source.whole()  # the head was not enough, or the byte path declines
        if fast is None:
            fast = fast_path.deidentify(raw, None, walked)
        data: Sequence[Chunk]
        if fast is not None:
            data, result = fast
            outcome.byte_path = True
        else:
            inst = parse_instance(raw)
            stage = "deidentify"
            encodings = dataset_encodings(inst.dataset)
            result = deid.deidentify(inst.dataset)
            stage = "write"
            data = encode_instance_chunks(inst.dataset, inst.transfer_syntax, encodings)
        stage = "write"
        _check_catalogued(src, source, result.original_sop_uid)
        rel = output_rel_for(result, src.rel, layout)
        _STAGED[0] += 1
        outcome.tag = f"{tag_prefix}{_STAGED[0]}"
        staged = write_staged(os.path.join(out_root, rel), data, source.fd, outcome.tag)
        try:
            if gate is not None or metadata:
                with written_view(staged, data) as output:
                    if gate is not None:
                        stage = "verify"
                        walked = fast_path.walked if outcome.byte_path else None
                        outcome.verdict, facts = _verdict(gate, rel, raw, source, output,
                                                          result, walked, facts)
                        if review is not None and facts is not None:
                            stage = "review"
                            outcome.review = _review_card(review, gate, facts, rel, output,
                                                          result, outcome)
                    if metadata:
                        stage = "metadata"
                        outcome.metadata = _metadata_row(output, staged, outcome.verdict)
            _check_unchanged(source, stamp)
        except BaseException:
            # nobody will publish it: it must not stay behind, nor the folders made for it
            _unlink_with_empty_parents(staged, os.fspath(out_root))
            if review is not None and outcome.review is not None:
                _drop_thumbnails(review.folder, outcome.review, outcome.tag)
            raise
        finally:
            result.ocr = None  # burned-in text read by OCR never leaves the worker
    except BadInput as exc:
        outcome.kind, outcome.stage, outcome.reason = exc.kind, stage, exc.reason
        return outcome
    except Exception as exc:
        outcome.kind, outcome.stage, outcome.reason = "error", stage, _safe_reason(stage, exc)
        return outcome
    finally:
        if source is not None:
            os.close(source.fd)
    outcome.output_rel = rel
    outcome.result = result
    return outcome


def _metadata_row(output: bytes, staged: str, verdict: Verdict | None
                  ) -> tuple[dict[str, Any], Any]:
    """The de-identified metadata row of one output, from the bytes just written (the
    pipeline's load step then needs no second read of the published files)."""
    try:
        row, shape, _malformed = scan_row(output)
    except Exception:  # the general path (pydicom) keeps views: it reads a copy
        row, shape, _malformed = instance_row(bytes(output))
    row.update(size_bytes=len(output), mtime=datetime.fromtimestamp(
        os.stat(staged).st_mtime_ns / 1e9, UTC),
        content_sha256=verdict.sha256 if verdict and verdict.sha256 else hashlib.sha256(
            output).hexdigest())
    return row, shape


def _early_facts(gate: Gate, head: bytes, size: int) -> SourceFacts | None:
    """What the gate reads of a source, read before it is de-identified (from its head;
    None when the head is not enough: the verdict reads it later, as before)."""
    try:
        return gate.source_facts(head, size)
    except BadInput:
        return None


def nested_sweep_values(facts: SourceFacts) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(tag, VR, values) of the identifying attributes the gate found inside the source's
    sequences, among those the residual sweep searches for (a station or a UID is not)."""
    return _nested_sweep_values(tuple(facts.nested), facts.encodings) if facts.nested else ()


@lru_cache(maxsize=1024)
def _nested_sweep_values(nested: tuple[tuple[str, str, bytes], ...], encodings: str,
                         ) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """:func:`nested_sweep_values` of some nested values (a series' files repeat theirs:
    remembered)."""
    found: dict[tuple[int, str], set[str]] = {}
    for keyword, vr, raw in nested:
        tag = SWEEP_KEYWORD_TAGS.get(keyword)
        if tag is None:
            continue
        text = raw.decode(encodings, "replace")
        found.setdefault((tag, vr), set()).update(
            v for part in text.split("\\") if (v := part.strip(" \x00")))
    return tuple((tag, vr, tuple(sorted(values)))
                 for (tag, vr), values in sorted(found.items()) if values)


def _verdict(gate: Gate, rel: str, raw: bytes, source: InputFile, output: bytes,
             result: InstanceResult,
             walked: tuple[bytes, bool, list[Element]] | None = None,
             facts: SourceFacts | None = None,
             ) -> tuple[Verdict, SourceFacts | None]:
    """The gate's verdict on one output as written, against its source's own bytes (the
    head the byte path read, or the whole file when the head does not reach the pixel
    data), and what the gate read of the source (None: it could not; ``facts``: read
    already)."""
    try:
        try:
            if facts is None:
                facts = gate.source_facts(raw, source.size, walked)
        except BadInput:
            if len(raw) >= source.size:
                raise
            facts = gate.source_facts(source.whole(), source.size)
    except BadInput as exc:
        return Verdict(rel, hashlib.sha256(output).hexdigest(), len(output),
                       (f"source not readable by the gate ({exc.kind})",)), None
    uids = {0x0020000D: result.study_uid, 0x0020000E: result.series_uid,
            0x00080018: result.sop_uid}
    return gate.check(rel, output, facts, uids, result.ocr), facts


def thumbnail_stem(output_rel: str) -> str:
    """The file-name stem of an output's thumbnails: a hash of its pseudonymous path."""
    return hashlib.sha256(output_rel.encode()).hexdigest()[:20]


def _review_card(spec: ReviewSpec, gate: Gate, facts: SourceFacts, rel: str, output: bytes,
                 result: InstanceResult, outcome: FileOutcome) -> dict[str, Any] | None:
    """The reviewer's card of one output, with its thumbnails staged, when the project's
    rule selects it (None otherwise). The thumbnails show the output's own pixels as
    written; the OCR lines listed are those left in them (de-identified output, judged by
    the gate). An image whose pixels cannot be shown is still listed, without pictures."""
    if not gate.has_pixels(facts):
        return None
    at_risk = gate.at_risk(facts)
    reason = spec.policy.select(rel, at_risk)
    if reason is None:
        return None
    from dicom_deid.review.thumbnails import render_thumbnails

    readout = result.ocr
    boxes = [(b.x0, b.y0, b.x1, b.y1) for b in readout.boxes] if readout else []
    verdict = outcome.verdict
    assert verdict is not None
    card: dict[str, Any] = {
        "output_path": rel, "modality": result.modality, "reason": reason,
        "at_risk": at_risk, "ok": verdict.ok, "leaks": verdict.leaks,
        "values_checked": verdict.values_checked, "problems": "; ".join(verdict.problems),
        "frames": 0, "shown_frames": [], "thumbnails": [], "boxes": result.redacted_boxes,
        "ocr_read": bool(readout and readout.read),
        # Lines in which the gate found an identifying value are not written down.
        "ocr_kept": list(readout.kept) if readout and readout.read and not verdict.leaks
        else [], "overlays": 0, "shown": "",
    }
    if verdict.leaks:  # the run fails; nobody is to look at what leaked meanwhile
        card["shown"] = "not shown: the gate found an identifying value in this output"
        return card
    try:
        thumbs, frames, overlays = render_thumbnails(bytes(output), boxes)
    except BadInput as exc:
        card["shown"] = f"not shown: {exc.reason}"
        return card
    stem = thumbnail_stem(rel)
    spec.folder.mkdir(parents=True, exist_ok=True)
    try:
        for t in thumbs:
            name = f"{stem}-f{t.frame}.png"
            card["thumbnails"].append(name)
            with open(staged_name(os.fspath(spec.folder / name), outcome.tag), "wb") as fh:
                fh.write(t.png)
            card["shown_frames"].append(t.frame)
    except BaseException:
        _drop_thumbnails(spec.folder, card, outcome.tag)  # the frames already written
        raise
    card.update(frames=frames, overlays=overlays)
    return card


def _take_thumbnails(folder: Path, card: dict[str, Any], tag: str) -> None:
    """Rename a published output's staged thumbnails to their final names."""
    for name in card["thumbnails"]:
        final = os.fspath(folder / name)
        os.replace(staged_name(final, tag), final)


def _drop_thumbnails(folder: Path, card: dict[str, Any], tag: str | None) -> None:
    """Remove an output's thumbnails: staged (``tag``) or final (None)."""
    for name in card["thumbnails"]:
        final = os.fspath(folder / name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged_name(final, tag) if tag else final)


# -- driver side ------------------------------------------------------------------------
def _mapping_row(run_id: str, o: FileOutcome) -> dict[str, object]:
    r = o.result
    assert r is not None
    return {
        "run_id": run_id,
        "source_path": o.rel,
        "output_path": o.output_rel,
        "sop_class_uid": r.sop_class_uid,
        "modality": r.modality,
        "original_study_uid": r.original_study_uid,
        "original_series_uid": r.original_series_uid,
        "original_sop_uid": r.original_sop_uid,
        "original_patient_id": r.original_patient_id,
        "original_accession": r.original_accession,
        "study_uid": r.study_uid,
        "series_uid": r.series_uid,
        "sop_uid": r.sop_uid,
        "patient_id": r.patient_id,
        "accession": r.accession,
        "date_shift_days": r.date_shift_days,
        "redacted_boxes": r.redacted_boxes,
    }


def _outcomes(
    sources: list[Source], config: DeidConfig, key: bytes, out_root: Path, layout: str,
    token: str, workers: int, start_method: str, gate: frozenset[str] | None, metadata: bool,
    review: ReviewSpec | None = None,
) -> Generator[FileOutcome, None, None]:
    # Object-store inputs are copied into one private folder of the run's, removed here
    # once the workers are gone: a worker killed mid-batch (the pool is terminated when
    # the batch fails) leaves the copies it had fetched ahead, never beyond the run.
    downloads = (Path(tempfile.mkdtemp(prefix="dicom-deid-in-"))
                 if any(is_object_uri(s.path) for s in sources) else None)
    # every input's relatives, before any is de-identified: whatever the order or the
    # number of workers, an instance is swept for the same values
    related = gather_related(sources) if config.residual_sweep else {}
    setup = (config, key, out_root, layout, token, gate, metadata, review, downloads, related)
    try:
        if workers <= 1 or len(sources) < 2:
            _init_worker(*setup)
            for src, fetched in _fetched_ahead(sources):
                yield process_source(src, fetched)
            return
        size = max(1, min(32, len(sources) // (workers * 8) or 1))
        chunks = [sources[i:i + size] for i in range(0, len(sources), size)]
        # Objects alive now (modules, config) outlive the pool: frozen, a forked worker's
        # collections do not touch them, so their pages stay shared (Python's gc.freeze
        # advice for fork); thawed once the pool is gone.
        gc.freeze()
        try:
            with start_pool(workers, start_method, __name__, _init_worker, setup) as pool:
                for done in pool.imap(process_chunk, chunks):
                    yield from done
        finally:
            gc.unfreeze()
    finally:
        if downloads is not None:
            shutil.rmtree(downloads, ignore_errors=True)
            if downloads in _DOWNLOADS:
                _DOWNLOADS.clear()


DUPLICATE_RULE = "the newest input is kept (latest modification time; equal: first path)"


class _Publisher:
    """Applies the duplicate rule as outcomes arrive (in input order) and publishes each
    winner's staged output: renamed into place, counted, its mapping row added. Holds,
    per SOP Instance UID seen, the input that holds it now (a few hundred bytes each)."""

    def __init__(self, out_root: Path, sources: list[Source], summary: BatchSummary,
                 mapping: MappingWriter | None, run_id: str,
                 review: ReviewSpec | None = None, sink: OutputSink | None = None) -> None:
        self.out_root = os.fspath(out_root)
        self.sink = sink
        self.review = review
        self.cards: dict[str, dict[str, Any]] = {}
        """The reviewer's card of each published output that the review rule selected."""
        self.sources, self.summary, self.mapping, self.run_id = sources, summary, mapping, run_id
        # SOP Instance UID -> (source index, mtime, output path, size, by the byte path)
        self.holders: dict[str, tuple[int, int, str, int, bool]] = {}
        # Inputs that lost, with their SOP Instance UID: listed at the end, naming the
        # final winner (a holder that loses later is not the one to name).
        self.losers: list[tuple[str, str]] = []
        # The gate's verdict and the metadata row of each published output (a winner's
        # replace a loser's).
        self.verdicts: dict[str, Verdict] = {}
        self.metadata: dict[str, tuple[dict[str, Any], Any]] = {}

    def write_checks(self, verdicts_path: Path | None, metadata_path: Path | None) -> None:
        """Count the published outputs' verdicts; write them and the metadata rows."""
        self.summary.verified += len(self.verdicts)
        self.summary.rejected += sum(not v.ok for v in self.verdicts.values())
        if verdicts_path is not None:
            write_verdicts(verdicts_path, self.verdicts.values())
        if metadata_path is not None:
            write_metadata(metadata_path, self.metadata, self.run_id)
        if self.review is not None:
            write_review_cards(self.review.rows_path, self.cards.values())

    def loser_rows(self) -> Iterator[tuple[str, FileOutcome]]:
        """Errors-file entries of the inputs that lost, each naming its final winner."""
        for rel, uid in self.losers:
            yield rel, _duplicate(rel, self.sources[self.holders[uid][0]].rel)

    def take(self, index: int, o: FileOutcome) -> list[tuple[str, FileOutcome]]:
        """Publish ``o`` unless an input holding its SOP Instance UID wins over it; return
        the inputs that lost (``o`` itself, or the earlier holder), as errors-file rows."""
        assert o.result is not None and o.output_rel is not None
        final = os.path.join(self.out_root, o.output_rel)
        staged = staged_name(final, o.tag)
        uid = o.result.sop_uid
        held = self.holders.get(uid)
        if held is not None:
            h_index, h_mtime, h_output, h_size, h_byte_path = held
            h_rel = self.sources[h_index].rel
            # The holder stays if it is newer, or as new and first by path.
            if (o.mtime_ns, h_rel) <= (h_mtime, o.rel):
                os.unlink(staged)
                if self.review is not None and o.review is not None:
                    _drop_thumbnails(self.review.folder, o.review, o.tag)
                lost = _duplicate(o.rel, h_rel)
                self.summary.count(lost)
                self.losers.append((o.rel, uid))
                return [(o.rel, lost)]
        os.replace(staged, final)
        if self.sink is not None:
            self.sink.published(final, o.output_rel)
        if o.verdict is not None:
            self.verdicts[o.output_rel] = o.verdict
        if o.metadata is not None:
            self.metadata[o.output_rel] = o.metadata
        if held is not None and self.review is not None and (
                card := self.cards.pop(held[2], None)) is not None:
            _drop_thumbnails(self.review.folder, card, None)  # the loser's, now final
        if self.review is not None and o.review is not None:
            _take_thumbnails(self.review.folder, o.review, o.tag)
            self.cards[o.output_rel] = o.review
        self.holders[uid] = (index, o.mtime_ns, o.output_rel, o.size, o.byte_path)
        self.summary.count(o)
        if self.mapping:
            self.mapping.add(_mapping_row(self.run_id, o))
        if held is None:
            return []
        # The newcomer won: the holder's output (if elsewhere), row and count go.
        if h_output != o.output_rel:
            if self.sink is not None:
                self.sink.removed(h_output)
            else:
                _unlink_with_empty_parents(os.path.join(self.out_root, h_output),
                                           self.out_root)
            self.verdicts.pop(h_output, None)
            self.metadata.pop(h_output, None)
        if self.mapping:
            self.mapping.drop(h_rel)
        self.summary.uncount(h_size, h_byte_path)
        self.losers.append((h_rel, uid))
        return [(h_rel, _duplicate(h_rel, o.rel))]


def write_review_cards(path: Path, cards: Iterable[dict[str, Any]]) -> None:
    """The reviewer's cards as Parquet, sorted by output path (PHI-free: pseudonymous
    paths, attribute names, and OCR lines left in de-identified pixels)."""
    import pyarrow as pa

    rows = sorted(cards, key=lambda c: c["output_path"])
    _write_parquet(pa.Table.from_pylist(rows, schema=review_schema()), path)


def review_schema() -> Any:
    """The Arrow schema of a review cards file."""
    import pyarrow as pa

    return pa.schema([
        ("output_path", pa.string()), ("modality", pa.string()), ("reason", pa.string()),
        ("at_risk", pa.bool_()), ("ok", pa.bool_()), ("leaks", pa.int32()),
        ("values_checked", pa.int32()), ("problems", pa.string()), ("frames", pa.int32()),
        ("shown_frames", pa.list_(pa.int32())), ("thumbnails", pa.list_(pa.string())),
        ("boxes", pa.int32()), ("ocr_read", pa.bool_()), ("ocr_kept", pa.list_(pa.string())),
        ("overlays", pa.int32()), ("shown", pa.string())])


def write_verdicts(path: Path, verdicts: Iterable[Verdict]) -> None:
    """The gate's verdicts as Parquet, sorted by output path (deterministic bytes)."""
    import pyarrow as pa

    rows = [v.as_row() for v in sorted(verdicts, key=lambda v: v.output)]
    _write_parquet(pa.Table.from_pylist(rows, schema=verdict_schema()), path)


def write_metadata(path: Path, rows: dict[str, tuple[dict[str, Any], Any]], run_id: str
                   ) -> None:
    """Metadata rows (output path -> row, shape) as one Parquet file in the export's
    schema, sorted by output path (``source_uri``: the output path; ingested today, by
    ``run_id``: a pipeline's load step sets its own URIs and date)."""
    import pyarrow as pa

    from dicom_deid.metadata import schema as ms

    shapes = ms.ShapeMerger()
    today = datetime.now(UTC).date()
    table_rows = []
    for rel in sorted(rows):
        row, shape = rows[rel]
        shapes.add(shape)
        table_rows.append({**row, "source_uri": rel, "ingest_run_id": run_id,
                           "ingest_date": today})
    _write_parquet(pa.Table.from_pylist(table_rows, schema=ms.schema_for_shape(shapes.shape)),
                   path)


def _write_parquet(table: Any, path: Path) -> None:
    """Parquet under a hidden temporary name beside ``path``, then renamed into place."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def verdict_schema() -> Any:
    """The Arrow schema of a verdicts file (pyarrow imported on first use)."""
    import pyarrow as pa

    return pa.schema([("output_path", pa.string()), ("sha256", pa.string()),
                      ("size", pa.int64()), ("ok", pa.bool_()), ("leaks", pa.int32()),
                      ("values_checked", pa.int32()), ("problems", pa.string())])


def _unless_rejected(out_root: Path, o: FileOutcome, summary: BatchSummary,
                     review: ReviewSpec | None = None) -> FileOutcome:
    """``o``, or, when the gate rejected its output, the output removed before anyone saw
    it and its input's error row."""
    if o.kind != "ok" or o.verdict is None or o.verdict.ok or o.output_rel is None:
        return o
    summary.verified += 1
    summary.rejected += 1
    # the folders made for it too: under ``--layout relative`` they are the input's, which
    # may name the patient (the reason the gate rejected it)
    _unlink_with_empty_parents(staged_name(os.path.join(out_root, o.output_rel), o.tag),
                               os.fspath(out_root))
    if review is not None and o.review is not None:
        _drop_thumbnails(review.folder, o.review, o.tag)
    kind = "leak" if o.verdict.leaks else "unverified"
    return FileOutcome(rel=o.rel, kind=kind, stage="verify", reason=(
        "the verification gate rejected the output: " + "; ".join(o.verdict.problems)))


def _duplicate(rel: str, winner: str) -> FileOutcome:
    """The errors-file entry of an input that lost to ``winner`` (the reason's first part,
    before ``: ``, is PHI-free and is what gets logged)."""
    return FileOutcome(rel=rel, kind="duplicate", stage="write", reason=(
        f"same SOP Instance UID as another input of this run: {winner} ({DUPLICATE_RULE})"))


def _unlink_with_empty_parents(path: str, root: str) -> None:
    """Remove a file, then the folders it leaves empty, up to (not including) ``root``."""
    os.unlink(path)
    folder = os.path.dirname(path)
    while folder != root and folder.startswith(root):
        try:
            os.rmdir(folder)
        except OSError:
            break
        folder = os.path.dirname(folder)


class _NoBar:
    """Stands in for a progress bar that is not shown."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool) -> Any:
    """A tqdm bar on a terminal; nothing otherwise (tqdm is imported only to be shown)."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", smoothing=0.05)


class _ProgressLog:
    """Logs ``label: done/total files (pct), rate`` at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, every: float | None) -> None:
        self.label, self.total, self.every = label, total, every
        self.done_count = 0
        self.started = self.last = time.perf_counter()

    def tick(self) -> None:
        self.done_count += 1
        if self.every is None:
            return
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._log(now)

    def done(self) -> None:
        if self.every is not None:
            self._log(time.perf_counter())

    def _log(self, now: float) -> None:
        rate = self.done_count / (now - self.started) if now > self.started else 0.0
        pct = 100.0 * self.done_count / self.total if self.total else 100.0
        log.info("%s: %d/%d files (%.0f%%), %.0f files/s", self.label, self.done_count,
                 self.total, pct, rate)


class _ErrorsFile:
    """The run's errors CSV (restricted: landing paths may carry PHI); nothing if no path."""

    def __init__(self, path: Path | None) -> None:
        self._fh = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # the owner's alone, whatever the umask or an older file
            self._fh = open(fd, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._csv = csv.writer(self._fh)
            self._csv.writerow(["path", "kind", "stage", "reason"])

    def write(self, rel: str, o: FileOutcome) -> None:
        """One input's row; a path that is not UTF-8 as escaped text (``path_text``)."""
        if self._fh is not None:
            self._csv.writerow([path_text(rel), o.kind, o.stage, path_text(o.reason)])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _log_failure(label: str, o: FileOutcome) -> None:
    """One log line per failed input: no path (it stays in the errors file) and, for a
    duplicate, not the winner's either."""
    reason = o.reason.split(": ", 1)[0] if o.kind == "duplicate" else o.reason
    log.warning("%s: an input failed at %s: %s (%s)", label, o.stage, reason, o.kind)


def _validate(out_root: Path, config: DeidConfig, key: bytes, layout: str,
              restricted: Iterable[Path | None], gate: Iterable[str] | None) -> None:
    """Refuse a run that cannot go right before any file is touched (:class:`ConfigError`)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}")
    for p in restricted:
        if p is not None and out_root.resolve() in Path(p).resolve().parents:
            raise ConfigError(
                f"{p} is inside the output folder: errors and mapping hold original "
                "identifiers and must stay out of the de-identified tree"
            )
    Deidentifier(config, key)
    if gate is not None:
        expand_exceptions(gate)


def run_batch(
    sources: Iterable[Source],
    out_root: Path,
    config: DeidConfig,
    key: bytes,
    *,
    workers: int | None = None,
    layout: str = "uid",
    errors_path: Path | None = None,
    mapping_path: Path | None = None,
    run_id: str = "",
    progress: bool | None = None,
    log_every: float | None = None,
    label: str = "batch",
    start_method: str = "fork",
    gate: Iterable[str] | None = None,
    verdicts_path: Path | None = None,
    metadata_path: Path | None = None,
    drop_rejected: bool = False,
    review: ReviewSpec | None = None,
    mapping_seal: Callable[[bytes], bytes] | None = None,
    sink: OutputSink | None = None,
) -> BatchSummary:
    """De-identify ``sources`` into ``out_root``; list failures; write the mapping.

    ``gate``: run the verification gate (:mod:`.gate`) on every output in the worker
    that wrote it, with these keywords as the declared exceptions (None: no gate); the
    verdicts of the published outputs go to ``verdicts_path`` (Parquet, PHI-free) and
    the summary counts those that failed (``rejected``). ``drop_rejected``: an output the
    gate rejects is not published but removed, and its input listed as failed (kind
    ``leak`` or ``unverified``, the verdict's PHI-free problems as the reason): the command
    line's fail-closed mode; the pipeline keeps them staged and fails the shard instead.
    ``metadata_path``: each
    published output's de-identified metadata row (the export's columns; ``source_uri``
    its path relative to ``out_root``), read from the bytes the worker wrote, as Parquet.

    ``sink``: each published output is handed to it (and taken back through it), as the
    batch goes; without one, outputs stay in ``out_root``.

    ``mapping_seal``: the mapping is written sealed by it (the vault's envelope), never in
    clear. ``review``: the outputs its rule selects get a reviewer's card and thumbnails, made in
    the worker (needs the gate); the cards of the published outputs go to its
    ``rows_path``.

    ``progress`` shows a bar (default: on a terminal); ``log_every`` seconds, a progress
    line is logged instead (for task logs): ``label: done/total files, rate``.
    ``start_method`` of the worker pool: "fork" starts fastest; "forkserver" is safe in
    a process that runs threads (an Airflow task), where a fork can inherit a held lock.
    """
    out_root = Path(out_root)
    _validate(out_root, config, key, layout, (errors_path, mapping_path), gate)
    if review is not None and gate is None:
        raise ConfigError("a review needs the verification gate (its verdicts and risk)")
    src_list = list(sources)
    workers = workers or os.cpu_count() or 1
    summary = BatchSummary()
    show = sys.stderr.isatty() if progress is None else progress
    token = os.urandom(6).hex()  # this run's staged names (see staging)
    with staging.held(out_root, token, [review.folder] if review else []) as swept:
        if swept:
            log.warning("%s: removed %d staged output(s) that a run killed earlier left "
                        "in the output folder (never published)", label, swept)
        started = time.perf_counter()
        mapping = MappingWriter(mapping_path, seal=mapping_seal) if mapping_path else None
        errors = _ErrorsFile(errors_path)
        publisher = _Publisher(out_root, src_list, summary, mapping, run_id, review, sink)
        exceptions = None if gate is None else frozenset(gate)
        outcomes = _outcomes(src_list, config, key, out_root, layout, token, workers,
                             start_method, exceptions, metadata_path is not None, review)
        try:
            bar = _progress_bar(len(src_list), show)
            ticker = _ProgressLog(label, len(src_list), log_every)
            for index, o in enumerate(outcomes):
                if mapping and ticker.done_count == 0:
                    mapping.open()  # pyarrow's import overlaps the workers, not the start
                bar.update(1)
                ticker.tick()
                if drop_rejected:
                    o = _unless_rejected(out_root, o, summary, review)
                losers = publisher.take(index, o) if o.kind == "ok" else [(o.rel, o)]
                for rel, lost in losers:
                    if lost.kind != "duplicate":  # those are listed at the end (loser_rows)
                        errors.write(rel, lost)
                    _log_failure(label, lost)
                if o.kind != "ok":
                    summary.count(o)
            for rel, lost in publisher.loser_rows():
                errors.write(rel, lost)
            bar.close()
            ticker.done()
            publisher.write_checks(verdicts_path, metadata_path)
            if mapping:
                mapping.close()
                mapping = None
        except BaseException:
            outcomes.close()  # stops the workers (the pool terminates) before the clean-up
            staging.remove_staged(out_root, token)
            if review is not None and review.folder.exists():
                staging.remove_staged(review.folder, token)
            raise
        finally:
            errors.close()
            if mapping:
                mapping.__exit__(RuntimeError, None, None)
        summary.seconds = time.perf_counter() - started
    return summary
