"""The review page: a contact sheet of a run's selected images, inside the Airflow UI.

An Airflow 3 plugin (registered by the package's ``airflow.plugins`` entry point): a
FastAPI app under ``/dicom-deid`` on the API server, and a "Review" tab on every DAG
run page that shows it. It serves only de-identified data -- the thumbnails the workers
made of the staged outputs, pseudonymous paths, the gate's PHI-free verdicts, the OCR
lines left in the pixels -- and only to a user Airflow's auth manager lets read the
DAG's human-in-the-loop details (the same login as the UI: its cookie, or a bearer
token). Airflow's core modules are imported on first request: every task process loads
plugins, and none of them serves a page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from dicom_deid.review.cards import PAGE_PREFIX

from .review_answer import PAST_TENSE, REVIEW_TASK, phi_free_reason

#: No script, no frame of anyone else's, images from here only: the page is data.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src "
                               "'unsafe-inline'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

app = FastAPI(title="dicom-deid review", docs_url=None, redoc_url=None, openapi_url=None)


async def _authorize(request: Request, dag_id: str) -> None:
    """401 without a login, 403 when Airflow's auth manager does not let the user read
    this DAG's human-in-the-loop details (what a reviewer needs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = (header[7:].strip() if header.lower().startswith("bearer ")
             else request.cookies.get(COOKIE_NAME_JWT_TOKEN))
    user = await resolve_user_from_token(token)
    if not get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.HITL_DETAIL,
            details=DagDetails(id=dag_id), user=user):
        raise HTTPException(status_code=403, detail="Forbidden")


def _run_facts(dag_id: str, run_id: str) -> dict[str, Any]:
    """What the page needs of the DAG run, from Airflow's database: the run's date (its
    batch id), the DAG file's folder (its projects), the review task's state and answer."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                                  DagRun.run_id == run_id))
        dag = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        if run is None or dag is None:
            raise HTTPException(status_code=404, detail="No such DAG run")
        ti = session.scalar(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.task_id == REVIEW_TASK))
        detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id)) \
            if ti is not None else None
        return {
            "when": run.logical_date or run.run_after, "fileloc": dag.fileloc,
            "run_state": str(getattr(run.state, "value", run.state)),
            "review_state": str(getattr(ti.state, "value", ti.state)) if ti else None,
            "answered": detail is not None and detail.responded_at is not None,
            "chosen": list(detail.chosen_options or []) if detail is not None else [],
            "by": (detail.responded_by_user_name if detail is not None else None),
            "reason": str((detail.params_input or {}).get("reason") or "")
            if detail is not None else "",
        }


def _decision(facts: dict[str, Any]) -> str:
    if not facts["answered"]:
        return {"awaiting_input": "waiting for a reviewer", None: "no review step in this run"
                }.get(facts["review_state"], f"review step: {facts['review_state']}")
    reason = phi_free_reason(facts["reason"])
    who = facts["by"] or "timeout"
    said = " / ".join(PAST_TENSE.get(c, c.lower()) for c in facts["chosen"])
    return f"{said} by {who}" + (f": {reason}" if reason else "")


def _workspace(dag_id: str, facts: dict[str, Any]) -> tuple[Any, Any]:
    """The run's workspace (its batch id, as the tasks name it) and its project."""
    from dicom_deid.errors import ConfigError
    from dicom_deid.pipeline.deid_steps import RunWorkspace, batch_id_for
    from dicom_deid.pipeline.projects import load_project, project_name, projects_dir
    from dicom_deid.pipeline.settings import PipelineSettings

    try:
        name = project_name(dag_id)
        settings = PipelineSettings.from_env()
        folder = projects_dir(Path(facts["fileloc"]).resolve().parent.parent / "projects")
        project = load_project(folder / f"{name}.yaml")
    except ConfigError as exc:
        raise _NoReview() from exc
    return RunWorkspace(settings.work_dir, batch_id_for(facts["when"], name)), project


class _NoReview(Exception):
    """The DAG is not a project's: its runs have no review (the tab shows on every run)."""


@app.exception_handler(_NoReview)
async def _no_review(request: Request, exc: _NoReview) -> HTMLResponse:
    return HTMLResponse("<!doctype html><meta charset=utf-8><title>No review</title>"
                        "<p style='font-family:sans-serif'>Only the runs of a project DAG "
                        "(dicom_deid__&lt;project&gt;) have a review.</p>", status_code=404,
                        headers=_HEADERS)


@app.get("/review/{dag_id}/{run_id}", response_class=HTMLResponse)
async def review_page(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    """The contact sheet of one run of a project DAG."""
    await _authorize(request, dag_id)
    from dicom_deid.review.cards import read_cards, review_summary
    from dicom_deid.review.sheet import render_sheet

    facts = _run_facts(dag_id, run_id)
    ws, project = _workspace(dag_id, facts)
    cards = read_cards(ws.review_root)
    shard_of = {name: c["shard"] for c in cards for name in c["thumbnails"]}
    base = quote(run_id, safe="")

    def image_url(name: str) -> str:
        return f"{base}/thumbnails/{shard_of.get(name, 0)}/{quote(name, safe='')}"

    summary = review_summary(cards)
    html = render_sheet(cards, title=f"Review: project {project.name}, batch {ws.batch_id}",
                        facts=[("project", project.name), ("batch", ws.batch_id),
                               ("policy", project.policy.describe()),
                               ("review rule", str(project.review)),
                               ("images selected", str(summary["selected"])),
                               ("DAG run", f"{run_id} ({facts['run_state']})")],
                        image_url=image_url, decision=_decision(facts))
    return HTMLResponse(html, headers=_HEADERS)


@app.get("/review/{dag_id}/{run_id}/thumbnails/{shard}/{name}")
async def thumbnail(request: Request, dag_id: str, run_id: str, shard: int,
                    name: str) -> FileResponse:
    """One thumbnail of the run's review (PNG)."""
    await _authorize(request, dag_id)
    from dicom_deid.review.cards import thumbnail_path

    ws, _ = _workspace(dag_id, _run_facts(dag_id, run_id))
    path = thumbnail_path(ws.review_root, shard, name)
    if path is None:
        raise HTTPException(status_code=404, detail="No such thumbnail")
    return FileResponse(path, media_type="image/png", headers=_HEADERS)


class ReviewPagePlugin(AirflowPlugin):
    """Serves the review page and adds it as a tab of every DAG run."""

    name = "dicom_deid_review"
    # AirflowPlugin declares these as plain class attributes: plugins set them so.
    fastapi_apps = [{"app": app, "url_prefix": PAGE_PREFIX,  # noqa: RUF012
                     "name": "dicom-deid review"}]
    external_views = [{  # noqa: RUF012
        "name": "Review",
        "href": f"{PAGE_PREFIX.lstrip('/')}/review/{{DAG_ID}}/{{RUN_ID}}",
        "destination": "dag_run",
        "url_route": "dicom-deid-review",
    }]
