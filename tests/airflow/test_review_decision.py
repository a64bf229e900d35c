"""The review step's answer as the run records it (``decision_of``): who decided, approved
or not, and a reason kept only when it is PHI-free. A plain unit test: no DAG runs."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_deid.pipeline.run_record import NONE_NEEDED, TIMEOUT, ReviewDecision
from dicom_deid.pipeline.withdraw import REASON_MAX

# Airflow is imported when a test runs, never when the module is collected: the Airflow
# tests' process (make test's second pytest) collects every module before its fixtures
# point Airflow at their own home, and an early import would fix its configuration.
WITHHELD = "reason withheld: it may hold PHI"


def decision_of(answer: Any) -> Any:
    from dicom_deid.airflow.review_answer import decision_of as decide

    return decide(answer)


def _decision(facts: dict[str, Any]) -> str:
    from dicom_deid.airflow.review_page import _decision as describe

    return describe(facts)


def test_the_withheld_text_is_the_pages() -> None:
    from dicom_deid.airflow.review_answer import WITHHELD as PAGES

    assert PAGES == WITHHELD

ALICE = {"id": "3", "name": "alice"}


def _answer(chosen: list[str], reason: str | None = "", user: Any = ALICE,
            timed_out: bool = False) -> dict[str, Any]:
    """What the review step keeps (``ReviewRelease.execute_complete``)."""
    return {"chosen_options": chosen, "params_input": {"reason": reason},
            "responded_by_user": user, "timed_out": timed_out}


@pytest.mark.parametrize("answer", [None, {}])
def test_no_answer_is_no_decision(answer: dict[str, Any] | None) -> None:
    assert decision_of(answer) is None


def test_nothing_selected_passes_without_a_reviewer() -> None:
    assert decision_of({"auto": True, "chosen_options": ["Approve"]}) == ReviewDecision(
        True, NONE_NEEDED, "")


def test_approve_and_reject_by_a_named_user() -> None:
    assert decision_of(_answer(["Approve"])) == ReviewDecision(True, "alice", "")
    assert decision_of(_answer(["Reject"], "thumbnails too dark to judge")) == ReviewDecision(
        False, "alice", "thumbnails too dark to judge")


def test_only_approve_alone_approves() -> None:
    for chosen in (["Reject"], ["Approve", "Reject"], ["Reject", "Approve"], [], ["approve"]):
        decision = decision_of(_answer(chosen))
        assert decision is not None and not decision.approved, chosen
        assert decision.reviewer == "alice"
    missing = decision_of({"responded_by_user": ALICE})  # no options recorded at all
    assert missing == ReviewDecision(False, "alice", "")


@pytest.mark.parametrize(("user", "reviewer"), [
    ({"id": "7", "name": "bob"}, "bob"),
    ({"id": "7", "name": ""}, "7"),  # no display name: the user id
    ({"id": "7"}, "7"),
    ("carol", "carol"),
])
def test_the_reviewer_is_the_user_who_answered(user: Any, reviewer: str) -> None:
    decision = decision_of(_answer(["Approve"], user=user))
    assert decision == ReviewDecision(True, reviewer, "")


@pytest.mark.parametrize("answer", [
    _answer(["Reject"], timed_out=True, user=None),
    _answer(["Reject"], timed_out=True),  # a user recorded, but the timeout answered
    _answer(["Approve"], timed_out=True),  # never an approval by the clock
    _answer(["Reject"], user=None),
    _answer(["Approve"], user=None),
    _answer(["Approve"], user={"id": "", "name": ""}),
    _answer(["Approve"], user=""),
    {"chosen_options": ["Approve"]},
])
def test_no_one_answering_is_a_rejection_by_timeout(answer: dict[str, Any]) -> None:
    assert decision_of(answer) == ReviewDecision(
        False, TIMEOUT, "no answer within the review timeout")


def test_a_reason_is_kept_with_its_spaces_collapsed() -> None:
    decision = decision_of(_answer(["Reject"], "  dose text   left\n at bottom right "))
    assert decision == ReviewDecision(False, "alice", "dose text left at bottom right")
    for empty in ("", "   ", None):
        assert decision_of(_answer(["Reject"], empty)) == ReviewDecision(False, "alice", "")
    no_form = decision_of({"chosen_options": ["Reject"], "responded_by_user": ALICE,
                           "params_input": None})
    assert no_form == ReviewDecision(False, "alice", "")


@pytest.mark.parametrize("reason", [
    "Name: John Smith in the top left corner",
    "Smith, John visible in the banner",
    "banner spells SMITH^JOHN",
    "Mr. Smith visible on frame 3",
    "scan date 2023-05-14 burned in",
    "date 05/14/2023 at bottom",
    "MRN 12345678 visible",
    "MRN8619658 at top",
    "SOP 1.2.840.113619.2.55.3.604688119.971.1 is wrong",
    "call 555-123-4567",
    "tab\x07bell",  # control characters
    "x" * (REASON_MAX + 1),  # longer than the form allows
])
@pytest.mark.parametrize("chosen", [["Reject"], ["Approve"]])
def test_a_reason_that_may_hold_phi_is_withheld(reason: str, chosen: list[str]) -> None:
    decision = decision_of(_answer(chosen, reason))
    assert decision == ReviewDecision(chosen == ["Approve"], "alice", WITHHELD)
    for part in ("Smith", "SMITH", "2023", "12345678", "8619658", "113619", "4567"):
        assert part not in repr(decision)


@pytest.mark.parametrize("reason", ["the name John Smith shows in the corner",
                                    "JOHN SMITH on top", "Augustin Treloar is visible",
                                    "banner reads LEE at the top"])
def test_a_name_in_running_text_is_withheld(reason: str) -> None:
    decision = decision_of(_answer(["Reject"], reason))
    assert decision is not None and decision.reason == WITHHELD


def test_the_reason_is_the_reviewers_own_not_other_params() -> None:
    """Only the form's ``reason`` is read: a DAG param holding a value is never recorded."""
    answer = _answer(["Reject"], "text left on the sector edge")
    answer["params_input"]["patient"] = "Smith, John"
    assert decision_of(answer) == ReviewDecision(False, "alice", "text left on the sector edge")


def _page_facts(chosen: list[str], by: str | None, reason: str = "") -> dict[str, Any]:
    """What the review page reads of an answered review step (``_run_facts``)."""
    return {"answered": True, "review_state": "success", "chosen": chosen, "by": by,
            "reason": reason}


def test_the_page_says_who_approved_and_withholds_a_reason_with_phi() -> None:
    assert _decision(_page_facts(["Approve"], "alice")) == "approved by alice"
    assert _decision(_page_facts(["Approve"], "alice", "scan date 2023-05-14 ok")) == (
        f"approved by alice: {WITHHELD}")
    assert _decision({"answered": False, "review_state": "awaiting_input"}) == (
        "waiting for a reviewer")


def test_the_page_says_who_rejected() -> None:
    assert _decision(_page_facts(["Reject"], "alice", "blurry")) == "rejected by alice: blurry"
    assert _decision(_page_facts(["Reject"], None)) == "rejected by timeout"
