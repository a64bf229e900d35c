"""The identifying values of one instance, compiled for matching inside free text.

Each value (a name, an ID, a date, an institution...) is expanded into the spellings it
takes in free text (components in any order, IDs without leading zeros or prefixes,
dates in common written formats) and all are compiled into one regular expression per
instance (:class:`PhiContext`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import NamedTuple

from dicom_deid.config.model import INFO_TYPES
from dicom_deid.dicom.dates import MONTHS, ORDINAL_SUFFIX, parse_written

from .chars import (
    CJK_RE,
    KANA_RE,
    ascii_fold,
    fold_map,
    is_word,
    kana_script,
    lazy_pattern,
    umlaut_fold,
)
from .lexicon import fold, lexicon, romanise_kana
from .spans import CTX_MARKER, Span

_NAME_PARTICLES = frozenset(
    {"van", "von", "de", "der", "den", "del", "della", "di", "da", "du", "dos", "das", "la"}
    | {"le", "st", "jr", "sr", "mr", "mrs", "ms", "dr", "md", "phd"}
)
_ID_RE = lazy_pattern(r"(?P<prefix>[A-Za-z]*)(?P<sep>[\s:#\-]*)(?P<zeros>0*)(?P<core>\d+)")
_WORD_TYPES = frozenset({"PERSON_NAME", "STREET_ADDRESS", "LOCATION", "ORGANIZATION_NAME"})
_GLUED_TYPES = frozenset({"PERSON_NAME", "ORGANIZATION_NAME", "STREET_ADDRESS"})
"""Info types whose long words are also found with letters or digits glued on."""
_ID_TYPES = INFO_TYPES - _WORD_TYPES - {
    "DATE", "AGE", "PHONE_NUMBER", "US_SOCIAL_SECURITY_NUMBER"}
"""Info types whose values :func:`_variants` reads as IDs when they look like one."""
_PIECES_RE = lazy_pattern(r"[\s,]+")
_PARTS_RE = lazy_pattern(r"[\^\r\n]+")
_DA_RE = lazy_pattern(r"\d{8}")


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
    ending: bool = False
    """It may take letters glued on (:data:`_ENDING`): CJK ones it took are given back."""
    joined: str = ""
    """The word this form cuts in two ("kowalski" for "kowa lski"): its forms are tried
    only in a text that holds the word once despaced (:func:`despaced`)."""


def _variant(fragment: str, weight: int, anchor: str, sample: str) -> _Variant:
    """A variant whose whole-token sides follow the first and last character of ``sample``."""
    return _Variant(
        fragment, weight, anchor, not CJK_RE.match(sample[0]), not CJK_RE.match(sample[-1])
    )


def _literal_words(raw: str) -> list[str] | None:
    """The words a literal form of ``raw`` is made of; None when it is too short for one."""
    words = [w for w in (w.strip(".,") for w in raw.split()) if w]
    return words if len(" ".join(words)) >= 2 else None


_JOINERS_RE = lazy_pattern(r"[-'\u2019]+")
"""Hyphens and apostrophes inside a word ("Smith-Jones", "O'Neill"): free text drops
them or writes a space instead ("Smith Jones", "ONeill")."""
_JOINED = r"[\s\-'\u2019]*"


def _pieces(words: list[str]) -> list[str]:
    """The words with their hyphens and apostrophes taken out (every match holds these)."""
    return [p for w in words for p in _JOINERS_RE.split(w) if p]


_COMMON_WORDS = frozenset({
    "medical", "medicine", "center", "centre", "hospital", "clinic", "clinical", "health",
    "healthcare", "university", "universitair", "department", "radiology", "imaging",
    "institute", "systems", "diagnostic", "diagnostics", "general", "regional", "national",
    "county", "street", "road", "avenue",
})
"""Words of institutions and addresses that kept text (a manufacturer, a description)
often holds too: a literal's anchor is another of its words when it has one."""


def _anchor_word(words: list[str]) -> str:
    """The anchor of a literal form: its longest word, preferring one that kept text is
    unlikely to hold by chance (every match holds every word, so any would do)."""
    folded = [w.casefold() for w in words]
    rare = [w for w in folded if w not in _COMMON_WORDS]
    return max(rare or folded, key=len)


_INFLECTED = 5
"""A name word of this many letters or more is also found with up to four letters glued
on: inflected ("Kowalczyka", "Kowalczykowi", "Иванова", "Müllers"), or with an initial
("KowalczykJ"), with one or two letters in front ("jkowalski", a login or a mailbox;
"DRHALVORSEN"), or with digits on either side ("KOWALSKI01", "kowalski1957", a numbered
duplicate record); a shorter one would take in too many other words. So is a distinctive
word of an organisation's name ("THORNBURYVH", "thornburyvh.nhs.uk")."""
_ENDING = r"(?:[^\W\d_]{1,4}|\d{1,8})?"
"""Letters or digits glued on (a category class: a class of ranges costs a compile ten
times as long, in every alternation made of it). CJK letters it takes are given back: a
Japanese name is followed by さん, which is no ending of it."""
_LEADING = r"(?:[^\W\d_]{1,2}|(?<!%)\d{1,8})?"
"""One or two letters (initials, a title: "jmkowalski", "DRHALVORSEN") or digits glued
on in front; digits right after a ``%`` are a percent escape's ("%20Janina": the name is
found after the escape, see :func:`_escaped`)."""


_STEMMED = 6
"""A word of this many letters or more that ends in a vowel is also found with that vowel
changed or dropped: Slavic and Baltic names change it with case and gender ("Kowalski" is
written "Kowalska", "Kowalskiego"; "Janina" "Janiny", "Janinie"), the inflections
:data:`_ENDING` alone cannot reach; a shorter one ("Maria") would take in other names."""
_VOWELS = frozenset("aeiouy")
_CHANGED_VOWEL = r"[^\W\d_]?"


def _stem(word: str) -> str | None:
    """``word`` without the vowel it ends in, when it is inflected so (:data:`_STEMMED`)."""
    if len(word) < _STEMMED or not word.isalpha() or CJK_RE.search(word):
        return None
    return word[:-1] if ascii_fold(word[-1]).casefold() in _VOWELS else None


def _glued(pieces: list[str], inflect: bool) -> bool:
    """Whether a literal of ``pieces`` takes letters or digits glued on (:data:`_ENDING`)."""
    last = pieces[-1]
    return inflect and len(last) >= _INFLECTED and last.isalpha() and not CJK_RE.search(last)


def _literal_anchor(pieces: list[str], inflect: bool) -> str:
    """The anchor of a literal's form (:func:`_literal`): a stemmed last word counts by
    its stem, which every spelling of it holds."""
    stem = _stem(pieces[-1]) if _glued(pieces, inflect) else None
    return _anchor_word(pieces if stem is None else [*pieces[:-1], stem])


def _literal(raw: str, inflect: bool = False) -> _Variant | None:
    words = _literal_words(raw)
    if words is None or not (pieces := _pieces(words)):
        return None
    text = " ".join(words)
    fragment = r"[\s,.]*".join(
        _JOINED.join(re.escape(p) for p in _JOINERS_RE.split(w) if p) for w in words)
    variant = _variant(fragment, len(text), _literal_anchor(pieces, inflect), text)
    if _glued(pieces, inflect):
        first, last = pieces[0], pieces[-1]
        lead = _LEADING if first.isalpha() and not CJK_RE.search(first) else ""
        if (stem := _stem(last)) is not None:  # the last letter, changed or dropped
            fragment = fragment[:-len(re.escape(last))] + re.escape(stem) + _CHANGED_VOWEL
        return variant._replace(fragment=lead + fragment + _ENDING, ending=True)
    return variant


_GLUED_TITLE_RE = lazy_pattern(r"(?i)(?:prof|mrs|dr|mr|ms)(?=[^\W\d_]{4,}$)")
"""A title written onto a name component without a space ("DRSMITH^JOHN", a habit of
some PACS for referring physicians): free text writes "Dr Smith" or "John Smith"."""


def untitled(component: str) -> str | None:
    """``component`` without a title glued to its front ("DRWOBBLEFORD" -> "WOBBLEFORD"),
    when it has one and four letters or more are left; else None."""
    m = _GLUED_TITLE_RE.match(component)
    return component[m.end():] if m else None


_MAC_RE = lazy_pattern(r"(?i)(?:mac|mc|m')\s?([^\W\d_]{3,})")
"""A Gaelic patronymic: "MACDONALD" is written McDonald, Mc Donald, M'Donald and the
other way round."""


def _mac_spellings(word: str) -> list[str]:
    """The other spellings of a Mac/Mc surname (none for other words)."""
    m = _MAC_RE.fullmatch(word)
    if not m:
        return []
    rest = m.group(1)
    return [f for f in (f"Mac{rest}", f"Mc{rest}", f"M'{rest}", f"Mac {rest}", f"Mc {rest}")
            if f.lower() != word.lower()]


_SPLIT_NAME = 6
"""A one-word name component of this many letters or more is also found written as two
words ("Jean Pierre", "Du Bois", "Gil-dong", "XIAO DONG" for JeanPierre, DuBois, Gildong,
XiaoDong): compound given names, particles and romanised syllables are written apart as
often as together."""
_NAME_CUTS = (" ", "-")
_CODE_CUTS = (" ", "-", "_")


def _cuts(word: str, separators: tuple[str, ...]) -> Iterator[str]:
    """``word`` cut in two, each part 2 characters or more, with each separator between:
    each form is its own anchor, so a text is searched for them only when it writes one
    (a text holding the whole word is searched for the word's own forms alone)."""
    for cut in range(2, len(word) - 1):
        for separator in separators:
            yield f"{word[:cut]}{separator}{word[cut:]}"


def _split_components(raw: str) -> Iterator[str]:
    """The one-word name components of :data:`_SPLIT_NAME` letters or more; not one with
    a title glued on ("DRWOBBLEFORD": :func:`untitled`)."""
    for group in raw.split("="):
        for component in (c.strip() for c in group.split("^")[:3]):
            if len(component) >= _SPLIT_NAME and component.isalpha() and \
                    not CJK_RE.search(component) and untitled(component) is None:
                yield component


def _name_splits(raw: str) -> Iterator[str]:
    """Each of :func:`_split_components` cut in two (:func:`_cuts`)."""
    for component in _split_components(raw):
        yield from _cuts(component, _NAME_CUTS)


def despaced(folded: str) -> str:
    """A case-folded text without spaces, hyphens, underscores, dots and slashes: where a
    value's anchors are looked for. A form that writes separators into a value
    ("kowa lski", "4-8-2-1-3-9-7", "T.V.H.") then shares the value's one anchor, so a
    value's many spellings cost a text few tests."""
    # five C searches: a third of what one str.translate costs on a descriptor
    return folded.replace(" ", "").replace("-", "").replace("_", "").replace(".", "").replace(
        "/", "")


_LONG_VOWELS = (("ou", "o"), ("uu", "u"), ("oo", "o"))
_ROMAJI = 4
"""The fewest letters a kana name's romaji must have to be searched ("ai" is a word)."""


def _kana_spellings(component: str) -> Iterator[str]:
    """A kana name component in the other kana script and in romaji (Hepburn, with and
    without its long vowels: "Tarou", "Taro"): a name held in hiragana is written in
    katakana or Latin letters elsewhere (an external probe: やまだ^たろう released as "ヤマダ
    タロウ" and "YAMADA TAROU"); half-width katakana is read as full-width."""
    wide = unicodedata.normalize("NFKC", component)
    if not KANA_RE.search(wide):
        return
    yield from dict.fromkeys(v for v in (kana_script(wide, katakana=True),
                                         kana_script(wide, katakana=False)) if v != component)
    if (romaji := romanise_kana(wide)) is not None and len(romaji) >= _ROMAJI:
        short = romaji
        for long, vowel in _LONG_VOWELS:
            short = short.replace(long, vowel)
        yield from dict.fromkeys(r for r in (romaji, short) if len(r) >= _ROMAJI)


_HAN_RE = lazy_pattern("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@functools.cache
def _han_converters() -> tuple[Callable[[str], str], Callable[[str], str]]:
    """OpenCC's traditional-to-simplified and simplified-to-traditional conversions
    (loaded at the first Chinese value: 50 ms)."""
    import opencc  # most runs hold no Chinese value: imported at the first one

    return opencc.OpenCC("t2s").convert, opencc.OpenCC("s2t").convert


def _han_spellings(text: str) -> Iterator[str]:
    """``text`` in simplified and in traditional Chinese characters, where they differ
    from it: a name held in one is written in the other elsewhere (an external probe:
    王^小東 released as "王小东")."""
    if _HAN_RE.search(text):
        yield from dict.fromkeys(f for f in (c(text) for c in _han_converters()) if f != text)


def _name_parts(raw: str) -> Iterator[str]:
    """The texts a person name's forms are literals of: each of the family, given and
    middle name components (not prefix and suffix) in every representation, and each word
    of a component of several words, name particles aside; a Mac/Mc surname in its other
    spellings; a one-word component cut in two; a kana one in the other script and
    romaji."""
    for group in raw.split("="):
        components = [c.strip() for c in group.split("^")[:3]]
        for component in components:
            if len(component) >= 2:
                yield component
                yield from _mac_spellings(component)
                yield from _kana_spellings(component)
                yield from _han_spellings(component)
            if (bare := untitled(component)) is not None:
                yield bare
            words = _pieces([w for w in _PIECES_RE.split(component) if w])
            if len(words) > 1:
                for word in words:
                    if len(word) >= 2 and word.lower().strip(".") not in _NAME_PARTICLES:
                        yield word
                yield "".join(words)  # "VAN DER BERG" written "Vanderberg", "MC ALLISTER"
                yield from _mac_spellings("".join(words))
        family, given = [*components, "", ""][:2]
        if family and given and not _PIECES_RE.search(family + given) and (
                (len(family) >= 2 and len(given) >= 2) or CJK_RE.search(family + given)):
            # (a one-character CJK family name is written onto the given name, 王伟, or
            # apart from it, 王 伟: a literal of the two words finds both)
            joiner = " " if CJK_RE.search(family + given) else ""
            for both in (family + joiner + given, given + joiner + family):
                yield both  # run together: "SmithJohn", "JOHNSMITH"
                yield from _han_spellings(both)


REPLACED_GIVEN = "^" + CTX_MARKER
"""What a person name's family name stands before once its given name was replaced: a
one-character CJK family name (王, 김) is in every kept Chinese or Korean text, no form of
the name alone; written as its own caret component before a replaced given name
("=王^[CTX]", a PN's ideographic group cleaned by an earlier pass), it is the name. The
sweep replaces it there (:func:`_variants`), and the gate searches it so
(:mod:`dicom_deid.deid.gate`)."""


@functools.lru_cache(maxsize=4096)
def cjk_families(raw: str) -> tuple[str, ...]:
    """The family names of a person name (each value, each component group) that are one
    CJK character."""
    found = {family for one in raw.split("\\") for group in one.split("=")
             if len(family := group.split("^")[0].strip()) == 1 and CJK_RE.match(family)}
    return tuple(sorted(found))


def _literal_parts(info_type: str, raw: str) -> Iterable[str]:
    """The texts the forms of a name, address, location or organisation are literals of:
    besides the whole value and its lines, each of its distinctive words alone (a place
    is often written by one word of its name: "Quillan" for "Harborview Quillan Clinic")."""
    if info_type == "PERSON_NAME":
        return _name_parts(raw)
    parts = [raw, *_PARTS_RE.split(raw)]
    parts += [f for part in parts for f in _han_spellings(part)]
    words = {w for part in parts for w in _PIECES_RE.split(part) if _distinctive(w)}
    return parts + sorted((words | set(_runs(parts))) - set(parts))


def _runs(parts: list[str]) -> Iterator[str]:
    """The runs of two words or more of a place's name, short of all of it, that hold a
    distinctive word: free text writes them alone and, in a host name or a mailbox, run
    together ("thornburyvalley" for "Thornbury Valley Hospital"), which a distinctive
    word alone, with at most an ending glued on, does not reach."""
    for part in parts:
        words = [w for w in _PIECES_RE.split(part) if w]
        for size in range(2, len(words)):
            for start in range(len(words) - size + 1):
                run = words[start:start + size]
                if any(map(_distinctive, run)):
                    yield " ".join(run)


_ACRONYM_SKIPS = frozenset({
    "of", "the", "and", "for", "at", "in", "on", "de", "du", "des", "la", "le", "les", "di",
    "del", "della", "der", "die", "das", "und", "et", "y", "e", "van", "von", "&"})
"""Words an institution's acronym leaves out ("University Hospital of Wales": UHW)."""
_ACRONYM_LETTERS = 3
"""The fewest letters an acronym must have to be searched (two would be any initials)."""


@functools.lru_cache(maxsize=1024)
def acronyms(raw: str) -> tuple[tuple[str, str], ...]:
    """The acronyms of an institution's name (and of each of its lines), each with the
    name's last word: the initials of its words, but linking words, when there are
    :data:`_ACRONYM_LETTERS` or more and they are not themselves a word of image banners
    ("MRI") or a generic facility acronym ("NHS", "CHU"), which name no one institution."""
    found: dict[tuple[str, str], None] = {}
    words_lists = lexicon()
    for part in (raw, *_PARTS_RE.split(raw)):
        words = [w.strip(".'\u2019") for w in re.split(r"[\s,/\-]+", part)]
        words = [w for w in words if w and w.casefold() not in _ACRONYM_SKIPS]
        if len(words) < _ACRONYM_LETTERS or not all(w[0].isalpha() for w in words):
            continue
        acronym = ascii_fold("".join(w[0] for w in words)).upper()
        if acronym.isascii() and acronym.isalpha() and fold(acronym) not in \
                words_lists.vocabulary and acronym not in words_lists.facility_acronyms:
            found[(acronym, words[-1])] = None
    return tuple(found)


def _acronym_anchors(raw: str) -> Iterator[str]:
    for acronym, last in acronyms(raw):
        yield from (acronym.casefold(), ".".join(acronym).casefold(),
                    (acronym[:-1] + last).casefold())


def _acronym_variants(raw: str) -> Iterator[_Variant]:
    """An institution's acronyms in capitals ("TVH", "TVH-CT1", "T.V.H."), with the last
    word written out ("TVHospital"), or in a host name's lower case ("pacs.tvh.nhs.uk"):
    a lower-case "cat" elsewhere is a word, not the acronym of "Clinic At Thornbury"."""
    for acronym, last in acronyms(raw):
        yield _Variant(f"(?-i:{acronym}|{acronym.lower()}(?=\\.[a-z]))(?:\\d{{1,4}})?",
                       len(acronym), acronym.casefold(), True, True)
        yield _Variant("(?-i:" + "\\.".join(acronym) + ")\\.?", len(acronym) + 1,
                       ".".join(acronym).casefold(), True, False)
        yield _Variant(f"(?-i:{acronym[:-1]}){re.escape(last)}", len(acronym) + len(last),
                       (acronym[:-1] + last).casefold(), True, True)


_POSTCODE_RE = lazy_pattern(
    r"(?<![^\W_])(?:([A-Z]{1,2}\d[A-Z\d]?)\s*(\d[A-Z]{2})"  # UK: EX4 3PQ, SW1A 1AA
    r"|([A-Z]\d[A-Z])\s?(\d[A-Z]\d)"  # Canada: K1A 0B1
    r"|(\d{4})\s?([A-Z]{2})"  # the Netherlands: 1012 AB
    r"|(\d{5})(?:-(\d{4}))?)(?![^\W_])",  # US ZIP (+4), and five-digit codes elsewhere
    re.IGNORECASE)


def postcodes(raw: str) -> list[tuple[str, str]]:
    """The postal codes in an address, each as its two parts (the second empty for a
    five-digit code): free text writes them with or without their space ("EX43PQ"), or
    alone, without the street they belong to."""
    found = []
    for m in _POSTCODE_RE.finditer(raw):
        groups = [g for g in m.groups() if g is not None]
        found.append((groups[0], groups[1] if len(groups) > 1 else ""))
    return found


def _distinctive(word: str) -> bool:
    """A word of a place's name that names it alone: 5 letters or more and none of the
    words institutions, addresses and image banners share ("General", "Street")."""
    if len(word) < 5 or not word.isalpha():
        return False
    folded = fold(word)
    words = lexicon()
    return folded not in _COMMON_WORDS and folded not in words.generic \
        and folded not in words.vocabulary and folded not in words.street_after \
        and folded not in words.street_before


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
    yy = y[2:]  # two-digit years ("4/17/63", "17-Apr-63"): anchored on those two digits
    roman = _ROMAN[m - 1]
    _, week, weekday = day.isocalendar()
    ordinal = day.timetuple().tm_yday
    mm, dd = f"{m:02d}", f"{d:02d}"
    # Numbers touching letters are still the date ("14.03.1961r.", "DOB19610314"): only
    # a digit on either side makes them part of another number.
    for fragment, weight, anchor in (
        (f"{y}{mm}{dd}(?:\\d{{2,6}}(?:\\.\\d{{1,6}})?)?", 8, y),  # DA, or a DT of that day
        (f"{y}[^\\d\\n]{{1,3}}{mp}[^\\d\\n]{{1,3}}{dp}", 10, y),  # 1961-03-14, 1961년 3월 14일
        (f"{dp}[-/.]{mp}[-/.]{y}", 10, y),
        (f"{dp}\\s{mp}\\s{y}", 9, y),  # "14 03 1961"
        (f"{mp}[-/.]{dp}[-/.]{y}", 10, y),
        (f"{dp}{ORDINAL_SUFFIX}[\\s\\-]+{mon}[\\s\\-,]+{y}", 11, y),
        # a month in any language or in Roman numerals: "14 marca 1961", "14. März 1961",
        # "14th of March 1961", "14.III.1961"
        (f"{dp}{ORDINAL_SUFFIX}[.\\s]*(?:of\\s+)?[^\\d\\s.,]{{2,12}}\\.?[\\s,]*{y}", 9, y),
        # year first with the month's name: "1961 Mar 14", "1961, March 14th"
        (f"{y}[\\s,\\-/.]+{mon}[\\s\\-,./]+{dp}{ORDINAL_SUFFIX}", 11, y),
        (f"{mm}{dd}{y}", 7, y), (f"{dd}{mm}{y}", 7, y),
        # six digits in the other two orders ("140361", "031461"): anchored on all six
        (f"{dd}{mm}{yy}", 6, f"{dd}{mm}{yy}"), (f"{mm}{dd}{yy}", 6, f"{mm}{dd}{yy}"),
        # the month in Roman numerals, a two-digit year too ("14 III 61", "5.I.2024")
        (f"{dp}[\\s./\\-]*{roman}[\\s./\\-]*(?:{y}|{yy})", 9, yy),
        # ISO 8601 week and ordinal dates ("1961-W11-2", "1961W112", "1961-073")
        (f"{y}-?W{week:02d}-?{weekday}", 9, y), (f"{y}-?{ordinal:03d}", 8, y),
        # the month and year of it ("Mar 1961", "March, 1961", "03/1961", "1961-03")
        (f"{mon}[\\s\\-,./]*{y}", 8, y), (f"{mp}[/.\\-]{y}", 7, y),
        (f"{mon}[\\s\\-,./]*'?{yy}", 7, yy),  # "Mar57", "Mar '57"
        (f"{y}[/.\\-]{mm}(?![/.\\-]\\d)", 7, y),
        (f"{mp}[-/.]{dp}[-/.]{yy}", 7, yy),
        (f"{dp}[-/.]{mp}[-/.]{yy}", 7, yy),
        (f"{yy}[-/.]{mm}[-/.]{dd}", 7, yy),
        (f"{yy}{mm}{dd}", 6, yy),
        (f"{dp}{ORDINAL_SUFFIX}[\\s\\-]*{mon}[\\s\\-,]*'?{yy}", 9, yy),  # "14MAR61"
    ):
        yield _Variant(f"(?<!\\d){fragment}(?!\\d)", weight, anchor, False, False)
    yield _variant(f"{mon}[\\s\\-]+{dp}{ORDINAL_SUFFIX},?[\\s\\-]+{y}", 12, y, "a0")
    yield _variant(f"{y}\\s*年\\s*{mp}\\s*月\\s*{dp}\\s*日", 11, y, "0日")
    yield from _calendar_variants(day)
    # The day and month without the year (Safe Harbor removes every element of a date but
    # the year): by the month's name ("14 March", "5 Jan", "Jan 5th"), or in numbers when
    # the day cannot be read as a month ("14/03", "03/14"; "05/01" is any two numbers).
    month_anchor = _month_anchor(day)
    yield _Variant(f"(?<!\\d){dp}{ORDINAL_SUFFIX}[\\s\\-]*(?:of\\s+)?{mon}(?![^\\W\\d_])", 5,
                   month_anchor, False, True)
    yield _Variant(f"{mon}[\\s\\-]*{dp}{ORDINAL_SUFFIX}(?!\\d)", 5, month_anchor, True, False)
    for form in _numeric_day_month(day):
        yield _Variant(f"(?<![\\d/.\\-]){re.escape(form)}(?![/.\\-]?\\d)", 4, form, False,
                       False)


_UNAMBIGUOUS_DAY = 12
"""A day written in numbers without its year is searched only above this (a month's
number cannot be one)."""


def _month_anchor(day: date) -> str:
    """The anchor of a day's forms with its month's name and without its year: the
    name's first three letters."""
    return MONTHS[day.month - 1][:3].casefold()


def _numeric_day_month(day: date) -> tuple[str, ...]:
    """A day and month in numbers, day first or month first, with a slash or a hyphen
    ("14/03", "03-14"): each form is its own anchor (two digits alone are in every
    other text)."""
    if day.day <= _UNAMBIGUOUS_DAY:
        return ()
    dd, mm = f"{day.day:02d}", f"{day.month:02d}"
    return tuple(f"{a}{sep}{b}" for a, b in ((dd, mm), (mm, dd)) for sep in "/-")


_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")

_JAPANESE_ERAS = (  # (first day, name, letter, the Gregorian year before its year 1)
    (date(2019, 5, 1), "令和", "R", 2018), (date(1989, 1, 8), "平成", "H", 1988),
    (date(1926, 12, 25), "昭和", "S", 1925), (date(1912, 7, 30), "大正", "T", 1911),
    (date(1868, 1, 25), "明治", "M", 1867),
)


def _calendar_variants(day: date) -> Iterator[_Variant]:
    """The day in the calendars Asian records write birth dates in: a Japanese era
    (昭和36年3月14日, S36.3.14), the Republic of China's years (民國50年3月14日,
    50/03/14) and the Thai Buddhist era (14/03/2504). Anchors: the era's name, its letter
    with the year, the ROC year, the Buddhist year."""
    mp = f"0?{day.month}" if day.month < 10 else str(day.month)
    dp = f"0?{day.day}" if day.day < 10 else str(day.day)
    for start, name, letter, before in _JAPANESE_ERAS:
        if day >= start:
            n = day.year - before
            year = f"(?:{n}|元)" if n == 1 else str(n)
            yield _variant(f"{name}\\s*{year}\\s*年\\s*{mp}\\s*月\\s*{dp}\\s*日?", 11, name,
                           "年日")
            yield _Variant(f"(?<![^\\W\\d_]){letter}{n}[./\\-]{mp}[./\\-]{dp}(?!\\d)", 9,
                           f"{letter.lower()}{n}", False, False)
            break
    if day.year > 1911:
        roc = day.year - 1911
        yield _variant(f"民[國国]\\s*{roc}\\s*年\\s*{mp}\\s*月\\s*{dp}\\s*日?", 11, "民", "年日")
        if roc >= 10:
            yield _Variant(f"(?<!\\d){roc}[/.\\-]{mp}[/.\\-]{dp}(?!\\d)", 7, str(roc), False,
                           False)
    thai = str(day.year + 543)
    yield _Variant(f"(?<!\\d){dp}[/.\\-\\s]{mp}[/.\\-\\s]{thai}(?!\\d)", 9, thai, False,
                   False)
    yield _Variant(f"(?<!\\d){dp}\\s*[^\\d\\s.,]{{2,12}}\\.?\\s*{thai}(?!\\d)", 9, thai, False,
                   False)


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

    def spaced(number: str) -> str:  # its last two digits together: the anchor
        return sep.join([*number[:-2], number[-2:]])

    yield _variant(r"\+?" + spaced(digits), len(digits), digits[-2:], "0")
    if digits.startswith("0") and len(digits) >= 7:  # a trunk "0" dropped: "601 234 567"
        yield _variant(spaced(digits[1:]), len(digits) - 1, digits[-2:], "0")
    if len(digits) >= 10:  # the local number alone, without the area code: "7946 0958"
        for local in (8, 7):
            yield _variant(spaced(digits[-local:]), local, digits[-2:], "0")
    if raw.lstrip().startswith("+"):
        # National forms: without the 1-3 digit country code, perhaps with a trunk "0".
        for cc in range(1, 4):
            national = digits[cc:]
            if len(national) >= 6:
                yield _variant("0?" + spaced(national), len(national), digits[-2:], "0")


SPACED_ID_DIGITS = 6
"""An ID of this many digits or more is also found written in groups ("48-21-39-77",
"4821 3977"); a shorter one would match too many grouped numbers by chance."""
_DOTTED_ID_DIGITS = 7
"""An ID of this many digits or more is also found with dots between its digits
("482.1397", "48.213.977"); a shorter one would be a decimal number by chance."""
_THOUSANDS = "[,.'\u2009\u202f ]"
"""A thousands separator: comma, dot, apostrophe, thin or narrow no-break space, space."""
_GROUP_SEP = r"[\s\-/]{0,3}"
_DOTTED_SEP = r"[\s\-/.]{0,3}"


_DIGIT_SEPARATORS = (" ", "-", ".", "/")
"""What a long ID written digit by digit has between its digits (the same throughout)."""


def spaced_digits(core: str, dots: bool = False) -> str:
    """A pattern of ``core``'s digits in groups: its first two digits together (every
    grouping writes them so: the anchor), then any digit after a space, hyphen or slash
    (or a dot: ``dots``, for a long ID, "48.213.977"; a short one would be a decimal)."""
    sep = _DOTTED_SEP if dots else _GROUP_SEP
    return core[:2] + "".join(sep + d for d in core[2:])


ID_TYPES = _ID_TYPES
"""Info types whose values read as IDs when they look like one (prefix letters, digits):
found with or without their letter prefix and leading zeros (:func:`id_digit_forms`)."""


def _id_parts(value: str) -> re.Match[str] | None:
    """An ID's letter prefix, separator, leading zeros and digits (``core``) when ``value``
    reads as one: letters then 4 digits or more."""
    m = _ID_RE.fullmatch(value.strip())
    return m if m is not None and len(m["core"]) >= 4 else None


def id_digit_forms(raw: str) -> tuple[str, ...]:
    """The forms of an ID (each ``\\``-separated value of ``raw``) the sweep finds on their
    own, whatever letters touch them (the first form :func:`_id_variants` makes of a long
    one: its digits after the letter prefix, with or without their leading zeros): for
    "MRN0004821397", "0004821397" and "4821397". None of a value of fewer than
    :data:`SPACED_ID_DIGITS` digits (the sweep finds a shorter one alone as a whole word
    only: a 4- or 5-digit number is in too many files by chance). The gate searches an
    ID's values in these forms too (:mod:`dicom_deid.deid.gate`)."""
    forms: dict[str, None] = {}
    for one in raw.split("\\"):
        m = _id_parts(one)
        if m is not None and len(m["core"]) >= SPACED_ID_DIGITS:
            forms |= {f: None for f in (m["zeros"] + m["core"], m["core"]) if f != one.strip()}
    return tuple(forms)


def _id_variants(raw: str) -> Iterator[_Variant]:
    value = raw.strip()
    m = _id_parts(value)
    if m is None:
        if variant := _literal(value):
            yield variant
        return
    core = m["core"]
    prefix = f"(?:{re.escape(m['prefix'])}[\\s:#\\-]*)?" if m["prefix"] else ""
    if len(core) < SPACED_ID_DIGITS:
        yield _variant(f"{prefix}0*{core}", len(value), core, value if m["prefix"] else "0")
        return
    # A long number is an ID whatever letters touch it ("MRN48213977", "48213977a"):
    # only a digit on either side makes it part of another number.
    yield _Variant(f"(?<!\\d){prefix}0*{core}(?!\\d)", len(value), core, False, False)
    grouped = spaced_digits(core, dots=len(core) >= _DOTTED_ID_DIGITS)
    yield _Variant(f"(?<!\\d)(?<!\\d[.,]){prefix}0*{grouped}(?![.,]?\\d)",
                   len(value) - 1, core[:2], False, False)  # not inside a dotted UID
    for sep in _DIGIT_SEPARATORS:  # digit by digit: "4-8-2-1-3-9-7", "4 8 2 1 3 9 7"
        yield _Variant(f"(?<![\\d.,]){re.escape(sep).join(core)}(?!{re.escape(sep)}?\\d)",
                       len(core), sep.join(core[:3]), False, False)
    groups = [core[max(0, i - 3):i] for i in range(len(core), 0, -3)][::-1]
    thousands = _THOUSANDS.join(groups)  # "4,821,397", "4.821.397", "4'821'397"
    yield _Variant(f"(?<![\\d.,]){prefix}{thousands}(?![.,]?\\d)", len(value) - 1,
                   groups[-1], False, False)


def _ssn_variants(raw: str) -> Iterator[_Variant]:
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 9:
        fragment = f"{digits[:3]}[\\s\\-]?{digits[3:5]}[\\s\\-]?{digits[5:]}"
        yield _variant(fragment, 9, digits[5:], "0")
    elif variant := _literal(raw):
        yield variant


def _word_variants(info_type: str, raw: str) -> Iterator[_Variant]:
    """The written forms of a name, address, place or organisation."""
    for part in _literal_parts(info_type, raw):
        if variant := _literal(part, inflect=info_type in _GLUED_TYPES):
            yield variant
    if info_type == "ORGANIZATION_NAME":
        yield from _acronym_variants(raw)
    if info_type == "STREET_ADDRESS":
        for first, second in postcodes(raw):
            yield _variant(re.escape(first) + r"[\s\-_]?" + re.escape(second),
                           len(first) + len(second), first.casefold(), "0")
    if info_type == "PERSON_NAME":
        for component in _split_components(raw):
            for split in _cuts(component, _NAME_CUTS):
                # below the whole component's forms, which are tried first where both match
                yield _variant(re.escape(split), len(split) - 2, split.casefold(),
                               split)._replace(joined=component.casefold())
        for family in cjk_families(raw):  # "王" of "王^[CTX]"
            yield _Variant(re.escape(family) + r"(?=\^\[CTX\])", 1,
                           (family + REPLACED_GIVEN).casefold(), False, False)


def _variants(info_type: str, raw: str) -> Iterator[_Variant]:
    """The written forms of one context value."""
    if info_type in _WORD_TYPES:
        yield from _word_variants(info_type, raw)
    elif info_type == "DATE":
        yield from _date_variants(raw)
    elif info_type == "AGE":
        yield from _age_variants(raw)
    elif info_type == "PHONE_NUMBER":
        yield from _phone_variants(raw)
    elif info_type == "US_SOCIAL_SECURITY_NUMBER":
        yield from _ssn_variants(raw)
    elif _ID_RE.fullmatch(raw.strip()):
        yield from _id_variants(raw)
    else:
        if variant := _literal(raw):
            yield variant
        if info_type in _ID_TYPES:
            for split in _code_splits(raw):
                yield _Variant(re.escape(split), len(split) - 2, split.casefold(), True, True,
                               joined=raw.strip().casefold())


_SPLIT_CODE = 6
"""A code of letters (and digits) this long or longer is also found with a separator
written into it ("TVH-PAS", "TVH PAS" for an issuer "TVHPAS"): a shorter one would match
two short words by chance."""


def _code_splits(raw: str) -> tuple[str, ...]:
    """A one-word code with a space, hyphen or underscore written into it (:func:`_cuts`)."""
    code = raw.strip()
    if len(code) < _SPLIT_CODE or not code.isalnum() or not code.isascii():
        return ()
    return tuple(_cuts(code, _CODE_CUTS))


class PhiContext:
    """The identifying values of one instance, compiled for matching inside free text.

    Build it with :meth:`from_values`. Its ``repr`` shows counts only: the written forms
    hold PHI and must never reach a log. A context is its values and their anchors
    (substrings every match contains, see :func:`_anchors_of`); most texts contain none
    and are cleared by a few substring tests. The written forms of a value are made only
    for a text that holds one of its anchors, and each form's pattern is compiled once per
    process and shared by every context that holds it (a patient's name, an institution,
    a physician recur from file to file).
    """

    __slots__ = ("_pair_anchors", "_pairs", "anchors")

    def __init__(self, pairs: tuple[tuple[str, str], ...] = (),
                 pair_anchors: tuple[tuple[str, ...], ...] | None = None) -> None:
        self._pairs = pairs
        self._pair_anchors = tuple(_anchors_of(info_type, raw) for info_type, raw in pairs) \
            if pair_anchors is None else pair_anchors
        self.anchors: frozenset[str] = frozenset().union(*self._pair_anchors)
        """Substrings one of which a text must hold, case-folded and :func:`despaced`, for
        a value to match in it."""

    def screens(self, folded: str) -> bool:
        """Whether a case-folded text holds an anchor (else no value can match in it)."""
        return any(map(despaced(folded).__contains__, self.anchors))

    @classmethod
    def merge(cls, parts: Iterable[PhiContext]) -> PhiContext:
        """One context of the values of ``parts`` (in order): as :meth:`from_values` of
        their values together, without looking at each value again (an instance's context
        is merged from those of its attributes, which recur from file to file)."""
        parts = list(parts)
        return cls(tuple(pair for part in parts for pair in part._pairs),
                   tuple(a for part in parts for a in part._pair_anchors))

    @classmethod
    def from_values(cls, values: Iterable[tuple[str, str]]) -> PhiContext:
        """The context of ``(info_type, raw value)`` pairs taken from the instance.

        Raw values are DICOM strings: multiple values separated by ``\\`` are split; person
        names are split into components (``^``) and representations (``=``); dates are
        expanded to the common written formats; IDs also match without their leading
        zeros or letter prefix when at least 4 digits remain. Values (or components) of
        fewer than 2 characters are ignored.

        Raises
        ------
        ValueError
            If an info type is not one of :data:`INFO_TYPES`.
        """
        pairs = tuple((str(t), str(v)) for t, v in values)
        for info_type, _ in pairs:
            if info_type not in INFO_TYPES:
                raise ValueError(f"unknown info type {info_type[:40]!r}")
        return cls(pairs)

    def __repr__(self) -> str:
        return f"PhiContext(<{len(self._pairs)} values>)"

    def __bool__(self) -> bool:
        return bool(self.anchors)

    def live_pairs(self, folded: str, flat: str | None = None) -> tuple[tuple[str, str], ...]:
        """The values with an anchor in ``folded`` (a case-folded text): the only ones
        that can match in it, so what :meth:`matches` finds in a text depends on the text
        and these alone (the byte path remembers swept values by them, across contexts)."""
        flat = despaced(folded) if flat is None else flat  # (``flat``: it, already despaced)
        return tuple(pair for pair, anchors in zip(self._pairs, self._pair_anchors, strict=True)
                     if any(map(flat.__contains__, anchors)))

    def matches(self, text: str) -> Iterator[Span]:
        """Non-overlapping context matches in ``text``, leftmost, strongest form first.

        As one alternation of every form would find them: at each step the leftmost match
        of any form, and of the forms matching there the first in order. A form whose
        anchor (a substring of all its matches) is not in the text cannot match, so it is
        not tried. A text with other than ASCII is also searched without its diacritics,
        or with umlauts written out, and its matches there are spans of the text
        ("Quintérra" or "Œhler" for a header's QUINTERRA or OEHLER). A person name's
        component matched in a caret-joined name is the whole name
        (:func:`_caret_names`)."""
        found = self._found(text)
        if "^" in text:
            yield from _caret_names(text, found)
        else:
            yield from found

    def _found(self, text: str) -> Iterator[Span]:
        if text.isascii():
            yield from self._matches(text)
            return
        spans = list(self._matches(text))
        for umlauts in (False, True):
            # The same folding at C speed first: most texts hold no anchor folded either.
            quick = umlaut_fold(unicodedata.normalize("NFC", text)) if umlauts \
                else ascii_fold(text)
            if quick == text or not self.screens(quick.casefold()):
                continue
            plain, origin = fold_map(text, umlauts)
            kept = set(origin)
            for span in self._matches(plain):
                start, end = origin[span.start], origin[span.end - 1] + 1
                while end < len(text) and end not in kept:
                    end += 1  # an accent of the span's last letter written apart ("ﾀﾞ")
                spans.append(Span(start, end, span.info_type, span.from_context))
        spans.sort(key=lambda s: (s.start, s.start - s.end))
        last = 0
        for span in spans:
            if span.start >= last:
                yield span
                last = span.end

    def _matches(self, text: str) -> Iterator[Span]:
        folded = text.casefold()
        flat = despaced(folded)
        if not any(map(flat.__contains__, self.anchors)):  # self.screens(folded)
            return
        # Only the values with an anchor in the text can match: their forms are made (or
        # found made) and tried, in the order all forms would be tried in. Each value's
        # live forms are one alternation, compiled once for every text that makes the
        # same of them live (one for all values would be compiled again for every other
        # set of values live together).
        pairs = self.live_pairs(folded, flat)
        variants, group_types = _forms_of(pairs)
        plain, cut = _forms_by_anchor(pairs)
        tried = [i for anchor, forms in plain if anchor in folded for i in forms]
        if cut:
            tried += [i for word, entries in cut if word in flat
                      for anchor, forms in entries if anchor in folded for i in forms]
        live = tuple(sorted(tried))
        if not live:  # a value's anchor is in the text, none of its forms' is
            return
        groups = _by_value(pairs, live)
        patterns = [_alternation(tuple(variants[i].fragment for i in g)) for g in groups]
        # each one's next match from ``pos`` on (None: no more; _UNSEARCHED: not yet)
        ahead: list[re.Match[str] | object | None] = [_UNSEARCHED] * len(groups)
        pos, size = 0, len(text)
        while pos < size:
            best: tuple[int, int, re.Match[str]] | None = None
            for k, pattern in enumerate(patterns):
                m = ahead[k]
                if m is _UNSEARCHED or (isinstance(m, re.Match) and m.start() < pos):
                    m = ahead[k] = pattern.search(text, pos)
                if not isinstance(m, re.Match):
                    continue
                rank = (m.start(), groups[k][int(m.lastgroup[1:])])  # type: ignore[index]
                if best is None or rank < best[:2]:
                    best = (*rank, m)
            if best is None:
                return
            start, index, found = best
            end = found.end()
            variant = variants[index]
            if variant.ending:  # CJK letters are no initial nor ending of a Latin name
                while end > start and CJK_RE.match(text[end - 1]):
                    end -= 1
                while end > start and CJK_RE.match(text[start]):
                    start += 1
                if end < size and is_word(text[end]) and not _camel(text, end):
                    # more glued on than an ending: the word ends where the next one
                    # starts in CamelCase ("ThornburyValleyHospital", "ThornburyCT1")
                    end = next((k for k in range(end - 1, start + _INFLECTED - 1, -1)
                                if _camel(text, k)), end)
            if (
                end > start
                and not (variant.left and start > 0 and is_word(text[start - 1])
                         and not _escaped(text, start) and not _camel(text, start))
                and not (variant.right and end < size and is_word(text[end])
                         and not _camel(text, end))
            ):
                yield Span(start, end, group_types[index], True)
                pos = end
            else:
                pos = start + 1


_UNSEARCHED = object()
_HEX = frozenset("0123456789abcdefABCDEF")


def _screening(anchors: Iterable[str]) -> tuple[str, ...]:
    """A value's anchors as a text is screened with (:meth:`PhiContext.screens`): each
    :func:`despaced`, and only those that hold no shorter one (a text holding "kowalski"
    holds "kowa"; one holding neither "kowa" nor "alski" can match none of the name's
    forms). Despacing keeps every form's anchor in its matches: the despaced text holds
    the despaced match."""
    kept: list[str] = []
    for anchor in sorted({despaced(a) for a in anchors} - {""}, key=lambda a: (len(a), a)):
        if not any(k in anchor for k in kept):
            kept.append(anchor)
    return tuple(sorted(kept))


def _camel(text: str, at: int) -> bool:
    """Whether a word starts at ``at`` in CamelCase ("JanKowalski", "ThornburyValley",
    "DrHalvorsen"): a lower-case letter, then a capital."""
    return text[at - 1].islower() and text[at].isupper()


def _escaped(text: str, start: int) -> bool:
    """Whether ``text`` has a percent escape right before ``start`` ("Kowalski%20Janina",
    "pt=Kowalski%2C%20Janina"): a URL's separator, so a word starts there."""
    return start >= 3 and text[start - 3] == "%" and text[start - 2] in _HEX \
        and text[start - 1] in _HEX


def _name_char(char: str) -> bool:
    """A character of a name component in a caret-joined name written in text."""
    return char.isalnum() or char in "-'\u2019"


def _component_end(text: str, pos: int) -> int:
    """Where the name component starting at ``pos`` ends (a ``[CTX]`` one already wrote
    is one)."""
    if text.startswith(CTX_MARKER, pos):
        return pos + len(CTX_MARKER)
    while pos < len(text) and _name_char(text[pos]):
        pos += 1
    return pos


def _component_start(text: str, pos: int) -> int:
    """Where the name component ending at ``pos`` starts."""
    if text.endswith(CTX_MARKER, 0, pos):
        return pos - len(CTX_MARKER)
    while pos > 0 and _name_char(text[pos - 1]):
        pos -= 1
    return pos


def _caret_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The caret-joined name ``text[start:end]`` is a whole component of, as a PN writes
    one ("Wang^XiaoDong=王^小東"): its component group, with the groups joined to it by
    ``=`` that are caret-joined too; None when it is no component of a group of two or
    more (a word of a longer one, "Smith" alone, "ref=Smith")."""
    size = len(text)
    if (start > 0 and _name_char(text[start - 1])) or (end < size and _name_char(text[end])):
        return None
    lo, hi, carets = {0: start}, {0: end}, {0: False}
    group, pos = 0, end
    while pos < size and text[pos] in "^=":
        if text[pos] == "=":
            group += 1
            carets[group] = False
        else:
            carets[group] = True
        pos = hi[group] = _component_end(text, pos + 1)
    last, group, pos = group, 0, start
    while pos > 0 and text[pos - 1] in "^=":
        if text[pos - 1] == "=":
            group -= 1
            carets[group] = False
        else:
            carets[group] = True
        pos = lo[group] = _component_start(text, pos - 1)
    first = group
    if not carets[0]:
        return None
    right = 0
    while right < last and carets[right + 1]:
        right += 1
    left = 0
    while left > first and carets[left - 1]:
        left -= 1
    return lo[left], hi[right]


def _unreplaced(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The parts of a caret-joined name ``text[start:end]`` around the components already
    written ``[CTX]`` (a cleaner does not take its own placeholders again)."""
    while start < end:
        at = text.find(CTX_MARKER, start, end)
        stop = end if at < 0 else at
        while start < stop and text[start] in "^=":
            start += 1
        last = stop
        while last > start and text[last - 1] in "^=":
            last -= 1
        if last > start:
            yield start, last
        start = end if at < 0 else at + len(CTX_MARKER)


def _caret_names(text: str, spans: Iterable[Span]) -> Iterator[Span]:
    """``spans`` with each person name's that is a component of a caret-joined name
    widened to that whole name (:func:`_caret_name`; but its ``[CTX]`` components),
    overlaps merged: free text that writes a name as its PN is ("seen by
    Wang^XiaoDong=王^小東") loses it all, components too short to be searched alone (王,
    an initial) with the ones that matched."""
    pieces: list[Span] = []
    for found in spans:
        whole = _caret_name(text, found.start, found.end) \
            if found.info_type == "PERSON_NAME" else None
        if whole is None:
            pieces.append(found)
            continue
        pieces += [Span(start, end, found.info_type, found.from_context)
                   for start, end in _unreplaced(text, *whole)]
    pieces.sort()
    out: list[Span] = []
    for span in pieces:
        if out and span.start < out[-1].end:
            last = out[-1]
            out[-1] = Span(last.start, max(last.end, span.end), last.info_type,
                           last.from_context and span.from_context)
        else:
            out.append(span)
    yield from out


@functools.lru_cache(maxsize=4096)
def _by_value(pairs: tuple[tuple[str, str], ...], live: tuple[int, ...]
              ) -> tuple[tuple[int, ...], ...]:
    """The live forms (indexes into :func:`_forms_of`'s, in its order) of each value of
    ``pairs``: a form two values share is the first one's."""
    variants = _forms_of(pairs)[0]
    owner: dict[str, int] = {}
    for n, pair in enumerate(pairs):
        for variant, _ in _variants_of(*pair):
            owner.setdefault(variant.fragment, n)
    groups: dict[int, list[int]] = {}
    for i in live:
        groups.setdefault(owner.get(variants[i].fragment, -1), []).append(i)
    return tuple(tuple(g) for g in groups.values())


@functools.lru_cache(maxsize=4096)
def _alternation(fragments: tuple[str, ...]) -> re.Pattern[str]:
    """The forms that can match a text, as one case-insensitive alternation (group
    ``g<k>`` for the k-th): its leftmost match, of the forms matching there the first,
    is what trying each form in turn would choose, at one compile and one search per
    step instead of one per form."""
    return re.compile("|".join(f"(?P<g{k}>{f})" for k, f in enumerate(fragments)),
                      re.IGNORECASE)


@functools.lru_cache(maxsize=8192)
def _variants_of(info_type: str, raw: str) -> tuple[tuple[_Variant, str], ...]:
    """The written forms of a raw value (its ``\\``-separated values), remembered: a
    patient's name and a physician's recur from context to context."""
    return tuple((variant, info_type) for one in raw.split("\\") if len(one.strip()) >= 2
                 for variant in _variants(info_type, one))


@functools.lru_cache(maxsize=8192)
def _anchors_of(info_type: str, raw: str) -> tuple[str, ...]:
    """The anchors of a value's written forms, found without making the forms (a text
    holding none of them cannot match the value, so most contexts never make them):
    names, addresses, organisations and IDs, most of a context and the costliest forms
    to make, by the forms' own rules; other values from their forms."""
    if info_type not in _WORD_TYPES and info_type not in _ID_TYPES:
        if info_type == "DATE" and _DA_RE.fullmatch(raw) and (
                parsed := parse_written(raw)) is not None:
            # a DA value: its forms hold its year's last two digits, but for the calendars'
            return _screening({raw[2:4], *(v.anchor for v in _calendar_variants(parsed[0])),
                               _month_anchor(parsed[0]), *_numeric_day_month(parsed[0])})
        return _screening(v.anchor for v, _ in _variants_of(info_type, raw))
    anchors: set[str] = set()
    for one in raw.split("\\"):
        if len(one.strip()) < 2:
            continue
        m = _id_parts(one) if info_type in _ID_TYPES else None
        if m is not None:
            # written in groups, only its first two digits are sure to stay together; in
            # thousands, its last three (:func:`_id_variants`)
            core = m["core"]
            anchors.update((core,) if len(core) < SPACED_ID_DIGITS else (
                core[:2], core[-3:], *(sep.join(core[:3]) for sep in _DIGIT_SEPARATORS)))
            continue
        if info_type in _ID_TYPES:
            anchors.update(split.casefold() for split in _code_splits(one))
        glued = info_type in _GLUED_TYPES
        for part in _literal_parts(info_type, one) if info_type in _WORD_TYPES else [one]:
            if (words := _literal_words(part)) and (pieces := _pieces(words)):
                anchors.add(_literal_anchor(pieces, glued))
        if info_type == "STREET_ADDRESS":
            anchors.update(first.casefold() for first, _ in postcodes(one))
        if info_type == "ORGANIZATION_NAME":
            anchors.update(_acronym_anchors(one))
        if info_type == "PERSON_NAME":
            anchors.update((f + REPLACED_GIVEN).casefold() for f in cjk_families(one))
            anchors.update(c.casefold() for c in _split_components(one))
    return _screening(anchors)


@functools.lru_cache(maxsize=64)
def _forms_of(
    pairs: tuple[tuple[str, str], ...],
) -> tuple[tuple[_Variant, ...], tuple[str, ...]]:
    """The written forms of some values, strongest first (the order ties resolve in), and
    the info type of each."""
    variants: dict[str, tuple[_Variant, str]] = {}
    for info_type, raw in pairs:
        for found in _variants_of(info_type, raw):
            known = variants.get(found[0].fragment)
            if known is None or known[0].weight < found[0].weight:
                variants[found[0].fragment] = found
    ordered = sorted(variants.values(), key=lambda vt: (-vt[0].weight, vt[0].fragment))
    return tuple(v for v, _ in ordered), tuple(info_type for _, info_type in ordered)


_ByAnchor = tuple[tuple[str, tuple[int, ...]], ...]


@functools.lru_cache(maxsize=64)
def _forms_by_anchor(pairs: tuple[tuple[str, str], ...]
                     ) -> tuple[_ByAnchor, tuple[tuple[str, _ByAnchor], ...]]:
    """:func:`_forms_of`'s forms (their indexes) by their anchor, a text tested once per
    anchor, not once per form (a name's spellings share a few); the forms that cut a word
    in two apart, by that word (their many anchors are tested only in a text that holds
    the word once despaced)."""
    plain: dict[str, list[int]] = {}
    cut: dict[str, dict[str, list[int]]] = {}
    for i, variant in enumerate(_forms_of(pairs)[0]):
        into = cut.setdefault(variant.joined, {}) if variant.joined else plain
        into.setdefault(variant.anchor, []).append(i)
    return (tuple((a, tuple(f)) for a, f in plain.items()),
            tuple((word, tuple((a, tuple(f)) for a, f in by.items())) for word, by in cut.items()))


EMPTY_CONTEXT = PhiContext()


def context_values(ctx: PhiContext) -> tuple[tuple[str, str], ...]:
    """The ``(info_type, raw value)`` pairs ``ctx`` was made of (PHI: never log them), for
    matchers of other written forms (burned-in text, :mod:`.fuzzy`)."""
    return ctx._pairs
