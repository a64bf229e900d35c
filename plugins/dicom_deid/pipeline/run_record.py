"""What a run leaves for auditors: its outcome, its ``deid_runs`` row, its failure notes,
and what its policy did (:func:`policy_record`).

A run's outcome is decided once, at its end, from what the orchestrator says failed and
from the notes the failing steps left in the run workspace (``failures/<task>.json``:
the task and the exception *type*, never its message, which may quote a path). Leaks are
told apart from other failures: a verification that found an original value writes its
leak count before raising :class:`~dicom_deid.errors.LeakError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_deid.config.claims import claims_of
from dicom_deid.config.model import DeidConfig, ProfileType
from dicom_deid.dicom.files import write_atomic
from dicom_deid.keyfile import key_fingerprint
from dicom_deid.storage.permissions import private_dir, restrict

__all__ = [
    "DRY_RUN",
    "FAILED",
    "LEAK",
    "POLICY_COLUMNS",
    "REJECTED",
    "STATUSES",
    "SUCCESS",
    "ReviewDecision",
    "RunOutcome",
    "clear_failure",
    "decide_outcome",
    "key_id",
    "note_failure",
    "policy_lines",
    "policy_record",
    "read_failures",
    "triggering_user",
]

SUCCESS, FAILED, LEAK = "success", "failed", "leak"
#: A dry run that de-identified and verified everything (and published nothing).
DRY_RUN = "dry_run"
#: A reviewer (or the review's timeout) refused the release: nothing published.
REJECTED = "rejected"
STATUSES = (SUCCESS, FAILED, LEAK, DRY_RUN, REJECTED)
#: The reviewer recorded when the review rule selected no image (nobody was asked).
NONE_NEEDED = "none needed"
#: The reviewer recorded when nobody answered within the project's review timeout.
TIMEOUT = "timeout"
FAILURES = "failures"
_KEY_ID_DOMAIN = b"dicom-deid/key-id/v1"
_MAX_REASONS = 5
_LEAK_ERRORS = frozenset({"LeakError"})


def key_id(key: bytes) -> str:
    """A public fingerprint of the pseudonymisation key: 16 hex digits of SHA-256 over an
    HMAC of a fixed label under the key. It tells two keys apart in audits and cannot be
    turned back into the key (nor used to compute a pseudonym: a different domain)."""
    return key_fingerprint(key, _KEY_ID_DOMAIN)


def triggering_user(user_name: str | None) -> str:
    """Who started the run: the user the orchestrator names, else the scheduler (a
    scheduled, asset-triggered or backfill run has no user)."""
    return user_name or "scheduler"


@dataclass(frozen=True)
class ReviewDecision:
    """A human review's answer: approved or not, by whom (an Airflow user name,
    :data:`TIMEOUT` or :data:`NONE_NEEDED`) and the reviewer's PHI-free reason."""

    approved: bool
    reviewer: str
    reason: str = ""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: ``success``, ``failed``, ``leak``, ``dry_run`` or ``rejected``,
    and a PHI-free reason."""

    status: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")


def _natural(label: str) -> list[Any]:
    """Sort key: ``verify_shard[2]`` before ``verify_shard[10]``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", label)]


def _note_path(root: Path, task: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", task).strip("-")
    return root / FAILURES / f"{safe}.json"


def note_failure(root: Path, task: str, error: BaseException) -> None:
    """Remember that ``task`` failed with ``error``'s type (not its message)."""
    private_dir(root / FAILURES)
    path = _note_path(root, task)
    write_atomic(path, json.dumps({"task": task, "error": type(error).__name__}).encode())
    restrict(path)


def clear_failure(root: Path, task: str) -> None:
    """Forget an earlier failure of ``task`` (a later try succeeded)."""
    _note_path(root, task).unlink(missing_ok=True)


def read_failures(root: Path) -> dict[str, str]:
    """Task -> exception type name, for every failure noted in this run workspace."""
    notes: dict[str, str] = {}
    for path in sorted((root / FAILURES).glob("*.json")):
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        notes[str(note.get("task"))] = str(note.get("error"))
    return notes


def decide_outcome(
    failed_tasks: Sequence[str],
    completed: bool,
    notes: dict[str, str],
    verified: Iterable[dict[str, Any]],
) -> RunOutcome:
    """The run's status and reason.

    ``failed_tasks``: the tasks the orchestrator marked failed; ``completed``: its last
    work step succeeded; ``notes``: :func:`read_failures`; ``verified``: the shards'
    verification results (a leak count above zero means a leak, even if the task that
    found it could not leave a note).
    """
    leaked = any(int(v.get("leaks", 0) or 0) > 0 for v in verified)
    if completed and not failed_tasks and not leaked:
        return RunOutcome(SUCCESS)
    reasons = [f"{notes.get(t, 'unknown error')} in {t}"
               for t in sorted(failed_tasks, key=_natural)]
    if not reasons:
        reasons = ["the run stopped before its last step" if not completed
                   else "a verification found an original value"]
    if len(reasons) > _MAX_REASONS:
        reasons = [*reasons[:_MAX_REASONS], f"+{len(reasons) - _MAX_REASONS} more"]
    leaked = leaked or any(notes.get(t) in _LEAK_ERRORS for t in failed_tasks)
    return RunOutcome(LEAK if leaked else FAILED, "; ".join(reasons))


# --------------------------------------------------------------------------- policy

#: The ``deid_runs`` columns that say what the run's policy did (:func:`policy_record`).
POLICY_COLUMNS = ("profile", "identity_removed", "options_claimed", "kept_beyond_profile",
                  "gate_exceptions", "review", "dates", "pixels", "residual_sweep",
                  "weakened")
NOT_WEAKENED = "none"
"""``weakened`` of a policy at least as strong as the privacy-first default."""
_STRONG_PROFILES = frozenset({ProfileType.BASIC, ProfileType.MINIMAL_KEEP_LIST})
_REVIEWED = frozenset({"at-risk", "all"})


def policy_record(config: DeidConfig, exceptions: Iterable[str], review: object
                  ) -> dict[str, Any]:
    """What the run's policy did, PHI-free (configuration names and DICOM keywords,
    never a value): the profile; whether the outputs claim Patient Identity Removed, as
    :func:`~dicom_deid.config.claims.claims_of` decides it; the PS3.15 options claimed;
    the attributes kept beyond the profile and its options (keywords); the gate
    exceptions the project declared; the review rule (``review``, its ``str``); what
    happens to dates (Longitudinal Temporal Information Modified); whether burned-in
    text is redacted (``pixels``) and whether the residual sweep runs; and ``weakened``:
    each way the policy is weaker than the privacy-first default, ``"; "``-separated
    (:data:`NOT_WEAKENED` when none), so a weakened run is plain in ``deid_runs``, the
    manifest and the report alike.

    Lists are comma-separated text (``""``: none), so every warehouse can hold them."""
    claims = claims_of(config)
    options = sorted(o.name for o in claims.options)
    declared = sorted(set(exceptions))
    rule = str(review)
    pixels = ("cleaned" if config.cleans_pixels else "not cleaned") + (
        f" (OCR {config.ocr_scope.value})" if config.cleans_pixels else "")
    weakened: list[str] = []
    if not claims.identity_removed:
        weakened.append("patient identity NOT removed"
                        + (f": {len(claims.kept)} attribute(s) kept beyond any option"
                           if claims.kept else ""))
    if config.profile not in _STRONG_PROFILES:
        weakened.append(f"profile {config.profile.value}")
    retained = [o for o in options if o.startswith("RETAIN_")]
    if retained:
        weakened.append(f"options keep: {', '.join(retained)}")
    if declared:
        weakened.append(f"gate exceptions: {', '.join(declared)}")
    if rule not in _REVIEWED:
        weakened.append("no review" if rule == "none" else f"review of a {rule} only")
    if not config.cleans_pixels:
        weakened.append("burned-in text not redacted")
    if not config.residual_sweep:
        weakened.append("no residual sweep")
    return {
        "profile": config.profile.value,
        "identity_removed": claims.identity_removed,
        "options_claimed": ",".join(options),
        "kept_beyond_profile": ",".join(claims.kept),
        "gate_exceptions": ",".join(declared),
        "review": rule,
        "dates": claims.dates,
        "pixels": pixels,
        "residual_sweep": config.residual_sweep,
        "weakened": "; ".join(weakened) or NOT_WEAKENED,
    }


def policy_lines(record: dict[str, Any] | None) -> list[str]:
    """The report's policy section (Markdown) of a :func:`policy_record`; None: the run
    ended before its policy was known."""
    if record is None:
        return ["## Policy", "", "Not recorded: the run ended before its policy was known.",
                ""]
    weakened = record["weakened"] != NOT_WEAKENED

    def listed(value: str) -> str:
        return ", ".join(value.split(",")) if value else "none"

    lines = ["## Policy", ""]
    if weakened:
        lines += [f"**WEAKENED: {record['weakened']}.**", ""]
    lines += [
        f"- Profile: {record['profile']}",
        "- Patient identity removed: " + ("YES" if record["identity_removed"] else "**NO**"),
        f"- Options claimed: {listed(record['options_claimed'])}",
        f"- Kept beyond the profile and its options: {listed(record['kept_beyond_profile'])}",
        f"- Gate exceptions declared: {listed(record['gate_exceptions'])}",
        f"- Review: {record['review']}",
        f"- Dates: {record['dates']}",
        f"- Burned-in text: {record['pixels']}",
        "- Residual sweep: " + ("on" if record["residual_sweep"] else "off"),
        "",
    ]
    return lines
