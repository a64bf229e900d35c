"""The answer key: what the generator planted in which file, and the byte forms to search for.

Written next to (never inside) the corpus, so tests and benchmarks can check a
de-identifier's output against every planted value.
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

    def to_json(self) -> str:
        """Stable JSON text (sorted keys, indent 1) so the key is byte-identical per seed."""
        return json.dumps(asdict(self), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerKey:
        """Inverse of ``asdict``: lists back to tuples, nested records back to dataclasses."""
        files = tuple(FileRecord(**_lists_to_tuples(f)) for f in data["files"])
        bad = tuple(PlantedBadInput(**b) for b in data["bad_inputs"])
        rest = {k: v for k, v in data.items() if k not in ("files", "bad_inputs")}
        rest["phi"] = tuple(rest["phi"])
        rest["uids"] = tuple(rest["uids"])
        return cls(files=files, bad_inputs=bad, **rest)


def _lists_to_tuples(record: dict[str, Any]) -> dict[str, Any]:
    """A JSON record's lists back to tuples (a record's sequence fields are tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}


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
    """Every planted PHI value in every encoding it was written in (search outputs for these)."""
    patterns: set[bytes] = set()
    for record in key.files:
        for value in record.phi:
            patterns |= value_patterns(value, record.charset)
    return patterns
