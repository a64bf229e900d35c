"""Metadata export: typed columns per VR, nesting, private/malformed JSON, incremental runs."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_deid.errors import BadInput
from dicom_deid.metadata import export as metadata_export
from dicom_deid.metadata import schema as ms
from dicom_deid.metadata.export import (
    ExportState,
    clear_caches,
    export_metadata,
    general_row,
    instance_row,
)
from dicom_deid.metadata.scan import Fallback, scan_row
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


def test_state_compact_round_trip(tmp_path: Path) -> None:
    """The compact manifest: put/update/get, None parts, and a save -> load round trip."""
    state = ExportState(path=tmp_path / "m")
    sha = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    state.put("b", 10, 20, sha[0], "p/part-1.parquet")
    state.put("a", 11, 21, sha[1], None)
    state.put("b", 12, 22, sha[2], "p/part-2.parquet")  # an update keeps one row
    assert len(state) == 2 and state.get("zz") is None
    assert state.entries["b"] == metadata_export.StateEntry(12, 22, sha[2].hex(),
                                                           "p/part-2.parquet")
    assert state.committed_parts() == {"p/part-2.parquet"}
    state.save()
    table = pq.ParquetFile(tmp_path / "m").read()
    assert table.column("uri").to_pylist() == ["a", "b"]  # rows in URI order
    assert table.column("part").to_pylist() == [None, "p/part-2.parquet"]
    loaded = ExportState.load(tmp_path / "m")
    assert dict(loaded.entries) == dict(state.entries)
    with pytest.raises(ValueError):
        state.put("c", 1, 1, b"short", None)


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


# --------------------------------------------------------------------------- fast path
# The export reads little-endian files with a one-pass scanner (metadata_scan) and falls
# back to the pydicom-backed path for anything unusual; these tests hold the two to the
# same rows, shapes, malformed records and error reasons.

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
_ITEM_UNDEF = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_DELIM = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQ_DELIM = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def el(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    """One element, little endian, padded to even length like a writer would."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", group, elem, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def sq(tag: int, items: list[bytes], implicit: bool = False, defined: bool = False,
       vr: str = "SQ") -> bytes:
    """A sequence: undefined-length items and sequence, or both with defined lengths."""
    group, elem = tag >> 16, tag & 0xFFFF
    if defined:
        body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(i)) + i for i in items)
        length = len(body)
    else:
        body = b"".join(_ITEM_UNDEF + i + _ITEM_DELIM for i in items) + _SEQ_DELIM
        length = 0xFFFFFFFF
    head = struct.pack("<HHI", group, elem, length) if implicit else \
        struct.pack("<HH2s2xI", group, elem, vr.encode(), length)
    return head + body


def part10(body: bytes, ts: str = ExplicitVRLittleEndian) -> bytes:
    """Preamble, DICM and a file meta group with the transfer syntax, then ``body``."""
    meta = el(0x00020010, "UI", ts.encode())
    return b"\0" * 128 + b"DICM" + el(0x00020000, "UL", struct.pack("<I", len(meta))) \
        + meta + body


def sop(implicit: bool = False) -> tuple[bytes, bytes]:
    """SOP Class and Instance UID elements (a file needs both)."""
    return (el(0x00080016, "UI", CTImageStorage.encode(), implicit),
            el(0x00080018, "UI", f"{ROOT}9".encode(), implicit))


def both_paths(data: bytes) -> tuple[object, object]:
    """(fast path result or "fallback", general path result or its BadInput reason)."""
    clear_caches()
    try:
        fast: object = scan_row(data)
    except Fallback:
        fast = "fallback"
    clear_caches()
    try:
        general: object = general_row(data)
    except BadInput as exc:
        general = exc.reason
    return fast, general


def _case_bodies() -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, expected to take the fast path)."""
    cls, inst = sop()
    icls, iinst = sop(True)
    latin = el(0x00080005, "CS", b"ISO_IR 100")
    code_item = el(0x00080100, "SH", b"P1") + el(0x00080102, "SH", b"99X") + \
        el(0x00080104, "LO", b"Proto one")
    nested = sq(0x00400008, [code_item, code_item], defined=True) + el(0x00401001, "SH", b"RP1")
    inested = sq(0x00400008, [el(0x00080100, "SH", b"P1", True)], True) + el(
        0x00401001, "SH", b"RP1", True)
    cases: dict[str, tuple[bytes, bool]] = {
        "malformed values": (part10(
            cls + inst + el(0x00080020, "DA", b"2023x") + el(0x0008002A, "DT", b"2023-05")
            + el(0x00080030, "TM", b"99") + el(0x00180050, "DS", b"1\\2")
            + el(0x00200013, "IS", b"abc") + el(0x00280010, "US", b"\x01\x02\x03\x00\x00")
            + el(0x00280011, "US", b"\x00\x02")), True),
        "nested sequences, undefined lengths": (part10(
            cls + inst + sq(0x00400275, [nested, el(0x00401001, "SH", b"RP2")])), True),
        "nested sequences, implicit VR": (part10(
            icls + iinst + sq(0x00400275, [inested, b""], True), ImplicitVRLittleEndian),
            True),
        "empty sequence and empty item": (part10(
            cls + inst + sq(0x00081115, []) + sq(0x00081140, [b""], defined=True)), True),
        "private block and private sequence": (part10(
            cls + inst + el(0x00090010, "LO", b"ACME 1.0") + el(0x00091010, "LO", b"note")
            + el(0x00091011, "US", b"\x07\x00") + sq(0x00091012, [code_item, b""])
            + el(0x00091013, "OB", bytes(range(256)))
            + el(0x00091100, "LO", b"no creator")), True),
        "implicit private, dictionary VRs": (part10(
            icls + iinst + el(0x00290010, "LO", b"1.2.840.113663.1", True)
            + el(0x00291000, "US", b"\x05\x00", True)
            + el(0x00710010, "LO", b"AGFA-AG_HPState", True)
            + sq(0x00711018, [el(0x00080100, "SH", b"P1", True)], True),
            ImplicitVRLittleEndian), True),
        "item with its own character set": (part10(
            cls + inst + sq(0x00101002, [latin + el(0x00100020, "LO", "Jos\xe9".encode(
                "latin-1")), el(0x00100020, "LO", b"ID2")])), True),
        "ISO 2022 person name": (part10(
            el(0x00080005, "CS", b"\\ISO 2022 IR 87") + cls + inst
            + el(0x00100010, "PN", "Yamada^Tarou=山田^太郎".encode("iso2022_jp"))), True),
        "UTF-8 text": (part10(
            el(0x00080005, "CS", b"ISO_IR 192") + cls + inst
            + el(0x00081030, "LO", "Étude crâne".encode()) + el(0x00100010, "PN",
                                                                  "Müller^Jörg".encode())),
            True),
        "repeating overlay groups": (part10(
            cls + inst + el(0x60000010, "US", b"\x10\x00") + el(0x60000022, "LO", b"one")
            + el(0x60020010, "US", b"\x20\x00") + el(0x60020022, "LO", b"two")), True),
        "US or SS after Pixel Representation": (part10(
            icls + iinst + el(0x00280103, "US", b"\x01\x00", True)
            + el(0x00280106, "US", b"\xfb\xff", True), ImplicitVRLittleEndian), True),
        "US or SS before Pixel Representation": (part10(
            icls + iinst + el(0x00280071, "US", b"\xfb\xff", True)
            + el(0x00280103, "US", b"\x01\x00", True), ImplicitVRLittleEndian), False),
        "UN-encoded standard elements": (part10(
            cls + inst + el(0x00080060, "UN", b"CT") + el(0x00280010, "UN", b"\x00\x02")
            + el(0x00400275, "UN", sq(0x00400275, [el(0x00401001, "SH", b"RP1", True)],
                                      True, defined=True)[8:])), True),
        "VR other than the dictionary's": (part10(
            cls + inst + el(0x00180050, "LO", b"2.5") + el(0x00280010, "SS", b"\x00\x02")
            + el(0x00280030, "DS", b"0.5\\0.5")), True),
        "unknown standard tag": (part10(cls + inst + el(0x00091234 - 0x10000, "LO", b"?")),
                                 True),
        "encapsulated pixel data and trailing padding": (part10(
            cls + inst + struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0xFFFE, 0xE000, 6)
            + b"abcdef" + _SEQ_DELIM + el(0xFFFCFFFC, "OB", b"\0" * 4),
            "1.2.840.10008.1.2.5"), True),
        "raw dataset, explicit VR": (cls + inst + el(0x00080060, "CS", b"MR"), True),
        "raw dataset, implicit VR": (icls + iinst + el(0x00080060, "CS", b"MR", True), True),
        "elements out of order": (part10(inst + cls), False),
        "duplicate element": (part10(cls + inst + el(0x00080060, "CS", b"CT")
                                     + el(0x00080060, "CS", b"MR")), False),
        "character set after another element": (part10(
            el(0x00080001, "UL", b"\0\0\0\0") + latin + cls + inst), False),
        "unknown character set term": (part10(el(0x00080005, "CS", b"ISO_IR 999") + cls
                                              + inst), False),
        "undefined-length UN inside an item": (part10(cls + inst + sq(0x00400275, [
            struct.pack("<HH2s2xI", 0x0008, 0x1140, b"UN", 0xFFFFFFFF) + _SEQ_DELIM])), False),
        "truncated": (part10(cls + inst + el(0x00100010, "PN", b"Smith^John"))[:-4], False),
        "no SOP Instance UID": (part10(cls), False),
        "not DICOM": (b"Patient John Smith, not DICOM\n", False),
    }
    return cases


@pytest.mark.parametrize("name", sorted(_case_bodies()))
def test_fast_path_equals_general_path(name: str) -> None:
    data, fast_expected = _case_bodies()[name]
    fast, general = both_paths(data)
    if fast_expected:
        assert fast != "fallback"
        assert fast == general
    else:
        assert fast == "fallback"
    clear_caches()
    try:
        assert instance_row(data) == general
    except BadInput as exc:
        assert exc.reason == general


def test_fast_path_values() -> None:
    """What the crafted files hold, as typed values and JSON records."""
    cases = _case_bodies()
    row, _, count = scan_row(cases["malformed values"][0])
    assert count == 6 and row["StudyDate"] is None
    assert row["SliceThickness"] == "1"  # a single-valued keyword: the first value kept
    assert row["Columns"] == 512
    assert json.loads(row["malformed_json"]) == {
        "StudyDate": "2023x", "AcquisitionDateTime": "2023-05", "StudyTime": "99",
        "SliceThickness": "1\\2", "InstanceNumber": "abc",
        "Rows": "\x01\x02\x03"}
    row, shape, _ = scan_row(cases["nested sequences, undefined lengths"][0])
    assert row["RequestAttributesSequence"][0]["ScheduledProtocolCodeSequence"][1][
        "CodeMeaning"] == "Proto one"
    assert set(shape["RequestAttributesSequence"]) == {
        "RequestedProcedureID", "ScheduledProtocolCodeSequence"}
    private = json.loads(scan_row(cases["private block and private sequence"][0])[0][
        "private_json"])
    assert private["0009,ACME 1.0,10"] == "note" and private["0009,ACME 1.0,11"] == "7"
    assert private["0009,ACME 1.0,12"][0]["CodeValue"] == "P1"
    assert private["0009,ACME 1.0,13"].startswith("base64:")
    assert private["0009,1100"] == "no creator"
    private = json.loads(scan_row(cases["implicit private, dictionary VRs"][0])[0][
        "private_json"])
    assert private["0029,1.2.840.113663.1,00"] == "5"
    assert private["0071,AGFA-AG_HPState,18"] == [{"CodeValue": "P1"}]
    row = scan_row(cases["item with its own character set"][0])[0]
    assert [i["PatientID"] for i in row["OtherPatientIDsSequence"]] == ["José", "ID2"]
    row = scan_row(cases["ISO 2022 person name"][0])[0]
    assert row["PatientName"]["Ideographic"] == "山田^太郎"
    row = scan_row(cases["repeating overlay groups"][0])[0]
    assert row["OverlayRows"] == 16
    assert json.loads(row["private_json"]) == {"6002,0010": "32", "6002,0022": "two"}
    assert scan_row(cases["US or SS after Pixel Representation"][0])[0][
        "SmallestImagePixelValue"] == -5
    row = scan_row(cases["UN-encoded standard elements"][0])[0]
    assert row["Modality"] == "CT" and row["Rows"] == 512
    assert row["RequestAttributesSequence"] == [{"RequestedProcedureID": "RP1"}]
    row = scan_row(cases["encapsulated pixel data and trailing padding"][0])[0]
    assert row["PixelData_length"] == 8 + 8 + 6


def test_fast_path_equals_general_path_on_synthetic_corpus(tmp_path: Path) -> None:
    generate(tmp_path / "corpus", patients=4, seed=7, small=True, bad_inputs=True)
    files = sorted(p for p in (tmp_path / "corpus" / "dicom").rglob("*") if p.is_file())
    datas = [f.read_bytes() for f in files]
    clear_caches()
    fast: list[object] = []
    for data in datas:
        try:
            fast.append(scan_row(data))
        except Fallback:
            fast.append("fallback")
    warm = []  # the same files again: every value now comes from the caches
    for data in datas:
        try:
            warm.append(scan_row(data))
        except Fallback:
            warm.append("fallback")
    clear_caches()
    general: list[object] = []
    for data in datas:
        try:
            general.append(general_row(data))
        except BadInput as exc:
            general.append(exc.reason)
    assert warm == fast
    fell_back = [i for i, f in enumerate(fast) if f == "fallback"]
    assert [i for i, g in enumerate(general) if isinstance(g, str)] == fell_back
    assert len(fell_back) < len(files) // 5  # the bad inputs only
    assert [f for f in fast if f != "fallback"] == \
        [g for g in general if not isinstance(g, str)]


def test_scanner_failure_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _case_bodies()["nested sequences, undefined lengths"][0]
    expected = general_row(data)

    def broken(_: bytes) -> None:
        raise RuntimeError("scanner bug")

    monkeypatch.setattr(metadata_export, "scan_row", broken)
    assert instance_row(data) == expected


@pytest.mark.parametrize(("n", "chunk", "workers"), [
    (5231, 2616, 2), (10, 5, 2), (1, 1, 2), (3, 2, 2), (0, 1, 2), (300, 100, 3),
    (2000, 1000, 1), (257, 7, 2)])
def test_batches_cover_parts_in_order(n: int, chunk: int, workers: int) -> None:
    ranges = metadata_export._batch_ranges(n, chunk, workers)
    assert [i for _, b, e in ranges for i in range(b, e)] == list(range(n))
    assert all(b < e and {i // chunk for i in range(b, e)} == {part} for part, b, e in ranges)


def test_part_schema_in_tag_order_across_batches(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A struct field first seen in a later batch still lands in tag order in the part."""
    monkeypatch.setattr(metadata_export, "_BATCH_ROWS", 1)  # one file per batch
    first = make_dataset(1)
    first.RequestAttributesSequence = Sequence([_item(RequestedProcedureID="RP9")])
    files = [write(first, tmp_path / "in" / "a.dcm"), write(make_dataset(2), tmp_path / "in" /
                                                             "b.dcm")]
    export_metadata(files, tmp_path / "out", run_id="r1", ingest_date=NIGHT1, workers=1)
    parts = list((tmp_path / "out").glob("ingest_date=*/part-*.parquet"))
    assert len(parts) == 1
    item = pq.read_schema(parts[0]).field("RequestAttributesSequence").type.value_type
    assert [f.name for f in item] == ["ScheduledProtocolCodeSequence", "RequestedProcedureID"]
    rows = pq.read_table(parts[0]).to_pylist()
    assert rows[0]["RequestAttributesSequence"] == [
        {"ScheduledProtocolCodeSequence": None, "RequestedProcedureID": "RP9"}]


_PROVENANCE = {f.name for f in ms.PROVENANCE_FIELDS} | {"TransferSyntaxUID"}


def _rows_without_provenance(paths: list[Path], out: Path) -> list[dict[str, object]]:
    summary = export_metadata(paths, out, run_id="r1", ingest_date=NIGHT1, workers=1)
    assert summary.exported == len(paths) and not summary.errors
    rows = sorted(read_rows(out).to_pylist(), key=lambda r: str(r["source_uri"]))
    return [{k: v for k, v in r.items() if k not in _PROVENANCE} for r in rows]


def test_big_endian_sequences_give_the_rows_little_endian_gives(tmp_path: Path) -> None:
    """Explicit VR Big Endian files (pydicom's own pair of one enhanced CT, and a file
    written big endian here) are read through pydicom: their sequences must come out as
    queryable items, the same as the little-endian file's, not set aside as malformed."""
    import pydicom.data
    from pydicom.uid import ExplicitVRBigEndian

    bundled = Path(pydicom.data.__file__).parent / "test_files"
    little, big = _rows_without_provenance([bundled / "liver_1frame.dcm"], tmp_path / "le"), \
        _rows_without_provenance([bundled / "liver_expb_1frame.dcm"], tmp_path / "be")
    assert little == big
    assert big[0]["SharedFunctionalGroupsSequence"] and not big[0]["malformed_json"]
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds["PixelData"].VR = "OB"
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    ours = _rows_without_provenance([path], tmp_path / "mine")[0]
    assert ours["RequestAttributesSequence"][0]["ScheduledProtocolCodeSequence"][0][
        "CodeValue"] == "P1"
    assert not ours["malformed_json"]
