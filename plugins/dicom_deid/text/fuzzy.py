"""An instance's own values as burned-in text spells them: cut, misread, romanised,
abbreviated. For OCR'd lines only.

A banner prints the header's values its own way: "St Elsewhere General Hospital of the
North" cut to 30 characters, a name with one letter misread ("SMlTH"), a kana reading in
romaji ("YAMADA TARO" for やまだ^たろう), an institution's initials ("SEGH"), a patient ID
with "O" for "0". :class:`~.context.PhiContext` matches written forms exactly, which free
text and the residual sweep rely on (and on its speed); this module adds the looser forms
for pixel text, where a missed line is a leak and a kept one only a black box more.

Forms of a value (built once per set of values, see :func:`fuzzy_forms`):

- *prefix*: the value with only letters and digits, folded (case, diacritics, OCR
  look-alikes ``0/O``, ``1/I/l``, ``5/S``, ``8/B``), when 10 or more remain. A line
  matches when it holds a prefix of it at least 10 long and reaching 4 letters into a
  word that identifies it (not "Department of ..."), exactly or, from 12 on, with one
  edit (two from 20 on). A value made of common words only ("Department of Radiology")
  matches whole and exactly.
- *word*: a name component of 4+ letters (OCR look-alikes folded), a word of 5+ letters
  of an institution, address or place that is not a common word of such names, each
  whole; a Japanese name's kana reading and romaji in a common spelling ("Tarou",
  "Taro", "Tarō" are one).
- *acronym*: an institution's initials (3+ letters, "SEGH", "S.E.G.H."), as written.
- *ID*: the digits of an ID with 6 or more, inside a word read with look-alikes folded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .chars import CJK_RE, ascii_fold, lazy_pattern
from .context import PhiContext, context_values
from .lexicon import fold, lexicon, romanise_kana
from .spans import Span

__all__ = ["FuzzyForms", "fuzzy_forms", "fuzzy_matches"]

_WORD_TYPES = frozenset({"ORGANIZATION_NAME", "STREET_ADDRESS", "LOCATION"})
_PREFIX_TYPES = _WORD_TYPES | {"PERSON_NAME", "CONTEXT"}
_ID_TYPES = frozenset({"MEDICAL_RECORD_NUMBER", "CONTEXT"})
_MIN_PREFIX = 10
"""Letters and digits a truncated value keeps at least ("St Elsewhere" has 11)."""
_MIN_APPROX = 12
_MAX_PREFIX = 64
_MIN_NAME_WORD = 4
_MIN_PLACE_WORD = 5
_MIN_ID_DIGITS = 6
_DISTINCT_LETTERS = 4
_LOOK_ALIKE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "8": "b",
                             "!": "l"})
"""OCR look-alikes folded to one letter (after case folding): both sides are folded."""
_ID_LOOK_ALIKE = str.maketrans({"o": "0", "O": "0", "D": "0", "Q": "0", "I": "1", "l": "1",
                                "|": "1", "i": "1", "S": "5", "s": "5", "B": "8", "Z": "2",
                                "z": "2", "G": "6", "b": "6", "g": "9", "q": "9"})
_ROMAJI_RULES = (
    ("ou", "o"), ("oo", "o"), ("oh", "o"), ("uu", "u"), ("aa", "a"), ("ii", "i"),
    ("ee", "e"), ("nn", "n"), ("mb", "nb"), ("mp", "np"), ("mm", "nm"), ("tch", "ch"),
    ("shi", "si"), ("chi", "ti"), ("tsu", "tu"), ("fu", "hu"), ("ji", "zi"),
    ("sh", "sy"), ("ch", "ty"), ("j", "zy"),
)
_STOP_INITIALS = frozenset({"of", "the", "and", "for", "at", "de", "du", "des", "la", "le",
                            "les", "der", "die", "das", "fur", "und", "am", "an", "im", "y",
                            "e", "et", "van", "het", "en", "di", "del", "della", "do", "da",
                            "dos"})
_WORDS_RE = lazy_pattern(r"[^\W_]+")
_ACRONYM_RE = lazy_pattern(r"(?<![\w.])(?:[A-Z]\.){2,}[A-Z]?\.?|(?<!\w)[A-Z]{3,}(?!\w)")
_ID_TOKEN_RE = lazy_pattern(r"[0-9A-Za-z|]{6,}")
_DIGITS_RE = lazy_pattern(r"\d+")


def romaji_key(word: str) -> str:
    """A romanised Japanese word in a spelling shared by its common variants: long vowels
    short, Kunrei and Hepburn alike ("Tarou", "Taroh", "Tarō", "Taro" -> "taro")."""
    key = fold(word).replace("'", "").replace("-", "")
    for old, new in _ROMAJI_RULES:
        key = key.replace(old, new)
    return key


def _compact(text: str) -> tuple[str, list[int]]:
    """``text``'s letters and digits, folded with OCR look-alikes, and where each came from."""
    if text.isascii():  # one character in, one out
        where = [i for i, ch in enumerate(text) if ch.isalnum() or ch in "|!"]
        return "".join(text[i] for i in where).casefold().translate(_LOOK_ALIKE), where
    chars: list[str] = []
    where = []
    for i, ch in enumerate(text):
        if not (ch.isalnum() or ch in "|!"):
            continue
        for out in ascii_fold(ch).casefold().translate(_LOOK_ALIKE):
            if out.isalnum():
                chars.append(out)
                where.append(i)
    return "".join(chars), where


@dataclass(frozen=True)
class _Prefix:
    """A value's compact form; a match must reach ``need`` characters into it."""

    text: str
    need: int
    info_type: str


@dataclass(frozen=True)
class FuzzyForms:
    """The loose forms of one instance's values (see the module's docstring)."""

    prefixes: tuple[_Prefix, ...]
    words: dict[str, str]
    romaji: dict[str, str]
    acronyms: dict[str, str]
    ids: dict[str, str]

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.words or self.romaji or self.acronyms or self.ids)


def _need(words: list[str], generic: frozenset[str]) -> int:
    """How far into a value's compact form a prefix must reach: past the first 4 letters of
    a word that is not common in such names ("St Elsewhere ..." -> "stelse"); the whole
    value when it has no such word."""
    pos = 0
    for word in words:
        size = len(_compact(word)[0])
        if fold(word) not in generic and size >= 3 and not word.isdigit():
            return max(_MIN_PREFIX, pos + min(_DISTINCT_LETTERS, size))
        pos += size
    return max(_MIN_PREFIX, pos)


def _add_prefix(out: list[_Prefix], value: str, info_type: str, generic: frozenset[str]) -> None:
    compact = _compact(value)[0][:_MAX_PREFIX]
    if len(compact) < _MIN_PREFIX or CJK_RE.search(compact):
        return
    need = _need(_WORDS_RE.findall(value), generic)
    out.append(_Prefix(compact, min(need, len(compact)), info_type))


def _name_forms(raw: str, words: dict[str, str], romaji: dict[str, str],
                prefixes: list[_Prefix], generic: frozenset[str]) -> None:
    """A person name's components as words (look-alikes folded), each group as a prefix
    form (family and given names run together), kana and romaji in a common spelling."""
    for group in raw.split("="):
        components = [c.strip() for c in group.split("^")[:3] if c.strip()]
        for component in components:
            for word in _WORDS_RE.findall(component):
                compact, _ = _compact(word)
                if len(compact) >= _MIN_NAME_WORD:
                    words.setdefault(compact, "PERSON_NAME")
                reading = romanise_kana(word) if not word.isascii() else fold(word)
                if reading and len(reading) >= 3 and reading.isascii():
                    romaji.setdefault(romaji_key(reading), "PERSON_NAME")
        if len(components) >= 2:
            for joined in (components[0] + components[1], components[1] + components[0]):
                compact, _ = _compact(joined)
                if len(compact) >= _MIN_NAME_WORD + 2:
                    words.setdefault(compact, "PERSON_NAME")
            _add_prefix(prefixes, " ".join(components[:2]), "PERSON_NAME", frozenset())
            _add_prefix(prefixes, f"{components[1]} {components[0]}", "PERSON_NAME",
                        frozenset())


def _initials(raw: str) -> set[str]:
    """An institution's acronyms: initials of its words, with and without the small ones,
    without a leading saint's title, and up to each facility word ("St Elsewhere General
    Hospital of the North" -> SEGHOTN, SEGHN, EGHN, SEGH, EGH...)."""
    words = [w for w in _WORDS_RE.findall(ascii_fold(raw)) if w[0].isascii() and w[0].isalpha()]
    lex = lexicon()
    out = set()
    for chosen in (words, [w for w in words if fold(w) not in _STOP_INITIALS]):
        cuts = [len(chosen)] + [i + 1 for i, w in enumerate(chosen)
                                if fold(w) in lex.facility_words]
        for cut in cuts:
            letters = "".join(w[0] for w in chosen[:cut]).upper()
            out.add(letters)
            if chosen and fold(chosen[0]) in lex.saints:
                out.add(letters[1:])
    return {a for a in out if len(a) >= 3 and fold(a) not in lex.vocabulary}


def _id_digits(raw: str) -> str | None:
    """The significant digits of an ID-like value (6 or more), else None."""
    runs = _DIGITS_RE.findall(raw)
    if len(runs) != 1 or len(runs[0].lstrip("0")) < _MIN_ID_DIGITS:
        return None
    return runs[0].lstrip("0")


@functools.lru_cache(maxsize=256)
def fuzzy_forms(pairs: tuple[tuple[str, str], ...]) -> FuzzyForms:
    """The loose forms of ``(info_type, raw value)`` pairs (remembered: an institution and
    a patient recur from file to file)."""
    lex = lexicon()
    generic = lex.generic | lex.vocabulary
    prefixes: list[_Prefix] = []
    words: dict[str, str] = {}
    romaji: dict[str, str] = {}
    acronyms: dict[str, str] = {}
    ids: dict[str, str] = {}
    for info_type, raw_values in pairs:
        for raw in raw_values.split("\\"):
            if len(raw.strip()) < 2:
                continue
            if info_type == "PERSON_NAME":
                _name_forms(raw, words, romaji, prefixes, generic)
                continue
            if info_type in _ID_TYPES and (digits := _id_digits(raw)) is not None:
                ids.setdefault(digits, info_type)
                continue
            if info_type not in _PREFIX_TYPES:
                continue
            for part in {raw, *re.split(r"[\^\r\n]+", raw)}:
                _add_prefix(prefixes, part, info_type, generic)
            if info_type in _WORD_TYPES:
                for word in _WORDS_RE.findall(raw):
                    compact, _ = _compact(word)
                    if len(compact) >= _MIN_PLACE_WORD and fold(word) not in generic \
                            and not word.isdigit():
                        words.setdefault(compact, info_type)
            if info_type == "ORGANIZATION_NAME":
                for acronym in _initials(raw):
                    acronyms.setdefault(acronym, info_type)
    unique = {(p.text, p.need): p for p in prefixes}
    return FuzzyForms(tuple(unique.values()), words, romaji, acronyms, ids)


def _approx_end(pattern: str, text: str, need: int) -> tuple[int, int] | None:
    """Where in ``text`` a prefix of ``pattern`` of ``need`` or more characters ends with
    at most one edit (two once 20 long), and that prefix's length; None when nowhere.
    Sellers' dynamic programming, stopped once every alignment has more edits than allowed."""
    prev = [0] * (len(text) + 1)  # row 0: a match may start anywhere
    for i in range(1, len(pattern) + 1):
        row = [i] + [0] * len(text)
        ch = pattern[i - 1]
        for j in range(1, len(text) + 1):
            row[j] = min(prev[j - 1] + (ch != text[j - 1]), prev[j] + 1, row[j - 1] + 1)
        best = min(row)
        if best > 2:
            return None
        allowed = 1 if i < 20 else 2
        if i >= max(need, _MIN_APPROX) and best <= allowed:
            return row.index(best), i
        prev = row
    return None


def _prefix_spans(text: str, forms: FuzzyForms) -> Iterator[Span]:
    compact, where = _compact(text)
    if len(compact) < _MIN_PREFIX:
        return
    for form in forms.prefixes:
        head = form.text[:_MIN_PREFIX]
        pos = compact.find(head)
        while pos >= 0:
            n = _MIN_PREFIX
            while pos + n < len(compact) and n < len(form.text) and \
                    compact[pos + n] == form.text[n]:
                n += 1
            if n >= form.need:
                yield Span(where[pos], where[pos + n - 1] + 1, form.info_type, True)
                break
            pos = compact.find(head, pos + 1)
        else:
            if len(form.text) < _MIN_APPROX or form.need >= len(form.text):
                continue  # short, or made of common words only: exact matches only
            # one edit in the first 12 leaves one of its three 4-letter pieces intact
            if not any(form.text[k : k + 4] in compact for k in (0, 4, 8)):
                continue
            found = _approx_end(form.text, compact, form.need)
            if found is not None:
                end, length = found
                start = max(0, end - length)
                yield Span(where[start], where[end - 1] + 1, form.info_type, True)


def _word_spans(text: str, forms: FuzzyForms) -> Iterator[Span]:
    for m in _WORDS_RE.finditer(text):
        word = m.group()
        if forms.words:
            found = forms.words.get(_compact(word)[0])
            if found is not None:
                yield Span(m.start(), m.end(), found, True)
                continue
        if forms.romaji and word.isascii() and not word.isdigit():
            found = forms.romaji.get(romaji_key(word))
            if found is not None:
                yield Span(m.start(), m.end(), found, True)
        elif forms.romaji and (reading := romanise_kana(word)) is not None:
            found = forms.romaji.get(romaji_key(reading))
            if found is not None:
                yield Span(m.start(), m.end(), found, True)


def _acronym_spans(text: str, forms: FuzzyForms) -> Iterator[Span]:
    for m in _ACRONYM_RE.finditer(text):
        found = forms.acronyms.get(m.group().replace(".", ""))
        if found is not None:
            yield Span(m.start(), m.end(), found, True)


def _id_spans(text: str, forms: FuzzyForms) -> Iterator[Span]:
    for m in _ID_TOKEN_RE.finditer(text):
        token = m.group()
        if sum(c.isdigit() for c in token) * 2 < len(token):
            continue
        folded = token.translate(_ID_LOOK_ALIKE)
        for digits, info_type in forms.ids.items():
            if digits in folded:
                yield Span(m.start(), m.end(), info_type, True)
                break


def fuzzy_matches(text: str, ctx: PhiContext | None) -> list[Span]:
    """Spans of ``text`` (one line of burned-in text) matching the loose forms of ``ctx``'s
    values, possibly overlapping; each marked as a context match of its value's type."""
    if ctx is None or not text.strip():
        return []
    forms = fuzzy_forms(context_values(ctx))
    if not forms:
        return []
    found = list(_prefix_spans(text, forms))
    found += _word_spans(text, forms)
    if forms.acronyms:
        found += _acronym_spans(text, forms)
    if forms.ids:
        found += _id_spans(text, forms)
    return found
