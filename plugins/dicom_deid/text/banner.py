"""Generic detectors for lines of burned-in text: organisations, places and addresses,
person names (Google info types ORGANIZATION_NAME, LOCATION, STREET_ADDRESS, PERSON_NAME).

A banner names a hospital, a street or a patient without spelling the header's values:
"Kessington Univ Klinikum", "12 Harbour Rd", "DOE^JANE" are found here from the words
around them (facility words, street words, name layouts; lists in ``data/``), without
any header value. They judge OCR'd lines. Free text that Clean Descriptors cleans
("Prior for DUNSTERFORD^MARGERY", "Home: 12 Baker Street, London NW1 6XE") is judged by
the layouts that do not take ordinary words for names (:func:`clean_descriptor`): person
names as forms write them, street addresses and postal codes; not facility words ("outside
hospital" is ordinary text), and a title in capitals only with its period ("MS lesion",
"DR chest" are no people).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from .chars import lazy_pattern
from .context import PhiContext
from .detectors import PLACEHOLDER_RE, PRIORITY
from .find import find_spans
from .fuzzy import fuzzy_matches
from .lexicon import Lexicon, fold, lexicon
from .spans import CTX_MARKER, Span, non_overlapping, splice

__all__ = ["LINE_DETECTORS", "Token", "clean_descriptor", "line_spans", "tokens"]

_TOKEN_RE = lazy_pattern(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER_RE = lazy_pattern(r"\d{1,5}[A-Za-z]?")
_PARTICLES = frozenset({"de", "du", "des", "la", "le", "l", "d", "del", "della", "di", "da",
                        "do", "dos", "das", "van", "von", "der", "den", "ter", "y"})
_NAME_PARTICLES = frozenset({"van", "von", "de", "der", "den", "del", "della", "di", "da",
                             "du", "dos", "das", "la", "le", "ter", "ten", "mac", "mc"})
_POSTAL_RES = (
    # a code of 4-5 digits (with a country letter) and a town: at the line's start or
    # after a comma ("75014 Paris", "D-80331 München", ", 1000 Bruxelles")
    lazy_pattern(r"(?:^\s*|[,;]\s*|(?<![\w-])[A-Z]{1,2}-)\d{4,5}\s+(?P<town>[^\W\d_]{3,})"),
    lazy_pattern(r"(?<!\w)\d{4}\s?[A-Z]{2}\s+(?P<town>[^\W\d_]{3,})"),  # NL "1234 AB Delft"
    lazy_pattern(r"(?<!\w)\d{4}-\d{3}\s+(?P<town>[^\W\d_]{3,})"),  # PT "1000-001 Lisboa"
    lazy_pattern(r"(?<![\w-])[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}(?![\w-])"),  # UK "WB4 7QT"
    lazy_pattern(r"(?<![\w-])[A-Z]\d[A-Z]\s\d[A-Z]\d(?![\w-])"),  # Canada "K1A 0B1"
    lazy_pattern(r"(?<!\w)[A-Z][a-z]+,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?(?!\w)"),  # US "Troy, NY 12180"
    lazy_pattern(r"〒\s*\d{3}-?\d{4}"),
    lazy_pattern(r"(?:東京都|北海道|京都府|大阪府|[\u4e00-\u9fff]{2,3}県)[\u4e00-\u9fff]{1,6}[市区町村郡]"),
    lazy_pattern(r"\d+\s*丁目|\d+\s*番地"),
)
_AFTER_LABEL_RE = lazy_pattern(r"\s*[:：]?\s*([^\W\d_]+)")
_PO_BOX_RE = lazy_pattern(r"(?<!\w)P\.?\s?O\.?\s+Box\s+\d+", re.IGNORECASE)
_CARET_RE = lazy_pattern(
    r"(?<![^\W_])[^\W\d_]{2,}(?:[ '\-][^\W\d_]+)*(?:\^[^\W\d_]+(?:[ '\-][^\W\d_]+)*)+")

_CARET_WORDS_RE = lazy_pattern(
    r"(?<![^\W_])[^\W\d_]{2,}(?:['\-][^\W\d_]+)*(?:\^[^\W\d_]+(?:['\-][^\W\d_]+)*)+")


@dataclass(frozen=True, slots=True)
class Token:
    """One word of a line: as written, folded, where it is, and what follows it."""

    text: str
    folded: str
    start: int
    end: int
    after: str
    """The characters between this word and the next (or the line's end)."""

    @property
    def capitalised(self) -> bool:
        """Written with a capital first letter ("Road", "ROAD"), as names are."""
        return self.text[:1].isupper()

    @property
    def alphabetic(self) -> bool:
        """Letters only (an apostrophe inside allowed: "O'Brien")."""
        return self.text.replace("'", "").replace("’", "").isalpha()


def tokens(text: str) -> list[Token]:
    """The words of a line of text."""
    found = [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]
    out = []
    for i, (word, start, end) in enumerate(found):
        nxt = found[i + 1][1] if i + 1 < len(found) else len(text)
        out.append(Token(word, fold(word), start, end, text[end:nxt]))
    return out


_Found = Iterator[tuple[int, int]]


def _is_name_word(tok: Token, lex: Lexicon, min_len: int = 2) -> bool:
    """A word that may be a person's name, town or saint: capitalised letters that are not
    a banner word ("GEN", "LEFT", "Depth")."""
    return (tok.capitalised and tok.alphabetic and len(tok.text) >= min_len
            and tok.folded not in lex.vocabulary)


# -- organisations -------------------------------------------------------------------------


def _organisations(text: str, toks: list[Token]) -> _Found:
    """Facility words and phrases, compounds ending in one, facility acronyms."""
    lex = lexicon()
    folded = [t.folded for t in toks]
    for i, tok in enumerate(toks):
        if tok.folded in lex.facility_words or tok.text in lex.facility_acronyms or (
            tok.folded.endswith(lex.facility_suffixes) and any(
                len(tok.folded) > len(s) + 1 and tok.folded.endswith(s)
                for s in lex.facility_suffixes)
        ):
            yield tok.start, tok.end
        elif (tok.text in lex.acronyms_before_name and i + 1 < len(toks)
              and _is_name_word(toks[i + 1], lex, 3)):
            yield tok.start, toks[i + 1].end
        for phrase in lex.facility_phrases.get(tok.folded, ()):
            if tuple(folded[i : i + len(phrase)]) == phrase:
                yield tok.start, toks[i + len(phrase) - 1].end
                break
    for word in lex.facility_cjk:
        start = text.find(word)
        if start >= 0:
            yield start, start + len(word)


# -- places and addresses ------------------------------------------------------------------


def _saints(toks: list[Token]) -> _Found:
    """A saint's title and the name after it: "St Elsewhere", "San Raffaele", "Sankt Georg"."""
    lex = lexicon()
    for i, tok in enumerate(toks[:-1]):
        nxt = toks[i + 1]
        if (tok.folded in lex.saints and tok.capitalised and tok.after.strip() in ("", ".", "-")
                and _is_name_word(nxt, lex, 3) and nxt.folded not in lex.saint_stops):
            yield tok.start, nxt.end


def _postal(text: str, written: bool = False) -> _Found:
    """A postal code with a town, or a postal code of a form that needs none (UK, Japan).
    ``written`` (free text): not a number opening the text ("5000 Units heparin")."""
    vocabulary = lexicon().vocabulary
    for n, pattern in enumerate(_POSTAL_RES):
        for m in pattern.finditer(text):
            town = m.groupdict().get("town")
            if town is not None and (not town[0].isupper() or fold(town) in vocabulary):
                continue
            if written and n == 0 and not text[:m.start()].strip() and \
                    text[m.start():m.end()].lstrip()[:1].isdigit():
                continue
            yield m.span()


def _is_number(tok: Token) -> bool:
    return bool(_NUMBER_RE.fullmatch(tok.text)) and not tok.after.startswith(("-", ".", "/"))


def _street_name_end(toks: list[Token], i: int, lex: Lexicon) -> int:
    """The index past a street's name starting at ``i`` (particles, then a capitalised word
    or a number: "de la Paix", "Roma", "25 de Abril"), or ``i`` when there is none."""
    j = i
    while j < len(toks) and toks[j].folded in _PARTICLES:
        j += 1
    if j < len(toks) and (toks[j].capitalised or toks[j].text.isdigit()) and \
            toks[j].folded not in lex.vocabulary:
        return j + 1
    return i


def _near_number(toks: list[Token], i: int, j: int) -> bool:
    """A house number just before ``toks[i]`` or within two words after ``toks[j - 1]``."""
    before = i > 0 and _is_number(toks[i - 1])
    return before or any(_is_number(t) for t in toks[j : j + 2])


def _streets(toks: list[Token]) -> _Found:
    """Street addresses: "12 Harbour Road", "rue de la Paix", "Via Roma 5", "Hauptstr. 5"."""
    lex = lexicon()
    for i, tok in enumerate(toks):
        if tok.folded in lex.street_after and tok.capitalised and i >= 1:
            yield from _street_after(toks, i, lex)
        if tok.folded in lex.street_before or tok.folded in lex.street_before_weak:
            # a street word before the name: "rue de la Paix", "Via Roma"
            j = _street_name_end(toks, i + 1, lex)
            named = tok.capitalised and (tok.folded in lex.street_before or (
                i + 1 < len(toks) and toks[i + 1].folded in _PARTICLES))
            if j > i + 1 and (named or _near_number(toks, i, j)):
                yield tok.start, toks[j - 1].end
        if i + 1 < len(toks) and tok.capitalised and _is_number(toks[i + 1]) and any(
            tok.folded.endswith(s) and (len(tok.folded) > len(s) + 1 or (
                i > 0 and toks[i - 1].capitalised and tok.folded == s))
            for s in lex.street_suffixes
        ):
            # a name ending in a street word, then the number: "Kerkstraat 12"
            yield tok.start, toks[i + 1].end


def _street_after(toks: list[Token], i: int, lex: Lexicon) -> _Found:
    """A street word after the name (``toks[i]``), a house number before it: "14 Quarry
    Lane"; or, for the words no other sense has ("Street", "Road"), no number."""
    k = i - 1
    while k > 0 and i - k <= 4 and toks[k].capitalised and toks[k].alphabetic:
        k -= 1
    if k < i - 1 and _is_number(toks[k]):
        yield toks[k].start, toks[i].end
    elif toks[i].folded in lex.street_named and _is_name_word(toks[i - 1], lex, 3):
        yield toks[i - 1].start, toks[i].end


def _addresses(text: str, toks: list[Token]) -> _Found:
    yield from _streets(toks)
    for m in _PO_BOX_RE.finditer(text):
        yield m.span()


def _locations(text: str, toks: list[Token]) -> _Found:
    yield from _saints(toks)
    yield from _postal(text)


# -- person names --------------------------------------------------------------------------


def _comma_names(toks: list[Token], lex: Lexicon) -> _Found:
    """``SURNAME, GIVEN [M.]`` and ``Surname, Given``: two name words around a comma (of
    the one or two given words, one is not a banner word: "Nguyen, Thi Huong")."""
    for i, tok in enumerate(toks[:-1]):
        if tok.after.strip() != "," or not _is_name_word(tok, lex) or tok.folded in lex.titles:
            continue
        given = toks[i + 1]
        if len(given.text) == 1 and given.text.isupper() and len(tok.text) >= 3:
            end = given.end  # an initial: "SMITH, J."
        else:
            names = [t for t in toks[i + 1 : i + 3] if t.capitalised and t.alphabetic
                     and _cased_alike(tok.text, t.text)]
            if not any(_is_name_word(t, lex) for t in names):
                continue
            end = names[-1].end
        start = i
        while start > 0 and toks[start - 1].folded in _NAME_PARTICLES and \
                toks[start - 1].after.strip() == "":
            start -= 1
        yield toks[start].start, end


def _cased_alike(a: str, b: str) -> bool:
    """Both words in capitals, or both capitalised: "DOE, JANE", "Doe, Jane" (not "ABD, Gen"
    of a label and a word, though that one is banner vocabulary anyway)."""
    return (a.isupper() and b.isupper()) or (not a.isupper() and not b.isupper()) or len(b) == 1


def _titled_names(toks: list[Token], lex: Lexicon, strict: bool = False) -> _Found:
    """A title and a name: "Dr Ruth", "Frau Weber", "Dott. Rossi" ("MR BRAIN" is a modality;
    ``strict``: a short title in capitals counts only with its period, as "MS lesion" and
    "DR chest" are no people)."""
    for i, tok in enumerate(toks[:-1]):
        if tok.folded not in lex.titles or not tok.capitalised or tok.text == "MR":
            continue
        if strict and tok.text.isupper() and len(tok.text) <= 3 and tok.after.strip() != ".":
            continue
        nxt = toks[i + 1]
        if tok.after.strip() in ("", ".") and _is_name_word(nxt, lex):
            yield tok.start, _name_end(toks, i + 1, lex)


def _name_end(toks: list[Token], i: int, lex: Lexicon) -> int:
    """The end of a name starting at ``toks[i]``: with the name word after it, if one
    follows after a space ("Mrs Margery Dunsterford", "Patient: Jane Doe")."""
    if i + 1 < len(toks) and toks[i].after == " " and _is_name_word(toks[i + 1], lex) and \
            _cased_alike(toks[i].text, toks[i + 1].text):
        return toks[i + 1].end
    return toks[i].end


def _labelled_names(text: str, toks: list[Token], lex: Lexicon) -> _Found:
    """A label, a colon and a name: "Patient: Jane Doe", "Nom : DUPONT", "氏名：山田太郎"."""
    folded = [t.folded for t in toks]
    for i in range(len(toks) - 1):
        for label in lex.labels.get(folded[i], ()):
            j = i + len(label)
            if (j < len(toks) and tuple(folded[i:j]) == label
                    and toks[j - 1].after.strip() in (":", "：")
                    and toks[j].alphabetic and toks[j].folded not in lex.vocabulary):
                yield toks[j].start, _name_end(toks, j, lex)
                break
    for cjk_label in lex.cjk_labels:
        pos = text.find(cjk_label)
        if pos < 0:
            continue
        m = _AFTER_LABEL_RE.match(text, pos + len(cjk_label))
        if m is not None and m.group(1) not in lex.cjk_labels:
            yield m.start(1), m.end(1)


def _honorifics(text: str, lex: Lexicon) -> _Found:
    """A name written without spaces and an honorific after it: "山田様", "김민수님"."""
    for word in lex.honorifics:
        pos = text.find(word)
        while pos > 0:
            end = pos - 1 if text[pos - 1] == " " else pos
            start = end
            while start > 0 and end - start < 12 and text[start - 1].isalpha():
                start -= 1
            if start < end and text[pos : pos + len(word) + 1] != "氏名":
                yield start, pos + len(word)
            pos = text.find(word, pos + 1)


def _people(text: str, toks: list[Token]) -> _Found:
    """Person names laid out as banners and forms write them, whoever they name."""
    lex = lexicon()
    for m in _CARET_RE.finditer(text):
        yield m.span()
    yield from _comma_names(toks, lex)
    yield from _titled_names(toks, lex)
    yield from _labelled_names(text, toks, lex)
    yield from _honorifics(text, lex)


def _written_people(text: str, toks: list[Token]) -> _Found:
    """:func:`_people` for free text: a caret name of words without spaces ("Prior for
    DUNSTERFORD^MARGERY": not "Prior for"), titles as :func:`_titled_names` takes them
    ``strict``, labels and honorifics; not two words around a comma, which descriptions
    write of anatomy and procedures ("Biopsy, Core", "Neuro, Stroke")."""
    lex = lexicon()
    for m in _CARET_WORDS_RE.finditer(text):
        yield m.span()
    yield from _titled_names(toks, lex, strict=True)
    yield from _labelled_names(text, toks, lex)
    yield from _honorifics(text, lex)


_LineDetector = Callable[[str, list[Token]], _Found]

LINE_DETECTORS: tuple[tuple[str, _LineDetector], ...] = (
    ("ORGANIZATION_NAME", _organisations),
    ("STREET_ADDRESS", _addresses),
    ("LOCATION", _locations),
    ("PERSON_NAME", _people),
)
"""The generic detectors of burned-in text lines, by info type: each takes the line and
its words (:func:`tokens`) and yields ``(start, end)`` spans."""


DESCRIPTOR_DETECTORS: tuple[tuple[str, _LineDetector], ...] = (
    ("STREET_ADDRESS", _addresses),
    ("LOCATION", lambda text, _toks: _postal(text, written=True)),
    ("PERSON_NAME", _written_people),
)
"""The line detectors free text is judged by too (not facility words or saints' names:
ordinary words in a description)."""


def clean_descriptor(text: str, ctx: PhiContext | None) -> str:
    """PS3.15 Clean Descriptors / Google ``cleanDescriptors`` for one free-text value.

    Phrases matching the instance's own identifying values become ``[CTX]``; generic
    detections (dates, phones, IDs... and the layouts of :data:`DESCRIPTOR_DETECTORS`:
    anyone's name as a form writes it, a street address, a postal code) become
    ``[<INFO_TYPE>]``. Repeated until nothing changes, so the result is idempotent:
    ``clean_descriptor(clean_descriptor(t, c), c) == clean_descriptor(t, c)``.
    """
    for _ in range(6):
        # the instance's own values and the generic detectors first; the layouts then
        # judge what they left ("Dr [CTX]" is written, not "[PERSON_NAME]")
        spans = find_spans(text, ctx) or list(_layouts(text))
        if not spans:
            return text
        text = splice(text, spans, lambda s: CTX_MARKER if s.from_context else f"[{s.info_type}]")
    return text


@lru_cache(maxsize=8192)
def _layouts(text: str) -> tuple[Span, ...]:
    """What :data:`DESCRIPTOR_DETECTORS` find in ``text`` (no instance's values: the same
    for every file of a series, so remembered)."""
    return tuple(_resolved(text, [], DESCRIPTOR_DETECTORS))


def _ranked(spans: list[Span]) -> list[tuple[Span, int]]:
    """Spans of :func:`~.find.find_spans` with their rank: a context match first, then the
    generic detectors' order."""
    return [(span, -1 if span.from_context else PRIORITY.get(span.info_type, len(PRIORITY)))
            for span in spans]


def _resolved(text: str, found: list[tuple[Span, int]],
              detectors: tuple[tuple[str, _LineDetector], ...],
              include: frozenset[str] | None = None) -> list[Span]:
    """``found`` (ranked spans) with what ``detectors`` find after them, overlaps resolved
    (:func:`~.spans.non_overlapping`): a detection touching a placeholder already written
    (``[CTX]``...) is no one's name."""
    toks = tokens(text)
    for rank, (info_type, detect) in enumerate(detectors, len(PRIORITY)):
        if include is None or info_type in include:
            found += [(Span(start, end, info_type), rank) for start, end in detect(text, toks)
                      if end > start]
    return non_overlapping(text, found, PLACEHOLDER_RE)


def line_spans(
    text: str,
    ctx: PhiContext | None,
    *,
    include: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[Span]:
    """Sensitive spans of one line of burned-in text, sorted and non-overlapping.

    What :func:`~.find.find_spans` finds (the instance's values written exactly, generic
    dates, phones, IDs...), the loose forms of the instance's values (:mod:`.fuzzy`) and
    the line detectors above. Overlaps resolve as in ``find_spans``: the longest span, on
    equal length a context match first, then the generic detectors' order, then these;
    ``include`` restricts the info types looked for, ``exclude`` drops spans after overlaps
    resolve (an excluded type still shields what it contains).
    """
    if not text.strip():
        return []
    found = _ranked(find_spans(text, ctx, include=include))
    found += [(span, -1) for span in fuzzy_matches(text, ctx)
              if include is None or span.info_type in include]
    return [s for s in _resolved(text, found, LINE_DETECTORS, include)
            if s.info_type not in exclude]
