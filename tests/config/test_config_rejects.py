"""Configurations that cannot be honoured are refused at load, naming the field, before
any file is touched: PS3.15 retain options with a profile they do not modify,
``primaryIds: REGEN`` with RetainUIDs, actions that would change what the output needs
unchanged, and a PS3.15 option this tool does not implement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dicom_deid.cli.main import main
from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import (
    IMAGE_PIXEL_KEYWORDS,
    RETAIN_OPTIONS,
    DeidConfig,
    Option,
    PrimaryIds,
    ProfileType,
    QueryKind,
    TagAction,
    TagActionKind,
    TagQuery,
)
from dicom_deid.errors import ConfigError
from dicom_deid.pipeline.projects import Policy, load_project
from instances import KEY, deidentify_bytes, make_instance, to_bytes

OTHER_PROFILES = [ProfileType.KEEP_ALL, ProfileType.MINIMAL_KEEP_LIST,
                  ProfileType.DEIDENTIFY_TAG_CONTENTS]
RETAIN_TITLES = sorted(o.title for o in RETAIN_OPTIONS)


def _error(source: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return str(info.value)


def _action(queries: list[str], kind: str) -> dict[str, Any]:
    return {"queries": queries, kind: {}}


# -- Finding 3: retain options modify the Basic Profile only --------------------------------


def test_there_are_seven_retain_options() -> None:
    assert RETAIN_TITLES == [
        "RetainDeviceIdentity", "RetainInstitutionIdentity", "RetainLongitudinalFullDates",
        "RetainLongitudinalModifiedDates", "RetainPatientCharacteristics",
        "RetainSafePrivate", "RetainUIDs"]


@pytest.mark.parametrize("profile", OTHER_PROFILES)
@pytest.mark.parametrize("option", RETAIN_TITLES)
def test_retain_options_with_another_profile_in_google_json(profile: ProfileType,
                                                            option: str) -> None:
    message = _error({"dicomTagConfig": {"profileType": profile.value},
                      "dicomDeid": {"ps315Options": [option]}})
    assert message.startswith(f"dicomDeid.ps315Options: {option}: the PS3.15 retain options "
                              "modify the Basic Profile (Table E.1-1) only; "
                              f"with {profile.value} they would change nothing")


@pytest.mark.parametrize("profile", ["keep-all", "minimal-keep-list", "deidentify-tag-contents"])
@pytest.mark.parametrize("option", RETAIN_TITLES)
def test_retain_options_with_another_profile_on_the_command_line(profile: str,
                                                                 option: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--option: {option}: the PS3\.15 retain options"):
        config_from_options(profile, [option])


def test_retain_options_with_another_profile_in_a_project_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"RetainUIDs: the PS3\.15 retain options"):
        Policy(base="profile", profile="keep-all", options=("RetainUIDs",)).deid_config()
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ncohort: patients_with_us\n"
                    "policy: {base: profile, profile: minimal-keep-list, "
                    "options: [RetainPatientCharacteristics]}\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert "p.yaml: policy" in str(info.value)
    assert "RetainPatientCharacteristics: the PS3.15 retain options" in str(info.value)


def test_retain_options_with_another_profile_in_the_model() -> None:
    with pytest.raises(ConfigError, match=r"^options: RetainSafePrivate, RetainUIDs: the PS3\.15"):
        DeidConfig(profile=ProfileType.KEEP_ALL,
                   options=frozenset({Option.RETAIN_UIDS, Option.RETAIN_SAFE_PRIVATE}))


def test_the_profile_is_named_with_a_hint_of_what_to_do_instead() -> None:
    message = _error({"dicomTagConfig": {"profileType": "DEIDENTIFY_TAG_CONTENTS"},
                      "dicomDeid": {"ps315Options": ["RetainLongitudinalModifiedDates"]}})
    assert "dateShiftConfig" in message
    assert message.endswith("Drop them, or use ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE")


def test_the_cli_refuses_before_touching_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "img1").write_bytes(to_bytes(make_instance()))
    (tmp_path / "k").write_text(KEY.hex())
    code = main(["deidentify", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file",
                 str(tmp_path / "k"), "--profile", "keep-all", "--option", "RetainUIDs"])
    assert code == 2
    assert "--option: RetainUIDs: the PS3.15 retain options" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("profile", [*OTHER_PROFILES, ProfileType.BASIC])
def test_cleaning_options_stay_allowed_with_every_profile(profile: ProfileType) -> None:
    """(A guard: the cleaning options are not what the rule above refuses.)"""
    config = config_from_options(profile.value, ["CleanDescriptors", "CleanStructuredContent",
                                                 "CleanGraphics", "CleanPixelData"])
    assert config.options == {Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT,
                              Option.CLEAN_GRAPHICS}
    assert config.clean_pixel_data
    config = load_config({"profileType": profile.value, "options": {
        "cleanDescriptors": {}, "cleanImage": {"textRedactionMode": "REDACT_SENSITIVE_TEXT"}}})
    assert config.clean_descriptors and config.cleans_pixels


def test_retain_options_stay_allowed_with_the_basic_profile() -> None:
    """(A guard.)"""
    names = [n for n in RETAIN_TITLES if n != "RetainLongitudinalFullDates"]
    config = load_config({"dicomTagConfig": {"profileType": "PROFILE_TYPE_UNSPECIFIED"},
                          "dicomDeid": {"ps315Options": names}})
    assert config.profile is ProfileType.BASIC
    assert {o.title for o in config.options} == set(names)


# -- Finding 5: primaryIds REGEN contradicts RetainUIDs -------------------------------------


def test_primary_ids_regen_with_retain_uids_is_refused() -> None:
    message = _error({"dicomTagConfig": {"options": {"primaryIds": "REGEN"}},
                      "dicomDeid": {"ps315Options": ["RetainUIDs"]}})
    assert message.startswith("dicomTagConfig.options.primaryIds: primaryIds REGEN "
                              "regenerates the Study, Series and SOP Instance UIDs that the "
                              "RetainUIDs option keeps")
    with pytest.raises(ConfigError, match=r"^primary_ids: REGEN regenerates"):
        DeidConfig(options=frozenset({Option.RETAIN_UIDS}), primary_ids=PrimaryIds.REGEN)


def test_primary_ids_keep_with_retain_uids_is_consistent() -> None:
    """(A guard.)"""
    config = load_config({"dicomTagConfig": {"options": {"primaryIds": "KEEP"}},
                          "dicomDeid": {"ps315Options": ["RetainUIDs"]}})
    assert config.primary_ids is PrimaryIds.KEEP


# -- Finding 10: actions on what the output needs unchanged ---------------------------------


@pytest.mark.parametrize(("query", "kind", "reason"), [
    ("SOPClassUID", "regenUidTag", "a registered UID naming the kind of object"),
    ("SOPClassUID", "resetTag", "a registered UID naming the kind of object"),
    ("00080016", "deleteTag", "a registered UID naming the kind of object"),
    ("SpecificCharacterSet", "removeTag", "how every text value is decoded"),
    ("TransferSyntaxUID", "regenUidTag", "the File Meta Information (group 0002)"),
    ("MediaStorageSOPClassUID", "regenUidTag", "the File Meta Information (group 0002)"),
    ("ImplementationVersionName", "resetTag", "the File Meta Information (group 0002)"),
    ("MediaStorageSOPInstanceUID", "removeTag", "always equals SOPInstanceUID"),
    ("Rows", "resetTag", "Image Pixel module"),
    ("Columns", "removeTag", "Image Pixel module"),
    ("BitsAllocated", "deleteTag", "Image Pixel module"),
    ("PhotometricInterpretation", "resetTag", "Image Pixel module"),
    ("NumberOfFrames", "deleteTag", "Image Pixel module"),
    ("PixelData", "removeTag", "Image Pixel module"),
    ("7FE00010", "deleteTag", "Image Pixel module"),
    ("00100000", "keepTag", "group lengths are always removed"),
])
def test_an_action_naming_a_protected_attribute_is_refused(query: str, kind: str,
                                                           reason: str) -> None:
    other = "StudyInstanceUID" if kind == "regenUidTag" else "StudyDescription"
    message = _error({"actions": [_action(["PatientName"], "keepTag"),
                                  _action([other, query], kind)]})
    assert message.startswith(f"actions[1].queries[1]: {kind} on "), message
    assert "is not allowed: " in message and reason in message


def test_the_reproducer_config_is_refused() -> None:
    """regenUidTag on SOPClassUID / TransferSyntaxUID was accepted and silently ignored."""
    message = _error({"actions": [_action(["SOPClassUID", "TransferSyntaxUID"],
                                          "regenUidTag")]})
    assert message.startswith("actions[0].queries[0]: regenUidTag on SOPClassUID (00080016) "
                              "is not allowed")


def test_a_vr_wide_action_reaching_image_pixel_attributes_is_refused() -> None:
    message = _error({"actions": [_action(["US"], "resetTag")]})
    assert message.startswith("actions[0].queries[0]: resetTag on VR US would reset "
                              "SamplesPerPixel, Rows, Columns, BitsAllocated")
    assert message.endswith('"keepTag": {}} before this action')
    message = _error({"actions": [_action(["PN", "OB"], "removeTag")]})
    assert message.startswith("actions[0].queries[1]: removeTag on VR OB would empty "
                              "PixelData")
    message = _error({"actions": [_action(["UI"], "resetTag")]})
    assert message.startswith("actions[0].queries[0]: resetTag on VR UI would reset "
                              "SOPClassUID")


def test_a_keep_action_first_makes_a_vr_wide_action_valid_and_it_is_applied() -> None:
    """(A guard: the way out the message names works.)"""
    config = load_config({"profileType": "KEEP_ALL_PROFILE", "actions": [
        _action(list(IMAGE_PIXEL_KEYWORDS), "keepTag"),
        _action(["US", "SS"], "resetTag")]})
    source = make_instance()
    out, _, _ = deidentify_bytes(to_bytes(source), config)
    for keyword in ("Rows", "Columns", "BitsAllocated", "PixelData"):
        assert out[keyword].value == source[keyword].value, keyword
    assert out[0x60000010].value != source[0x60000010].value  # Overlay Rows: reset, as asked


@pytest.mark.parametrize("action", [
    _action(["SOPClassUID", "TransferSyntaxUID", "Rows"], "keepTag"),
    _action(["PixelData"], "cleanImageTag"),
    _action(["SOPInstanceUID", "MediaStorageSOPInstanceUID"], "regenUidTag"),
    _action(["UI"], "regenUidTag"),  # registered UIDs are kept as they are
    _action(["UI"], "deleteTag"),  # a required UID gets a new one (plan.py)
])
def test_what_stays_allowed(action: dict[str, Any]) -> None:
    """(A guard.)"""
    assert load_config({"actions": [action]}).actions


def test_the_model_refuses_it_too() -> None:
    action = TagAction((TagQuery(QueryKind.KEYWORD, tag=0x00080016, keyword="SOPClassUID"),),
                       TagActionKind.REGEN_UID)
    with pytest.raises(ConfigError, match=r"^actions\[0\]\.queries\[0\]: regenUidTag on "
                                          r"SOPClassUID"):
        DeidConfig(actions=(action,))


def test_the_cli_refuses_a_protected_action_before_touching_a_file(tmp_path: Path,
                                                                   capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "img1").write_bytes(to_bytes(make_instance()))
    (tmp_path / "k").write_text(KEY.hex())
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"actions": [_action(["Rows"], "resetTag")]}))
    code = main(["deidentify", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file",
                 str(tmp_path / "k"), "--config", str(cfg)])
    assert code == 2
    assert "resetTag on Rows (00280010) is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- Minor: a real PS3.15 option this tool does not implement -------------------------------


@pytest.mark.parametrize("name", ["CleanRecognizableVisualFeatures",
                                  "Clean Recognizable Visual Features Option"])
def test_clean_recognizable_visual_features_is_unsupported_not_unknown(name: str) -> None:
    expected = r"Clean Recognizable Visual Features \(PS3\.15 E\.3\.2, code 113102\) is a " \
               r"PS3\.15 option this tool does not support"
    with pytest.raises(ConfigError, match="^" + expected):
        Option.parse(name)
    with pytest.raises(ConfigError, match=r"^--option: " + expected):
        config_from_options("basic", [name])
    with pytest.raises(ConfigError, match=r"^dicomDeid\.ps315Options\[0\]: " + expected):
        load_config({"dicomDeid": {"ps315Options": [name]}})
    with pytest.raises(ConfigError, match="^" + expected):
        Policy(options=(name,)).deid_config()  # the CLI's --option without --profile


def test_a_typo_is_still_unknown() -> None:
    """(A guard.)"""
    with pytest.raises(ConfigError, match=r"^unknown PS3\.15 option 'RetainUID'"):
        Option.parse("RetainUID")
