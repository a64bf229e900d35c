"""The identifying values of one instance, compiled for matching inside free text.

Each value (a name, an ID, a date, an institution...) is expanded into the spellings it
takes in free text (components in any order, IDs without leading zeros or prefixes,
dates in common written formats) and all are compiled into one regular expression per
instance (:class:`PhiContext`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from dicom_deid.config.model import INFO_TYPES
from dicom_deid.dicom.dates import MONTHS, ORDINAL_SUFFIX, parse_written

from .chars import CJK_RE, is_word, lazy_pattern
from .spans import Span

_NAME_PARTICLES = frozenset(
    {"van", "von", "de", "der", "den", "del", "della", "di", "da", "du", "dos", "das", "la"}
    | {"le", "st", "jr", "sr", "mr", "mrs", "ms", "dr", "md", "phd"}
)
_ID_RE = lazy_pattern(r"(?P<prefix>[A-Za-z]*)(?P<sep>[\s:#\-]*)(?P<zeros>0*)(?P<core>\d+)")


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
        fragment, weight, anchor, not CJK_RE.match(sample[0]), not CJK_RE.match(sample[-1])
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
    parsed = parse_written(digits[:8] if re.fullmatch(r"\d{8}.*", digits) else digits)
    if parsed is None:
        if variant := _literal(raw):
            yield variant
        return
    day = parsed[0]
    y, m, d = f"{day.year:04d}", day.month, day.day
    mp = f"0?{m}" if m < 10 else str(m)
    dp = f"0?{d}" if d < 10 else str(d)
    full = MONTHS[m - 1]
    mon = f"(?:{full[:3]}|{full}|Sept)\\.?" if m == 9 else f"(?:{full[:3]}|{full})\\.?"
    for fragment, sample, weight in (
        (f"{y}{m:02d}{d:02d}", "0", 8),
        (f"{y}[-/.]{mp}[-/.]{dp}", "0", 10),
        (f"{dp}[-/.]{mp}[-/.]{y}", "0", 10),
        (f"{mp}[-/.]{dp}[-/.]{y}", "0", 10),
        (f"{dp}{ORDINAL_SUFFIX}[\\s\\-]+{mon}[\\s\\-,]+{y}", "0", 11),
        (f"{mon}\\s+{dp}{ORDINAL_SUFFIX},?\\s+{y}", "a0", 12),
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
                and not (left and start > 0 and is_word(text[start - 1]))
                and not (right and end < size and is_word(text[end]))
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
