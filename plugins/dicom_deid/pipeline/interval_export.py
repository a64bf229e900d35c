"""Export the landing files not exported yet, as one data interval's run, and load them.

A night's interval ``[start, end)`` exports every landing file last modified before
``end`` that the export state (:class:`ExportState`) has not seen with its current size
and mtime: what landed in the interval, and what landed earlier but was missed -- a late
arrival, a copy that kept its original mtime, a file that could not be read last time. A
file whose size or mtime moved is hashed again and exported only if its content changed.
Files modified at or after ``end`` wait for their own interval, so a backfill of a past
interval never takes what landed after it; every file is exported once across nights and
backfills, unless its content changes. The interval still names the rows: their run id
and ``ingest_date`` partition are the interval's. Deciding costs a listing and a stat per
landing file; unchanged files are never opened. The load merges on
(source_uri, content_sha256), so rerunning an interval changes nothing.
The export holds the identified metadata: its folder is private (0700, files 0600).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from dicom_deid.metadata.export import ExportState, Listed, Source, export_metadata
from dicom_deid.storage import LocalStore, Store, StoredFile, open_store
from dicom_deid.storage.local import path_text
from dicom_deid.storage.permissions import private_dir, restrict_tree
from dicom_deid.warehouse.restricted_file import export_key

from .restricted import open_private_warehouse
from .settings import PipelineSettings

__all__ = ["IntervalExport", "export_interval", "interval_run_id", "load_export"]

log = logging.getLogger(__name__)
ERRORS_DIR = "_errors"
# Fewer new files than this are exported in this process: starting a worker pool cost
# 0.15-0.4 s on the 2-core VM, the work of a few hundred files on one core (2026-12).
POOL_MIN_FILES = 500


@dataclass(frozen=True)
class IntervalExport:
    """Counts of one interval's export (safe for XCom and logs).

    ``listed``: landing files modified before the interval's end (each was checked);
    ``arrived``: those modified in the interval; ``exported``: files given a row now, of
    which ``late`` were modified before the interval's start; ``unchanged``: files whose
    row stands (same size and mtime, or same content); ``failed``: files that could not be
    exported (listed in ``errors_file``; tried again next night).
    ``listed == exported + unchanged + failed``.
    """

    run_id: str
    listed: int
    arrived: int
    exported: int
    late: int
    unchanged: int
    failed: int
    errors_file: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def interval_run_id(start: datetime, end: datetime) -> str:
    """A stable id for an interval: the same interval always writes the same parts."""
    return f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"


def export_interval(
    settings: PipelineSettings,
    start: datetime,
    end: datetime,
    *,
    table: str = "dicom_metadata",
) -> IntervalExport:
    """Export to Parquet, as interval ``[start, end)``, every landing file modified before
    ``end`` that is new or changed since it was exported (see the module docstring)."""
    store = open_store(settings.landing)
    landed = store.list_files(modified_to=end)
    run_id = interval_run_id(start, end)
    out = private_dir(settings.metadata_dir / table)
    key = export_key(settings.warehouse, table)
    state = ExportState.for_export(out, key)
    pending, late_pending = _pending(store, landed, state, start)
    arrived = sum(f.modified >= start for f in landed)
    log.info("interval %s: %d landing file(s) before its end (%d arrived in it), "
             "%d new or changed, in %s", run_id, len(landed), arrived, len(pending), store.url)
    summary = export_metadata(
        pending, out, run_id=run_id, ingest_date=start.date(), state=state,
        workers=(settings.workers or None) if len(pending) >= POOL_MIN_FILES else 1,
        start_method="forkserver", key=key,
    )
    errors_file = None
    if summary.errors:
        errors_path = private_dir(out / ERRORS_DIR) / f"{run_id}.csv"
        with open(errors_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["uri", "reason"])
            w.writerows(summary.errors)
        errors_file = str(errors_path)
        log.warning("interval %s: %d file(s) could not be exported; listed in %s",
                    run_id, len(summary.errors), errors_path)
    restrict_tree(out)
    result = IntervalExport(
        run_id=run_id, listed=len(landed), arrived=arrived, exported=summary.exported,
        late=_exported_now(late_pending, state, out, summary.parts),
        unchanged=len(landed) - len(pending) + summary.skipped_unchanged
        + summary.unchanged_content,
        failed=len(summary.errors), errors_file=errors_file,
    )
    log.info("interval %s: exported %d (%d late: modified before the interval), "
             "unchanged %d, failed %d in %.1f s", run_id, result.exported, result.late,
             result.unchanged, result.failed, summary.seconds)
    return result


def _pending(store: Store, landed: list[StoredFile], state: ExportState,
             start: datetime) -> tuple[list[Source], list[str]]:
    """The landing files the state has not seen with their current size and mtime (a stat
    each on local disk, the listing's own on an object store; nothing opened), and the
    URIs of those among them modified before ``start``."""
    pending: list[Source] = []
    late: list[str] = []
    root = os.path.join(store.url, "") if isinstance(store, LocalStore) else ""
    for f in landed:
        entry: Source
        if isinstance(store, LocalStore):
            uri = root + f.rel  # the listing's path, normalised: str(store.local_path(rel))
            entry = uri
            try:
                st = os.stat(uri)
            except OSError:  # gone since the listing: the export reports it
                pass
            else:  # the state knows a name that is not UTF-8 by its escaped text
                if state.is_current(path_text(uri), st.st_size, st.st_mtime_ns):
                    continue
        else:
            uri = store.uri(f.rel)
            entry = Listed(uri, f.size, f.mtime_ns, f.generation, f.checksum)
            if state.is_current(uri, entry.size, entry.mtime_ns):
                continue
        pending.append(entry)
        if f.modified < start:
            late.append(path_text(uri))
    return pending, late


def _exported_now(uris: Iterable[str], state: ExportState, out: Path,
                  parts: list[Path]) -> int:
    """How many of ``uris`` got their row in one of ``parts`` (this run's new parts):
    files whose content was unchanged keep their old part, failed ones are not in it."""
    new = {p.relative_to(out).as_posix() for p in parts}
    return sum(1 for uri in uris if (e := state.get(uri)) is not None and e.part in new)


def export_parts(out: Path, run_id: str, key: bytes | None = None) -> list[str]:
    """Every committed Parquet part an export run wrote (all attempts); ``key`` opens an
    encrypted manifest."""
    committed = ExportState.for_export(out, key).committed_parts()
    return sorted(str(out / p) for p in committed if f"/part-{run_id}-" in f"/{p}")


def load_export(warehouse_url: str, out: Path, run_id: str, table: str,
                parts: list[str] | None = None) -> int:
    """Merge all parts of ``run_id`` into ``table`` (idempotent); rows loaded. ``parts``:
    :func:`export_parts`' answer when the caller has it already (reading the export's
    state again costs a decryption)."""
    if parts is None:
        parts = export_parts(out, run_id, export_key(warehouse_url, table))
    if not parts:
        return 0
    with open_private_warehouse(warehouse_url) as warehouse:
        warehouse.ensure_schema()
        return warehouse.load_parquet(table, parts, mode="merge")
