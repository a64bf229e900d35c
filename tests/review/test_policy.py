"""The review rule (``review:`` of a project file): its spellings, which images it
selects (a sample stable across runs and processes), and the project fields that go with
it (``review``, ``review_timeout_hours``, ``reviewers``), each error naming file and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_deid.errors import ConfigError
from dicom_deid.pipeline.projects import Project, load_project
from dicom_deid.review.policy import ReviewPolicy

BASE = "name: p\ncohort: patients_with_us\n"
# Pseudonymous output paths as the batch names them (2.25 UIDs), made up for the test.
PATHS = [f"2.25.{1000 + i}/2.25.{77 * i + 5}/2.25.{31 * i * i + 9}.dcm" for i in range(2000)]


# -- spellings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rule", "percent"), [
    ("none", "none", 0.0),
    ("  NONE ", "none", 0.0),
    ("at-risk", "at-risk", 0.0),
    ("At-Risk", "at-risk", 0.0),
    ("all", "all", 0.0),
    ("sample 5", "sample", 5.0),
    ("sample 5%", "sample", 5.0),
    ("Sample   2.5 %", "sample", 2.5),
    ("sample\t0.1", "sample", 0.1),
    ("sample 100", "sample", 100.0),
])
def test_the_rules_and_their_spellings(text: str, rule: str, percent: float) -> None:
    policy = ReviewPolicy.parse(text)
    assert (policy.rule, policy.percent) == (rule, percent)
    assert ReviewPolicy.parse(str(policy)) == policy  # what is shown parses back


def test_what_a_rule_is_shown_as() -> None:
    assert [str(ReviewPolicy.parse(t)) for t in ("none", "at-risk", "ALL", "sample 5",
                                                 "sample 2.5%", "sample 100")] == [
        "none", "at-risk", "all", "sample 5%", "sample 2.5%", "sample 100%"]
    assert str(ReviewPolicy()) == "none"  # the bare default asks nobody


@pytest.mark.parametrize(("text", "message"), [
    ("sometimes", "unknown review rule 'sometimes'"),
    ("at risk", "unknown review rule"),
    ("sample", "unknown review rule"),
    ("sample five", "unknown review rule"),
    ("sample 5 %%", "unknown review rule"),
    ("sample -5", "unknown review rule"),
    ("sample 1e1", "unknown review rule"),
    ("", "unknown review rule"),
    ("sample 0", "more than 0 and at most 100 percent (got 0)"),
    ("sample 0.0", "more than 0 and at most 100 percent"),
    ("sample 100.5", "more than 0 and at most 100 percent (got 100.5)"),
    ("sample 250%", "more than 0 and at most 100 percent"),
    (None, "(got a NoneType)"),
    (5, "(got a int)"),
    (True, "(got a bool)"),
    (["all"], "(got a list)"),
])
def test_anything_else_is_refused(text: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReviewPolicy.parse(text)
    assert message in str(info.value)


def test_only_none_does_not_wait() -> None:
    assert [ReviewPolicy.parse(t).waits for t in ("none", "sample 1", "at-risk", "all")] == [
        False, True, True, True]


# -- selection ---------------------------------------------------------------------------


def test_all_at_risk_and_none_select_by_risk_alone() -> None:
    all_, at_risk, none = (ReviewPolicy.parse(t) for t in ("all", "at-risk", "none"))
    for path in PATHS[:50]:
        assert all_.select(path, True) == all_.select(path, False) == "all"
        assert (at_risk.select(path, True), at_risk.select(path, False)) == ("at-risk", None)
        assert none.select(path, True) is none.select(path, False) is None


def _sampled(percent: float, at_risk: bool = False) -> set[str]:
    policy = ReviewPolicy("sample", percent)
    chosen = {p for p in PATHS if policy.select(p, at_risk) is not None}
    assert {policy.select(p, at_risk) for p in chosen} <= {"sample"}
    return chosen


def test_a_sample_is_about_its_share_and_ignores_risk() -> None:
    five = _sampled(5)
    # 2,000 paths at 5 %: 100 expected, standard deviation under 10.
    assert 60 <= len(five) <= 140
    assert 850 <= len(_sampled(50)) <= 1150
    assert _sampled(5, at_risk=True) == five
    assert _sampled(100) == set(PATHS)
    assert _sampled(0.01) <= five


def test_a_larger_sample_holds_the_smaller_one() -> None:
    """Raising the share between runs keeps every image reviewed before in the sample."""
    one, five, fifty = _sampled(1), _sampled(5), _sampled(50)
    assert one <= five <= fifty
    assert one != five != fifty


def test_a_sample_depends_on_the_path_only() -> None:
    policy = ReviewPolicy.parse("sample 30")
    first = [policy.select(p, False) for p in PATHS]
    again = [ReviewPolicy("sample", 30.0).select(p, True) for p in PATHS]
    assert first == again
    # A path differing in one character is drawn afresh, not with its neighbour.
    changed = [policy.select(p.replace(".dcm", ".dcn"), False) for p in PATHS]
    assert changed != first


def test_a_sample_is_the_same_in_another_process() -> None:
    """No per-process randomness (Python's str hash is salted per process): a rerun in
    another worker selects the same images."""
    code = ("import json, sys\n"
            "from dicom_deid.review.policy import ReviewPolicy\n"
            "paths = json.load(sys.stdin)\n"
            "p = ReviewPolicy.parse('sample 20')\n"
            "print(json.dumps([p.select(x, False) is not None for x in paths]))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(PATHS[:500]),
                          capture_output=True, text=True, env=env, check=True)
    here = [p in _sampled(20) for p in PATHS[:500]]
    assert json.loads(done.stdout) == here
    assert 0 < sum(here) < 500


# -- project files -----------------------------------------------------------------------


def _project(folder: Path, text: str) -> Project:
    path = folder / "p.yaml"
    path.write_text(text)
    return load_project(path)


def _error(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _project(folder, text)
    return str(info.value)


def test_a_project_without_review_fields_reviews_images_at_risk_for_72_hours(
    tmp_path: Path
) -> None:
    project = _project(tmp_path, BASE)
    assert project.review == ReviewPolicy("at-risk")
    assert project.review.waits
    assert project.review_timeout_hours == 72.0
    assert project.reviewers == ()
    assert project.request().review == ReviewPolicy("at-risk")  # what the run receives


@pytest.mark.parametrize(("line", "expected"), [
    ("review: none", ReviewPolicy("none")),
    ("review: all", ReviewPolicy("all")),
    ("review: At-Risk", ReviewPolicy("at-risk")),
    ("review: sample 5", ReviewPolicy("sample", 5.0)),
    ("review: 'sample 2.5%'", ReviewPolicy("sample", 2.5)),
])
def test_the_review_rule_is_read_and_passed_to_the_run(
    tmp_path: Path, line: str, expected: ReviewPolicy
) -> None:
    project = _project(tmp_path, BASE + line + "\n")
    assert project.review == expected
    assert project.request(dry_run=True).review == expected


@pytest.mark.parametrize(("line", "message"), [
    ("review: sometimes", "p.yaml: review: unknown review rule 'sometimes'"),
    ("review: sample 0", "p.yaml: review: a review sample is more than 0"),
    ("review: sample 101%", "p.yaml: review: a review sample is more than 0"),
    ("review: 5", "p.yaml: review: must be one of"),
    # YAML 1.1 reads these as a boolean or nothing: refused, never taken for "none".
    ("review: off", "p.yaml: review: must be one of"),
    ("review: no", "p.yaml: review: must be one of"),
    ("review:", "p.yaml: review: must be one of"),
    ("review: [all]", "p.yaml: review: must be one of"),
])
def test_a_bad_review_rule_names_file_and_field(tmp_path: Path, line: str,
                                                message: str) -> None:
    assert _error(tmp_path, BASE + line + "\n").startswith(message)


@pytest.mark.parametrize(("value", "hours"), [
    ("1", 1.0), ("0.5", 0.5), ("2160", 2160.0), ("72.0", 72.0)])
def test_a_review_timeout_in_hours(tmp_path: Path, value: str, hours: float) -> None:
    project = _project(tmp_path, BASE + f"review_timeout_hours: {value}\n")
    assert project.review_timeout_hours == hours
    assert isinstance(project.review_timeout_hours, float)


@pytest.mark.parametrize("value", [
    "0", "-1", "2160.5", "2161", "100000", "'72'", "true", ".nan", ".inf", "-.inf", "[72]",
    "null", "72 hours"])
def test_a_bad_review_timeout_names_file_and_field(tmp_path: Path, value: str) -> None:
    message = _error(tmp_path, BASE + f"review_timeout_hours: {value}\n")
    assert message.startswith("p.yaml: review_timeout_hours: expected a number of hours "
                              "above 0 and at most 2160, got ")


@pytest.mark.parametrize(("value", "names"), [
    ("[alice]", ("alice",)),
    ("[alice, bob.smith@example.org, ops_team-2, 'j+r']",
     ("alice", "bob.smith@example.org", "ops_team-2", "j+r")),
    ("[]", ()),
    ("null", ()),
])
def test_reviewers_are_airflow_user_names(tmp_path: Path, value: str,
                                          names: tuple[str, ...]) -> None:
    assert _project(tmp_path, BASE + f"reviewers: {value}\n").reviewers == names


@pytest.mark.parametrize(("value", "message"), [
    ("alice", "p.yaml: reviewers: expected a list, got "),
    ("{alice: 1}", "p.yaml: reviewers: expected a list, got "),
    ("[alice, alice]", "p.yaml: reviewers[1]: 'alice' is given twice"),
    ("[alice, 'bob smith']", "p.yaml: reviewers[1]: 'bob smith' is not an Airflow user name"),
    ("['../admin']", "p.yaml: reviewers[0]: '../admin' is not an Airflow user name"),
    ('["alice\\n"]', "p.yaml: reviewers[0]: 'alice\\n' is not an Airflow user name"),
    ("['']", "p.yaml: reviewers[0]: expected a non-empty string"),
    ("[7]", "p.yaml: reviewers[0]: expected a non-empty string"),
    ("[[alice]]", "p.yaml: reviewers[0]: expected a non-empty string"),
])
def test_bad_reviewers_name_file_and_field(tmp_path: Path, value: str, message: str) -> None:
    assert _error(tmp_path, BASE + f"reviewers: {value}\n").startswith(message)


def test_review_fields_together(tmp_path: Path) -> None:
    project = _project(tmp_path, BASE + "review: sample 10%\nreview_timeout_hours: 24\n"
                       "reviewers: [alice, bob]\n")
    assert (project.review, project.review_timeout_hours, project.reviewers) == (
        ReviewPolicy("sample", 10.0), 24.0, ("alice", "bob"))
    # A misspelt key is not taken for one of these (the review would silently default).
    assert _error(tmp_path, BASE + "reveiw: none\n").startswith(
        "p.yaml: reveiw: unknown key (known: ")
