"""Dates, read in one place: DICOM DA/DT/TM values (typed and shifted) and written dates."""

from __future__ import annotations

import datetime
from datetime import UTC, timedelta, timezone

import pytest

from dicom_deid.dicom.dates import (
    parse_da,
    parse_dt,
    parse_tm,
    parse_written,
    shift_da,
    shift_dicom_date,
    shift_dt,
)


def _plus(days: int):
    return lambda day: day + timedelta(days=days)


def test_da_dt_shift_keeps_precision() -> None:
    assert shift_da("20230514", 3) == "20230517"
    assert shift_da("20231230", 5) == "20240104"
    assert shift_da("2023.05.14", 1) == "20230515"
    assert shift_da("2023", 400) == "2024"
    assert shift_da("garbage", 1) is None
    assert shift_dt("20230514101530.123+0100", -14) == "20230430101530.123+0100"
    assert shift_dt("202305", 40) == "202306"
    assert shift_dt("2023051410", 1) == "2023051510"
    assert shift_dt("20230514+0100", 1) == "20230515+0100"
    assert shift_dt("2023051", 1) is None  # odd digits: not a DT


@pytest.mark.parametrize(("text", "expected"), [
    ("20230514", datetime.date(2023, 5, 14)),
    ("2023.05.14", datetime.date(2023, 5, 14)),
    ("20230230", None),
    ("202305", None),  # DA is a whole date; partial precision is DT's
    ("", None),
])
def test_parse_da(text: str, expected: datetime.date | None) -> None:
    assert parse_da(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("101530.5", datetime.time(10, 15, 30, 500000)),
    ("1015", datetime.time(10, 15)),
    ("10:15:30", datetime.time(10, 15, 30)),
    ("235960", datetime.time(23, 59, 59)),  # a leap second
    ("1015.5", None),  # a fraction only after seconds
    ("25", None),
])
def test_parse_tm(text: str, expected: datetime.time | None) -> None:
    assert parse_tm(text) == expected


def test_parse_dt_is_utc_and_reads_every_precision() -> None:
    assert parse_dt("2023") == datetime.datetime(2023, 1, 1, tzinfo=UTC)
    assert parse_dt("20230514101530.25+0200") == datetime.datetime(
        2023, 5, 14, 10, 15, 30, 250000, tzinfo=timezone(timedelta(hours=2))).astimezone(UTC)
    assert parse_dt("20230514.5") is None  # a fraction only after seconds (PS3.5 6.2)
    assert parse_dt("2023051") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("May 14, 2023", "Jan 2, 2024"),
        ("14 MAY 2023", "2 JAN 2024"),
        ("14th September 2023", "2nd January 2024"),
        ("14 Sept. 2023", "2 Jan. 2024"),
        ("2023-5-14", "2024-1-2"),
        ("14/05/2023", "02/01/2024"),
        ("05/14/2023", "01/02/2024"),
        ("2023年5月14日", "2024年1月2日"),
    ],
)
def test_written_dates_round_trip_their_format(text: str, expected: str) -> None:
    parsed = parse_written(text)
    assert parsed is not None
    assert parsed[1](datetime.date(2024, 1, 2)) == expected


@pytest.mark.parametrize("text", ["2023-13-01", "31/31/2023", "Smarch 3, 2023", "12345678"])
def test_written_dates_reject_non_dates(text: str) -> None:
    assert parse_written(text) is None


def test_shift_dicom_date_keeps_partial_precision_and_offset() -> None:
    assert shift_dicom_date("20230514", _plus(3)) == "20230517"
    assert shift_dicom_date("202305", _plus(40)) == "202306"
    assert shift_dicom_date("2023+0100", _plus(400)) == "2024+0100"
    assert shift_dicom_date("20230514101530+0100", _plus(1)) == "20230515101530+0100"
    assert shift_dicom_date("2023051", _plus(1)) is None
    assert shift_dicom_date("garbage", _plus(1)) is None
