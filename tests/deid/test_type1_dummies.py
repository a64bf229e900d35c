"""Where the IOD requires an attribute the profile removes, its value goes and a dummy stays.

PS3.15 gives a plain ``X`` to attributes some IODs require (Presentation Creation Date and
Time are Type 1 in every Presentation State): removed, they made every Grayscale Softcopy
Presentation State invalid and the verification gate rejected it. Now the value goes and
the attribute stays, as the compound codes resolve (a fixed dummy for Type 1, empty for
Type 2), in both write paths. A dummied Encapsulated Document becomes a minimal empty
document of its MIME type, its length following it.

The inputs are written here with pydicom from the standard's SOP classes (pydicom ships no
presentation state or encapsulated document), or are pydicom's own RT Structure Set.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, privacy_first
from dicom_deid.config.plan import document_dummy
from dicom_deid.deid.batch import iter_sources, run_batch
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.deid.gate import Gate
from instances import KEY, deidentify_bytes, make_instance, to_bytes

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.99.7."
DUMMIES = Path(__file__).resolve().parents[2] / "plugins/dicom_deid/config/data/dummies"


def _item(**kw: object) -> Dataset:
    ds = Dataset()
    for keyword, value in kw.items():
        setattr(ds, keyword, value)
    return ds


def _base(sop_class: str, sop_instance: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = ROOT + "1"
    ds.SeriesInstanceUID = ROOT + "2"
    ds.StudyDate = "20240312"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACX771204"
    ds.ReferringPhysicianName = "Trembath^Osgood"
    ds.StudyID = "ST5521"
    ds.PatientName = "Zarkovsky^Belinda^Q"
    ds.PatientID = "48213977"
    ds.PatientBirthDate = "19630417"
    ds.PatientSex = "F"
    ds.Manufacturer = "ACME"
    ds.SeriesNumber = 7
    ds.InstanceNumber = 1
    return ds


def gsps() -> Dataset:
    """A Grayscale Softcopy Presentation State with every Type 1 attribute of its modules
    (dciodvfy finds no error in it), modelled on a dcmtk-written one."""
    ds = _base(GSPS, ROOT + "3")
    ds.Modality = "PR"
    ds.Laterality = ""
    ds.TimezoneOffsetFromUTC = "+0130"  # Type 3 in this IOD (SOP Common): removed
    ds.ContentLabel = "LABEL1"
    ds.ContentDescription = "annotation"
    ds.PresentationCreationDate = "20240313"
    ds.PresentationCreationTime = "121314.5"
    ds.ContentCreatorName = "Pemberthy^Lucius"
    ds.ReferencedSeriesSequence = Sequence([_item(
        SeriesInstanceUID=ROOT + "4", ReferencedImageSequence=Sequence([_item(
            ReferencedSOPClassUID=CT, ReferencedSOPInstanceUID=ROOT + "5")]))])
    ds.DisplayedAreaSelectionSequence = Sequence([_item(
        DisplayedAreaTopLeftHandCorner=[1, 1], DisplayedAreaBottomRightHandCorner=[512, 512],
        PresentationSizeMode="SCALE TO FIT", PresentationPixelAspectRatio=[1, 1])])
    ds.GraphicAnnotationSequence = Sequence([_item(
        GraphicLayer="L1", TextObjectSequence=Sequence([_item(
            BoundingBoxAnnotationUnits="PIXEL", UnformattedTextValue="lesion 1",
            BoundingBoxTopLeftHandCorner=[1.0, 1.0],
            BoundingBoxBottomRightHandCorner=[10.0, 10.0],
            BoundingBoxTextHorizontalJustification="LEFT")]))])
    ds.GraphicLayerSequence = Sequence([_item(GraphicLayer="L1", GraphicLayerOrder=1)])
    ds.SoftcopyVOILUTSequence = Sequence([_item(WindowCenter="40", WindowWidth="400")])
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def both_paths(data: bytes, config: DeidConfig) -> tuple[Dataset, bytes]:
    """The output of the byte path, which must take the file, checked against the Dataset
    path's (deidentify_bytes compares them byte for byte)."""
    fast = ByteDeidentifier(Deidentifier(config, KEY)).deidentify(data)
    assert fast is not None, "the byte path declined"
    out, _, written = deidentify_bytes(data, config)
    assert b"".join(bytes(c) for c in fast[0]) == written
    return out, written


# -- Type 1 attributes the profile removes ------------------------------------------------


@pytest.mark.parametrize("config", [DeidConfig(), privacy_first()], ids=["basic", "default"])
def test_presentation_creation_date_and_time_stay_as_fixed_dummies(config: DeidConfig) -> None:
    data = to_bytes(gsps())
    out, written = both_paths(data, config)
    assert out.PresentationCreationDate == "19000101"
    assert out.PresentationCreationTime == "000000"
    assert b"20240313" not in written and b"121314" not in written
    assert "TimezoneOffsetFromUTC" not in out  # an X attribute where it is Type 3: removed
    assert "ContentCreatorName" in out and not out.ContentCreatorName  # Z, Type 2


def test_a_presentation_state_passes_the_gate_and_dciodvfy(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    data = to_bytes(gsps())
    (src / "pr.dcm").write_bytes(data)
    summary = run_batch(iter_sources(src), tmp_path / "out", privacy_first(), KEY, workers=1,
                        progress=False, gate=(), drop_rejected=True)
    assert (summary.processed, summary.verified, summary.rejected) == (1, 1, 0)
    assert summary.byte_path == 1
    (output,) = (tmp_path / "out").rglob("*.dcm")

    found = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(found).exists(), "dciodvfy missing: install the dev extra"

    def errors(path: Path) -> list[str]:
        proc = subprocess.run([found, "-new", str(path)], capture_output=True, text=True,
                              errors="replace", timeout=60, check=False)
        return [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith("Error")]

    assert errors(src / "pr.dcm") == []
    assert errors(output) == []


def test_the_gate_rejected_what_the_profile_used_to_write() -> None:
    """The verification gate's own reading: without the dates the output is unusable."""
    data = to_bytes(gsps())
    _, written = both_paths(data, DeidConfig())
    gate = Gate()
    facts = gate.source_facts(data, len(data))
    out = pydicom.dcmread(io.BytesIO(written))
    uids = {t: str(out[t].value) for t in (0x0020000D, 0x0020000E, 0x00080018)}
    assert gate.check("out.dcm", written, facts, uids).ok
    del out.PresentationCreationDate
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    verdict = gate.check("out.dcm", buf.getvalue(), facts, uids)
    assert "Type 1 attribute PresentationCreationDate lost its value" in verdict.problems


def test_where_the_iod_does_not_require_it_the_attribute_is_still_removed() -> None:
    ds = make_instance()  # a CT: no Presentation State Identification module
    ds.PresentationCreationDate = "20240313"
    ds.TimezoneOffsetFromUTC = "+0130"
    out, written = both_paths(to_bytes(ds), DeidConfig())
    assert "PresentationCreationDate" not in out and "TimezoneOffsetFromUTC" not in out
    assert b"20240313" not in written


def test_the_method_record_is_what_it_was() -> None:
    method = ("PatientIdentityRemoved", "DeidentificationMethod",
              "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified")
    pr, _ = both_paths(to_bytes(gsps()), privacy_first())
    ct, _ = both_paths(to_bytes(make_instance()), privacy_first())
    for keyword in method:
        assert pr[keyword] == ct[keyword], keyword


def _rtstruct() -> Dataset:
    """pydicom's own RT Structure Set (written without file meta), given one."""
    path = Path(pydicom.data.__file__).parent / "test_files" / "rtstruct.dcm"
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_inside_a_sequence_the_place_decides() -> None:
    """pydicom's own RT Structure Set: Series Description is Type 1 in the items of Source
    Series Information Sequence and Type 3 at the top level."""
    ds = _rtstruct()
    ds.SeriesDescription = "Contours for Zarkovsky"
    ds.SourceSeriesInformationSequence = Sequence([_item(
        Modality="CT", SeriesInstanceUID=ROOT + "9", SeriesNumber=2,
        SeriesDescription="Planning CT of Zarkovsky")])
    out, written = both_paths(to_bytes(ds), DeidConfig())
    assert "SeriesDescription" not in out
    assert out.SourceSeriesInformationSequence[0].SeriesDescription == "ANONYMIZED"
    assert b"Zarkovsky" not in written


@pytest.mark.parametrize("config", [DeidConfig(), privacy_first()], ids=["basic", "default"])
def test_a_kept_interpreter_item_holds_no_identity(config: DeidConfig) -> None:
    """ROI Interpreter Sequence is Type 1C in an RT Structure Set, so its item stays; the
    interpreter's name is emptied (Z) and the code that identifies them (Person
    Identification Code Sequence, D) keeps no value or meaning of theirs: the gate found
    'original ROIInterpreter value found' in the meaning before."""
    ds = _rtstruct()
    code = _item(CodeValue="ZB123456", CodingSchemeDesignator="99HOSP",
                 CodeMeaning="Belinda Zarkovsky, dosimetrist")
    person = _item(ROIInterpreter="Zarkovsky^Belinda",
                   PersonIdentificationCodeSequence=Sequence([code]))
    ds.RTROIObservationsSequence[0].ROIInterpreterSequence = Sequence([person])
    data = to_bytes(ds)
    out, written = both_paths(data, config)
    kept = out.RTROIObservationsSequence[0].ROIInterpreterSequence[0]
    assert kept.ROIInterpreter == ""
    assert kept.PersonIdentificationCodeSequence[0].CodeMeaning == "ANONYMIZED"
    assert b"Zarkovsky" not in written and b"ZB123456" not in written
    gate = Gate()
    assert gate.check("rt.dcm", written, gate.source_facts(data, len(data)),
                      {0x0020000D: out.StudyInstanceUID, 0x0020000E: out.SeriesInstanceUID,
                       0x00080018: out.SOPInstanceUID}).ok


def test_google_delete_and_remove_of_a_required_attribute_leave_a_dummy_keep_keeps() -> None:
    def config(kind: str) -> DeidConfig:
        return load_config({"dicomTagConfig": {"profileType": "KEEP_ALL_PROFILE", "actions": [
            {"queries": ["PresentationCreationDate", "TimezoneOffsetFromUTC"], kind: {}}]},
            "dicomDeid": {"residualSweep": False}})

    data = to_bytes(gsps())
    for kind in ("deleteTag", "removeTag"):
        out, _ = both_paths(data, config(kind))
        assert out.PresentationCreationDate == "19000101", kind
        if kind == "deleteTag":  # Type 3 here: deleted
            assert "TimezoneOffsetFromUTC" not in out
        else:  # removeTag: "replace with empty", which a Type 3 attribute may be
            assert out.TimezoneOffsetFromUTC == ""
    kept, _ = both_paths(data, config("keepTag"))
    assert kept.PresentationCreationDate == "20240313"
    assert kept.TimezoneOffsetFromUTC == "+0130"


def test_a_format_of_its_own_gets_a_dummy_of_that_form() -> None:
    """Timezone Offset From UTC is Type 1 in the Simplified Adult Echo SR: +0000, not the
    text dummy (see data/dummies/attribute_dummies.csv)."""
    ds = _base("1.2.840.10008.5.1.4.1.1.88.72", ROOT + "6")
    ds.Modality = "SR"
    ds.TimezoneOffsetFromUTC = "+0130"
    out, _ = both_paths(to_bytes(ds), DeidConfig())
    assert out.TimezoneOffsetFromUTC == "+0000"


# -- encapsulated documents -----------------------------------------------------------------

PLANTED = "Zarkovsky Belinda"


def _pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` (with exact cross-reference offsets)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Author (" + text.encode() + b") >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


def _cda(text: str) -> bytes:
    return (f'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget>'
            f"<patientRole><patient><name>{text}</name></patient></patientRole></recordTarget>"
            f"</ClinicalDocument>").encode()


ENCAPSULATED = {  # MIME type -> SOP class of its Encapsulated Document IOD, a document
    "application/pdf": ("1.2.840.10008.5.1.4.1.1.104.1", _pdf(PLANTED)),
    "text/XML": ("1.2.840.10008.5.1.4.1.1.104.2", _cda(PLANTED)),
    "model/stl": ("1.2.840.10008.5.1.4.1.1.104.3", b"solid " + PLANTED.encode() + b"\nendsolid\n"),
    "model/obj": ("1.2.840.10008.5.1.4.1.1.104.4", b"# " + PLANTED.encode() + b"\nv 0 0 0\n"),
    "model/mtl": ("1.2.840.10008.5.1.4.1.1.104.5", b"# " + PLANTED.encode() + b"\nnewmtl a\n"),
}


def encapsulated(mime: str, document: bytes | None = None, sop_class: str | None = None,
                 length: bool = True) -> Dataset:
    known_class, known_document = ENCAPSULATED.get(mime, ENCAPSULATED["application/pdf"])
    document = known_document if document is None else document
    ds = _base(sop_class or known_class, ROOT + "8")
    ds.Modality = "DOC" if "pdf" in mime or "XML" in mime else "M3D"
    ds.ConversionType = "WSD"
    ds.ContentDate = "20240312"
    ds.ContentTime = "101500"
    ds.AcquisitionDateTime = "20240312101500"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Radiology report"
    ds.MIMETypeOfEncapsulatedDocument = mime
    ds.EncapsulatedDocument = document + (b"\x00" if len(document) % 2 else b"")
    if length:
        ds.EncapsulatedDocumentLength = len(document)
    return ds


def _document(out: Dataset) -> bytes:
    """The output's document less its padding, checked against its recorded length."""
    value = bytes(out.EncapsulatedDocument)
    assert len(value) % 2 == 0
    length = int(out.EncapsulatedDocumentLength)
    assert len(value) - length in (0, 1) and not value[length:].strip(b"\x00")
    return value[:length]


def test_a_pdf_becomes_an_empty_pdf_of_consistent_length() -> None:
    data = to_bytes(encapsulated("application/pdf"))
    assert PLANTED.encode() in data
    out, written = both_paths(data, privacy_first())
    document = _document(out)
    assert document.startswith(b"%PDF-") and document.endswith(b"%%EOF")
    assert document == (DUMMIES / "empty.pdf").read_bytes()
    assert out.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert b"Zarkovsky" not in written and b"Belinda" not in written


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_the_dummy_document_in_other_encodings(syntax: str) -> None:
    ds = encapsulated("application/pdf")
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=syntax == ImplicitVRLittleEndian,
                     little_endian=syntax != ExplicitVRBigEndian, enforce_file_format=True)
    if syntax == ExplicitVRBigEndian:  # the Dataset path alone writes big endian
        out, _, written = deidentify_bytes(buf.getvalue(), DeidConfig())
    else:
        out, written = both_paths(buf.getvalue(), DeidConfig())
    assert _document(out) == (DUMMIES / "empty.pdf").read_bytes()
    assert out.EncapsulatedDocumentLength == 346
    assert b"Zarkovsky" not in written


@pytest.mark.parametrize("mime", list(ENCAPSULATED))
def test_each_encapsulated_document_iod_gets_an_empty_document_of_its_type(mime: str) -> None:
    out, written = both_paths(to_bytes(encapsulated(mime)), DeidConfig())
    document = _document(out)
    assert document == document_dummy(mime)
    assert b"Zarkovsky" not in written
    if mime == "text/XML":
        root = ET.fromstring(document)
        assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"
        assert not "".join(root.itertext()).strip()
    if mime == "model/stl":  # binary STL: an 80-byte header, then a facet count of 0
        assert len(document) == 84 and not document.startswith(b"solid")
        assert int.from_bytes(document[80:], "little") == 0


def test_an_unknown_mime_type_gets_the_shortest_value_its_type_allows() -> None:
    """Encapsulated Document is Type 1: an empty value would be invalid, so two NULs."""
    ds = encapsulated("application/x-unknown", document=b"Zarkovsky Belinda's notes\n")
    out, written = both_paths(to_bytes(ds), DeidConfig())
    assert bytes(out.EncapsulatedDocument) == b"\x00\x00"
    assert out.EncapsulatedDocumentLength == 2
    assert b"Zarkovsky" not in written


def test_no_length_is_added_where_there_was_none() -> None:
    out, _ = both_paths(to_bytes(encapsulated("application/pdf", length=False)), DeidConfig())
    assert "EncapsulatedDocumentLength" not in out
    assert bytes(out.EncapsulatedDocument) == (DUMMIES / "empty.pdf").read_bytes()


def test_an_explicit_keep_of_the_document_keeps_it_and_its_length() -> None:
    """Kept as a project asks, with its length, as a kept text is kept: the patient's
    name written in it is still overwritten (the residual sweep, byte for byte, so the
    PDF's cross-reference offsets still hold), unless the sweep is off too."""
    config = load_config({"dicomTagConfig": {"actions": [
        {"queries": ["EncapsulatedDocument"], "keepTag": {}}]}})
    data = to_bytes(encapsulated("application/pdf"))
    out, written = both_paths(data, config)
    assert bytes(out.EncapsulatedDocument).rstrip(b"\x00") == _pdf("XXXXXXXXX XXXXXXX")
    assert out.EncapsulatedDocumentLength == len(_pdf(PLANTED))
    assert b"Zarkovsky" not in written
    config = load_config({"dicomTagConfig": {"actions": [
        {"queries": ["EncapsulatedDocument"], "keepTag": {}}]},
        "dicomDeid": {"residualSweep": False}})
    out, _ = both_paths(data, config)
    assert bytes(out.EncapsulatedDocument).rstrip(b"\x00") == _pdf(PLANTED)
