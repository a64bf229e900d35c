"""Known burned-in text regions, in the RSNA CTP ``DicomPixelAnonymizer.script`` format.

A rule file is a list of *signatures* — ``{ Manufacturer.containsIgnoreCase("GE") *
Rows.equals("512") }`` — each followed by rectangles ``(x,y,w,h)`` to blank. Text
outside braces and parentheses is comment. As in CTP, signatures are tried in file
order and only the first match applies; a parenthesised group after a signature is a
region only when it holds exactly four comma-separated integers (comment text such as
"(see note)" is ignored, as CTP ignores it); negative ``x``/``y`` count from the right
or bottom edge and rectangles are clipped to the image.

The expression language is CTP's DicomFilter syntax: an identifier, a string test
(``equals``, ``contains``, ``startsWith``, ``endsWith``, each also ``...IgnoreCase``;
``matches`` for a whole-value regular expression; ``isLessThan`` / ``isGreaterThan``, which
compare the digits and points of both sides as numbers), ``*`` (and), ``+`` (or), ``!``
(not), parentheses, ``true.`` / ``false.`` and ``//`` comments to the end of the line.

An identifier is a keyword (dcm4che's ``...Seq`` spellings are accepted for
``...Sequence``), a tag ``[gggg,eeee]`` or ``[ggggeeee]``, or a private element
``gggg[creator]ee`` (optionally in brackets) found through its Private Creator. Identifiers
joined by ``::`` reach into the first item of a sequence
(``SequenceOfUltrasoundRegions::RegionLocationMinY0``), as in CTP. Group 0002 is read from
the file meta information when the dataset carries it. As in CTP, a bare keyword is looked
up at the top level only (``CodeMeaning`` alone does not search sequences), a missing
attribute reads as the empty string, and multiple values are joined with a backslash.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_deid.errors import RuleFileError

from .ocr import Box

__all__ = ["RuleFileError", "RuleSet", "load_rules", "parse_rules"]




_TESTS: dict[str, Callable[[str, str], bool]] = {
    "equals": lambda v, a: v == a,
    "equalsignorecase": lambda v, a: v.casefold() == a.casefold(),
    "contains": lambda v, a: a in v,
    "containsignorecase": lambda v, a: a.casefold() in v.casefold(),
    "startswith": lambda v, a: v.startswith(a),
    "startswithignorecase": lambda v, a: v.casefold().startswith(a.casefold()),
    "endswith": lambda v, a: v.endswith(a),
    "endswithignorecase": lambda v, a: v.casefold().endswith(a.casefold()),
    "matches": lambda v, a: re.fullmatch(a, v, re.DOTALL) is not None,
    "islessthan": lambda v, a: _compare(v, a, -1),
    "isgreaterthan": lambda v, a: _compare(v, a, 1),
}


def _compare(value: str, argument: str, sign: int) -> bool:
    """CTP's numeric test: keep digits and points of both sides; unparsable is False."""
    try:
        left = float(re.sub(r"[^0-9.]", "", value))
        right = float(re.sub(r"[^0-9.]", "", argument))
    except ValueError:
        return False
    return left < right if sign < 0 else left > right


_PART = r"""(?:
    \[\s*[0-9A-Fa-f]{1,4}\s*,?\s*\[[^\]]*\]\s*,?\s*[0-9A-Fa-f]{0,2}\s*\]   # [gggg[creator]ee]
  | [0-9A-Fa-f]{4}\s*,?\s*\[[^\]]*\]\s*,?\s*[0-9A-Fa-f]{0,2}                 # gggg[creator]ee
  | \[\s*[0-9A-Fa-f]{4}\s*,\s*[0-9A-Fa-f]{4}\s*\]                             # [gggg,eeee]
  | \[\s*[0-9A-Fa-f]{8}\s*\]                                                  # [ggggeeee]
  | [A-Za-z_][A-Za-z0-9_]*                                                    # keyword
)"""
_PRIVATE = re.compile(
    r"\[?\s*([0-9A-Fa-f]{1,4})\s*,?\s*\[([^\]]*)\]\s*,?\s*([0-9A-Fa-f]{0,2})\s*\]?")
_HEX_TAG = re.compile(r"\[\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\]")

_TOKEN = re.compile(
    rf"""(?:\s|//[^\n]*)*(?:
      (?P<ident>{_PART}(?:\s*::\s*{_PART})*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>[.*+!()])
    )""",
    re.VERBOSE,
)
_SPACE = re.compile(r"(?:\s|//[^\n]*)*")
_Part = tuple[Any, ...]  # ("tag", int) | ("private", group, creator, offset or -1)


@dataclass(frozen=True)
class _Test:
    path: tuple[_Part, ...] | None  # None: an unknown keyword, which reads as missing
    method: str
    argument: str


_Node = tuple[Any, ...]  # ("test", _Test) | ("not", node) | ("and", [nodes]) | ("or", [nodes])


class _Parser:
    """Recursive descent over one signature's tokens."""

    def __init__(self, text: str, line: int) -> None:
        self.tokens: list[tuple[str, str]] = []
        self.line = line
        pos = 0
        while pos < len(text):
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= len(text):
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                self.fail(f"unexpected character {text[pos:].lstrip()[:1]!r}")
            assert m is not None and m.lastgroup is not None
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.pos = 0

    def fail(self, message: str) -> None:
        raise RuleFileError(f"line {self.line}: {message}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        tok = self.peek()
        if tok[0] != kind or (value is not None and tok[1] != value):
            self.fail(f"expected {value or kind}, found {tok[1] or 'end of signature'!r}")
        self.pos += 1
        return tok[1]

    def parse(self) -> _Node:
        node = self.expr()
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> _Node:
        terms = [self.term()]
        while self.peek() == ("op", "+"):
            self.pos += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else ("or", terms)

    def term(self) -> _Node:
        factors = [self.factor()]
        while self.peek() == ("op", "*"):
            self.pos += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else ("and", factors)

    def factor(self) -> _Node:
        kind, value = self.peek()
        if (kind, value) == ("op", "!"):
            self.pos += 1
            return ("not", self.factor())
        if (kind, value) == ("op", "("):
            self.pos += 1
            node = self.expr()
            self.take("op", ")")
            return node
        if kind == "ident" and value.lower() in ("true", "false"):
            self.pos += 1
            if self.peek() == ("op", ".") and self.tokens[self.pos + 1:self.pos + 2] != [
                    ("op", "(")]:
                self.pos += 1  # CTP writes the constants as "true." and "false."
            return ("const", value.lower() == "true")
        return ("test", self.test())

    def test(self) -> _Test:
        kind, value = self.peek()
        if kind != "ident":
            self.fail(f"expected an attribute, found {value or 'end of signature'!r}")
        self.pos += 1
        path = _path(value)
        self.take("op", ".")
        method = self.take("ident")
        if method.lower() not in _TESTS:
            self.fail(f"unknown test .{method}(); known: {', '.join(sorted(_TESTS))}")
        self.take("op", "(")
        raw = self.take("string")
        self.take("op", ")")
        argument = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if method.lower() == "matches":
            try:
                re.compile(argument)
            except re.error:
                self.fail("invalid regular expression in .matches()")
        return _Test(path, method.lower(), argument)


def _path(identifier: str) -> tuple[_Part, ...] | None:
    """The parts of ``a::b::c``; None when a keyword is unknown (reads as missing, as in CTP)."""
    parts: list[_Part] = []
    for text in (t.strip() for t in identifier.split("::")):
        if m := _HEX_TAG.fullmatch(text):
            parts.append(("tag", int(m.group(1), 16) << 16 | int(m.group(2), 16)))
        elif m := _PRIVATE.fullmatch(text):
            offset = int(m.group(3), 16) if m.group(3) else -1
            parts.append(("private", int(m.group(1), 16), m.group(2).strip(), offset))
        else:
            tag = tag_for_keyword(text)
            if tag is None and text.endswith("Seq"):  # dcm4che 1.x: ContentSeq, SeqOf...
                tag = tag_for_keyword(text + "uence")
            if tag is None and text.startswith("SeqOf"):
                tag = tag_for_keyword("SequenceOf" + text[5:])
            if tag is None:
                return None
            parts.append(("tag", tag))
    return tuple(parts)


def _resolve(ds: Dataset, part: _Part) -> int | None:
    """The tag a part names in ``ds`` (a private one through its creator), or None."""
    if part[0] == "tag":
        return int(part[1])
    _, group, creator, offset = part
    if not group & 1:
        return None
    for block in range(0x10, 0x100):
        tag = group << 16 | block
        if tag in ds and str(ds[tag].value or "").strip() == creator:
            return tag if offset < 0 else group << 16 | block << 8 | offset
    return None


def _value(ds: Dataset, path: tuple[_Part, ...] | None) -> str:
    """An attribute as CTP renders it: text, multiple values joined by backslash."""
    if path is None:
        return ""
    current = ds
    for i, part in enumerate(path):
        tag = _resolve(current, part)
        if tag is None:
            return ""
        holder = current
        if tag >> 16 == 0x0002 and i == 0:
            holder = ds.__dict__.get("file_meta") or Dataset()
        if tag not in holder:
            return ""
        elem = holder[tag]
        if i < len(path) - 1:
            if elem.VR != "SQ" or not elem.value:
                return ""
            current = elem.value[0]
            continue
        if elem.VR == "SQ":
            return ""
        return _render(elem.value, tag)
    return ""


def _render(value: object, tag: int) -> str:
    if value is None or tag >> 16 == 0x7FE0:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        # An element of unknown VR: CTP decodes private ones as text; others read empty.
        return bytes(value).decode("latin-1").strip("\x00 ") if tag >> 16 & 1 else ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _evaluate(node: _Node, ds: Dataset, cache: dict[object, str]) -> bool:
    kind = node[0]
    if kind == "test":
        test: _Test = node[1]
        if test.path not in cache:
            cache[test.path] = _value(ds, test.path)
        return _TESTS[test.method](cache[test.path], test.argument)
    if kind == "not":
        return not _evaluate(node[1], ds, cache)
    if kind == "and":
        return all(_evaluate(n, ds, cache) for n in node[1])
    if kind == "or":
        return any(_evaluate(n, ds, cache) for n in node[1])
    return bool(node[1])  # const


@dataclass(frozen=True)
class _Region:
    x: int
    y: int
    w: int
    h: int

    def box(self, rows: int, cols: int) -> Box | None:
        x = cols + self.x if self.x < 0 else self.x
        y = rows + self.y if self.y < 0 else self.y
        return Box(x, y, x + self.w, y + self.h).clip(rows, cols)


@dataclass(frozen=True)
class _Signature:
    expression: _Node
    regions: tuple[_Region, ...]
    line: int


@dataclass(frozen=True)
class RuleSet:
    """Parsed signatures, in file order; ``ignored`` counts comment groups skipped."""

    signatures: tuple[_Signature, ...]
    ignored: int = 0

    @property
    def region_count(self) -> int:
        """How many rectangles the file defines."""
        return sum(len(s.regions) for s in self.signatures)

    def boxes_for(self, ds: Dataset, rows: int, cols: int) -> list[Box]:
        """The clipped rectangles of the first signature ``ds`` matches ([] if none)."""
        cache: dict[object, str] = {}
        for sig in self.signatures:
            if _evaluate(sig.expression, ds, cache):
                return [b for r in sig.regions if (b := r.box(rows, cols)) is not None]
        return []


_REGION = re.compile(r"\(([^()]*)\)")
_INT = re.compile(r"\s*-?\d+\s*")


def _closing_brace(text: str, start: int, line: int) -> int:
    """Index of the ``}`` closing the signature opened at ``start`` (strings skipped)."""
    pos, in_string = start + 1, False
    while pos < len(text):
        ch = text[pos]
        if in_string:
            if ch == "\\":
                pos += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif text.startswith("//", pos):  # a comment: skip to the end of the line
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif ch == "}":
            return pos
        pos += 1
    raise RuleFileError(f"line {line}: signature has no closing '}}'")


def parse_rules(text: str) -> RuleSet:
    """Parse the text of a CTP DicomPixelAnonymizer script."""
    signatures: list[_Signature] = []
    ignored = 0
    pos = 0
    starts = []
    while (open_at := text.find("{", pos)) >= 0:
        line = text.count("\n", 0, open_at) + 1
        close_at = _closing_brace(text, open_at, line)
        starts.append((open_at, close_at, line))
        pos = close_at + 1
    for i, (open_at, close_at, line) in enumerate(starts):
        expression = _Parser(text[open_at + 1 : close_at], line).parse()
        tail_end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        regions = []
        for m in _REGION.finditer(text, close_at + 1, tail_end):
            parts = m.group(1).split(",")
            if len(parts) == 4 and all(_INT.fullmatch(p) for p in parts):
                x, y, w, h = (int(p) for p in parts)
                if w > 0 and h > 0:
                    regions.append(_Region(x, y, w, h))
                    continue
            ignored += 1
        signatures.append(_Signature(expression, tuple(regions), line))
    return RuleSet(tuple(signatures), ignored)


def load_rules(path: str | Path) -> RuleSet:
    """Read and parse a rule file; :class:`RuleFileError` names the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read the pixel rule file ({exc.strerror})") from None
    try:
        rules = parse_rules(text)
    except RuleFileError as exc:
        raise RuleFileError(f"{path}: {exc}") from None
    if not rules.signatures:
        raise RuleFileError(f"{path}: no signatures found (is it a DicomPixelAnonymizer script?)")
    return rules
