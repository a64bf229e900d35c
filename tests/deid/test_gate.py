"""The verification gate: identifying values read from the source at any depth, searched
for in the output whatever the configuration kept; structure; verdicts bound by hash."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, Option, privacy_first
from dicom_deid.deid.batch import iter_sources, run_batch
from dicom_deid.deid.gate import Gate, Verdict, expand_exceptions
from dicom_deid.dicom.files import FileRange, write_atomic, written_view
from dicom_deid.errors import BadInput, ConfigError
from instances import KEY, deidentify_bytes, make_instance, to_bytes

if TYPE_CHECKING:
    from dicom_deid.deid.byte_path import ByteDeidentifier

UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)


def _verdict(source: bytes, output: bytes, gate: Gate | None = None,
             uids: dict[int, str] | None = None, name: str = "out.dcm") -> Verdict:
    gate = gate or Gate()
    facts = gate.source_facts(source, len(source))
    if uids is None:
        ds = pydicom.dcmread(io.BytesIO(output))
        uids = {t: str(ds[t].value) for t in UID_TAGS if t in ds}
    return gate.check(name, output, facts, uids)


def _keeping(*keywords: str, sweep: bool = False) -> DeidConfig:
    """A config that keeps ``keywords`` as they are (a project's explicit choice)."""
    return load_config({"dicomTagConfig": {"actions": [
        {"queries": list(keywords), "keepTag": {}}]}, "dicomDeid": {"residualSweep": sweep}})


def test_a_clean_output_passes_and_its_verdict_names_its_bytes() -> None:
    source = to_bytes(make_instance())
    _, _, output = deidentify_bytes(source, privacy_first())
    verdict = _verdict(source, output)
    assert verdict.ok, verdict.problems
    assert (verdict.sha256, verdict.size) == (hashlib.sha256(output).hexdigest(), len(output))
    assert verdict.values_checked >= 10  # names, IDs, institution, station, UIDs


def test_a_value_kept_where_the_config_keeps_it_is_a_leak_named_without_the_value() -> None:
    source = make_instance()
    source.StudyDescription = "follow-up for smith, john"  # the name, spelled otherwise
    source.ImageComments = "ID MRN1234567"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("StudyDescription", "ImageComments"))
    verdict = _verdict(data, output)
    assert not verdict.ok and verdict.leaks == 2
    assert set(verdict.problems) == {"original PatientName value found",
                                     "original PatientID value found"}
    text = " ".join(verdict.problems).lower()
    assert "smith" not in text and "mrn" not in text


def test_values_are_read_at_any_depth_of_the_source() -> None:
    # A person named only three sequence levels deep, whose name the output keeps in a
    # comment: the gate reads the source file itself, not a metadata row.
    source = make_instance()
    inner = Dataset()
    inner.PersonName = "Okonkwo^Adaeze"
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    outer = Dataset()
    outer.ContentSequence = Sequence([middle])
    source.ContentSequence = Sequence([outer])
    source.ImageComments = "reviewed with Adaeze Okonkwo"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    verdict = _verdict(data, output)
    assert verdict.problems == ("original PersonName value found",)


def test_a_value_under_several_keywords_names_each_and_files_do_not_share_findings() -> None:
    # The same text as an operator's name in a sequence (remembered by its bytes for the
    # next file of the series) and as the next file's own PatientName: each file's
    # findings name the attributes the value had in that file, and the first file's
    # remembered sequence is not changed by the second's values.
    def instance(name: str) -> bytes:
        source = make_instance(name=name)
        op = Dataset()
        op.PersonName = "Lindqvist^Maja"
        source.ContentSequence = Sequence([op])
        source.ImageComments = "read by Maja Lindqvist"
        return to_bytes(source)

    gate = Gate()
    first, second = instance("Doe^Jane"), instance("Lindqvist^Maja")
    _, _, out1 = deidentify_bytes(first, _keeping("ImageComments"))
    _, _, out2 = deidentify_bytes(second, _keeping("ImageComments"))
    assert _verdict(first, out1, gate).problems == ("original PersonName value found",)
    assert _verdict(second, out2, gate).problems == ("original PatientName value found",
                                                     "original PersonName value found")
    assert _verdict(first, out1, gate).problems == ("original PersonName value found",)


def test_declared_exceptions_are_not_searched_and_nothing_else_is_spared() -> None:
    data = to_bytes(make_instance())
    _, _, output = deidentify_bytes(data, DeidConfig(options=frozenset({Option.RETAIN_UIDS})))
    flagged = _verdict(data, output)
    assert {"original SOPInstanceUID value found", "original StudyInstanceUID value found",
            } <= set(flagged.problems)
    # Named one by one, a UID the project forgot to declare is still flagged ...
    uids = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    assert _verdict(data, output, Gate(uids)).problems == (
        "original ReferencedSOPInstanceUID value found",)
    # ... and the option's name declares every attribute the option keeps.
    assert _verdict(data, output, Gate(["RetainUIDs"])).ok
    assert {"SOPInstanceUID", "ReferencedSOPInstanceUID"} <= expand_exceptions(["RetainUIDs"])
    assert "PatientName" not in expand_exceptions(["RetainUIDs"])
    # An exception for the UIDs is not one for the patient's name.
    _, _, kept_name = deidentify_bytes(data, _keeping("PatientName"))
    assert _verdict(data, kept_name, Gate(uids)).problems == (
        "original PatientName value found",)
    assert _verdict(data, kept_name, Gate(["PatientName"])).ok  # a PN the run declares
    with pytest.raises(ConfigError, match=r"'RetainEverything' is neither a DICOM keyword"):
        Gate(["RetainEverything"])


def test_scheme_designators_and_uid_digits_are_not_taken_for_identifiers() -> None:
    # A patient called "Bari" whose codes come from the registered scheme "BARI", a
    # private "99BARI" scheme, and a numeric patient ID that is also a component of a
    # kept standard UID: no false alarm that would fail a run closed for nothing. The same
    # name in free text still is one.
    source = make_instance(name="Bari^Phantom")
    source.PatientID = "10008"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "1111", "BARI", "Chest"
    code.CodingSchemeVersion = "2.64"
    local = Dataset()
    local.CodeValue, local.CodingSchemeDesignator, local.CodeMeaning = "2", "99BARI", "Arm"
    source.AnatomicRegionSequence = Sequence([code, local])
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert b"BARI" in output and b"1.2.840.10008." in output
    assert _verdict(data, output).ok
    source.ImageComments = "phantom named bari"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert "original PatientName value found" in _verdict(data, output).problems


@pytest.mark.parametrize(("designator", "version"), [("ZARKOVSKY", "1"),
                                                     ("99LOCAL", "Zarkovsky")])
def test_a_name_written_as_a_scheme_designator_or_version_is_a_leak(
        designator: str, version: str) -> None:
    """An external probe planted the patient's name where a code names its scheme: only a
    registered or private designator, and a version without letters, are not searched."""
    source = make_instance(name="Zarkovsky^Belinda")
    code = Dataset()
    code.CodeValue, code.CodeMeaning = "1111", "Chest"
    code.CodingSchemeDesignator, code.CodingSchemeVersion = designator, version
    source.AnatomicRegionSequence = Sequence([code])
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert b"ZARKOVSKY" in output.upper()  # the profile keeps the code as it is
    assert _verdict(data, output).problems == ("original PatientName value found",)


def test_an_id_or_a_birth_date_written_as_a_scheme_version_is_a_leak() -> None:
    source = make_instance()
    source.PatientID, source.PatientBirthDate = "48213977", "19630417"
    codes = []
    for version in ("48213977", "19630417"):
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "1", "99X", "Arm"
        code.CodingSchemeVersion = version
        codes.append(code)
    source.AnatomicRegionSequence = Sequence(codes)
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert set(_verdict(data, output).problems) == {"original PatientID value found",
                                                   "original PatientBirthDate value found"}


def test_a_number_in_a_number_element_is_not_taken_for_an_id() -> None:
    # An external probe: StudyID 1500 beside the lung window's width 1500, a device serial
    # number 1200 beside a tube current of 1200 mA, in the output the profile keeps.
    source = make_instance()
    source.StudyID, source.DeviceSerialNumber = "1500", "1200"
    source.WindowCenter, source.WindowWidth = "-600", "1500"
    source.XRayTubeCurrent, source.InstanceNumber = "1200", "1500"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert b"1500" in output and b"1200" in output
    verdict = _verdict(data, output)
    assert verdict.ok, verdict.problems
    source.ImageComments = "study 1500"  # the same number written as text is a leak
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert _verdict(data, output).problems == ("original StudyID value found",)
    # An ID of 8 digits or more (an MRN, a birth date) in a number element is one; a
    # 6-digit one may be a coincidence (an external probe: MRN 250000, ExposureTime 250000).
    source = make_instance()
    source.PatientID, source.ImageComments = "48213977", None
    source.ExposureTime = "48213977"  # IS, kept by the profile
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert _verdict(data, output).problems == ("original PatientID value found",)
    source.PatientID = source.ExposureTime = "250000"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert _verdict(data, output).ok
    # Probe 12: a 7-digit ID that is a number element's whole value is the ID (an MRN as
    # the Acquisition Number); within a longer value, or a round number, it is not.
    for mrn, number, leak in (("MRN4821397", "4821397", True), ("4821397", "4821397", True),
                              ("MRN4821397", "14821397", False),
                              ("MRN2500000", "2500000", False), ("MRN482139", "482139", False)):
        source.PatientID, source.ExposureTime = mrn, None
        source.AcquisitionNumber = number
        data = to_bytes(source)
        _, _, output = deidentify_bytes(data, privacy_first())
        assert number.encode() in output
        assert (_verdict(data, output).problems == ("original PatientID value found",)) is leak


def test_an_id_written_in_groups_is_found() -> None:
    # A kept comment quoting the MRN the way a clerk writes it: "48-21-39-77".
    source = make_instance()
    source.PatientID, source.ImageComments = "48213977", "MRN 48-21-39-77 on file"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert b"48-21-39-77" in output
    assert _verdict(data, output).problems == ("original PatientID value found",)
    # The sweep (on by default) writes a placeholder instead; then nothing is found.
    _, _, output = deidentify_bytes(data, _keeping("ImageComments", sweep=True))
    assert b"48-21-39" not in output and _verdict(data, output).ok
    # Grouped digits inside a longer number, and another number, are not the ID.
    source.ImageComments = "ref 148-21-39-77 and 48-21-39"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert b"148-21-39-77" in output and _verdict(data, output).ok
    # A decimal is no grouping: accession 123456 beside a slice location of 123.456.
    source = make_instance()
    source.AccessionNumber, source.SliceLocation = "123456", "123.456"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert b"123.456" in output and _verdict(data, output).ok


def test_an_id_written_digit_by_digit_is_found() -> None:
    # A kept comment spelling the MRN out one digit at a time, as read over the phone: no
    # two of its digits together, still the ID (with its letter prefix or without).
    source = make_instance()
    for mrn, written in (("MRN4821397", "4-8-2-1-3-9-7"), ("MRN4821397", "4 8 2 1 3 9 7"),
                         ("4821397", "4 / 8 2-1  3 9 7"), ("48213977", "4 8-21 3 9 7-7")):
        source.PatientID, source.ImageComments = mrn, f"MRN {written} on file"
        data = to_bytes(source)
        _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
        assert written.encode() in output
        assert _verdict(data, output).problems == ("original PatientID value found",), written
    # Inside a longer number, with more separators between two digits than a grouping
    # writes, or a decimal, it is not the ID.
    source.PatientID = "MRN4821397"
    for written in ("14-8-2-1-3-9-7", "4-8-2-1-3-9-70", "4    8 2 1 3 9 7", "4.8.2.1.3.9.7"):
        source.ImageComments = f"ref {written}"
        data = to_bytes(source)
        _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
        assert written.encode() in output
        assert _verdict(data, output).ok, written


def test_a_long_number_with_letters_glued_on_is_the_id_and_one_cjk_character_no_name(
) -> None:
    source = make_instance()
    source.PatientID, source.ImageComments = "48213977", "MRN48213977 CT"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert _verdict(data, output).problems == ("original PatientID value found",)
    # A one-character family name (김) is in every kept Korean text: not searched alone
    # (an external probe: 김민준님 swept to 김[CTX]님, then the file was rejected).
    source = make_instance()
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName, source.ImageComments = "김^민준", "김 선생님 검사"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert "김".encode() in output and _verdict(data, output).ok
    source.ImageComments = "김민준님"  # the name run together is searched
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert _verdict(data, output).problems == ("original PatientName value found",)
    source.ImageComments = "민준 검사"  # the given name, two characters, is searched
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert _verdict(data, output).problems == ("original PatientName value found",)


def test_structure_problems_are_named() -> None:
    data = to_bytes(make_instance())
    ds, result, output = deidentify_bytes(data, privacy_first())
    wrong = {0x0020000D: result.study_uid, 0x0020000E: result.series_uid, 0x00080018: "2.25.1"}
    assert _verdict(data, output, uids=wrong).problems == (
        "SOPInstanceUID differs from the mapping",)
    ds.Modality = ""  # Type 1 in the CT Image IOD, present in the source
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert "Type 1 attribute Modality lost its value" in _verdict(data, buf.getvalue()).problems
    assert _verdict(data, b"no dicom here" * 20, uids={}).problems == (
        "not readable DICOM (not-dicom)",)


def test_the_gate_reads_the_file_as_written(tmp_path: Path) -> None:
    """An output whose pixel data the kernel copied (a FileRange of the source) is read
    back from the written file itself (a map of it), and judged the same as in memory."""
    import os

    source = to_bytes(make_instance())
    _, _, output = deidentify_bytes(source, privacy_first())
    (tmp_path / "src").write_bytes(b"xx" + output[-8:])  # the pixel bytes, at offset 2
    chunks = [output[:-8], FileRange(2, 8)]
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        write_atomic(tmp_path / "out.dcm", chunks, fd)
    finally:
        os.close(fd)
    gate = Gate()
    facts = gate.source_facts(source, len(source))
    ds = pydicom.dcmread(io.BytesIO(output))
    uids = {t: str(ds[t].value) for t in UID_TAGS}
    with written_view(str(tmp_path / "out.dcm"), chunks) as data:
        assert data[:] == output
        mapped = gate.check("out.dcm", data, facts, uids)
    with written_view(str(tmp_path / "out.dcm"), [output]) as data:
        assert data == output  # all in memory: no map
    assert mapped == _verdict(source, output) and mapped.ok


@pytest.mark.parametrize("name", ["ExplVR_BigEnd.dcm", "image_dfl.dcm", "MR_small.dcm"])
def test_files_of_other_tools_in_any_encoding_are_read(name: str) -> None:
    data = Path(pydicom.data.get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
    facts = Gate().source_facts(data, len(data))
    ds = pydicom.dcmread(io.BytesIO(data))
    family = str(ds.PatientName).split("^")[0].encode()
    assert family in facts.values if family else not facts.values  # "^^^^" is no name
    assert str(ds.SOPInstanceUID).encode() in facts.uids
    # The untouched input, checked as an output, leaks its own values.
    verdict = _verdict(data, data, uids={})
    assert "original SOPInstanceUID value found" in verdict.problems


def test_the_batch_records_a_verdict_per_published_output(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    leaky = make_instance()
    leaky.StudyDescription = "John Smith"
    (src / "a.dcm").write_bytes(to_bytes(leaky))
    clean = make_instance()
    clean.SOPInstanceUID = clean.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    clean.StudyDescription = "Chest, axial"
    (src / "b.dcm").write_bytes(to_bytes(clean))
    import pyarrow.parquet as pq

    summary = run_batch(iter_sources(src), tmp_path / "out",
                        _keeping("StudyDescription"), KEY, workers=1, progress=False,
                        gate=(), verdicts_path=tmp_path / "v.parquet")
    assert (summary.verified, summary.rejected) == (2, 1)
    rows = pq.read_table(tmp_path / "v.parquet").to_pylist()
    assert [r["ok"] for r in rows].count(False) == 1
    assert "gate: 2 checked, 1 rejected" in summary.line()


@pytest.fixture(scope="module")
def burned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A small corpus whose text-prone images have names and IDs drawn into the pixels."""
    import json

    from dicom_deid.synth import generate

    root = tmp_path_factory.mktemp("burned")
    generate(root, patients=4, seed=3, small=True, instances_per_series=2,
             burned_in_fraction=1.0, bad_inputs=False, duplicates=False)
    key = json.loads((root / "answer_key.json").read_text())
    return root / "dicom", {f["path"] for f in key["files"] if f["burned_in"]}


def _rejected(src: Path, out: Path, config: DeidConfig) -> set[str]:
    import pyarrow.parquet as pq

    summary = run_batch(iter_sources(src), out / "o", config, KEY, workers=2, progress=False,
                        gate=(), verdicts_path=out / "v.parquet",
                        mapping_path=out / "m.parquet", start_method="forkserver")
    assert summary.verified == summary.processed
    by_output = {m["output_path"]: m["source_path"]
                 for m in pq.read_table(out / "m.parquet").to_pylist()}
    return {by_output[v["output_path"]] for v in pq.read_table(out / "v.parquet").to_pylist()
            if not v["ok"]}


def test_burned_in_text_is_read_back_whatever_the_policy(
    burned: tuple[Path, set[str]], tmp_path: Path
) -> None:
    """A policy that does not clean pixels (an explicit, weaker choice) has every image
    at risk read by the gate's own OCR: exactly the images with text drawn in fail. The
    privacy-first policy's outputs are read back too (and the lines its OCR read and
    left judged again): every output passes, its text blanked."""
    src, with_text = burned
    assert len(with_text) >= 5
    assert _rejected(src, tmp_path / "no-pixels", _keeping("StudyDescription", sweep=True)
                     ) == with_text
    assert _rejected(src, tmp_path / "default", privacy_first()) == set()


def test_an_image_is_read_back_even_when_the_cleaner_says_it_left_nothing(
    burned: tuple[Path, set[str]]
) -> None:
    """Probe 14: an accession number drawn over mid-grey tissue was missed by the
    cleaner's read of the input; the gate judged only the lines that read left, so the
    output passed with its text. The output's own pixels are read back: a readout that
    claims nothing was left does not pass an image that still carries the text."""
    from dicom_deid.pixels.clean import OcrReadout

    src, with_text = burned
    source = (src / sorted(with_text)[0]).read_bytes()
    _, _, output = deidentify_bytes(source, _keeping("StudyDescription", sweep=True))
    gate = Gate()
    facts = gate.source_facts(source, len(source))
    ds = pydicom.dcmread(io.BytesIO(output))
    uids = {t: str(ds[t].value) for t in UID_TAGS if t in ds}
    verdict = gate.check("out.dcm", output, facts, uids, OcrReadout(read=True, kept=[]))
    assert any(p.startswith("burned-in text") for p in verdict.problems), verdict.problems


def test_kept_lines_are_judged_against_values_from_any_depth() -> None:
    gate = Gate()
    source = make_instance()
    source.Modality = "US"
    item = Dataset()
    item.PersonName = "Okonkwo^Adaeze"
    source.ContentSequence = Sequence([item])
    data = to_bytes(source)
    facts = gate.source_facts(data, len(data))
    assert gate.at_risk(facts)
    assert gate._burned_in(["GAIN 45 DR 60", "PROBE C5-1"], facts) == 0
    assert gate._burned_in(["OKONKWO A", "MRN 1234567", "14/05/2023"], facts) == 3


def test_a_big_endian_image_at_risk_is_read_back_from_its_own_pixels() -> None:
    """The gate checks a big-endian output through a re-encoded copy without pixel data;
    the read-back of an image at risk still reads the pixels as written."""
    source = make_instance()
    source.Modality = "US"
    source.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, source, implicit_vr=False, little_endian=False,
                     enforce_file_format=True)
    data = buf.getvalue()
    gate = Gate()
    facts = gate.source_facts(data, len(data))
    assert gate.at_risk(facts)
    verdict = gate.check("out.dcm", data, facts, {})
    assert not [p for p in verdict.problems if "pixel" in p or "burned-in" in p]
    assert "original PatientName value found" in verdict.problems  # the input, unchanged


def _walk_sources() -> tuple[ByteDeidentifier, list[bytes]]:
    """A byte path under the privacy-first policy, and ours and pydicom's test files (the
    wheel's own folder: get_testdata_files would also try to download the rest)."""
    from dicom_deid.deid.byte_path import ByteDeidentifier
    from dicom_deid.deid.deidentifier import Deidentifier

    files = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
    return ByteDeidentifier(Deidentifier(privacy_first(), KEY)), [
        to_bytes(make_instance())] + [p.read_bytes() for p in files
                                      if p.stat().st_size < 300_000]


def test_the_source_walk_the_byte_path_made_gives_the_same_facts() -> None:
    """In the worker the gate takes the source's top level from the byte path's own walk
    (production's fast path); it must read exactly what its own walk reads, from pydicom's
    test files as from ours, and ignore a walk of other bytes."""
    byte_path, sources = _walk_sources()
    gate, compared = Gate(), 0
    for data in sources:
        if byte_path.deidentify(data) is None or byte_path.walked is None:
            continue  # the Dataset path took it: there is no walk to share
        own = gate.source_facts(data, len(data))
        shared = gate.source_facts(data, len(data), byte_path.walked)
        assert shared == own
        compared += 1
    # Enough different files for the comparison to mean something (those whose compressed
    # frames carry COM or APPn segments, most JPEG 2000 ones, take the Dataset path).
    assert compared >= 15
    other = bytes(bytearray(sources[0]))  # equal bytes, another object: the walk is not taken
    assert other is not sources[0]
    byte_path.deidentify(sources[0])
    assert gate.source_facts(other, len(other), byte_path.walked) == gate.source_facts(other)


def test_the_byte_path_takes_the_gates_walk_of_the_source_and_writes_the_same_bytes() -> None:
    """The other direction (production's order: the gate reads the source before it is
    de-identified): the byte path takes the gate's walk of the top level instead of
    walking it again, and writes exactly what its own walk gives, on pydicom's test files
    as on ours; a walk of other bytes, or one the gate could not make in tag order, is
    not taken."""
    byte_path, sources = _walk_sources()
    gate, compared = Gate(), 0
    for data in sources:
        try:
            facts = gate.source_facts(data, len(data))
        except BadInput:
            continue
        own = byte_path.deidentify(data)
        if own is None or facts.walked is None:
            continue  # the Dataset path takes it, or the gate walked it out of order
        shared = byte_path.deidentify(data, None, facts.walked)
        assert shared is not None and byte_path.walked is not None
        assert byte_path.walked[2] is facts.walked[2]  # taken, not walked again
        assert b"".join(map(bytes, shared[0])) == b"".join(map(bytes, own[0]))
        assert shared[1] == own[1]
        compared += 1
    assert compared >= 15
    other = bytes(bytearray(sources[0]))
    facts = gate.source_facts(sources[0], len(sources[0]))
    byte_path.deidentify(other, None, facts.walked)
    assert byte_path.walked is not None and byte_path.walked[2] is not facts.walked[2]


@pytest.mark.parametrize("label", ["QA SMITH", "SMITHY", "SMITH\\SMITHY"])
def test_a_value_ending_where_the_next_tag_starts_is_searched_whole(label: str) -> None:
    """An external probe: a kept value of even length has no padding, so the byte after
    it is the next tag's group ("p" for 0x0070). "SMITH" + "p" is no longer word: the
    border of a match is its value's."""
    name = label.rsplit(" ", 1)[-1].split("\\")[-1]
    source = make_instance(name=f"{name}^John")
    source.ContentLabel = label  # (0070,0080), even length, followed by (0070,0081)
    source.ContentDescription = "presentation"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ContentLabel", "ContentDescription"))
    assert len(label) % 2 == 0 and label.encode() + b"p\x00" in output
    assert "original PatientName value found" in _verdict(data, output).problems
    source.ContentLabel = f"{name}SO"  # a longer word within its value is no match
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ContentLabel", "ContentDescription"))
    assert _verdict(data, output).ok


@pytest.mark.parametrize(("body_part", "leak"), [
    ("JKOWALSKI", True), ("KOWALSKI01", True), ("1957KOWALSKI", True), ("XYKOWALSKI", False),
    ("KOWALSKIEGO", False)])
def test_a_name_with_an_initial_or_digits_glued_on_is_a_leak(body_part: str,
                                                              leak: bool) -> None:
    """Probe 12: a code string the sweep leaves (a standard term's place) holding the
    patient's name with an initial in front or digits glued on is the name, as the sweep
    takes it; two letters in front, or letters after, make another word."""
    source = make_instance(name="KOWALSKI^JANINA")
    source.BodyPartExamined = body_part
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("BodyPartExamined"))
    assert body_part.encode() in output
    problems = _verdict(data, output).problems
    assert ("original PatientName value found" in problems) is leak, problems


def test_a_name_with_a_title_glued_on_is_searched_without_it() -> None:
    """An external probe: "DRWOBBLEFORD^HANS" (a PACS habit) and "Dr Wobbleford" kept."""
    source = make_instance(name="DRWOBBLEFORD^HANS")
    source.ImageComments = "ref Dr Wobbleford"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, _keeping("ImageComments"))
    assert "original PatientName value found" in _verdict(data, output).problems


def test_an_identifier_in_the_outputs_path_is_a_leak() -> None:
    """``--layout relative`` keeps the input's path: a folder named after the patient, or
    an original UID as a file name, would publish them."""
    source = make_instance()  # Smith^John
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert _verdict(data, output, name="SMITH_JOHN/ct/im1.dcm").problems == (
        "original PatientName value found in the file's path",)
    assert "original SOPInstanceUID value found in the file's path" in _verdict(
        data, output, name=f"ct/{source.SOPInstanceUID}.dcm").problems
    assert _verdict(data, output, name="case-0001/series_000123/im1.dcm").ok


@pytest.mark.parametrize("folder", ["JohnSmith", "smith-john", "Smith_J", "MRN-1234567",
                                    "MRN 1234567", "MRN1234567ct", "SMITHSON"])
def test_an_identifier_spelled_another_way_in_the_path_is_a_leak(folder: str) -> None:
    """An external probe: CamelCase, separated or suffixed spellings in a relative path
    were published. The path is judged as the sweep judges text ("SMITHSON" holds the
    name as "Smithy" or "Browning" would)."""
    data = to_bytes(make_instance())  # Smith^John, MRN1234567
    _, _, output = deidentify_bytes(data, privacy_first())
    assert not _verdict(data, output, name=f"{folder}/ct/im1.dcm").ok


@pytest.mark.parametrize("folder", ["Mueller_Juergen", "Muller_Jurgen", "MUELLER",
                                    "Schroeder_G"])
def test_a_name_with_umlauts_written_out_in_the_path_is_a_leak(folder: str) -> None:
    """Probe 13: "Mueller_Juergen/" was released for MÜLLER^JÜRGEN (the path check had
    the name without diacritics, not with umlauts written out, as the sweep has it)."""
    source = make_instance(name="MÜLLER^JÜRGEN" if "M" in folder[:1] else "SCHRÖDER^GÜNTHER")
    source.SpecificCharacterSet = "ISO_IR 192"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, privacy_first())
    assert not _verdict(data, output, name=f"{folder}/IMG1.dcm").ok
    assert _verdict(data, output, name="case-0001/IMG1.dcm").ok


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_a_value_written_as_utf16_in_a_byte_value_is_a_leak(codec: str) -> None:
    """An external probe: a name and an MRN in a kept ICC profile's UTF-16 description,
    which a search of the output's bytes as 8-bit text never sees. Read as the text it
    is, whole words only: "Annotation" is not the given name "Ann"."""
    source = make_instance(name="Kowalczyk^Ann")
    source.PatientID = "MRN4471902"
    config = _keeping("ICCProfile")
    for text, problems in (
            ("Profile of Kowalczyk", ("original PatientName value found",)),
            ("calibrated for 4471902", ("original PatientID value found",)),
            ("Annotation display, Kowalczykowa Street", ()),
            ("sRGB IEC61966-2.1", ())):
        source.ICCProfile = b"acspAPPL\x00\x00desc" + text.encode(codec) + b"\x00\x00"
        data = to_bytes(source)
        _, _, output = deidentify_bytes(data, config)
        assert text.encode(codec) in output
        assert _verdict(data, output).problems == problems, text



@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(("name", "planted", "swept"), [
    ("Łukasiewicz^Zdzisław", "Łukasiewicz", True), ("Иванова^Анна", "Иванова", True),
    ("王^小東", "王小東", True), ("김^민준", "김민준", True)])
def test_a_name_past_latin1_written_as_utf16_in_a_byte_value(
        codec: str, name: str, planted: str, swept: bool) -> None:
    """The same in other letters: Polish and Cyrillic runs, and Chinese and Korean read
    from the value as UTF-16 whole, are swept (overwritten) and the output passes;
    without the sweep each fails (Chinese and Korean sought as their UTF-16 bytes)."""
    source = make_instance(name=name)
    source.SpecificCharacterSet = "ISO_IR 192"
    written = f"for {planted}, display 2".encode(codec)
    source.ICCProfile = b"acspAPPL\x00\x00desc" + written + b"\x00\x00"
    data = to_bytes(source)
    for sweep in (True, False):
        _, _, output = deidentify_bytes(data, _keeping("ICCProfile", sweep=sweep))
        assert (written not in output) == (sweep and swept)
        leak = ("original PatientName value found",)
        assert _verdict(data, output).problems == (() if sweep and swept else leak), sweep

def test_bytes_hidden_in_an_rle_frame_fail_the_output() -> None:
    """An output whose RLE frame carries bytes no decoder reads (past its last segment)
    fails: the value search does not look inside pixel data."""
    from pydicom.encaps import encapsulate, generate_frames

    data = (Path(pydicom.data.__file__).parent / "test_files" / "MR_small_RLE.dcm").read_bytes()
    _, _, output = deidentify_bytes(data)
    assert _verdict(data, output).ok
    ds = pydicom.dcmread(io.BytesIO(output))
    frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frames[0] + b"MORWENNA PX4821397 "], has_bot=True)
    hidden = to_bytes(ds)
    assert _verdict(data, hidden).problems == (
        "pixel data carries data outside an RLE frame's segments in frame 1",)
