"""Find sensitive spans in free text (descriptors are cleaned with them: banner.clean_descriptor).

Context matches (:class:`~.context.PhiContext`) and generic detections
(:mod:`.detectors`) feed one list; overlaps resolve to the longest span.
"""

from __future__ import annotations

from collections.abc import Iterator

from .chars import lazy_pattern
from .context import PhiContext
from .detectors import DETECTORS, DIGIT_RUN, PLACEHOLDER_RE, PRIORITY
from .spans import Span, non_overlapping

_NAME_GAP = lazy_pattern(r"[\s,^=・·]*")


def _candidates(text: str, ctx: PhiContext | None) -> Iterator[tuple[Span, int]]:
    """Every detection as (span, priority); lower priority wins ties."""
    if ctx is not None:
        for span in ctx.matches(text):
            yield span, -1
    run = max(map(len, DIGIT_RUN.findall(text)), default=0)
    for info_type, detect, gate in DETECTORS:
        if not gate(text, run):
            continue
        for start, end in detect(text):
            if end > start:
                yield Span(start, end, info_type), PRIORITY[info_type]


def _merge_names(text: str, spans: list[Span]) -> list[Span]:
    """Join name components found next to each other ("Yamada Tarou", "山田太郎")."""
    out: list[Span] = []
    for span in spans:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.from_context
            and span.from_context
            and prev.info_type == span.info_type == "PERSON_NAME"
            and _NAME_GAP.fullmatch(text, prev.end, span.start)
        ):
            out[-1] = Span(prev.start, span.end, "PERSON_NAME", True)
        else:
            out.append(span)
    return out


def find_spans(
    text: str,
    ctx: PhiContext | None,
    *,
    include: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[Span]:
    """Sensitive spans of ``text``, sorted and non-overlapping.

    Overlaps resolve to the longest span; on equal length a context match wins, then the
    generic detector order (e-mail, URL, IP, SSN, date, phone, age, record number).
    ``include`` restricts detection to those info types (None = all). ``exclude`` drops
    spans *after* overlap resolution, so excluded text also shields what it contains
    (an excluded DATE "20230514" is not then taken as a record number). Placeholders this
    module writes (``[CTX]``, ``[PERSON_NAME]``...) are never detected.
    """
    if not text:
        return []
    found = [
        (span, prio)
        for span, prio in _candidates(text, ctx)
        if include is None or span.info_type in include
    ]
    accepted = non_overlapping(text, found, PLACEHOLDER_RE)
    return [s for s in _merge_names(text, accepted) if s.info_type not in exclude]
