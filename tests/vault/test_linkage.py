"""Pseudonyms for linkage: an EHR extract pseudonymized with the images' key and policy
joins the de-identified metadata exactly where its identified self joins the identified
metadata, and carries no original identifier.

The images are the synthetic corpus de-identified by ``dicom-deid deidentify`` and files
of pydicom's own (which this project did not make); both metadata trees go through
``dicom-deid export-metadata`` into a DuckDB warehouse, and the joins run there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pydicom
import pydicom.data
import pytest

from dicom_deid.cli.main import main
from dicom_deid.config.google import config_from_options
from dicom_deid.config.model import privacy_first
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.deid.keys import load_key
from dicom_deid.errors import BadInput, ConfigError
from dicom_deid.synth import generate
from dicom_deid.vault.linkage import (
    LinkColumns,
    Treatment,
    linkage_policy,
    pseudonymize_table,
    read_extract,
    write_extract,
)
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

# The options that make deidentify's config the privacy-first default + Modified Dates,
# i.e. what the project file below says (the test checks the fingerprints agree).
MODIFIED = ["--option", "CleanDescriptors", "--option", "CleanPixelData",
            "--option", "RetainLongitudinalModifiedDates"]
PROJECT = """name: linkage_demo
cohort: patients_with_us
policy:
  options: [RetainLongitudinalModifiedDates]
"""
LINK = ["--patient-id", "PatientID", "--issuer", "IssuerOfPatientID",
        "--accession", "AccessionNumber"]
NO_IMAGES_PID = "MRN0000001"  # an EHR patient without images
OTHER_ISSUER = "HXREG"  # a real patient ID under another issuer: another patient


@dataclass
class World:
    root: Path
    key: Path
    warehouse: Path
    extract: pa.Table
    """One row per study of the identified corpus, plus two rows that match no image."""
    fingerprint: str
    """The config fingerprint the de-identified files record."""

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with DuckDBWarehouse(self.warehouse, read_only=True) as wh:  # both files attached
            return list(wh.connection.execute(sql).fetchall())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("linkage")
    generate(root / "corpus", patients=3, seed=5, instances_per_series=2, small=True)
    key = root / "key"
    assert main(["keygen", str(key)]) == 0
    # exit 3: the corpus's planted bad inputs (and re-sent duplicates) fail, as they should
    assert main(["deidentify", str(root / "corpus" / "dicom"), str(root / "deid"),
                 "--key-file", str(key), *MODIFIED, "--workers", "1", "--no-progress"]) == 3
    warehouse = root / "w.duckdb"
    for tree, table in (("corpus/dicom", "dicom_metadata"), ("deid", "deid_metadata")):
        main(["export-metadata", str(root / tree), "--out", str(root / table),
              "--table", table, "--warehouse", f"duckdb:///{warehouse}", "--workers", "1"])
    with DuckDBWarehouse(warehouse, read_only=True) as wh:
        studies = [tuple(r.values()) for r in wh.query(
            "SELECT DISTINCT PatientID, IssuerOfPatientID, AccessionNumber, StudyDate, "
            "StudyInstanceUID FROM dicom_metadata ORDER BY StudyInstanceUID").to_pylist()]
        method = [tuple(r.values()) for r in wh.query(
            "SELECT DISTINCT DeidentificationMethod FROM deid_metadata").to_pylist()]
    assert len(studies) >= 5 and len({s[0] for s in studies}) == 3
    rows = [*studies, (NO_IMAGES_PID, "WBMPI", "ACC0000001", date(2023, 1, 2), "1.2.3.4"),
            (studies[0][0], OTHER_ISSUER, studies[0][2], studies[0][3], studies[0][4])]
    extract = pa.table({
        "ehr_row": [f"r{i}" for i in range(len(rows))],
        "PatientID": [r[0] for r in rows],
        "IssuerOfPatientID": [r[1] for r in rows],
        "AccessionNumber": [r[2] for r in rows],
        "StudyDate": pa.array([r[3] for r in rows], pa.date32()),
        "StudyInstanceUID": [r[4] for r in rows],
        "diagnosis": [f"finding {i}: nodule, follow-up advised" for i in range(len(rows))],
    })
    (fingerprint,) = {str(m[0]).split("config sha256 ")[1][:16] for m in method}
    yield World(root, key, warehouse, extract, fingerprint)


def _as_csv(extract: pa.Table, path: Path) -> None:
    """The extract as an EHR writes it: dates as text, StudyDate YYYYMMDD, a second date
    column (diagnosed three days before the study) YYYY-MM-DD."""
    days = extract.column("StudyDate").to_pylist()
    table = extract.set_column(4, "StudyDate", pa.array([d.strftime("%Y%m%d") for d in days]))
    table = table.append_column("diagnosis_date", pa.array(
        [(d - timedelta(days=3)).isoformat() for d in days]))
    pacsv.write_csv(table, path)


def _per_row_counts(world: World, sql_rows: str, table: str, issuer: bool) -> dict[str, int]:
    """ehr_row -> distinct instances of ``table`` its PatientID (+ issuer), AccessionNumber
    and StudyDate match."""
    on_issuer = "AND m.IssuerOfPatientID = e.IssuerOfPatientID" if issuer else ""
    return dict(world.query(  # type: ignore[arg-type]
        f"SELECT e.ehr_row, count(DISTINCT m.SOPInstanceUID) FROM ({sql_rows}) e "
        f"LEFT JOIN {table} m ON m.PatientID = e.PatientID {on_issuer} "
        "AND m.AccessionNumber = e.AccessionNumber AND m.StudyDate = e.StudyDate "
        "GROUP BY e.ehr_row"))


def test_csv_extract_joins_deid_metadata_like_the_identified_one(world: World,
                                                                  capsys) -> None:
    src, out = world.root / "ehr.csv", world.root / "ehr_pseudo.csv"
    _as_csv(world.extract, src)
    project = world.root / "linkage_demo.yaml"
    project.write_text(PROJECT)
    assert main(["pseudonymize", str(src), str(out), *LINK, "--date", "StudyDate",
                 "--date", "diagnosis_date", "--key-file", str(world.key),
                 "--project", str(project)]) == 0
    line = capsys.readouterr().out
    rows = world.extract.num_rows
    assert line.startswith(f"pseudonymized {rows} row(s): patient_id, accession, "
                           "2 date column(s) shifted -> ")
    assert f"(config {world.fingerprint}, key " in line  # the images' config, to the bit

    rows_of = ("SELECT * EXCLUDE (StudyDate), strptime(StudyDate, '%Y%m%d')::DATE AS "
               "StudyDate FROM read_csv('{}', all_varchar = true)")
    identified = _per_row_counts(world, rows_of.format(src), "dicom_metadata", issuer=True)
    linked = _per_row_counts(world, rows_of.format(out), "deid_metadata", issuer=False)
    assert linked == identified
    assert sum(1 for n in linked.values() if n) == rows - 2  # every study, and only those
    assert linked["r" + str(rows - 2)] == 0 and linked["r" + str(rows - 1)] == 0

    # Shifted dates are the de-identified StudyDate, both formats, to the day.
    joined = world.query(
        f"SELECT e.StudyDate, e.diagnosis_date, m.StudyDate FROM read_csv('{out}', "
        "all_varchar = true) e JOIN deid_metadata m ON m.PatientID = e.PatientID "
        "AND m.AccessionNumber = e.AccessionNumber")
    assert len({r[2] for r in joined}) == rows - 2
    for study_date, diagnosis_date, deid_date in joined:
        assert isinstance(deid_date, date)
        assert study_date == deid_date.strftime("%Y%m%d")
        assert diagnosis_date == (deid_date - timedelta(days=3)).isoformat()

    # Same rows, issuer dropped, clinical text untouched, no original value in the bytes.
    table = read_extract(out)
    assert table.column_names == ["ehr_row", "PatientID", "AccessionNumber", "StudyDate",
                                  "StudyInstanceUID", "diagnosis", "diagnosis_date"]
    assert table.column("diagnosis").to_pylist() == world.extract.column("diagnosis"
                                                                          ).to_pylist()
    data = out.read_bytes()
    for column in ("PatientID", "AccessionNumber", "IssuerOfPatientID"):
        for value in set(world.extract.column(column).to_pylist()):
            assert value.encode() not in data, column
    lines = data.decode().splitlines()[1:]
    for line_text, day in zip(lines, world.extract.column("StudyDate").to_pylist(),
                              strict=True):
        for written in (day.strftime("%Y%m%d"), day.isoformat(),
                        (day - timedelta(days=3)).isoformat()):
            assert written not in line_text


def test_parquet_extract_joins_on_study_uid_and_keeps_date_type(world: World,
                                                                capsys) -> None:
    src, out = world.root / "ehr.parquet", world.root / "ehr_pseudo.parquet"
    pq.write_table(world.extract, src)
    assert main(["pseudonymize", str(src), str(out), *LINK, "--study-uid",
                 "StudyInstanceUID", "--date", "StudyDate", "--key-file", str(world.key),
                 *MODIFIED]) == 0
    assert f"(config {world.fingerprint}, key " in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.schema.field("StudyDate").type == pa.date32()
    by_patient: dict[str, set[str]] = {}
    for pid, uid in zip(table.column("PatientID").to_pylist()[:-2],
                        table.column("StudyInstanceUID").to_pylist()[:-2], strict=True):
        by_patient.setdefault(pid, set()).add(uid)
    # Each patient's rows name exactly the studies deid_metadata holds for that patient.
    found: dict[str, set[str]] = {}
    for pid, uid in world.query("SELECT DISTINCT PatientID, StudyInstanceUID "
                                "FROM deid_metadata"):
        found.setdefault(str(pid), set()).add(str(uid))
    assert by_patient == found
    # One join on all four: every imaging row matches its study's instances.
    matched = world.query(
        f"SELECT e.ehr_row, count(DISTINCT m.SOPInstanceUID) FROM read_parquet('{out}') e "
        "JOIN deid_metadata m USING (PatientID, AccessionNumber, StudyDate, "
        "StudyInstanceUID) GROUP BY e.ehr_row")
    assert len(matched) == world.extract.num_rows - 2 and all(n for _, n in matched)
    originals = world.extract.to_pydict()
    got = table.to_pydict()
    data = out.read_bytes()
    for column in ("PatientID", "AccessionNumber", "StudyInstanceUID"):
        for value in originals[column]:
            assert value not in got[column] and value.encode() not in data, column
    assert all(a != b for a, b in zip(originals["StudyDate"], got["StudyDate"], strict=True))


def test_privacy_first_default_refuses_date_columns(world: World, capsys) -> None:
    src, out = world.root / "ehr_default.parquet", world.root / "out_default.parquet"
    pq.write_table(world.extract, src)
    assert main(["pseudonymize", str(src), str(out), *LINK, "--date", "StudyDate",
                 "--key-file", str(world.key)]) == 2
    assert "publishes no dates" in capsys.readouterr().err
    assert not out.exists()
    # Without the dates it links: pseudonyms do not depend on the date policy.
    assert main(["pseudonymize", str(src), str(out), *LINK, "--key-file", str(world.key)]) == 0
    ids = set(pq.read_table(out).column("PatientID").to_pylist())
    deid_ids = {str(r[0]) for r in world.query("SELECT DISTINCT PatientID FROM deid_metadata")}
    assert deid_ids < ids and len(ids - deid_ids) == 2


def test_wrong_key_joins_nothing(world: World) -> None:
    other_key = world.root / "other.key"
    assert main(["keygen", str(other_key)]) == 0
    src, out = world.root / "ehr_wrong.parquet", world.root / "out_wrong.parquet"
    pq.write_table(world.extract, src)
    assert main(["pseudonymize", str(src), str(out), *LINK, "--date", "StudyDate",
                 "--key-file", str(other_key), *MODIFIED]) == 0
    assert world.query(f"SELECT count(*) FROM read_parquet('{out}') e JOIN deid_metadata m "
                       "ON m.PatientID = e.PatientID OR m.AccessionNumber = e.AccessionNumber"
                       ) == [(0,)]


def test_full_dates_keep_the_dates_and_the_same_pseudonyms(world: World, capsys) -> None:
    src = world.root / "ehr_full.csv"
    _as_csv(world.extract, src)
    outs = {name: world.root / f"out_{name}.csv" for name in ("full", "modified")}
    for name, option in (("full", "RetainLongitudinalFullDates"),
                         ("modified", "RetainLongitudinalModifiedDates")):
        assert main(["pseudonymize", str(src), str(outs[name]), *LINK, "--date", "StudyDate",
                     "--key-file", str(world.key), "--option", option]) == 0
    assert "1 date column(s) kept" in capsys.readouterr().out
    given, full, modified = (read_extract(p) for p in (src, outs["full"], outs["modified"]))
    assert full.column("StudyDate").equals(given.column("StudyDate"))
    assert full.column("diagnosis_date").equals(given.column("diagnosis_date"))  # not named
    assert full.column("PatientID").equals(modified.column("PatientID"))
    assert not modified.column("StudyDate").equals(given.column("StudyDate"))


def test_an_empty_patient_id_is_named_by_row_only(world: World, capsys) -> None:
    src, out = world.root / "ehr_gap.csv", world.root / "out_gap.csv"
    table = world.extract.set_column(1, "PatientID", pa.array(
        [("  " if i == 2 else v) for i, v in enumerate(
            world.extract.column("PatientID").to_pylist())]))
    pacsv.write_csv(table, src)
    assert main(["pseudonymize", str(src), str(out), *LINK, "--key-file",
                 str(world.key)]) == 2
    err = capsys.readouterr().err
    assert "row 3" in err and "'PatientID'" in err
    for value in world.extract.column("PatientID").to_pylist():
        assert value not in err
    assert not out.exists()
    # and the output never overwrites its input
    assert main(["pseudonymize", str(src), str(src), "--patient-id", "ehr_row",
                 "--key-file", str(world.key)]) == 2
    assert "overwrite the input" in capsys.readouterr().err


# --------------------------------------------------------------- files we did not make


def test_pydicom_files_link_to_what_deidentify_wrote(tmp_path: Path) -> None:
    """pydicom's CT_small and MR_small (no issuer, no accession) de-identified by the CLI:
    their PatientID, StudyInstanceUID and StudyDate pseudonymized through the linkage are
    what the output files carry."""
    folder = Path(pydicom.data.__file__).parent / "test_files"
    src = tmp_path / "in"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(folder / name, src / name)
    key = tmp_path / "key"
    assert main(["keygen", str(key)]) == 0
    assert main(["deidentify", str(src), str(tmp_path / "out"), "--key-file", str(key),
                 "--option", "RetainLongitudinalModifiedDates", "--id-prefix", "SITE",
                 "--workers", "1", "--no-progress"]) == 0
    originals = [pydicom.dcmread(p) for p in sorted(src.iterdir())]
    outputs = {str(ds.PatientID): ds for ds in (
        pydicom.dcmread(p) for p in (tmp_path / "out").rglob("*.dcm"))}
    extract = pa.table({
        "mrn": [f" {ds.PatientID}" for ds in originals],  # spelled with a stray space
        "study": [str(ds.StudyInstanceUID) for ds in originals],
        "seen": [f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}T08:30"
                 for ds in originals],
    })
    config = config_from_options("basic", ["RetainLongitudinalModifiedDates"],
                                 id_prefix="SITE")
    linked = pseudonymize_table(extract, Deidentifier(config, load_key(key)),
                                columns=LinkColumns("mrn", study_uid="study", dates=("seen",)))
    assert set(linked.column("mrn").to_pylist()) == set(outputs)
    for pid, uid, seen in zip(*(linked.column(c).to_pylist() for c in linked.column_names),
                              strict=True):
        assert pid.startswith("SITE")
        out = outputs[pid]
        assert uid == out.StudyInstanceUID
        assert seen == f"{out.StudyDate[:4]}-{out.StudyDate[4:6]}-{out.StudyDate[6:]}T08:30"


# --------------------------------------------------------------- the table function


KEY = bytes(range(32))


def _modified() -> Deidentifier:
    return Deidentifier(config_from_options("basic", ["RetainLongitudinalModifiedDates"]),
                        KEY)


def test_dates_keep_their_type_and_format() -> None:
    days = [date(2021, 3, 1), None, date(2020, 2, 28)]
    table = pa.table({
        "pid": ["A1", "B2", "A1"],
        "d32": pa.array(days, pa.date32()),
        "d64": pa.array(days, pa.date64()),
        "ts": pa.array([datetime(2021, 3, 1, 23, 15), None, datetime(2020, 2, 28, 0, 5)],
                       pa.timestamp("us")),
        "compact": ["20210301", "", "202002"],
        "dicom_dt": ["20210301231500", "", "20200228000500.5+0100"],
    })
    columns = LinkColumns("pid", dates=("d32", "d64", "ts", "compact", "dicom_dt"))
    out = pseudonymize_table(table, _modified(), columns=columns)
    assert out.schema.types == [pa.string(), pa.date32(), pa.date64(), pa.timestamp("us"),
                                pa.string(), pa.string()]
    deid = _modified()
    shift = deid.pseudo.date_shift_days("pid:|A1")
    a1 = date(2021, 3, 1) + timedelta(days=shift)
    assert out.column("d32").to_pylist()[0] == a1 == out.column("d64").to_pylist()[0]
    assert out.column("ts").to_pylist()[0] == datetime(a1.year, a1.month, a1.day, 23, 15)
    assert out.column("compact").to_pylist()[0] == a1.strftime("%Y%m%d")
    assert out.column("dicom_dt").to_pylist()[0] == a1.strftime("%Y%m%d") + "231500"
    assert out.column("d32").to_pylist()[1] is None and out.column("compact")[1].as_py() == ""
    # the same patient's rows keep their interval; a reduced-precision date keeps it
    d = out.column("d32").to_pylist()
    assert d[0] - d[2] == days[0] - days[2]  # type: ignore[operator]
    assert len(out.column("compact").to_pylist()[2]) == 6
    assert out.column("dicom_dt").to_pylist()[2].endswith("000500.5+0100")


def test_integer_ids_and_issuers_as_the_images_spell_them() -> None:
    """A Parquet ID column of integers pseudonymizes as its digits; the issuer takes part
    (the same ID under another issuer is another patient), trailing blanks do not."""
    deid = _modified()
    ints = pseudonymize_table(pa.table({"pid": pa.array([12345, 12345], pa.int64()),
                                        "iss": ["SITE-A ", "SITE-B"]}), deid,
                              columns=LinkColumns("pid", issuer="iss"))
    assert ints.column_names == ["pid"]
    a, b = ints.column("pid").to_pylist()
    assert a == deid.pseudonym(0x00100020, "12345", "SITE-A") and a != b


@pytest.mark.parametrize(("options", "columns", "message"), [
    ([], LinkColumns("pid", dates=("d",)), "publishes no dates"),
    (["RetainUIDs"], LinkColumns("pid", study_uid="uid"), "publishes the original"),
    (["RetainLongitudinalModifiedDates"], LinkColumns("pid", dates=("pid",)),
     "two purposes"),
    (["RetainLongitudinalModifiedDates"], LinkColumns("nope"), "no column 'nope'"),
])
def test_refusals_before_any_row(options: list[str], columns: LinkColumns,
                                 message: str) -> None:
    table = pa.table({"pid": ["A1"], "uid": ["1.2.3"], "d": ["20200101"]})
    with pytest.raises(ConfigError, match=message):
        pseudonymize_table(table, Deidentifier(config_from_options("basic", options), KEY),
                           columns=columns)


def test_policies_read_from_the_deidentifier() -> None:
    policy = linkage_policy(Deidentifier(privacy_first(), KEY))
    assert (policy.patient_id, policy.dates) == (Treatment.PSEUDONYM, Treatment.REMOVE)
    minimal = linkage_policy(Deidentifier(config_from_options("minimal-keep-list", []), KEY))
    assert minimal.patient_id is Treatment.REMOVE  # the minimal keep list drops PatientID
    with pytest.raises(ConfigError, match="removes PatientID"):
        pseudonymize_table(pa.table({"pid": ["A1"]}),
                           Deidentifier(config_from_options("minimal-keep-list", []), KEY),
                           columns=LinkColumns("pid"))


def test_a_bad_date_is_named_by_row_and_column(tmp_path: Path) -> None:
    table = pa.table({"pid": ["A1", "A2"], "when": ["2020-01-01", "not yet"]})
    with pytest.raises(BadInput, match=r"row 2: column 'when'") as err:
        pseudonymize_table(table, _modified(), columns=LinkColumns("pid", dates=("when",)))
    assert "not yet" not in str(err.value)
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        write_extract(table, tmp_path / "out.xlsx")
