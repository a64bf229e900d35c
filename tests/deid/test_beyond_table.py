"""Attributes PS3.15 Table E.1-1 does not list, which hold a patient's dates, people's
names or free text about them.

An external probe found them kept by the privacy-first default: a birth date written in
the Thai calendar (PatientBirthDateInAlternativeCalendar), the death date, comments on a
worklist step with a daughter's name and phone number (nested in the step's sequence,
itself unlisted), the contact for a procedure step, a hanging protocol's author, the
patient's bed. Each is removed or cleaned as if the table listed it
(``config/data/beyond_table_e1.csv``), and long free text the list misses is cleaned as
a descriptor.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_deid.config.model import DeidConfig, privacy_first
from dicom_deid.config.plan import beyond_table
from instances import deidentify_bytes, make_instance, to_bytes

_PHONE = "+47 912 34 567"
_TALK = f"Daughter Sofie Berg will bring her, call {_PHONE} before 03.04.2024"
_NOTES = "Neighbour will call 555-867-5309 on 03.04.2024"


def _planted() -> Dataset:
    ds = make_instance()
    ds.PatientBirthDateInAlternativeCalendar = "2497-08-22"
    ds.PatientDeathDateInAlternativeCalendar = "2567-03-02"
    ds.PatientAlternativeCalendar = "I"
    ds.ContactDisplayName = "Dr Amara Okafor"
    ds.HangingProtocolCreator = "Mortensen"
    ds.AssignedLocation = "WARD7B-BED4"
    ds.CommentsOnTheScheduledProcedureStep = _TALK
    step = Dataset()
    step.CommentsOnTheScheduledProcedureStep = _TALK
    step.ScheduledProcedureStepID = "SPS1"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.ReasonForCancellation = _TALK
    ds.MaterialNotes = _NOTES  # not in the list: long free text, cleaned as a descriptor
    return ds


def test_what_the_table_leaves_out_is_removed_or_cleaned() -> None:
    out, _, raw = deidentify_bytes(to_bytes(_planted()), privacy_first())
    for keyword in ("PatientBirthDateInAlternativeCalendar",
                    "PatientDeathDateInAlternativeCalendar", "ContactDisplayName",
                    "HangingProtocolCreator", "AssignedLocation",
                    "CommentsOnTheScheduledProcedureStep", "ReasonForCancellation"):
        assert keyword not in out, keyword
    assert "CommentsOnTheScheduledProcedureStep" not in out.ScheduledProcedureStepSequence[0]
    assert out.PatientAlternativeCalendar == "I"  # which calendar: no one's date
    for value in ("2497", "2567", "Okafor", "Mortensen", "BED4", "Sofie", "912 34",
                  "03.04.2024"):
        assert value.encode() not in raw, value
    assert str(out.MaterialNotes) == "Neighbour will call [PHONE_NUMBER] on [DATE]"


def test_unlisted_free_text_is_kept_without_clean_descriptors() -> None:
    """The Basic Profile alone keeps what the table does not list (the list above is
    applied, the descriptor rule is Clean Descriptors')."""
    out, _, _ = deidentify_bytes(to_bytes(_planted()), DeidConfig(options=frozenset()))
    assert str(out.MaterialNotes) == _NOTES
    assert "PatientBirthDateInAlternativeCalendar" not in out


def test_every_keyword_of_the_list_is_a_dicom_keyword() -> None:
    assert len(beyond_table()) >= 19


def test_a_value_cut_to_its_length_loses_the_word_the_limit_falls_in() -> None:
    """A cleaned LO longer than 64 characters was cut at 64: the study's own UID at its
    end lost its tail, so the gate no longer saw it, and the first 43 characters of it
    were released (an external probe). The word the limit falls in goes whole."""
    ds = make_instance()
    uid = "1.2.826.0.1.3680043.10.543.777." + "1234567890" * 3  # 61 characters
    ds.StudyInstanceUID = uid
    ds.SeriesDescription = "Reformat of prior study " + uid
    out, _, raw = deidentify_bytes(to_bytes(ds), privacy_first())
    assert str(out.SeriesDescription) == "Reformat of prior study"
    assert uid[:20].encode() not in raw


def test_a_registry_number_of_an_animal_or_a_traveller_is_replaced() -> None:
    """A dog's breed registry number names its owner through the registry (an external
    probe found it kept); a screened traveller's boarding pass and itinerary name the
    person. Type 1 in its item, the registry number gets a dummy: still valid DICOM."""
    ds = make_instance()
    ds.PatientSpeciesDescription = "Canine"
    item = Dataset()
    item.BreedRegistrationNumber = "HP55123401"
    registry = Dataset()
    registry.CodeValue, registry.CodingSchemeDesignator = "109200", "DCM"
    registry.CodeMeaning = "America Kennel Club"
    item.BreedRegistryCodeSequence = Sequence([registry])
    ds.BreedRegistrationSequence = Sequence([item])
    ds.BoardingPassID = "BP7781203"
    ds.ItineraryID = "IT99120"
    data = to_bytes(ds)
    out, _, raw = deidentify_bytes(data, privacy_first())
    for value in ("HP55123401", "BP7781203", "IT99120"):
        assert value.encode() not in raw, value
    assert out.BreedRegistrationSequence[0].BreedRegistrationNumber not in ("", None)
    assert "BoardingPassID" not in out and "ItineraryID" not in out
    assert {int(beyond) for beyond in beyond_table()} >= {0x00102295, 0x4010101A, 0x40101051}


def test_an_assigning_authority_named_in_nested_hl7_identifiers_is_removed() -> None:
    """Probe 15, on pydicom's CT_small without its InstitutionName: the hospital, named
    only as an HL7 assigning authority (Issuer of Patient ID Qualifiers > Assigning
    Facility, Order Placer Identifier; neither is in Table E.1-1), was released. Both
    paths remove it at any depth, and the output still reads."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    del ds.InstitutionName
    facility = Dataset()
    facility.LocalNamespaceEntityID = "Harborview Quillan Clinic"
    facility.UniversalEntityID, facility.UniversalEntityIDType = "hqc.example.org", "DNS"
    qualifiers = Dataset()
    qualifiers.IdentifierTypeCode = "MR"
    qualifiers.AssigningFacilitySequence = Sequence([facility])
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    placer = Dataset()
    placer.LocalNamespaceEntityID = "Harborview Quillan Clinic Radiology Orders"
    ds.OrderPlacerIdentifierSequence = Sequence([placer])
    out, _, raw = deidentify_bytes(to_bytes(ds), privacy_first())
    assert b"Quillan" not in raw and b"hqc.example" not in raw
    assert out.IssuerOfPatientIDQualifiersSequence[0].IdentifierTypeCode == "MR"
