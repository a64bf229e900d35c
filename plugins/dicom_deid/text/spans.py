"""A detected span of sensitive text, and what replaces it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from re import Pattern

from dicom_deid.config.model import CONTEXT

CTX_MARKER = "[CTX]"
"""What Google's ``cleanDescriptors`` writes in place of a phrase matching a removed value."""


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Characters ``text[start:end]`` detected as ``info_type``.

    ``from_context`` is True when the span matched a value of the instance itself
    (Clean Descriptors writes those as ``[CTX]``), False for a generic detection.
    """

    start: int
    end: int
    info_type: str
    from_context: bool = False


def non_overlapping(text: str, found: list[tuple[Span, int]], blocked: Pattern[str]
                    ) -> list[Span]:
    """The spans of ``found`` ((span, rank) pairs) that overlap no better one, sorted:
    the longest first, on equal length the lower rank, then the earlier; none that
    touches a match of ``blocked`` (the placeholders a cleaning already wrote)."""
    taken = bytearray(len(text))
    for m in blocked.finditer(text):
        taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    found.sort(key=lambda sp: (sp[0].start - sp[0].end, sp[1], sp[0].start))
    accepted: list[Span] = []
    for span, _ in found:
        if any(taken[span.start : span.end]):
            continue
        taken[span.start : span.end] = b"\x01" * (span.end - span.start)
        accepted.append(span)
    return sorted(accepted)


def placeholder(info_type: str) -> str:
    """``[CTX]`` for a context value, else ``[<INFO_TYPE>]``."""
    return CTX_MARKER if info_type == CONTEXT else f"[{info_type}]"


def splice(text: str, spans: Iterable[Span], replace: Callable[[Span], str]) -> str:
    """``text`` with each of ``spans`` (sorted, non-overlapping) replaced."""
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos : span.start])
        parts.append(replace(span))
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)
