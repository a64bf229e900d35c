"""SQL cohorts: analyst SQL -> filter file -> the exact instances to de-identify.

A cohort is one BigQuery Standard SQL query (a ``.sql`` file) returning
``StudyInstanceUID`` and optionally ``SeriesInstanceUID`` and ``SOPInstanceUID``. Its
named parameters are declared in the leading comment block::

    -- Chest CT of adults in a date range.
    -- param start_date DATE
    -- param modality STRING default 'CT'

Types: DATE, STRING, INT64, FLOAT64, BOOL; ``default NULL`` is allowed. On BigQuery the
SQL runs as written with typed query parameters; on DuckDB it is transpiled with
sqlglot (``@name`` -> ``$name``). The result becomes a :class:`FilterSet`, and
:func:`resolve_filter` turns a filter into the instance URIs in ``dicom_metadata``.

A cohort only reads the warehouse's tables (:func:`~dicom_deid.warehouse.sql.parse_query`:
no table functions, files, writes or settings), and its errors never echo data: a bad
result row is named by its number and column, a failure on the warehouse by its class.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from dicom_deid.errors import CohortError, DicomDeidError, FilterFileError, WarehouseError
from dicom_deid.warehouse.base import Typed, Warehouse, check_identifier
from dicom_deid.warehouse.sql import parameter_names, parse_query

from .filter_file import FilterEntry, FilterSet, uid_problem

__all__ = [
    "PARAM_TYPES",
    "Cohort",
    "CohortParam",
    "Resolution",
    "cohort_to_filter",
    "load_cohort",
    "parse_cohort",
    "parse_param_args",
    "resolve_filter",
]

log = logging.getLogger(__name__)

PARAM_TYPES = frozenset({"DATE", "STRING", "INT64", "FLOAT64", "BOOL"})
URI_COLUMN = "source_uri"
UID_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID_NAMES = ("study UID", "series UID", "instance UID")

_PARAM_LINE = re.compile(
    r"--\s*param\s+(?P<name>\S+)\s+(?P<type>\S+)(?:\s+default\s+(?P<default>.+?))?\s*$",
    re.IGNORECASE,
)
_INT = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})
_UID_PAD = "\x00 "




@dataclass(frozen=True)
class CohortParam:
    """One declared query parameter: name, BigQuery type, optional default."""

    name: str
    type: str
    has_default: bool = False
    default: Any = None

    def convert(self, raw: Any) -> Any:
        """A CLI string (or an already-typed value) -> the Python value of ``type``."""
        if raw is None:
            return None
        if not isinstance(raw, str):
            return self._check_typed(raw)
        text = raw.strip()
        try:
            if self.type == "STRING":
                return raw
            if self.type == "DATE":
                if not _DATE.fullmatch(text):
                    raise ValueError("expected YYYY-MM-DD")
                return date.fromisoformat(text)
            if self.type == "INT64":
                if not _INT.fullmatch(text) or not -(2**63) <= int(text) < 2**63:
                    raise ValueError("expected a 64-bit integer")
                return int(text)
            if self.type == "FLOAT64":
                return float(text)
            if text.lower() in _TRUE | _FALSE:  # BOOL
                return text.lower() in _TRUE
            raise ValueError("expected true/false")
        except ValueError as exc:
            raise CohortError(f"parameter {self.name} ({self.type}): {exc}: {raw!r}") from None

    def _check_typed(self, value: Any) -> Any:
        expected: dict[str, tuple[type, ...]] = {
            "STRING": (str,),
            "DATE": (date,),
            "INT64": (int,),
            "FLOAT64": (float, int),
            "BOOL": (bool,),
        }
        bad_bool = isinstance(value, bool) and self.type != "BOOL"
        if bad_bool or not isinstance(value, expected[self.type]):
            raise CohortError(f"parameter {self.name} expects {self.type}, got {value!r}")
        checked: Any = value
        return float(checked) if self.type == "FLOAT64" else checked


@dataclass(frozen=True)
class Cohort:
    """A cohort query: its SQL (BigQuery dialect), declared parameters and description."""

    name: str
    sql: str
    params: tuple[CohortParam, ...] = ()
    description: str = ""
    path: Path | None = field(default=None, compare=False)

    def bind(self, values: Mapping[str, Any] | Iterable[str] | None = None) -> dict[str, Typed]:
        """Validate and type the given values (a mapping or ``k=v`` strings).

        Unknown names and missing values without default are errors.
        """
        given: dict[str, Any]
        if values is None:
            given = {}
        elif isinstance(values, Mapping):
            given = dict(values)
        else:
            given = dict(parse_param_args([values] if isinstance(values, str) else values))
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise CohortError(f"unknown parameter(s) {', '.join(unknown)}; declared: {known}")
        bound: dict[str, Typed] = {}
        for name, param in declared.items():
            if name in given:
                bound[name] = Typed(param.type, param.convert(given[name]))
            elif param.has_default:
                bound[name] = Typed(param.type, param.default)
            else:
                raise CohortError(f"missing parameter {name} ({param.type})")
        return bound

    def run(self, warehouse: Warehouse, values: Mapping[str, Any] | Iterable[str] | None = None,
            ) -> pa.Table:
        """Run the cohort on ``warehouse`` with validated parameters. A failure the
        backend does not report itself (BigQuery's, whose messages can quote values) is a
        :class:`CohortError` naming its class (and place) only."""
        bound = self.bind(values)
        try:
            return warehouse.run_cohort(self.sql, bound)
        except DicomDeidError:
            raise
        except Exception as exc:
            raise CohortError(f"cohort {self.name} failed on the warehouse: "
                              f"{type(exc).__name__}{_place(str(exc))}") from None


def _place(message: str) -> str:
    """`` at line L, column C`` from a warehouse's error message (BigQuery's ``at [L:C]``),
    else nothing: the rest of it may quote values."""
    found = re.search(r"\bat \[(\d+):(\d+)\]", message)
    return f" at line {found[1]}, column {found[2]}" if found else ""


def parse_param_args(args: Iterable[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` (CLI ``--param``) -> ``{"k": "v"}``; values may contain ``=``."""
    parsed: dict[str, str] = {}
    for arg in args or ():
        name, sep, value = arg.partition("=")
        if not sep or not name.strip():
            raise CohortError(f"expected NAME=VALUE, got {arg!r}")
        if name.strip() in parsed:
            raise CohortError(f"parameter {name.strip()} given twice")
        parsed[name.strip()] = value
    return parsed


def _parse_default(param: CohortParam, literal: str) -> Any:
    text = literal.strip().rstrip(";").strip()
    if text.upper() == "NULL":
        return None
    if text.upper().startswith("DATE "):
        text = text[5:].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return param.convert(text)


def _header_params(text: str) -> tuple[tuple[CohortParam, ...], str]:
    """Parse ``-- param`` lines and the description from the leading comment block."""
    params: list[CohortParam] = []
    description: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        body = stripped[2:].strip()
        if not body.lower().startswith("param ") and body.lower() != "param":
            description.append(body)
            continue
        match = _PARAM_LINE.fullmatch(stripped)
        if not match:
            raise CohortError(f"line {number}: expected '-- param NAME TYPE [default VALUE]'")
        name, bq_type = match["name"], match["type"].upper()
        try:
            check_identifier(name)
        except WarehouseError:
            raise CohortError(f"line {number}: bad parameter name {name!r}") from None
        if bq_type not in PARAM_TYPES:
            raise CohortError(f"line {number}: type {bq_type} not one of {sorted(PARAM_TYPES)}")
        if any(p.name == name for p in params):
            raise CohortError(f"line {number}: parameter {name} declared twice")
        param = CohortParam(name, bq_type)
        if match["default"] is not None:
            try:
                default = _parse_default(param, match["default"])
            except CohortError as exc:
                raise CohortError(f"line {number}: {exc}") from None
            param = CohortParam(name, bq_type, True, default)
        params.append(param)
    return tuple(params), "\n".join(description).strip()


def parse_cohort(text: str, name: str = "cohort", path: Path | None = None) -> Cohort:
    """Parse cohort SQL text: header parameters, SQL validity (one query that only reads
    plain table names; which tables the warehouse has is checked when it runs), declared
    == used params."""
    params, description = _header_params(text)
    used = set(parameter_names(parse_query(text, tables=None)))
    declared = {p.name for p in params}
    if used - declared:
        raise CohortError(f"undeclared parameter(s): {', '.join(sorted(used - declared))}")
    if declared - used:
        raise CohortError(f"declared but unused parameter(s): {', '.join(sorted(declared - used))}")
    return Cohort(name=name, sql=text, params=params, description=description, path=path)


COHORT_DIR_ENV = "DICOM_DEID_COHORT_DIR"
"""A deployment's own cohort folder: searched by name before the shipped examples."""


def shipped_cohort_dir() -> Path:
    """The example cohorts shipped inside the package (``cohort/examples/*.sql``)."""
    return Path(str(resources.files(__package__) / "examples"))


def cohort_search_path(cohort_dir: str | Path | None = None) -> list[Path]:
    """Where a cohort name is looked up, in order: ``cohort_dir`` (else
    ``$DICOM_DEID_COHORT_DIR``), then the shipped examples."""
    first = cohort_dir if cohort_dir is not None else os.environ.get(COHORT_DIR_ENV) or None
    return [*([Path(first)] if first else []), shipped_cohort_dir()]


def load_cohort(path: str | Path, cohort_dir: str | Path | None = None) -> Cohort:
    """Read and validate a cohort: a path to a ``.sql`` file, or a bare name (with or
    without ``.sql``) found on :func:`cohort_search_path`."""
    source = Path(path)
    if not source.exists() and source.parent == Path("."):
        name = source.name if source.suffix == ".sql" else f"{source.name}.sql"
        folders = cohort_search_path(cohort_dir)
        found = next((f / name for f in folders if (f / name).is_file()), None)
        if found is None:
            known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.sql")})
            raise CohortError(f"no cohort named {source.stem!r} in "
                              f"{', '.join(str(f) for f in folders)}; known: {', '.join(known)}")
        source = found
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CohortError(f"cannot read cohort {source}: {exc.strerror}") from None
    return parse_cohort(text, name=source.stem, path=source)


def _uid(value: Any) -> str | None:
    """A UID from a result cell: ``None`` for NULL/empty, DICOM padding stripped."""
    if value is None:
        return None
    text = str(value).strip(_UID_PAD)
    return text or None


def _column(table: pa.Table, wanted: str) -> list[Any] | None:
    for name in table.column_names:
        if name.lower() == wanted.lower():
            return table.column(name).to_pylist()
    return None


def cohort_to_filter(table: pa.Table) -> FilterSet:
    """Cohort result -> filter lines at the finest level each row gives.

    Study-only rows give study lines, rows with a series give series lines, rows with
    a SOP instance give instance lines. Rows without a study UID are skipped (logged);
    a SOP UID without its series is an error (it cannot be expressed without widening
    the selection), and so is a value that is no UID: named by row, column and what is
    wrong, never the value (a cohort selecting the wrong column must not print it).
    """
    studies = _column(table, "StudyInstanceUID")
    if studies is None:
        raise CohortError("cohort result has no StudyInstanceUID column")
    empty: list[Any] = [None] * table.num_rows
    series = _column(table, "SeriesInstanceUID") or empty
    sops = _column(table, "SOPInstanceUID") or empty
    entries: list[FilterEntry] = []
    skipped = 0
    for row, (study, ser, sop) in enumerate(zip(studies, series, sops, strict=True), start=1):
        study_uid, series_uid, sop_uid = _uid(study), _uid(ser), _uid(sop)
        if study_uid is None:
            skipped += 1
            continue
        if sop_uid is not None and series_uid is None:
            raise CohortError(f"result row {row}: SOPInstanceUID without SeriesInstanceUID")
        for column, what, value in zip(UID_COLUMNS, _UID_NAMES, (study_uid, series_uid, sop_uid),
                                       strict=True):
            problem = uid_problem(value) if value is not None else None
            if problem is not None:
                raise CohortError(f"result row {row}: invalid {what} in column {column}: "
                                  f"not a UID ({problem})")
        try:
            entries.append(FilterEntry(study_uid, series_uid, sop_uid))
        except FilterFileError as exc:  # its messages hold no value
            raise CohortError(f"result row {row}: {exc}") from None
    if skipped:
        log.warning("cohort: %d result rows without StudyInstanceUID skipped", skipped)
    return FilterSet.of(entries)


@dataclass(frozen=True)
class Resolution:
    """What a filter selects in ``dicom_metadata``.

    ``instances`` has ``source_uri`` and the three UIDs (one row per distinct URI+UIDs);
    ``uris`` is the sorted, distinct list of instance URIs; ``unmatched`` the filter
    lines that selected nothing.
    """

    instances: pa.Table
    uris: tuple[str, ...]
    unmatched: tuple[FilterEntry, ...]


def resolve_sql(
    filter_set: FilterSet, table: str = "dicom_metadata", columns: Sequence[str] = (),
    *, ordered: bool = True,
) -> str:
    """The BigQuery SQL selecting the instances of ``filter_set`` (array parameters),
    with ``columns`` of ``table`` added after the URI and the three UIDs (sorted by URI
    unless ``ordered`` is False: a subquery of a larger statement)."""
    check_identifier(table)
    extra = "".join(f", {check_identifier(c)}" for c in columns)
    levels = {
        "study": ("StudyInstanceUID", "studies"),
        "series": ("CONCAT(StudyInstanceUID, '/', SeriesInstanceUID)", "series"),
        "instance": (
            "CONCAT(StudyInstanceUID, '/', SeriesInstanceUID, '/', SOPInstanceUID)",
            "instances",
        ),
    }
    clauses = [
        f"{expr} IN (SELECT u FROM UNNEST(@{param}) AS u)"
        for level, (expr, param) in levels.items()
        if filter_set.by_level(level)  # type: ignore[arg-type]
    ]
    return (
        f"SELECT DISTINCT {URI_COLUMN}, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID"
        f"{extra}\n"
        f"FROM {table}\nWHERE " + "\n   OR ".join(clauses)
        + (f"\nORDER BY {URI_COLUMN}" if ordered else "")
    )


def resolve_params(filter_set: FilterSet) -> dict[str, Typed]:
    """Array parameters for :func:`resolve_sql` (only the levels present)."""
    keys = {
        "studies": [e.study_uid for e in filter_set.by_level("study")],
        "series": [f"{e.study_uid}/{e.series_uid}" for e in filter_set.by_level("series")],
        "instances": [
            f"{e.study_uid}/{e.series_uid}/{e.instance_uid}"
            for e in filter_set.by_level("instance")
        ],
    }
    return {name: Typed("ARRAY<STRING>", values) for name, values in keys.items() if values}


def resolve_filter(
    warehouse: Warehouse,
    filter_set: FilterSet,
    *,
    table: str = "dicom_metadata",
    columns: Sequence[str] = (),
) -> Resolution:
    """The exact instance URIs ``filter_set`` selects in ``table``, and unmatched lines.

    ``columns`` adds more of ``table``'s columns to :attr:`Resolution.instances`.
    """
    if not filter_set:
        empty = pa.table({c: pa.array([], pa.string()) for c in (URI_COLUMN, *UID_COLUMNS)})
        return Resolution(empty, (), ())
    result = warehouse.run_cohort(
        resolve_sql(filter_set, table, columns), resolve_params(filter_set)
    )
    hit: set[tuple[str, str | None, str | None]] = set()
    uris: set[str] = set()
    for uri, study, series, sop in zip(
        *(result.column(c).to_pylist() for c in (URI_COLUMN, *UID_COLUMNS)), strict=True
    ):
        uris.add(uri)
        hit.update({(study, None, None), (study, series, None), (study, series, sop)})
    unmatched = tuple(
        e for e in filter_set if (e.study_uid, e.series_uid, e.instance_uid) not in hit
    )
    return Resolution(result, tuple(sorted(uris)), unmatched)
