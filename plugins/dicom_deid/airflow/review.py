"""The review step of a project DAG: a person approves a release before it is published.

Between verification and publishing, :class:`ReviewRelease` (Airflow's
``ApprovalOperator``) waits for an answer when the project's ``review:`` rule selected
at least one image: *Approve* publishes, *Reject* skips everything after it, and no
answer within the project's ``review_timeout_hours`` counts as *Reject* (its default).
Its message counts what was selected and links to the review page
(:mod:`.review_page`). The ``finish_run`` teardown reads the answer
(:func:`.review_answer.decision_of`) and records the run as ``rejected`` with the reviewer and their
PHI-free reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Context, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dicom_deid.errors import VerificationError
from dicom_deid.pipeline.projects import Project
from dicom_deid.pipeline.withdrawal_form import REASON_MAX
from dicom_deid.review.cards import page_path, read_cards, review_summary

from .review_answer import ANSWER_KEY, REVIEW_TASK, phi_free_reason
from .tasks import run_settings, run_workspace

log = logging.getLogger(__name__)

_FORM = frozenset({"reason"})


def review_page_url(dag_id: str, run_id: str) -> str:
    """The review page's full URL (the ``[api] base_url`` setting, else a relative one)."""
    from airflow.sdk import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{page_path(dag_id, run_id)}"


class ReviewRelease(ApprovalOperator):
    """Wait for a person to approve the verified batch (see the module doc). Nothing is
    selected (no image at risk, say): it passes at once, and says so; a dry run: skipped
    (it publishes nothing)."""

    def __init__(self, *, project: Project, **kwargs: Any) -> None:
        # Airflow hands the DAG's params in too; the form shows only this task's own.
        params = dict(kwargs.pop("params", None) or {})
        params["reason"] = Param("", type="string", maxLength=REASON_MAX,
                                 title="Reason (PHI-free)",
                                 description="Why, without names, dates, IDs or UIDs.")
        super().__init__(
            task_id=REVIEW_TASK,
            subject=f"Review project {project.name}'s release",
            defaults=[ApprovalOperator.REJECT],  # what an unanswered review comes to
            params=params,
            response_timeout=timedelta(hours=project.review_timeout_hours),
            assigned_users=[{"id": u, "name": u} for u in project.reviewers] or None,
            ignore_downstream_trigger_rules=True,  # reject: skip publish and both loads
            retries=0,
            do_xcom_push=False,  # the raw answer holds the reason as typed: only the
            # checked copy goes to XCom (execute_complete)
            **kwargs,
        )
        self.review_rule = str(project.review)

    @property
    def serialized_params(self) -> dict[str, dict[str, Any]]:
        """Only the review's own field (the reason): the DAG's trigger params, which
        Airflow merges into every task's, are not the reviewer's to fill in."""
        return {k: v for k, v in super().serialized_params.items() if k in _FORM}

    def execute(self, context: Context) -> Any:
        ws, req = run_workspace(context)
        if req.dry_run:
            raise AirflowSkipException("dry run: nothing is published, nothing to review")
        from dicom_deid.pipeline.deid_steps import check_reviewable  # the engine: at run time

        try:
            check_reviewable(ws, run_settings(context))
        except VerificationError as exc:
            raise AirflowFailException(f"no review: {exc}") from exc
        summary = review_summary(read_cards(ws.review_root))
        dag_run = context["dag_run"]
        if not summary["selected"]:
            log.info("review (%s): no image selected, nothing to look at: released without "
                     "waiting", self.review_rule)
            answer = {"auto": True, "chosen_options": [self.APPROVE]}
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
            return answer
        self.subject = (f"Review {summary['selected']} image(s) of project "
                        f"{req.project} before release {ws.batch_id}")
        self.body = _body(summary, self.review_rule, review_page_url(
            dag_run.dag_id, dag_run.run_id), self.response_timeout)
        log.info("review (%s): %d image(s) selected, %d flagged; waiting for a reviewer",
                 self.review_rule, summary["selected"], summary["flagged"])
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Keep the answer for the teardown before Airflow acts on it: a rejection skips
        the tasks after this one by ending it at once, without a return value."""
        if "error" not in event:
            user = event.get("responded_by_user")
            reason = str((event.get("params_input") or {}).get("reason") or "").strip()
            context["ti"].xcom_push(key=ANSWER_KEY, value={
                "chosen_options": list(event.get("chosen_options") or []),
                "params_input": {"reason": phi_free_reason(reason)},
                "responded_by_user": dict(user) if isinstance(user, Mapping) else user,
                "timed_out": bool(event.get("timedout")),
            })
        return super().execute_complete(context=context, event=event)


def _body(summary: Mapping[str, Any], rule: str, url: str, timeout: timedelta | None) -> str:
    """The approval's message (Markdown, PHI-free: counts and a link)."""
    modalities = ", ".join(f"{m} {n}" for m, n in summary["by_modality"].items())
    hours = f"{timeout.total_seconds() / 3600:g} h" if timeout else "no limit"
    return "\n".join([
        f"**[Open the contact sheet]({url})** before you answer.", "",
        f"- selected by the rule `{rule}`: {summary['selected']} image(s) ({modalities})",
        f"- flagged by the verification gate: {summary['flagged']}",
        f"- at risk of burned-in text: {summary['at_risk']}; regions redacted: "
        f"{summary['regions_redacted']}",
        f"- no answer within {hours} counts as Reject", "",
        "Approve publishes the release; Reject discards it (say why in Reason, without "
        "names, dates, IDs or UIDs).",
    ])
