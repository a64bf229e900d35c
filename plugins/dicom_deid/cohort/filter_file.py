"""Filter files: the cohort selection handed to de-identification.

The format is Google Cloud Healthcare API's ``DicomFilterConfig``: one line per
study, series or instance, ``/studies/UID[/series/UID[/instances/UID]]``, separated by
``\\n`` or ``\\r\\n``. A study line selects all its series; a series line all its
instances. Each line is parsed once into a validated, immutable :class:`FilterEntry`
and the whole file into a normalised :class:`FilterSet` (deduplicated, lines covered by
a broader line dropped, sorted), so the rest of the pipeline never re-parses strings.

>>> fs = parse_filter("/studies/1.2.3\\n/studies/1.2.3/series/4.5\\n")
>>> fs.to_text()
'/studies/1.2.3\\n'
>>> fs.matches("1.2.3", "9.9", "7.7")
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from dicom_deid.errors import FilterFileError

__all__ = [
    "FilterEntry",
    "FilterSet",
    "parse_filter",
    "read_filter",
    "uid_problem",
    "validate_uid",
]

MAX_UID_LENGTH = 64
_UID_COMPONENT = re.compile(r"0|[1-9][0-9]*")
_SEGMENTS = ("studies", "series", "instances")
_LEVEL_NAMES = {"studies": "study", "series": "series", "instances": "instance"}
_WORD = re.compile(r"[a-z]{1,20}")

Level = Literal["study", "series", "instance"]




def _echo(text: str) -> str:
    """A fragment for an error message: a short lower-case word (a misspelt segment name)
    quoted, anything else left out. A file given as a filter file by mistake (a key, a
    list of identifiers) must not come back in its error."""
    return f" {text!r}" if _WORD.fullmatch(text) else ""


def uid_problem(uid: str) -> str | None:
    """What makes ``uid`` no PS3.5 §9.1 UID (``empty``, ``leading zero``...), or None
    when it is one; never the value."""
    if not uid:
        return "empty"
    if len(uid) > MAX_UID_LENGTH:
        return f"longer than {MAX_UID_LENGTH} characters"
    for component in uid.split("."):
        if not _UID_COMPONENT.fullmatch(component):
            if not component:
                return "empty component"
            return "leading zero" if component[:1] == "0" else "not digits"
    return None


def validate_uid(uid: str, what: str = "UID") -> str:
    """Return ``uid`` if it is a valid PS3.5 §9.1 UID, else raise :class:`FilterFileError`
    saying what is wrong (never the value: it may be anything but a UID).

    Components are digits without leading zeros (except ``0`` itself), separated by
    single dots, at most 64 characters in total.

    >>> validate_uid("1.2.840.10008.1.2")
    '1.2.840.10008.1.2'
    """
    problem = uid_problem(uid)
    if problem is None:
        return uid
    raise FilterFileError(f"empty {what}" if problem == "empty" else f"invalid {what}: {problem}")


@dataclass(frozen=True)
class FilterEntry:
    """One filter line: a whole study, one series of it, or one instance of that series."""

    study_uid: str
    series_uid: str | None = None
    instance_uid: str | None = None

    def __post_init__(self) -> None:
        validate_uid(self.study_uid, "study UID")
        if self.series_uid is not None:
            validate_uid(self.series_uid, "series UID")
        if self.instance_uid is not None:
            if self.series_uid is None:
                raise FilterFileError("an instance needs its series")
            validate_uid(self.instance_uid, "instance UID")

    @property
    def level(self) -> Level:
        """The granularity of the line."""
        if self.instance_uid is not None:
            return "instance"
        return "series" if self.series_uid is not None else "study"

    @property
    def sort_key(self) -> tuple[str, str, str]:
        """Key for a stable, text-sorted order (broader lines first)."""
        return (self.study_uid, self.series_uid or "", self.instance_uid or "")

    @classmethod
    def parse(cls, line: str) -> FilterEntry:
        """Parse ``/studies/UID[/series/UID[/instances/UID]]`` (surrounding blanks ignored)."""
        text = line.strip()
        if not text.startswith("/"):
            raise FilterFileError("must start with '/studies/'")
        if text.endswith("/"):
            raise FilterFileError("trailing '/'")
        parts = text[1:].split("/")
        if len(parts) % 2:
            after = _echo(parts[-1])
            raise FilterFileError(f"missing UID after{after}" if after else "missing UID")
        uids: list[str | None] = []
        for index in range(0, len(parts), 2):
            segment, uid = parts[index], parts[index + 1]
            depth = index // 2
            if segment not in _SEGMENTS:
                raise FilterFileError(f"unknown segment{_echo(segment)}")
            if depth >= len(_SEGMENTS) or segment != _SEGMENTS[depth]:
                expected = _SEGMENTS[depth] if depth < len(_SEGMENTS) else "end of line"
                raise FilterFileError(
                    f"broken hierarchy: {segment!r} where {expected!r} was expected"
                )
            uids.append(validate_uid(uid, f"{_LEVEL_NAMES[segment]} UID"))
        uids += [None] * (3 - len(uids))
        return cls(str(uids[0]), uids[1], uids[2])

    def to_line(self) -> str:
        """The filter-file line for this entry (no line terminator)."""
        line = f"/studies/{self.study_uid}"
        if self.series_uid is not None:
            line += f"/series/{self.series_uid}"
        if self.instance_uid is not None:
            line += f"/instances/{self.instance_uid}"
        return line

    def matches(self, study_uid: str, series_uid: str | None, sop_uid: str | None) -> bool:
        """Whether an instance (or series/study, with ``None`` below) falls under this line."""
        if study_uid != self.study_uid:
            return False
        if self.series_uid is not None and series_uid != self.series_uid:
            return False
        return self.instance_uid is None or sop_uid == self.instance_uid

    def __str__(self) -> str:
        return self.to_line()


def _normalise(entries: Iterable[FilterEntry]) -> tuple[FilterEntry, ...]:
    """Deduplicate, drop entries covered by a broader one, sort."""
    unique = set(entries)
    studies = {e.study_uid for e in unique if e.level == "study"}
    series = {(e.study_uid, e.series_uid) for e in unique if e.level == "series"}
    kept = [
        e
        for e in unique
        if e.level == "study"
        or (
            e.study_uid not in studies
            and (e.level == "series" or (e.study_uid, e.series_uid) not in series)
        )
    ]
    return tuple(sorted(kept, key=lambda e: e.sort_key))


@dataclass(frozen=True)
class FilterSet:
    """A normalised set of filter entries (deduplicated, no covered lines, sorted)."""

    entries: tuple[FilterEntry, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", _normalise(self.entries))

    @classmethod
    def of(cls, entries: Iterable[FilterEntry]) -> FilterSet:
        """Build a set from any iterable of entries."""
        return cls(tuple(entries))

    def __iter__(self) -> Iterator[FilterEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @cached_property
    def _studies(self) -> frozenset[str]:
        return frozenset(e.study_uid for e in self.entries if e.level == "study")

    @cached_property
    def _series(self) -> frozenset[tuple[str, str | None]]:
        return frozenset((e.study_uid, e.series_uid) for e in self.entries if e.level == "series")

    @cached_property
    def _instances(self) -> frozenset[tuple[str, str | None, str | None]]:
        return frozenset(
            (e.study_uid, e.series_uid, e.instance_uid)
            for e in self.entries
            if e.level == "instance"
        )

    def matches(self, study_uid: str, series_uid: str | None, sop_uid: str | None) -> bool:
        """Whether the instance ``(study, series, sop)`` is selected by any line (O(1))."""
        return (
            study_uid in self._studies
            or (study_uid, series_uid) in self._series
            or (study_uid, series_uid, sop_uid) in self._instances
        )

    def by_level(self, level: Level) -> tuple[FilterEntry, ...]:
        """The entries of one granularity."""
        return tuple(e for e in self.entries if e.level == level)

    def to_text(self) -> str:
        """The filter file text: sorted lines, ``\\n``-terminated ('' when empty)."""
        return "".join(e.to_line() + "\n" for e in self.entries)

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_text` to ``path`` (parents created), readable by its owner only:
        it holds the cohort's original UIDs."""
        import os

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="ascii", newline="") as fh:
            fh.write(self.to_text())
        return target


def parse_filter(text: str) -> FilterSet:
    """Parse filter-file text; errors carry the 1-based line number.

    Blank lines are accepted only at the end of the file; an empty file is an error.
    """
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FilterFileError("empty filter file", line=1)
    entries: list[FilterEntry] = []
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            raise FilterFileError("blank line inside the filter file", line=number)
        try:
            entries.append(FilterEntry.parse(line))
        except FilterFileError as exc:
            raise FilterFileError(exc.reason, line=number) from None
    return FilterSet.of(entries)


def read_filter(path: str | Path) -> FilterSet:
    """Read and parse a filter file (ASCII; UIDs never need more)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FilterFileError("non-ASCII byte", line=line) from None
    return parse_filter(text)
