"""Word lists for judging burned-in text: facility words, street words, titles and banner
labels, the vocabulary of image banners, and kana to romaji (package data in ``data/``).

Words are compared folded (:func:`fold`): lower case, diacritics removed, "ß" as "ss", so
"Hôpital", "HOPITAL" and "hopital" are one word. Read once per process, when pixel text
is first judged.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources

from .chars import ascii_fold, kana_script

__all__ = ["Lexicon", "fold", "lexicon", "romanise_kana"]

def fold(word: str) -> str:
    """A word as the lists hold it: lower case, without diacritics ("Straße" -> "strasse")."""
    return ascii_fold(word).casefold()


@dataclass(frozen=True)
class Lexicon:
    """The word lists, folded; see ``data/SOURCE.md`` for what each holds."""

    facility_words: frozenset[str]
    facility_phrases: dict[str, tuple[tuple[str, ...], ...]]
    """Phrases by their first word, longest first."""
    facility_suffixes: tuple[str, ...]
    facility_cjk: tuple[str, ...]
    facility_acronyms: frozenset[str]
    """As written (case matters)."""
    acronyms_before_name: frozenset[str]
    """As written: a facility only when a capitalised word follows ("UZ Leuven")."""
    saints: frozenset[str]
    saint_stops: frozenset[str]
    generic: frozenset[str]
    """Words of institution names too common to identify one alone (facility words too)."""
    street_after: frozenset[str]
    street_named: frozenset[str]
    """Street words that make an address of a capitalised name without a house number."""
    street_before: frozenset[str]
    street_before_weak: frozenset[str]
    street_suffixes: tuple[str, ...]
    titles: frozenset[str]
    labels: dict[str, tuple[tuple[str, ...], ...]]
    cjk_labels: tuple[str, ...]
    honorifics: tuple[str, ...]
    vocabulary: frozenset[str]
    kana: dict[str, str]


def _rows(name: str) -> dict[str, list[str]]:
    """The ``kind<TAB>lang<TAB>text`` rows of a data file, texts grouped by kind."""
    text = resources.files(__package__).joinpath(f"data/{name}").read_text(encoding="utf-8")
    out: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, _lang, value = line.split("\t")
        out[kind].append(value.strip())
    return out


def _words(values: list[str]) -> frozenset[str]:
    return frozenset(fold(v) for v in values)


def _phrases(values: list[str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Phrases of folded words, by their first word, longest first."""
    by_first: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for phrase in sorted({tuple(fold(v).split()) for v in values}, key=len, reverse=True):
        by_first[phrase[0]].append(phrase)
    return {first: tuple(phrases) for first, phrases in by_first.items()}


@functools.cache
def lexicon() -> Lexicon:
    """The word lists of this package (read once)."""
    fac = _rows("facilities.tsv")
    addr = _rows("addresses.tsv")
    people = _rows("people.tsv")
    vocab_text = resources.files(__package__).joinpath("data/banner_vocabulary.txt")
    vocabulary = frozenset(
        fold(w) for w in vocab_text.read_text(encoding="utf-8").split("\n")
        if w.strip() and not w.startswith("#"))
    kana_text = resources.files(__package__).joinpath("data/kana_romaji.tsv")
    kana = dict(
        line.split("\t") for line in kana_text.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#"))
    facility_words = _words(fac["word"])
    return Lexicon(
        facility_words=facility_words,
        facility_phrases=_phrases(fac["phrase"]),
        facility_suffixes=tuple(sorted({fold(v) for v in fac["suffix"]}, key=len, reverse=True)),
        facility_cjk=tuple(fac["cjk"]),
        facility_acronyms=frozenset(fac["acronym"]),
        acronyms_before_name=frozenset(fac["acronym_name"]),
        saints=_words(fac["saint"]),
        saint_stops=_words(fac["saint_stop"]),
        generic=_words(fac["generic"]) | facility_words
        | {w for v in fac["phrase"] for w in fold(v).split()},
        street_after=_words(addr["after"]) | _words(addr["after_strong"]),
        street_named=_words(addr["after_strong"]),
        street_before=_words(addr["before"]),
        street_before_weak=_words(addr["before_weak"]),
        street_suffixes=tuple(sorted({fold(v) for v in addr["suffix"]}, key=len, reverse=True)),
        titles=_words(people["title"]),
        labels=_phrases(people["label"]),
        cjk_labels=tuple(sorted(people["cjk_label"], key=len, reverse=True)),
        honorifics=tuple(people["honorific"]),
        vocabulary=vocabulary,
        kana=kana,
    )


def romanise_kana(text: str) -> str | None:
    """Hepburn romaji of a word in hiragana or katakana ("たろう" -> "tarou"); None when
    it holds anything else (kanji cannot be read without a dictionary)."""
    kana = lexicon().kana
    chars = list(kana_script(text, katakana=False))
    out: list[str] = []
    double = False
    i = 0
    while i < len(chars):
        pair = "".join(chars[i : i + 2])
        if len(pair) == 2 and pair in kana:
            syllable, i = kana[pair], i + 2
        elif chars[i] in kana:
            syllable, i = kana[chars[i]], i + 1
        elif chars[i] == "っ":
            double, i = True, i + 1
            continue
        elif chars[i] == "ー" and out:
            out.append(out[-1][-1])
            i += 1
            continue
        else:
            return None
        if double:
            out.append("t" if syllable.startswith("ch") else syllable[0])
            double = False
        out.append(syllable)
    return "".join(out) or None
