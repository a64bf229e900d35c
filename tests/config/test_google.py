"""Google DicomTagConfig JSON loads unchanged; every invalid field is named by its JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import (
    INFO_TYPES,
    ImageConfig,
    Option,
    PrimaryIds,
    ProfileType,
    QueryKind,
    TagActionKind,
    TagQuery,
    TextRedactionMode,
    Transformation,
    TransformationKind,
)
from dicom_deid.errors import ConfigError


def _error(source: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return str(info.value)


def _action(queries: list[str], kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"queries": queries, kind: body or {}}


# --- valid configs, as Google's documentation writes them -------------------------------------


def test_basic_profile_with_keep_tag_in_a_request_body() -> None:
    request = {
        "destinationDataset": "projects/p/locations/l/datasets/out",
        "config": {
            "dicomTagConfig": {
                "profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
                "actions": [{"queries": ["PatientSex"], "keepTag": {}}],
            }
        },
    }
    config = load_config(request)
    assert config.profile is ProfileType.BASIC
    (action,) = config.actions
    assert action.kind is TagActionKind.KEEP
    assert action.queries == (TagQuery(QueryKind.KEYWORD, tag=0x00100040, keyword="PatientSex"),)


def test_keep_all_profile_removing_every_person_name() -> None:
    config = load_config(
        {
            "dicomTagConfig": {
                "profileType": "KEEP_ALL_PROFILE",
                "actions": [{"queries": ["PN"], "removeTag": {}}],
            }
        }
    )
    assert config.profile is ProfileType.KEEP_ALL
    assert config.actions[0].queries == (TagQuery(QueryKind.VR, vr="PN"),)
    assert config.actions[0].kind is TagActionKind.REMOVE


def test_clean_text_tag_with_text_config() -> None:
    config = load_config(
        {
            "dicomTagConfig": {
                "profileType": "KEEP_ALL_PROFILE",
                "actions": [
                    {"queries": ["StudyDescription", "00081030", "LT"], "cleanTextTag": {}}
                ],
            },
            "text": {
                "transformations": [
                    {"infoTypes": ["PERSON_NAME"], "replaceWithInfoTypeConfig": {}},
                    {"infoTypes": ["DATE"], "dateShiftConfig": {}},
                ],
                "additionalTransformations": [
                    {"infoTypes": ["EMAIL_ADDRESS"], "characterMaskConfig": {}},
                    {"infoTypes": [], "cryptoHashConfig": {}},
                    {"redactConfig": {}},
                ],
                "excludeInfoTypes": ["AGE"],
            },
        }
    )
    kinds = [q.kind for q in config.actions[0].queries]
    assert kinds == [QueryKind.KEYWORD, QueryKind.TAG, QueryKind.VR]
    assert config.actions[0].queries[1].tag == 0x00081030
    assert config.text.transformations == (
        Transformation(TransformationKind.REPLACE_WITH_INFO_TYPE, ("PERSON_NAME",)),
        Transformation(TransformationKind.DATE_SHIFT, ("DATE",)),
    )
    assert config.text.additional_transformations == (
        Transformation(TransformationKind.CHARACTER_MASK, ("EMAIL_ADDRESS",), "*"),
        Transformation(TransformationKind.CRYPTO_HASH),
        Transformation(TransformationKind.REDACT),
    )
    assert config.text.exclude_info_types == ("AGE",)


def test_masking_character_is_kept() -> None:
    config = load_config(
        {"text": {"transformations": [{"characterMaskConfig": {"maskingCharacter": "#"}}]}}
    )
    assert config.text.transformations[0].masking_character == "#"


def test_regen_uid_and_recurse_tags() -> None:
    config = load_config(
        {
            "profileType": "KEEP_ALL_PROFILE",
            "actions": [
                {"queries": ["StudyInstanceUID"], "regenUidTag": {}},
                {"queries": ["ReferencedStudySequence", "SQ"], "recurseTag": {}},
                {"queries": ["UI"], "regenUidTag": {}},
            ],
        }
    )
    assert [a.kind for a in config.actions] == [
        TagActionKind.REGEN_UID,
        TagActionKind.RECURSE,
        TagActionKind.REGEN_UID,
    ]
    assert config.actions[0].queries[0].tag == 0x0020000D


def test_options_primary_ids_clean_descriptors_and_clean_image() -> None:
    config = load_config(
        {
            "dicomTagConfig": {
                "profileType": "MINIMAL_KEEP_LIST_PROFILE",
                "options": {
                    "primaryIds": "KEEP",
                    "cleanDescriptors": {},
                    "cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT"},
                },
            }
        }
    )
    assert config.profile is ProfileType.MINIMAL_KEEP_LIST
    assert config.primary_ids is PrimaryIds.KEEP
    assert config.clean_descriptors
    assert config.clean_image == ImageConfig(TextRedactionMode.REDACT_ALL_TEXT)


def test_clean_image_tag_on_pixel_data() -> None:
    config = load_config(
        {
            "actions": [
                {
                    "queries": ["PixelData"],
                    "cleanImageTag": {
                        "textRedactionMode": "REDACT_SENSITIVE_TEXT",
                        "additionalInfoTypes": ["PERSON_NAME"],
                        "excludeInfoTypes": ["DATE"],
                    },
                },
                {"queries": ["7fe00010"], "cleanImageTag": {}},
            ]
        }
    )
    assert config.actions[0].image == ImageConfig(
        TextRedactionMode.REDACT_SENSITIVE_TEXT, ("PERSON_NAME",), ("DATE",)
    )
    assert config.actions[1].queries[0].tag == 0x7FE00010  # hex IDs are case-insensitive
    assert config.actions[1].image == ImageConfig()


@pytest.mark.parametrize("profile", [None, "PROFILE_TYPE_UNSPECIFIED"])
def test_missing_or_unspecified_profile_is_basic(profile: str | None) -> None:
    doc: dict[str, Any] = {"actions": []}
    if profile:
        doc["profileType"] = profile
    assert load_config(doc).profile is ProfileType.BASIC
    assert load_config({}).profile is ProfileType.BASIC


def test_deidentify_tag_contents_profile() -> None:
    config = load_config({"profileType": "DEIDENTIFY_TAG_CONTENTS"})
    assert config.profile is ProfileType.DEIDENTIFY_TAG_CONTENTS


def test_private_tags_can_be_kept_removed_deleted_or_reset() -> None:
    for kind in ("keepTag", "removeTag", "deleteTag", "resetTag"):
        config = load_config({"actions": [_action(["00091010", "00290010"], kind)]})
        assert config.actions[0].queries[0] == TagQuery(QueryKind.TAG, tag=0x00091010)


def test_repeating_group_tags_by_id() -> None:
    config = load_config({"actions": [_action(["60023000"], "removeTag")]})
    assert config.actions[0].queries[0].tag == 0x60023000


def test_snake_case_field_names_are_accepted_like_proto3_json() -> None:
    config = load_config(
        {
            "dicom_tag_config": {
                "profile_type": "KEEP_ALL_PROFILE",
                "actions": [{"queries": ["PatientID"], "remove_tag": {}}],
                "options": {"primary_ids": "REGEN"},
            }
        }
    )
    assert config.profile is ProfileType.KEEP_ALL
    assert config.actions[0].kind is TagActionKind.REMOVE
    assert config.primary_ids is PrimaryIds.REGEN


def test_request_siblings_and_fhir_blocks_are_ignored() -> None:
    config = load_config(
        {
            "config": {
                "dicomTagConfig": {"profileType": "KEEP_ALL_PROFILE"},
                "fhir": {"defaultKeepExtensions": True},
                "useRegionalDataProcessing": True,
            },
            "destinationStore": "projects/p/locations/l/datasets/d/dicomStores/s",
            "filterConfig": {"resourcePathsGcsUri": "gs://bucket/filter.txt"},
            "gcsConfigUri": "gs://bucket/config.json",
        }
    )
    assert config.profile is ProfileType.KEEP_ALL


def test_dicom_deid_extension() -> None:
    config = load_config(
        {
            "dicomTagConfig": {"options": {"cleanDescriptors": {}}},
            "dicomDeid": {
                "ps315Options": [
                    "RetainUIDs",
                    "Retain Longitudinal Temporal Information with Modified Dates Option",
                    "basicProfile",
                ],
                "idPrefix": "HOSP",
                "maxDateShiftDays": 30,
            },
        }
    )
    assert config.options == {
        Option.RETAIN_UIDS,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.CLEAN_DESCRIPTORS,
    }
    assert config.id_prefix == "HOSP"
    assert config.max_date_shift_days == 30


def test_top_level_image_is_the_clean_image_option() -> None:
    config = load_config(
        {"dicomTagConfig": {}, "image": {"textRedactionMode": "REDACT_SENSITIVE_TEXT"}}
    )
    assert config.clean_image == ImageConfig(TextRedactionMode.REDACT_SENSITIVE_TEXT)


def test_text_profile_empty_transforms_only_what_is_listed() -> None:
    only_names = load_config(
        {
            "text": {
                "profileType": "EMPTY",
                "additionalTransformations": [{"infoTypes": ["PERSON_NAME"], "redactConfig": {}}],
            }
        }
    )
    assert only_names.text.transformations == (
        Transformation(TransformationKind.REDACT, ("PERSON_NAME",)),
    )
    assert only_names.text.additional_transformations == ()
    nothing = load_config({"text": {"profileType": "EMPTY"}})
    assert set(nothing.text.exclude_info_types) == INFO_TYPES


def test_loads_from_a_file_and_from_json_text(tmp_path: Path) -> None:
    doc = {"dicomTagConfig": {"profileType": "KEEP_ALL_PROFILE"}}
    path = tmp_path / "deid.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert load_config(path).profile is ProfileType.KEEP_ALL
    assert load_config(str(path)).profile is ProfileType.KEEP_ALL
    assert load_config(json.dumps(doc)).profile is ProfileType.KEEP_ALL


def test_same_config_same_fingerprint() -> None:
    doc = {"actions": [_action(["PatientSex"], "keepTag")]}
    assert load_config(doc).fingerprint() == load_config(json.dumps(doc)).fingerprint()
    other = {"actions": [_action(["PatientAge"], "keepTag")]}
    assert load_config(doc).fingerprint() != load_config(other).fingerprint()


# --- invalid configs: each error names the right JSON path ----------------------------------


def test_bad_profile_type() -> None:
    message = _error({"dicomTagConfig": {"profileType": "BASIC"}})
    assert message.startswith("dicomTagConfig.profileType: 'BASIC' is not one of")


def test_two_action_kinds_in_one_action() -> None:
    message = _error({"actions": [{"queries": ["PatientID"], "keepTag": {}, "removeTag": {}}]})
    assert message.startswith("actions[0]: an action needs exactly one of")
    assert "found keepTag, removeTag" in message


def test_no_action_kind() -> None:
    message = _error({"config": {"dicomTagConfig": {"actions": [{"queries": ["PatientID"]}]}}})
    assert message.startswith("config.dicomTagConfig.actions[0]: an action needs exactly one of")
    assert message.endswith("found none")


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"profileTyp": "KEEP_ALL_PROFILE"}, "profileTyp"),
        ({"dicomTagConfig": {"options": {"cleanText": {}}}}, "dicomTagConfig.options.cleanText"),
        ({"config": {"dicomTagConfig": {}, "extra": 1}}, "config.extra"),
        ({"config": {}, "destination": "x"}, "destination"),
        (
            {"text": {"transformations": [{"redactConfig": {}, "info": []}]}},
            "text.transformations[0].info",
        ),
        ({"dicomTagConfig": {}, "dicomDeid": {"prefix": "X"}}, "dicomDeid.prefix"),
    ],
)
def test_unknown_keys(doc: dict[str, Any], path: str) -> None:
    assert _error(doc).startswith(f"{path}: unknown key; expected one of")


def test_empty_messages_take_no_fields() -> None:
    doc = {"actions": [{"queries": ["PatientID"], "keepTag": {"x": 1}}]}
    assert _error(doc) == "actions[0].keepTag.x: unknown key; this object takes no fields ({})"


def test_bad_query_names_the_path_and_suggests() -> None:
    doc = {
        "actions": [
            _action(["PatientSex"], "keepTag"),
            _action(["PN"], "removeTag"),
            _action(["PatientNme"], "keepTag"),
        ]
    }
    message = _error(doc)
    assert message.startswith("actions[2].queries[0]: 'PatientNme' is not a tag ID, keyword or VR")
    assert "did you mean 'PatientName'" in message


@pytest.mark.parametrize("query", ["0010001", "0010,0010", "pn", "XX", "", "patientname"])
def test_malformed_queries(query: str) -> None:
    assert _error({"actions": [_action([query], "keepTag")]}).startswith("actions[0].queries[0]:")


def test_empty_or_missing_queries() -> None:
    assert _error({"actions": [{"queries": [], "keepTag": {}}]}) == (
        "actions[0].queries: must not be empty"
    )
    assert _error({"actions": [{"keepTag": {}}]}).startswith("actions[0].queries: required")


def test_unknown_public_tag_is_rejected() -> None:
    message = _error({"actions": [_action(["00100011"], "removeTag")]})
    assert message.startswith("actions[0].queries[0]: '00100011' is not in the DICOM data dict")


def test_regen_uid_on_a_person_name() -> None:
    message = _error({"actions": [_action(["StudyInstanceUID", "PatientName"], "regenUidTag")]})
    assert message.startswith("actions[0].queries[1]: regenUidTag supports VR UI only")
    assert "PatientName (VR PN)" in message
    assert _error({"actions": [_action(["PN"], "regenUidTag")]}).startswith(
        "actions[0].queries[0]: regenUidTag supports VR UI only"
    )


def test_recurse_on_a_non_sequence() -> None:
    message = _error({"actions": [_action(["00100010"], "recurseTag")]})
    assert message.startswith("actions[0].queries[0]: recurseTag supports VR SQ only")


def test_clean_image_on_anything_but_pixel_data() -> None:
    for query in ("OverlayData", "60003000", "OW", "FloatPixelData"):
        message = _error({"actions": [_action([query], "cleanImageTag")]})
        assert message.startswith("actions[0].queries[0]:"), message


def test_clean_text_vrs() -> None:
    assert load_config({"actions": [_action(["AccessionNumber", "AS", "UC"], "cleanTextTag")]})
    for query in ("CS", "PatientSex", "00091010", "UI"):
        message = _error({"actions": [_action([query], "cleanTextTag")]})
        assert message.startswith("actions[0].queries[0]: cleanTextTag supports VR"), message


def test_repeating_group_keyword_asks_for_tag_ids() -> None:
    message = _error({"actions": [_action(["OverlayData"], "removeTag")]})
    assert "repeating-group keyword" in message
    assert "60003000" in message


@pytest.mark.parametrize("kind", ["cryptoHashConfig", "dateShiftConfig"])
@pytest.mark.parametrize("field", ["cryptoKey", "kmsWrapped"])
def test_crypto_keys_in_config_files_are_refused(kind: str, field: str) -> None:
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWJlLWVjaG9lZA=="
    value: Any = secret if field == "cryptoKey" else {"wrappedKey": secret, "cryptoKey": "k"}
    doc = {"text": {"transformations": [{"infoTypes": ["DATE"], kind: {field: value}}]}}
    message = _error(doc)
    assert message.startswith(f"text.transformations[0].{kind}.{field}: keys never come from")
    assert "managed HMAC key" in message
    assert secret not in message


def test_masking_character_of_two_characters() -> None:
    doc = {"text": {"transformations": [{"characterMaskConfig": {"maskingCharacter": "**"}}]}}
    assert _error(doc) == (
        "text.transformations[0].characterMaskConfig.maskingCharacter: must be one character, not 2"
    )


def test_transformation_needs_exactly_one_kind() -> None:
    doc = {"text": {"additionalTransformations": [{"infoTypes": ["DATE"]}]}}
    assert _error(doc).startswith("text.additionalTransformations[0]: needs exactly one of")
    doc = {"text": {"transformations": [{"redactConfig": {}, "cryptoHashConfig": {}}]}}
    assert _error(doc).startswith("text.transformations[0]: needs exactly one of")


def test_unsupported_info_type() -> None:
    doc = {"text": {"transformations": [{"infoTypes": ["FIRST_NAME"], "redactConfig": {}}]}}
    assert _error(doc).startswith(
        "text.transformations[0].infoTypes[0]: 'FIRST_NAME' is not a supported infoType"
    )
    doc = {
        "dicomTagConfig": {
            "options": {
                "cleanImage": {
                    "textRedactionMode": "REDACT_SENSITIVE_TEXT",
                    "excludeInfoTypes": ["NAME"],
                }
            }
        }
    }
    assert _error(doc).startswith("dicomTagConfig.options.cleanImage.excludeInfoTypes[0]:")


def test_image_info_types_need_a_sensitive_text_mode() -> None:
    doc = {
        "options": {
            "cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT", "excludeInfoTypes": ["DATE"]}
        }
    }
    assert _error(doc).startswith("options.cleanImage.excludeInfoTypes: cannot be used with")
    doc = {
        "options": {
            "cleanImage": {"textRedactionMode": "REDACT_NO_TEXT", "additionalInfoTypes": ["DATE"]}
        }
    }
    assert _error(doc).startswith("options.cleanImage.additionalInfoTypes: cannot be used with")


def test_bad_enum_values() -> None:
    assert _error({"options": {"primaryIds": "DROP"}}).startswith("options.primaryIds: 'DROP'")
    doc = {"options": {"cleanImage": {"textRedactionMode": "BLUR"}}}
    assert _error(doc).startswith("options.cleanImage.textRedactionMode: 'BLUR'")
    assert _error({"text": {"profileType": "FULL"}}).startswith("text.profileType: 'FULL'")


def test_wrong_json_types() -> None:
    assert _error({"actions": {"queries": []}}).startswith("actions: must be a JSON array")
    assert _error({"actions": [{"queries": "PatientID", "keepTag": {}}]}).startswith(
        "actions[0].queries: must be a JSON array"
    )
    assert _error({"actions": [{"queries": [16], "keepTag": {}}]}).startswith(
        "actions[0].queries[0]: must be a string, not 16"
    )
    assert _error({"actions": [{"queries": ["PatientID"], "keepTag": True}]}).startswith(
        "actions[0].keepTag: must be a JSON object"
    )
    assert _error({"options": {"cleanDescriptors": True}}).startswith(
        "options.cleanDescriptors: must be a JSON object"
    )
    assert _error('{"config": [1]}').startswith("config: must be a JSON object")


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text('["PatientID"]', encoding="utf-8")
    assert _error(path) == "(top level): must be a JSON object, not a JSON array"


def test_legacy_dicom_block() -> None:
    """Google's v1 DicomConfig loads (config/google.py); mixing it with v1beta1 fields is
    refused."""
    config = load_config({"config": {"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}}})
    assert config.profile is ProfileType.KEEP_ALL
    assert config.primary_ids is PrimaryIds.REGEN
    assert _error({"keepList": {"tags": ["PatientID"]}, "actions": []}).startswith(
        "(top level): mixes the v1 DicomConfig")


def test_contradictory_date_options_via_dicom_deid() -> None:
    doc = {
        "dicomTagConfig": {},
        "dicomDeid": {"ps315Options": ["RetainLongFullDates", "RetainLongModifDates"]},
    }
    message = _error(doc)
    assert message.startswith("dicomDeid.ps315Options: options RETAIN_LONGITUDINAL_FULL_DATES")
    assert "exclude each other" in message


def test_dicom_deid_field_errors() -> None:
    doc = {"dicomTagConfig": {}, "dicomDeid": {"ps315Options": ["RetainUIDs", "RetainAll"]}}
    assert _error(doc).startswith("dicomDeid.ps315Options[1]: 'RetainAll' is not a PS3.15 option")
    doc = {"config": {"dicomDeid": {"idPrefix": "HOSPITAL-A"}}}
    assert _error(doc).startswith("config.dicomDeid.idPrefix: at most 6 ASCII")
    doc = {"dicomDeid": {"maxDateShiftDays": 0}}
    assert _error(doc).startswith("dicomDeid.maxDateShiftDays: must be between")
    doc = {"dicomDeid": {"maxDateShiftDays": 36.5}}
    assert _error(doc).startswith("dicomDeid.maxDateShiftDays: must be a whole number")


def test_dicom_deid_in_the_wrong_place() -> None:
    message = _error({"dicomTagConfig": {"dicomDeid": {}}})
    assert message.startswith("dicomTagConfig.dicomDeid: the dicomDeid extension belongs")
    message = _error({"profileType": "KEEP_ALL_PROFILE", "dicomDeid": {}})
    assert message.startswith("profileType: DicomTagConfig fields go inside dicomTagConfig")


def test_conflicting_image_blocks() -> None:
    doc = {
        "dicomTagConfig": {"options": {"cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT"}}},
        "image": {"textRedactionMode": "REDACT_NO_TEXT"},
    }
    assert _error(doc).startswith("image: conflicts with dicomTagConfig.options.cleanImage")


def test_unsupported_blocks_and_request_without_config() -> None:
    assert _error({"annotation": {"annotationStoreName": "x"}}).startswith("annotation:")
    assert _error({"gcsConfigUri": "gs://b/c.json"}).startswith("gcsConfigUri: download")
    assert _error({"destinationStore": "x"}).startswith("config: required")
    assert _error({"useRegionalDataProcessing": "yes"}).startswith(
        "useRegionalDataProcessing: must be true or false"
    )


def test_messages_never_echo_long_values() -> None:
    phi = "Yamada^Tarou MRN1234567 born 1978-02-03 living at 1-2-3 Chiyoda Tokyo"
    message = _error({"actions": [_action([phi], "keepTag")]})
    assert phi not in message
    assert "Tokyo" not in message
    assert len(message) < 160
    message = _error({phi: 1})
    assert "Tokyo" not in message


def test_json_errors(tmp_path: Path) -> None:
    assert _error('{"actions": [}').startswith("config: not valid JSON (line 1")
    assert _error('{"actions": [], "actions": []}').startswith("config: duplicate key 'actions'")
    missing = tmp_path / "missing.json"
    assert _error(missing).startswith(f"{missing}: cannot read the config file")


# --- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("basic", ProfileType.BASIC),
        ("ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE", ProfileType.BASIC),
        ("minimal-keep-list", ProfileType.MINIMAL_KEEP_LIST),
        ("keep-all", ProfileType.KEEP_ALL),
        ("KEEP_ALL_PROFILE", ProfileType.KEEP_ALL),
        ("deidentify-tag-contents", ProfileType.DEIDENTIFY_TAG_CONTENTS),
    ],
)
def test_config_from_options_profiles(name: str, profile: ProfileType) -> None:
    assert config_from_options(name, []).profile is profile


def test_config_from_options_options_and_fields() -> None:
    config = config_from_options(
        "basic", ["RetainUIDs", "clean-descriptors"], id_prefix="HOSP", max_date_shift_days=90
    )
    assert config.options == {Option.RETAIN_UIDS, Option.CLEAN_DESCRIPTORS}
    assert (config.id_prefix, config.max_date_shift_days) == ("HOSP", 90)


def test_config_from_options_errors() -> None:
    with pytest.raises(ConfigError, match=r"^--profile: 'strict' is not a profile"):
        config_from_options("strict", [])
    with pytest.raises(ConfigError, match=r"^--option: 'RetainAll' is not a PS3.15 option"):
        config_from_options("basic", ["RetainAll"])
    with pytest.raises(ConfigError, match=r"^--option: .*exclude each other"):
        config_from_options("basic", ["RetainLongFullDates", "RetainLongModifDates"])
    with pytest.raises(ConfigError, match=r"^--id-prefix: at most 6"):
        config_from_options("basic", [], id_prefix="TOO LONG")
