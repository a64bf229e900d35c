"""Pseudonyms for linkage: an EHR, OMOP or registry extract made joinable to the images.

A table of identifiers (patient IDs with their issuer, accession numbers, Study Instance
UIDs, dates of the patient) gets the same pseudonyms and date shifts the imaging pipeline
writes under the same configuration and key, so it joins ``deid_metadata`` without PHI.

Nothing is derived here. What the configuration does to each attribute is learnt by
de-identifying one probe instance with the pipeline's own :class:`Deidentifier`; the
values then come from the functions that instance went through
(:meth:`Deidentifier.pseudonym`, :meth:`Pseudonymizer.uid`, the patient's
:meth:`Pseudonymizer.date_shift_days` under :func:`patient_key`, :func:`shift_da`). A
treatment no extract value can be turned into (the attribute removed, kept as is,
replaced by a constant or by a text transformation of the whole instance) is refused
with a :class:`ConfigError` before any row is read. No value is ever logged or named in
an error: rows are named by their number, columns by their name.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.deid.pseudonyms import names_standard_uids, patient_key
from dicom_deid.dicom.dates import shift_da, shift_dt
from dicom_deid.dicom.files import write_atomic
from dicom_deid.dicom.reader import text_value
from dicom_deid.errors import BadInput, ConfigError

__all__ = [
    "LinkColumns",
    "LinkagePolicy",
    "Treatment",
    "linkage_policy",
    "pseudonymize_table",
    "read_extract",
    "write_extract",
]

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
CSV_SUFFIXES = frozenset({".csv"})


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


_PATIENT_ID = _tag("PatientID")
_ISSUER = _tag("IssuerOfPatientID")
_ACCESSION = _tag("AccessionNumber")
_STUDY_UID = _tag("StudyInstanceUID")
_STUDY_DATE = _tag("StudyDate")
# The probe instance: made-up values, two of each so a constant replacement shows.
_PROBES = (("LINKPROBE1", "LINKISSUER", "LINKACC1", "2.25.1001", "20000615"),
           ("LINKPROBE2", "", "LINKACC2", "2.25.1002", "20010203"))


class Treatment(StrEnum):
    """What the pipeline does, under one configuration, to an attribute an extract links on."""

    PSEUDONYM = "pseudonym"
    """Replaced by its keyed pseudonym (PatientID, AccessionNumber, UIDs): reproducible."""
    SHIFT = "shift"
    """Dates moved by the patient's keyed offset (Modified Dates): reproducible."""
    KEEP = "keep"
    """Published as it is (dates under Full Dates; UIDs under Retain UIDs)."""
    REMOVE = "remove"
    """Removed or emptied (dates under the Basic Profile): nothing to join on."""
    OTHER = "other"
    """A constant, or a text transformation whose result depends on the whole instance."""


@dataclass(frozen=True)
class LinkagePolicy:
    """The :class:`Treatment` of each linkable attribute under one config and key."""

    patient_id: Treatment
    accession: Treatment
    study_uid: Treatment
    dates: Treatment
    """StudyDate's treatment, which every date column of an extract follows."""


@dataclass(frozen=True)
class LinkColumns:
    """Which columns of an extract hold what. ``patient_id`` is required; ``issuer`` is
    the IssuerOfPatientID of each row's patient (dropped from the output: the pseudonym
    already depends on it); ``dates`` are dates of the row's patient."""

    patient_id: str
    issuer: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    dates: tuple[str, ...] = ()

    def named(self) -> list[str]:
        """Every column named, in a fixed order."""
        return [c for c in (self.patient_id, self.issuer, self.accession, self.study_uid)
                if c] + list(self.dates)


def linkage_policy(deidentifier: Deidentifier) -> LinkagePolicy:
    """Learn how ``deidentifier`` treats PatientID, AccessionNumber, StudyInstanceUID and
    StudyDate by de-identifying two probe instances with it (made-up values only)."""
    outs = []
    for pid, issuer, acc, uid, day in _PROBES:
        ds = Dataset()
        ds.PatientID = pid
        if issuer:
            ds.IssuerOfPatientID = issuer
        ds.AccessionNumber = acc
        ds.StudyInstanceUID = uid
        ds.StudyDate = day
        shift = deidentifier.deidentify(ds).date_shift_days
        outs.append((ds, shift))

    def judge(tag: int, expected: Callable[[int], str]) -> Treatment:
        got = [text_value(ds, tag) for ds, _ in outs]
        given = [_given(i, tag) for i in range(len(_PROBES))]
        if all(g == expected(i) for i, g in enumerate(got)):
            return Treatment.PSEUDONYM
        if not any(got):
            return Treatment.REMOVE
        return Treatment.KEEP if got == given else Treatment.OTHER

    def pseudonym(tag: int) -> Callable[[int], str]:
        return lambda i: deidentifier.pseudonym(tag, _given(i, tag), _given(i, _ISSUER))

    return LinkagePolicy(
        patient_id=judge(_PATIENT_ID, pseudonym(_PATIENT_ID)),
        accession=judge(_ACCESSION, pseudonym(_ACCESSION)),
        study_uid=judge(_STUDY_UID, lambda i: deidentifier.pseudo.uid(
            _given(i, _STUDY_UID), names_standard_uids(_STUDY_UID))),
        dates=_date_treatment(deidentifier, outs),
    )


def _given(i: int, tag: int) -> str:
    """Probe ``i``'s value of ``tag``."""
    pid, issuer, acc, uid, day = _PROBES[i]
    return {_PATIENT_ID: pid, _ISSUER: issuer, _ACCESSION: acc, _STUDY_UID: uid,
            _STUDY_DATE: day}[tag]


def _date_treatment(deidentifier: Deidentifier,
                    outs: list[tuple[Dataset, int | None]]) -> Treatment:
    got = [text_value(ds, _STUDY_DATE) for ds, _ in outs]
    given = [_given(i, _STUDY_DATE) for i in range(len(_PROBES))]
    if not any(got):
        return Treatment.REMOVE
    if got == given:
        return Treatment.KEEP
    for i, ((_, shift), value) in enumerate(zip(outs, got, strict=True)):
        key = patient_key(_given(i, _PATIENT_ID), _given(i, _ISSUER), _given(i, _STUDY_UID))
        if shift is None or shift != deidentifier.pseudo.date_shift_days(key) or \
                value != shift_da(given[i], shift):
            return Treatment.OTHER
    return Treatment.SHIFT


def _require(policy: LinkagePolicy, columns: LinkColumns) -> None:
    """Refuse, before any row is read, a column whose values the images do not carry in
    a form the extract's values can be turned into."""
    for what, column, treatment in (
        ("PatientID", columns.patient_id, policy.patient_id),
        ("AccessionNumber", columns.accession, policy.accession),
        ("StudyInstanceUID", columns.study_uid, policy.study_uid),
    ):
        if not column or treatment is Treatment.PSEUDONYM:
            continue
        if treatment is Treatment.REMOVE:
            raise ConfigError(f"column {column!r}: the policy removes {what} from the images, "
                              "so it cannot be joined; leave the column out")
        if treatment is Treatment.KEEP:
            raise ConfigError(f"column {column!r}: the policy publishes the original {what}, "
                              "not a pseudonym, so there is nothing to pseudonymize; leave the "
                              "column out")
        raise ConfigError(f"column {column!r}: the policy replaces {what} by a constant or a "
                          "text transformation, not by its keyed pseudonym, so no extract "
                          "value can be turned into it")
    if not columns.dates:
        return
    if policy.dates is Treatment.REMOVE:
        raise ConfigError(
            "the project's policy publishes no dates (the de-identified images carry none: "
            "the Basic Profile removes them), so date columns cannot be joined; leave them "
            "out, or de-identify with RetainLongitudinalModifiedDates")
    if policy.dates is Treatment.OTHER:
        raise ConfigError("the policy replaces dates by constants or a text transformation, "
                          "not by a per-patient shift, so date columns cannot be joined")


def pseudonymize_table(table: pa.Table, deidentifier: Deidentifier, *,
                       columns: LinkColumns) -> pa.Table:
    """``table`` with its identifying columns replaced by what the pipeline writes under
    ``deidentifier``'s configuration and key (``Deidentifier(config, key)``).

    The patient ID column becomes the pseudonymous PatientID (with the row's issuer, if
    an issuer column is given; that column is dropped), the accession and Study Instance
    UID columns their pseudonyms, and each date column the row's date moved by the
    patient's offset (Modified Dates) or left as it is (Full Dates), in its own type:
    DATE stays DATE, a timestamp keeps its time of day, text keeps its format (YYYYMMDD,
    YYYY-MM-DD, DICOM DT, ISO date-time). Every other column passes through unchanged.
    A row without a patient ID is an error naming the row (counted from 1), never a value.
    """
    _check_columns(table, columns)
    policy = linkage_policy(deidentifier)
    _require(policy, columns)
    pids = _texts(table, columns.patient_id)
    issuers = _texts(table, columns.issuer) if columns.issuer else [None] * table.num_rows
    new_pids: list[str] = []
    shifts: list[int] = []
    for row, (pid, issuer) in enumerate(zip(pids, issuers, strict=True), 1):
        pid = (pid or "").strip()
        if not pid:
            raise BadInput("empty-patient-id",
                           f"row {row}: no patient ID in column {columns.patient_id!r}")
        issuer = (issuer or "").strip()
        new_pids.append(deidentifier.pseudonym(_PATIENT_ID, pid, issuer))
        if policy.dates is Treatment.SHIFT and columns.dates:
            shifts.append(deidentifier.pseudo.date_shift_days(patient_key(pid, issuer, "")))
    out = _replace(table, columns.patient_id, pa.array(new_pids, pa.string()))
    if columns.accession:
        out = _replace(out, columns.accession, pa.array(
            [_mapped(v, lambda s: deidentifier.pseudonym(_ACCESSION, s))
             for v in _texts(table, columns.accession)], pa.string()))
    if columns.study_uid:
        out = _replace(out, columns.study_uid, pa.array(
            [_mapped(v, deidentifier.pseudo.uid) for v in _texts(table, columns.study_uid)],
            pa.string()))
    if policy.dates is Treatment.SHIFT:
        for name in columns.dates:
            out = _replace(out, name, _shift_column(table, name, shifts))
    if columns.issuer:
        out = out.remove_column(out.schema.get_field_index(columns.issuer))
    return out


def _check_columns(table: pa.Table, columns: LinkColumns) -> None:
    named = columns.named()
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise ConfigError(f"column {twice[0]!r} is named for two purposes")
    names = table.schema.names
    for name in named:
        if name not in names:
            raise ConfigError(f"the extract has no column {name!r} "
                              f"(it has {len(names)} column(s))")
        if names.count(name) > 1:
            raise ConfigError(f"the extract has two columns named {name!r}")


def _texts(table: pa.Table, name: str) -> list[str | None]:
    """One column as text (an integer ID column is read as its decimal digits)."""
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            column = column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ConfigError(f"column {name!r} holds {column.type}, not text") from None
    return column.to_pylist()


def _mapped(value: str | None, pseudonym: Callable[[str], str]) -> str | None:
    """The pseudonym of a non-blank value; a blank one stays blank, as in the images."""
    if value is None:
        return None
    value = value.strip()
    return pseudonym(value) if value else value


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, values.type), values)


_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _shift_column(table: pa.Table, name: str, shifts: list[int]) -> pa.Array:
    """Column ``name`` with each row's date moved by its patient's shift, in its own type
    (a timestamp keeps its time of day, as a DICOM DT does)."""
    column = table.column(name).combine_chunks()
    kind = column.type
    if pa.types.is_date32(kind):
        return pc.add_checked(column.cast(pa.int32()), pa.array(shifts, pa.int32())).cast(kind)
    if pa.types.is_date64(kind):
        millis = pa.array([d * _PER_DAY["ms"] for d in shifts], pa.int64())
        return pc.add_checked(column.cast(pa.int64()), millis).cast(kind)
    if pa.types.is_timestamp(kind):
        per_day = _PER_DAY[kind.unit]
        return pc.add_checked(column, pa.array([d * per_day for d in shifts],
                                               pa.duration(kind.unit)))
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ConfigError(f"date column {name!r} holds {kind}: give dates as DATE, "
                          "timestamps or text (YYYYMMDD, YYYY-MM-DD)")
    out: list[str | None] = []
    for row, (value, days) in enumerate(zip(column.to_pylist(), shifts, strict=True), 1):
        if value is None or not value.strip():
            out.append(value)
            continue
        shifted = _shift_text(value.strip(), days)
        if shifted is None:
            raise BadInput("bad-date", f"row {row}: column {name!r} does not hold a date "
                           "(YYYYMMDD, YYYY-MM-DD or a date-time starting with one)")
        out.append(shifted)
    return pa.array(out, kind)


_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?=$|[T ])")


def _shift_text(text: str, days: int) -> str | None:
    """A date written as text moved by ``days``, in the same format: ISO dates and
    date-times as ISO (the time kept), DICOM DA and DT as the pipeline shifts them."""
    m = _ISO_DATE.match(text)
    if m is not None:
        try:
            day = date(int(m[1]), int(m[2]), int(m[3])) + timedelta(days=days)
        except (ValueError, OverflowError):
            return None
        return day.isoformat() + text[m.end():]
    shifted = shift_da(text, days)
    return shifted if shifted is not None else shift_dt(text, days)


# --------------------------------------------------------------------------- files


def read_extract(path: Path) -> pa.Table:
    """An extract from a Parquet file (types kept) or a CSV file (every column as text,
    so IDs keep their leading zeros and dates their format)."""
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix in PARQUET_SUFFIXES:
            return pq.read_table(path)
        names = pacsv.open_csv(path).schema.names
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read the extract {path.name}: "
                          f"{type(exc).__name__}") from None


def write_extract(table: pa.Table, path: Path, *, source: Path | None = None) -> None:
    """Write ``table`` as CSV or Parquet (by ``path``'s suffix), atomically; refuse to
    write over ``source``, the extract it was made from (it holds the originals)."""
    path = Path(path)
    suffix = _suffix(path)
    if source is not None and (
        path.resolve() == Path(source).resolve()
        or (path.exists() and Path(source).exists() and os.path.samefile(path, source))
    ):
        raise ConfigError("the output would overwrite the input extract: name another file")
    buffer = io.BytesIO()
    if suffix in PARQUET_SUFFIXES:
        pq.write_table(table, buffer)
    else:
        pacsv.write_csv(table, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES | CSV_SUFFIXES:
        raise ConfigError(f"{path.name}: an extract is a .csv or .parquet file")
    return suffix
