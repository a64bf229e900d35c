"""Test helpers: a hand-built instance with PHI in known places, and a round trip like the batch."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.byte_path import ByteDeidentifier
from dicom_deid.deid.deidentifier import Deidentifier, InstanceResult, dataset_encodings
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.dicom.writer import encode_instance

KEY = bytes(range(100, 132))
ROOT = "1.2.826.0.1.3680043.10.543."


def _item(**kw: object) -> Dataset:
    item = Dataset()
    for k, v in kw.items():
        setattr(item, k, v)
    return item


def make_instance(charset: str | list[str] | None = None, name: str = "Smith^John") -> Dataset:
    """A small CT instance with PHI in standard, nested, private and overlay elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ROOT + "3.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ROOT + "3.1"
    ds.StudyInstanceUID = ROOT + "1"
    ds.SeriesInstanceUID = ROOT + "2"
    ds.FrameOfReferenceUID = ROOT + "4"
    ds.StudyDate = "20230514"
    ds.SeriesDate = "20230514"
    ds.ContentDate = "20230514"
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = "20230514101600.000000"
    ds.AccessionNumber = "ACC7766554"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.InstitutionAddress = "12 Harbour Road, Springfield"
    ds.ReferringPhysicianName = "Doctor^Ruth"
    ds.StationName = "CTSTATION7"
    ds.StudyDescription = "CT chest for John Smith MRN1234567"
    ds.SeriesDescription = "Axial 5mm"
    ds.OperatorsName = "Tech^Tina"
    ds.PatientName = name
    ds.PatientID = "MRN1234567"
    ds.IssuerOfPatientID = "SPRINGFIELD"
    ds.PatientBirthDate = "19700203"
    ds.PatientSex = "F"
    ds.PatientAge = "053Y"
    ds.PatientWeight = "71.5"
    ds.PatientComments = "Allergic; call John at 555-0134"
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID="OLD999888", IssuerOfPatientID="X")])
    ds.DeviceSerialNumber = "SN-99-1234"
    ds.StudyID = "STUDY42"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 1
    ds.RequestAttributesSequence = Sequence([_item(
        AccessionNumber="ACC7766554",
        RequestedProcedureID="RP556677",
        ScheduledProcedureStepID="SPS12345",
        ReasonForRequestedProcedureCodeSequence=Sequence([_item(
            CodeValue="R07.4", CodingSchemeDesignator="I10", CodeMeaning="Chest pain")]),
    )])
    ds.ReferencedImageSequence = Sequence([_item(
        ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=ROOT + "3.2")])
    ds.add_new(0x00091010, "LO", "ACME PHI 1.0")
    ds.add_new(0x00091011, "LO", "Smith^John private copy")
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "123.5")
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    ds.add_new(0x60004000, "LT", "overlay drawn for Smith")
    ds.Rows = 2
    ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Serialise with pydicom's own writer (the input side of tests)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


BYTE_PATH_RUNS = {"taken": 0, "declined": 0}
"""How often :func:`deidentify_bytes` found the byte path taking a file (a sanity count)."""


def deidentify_bytes(data: bytes, config: DeidConfig | None = None,
                     key: bytes = KEY) -> tuple[Dataset, InstanceResult, bytes]:
    """De-identify ``data`` through both paths, as the batch would: the Dataset path
    (parse, de-identify, encode) and the byte path (production's fast path). Where the
    byte path takes the file it must write exactly the same bytes and result, so every
    unit test of behaviour tests the path production runs too. Returns the output re-read
    by pydicom, the result and the bytes."""
    config = config or DeidConfig()
    deid = Deidentifier(config, key)
    fast = ByteDeidentifier(Deidentifier(config, key)).deidentify(data)
    inst = parse_instance(data)
    encodings = dataset_encodings(inst.dataset)
    result = deid.deidentify(inst.dataset)
    out = encode_instance(inst.dataset, inst.transfer_syntax, encodings)
    if fast is None:
        BYTE_PATH_RUNS["declined"] += 1
    else:
        BYTE_PATH_RUNS["taken"] += 1
        chunks, fast_result = fast
        assert b"".join(bytes(c) for c in chunks) == out, "byte path and Dataset path differ"
        assert fast_result == result, "byte path and Dataset path report differently"
    return pydicom.dcmread(io.BytesIO(out)), result, out


def every_file(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root``, hidden folders included, by its path relative
    to ``root``: what anyone who can read a destination can open (a reader that resolved
    an older release link, say)."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out
