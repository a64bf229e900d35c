"""Shift DICOM DA and DT values by a whole number of days, keeping their precision."""

from __future__ import annotations

import re
from datetime import date, timedelta

_DA_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")
_DT_RE = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$"
)


def _shift_ymd(year: str, month: str | None, day: str | None, days: int) -> str | None:
    try:
        base = date(int(year), int(month or 1), int(day or 1))
        shifted = base + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    text = f"{shifted.year:04d}"
    if month is not None:
        text += f"{shifted.month:02d}"
    if day is not None:
        text += f"{shifted.day:02d}"
    return text


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (YYYYMMDD, or the legacy YYYY.MM.DD); None when it is not a date."""
    text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    m = _DA_RE.match(text)
    if not m:
        return None
    return _shift_ymd(m.group(1), m.group(2), m.group(3), days)


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT value's date part; time of day and UTC offset are kept."""
    m = _DT_RE.match(value.strip())
    if not m:
        return None
    ymd = _shift_ymd(m.group(1), m.group(2), m.group(3), days)
    if ymd is None:
        return None
    return ymd + (m.group(4) or "") + (m.group(5) or "")
