"""Character classes and lazily compiled patterns shared by the text cleaners.

Scripts written without spaces (CJK) match as substrings; others only as whole tokens.
Patterns compile when first used: compiling the text cleaners' 20 costs about 45 ms,
which every run would pay at start though most clean no text.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, cast


class _LazyPattern:
    """A regular expression compiled when first used: compiling this module's 20 costs
    about 45 ms, which every run would pay at start though most clean no text."""

    def __init__(self, pattern: str, flags: int) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        value = getattr(re.compile(*self._source), name)
        setattr(self, name, value)  # found directly from now on
        return value


def lazy_pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, compiled at its first use."""
    return cast("re.Pattern[str]", _LazyPattern(pattern, flags))



# Scripts written without spaces between words: values in them match as substrings.
CJK = (
    "\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
)
CJK_RE = lazy_pattern(f"[{CJK}]")
KANA_RE = lazy_pattern("[\u3041-\u3096\u30a1-\u30f6]")
"""Hiragana or katakana (full-width: half-width katakana is NFKC-normalised first)."""
_KANA_OFFSET = 0x60
"""Katakana ァ (U+30A1) .. ヶ (U+30F6) sit this far above hiragana ぁ (U+3041) .. ゖ."""


def kana_script(text: str, katakana: bool) -> str:
    """``text`` with its hiragana written in katakana (``katakana``) or the other way
    round: the same sounds, one script for native words, the other for names in forms."""
    lo, hi, shift = (0x3041, 0x3096, _KANA_OFFSET) if katakana else \
        (0x30A1, 0x30F6, -_KANA_OFFSET)
    return "".join(chr(ord(c) + shift) if lo <= ord(c) <= hi else c for c in text)


# A letter or digit of a script written with spaces: what must not touch a whole token.
WORD = f"[^\\W_{CJK}]"
LB = f"(?-i:(?<!{WORD}))"  # case-free: IGNORECASE makes big classes slow to compile
LA = f"(?-i:(?!{WORD}))"
# Not part of a decimal number or dotted UID ("0.488281", "1.2.840.113619").
NO_DEC_B = r"(?<!\d[.,])"
NO_DEC_A = r"(?![.,]\d)"


def is_word(char: str) -> bool:
    """A letter or digit of a script written with spaces (where whole tokens apply)."""
    return char.isalnum() and not CJK_RE.match(char)



_FOLD_EXTRA = str.maketrans({"ß": "ss", "ẞ": "SS", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE",
                             "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th",
                             "ı": "i", "İ": "I", "ð": "d", "Ð": "D", "œ": "oe", "Œ": "OE",
                             "ŀ": "l", "Ŀ": "L", "ħ": "h", "Ħ": "H"})


def ascii_fold(text: str) -> str:
    """Latin text without diacritics ("Großkopf Sören" -> "Grosskopf Soren").

    Burned-in annotations are often rendered in ASCII-only fonts, and OCR reads them
    back that way: matching the folded form of a context value catches them.
    """
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def umlaut_fold(text: str) -> str:
    """Latin text with umlauts written out, as German spells a name without them
    ("Müller" -> "Mueller"), and other diacritics dropped as :func:`ascii_fold` does."""
    return ascii_fold(text.translate(_UMLAUTS)) if not text.isascii() else text


def plain_spellings(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(info type, value) pairs with, after them, each value's other spellings without
    diacritics: dropped or, for umlauts, written out ("Muller" and "Mueller" for
    MÜLLER), as banners, local codes and paths write them. The one rule for every
    context of a source's values (the sweep's, the pixel cleaner's, the gate's)."""
    return pairs + [(kind, spelled) for kind, value in pairs
                    for spelled in dict.fromkeys((ascii_fold(value), umlaut_fold(value)))
                    if spelled != value]


_DIAERESIS = "\u0308"


def fold_map(text: str, umlauts: bool = False) -> tuple[str, tuple[int, ...]]:
    """:func:`_fold_map`, remembered for texts of a descriptor's size (a series repeats
    them; a long report is folded each time rather than held in memory)."""
    return _fold_map_remembered(text, umlauts) if len(text) <= 1024 else \
        _fold_map(text, umlauts)


@functools.lru_cache(maxsize=4096)
def _fold_map_remembered(text: str, umlauts: bool) -> tuple[str, tuple[int, ...]]:
    return _fold_map(text, umlauts)


def _fold_map(text: str, umlauts: bool = False) -> tuple[str, tuple[int, ...]]:
    """:func:`ascii_fold` of ``text`` (or :func:`umlaut_fold`), one character at a time,
    and for each character of the result the index of the one it came from: a match
    found in the folded text is a span of the original ("Œhler" for OEHLER, "Großkopf"
    for GROSSKOPF, a decomposed "Mu\u0308ller" for MUELLER, full-width "４８２" for 482,
    half-width "ﾔﾏﾀﾞ" for ヤマダ)."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if umlauts and ch == _DIAERESIS and i and text[i - 1] in "aouAOU":
            piece = "e"  # "u" + a combining diaeresis: "ue"
        else:
            if umlauts:
                ch = ch.translate(_UMLAUTS)
            piece = "".join(c for c in unicodedata.normalize("NFKD", ch.translate(_FOLD_EXTRA))
                            if not unicodedata.combining(c))
        out.append(piece)
        origin.extend([i] * len(piece))
    return "".join(out), tuple(origin)
