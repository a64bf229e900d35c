"""The tasks of the two DAGs: each reads its run's context and calls one engine step.

XCom carries only what the steps return: counts, shard numbers, paths of the run's
own files. The key is fetched inside the de-identification task and never returned.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, Context, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dicom_deid.errors import ConfigError, VerificationError
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunRequest, RunWorkspace, batch_id_for
from dicom_deid.pipeline.interval_export import export_interval, export_parts, load_export
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.pipeline.shards import ShardLimits

from .hooks import DEFAULT_KEY_CONN_ID, DeidKeyHook

log = logging.getLogger(__name__)

#: Updated whenever new instances land in ``dicom_metadata``; schedules de-identification.
DICOM_METADATA = Asset(name="dicom_metadata", uri="dicom-deid://warehouse/dicom_metadata")

# -- the metadata export DAG -------------------------------------------------------------


def _interval() -> tuple[datetime, datetime]:
    ctx = get_current_context()
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is None or end is None or start >= end:
        raise AirflowFailException("this task needs a DAG run with a non-empty data interval")
    return start, end


@task
def export_landing() -> dict[str, Any]:
    """Export the metadata of the landing files that arrived in this data interval."""
    start, end = _interval()
    return export_interval(PipelineSettings.from_env(), start, end).as_dict()


@task(outlets=[DICOM_METADATA])
def load_metadata(export: dict[str, Any]) -> dict[str, Any]:
    """Merge the interval's Parquet into ``dicom_metadata``; skipped (no Asset event)
    when the interval brought nothing."""
    settings = PipelineSettings.from_env()
    out = settings.metadata_dir / "dicom_metadata"
    if not export_parts(out, export["run_id"]):
        raise AirflowSkipException("no new instances in this interval")
    rows = load_export(settings.warehouse, out, export["run_id"], "dicom_metadata")
    log.info("dicom_metadata: %d row(s) merged for interval %s", rows, export["run_id"])
    return {"run_id": export["run_id"], "rows_loaded": rows}


# -- the de-identification DAG -----------------------------------------------------------


def _run() -> tuple[Context, RunWorkspace, PipelineSettings, RunRequest]:
    """This DAG run's context, workspace, settings (params override env) and request."""
    ctx = get_current_context()
    params = ctx["params"]
    settings = PipelineSettings.from_env().override(destination=params.get("destination"))
    ws = RunWorkspace(settings.work_dir, batch_id_for(_when(ctx)))
    try:
        req = RunRequest(
            cohort=params["cohort"],
            cohort_params=dict(params.get("cohort_params") or {}),
            config=params.get("config") or None,
            options=tuple(params.get("options") or ()),
            priority=params.get("priority") or "routine",
        )
    except ConfigError as exc:
        raise AirflowFailException(f"invalid params: {exc}") from None
    return ctx, ws, settings, req


def _when(ctx: Context) -> datetime:
    """The run's date: its logical date, or when it was queued (asset/manual runs)."""
    dag_run = ctx.get("dag_run")
    moment = ctx.get("logical_date") or getattr(dag_run, "run_after", None)
    return moment or datetime.now(UTC)


@task
def run_cohort() -> dict[str, Any]:
    """Run the cohort SQL on the warehouse."""
    _, ws, settings, req = _run()
    return deid_steps.run_cohort(ws, settings, req)


@task
def write_filter_file() -> dict[str, Any]:
    """Write the cohort as a filter file, kept with the run."""
    _, ws, _, _ = _run()
    return deid_steps.write_filter_file(ws)


@task
def resolve_instances() -> dict[str, Any]:
    """Resolve the filter file to exact instances in ``dicom_metadata``."""
    _, ws, settings, _ = _run()
    return deid_steps.resolve_instances(ws, settings)


@task
def plan_shards() -> list[dict[str, int]]:
    """Cut the instances into shards of whole series; each becomes one mapped task."""
    ctx, ws, _, _ = _run()
    params = ctx["params"]
    limits = ShardLimits(
        max_files=int(params.get("shard_max_files") or ShardLimits.max_files),
        max_bytes=int(params.get("shard_max_bytes") or ShardLimits.max_bytes),
        max_shards=int(params.get("max_shards") or ShardLimits.max_shards),
    )
    return deid_steps.plan_run_shards(ws, limits)


@task(retries=2, map_index_template="{{ shard_label }}")
def deidentify_shard(shard: dict[str, int]) -> dict[str, Any]:
    """De-identify one shard into the staging area."""
    ctx, ws, settings, req = _run()
    # read by map_index_template (a key of our own in the context, as Airflow documents)
    ctx["shard_label"] = f"shard {shard['shard']} ({shard['files']} files)"  # type: ignore[typeddict-unknown-key]
    key_conn_id = ctx["params"].get("key_conn_id") or DEFAULT_KEY_CONN_ID
    key = DeidKeyHook(key_conn_id).get_key()
    return deid_steps.deidentify_shard(ws, settings, req, shard["shard"], key)


@task(retries=0, map_index_template="{{ shard_label }}")
def verify_shard(result: dict[str, Any]) -> dict[str, Any]:
    """Fail the run if a staged output holds an original identifier or is not valid."""
    ctx, ws, settings, req = _run()
    ctx["shard_label"] = f"shard {result['shard']}"  # type: ignore[typeddict-unknown-key]
    try:
        return deid_steps.verify_shard(ws, settings, req, result["shard"])
    except VerificationError as exc:
        raise AirflowFailException(str(exc)) from None


# From here on, "none_failed": an empty cohort (no shards, mapped tasks skipped) still
# publishes an empty batch and records the run; a failed verify stops everything.
@task(retries=0, trigger_rule="none_failed")
def publish() -> dict[str, Any]:
    """Publish the verified batch to the destination in one swap."""
    _, ws, settings, _ = _run()
    try:
        return deid_steps.publish(ws, settings)
    except VerificationError as exc:
        raise AirflowFailException(str(exc)) from None


@task(trigger_rule="none_failed")
def load_deid_metadata() -> dict[str, Any]:
    """Export the published files' metadata and load ``deid_metadata``."""
    ctx, ws, settings, _ = _run()
    return deid_steps.load_deid_metadata(ws, settings, _when(ctx).date())


@task(trigger_rule="none_failed")
def load_mapping() -> dict[str, Any]:
    """Load the original<->pseudonym mapping (restricted) and the error list."""
    _, ws, settings, _ = _run()
    return deid_steps.load_mapping(ws, settings)


@task(trigger_rule="none_failed")
def write_manifest() -> dict[str, Any]:
    """Write the batch's manifest.json next to its files."""
    ctx, ws, settings, req = _run()
    return deid_steps.write_manifest(ws, settings, req, _when(ctx))


@task(trigger_rule="none_failed")
def record_run() -> dict[str, Any]:
    """Record the run in ``deid_runs`` and write its report."""
    ctx, ws, settings, req = _run()
    dag_run = ctx.get("dag_run")
    started = getattr(dag_run, "start_date", None) or datetime.now(UTC)
    return deid_steps.record_run(ws, settings, req, started_at=started,
                               user=f"airflow:{ctx['dag'].dag_id}")
