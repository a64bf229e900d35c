"""Metadata export: typed columns per VR, nesting, private/malformed JSON, incremental runs."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_deid import metadata_schema as ms
from dicom_deid.metadata_export import ExportState, export_metadata
from dicom_deid.synth import generate

ROOT = "1.2.826.0.1.3680043.10.543.77."
NIGHT1 = date(2026, 11, 1)
NIGHT2 = date(2026, 11, 2)
PIXELS = bytes(range(256)) * 1024  # 256 KiB with a recognisable pattern


def _item(**kw: object) -> Dataset:
    item = Dataset()
    for k, v in kw.items():
        setattr(item, k, v)
    return item


def make_dataset(n: int = 1, **extra: object) -> Dataset:
    """An instance with one element of every VR family, nesting, a private block, pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}3.{n}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL"]  # VM 2-n in the dictionary: a list even with one value
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{ROOT}3.{n}"
    ds.StudyDate = "20230514"
    ds.StudyTime = "101500.25"
    ds.AcquisitionDateTime = "20230514101600.000000+0200"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.StationAETitle = "CTAE"
    ds.Manufacturer = "ACME"
    ds.InstitutionAddress = "12 Harbour Road"
    ds.ExtendedCodeMeaning = "long text\r\nline 2"
    ds.LongCodeValue = "X" * 70
    ds.URNCodeValue = "urn:oid:1.2.3"
    ds.PrivateDataElementDescription = "a UT value"
    ds.RecommendedDisplayFrameRateInFloat = 12.5
    ds.EventTimeOffset = 3.25
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.PatientID = "MRN1"
    ds.PatientAge = "045Y"
    ds.PatientSize = "1.75"
    ds.ReferencePixelX0 = -7
    ds.TagAngleSecondAxis = -3
    ds.StudyInstanceUID = f"{ROOT}1"
    ds.SeriesInstanceUID = f"{ROOT}2"
    ds.InstanceNumber = str(n)
    ds.StageNumber = "2"
    ds.DimensionIndexPointer = 0x00209157
    ds.NumberOfStudyRecordsInInstance = 4000000000
    ds.FileOffsetInContainer = 2**40
    ds.add_new(0x00720082, "SV", [-(2**40), 5])  # SelectorSVValue, VM 1-n
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.WindowCenter = "40"
    ds.Rows = 512
    ds.RequestAttributesSequence = Sequence([
        _item(RequestedProcedureID="RP1", ScheduledProtocolCodeSequence=Sequence([
            _item(CodeValue="P1", CodingSchemeDesignator="99X", CodeMeaning="Proto one"),
        ])),
        _item(RequestedProcedureID="RP2"),
    ])
    block = ds.private_block(0x0009, "ACME PHI 1.0", create=True)
    block.add_new(0x10, "LO", "secret note")
    block.add_new(0x11, "US", 7)
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = PIXELS
    ds["PixelData"].VR = "OW"
    return ds


def write(ds: Dataset, path: Path, implicit: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def read_rows(out: Path) -> pa.Table:
    parts = sorted(out.glob("ingest_date=*/part-*.parquet"))
    schema = ms.unify(pq.read_schema(p) for p in parts)
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive") \
        .select(schema.names)


@pytest.fixture()
def one(tmp_path: Path) -> tuple[pa.Table, Path]:
    src = write(make_dataset(), tmp_path / "in" / "a.dcm")
    out = tmp_path / "out"
    summary = export_metadata([src], out, run_id="r1", ingest_date=NIGHT1, workers=1)
    assert summary.exported == 1 and not summary.errors
    return read_rows(out), src


def test_types_per_vr_family(one: tuple[pa.Table, Path]) -> None:
    table, _ = one
    schema = table.schema
    expect = {
        "StationAETitle": pa.string(), "PatientAge": pa.string(), "Modality": pa.string(),
        "Manufacturer": pa.string(), "ExtendedCodeMeaning": pa.string(),
        "AccessionNumber": pa.string(), "InstitutionAddress": pa.string(),
        "LongCodeValue": pa.string(), "SOPInstanceUID": pa.string(),
        "URNCodeValue": pa.string(), "PrivateDataElementDescription": pa.string(),
        "PatientSize": pa.string(), "StageNumber": pa.string(), "StudyDate": pa.date32(),
        "StudyTime": pa.time64("us"), "AcquisitionDateTime": pa.timestamp("us", tz="UTC"),
        "RecommendedDisplayFrameRateInFloat": pa.float64(), "EventTimeOffset": pa.float64(),
        "DimensionIndexPointer": pa.int64(), "ReferencePixelX0": pa.int64(),
        "TagAngleSecondAxis": pa.int64(), "NumberOfStudyRecordsInInstance": pa.int64(),
        "Rows": pa.int64(), "FileOffsetInContainer": pa.int64(),
        "SelectorSVValue": pa.list_(pa.int64()), "PatientName": ms.PN_TYPE,
    }
    for name, typ in expect.items():
        assert schema.field(name).type == typ, name
        assert ms.arrow_type_for(name) == typ, name
    row = table.to_pylist()[0]
    assert row["StudyDate"] == date(2023, 5, 14)
    assert row["StudyTime"] == dtime(10, 15, 0, 250000)
    assert row["AcquisitionDateTime"] == datetime(2023, 5, 14, 8, 16, tzinfo=UTC)
    assert row["RecommendedDisplayFrameRateInFloat"] == 12.5
    assert row["DimensionIndexPointer"] == 0x00209157
    assert row["ReferencePixelX0"] == -7
    assert row["NumberOfStudyRecordsInInstance"] == 4000000000
    assert row["FileOffsetInContainer"] == 2**40
    assert row["SelectorSVValue"] == [-(2**40), 5]
    assert row["ExtendedCodeMeaning"] == "long text\r\nline 2"
    assert row["PatientSize"] == "1.75"


def test_pn_struct_has_ideographic_and_phonetic(one: tuple[pa.Table, Path]) -> None:
    row = one[0].to_pylist()[0]
    assert row["PatientName"] == {
        "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}


def test_iso2022_person_name(tmp_path: Path) -> None:
    ds = make_dataset(SpecificCharacterSet=["ISO 2022 IR 6", "ISO 2022 IR 87"])
    ds.PatientName = "Yamada^Tarou=山田^太郎=ﾔﾏﾀﾞ^ﾀﾛｳ"
    ds.SpecificCharacterSet = ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    src = write(ds, tmp_path / "in" / "jp.dcm")
    assert b"\x1b" in src.read_bytes()
    export_metadata([src], tmp_path / "out", run_id="r1", ingest_date=NIGHT1, workers=1)
    row = read_rows(tmp_path / "out").to_pylist()[0]
    assert row["PatientName"] == {
        "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "ﾔﾏﾀﾞ^ﾀﾛｳ"}


def test_multi_valued_keywords_are_always_lists(one: tuple[pa.Table, Path]) -> None:
    table, _ = one
    assert table.schema.field("ImageType").type == pa.list_(pa.string())
    assert table.schema.field("WindowCenter").type == pa.list_(pa.string())
    row = table.to_pylist()[0]
    assert row["ImageType"] == ["ORIGINAL"]
    assert row["PixelSpacing"] == ["0.5", "0.25"]
    assert row["WindowCenter"] == ["40"]


def test_nested_sequences_are_queryable(one: tuple[pa.Table, Path], tmp_path: Path) -> None:
    table, _ = one
    row = table.to_pylist()[0]
    first = row["RequestAttributesSequence"][0]
    assert first["ScheduledProtocolCodeSequence"][0]["CodeValue"] == "P1"
    assert row["RequestAttributesSequence"][1]["RequestedProcedureID"] == "RP2"
    assert row["RequestAttributesSequence"][1]["ScheduledProtocolCodeSequence"] is None
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(
        "SELECT i.ScheduledProtocolCodeSequence[1].CodeMeaning "
        f"FROM read_parquet('{tmp_path}/out/ingest_date=*/*.parquet') t, "
        "UNNEST(t.RequestAttributesSequence) AS u(i) "
        "WHERE i.RequestedProcedureID = 'RP1'").fetchall()
    assert got == [("Proto one",)]


def test_bulk_length_recorded_and_pixels_absent(one: tuple[pa.Table, Path], tmp_path: Path
                                                ) -> None:
    table, _ = one
    row = table.to_pylist()[0]
    assert row["PixelData_length"] == len(PIXELS)
    assert "PixelData" not in table.schema.names
    assert not any(pa.types.is_binary(f.type) for f in table.schema)
    part = next((tmp_path / "out").glob("ingest_date=*/*.parquet"))
    assert part.stat().st_size < len(PIXELS) // 4


def test_private_json_is_creator_qualified(one: tuple[pa.Table, Path]) -> None:
    private = json.loads(one[0].to_pylist()[0]["private_json"])
    assert private["0009,ACME PHI 1.0,10"] == "secret note"
    assert private["0009,ACME PHI 1.0,11"] == "7"
    assert not any(k.endswith(",0010") for k in private)  # creators are in the keys


def test_private_json_implicit_vr(tmp_path: Path) -> None:
    ds = make_dataset(PixelRepresentation=1)
    ds.SmallestImagePixelValue = -5  # "US or SS" in the dictionary
    ds["SmallestImagePixelValue"].VR = "SS"
    src = write(ds, tmp_path / "in" / "i.dcm", implicit=True)
    export_metadata([src], tmp_path / "out", run_id="r1", ingest_date=NIGHT1, workers=1)
    row = read_rows(tmp_path / "out").to_pylist()[0]
    assert json.loads(row["private_json"])["0009,ACME PHI 1.0,10"] == "secret note"
    assert row["StudyDate"] == date(2023, 5, 14)
    assert row["SmallestImagePixelValue"] == -5
    assert row["Rows"] == 512
    assert row["RequestAttributesSequence"][0]["ScheduledProtocolCodeSequence"][0][
        "CodeValue"] == "P1"


def test_malformed_values_are_recorded_not_fatal(tmp_path: Path) -> None:
    ds = make_dataset(StudyDate="19990101", InstanceNumber="9876", StudyTime="235959")
    src = write(ds, tmp_path / "in" / "bad.dcm")
    data = src.read_bytes()  # pydicom refuses to write bad values: patch them in place
    for good, bad in ((b"19990101", b"2023x   "), (b"9876", b"abc "), (b"235959", b"99    ")):
        assert data.count(good) == 1
        data = data.replace(good, bad)
    src.write_bytes(data)
    summary = export_metadata([src], tmp_path / "out", run_id="r1", ingest_date=NIGHT1,
                              workers=1)
    assert summary.exported == 1 and summary.malformed_values == 3
    row = read_rows(tmp_path / "out").to_pylist()[0]
    assert row["StudyDate"] is None and row["InstanceNumber"] is None
    assert row["StudyTime"] is None
    assert json.loads(row["malformed_json"]) == {
        "StudyDate": "2023x", "InstanceNumber": "abc", "StudyTime": "99"}
    assert row["Modality"] == "CT"


def test_provenance_columns(one: tuple[pa.Table, Path]) -> None:
    table, src = one
    row = table.to_pylist()[0]
    data = src.read_bytes()
    assert table.schema.names[:8] == [f.name for f in ms.PROVENANCE_FIELDS]
    assert row["source_uri"] == str(src)
    assert row["size_bytes"] == len(data)
    assert row["content_sha256"] == hashlib.sha256(data).hexdigest()
    assert row["ingest_run_id"] == "r1"
    assert row["ingest_date"] == NIGHT1
    assert row["transfer_syntax_uid"] == ExplicitVRLittleEndian
    assert row["sop_class_uid"] == CTImageStorage
    assert abs(row["mtime"].timestamp() - src.stat().st_mtime) < 1e-3


def test_two_nights_with_different_keywords_union(tmp_path: Path) -> None:
    a = write(make_dataset(1), tmp_path / "in" / "a.dcm")
    extra = make_dataset(2, BodyPartExamined="CHEST")
    extra.RequestAttributesSequence[0].ScheduledProcedureStepID = "SPS9"  # new nested field
    b = write(extra, tmp_path / "in" / "b.dcm")
    out = tmp_path / "out"
    export_metadata([a], out, run_id="n1", ingest_date=NIGHT1, workers=1)
    export_metadata([a, b], out, run_id="n2", ingest_date=NIGHT2, workers=1)
    parts = sorted(out.glob("ingest_date=*/*.parquet"))
    assert len(parts) == 2
    s1, s2 = (pq.read_schema(p) for p in parts)
    assert "BodyPartExamined" not in s1.names and "BodyPartExamined" in s2.names
    unified = ms.unify([s1, s2])
    item = unified.field("RequestAttributesSequence").type.value_type
    assert item.field("ScheduledProcedureStepID").type == pa.string()
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(
        f"SELECT ingest_date, BodyPartExamined, RequestAttributesSequence[1]"
        f".ScheduledProcedureStepID, PatientName.Ideographic "
        f"FROM read_parquet('{out}/ingest_date=*/*.parquet', union_by_name=true) "
        "ORDER BY ingest_date"
    ).fetchall()
    assert got == [(NIGHT1, None, None, "山田^太郎"), (NIGHT2, "CHEST", "SPS9", "山田^太郎")]


def test_unify_rejects_conflicting_types() -> None:
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid)):
        ms.unify([pa.schema([("Rows", pa.int64())]), pa.schema([("Rows", pa.string())])])


def test_incremental_rerun_adds_nothing_and_changes_reexport(tmp_path: Path) -> None:
    a = write(make_dataset(1), tmp_path / "in" / "a.dcm")
    b = write(make_dataset(2), tmp_path / "in" / "b.dcm")
    out = tmp_path / "out"
    first = export_metadata([a, b], out, run_id="r1", ingest_date=NIGHT1, workers=1)
    assert first.exported == 2
    again = export_metadata([b, a], out, run_id="r2", ingest_date=NIGHT1, workers=1)
    assert again.exported == 0 and again.skipped_unchanged == 2 and not again.parts
    assert read_rows(out).num_rows == 2
    # touched, same bytes: re-hashed, not re-exported
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 5_000_000_000))
    touched = export_metadata([a, b], out, run_id="r3", ingest_date=NIGHT1, workers=1)
    assert touched.exported == 0 and touched.unchanged_content == 1
    # changed content: exported again
    write(make_dataset(1, AccessionNumber="ACC-NEW"), a)
    changed = export_metadata([a, b], out, run_id="r4", ingest_date=NIGHT2, workers=1)
    assert changed.exported == 1 and changed.skipped_unchanged == 1
    rows = read_rows(out).to_pylist()
    assert sorted(r["AccessionNumber"] for r in rows) == ["ACC-NEW", "ACC1", "ACC1"]
    state = ExportState.for_export(out)
    assert state.entries[str(a)].sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    assert not list(out.rglob(".tmp-*"))


def test_crashed_attempt_parts_are_replaced(tmp_path: Path) -> None:
    a = write(make_dataset(1), tmp_path / "in" / "a.dcm")
    out = tmp_path / "out"
    export_metadata([a], out, run_id="r1", ingest_date=NIGHT1, workers=1)
    (out / "_state" / "exported.manifest").unlink()  # as if the run died before its manifest
    export_metadata([a], out, run_id="r1", ingest_date=NIGHT1, workers=1)
    assert read_rows(out).num_rows == 1


def test_bad_inputs_reported_not_rowed(tmp_path: Path) -> None:
    good = write(make_dataset(), tmp_path / "in" / "good.dcm")
    empty = tmp_path / "in" / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "in" / "notes.txt"
    text.write_text("Patient John Smith, not DICOM\n")
    cut = tmp_path / "in" / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:1000])
    missing = tmp_path / "in" / "missing.dcm"
    summary = export_metadata([good, empty, text, cut, missing], tmp_path / "out",
                              run_id="r1", ingest_date=NIGHT1, workers=1)
    assert summary.exported == 1
    reasons = dict(summary.errors)
    assert set(reasons) == {str(empty), str(text), str(cut), str(missing)}
    assert reasons[str(empty)] == "zero-byte file"
    assert "truncated" in reasons[str(cut)]
    assert all("John" not in r for r in reasons.values())
    assert read_rows(tmp_path / "out").num_rows == 1


def test_synthetic_corpus_parallel_sorted(tmp_path: Path) -> None:
    generate(tmp_path / "corpus", patients=3, seed=5, small=True, bad_inputs=False)
    files = sorted((tmp_path / "corpus" / "dicom").rglob("*.dcm"))
    assert files
    out = tmp_path / "out"
    summary = export_metadata(reversed(files), out, run_id="p", ingest_date=NIGHT1, workers=2,
                              rows_per_file=7)
    assert summary.exported == len(files) and not summary.errors
    table = read_rows(out)
    assert table.column("source_uri").to_pylist() == sorted(str(f) for f in files)
    assert all(n == 0 or n > 0 for n in table.column("PixelData_length").to_pylist()
               if n is not None)
    sr = [r for r in table.to_pylist() if r["Modality"] == "SR"]
    assert sr and sr[0]["ContentSequence"]
