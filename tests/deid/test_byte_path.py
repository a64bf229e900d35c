"""The byte path must write exactly what the Dataset path writes, or decline.

The Dataset path (parse_instance -> Deidentifier.deidentify -> encode_instance_chunks) is
the reference every privacy test checks; the byte path is only an optimisation of it. So
for every file of the synthetic corpus (all modalities, raw datasets without file meta,
implicit VR, Latin-1 and Japanese names, private blocks, overlays, nested sequences, bad
inputs) and many configurations, each output byte and each mapping field is compared.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian

import instances
from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier, InstanceResult, dataset_encodings
from dicom_deid.dicom.files import FileRange, open_input, write_atomic
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.walker import elements, locate_dataset
from dicom_deid.dicom.writer import encode_instance_chunks
from dicom_deid.errors import BadInput
from dicom_deid.synth import generate
from instances import KEY, deidentify_bytes, make_instance, to_bytes


@pytest.fixture(scope="module")
def corpus_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bytes-corpus")
    generate(root, patients=4, seed=23, small=True, bad_inputs=True)
    return [p for p in sorted((root / "dicom").rglob("*")) if p.is_file()]


@pytest.fixture(scope="module")
def corpus(corpus_paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in corpus_paths]


def _reference(deid: Deidentifier, data: bytes) -> tuple[bytes, InstanceResult] | None:
    """What the Dataset path writes for ``data`` (None when it rejects the input)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Failed to decode byte string")
        try:
            inst = parse_instance(data)
            encodings = dataset_encodings(inst.dataset)
            result = deid.deidentify(inst.dataset)
            chunks = encode_instance_chunks(inst.dataset, inst.transfer_syntax, encodings)
        except (BadInput, UserWarning):
            return None
    return b"".join(chunks), result


def _fast(fast: ByteDeidentifier, data: bytes) -> tuple[bytes, InstanceResult] | None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Failed to decode byte string")
        found = fast.deidentify(data)
    if found is None:
        return None
    chunks, result = found
    return b"".join(bytes(c) for c in chunks), result


CONFIGS: dict[str, Any] = {
    "basic": DeidConfig(),
    "basic, org prefix": DeidConfig(id_prefix="ORG1"),
    **{
        f"option {name}": config_from_options("basic", [name])
        for name in ("RetainSafePrivate", "RetainUIDs", "RetainDeviceIdentity",
                     "RetainInstitutionIdentity", "RetainPatientCharacteristics",
                     "RetainLongitudinalFullDates", "RetainLongitudinalModifiedDates",
                     "CleanDescriptors", "CleanStructuredContent")
    },
    "all options but Clean Graphics": config_from_options("basic", [
        "RetainSafePrivate", "RetainUIDs", "RetainDeviceIdentity", "RetainInstitutionIdentity",
        "RetainPatientCharacteristics", "RetainLongitudinalModifiedDates", "CleanDescriptors",
        "CleanStructuredContent"]),
    "google cleanTextTag and cleanDescriptors": load_config({
        "actions": [{"queries": ["StudyDescription", "PatientComments"], "cleanTextTag": {}}],
        "options": {"cleanDescriptors": {}},
    }),
    "deidentify tag contents": load_config({"profileType": "DEIDENTIFY_TAG_CONTENTS"}),
    "google actions": load_config({
        "profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
        "actions": [
            {"queries": ["PatientSex", "StudyDescription"], "keepTag": {}},
            {"queries": ["ReferencedImageSequence", "RequestAttributesSequence",
                         "ContentSequence"], "keepTag": {}},
            {"queries": ["InstitutionName"], "resetTag": {}},
            {"queries": ["SeriesDescription"], "removeTag": {}},
            {"queries": ["Manufacturer"], "deleteTag": {}},
            {"queries": ["FrameOfReferenceUID"], "regenUidTag": {}},
        ],
        "options": {"primaryIds": "KEEP"},
    }),
    "google primaryIds REGEN": load_config({"options": {"primaryIds": "REGEN"}}),
    "keep all, regen UIDs": load_config({
        "profileType": "KEEP_ALL_PROFILE",
        "actions": [{"queries": ["UI"], "regenUidTag": {}},
                    {"queries": ["PatientName", "PatientID"], "removeTag": {}}],
    }),
    "minimal keep list": load_config({"profileType": "MINIMAL_KEEP_LIST_PROFILE"}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_byte_path_writes_what_the_dataset_path_writes(corpus: list[bytes], name: str) -> None:
    config = CONFIGS[name]
    fast = ByteDeidentifier(Deidentifier(config, KEY))
    reference = Deidentifier(config, KEY)
    taken = good = 0
    for data in corpus:
        expected = _reference(reference, data)
        got = _fast(fast, data)
        good += expected is not None
        if got is None:
            continue
        taken += 1
        assert expected is not None, "the byte path wrote an input the Dataset path rejects"
        assert got[0] == expected[0]
        assert got[1] == expected[1]
    # Declining everything would pass the loop above: most files must take the byte path.
    assert good > 50
    assert taken >= 0.9 * good, f"{taken} of {good} good files took the byte path"


def test_files_whose_pixels_may_change_take_the_dataset_path() -> None:
    """Pixels are decoded and re-encoded through pydicom: a file whose overlays Clean
    Graphics reads, or whose pixels OCR reads, is declined; the same CT without overlays
    is not at risk under ocrScope AUTO and stays on the byte path."""
    graphics = ByteDeidentifier(Deidentifier(config_from_options("basic", ["CleanGraphics"]),
                                             KEY))
    assert graphics.deidentify(_encoded(make_instance())) is None  # it has an overlay
    image = ByteDeidentifier(Deidentifier(load_config(
        {"options": {"cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT"}}}), KEY))
    ct = make_instance()
    for tag in [t for t in ct.keys() if t.group == 0x6000]:
        del ct[tag]
    assert image.deidentify(_encoded(ct)) is not None
    ct.Modality = "US"
    assert image.deidentify(_encoded(ct)) is None
    ct.Modality, ct.BurnedInAnnotation = "CT", "YES"
    assert image.deidentify(_encoded(ct)) is None


def _encoded(ds: pydicom.Dataset, **kw: Any) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True, **kw)
    return buf.getvalue()


def _elements_from(data: bytes, start: int) -> Iterator[tuple[int, int, int]]:
    """(offset, tag, end) of top-level explicit-VR little-endian elements (test helper)."""
    pos = start
    while pos < len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            end = pos + 12 + length
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            end = pos + 8 + length
        yield pos, group << 16 | elem, end
        pos = end


def test_unusual_inputs_are_declined_but_still_written() -> None:
    deid = Deidentifier(DeidConfig(), KEY)
    fast = ByteDeidentifier(deid)
    ds = make_instance()
    for elem in list(ds):
        if elem.VR == "SQ":
            del ds[elem.tag]  # defined-length top level only, for the swap below
    plain = _encoded(ds)
    assert _fast(fast, plain) is not None

    # Two elements swapped: out of order. pydicom sorts on write; the byte path declines.
    meta_end = 132 + 12 + struct.unpack_from("<I", plain, 140)[0]
    elems = list(_elements_from(plain, meta_end))
    (a0, _, a1), (b0, _, b1) = elems[3], elems[4]
    swapped = plain[:a0] + plain[b0:b1] + plain[a0:a1] + plain[b1:]
    assert _fast(fast, swapped) is None
    assert _reference(deid, swapped) is not None

    # Big endian goes through pydicom's reader and writer.
    big = make_instance()
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    data = _encoded(big, little_endian=False, implicit_vr=False)
    assert _fast(fast, data) is None
    assert _reference(deid, data) is not None

    # Truncated, zero-byte, not DICOM: declined here, reported by the Dataset path.
    for bad in (plain[:-7], b"", b"hello, not a DICOM file" * 10):
        assert _fast(fast, bad) is None
        assert _reference(deid, bad) is None


def test_standard_element_written_as_un_is_declined() -> None:
    """A standard attribute with VR UN is re-read by pydicom with its dictionary VR."""
    deid = Deidentifier(DeidConfig(), KEY)
    fast = ByteDeidentifier(deid)
    data = _encoded(make_instance())
    i = data.index(b"\x10\x00\x10\x00PN")  # PatientName
    length = struct.unpack_from("<H", data, i + 6)[0]
    un = data[:i] + b"\x10\x00\x10\x00UN\x00\x00" + struct.pack("<I", length) + data[i + 8:]
    meta_len = struct.unpack_from("<I", un, 140)[0]
    assert un[132 + 12 + meta_len:] != data[132 + 12 + meta_len:]
    assert _fast(fast, un) is None
    expected = _reference(deid, un)
    assert expected is not None and b"Smith" not in expected[0]


def test_corpus_has_what_the_byte_path_must_mirror(corpus: list[bytes]) -> None:
    """Guard on the comparison above: the corpus still holds the hard cases."""
    charsets: set[str] = set()
    raw_datasets = implicit = private = 0
    for data in corpus:
        raw_datasets += len(data) > 132 and data[128:132] != b"DICM"
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
            charsets.add(str(ds.get("SpecificCharacterSet", "")))
        except Exception:
            continue  # the bad inputs of the corpus
        implicit += bool(ds.original_encoding[0])
        private += any(e.tag.is_private for e in ds)
    assert raw_datasets and implicit and private
    assert any("IR 87" in c for c in charsets) and any("IR 100" in c for c in charsets)


PIXEL_CONFIGS: dict[str, Any] = {
    "sensitive text, AUTO scope": load_config({"dicomTagConfig": {"options": {
        "cleanDescriptors": {},
        "cleanImage": {"textRedactionMode": "REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS"}}}}),
    "all text, AUTO scope": load_config({"dicomTagConfig": {"options": {
        "cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT"}}}}),
}


@pytest.mark.parametrize("name", list(PIXEL_CONFIGS))
def test_files_without_pixel_work_stay_on_the_byte_path(corpus: list[bytes], name: str) -> None:
    """With pixel cleaning configured, a file whose pixels the configuration leaves alone
    (not at risk under ocrScope AUTO, no overlay to clean, no region rule) is written by
    the byte path, byte for byte as the Dataset path writes it; a file at risk is not."""
    config = PIXEL_CONFIGS[name]
    fast = ByteDeidentifier(Deidentifier(config, KEY))
    reference = Deidentifier(config, KEY)
    taken = at_risk = 0
    for data in corpus:
        expected = _reference(reference, data)
        got = _fast(fast, data)
        if expected is None:
            continue
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        risky = reference.pixels is not None and reference.pixels.wants_ocr(
            _with_pixels_flag(ds, data))
        at_risk += risky
        if got is None:
            continue
        assert not risky, "the byte path wrote a file whose pixels are to be read by OCR"
        taken += 1
        assert got == expected
    assert at_risk >= 5 and taken >= 50, (at_risk, taken)


def _with_pixels_flag(ds: pydicom.Dataset, data: bytes) -> pydicom.Dataset:
    """``ds`` read without its pixels, with an empty PixelData standing for them."""
    if b"\xe0\x7f\x10\x00" in data:
        ds.add_new(0x7FE00010, "OB", b"")
    return ds


@pytest.mark.parametrize("name", ["basic", "option CleanDescriptors", "google actions",
                                  "minimal keep list"])
@pytest.mark.parametrize("quantile", [0.6, 0.9])
def test_head_path_writes_what_the_whole_file_path_writes(
    corpus_paths: list[Path], tmp_path: Path, name: str, quantile: float,
) -> None:
    """Only the head read, the kept pixel data copied by the kernel: same bytes, same
    mapping; and it is taken, not declined, for most files that have a tail. (The head
    sizes are quantiles of this corpus' header sizes: they cut some headers, which must
    be declined, and leave others whole.)"""
    head_bytes = _header_size_quantile(corpus_paths, quantile)
    fast = ByteDeidentifier(Deidentifier(CONFIGS[name], KEY))
    out = tmp_path / "out.dcm"
    with_tail = ranged = 0
    for path in corpus_paths:
        source = open_input(path, head_bytes=head_bytes, whole_up_to=head_bytes)
        try:
            if len(source.head) == source.size:
                continue
            with_tail += 1
            data = source.whole()
            whole = _fast(fast, data)
            part = fast.deidentify(source.head, source.size)
            if part is None:
                if whole is None:
                    continue
                _, implicit, pos, _meta, _preamble = locate_dataset(data)
                top = elements(data, pos, len(data), implicit, ordered=True)
                if top[-1][0] == 0x7FE00010:  # pixel data last
                    # declined only because the head cuts a header, or pixels are
                    # encapsulated (undefined length), or something follows them
                    value_start, before_end = top[-1][3], top[-2][4]
                    cut = value_start > head_bytes or before_end > head_bytes
                    assert cut or top[-1][5] or top[-1][4] < len(data), path.name
                continue
            assert whole is not None, "the head path wrote what the byte path declines"
            write_atomic(out, part[0], source.fd)
            assert out.read_bytes() == whole[0]
            assert part[1] == whole[1]
            ranged += any(isinstance(c, FileRange) for c in part[0])
        finally:
            os.close(source.fd)
    assert with_tail >= 90
    assert ranged >= 25, f"{ranged} of {with_tail} files took the head path"


def _header_size_quantile(paths: list[Path], quantile: float) -> int:
    """The byte offset where pixel data's value starts, at ``quantile`` over the corpus."""
    starts = []
    for path in paths:
        data = path.read_bytes()
        try:
            _, implicit, pos, _meta, _preamble = locate_dataset(data)
            top = elements(data, pos, len(data), implicit, ordered=True)
        except Exception:
            continue  # the bad inputs of the corpus
        if top and top[-1][0] == 0x7FE00010:
            starts.append(top[-1][3])
    starts.sort()
    return starts[int(quantile * (len(starts) - 1))]


def test_a_remembered_layout_does_not_carry_private_decisions_across_creators() -> None:
    """Two files with the same tags and VRs but another creator of block (00E1,10xx): what
    one file's creator allowed must not be applied to the other's."""
    from instances import to_bytes

    config = config_from_options("basic", ["RetainSafePrivate"])
    listed = make_instance()  # (00E1,0010) ELSCINT1: (00E1,1021) is on the safe list
    other = make_instance()
    other[0x00E10010].value = "OTHERVENDOR"
    reference = Deidentifier(config, KEY)
    for order in ((listed, other), (other, listed)):
        fast = ByteDeidentifier(Deidentifier(config, KEY))
        layouts = []
        for ds in order:
            data = to_bytes(ds)
            got, expected = _fast(fast, data), _reference(reference, data)
            assert got is not None and expected is not None
            assert got == expected
            out = pydicom.dcmread(io.BytesIO(got[0]))
            kept = 0x00E11021 in out
            assert kept == (ds is listed), "a private decision leaked across creators"
            layouts.append(dict(fast._layouts))
        assert layouts[0] == layouts[1]  # the second file reused the first one's layouts


def test_remembered_uid_and_pseudonym_elements_match_the_dataset_path() -> None:
    """Identifiers written from the memo equal the first writing, empty ones stay empty
    (written once), and every file still equals the Dataset path's output."""
    from instances import ROOT, to_bytes

    empty = make_instance()
    empty.PatientID = ""
    empty.AccessionNumber = ""
    again = make_instance()
    again.SOPInstanceUID = again.file_meta.MediaStorageSOPInstanceUID = ROOT + "3.9"
    fast = ByteDeidentifier(Deidentifier(DeidConfig(), KEY))
    reference = Deidentifier(DeidConfig(), KEY)
    for ds in (empty, make_instance(), again, empty):
        data = to_bytes(ds)
        got = _fast(fast, data)
        assert got is not None
        assert got == _reference(reference, data)
        out = pydicom.dcmread(io.BytesIO(got[0]))
        assert [e.tag for e in out].count(0x00100020) == 1
        if ds is empty:
            assert out.PatientID == "" and out.AccessionNumber == ""
    assert fast._outputs  # the memo was used


def test_a_level_with_no_identifying_value_to_sweep_stays_on_the_byte_path() -> None:
    """KEEP_ALL with the residual sweep: nothing identifying is removed, so the sweep's
    context has no source at the top level; the byte path used to fail on the empty
    list and hand every such file to the Dataset path."""
    from dicom_deid.config.model import ProfileType

    taken = instances.BYTE_PATH_RUNS["taken"]
    deidentify_bytes(to_bytes(make_instance()), DeidConfig(profile=ProfileType.KEEP_ALL))
    assert instances.BYTE_PATH_RUNS["taken"] == taken + 1
