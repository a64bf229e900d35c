"""Find and transform sensitive text in plain strings (no DICOM objects here).

Two kinds of detection feed one list of spans:

* **context** — the identifying values of the instance being de-identified (its patient's
  name, IDs, dates, institution...), expanded into the spellings they take in free text and
  compiled into one regular expression per instance (:class:`PhiContext`);
* **generic detectors** — regular expressions for things recognisable without context
  (dates, phone numbers, e-mail addresses, ages, record numbers, URLs, IP addresses).

On top of the spans sit the two ways text is cleaned: the PS3.15 Clean Descriptors option /
Google ``cleanDescriptors`` (:func:`clean_descriptor`) and Google ``TextConfig``
transformations (:func:`apply_text_config`, :func:`transform_whole_value`), with the
info type names Google's Cloud Healthcare API uses.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from .config import TextConfig, Transformation, TransformationKind

__all__ = [
    "CONTEXT",
    "CTX_MARKER",
    "INFO_TYPES",
    "PhiContext",
    "Span",
    "apply_text_config",
    "ascii_fold",
    "clean_descriptor",
    "find_spans",
    "parse_date",
    "transform_whole_value",
]



class _LazyPattern:
    """A regular expression compiled when first used: compiling this module's 20 costs
    about 45 ms, which every run would pay at start though most clean no text."""

    def __init__(self, pattern: str, flags: int) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        value = getattr(re.compile(*self._source), name)
        setattr(self, name, value)  # found directly from now on
        return value


def _lazy(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return cast("re.Pattern[str]", _LazyPattern(pattern, flags))


CONTEXT = "CONTEXT"
"""Info type of a context value that is identifying without being a more specific type."""
CTX_MARKER = "[CTX]"
"""What Google's ``cleanDescriptors`` writes in place of a phrase matching a removed value."""

INFO_TYPES: frozenset[str] = frozenset(
    {
        "PERSON_NAME",
        "DATE",
        "AGE",
        "PHONE_NUMBER",
        "EMAIL_ADDRESS",
        "US_SOCIAL_SECURITY_NUMBER",
        "MEDICAL_RECORD_NUMBER",
        "STREET_ADDRESS",
        "LOCATION",
        "ORGANIZATION_NAME",
        "URL",
        "IP_ADDRESS",
        CONTEXT,
    }
)
"""Google infoType names this module detects (generic detectors or context values)."""

Hasher = Callable[[str], str]
DateShifter = Callable[[datetime.date], datetime.date]


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Characters ``text[start:end]`` detected as ``info_type``.

    ``from_context`` is True when the span matched a value of the instance itself
    (Clean Descriptors writes those as ``[CTX]``), False for a generic detection.
    """

    start: int
    end: int
    info_type: str
    from_context: bool = False


# --- character classes -------------------------------------------------------------------

# Scripts written without spaces between words: values in them match as substrings.
_CJK = (
    "\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
)
_CJK_RE = _lazy(f"[{_CJK}]")
# A letter or digit of a script written with spaces: what must not touch a whole token.
_WORD = f"[^\\W_{_CJK}]"
_LB = f"(?-i:(?<!{_WORD}))"  # case-free: IGNORECASE makes big classes slow to compile
_LA = f"(?-i:(?!{_WORD}))"
# Not part of a decimal number or dotted UID ("0.488281", "1.2.840.113619").
_NO_DEC_B = r"(?<!\d[.,])"
_NO_DEC_A = r"(?![.,]\d)"


def _is_word(char: str) -> bool:
    """A letter or digit of a script written with spaces (where whole tokens apply)."""
    return char.isalnum() and not _CJK_RE.match(char)


# --- dates ---------------------------------------------------------------------------------

# English names, not calendar.month_name: that one follows the process locale.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
_MONTHS += ("September", "October", "November", "December")
_MONTH_BY_PREFIX = {name[:3].lower(): i for i, name in enumerate(_MONTHS, start=1)}
_MONTH_RE = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])"
)
_ORD = r"(?:st|nd|rd|th)?"
_MIN_YEAR, _MAX_YEAR = 1800, 2200


def _month_number(token: str) -> int | None:
    word = token.rstrip(".").lower()
    number = _MONTH_BY_PREFIX.get(word[:3])
    if number is None or not _MONTHS[number - 1].lower().startswith(word):
        return None if word != "sept" else 9
    return number


def _render_month(number: int, like: str) -> str:
    """Month ``number`` written like ``like``: abbreviated or full, same case, same dot."""
    word = like.rstrip(".")
    full = _MONTHS[number - 1]
    if len(word) <= 3:
        text = full[:3]
    elif word.lower() == "sept":
        text = "Sept" if number == 9 else full[:3]
    else:
        text = full
    if word.isupper():
        text = text.upper()
    elif word.islower():
        text = text.lower()
    return text + ("." if like.endswith(".") else "")


def _ordinal(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _padded(parts: tuple[str, ...], default: bool) -> bool:
    """Whether a date writes day and month with two digits, judged from how it was written."""
    if any(p.startswith("0") for p in parts):
        return True
    if any(len(p) == 1 for p in parts):
        return False
    return default


def _pad(value: int, padded: bool) -> str:
    return f"{value:02d}" if padded else str(value)


_DateRender = Callable[[datetime.date], str]

_P_YMD = _lazy(
    r"(?P<y>\d{4})(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})"
    r"(?P<rest>[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_P_XYY = _lazy(r"(?P<a>\d{1,2})(?P<s>[-/.])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4})")
_P_DICOM = _lazy(
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"
    r"(?P<rest>(?:[01]\d|2[0-3])(?:[0-5]\d(?:[0-5]\d(?:\.\d{1,6})?)?)?)?(?P<tz>[+-]\d{4})?"
)
_P_DMONY = _lazy(
    rf"(?P<d>\d{{1,2}})(?P<o>{_ORD})(?P<s1>[\s\-]+)(?P<mon>[a-z]+\.?)(?P<s2>[\s\-,]+)(?P<y>\d{{4}})",
    re.IGNORECASE,
)
_P_MONDY = _lazy(
    rf"(?P<mon>[a-z]+\.?)(?P<s1>\s+)(?P<d>\d{{1,2}})(?P<o>{_ORD})(?P<s2>,?\s+)(?P<y>\d{{4}})",
    re.IGNORECASE,
)
_P_JA = _lazy(
    r"(?P<y>\d{4})(?P<s1>\s*年\s*)(?P<m>\d{1,2})(?P<s2>\s*月\s*)(?P<d>\d{1,2})(?P<s3>\s*日)"
)


def _valid(y: int, m: int, d: int) -> datetime.date | None:
    if not _MIN_YEAR <= y <= _MAX_YEAR:
        return None
    try:
        return datetime.date(y, m, d)
    except ValueError:
        return None


def _parse_numeric(text: str) -> tuple[datetime.date, _DateRender] | None:
    if m := _P_YMD.fullmatch(text):
        y, mo, d, s, rest = m["y"], m["m"], m["d"], m["s"], m["rest"] or ""
        day = _valid(int(y), int(mo), int(d))
        if day is None:
            return None
        p = _padded((mo, d), True)
        return day, lambda n: f"{n.year:04d}{s}{_pad(n.month, p)}{s}{_pad(n.day, p)}{rest}"
    if m := _P_DICOM.fullmatch(text):
        y, mo, d, tail = m["y"], m["m"], m["d"], (m["rest"] or "") + (m["tz"] or "")
        day = _valid(int(y), int(mo), int(d))
        if day is None:
            return None
        return day, lambda n: f"{n.year:04d}{n.month:02d}{n.day:02d}{tail}"
    if m := _P_XYY.fullmatch(text):
        a, b, s, y = m["a"], m["b"], m["s"], m["y"]
        p = _padded((a, b), True)
        # "/" is read month-first (US) unless impossible; "." and "-" day-first.
        for day_first in (False, True) if s == "/" else (True, False):
            dd, mm = (a, b) if day_first else (b, a)
            day = _valid(int(y), int(mm), int(dd))
            if day is not None:
                return (
                    day,
                    lambda n, df=day_first: (
                        f"{_pad(n.day, p)}{s}{_pad(n.month, p)}{s}{n.year:04d}"
                        if df
                        else f"{_pad(n.month, p)}{s}{_pad(n.day, p)}{s}{n.year:04d}"
                    ),
                )
        return None
    if m := _P_JA.fullmatch(text):
        y, mo, d = m["y"], m["m"], m["d"]
        day = _valid(int(y), int(mo), int(d))
        if day is None:
            return None
        s1, s2, s3 = m["s1"], m["s2"], m["s3"]
        p = _padded((mo, d), False)
        return day, lambda n: f"{n.year:04d}{s1}{_pad(n.month, p)}{s2}{_pad(n.day, p)}{s3}"
    return None


def _named_render(m: re.Match[str], day_first: bool) -> _DateRender:
    d, o, mon, s1, s2 = m["d"], m["o"], m["mon"], m["s1"], m["s2"]
    p = _padded((d,), False)

    def render(n: datetime.date) -> str:
        dd = _pad(n.day, p) + (_ordinal(n.day) if o else "")
        if o.isupper():
            dd = dd.upper()
        month = _render_month(n.month, mon)
        if day_first:
            return f"{dd}{s1}{month}{s2}{n.year:04d}"
        return f"{month}{s1}{dd}{s2}{n.year:04d}"

    return render


def _parse_named(text: str) -> tuple[datetime.date, _DateRender] | None:
    for pattern, day_first in ((_P_DMONY, True), (_P_MONDY, False)):
        m = pattern.fullmatch(text)
        if m is None:
            continue
        number = _month_number(m["mon"])
        day = None if number is None else _valid(int(m["y"]), number, int(m["d"]))
        return None if day is None else (day, _named_render(m, day_first))
    return None


def parse_date(text: str) -> tuple[datetime.date, Callable[[datetime.date], str]] | None:
    """Read a date written in one of the supported formats.

    Returns the date and a function writing another date in exactly the same format
    (separators, zero padding, month name style, time-of-day suffix kept), or None.

    >>> day, render = parse_date("May 14, 2023")
    >>> render(datetime.date(2024, 1, 2))
    'Jan 2, 2024'
    """
    text = text.strip()
    return _parse_numeric(text) or _parse_named(text)


# --- generic detectors -------------------------------------------------------------------

_DATE_RE = _lazy(
    _LB
    + _NO_DEC_B
    + r"(?:"
    + r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    + r"|\d{4}[/.]\d{1,2}[/.]\d{1,2}"
    + r"|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{4}"
    + r"|\d{8}(?:\d{2,6}(?:\.\d{1,6})?)?(?:[+-]\d{4})?"
    + rf"|\d{{1,2}}{_ORD}[\s\-]+{_MONTH_RE}[\s\-,]+\d{{4}}"
    + rf"|{_MONTH_RE}\s+\d{{1,2}}{_ORD},?\s+\d{{4}}"
    + r"|\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日"
    + r")"
    + _LA
    + _NO_DEC_A,
    re.IGNORECASE,
)
_EMAIL_RE = _lazy(
    _LB + r"[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}" + _LA, re.IGNORECASE
)
_URL_RE = _lazy(r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'\[\]]+", re.IGNORECASE)
_IPV4_RE = _lazy(_LB + _NO_DEC_B + r"(?:\d{1,3}\.){3}\d{1,3}" + _LA + _NO_DEC_A)
_IPV6_RE = _lazy(r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:.])", re.IGNORECASE)
_SSN_RE = _lazy(
    _LB + _NO_DEC_B + r"(?!000|666|9\d\d)\d{3}([\s\-])(?!00)\d{2}\1(?!0000)\d{4}" + _LA
)
_PHONE_RE = _lazy(
    _LB
    + _NO_DEC_B
    + r"(?:(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}"
    + r"|\d{3}[.\-]\d{4})"  # or a local number, 555-0134
    + _LA
    + _NO_DEC_A
)
_AGE_RE = _lazy(
    _LB
    + r"(?:\d{1,3}\s*(?:y/o|y\.o\.|yo)"
    + r"|\d{1,3}[\s\-]*(?:years?|yrs?|y)[\s\-]*old"
    + r"|\d{1,3}\s*(?:years?|yrs?)\s+of\s+age"
    + r"|aged?\s*:?\s*\d{1,3}"
    + r"|(?-i:\d{3}[DWMY]|\d{1,3}Y)"
    + r"|\d{1,3}\s*歳)"
    + _LA,
    re.IGNORECASE,
)
_MRN_RE = _lazy(
    _LB + _NO_DEC_B + r"(?:[a-z]{1,5}[\-#]?)?\d{6,}[a-z]?" + _LA + _NO_DEC_A, re.IGNORECASE
)
_DIGIT_RUN = _lazy(r"\d+")


def _dates(text: str) -> Iterator[tuple[int, int]]:
    for m in _DATE_RE.finditer(text):
        if parse_date(m.group()) is not None:
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


def _simple(pattern: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    def detect(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            yield m.span()

    return detect


_Detector = Callable[[str], Iterator[tuple[int, int]]]
_Gate = Callable[[str, int], bool]
"""Cheap test on (text, longest run of digits) that must hold for a detector to match."""

# Order = priority when two detections have the same length (earlier wins).
_DETECTORS: tuple[tuple[str, _Detector, _Gate], ...] = (
    ("EMAIL_ADDRESS", _simple(_EMAIL_RE), lambda t, _: "@" in t),
    ("URL", _urls, lambda t, _: "://" in t or "www." in t.lower()),
    ("IP_ADDRESS", _ips, lambda t, run: run > 0 and ("." in t or ":" in t)),
    ("US_SOCIAL_SECURITY_NUMBER", _simple(_SSN_RE), lambda _, run: run >= 3),
    ("DATE", _dates, lambda _, run: run >= 4),
    ("PHONE_NUMBER", _simple(_PHONE_RE), lambda _, run: run >= 3),
    ("AGE", _simple(_AGE_RE), lambda _, run: run > 0),
    ("MEDICAL_RECORD_NUMBER", _simple(_MRN_RE), lambda _, run: run >= 6),
)
_PRIORITY = {name: i for i, (name, _, _) in enumerate(_DETECTORS)}

# Output of this module is never detected again: that makes cleaning idempotent.
_PLACEHOLDER_RE = _lazy(
    r"\[(?:CTX|" + "|".join(sorted(INFO_TYPES, key=len, reverse=True)) + r")\]"
)


# --- context -------------------------------------------------------------------------------

_NAME_PARTICLES = frozenset(
    {"van", "von", "de", "der", "den", "del", "della", "di", "da", "du", "dos", "das", "la"}
    | {"le", "st", "jr", "sr", "mr", "mrs", "ms", "dr", "md", "phd"}
)
_ID_RE = _lazy(r"(?P<prefix>[A-Za-z]*)(?P<sep>[\s:#\-]*)(?P<zeros>0*)(?P<core>\d+)")


class _Variant(NamedTuple):
    """One written form of a context value.

    ``anchor`` is a substring every match contains (case-folded): texts containing no
    anchor at all skip the context regex, which is what keeps per-file cost low.
    ``left``/``right``: the match must not touch a letter or digit on that side (whole
    tokens), false on a CJK side where words are not separated by spaces. The check is
    done in Python: lookarounds with CJK classes make a regex slow to compile.
    """

    fragment: str
    weight: int
    anchor: str
    left: bool
    right: bool


def _variant(fragment: str, weight: int, anchor: str, sample: str) -> _Variant:
    """A variant whose whole-token sides follow the first and last character of ``sample``."""
    return _Variant(
        fragment, weight, anchor, not _CJK_RE.match(sample[0]), not _CJK_RE.match(sample[-1])
    )


def _literal(raw: str) -> _Variant | None:
    words = [w.strip(".,") for w in raw.split()]
    words = [w for w in words if w]
    text = " ".join(words)
    if len(text) < 2:
        return None
    fragment = r"[\s,.]+".join(re.escape(w) for w in words)
    return _variant(fragment, len(text), max(words, key=len).casefold(), text)


def _name_variants(raw: str) -> Iterator[_Variant]:
    for group in raw.split("="):
        for component in group.split("^")[:3]:  # family, given, middle; not prefix/suffix
            component = component.strip()
            if len(component) >= 2 and (whole := _literal(component)):
                yield whole
            words = [w for w in re.split(r"[\s,]+", component) if w]
            if len(words) > 1:
                for word in words:
                    if word.lower().strip(".") in _NAME_PARTICLES:
                        continue
                    if len(word) >= 2 and (variant := _literal(word)):
                        yield variant


def _date_variants(raw: str) -> Iterator[_Variant]:
    digits = raw.strip()
    parsed = parse_date(digits[:8] if re.fullmatch(r"\d{8}.*", digits) else digits)
    if parsed is None:
        if variant := _literal(raw):
            yield variant
        return
    day = parsed[0]
    y, m, d = f"{day.year:04d}", day.month, day.day
    mp = f"0?{m}" if m < 10 else str(m)
    dp = f"0?{d}" if d < 10 else str(d)
    full = _MONTHS[m - 1]
    mon = f"(?:{full[:3]}|{full}|Sept)\\.?" if m == 9 else f"(?:{full[:3]}|{full})\\.?"
    for fragment, sample, weight in (
        (f"{y}{m:02d}{d:02d}", "0", 8),
        (f"{y}[-/.]{mp}[-/.]{dp}", "0", 10),
        (f"{dp}[-/.]{mp}[-/.]{y}", "0", 10),
        (f"{mp}[-/.]{dp}[-/.]{y}", "0", 10),
        (f"{dp}{_ORD}[\\s\\-]+{mon}[\\s\\-,]+{y}", "0", 11),
        (f"{mon}\\s+{dp}{_ORD},?\\s+{y}", "a0", 12),
        (f"{y}\\s*年\\s*{mp}\\s*月\\s*{dp}\\s*日", "0日", 10),
    ):
        yield _variant(fragment, weight, y, sample)


def _age_variants(raw: str) -> Iterator[_Variant]:
    m = re.fullmatch(r"0*(\d{1,3})\s*([DWMY]?)", raw.strip(), re.IGNORECASE)
    if m is None:
        if variant := _literal(raw):
            yield variant
        return
    n, unit = m[1], (m[2] or "Y").upper()
    words = {"Y": r"years?|yrs?", "M": r"months?|mos?", "W": r"weeks?|wks?", "D": r"days?"}[unit]
    short = r"y/o|y\.o\.|yo|y" if unit == "Y" else unit
    fragment = f"0*{n}(?:\\s*(?:{short})(?:[\\s\\-]*old)?|[\\s\\-]*(?:{words})(?:[\\s\\-]*old)?)"
    yield _variant(fragment, len(raw), n, "0a")
    if unit == "Y":
        yield _variant(f"0*{n}\\s*歳", len(raw), n, "0歳")


def _phone_variants(raw: str) -> Iterator[_Variant]:
    digits = re.sub(r"\D", "", raw)
    if len(digits) < 6:
        if variant := _literal(raw):
            yield variant
        return
    sep = r"[\s().\-]*"
    yield _variant(r"\+?" + sep.join(digits), len(digits), digits[-1], "0")
    if raw.lstrip().startswith("+"):
        # National forms: without the 1-3 digit country code, perhaps with a trunk "0".
        for cc in range(1, 4):
            national = digits[cc:]
            if len(national) >= 6:
                yield _variant("0?" + sep.join(national), len(national), digits[-1], "0")


def _id_variants(raw: str) -> Iterator[_Variant]:
    value = raw.strip()
    m = _ID_RE.fullmatch(value)
    if m is None or len(m["core"]) < 4:
        if variant := _literal(value):
            yield variant
        return
    prefix = f"(?:{re.escape(m['prefix'])}[\\s:#\\-]*)?" if m["prefix"] else ""
    sample = value if m["prefix"] else "0"
    yield _variant(f"{prefix}0*{m['core']}", len(value), m["core"], sample)


def _ssn_variants(raw: str) -> Iterator[_Variant]:
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 9:
        fragment = f"{digits[:3]}[\\s\\-]?{digits[3:5]}[\\s\\-]?{digits[5:]}"
        yield _variant(fragment, 9, digits[5:], "0")
    elif variant := _literal(raw):
        yield variant


def _variants(info_type: str, raw: str) -> Iterator[_Variant]:
    """The written forms of one context value."""
    if info_type == "PERSON_NAME":
        yield from _name_variants(raw)
    elif info_type == "DATE":
        yield from _date_variants(raw)
    elif info_type == "AGE":
        yield from _age_variants(raw)
    elif info_type == "PHONE_NUMBER":
        yield from _phone_variants(raw)
    elif info_type == "US_SOCIAL_SECURITY_NUMBER":
        yield from _ssn_variants(raw)
    elif info_type in ("STREET_ADDRESS", "LOCATION", "ORGANIZATION_NAME"):
        for part in [raw, *re.split(r"[\^\r\n]+", raw)]:
            if variant := _literal(part):
                yield variant
    elif _ID_RE.fullmatch(raw.strip()):
        yield from _id_variants(raw)
    elif variant := _literal(raw):
        yield variant


@dataclass(frozen=True)
class PhiContext:
    """The identifying values of one instance, compiled for matching inside free text.

    Build it with :meth:`from_values`. Its ``repr`` shows counts only: the compiled
    pattern holds PHI and must never reach a log.
    """

    pattern: re.Pattern[str] | None = field(default=None, repr=False)
    group_types: tuple[str, ...] = field(default=(), repr=False)
    anchors: frozenset[str] = field(default=frozenset(), repr=False)
    sides: tuple[tuple[bool, bool], ...] = field(default=(), repr=False)

    @classmethod
    def from_values(cls, values: Iterable[tuple[str, str]]) -> PhiContext:
        """Compile ``(info_type, raw value)`` pairs taken from the instance.

        Raw values are DICOM strings: multiple values separated by ``\\`` are split; person
        names are split into components (``^``) and representations (``=``); dates are
        expanded to the common written formats; IDs also match without their leading
        zeros or letter prefix when at least 4 digits remain. Values (or components) of
        fewer than 2 characters are ignored. Instances of one patient share their values,
        so the compiled result is cached.

        Raises
        ------
        ValueError
            If an info type is not one of :data:`INFO_TYPES`.
        """
        pairs = tuple((str(t), str(v)) for t, v in values)
        for info_type, _ in pairs:
            if info_type not in INFO_TYPES:
                raise ValueError(f"unknown info type {info_type[:40]!r}")
        return _compile_context(pairs)

    def __repr__(self) -> str:
        return f"PhiContext(<{len(self.group_types)} patterns>)"

    def __bool__(self) -> bool:
        return self.pattern is not None

    def matches(self, text: str) -> Iterator[Span]:
        """Non-overlapping context matches in ``text``, leftmost, longest variant first."""
        if self.pattern is None:
            return
        folded = text.casefold()
        if not any(anchor in folded for anchor in self.anchors):
            return
        pos, size = 0, len(text)
        while pos < size and (m := self.pattern.search(text, pos)) is not None:
            start, end = m.span()
            index = int(m.lastgroup[1:]) if m.lastgroup else -1
            left, right = self.sides[index] if index >= 0 else (True, True)
            if (
                end > start
                and not (left and start > 0 and _is_word(text[start - 1]))
                and not (right and end < size and _is_word(text[end]))
            ):
                yield Span(start, end, self.group_types[index], True)
                pos = end
            else:
                pos = start + 1


@functools.lru_cache(maxsize=64)
def _compile_context(pairs: tuple[tuple[str, str], ...]) -> PhiContext:
    variants: dict[str, tuple[_Variant, str]] = {}
    for info_type, raw in pairs:
        for one in raw.split("\\"):
            if len(one.strip()) < 2:
                continue
            for variant in _variants(info_type, one):
                known = variants.get(variant.fragment)
                if known is None or known[0].weight < variant.weight:
                    variants[variant.fragment] = (variant, info_type)
    if not variants:
        return PhiContext()
    ordered = sorted(variants.values(), key=lambda vt: (-vt[0].weight, vt[0].fragment))
    pattern = re.compile(
        "|".join(f"(?P<g{i}>{v.fragment})" for i, (v, _) in enumerate(ordered)),
        re.IGNORECASE,
    )
    return PhiContext(
        pattern,
        tuple(info_type for _, info_type in ordered),
        frozenset(v.anchor for v, _ in ordered),
        tuple((v.left, v.right) for v, _ in ordered),
    )


EMPTY_CONTEXT = PhiContext()


_FOLD_EXTRA = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "đ": "d",
                             "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th"})


def ascii_fold(text: str) -> str:
    """Latin text without diacritics ("Großkopf Sören" -> "Grosskopf Soren").

    Burned-in annotations are often rendered in ASCII-only fonts, and OCR reads them
    back that way: matching the folded form of a context value catches them.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# --- spans -----------------------------------------------------------------------------

_NAME_GAP = _lazy(r"[\s,^=・·]*")


def _candidates(text: str, ctx: PhiContext | None) -> Iterator[tuple[Span, int]]:
    """Every detection as (span, priority); lower priority wins ties."""
    if ctx is not None:
        for span in ctx.matches(text):
            yield span, -1
    run = max(map(len, _DIGIT_RUN.findall(text)), default=0)
    for info_type, detect, gate in _DETECTORS:
        if not gate(text, run):
            continue
        for start, end in detect(text):
            if end > start:
                yield Span(start, end, info_type), _PRIORITY[info_type]


def _merge_names(text: str, spans: list[Span]) -> list[Span]:
    """Join name components found next to each other ("Yamada Tarou", "山田太郎")."""
    out: list[Span] = []
    for span in spans:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.from_context
            and span.from_context
            and prev.info_type == span.info_type == "PERSON_NAME"
            and _NAME_GAP.fullmatch(text, prev.end, span.start)
        ):
            out[-1] = Span(prev.start, span.end, "PERSON_NAME", True)
        else:
            out.append(span)
    return out


def find_spans(
    text: str,
    ctx: PhiContext | None,
    *,
    include: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[Span]:
    """Sensitive spans of ``text``, sorted and non-overlapping.

    Overlaps resolve to the longest span; on equal length a context match wins, then the
    generic detector order (e-mail, URL, IP, SSN, date, phone, age, record number).
    ``include`` restricts detection to those info types (None = all). ``exclude`` drops
    spans *after* overlap resolution, so excluded text also shields what it contains
    (an excluded DATE "20230514" is not then taken as a record number). Placeholders this
    module writes (``[CTX]``, ``[PERSON_NAME]``...) are never detected.
    """
    if not text:
        return []
    taken = bytearray(len(text))
    for m in _PLACEHOLDER_RE.finditer(text):
        taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    found = [
        (span, prio)
        for span, prio in _candidates(text, ctx)
        if include is None or span.info_type in include
    ]
    found.sort(key=lambda sp: (sp[0].start - sp[0].end, sp[1], sp[0].start))
    accepted: list[Span] = []
    for span, _ in found:
        if any(taken[span.start : span.end]):
            continue
        taken[span.start : span.end] = b"\x01" * (span.end - span.start)
        accepted.append(span)
    accepted.sort()
    return [s for s in _merge_names(text, accepted) if s.info_type not in exclude]


def _splice(text: str, spans: Iterable[Span], replace: Callable[[Span], str]) -> str:
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos : span.start])
        parts.append(replace(span))
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


def clean_descriptor(text: str, ctx: PhiContext | None) -> str:
    """PS3.15 Clean Descriptors / Google ``cleanDescriptors`` for one free-text value.

    Phrases matching the instance's own identifying values become ``[CTX]``; generic
    detections become ``[<INFO_TYPE>]``. Repeated until nothing changes, so the result is
    idempotent: ``clean_descriptor(clean_descriptor(t, c), c) == clean_descriptor(t, c)``.
    """
    for _ in range(4):
        spans = find_spans(text, ctx)
        if not spans:
            return text
        text = _splice(text, spans, lambda s: CTX_MARKER if s.from_context else f"[{s.info_type}]")
    return text


# --- TextConfig transformations ------------------------------------------------------------

_REPLACE_ALL = Transformation(TransformationKind.REPLACE_WITH_INFO_TYPE)


def _select(info_type: str, config: TextConfig) -> Transformation | None:
    """The transformation for spans of ``info_type``, or None to leave them as they are.

    ``additional_transformations`` override ``transformations``; without any
    ``transformations`` every detected span is replaced by its info type (Google's
    default). Within a list, one naming the info type beats a catch-all (empty
    ``info_types``), and the first listed wins.
    """
    if info_type in config.exclude_info_types:
        return None
    for group in (config.additional_transformations, config.transformations or (_REPLACE_ALL,)):
        specific = next((t for t in group if info_type in t.info_types), None)
        if specific is not None:
            return specific
        catch_all = next((t for t in group if not t.info_types), None)
        if catch_all is not None:
            return catch_all
    return None


def _placeholder(info_type: str) -> str:
    return CTX_MARKER if info_type == CONTEXT else f"[{info_type}]"


def _shift_text(value: str, date_shifter: DateShifter) -> str | None:
    parsed = parse_date(value)
    if parsed is None:
        return None
    day, render = parsed
    try:
        return render(date_shifter(day))
    except (OverflowError, ValueError):
        return None


def _transform(
    value: str,
    info_type: str,
    transformation: Transformation,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    kind = transformation.kind
    if kind is TransformationKind.REPLACE_WITH_INFO_TYPE:
        return _placeholder(info_type)
    if kind is TransformationKind.REDACT:
        return ""
    if kind is TransformationKind.CHARACTER_MASK:
        return re.sub(r"\S", lambda _: transformation.masking_character, value)
    if kind is TransformationKind.CRYPTO_HASH:
        return hasher(value)
    # DATE_SHIFT: only dates move; a date that cannot be shifted is replaced, never kept.
    if info_type != "DATE":
        return value
    shifted = _shift_text(value, date_shifter)
    return shifted if shifted is not None else _placeholder(info_type)


def apply_text_config(
    text: str,
    ctx: PhiContext | None,
    config: TextConfig,
    *,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    """Transform the sensitive spans of ``text`` as a Google ``TextConfig`` says.

    Parameters
    ----------
    text
        Free text (one DICOM value).
    ctx
        The instance's context values, or None for generic detection only.
    config
        Transformations; see :func:`_select` for which one applies to a span.
    hasher
        ``cryptoHashConfig``: the caller's keyed HMAC (keys never come from config files).
    date_shifter
        ``dateShiftConfig``: moves a date by the patient's keyed offset; the date is
        written back in the format it was found in.
    """
    spans = find_spans(text, ctx, exclude=frozenset(config.exclude_info_types))
    if not spans:
        return text

    def replace(span: Span) -> str:
        value = text[span.start : span.end]
        chosen = _select(span.info_type, config)
        if chosen is None:
            return value
        return _transform(value, span.info_type, chosen, hasher, date_shifter)

    return _splice(text, spans, replace)


_DICOM_PARTIAL_DATE = _lazy(r"(?P<y>\d{4})(?P<m>\d{2})?(?P<rest>.*)")


def _shift_whole_date(value: str, date_shifter: DateShifter) -> str | None:
    """Shift a DA/DT value, also the partial ``YYYY`` / ``YYYYMM`` precisions DICOM allows."""
    shifted = _shift_text(value, date_shifter)
    if shifted is not None:
        return shifted
    m = _DICOM_PARTIAL_DATE.fullmatch(value.strip())
    if m is None or (m["rest"] and not re.fullmatch(r"[+-]\d{4}", m["rest"])):
        return None
    base = _valid(int(m["y"]), int(m["m"] or 1), 1)
    if base is None:
        return None
    try:
        new = date_shifter(base)
    except (OverflowError, ValueError):
        return None
    return f"{new.year:04d}" + (f"{new.month:02d}" if m["m"] else "") + m["rest"]


def transform_whole_value(
    value: str,
    info_type: str,
    config: TextConfig,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    """Transform a DICOM value that is, as a whole, one ``info_type`` (a PN, DA, DT, AS).

    Each of several values (``\\`` separated) is transformed on its own. Character masking
    keeps the DICOM delimiters ``^`` and ``=`` so a masked name stays a valid PN.
    ``dateShiftConfig`` on a DATE that cannot be read gives an empty value rather than
    keeping the original; on other info types it leaves the value as is.
    """
    chosen = _select(info_type, config)
    if chosen is None or not value:
        return value
    out: list[str] = []
    for one in value.split("\\"):
        if not one.strip():
            out.append(one)
        elif chosen.kind is TransformationKind.CHARACTER_MASK:
            out.append(re.sub(r"[^\s^=]", lambda _: chosen.masking_character, one))
        elif chosen.kind is TransformationKind.DATE_SHIFT and info_type == "DATE":
            out.append(_shift_whole_date(one, date_shifter) or "")
        else:
            out.append(_transform(one, info_type, chosen, hasher, date_shifter))
    return "\\".join(out)
