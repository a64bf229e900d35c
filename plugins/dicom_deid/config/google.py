"""Load a Google Cloud Healthcare API de-identification config into a DeidConfig.

Users paste the JSON they use with Google's ``deidentify`` method, unchanged, from the
v1beta1 API (``dicomTagConfig``) or the GA v1 API (``dicom``: ``DicomConfig``, mapped onto
the same model by :func:`_parse_dicom_config`). Accepted shapes:

* a bare ``DicomTagConfig``: ``{"profileType": ..., "actions": [...], "options": {...}}``,
  or a bare v1 ``DicomConfig``: ``{"filterProfile": ..., "skipIdRedaction": ...}``;
* a ``DeidentifyConfig``: ``{"dicomTagConfig": {...}, "text": {...}, ...}`` (or
  ``{"dicom": {...}, ...}``, not both), optionally
  with our extension block ``"dicomDeid": {"ps315Options": [...], "idPrefix": "HOSP",
  "maxDateShiftDays": 365}``;
* a request body: ``{"config": {...DeidentifyConfig...}, "destinationStore": ...}``
  (the siblings of ``config`` describe Google resources and are ignored).

Validation is complete and pure: any problem raises :class:`ConfigError` naming the JSON
path (``config.dicomTagConfig.actions[2].queries[0]``) before any DICOM file is touched.
That includes what Google would accept but this tool cannot honour: retain options with
a profile other than the Basic Profile, ``primaryIds: REGEN`` with RetainUIDs
(:func:`~.model.profile_conflict`), and actions that would change what the output needs
unchanged (:func:`~.model.protected_action_problem`).
Messages quote at most the short offending token, never a whole value.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydicom.datadict import RepeatersDictionary, dictionary_VR, keyword_dict

from dicom_deid.errors import ConfigError

from .model import (
    BASIC_PROFILE_ALIASES,
    IMAGE_PIXEL_KEYWORDS,
    INFO_TYPES,
    STRUCTURAL_KEYWORDS,
    DeidConfig,
    ImageConfig,
    OcrScope,
    Option,
    PrimaryIds,
    ProfileType,
    QueryKind,
    TagAction,
    TagActionKind,
    TagQuery,
    TextConfig,
    TextRedactionMode,
    Transformation,
    TransformationKind,
    parse_options,
    profile_conflict,
    protected_action_problem,
    split_clean_pixel_data,
    unsupported_option,
)

__all__ = ["VALUE_REPRESENTATIONS", "ConfigError", "config_from_options", "load_config"]


VALUE_REPRESENTATIONS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF"}
    | {"OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN"}
    | {"UR", "US", "UT", "UV"}
)
"""VRs a query may name (PS3.5 Table 6.2-1)."""

PIXEL_DATA = 0x7FE00010

# What Google documents each action kind to support (other kinds take any attribute).
_ACTION_VRS: dict[TagActionKind, frozenset[str]] = {
    TagActionKind.CLEAN_TEXT: frozenset(
        ["AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "DA", "DT", "AS"]
    ),
    TagActionKind.REGEN_UID: frozenset({"UI"}),
    TagActionKind.RECURSE: frozenset({"SQ"}),
}
_ANY_ATTRIBUTE = frozenset(
    {TagActionKind.KEEP, TagActionKind.REMOVE, TagActionKind.DELETE, TagActionKind.RESET}
)

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_MAX_TOKEN = 40

# --- JSON field names ----------------------------------------------------------------------

_REQUEST_SIBLINGS = frozenset(
    {
        "destinationStore",
        "destinationDataset",
        "filterConfig",
        "gcsConfigUri",
        "resourceFilter",
        "skipModifiedResources",
    }
)
_DEIDENTIFY_KEYS = frozenset(
    {
        "dicomTagConfig",
        "dicom",
        "text",
        "image",
        "fhir",
        "fhirFieldConfig",
        "operationMetadata",
        "useRegionalDataProcessing",
        "annotation",
        "dicomDeid",
    }
)
_IGNORED_DEIDENTIFY_KEYS = frozenset({"fhir", "fhirFieldConfig", "operationMetadata"})
_TAG_CONFIG_KEYS = frozenset({"profileType", "actions", "options"})
_DICOM_CONFIG_KEYS = frozenset({"filterProfile", "keepList", "removeList", "skipIdRedaction"})
"""Fields of the GA (v1) ``DicomConfig`` (``DeidentifyConfig.dicom``)."""
_TAG_FILTERS = ("filterProfile", "keepList", "removeList")
"""The ``tag_filter`` oneof of ``DicomConfig``: at most one of them."""
_OPTIONS_KEYS = frozenset({"primaryIds", "cleanDescriptors", "cleanImage"})
_IMAGE_KEYS = frozenset({"textRedactionMode", "additionalInfoTypes", "excludeInfoTypes"})
_TEXT_KEYS = frozenset(
    {"transformations", "additionalTransformations", "excludeInfoTypes", "profileType"}
)
_EXTENSION_KEYS = frozenset(
    {"ps315Options", "idPrefix", "maxDateShiftDays", "pixelRules", "ocrScope", "residualSweep"}
)
_KEY_FIELDS = ("cryptoKey", "kmsWrapped")

_PROFILES: dict[str, ProfileType] = {
    "PROFILE_TYPE_UNSPECIFIED": ProfileType.BASIC,
    **{p.value: p for p in ProfileType},
}
"""v1beta1 ``DicomTagConfig.profileType``: unspecified is the Basic Profile, as Google
documents it."""
_FILTER_PROFILES: dict[str, ProfileType] = {
    "TAG_FILTER_PROFILE_UNSPECIFIED": ProfileType.KEEP_ALL,
    **{p.value: p for p in ProfileType},
}
"""v1 ``DicomConfig.filterProfile``: unspecified (or unset) is KEEP_ALL_PROFILE, as Google
documents it ("No tag filtration profile provided. Same as KEEP_ALL_PROFILE")."""
_PRIMARY_UID_KEYWORDS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID",
)
"""What v1's ``skipIdRedaction`` keeps when true and regenerates when false (the default)."""
_PRIMARY_IDS: dict[str, PrimaryIds] = {p.value: p for p in PrimaryIds}
_REDACTION_MODES: dict[str, TextRedactionMode] = {
    "TEXT_REDACTION_MODE_UNSPECIFIED": TextRedactionMode.REDACT_NO_TEXT,
    **{m.value: m for m in TextRedactionMode},
}
_SENSITIVE_MODES = frozenset(
    {
        TextRedactionMode.REDACT_SENSITIVE_TEXT,
        TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS,
    }
)
_TEXT_PROFILES = frozenset({"PROFILE_TYPE_UNSPECIFIED", "BASIC", "EMPTY"})

_REPEATER_KEYWORDS: dict[str, str] = {
    entry[4]: mask for mask, entry in RepeatersDictionary.items() if entry[4]
}

E = TypeVar("E", bound=Enum)


# --- small helpers ---------------------------------------------------------------------------


def _tok(value: object) -> str:
    """Quote a user token for a message: short strings only, other values by type."""
    if isinstance(value, str):
        short = value if len(value) <= _MAX_TOKEN else value[:_MAX_TOKEN] + "..."
        return repr(short)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return f"a JSON {'array' if isinstance(value, list | tuple) else 'object'}"


def _key(path: str, key: str) -> str:
    safe = key if len(key) <= _MAX_TOKEN and key.isprintable() else _tok(key)
    return f"{path}.{safe}" if path else safe


def _fail(path: str, message: str) -> NoReturn:
    raise ConfigError(f"{path or '(top level)'}: {message}")


def _camel(key: str) -> str:
    """Proto3 JSON also accepts the original snake_case field names."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)


def _object(value: object, path: str, allowed: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """Check a JSON object's keys; return ``{camelCaseKey: (path of the field, value)}``.

    ``null`` fields count as absent (proto3 JSON semantics).
    """
    if not isinstance(value, Mapping):
        _fail(path, f"must be a JSON object, not {_tok(value)}")
    allowed = frozenset(allowed)
    out: dict[str, tuple[str, Any]] = {}
    for raw_key, item in value.items():
        if not isinstance(raw_key, str):
            _fail(path, "object keys must be strings")
        key = _camel(raw_key)
        field_path = _key(path, raw_key)
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            _fail(
                field_path,
                f"unknown key; expected one of: {expected}"
                if expected
                else "unknown key; this object takes no fields ({})",
            )
        if key in out:
            _fail(field_path, "given twice (camelCase and snake_case spellings)")
        if item is not None:
            out[key] = (field_path, item)
    return out


def _empty_message(value: object, path: str) -> None:
    """Fields such as ``keepTag`` or ``redactConfig`` hold an empty object ``{}``."""
    _object(value, path, ())


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"must be a JSON array, not {_tok(value)}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string, not {_tok(value)}")
    return value


def _enum(value: object, path: str, choices: Mapping[str, E]) -> E:
    text = _string(value, path)
    if text not in choices:
        _fail(path, f"{_tok(text)} is not one of: {', '.join(choices)}")
    return choices[text]


def _info_types(value: object, path: str) -> tuple[str, ...]:
    names: list[str] = []
    for i, item in enumerate(_list(value, path)):
        name = _string(item, f"{path}[{i}]")
        if name not in INFO_TYPES:
            _fail(
                f"{path}[{i}]",
                f"{_tok(name)} is not a supported infoType; supported: "
                + ", ".join(sorted(INFO_TYPES)),
            )
        names.append(name)
    return tuple(names)


# --- queries and actions ---------------------------------------------------------------------


def _describe(query: str, vr: str | None) -> str:
    return f"{query} (VR {vr})" if vr else f"{query} (VR unknown)"


def _tag_vr(tag: int, path: str, query: str) -> str | None:
    """Dictionary VR of a tag; None for a private or group-length tag; error if unknown."""
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1:
        return None
    if element == 0:
        return "UL"
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        _fail(path, f"{_tok(query)} is not in the DICOM data dictionary (a typo?)")


def _check_query(kind: TagActionKind, query: TagQuery, vr: str | None, path: str) -> None:
    """Enforce what Google documents each action kind to support."""
    text = query.keyword or (f"{query.tag:08X}" if query.tag is not None else query.vr or "")
    if kind is TagActionKind.CLEAN_IMAGE:
        if query.tag != PIXEL_DATA:
            _fail(path, f"cleanImageTag supports PixelData (7FE00010) only, not {text}")
        return
    if kind in _ANY_ATTRIBUTE:
        return
    allowed = _ACTION_VRS[kind]
    if query.kind is QueryKind.VR:
        if query.vr not in allowed:
            _fail(path, f"{kind.value} supports VR {', '.join(sorted(allowed))} only, not {text}")
        return
    if vr is None or not set(vr.split(" or ")) <= allowed:
        _fail(
            path,
            f"{kind.value} supports VR {', '.join(sorted(allowed))} only; "
            f"{_describe(text, vr)} is not one",
        )


def _suggest(query: str) -> str:
    close = difflib.get_close_matches(query, [k for k in keyword_dict if k], n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_query(raw: object, path: str, kind: TagActionKind) -> TagQuery:
    query = _string(raw, path)
    vr: str | None
    if _HEX_TAG.fullmatch(query):
        tag = int(query, 16)
        vr = _tag_vr(tag, path, query)
        parsed = TagQuery(QueryKind.TAG, tag=tag)
    elif query and query in keyword_dict:
        tag = keyword_dict[query]
        vr = str(dictionary_VR(tag))
        parsed = TagQuery(QueryKind.KEYWORD, tag=tag, keyword=query)
    elif query in VALUE_REPRESENTATIONS:
        vr = query
        parsed = TagQuery(QueryKind.VR, vr=query)
    elif query in _REPEATER_KEYWORDS:
        _fail(
            path,
            f"{query} is a repeating-group keyword ({_REPEATER_KEYWORDS[query]}); "
            "list its tag IDs instead, e.g. "
            + repr(_REPEATER_KEYWORDS[query].upper().replace("X", "0")),
        )
    else:
        _fail(path, f"{_tok(query)} is not a tag ID, keyword or VR{_suggest(query)}")
    _check_query(kind, parsed, vr, path)
    return parsed


def _parse_action(raw: object, path: str) -> TagAction:
    fields = _object(raw, path, {"queries", *(k.value for k in TagActionKind)})
    kinds = [k for k in TagActionKind if k.value in fields]
    if len(kinds) != 1:
        names = ", ".join(k.value for k in kinds) or "none"
        _fail(
            path,
            f"an action needs exactly one of {', '.join(k.value for k in TagActionKind)}; "
            f"found {names}",
        )
    kind = kinds[0]
    kind_path, body = fields[kind.value]
    image: ImageConfig | None = None
    if kind is TagActionKind.CLEAN_IMAGE:
        image = _parse_image(body, kind_path)
    else:
        _empty_message(body, kind_path)
    if "queries" not in fields:
        _fail(_key(path, "queries"), "required: a non-empty list of tag IDs, keywords or VRs")
    queries_path, queries_raw = fields["queries"]
    items = _list(queries_raw, queries_path)
    if not items:
        _fail(queries_path, "must not be empty")
    queries = tuple(
        _parse_query(item, f"{queries_path}[{i}]", kind) for i, item in enumerate(items)
    )
    return TagAction(queries=queries, kind=kind, image=image)


# --- options, images, text -------------------------------------------------------------------


def _parse_image(raw: object, path: str) -> ImageConfig:
    fields = _object(raw, path, _IMAGE_KEYS)
    mode = TextRedactionMode.REDACT_NO_TEXT
    unspecified = True
    if "textRedactionMode" in fields:
        mode_path, value = fields["textRedactionMode"]
        mode = _enum(value, mode_path, _REDACTION_MODES)
        unspecified = value == "TEXT_REDACTION_MODE_UNSPECIFIED"
    additional: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    if "additionalInfoTypes" in fields:
        sub, value = fields["additionalInfoTypes"]
        additional = _info_types(value, sub)
        if additional and mode not in _SENSITIVE_MODES and not unspecified:
            _fail(sub, f"cannot be used with textRedactionMode {mode.value}")
    if "excludeInfoTypes" in fields:
        sub, value = fields["excludeInfoTypes"]
        exclude = _info_types(value, sub)
        if exclude and mode not in _SENSITIVE_MODES:
            _fail(sub, f"cannot be used with textRedactionMode {mode.value}")
    return ImageConfig(
        text_redaction_mode=mode, additional_info_types=additional, exclude_info_types=exclude
    )


def _parse_options(raw: object, path: str) -> tuple[PrimaryIds, bool, ImageConfig | None]:
    fields = _object(raw, path, _OPTIONS_KEYS)
    primary = PrimaryIds.UNSPECIFIED
    if "primaryIds" in fields:
        primary = _enum(fields["primaryIds"][1], fields["primaryIds"][0], _PRIMARY_IDS)
    clean_descriptors = "cleanDescriptors" in fields
    if clean_descriptors:
        _empty_message(fields["cleanDescriptors"][1], fields["cleanDescriptors"][0])
    image = None
    if "cleanImage" in fields:
        image = _parse_image(fields["cleanImage"][1], fields["cleanImage"][0])
    return primary, clean_descriptors, image


def _parse_key_holder(raw: object, path: str) -> None:
    """``cryptoHashConfig`` / ``dateShiftConfig``: accepted only without key material."""
    if isinstance(raw, Mapping):
        for name in raw:
            if isinstance(name, str) and _camel(name) in _KEY_FIELDS:
                _fail(
                    _key(path, name),
                    "keys never come from config files: remove it; the run's managed HMAC "
                    "key (from the secrets backend or key file) is used instead",
                )
    _empty_message(raw, path)


def _parse_transformation(raw: object, path: str) -> Transformation:
    kinds_by_field = {k.value: k for k in TransformationKind}
    fields = _object(raw, path, {"infoTypes", *kinds_by_field})
    kinds = [k for name, k in kinds_by_field.items() if name in fields]
    if len(kinds) != 1:
        names = ", ".join(k.value for k in kinds) or "none"
        _fail(path, f"needs exactly one of {', '.join(kinds_by_field)}; found {names}")
    kind = kinds[0]
    info_types: tuple[str, ...] = ()
    if "infoTypes" in fields:
        info_types = _info_types(fields["infoTypes"][1], fields["infoTypes"][0])
    body_path, body = fields[kind.value]
    mask = "*"
    if kind is TransformationKind.CHARACTER_MASK:
        mask_fields = _object(body, body_path, {"maskingCharacter"})
        if "maskingCharacter" in mask_fields:
            mask_path, value = mask_fields["maskingCharacter"]
            mask = _string(value, mask_path) or "*"
            if len(mask) != 1:
                _fail(mask_path, f"must be one character, not {len(mask)}")
    elif kind in (TransformationKind.CRYPTO_HASH, TransformationKind.DATE_SHIFT):
        _parse_key_holder(body, body_path)
    else:
        _empty_message(body, body_path)
    return Transformation(kind=kind, info_types=info_types, masking_character=mask)


def _transformations(fields: dict[str, tuple[str, Any]], name: str) -> tuple[Transformation, ...]:
    if name not in fields:
        return ()
    path, value = fields[name]
    return tuple(
        _parse_transformation(item, f"{path}[{i}]") for i, item in enumerate(_list(value, path))
    )


def _parse_text(raw: object, path: str) -> TextConfig:
    fields = _object(raw, path, _TEXT_KEYS)
    transformations = _transformations(fields, "transformations")
    additional = _transformations(fields, "additionalTransformations")
    exclude: tuple[str, ...] = ()
    if "excludeInfoTypes" in fields:
        exclude = _info_types(fields["excludeInfoTypes"][1], fields["excludeInfoTypes"][0])
    profile = "BASIC"
    if "profileType" in fields:
        profile_path, value = fields["profileType"]
        profile = _string(value, profile_path)
        if profile not in _TEXT_PROFILES:
            _fail(
                profile_path, f"{_tok(profile)} is not one of: {', '.join(sorted(_TEXT_PROFILES))}"
            )
    if profile == "EMPTY" and not transformations:
        # Only what is configured applies: nothing is the default for other spans.
        if additional:
            transformations, additional = additional, ()
        else:
            exclude = tuple(sorted(INFO_TYPES))
    return TextConfig(
        transformations=transformations,
        additional_transformations=additional,
        exclude_info_types=exclude,
    )


# --- the DicomTagConfig and its envelopes ----------------------------------------------------


class _TagPart:
    """What a DicomTagConfig (v1beta1) or DicomConfig (v1) contributes to the DeidConfig,
    with the JSON paths its messages name."""

    def __init__(self) -> None:
        self.profile = ProfileType.BASIC
        self.actions: tuple[TagAction, ...] = ()
        self.query_paths: tuple[tuple[str, ...], ...] = ()
        """For each action, the JSON path of each of its queries."""
        self.labels: tuple[str, ...] = ()
        """For each action, how messages name it ("" = "<its JSON field> on", e.g.
        "deleteTag on"; a v1 list's: "removing")."""
        self.primary_ids = PrimaryIds.UNSPECIFIED
        self.primary_ids_path = ""
        self.v1 = False
        """True: from a v1 DicomConfig (primaryIds comes from skipIdRedaction)."""
        self.clean_descriptors = False
        self.clean_image: ImageConfig | None = None
        self.clean_image_path = ""

    def check_protected(self) -> None:
        """Refuse an action that would change an attribute the output needs unchanged."""
        problem = protected_action_problem(self.actions)
        if problem is not None:
            index, query, message = problem
            label = self.labels[index] if self.labels else ""
            if label:
                message = message.replace(f"{self.actions[index].kind.value} on", label, 1)
            _fail(self.query_paths[index][query], message)


def _mixed_versions(path: str, keys: set[str]) -> NoReturn:
    v1 = ", ".join(sorted(keys & _DICOM_CONFIG_KEYS))
    v1beta1 = ", ".join(sorted(keys & _TAG_CONFIG_KEYS))
    _fail(
        path,
        f"mixes the v1 DicomConfig ({v1}; it goes in \"dicom\") with the v1beta1 "
        f"DicomTagConfig ({v1beta1}; it goes in \"dicomTagConfig\"): give one of them",
    )


def _parse_tag_config(raw: object, path: str) -> _TagPart:
    if isinstance(raw, Mapping):
        keys = {_camel(k) for k in raw if isinstance(k, str)}
        if keys & _DICOM_CONFIG_KEYS:
            if keys & _TAG_CONFIG_KEYS:
                _mixed_versions(path, keys)
            if path:
                _fail(
                    _key(path, sorted(keys & _DICOM_CONFIG_KEYS)[0]),
                    "a v1 DicomConfig field: the v1 DicomConfig goes in \"dicom\", "
                    "not in \"dicomTagConfig\"",
                )
        if "dicomDeid" in keys:
            _fail(
                _key(path, "dicomDeid"),
                "the dicomDeid extension belongs at the DeidentifyConfig level: "
                'write {"dicomTagConfig": {...}, "dicomDeid": {...}}',
            )
    fields = _object(raw, path, _TAG_CONFIG_KEYS)
    part = _TagPart()
    if "profileType" in fields:
        part.profile = _enum(fields["profileType"][1], fields["profileType"][0], _PROFILES)
    if "actions" in fields:
        actions_path, value = fields["actions"]
        items = _list(value, actions_path)
        part.actions = tuple(
            _parse_action(item, f"{actions_path}[{i}]") for i, item in enumerate(items)
        )
        part.query_paths = tuple(
            tuple(f"{actions_path}[{i}].queries[{j}]" for j in range(len(action.queries)))
            for i, action in enumerate(part.actions)
        )
    if "options" in fields:
        options_path, value = fields["options"]
        part.primary_ids, part.clean_descriptors, part.clean_image = _parse_options(
            value, options_path
        )
        part.primary_ids_path = _key(options_path, "primaryIds")
        part.clean_image_path = _key(options_path, "cleanImage")
    part.check_protected()
    return part


# --- the v1 DicomConfig ---------------------------------------------------------------------


def _keyword_queries(keywords: Iterable[str]) -> tuple[TagQuery, ...]:
    return tuple(
        TagQuery(QueryKind.KEYWORD, tag=int(keyword_dict[k]), keyword=k) for k in keywords
    )


_READABLE_KEEP = _keyword_queries((*STRUCTURAL_KEYWORDS, *IMAGE_PIXEL_KEYWORDS))
"""Attributes a keepList always keeps: without them the output is not a readable instance
(their actions are refused for the same reason: model.protected_action_problem)."""
_EVERY_VR = tuple(TagQuery(QueryKind.VR, vr=vr) for vr in sorted(VALUE_REPRESENTATIONS))
"""Selects every attribute, private ones included: keepList's "remove all others"."""


def _parse_tag_list(raw: object, path: str, kind: TagActionKind) -> tuple[TagQuery, ...]:
    """A ``TagFilterList``: ``{"tags": [...]}``, DICOM keywords or tag IDs (not VRs)."""
    fields = _object(raw, path, {"tags"})
    if "tags" not in fields:
        return ()
    tags_path, value = fields["tags"]
    queries: list[TagQuery] = []
    for i, item in enumerate(_list(value, tags_path)):
        query = _parse_query(item, f"{tags_path}[{i}]", kind)
        if query.kind is QueryKind.VR:
            _fail(
                f"{tags_path}[{i}]",
                f"{query.vr} is a VR; a tag list takes DICOM keywords or tag IDs "
                "(select by VR with dicomTagConfig actions)",
            )
        queries.append(query)
    return tuple(queries)


def _parse_dicom_config(raw: object, path: str) -> _TagPart:
    """Google's GA (v1) ``DicomConfig`` as the same model a DicomTagConfig gives.

    * ``filterProfile``: the profile (``TAG_FILTER_PROFILE_UNSPECIFIED`` or unset:
      KEEP_ALL_PROFILE, as Google documents);
    * ``keepList``: keep these tags, remove all others (deleteTag, read per IOD as
      deleteTag always is); the attributes a readable instance needs are kept too;
    * ``removeList``: remove these tags (deleteTag), keep all others;
    * ``skipIdRedaction``: true keeps Study/Series/SOP/MediaStorageSOP Instance UIDs
      (primaryIds KEEP); false, the default, regenerates them (primaryIds REGEN), as
      Google does by default, whatever the profile or list.

    The three tag filters are Google's ``tag_filter`` oneof: at most one is given.
    """
    if isinstance(raw, Mapping):
        keys = {_camel(k) for k in raw if isinstance(k, str)}
        if keys & _TAG_CONFIG_KEYS:
            if keys & _DICOM_CONFIG_KEYS:
                _mixed_versions(path, keys)
            _fail(
                _key(path, sorted(keys & _TAG_CONFIG_KEYS)[0]),
                "a v1beta1 DicomTagConfig field: it goes in \"dicomTagConfig\"; the v1 "
                "DicomConfig takes filterProfile, keepList, removeList, skipIdRedaction",
            )
    fields = _object(raw, path, _DICOM_CONFIG_KEYS)
    filters = [name for name in _TAG_FILTERS if name in fields]
    if len(filters) > 1:
        _fail(
            fields[filters[1]][0],
            f"filterProfile, keepList and removeList are alternatives (one tag filter); "
            f"found {', '.join(filters)}",
        )
    part = _TagPart()
    part.v1 = True
    part.profile = ProfileType.KEEP_ALL
    skip = False
    part.primary_ids_path = _key(path, "skipIdRedaction")
    if "skipIdRedaction" in fields:
        part.primary_ids_path, flag = fields["skipIdRedaction"]
        if not isinstance(flag, bool):
            _fail(part.primary_ids_path, f"must be true or false, not {_tok(flag)}")
        skip = flag
    part.primary_ids = PrimaryIds.KEEP if skip else PrimaryIds.REGEN
    if "filterProfile" in fields:
        profile_path, value = fields["filterProfile"]
        part.profile = _enum(value, profile_path, _FILTER_PROFILES)
        return part
    if not filters:
        return part
    list_path, value = fields[filters[0]]
    keep = filters[0] == "keepList"
    kind = TagActionKind.KEEP if keep else TagActionKind.DELETE
    listed = _parse_tag_list(value, list_path, kind)
    listed_paths = tuple(f"{list_path}.tags[{i}]" for i in range(len(listed)))
    # Explicit actions win over primaryIds (plan.py), so under a list the primary UIDs'
    # fate is an action of its own, first: the list neither keeps nor removes them.
    primary = TagAction(
        _keyword_queries(_PRIMARY_UID_KEYWORDS),
        TagActionKind.KEEP if skip else TagActionKind.REGEN_UID,
    )
    if skip and not keep:
        for query, query_path in zip(listed, listed_paths, strict=True):
            if query.keyword in _PRIMARY_UID_KEYWORDS or (
                query.tag in {int(keyword_dict[k]) for k in _PRIMARY_UID_KEYWORDS}
            ):
                _fail(query_path, "skipIdRedaction true keeps this UID: remove it from the "
                      "list, or set skipIdRedaction false")
    primary_paths = (part.primary_ids_path,) * len(primary.queries)
    if keep:
        actions = [primary, TagAction(_READABLE_KEEP, TagActionKind.KEEP)]
        paths = [primary_paths, (list_path,) * len(_READABLE_KEEP)]
        if listed:
            actions.append(TagAction(listed, TagActionKind.KEEP))
            paths.append(listed_paths)
        actions.append(TagAction(_EVERY_VR, TagActionKind.DELETE))
        paths.append((list_path,) * len(_EVERY_VR))
    else:
        actions, paths = [primary], [primary_paths]
        if listed:
            actions.append(TagAction(listed, TagActionKind.DELETE))
            paths.append(listed_paths)
    part.actions, part.query_paths = tuple(actions), tuple(paths)
    part.labels = tuple(
        "" if action is primary else ("keeping" if keep else "removing") for action in actions
    )
    part.check_protected()
    return part


class _Extension:
    """Our ``dicomDeid`` block: PS3.15 options and pseudonym settings."""

    def __init__(self) -> None:
        self.options: frozenset[Option] = frozenset()
        self.id_prefix = ""
        self.max_date_shift_days = 365
        self.clean_pixel_data = False
        self.pixel_rules = ""
        self.ocr_scope = OcrScope.AUTO
        self.residual_sweep = True
        self.path = "dicomDeid"
        self.options_path = "dicomDeid.ps315Options"


def _check_option_name(name: str, path: str) -> None:
    """Fail unless ``name`` is an option this tool implements, telling a real PS3.15
    option it does not support apart from a name that is no option at all."""
    unsupported = unsupported_option(name)
    if unsupported:
        _fail(path, unsupported)
    try:
        parse_options([name])
    except ConfigError:
        known = ", ".join(sorted(o.name for o in Option))
        _fail(path, f"{_tok(name)} is not a PS3.15 option; known: {known}")


def _parse_extension(raw: object, path: str) -> _Extension:
    fields = _object(raw, path, _EXTENSION_KEYS)
    ext = _Extension()
    ext.path = path
    if "ps315Options" in fields:
        opt_path, value = fields["ps315Options"]
        names = [_string(item, f"{opt_path}[{i}]") for i, item in enumerate(_list(value, opt_path))]
        ext.clean_pixel_data, names = split_clean_pixel_data(names)
        for i, name in enumerate(names):
            _check_option_name(name, f"{opt_path}[{i}]")
        try:
            ext.options = parse_options(names)
        except ConfigError as exc:
            _fail(opt_path, str(exc))
        ext.options_path = opt_path
    if "idPrefix" in fields:
        ext.id_prefix = _string(fields["idPrefix"][1], fields["idPrefix"][0])
    if "maxDateShiftDays" in fields:
        days_path, value = fields["maxDateShiftDays"]
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(days_path, f"must be a whole number of days, not {_tok(value)}")
        ext.max_date_shift_days = value
    if "pixelRules" in fields:
        ext.pixel_rules = _string(fields["pixelRules"][1], fields["pixelRules"][0])
    if "ocrScope" in fields:
        ext.ocr_scope = _enum(
            fields["ocrScope"][1], fields["ocrScope"][0], {s.value: s for s in OcrScope}
        )
    if "residualSweep" in fields:
        sweep_path, value = fields["residualSweep"]
        if not isinstance(value, bool):
            _fail(sweep_path, f"must be true or false, not {_tok(value)}")
        ext.residual_sweep = value
    return ext


def _build(
    part: _TagPart, text: TextConfig, ext: _Extension, image: tuple[str, ImageConfig] | None
) -> DeidConfig:
    clean_image = part.clean_image
    if image is not None:
        image_path, top_image = image
        if clean_image is not None and clean_image != top_image:
            _fail(image_path, f"conflicts with {part.clean_image_path}: give one of them")
        clean_image = top_image
    options = set(ext.options)
    if part.clean_descriptors:
        options.add(Option.CLEAN_DESCRIPTORS)
    conflict = profile_conflict(part.profile, frozenset(options), part.primary_ids)
    if conflict is not None:
        field_name, message = conflict
        if field_name == "options":
            _fail(ext.options_path, message)
        if part.v1:
            _fail(part.primary_ids_path, "skipIdRedaction false (the default) "
                  + message.removeprefix("REGEN ").replace("drop primaryIds REGEN",
                                                          "set skipIdRedaction true"))
        _fail(part.primary_ids_path, "primaryIds " + message)
    try:
        return DeidConfig(
            profile=part.profile,
            options=frozenset(options),
            actions=part.actions,
            primary_ids=part.primary_ids,
            clean_image=clean_image,
            text=text,
            id_prefix=ext.id_prefix,
            max_date_shift_days=ext.max_date_shift_days,
            clean_pixel_data=ext.clean_pixel_data,
            pixel_rules=ext.pixel_rules,
            ocr_scope=ext.ocr_scope,
            residual_sweep=ext.residual_sweep,
        )
    except ConfigError as exc:
        message = str(exc)
        field_name, _, detail = message.partition(": ")
        json_name = {"id_prefix": "idPrefix", "max_date_shift_days": "maxDateShiftDays"}
        if field_name in json_name:
            _fail(_key(ext.path, json_name[field_name]), detail)
        _fail("", message)


def _parse_deidentify(raw: object, path: str) -> DeidConfig:
    fields = _object(raw, path, _DEIDENTIFY_KEYS)
    if "dicom" in fields and "dicomTagConfig" in fields:
        _fail(
            fields["dicom"][0],
            "give either dicom (the v1 DicomConfig) or dicomTagConfig (v1beta1), not both",
        )
    if "annotation" in fields:
        _fail(fields["annotation"][0], "annotation stores are not supported: remove the block")
    if "useRegionalDataProcessing" in fields:
        flag_path, flag = fields["useRegionalDataProcessing"]
        if not isinstance(flag, bool):
            _fail(flag_path, f"must be true or false, not {_tok(flag)}")
    part = _TagPart()
    if "dicomTagConfig" in fields:
        part = _parse_tag_config(fields["dicomTagConfig"][1], fields["dicomTagConfig"][0])
    elif "dicom" in fields:
        part = _parse_dicom_config(fields["dicom"][1], fields["dicom"][0])
    text = TextConfig()
    if "text" in fields:
        text = _parse_text(fields["text"][1], fields["text"][0])
    image = None
    if "image" in fields:
        image = (fields["image"][0], _parse_image(fields["image"][1], fields["image"][0]))
    ext = _Extension()
    ext.path = _key(path, "dicomDeid")
    if "dicomDeid" in fields:
        ext = _parse_extension(fields["dicomDeid"][1], fields["dicomDeid"][0])
    return _build(part, text, ext, image)


def _parse_request(raw: Mapping[str, Any]) -> DeidConfig:
    fields = _object(raw, "", {"config", *_REQUEST_SIBLINGS})
    if "config" not in fields:
        if "gcsConfigUri" in fields:
            _fail("gcsConfigUri", "download that config file and pass it here instead")
        _fail("config", "required: the DeidentifyConfig of the request")
    return _parse_deidentify(fields["config"][1], fields["config"][0])


def _parse_document(doc: object) -> DeidConfig:
    if not isinstance(doc, Mapping):
        _fail("", f"must be a JSON object, not {_tok(doc)}")
    keys = {_camel(k) for k in doc if isinstance(k, str)}
    if "config" in keys or keys & _REQUEST_SIBLINGS:
        return _parse_request(doc)
    if keys & _DEIDENTIFY_KEYS:
        for misplaced, name, holder in (
            (sorted(keys & _TAG_CONFIG_KEYS), "DicomTagConfig", "dicomTagConfig"),
            (sorted(keys & _DICOM_CONFIG_KEYS), "DicomConfig", "dicom"),
        ):
            if misplaced:
                _fail(
                    misplaced[0],
                    f"{name} fields go inside {holder} when DeidentifyConfig fields "
                    f"({', '.join(sorted(keys & _DEIDENTIFY_KEYS))}) are present",
                )
        return _parse_deidentify(doc, "")
    if keys & _DICOM_CONFIG_KEYS and not keys & _TAG_CONFIG_KEYS:
        part = _parse_dicom_config(doc, "")  # a bare v1 DicomConfig
    else:
        part = _parse_tag_config(doc, "")
    return _build(part, TextConfig(), _Extension(), None)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key {_tok(key)} in a JSON object")
        out[key] = value
    return out


def _read_json(text: str, name: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def load_config(source: str | Path | Mapping[str, Any]) -> DeidConfig:
    """Validate a Google de-identification config and turn it into a :class:`DeidConfig`.

    Parameters
    ----------
    source
        A parsed JSON object, a path to a JSON file, or JSON text (a string starting
        with ``{``).

    Raises
    ------
    ConfigError
        On anything Google would reject or this tool cannot honour, naming the JSON path.
    """
    if isinstance(source, Mapping):
        return _parse_document(source)
    if isinstance(source, str) and source.lstrip("\ufeff \t\r\n").startswith("{"):
        return _parse_document(_read_json(source.lstrip("\ufeff"), "config"))
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return _parse_document(_read_json(text, str(path)))


# --- command line ----------------------------------------------------------------------------

_PROFILE_ALIASES: dict[str, ProfileType] = {
    **dict.fromkeys(BASIC_PROFILE_ALIASES, ProfileType.BASIC),
    "profiletypeunspecified": ProfileType.BASIC,
    "minimal": ProfileType.MINIMAL_KEEP_LIST,
    "minimalkeeplist": ProfileType.MINIMAL_KEEP_LIST,
    "keepall": ProfileType.KEEP_ALL,
    "tagcontents": ProfileType.DEIDENTIFY_TAG_CONTENTS,
    "deidentifytagcontents": ProfileType.DEIDENTIFY_TAG_CONTENTS,
}
for _p in ProfileType:
    _PROFILE_ALIASES["".join(c for c in _p.value.lower() if c.isalnum())] = _p
    _PROFILE_ALIASES["".join(c for c in _p.name.lower() if c.isalnum())] = _p


def _parse_profile(name: str) -> ProfileType:
    key = "".join(c for c in name.lower() if c.isalnum())
    if key not in _PROFILE_ALIASES:
        choices = ", ".join(p.name.lower().replace("_", "-") for p in ProfileType)
        _fail("--profile", f"{_tok(name)} is not a profile; choose from {choices}")
    return _PROFILE_ALIASES[key]


def config_from_options(profile: str, options: list[str], **kw: Any) -> DeidConfig:
    """The :class:`DeidConfig` for the CLI's ``--profile`` and repeated ``--option`` flags.

    ``profile`` takes the Google name (``KEEP_ALL_PROFILE``) or a short form (``basic``,
    ``minimal-keep-list``, ``keep-all``, ``deidentify-tag-contents``); ``options`` any
    spelling :meth:`Option.parse` accepts. Other :class:`DeidConfig` fields go in ``kw``.
    """
    chosen = _parse_profile(profile)
    clean_pixel, options = split_clean_pixel_data(options)
    if clean_pixel:
        kw = {"clean_pixel_data": True, **kw}
    for name in options:
        _check_option_name(name, "--option")
    try:
        parsed = parse_options(options)
    except ConfigError as exc:
        _fail("--option", str(exc))
    conflict = profile_conflict(chosen, parsed, PrimaryIds.UNSPECIFIED)
    if conflict is not None:
        _fail("--option", conflict[1])
    try:
        return DeidConfig(profile=chosen, options=parsed, **kw)
    except ConfigError as exc:
        field_name, _, detail = str(exc).partition(": ")
        _fail(f"--{field_name.replace('_', '-')}", detail or str(exc))
