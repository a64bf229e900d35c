"""Export DICOM metadata to Parquet, one row per instance, incrementally and in parallel.

Each file is read once (its bytes are hashed and the header parsed; pixel data is sliced,
never decoded or copied), its elements converted to the typed columns of
:mod:`dicom_deid.metadata_schema`, and rows written as zstd Parquet under
``out_dir/ingest_date=YYYY-MM-DD/part-<run_id>-<n>.parquet``. A manifest of exported files
(``out_dir/_state/exported.manifest``, Parquet) makes reruns idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import multiprocessing
import os
import re
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydicom.charset import decode_bytes, python_encoding
from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence as DicomSequence

from . import metadata_schema as ms
from .dicomio import BadInput, _item_end, _scan, parse_instance

STATE_DIR = "_state"
STATE_FILE = "exported.manifest"  # Parquet; not *.parquet, so globs of parts skip it
DEFAULT_ROWS_PER_FILE = 20_000
_BATCH_ROWS = 1_000  # rows converted to Arrow at a time inside a worker
_MAX_PRIVATE_BINARY = 65_536  # larger private binary values: only their length is kept
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


@dataclass
class ExportState:
    """Manifest of exported files (uri -> size, mtime, sha256), saved atomically as Parquet."""

    path: Path | None = None
    entries: dict[str, StateEntry] = field(default_factory=dict)

    @classmethod
    def for_export(cls, out_dir: Path) -> ExportState:
        """The state kept next to an export: ``out_dir/_state/exported.manifest`` (Parquet)."""
        return cls.load(Path(out_dir) / STATE_DIR / STATE_FILE)

    @classmethod
    def load(cls, path: Path) -> ExportState:
        """Read a manifest; a missing file is an empty state."""
        path = Path(path)
        if not path.exists():
            return cls(path=path)
        table = pq.read_table(path)
        entries = {
            r["uri"]: StateEntry(r["size"], r["mtime_ns"], r["sha256"], r["part"])
            for r in table.to_pylist()
        }
        return cls(path=path, entries=entries)

    def save(self) -> None:
        """Write the manifest atomically (tmp file + rename); no-op for an in-memory state."""
        if self.path is None:
            return
        rows = sorted(self.entries.items())
        table = pa.table({
            "uri": [u for u, _ in rows],
            "size": [e.size for _, e in rows],
            "mtime_ns": [e.mtime_ns for _, e in rows],
            "sha256": [e.sha256 for _, e in rows],
            "part": [e.part for _, e in rows],
        }, schema=_STATE_SCHEMA)
        _write_parquet_atomic(table, self.path, row_group_size=max(len(rows), 1))

    def committed_parts(self) -> set[str]:
        """Part files (relative to the export folder) that hold rows of this manifest."""
        return {e.part for e in self.entries.values() if e.part}


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


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class _Task:
    uri: str
    size: int
    mtime_ns: int
    prev_sha: str | None  # set when the file was exported before with another size/mtime
    prev_part: str | None


@dataclass
class _ChunkResult:
    part: str | None = None
    rows: int = 0
    malformed: int = 0
    unchanged_content: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    state: dict[str, StateEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class _ChunkJob:
    index: int
    tasks: tuple[_Task, ...]
    out_dir: str
    part_rel: str
    run_id: str
    ingest_date: date


def export_metadata(
    sources: Iterable[Path | str],
    out_dir: Path,
    *,
    run_id: str,
    ingest_date: date,
    state: ExportState | None = None,
    workers: int | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    start_method: str = "fork",
) -> ExportSummary:
    """Export one row per new or changed DICOM file in ``sources`` to Parquet under ``out_dir``.

    ``state`` defaults to the manifest ``out_dir/_state/exported.manifest``; it is updated
    and saved after the parts are written. Rows come out in sorted-URI order (part n, n+1...).
    ``start_method`` of the worker pool: use "forkserver" inside threaded processes
    (Airflow tasks), where a plain fork can inherit a lock held by another thread.
    """
    if not re.fullmatch(r"[A-Za-z0-9._=+-]{1,128}", run_id):
        raise ValueError("run_id must be 1-128 characters of [A-Za-z0-9._=+-]")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    state = ExportState.for_export(out_dir) if state is None else state
    summary = ExportSummary(run_id=run_id, ingest_date=ingest_date)
    partition = f"ingest_date={ingest_date.isoformat()}"
    (out_dir / partition).mkdir(parents=True, exist_ok=True)
    first_index = _clear_orphans(out_dir / partition, partition, run_id, state)
    tasks = _plan(sources, state, summary)
    workers = max(1, workers or len(os.sched_getaffinity(0)))
    chunk = max(1, min(rows_per_file, math.ceil(len(tasks) / workers))) if tasks else 1
    jobs = [
        _ChunkJob(first_index + i, tuple(tasks[s:s + chunk]), str(out_dir),
                  f"{partition}/part-{run_id}-{first_index + i:05d}.parquet", run_id,
                  ingest_date)
        for i, s in enumerate(range(0, len(tasks), chunk))
    ]
    for result in _run_jobs(jobs, workers, start_method):
        summary.exported += result.rows
        summary.malformed_values += result.malformed
        summary.unchanged_content += result.unchanged_content
        summary.errors.extend(result.errors)
        state.entries.update(result.state)
        if result.part:
            summary.parts.append(out_dir / result.part)
    state.save()
    summary.seconds = time.perf_counter() - started
    return summary


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


def _plan(sources: Iterable[Path | str], state: ExportState, summary: ExportSummary
          ) -> list[_Task]:
    """Sorted tasks for files that are new or whose size/mtime changed since the manifest."""
    tasks: list[_Task] = []
    for uri in sorted({str(s) for s in sources}):
        summary.files_seen += 1
        if "://" in uri:
            summary.errors.append((uri, "unsupported URI scheme (only local paths)"))
            continue
        try:
            st = os.stat(uri)
        except OSError as exc:
            summary.errors.append((uri, f"cannot read file: {exc.strerror}"))
            continue
        prev = state.entries.get(uri)
        if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
            summary.skipped_unchanged += 1
            continue
        tasks.append(_Task(uri, st.st_size, st.st_mtime_ns, prev.sha256 if prev else None,
                           prev.part if prev else None))
    return tasks


def _run_jobs(jobs: Sequence[_ChunkJob], workers: int, start_method: str
              ) -> Iterator[_ChunkResult]:
    """Run chunks in a fork pool (in process for one worker), yielding results in order."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_export_chunk, jobs)
        return
    ctx = multiprocessing.get_context(start_method)
    with ctx.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_export_chunk, jobs)


def _export_chunk(job: _ChunkJob) -> _ChunkResult:
    """Read, convert and write one chunk of files to one Parquet part."""
    result = _ChunkResult()
    tables: list[pa.Table] = []
    rows: list[dict[str, Any]] = []
    shape: ms.Shape = {}
    chunk_shape: ms.Shape = {}
    for task in job.tasks:
        try:
            data = _read(task.uri)
        except BadInput as exc:
            result.errors.append((task.uri, exc.reason))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if task.prev_sha == sha:
            result.unchanged_content += 1  # touched, same bytes: the old row stands
            result.state[task.uri] = StateEntry(task.size, task.mtime_ns, sha, task.prev_part)
            continue
        try:
            row, row_shape, malformed = instance_row(data)
        except BadInput as exc:
            result.errors.append((task.uri, exc.reason))
            continue
        except Exception as exc:  # a converter bug must not stop the night; no value in text
            result.errors.append((task.uri, f"metadata conversion failed ({type(exc).__name__})"))
            continue
        row.update(source_uri=task.uri, size_bytes=len(data),
                   mtime=datetime.fromtimestamp(task.mtime_ns / 1e9, UTC),
                   content_sha256=sha, ingest_run_id=job.run_id, ingest_date=job.ingest_date)
        ms.merge_shape(shape, row_shape)
        rows.append(row)
        result.malformed += malformed
        result.state[task.uri] = StateEntry(task.size, task.mtime_ns, sha, job.part_rel)
        if len(rows) >= _BATCH_ROWS:
            tables.append(_to_table(rows, shape))
            ms.merge_shape(chunk_shape, shape)
            rows, shape = [], {}
    if rows:
        tables.append(_to_table(rows, shape))
        ms.merge_shape(chunk_shape, shape)
    result.rows = sum(t.num_rows for t in tables)
    if result.rows:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 \
            else tables[0]
        table = table.select(ms.schema_for_shape(chunk_shape).names)  # tag order
        _write_parquet_atomic(table, Path(job.out_dir) / job.part_rel,
                              row_group_size=DEFAULT_ROWS_PER_FILE)
        result.part = job.part_rel
    return result


def _to_table(rows: list[dict[str, Any]], shape: ms.Shape) -> pa.Table:
    """Rows of one batch as an Arrow table typed by the batch's keyword shape."""
    return pa.Table.from_pylist(rows, schema=ms.schema_for_shape(shape))


def _read(uri: str) -> bytes:
    """The whole file (hashed and parsed from memory: one read, pixels never decoded)."""
    try:
        with open(uri, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadInput("unreadable", f"cannot read file: {exc.strerror}") from None


def _write_parquet_atomic(table: pa.Table, path: Path, *, row_group_size: int) -> None:
    """Write zstd Parquet to a temporary name in the same folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- conversion


def instance_row(data: bytes) -> tuple[dict[str, Any], ms.Shape, int]:
    """Typed columns of one DICOM file's bytes: (row, keyword shape, malformed count).

    Raises :class:`BadInput` (PHI-free reason) for files that are not usable DICOM.
    """
    instance = parse_instance(data)
    ds = instance.dataset
    conv = _Converter()
    elements = dict(ds.items())  # raw elements: nothing decoded by pydicom
    row, shape = conv.dataset(elements, _encodings(elements, ["iso8859"]), "")
    row["transfer_syntax_uid"] = instance.transfer_syntax
    sop = row.get("SOPClassUID")
    row["sop_class_uid"] = sop
    row[ms.PRIVATE_JSON] = json.dumps(conv.private, ensure_ascii=False) if conv.private else None
    row[ms.MALFORMED_JSON] = (json.dumps(conv.malformed, ensure_ascii=False)
                              if conv.malformed else None)
    return row, shape, len(conv.malformed)


def _encodings(elements: Elements, inherited: list[str]) -> list[str]:
    """Python encodings of a dataset's Specific Character Set (items inherit the parent's)."""
    elem = elements.get(0x00080005)
    if elem is None:
        return inherited
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes | memoryview):
        terms = bytes(raw).decode("ascii", "replace").strip(" \x00").split("\\")
    else:
        value = elem.value
        terms = [value] if isinstance(value, str) else list(value or [])
    out = [python_encoding.get(t.strip(), "iso8859") for t in terms] or ["iso8859"]
    return out if terms != [""] else ["iso8859"]


Elements = dict[Any, Any]  # tag -> RawDataElement | DataElement, one dataset level

_STRUCT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q",
           "UV": "Q", "AT": "I", "OF": "f", "OD": "d", "OL": "I", "OV": "Q"}
# (tag, raw ASCII bytes) -> (typed value, malformed?); values are shared, never mutated.
_TEXT_CACHE: dict[tuple[int, bytes], tuple[Any, bool]] = {}
_TEXT_CACHE_MAX = 200_000
# (tag, raw sequence bytes, encodings) -> (items, item shape), when no private/malformed.
_SEQ_CACHE: dict[tuple[int, bytes, tuple[str, ...]], tuple[Any, ms.Shape]] = {}
_SEQ_CACHE_MAX = 20_000
_TEXT_KINDS = frozenset({"str", "ds", "is", "da", "tm", "dt", "pn"})
_NO_SPLIT = frozenset({"LT", "ST", "UT", "UR"})
_TEXT_DELIMS = {0x0D, 0x0A, 0x09, 0x0C}
_PN_DELIMS = {0x5C, 0x3D, 0x5E}
_BINARY_PRIVATE = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_INT_MAX = 2**63 - 1
_IS_RE = re.compile(r"[+-]?\d+")
_DS_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_TM_RE = re.compile(r"(\d\d)(\d\d)?(\d\d)?(?:\.(\d{1,6}))?")
_DT_RE = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(?:\.(\d{1,6}))?([+-]\d{4})?")


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
        kind = spec.kind
        value = elem.value
        if kind not in _TEXT_KINDS or type(value) is not bytes or elem.VR not in (None, spec.vr):
            return False
        ascii_value = value.isascii() and b"\x1b" not in value  # ESC: ISO 2022 switching
        kw = spec.keyword
        if ascii_value:  # same bytes, same result: most values repeat within a series
            hit = _TEXT_CACHE.get((spec.tag, value))
            if hit is not None:
                row[kw] = hit[0]
                if hit[1]:
                    self.malformed[prefix + kw] = _raw_text(elem)
                return True
        vr = spec.vr
        text = value.decode("ascii") if ascii_value else _decode(value, encodings, vr)
        if vr in _NO_SPLIT:
            text = text.rstrip(" \x00")
            parts = [text] if text else []
        else:
            text = text.strip(" \x00")
            if not text:
                parts = []
            elif "\\" in text:
                parts = [v.strip(" \x00") for v in text.split("\\")]
            else:
                parts = [text]
        bad = False
        if kind == "str":
            typed: list[Any] = [v or None for v in parts]
        else:
            typed = [_typed(kind, v) for v in parts]
            bad = any(t is None and v for t, v in zip(typed, parts, strict=True))
        if spec.multi:
            result = typed or None
        else:
            result = typed[0] if typed else None
            bad = bad or len(typed) > 1
        row[kw] = result
        if bad:
            self.malformed[prefix + kw] = _raw_text(elem)
        if ascii_value:
            if len(_TEXT_CACHE) > _TEXT_CACHE_MAX:
                _TEXT_CACHE.clear()
            _TEXT_CACHE[(spec.tag, value)] = (result, bad)
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
        typed: list[Any] = []
        bad = False
        for v in values:
            out = _typed(spec.kind, v)
            if out is None and v not in ("", None):
                bad = True
            typed.append(out)
        if bad:
            self.malformed[prefix + kw] = _raw_text(elem)
        if spec.multi:
            row[kw] = typed or None
        else:
            row[kw] = typed[0] if typed else None
            if len(typed) > 1:
                self.malformed[prefix + kw] = _raw_text(elem)
        shape[kw] = None

    def _sequence(self, elem: Any, spec: ms.ColumnSpec, encodings: list[str], prefix: str,
                  row: dict[str, Any], shape: ms.Shape) -> None:
        kw = spec.keyword
        value = elem.value
        key = (spec.tag, value, tuple(encodings)) if type(value) is bytes else None
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
                items.append({**_jsonable(row), **sub.private})
            return items
        if isinstance(elem, DataElement) and not isinstance(elem.value, bytes | memoryview):
            return str(elem.value)
        raw = bytes(elem.value or b"")
        if vr in _STRUCT and vr not in _BINARY_PRIVATE:
            return "\\".join(str(v) for v in _unpack(raw, vr, elem))
        if vr is None or vr in _BINARY_PRIVATE:
            text = _printable(raw)
            if text is not None:
                return text
            if len(raw) > _MAX_PRIVATE_BINARY:
                return f"<{len(raw)} bytes>"
            return "base64:" + base64.b64encode(raw).decode("ascii")
        return _decode(raw, encodings, vr).strip(" \x00")


def _sequence_items(elem: Any) -> list[Elements]:
    """The items of an SQ element as element maps; raw bytes are split here, not by pydicom."""
    value = elem.value
    if isinstance(value, DicomSequence | list):
        return [dict(item.items()) for item in value]
    if not isinstance(value, bytes | memoryview):
        raise ValueError("not a sequence")
    raw = bytes(value)
    implicit = bool(elem.is_implicit_VR) or elem.VR == "UN"
    items: list[Elements] = []
    pos, end = 0, len(raw)
    while pos + 8 <= end:
        tag_hi, tag_lo, length = struct.unpack_from("<HHI", raw, pos)
        tag = tag_hi << 16 | tag_lo
        if tag == 0xFFFEE0DD:
            break
        if tag != 0xFFFEE000:
            raise ValueError("malformed sequence")
        start = pos + 8
        if length == _UNDEFINED:
            pos = _item_end(raw, start, end, implicit, int(elem.tag))
            stop = pos - 8
        else:
            stop = pos = start + length
            if stop > end:
                raise ValueError("truncated item")
        items.append(dict(_scan(raw, start, stop, implicit)))
    return items


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A converted item as JSON-safe values (dates/times as ISO text)."""
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, date | dtime | datetime):
            return v.isoformat()
        return v
    return {k: conv(v) for k, v in row.items()}


def _printable(raw: bytes) -> str | None:
    """Unknown-VR bytes as text when they look like text (ASCII printable), else None."""
    body = raw.rstrip(b"\x00 ")
    if body and body.isascii() and all(32 <= c < 127 or c in (9, 10, 13) for c in body):
        return body.decode("ascii").strip()
    return None


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


def _decode(raw: bytes, encodings: list[str], vr: str) -> str:
    """Text of a raw value in the dataset's character set (ASCII without pydicom)."""
    if raw.isascii() and b"\x1b" not in raw:
        return raw.decode("ascii")
    if vr in ("UI", "AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UR"):
        return raw.decode("latin-1")  # these VRs are single-byte by definition
    delims = _PN_DELIMS if vr == "PN" else _TEXT_DELIMS if vr in _NO_SPLIT else {0x5C}
    return decode_bytes(raw, encodings, delims)


def _text(elem: Any, encodings: list[str]) -> str:
    value = elem.value
    if isinstance(value, bytes | memoryview):
        return _decode(bytes(value), encodings, _elem_vr(elem) or "LO")
    return "" if value is None else str(value)


def _raw_text(elem: Any) -> str:
    """The raw value as text, for ``malformed_json`` (undecodable bytes escaped)."""
    value = elem.value
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace").strip(" \x00")
    return str(value)


def _unpack(raw: bytes, vr: str, elem: Any) -> list[Any]:
    """Binary numbers of a raw value (the element's byte order)."""
    code = _STRUCT[vr]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise ValueError("length is not a multiple of the value size")
    order = "<" if getattr(elem, "is_little_endian", True) else ">"
    if vr == "AT":
        pairs = struct.unpack(f"{order}{len(raw) // 2}H", raw)
        return [pairs[i] << 16 | pairs[i + 1] for i in range(0, len(pairs), 2)]
    return list(struct.unpack(f"{order}{len(raw) // size}{code}", raw))


def _values(elem: Any, vr: str, encodings: list[str], kind: str) -> list[Any] | None:
    """The element's values: strings for text VRs, numbers for binary VRs."""
    value = elem.value
    if not isinstance(value, bytes | memoryview):  # already converted by pydicom
        if value is None or value == "":
            return []
        seq = list(value) if isinstance(value, list | tuple) or type(value).__name__ == \
            "MultiValue" else [value]
        return [v if isinstance(v, int | float) else str(v) for v in seq]
    raw = bytes(value)
    if vr in _STRUCT:
        if kind not in ("int", "float"):
            return None
        return _unpack(raw, vr, elem)
    text = _decode(raw, encodings, vr)
    if vr in _NO_SPLIT:
        text = text.rstrip(" \x00")
        return [text] if text else []
    text = text.strip(" \x00")
    if not text:
        return []
    return [v.strip(" \x00") for v in text.split("\\")]


def _typed(kind: str, v: Any) -> Any:
    """One value in the column's type, or None when it does not fit (malformed or empty)."""
    if v is None or v == "":
        return None
    if kind == "str":
        return str(v)
    if kind == "int":
        n = v if isinstance(v, int) else int(v) if _IS_RE.fullmatch(str(v)) else None
        return n if n is not None and -_INT_MAX - 1 <= n <= _INT_MAX else None
    if kind == "float":
        if isinstance(v, int | float):
            return float(v)
        return float(v) if _DS_RE.fullmatch(str(v)) else None
    if kind == "is":
        return str(v) if _IS_RE.fullmatch(str(v)) else None
    if kind == "ds":
        return str(v) if _DS_RE.fullmatch(str(v)) else None
    if kind == "pn":
        parts = str(v).split("=")
        if len(parts) > 3:
            return None
        parts += [""] * (3 - len(parts))
        return {"Alphabetic": parts[0] or None, "Ideographic": parts[1] or None,
                "Phonetic": parts[2] or None}
    if kind == "da":
        return _parse_da(str(v))
    if kind == "tm":
        return _parse_tm(str(v))
    if kind == "dt":
        return _parse_dt(str(v))
    return None


def _parse_da(s: str) -> date | None:
    """DA ``YYYYMMDD`` (also the old ``YYYY.MM.DD``)."""
    if len(s) == 10 and s[4] == "." and s[7] == ".":
        s = s.replace(".", "")
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def _parse_tm(s: str) -> dtime | None:
    """TM ``HH[MM[SS[.FFFFFF]]]`` (also the old ``HH:MM:SS``); a leap second becomes :59."""
    if ":" in s and len(s) >= 5:
        s = s.replace(":", "")
    m = _TM_RE.fullmatch(s)
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    if frac and ss is None:
        return None
    try:
        return dtime(int(hh), int(mm or 0), min(int(ss or 0), 59),
                     int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def _parse_dt(s: str) -> datetime | None:
    """DT ``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]`` as UTC (no offset: taken as UTC)."""
    m = _DT_RE.fullmatch(s)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    try:
        tz = UTC
        if off:
            sign = -1 if off[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:])))
        value = datetime(int(y), int(mo or 1), int(d or 1), int(hh or 0), int(mi or 0),
                         min(int(ss or 0), 59), int((frac or "0").ljust(6, "0")), tzinfo=tz)
    except ValueError:
        return None
    return value.astimezone(UTC)
