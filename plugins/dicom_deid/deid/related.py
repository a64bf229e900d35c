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

from dicom_deid.config.plan import dictionary_vr
from dicom_deid.dicom.reader import ascii_text, raw_texts
from dicom_deid.dicom.walker import Element, leading_elements, locate_dataset, sequence_items
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
    by_tag = {e[0]: e for e in leading_elements(head, start.pos, implicit, _LAST)
              if e[0] in _READ}
    charset = by_tag.get(_TAG_CHARSET)  # code strings: ASCII
    encodings = _encodings(tuple(ascii_text(head[charset[3]:charset[4]]).split("\\"))
                           if charset is not None and not charset[5] else ())
    values: set[tuple[int, str, str]] = set()
    for tag in _SOUGHT:
        e = by_tag.get(tag)
        if e is None:
            continue
        inner = NESTED_SWEEP_TAGS.get(tag)
        if inner is None:
            vr = e[1] or dictionary_vr(tag)
            values.update((tag, vr, v) for v in _texts(head, e, vr, implicit, encodings))
            continue
        with contextlib.suppress(BadInput):
            for item in sequence_items(head, e[3], e[4], implicit or e[1] == "UN", tag):
                for ie in item:
                    if ie[0] == inner:
                        values.update((tag, "LO", v) for v in _texts(
                            head, ie, "LO", implicit, encodings))
    pid, issuer, study = (_id_text(head, by_tag.get(tag), implicit, encodings)
                          for tag in (_TAG_PATIENT_ID, _TAG_ISSUER, _TAG_STUDY))
    return values, group_keys(patient_key(pid, issuer, study), study)


@cache
def _encodings(charset: tuple[str, ...]) -> list[str]:
    return convert_encodings(list(charset) or ["ISO_IR 6"])


def _texts(head: bytes, e: Element | None, vr: str, implicit: bool,
           encodings: list[str]) -> list[str]:
    """An element's values as the de-identifier reads its own (none when absent)."""
    if e is None or e[5] or e[4] > len(head):
        return []
    return [t for t in raw_texts(head[e[3]:e[4]], e[0], vr, e[1], implicit, encodings)
            if t.strip()]


def _id_text(head: bytes, e: Element | None, implicit: bool, encodings: list[str]) -> str:
    """A single-valued identifier as both paths read it for the patient key."""
    if e is None or e[5] or e[4] > len(head):
        return ""
    raw = head[e[3]:e[4]]
    if raw.isascii():
        return ascii_text(raw)
    return next(iter(raw_texts(raw, e[0], "LO", e[1], implicit, encodings)), "").strip()
