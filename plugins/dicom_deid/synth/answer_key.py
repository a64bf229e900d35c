"""The answer key: what the generator planted in which file, and the byte forms to search for.

Written next to (never inside) the corpus, so tests and benchmarks can check a
de-identifier's output against every planted value. Two kinds of planted identifier are
kept apart: ``phi`` sits where the PS3.15 Basic Profile removes or replaces it, and
``kept_planted`` sits where the profile keeps the attribute (a local code meaning, a kept
description, a safe private element), which only a residual sweep can clean.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.charset import convert_encodings, encode_string
from pydicom.valuerep import PersonName

ANSWER_KEY_NAME = "answer_key.json"
BAD_REASONS = ("zero-byte", "truncated", "not-dicom", "bad-charset")
"""Every :attr:`PlantedBadInput.reason` the generator plants."""
KEPT_KINDS = (
    "name-upper", "name-reordered", "name-folded", "name-native", "id-bare",
    "birth-date-written", "institution", "staff-name",
)  # fmt: skip
"""Every :attr:`KeptPlant.kind`: how the planted form differs from the header's value."""
KEPT_PLACES = ("local-code", "kept-description", "safe-private")
"""Every :attr:`KeptPlant.place`."""


@dataclass(frozen=True)
class KeptPlant:
    """An identifier written into an attribute the Basic Profile keeps.

    Real sites write identifiers there (a local procedure code "CT ABD PELVIS W/O for
    SMITH", a window preset named after a technologist, a vendor's free-text private
    element); only a search for the instance's own identifying values finds them.
    """

    path: str
    """Where: 8-hex-digit tags and item indices alternating, ``/``-separated, from the top
    level (``00081032/0/00080104`` is CodeMeaning in the first ProcedureCodeSequence item).
    A private tag is written as found in the file; :attr:`private_creator` names its block."""
    vr: str
    """The attribute's VR (a private element's from Table E.3.10-1: a reader without a
    dictionary for it sees UN in an implicit VR file, as does a re-sent copy written
    explicit from such a file)."""
    value: str
    """The identifying text as written: a substring of the element's value."""
    kind: str
    """One of :data:`KEPT_KINDS`."""
    source: str
    """Keyword of the top-level attribute of the same file whose value this repeats
    (PatientName, PatientID, PatientBirthDate, InstitutionName, OperatorsName...)."""
    place: str
    """One of :data:`KEPT_PLACES`; ``safe-private`` is kept only with Retain Safe Private."""
    private_creator: str = ""


@dataclass(frozen=True)
class FileRecord:
    """One good DICOM file as written, with what was planted in it."""

    path: str
    """Relative to ``out/dicom``, POSIX separators."""
    modality: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    has_file_meta: bool
    """False for raw datasets written without preamble and file meta (implicit VR LE)."""
    charset: str
    """SpecificCharacterSet as written (values joined by backslash), "" if absent."""
    phi: tuple[str, ...]
    """Planted PHI strings present in this file's bytes (in ``charset``)."""
    burned_in: tuple[str, ...]
    """Identifying strings drawn into the pixels, () if none."""
    references: tuple[str, ...]
    """SOP Instance UIDs of corpus instances this instance references."""
    burned_in_other: tuple[str, ...] = ()
    """Non-identifying text drawn into the pixels (dose tables), to test selective redaction."""
    number_of_frames: int = 1
    kept_planted: tuple[KeptPlant, ...] = ()
    """Identifiers planted where the Basic Profile keeps the attribute (not in ``phi``)."""


@dataclass(frozen=True)
class Duplicate:
    """One SOP Instance UID written to several paths (a re-send), with set modification times.

    The rule a batch must apply: the input with the latest modification time wins; equal
    times, the path first in sort order; the others are reported as duplicates.
    """

    sop_uid: str
    paths: tuple[str, ...]
    """Every path holding the instance (relative to ``out/dicom``), sorted."""
    mtimes_ns: tuple[int, ...]
    """Modification time of each of :attr:`paths` (``os.utime``), in nanoseconds."""
    winner: str
    """The path whose content the output must hold, by the rule above."""


@dataclass(frozen=True)
class PlantedBadInput:
    """A file under ``out/dicom`` that a reader must reject or quarantine."""

    path: str
    reason: str
    """One of :data:`BAD_REASONS`."""


@dataclass(frozen=True)
class AnswerKey:
    """Everything planted by ``generate``; serialised to ``out/answer_key.json``."""

    seed: int
    patients: int
    files: tuple[FileRecord, ...]
    bad_inputs: tuple[PlantedBadInput, ...]
    phi: tuple[str, ...]
    """Sorted union of every file's ``phi``."""
    uids: tuple[str, ...]
    """Sorted original non-registry UIDs written (study, series, SOP, frame of reference...)."""
    instances_per_series: int = 8
    small: bool = False
    burned_in_fraction: float = 0.25
    retained_by: dict[str, str] = field(default_factory=dict)
    """PHI values a PS3.15 option legitimately keeps, mapped to that option's column in
    basic_profile.csv (``rtn_long_full_dates``, ``rtn_dev_id``, ``rtn_inst_id``); exclude
    them from a leak search when that option is on."""
    duplicates: tuple[Duplicate, ...] = ()
    """Instances written more than once; each path is also one of :attr:`files`."""

    def to_json(self) -> str:
        """Stable JSON text (sorted keys, indent 1) so the key is byte-identical per seed."""
        return json.dumps(asdict(self), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerKey:
        """Inverse of ``asdict``: lists back to tuples, nested records back to dataclasses."""
        files = tuple(_file_record(f) for f in data["files"])
        bad = tuple(PlantedBadInput(**b) for b in data["bad_inputs"])
        dups = tuple(Duplicate(**_lists_to_tuples(d)) for d in data.get("duplicates", ()))
        skip = ("files", "bad_inputs", "duplicates")
        rest = {k: v for k, v in data.items() if k not in skip}
        rest["phi"] = tuple(rest["phi"])
        rest["uids"] = tuple(rest["uids"])
        return cls(files=files, bad_inputs=bad, duplicates=dups, **rest)


def _lists_to_tuples(record: dict[str, Any]) -> dict[str, Any]:
    """A JSON record's lists back to tuples (a record's sequence fields are tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}


def _file_record(record: dict[str, Any]) -> FileRecord:
    """A JSON file record back to a :class:`FileRecord`, its kept plants included."""
    fields = _lists_to_tuples(record)
    fields["kept_planted"] = tuple(KeptPlant(**k) for k in record.get("kept_planted", ()))
    return FileRecord(**fields)


def load_answer_key(out: Path) -> AnswerKey:
    """Read ``out/answer_key.json`` written by ``generate``."""
    text = (Path(out) / ANSWER_KEY_NAME).read_text(encoding="utf-8")
    return AnswerKey.from_dict(json.loads(text))


def value_patterns(value: str, charset: str) -> set[bytes]:
    """Byte forms ``value`` takes in a file whose SpecificCharacterSet is ``charset``.

    Plain text and person-name encodings differ under ISO 2022 (escape sequences reset at
    ``^`` and ``=``), so both are returned for values that look like person names.
    """
    if value.isascii():
        return {value.encode("ascii")}
    terms = charset.split("\\") if charset else [""]
    encodings = convert_encodings(terms)
    patterns = {encode_string(value, encodings)}
    if "^" in value or "=" in value:
        patterns.add(PersonName(value).encode(encodings))
    # pydicom may open with a redundant ESC ( B; inside a longer value it is not repeated.
    return {p.removeprefix(b"\x1b(B") for p in patterns}


def planted_byte_patterns(key: AnswerKey) -> set[bytes]:
    """Every planted PHI value in every encoding it was written in (search outputs for these).

    Only the values planted where the Basic Profile removes them: see
    :func:`kept_byte_patterns` for those planted where it keeps them.
    """
    patterns: set[bytes] = set()
    for record in key.files:
        for value in record.phi:
            patterns |= value_patterns(value, record.charset)
    return patterns


def kept_byte_patterns(record: FileRecord) -> dict[KeptPlant, set[bytes]]:
    """Each kept-place plant of one file with the byte forms of its value in that file.

    Per file, not per corpus: a bare ID of six digits is specific to its own file, while a
    search of every output for every file's digits would find some inside new UIDs.
    """
    return {k: value_patterns(k.value, record.charset) for k in record.kept_planted}
