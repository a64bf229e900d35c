"""DICOM modules and attributes of the planned patients, studies and series, with the PHI
each one plants recorded as it is set."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from .planning import Patient, Series, Study, format_da

# Retired Detached Patient Management SOP Class: what ReferencedPatientSequence points at.
_PATIENT_SOP_CLASS = "1.2.840.10008.3.1.2.1.1"
# Retired Detached Study Management SOP Class: what ReferencedStudySequence points at.
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def sop_ref(sop_class: str, sop_uid: str) -> Dataset:
    """SOP Instance Reference Macro item."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def set_charset(ds: Dataset, p: Patient) -> None:
    """SpecificCharacterSet first: pydicom encodes every text value with it on write."""
    if len(p.charset) == 1:
        ds.SpecificCharacterSet = p.charset[0]
    elif p.charset:
        ds.SpecificCharacterSet = list(p.charset)


def _age(birth: date, on: date) -> str:
    """DICOM AS value in years."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def patient_module(ds: Dataset, p: Patient, st: Study, phi: set[str]) -> None:
    """Patient and Patient Study modules, plus free text that repeats the identity."""
    ds.PatientName = p.pn
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "WBMPI"
    ds.PatientBirthDate = format_da(p.birth)
    ds.PatientSex = p.sex
    ds.PatientAge = _age(p.birth, st.when)
    ds.PatientSize = p.size
    ds.PatientWeight = p.weight
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.PatientMotherBirthName = p.mother
    ds.EthnicGroup = p.ethnic
    other = Dataset()
    other.PatientID = p.other_id
    other.IssuerOfPatientID = "HXREG"
    other.TypeOfPatientID = "TEXT"
    qualifiers = Dataset()
    qualifiers.IdentifierTypeCode = "MR"
    facility = Dataset()
    facility.LocalNamespaceEntityID = "HXREGISTRY"
    qualifiers.AssigningFacilitySequence = [facility]
    other.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    ds.OtherPatientIDsSequence = [other]
    dob_iso = p.birth.isoformat()
    ds.AdditionalPatientHistory = (
        f"Referred re {p.family}, {p.given}; DOB {dob_iso}; {p.patient_id}"
    )
    comments = f"Patient {p.name_upper} prefers phone {p.phone_alt}"
    if p.native:
        comments += f" ({p.native})"
        phi.add(p.native)
    ds.PatientComments = comments
    phi.update({p.pn, p.patient_id, format_da(p.birth), p.address, p.phone, p.mother, p.other_id})
    phi.update({f"{p.family}, {p.given}", dob_iso, p.name_upper, p.phone_alt})
    if p.responsible:
        # Type 2C / 1C: the role must go wherever the profile removes the person.
        ds.ResponsiblePerson = p.responsible
        ds.ResponsiblePersonRole = p.responsible_role
        phi.add(p.responsible)
    if p.trial_subject:
        clinical_trial_subject(ds, st, p.trial_subject, phi)


def clinical_trial_subject(ds: Dataset, st: Study, subject: str, phi: set[str]) -> None:
    """Clinical Trial Subject module: Type 1 and 2 attributes the profile dummies or empties,
    and a Type 1C committee name whose condition (the approval number) the profile removes."""
    ds.ClinicalTrialSponsorName = "Synthetica Outcomes Consortium"
    ds.ClinicalTrialProtocolID = "SYN-OUT-101"
    ds.ClinicalTrialProtocolName = "Synthetic Imaging Outcomes"
    ds.ClinicalTrialSiteID = f"{st.site.code}-01"
    ds.ClinicalTrialSiteName = st.site.name
    ds.ClinicalTrialSubjectID = subject
    ds.ClinicalTrialProtocolEthicsCommitteeName = f"{st.site.code} Research Ethics Board"
    ds.ClinicalTrialProtocolEthicsCommitteeApprovalNumber = f"REB-{st.site.code}-2021-117"
    phi.update({subject, st.site.name})


def request_item(p: Patient, st: Study, phi: set[str]) -> Dataset:
    """Request Attributes item, with PHI three sequences deep (protocol context)."""
    item = Dataset()
    item.StudyInstanceUID = st.uid
    item.AccessionNumber = st.accession
    item.RequestedProcedureID = st.procedure_id
    item.RequestedProcedureDescription = f"{st.modality} {st.body} - {p.name_upper}"
    item.RequestedProcedureCodeSequence = [
        code_item(f"RPC{st.modality}{st.body[:3]}", "99SYNTH", f"{st.modality} {st.body.lower()}")
    ]
    item.ReasonForTheRequestedProcedure = f"Follow-up of {p.name_title}"
    item.ScheduledProcedureStepID = st.step_id
    item.ScheduledProcedureStepDescription = f"{st.body.lower()} for {p.name_lower}"
    context = Dataset()
    context.ValueType = "TEXT"
    context.ConceptNameCodeSequence = [code_item("121106", "DCM", "Comment")]
    context.TextValue = f"Consent signed by {p.name_title} on {st.dmy}"
    protocol = code_item(f"PRT{st.body[:3]}", "99SYNTH", f"{st.body.lower()} routine")
    protocol.ProtocolContextSequence = [context]
    item.ScheduledProtocolCodeSequence = [protocol]
    phi.update({st.accession, st.procedure_id, st.step_id, p.name_upper, p.name_title})
    phi.update({p.name_lower, st.dmy})
    return item


def study_module(ds: Dataset, p: Patient, st: Study, phi: set[str]) -> None:
    """General Study module plus the study-level request, procedure step and site."""
    site = st.site
    ds.StudyInstanceUID = st.uid
    ds.StudyDate = st.da
    ds.StudyTime = st.time
    ds.ReferringPhysicianName = st.referring
    ds.StudyID = st.study_id
    ds.AccessionNumber = st.accession
    ds.StudyDescription = f"{st.modality} {st.body.lower()} for {p.name_lower}"
    ds.NameOfPhysiciansReadingStudy = st.reading
    ds.RequestingPhysician = st.requesting
    ds.PerformedProcedureStepID = st.performed_step_id
    ds.PerformedProcedureStepStartDate = st.da
    ds.PerformedProcedureStepDescription = f"{st.modality} {st.body} for {p.name_upper}"
    ds.InstitutionName = site.name
    ds.InstitutionAddress = site.address
    ds.InstitutionalDepartmentName = "Radiology"
    ds.Manufacturer = "Synthetica Medical"
    ds.SoftwareVersions = "4.2.1"
    if st.prior_uid:  # Type 3 with items: removed, never left with zero items
        ds.ReferencedStudySequence = [sop_ref(_STUDY_SOP_CLASS, st.prior_uid)]
    phi.update({st.da, st.referring, st.study_id, st.accession, st.reading, st.requesting})
    phi.update({p.name_lower, st.performed_step_id, p.name_upper, site.name, site.address})


def modality_of(se: Series) -> str:
    """Modality attribute value: dose screens are "OT"."""
    return "OT" if se.kind == "SC" else se.kind


def station_name(st: Study, se: Series) -> str:
    """Station name: site code, modality, room number."""
    return f"{st.site.code}{modality_of(se)}{st.index % 3 + 1:02d}"


def series_module(ds: Dataset, p: Patient, st: Study, se: Series, phi: set[str]) -> None:
    """General Series module and the device part of General Equipment."""
    modality = modality_of(se)
    ds.Modality = modality
    ds.SeriesInstanceUID = se.uid
    ds.SeriesNumber = se.index + 1
    ds.SeriesDate = st.da
    ds.SeriesTime = st.time
    ds.SeriesDescription = f"{se.label} {p.patient_id}"
    ds.PerformingPhysicianName = se.performing
    ds.OperatorsName = se.operator
    ds.ManufacturerModelName = f"Synth {modality} 3000"
    station = station_name(st, se)
    ds.StationName = station
    ds.DeviceSerialNumber = st.site.serials[modality]
    phi.update({st.da, p.patient_id, se.performing, se.operator, station})
    phi.add(st.site.serials[modality])


def private_blocks(ds: Dataset, p: Patient, phi: set[str]) -> None:
    """A vendor block holding identity (removed with all private tags by the profile)."""
    block = ds.private_block(0x0009, "ACME PHI 1.0", create=True)
    block.add_new(0x10, "PN", p.pn)
    block.add_new(0x11, "LO", p.patient_id)
    block.add_new(0x12, "LT", f"Exported for {p.name_title}")
    phi.update({p.pn, p.patient_id, p.name_title})


def safe_private_block(ds: Dataset, rng: random.Random) -> None:
    """ELSCINT1 DLP, on the safe-private list: a harmless number kept by Retain Safe Private."""
    safe = ds.private_block(0x00E1, "ELSCINT1", create=True)
    safe.add_new(0x21, "DS", f"{rng.uniform(150, 900):.1f}")


def referenced_patient(ds: Dataset, p: Patient) -> None:
    """ReferencedPatientSequence pointing at the patient's (non-corpus) UID."""
    item = Dataset()
    item.ReferencedSOPClassUID = _PATIENT_SOP_CLASS
    item.ReferencedSOPInstanceUID = p.uid
    ds.ReferencedPatientSequence = [item]


def image_pixel_module(ds: Dataset, kind: str, rows: int, cols: int) -> None:
    """Image Pixel module attributes shared by a series (frame count is per instance)."""
    rgb = kind == "US"
    bits = 8 if kind in ("US", "SC") else 16
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits
    ds.BitsStored = 8 if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if kind == "CT" else 0
    if rgb:
        ds.PlanarConfiguration = 0


def add_overlay(ds: Dataset, p: Patient, rows: int, cols: int, phi: set[str]) -> None:
    """Graphics overlay in group 6000 (a rectangle), comments naming the patient."""
    mask = np.zeros((rows, cols), bool)
    r0, r1, c0, c1 = rows // 4, rows // 2, cols // 3, cols // 2
    mask[r0, c0:c1] = mask[r1, c0:c1] = True
    mask[r0:r1, c0] = mask[r0:r1, c1] = True
    packed = np.packbits(mask.ravel(), bitorder="little").tobytes()
    if len(packed) % 2:
        packed += b"\x00"
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000022, "LO", "ROI outline")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", packed)
    ds.add_new(0x60004000, "LT", f"ROI drawn for {p.name_title}")
    phi.add(p.name_title)


def _plane(ds: Dataset, se: Series, fov: float, thickness: float) -> None:
    """Frame of Reference and the series-constant part of Image Plane."""
    ds.FrameOfReferenceUID = se.for_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    spacing = f"{fov / ds.Rows:.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = f"{thickness:g}"


def image_position(dyn: Dataset, tmpl: Dataset, k: int) -> None:
    """Per-slice Image Position and Slice Location (slices stacked along z)."""
    fov = float(tmpl.PixelSpacing[0]) * tmpl.Rows
    z = -k * float(tmpl.SliceThickness)
    dyn.ImagePositionPatient = [f"{-fov / 2:.6g}", f"{-fov / 2:.6g}", f"{z:g}"]
    dyn.SliceLocation = f"{z:g}"


def _ct_module(ds: Dataset, se: Series) -> None:
    """CT Image module (series-constant part)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.ConvolutionKernel = "STANDARD"
    _plane(ds, se, 350.0, 5.0)


def _mr_module(ds: Dataset, se: Series) -> None:
    """MR Image module (series-constant part)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "500"
    ds.EchoTime = "15"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "1.5"
    ds.ImagedNucleus = "1H"
    ds.AcquisitionNumber = 1
    _plane(ds, se, 240.0, 4.0)


def _cr_module(ds: Dataset, se: Series) -> None:
    """CR Series and CR Image modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PhotometricInterpretation = "MONOCHROME1" if se.monochrome1 else "MONOCHROME2"
    ds.ViewPosition = "PA" if "PA" in se.label else "AP"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = ["0.35", "0.35"]
    ds.KVP = "110"


def _us_module(ds: Dataset, se: Series) -> None:
    """US Image module (series-constant part; cine attributes are per instance)."""
    jpeg = se.ts == JPEGBaseline8Bit
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg else "RGB"
    ds.PatientOrientation = ""
    ds.LossyImageCompression = "01" if jpeg else "00"
    if jpeg:
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def _sc_module(ds: Dataset) -> None:
    """SC Equipment and SC Image modules for a dose screen capture."""
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""


def modality_module(ds: Dataset, se: Series) -> None:
    """The IOD-specific image module(s); needs Rows already set."""
    if se.kind == "CT":
        _ct_module(ds, se)
    elif se.kind == "MR":
        _mr_module(ds, se)
    elif se.kind == "CR":
        _cr_module(ds, se)
    elif se.kind == "US":
        _us_module(ds, se)
    else:
        _sc_module(ds)
