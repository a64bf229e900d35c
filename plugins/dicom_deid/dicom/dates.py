"""Dates, read in one place: DICOM DA, DT and TM values, and dates as people write them.

DICOM values are typed for the metadata export (:func:`parse_da`, :func:`parse_tm`,
:func:`parse_dt`) and shifted for de-identification keeping their precision
(:func:`shift_da`, :func:`shift_dt`), from one grammar per VR (PS3.5 6.2: components
truncated from the right, a fraction only after seconds). Dates in free text ("14 May
2023", "05/14/2023", "2023年5月14日"...) are read with :func:`parse_written`, which also
returns how to write another date in the same format, so a shifted or cleaned text keeps
its style.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime

__all__ = [
    "MONTHS",
    "MONTH_RE",
    "ORDINAL_SUFFIX",
    "DateShifter",
    "parse_da",
    "parse_dt",
    "parse_tm",
    "parse_written",
    "shift_da",
    "shift_dicom_date",
    "shift_dt",
    "shift_written",
    "valid_date",
]

DateShifter = Callable[[date], date]
"""Moves a date (by a patient's keyed offset); may raise OverflowError or ValueError."""


@functools.cache
def _compiled(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compile on first use: most runs read no written dates, and start-up counts."""
    return re.compile(pattern, flags)


class _Lazy:
    """A pattern compiled by :func:`_compiled` when first matched."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags = pattern, flags

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return _compiled(self.pattern, self.flags).fullmatch(text)


def _lazy(pattern: str, flags: int = 0) -> _Lazy:
    return _Lazy(pattern, flags)


# --- DICOM values ------------------------------------------------------------------------

_DA = _lazy(r"(?P<y>\d{4})(?P<m>\d{2})?(?P<d>\d{2})?")
_TM = r"(?P<hh>\d{2})(?:(?P<mi>\d{2})(?:(?P<ss>\d{2})(?:\.(?P<frac>\d{1,6}))?)?)?"
_DT = _lazy(r"(?P<y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})(?:" + _TM + r")?)?)?"
            r"(?P<tz>[+-]\d{4})?")
_TM_ONLY = _lazy(_TM)


def parse_da(s: str) -> date | None:
    """DA ``YYYYMMDD`` (also the old ``YYYY.MM.DD``) as a date; None when not one."""
    if len(s) == 10 and s[4] == "." and s[7] == ".":
        s = s.replace(".", "")
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def parse_tm(s: str) -> dtime | None:
    """TM ``HH[MM[SS[.FFFFFF]]]`` (also the old ``HH:MM:SS``); a leap second becomes :59."""
    if ":" in s and len(s) >= 5:
        s = s.replace(":", "")
    m = _TM_ONLY.fullmatch(s)
    if m is None:
        return None
    try:
        return dtime(int(m["hh"]), int(m["mi"] or 0), min(int(m["ss"] or 0), 59),
                     int((m["frac"] or "0").ljust(6, "0")))
    except ValueError:
        return None


def parse_dt(s: str) -> datetime | None:
    """DT ``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]`` as UTC (no offset: taken as UTC)."""
    m = _DT.fullmatch(s)
    if m is None:
        return None
    try:
        tz = UTC
        if off := m["tz"]:
            sign = -1 if off[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:])))
        value = datetime(int(m["y"]), int(m["m"] or 1), int(m["d"] or 1), int(m["hh"] or 0),
                         int(m["mi"] or 0), min(int(m["ss"] or 0), 59),
                         int((m["frac"] or "0").ljust(6, "0")), tzinfo=tz)
    except ValueError:
        return None
    return value.astimezone(UTC)


def _shift_ymd(m: re.Match[str], shifter: DateShifter) -> str | None:
    """The year, month and day groups of ``m`` shifted, at the precision they were given."""
    try:
        shifted = shifter(date(int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)))
    except (ValueError, OverflowError):
        return None
    text = f"{shifted.year:04d}"
    if m["m"] is not None:
        text += f"{shifted.month:02d}"
    if m["d"] is not None:
        text += f"{shifted.day:02d}"
    return text


def _by_days(days: int) -> DateShifter:
    return lambda day: day + timedelta(days=days)


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (YYYY[MM[DD]], or the legacy YYYY.MM.DD) by ``days``, keeping its
    precision; None when it is not a date."""
    text = value.strip()
    if len(text) == 10:
        text = text.replace(".", "")
    m = _DA.fullmatch(text)
    return None if m is None else _shift_ymd(m, _by_days(days))


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT value's date part by ``days``; time of day and UTC offset are kept."""
    text = value.strip()
    m = _DT.fullmatch(text)
    if m is None:
        return None
    ymd = _shift_ymd(m, _by_days(days))
    return None if ymd is None else ymd + text[m.end("d") if m["d"] else m.end(
        "m") if m["m"] else 4:]


# --- dates as people write them ----------------------------------------------------------

# English names, not calendar.month_name: that one follows the process locale.
MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July",
                          "August", "September", "October", "November", "December")
_MONTH_BY_PREFIX = {name[:3].lower(): i for i, name in enumerate(MONTHS, start=1)}
MONTH_RE = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])"
)
ORDINAL_SUFFIX = r"(?:st|nd|rd|th)?"
_MIN_YEAR, _MAX_YEAR = 1800, 2200


def _month_number(token: str) -> int | None:
    word = token.rstrip(".").lower()
    number = _MONTH_BY_PREFIX.get(word[:3])
    if number is None or not MONTHS[number - 1].lower().startswith(word):
        return None if word != "sept" else 9
    return number


def _render_month(number: int, like: str) -> str:
    """Month ``number`` written like ``like``: abbreviated or full, same case, same dot."""
    word = like.rstrip(".")
    full = MONTHS[number - 1]
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


_DateRender = Callable[[date], str]

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
    rf"(?P<d>\d{{1,2}})(?P<o>{ORDINAL_SUFFIX})(?P<s1>[\s\-]+)(?P<mon>[a-z]+\.?)(?P<s2>[\s\-,]+)(?P<y>\d{{4}})",
    re.IGNORECASE,
)
_P_MONDY = _lazy(
    rf"(?P<mon>[a-z]+\.?)(?P<s1>\s+)(?P<d>\d{{1,2}})(?P<o>{ORDINAL_SUFFIX})(?P<s2>,?\s+)(?P<y>\d{{4}})",
    re.IGNORECASE,
)
_P_JA = _lazy(
    r"(?P<y>\d{4})(?P<s1>\s*年\s*)(?P<m>\d{1,2})(?P<s2>\s*月\s*)(?P<d>\d{1,2})(?P<s3>\s*日)"
)


def valid_date(y: int, m: int, d: int) -> date | None:
    if not _MIN_YEAR <= y <= _MAX_YEAR:
        return None
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _parse_numeric(text: str) -> tuple[date, _DateRender] | None:
    if m := _P_YMD.fullmatch(text):
        y, mo, d, s, rest = m["y"], m["m"], m["d"], m["s"], m["rest"] or ""
        day = valid_date(int(y), int(mo), int(d))
        if day is None:
            return None
        p = _padded((mo, d), True)
        return day, lambda n: f"{n.year:04d}{s}{_pad(n.month, p)}{s}{_pad(n.day, p)}{rest}"
    if m := _P_DICOM.fullmatch(text):
        y, mo, d, tail = m["y"], m["m"], m["d"], (m["rest"] or "") + (m["tz"] or "")
        day = valid_date(int(y), int(mo), int(d))
        if day is None:
            return None
        return day, lambda n: f"{n.year:04d}{n.month:02d}{n.day:02d}{tail}"
    if m := _P_XYY.fullmatch(text):
        a, b, s, y = m["a"], m["b"], m["s"], m["y"]
        p = _padded((a, b), True)
        # "/" is read month-first (US) unless impossible; "." and "-" day-first.
        for day_first in (False, True) if s == "/" else (True, False):
            dd, mm = (a, b) if day_first else (b, a)
            day = valid_date(int(y), int(mm), int(dd))
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
        day = valid_date(int(y), int(mo), int(d))
        if day is None:
            return None
        s1, s2, s3 = m["s1"], m["s2"], m["s3"]
        p = _padded((mo, d), False)
        return day, lambda n: f"{n.year:04d}{s1}{_pad(n.month, p)}{s2}{_pad(n.day, p)}{s3}"
    return None


def _named_render(m: re.Match[str], day_first: bool) -> _DateRender:
    d, o, mon, s1, s2 = m["d"], m["o"], m["mon"], m["s1"], m["s2"]
    p = _padded((d,), False)

    def render(n: date) -> str:
        dd = _pad(n.day, p) + (_ordinal(n.day) if o else "")
        if o.isupper():
            dd = dd.upper()
        month = _render_month(n.month, mon)
        if day_first:
            return f"{dd}{s1}{month}{s2}{n.year:04d}"
        return f"{month}{s1}{dd}{s2}{n.year:04d}"

    return render


def _parse_named(text: str) -> tuple[date, _DateRender] | None:
    for pattern, day_first in ((_P_DMONY, True), (_P_MONDY, False)):
        m = pattern.fullmatch(text)
        if m is None:
            continue
        number = _month_number(m["mon"])
        day = None if number is None else valid_date(int(m["y"]), number, int(m["d"]))
        return None if day is None else (day, _named_render(m, day_first))
    return None


def parse_written(text: str) -> tuple[date, Callable[[date], str]] | None:
    """Read a date written in one of the supported formats.

    Returns the date and a function writing another date in exactly the same format
    (separators, zero padding, month name style, time-of-day suffix kept), or None.

    >>> day, render = parse_written("May 14, 2023")
    >>> render(date(2024, 1, 2))
    'Jan 2, 2024'
    """
    text = text.strip()
    return _parse_numeric(text) or _parse_named(text)


def shift_written(value: str, shifter: DateShifter) -> str | None:
    """A written date moved by ``shifter`` and written in its own format; None when
    ``value`` is not a date or the shifted one cannot be written."""
    parsed = parse_written(value)
    if parsed is None:
        return None
    day, render = parsed
    try:
        return render(shifter(day))
    except (OverflowError, ValueError):
        return None


_DICOM_PARTIAL = _lazy(r"(?P<y>\d{4})(?P<m>\d{2})?(?P<tz>[+-]\d{4})?")


def shift_dicom_date(value: str, shifter: DateShifter) -> str | None:
    """Shift a DA or DT value as a whole, by a patient's shifter: a written date in its own
    format, else the partial ``YYYY`` / ``YYYYMM`` precisions DICOM allows (the first day
    of the period is shifted; the precision and any UTC offset are kept)."""
    shifted = shift_written(value, shifter)
    if shifted is not None:
        return shifted
    m = _DICOM_PARTIAL.fullmatch(value.strip())
    if m is None:
        return None
    base = valid_date(int(m["y"]), int(m["m"] or 1), 1)
    if base is None:
        return None
    try:
        new = shifter(base)
    except (OverflowError, ValueError):
        return None
    return f"{new.year:04d}" + (f"{new.month:02d}" if m["m"] else "") + (m["tz"] or "")
