"""Known burned-in text regions, in the RSNA CTP ``DicomPixelAnonymizer.script`` format.

A rule file is a list of *signatures* — ``{ Manufacturer.containsIgnoreCase("GE") *
Rows.equals("512") }`` — each followed by rectangles ``(x,y,w,h)`` to blank. Text
outside braces and parentheses is comment. As in CTP, signatures are tried in file
order and only the first match applies; a parenthesised group after a signature is a
region only when it holds exactly four comma-separated integers (comment text such as
"(see note)" is ignored, as CTP ignores it); negative ``x``/``y`` count from the right
or bottom edge and rectangles are clipped to the image.

The expression language is CTP's filter syntax: attribute (keyword or ``[gggg,eeee]``),
a string test (``equals``, ``contains``, ``startsWith``, ``endsWith``, each also
``...IgnoreCase``, and ``matches`` for a whole-value regular expression), ``*`` (and),
``+`` (or), ``!`` (not) and parentheses. Attributes are read from the top-level dataset;
a missing attribute reads as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .ocr import Box

__all__ = ["RuleFileError", "RuleSet", "load_rules", "parse_rules"]


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the line."""


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
}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<tag>\[\s*[0-9A-Fa-f]{4}\s*,\s*[0-9A-Fa-f]{4}\s*\])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>[.*+!()])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Test:
    tag: int | None
    method: str
    argument: str


_Node = tuple  # ("test", _Test) | ("not", node) | ("and", [nodes]) | ("or", [nodes])


class _Parser:
    """Recursive descent over one signature's tokens."""

    def __init__(self, text: str, line: int) -> None:
        self.tokens: list[tuple[str, str]] = []
        self.line = line
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
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
        if kind == "name" and value.lower() in ("true", "false"):
            self.pos += 1
            return ("const", value.lower() == "true")
        return ("test", self.test())

    def test(self) -> _Test:
        kind, value = self.peek()
        if kind == "tag":
            self.pos += 1
            group, elem = value.strip("[] ").split(",")
            tag: int | None = int(group, 16) << 16 | int(elem, 16)
        elif kind == "name":
            self.pos += 1
            tag = tag_for_keyword(value)  # unknown keywords read as missing, as in CTP
        else:
            self.fail(f"expected an attribute, found {value or 'end of signature'!r}")
            raise AssertionError  # unreachable
        self.take("op", ".")
        method = self.take("name")
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
        return _Test(tag, method.lower(), argument)


def _value(ds: Dataset, tag: int | None) -> str:
    """An attribute as CTP renders it: text, multiple values joined by backslash."""
    if tag is None or tag not in ds:
        return ""
    value = ds[tag].value
    if value is None or isinstance(value, bytes | bytearray | memoryview) or tag >> 16 == 0x7FE0:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _evaluate(node: _Node, ds: Dataset, cache: dict[int | None, str]) -> bool:
    kind = node[0]
    if kind == "test":
        test: _Test = node[1]
        if test.tag not in cache:
            cache[test.tag] = _value(ds, test.tag)
        return _TESTS[test.method](cache[test.tag], test.argument)
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
        cache: dict[int | None, str] = {}
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
