"""The steps of one de-identification run, as plain functions the DAG tasks call.

A run (one batch) goes: cohort SQL -> filter file -> instances -> shards -> de-identify
each shard into a staging area -> verify each shard -> publish the batch -> load the
de-identified metadata and the mapping -> manifest and run record. Every step reads and
writes files under the run's :class:`RunWorkspace` (restricted: it holds original
identifiers) and returns only counts and paths, so the orchestrator passes nothing
sensitive between steps. Every step can be rerun: it replaces what it wrote before.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dicom_deid import __version__
from dicom_deid.cohort.cohorts import URI_COLUMN, cohort_to_filter, load_cohort, resolve_filter
from dicom_deid.cohort.filter_file import read_filter
from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.batch import Source, run_batch
from dicom_deid.dicom.files import write_atomic
from dicom_deid.errors import ConfigError, LeakError, VerificationError
from dicom_deid.metadata.export import ExportState, export_metadata
from dicom_deid.warehouse.factory import open_warehouse

from .interval_export import load_export
from .settings import PipelineSettings
from .shards import ShardLimits, ShardPlan, plan_shards
from .storage import Store, open_store
from .verify import LEAK_KEYWORDS, checked_keywords, verify_outputs

__all__ = ["RunWorkspace", "batch_id_for"]

log = logging.getLogger(__name__)
STAGING = ".staging"
MANIFEST = "manifest.json"
PRIORITIES = ("stat", "urgent", "routine", "low")
_ERRORS_SCHEMA = pa.schema([(c, pa.string()) for c in ("run_id", "path", "stage", "kind",
                                                        "reason")])




def batch_id_for(moment: datetime) -> str:
    """The batch id of the run for ``moment`` (its logical date, or when it was queued).

    A rerun of the same DAG run, or a test run for the same logical date, gets the same
    id, hence the same folders and warehouse partition.
    """
    utc = moment.astimezone(UTC)
    micro = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"batch-{utc:%Y%m%dT%H%M%S}{micro}Z"


@dataclass(frozen=True)
class RunWorkspace:
    """The working folder of one batch: ``work_dir/<batch_id>/``."""

    work_dir: Path
    batch_id: str

    @property
    def root(self) -> Path:
        return self.work_dir / self.batch_id

    @property
    def cohort_result(self) -> Path:
        return self.root / "cohort.parquet"

    @property
    def filter_path(self) -> Path:
        return self.root / "cohort.filter"

    @property
    def instances(self) -> Path:
        return self.root / "instances.parquet"

    @property
    def shard_plan(self) -> Path:
        return self.root / "shards" / "plan.json"

    def shard_list(self, shard: ShardPlan) -> Path:
        return self.root / "shards" / f"{shard.name}.parquet"

    def mapping(self, shard: ShardPlan) -> Path:
        return self.root / "mapping" / f"{shard.name}.parquet"

    def errors(self, shard: ShardPlan) -> Path:
        return self.root / "errors" / f"{shard.name}.csv"

    def result(self, step: str, shard: ShardPlan) -> Path:
        return self.root / step / f"{shard.name}.json"

    def staged(self, shard: ShardPlan) -> str:
        """The store-relative staging folder of one shard's outputs."""
        return f"{STAGING}/{self.batch_id}/{shard.name}"

    def write_json(self, path: Path, value: Any) -> None:
        text = json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"
        write_atomic(path, text.encode())

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text())

    def shards(self) -> list[ShardPlan]:
        return [ShardPlan(**d) for d in self.read_json(self.shard_plan)]

    def shard(self, number: int) -> ShardPlan:
        found = [p for p in self.shards() if p.shard == number]
        if not found:
            raise ValueError(f"no shard {number} in this run's plan")
        return found[0]


@dataclass(frozen=True)
class RunRequest:
    """What to de-identify and how: the DAG's params, validated."""

    cohort: str
    cohort_params: dict[str, Any]
    config: str | None = None
    options: tuple[str, ...] = ()
    profile: str = "basic"
    priority: str = "routine"

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ConfigError(f"priority must be one of {PRIORITIES}")
        if self.config and (self.options or self.profile != "basic"):
            raise ConfigError("a config file already holds the profile and options")

    def deid_config(self) -> DeidConfig:
        if self.config:
            return load_config(Path(self.config))
        return config_from_options(self.profile, list(self.options))

    def config_sha256(self) -> str:
        body = Path(self.config).read_bytes() if self.config else json.dumps(
            {"profile": self.profile, "options": sorted(self.options)}).encode()
        return hashlib.sha256(body).hexdigest()


# --------------------------------------------------------------------------- steps


def run_cohort(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest) -> dict[str, Any]:
    """Run the cohort SQL on the warehouse; keep its result with the run."""
    cohort = load_cohort(req.cohort, settings.cohort_dir)
    with open_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        table = cohort.run(warehouse, req.cohort_params)
    ws.root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, ws.cohort_result)
    log.info("cohort %s: %d row(s)", cohort.name, table.num_rows)
    return {"cohort": cohort.name, "rows": table.num_rows}


def write_filter_file(ws: RunWorkspace) -> dict[str, Any]:
    """Turn the cohort result into a filter file (Google DicomFilterConfig format)."""
    filter_set = cohort_to_filter(pq.read_table(ws.cohort_result))
    filter_set.write(ws.filter_path)
    log.info("filter file: %d line(s)", len(filter_set))
    return {"filter_file": str(ws.filter_path), "lines": len(filter_set)}


def resolve_instances(ws: RunWorkspace, settings: PipelineSettings) -> dict[str, Any]:
    """The instances the filter selects, with the identifying values verify looks for."""
    filter_set = read_filter(ws.filter_path)
    with open_warehouse(settings.warehouse) as warehouse:
        present = set(warehouse.run_cohort("SELECT * FROM dicom_metadata LIMIT 0").column_names)
        extra = ["size_bytes", *(k for k in LEAK_KEYWORDS if k in present and k not in (
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))]
        resolution = resolve_filter(warehouse, filter_set, columns=extra)
    table = _one_row_per_uri(resolution.instances)
    pq.write_table(table, ws.instances)
    if resolution.unmatched:
        log.warning("%d filter line(s) matched no exported instance", len(resolution.unmatched))
    log.info("resolved %d instance(s)", table.num_rows)
    return {"instances": table.num_rows, "unmatched_lines": len(resolution.unmatched)}


def _one_row_per_uri(table: pa.Table) -> pa.Table:
    """A file exported twice (its content changed) is still one input."""
    seen: set[str] = set()
    keep = []
    for i, uri in enumerate(table.column(URI_COLUMN).to_pylist()):
        if uri not in seen:
            seen.add(uri)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())) if len(keep) < table.num_rows else table


def plan_run_shards(ws: RunWorkspace, limits: ShardLimits | None = None) -> list[dict[str, int]]:
    """Cut the instances into shards of whole series; one mapped task each."""
    plans, tables = plan_shards(pq.read_table(ws.instances), limits)
    (ws.root / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (ws.root / "shards").glob("shard-*.parquet"):
        stale.unlink()
    for plan, table in zip(plans, tables, strict=True):
        pq.write_table(table, ws.shard_list(plan))
    ws.write_json(ws.shard_plan, [p.descriptor() for p in plans])
    total = sum(p.files for p in plans)
    log.info("%d shard(s) for %d instance(s) (largest %d files)", len(plans), total,
             max((p.files for p in plans), default=0))
    return [p.descriptor() for p in plans]


def _shard_inputs(ws: RunWorkspace, plan: ShardPlan, landing: Store
                  ) -> list[tuple[Source, dict[str, Any]]]:
    """The shard's inputs (named relative to the landing root) with their metadata rows."""
    root = landing.local_path("")
    out = []
    for row in pq.read_table(ws.shard_list(plan)).to_pylist():
        path = Path(row[URI_COLUMN])
        rel = path.relative_to(root).as_posix() if root in path.parents else str(path)
        out.append((Source(path, rel), row))
    return out


def deidentify_shard(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, shard: int, key: bytes
) -> dict[str, Any]:
    """De-identify one shard into its staging folder (replaced as a whole on rerun)."""
    plan = ws.shard(shard)
    dest = open_store(settings.destination)
    sources = [src for src, _ in _shard_inputs(ws, plan, open_store(settings.landing))]
    scratch = dest.scratch_dir(ws.staged(plan))
    summary = run_batch(
        sources, scratch, req.deid_config(), key, workers=settings.workers or None,
        errors_path=ws.errors(plan), mapping_path=ws.mapping(plan), run_id=ws.batch_id,
        progress=False, log_every=10.0, label=plan.name, start_method="forkserver",
    )
    dest.put_tree(scratch, ws.staged(plan))
    result = {
        "shard": plan.shard, "processed": summary.processed, "failed": summary.failed,
        "skipped": summary.skipped, "byte_path": summary.byte_path, "bytes_in": summary.bytes_in,
        "seconds": round(summary.seconds, 3), "failures_by_kind": summary.failures_by_kind,
    }
    ws.write_json(ws.result("deidentified", plan), result)
    log.info("%s: %s", plan.name, summary.line())
    return result


def verify_shard(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, shard: int
) -> dict[str, Any]:
    """Scan the shard's staged outputs for original PHI and check they are valid DICOM.

    Raises :class:`LeakError` (a PHI-free message) when an original value is found,
    :class:`VerificationError` for an unusable output or an input with neither an
    output nor an error record.
    """
    plan = ws.shard(shard)
    dest = open_store(settings.destination)
    mapping = pq.read_table(ws.mapping(plan)).to_pylist() if ws.mapping(plan).exists() else []
    by_rel = {m["source_path"]: m for m in mapping}
    staged = ws.staged(plan)
    outputs = []
    for src, row in _shard_inputs(ws, plan, open_store(settings.landing)):
        m = by_rel.get(src.rel)
        if m is not None:
            outputs.append((m["output_path"], dest.local_path(f"{staged}/{m['output_path']}"),
                            row, m["sop_uid"]))
    report = verify_outputs(outputs, checked_keywords(req.deid_config()))
    failed = _error_count(ws.errors(plan))
    accounted = len(outputs) + failed
    result = {"shard": plan.shard, "files": report.files, "values_checked":
              report.values_checked, "findings": len(report.findings), "ok": report.ok,
              "inputs": plan.files, "accounted": accounted}
    ws.write_json(ws.result("verified", plan), result)
    if report.leaks:
        raise LeakError(f"{plan.name}: {report.summary()}")
    if not report.ok:
        raise VerificationError(f"{plan.name}: {report.summary()}")
    if accounted != plan.files:
        raise VerificationError(f"{plan.name}: {plan.files - accounted} input(s) have neither an "
                        "output nor an error record")
    log.info("%s verified: %s", plan.name, report.summary())
    return result


def _error_count(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def publish(ws: RunWorkspace, settings: PipelineSettings) -> dict[str, Any]:
    """Make the verified batch visible at ``destination/<batch_id>`` in one swap."""
    shards = ws.shards()
    for plan in shards:
        verified = ws.result("verified", plan)
        if not verified.exists() or not ws.read_json(verified)["ok"]:
            raise VerificationError(f"{plan.name} is not verified; nothing published")
    dest = open_store(settings.destination)
    staged = [ws.staged(p) for p in shards if dest.exists(ws.staged(p))]
    if not staged and shards and dest.exists(ws.batch_id):
        files = sum(f.rel.endswith(".dcm") for f in dest.list_files(ws.batch_id))  # earlier try
        log.info("already published: %d file(s) at %s", files, dest.uri(ws.batch_id))
        return {"batch": dest.uri(ws.batch_id), "files": files}
    if len(staged) != len(shards):
        raise VerificationError(f"{len(shards) - len(staged)} shard(s) have no staged outputs")
    files = dest.merge_into(staged, ws.batch_id)
    dest.delete_tree(f"{STAGING}/{ws.batch_id}")
    log.info("published %d file(s) to %s", files, dest.uri(ws.batch_id))
    return {"batch": dest.uri(ws.batch_id), "files": files}


def load_deid_metadata(
    ws: RunWorkspace, settings: PipelineSettings, logical_date: date
) -> dict[str, Any]:
    """Export the published outputs' metadata and merge it into ``deid_metadata``."""
    dest = open_store(settings.destination)
    files = [f for f in dest.list_files(ws.batch_id) if f.rel.endswith(".dcm")]
    out = settings.metadata_dir / "deid_metadata"
    summary = export_metadata(
        (dest.local_path(f.rel) for f in files), out, run_id=ws.batch_id,
        ingest_date=logical_date, state=ExportState.for_export(out),
        workers=settings.workers or None, start_method="forkserver",
    )
    if summary.errors:
        raise VerificationError(f"{len(summary.errors)} published file(s) could not be read "
                                "back")
    rows = load_export(settings.warehouse, out, ws.batch_id, "deid_metadata")
    log.info("deid_metadata: %d file(s) exported, %d row(s) loaded", summary.exported, rows)
    return {"files": len(files), "exported": summary.exported, "rows_loaded": rows}


def load_mapping(ws: RunWorkspace, settings: PipelineSettings) -> dict[str, Any]:
    """Load the shard mappings into restricted ``deid_mapping``, errors into ``deid_errors``."""
    mappings = sorted(str(p) for p in (ws.root / "mapping").glob("shard-*.parquet"))
    errors: list[dict[str, str]] = []
    for path in sorted((ws.root / "errors").glob("shard-*.csv")):
        with open(path, newline="") as fh:
            errors += [{"run_id": ws.batch_id, "path": r["path"], "stage": r["stage"],
                        "kind": r["kind"], "reason": r["reason"]} for r in csv.DictReader(fh)]
    errors_file = ws.root / "errors.parquet"
    pq.write_table(pa.Table.from_pylist(errors, schema=_ERRORS_SCHEMA), errors_file)
    with open_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        rows = warehouse.load_parquet("deid_mapping", mappings, mode="replace_partition") \
            if mappings else 0
        if errors:
            warehouse.load_parquet("deid_errors", str(errors_file), mode="replace_partition")
    log.info("deid_mapping: %d row(s); deid_errors: %d row(s)", rows, len(errors))
    return {"mapping_rows": rows, "error_rows": len(errors)}


def write_manifest(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, logical_date: datetime
) -> dict[str, Any]:
    """Write ``manifest.json`` into the published batch: what a receiving site reads."""
    mapping = pq.read_table(ws.root / "mapping").to_pylist() \
        if any((ws.root / "mapping").glob("shard-*.parquet")) else []
    studies: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"images": 0, "series": set(), "modalities": set()})
    for m in mapping:
        s = studies[m["study_uid"]]
        s["images"] += 1
        s["series"].add(m["series_uid"])
        s["modalities"].add(m["modality"] or "")
    manifest = {
        "batch_id": ws.batch_id,
        "priority": req.priority,
        "logical_date": logical_date.isoformat(),
        "study_count": len(studies),
        "image_count": sum(s["images"] for s in studies.values()),
        "studies": [
            {"study_uid": uid, "images": s["images"], "series": len(s["series"]),
             "modalities": sorted(m for m in s["modalities"] if m)}
            for uid, s in sorted(studies.items())
        ],
        "deidentification": {"config_sha256": req.config_sha256(), "engine": __version__},
    }
    dest = open_store(settings.destination)
    dest.write_bytes(f"{ws.batch_id}/{MANIFEST}",
                     (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    log.info("manifest: %d study(ies), %d image(s)", manifest["study_count"],
             manifest["image_count"])
    return {"manifest": dest.uri(f"{ws.batch_id}/{MANIFEST}"),
            "study_count": manifest["study_count"], "image_count": manifest["image_count"]}


def record_run(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, *, started_at: datetime,
    user: str, status: str = "success",
) -> dict[str, Any]:
    """Upsert the run's ``deid_runs`` row and write a PHI-free report next to the run."""
    results = [ws.read_json(p) for p in sorted((ws.root / "deidentified").glob("shard-*.json"))]
    totals = {k: sum(r[k] for r in results) for k in ("processed", "failed", "skipped")}
    row = {
        "run_id": ws.batch_id, "started_at": started_at, "finished_at": datetime.now(UTC),
        "user": user, "config_sha256": req.config_sha256(),
        "cohort": Path(req.cohort).name, "status": status, **totals,
    }
    with open_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        warehouse.insert_rows("deid_runs", [row], key_columns=("run_id",))
    _write_report(ws, results, totals)
    log.info("run %s: %s", ws.batch_id, ", ".join(f"{k} {v}" for k, v in totals.items()))
    return {"run_id": ws.batch_id, **totals, "report": str(ws.root / "report.md")}


def _write_report(ws: RunWorkspace, results: list[dict[str, Any]], totals: dict[str, int]
                  ) -> None:
    lines = [f"# De-identification run {ws.batch_id}", "",
             "| shard | processed | by the byte path | failed | skipped | seconds | files/s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        rate = r["processed"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(f"| {r['shard']} | {r['processed']} | {r.get('byte_path', '-')} "
                     f"| {r['failed']} | {r['skipped']} | {r['seconds']:.1f} | {rate:.0f} |")
    kinds: dict[str, int] = defaultdict(int)
    for r in results:
        for k, v in r["failures_by_kind"].items():
            kinds[k] += v
    lines += ["", f"Total: {totals['processed']} processed, {totals['failed']} failed, "
              f"{totals['skipped']} skipped."]
    if kinds:
        lines.append("Failures by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(
            kinds.items())) + " (paths in errors/, restricted).")
    (ws.root / "report.md").write_text("\n".join(lines) + "\n")

