"""The vendored PS3.15 table is parsed completely and options change codes as the standard says."""

from dicom_deid.config.model import Option
from dicom_deid.config.ps3_15 import ActionCode, load_safe_private, load_table, resolve_compound


def test_table_has_every_row_of_the_2026c_edition() -> None:
    table = load_table()
    # 656 rows = exact tags + 3 masked rows + the private-attributes row
    assert len(table.exact) + len(table.masked) + 1 == 656
    assert {m.row.tag_text for m in table.masked} == {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"}
    assert table.private.basic is ActionCode.X
    assert dict(table.private.option_codes) == {Option.RETAIN_SAFE_PRIVATE: ActionCode.C}


def test_well_known_rows() -> None:
    table = load_table()
    assert table.row_for(0x00100010).basic is ActionCode.Z  # Patient's Name
    assert table.row_for(0x00100020).basic is ActionCode.Z_D  # Patient ID
    assert table.row_for(0x00080018).basic is ActionCode.U  # SOP Instance UID
    assert table.row_for(0x00080080).basic is ActionCode.X_Z_D  # Institution Name
    assert table.row_for(0x00081140).basic is ActionCode.X_Z_U  # Referenced Image Sequence
    assert table.row_for(0x00080070) is None  # Manufacturer is not in the table: kept


def test_masked_rows_match_even_repeating_groups_only() -> None:
    table = load_table()
    assert table.row_for(0x60003000).name == "Overlay Data"
    assert table.row_for(0x601E3000).name == "Overlay Data"
    assert table.row_for(0x60024000).name == "Overlay Comments"
    assert table.row_for(0x50100030).name == "Curve Data"
    assert table.row_for(0x60013000) is None  # odd group: private, not an overlay
    assert table.row_for(0x60000010) is None  # Overlay Rows is not listed


def test_options_override_basic_codes_and_clean_beats_keep() -> None:
    table = load_table()
    study_date = table.row_for(0x00080020)
    assert study_date.code_for(frozenset()) == (ActionCode.Z, None)
    assert study_date.code_for(frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES}))[0] is (
        ActionCode.K)
    assert study_date.code_for(frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))[0] is (
        ActionCode.C)
    allergies = table.row_for(0x00102110)  # C under Patient Characteristics and Descriptors
    code, option = allergies.code_for(
        frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}))
    assert code is ActionCode.C and option is not None
    serial = table.row_for(0x00181000)
    assert serial.code_for(frozenset({Option.RETAIN_DEVICE_IDENTITY}))[0] is ActionCode.K


def test_compound_codes_resolve_to_codes_valid_for_any_type() -> None:
    assert resolve_compound(ActionCode.X_Z) is ActionCode.Z
    assert resolve_compound(ActionCode.X_D) is ActionCode.D
    assert resolve_compound(ActionCode.X_Z_D) is ActionCode.D
    assert resolve_compound(ActionCode.Z_D) is ActionCode.D
    assert resolve_compound(ActionCode.X_Z_U) is ActionCode.U
    assert resolve_compound(ActionCode.X) is ActionCode.X


def test_safe_private_table() -> None:
    safe = load_safe_private()
    assert len(safe) >= 470
    assert (0x00E1, "ELSCINT1", 0x21) in safe
    assert len({creator for _, creator, _ in safe}) == 20
