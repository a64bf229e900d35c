"""A plain removal of an attribute the IOD requires where it is becomes a dummy or empty.

Table E.1-1 gives ``X`` (and once ``Z``) to attributes that some IODs require: every place
the standard's tables name is resolved here the way the compound codes are, and nowhere
else does anything change.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicom_deid.config.google import load_config
from dicom_deid.config.iod import AttributeType, iod_named
from dicom_deid.config.model import DeidConfig, Option, ProfileType, privacy_first
from dicom_deid.config.plan import (
    TAG_DOCUMENT_LENGTH,
    TAG_ENCAPSULATED_DOCUMENT,
    Act,
    Mode,
    Plan,
    Scope,
    document_dummy,
)
from dicom_deid.config.ps3_15 import ActionCode, load_table, resolve_required

T = AttributeType
PRESENTATION_STATES = (  # the IODs with the Presentation State Identification Module
    "grayscale-softcopy-presentation-state", "color-softcopy-presentation-state",
    "pseudo-color-softcopy-presentation-state", "blending-softcopy-presentation-state",
    "xa-xrf-grayscale-softcopy-presentation-state", "advanced-blending-presentation-state",
    "planar-mpr-volumetric-presentation-state", "volume-rendering-volumetric-presentation-state",
    "variable-modality-lut-softcopy-presentation-state", "waveform-presentation-state",
    "waveform-acquisition-presentation-state", "basic-structured-display",
)
BASIC = "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"


@pytest.mark.parametrize(("code", "attribute_type", "expected"), [
    (ActionCode.X, T.T1, ActionCode.D), (ActionCode.X, T.T1C, ActionCode.D),
    (ActionCode.X, T.T2, ActionCode.Z), (ActionCode.X, T.T2C, ActionCode.Z),
    (ActionCode.X, T.T3, ActionCode.X), (ActionCode.X, None, ActionCode.X),
    (ActionCode.Z, T.T1, ActionCode.D), (ActionCode.Z, T.T1C, ActionCode.D),
    (ActionCode.Z, T.T2, ActionCode.Z), (ActionCode.Z, T.T3, ActionCode.Z),
    (ActionCode.Z, None, ActionCode.Z), (ActionCode.K, T.T1, ActionCode.K),
    (ActionCode.D, T.T3, ActionCode.D), (ActionCode.U, T.T1, ActionCode.U),
])
def test_resolve_required(code: ActionCode, attribute_type: AttributeType | None,
                          expected: ActionCode) -> None:
    assert resolve_required(code, attribute_type) is expected


def _required_places() -> Iterator[tuple[str, str, str, AttributeType]]:
    """(IOD, parent, keyword, Type) wherever the tables require an attribute the Basic
    Profile removes or empties outright, overlays (60xx) left out."""
    from dicom_deid.config.iod import _iod_modules  # the tables' own IOD list

    rows = {r.keyword: r for r in load_table().exact.values()}
    for iod in sorted(_iod_modules()):
        for (parent, keyword), kind in iod_named(iod).types.items():
            row = rows.get(keyword)
            if row is None or row.basic not in (ActionCode.X, ActionCode.Z):
                continue
            if kind is T.T3 or (row.basic is ActionCode.Z and kind in (T.T2, T.T2C)):
                continue
            yield iod, parent, keyword, kind


def test_every_place_the_tables_require_gets_a_value_or_stays_empty() -> None:
    plan = Plan(DeidConfig())
    places = list(_required_places())
    assert len({(p, k) for _, p, k, _ in places}) == 28  # 27 with X, 1 with Z (2026b tables)
    assert len({iod for iod, _, _, _ in places}) == 174
    for iod, parent, keyword, kind in places:
        tag = tag_for_keyword(keyword)
        assert tag is not None
        vr = dictionary_VR(tag).split(" ")[0]
        found = plan.act(tag, vr, Mode.NORMAL, (iod, parent))
        if kind in (T.T1, T.T1C):
            expected = {"SQ": Act.RECURSE_STRICT, "OB": Act.DUMMY}.get(vr, Act.DUMMY)
        else:
            expected = Act.EMPTY
        assert found is expected, (iod, parent, keyword, kind, found)


@pytest.mark.parametrize(("scope", "keyword", "expected"), [
    *(((iod, ""), kw, Act.DUMMY) for iod in PRESENTATION_STATES
      for kw in ("PresentationCreationDate", "PresentationCreationTime")),
    (("simplified-adult-echo-sr", ""), "TimezoneOffsetFromUTC", Act.DUMMY),
    (("inventory", "ScopeOfInventorySequence"), "TimezoneOffsetFromUTC", Act.DUMMY),
    (("enhanced-pet-image", "RadiopharmaceuticalInformationSequence"),
     "RadiopharmaceuticalStartDateTime", Act.DUMMY),
    (("rt-structure-set", "SourceSeriesInformationSequence"), "SeriesDescription", Act.DUMMY),
    (("ct-image", "UDISequence"), "UniqueDeviceIdentifier", Act.DUMMY),
    (("ct-image", ""), "ResponsiblePerson", Act.EMPTY),  # Type 2C
    # Where nothing requires it: removed, as before.
    (("ct-image", ""), "PresentationCreationDate", Act.DELETE),
    (("grayscale-softcopy-presentation-state", ""), "TimezoneOffsetFromUTC", Act.DELETE),
    (("rt-structure-set", ""), "SeriesDescription", Act.DELETE),
    (("enhanced-pet-image", ""), "RadiopharmaceuticalStartDateTime", Act.DELETE),
    (("", ""), "PresentationCreationDate", Act.DELETE),  # an unknown SOP class
])
def test_the_rule_at_named_places(scope: Scope, keyword: str, expected: Act) -> None:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    vr = dictionary_VR(tag).split(" ")[0]
    assert Plan(DeidConfig()).act(tag, vr, Mode.NORMAL, scope) is expected
    if Option.CLEAN_DESCRIPTORS not in dict(load_table().exact[tag].option_codes):
        assert Plan(privacy_first()).act(tag, vr, Mode.NORMAL, scope) is expected


def test_overlays_go_with_their_group_whatever_the_type() -> None:
    scope = ("ct-image", "")
    assert iod_named("ct-image").type_of("", keyword_for_tag(0x60003000)) is T.T1
    assert Plan(DeidConfig()).act(0x60003000, "OW", Mode.NORMAL, scope) is Act.DELETE_GROUP


def _google(kind: str, *queries: str, profile: str = "KEEP_ALL_PROFILE") -> Plan:
    return Plan(load_config({"dicomTagConfig": {"profileType": profile, "actions": [
        {"queries": list(queries), kind: {}}]}}))


def test_google_delete_and_remove_read_as_x_and_z() -> None:
    gsps = ("grayscale-softcopy-presentation-state", "")
    date = tag_for_keyword("PresentationCreationDate")
    assert date is not None
    assert _google("deleteTag", "PresentationCreationDate").act(
        date, "DA", Mode.NORMAL, gsps) is Act.DUMMY
    assert _google("removeTag", "PresentationCreationDate").act(
        date, "DA", Mode.NORMAL, gsps) is Act.DUMMY
    assert _google("keepTag", "PresentationCreationDate", profile=BASIC).act(
        date, "DA", Mode.NORMAL, gsps) is Act.KEEP
    # Type 2: deleteTag empties; Type 3: as asked.
    assert _google("deleteTag", "PatientName").act(0x00100010, "PN", Mode.NORMAL, gsps) \
        is Act.EMPTY
    assert _google("deleteTag", "TimezoneOffsetFromUTC").act(0x00080201, "SH", Mode.NORMAL,
                                                             gsps) is Act.DELETE
    # A required UID gets a new one (a fixed dummy would be the same in every file); a
    # required sequence keeps its items with their text dummied.
    assert _google("deleteTag", "UI").act(0x00080018, "UI", Mode.NORMAL, gsps) is Act.UID
    assert _google("deleteTag", "ReferencedSeriesSequence").act(
        0x00081115, "SQ", Mode.NORMAL, gsps) is Act.RECURSE_STRICT


def test_the_minimal_keep_list_profile_still_writes_valid_objects() -> None:
    """Presentation Creation Date is Type 1 in a presentation state: dummied, not deleted
    (the keep list removes the value, not what the IOD requires)."""
    plan = Plan(DeidConfig(profile=ProfileType.MINIMAL_KEEP_LIST))
    assert plan.act(0x00700082, "DA", Mode.NORMAL,
                    ("grayscale-softcopy-presentation-state", "")) is Act.DUMMY


def test_a_dummied_document_and_its_length_follow_its_mime_type() -> None:
    plan = Plan(DeidConfig())
    pdf: Scope = ("encapsulated-pdf", "")
    assert plan.act(TAG_ENCAPSULATED_DOCUMENT, "OB", Mode.NORMAL, pdf) is Act.DUMMY_DOCUMENT
    assert plan.act(TAG_DOCUMENT_LENGTH, "UL", Mode.NORMAL, pdf) is Act.DOCUMENT_LENGTH
    empty_pdf = document_dummy("application/pdf")
    assert empty_pdf is not None and empty_pdf.startswith(b"%PDF-")
    assert plan.document_value(Act.DUMMY_DOCUMENT, "Application/PDF", pdf) == empty_pdf
    assert plan.document_value(Act.DOCUMENT_LENGTH, "application/pdf", pdf) == len(empty_pdf)
    assert document_dummy("text/XML; charset=UTF-8") == document_dummy("text/xml")
    for mime in ("application/pdf", "text/xml", "model/stl", "model/obj", "model/mtl"):
        found = document_dummy(mime)
        assert found and len(found) % 2 == 0, mime
    # No dummy for the type: Type 1 needs a value (two NULs), Type 2 and 3 may be empty.
    assert plan.document_value(Act.DUMMY_DOCUMENT, "image/png", pdf) == b"\x00\x00"
    assert plan.document_value(Act.DOCUMENT_LENGTH, "image/png", pdf) == 2
    assert plan.document_value(Act.DUMMY_DOCUMENT, "", ("", "")) == b"\x00\x00"
    assert plan.document_value(Act.DUMMY_DOCUMENT, "image/png",
                               ("implant-assembly-template", "")) == b""
    assert plan.document_value(
        Act.DUMMY_DOCUMENT, "image/png",
        ("generic-implant-template", "InformationFromManufacturerSequence")) == b""
    # A document the configuration keeps keeps its length; an explicit rule on the length
    # is the configuration's.
    keep = _google("keepTag", "EncapsulatedDocument", profile=BASIC)
    assert keep.act(TAG_DOCUMENT_LENGTH, "UL", Mode.NORMAL, pdf) is Act.KEEP
    reset = _google("resetTag", "EncapsulatedDocument")
    assert reset.act(TAG_ENCAPSULATED_DOCUMENT, "OB", Mode.NORMAL, pdf) is Act.DUMMY_DOCUMENT
    keep_length = _google("keepTag", "EncapsulatedDocumentLength", profile=BASIC)
    assert keep_length.act(TAG_DOCUMENT_LENGTH, "UL", Mode.NORMAL, pdf) is Act.KEEP
