"""The steps of one de-identification run, as plain functions the DAG tasks call.

A run (one batch) goes: cohort SQL -> filter file -> the cohort's instances not released
yet under this config and key (:mod:`.ledger`) -> shards -> de-identify each shard into a
staging area -> verify each shard -> publish: one new release of the project's growing
tree, with its manifest, and the ledger rows -> load the mapping and the de-identified
metadata; then, whatever happened, :func:`finish_run` records the run and cleans up.
Every step reads and writes files under the run's :class:`RunWorkspace` (restricted:
0700 folders, 0600 files, since it holds original identifiers) and returns only counts
and paths, so the orchestrator passes nothing sensitive between steps. Every step can
be rerun: it replaces what it wrote before, and a rerun of a whole batch leaves exactly
the new run's artifacts.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dicom_deid import __version__
from dicom_deid.cohort.cohorts import URI_COLUMN, cohort_to_filter, load_cohort
from dicom_deid.cohort.filter_file import FilterSet, read_filter
from dicom_deid.deid.batch import ReviewSpec, Source, run_batch
from dicom_deid.dicom.files import write_atomic
from dicom_deid.errors import ConfigError, LeakError, VerificationError
from dicom_deid.metadata.export import ExportState, export_metadata
from dicom_deid.storage import LocalStore, Release, Store, open_store
from dicom_deid.storage.permissions import private_dir, restrict, restrict_tree
from dicom_deid.vault.columns import encrypt_columns
from dicom_deid.vault.envelope import VaultError, is_sealed, read_sealed_table, seal
from dicom_deid.warehouse.base import Warehouse

from . import ledger, run_record
from .projects import RunRequest
from .restricted import open_private_warehouse
from .run_record import DRY_RUN, REJECTED, SUCCESS, ReviewDecision, RunOutcome
from .settings import PipelineSettings
from .shards import ShardLimits, ShardPlan, plan_shards

__all__ = ["RunOutcome", "RunWorkspace", "batch_id_for"]

log = logging.getLogger(__name__)
MANIFESTS = "manifests"
_ERRORS_SCHEMA = pa.schema([(c, pa.string()) for c in ("run_id", "path", "stage", "kind",
                                                        "reason")])
#: Per-shard artifacts: a new shard plan makes every one of them stale.
_SHARD_FOLDERS = ("mapping", "errors", "verdicts", "deid_metadata", "deidentified", "verified",
                  "review")
#: The reviewer's cards and thumbnails (de-identified pixels; removed when the run fails
#: or is rejected: a flagged image may show what should not have been there).
REVIEW = "review"
_REPORTED_FINDINGS = 50
"""A shard's verification findings kept for the run report (PHI-free: pseudonymous
paths and attribute names); the task log has the first ten."""
#: A released batch's record in its folder, which a rerun of the batch keeps (its
#: ``deid_runs`` row, manifest and ledger rows are kept too): the report, the reviewer's
#: contact sheet, the gate's verdicts, the verification results and per-shard counts.
_RELEASE_RECORD = ("report.md", REVIEW, "verdicts", "verified", "deidentified")
#: What holds original identifiers and is no longer needed once a run has succeeded
#: (the mapping and the error list are in the warehouse's restricted tables by then).
_IDENTIFIED = ("cohort.parquet", "cohort.filter", "instances.parquet", "shards/*.parquet",
               "mapping", "errors", "errors.parquet", "deid_metadata", "release.json",
               run_record.FAILURES)


def batch_id_for(moment: datetime, project: str = "") -> str:
    """The batch id of ``project``'s run for ``moment`` (its logical date, or when it was
    queued): ``batch-<UTC time>Z-<project>``.

    A rerun of the same DAG run, or a test run for the same logical date, gets the same
    id, hence the same folders and warehouse partition. Projects scheduled by the same
    event get different ids: their runs never share a folder or a warehouse partition.
    """
    utc = moment.astimezone(UTC)
    micro = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"batch-{utc:%Y%m%dT%H%M%S}{micro}Z" + (f"-{project}" if project else "")


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
    def pinned(self) -> Path:
        """The policy the run started with (see :func:`check_pinned`)."""
        return self.root / "policy.json"

    @property
    def shard_plan(self) -> Path:
        return self.root / "shards" / "plan.json"

    def shard_list(self, shard: ShardPlan) -> Path:
        return self.root / "shards" / f"{shard.name}.parquet"

    def mapping(self, shard: ShardPlan) -> Path:
        return self.root / "mapping" / f"{shard.name}.parquet"

    def errors(self, shard: ShardPlan) -> Path:
        return self.root / "errors" / f"{shard.name}.csv"

    def metadata(self, shard: ShardPlan) -> Path:
        """The de-identified metadata rows of the shard's outputs, from its workers."""
        return self.root / "deid_metadata" / f"{shard.name}.parquet"

    def verdicts(self, shard: ShardPlan) -> Path:
        """The gate's verdicts on the shard's outputs (PHI-free; kept with the run)."""
        return self.root / "verdicts" / f"{shard.name}.parquet"

    def result(self, step: str, shard: ShardPlan) -> Path:
        return self.root / step / f"{shard.name}.json"

    @property
    def review_root(self) -> Path:
        """The reviewer's cards (``<shard>.parquet``) and thumbnails (``<shard>/``)."""
        return self.root / REVIEW

    def review_cards(self, shard: ShardPlan) -> Path:
        return self.review_root / f"{shard.name}.parquet"

    def thumbnails(self, shard: ShardPlan) -> Path:
        return self.review_root / shard.name

    @property
    def released_before(self) -> Path:
        """Present when this run is a rerun of a batch that was released already."""
        return self.root / "released-before.json"

    def is_rerun_of_release(self) -> bool:
        return self.released_before.exists()

    @property
    def release_plan(self) -> Path:
        """What the run selected and why (counts), then what its release changed."""
        return self.root / "release.json"

    def staged(self, shard: ShardPlan) -> str:
        """One shard's staging folder, relative to :func:`staging_root`."""
        return f"{self.batch_id}/{shard.name}"

    def prepare(self) -> None:
        """Create the work folder and this run's folder, both private (0700)."""
        private_dir(self.work_dir)
        private_dir(self.root)

    def folder(self, name: str) -> Path:
        """A private sub-folder of the run, created if missing."""
        return private_dir(self.root / name)

    def write_json(self, path: Path, value: Any) -> None:
        text = json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"
        private_dir(path.parent)
        write_atomic(path, text.encode())
        restrict(path)

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text())

    def shards(self) -> list[ShardPlan]:
        return [ShardPlan(**d) for d in self.read_json(self.shard_plan)]

    def shard(self, number: int) -> ShardPlan:
        found = [p for p in self.shards() if p.shard == number]
        if not found:
            raise ValueError(f"no shard {number} in this run's plan")
        return found[0]


def destination(settings: PipelineSettings) -> tuple[Store, str]:
    """The store holding the project's research tree, and the tree's name in it: the
    destination ``.../<project>`` is a link to its current release (see
    :meth:`dicom_deid.storage.Store.publish_release`); staging and releases are its hidden
    siblings."""
    parent, _, name = settings.destination.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise ConfigError("the destination must name a folder for the project's tree "
                          "(a bucket alone is not one: gs://bucket/folder)")
    return open_store(parent or "/"), name


def staging_root(tree: str) -> str:
    """Where unverified outputs of the tree's runs are staged (private, hidden)."""
    return f".staging-{tree}"


def _staged(ws: RunWorkspace, tree: str, shard: ShardPlan) -> str:
    return f"{staging_root(tree)}/{ws.staged(shard)}"


@contextmanager
def _in_workspace(ws: RunWorkspace) -> Iterator[None]:
    """Run a step with the run's folder private before it writes and every file in it
    0600 afterwards (also when the step fails: its leftovers hold identifiers too)."""
    ws.prepare()
    try:
        yield
    finally:
        restrict_tree(ws.root)


# --------------------------------------------------------------------------- steps


def run_cohort(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest) -> dict[str, Any]:
    """Start the run: empty its folder (a rerun of a batch starts afresh), then run the
    cohort SQL on the warehouse and keep its result with the run.

    A batch that was released already is final: its rerun keeps the release's record
    (report, contact sheet, ``deid_runs`` row, manifest) and releases nothing more;
    what is new or changed since waits for the next batch (:func:`resolve_instances`).
    """
    cohort = load_cohort(req.cohort, settings.cohort_dir)
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        released = ledger.batch_released(warehouse, ws.batch_id)
        with _in_workspace(ws):
            for entry in list(ws.root.iterdir()):
                if released and entry.name in _RELEASE_RECORD:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            ws.write_json(ws.pinned, _policy_pin(req, settings))
            if released:
                ws.write_json(ws.released_before, {"rerun_at": datetime.now(UTC)})
        table = cohort.run(warehouse, req.cohort_params)
    with _in_workspace(ws):
        pq.write_table(table, ws.cohort_result)
    log.info("cohort %s: %d row(s)", cohort.name, table.num_rows)
    return {"cohort": cohort.name, "rows": table.num_rows}


def _policy_pin(req: RunRequest, settings: PipelineSettings) -> dict[str, Any]:
    """What must not change during a run: the effective config, the declared exceptions,
    the destination."""
    return {"config_sha256": req.config_fingerprint(), "exceptions": sorted(req.exceptions),
            "destination": settings.destination}


def check_pinned(ws: RunWorkspace, req: RunRequest, settings: PipelineSettings) -> None:
    """Refuse to go on when the project's policy differs from what the run started with
    (its file was edited mid-run): one batch is de-identified under one policy."""
    pinned = ws.read_json(ws.pinned) if ws.pinned.exists() else None
    if pinned != _policy_pin(req, settings):
        raise ConfigError("the project's policy, exceptions or destination changed since "
                          "this run started (or it did not start here): rerun the whole "
                          "batch")


def write_filter_file(ws: RunWorkspace) -> dict[str, Any]:
    """Turn the cohort result into a filter file (Google DicomFilterConfig format)."""
    filter_set = cohort_to_filter(pq.read_table(ws.cohort_result))
    with _in_workspace(ws):
        filter_set.write(ws.filter_path)
    log.info("filter file: %d line(s)", len(filter_set))
    return {"filter_file": str(ws.filter_path), "lines": len(filter_set)}


def resolve_instances(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest,
                      key_id: str) -> dict[str, Any]:
    """The instances of the cohort still to release: those with no ledger row for this
    content under this config and key (new, changed, or all of them after a change of
    policy or key), each as its landing path, size and content hash (the gate reads
    identifying values from each source file itself). A cohort that selected nothing
    wrote an empty filter file: no instances, no shards."""
    empty = not ws.filter_path.read_text(encoding="ascii").strip()
    filter_set = FilterSet.of([]) if empty else read_filter(ws.filter_path)
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        table, cohort = ledger.pending_instances(
            warehouse, filter_set, project=req.project, config_sha256=req.config_fingerprint(),
            key_id=key_id)
    table, held = _without_held_back(table, req.hold_back)
    waiting = 0
    if ws.is_rerun_of_release():
        waiting, table = table.num_rows, table.slice(0, 0)
        log.warning("batch %s was released already: its rerun releases nothing more (%d "
                    "new or changed instance(s) wait for the next batch)", ws.batch_id,
                    waiting)
    reasons = (table.column("release_reason").to_pylist()
               if "release_reason" in table.column_names else [])
    counts = {reason: reasons.count(reason) for reason in ledger.REASONS}
    plan = {"cohort_instances": cohort, "to_release": table.num_rows,
            "unchanged": cohort - table.num_rows - waiting - held, **counts,
            "key_id": key_id, "config_sha256": req.config_fingerprint(), "waiting": waiting,
            "held_back": held}
    with _in_workspace(ws):
        pq.write_table(table, ws.instances)
        ws.write_json(ws.release_plan, {"selected": plan})
    if counts["policy"]:
        log.warning("%d released instance(s) are released again: the project's config or "
                    "key changed since", counts["policy"])
    if held:
        log.warning("%d new or changed instance(s) held back by the project's hold_back "
                    "list: not released", held)
    log.info("cohort: %d instance(s); to release: %d (new %d, changed %d, new config or key "
             "%d), unchanged %d", cohort, table.num_rows, counts["new"], counts["changed"],
             counts["policy"], plan["unchanged"])
    return plan


def _without_held_back(table: pa.Table, hold_back: frozenset[str]) -> tuple[pa.Table, int]:
    """``table`` without the landing files whose content the project holds back, and how
    many those were (a file re-sent with other content is new, and judged again)."""
    if not hold_back or not table.num_rows:
        return table, 0
    held = pc.is_in(table.column("content_sha256"), value_set=pa.array(sorted(hold_back)))
    kept = table.filter(pc.invert(pc.fill_null(held, False)))
    return kept, table.num_rows - kept.num_rows


def plan_run_shards(
    ws: RunWorkspace, limits: ShardLimits | None = None, settings: PipelineSettings | None = None
) -> list[dict[str, int]]:
    """Cut the instances into shards of whole series; one mapped task each.

    A new plan makes every per-shard artifact of an earlier plan stale (a rerun with a
    smaller cohort has fewer shards): they are removed here, with the earlier staged
    outputs when ``settings`` names the destination.
    """
    plans, tables = plan_shards(pq.read_table(ws.instances), limits)
    with _in_workspace(ws):
        shards_dir = ws.folder("shards")
        for stale in shards_dir.glob("shard-*.parquet"):
            stale.unlink()
        for name in _SHARD_FOLDERS:
            if not (name in _RELEASE_RECORD and ws.is_rerun_of_release()):
                shutil.rmtree(ws.root / name, ignore_errors=True)
        (ws.root / "errors.parquet").unlink(missing_ok=True)
        if settings is not None:
            discard_staged(ws, settings)
        for plan, table in zip(plans, tables, strict=True):
            pq.write_table(table, ws.shard_list(plan))
        ws.write_json(ws.shard_plan, [p.descriptor() for p in plans])
    total = sum(p.files for p in plans)
    log.info("%d shard(s) for %d instance(s) (largest %d files)", len(plans), total,
             max((p.files for p in plans), default=0))
    return [p.descriptor() for p in plans]


def _shard_inputs(ws: RunWorkspace, plan: ShardPlan, landing: Store) -> list[Source]:
    """The shard's input files, named relative to the landing root (object store inputs
    by URI, with the update time and size the export saw: each worker fetches its own, a
    few ahead, in one request each), local ones with the content SHA-256 the export
    recorded (the worker checks the bytes against it)."""
    path = ws.shard_list(plan)
    names = pq.read_schema(path).names
    sized = "size_bytes" in names  # lists of earlier versions lack it
    hashed = "content_sha256" in names
    table = pq.read_table(path, columns=[URI_COLUMN, "mtime", "SOPInstanceUID",
                                         *(["size_bytes"] * sized),
                                         *(["content_sha256"] * hashed)])
    uris = table.column(URI_COLUMN).to_pylist()
    times = table.column("mtime").cast(pa.int64()).to_pylist()
    sops = table.column("SOPInstanceUID").to_pylist()
    sizes = table.column("size_bytes").to_pylist() if sized else [None] * len(uris)
    if not isinstance(landing, LocalStore):  # the export's update times: one request a file
        root_uri = landing.uri("").rstrip("/") + "/"
        # the fetched copy takes the catalogued update time: its size and instance can differ
        return [Source(uri, uri[len(root_uri):] if uri.startswith(root_uri) else uri,
                       None if us is None else us * 1000, size,
                       None if size is None else (size, None, sop))
                for uri, us, size, sop in zip(uris, times, sizes, sops, strict=True)]
    # A local file's catalogued content_sha256 is over its bytes (an object's is over the
    # store's checksum): the worker hashes the file and releases it only if it matches.
    digests = table.column("content_sha256").to_pylist() if hashed else [None] * len(uris)
    root = landing.local_path("")
    out = []
    for uri, us, size, sop, digest in zip(uris, times, sizes, sops, digests, strict=True):
        path = Path(uri)
        rel = path.relative_to(root).as_posix() if root in path.parents else str(path)
        out.append(Source(path, rel, catalogued=None if size is None else (size, us, sop),
                          catalogued_sha256=digest))
    return out


def deidentify_shard(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, shard: int, key: bytes,
    vault_key: bytes | None = None,
) -> dict[str, Any]:
    """De-identify one shard into its staging folder (replaced as a whole on rerun); its
    mapping is sealed under ``vault_key`` (None: in clear, for engine-level use only)."""
    check_pinned(ws, req, settings)
    plan = ws.shard(shard)
    dest, tree = destination(settings)
    sources = _shard_inputs(ws, plan, open_store(settings.landing))
    dest.make_private(staging_root(tree))  # unverified outputs: nobody else may read them
    dest.make_private(f"{staging_root(tree)}/{ws.batch_id}")
    with _in_workspace(ws):
        for stale in (ws.mapping(plan), ws.errors(plan), ws.verdicts(plan), ws.metadata(plan),
                      ws.result("deidentified", plan), ws.result("verified", plan),
                      ws.review_cards(plan)):
            stale.unlink(missing_ok=True)  # a failed try must not leave the last one's
        shutil.rmtree(ws.thumbnails(plan), ignore_errors=True)
        ws.folder("mapping")
        ws.folder("errors")
        review = None
        if req.review.waits and not req.dry_run:
            ws.folder(REVIEW)
            review = ReviewSpec(req.review, private_dir(ws.thumbnails(plan)),
                                ws.review_cards(plan))
        # The shard's staging folder is replaced as a whole; on an object store each
        # output is uploaded to it as soon as the batch publishes it.
        with dest.tree_writer(_staged(ws, tree, plan)) as (scratch, sink):
            summary = run_batch(
                sources, scratch, req.deid_config(), key, workers=settings.workers or None,
                errors_path=ws.errors(plan), mapping_path=ws.mapping(plan),
                run_id=ws.batch_id, progress=False, log_every=10.0, label=plan.name,
                start_method="forkserver", gate=req.exceptions,
                verdicts_path=ws.verdicts(plan), metadata_path=ws.metadata(plan),
                review=review, sink=sink,
                mapping_seal=partial(seal, vault_key=vault_key) if vault_key else None,
            )
        if review is not None:
            restrict_tree(ws.thumbnails(plan))
            restrict(ws.review_cards(plan))
        result = {
            "shard": plan.shard, "processed": summary.processed, "failed": summary.failed,
            "skipped": summary.skipped, "byte_path": summary.byte_path,
            "bytes_in": summary.bytes_in, "seconds": round(summary.seconds, 3),
            "failures_by_kind": summary.failures_by_kind, "key_id": run_record.key_id(key),
            "gate_checked": summary.verified, "gate_rejected": summary.rejected,
        }
        ws.write_json(ws.result("deidentified", plan), result)
    log.info("%s: %s", plan.name, summary.line())
    return result


def verify_shard(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, shard: int,
    vault_key: bytes | None = None,
) -> dict[str, Any]:
    """Trust the shard's staged outputs only as the gate judged them in the worker.

    Every staged file must have a passing verdict (:mod:`dicom_deid.deid.gate`: no
    identifying value of its source, structurally sound) naming its exact bytes (SHA-256
    of the staged file, computed again here), every mapping row a staged file, and every
    input an output or an error record. Raises :class:`LeakError` (PHI-free: output
    paths and attribute names) when a verdict found a source value, otherwise
    :class:`VerificationError` for anything else: an unusable output, a file without
    a verdict or with different bytes, an input unaccounted for.
    """
    del req  # the gate used the project's exceptions in the worker
    plan = ws.shard(shard)
    dest, tree = destination(settings)
    staged = _staged(ws, tree, plan)
    verdicts = {v["output_path"]: v for v in (
        pq.read_table(ws.verdicts(plan)).to_pylist() if ws.verdicts(plan).exists() else [])}
    mapping = (read_mapping(ws.mapping(plan), vault_key).select(["source_path", "output_path"])
               .to_pylist() if ws.mapping(plan).exists() else [])
    mapped = {row["output_path"] for row in mapping}
    files = {f.rel[len(staged) + 1:]: f for f in dest.list_files(staged)} \
        if dest.exists(staged) else {}
    digests = {rel[len(staged) + 1:]: digest for rel, digest in dest.sha256(
        [f"{staged}/{rel}" for rel in files], workers=settings.workers or 8).items()}
    findings: list[str] = []
    source_sha256: dict[str, str] = {}
    leaks = values = 0
    for rel in sorted(files):
        verdict = verdicts.get(rel)
        if verdict is None:
            findings.append(f"{rel}: no verdict from the gate")
        elif verdict["sha256"] != digests[rel]:
            findings.append(f"{rel}: not the bytes the gate checked")
        elif not verdict["ok"]:
            if not source_sha256:
                source_sha256 = _source_digests(ws, plan, settings, mapping)
            held = source_sha256.get(rel)
            findings.append(f"{rel}: {verdict['problems']}"
                            + (f" (source sha256 {held})" if held else ""))
            leaks += verdict["leaks"] > 0
        if verdict is not None:
            values += verdict["values_checked"]
    findings += [f"{rel}: in the mapping but not staged" for rel in sorted(mapped - set(files))]
    failed = _error_count(ws.errors(plan))
    accounted = len(mapped & set(files)) + failed
    ok = not findings and accounted == plan.files
    result = {"shard": plan.shard, "files": len(files), "values_checked": values,
              "findings": len(findings), "ok": ok, "leaks": leaks, "inputs": plan.files,
              "accounted": accounted, "problems": findings[:_REPORTED_FINDINGS]}
    with _in_workspace(ws):
        ws.write_json(ws.result("verified", plan), result)
    summary = (f"{len(files)} file(s), {values} value(s) checked: "
               + ("; ".join(findings[:10]) + (f" (+{len(findings) - 10} more)"
                                                if len(findings) > 10 else "")
                  if findings else "no leaks, all valid"))
    if leaks:
        raise LeakError(f"{plan.name}: {leaks} output(s) hold an original value: {summary}")
    if findings:
        raise VerificationError(f"{plan.name}: {summary}")
    if accounted != plan.files:
        raise VerificationError(f"{plan.name}: {plan.files - accounted} input(s) have neither an "
                                "output nor an error record")
    log.info("%s verified: %s", plan.name, summary)
    return result


def _source_digests(ws: RunWorkspace, plan: ShardPlan, settings: PipelineSettings,
                    mapping: list[dict[str, str]]) -> dict[str, str]:
    """Each output's source content SHA-256, as the metadata export recorded it: what a
    project's ``hold_back`` names (a hash names the file without naming anyone)."""
    digests = pq.read_table(ws.shard_list(plan), columns=["content_sha256"]).column(0)
    by_rel = {source.rel: digest for source, digest in zip(
        _shard_inputs(ws, plan, open_store(settings.landing)), digests.to_pylist(),
        strict=True)}
    return {row["output_path"]: by_rel[row["source_path"]] for row in mapping
            if by_rel.get(row["source_path"])}


def check_reviewable(ws: RunWorkspace, settings: PipelineSettings) -> None:
    """Refuse (:class:`VerificationError`) a review that could approve what nobody saw or
    what is out already: a planned shard without its review cards (made without a review,
    or removed by a rejection; rerun the batch), or a batch released already."""
    missing = [p.name for p in ws.shards() if not ws.review_cards(p).exists()]
    if missing:
        raise VerificationError(
            f"{len(missing)} shard(s) have no review cards ({', '.join(missing[:3])}): they "
            "were made without a review, or a rejection removed them; rerun the batch")
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        released = ledger.batch_released(warehouse, ws.batch_id)
    if released:
        raise VerificationError(f"batch {ws.batch_id} is released already (the ledger has "
                                "its rows): a review after the release decides nothing")


def read_mapping(path: Path, vault_key: bytes | None) -> pa.Table:
    """A shard's mapping file: opened with the vault key when it is sealed (a sealed one
    without the key is refused)."""
    if is_sealed(path):
        if vault_key is None:
            raise ConfigError(f"{path.name} is sealed under a vault key: this step needs it")
        return read_sealed_table(path, vault_key)
    return pq.read_table(path)


def _error_count(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def publish(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest,
            logical_date: datetime, vault_key: bytes | None = None) -> dict[str, Any]:
    """Release the verified batch: one new release of the project's tree (its new and
    changed files in, what they replace under another path and what is withdrawn out,
    the batch's manifest in ``manifests/``), made visible in one step, then the ledger.

    The plan (what goes in, what comes out) is kept with the run before the release is
    made, so a rerun after a crash anywhere repeats exactly the same release and ledger
    rows. A run with nothing to release publishes nothing.
    """
    shards = ws.shards()
    for plan in shards:
        verified = ws.result("verified", plan)
        if not verified.exists() or not ws.read_json(verified)["ok"]:
            raise VerificationError(f"{plan.name} is not verified; nothing published")
    dest, tree = destination(settings)
    with dest.lock(tree):  # no withdrawal changes the ledger or the tree meanwhile
        state = ws.read_json(ws.release_plan) if ws.release_plan.exists() else {}
        release: dict[str, Any] = state.get("release") or {}
        # Released already, the ledger not written yet (a retry): finish that plan. Else
        # plan now, under the lock: a withdrawal since an earlier try is taken into account.
        done = bool(release) and dest.release_of(tree) == ws.batch_id
        if not done:
            release = _plan_release(ws, settings, req, dest, tree, shards, vault_key)
            with _in_workspace(ws):
                ws.write_json(ws.release_plan, {**state, "release": release})
        outcome = Release(ws.batch_id, 0, 0, 0)
        if (release["add"] or release["remove"]) and not done:
            manifest = _manifest(ws, req, logical_date, release)
            outcome = dest.publish_release(
                tree, ws.batch_id,
                {p: f"{staging_root(tree)}/{s}" for p, s in release["add"].items()},
                release["remove"], {f"{MANIFESTS}/{ws.batch_id}.json": manifest})
        with open_private_warehouse(settings.warehouse) as warehouse:
            warehouse.ensure_schema()
            ledger.write_rows(warehouse, (ledger.LedgerRow(**_row_times(r))
                                          for r in release["ledger"]), vault_key)
    dest.delete_tree(f"{staging_root(tree)}/{ws.batch_id}")
    counts = {k: len(release[k]) for k in ("added", "replaced", "removed", "withdrawn")}
    log.info("release %s of %s: %d added, %d replaced, %d removed, %d withdrawn; %d file(s) "
             "in the tree", ws.batch_id, dest.uri(tree), *counts.values(), outcome.files)
    return {"tree": dest.uri(tree), "release": ws.batch_id if release["add"] or release[
        "remove"] else None, "files": outcome.files, **counts}


def _row_times(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger row as kept in the plan (JSON: times as ISO text) back to datetimes."""
    out = dict(row)
    for name in ("released_at", "status_at"):
        if isinstance(out.get(name), str):
            out[name] = datetime.fromisoformat(out[name])
    return out


def _plan_release(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest, dest: Store,
                  tree: str, shards: Sequence[ShardPlan], vault_key: bytes | None
                  ) -> dict[str, Any]:
    """What the release adds, replaces, removes and withholds, and the ledger rows."""
    landing = open_store(settings.landing)
    sources = {s.rel: str(s.path) for p in shards for s in _shard_inputs(ws, p, landing)}
    instances = pq.read_table(ws.instances, columns=[URI_COLUMN, "content_sha256"]).to_pylist()
    content = {r[URI_COLUMN]: r["content_sha256"] for r in instances}
    shard_of = {ws.mapping(p): p for p in shards}
    mapping: list[dict[str, Any]] = []
    staged: dict[str, str] = {}  # tree path -> its staged file, in its shard's folder
    for path in _shard_files(ws, "mapping"):
        for row in read_mapping(path, vault_key).to_pylist():
            mapping.append(row)
            staged[row["output_path"]] = f"{ws.staged(shard_of[path])}/{row['output_path']}"
    verdicts = {v["output_path"]: v["sha256"] for p in shards if ws.verdicts(p).exists()
                for v in pq.read_table(ws.verdicts(p), columns=["output_path", "sha256"]
                                       ).to_pylist()}
    key_ids = {ws.read_json(ws.result("deidentified", p)).get("key_id") for p in shards}
    key_ids.discard(None)
    if len(key_ids) > 1:
        raise VerificationError("the batch's shards were made under different keys")
    key_id = next(iter(key_ids), "")
    now = datetime.now(UTC).isoformat()
    by = f"batch {ws.batch_id}"
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        held = ledger.withdrawn_outputs(warehouse, req.project, mapping, vault_key)
        uris = [sources.get(m["source_path"], m["source_path"]) for m in mapping]
        earlier = ledger.current_rows(warehouse, req.project, source_uris=uris,
                                      output_paths=[m["output_path"] for m in mapping],
                                      exclude_batch=ws.batch_id, vault_key=vault_key)
    rows: list[dict[str, Any]] = []
    add: dict[str, str] = {}
    for m, uri in zip(mapping, uris, strict=True):
        path = m["output_path"]
        withdrawn = path in held
        if not withdrawn:
            add[path] = staged[path]
        rows.append(ledger.LedgerRow(
            project=req.project, source_uri=uri, source_sha256=content.get(uri),
            study_uid=m["study_uid"], series_uid=m["series_uid"], sop_uid=m["sop_uid"],
            patient_id=m["patient_id"], output_path=path, output_sha256=verdicts.get(path),
            config_sha256=req.config_fingerprint(), key_id=key_id, batch_id=ws.batch_id,
            released_at=now,  # type: ignore[arg-type]  # JSON until written
            status=ledger.WITHDRAWN if withdrawn else ledger.RELEASED,
            status_at=now if withdrawn else None,  # type: ignore[arg-type]
            status_by=by if withdrawn else None,
            status_reason=f"{held[path]} withdrawn earlier" if withdrawn else None,
        ).as_dict())
    rows += _duplicates(ws, shards, sources, content, req, key_id, now, by)
    replaced, removed = [], []
    batch_uris = set(uris)
    for old in earlier:
        same_file = old.source_uri in batch_uris
        reason = ("content changed" if same_file and old.config_sha256 == req.config_fingerprint()
                  and old.key_id == key_id else "new config or key" if same_file
                  else "the same instance re-sent")
        rows.append({**old.as_dict(), "status": ledger.SUPERSEDED, "status_at": now,
                     "status_by": by, "status_reason": reason})
        if old.output_path in add:
            replaced.append(old.output_path)
        else:
            removed.append(old.output_path)
    return {"add": add, "remove": sorted(set(removed) - set(add)),
            "added": sorted(set(add) - set(replaced)), "replaced": sorted(set(replaced)),
            "removed": sorted(set(removed) - set(add)), "withdrawn": sorted(held),
            "policy_change": any(r.get("status_reason") == "new config or key" for r in rows),
            "ledger": rows}


def _duplicates(ws: RunWorkspace, shards: Sequence[ShardPlan], sources: dict[str, str],
                content: dict[str, str], req: RunRequest, key_id: str, now: str, by: str
                ) -> list[dict[str, Any]]:
    """Ledger rows for the inputs the duplicate rule set aside (another file of the batch
    holds the same instance and is newer): handled, so no later night takes them up and
    replaces the newer file with them."""
    rows = []
    for path in _shard_files(ws, "errors"):
        with open(path, newline="") as fh:
            for err in csv.DictReader(fh):
                if err["kind"] != "duplicate":
                    continue
                uri = sources.get(err["path"], err["path"])
                rows.append(ledger.LedgerRow(
                    project=req.project, source_uri=uri, source_sha256=content.get(uri),
                    study_uid=None, series_uid=None, sop_uid=None, patient_id=None,
                    output_path="", output_sha256=None, config_sha256=req.config_fingerprint(),
                    key_id=key_id, batch_id=ws.batch_id,
                    released_at=now,  # type: ignore[arg-type]  # JSON until written
                    status=ledger.SUPERSEDED, status_at=now,  # type: ignore[arg-type]
                    status_by=by, status_reason="duplicate: a newer file holds the instance",
                ).as_dict())
    return rows


def _manifest(ws: RunWorkspace, req: RunRequest, logical_date: datetime,
              release: dict[str, Any]) -> bytes:
    """The batch's manifest (what a receiving site reads): exactly what it added,
    replaced, removed and withheld, by tree path, and per study what it released."""
    studies: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"images": 0, "series": set()})
    for row in release["ledger"]:
        if row["batch_id"] == ws.batch_id and row["status"] == ledger.RELEASED:
            s = studies[row["study_uid"]]
            s["images"] += 1
            s["series"].add(row["series_uid"])
    manifest = {
        "batch_id": ws.batch_id, "priority": req.priority,
        "logical_date": logical_date.isoformat(),
        "added": release["added"], "replaced": release["replaced"],
        "removed": release["removed"], "withdrawn": release["withdrawn"],
        "policy_change": release["policy_change"],
        "study_count": len(studies), "image_count": sum(s["images"] for s in studies.values()),
        "studies": [{"study_uid": uid, "images": s["images"], "series": len(s["series"])}
                    for uid, s in sorted(studies.items())],
        "deidentification": {"config_sha256": req.config_fingerprint(), "engine": __version__,
                             **(_policy(req) or {})},
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def load_deid_metadata(
    ws: RunWorkspace, settings: PipelineSettings, logical_date: date, project: str,
    vault_key: bytes | None = None,
) -> dict[str, Any]:
    """Make ``deid_metadata`` describe the project's tree after this release: rows of the
    files it removed are deleted, rows of the files it added or replaced replace any
    earlier row of the same path.

    The rows come from the workers, read from the bytes each one wrote (no second read of
    the released files); here they get their URIs in the tree and the run's ingest
    columns. Released files of ``project`` that still have no row are read again
    (:func:`_repair_metadata`; ``vault_key`` opens the ledger's tree paths).
    """
    dest, tree = destination(settings)
    release = (ws.read_json(ws.release_plan).get("release") if ws.release_plan.exists()
               else None) or {"add": {}, "removed": []}
    released = set(release["add"])
    parts: list[str] = []
    rows = 0
    found: set[str] = set()
    with _in_workspace(ws):
        for plan in ws.shards():
            source = ws.metadata(plan)
            if not source.exists():
                continue
            table = pq.read_table(source)
            rels = table.column("source_uri").to_pylist()
            keep = [i for i, rel in enumerate(rels) if rel in released]
            table = table.take(pa.array(keep, pa.int64()))
            rels = [rels[i] for i in keep]
            found.update(rels)
            n = table.num_rows
            uris = pa.array([dest.uri(f"{tree}/{rel}") for rel in rels], pa.string())
            run = pa.array([ws.batch_id] * n, pa.string())
            day = pa.array([logical_date] * n, pa.date32())
            for name, column in (("source_uri", uris), ("ingest_run_id", run),
                                 ("ingest_date", day)):
                table = table.set_column(table.schema.get_field_index(name), name, column)
            part = ws.folder("deid_metadata") / f"{plan.name}.load.parquet"
            pq.write_table(table, part)
            parts.append(str(part))
            rows += n
    missing = released - found
    if missing:
        raise VerificationError(f"{len(missing)} released file(s) have no metadata row from "
                                "their worker: rerun the batch")
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        deleted = warehouse.delete_in("deid_metadata", "source_uri",
                                      [dest.uri(f"{tree}/{rel}") for rel in release["removed"]])
        loaded = (warehouse.load_parquet("deid_metadata", parts, mode="merge",
                                         key_columns=("source_uri",)) if parts else 0)
        repaired = _repair_metadata(ws, warehouse, dest, tree, project, logical_date,
                                    vault_key)
    log.info("deid_metadata: %d row(s) from the workers, %d loaded, %d removed, %d read "
             "again", rows, loaded, deleted, repaired)
    return {"files": len(released), "rows_loaded": loaded, "rows_removed": deleted,
            "rows_read_again": repaired}


def _repair_metadata(ws: RunWorkspace, warehouse: Warehouse, dest: Store, tree: str,
                     project: str, logical_date: date, vault_key: bytes | None) -> int:
    """Rows for the released files that have none: the tree is what the ledger says, and
    ``deid_metadata`` must describe all of it. A batch whose load never finished (its run
    folder emptied by a rerun of the whole DAG run, which then finds nothing new) would
    otherwise leave its files out for good; they are read again here, once."""
    prefix = dest.uri(tree) + "/"
    try:
        released = ledger.released_paths(warehouse, project, vault_key)
    except VaultError as exc:
        raise ConfigError(f"deid_ledger: {exc} (pass the project's vault key)") from None
    have = set(warehouse.run_cohort(
        "SELECT source_uri FROM deid_metadata WHERE STARTS_WITH(source_uri, @prefix)",
        {"prefix": prefix}).column(0).to_pylist())
    missing = sorted(rel for rel in released if prefix + rel not in have)
    if not missing:
        return 0
    out = ws.folder("deid_metadata") / "read-again"
    shutil.rmtree(out, ignore_errors=True)
    summary = export_metadata([dest.uri(f"{tree}/{rel}") for rel in missing],
                              private_dir(out), run_id=ws.batch_id, ingest_date=logical_date,
                              state=ExportState(), workers=1, deidentified_only=True)
    if summary.errors:
        raise VerificationError(f"{len(summary.errors)} released file(s) of the tree cannot be "
                                "read for their metadata row")
    log.warning("deid_metadata: %d released file(s) had no row (a batch whose load did not "
                "finish): read again", len(missing))
    return warehouse.load_parquet("deid_metadata", [str(p) for p in summary.parts],
                                  mode="merge", key_columns=("source_uri",))


def _shard_files(ws: RunWorkspace, kind: str) -> list[Path]:
    """The planned shards' mapping (``kind="mapping"``) or error files.

    A shard that de-identified files must have its mapping: when the run folder was
    emptied (a finished run removes its identified files), loading nothing would erase
    the batch's rows, so this refuses and asks for a rerun of the whole batch instead.
    """
    found = []
    for plan in ws.shards():
        path = ws.mapping(plan) if kind == "mapping" else ws.errors(plan)
        done = ws.result("deidentified", plan)
        processed = ws.read_json(done)["processed"] if done.exists() else None
        if kind == "mapping" and not path.exists() and processed != 0:
            raise VerificationError(
                f"{plan.name}: no mapping in the run folder (a finished run removes it): "
                "rerun the whole batch, not this task alone")
        if path.exists():
            found.append(path)
    return found


def load_mapping(ws: RunWorkspace, settings: PipelineSettings,
                 vault_key: bytes | None = None) -> dict[str, Any]:
    """Load the shard mappings into restricted ``deid_mapping``, errors into ``deid_errors``.

    With ``vault_key``, the mapping's identifying columns (original UIDs, patient ID,
    accession, source path) reach the warehouse encrypted value by value
    (:mod:`dicom_deid.vault.columns`); its pseudonym columns stay in clear. A run that had
    nothing to release (no shard: its batch's instances are in the ledger already, say
    when it is run again) leaves the batch's rows as they are: they map files that are in
    the tree."""
    if not ws.shards():
        log.info("nothing released: the batch's mapping and error rows are left as they are")
        return {"mapping_rows": 0, "error_rows": 0}
    mappings = [str(p) for p in _shard_files(ws, "mapping")]
    if vault_key is not None:
        mappings = [str(_warehouse_mapping(ws, Path(p), vault_key)) for p in mappings]
    errors: list[dict[str, str]] = []
    for path in _shard_files(ws, "errors"):
        with open(path, newline="") as fh:
            errors += [{"run_id": ws.batch_id, "path": r["path"], "stage": r["stage"],
                        "kind": r["kind"], "reason": r["reason"]} for r in csv.DictReader(fh)]
    errors_file = ws.root / "errors.parquet"
    with _in_workspace(ws):
        pq.write_table(pa.Table.from_pylist(errors, schema=_ERRORS_SCHEMA), errors_file)
    # The batch's rows are replaced as a whole, and removed when there is nothing new.
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        run = {"run_id": ws.batch_id}
        rows = 0
        if mappings:
            rows = warehouse.load_parquet("deid_mapping", mappings, mode="replace_partition")
        else:
            warehouse.delete_partition("deid_mapping", run)
        if errors:
            warehouse.load_parquet("deid_errors", str(errors_file), mode="replace_partition")
        else:
            warehouse.delete_partition("deid_errors", run)
    log.info("deid_mapping: %d row(s); deid_errors: %d row(s)", rows, len(errors))
    return {"mapping_rows": rows, "error_rows": len(errors)}


def _warehouse_mapping(ws: RunWorkspace, path: Path, vault_key: bytes) -> Path:
    """A shard's mapping as the warehouse takes it: its identifying columns encrypted."""
    out = path.with_name(f"{path.stem}.columns.parquet")
    with _in_workspace(ws):
        pq.write_table(encrypt_columns(read_mapping(path, vault_key), vault_key), out)
        restrict(out)
    return out


def discard_staged(ws: RunWorkspace, settings: PipelineSettings) -> None:
    """Remove the batch's staged (unpublished, maybe unverified) outputs."""
    dest, tree = destination(settings)
    dest.delete_tree(f"{staging_root(tree)}/{ws.batch_id}")


def remove_identified(ws: RunWorkspace) -> list[str]:
    """Remove the run's files that hold original identifiers (cohort result, filter
    file, instance and shard lists, mapping and error files); what is left (plan,
    per-shard counts, report) holds none. Names removed, relative to the run folder."""
    removed = []
    for pattern in _IDENTIFIED:
        for path in sorted(ws.root.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.relative_to(ws.root).as_posix())
    return removed


def purge_earlier_runs(ws: RunWorkspace, project: str) -> int:
    """Remove the identified intermediates that ``project``'s earlier runs which did not
    succeed kept (so that clearing their failed task could rerun it): a later success
    has released what they selected, so nobody needs them any more. A project runs one
    DAG run at a time, so none of them is running. Runs whose folders changed."""
    pattern = re.compile(r"batch-\d{8}T\d{6}(\.\d{6})?Z-" + re.escape(project))
    purged = 0
    for folder in sorted(ws.work_dir.glob(f"batch-*-{project}")):
        if folder.name == ws.batch_id or not pattern.fullmatch(folder.name) \
                or folder.is_symlink() or not folder.is_dir():
            continue
        if remove_identified(RunWorkspace(ws.work_dir, folder.name)):
            purged += 1
    if purged:
        log.info("run %s: removed the identified files of %d earlier unsuccessful run(s)",
                 ws.batch_id, purged)
    return purged


def finish_run(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest | None, *,
    failed_tasks: Sequence[str], completed: bool, started_at: datetime, user: str,
    cohort: str = "", project: str = "", review: ReviewDecision | None = None,
) -> dict[str, Any]:
    """End a run, whatever happened: decide its outcome, clean up, record it.

    ``review``: the reviewer's answer, when the run had a review step and it answered; a
    rejection makes the run ``rejected`` (unless it failed otherwise), which discards its
    staged outputs and its review like any run that did not succeed.

    ``failed_tasks``: the tasks the orchestrator marked failed; ``completed``: the last
    work step succeeded (for a dry run: the last verification). A run that did not
    succeed loses its staged outputs (a leak must not stay on the destination's disk); a
    run that did loses its identified intermediates, and a dry run that did is recorded
    as ``dry_run`` and loses its staged outputs too (they are never published). Either
    way its one ``deid_runs`` row is written (:func:`record_run`). ``req`` is None when
    the run's params or project file were invalid (``cohort``, ``project`` name it then).
    """
    with _in_workspace(ws):
        verified = [ws.read_json(p) for p in sorted((ws.root / "verified").glob("*.json"))]
        outcome = run_record.decide_outcome(
            failed_tasks, completed, run_record.read_failures(ws.root), verified)
        if outcome.status == SUCCESS and req is not None and req.dry_run:
            outcome = RunOutcome(DRY_RUN, "dry run: nothing published or loaded")
        if review is not None and not review.approved and not failed_tasks \
                and outcome.status != run_record.LEAK:
            # the tasks after the review were skipped: not a failure, a refusal
            outcome = RunOutcome(REJECTED, f"rejected by {review.reviewer}"
                                 + (f": {review.reason}" if review.reason else ""))
        done = outcome.status in (SUCCESS, DRY_RUN)
        rerun = ws.is_rerun_of_release()
        if not done:
            discard_staged(ws, settings)
            if not rerun:
                shutil.rmtree(ws.review_root, ignore_errors=True)
        if rerun:  # the release's row and report stand; the rerun's own report beside them
            result = _rerun_report(ws, outcome, _policy(req))
        else:
            result = record_run(ws, settings, req, outcome=outcome, started_at=started_at,
                                user=user, cohort=cohort, project=project,
                                reviewer=review.reviewer if review else None)
        if done:
            discard_staged(ws, settings)  # publish removed it; an interrupted publish may not
            result["removed"] = len(remove_identified(ws))
            if req is not None and outcome.status == SUCCESS:
                result["purged_runs"] = purge_earlier_runs(ws, req.project)
    log.log(logging.INFO if done else logging.ERROR,
            "run %s: %s%s", ws.batch_id, outcome.status,
            f" ({outcome.reason})" if outcome.reason else "")
    return result


def _effective_fingerprint(req: RunRequest | None) -> str | None:
    """The config fingerprint, or None when the config itself is what failed."""
    if req is None:
        return None
    try:
        return req.config_fingerprint()
    except (ConfigError, OSError) as exc:
        log.warning("no config fingerprint for the run record: %s", type(exc).__name__)
        return None


def _policy(req: RunRequest | None) -> dict[str, Any] | None:
    """What the run's policy did (:func:`~.run_record.policy_record`), or None when the
    run has no request or its configuration itself is what failed."""
    if req is None:
        return None
    try:
        return run_record.policy_record(req.deid_config(), req.exceptions, req.review)
    except (ConfigError, OSError, ValueError) as exc:
        log.warning("no policy for the run record: %s", type(exc).__name__)
        return None


def record_run(
    ws: RunWorkspace, settings: PipelineSettings, req: RunRequest | None, *,
    outcome: RunOutcome, started_at: datetime, user: str, cohort: str = "", project: str = "",
    reviewer: str | None = None,
) -> dict[str, Any]:
    """Upsert the run's one ``deid_runs`` row and write a PHI-free report next to the run."""
    results = [ws.read_json(p) for p in sorted((ws.root / "deidentified").glob("shard-*.json"))]
    totals = {k: sum(r[k] for r in results) for k in ("processed", "failed", "skipped")}
    key_ids = sorted({r["key_id"] for r in results if r.get("key_id")})
    row = {
        "run_id": ws.batch_id, "started_at": started_at, "finished_at": datetime.now(UTC),
        "user": user, "config_sha256": _effective_fingerprint(req),
        "cohort": Path(req.cohort if req else cohort).name, "status": outcome.status,
        **totals, "reason": outcome.reason, "key_id": ",".join(key_ids) or None,
        "engine": __version__, "project": (req.project if req else project) or None,
        "reviewer": reviewer,
    }
    policy = _policy(req)
    row.update(policy or dict.fromkeys(run_record.POLICY_COLUMNS))
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        warehouse.insert_rows("deid_runs", [row], key_columns=("run_id",))
    _write_report(ws, results, totals, outcome, policy=policy)
    log.info("run %s: %s", ws.batch_id, ", ".join(f"{k} {v}" for k, v in totals.items()))
    return {"run_id": ws.batch_id, "status": outcome.status, "reason": outcome.reason,
            **totals, "report": str(ws.root / "report.md")}


def _rerun_report(ws: RunWorkspace, outcome: RunOutcome, policy: dict[str, Any] | None
                  ) -> dict[str, Any]:
    """Say what the rerun of a released batch did (nothing more released) without
    touching the release's record; the result :func:`record_run` would return. It
    processed nothing (:func:`resolve_instances` selected nothing): the per-shard counts
    in the folder are the release's."""
    totals = dict.fromkeys(("processed", "failed", "skipped"), 0)
    _write_report(ws, [], totals, outcome, name="rerun-report.md", rerun=True, policy=policy)
    log.warning("run %s: a rerun of a released batch (%s); the release's deid_runs row, "
                "report and manifest are unchanged", ws.batch_id, outcome.status)
    return {"run_id": ws.batch_id, "status": outcome.status, "reason": outcome.reason,
            **totals, "report": str(ws.root / "rerun-report.md")}


def _write_report(ws: RunWorkspace, results: list[dict[str, Any]], totals: dict[str, int],
                  outcome: RunOutcome, *, name: str = "report.md", rerun: bool = False,
                  policy: dict[str, Any] | None = None) -> None:
    lines = [f"# De-identification run {ws.batch_id}" + (" (rerun)" if rerun else ""), "",
             f"Status: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""),
             "", *run_record.policy_lines(policy)]
    if rerun:
        lines += ["The batch was released already: this rerun released nothing more, and "
                  "the release's report (report.md), deid_runs row and manifest are "
                  "unchanged.", ""]
    lines += [
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
    plan = ws.read_json(ws.release_plan) if ws.release_plan.exists() else {}
    selected, release = plan.get("selected"), plan.get("release")
    if selected:
        lines.append(
            f"Selected: {selected['to_release']} of the cohort's {selected['cohort_instances']}"
            f" instance(s) (new {selected['new']}, changed {selected['changed']}, released "
            f"again under a new config or key {selected['policy']}); "
            f"{selected['unchanged']} released before, unchanged.")
        if selected.get("waiting"):
            lines.append(f"{selected['waiting']} new or changed instance(s) wait for the "
                         "next batch (this one was released already).")
        if selected.get("held_back"):
            lines.append(f"{selected['held_back']} new or changed instance(s) held back by "
                         "the project's `hold_back` list: not released (remove an entry "
                         "to release its file).")
        if selected["policy"]:
            lines.append("The project's config or key changed since its last release: "
                         "everything is released again, under the new pseudonyms.")
    if release:
        lines.append(f"Released: {len(release['added'])} added, {len(release['replaced'])} "
                     f"replaced, {len(release['removed'])} removed, "
                     f"{len(release['withdrawn'])} kept out as withdrawn earlier.")
    if kinds:
        lines.append("Failures by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(
            kinds.items())) + " (paths in the deid_errors table, restricted).")
    found = [line for path in sorted((ws.root / "verified").glob("*.json"))
             for line in ws.read_json(path).get("problems", [])] if not rerun else []
    if found:
        lines += ["", "Found by the verification (outputs by their pseudonymous paths; "
                  "nothing was released). A source value in a kept attribute: fix the "
                  "source, declare the attribute in the project's `exceptions` if the "
                  "project means to keep it, or add the source's sha256 to the project's "
                  "`hold_back` list to release the rest without it.", ""]
        lines += [f"- {line}" for line in found]
    write_atomic(ws.root / name, ("\n".join(lines) + "\n").encode())
    restrict(ws.root / name)
