"""The identifying values of an instance's relatives in the batch (the other files of
its patient and of its study), for the residual sweep.

The sweep removes from kept text the identifying values the instance itself carries. A
file that does not carry them (an empty PatientName in a derived object, an operator
named only in the study's other series) may still write them into a description the
profile keeps: "CT CHEST pt ZYLSTRA, MORWENNA". So before the batch starts, the top
level of every local input's head is read once (the attributes the sweep searches
for), grouped by patient (PatientID within its issuer) and by study; each instance's
sweep then also searches for its groups' values. The groups hold the whole batch's
values whatever the order or the number of workers, so outputs stay deterministic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Protocol

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from dicom_deid.dicom.walker import (
    UNDEFINED,
    locate_dataset,
    read_header,
    sequence_items,
    undefined_end,
)
from dicom_deid.errors import BadInput
from dicom_deid.storage import is_object_uri
from dicom_deid.storage.local import open_regular

from .pseudonyms import patient_key
from .sweep import NESTED_SWEEP_TAGS, SWEEP_TAGS

RelatedValues = Mapping[str, frozenset[tuple[int, str, str]]]
"""Group key (:func:`~.pseudonyms.patient_key`, or ``study:<uid>``) -> the (tag, VR,
value) of every identifying value its files carry at their top level."""

_TAG_CHARSET, _TAG_PATIENT_ID, _TAG_ISSUER, _TAG_STUDY = (
    0x00080005, 0x00100020, 0x00100021, 0x0020000D)
_READ = frozenset(SWEEP_TAGS) | {_TAG_CHARSET, _TAG_PATIENT_ID, _TAG_ISSUER, _TAG_STUDY}
_LAST = _TAG_STUDY
"""The walk stops here: names, IDs, accession and institution sit before it; the order,
procedure and admission numbers after it are left to each file's own values (reading
that far doubles what the walk costs)."""
_SOUGHT = tuple(t for t in SWEEP_TAGS if t <= _LAST)
_HEAD = 16384
"""Bytes read of each input: the identifying attributes sit in its first groups."""
_Elem = tuple[int, "str | None", int, int, int, bool]


class _Input(Protocol):
    @property
    def path(self) -> str | os.PathLike[str]: ...


def gather(sources: Iterable[_Input]) -> dict[str, frozenset[tuple[int, str, str]]]:
    """The groups of the local inputs among ``sources`` (an input that cannot be read is
    left to the batch, which lists it; inputs in an object store are not read twice)."""
    groups: dict[str, set[tuple[int, str, str]]] = {}
    for src in sources:
        path = os.fspath(src.path)
        if is_object_uri(path):
            continue
        try:
            found = _identity(path)
        except (OSError, BadInput, ValueError, LookupError):
            continue
        if found is None:
            continue
        values, keys = found
        for key in keys:
            groups.setdefault(key, set()).update(values)
    return {key: frozenset(v) for key, v in groups.items() if v}


def of_instance(related: RelatedValues, keys: Iterable[str]
                ) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(tag, VR, values) of the groups ``keys`` name, merged, in tag order."""
    merged: dict[tuple[int, str], set[str]] = {}
    for key in keys:
        for tag, vr, value in related.get(key, ()):
            merged.setdefault((tag, vr), set()).add(value)
    return tuple((tag, vr, tuple(sorted(values))) for (tag, vr), values in sorted(merged.items()))


def group_keys(patient: str, study_uid: str) -> tuple[str, ...]:
    """The groups an instance belongs to: its patient's, and its study's."""
    return (patient, f"study:{study_uid}") if study_uid else (patient,)


def _identity(path: str) -> tuple[set[tuple[int, str, str]], tuple[str, ...]] | None:
    """The identifying values at the top of one file's head, and its groups."""
    fd, _ = open_regular(path)
    try:
        head = os.pread(fd, _HEAD, 0)
    finally:
        os.close(fd)
    start = locate_dataset(head)
    if start.transfer_syntax == "1.2.840.10008.1.2.1.99":
        return None  # deflated: its dataset is not in the head as it reads
    implicit, little = start.implicit, start.transfer_syntax != "1.2.840.10008.1.2.2"
    if not little:
        return None
    by_tag = _leading(head, start.pos, implicit)
    charset = _texts(head, by_tag.get(_TAG_CHARSET), "CS", implicit, ["iso8859"])
    encodings = _encodings(tuple(charset))
    values: set[tuple[int, str, str]] = set()
    for tag in _SOUGHT:
        e = by_tag.get(tag)
        if e is None:
            continue
        inner = NESTED_SWEEP_TAGS.get(tag)
        if inner is None:
            vr = e[1] or _dictionary_vr(tag)
            values.update((tag, vr, v) for v in _texts(head, e, vr, implicit, encodings))
            continue
        with contextlib.suppress(BadInput):
            for item in sequence_items(head, e[3], e[4], implicit or e[1] == "UN", tag):
                for ie in item:
                    if ie[0] == inner:
                        values.update((tag, "LO", v) for v in _texts(
                            head, ie, "LO", implicit, encodings))
    pid = next(iter(_texts(head, by_tag.get(_TAG_PATIENT_ID), "LO", implicit, encodings)), "")
    issuer = next(iter(_texts(head, by_tag.get(_TAG_ISSUER), "LO", implicit, encodings)), "")
    study = next(iter(_texts(head, by_tag.get(_TAG_STUDY), "UI", implicit, encodings)), "")
    return values, group_keys(patient_key(pid, issuer, study), study)


@cache
def _encodings(charset: tuple[str, ...]) -> list[str]:
    return convert_encodings(list(charset) or ["ISO_IR 6"])


def _leading(head: bytes, pos: int, implicit: bool) -> dict[int, _Elem]:
    """The elements of :data:`_READ` among the top level's first ones, up to group 0020
    or the end of the head (what lies past it is left: this reads hints, not the file)."""
    found: dict[int, _Elem] = {}
    limit = len(head)
    try:
        while pos + 8 <= limit:
            tag, vr, start, length = read_header(head, pos, limit, implicit)
            if tag > _LAST:
                break
            undefined = length == UNDEFINED
            end = undefined_end(head, start, limit, implicit or vr == "UN", tag) \
                if undefined else start + length
            if end > limit:
                break
            if tag in _READ:
                found[tag] = (tag, vr, pos, start, end, undefined)
            pos = end + 8 if undefined else end
    except BadInput:
        pass  # cut inside a sequence of the head: what was found stands
    return found


def _dictionary_vr(tag: int) -> str:
    from dicom_deid.config.plan import dictionary_vr

    return dictionary_vr(tag)


def _texts(head: bytes, e: _Elem | None, vr: str,
           implicit: bool, encodings: list[str]) -> list[str]:
    """An element's decoded text values, as pydicom reads them (none when absent)."""
    if e is None or e[5] or e[4] > len(head):
        return []
    raw = head[e[3]:e[4]]
    if not raw.strip(b" \x00"):
        return []
    if raw.isascii():  # nearly all: no decoder needed (pydicom's costs 20x more)
        return [text for v in raw.decode("ascii").split("\\") if (text := v.strip(" \x00"))]
    elem = convert_raw_data_element(
        RawDataElement(BaseTag(e[0]), e[1] or vr, len(raw), raw, 0, implicit, True),
        encoding=encodings)
    value = elem.value
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [text for v in items if (text := str(v).strip(" \x00"))]
