"""Generic detectors: sensitive text recognisable without context (Google info types).

Dates, phone numbers, e-mail addresses, ages, record numbers, URLs, IP addresses, US
social security numbers, each a regular expression with a cheap gate that skips it on
texts that cannot match.

Organisations, places, street addresses and person names have generic detectors for
burned-in text only (:data:`.banner.LINE_DETECTORS`, used by the sensitive
``textRedactionMode``s): in header free text their words are ordinary text.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Iterator

from dicom_deid.config.model import INFO_TYPES
from dicom_deid.dicom.dates import MONTH_RE, ORDINAL_SUFFIX, parse_written

from .chars import LA, LB, NO_DEC_A, NO_DEC_B, lazy_pattern

_DATE_RE = lazy_pattern(
    LB
    + NO_DEC_B
    + r"(?:"
    + r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    + r"|\d{4}[/.]\d{1,2}[/.]\d{1,2}"
    + r"|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{4}"
    + r"|\d{8}(?:\d{2,6}(?:\.\d{1,6})?)?(?:[+-]\d{4})?"
    + rf"|\d{{1,2}}{ORDINAL_SUFFIX}[\s\-]+{MONTH_RE}[\s\-,]+\d{{4}}"
    + rf"|{MONTH_RE}\s+\d{{1,2}}{ORDINAL_SUFFIX},?\s+\d{{4}}"
    + r"|\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日"
    + r")"
    + LA
    + NO_DEC_A,
    re.IGNORECASE,
)
_EMAIL_RE = lazy_pattern(
    LB + r"[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}" + LA, re.IGNORECASE
)
_URL_RE = lazy_pattern(r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'\[\]]+", re.IGNORECASE)
_IPV4_RE = lazy_pattern(LB + NO_DEC_B + r"(?:\d{1,3}\.){3}\d{1,3}" + LA + NO_DEC_A)
_IPV6_RE = lazy_pattern(r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:.])", re.IGNORECASE)
_SSN_RE = lazy_pattern(
    LB + NO_DEC_B + r"(?!000|666|9\d\d)\d{3}([\s\-])(?!00)\d{2}\1(?!0000)\d{4}" + LA
)
_PHONE_RE = lazy_pattern(
    LB
    + NO_DEC_B
    + r"(?:(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}"
    + r"|\+(?=(?:[\s.\-]?\d){8,15}(?!\d))\d{1,3}(?:[\s.\-]?\d{1,4}){2,5}"  # +47 912 34 567
    + r"|0\d([ .])\d{2}(?:\1\d{2}){3}"  # in pairs, as France writes them: 06 12 34 56 78
    + r"|\d{3}[.\-]\d{4})"  # or a local number, 555-0134
    + LA
    + NO_DEC_A
)
_AGE_RE = lazy_pattern(
    LB
    + r"(?:\d{1,3}\s*(?:y/o|y\.o\.|yo)"
    + r"|\d{1,3}[\s\-]*(?:years?|yrs?|y)[\s\-]*old"
    + r"|\d{1,3}\s*(?:years?|yrs?)\s+of\s+age"
    + r"|aged?\s*:?\s*\d{1,3}"
    + r"|(?-i:\d{3}[DWMY]|\d{1,3}Y)"
    + r"|\d{1,3}\s*歳)"
    + LA,
    re.IGNORECASE,
)
_MRN_RE = lazy_pattern(
    LB + NO_DEC_B + r"(?:[a-z]{1,5}[\-#]?)?\d{6,}[a-z]?" + LA + NO_DEC_A, re.IGNORECASE
)
DIGIT_RUN = lazy_pattern(r"\d+")


def _dates(text: str) -> Iterator[tuple[int, int]]:
    for m in _DATE_RE.finditer(text):
        if parse_written(m.group()) is not None:
            yield m.span()


def _urls(text: str) -> Iterator[tuple[int, int]]:
    for m in _URL_RE.finditer(text):
        start, end = m.span()
        while end > start and text[end - 1] in ".,;:!?)":
            end -= 1
        yield start, end


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for pattern in (_IPV4_RE, _IPV6_RE):
        for m in pattern.finditer(text):
            value = m.group()
            if pattern is _IPV6_RE and len(re.findall(r"[0-9a-f]+", value, re.I)) < 2:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                continue
            yield m.span()


_GROUPS = lazy_pattern(r"\d+")


def _phones(text: str) -> Iterator[tuple[int, int]]:
    """Phone numbers, but not the number lists of imaging parameters the pattern also
    takes (probe 14: "DWI b 0 50 400 800", "kV 80 100 120 140", "256 256 128", angles
    "90 135 180"): groups that are all multiples of ten, a group repeated, or groups in
    an arithmetic progression name no telephone."""
    for m in _PHONE_RE.finditer(text):
        if "+" not in m.group() and "(" not in m.group():
            groups = _GROUPS.findall(m.group())
            pairs = list(itertools.pairwise(groups))
            if all(g.endswith("0") for g in groups) or any(
                    a == b and len(a) <= 3 for a, b in pairs) or (
                    len(groups) >= 3 and len({int(b) - int(a) for a, b in pairs}) == 1):
                continue  # multiples of ten, a repeat, a progression ("90 135 180")
        yield m.span()


def _simple(pattern: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    def detect(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            yield m.span()

    return detect


_Detector = Callable[[str], Iterator[tuple[int, int]]]
_Gate = Callable[[str, int], bool]
"""Cheap test on (text, longest run of digits) that must hold for a detector to match."""

# Order = priority when two detections have the same length (earlier wins).
DETECTORS: tuple[tuple[str, _Detector, _Gate], ...] = (
    ("EMAIL_ADDRESS", _simple(_EMAIL_RE), lambda t, _: "@" in t),
    ("URL", _urls, lambda t, _: "://" in t or "www." in t.lower()),
    ("IP_ADDRESS", _ips, lambda t, run: run > 0 and ("." in t or ":" in t)),
    ("US_SOCIAL_SECURITY_NUMBER", _simple(_SSN_RE), lambda _, run: run >= 3),
    ("DATE", _dates, lambda _, run: run >= 4),
    ("PHONE_NUMBER", _phones, lambda _, run: run >= 2),
    ("AGE", _simple(_AGE_RE), lambda _, run: run > 0),
    ("MEDICAL_RECORD_NUMBER", _simple(_MRN_RE), lambda _, run: run >= 6),
)
PRIORITY = {name: i for i, (name, _, _) in enumerate(DETECTORS)}

# Output of this module is never detected again: that makes cleaning idempotent.
PLACEHOLDER_RE = lazy_pattern(
    r"\[(?:CTX|" + "|".join(sorted(INFO_TYPES, key=len, reverse=True)) + r")\]"
)
