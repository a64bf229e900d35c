"""Filter files (Google DicomFilterConfig format): parsing, errors, dedupe, round trip."""

from __future__ import annotations

import pytest

from dicom_deid.cohort.filter_file import (
    FilterEntry,
    FilterSet,
    parse_filter,
    read_filter,
    validate_uid,
)
from dicom_deid.errors import FilterFileError

TEXT = (
    "/studies/1.2.3\n"
    "/studies/1.2.4/series/5.6\n"
    "/studies/1.2.4/series/5.7/instances/8.9.10\n"
)


def test_round_trip_and_levels() -> None:
    fs = parse_filter(TEXT)
    assert fs.to_text() == TEXT
    assert parse_filter(fs.to_text()) == fs
    assert [e.level for e in fs] == ["study", "series", "instance"]
    assert fs.entries[2] == FilterEntry("1.2.4", "5.7", "8.9.10")


def test_crlf_and_trailing_blank_lines() -> None:
    crlf = TEXT.replace("\n", "\r\n") + "\r\n\r\n"
    assert parse_filter(crlf) == parse_filter(TEXT)
    assert parse_filter(TEXT.rstrip("\n")) == parse_filter(TEXT)


def test_dedupe_and_covered_lines_sorted() -> None:
    text = (
        "/studies/9.9/series/1/instances/2\n"
        "/studies/1.2.3/series/4\n"          # covered by the study line
        "/studies/1.2.3\n"
        "/studies/1.2.3\n"                   # duplicate
        "/studies/9.9/series/1\n"            # covers the instance line above
        "/studies/9.9/series/2/instances/3\n"
        "/studies/9.9/series/2/instances/3\n"
    )
    assert parse_filter(text).to_text() == (
        "/studies/1.2.3\n/studies/9.9/series/1\n/studies/9.9/series/2/instances/3\n"
    )


def test_matches() -> None:
    fs = parse_filter(TEXT)
    assert fs.matches("1.2.3", "any", "any")
    assert fs.matches("1.2.4", "5.6", "1")
    assert not fs.matches("1.2.4", "5.8", "1")
    assert fs.matches("1.2.4", "5.7", "8.9.10")
    assert not fs.matches("1.2.4", "5.7", "8.9.11")
    assert FilterEntry("1.2.4", "5.6").matches("1.2.4", "5.6", "7")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "empty filter file"),
        ("\n\r\n", 1, "empty filter file"),
        ("/studies/1.2\n/studies/1.02\n", 2, "leading zero"),
        ("/studies/1.2\n/studies/1..2\n", 2, "empty component"),
        ("/studies/1.2a\n", 1, "not digits"),
        ("/studies/" + "1." * 32 + "1\n", 1, "longer than 64"),
        ("/studies/1\n/studies/1.2/instances/3\n", 2, "broken hierarchy"),
        ("/studies/1/series/2/instances/3/instances/4", 1, "broken hierarchy"),
        ("/series/1\n", 1, "broken hierarchy"),
        ("/studies/1/frames/2\n", 1, "unknown segment 'frames'"),
        ("/studies/1\n/studies/1/series\n", 2, "missing UID"),
        ("/studies/1/\n", 1, "trailing '/'"),
        ("studies/1\n", 1, "must start with"),
        ("/studies/1\n\n/studies/2\n", 2, "blank line"),
        ("/studies//series/2\n", 1, "empty study UID"),
    ],
)
def test_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(FilterFileError) as info:
        parse_filter(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert fragment in str(info.value)


def test_messages_stay_short() -> None:
    with pytest.raises(FilterFileError) as info:
        parse_filter("/studies/1/" + "x" * 500 + "/9\n")
    assert len(str(info.value)) < 120


def test_entry_validates_hierarchy() -> None:
    with pytest.raises(FilterFileError, match="needs its series"):
        FilterEntry("1.2", None, "3")
    with pytest.raises(FilterFileError, match="invalid series UID"):
        FilterEntry("1.2", "01")
    assert validate_uid("0.0.1") == "0.0.1"


def test_read_and_write(tmp_path) -> None:
    fs = FilterSet.of([FilterEntry("1.2"), FilterEntry("1.3", "4")])
    path = fs.write(tmp_path / "sub" / "filter.txt")
    assert path.read_bytes() == b"/studies/1.2\n/studies/1.3/series/4\n"
    assert read_filter(path) == fs
    (tmp_path / "bad.txt").write_bytes(b"/studies/1\n/studies/\xc3\xa9\n")
    with pytest.raises(FilterFileError, match="line 2: non-ASCII"):
        read_filter(tmp_path / "bad.txt")
    assert FilterSet().to_text() == ""
