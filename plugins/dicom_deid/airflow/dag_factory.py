"""One de-identification DAG per project file: the ``@dag`` arguments of each.

The DAG file (``dags/dicom_deid_projects.py``) calls ``dag(**args)`` on
:func:`project_graph` for each entry of :func:`project_dags`. A bad project file raises
:class:`~dicom_deid.errors.ConfigError` naming the file and the field, so Airflow shows
an import error for the DAG file: a project is never skipped without a word.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from dicom_deid.pipeline.projects import (
    DEFAULT_SCHEDULE,
    PRIORITIES,
    Project,
    load_projects,
    projects_dir,
)

from .review import ReviewRelease
from .tasks import (
    DICOM_METADATA,
    TRIGGER_DEFAULTS,
    deidentify_shard,
    finish_run,
    load_deid_metadata,
    load_mapping,
    notify_failure,
    plan_shards,
    publish,
    resolve_instances,
    run_cohort,
    verify_shard,
    write_filter_file,
)

__all__ = ["dag_args", "project_dags", "project_graph", "projects_folder", "trigger_params"]

START = datetime(2026, 1, 1)


def projects_folder(dag_file: str) -> Path:
    """``$DICOM_DEID_PROJECTS_DIR``, else ``projects/`` next to the DAG file's folder
    (the repository's ``projects/`` beside ``dags/``)."""
    return projects_dir(Path(dag_file).resolve().parent.parent / "projects")


def trigger_params() -> dict[str, Param]:
    """What a trigger may set (a fresh set per DAG): all of it narrows a run. Any other
    key in a trigger's conf fails the run (:data:`~dicom_deid.airflow.tasks.RUN_PARAMS`);
    ``shard_max_bytes`` is accepted too, without a form field."""
    default = TRIGGER_DEFAULTS
    return {
        "start_date": Param(None, type=["null", "string"], format="date",
                            description="Narrow the run to cohort dates from this day on "
                            "(inside the project's cohort_params window; empty: the "
                            "project's)."),
        "end_date": Param(None, type=["null", "string"], format="date",
                          description="Narrow the run to cohort dates up to this day "
                          "(inside the project's window; empty: the project's)."),
        "dry_run": Param(default["dry_run"], type="boolean",
                         description="De-identify and verify only: publish and load "
                         "nothing; staged outputs are removed; recorded as dry_run."),
        "priority": Param(default["priority"], enum=list(PRIORITIES)),
        "shard_max_files": Param(default["shard_max_files"], type="integer", minimum=1),
        "max_shards": Param(default["max_shards"], type="integer", minimum=1, maximum=1000),
    }


def _doc(project: Project, module_doc: str) -> str:
    lines = [f"# Project {project.name}", ""]
    if project.description:
        lines += [project.description, ""]
    lines += [f"- file: `projects/{project.name}.yaml`",
              f"- policy: {project.policy.describe()} (config sha256 "
              f"`{project.fingerprint()[:16]}`)",
              f"- cohort: `{Path(project.cohort).name}`",
              f"- schedule: {project.schedule or 'manual only'}",
              f"- exceptions: {', '.join(sorted(project.exceptions)) or 'none'}",
              f"- review before release: {project.review}"
              + (f" (unanswered after {project.review_timeout_hours:g} h: rejected)"
                 if project.review.waits else ""), "",
              module_doc]
    return "\n".join(lines)


def dag_args(project: Project, module_doc: str = "") -> dict[str, Any]:
    """The ``@dag`` keyword arguments of one project's DAG."""
    schedule: Any = project.schedule
    if schedule == DEFAULT_SCHEDULE:
        schedule = [DICOM_METADATA]
    return {
        "dag_id": project.dag_id,
        "schedule": schedule,
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "params": trigger_params(),
        "default_args": {"retries": 1, "retry_delay": timedelta(minutes=2),
                         "on_failure_callback": notify_failure},
        "tags": ["dicom", "deid", f"project:{project.name}"],
        "description": (project.description.splitlines() or [""])[0][:200] or None,
        "doc_md": _doc(project, module_doc),
    }


def project_dags(dag_file: str, module_doc: str = "") -> list[tuple[dict[str, Any], Project]]:
    """The ``@dag`` arguments of every project in :func:`projects_folder`, with the
    project (its review rule shapes the graph); raises
    :class:`~dicom_deid.errors.ConfigError` (file and field) for the first bad one."""
    return [(dag_args(p, module_doc), p) for p in load_projects(projects_folder(dag_file))]


def project_graph(project: Project) -> Callable[[], None]:
    """The task graph of one project's DAG: cohort -> filter file -> what is new -> shards
    -> de-identify -> verify -> review (unless ``review: none``) -> publish -> load, and
    the ``finish_run`` teardown."""

    def deidentify_project() -> None:
        shards = run_cohort() >> write_filter_file() >> resolve_instances() >> plan_shards()
        deidentified = deidentify_shard.expand(shard=shards)
        verified, released = verify_shard.expand(result=deidentified), publish()
        steps: list[Any] = [shards, deidentified, verified, released]
        if project.review.waits:
            review = ReviewRelease(project=project)
            verified >> review >> released
            steps.append(review)
        else:
            verified >> released
        loaded = released >> load_mapping() >> load_deid_metadata()
        # Then, whatever happened, the teardown records the run. It waits for every task
        # that can still run when another fails, so none races the clean-up.
        [*steps, loaded] >> finish_run().as_teardown(on_failure_fail_dagrun=True)

    return deidentify_project
