"""The IOD tables: what they say of known attributes, and that they read as written."""

from __future__ import annotations

from importlib import resources

from pydicom.datadict import tag_for_keyword

from dicom_deid.config.iod import AttributeType, ConditionKind, dependents_of, iod_for
from dicom_deid.config.ps3_15 import ActionCode, resolve_compound

CT = "1.2.840.10008.5.1.4.1.1.2"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"


def test_types_where_the_standard_puts_them() -> None:
    ct = iod_for(CT)
    assert ct is not None and ct.name == "ct-image"
    assert ct.type_of("", "ReferencedStudySequence") is AttributeType.T3  # General Study
    assert ct.type_of("", "PatientName") is AttributeType.T2
    assert ct.type_of("", "SOPInstanceUID") is AttributeType.T1
    assert ct.type_of("", "ResponsiblePersonRole") is AttributeType.T1C
    assert ct.type_of("ReferencedStudySequence", "ReferencedSOPInstanceUID") is AttributeType.T1
    assert ct.type_of("", "NoSuchKeyword") is None
    assert iod_for("1.2.3.4") is None
    plan = iod_for(RT_ION_PLAN)
    assert plan is not None and plan.type_of("", "OperatorsName") is AttributeType.T2


def test_compound_codes_by_type() -> None:
    t1, t2, t3 = AttributeType.T1, AttributeType.T2, AttributeType.T3
    assert [resolve_compound(ActionCode.X_Z, t) for t in (t3, t2, t1, None)] == [
        ActionCode.X, ActionCode.Z, ActionCode.Z, ActionCode.Z]
    assert [resolve_compound(ActionCode.X_D, t) for t in (t3, t2, t1, None)] == [
        ActionCode.X, ActionCode.D, ActionCode.D, ActionCode.D]
    assert [resolve_compound(ActionCode.X_Z_D, t) for t in (t3, t2, t1, None)] == [
        ActionCode.X, ActionCode.Z, ActionCode.D, ActionCode.D]
    assert [resolve_compound(ActionCode.Z_D, t) for t in (t3, t2, t1, None)] == [
        ActionCode.Z, ActionCode.Z, ActionCode.D, ActionCode.D]
    assert resolve_compound(ActionCode.X_Z_U, t3) is ActionCode.U
    assert resolve_compound(ActionCode.X_Z_D, AttributeType.T2C) is ActionCode.Z
    assert resolve_compound(ActionCode.X_D, AttributeType.T1C) is ActionCode.D


def test_dependents_table() -> None:
    role = tag_for_keyword("ResponsiblePersonRole")
    assert dependents_of(tag_for_keyword("ResponsiblePerson")) == (
        (role, ConditionKind.HAS_VALUE),)
    assert dependents_of(tag_for_keyword("PatientName")) == ()


def test_the_plain_tables_quote_nothing() -> None:
    """config/iod.py splits these tables on commas (csv's reader is five times slower):
    a quoted field would be read wrongly, so there must be none."""
    folder = resources.files("dicom_deid.config").joinpath("data/iod")
    for name in ("sop_class_iods.csv", "iod_modules.csv", "module_attributes.csv"):
        text = folder.joinpath(name).read_text(encoding="utf-8")
        assert '"' not in text, name
        widths = {line.count(",") for line in text.splitlines() if line}
        assert len(widths) == 1, name
