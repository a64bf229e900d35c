"""Export the landing files that arrived in one data interval, and load them.

"Arrived" means last modified in ``[start, end)``: each file belongs to exactly one
interval, so nightly runs and backfills over past intervals never export a file twice.
Within an interval the export is incremental (:class:`ExportState`), and the load
merges on (source_uri, content_sha256), so rerunning an interval changes nothing.
The export holds the identified metadata: its folder is private (0700, files 0600).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from dicom_deid.errors import StorageError
from dicom_deid.metadata.export import ExportState, export_metadata

from .restricted import open_private_warehouse, private_dir, restrict_tree
from .settings import PipelineSettings
from .storage import LocalStore, open_store

__all__ = ["IntervalExport", "export_interval", "interval_run_id", "load_export"]

log = logging.getLogger(__name__)
ERRORS_DIR = "_errors"


@dataclass(frozen=True)
class IntervalExport:
    """Counts of one interval's export (safe for XCom and logs)."""

    run_id: str
    arrived: int
    exported: int
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
    """Export metadata of the landing files modified in ``[start, end)`` to Parquet."""
    store = open_store(settings.landing)
    if not isinstance(store, LocalStore):  # export reads files by path today
        raise StorageError("metadata export reads a local landing folder")
    arrived = store.list_files(modified_from=start, modified_to=end)
    run_id = interval_run_id(start, end)
    out = private_dir(settings.metadata_dir / table)
    log.info("interval %s: %d file(s) arrived in %s", run_id, len(arrived), store.url)
    summary = export_metadata(
        (store.local_path(f.rel) for f in arrived), out, run_id=run_id,
        ingest_date=start.date(), state=ExportState.for_export(out),
        workers=settings.workers or None, start_method="forkserver",
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
        run_id=run_id, arrived=len(arrived), exported=summary.exported,
        unchanged=summary.skipped_unchanged + summary.unchanged_content,
        failed=len(summary.errors), errors_file=errors_file,
    )
    log.info("interval %s: exported %d, unchanged %d, failed %d in %.1f s",
             run_id, result.exported, result.unchanged, result.failed, summary.seconds)
    return result


def export_parts(out: Path, run_id: str) -> list[str]:
    """Every committed Parquet part an export run wrote (all attempts)."""
    committed = ExportState.for_export(out).committed_parts()
    return sorted(str(out / p) for p in committed if f"/part-{run_id}-" in f"/{p}")


def load_export(warehouse_url: str, out: Path, run_id: str, table: str) -> int:
    """Merge all parts of ``run_id`` into ``table`` (idempotent); rows loaded."""
    parts = export_parts(out, run_id)
    if not parts:
        return 0
    with open_private_warehouse(warehouse_url) as warehouse:
        warehouse.ensure_schema()
        return warehouse.load_parquet(table, parts, mode="merge")
