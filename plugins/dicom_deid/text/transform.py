"""Google ``TextConfig`` transformations of free text and of whole DICOM values.

``replaceWithInfoTypeConfig``, ``redactConfig``, ``characterMaskConfig``,
``cryptoHashConfig`` (keyed) and ``dateShiftConfig`` (the patient's keyed shift), with
Google's precedence rules (:func:`_select`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dicom_deid.config.model import TextConfig, Transformation, TransformationKind
from dicom_deid.dicom.dates import DateShifter, shift_dicom_date, shift_written

from .context import PhiContext
from .find import find_spans
from .spans import Span, placeholder, splice

Hasher = Callable[[str], str]
"""The keyed hash of ``cryptoHashConfig``: a value -> its pseudonym."""

_REPLACE_ALL = Transformation(TransformationKind.REPLACE_WITH_INFO_TYPE)


def _select(info_type: str, config: TextConfig) -> Transformation | None:
    """The transformation for spans of ``info_type``, or None to leave them as they are.

    ``additional_transformations`` override ``transformations``; without any
    ``transformations`` every detected span is replaced by its info type (Google's
    default). Within a list, one naming the info type beats a catch-all (empty
    ``info_types``), and the first listed wins.
    """
    if info_type in config.exclude_info_types:
        return None
    for group in (config.additional_transformations, config.transformations or (_REPLACE_ALL,)):
        specific = next((t for t in group if info_type in t.info_types), None)
        if specific is not None:
            return specific
        catch_all = next((t for t in group if not t.info_types), None)
        if catch_all is not None:
            return catch_all
    return None


def _transform(
    value: str,
    info_type: str,
    transformation: Transformation,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    kind = transformation.kind
    if kind is TransformationKind.REPLACE_WITH_INFO_TYPE:
        return placeholder(info_type)
    if kind is TransformationKind.REDACT:
        return ""
    if kind is TransformationKind.CHARACTER_MASK:
        return re.sub(r"\S", lambda _: transformation.masking_character, value)
    if kind is TransformationKind.CRYPTO_HASH:
        return hasher(value)
    # DATE_SHIFT: only dates move; a date that cannot be shifted is replaced, never kept.
    if info_type != "DATE":
        return value
    shifted = shift_written(value, date_shifter)
    return shifted if shifted is not None else placeholder(info_type)


def apply_text_config(
    text: str,
    ctx: PhiContext | None,
    config: TextConfig,
    *,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    """Transform the sensitive spans of ``text`` as a Google ``TextConfig`` says.

    Parameters
    ----------
    text
        Free text (one DICOM value).
    ctx
        The instance's context values, or None for generic detection only.
    config
        Transformations; see :func:`_select` for which one applies to a span.
    hasher
        ``cryptoHashConfig``: the caller's keyed HMAC (keys never come from config files).
    date_shifter
        ``dateShiftConfig``: moves a date by the patient's keyed offset; the date is
        written back in the format it was found in.
    """
    spans = find_spans(text, ctx, exclude=frozenset(config.exclude_info_types))
    if not spans:
        return text

    def replace(span: Span) -> str:
        value = text[span.start : span.end]
        chosen = _select(span.info_type, config)
        if chosen is None:
            return value
        return _transform(value, span.info_type, chosen, hasher, date_shifter)

    return splice(text, spans, replace)


def transform_whole_value(
    value: str,
    info_type: str,
    config: TextConfig,
    hasher: Hasher,
    date_shifter: DateShifter,
) -> str:
    """Transform a DICOM value that is, as a whole, one ``info_type`` (a PN, DA, DT, AS).

    Each of several values (``\\`` separated) is transformed on its own. Character masking
    keeps the DICOM delimiters ``^`` and ``=`` so a masked name stays a valid PN.
    ``dateShiftConfig`` on a DATE that cannot be read gives an empty value rather than
    keeping the original; on other info types it leaves the value as is.
    """
    chosen = _select(info_type, config)
    if chosen is None or not value:
        return value
    out: list[str] = []
    for one in value.split("\\"):
        if not one.strip():
            out.append(one)
        elif chosen.kind is TransformationKind.CHARACTER_MASK:
            out.append(re.sub(r"[^\s^=]", lambda _: chosen.masking_character, one))
        elif chosen.kind is TransformationKind.DATE_SHIFT and info_type == "DATE":
            out.append(shift_dicom_date(one, date_shifter) or "")
        else:
            out.append(_transform(one, info_type, chosen, hasher, date_shifter))
    return "\\".join(out)
