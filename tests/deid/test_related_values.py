"""A file that does not carry its patient's name is still swept for it (deid/related.py).

An external probe released "CT CHEST pt ZYLSTRA, MORWENNA" from a file of the study
whose own PatientName was empty, and an operator named only in the study's other file:
the sweep looked for the instance's own values only. The batch now reads every input's
identifying values first and sweeps each instance for its patient's and study's too.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pydicom.data

from dicom_deid.config.model import privacy_first
from dicom_deid.deid.batch import Source, run_batch
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.deid.related import gather
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.writer import encode_instance
from instances import KEY, ROOT, make_instance, to_bytes

PLANTED = ("ZYLSTRA", "MORWENNA", "TAMSIN", "PENHALIGON")


def _study(folder: Path) -> list[Source]:
    """Two files of one patient and study: the first names the patient and the operator,
    the second names neither, yet writes both into descriptions the profile keeps."""
    folder.mkdir(parents=True, exist_ok=True)
    first = make_instance(name="ZYLSTRA^MORWENNA")
    first.PatientID = "MRN7734521"
    first.OperatorsName = "PENHALIGON^TAMSIN"
    second = make_instance(name="")
    second.PatientID = "MRN7734521"
    del second.OperatorsName
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}3.9"
    second.StudyDescription = "CT CHEST pt ZYLSTRA, MORWENNA"
    second.SeriesDescription = "recon for Tamsin Penhaligon"
    sources = []
    for name, ds in (("a.dcm", first), ("b.dcm", second)):
        (folder / name).write_bytes(to_bytes(ds))
        sources.append(Source(str(folder / name), name))
    return sources


def _leaks(data: bytes) -> list[str]:
    upper = data.upper()
    return [p for p in PLANTED if p.encode() in upper]


def test_a_file_is_swept_for_its_relatives_names(tmp_path: Path) -> None:
    sources = _study(tmp_path / "in")
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        summary = run_batch(sources, out, privacy_first(), KEY, workers=workers,
                            progress=False, gate=())
        assert summary.processed == 2 and summary.rejected == 0
        files = sorted(out.rglob("*.dcm"))
        assert len(files) == 2
        for f in files:
            assert _leaks(f.read_bytes()) == [], f
        outputs[workers] = {f.relative_to(out): f.read_bytes() for f in files}
    assert outputs[1] == outputs[2]  # the same groups whatever the workers
    swept = [pydicom.dcmread(f) for f in (tmp_path / "out1").rglob("*.dcm")
             if "StudyDescription" in pydicom.dcmread(f)]
    assert any("[CTX]" in str(ds.SeriesDescription) for ds in swept)


def test_both_paths_sweep_the_relatives_values_alike(tmp_path: Path) -> None:
    sources = _study(tmp_path / "in")
    related = gather(sources)
    data = Path(sources[1].path).read_bytes()
    deid = Deidentifier(privacy_first(), KEY)
    deid.related = related
    fast_deid = Deidentifier(privacy_first(), KEY)
    fast_deid.related = related
    fast = ByteDeidentifier(fast_deid).deidentify(data)
    assert fast is not None, "the byte path takes this file"
    inst = parse_instance(data)
    from dicom_deid.deid.deidentifier import dataset_encodings

    encodings = dataset_encodings(inst.dataset)
    deid.deidentify(inst.dataset)
    slow = encode_instance(inst.dataset, inst.transfer_syntax, encodings)
    assert b"".join(bytes(c) for c in fast[0]) == slow
    assert _leaks(slow) == []
    out = pydicom.dcmread(io.BytesIO(slow))
    assert "ZYLSTRA" not in str(out.StudyDescription).upper()


def test_without_relatives_the_file_alone_would_leak(tmp_path: Path) -> None:
    """What the mechanism adds: the same file de-identified on its own keeps the names
    (its descriptions carry no layout the detectors know)."""
    sources = _study(tmp_path / "in")
    out = tmp_path / "alone"
    run_batch(sources[1:], out, privacy_first(), KEY, workers=1, progress=False)
    (only,) = out.rglob("*.dcm")
    assert _leaks(only.read_bytes())


def test_values_inside_sequences_are_swept_as_the_gate_searches_them(tmp_path: Path) -> None:
    """pydicom's rtplan.dcm names its institution "Here" inside a sequence and writes
    "Manufacturer name here" at the top: the gate reads values at any depth, so the sweep
    must too, or the gate rejects what the sweep left (a whole pipeline batch blocked)."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "rtplan.dcm")
    ds.InstitutionName = "Quillan Harbour Clinic"  # the top level's own, another value
    nested = [e.value for e in ds.iterall() if e.keyword == "InstitutionName"]
    assert "Here" in nested
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "rt.dcm").write_bytes(to_bytes(ds))
    out = tmp_path / "out"
    summary = run_batch([Source(str(folder / "rt.dcm"), "rt.dcm")], out, privacy_first(), KEY,
                        workers=1, progress=False, gate=(), drop_rejected=True)
    assert summary.rejected == 0 and summary.processed == 1
    assert summary.byte_path == 1  # production's fast path took it
    (written,) = out.rglob("*.dcm")
    assert pydicom.dcmread(written).Manufacturer == "Manufacturer name [CTX]"


def test_relatives_names_are_read_in_their_character_set() -> None:
    """pydicom's chrH31.dcm writes its patient in ISO 2022 IR 87, whose escape sequences
    are ASCII bytes: the names must be decoded as the de-identifier decodes its own (the
    first gather read them as ASCII and searched for mojibake)."""
    path = Path(pydicom.data.__file__).parent / "charset_files" / "chrH31.dcm"
    groups = gather([Source(str(path), path.name)])
    names = {value for values in groups.values() for tag, _, value in values
             if tag == 0x00100010}
    assert names == {"Yamada^Tarou=山田^太郎=やまだ^たろう"}
    assert "pid:|H31EXAMPLE" in groups
