"""The tasks of the DAGs: each reads its run's context and calls one engine step.

A de-identification task finds its project by its DAG's id (``dicom_deid__<name>``) and
reads the project file again (the version-controlled file is the source of truth, not
what the DAG was parsed from); the trigger's params only narrow the run.

XCom carries only what the steps return: counts, shard numbers, paths of the run's
own files. The key is fetched inside the de-identification task and never returned.
A failing step leaves a note (task and exception type) in the run folder; the
``finish_run`` teardown reads the notes and the task states, and records the run.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from airflow.sdk import Asset, BaseHook, Context, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dicom_deid.errors import ConfigError, DicomDeidError, KeyConfigError
from dicom_deid.pipeline.shards import ShardLimits

if TYPE_CHECKING:
    from dicom_deid.pipeline import run_record
    from dicom_deid.pipeline.deid_steps import RunWorkspace
    from dicom_deid.pipeline.projects import Project, RunRequest
    from dicom_deid.pipeline.settings import PipelineSettings

# The engine (pydicom, pyarrow, DuckDB...) is imported by the task that runs, not here:
# Airflow's DAG processor parses each DAG file in a fresh process, and what a DAG file
# imports is paid on every parse (0.55-0.84 s of CPU a file when this module imported it
# all; see BENCHMARKS.md).

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Updated whenever new instances land in ``dicom_metadata``; schedules de-identification.
DICOM_METADATA = Asset(name="dicom_metadata", uri="dicom-deid://warehouse/dicom_metadata")
#: The de-identification DAG's last work step: the run succeeded if it did.
LAST_STEP = "load_deid_metadata"


class RunNotSuccessful(AirflowFailException):
    """The teardown recorded a run that failed or leaked; raised so the DAG run is marked
    failed. The task that failed was reported already (see :func:`notify_failure`)."""


@functools.cache  # once a process
def _exit_frozen() -> None:
    """Freeze the heap when this process exits, as the ``dicom-deid`` command does (see
    :func:`dicom_deid.cli.main.run`). Airflow ends a task's own process with ``os._exit``
    (no collection, no exit handler); a run in the scheduling process itself (``airflow
    dags test``, ``dag.test()``) instead ends with the interpreter's full collections over
    Airflow's ~700,000 objects: 1.3-2.0 s, nothing in them to finalize."""
    atexit.register(gc.freeze)


def _settings() -> PipelineSettings:
    """Settings from the workers' environment, then this run's params; a bad setting
    fails the task without retries (retrying cannot fix it)."""
    _exit_frozen()
    from dicom_deid.pipeline.settings import PipelineSettings

    from .google_conn import apply_google_connection, uses_google
    from .hooks import apply_restricted_key

    try:
        settings = PipelineSettings.from_env()
        if uses_google(settings.landing, settings.destination, settings.warehouse):
            log.info("Google Cloud: %s", apply_google_connection())
        if not settings.warehouse or settings.warehouse.startswith("duckdb://"):
            apply_restricted_key()
    except (ConfigError, KeyConfigError) as exc:
        raise AirflowFailException(f"invalid settings: {exc}") from exc
    return settings


# -- the metadata export DAG -------------------------------------------------------------


def _interval() -> tuple[datetime, datetime]:
    ctx = get_current_context()
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is None or end is None or start >= end:
        raise AirflowFailException("this task needs a DAG run with a non-empty data interval")
    return start, end


@task
def export_landing() -> dict[str, Any]:
    """Export, as this data interval's run, the metadata of every landing file modified
    before the interval's end and not exported yet (late arrivals included) or changed."""
    from dicom_deid.pipeline.interval_export import export_interval

    start, end = _interval()
    return export_interval(_settings(), start, end).as_dict()


@task(outlets=[DICOM_METADATA])
def load_metadata(export: dict[str, Any]) -> dict[str, Any]:
    """Merge the interval's Parquet into ``dicom_metadata``; skipped (no Asset event)
    when the interval brought nothing."""
    from dicom_deid.pipeline.interval_export import export_parts, load_export
    from dicom_deid.warehouse.restricted_file import export_key

    settings = _settings()
    out = settings.metadata_dir / "dicom_metadata"
    parts = export_parts(out, export["run_id"], export_key(settings.warehouse, "dicom_metadata"))
    if not parts:
        raise AirflowSkipException("no new instances in this interval")
    rows = load_export(settings.warehouse, out, export["run_id"], "dicom_metadata", parts)
    log.info("dicom_metadata: %d row(s) merged for interval %s", rows, export["run_id"])
    return {"run_id": export["run_id"], "rows_loaded": rows}


# -- the de-identification DAG -----------------------------------------------------------


def _label(ti: Any) -> str:
    """A task instance as reports name it: ``task_id`` or ``task_id[map_index]``."""
    index = getattr(ti, "map_index", None)
    return f"{ti.task_id}[{index}]" if index is not None and index >= 0 else str(ti.task_id)


def _project_name(ctx: Context) -> str:
    """The project this DAG runs, from its id (which no trigger can change)."""
    from dicom_deid.pipeline.projects import project_name

    try:
        return project_name(ctx["dag"].dag_id)
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from exc


def _workspace(ctx: Context, settings: PipelineSettings) -> RunWorkspace:
    from dicom_deid.pipeline.deid_steps import RunWorkspace, batch_id_for

    return RunWorkspace(settings.work_dir, batch_id_for(_when(ctx), _project_name(ctx)))


def _projects_folder(ctx: Context) -> Path:
    """``$DICOM_DEID_PROJECTS_DIR``, else ``projects/`` beside the DAG file's folder (as
    the factory found it)."""
    from dicom_deid.pipeline.projects import projects_dir

    return projects_dir(Path(ctx["dag"].fileloc).resolve().parent.parent / "projects")


def _project(ctx: Context) -> Project:
    """The project file of this DAG, read now: ``$DICOM_DEID_PROJECTS_DIR``, else
    ``projects/`` beside the DAG file's folder (as the factory found it)."""
    from dicom_deid.pipeline.projects import load_project

    try:
        folder = _projects_folder(ctx)
        return load_project(folder / f"{_project_name(ctx)}.yaml")
    except ConfigError as exc:
        raise AirflowFailException(f"invalid project: {exc}") from exc


def _project_settings(settings: PipelineSettings, project: Project) -> PipelineSettings:
    """The deployment's settings with the project's destination."""
    return dataclasses.replace(settings,
                               destination=project.destination_for(settings.destination))


TRIGGER_DEFAULTS: dict[str, Any] = {
    "start_date": None, "end_date": None, "dry_run": False, "priority": "routine",
    "shard_max_files": ShardLimits.max_files, "shard_max_bytes": ShardLimits.max_bytes,
    "max_shards": ShardLimits.max_shards,
}
"""What a trigger may set, and its value when the trigger does not: all of it narrows a
run (the DAGs declare these as params, see :mod:`.dag_factory`)."""
RUN_PARAMS = frozenset(TRIGGER_DEFAULTS)


def _trigger(ctx: Context) -> dict[str, Any]:
    """This run's narrowing params: the trigger's ``conf`` (Airflow validated it against
    the DAG's params), else :data:`TRIGGER_DEFAULTS`. Read from the run itself, not from
    the merged ``params``: Airflow's merge updates the DAG's Param objects in place, so
    in one process (``dag.test()``) a run would inherit the previous run's values."""
    conf = getattr(ctx.get("dag_run"), "conf", None) or {}
    return {key: conf.get(key, default) for key, default in TRIGGER_DEFAULTS.items()}


def _request(ctx: Context, project: Project) -> RunRequest:
    """The project's run request narrowed by this run's params (a date window inside the
    project's, a dry run, a priority). A trigger ``conf`` naming anything else -- the
    cohort, options, a config, a destination, a key connection -- fails the run, as does
    a window wider than the project's: a trigger may narrow a run, never weaken it."""
    conf = getattr(ctx.get("dag_run"), "conf", None) or {}
    foreign = sorted(set(conf) - RUN_PARAMS)
    params = _trigger(ctx)
    try:
        if foreign:
            raise ConfigError(
                f"{', '.join(foreign)} cannot be set when a run is triggered: the cohort, "
                f"policy, key and destination are project {project.name}'s (its file, "
                "under version control); a trigger may set only "
                f"{', '.join(sorted(RUN_PARAMS))}")
        return project.request(start_date=params.get("start_date"),
                               end_date=params.get("end_date"),
                               dry_run=bool(params.get("dry_run")),
                               priority=params.get("priority") or "routine")
    except ConfigError as exc:
        raise AirflowFailException(f"invalid params: {exc}") from exc


def _run() -> tuple[Context, RunWorkspace, PipelineSettings, RunRequest]:
    """This DAG run's context, workspace, settings (the deployment's, with the project's
    destination) and request (the project's, narrowed by the trigger)."""
    ctx = get_current_context()
    settings = _settings()
    project = _project(ctx)
    return (ctx, _workspace(ctx, settings), _project_settings(settings, project),
            _request(ctx, project))


def run_settings(ctx: Context) -> PipelineSettings:
    """The deployment's settings with this DAG's project's destination."""
    return _project_settings(_settings(), _project(ctx))


def run_workspace(ctx: Context) -> tuple[RunWorkspace, RunRequest]:
    """The workspace and request of the DAG run ``ctx`` belongs to (for operators of
    this package that are not ``@task`` functions: the review step)."""
    settings = _settings()
    return _workspace(ctx, settings), _request(ctx, _project(ctx))


def _vault_key(project: Project) -> bytes:
    """The project's vault key, from its connection (never returned to XCom): it seals the
    mapping the workers write and opens it for the steps after. A project without one
    fails without retries."""
    from .hooks import DeidKeyHook

    conn_id = project.vault_key_conn_id
    try:
        return DeidKeyHook(conn_id).get_key()
    except Exception as exc:  # a missing connection, or not a key
        raise AirflowFailException(
            f"no vault key in connection {conn_id!r} ({type(exc).__name__}): create one "
            "with `dicom-deid keygen --vault FILE` and store it there; the mapping holds "
            "original identifiers and is sealed under it") from None


def _keys(ctx: Context) -> tuple[bytes, bytes]:
    """The project's pseudonym key and vault key, for the step that writes the mapping:
    connections holding the same key fail it (the two keys exist so that whoever makes
    pseudonyms cannot read the mapping)."""
    from .hooks import DeidKeyHook

    project = _project(ctx)
    key, vault_key = DeidKeyHook(project.key_conn_id).get_key(), _vault_key(project)
    if vault_key == key:
        raise AirflowFailException(
            f"connections {project.key_conn_id!r} and {project.vault_key_conn_id!r} hold the "
            "same key: the vault key must be another one")
    return key, vault_key


def _skip_if_dry_run(req: RunRequest) -> None:
    """A dry run de-identifies and verifies only: the publishing and loading tasks skip."""
    if req.dry_run:
        raise AirflowSkipException("dry run: nothing is published or loaded")


def _when(ctx: Context) -> datetime:
    """The run's date: its logical date, or when it was queued (asset/manual runs)."""
    dag_run = ctx.get("dag_run")
    moment = ctx.get("logical_date") or getattr(dag_run, "run_after", None)
    return moment or datetime.now(UTC)


def _noted(step: Callable[P, R]) -> Callable[P, R]:
    """Leave a note in the run folder when the task fails (its id and the exception's
    type, for the run record), and take it back when a later try succeeds."""

    @functools.wraps(step)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from dicom_deid.pipeline import run_record

        ctx = get_current_context()
        label = _label(ctx["ti"])
        try:
            result = step(*args, **kwargs)
        except AirflowSkipException:
            raise
        except BaseException as exc:
            _note(ctx, label, exc)
            raise
        root = _workspace(ctx, _settings()).root
        run_record.clear_failure(root, label)
        return result

    return wrapper


def _note(ctx: Context, label: str, exc: BaseException) -> None:
    from dicom_deid.pipeline import run_record

    try:
        ws = _workspace(ctx, _settings())
        ws.prepare()  # a failure before the run folder existed is noted too
        run_record.note_failure(ws.root, label, _cause(exc))
    except Exception as err:  # the task's own failure is what matters; say why no note
        log.warning("could not note the failure of %s: %s", label, type(err).__name__)


def _cause(exc: BaseException) -> BaseException:
    """The engine's error behind Airflow's fail-without-retry wrapper."""
    if isinstance(exc, AirflowFailException) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


@task
@_noted
def run_cohort() -> dict[str, Any]:
    """Start the run: run the cohort SQL on the warehouse."""
    from dicom_deid.pipeline import deid_steps

    _, ws, settings, req = _run()
    return deid_steps.run_cohort(ws, settings, req)


@task
@_noted
def write_filter_file() -> dict[str, Any]:
    """Write the cohort as a filter file, kept with the run."""
    from dicom_deid.pipeline import deid_steps

    _, ws, _, _ = _run()
    return deid_steps.write_filter_file(ws)


@task
@_noted
def resolve_instances() -> dict[str, Any]:
    """The filter file's instances in ``dicom_metadata`` that the project has not
    released yet under this config and key (the ledger)."""
    from dicom_deid.pipeline import deid_steps, run_record

    from .hooks import DeidKeyHook

    ctx, ws, settings, req = _run()
    key = DeidKeyHook(_project(ctx).key_conn_id).get_key()
    return deid_steps.resolve_instances(ws, settings, req, run_record.key_id(key))


@task
@_noted
def plan_shards() -> list[dict[str, int]]:
    """Cut the instances into shards of whole series; each becomes one mapped task."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, _ = _run()
    params = _trigger(ctx)
    limits = ShardLimits(
        max_files=int(params.get("shard_max_files") or ShardLimits.max_files),
        max_bytes=int(params.get("shard_max_bytes") or ShardLimits.max_bytes),
        max_shards=int(params.get("max_shards") or ShardLimits.max_shards),
    )
    return deid_steps.plan_run_shards(ws, limits, settings)


@task(retries=2, map_index_template="{{ shard_label }}")
@_noted
def deidentify_shard(shard: dict[str, int]) -> dict[str, Any]:
    """De-identify one shard into the staging area."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, req = _run()
    # read by map_index_template (a key of our own in the context, as Airflow documents)
    ctx["shard_label"] = f"shard {shard['shard']} ({shard['files']} files)"  # type: ignore[typeddict-unknown-key]
    key, vault_key = _keys(ctx)
    return deid_steps.deidentify_shard(ws, settings, req, shard["shard"], key, vault_key)


@task(retries=0, map_index_template="{{ shard_label }}")
@_noted
def verify_shard(result: dict[str, Any]) -> dict[str, Any]:
    """Fail the run if a staged output holds an original identifier (LeakError) or is
    not valid (VerificationError). No retries: the same outputs would fail again."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, req = _run()
    ctx["shard_label"] = f"shard {result['shard']}"  # type: ignore[typeddict-unknown-key]
    return deid_steps.verify_shard(ws, settings, req, result["shard"], _vault_key(_project(ctx)))


# From here on, "none_failed": an empty cohort (no shards, mapped tasks skipped) still
# publishes an empty batch and records the run; a failed verify stops everything.
@task(retries=0, trigger_rule="none_failed")
@_noted
def publish() -> dict[str, Any]:
    """Release the verified batch into the project's tree in one step, with its manifest,
    and record it in the ledger (skipped: dry run)."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, req = _run()
    _skip_if_dry_run(req)
    deid_steps.check_pinned(ws, req, settings)  # the policy every shard was made under
    return deid_steps.publish(ws, settings, req, _when(ctx), _vault_key(_project(ctx)))


@task(trigger_rule="none_failed")
@_noted
def load_deid_metadata() -> dict[str, Any]:
    """Export the published files' metadata and load ``deid_metadata``."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, req = _run()
    _skip_if_dry_run(req)
    return deid_steps.load_deid_metadata(ws, settings, _when(ctx).date(), req.project,
                                         _vault_key(_project(ctx)))


@task(trigger_rule="none_failed")
@_noted
def load_mapping() -> dict[str, Any]:
    """Load the original<->pseudonym mapping (restricted) and the error list."""
    from dicom_deid.pipeline import deid_steps

    ctx, ws, settings, req = _run()
    _skip_if_dry_run(req)
    return deid_steps.load_mapping(ws, settings, _vault_key(_project(ctx)))


def _task_states(ctx: Context) -> dict[str, str]:
    """Label -> state of every task instance of this DAG run (as the API reports them:
    ``task_id`` or ``task_id_<map_index>``, relabelled ``task_id[map_index]``)."""
    dag_run = ctx["dag_run"]
    states = ctx["ti"].get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id])
    task_ids = sorted(ctx["dag"].task_ids, key=len, reverse=True)
    labelled = {}
    for key, state in (states.get(dag_run.run_id) or {}).items():
        label = key
        for task_id in task_ids:
            rest = key[len(task_id) + 1:]
            if key.startswith(f"{task_id}_") and rest.isdigit():
                label = f"{task_id}[{rest}]"
                break
        labelled[label] = str(getattr(state, "value", state))
    return labelled


@task
def finish_run() -> dict[str, Any]:
    """Whatever happened: record the run in ``deid_runs`` (success, failed, leak,
    dry_run or rejected, the project, the effective config fingerprint, the key id, the
    triggering user, the reviewer), remove the staged outputs (and the review) of a run
    that failed or was rejected or a dry run, and the identified intermediates of a
    successful one. The only task that writes ``deid_runs``. Fails if
    the run did.

    The DAG makes it a teardown (``.as_teardown(on_failure_fail_dagrun=True)``: run
    whatever the other tasks' states, and decide the DAG run's state). Not with the
    ``@teardown`` decorator: that one can be called once per process, and a DAG file
    is parsed again in the same process by ``dag.test()``."""
    from dicom_deid.pipeline import deid_steps, run_record
    from dicom_deid.pipeline.projects import default_destination

    ctx = get_current_context()
    deployment = _settings()
    ws = _workspace(ctx, deployment)
    name = _project_name(ctx)
    project: Project | None = None
    req: RunRequest | None = None
    try:  # recorded with the failure a bad project file or bad params caused, if any
        project = _project(ctx)
        req = _request(ctx, project)
    except AirflowFailException:
        pass
    settings = dataclasses.replace(deployment, destination=(
        project.destination_for(deployment.destination) if project
        else default_destination(deployment.destination, name)))
    states = _task_states(ctx)
    own = _label(ctx["ti"])
    failed = sorted(label for label, state in states.items()
                    if state == "failed" and label != own)
    dag_run = ctx["dag_run"]
    # A cohort that selects nothing plans no shard: the mapped tasks and all after them
    # are skipped, and the run is done (a night with nothing new is not a failure).
    nothing_to_do = (states.get("plan_shards") == "success" and ws.shard_plan.exists()
                     and not ws.shards())
    completed = (_all_verified(states, ws) if req is not None and req.dry_run
                 else states.get(LAST_STEP) == "success")
    result = deid_steps.finish_run(
        ws, settings, req, failed_tasks=failed, completed=completed or nothing_to_do,
        started_at=dag_run.start_date or datetime.now(UTC),
        user=run_record.triggering_user(dag_run.triggering_user_name),
        cohort=project.cohort if project else "", project=name,
        review=_review_decision(ctx, states),
    )
    if result["status"] not in (run_record.SUCCESS, run_record.DRY_RUN):
        raise RunNotSuccessful(f"run {ws.batch_id} recorded as {result['status']}: "
                               f"{result['reason']}")
    return result


def _review_decision(ctx: Context, states: dict[str, str]) -> run_record.ReviewDecision | None:
    """The reviewer's answer, when this DAG has a review step that got one."""
    from .review_answer import ANSWER_KEY, REVIEW_TASK, decision_of

    if states.get(REVIEW_TASK) != "success":
        return None
    return decision_of(ctx["ti"].xcom_pull(task_ids=REVIEW_TASK, key=ANSWER_KEY))


def _all_verified(states: dict[str, str], ws: RunWorkspace) -> bool:
    """A dry run's last step: every planned shard's verification succeeded."""
    if not ws.shard_plan.exists():
        return False
    verified = [s for label, s in states.items() if label.startswith("verify_shard[")]
    return len(verified) == len(ws.shards()) and all(s == "success" for s in verified)


# -- failure notices ---------------------------------------------------------------------


def notify_failure(context: Context) -> None:
    """``on_failure_callback``: log one PHI-free line (run, task, exception type) and,
    when ``$DICOM_DEID_NOTIFY_CONN_ID`` names a connection, post it to the connection's
    host as ``{"text": ...}``. Never raises: a notice must not hide the failure."""
    from dicom_deid.pipeline import notify
    from dicom_deid.pipeline.settings import notify_conn_id

    error = context.get("exception")
    if isinstance(error, RunNotSuccessful):
        return  # the teardown repeating a failure its task already reported
    ti = context["ti"]
    dag_run = context.get("dag_run")
    text = notify.failure_text(str(ti.dag_id), str(getattr(dag_run, "run_id", ti.run_id)),
                               _label(ti), notify.failure_reason(error))
    log.error("%s", text)
    conn_id = notify_conn_id()
    if not conn_id:
        return
    try:
        conn = BaseHook.get_connection(conn_id)
        url = notify.webhook_url(conn.conn_type, conn.host, conn.port, conn.schema)
        status = notify.post_webhook(url, text)
    except Exception as exc:
        log.warning("failure notice not posted to connection %r: %s", conn_id,
                    type(exc).__name__)
        return
    log.info("failure notice posted to connection %r (HTTP %d)", conn_id, status)


def _exactly(conf: dict[str, Any], names: tuple[str, ...], what: str,
             missing: list[str]) -> None:
    """Fail a manual DAG's run whose trigger lacks one of ``names`` or gives another."""
    foreign = sorted(set(conf) - set(names))
    if missing or foreign:
        raise AirflowFailException(
            f"{what} is triggered with exactly {', '.join(names)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not accepted: {', '.join(foreign)}" if foreign else ""))


# -- the withdrawal DAG ------------------------------------------------------------------

#: What a withdrawal's trigger gives, all of it required (the DAG's params).
WITHDRAW_PARAMS = ("project", "level", "value", "reason")


def withdraw_params() -> dict[str, Any]:
    """The withdrawal DAG's params: no defaults, so a trigger must give each (a fresh set
    per DAG). Airflow checks their form; the engine checks them again and the reason for
    PHI (:func:`dicom_deid.pipeline.withdraw.check_reason`)."""
    from airflow.sdk import Param

    from dicom_deid.pipeline.withdrawal_form import LEVELS, REASON_MAX, VALUE_MAX

    return {
        "project": Param(type="string", pattern="^[a-z0-9_]+$", title="Project",
                         description="The project whose research tree to withdraw from "
                         "(its file projects/<name>.yaml)."),
        "level": Param(type="string", enum=list(LEVELS), title="Level",
                       description="What the value names: a patient, study, series or "
                       "instance."),
        "value": Param(type="string", minLength=1, maxLength=VALUE_MAX, title="Value",
                       description="Its PSEUDONYMOUS identifier, as the research tree and "
                       "deid_metadata show it (PatientID, or Study/Series/SOP Instance UID)."),
        "reason": Param(type="string", minLength=1, maxLength=REASON_MAX, title="Reason",
                        description="Why, PHI-free: no names, dates, IDs or UIDs (a reason "
                        "holding one is refused)."),
    }


@task(retries=0)
def withdraw() -> dict[str, Any]:
    """Withdraw the trigger's patient, study, series or instance from the project's tree,
    ``deid_metadata`` and ledger, recorded in ``deid_withdrawals`` as asked by the user who
    triggered the run; counts on XCom. A request the engine refuses (an unknown value, a
    reason that may hold PHI, an unknown project) fails the task without retries, having
    changed nothing."""
    from dicom_deid.pipeline import run_record
    from dicom_deid.pipeline.projects import load_project
    from dicom_deid.pipeline.withdraw import project_settings
    from dicom_deid.pipeline.withdraw import withdraw as withdraw_released

    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    conf = getattr(dag_run, "conf", None) or {}
    _exactly(conf, WITHDRAW_PARAMS, "a withdrawal",
             [k for k in WITHDRAW_PARAMS if not isinstance(conf.get(k), str)
              or not conf[k].strip()])
    user = run_record.triggering_user(dag_run.triggering_user_name)
    try:
        folder = _projects_folder(ctx)
        settings = project_settings(_settings(), folder, conf["project"])
        project = load_project(folder / f"{conf['project']}.yaml")
    except ConfigError as exc:
        raise AirflowFailException(f"withdrawal refused: {exc}") from exc
    vault_key = _vault_key(project)  # the originals to hold back are encrypted under it
    try:
        return withdraw_released(settings, conf["project"], conf["level"], conf["value"],
                                 conf["reason"], user, vault_key, project.deid_config())
    except ConfigError as exc:
        raise AirflowFailException(f"withdrawal refused: {exc}") from exc


# -- the re-identification DAG -------------------------------------------------------------

#: What a re-identification's trigger gives, all of it required (the DAG's params).
REIDENTIFY_PARAMS = ("project", "kind", "values", "purpose")


def reidentify_params() -> dict[str, Any]:
    """The re-identification DAG's params: no defaults (a fresh set per DAG)."""
    from airflow.sdk import Param

    from dicom_deid.vault.reidentify import KINDS

    return {
        "project": Param(type="string", pattern="^[a-z0-9_]+$", title="Project",
                         description="The project whose pseudonyms these are (its file "
                         "projects/<name>.yaml): only its own mapping rows are looked up, "
                         "opened with its vault key, and the audit goes to its log."),
        "kind": Param(type="string", enum=list(KINDS), title="Kind",
                      description="What the values are: pseudonymous patient IDs, accession "
                      "numbers, or Study/Series/SOP Instance UIDs."),
        "values": Param(type="array", items={"type": "string", "minLength": 1},
                        minItems=1, maxItems=1000, title="Values",
                        description="The PSEUDONYMOUS identifiers, as deid_metadata shows them."),
        "purpose": Param(type="string", minLength=1, maxLength=300, title="Purpose",
                         description="Why the originals are needed (recorded in the audit)."),
    }


@task(retries=0)
def reidentify() -> dict[str, Any]:
    """The originals behind the trigger's pseudonyms, for the user who triggered the run:
    looked up in the project's own rows of ``deid_mapping`` only (another project's
    pseudonym is not found, whichever vault key the two share), opened with the project's
    vault key, audited in the project's log before anything is written, written to a
    file readable by the pipeline's owner only (its path on XCom; never a value)."""
    from dicom_deid.pipeline import run_record
    from dicom_deid.pipeline.projects import load_project
    from dicom_deid.vault.reidentify import from_warehouse, write_answer
    from dicom_deid.vault.reidentify import reidentify as look_up

    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    conf = getattr(dag_run, "conf", None) or {}
    _exactly(conf, REIDENTIFY_PARAMS, "a re-identification",
             [k for k in REIDENTIFY_PARAMS if not conf.get(k)])
    requester = run_record.triggering_user(dag_run.triggering_user_name)
    settings = _settings()
    try:
        folder = _projects_folder(ctx)
        project = load_project(folder / f"{conf['project']}.yaml")
    except ConfigError as exc:
        raise AirflowFailException(f"re-identification refused: {exc}") from exc
    vault_key = _vault_key(project)
    values = conf["values"] if isinstance(conf["values"], list) else [conf["values"]]
    try:
        from dicom_deid.pipeline.restricted import open_private_warehouse

        with open_private_warehouse(settings.warehouse) as warehouse:
            table, source = from_warehouse(warehouse, vault_key, "warehouse:deid_mapping",
                                           project=conf["project"])
        from dicom_deid.pipeline.withdraw import check_reason

        answer = look_up(table, source, {conf["kind"]: [str(v) for v in values]},
                         requester=requester, purpose=check_reason(str(conf["purpose"])),
                         vault_key=vault_key, audit=settings.audit_log(conf["project"]))
    except DicomDeidError as exc:  # PHI-free: kinds, counts, file names
        raise AirflowFailException(f"re-identification refused: {exc}") from exc
    out = settings.work_dir / "reidentified" / f"{_safe_name(dag_run.run_id)}.csv"
    write_answer(out, answer)
    audit = settings.audit_log(conf["project"])
    log.info("re-identification for %s in project %s: %d of %d found (%d not found in "
             "the project's mapping); audited in %s; originals in %s", requester,
             conf["project"], answer.found, answer.asked, answer.missing, audit, out)
    return {"asked": answer.asked, "found": answer.found, "missing": answer.missing,
            "answer": str(out), "audit": str(audit), "requester": requester}


def _safe_name(run_id: str) -> str:
    """A run id as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
