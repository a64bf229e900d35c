"""Withdraw released data from a project's research tree, on request.

A patient, study, series or instance is named by its PSEUDONYMOUS identifier, as the
research tree and ``deid_metadata`` show it (the requester never needs an original
value). :func:`withdraw` finds the project's released files of it in the ledger (on the
value's blind index under the vault key: the ledger holds it encrypted), looks up their
original identifiers in the restricted ``deid_mapping``, and then, in this order:

1. records one ``deid_withdrawals`` row per original value (who asked, when, why), so that
   files of it that arrive later are de-identified and held back (``ledger.withdrawn_outputs``),
   under this key or any later one;
2. publishes a release of the tree without the files (``withdrawal-<UTC time>Z-<project>``,
   with ``manifests/<release>.json`` naming them), visible in one step;
3. deletes their ``deid_metadata`` rows;
4. marks their ledger rows ``withdrawn`` (when, by whom, why).

Step 2 leaves no copy of the files in the destination: the release shown until then,
kept for the readers that resolved it, loses them too (and on an object store every
stored version of them is deleted), in the same step.

Each step can be repeated: a withdrawal interrupted anywhere is finished by asking again,
and one asked again when it is done changes nothing and says so. The reason must be
PHI-free: it is refused when the project's text detectors find a name, a date (a written
one too: "march fourteenth nineteen fifty eight"), an ID-like number, a UID or a value of
the withdrawn instances themselves in it. No message and no log line holds an original
value, nor the reason (it is refused *because* it may hold one). A value that is not a
pseudonym of the project's form, or that the project never released, is refused with one
message, by its form and the ledger alone: original identifiers are never consulted to
answer, so the answer never tells whether a value is a real patient's identifier.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_deid.config.model import DeidConfig, info_type_of
from dicom_deid.config.plan import Act, Mode, Plan
from dicom_deid.deid.sweep import SWEEP_TAGS
from dicom_deid.dicom.dates import MONTH_RE
from dicom_deid.errors import ConfigError, StorageError
from dicom_deid.storage import Store
from dicom_deid.text.banner import line_spans
from dicom_deid.text.chars import plain_spellings
from dicom_deid.text.context import PhiContext
from dicom_deid.text.lexicon import fold, lexicon
from dicom_deid.vault.columns import blind_index, decrypt_columns, encrypt_values, is_encrypted
from dicom_deid.vault.envelope import VaultError
from dicom_deid.warehouse.base import DEFAULT_KEYS, Typed, Warehouse

from . import ledger
from .deid_steps import MANIFESTS, destination
from .projects import load_project
from .restricted import open_private_warehouse
from .settings import PipelineSettings
from .withdrawal_form import LEVELS, REASON_MAX, VALUE_MAX

__all__ = ["LEVELS", "REASON_MAX", "WithdrawalError", "check_reason", "project_settings",
           "pseudonym_form", "withdraw", "withdrawal_id_for"]

log = logging.getLogger(__name__)

#: Level -> the ``deid_mapping`` column holding its original identifier.
ORIGINALS: dict[str, str] = {"patient": "original_patient_id", "study": "original_study_uid",
                             "series": "original_series_uid", "instance": "original_sop_uid"}
USER_MAX = 100
#: What a reason may not hold (the text detectors' info types); an organisation word
#: alone ("clinic", "hospital") is ordinary in a reason and not refused.
REFUSED_TYPES = frozenset({
    "PERSON_NAME", "DATE", "MEDICAL_RECORD_NUMBER", "US_SOCIAL_SECURITY_NUMBER",
    "PHONE_NUMBER", "EMAIL_ADDRESS", "AGE", "STREET_ADDRESS", "LOCATION", "IP_ADDRESS",
    "URL"})
_PROJECT = re.compile(r"[a-z0-9_]+")
_UID_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}")
_SPACES = re.compile(r"\s+")
_WHAT = {"PERSON_NAME": "a person's name", "DATE": "a date", "AGE": "an age",
         "MEDICAL_RECORD_NUMBER": "an ID-like number", "UID": "a UID",
         "US_SOCIAL_SECURITY_NUMBER": "an ID-like number", "PHONE_NUMBER": "a phone number",
         "EMAIL_ADDRESS": "an e-mail address", "STREET_ADDRESS": "an address",
         "LOCATION": "a place", "IP_ADDRESS": "an IP address", "URL": "a URL",
         "CONTEXT": "a value of the withdrawn instances"}
_MAPPING_COLUMNS = ("run_id", "output_path", "sop_uid", "original_accession", *ORIGINALS.values())
#: Level -> the attribute holding its identifier, and its VR (the project's policy says
#: whether, and how, it is replaced: the form a pseudonym of it takes).
_ATTRIBUTES = {"patient": ("PatientID", "LO"), "study": ("StudyInstanceUID", "UI"),
               "series": ("SeriesInstanceUID", "UI"), "instance": ("SOPInstanceUID", "UI")}
_PSEUDONYMOUS_UID = re.compile(r"2\.25\.([1-9][0-9]{0,38})")
_PSEUDONYMOUS_CODE = "[A-Z2-7]{16}"


class WithdrawalError(ConfigError):
    """A withdrawal request that cannot be carried out as asked (an unknown value, a
    reason that may hold PHI, a released file whose mapping is missing); nothing was
    changed. The message names the level and the pseudonymous value, never an original."""


@dataclass(frozen=True)
class _Request:
    """One checked request: what, from which project, by whom, why."""

    project: str
    level: str
    value: str
    reason: str
    requested_by: str


def withdrawal_id_for(moment: datetime, project: str) -> str:
    """``withdrawal-<UTC time>Z-<project>``: the withdrawal's id, its release's name and
    its ``deid_withdrawals.batch_id``."""
    utc = moment.astimezone(UTC)
    return f"withdrawal-{utc:%Y%m%dT%H%M%S.%f}Z-{project}"


def _printable(text: str) -> bool:
    return all(c.isprintable() for c in text)


def _checked(project: str, level: str, value: str, reason: str, requested_by: str) -> _Request:
    """The request with its texts normalised; :class:`WithdrawalError` for a bad field."""
    if level not in LEVELS:
        raise WithdrawalError(f"level must be one of {', '.join(LEVELS)}, not {level[:20]!r}")
    value, by = (value or "").strip(), _SPACES.sub(" ", requested_by or "").strip()
    if not _PROJECT.fullmatch(project or ""):
        raise WithdrawalError("project must be a project name (a-z, 0-9 and _)")
    if not value or len(value) > VALUE_MAX or not _printable(value) or " " in value:
        raise WithdrawalError(f"the {level} must be one pseudonymous identifier (at most "
                              f"{VALUE_MAX} characters, no spaces)")
    if not by or len(by) > USER_MAX or not _printable(by):
        raise WithdrawalError(f"who asked (requested_by) must be given, at most {USER_MAX} "
                              "characters")
    return _Request(project, level, value, check_reason(reason), by)


def check_reason(reason: str, context: PhiContext | None = None) -> str:
    """``reason`` with its white space collapsed, if it is PHI-free; else
    :class:`WithdrawalError` saying what kind of value was found (never the text).

    Refused: an empty or over-long reason, control characters, and anything the text
    detectors find (a person's name as forms write them, a date, an ID-like number, a phone
    number, an address...), a UID, a date written with a month's name (:data:`_WRITTEN_DATE`:
    "march 1958", "the fourteenth of march", "march fourteenth nineteen fifty eight"), or
    -- with ``context`` -- a value of the withdrawn instances (their patient's names and
    IDs, in any spelling the sweep knows)."""
    text = _SPACES.sub(" ", reason or "").strip()
    if not text:
        raise WithdrawalError("a reason is required (PHI-free: why, not who)")
    if len(text) > REASON_MAX:
        raise WithdrawalError(f"the reason is {len(text)} characters long: at most "
                              f"{REASON_MAX}")
    if not _printable(text):
        raise WithdrawalError("the reason holds control characters")
    found = {"CONTEXT" if s.from_context else s.info_type for s in line_spans(text, context)
             if s.from_context or s.info_type in REFUSED_TYPES}
    if _UID_RE.search(text):
        found.add("UID")
    if _WRITTEN_DATE.search(text):
        found.add("DATE")
    if _proper_names(text):
        found.add("PERSON_NAME")
    if found:
        kinds = ", ".join(sorted({_WHAT.get(k, k.lower()) for k in found}))
        raise WithdrawalError(
            f"the reason must be PHI-free, and this one holds what looks like {kinds}: say "
            "why without names, dates, IDs or UIDs (the identifier to withdraw is given "
            "apart, and is recorded)")
    return text


_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_TEENS = ("ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|"
          "nineteen")
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_ORDINALS = ("first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|"
             "twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|"
             "nineteenth|twentieth|thirtieth")
_NUMBER_WORD = rf"(?:{_UNITS}|{_TEENS}|{_TENS}|hundred|thousand|oh)"
#: A day of the month as a date writes it: 14, 14th, fourteenth, twenty-first.
_DAY = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|(?:(?:twenty|thirty)[\s-]+)?(?:{_ORDINALS}))"
_ORDINAL_DAY = rf"(?:\d{{1,2}}(?:st|nd|rd|th)|(?:(?:twenty|thirty)[\s-]+)?(?:{_ORDINALS}))"
#: A year: four digits, '58, or two number words or more ("nineteen fifty eight").
_YEAR = (rf"(?:\d{{4}}|'\d{{2}}|(?:{_NUMBER_WORD})(?:[\s-]+(?:and[\s-]+)?"
         rf"(?:{_NUMBER_WORD})){{1,5}})")
_WRITTEN_DATE = re.compile(
    rf"(?<![\w'])(?:"
    rf"{MONTH_RE}[\s,]+(?:the\s+)?(?:{_DAY}[\s,]+)?{_YEAR}"  # march (14th) 1958
    rf"|{MONTH_RE}\s+(?:the\s+)?{_DAY}"  # march fourteenth, march the 14th
    rf"|{_ORDINAL_DAY}\s+(?:of\s+)?{MONTH_RE}"  # fourteenth (of) march, 14th march
    rf"|\d{{1,2}}\s+of\s+{MONTH_RE}"  # 14 of march
    rf")(?![\w])", re.IGNORECASE)
"""A date written with a month's name, its day or year in digits or in words: what the
detectors (tuned to dates as forms and headers write them) let through. A month's name
alone ("in March", "data may be kept") is not a date."""

#: Capitalised words a reason may use mid-sentence: modality codes and common acronyms
#: (a reason is free text written by someone who has just seen the PHI it must not hold).
REASON_ACRONYMS = frozenset({
    "AI", "CR", "CT", "DICOM", "DPO", "DX", "EHR", "EMR", "ES", "GDPR", "HIPAA", "ID", "IO",
    "IRB", "MG", "MR", "MRI", "NM", "OCR", "OT", "PACS", "PET", "PHI", "PT", "PX", "RF",
    "RIS", "SC", "SR", "UID", "US", "XA", "XC"})
_WORD = re.compile(r"[^\W\d_]{2,}")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")


def _proper_names(text: str) -> list[str]:
    """Capitalised or upper-case words that are not the first of a sentence and not known
    vocabulary: how a name is written in running text ("the banner shows John Smith"),
    which the detectors, tuned to forms and headers, let through. Privacy first: such a
    word is taken for a name."""
    vocabulary = lexicon().vocabulary
    out = []
    for m in _WORD.finditer(text):
        word = m.group(0)
        if not word[0].isupper() or word.upper() in REASON_ACRONYMS:
            continue
        before = text[:m.start()]
        first = not before.strip() or _SENTENCE_END.search(before)
        if first and not word.isupper():  # a sentence's first word; in capitals it counts
            continue
        if fold(word) not in vocabulary:
            out.append(word)
    return out


def project_settings(settings: PipelineSettings, folder: Path, project: str
                     ) -> PipelineSettings:
    """The deployment's ``settings`` with project ``project``'s destination, read from its
    file in ``folder`` (:class:`~dicom_deid.errors.ConfigError` for an unknown or invalid
    project)."""
    if not _PROJECT.fullmatch(project or ""):
        raise WithdrawalError("project must be a project name (a-z, 0-9 and _)")
    found = load_project(folder / f"{project}.yaml")
    return dataclasses.replace(settings,
                               destination=found.destination_for(settings.destination))


def withdraw(settings: PipelineSettings, project: str, level: str, value: str, reason: str,
             requested_by: str, vault_key: bytes | None = None,
             policy: DeidConfig | None = None) -> dict[str, Any]:
    """Withdraw ``project``'s released files of one patient, study, series or instance
    (``level``; ``value`` its pseudonymous identifier) from its research tree, whose
    location ``settings.destination`` gives (the project's, as for the de-identification
    steps). Counts of what was done; ``status`` is ``withdrawn`` or ``unchanged`` (it was
    withdrawn already). :class:`WithdrawalError` for a request that cannot be carried out,
    before anything is changed. ``vault_key`` opens the mapping's encrypted identifying
    columns (the originals to hold back); without it, a sealed mapping is refused.
    ``policy``: the project's de-identification policy; a value that does not have the
    form it gives the level's pseudonyms is refused before any lookup (with the message
    of a value the project never released)."""
    req = _checked(project, level, value, reason, requested_by)
    if policy is not None and not pseudonym_form(policy, req.level, req.value):
        raise _not_released(req)
    dest, tree = destination(settings)
    now = datetime.now(UTC)
    wid = withdrawal_id_for(now, req.project)
    with dest.lock(tree):  # no night plans or makes a release of the tree meanwhile
        return _withdraw(settings, req, dest, tree, now, wid, vault_key)


def _withdraw(settings: PipelineSettings, req: _Request, dest: Store, tree: str,
              now: datetime, wid: str, vault_key: bytes | None) -> dict[str, Any]:
    with open_private_warehouse(settings.warehouse) as warehouse:
        warehouse.ensure_schema()
        rows = _released(warehouse, req, vault_key)
        if not rows:
            return _nothing_released(warehouse, req, vault_key)
        mapped = _originals(warehouse, rows, vault_key)
        unmapped = [r for r in rows if (r.batch_id, r.output_path) not in mapped]
        if unmapped:
            raise WithdrawalError(
                f"{len(unmapped)} released file(s) of {req.level} {req.value} have no row in "
                "deid_mapping (their batch's load_mapping did not finish): run it again, then "
                "ask again; nothing was withdrawn")
        check_reason(req.reason, _context(warehouse, rows, mapped.values()))
        if dest.release_of(tree) is None:
            raise StorageError(f"{dest.uri(tree)} is not a release tree; the ledger says it "
                               "holds released files: nothing was withdrawn")
        blocks = _withdrawal_rows(req, rows, mapped, wid, now, vault_key)
        warehouse.insert_rows(ledger.WITHDRAWALS, blocks,
                              key_columns=DEFAULT_KEYS[ledger.WITHDRAWALS])
    paths = sorted({r.output_path for r in rows})
    # The release shown until now loses the files too (readers that resolved it lose
    # them): a withdrawal leaves no copy of them in the destination.
    release = dest.publish_release(tree, wid, {}, paths, {
        f"{MANIFESTS}/{wid}.json": _manifest(wid, req, now, paths)}, withdraw=True)
    with open_private_warehouse(settings.warehouse) as warehouse:
        deleted = warehouse.delete_in("deid_metadata", "source_uri",
                                      [dest.uri(f"{tree}/{p}") for p in paths])
        ledger.write_rows(warehouse, (ledger.LedgerRow(**{
            **r.as_dict(), "status": ledger.WITHDRAWN, "status_at": now,
            "status_by": req.requested_by, "status_reason": req.reason}) for r in rows),
            vault_key)
    log.info("withdrawal %s: %s %s of project %s: %d file(s) out of %s (release %s, %d left), "
             "%d deid_metadata row(s) deleted, %d original identifier(s) blocked", wid,
             req.level, req.value, req.project, release.removed, dest.uri(tree), wid,
             release.files, deleted, len(blocks))
    return {"status": "withdrawn", "withdrawal_id": wid, "project": req.project,
            "level": req.level, "tree": dest.uri(tree), "release": wid,
            "files_removed": release.removed, "files_left": release.files,
            "ledger_rows_withdrawn": len(rows), "metadata_rows_deleted": deleted,
            "originals_blocked": len(blocks)}


def _released(warehouse: Warehouse, req: _Request, vault_key: bytes | None,
              status: str = ledger.RELEASED) -> list[ledger.LedgerRow]:
    """The project's ledger rows of the value with ``status``, opened with the vault key
    (:class:`WithdrawalError` for rows that do not open with it)."""
    try:
        return ledger.rows_where(warehouse, req.project, LEVELS[req.level], [req.value],
                                 vault_key, status=status)
    except VaultError as exc:
        raise WithdrawalError(f"deid_ledger does not open: {exc}") from None


def _nothing_released(warehouse: Warehouse, req: _Request, vault_key: bytes | None
                      ) -> dict[str, Any]:
    """The answer when the project has no released file of the value: it was withdrawn
    already (``unchanged``), or it is unknown (:class:`WithdrawalError`; also when the
    ledger's identifiers are encrypted and the vault key is missing or another one, since
    they can then be matched on nothing)."""
    gone = len(_released(warehouse, req, vault_key, ledger.WITHDRAWN))
    earlier = warehouse.run_cohort(
        "SELECT batch_id FROM deid_withdrawals WHERE project = @project AND level = @level "
        "AND pseudonymous_value = @value ORDER BY requested_at DESC LIMIT 1",
        {"project": req.project, "level": req.level, "value": req.value}
    ).column("batch_id").to_pylist()
    if gone or earlier:
        log.info("%s %s of project %s: withdrawn already%s; nothing changed", req.level,
                 req.value, req.project, f" ({earlier[0]})" if earlier else "")
        return {"status": "unchanged", "withdrawal_id": earlier[0] if earlier else None,
                "project": req.project, "level": req.level, "release": None,
                "files_removed": 0, "ledger_rows_withdrawn": 0, "metadata_rows_deleted": 0,
                "originals_blocked": 0}
    sealed, mine = ledger.sealed_state(warehouse, req.project, vault_key)
    if sealed and vault_key is None:
        raise WithdrawalError("deid_ledger's pseudonymous identifiers are encrypted: a "
                              "withdrawal needs the vault key (--vault-key-file or "
                              "$DICOM_DEID_VAULT_KEY)")
    if sealed and not mine:
        raise WithdrawalError("deid_ledger does not open with this vault key: none of "
                              f"project {req.project}'s rows is encrypted under it")
    raise _not_released(req)


def _not_released(req: _Request) -> WithdrawalError:
    """The one refusal of a value the project has no released file of, whatever it is (a
    typo, another project's pseudonym, an original identifier): the value is not
    repeated (a mistyped original is still close to one), and original identifiers are
    never consulted to word it, so it never tells whether the value is a real one."""
    return WithdrawalError(f"project {req.project} has no released {req.level} with the "
                           "identifier given (give the pseudonymous identifier the research "
                           "tree and deid_metadata show)")


def pseudonym_form(policy: DeidConfig, level: str, value: str) -> bool:
    """Whether ``value`` has the form ``policy`` gives the pseudonyms of ``level``'s
    identifier: a ``2.25.`` UID of a version-8 UUID (:meth:`Pseudonymizer.uid
    <dicom_deid.deid.pseudonyms.Pseudonymizer.uid>`) where the UID is replaced; the
    policy's ``id_prefix`` and 16 base32 characters where the PatientID is pseudonymised.
    An identifier the policy keeps (or changes otherwise) has no form of its own: any
    value passes. Decided on the value's text alone."""
    if level not in _ATTRIBUTES:
        raise WithdrawalError(f"level must be one of {', '.join(LEVELS)}")
    keyword, vr = _ATTRIBUTES[level]
    tag = tag_for_keyword(keyword)
    assert tag is not None
    act = Plan(policy).act(tag, vr, Mode.NORMAL)
    if act is Act.UID:
        m = _PSEUDONYMOUS_UID.fullmatch(value)
        if m is None or int(m.group(1)) >= 1 << 128:
            return False
        raw = int(m.group(1)).to_bytes(16, "big")
        return raw[6] >> 4 == 8 and raw[8] >> 6 == 2  # RFC 9562 version 8, its variant
    if act is Act.PSEUDONYM:
        return re.fullmatch(re.escape(policy.id_prefix) + _PSEUDONYMOUS_CODE, value) is not None
    return True


def _originals(warehouse: Warehouse, rows: Sequence[ledger.LedgerRow],
               vault_key: bytes | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(batch, tree path) -> the ``deid_mapping`` row of each released file (the original
    identifiers, decrypted; matched on run_id = the ledger's batch_id and output_path)."""
    wanted = {(r.batch_id, r.output_path) for r in rows}
    table = warehouse.run_cohort(
        f"SELECT {', '.join(_MAPPING_COLUMNS)}, source_path FROM deid_mapping "
        "WHERE run_id IN UNNEST(@runs) AND output_path IN UNNEST(@paths)",
        {"runs": Typed("ARRAY<STRING>", sorted({r.batch_id for r in rows})),
         "paths": Typed("ARRAY<STRING>", sorted({r.output_path for r in rows}))})
    encrypted = any(is_encrypted(v) for v in table.column(ORIGINALS["instance"]).to_pylist())
    if encrypted:
        if vault_key is None:
            raise WithdrawalError("deid_mapping's original identifiers are encrypted: a "
                                  "withdrawal needs the vault key (--vault-key-file or "
                                  "$DICOM_DEID_VAULT_KEY)")
        try:
            table = decrypt_columns(table, vault_key)
        except VaultError as exc:
            raise WithdrawalError(f"deid_mapping does not open: {exc}") from None
    return {(m["run_id"], m["output_path"]): m for m in table.to_pylist()
            if (m["run_id"], m["output_path"]) in wanted}


def _withdrawal_rows(req: _Request, rows: Sequence[ledger.LedgerRow],
                     mapped: Mapping[tuple[str, str], Mapping[str, Any]], wid: str,
                     now: datetime, vault_key: bytes | None) -> list[dict[str, Any]]:
    """One ``deid_withdrawals`` row per original value of the level, with the number of
    released files it removes. A file without an original value at that level (no
    PatientID, say) is blocked by its original SOP Instance UID instead. Under a vault
    key the value is stored encrypted, with its blind index to match new instances on."""
    counts: Counter[tuple[str, str]] = Counter()
    for r in rows:
        m = mapped[(r.batch_id, r.output_path)]
        original = m.get(ORIGINALS[req.level])
        counts[(req.level, original) if original else ("instance", m[ORIGINALS["instance"]])] += 1
    key_ids = ",".join(sorted({r.key_id for r in rows if r.key_id})) or None
    out = []
    for (level, original), n in sorted(counts.items()):
        index = blind_index(vault_key, f"{req.project}|{level}", original)
        stored = original if vault_key is None else encrypt_values(
            [original], vault_key, "original_value", [index])[0]
        out.append({"project": req.project, "level": level, "original_value": stored,
                    "original_index": index, "pseudonymous_value": req.value,
                    "key_id": key_ids, "requested_at": now, "requested_by": req.requested_by,
                    "reason": req.reason, "batch_id": wid, "files_removed": n})
    return out


def _context(warehouse: Warehouse, rows: Sequence[ledger.LedgerRow],
             mapped: Iterable[Mapping[str, Any]]) -> PhiContext:
    """The identifying values of the withdrawn instances (the sweep's attributes, from
    ``dicom_metadata``, and the original identifiers): a reason may not hold them."""
    pairs: list[tuple[str, str]] = []
    for m in mapped:
        pairs += [("MEDICAL_RECORD_NUMBER", v) for v in (
            m.get("original_patient_id"), m.get("original_accession")) if v]
    uris = sorted({r.source_uri for r in rows})
    table = warehouse.run_cohort(
        "SELECT * FROM dicom_metadata WHERE source_uri IN UNNEST(@uris)",
        {"uris": Typed("ARRAY<STRING>", uris)})
    for keyword in sorted(set(SWEEP_TAGS.values()) & set(table.column_names)):
        tag = tag_for_keyword(keyword)
        kind = info_type_of(keyword, dictionary_VR(tag) if tag is not None else "")
        for value in {t for cell in table.column(keyword).to_pylist() for t in _texts(cell)}:
            pairs.append((kind, value))
    return PhiContext.from_values(dict.fromkeys(plain_spellings(pairs)))


def _texts(cell: Any) -> list[str]:
    """The text values of one ``dicom_metadata`` cell (a string, a date, a person name's
    components, a list of them), as DICOM writes them."""
    if cell is None:
        return []
    if isinstance(cell, str):
        return [cell] if cell.strip() else []
    if isinstance(cell, datetime | date):
        return [cell.strftime("%Y%m%d")]
    if isinstance(cell, dict):
        return [t for v in cell.values() for t in _texts(v)]
    if isinstance(cell, list | tuple):
        return [t for v in cell for t in _texts(v)]
    return []


def _manifest(wid: str, req: _Request, now: datetime, paths: Sequence[str]) -> bytes:
    """The withdrawal's manifest, shaped as a batch's: the withdrawn tree paths are in
    ``withdrawn`` and, since this release took them out of the tree, in ``removed`` too
    (a receiving site that deletes what manifests remove deletes them). Who asked and why
    stay in the restricted ``deid_withdrawals``."""
    manifest = {
        "batch_id": wid, "kind": "withdrawal", "logical_date": now.isoformat(),
        "withdrawal": {"level": req.level, "value": req.value},
        "added": [], "replaced": [], "removed": list(paths), "withdrawn": list(paths),
        "policy_change": False, "study_count": 0, "image_count": 0, "studies": [],
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
