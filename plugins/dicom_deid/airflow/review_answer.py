"""The review step's answer: its task id and XCom key, and the reviewer's decision as a
run records it (a reason that may hold PHI withheld).

Apart from :mod:`.review_page` (the API server's FastAPI app) so that a DAG file and the
tasks use them without importing FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_deid.pipeline.run_record import ReviewDecision

__all__ = ["ANSWER_KEY", "PAST_TENSE", "REVIEW_TASK", "WITHHELD", "decision_of", "phi_free_reason"]

#: The review step's task id in a project DAG.
REVIEW_TASK = "review"
#: The XCom key under which the review step keeps the reviewer's answer.
ANSWER_KEY = "review_answer"
#: How the page says what a reviewer chose.
PAST_TENSE = {"Approve": "approved", "Reject": "rejected"}
#: What is recorded and shown instead of a reviewer's reason that may hold PHI.
WITHHELD = "reason withheld: it may hold PHI"


def phi_free_reason(reason: str) -> str:
    """A reviewer's reason as it may be kept and shown: checked (white space collapsed)
    when PHI-free, :data:`WITHHELD` when it may hold PHI, "" when none was given."""
    from dicom_deid.pipeline.withdraw import WithdrawalError, check_reason

    if not reason.strip():
        return ""
    try:
        return check_reason(reason)
    except WithdrawalError:
        return WITHHELD


def decision_of(answer: Mapping[str, Any] | None) -> ReviewDecision | None:
    """The review task's result as a decision; None when there is none (no review step,
    or the run ended before it). A reason that may hold PHI is withheld."""
    from dicom_deid.pipeline.run_record import NONE_NEEDED, TIMEOUT, ReviewDecision

    if not answer:
        return None
    if answer.get("auto"):
        return ReviewDecision(True, NONE_NEEDED)
    user = answer.get("responded_by_user")
    reviewer = (str(user.get("name") or user.get("id") or "") if isinstance(user, Mapping)
                else str(user or ""))
    if answer.get("timed_out") or not reviewer:
        return ReviewDecision(False, TIMEOUT, "no answer within the review timeout")
    reason = phi_free_reason(str((answer.get("params_input") or {}).get("reason") or ""))
    chosen = list(answer.get("chosen_options") or [])
    return ReviewDecision(chosen == ["Approve"], reviewer, reason)
