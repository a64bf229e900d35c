"""Check de-identified outputs before they are published: no original PHI, valid DICOM.

For every output, the original identifying values of *its* source instance (from
``dicom_metadata``) are searched for in every byte of the file outside the pixel data,
case-insensitively and in the encodings the file may use. Only values the configuration
says must go are searched for (a kept attribute is not a leak). Each output is also
parsed back and checked for the attributes a usable instance needs. Findings name the
output (pseudonymous path) and the attribute, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_deid.config.model import DeidConfig
from dicom_deid.config.plan import Act, Mode, Plan
from dicom_deid.dicom.reader import parse_instance, text_value
from dicom_deid.errors import BadInput

__all__ = ["LEAK_KEYWORDS", "Finding", "VerifyReport", "checked_keywords", "verify_outputs"]

#: Attributes whose original values must not survive, when the configuration removes them.
LEAK_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "MedicalRecordLocator",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "StationName", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
)
_MIN_TEXT = 4  # shorter values (initials, "M", "12") match by chance in any file
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_ISO2022_ESC = re.compile(rb"\x1b[\(\)\$][\x40-\x7e]?[\x40-\x7e]")


@dataclass(frozen=True)
class Finding:
    """One problem in one output: a leaked attribute value, or why the file is unusable."""

    output: str
    problem: str
    leak: bool = False
    """An original identifying value was found (else: the file is unusable)."""


@dataclass
class VerifyReport:
    """What a verification pass looked at and found."""

    files: int = 0
    values_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing found: no leak, every output usable."""
        return not self.findings

    @property
    def leaks(self) -> int:
        """How many findings are leaks of an original value."""
        return sum(f.leak for f in self.findings)

    def summary(self, limit: int = 10) -> str:
        """PHI-free text for logs and exceptions."""
        head = f"{self.files} file(s), {self.values_checked} value(s) checked"
        if self.ok:
            return f"{head}: no leaks, all valid"
        shown = "; ".join(f"{f.output}: {f.problem}" for f in self.findings[:limit])
        more = f" (+{len(self.findings) - limit} more)" if len(self.findings) > limit else ""
        return f"{head}: {len(self.findings)} problem(s): {shown}{more}"


def checked_keywords(config: DeidConfig) -> tuple[str, ...]:
    """The :data:`LEAK_KEYWORDS` this configuration replaces or removes."""
    plan = Plan(config)
    out = []
    for kw in LEAK_KEYWORDS:
        tag = tag_for_keyword(kw)
        assert tag is not None, kw
        if plan.act(tag, dictionary_VR(tag), Mode.NORMAL) is not Act.KEEP:
            out.append(kw)
    return tuple(out)


def _strings(value: Any) -> Iterable[str]:
    """Every searchable string in a metadata cell (PN structs, lists, dates)."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for part in value.values():
            yield from _strings(part)
    elif isinstance(value, list | tuple):
        for part in value:
            yield from _strings(part)
    elif isinstance(value, date):  # datetime is a date too
        yield value.strftime("%Y%m%d")
    else:
        yield str(value)


def _variants(text: str) -> set[bytes]:
    """Byte forms of ``text`` as it could be written: whole, and each name component."""
    pieces = {text.strip()}
    if "^" in text or "=" in text:
        pieces |= {p.strip() for p in re.split(r"[\^=]", text)}
    out: set[bytes] = set()
    for piece in pieces:
        if len(piece) < _MIN_TEXT and not (len(piece) >= 2 and not piece.isascii()):
            continue
        for codec in ("utf-8", "latin-1", "iso2022_jp"):
            try:
                raw = piece.encode(codec)
            except UnicodeEncodeError:
                continue
            out.add(_ISO2022_ESC.sub(b"", raw))
    return out


def _leak_pattern(row: Mapping[str, Any], keywords: Iterable[str]
                  ) -> list[tuple[str, re.Pattern[bytes]]]:
    """One case-insensitive pattern per attribute with something worth searching for."""
    patterns = []
    for kw in keywords:
        variants = {v for s in _strings(row.get(kw)) for v in _variants(s)}
        if not variants:
            continue
        alts = b"|".join(re.escape(v) for v in sorted(variants, key=lambda b: (-len(b), b)))
        # Alphanumeric values must stand alone: "ANNA" inside "CANNAE" is not a leak.
        patterns.append((kw, re.compile(rb"(?<![A-Za-z0-9])(?:" + alts + rb")(?![A-Za-z0-9])",
                                        re.IGNORECASE)))
    return patterns


def _outside_pixels(data: bytes, ds: Any) -> list[memoryview]:
    """The file's bytes with the pixel data value cut out (burned-in text is not bytes)."""
    view = memoryview(data)
    for tag in _PIXEL_TAGS:
        elem = ds._dict.get(tag)
        tell = getattr(elem, "value_tell", None)
        if tell is not None and elem.length not in (None, 0xFFFFFFFF):
            return [view[:tell], view[tell + elem.length:]]
        if tell is not None:  # encapsulated: up to the element; fragments are pixel data
            return [view[:tell]]
    return [view]


def _validity(data: bytes, expected_sop: str | None) -> tuple[str | None, Any]:
    try:
        inst = parse_instance(data)
    except BadInput as exc:
        return f"not readable DICOM ({exc.kind})", None
    ds = inst.dataset
    if not inst.had_file_meta:
        return "no file meta information", ds
    for tag, name in ((0x00080016, "SOPClassUID"), (0x0020000D, "StudyInstanceUID"),
                      (0x0020000E, "SeriesInstanceUID")):
        if not text_value(ds, tag):
            return f"{name} missing", ds
    if expected_sop is not None and text_value(ds, 0x00080018) != expected_sop:
        return "SOPInstanceUID differs from the mapping", ds
    return None, ds


def verify_outputs(
    outputs: Iterable[tuple[str, Path, Mapping[str, Any], str | None]],
    keywords: Iterable[str],
) -> VerifyReport:
    """Check each ``(name, path, original_row, expected_sop_uid)``; collect findings.

    ``name`` is what findings call the file (its pseudonymous relative path);
    ``original_row`` maps keywords to the source instance's values in dicom_metadata.
    """
    keywords = tuple(keywords)
    report = VerifyReport()
    for name, path, row, expected_sop in outputs:
        report.files += 1
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            report.findings.append(Finding(name, f"cannot read: {exc.strerror}"))
            continue
        problem, ds = _validity(data, expected_sop)
        if problem:
            report.findings.append(Finding(name, problem))
        regions = _outside_pixels(data, ds) if ds is not None else [memoryview(data)]
        for kw, pattern in _leak_pattern(row, keywords):
            report.values_checked += 1
            if any(pattern.search(r) for r in regions):
                report.findings.append(Finding(name, f"original {kw} value found", leak=True))
    return report
