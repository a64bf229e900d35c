"""Cohorts: parameter headers, transpiled example cohorts on DuckDB, filter resolution."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicom_deid.cohort.cohorts import (
    cohort_to_filter,
    load_cohort,
    parse_cohort,
    parse_param_args,
    resolve_filter,
    shipped_cohort_dir,
)
from dicom_deid.cohort.filter_file import FilterEntry, FilterSet, parse_filter
from dicom_deid.errors import CohortError
from dicom_deid.warehouse.base import Typed
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.sql import to_duckdb_sql

COHORTS = shipped_cohort_dir()

SCHEMA = pa.schema([
    ("source_uri", pa.string()), ("content_sha256", pa.string()),
    ("StudyInstanceUID", pa.string()), ("SeriesInstanceUID", pa.string()),
    ("SOPInstanceUID", pa.string()), ("Modality", pa.string()), ("StudyDate", pa.date32()),
    ("PatientID", pa.string()), ("PatientAge", pa.string()), ("PatientSex", pa.string()),
    ("BodyPartExamined", pa.string()), ("StudyDescription", pa.string()),
    ("SeriesDescription", pa.string()), ("ScanningSequence", pa.list_(pa.string())),
    ("ingest_date", pa.date32()),
])

# (study, series, sop-count, modality, date, patient, age, sex, body part, study desc,
#  series desc, scanning sequence)
STUDIES: list[tuple[Any, ...]] = [
    (1, 1, 2, "CT", "2024-03-10", "P1", "045Y", "F", "CHEST", "CT CHEST W/O", "AX 1mm", None),
    (2, 1, 1, "CT", "2023-12-31", "P1", "044Y", "F", "CHEST", "CT CHEST", "AX", None),
    (3, 1, 1, "CT", "2024-04-01", "P2", "016Y", "M", "CHEST", "CT CHEST", "AX", None),
    (4, 1, 1, "CT", "2024-05-01", "P3", "060Y", "M", "ABDOMEN", "CT ABDOMEN", "AX", None),
    (11, 1, 1, "CT", "2024-05-02", "P3", "060Y", "M", None, "CT THORAX CONTRAST", "AX", None),
    (12, 1, 1, "CT", "2024-05-03", "P6", "006M", "F", "CHEST", "CT CHEST", "AX", None),
    (5, 1, 2, "MR", "2024-02-02", "P3", "060Y", "M", "BRAIN", "MR BRAIN", "AX T2 FLAIR",
     ["SE", "IR"]),
    (5, 2, 1, "MR", "2024-02-02", "P3", "060Y", "M", "BRAIN", "MR BRAIN", "SAG T1", ["GR"]),
    (5, 3, 1, "MR", "2024-02-02", "P3", "060Y", "M", "BRAIN", "MR BRAIN", "AX T2*", ["GR"]),
    (13, 1, 1, "MR", "2024-02-03", "P2", "016Y", "M", "KNEE", "MR KNEE", "COR T2", ["SE"]),
    (6, 1, 1, "US", "2024-06-15", "P4", "030Y", "F", "ABDOMEN", "US ABDOMEN", "B-mode", None),
    (7, 1, 1, "CR", "2022-01-01", "P4", "028Y", "F", "CHEST", "XR CHEST", "PA", None),
    (8, 1, 1, "US", "2024-08-01", "P5", "050Y", "F", "NECK", "US THYROID", "B-mode", None),
    (9, 1, 2, "CR", "2024-03-15", "P1", "045Y", "F", "CHEST", "XR CHEST", "PA", None),
    (10, 1, 1, "DX", "2024-03-20", "P2", "016Y", "M", "CHEST", "XR CHEST", "AP", None),
]


def uid(study: int, series: int | None = None, sop: int | None = None) -> str:
    parts = [f"1.2.826.0.1.{study}"] + [str(p) for p in (series, sop) if p is not None]
    return ".".join(parts)


def metadata_rows() -> list[dict[str, Any]]:
    rows = []
    for (st, se, n, mod, day, pid, age, sex, body, sdesc, serdesc, seq) in STUDIES:
        for sop in range(1, n + 1):
            rows.append({
                "source_uri": f"file:///landing/{st}/{se}/{sop}.dcm", "content_sha256": "h",
                "StudyInstanceUID": uid(st), "SeriesInstanceUID": uid(st, se),
                "SOPInstanceUID": uid(st, se, sop), "Modality": mod,
                "StudyDate": date.fromisoformat(day), "PatientID": pid, "PatientAge": age,
                "PatientSex": sex, "BodyPartExamined": body, "StudyDescription": sdesc,
                "SeriesDescription": serdesc, "ScanningSequence": seq,
                "ingest_date": date(2024, 9, 1),
            })
    return rows


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> DuckDBWarehouse:
    folder = tmp_path_factory.mktemp("cohort")
    path = folder / "ingest_date=2024-09-01" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(metadata_rows(), schema=SCHEMA), path)
    wh = DuckDBWarehouse(folder / "wh.duckdb")
    wh.ensure_schema()
    wh.load_parquet("dicom_metadata", path, mode="merge")
    yield wh
    wh.close()


def run(warehouse: DuckDBWarehouse, name: str, *args: str) -> FilterSet:
    cohort = load_cohort(COHORTS / f"{name}.sql")
    return cohort_to_filter(cohort.run(warehouse, list(args)))


# -- example cohorts on DuckDB -----------------------------------------------------------


def test_every_example_cohort_parses_and_transpiles() -> None:
    files = sorted(COHORTS.glob("*.sql"))
    assert len(files) >= 4
    for path in files:
        cohort = load_cohort(path)
        assert cohort.description
        sql, names = to_duckdb_sql(cohort.sql)
        assert "@" not in sql
        assert set(names) == {p.name for p in cohort.params}


def test_chest_ct_adults(warehouse: DuckDBWarehouse) -> None:
    got = run(warehouse, "chest_ct_adults", "start_date=2024-01-01", "end_date=2024-12-31")
    # 2: before the range; 3: 16 years old; 4: abdomen; 12: six months old.
    # 11: no body part, but the description says thorax.
    assert got == FilterSet.of([FilterEntry(uid(1)), FilterEntry(uid(11))])
    older = run(warehouse, "chest_ct_adults", "start_date=2023-01-01", "end_date=2024-12-31",
                "min_age=15")
    assert {e.study_uid for e in older} == {uid(1), uid(2), uid(3), uid(11)}


def test_mr_brain_series(warehouse: DuckDBWarehouse) -> None:
    got = run(warehouse, "mr_brain_series")  # defaults: SE, '(?i)t2|flair'
    assert got.to_text() == f"/studies/{uid(5)}/series/{uid(5, 1)}\n"
    gradient = run(warehouse, "mr_brain_series", "sequence=GR", "description_pattern=T1|T2")
    assert [e.series_uid for e in gradient] == [uid(5, 2), uid(5, 3)]
    assert run(warehouse, "mr_brain_series", "end_date=2024-01-01") == FilterSet()


def test_patients_with_us(warehouse: DuckDBWarehouse) -> None:
    got = run(warehouse, "patients_with_us", "start_date=2024-06-01", "end_date=2024-06-30")
    assert [e.study_uid for e in got] == [uid(6), uid(7)]  # P4's US and her older CR
    assert all(e.level == "study" for e in got)


def test_chest_radiographs_instances(warehouse: DuckDBWarehouse) -> None:
    args = ["start_date=2024-01-01", "end_date=2024-12-31"]
    everyone = run(warehouse, "chest_radiographs", *args)
    assert [e.instance_uid for e in everyone] == [uid(10, 1, 1), uid(9, 1, 1), uid(9, 1, 2)]
    assert all(e.level == "instance" for e in everyone)
    women = run(warehouse, "chest_radiographs", *args, "sex=F")
    assert [e.instance_uid for e in women] == [uid(9, 1, 1), uid(9, 1, 2)]


# -- parameters -----------------------------------------------------------------------


HEADER = """-- Demo cohort.
-- param start_date DATE
-- param modality STRING default 'CT'
-- param n INT64 default 3
-- param x FLOAT64 default 1.5
-- param flag BOOL default true
-- param d2 DATE default DATE '2020-01-01'
SELECT StudyInstanceUID FROM dicom_metadata
WHERE StudyDate >= @start_date AND StudyDate >= @d2 AND Modality = @modality
  AND @n > 0 AND @x > 0 AND @flag
"""


def test_bind_types_defaults_and_errors() -> None:
    cohort = parse_cohort(HEADER)
    assert cohort.description == "Demo cohort."
    bound = cohort.bind(["start_date=2024-02-29", "n=7", "flag=no", "modality=a=b"])
    assert bound == {
        "start_date": Typed("DATE", date(2024, 2, 29)), "modality": Typed("STRING", "a=b"),
        "n": Typed("INT64", 7), "x": Typed("FLOAT64", 1.5), "flag": Typed("BOOL", False),
        "d2": Typed("DATE", date(2020, 1, 1)),
    }
    assert cohort.bind({"start_date": date(2024, 1, 1), "x": 2})["x"] == Typed("FLOAT64", 2.0)
    for args, message in [
        ([], "missing parameter start_date"),
        (["start_date=2024-13-01"], "start_date (DATE)"),
        (["start_date=01/02/2024"], "expected YYYY-MM-DD"),
        (["start_date=2024-01-01", "n=1.5"], "64-bit integer"),
        (["start_date=2024-01-01", "flag=maybe"], "true/false"),
        (["start_date=2024-01-01", "x=abc"], "FLOAT64"),
        (["start_date=2024-01-01", "nope=1"], "unknown parameter(s) nope"),
        (["start_date"], "expected NAME=VALUE"),
        (["n=1", "n=2"], "given twice"),
    ]:
        with pytest.raises(CohortError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cohort.bind(args)
    with pytest.raises(CohortError, match="expects INT64"):
        cohort.bind({"start_date": date(2024, 1, 1), "n": True})
    assert parse_param_args(["a= b "]) == {"a": " b "}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- param d TIMESTAMP\nSELECT @d AS StudyInstanceUID", "line 1: type TIMESTAMP"),
        ("-- x\n-- param d\nSELECT 1 AS StudyInstanceUID", "line 2: expected '-- param"),
        ("-- param d DATE default 'soon'\nSELECT @d", "line 1: parameter d"),
        ("-- param d DATE\n-- param d DATE\nSELECT @d", "line 2: parameter d declared twice"),
        ("SELECT @d AS StudyInstanceUID", "undeclared parameter(s): d"),
        ("-- param d DATE\nSELECT 1", "declared but unused parameter(s): d"),
        ("DELETE FROM dicom_metadata WHERE TRUE", "exactly one SELECT"),
        ("SELECT 1; SELECT 2", "exactly one SELECT"),
        ("SELECT FROM WHERE (", "line 1"),
    ],
)
def test_cohort_file_errors(text: str, message: str) -> None:
    with pytest.raises(CohortError) as info:
        parse_cohort(text)
    assert message in str(info.value)


def test_load_cohort_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="cannot read cohort"):
        load_cohort(tmp_path / "nope.sql")


# -- result -> filter -> instances ----------------------------------------------------------


def test_cohort_to_filter_levels_and_nulls() -> None:
    table = pa.table({
        "studyinstanceuid": ["1.2", "1.3", None, "1.4", "1.4 ", "1.5"],
        "SeriesInstanceUID": [None, "1.3.1", "9", "1.4.1", "1.4.1", ""],
        "SOPInstanceUID": [None, None, "9.1", "1.4.1.1", "1.4.1.2\x00", None],
    })
    assert cohort_to_filter(table).to_text() == (
        "/studies/1.2\n/studies/1.3/series/1.3.1\n"
        "/studies/1.4/series/1.4.1/instances/1.4.1.1\n"
        "/studies/1.4/series/1.4.1/instances/1.4.1.2\n/studies/1.5\n"
    )
    with pytest.raises(CohortError, match="row 1: SOPInstanceUID without SeriesInstanceUID"):
        cohort_to_filter(pa.table({"StudyInstanceUID": ["1"], "SeriesInstanceUID": [None],
                                   "SOPInstanceUID": ["2"]}))
    with pytest.raises(CohortError, match="row 2: invalid study UID"):
        cohort_to_filter(pa.table({"StudyInstanceUID": ["1", "1.02"]}))
    with pytest.raises(CohortError, match="no StudyInstanceUID"):
        cohort_to_filter(pa.table({"x": [1]}))


def test_resolve_filter_to_instances_and_unmatched(warehouse: DuckDBWarehouse) -> None:
    text = (
        f"/studies/{uid(1)}\n"                                # 2 instances
        f"/studies/{uid(5)}/series/{uid(5, 1)}\n"             # 2 instances
        f"/studies/{uid(9)}/series/{uid(9, 1)}/instances/{uid(9, 1, 2)}\n"
        "/studies/1.2.999\n"                                  # unknown study
        f"/studies/{uid(5)}/series/1.2.999\n"                 # unknown series
        f"/studies/{uid(9)}/series/{uid(9, 1)}/instances/1.2.999\n"
        f"/studies/{uid(6)}/series/{uid(9, 1)}/instances/{uid(9, 1, 1)}\n"  # wrong study
    )
    res = resolve_filter(warehouse, parse_filter(text))
    assert res.uris == (
        "file:///landing/1/1/1.dcm", "file:///landing/1/1/2.dcm",
        "file:///landing/5/1/1.dcm", "file:///landing/5/1/2.dcm",
        "file:///landing/9/1/2.dcm",
    )
    assert res.instances.num_rows == 5
    assert [e.to_line() for e in res.unmatched] == [  # filter order (sorted text)
        f"/studies/{uid(5)}/series/1.2.999",
        f"/studies/{uid(6)}/series/{uid(9, 1)}/instances/{uid(9, 1, 1)}",
        f"/studies/{uid(9)}/series/{uid(9, 1)}/instances/1.2.999",
        "/studies/1.2.999",
    ]
    # Only-study filters work too, and an empty filter never reaches the warehouse.
    assert resolve_filter(warehouse, parse_filter(f"/studies/{uid(7)}\n")).uris == (
        "file:///landing/7/1/1.dcm",
    )
    assert resolve_filter(warehouse, FilterSet()).uris == ()


def test_cohort_end_to_end_filter_round_trip(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    fs = run(warehouse, "chest_radiographs", "start_date=2024-01-01", "end_date=2024-12-31")
    path = fs.write(tmp_path / "filter.txt")
    res = resolve_filter(warehouse, parse_filter(path.read_text()))
    assert len(res.uris) == 3 and res.unmatched == ()
