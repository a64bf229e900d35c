"""The de-identification configuration: one model for both vocabularies.

A PS3.15 profile with options and a Google Cloud Healthcare API ``DicomTagConfig``
both become a :class:`DeidConfig`. The engine only ever sees this model, so the
two vocabularies cannot drift apart in behaviour.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag

from dicom_deid.errors import ConfigError


class ProfileType(StrEnum):
    """Base profile, named as Google's ``DicomTagConfig.profileType`` names it."""

    BASIC = "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"
    """PS3.15 Annex E Basic Application Level Confidentiality Profile (the default)."""
    MINIMAL_KEEP_LIST = "MINIMAL_KEEP_LIST_PROFILE"
    """Keep only the attributes needed for a valid, usable image (data/minimal_keep_list.csv)."""
    KEEP_ALL = "KEEP_ALL_PROFILE"
    """Keep every attribute; only the explicit actions change anything."""
    DEIDENTIFY_TAG_CONTENTS = "DEIDENTIFY_TAG_CONTENTS"
    """Inspect every text-like attribute and transform sensitive text (TextConfig)."""


class Option(Enum):
    """PS3.15 Annex E profile options; the value is the column in basic_profile.csv."""

    RETAIN_SAFE_PRIVATE = "rtn_safe_priv"
    RETAIN_UIDS = "rtn_uids"
    RETAIN_DEVICE_IDENTITY = "rtn_dev_id"
    RETAIN_INSTITUTION_IDENTITY = "rtn_inst_id"
    RETAIN_PATIENT_CHARACTERISTICS = "rtn_pat_chars"
    RETAIN_LONGITUDINAL_FULL_DATES = "rtn_long_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtn_long_modif_dates"
    CLEAN_DESCRIPTORS = "clean_desc"
    CLEAN_STRUCTURED_CONTENT = "clean_struct_cont"
    CLEAN_GRAPHICS = "clean_graph"

    @classmethod
    def parse(cls, name: str) -> Option:
        """Accept the enum name, the CSV column, the PS3.15 title or an Aspose-style alias.

        A real PS3.15 option this tool does not implement is reported as such, not as
        unknown (:func:`unsupported_option`)."""
        key = "".join(ch for ch in name.lower() if ch.isalnum())
        try:
            return _OPTION_ALIASES[key]
        except KeyError:
            unsupported = unsupported_option(name)
            if unsupported:
                raise ConfigError(unsupported) from None
            known = ", ".join(sorted(o.name for o in cls))
            raise ConfigError(f"unknown PS3.15 option {name!r}; known options: {known}") from None

    @property
    def title(self) -> str:
        """The option's name as the command line and the README write it (``RetainUIDs``)."""
        return _OPTION_TITLES[self]


_OPTION_TITLES: dict[Option, str] = {
    Option.RETAIN_SAFE_PRIVATE: "RetainSafePrivate",
    Option.RETAIN_UIDS: "RetainUIDs",
    Option.RETAIN_DEVICE_IDENTITY: "RetainDeviceIdentity",
    Option.RETAIN_INSTITUTION_IDENTITY: "RetainInstitutionIdentity",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "RetainPatientCharacteristics",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "RetainLongitudinalFullDates",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "RetainLongitudinalModifiedDates",
    Option.CLEAN_DESCRIPTORS: "CleanDescriptors",
    Option.CLEAN_STRUCTURED_CONTENT: "CleanStructuredContent",
    Option.CLEAN_GRAPHICS: "CleanGraphics",
}

RETAIN_OPTIONS = frozenset({
    Option.RETAIN_SAFE_PRIVATE,
    Option.RETAIN_UIDS,
    Option.RETAIN_DEVICE_IDENTITY,
    Option.RETAIN_INSTITUTION_IDENTITY,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
    Option.RETAIN_LONGITUDINAL_FULL_DATES,
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
})
"""The PS3.15 *retain* options: each changes codes of the Basic Profile's Table E.1-1 (to
``K``, or ``C`` for modified dates) so something the Basic Profile removes is kept. They
modify the Basic Profile only: under another profile there is no Basic Profile removal
for them to relax, so they are refused there (:func:`profile_conflict`). The cleaning
options (Clean Descriptors, Structured Content, Graphics, Pixel Data) are allowed with
every profile."""

_UNSUPPORTED_OPTIONS: dict[str, str] = dict.fromkeys(
    ("cleanrecognizablevisualfeatures", "cleanrecognizablevisualfeaturesoption"),
    "Clean Recognizable Visual Features (PS3.15 E.3.2, code 113102) is a PS3.15 option this "
    "tool does not support: it would have to alter the image itself (faces in photographs, "
    "surface renderings) so the patient cannot be recognized; de-identify such images "
    "elsewhere, or leave them out",
)


def unsupported_option(name: str) -> str | None:
    """The message for a real PS3.15 option this tool does not implement (Clean
    Recognizable Visual Features), so it is not reported as a typo; None otherwise."""
    return _UNSUPPORTED_OPTIONS.get("".join(c for c in name.lower() if c.isalnum()))


# Every spelling reduces to lower-case alphanumerics before lookup.
_OPTION_ALIASES: dict[str, Option] = {}
for _opt in Option:
    _OPTION_ALIASES["".join(c for c in _opt.name.lower() if c.isalnum())] = _opt
    _OPTION_ALIASES["".join(c for c in _opt.value.lower() if c.isalnum())] = _opt
_OPTION_ALIASES.update(
    {
        # PS3.15 titles and their short forms
        "retainsafeprivateoption": Option.RETAIN_SAFE_PRIVATE,
        "retainsafeprivate": Option.RETAIN_SAFE_PRIVATE,
        "retainuidsoption": Option.RETAIN_UIDS,
        "retainuids": Option.RETAIN_UIDS,
        "retaindeviceidentityoption": Option.RETAIN_DEVICE_IDENTITY,
        "retaindeviceidentity": Option.RETAIN_DEVICE_IDENTITY,
        "retaininstitutionidentityoption": Option.RETAIN_INSTITUTION_IDENTITY,
        "retaininstitutionidentity": Option.RETAIN_INSTITUTION_IDENTITY,
        "retainpatientcharacteristicsoption": Option.RETAIN_PATIENT_CHARACTERISTICS,
        "retainpatientcharacteristics": Option.RETAIN_PATIENT_CHARACTERISTICS,
        "retainlongitudinaltemporalinformationwithfulldatesoption":
            Option.RETAIN_LONGITUDINAL_FULL_DATES,
        "retainlongitudinalfulldates": Option.RETAIN_LONGITUDINAL_FULL_DATES,
        "retainlongfulldates": Option.RETAIN_LONGITUDINAL_FULL_DATES,
        "retainlongitudinaltemporalinformationwithmodifieddatesoption":
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        "retainlongitudinalmodifieddates": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        "retainlongmodifdates": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        "retainlongmodifieddates": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        "cleandescriptorsoption": Option.CLEAN_DESCRIPTORS,
        "cleandescriptors": Option.CLEAN_DESCRIPTORS,
        "cleanstructuredcontentoption": Option.CLEAN_STRUCTURED_CONTENT,
        "cleanstructuredcontent": Option.CLEAN_STRUCTURED_CONTENT,
        "cleangraphicsoption": Option.CLEAN_GRAPHICS,
        "cleangraphics": Option.CLEAN_GRAPHICS,
        # Aspose.Medical ConfidentialityProfileOptions names
        "cleangraph": Option.CLEAN_GRAPHICS,
        "cleandescriptions": Option.CLEAN_DESCRIPTORS,
        "cleanstructdescriptions": Option.CLEAN_STRUCTURED_CONTENT,
        "retainlongfulldatesoption": Option.RETAIN_LONGITUDINAL_FULL_DATES,
        "retainlongmodifdatesoption": Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        "retainpatientchars": Option.RETAIN_PATIENT_CHARACTERISTICS,
        "retaindeviceident": Option.RETAIN_DEVICE_IDENTITY,
        "retaininstitutionident": Option.RETAIN_INSTITUTION_IDENTITY,
    }
)
# "BasicProfile" is the Aspose name for "no option": parse_options() drops it.
CLEAN_PIXEL_DATA_ALIASES = frozenset({"cleanpixeldata", "cleanpixeldataoption", "cleanpixel"})
"""PS3.15 Clean Pixel Data Option (113101): not an :class:`Option`, because Table E.1-1 has no
column for it; it is the :attr:`DeidConfig.clean_pixel_data` flag instead."""
BASIC_PROFILE_ALIASES = frozenset({"basicprofile", "basic", "attributeconfidentialitybasicprofile"})


def split_clean_pixel_data(names: list[str] | tuple[str, ...]) -> tuple[bool, list[str]]:
    """Take the Clean Pixel Data option out of ``names``: (present, the other names)."""
    rest = [n for n in names
            if "".join(c for c in n.lower() if c.isalnum()) not in CLEAN_PIXEL_DATA_ALIASES]
    return len(rest) != len(names), rest


def parse_options(names: list[str] | tuple[str, ...]) -> frozenset[Option]:
    """Parse option names (any accepted spelling); reject contradictory combinations."""
    options: set[Option] = set()
    for name in names:
        if "".join(c for c in name.lower() if c.isalnum()) in BASIC_PROFILE_ALIASES:
            continue
        options.add(Option.parse(name))
    if {
        Option.RETAIN_LONGITUDINAL_FULL_DATES,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    } <= options:
        raise ConfigError(
            "options RETAIN_LONGITUDINAL_FULL_DATES and RETAIN_LONGITUDINAL_MODIFIED_DATES "
            "exclude each other: choose one"
        )
    return frozenset(options)


class TagActionKind(StrEnum):
    """Google ``Action`` kinds; the value is the JSON field name."""

    KEEP = "keepTag"
    REMOVE = "removeTag"
    DELETE = "deleteTag"
    RESET = "resetTag"
    CLEAN_TEXT = "cleanTextTag"
    REGEN_UID = "regenUidTag"
    RECURSE = "recurseTag"
    CLEAN_IMAGE = "cleanImageTag"


class QueryKind(StrEnum):
    """How a query string selects attributes."""

    TAG = "tag"
    KEYWORD = "keyword"
    VR = "vr"


@dataclass(frozen=True)
class TagQuery:
    """One entry of ``Action.queries``: a tag ID ``"00100010"``, a keyword or a VR."""

    kind: QueryKind
    tag: int | None = None
    keyword: str | None = None
    vr: str | None = None


CONTEXT = "CONTEXT"
"""Info type of a context value that is identifying without being a more specific type."""

INFO_TYPES: frozenset[str] = frozenset(
    {
        "PERSON_NAME",
        "DATE",
        "AGE",
        "PHONE_NUMBER",
        "EMAIL_ADDRESS",
        "US_SOCIAL_SECURITY_NUMBER",
        "MEDICAL_RECORD_NUMBER",
        "STREET_ADDRESS",
        "LOCATION",
        "ORGANIZATION_NAME",
        "URL",
        "IP_ADDRESS",
        CONTEXT,
    }
)
"""Google infoType names the text cleaners detect (generic detectors or context values)."""


@functools.lru_cache(maxsize=1024)
def info_type_of(keyword: str, vr: str) -> str:
    """Which Google infoType a DICOM attribute's value stands for, when the value is used
    as context (what free text and burned-in text are searched for)."""
    if vr == "PN":
        return "PERSON_NAME"
    if vr in ("DA", "DT"):
        return "DATE"
    if "Address" in keyword:
        return "STREET_ADDRESS"
    if "Telephone" in keyword:
        return "PHONE_NUMBER"
    if "Institution" in keyword or "Organization" in keyword:
        return "ORGANIZATION_NAME"
    if keyword.endswith(("ID", "IDs", "Number")):
        return "MEDICAL_RECORD_NUMBER"
    return CONTEXT


class TransformationKind(StrEnum):
    """Google ``InfoTypeTransformation`` kinds; the value is the JSON field name."""

    REPLACE_WITH_INFO_TYPE = "replaceWithInfoTypeConfig"
    REDACT = "redactConfig"
    CHARACTER_MASK = "characterMaskConfig"
    CRYPTO_HASH = "cryptoHashConfig"
    DATE_SHIFT = "dateShiftConfig"


@dataclass(frozen=True)
class Transformation:
    """Apply ``kind`` to text spans detected as any of ``info_types`` (empty = all)."""

    kind: TransformationKind
    info_types: tuple[str, ...] = ()
    masking_character: str = "*"


@dataclass(frozen=True)
class TextConfig:
    """Google ``TextConfig``: how ``cleanTextTag`` and DEIDENTIFY_TAG_CONTENTS transform text."""

    transformations: tuple[Transformation, ...] = ()
    additional_transformations: tuple[Transformation, ...] = ()
    exclude_info_types: tuple[str, ...] = ()


class TextRedactionMode(StrEnum):
    """Google ``ImageConfig.textRedactionMode``."""

    REDACT_NO_TEXT = "REDACT_NO_TEXT"
    REDACT_ALL_TEXT = "REDACT_ALL_TEXT"
    REDACT_SENSITIVE_TEXT = "REDACT_SENSITIVE_TEXT"
    REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS = "REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS"


class OcrScope(StrEnum):
    """Which images are read by OCR when burned-in text redaction is on (see pixels/clean.py)."""

    AUTO = "AUTO"
    """BurnedInAnnotation YES, or an image kind that usually carries text (US, SC, XA...)."""
    ALL = "ALL"
    """Every image with pixel data."""


@dataclass(frozen=True)
class ImageConfig:
    """Google ``ImageConfig``: burned-in text redaction (see pixels/clean.py)."""

    text_redaction_mode: TextRedactionMode = TextRedactionMode.REDACT_NO_TEXT
    additional_info_types: tuple[str, ...] = ()
    exclude_info_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class TagAction:
    """Google ``Action``: apply ``kind`` to every attribute any of ``queries`` selects."""

    queries: tuple[TagQuery, ...]
    kind: TagActionKind
    image: ImageConfig | None = None


class PrimaryIds(StrEnum):
    """Google ``Options.primaryIds`` for Study/Series/SOP/MediaStorageSOP Instance UIDs."""

    UNSPECIFIED = "PRIMARY_IDS_OPTION_UNSPECIFIED"
    KEEP = "KEEP"
    REGEN = "REGEN"


_PROFILE_HINTS: dict[ProfileType, str] = {
    ProfileType.KEEP_ALL: "it keeps every attribute already; what goes is what your actions "
    "remove, so drop those actions instead",
    ProfileType.MINIMAL_KEEP_LIST: "it deletes every attribute outside its keep list; keep one "
    "with a keepTag action",
    ProfileType.DEIDENTIFY_TAG_CONTENTS: "it cleans the text of every text attribute; keep one "
    "unchanged with a keepTag action, shift dates with text.transformations dateShiftConfig",
}


def profile_conflict(
    profile: ProfileType, options: frozenset[Option], primary_ids: PrimaryIds
) -> tuple[str, str] | None:
    """A combination of profile, options and primaryIds that cannot be honoured, as
    (the :class:`DeidConfig` field to blame, the message); None when there is none.

    * a retain option (:data:`RETAIN_OPTIONS`) with a profile other than the Basic
      Profile: it modifies the Basic Profile only, and would be silently ignored while
      the output claimed it (DeidentificationMethodCodeSequence);
    * ``primaryIds: REGEN`` with RetainUIDs: the primary UIDs would be regenerated while
      the UIDs referencing them were kept, leaving every reference dangling.
    """
    retained = options & RETAIN_OPTIONS
    if retained and profile is not ProfileType.BASIC:
        names = ", ".join(sorted(o.title for o in retained))
        return "options", (
            f"{names}: the PS3.15 retain options modify the Basic Profile (Table E.1-1) only; "
            f"with {profile.value} they would change nothing ({_PROFILE_HINTS[profile]}). "
            f"Drop them, or use {ProfileType.BASIC.value}"
        )
    if primary_ids is PrimaryIds.REGEN and Option.RETAIN_UIDS in options:
        return "primary_ids", (
            "REGEN regenerates the Study, Series and SOP Instance UIDs that the RetainUIDs "
            "option keeps, while the UIDs referencing them (ReferencedSOPInstanceUID...) "
            "would keep their original values and point at nothing: drop RetainUIDs, or "
            "drop primaryIds REGEN"
        )
    return None


# --- attributes an action must not change ------------------------------------------------

TAG_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
TAG_PIXEL_DATA = 0x7FE00010

_FILE_META_REASON = (
    "the File Meta Information (group 0002) is written anew for every output from the "
    "dataset (its SOP Class and Instance UIDs, the transfer syntax written), so an action "
    "on it would never be applied"
)
_GROUP_LENGTH_REASON = (
    "group lengths are always removed from the output (retired, PS3.5 7.2), so no action "
    "applies to them"
)
_PIXEL_REASON = (
    "it belongs to the Image Pixel module, without which the pixel data cannot be read "
    "(a placeholder, an empty value or none at all leaves an unreadable image)"
)
_STRUCTURAL_REASONS: dict[str, str] = {
    "SpecificCharacterSet": "it says how every text value is decoded, so the engine never "
    "changes it",
    "SOPClassUID": "it is a registered UID naming the kind of object (what a viewer reads it "
    "as), not an identifier of the patient, so the engine never changes it",
}
IMAGE_PIXEL_KEYWORDS: tuple[str, ...] = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    *(f"{colour}PaletteColorLookupTable{part}"
      for colour in ("Red", "Green", "Blue", "Alpha") for part in ("Descriptor", "Data")),
    *(f"Segmented{colour}PaletteColorLookupTableData"
      for colour in ("Red", "Green", "Blue", "Alpha")),
)
"""The Image Pixel module's description of the pixel data (PS3.3 C.7.6.3), the pixel data
itself and its palette: what a reader needs to decode the image."""
STRUCTURAL_KEYWORDS: tuple[str, ...] = tuple(_STRUCTURAL_REASONS)
"""Attributes of the dataset the engine keeps whatever the configuration says."""

_PROTECTED: dict[int, str] = {
    **{int(keyword_dict[k]): _STRUCTURAL_REASONS[k] for k in STRUCTURAL_KEYWORDS},
    **{int(keyword_dict[k]): _PIXEL_REASON for k in IMAGE_PIXEL_KEYWORDS},
}
PROTECTED_TAGS: frozenset[int] = frozenset(_PROTECTED)
"""Tags of :data:`STRUCTURAL_KEYWORDS` and :data:`IMAGE_PIXEL_KEYWORDS`: kept by every
profile; an action naming one may only keep it (and cleanImageTag may redact PixelData).
File Meta Information (group 0002) and group lengths are protected too (by rule, not
listed here)."""
_VERBS = {TagActionKind.REMOVE: "empty", TagActionKind.DELETE: "remove",
          TagActionKind.RESET: "reset"}
_VR_WIDE_BREAKING: tuple[tuple[int, frozenset[TagActionKind]], ...] = (
    # Removing a Type 1 UID gives it a new UID (plan.py), and a registered UID's new UID
    # is itself; a placeholder is no UID.
    (int(keyword_dict["SOPClassUID"]), frozenset({TagActionKind.RESET})),
    *((int(keyword_dict[k]), frozenset(_VERBS)) for k in IMAGE_PIXEL_KEYWORDS),
)
"""Attributes an action selecting by VR would break, in the order messages list them,
with the action kinds that would break them (SpecificCharacterSet: the engine keeps it)."""


def protected_reason(tag: int) -> str | None:
    """Why an action must not change ``tag`` (None: it may)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group == 0x0002:
        if tag == TAG_MEDIA_STORAGE_SOP_INSTANCE_UID:
            return (f"{_FILE_META_REASON}; MediaStorageSOPInstanceUID always equals "
                    "SOPInstanceUID: act on SOPInstanceUID")
        return _FILE_META_REASON
    if element == 0 and not group & 1:
        return _GROUP_LENGTH_REASON
    return _PROTECTED.get(tag)


def _allowed_kinds(tag: int) -> frozenset[TagActionKind]:
    """Action kinds an action naming the protected ``tag`` may have."""
    if tag & 0xFFFF == 0 and not tag >> 16 & 1 and tag >> 16 != 0x0002:
        return frozenset()
    if tag == TAG_MEDIA_STORAGE_SOP_INSTANCE_UID:  # follows SOPInstanceUID, as asked
        return frozenset({TagActionKind.KEEP, TagActionKind.REGEN_UID})
    if tag == TAG_PIXEL_DATA:
        return frozenset({TagActionKind.KEEP, TagActionKind.CLEAN_IMAGE})
    return frozenset({TagActionKind.KEEP})


def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    return f"{keyword} ({tag:08X})" if keyword else f"{tag:08X}"


def protected_action_problem(actions: tuple[TagAction, ...]) -> tuple[int, int, str] | None:
    """The first action that would change an attribute the output needs unchanged, as
    (action index, query index, message); None when there is none.

    An action naming a protected attribute (:func:`protected_reason`) by tag or keyword
    may only keep it: anything else would be silently ignored (the engine keeps it) or
    would leave an unreadable file. An action selecting by VR is refused when it is the
    first to select an Image Pixel attribute (first match wins, plan.py) and would empty,
    remove or reset it, or would reset SOPClassUID; a keepTag action naming those
    attributes before it makes it valid.
    """
    problems: list[tuple[int, int, str]] = []
    for i, action in enumerate(actions):
        for j, query in enumerate(action.queries):
            if query.kind is QueryKind.VR or query.tag is None:
                continue
            reason = protected_reason(query.tag)
            if reason and action.kind not in _allowed_kinds(query.tag):
                problems.append((i, j, f"{action.kind.value} on {_name(query.tag)} is not "
                                       f"allowed: {reason}"))
    hits: dict[tuple[int, int], list[int]] = {}
    for tag, breaking in _VR_WIDE_BREAKING:
        vrs = set(str(dictionary_VR(tag)).split(" or "))
        for i, action in enumerate(actions):
            hit = next((j for j, q in enumerate(action.queries)
                        if q.tag == tag or (q.kind is QueryKind.VR and q.vr in vrs)), None)
            if hit is None:
                continue
            if action.queries[hit].kind is QueryKind.VR and action.kind in breaking:
                hits.setdefault((i, hit), []).append(tag)
            break  # the first action selecting the attribute decides (plan.py)
    for (i, j), tags in hits.items():
        action = actions[i]
        names = [keyword_for_tag(t) for t in tags]
        why = (_STRUCTURAL_REASONS["SOPClassUID"] if names == ["SOPClassUID"] else
               "the Image Pixel module's attributes say how the pixel data is read: a "
               "placeholder, an empty value or none at all leaves an unreadable image")
        keep = ", ".join(f'"{n}"' for n in names)
        them = "it" if len(names) == 1 else "them"
        problems.append((i, j, (
            f"{action.kind.value} on VR {action.queries[j].vr} would "
            f"{_VERBS[action.kind]} {', '.join(names)}: {why}. Keep {them}: put "
            f'{{"queries": [{keep}], "keepTag": {{}}}} before this action')))
    return min(problems) if problems else None


@dataclass(frozen=True)
class DeidConfig:
    """Everything the engine needs to know about what to change; hashed into the run record."""

    profile: ProfileType = ProfileType.BASIC
    options: frozenset[Option] = frozenset()
    actions: tuple[TagAction, ...] = ()
    primary_ids: PrimaryIds = PrimaryIds.UNSPECIFIED
    clean_image: ImageConfig | None = None
    text: TextConfig = field(default_factory=TextConfig)
    id_prefix: str = ""
    """Organisation prefix for PatientID / PatientName / AccessionNumber / StudyID pseudonyms."""
    max_date_shift_days: int = 365
    """Per-patient date shift lies in [-max, -1] ∪ [1, max] days."""
    clean_pixel_data: bool = False
    """PS3.15 Clean Pixel Data option: burned-in text matching removed values is redacted."""
    pixel_rules: str = ""
    """Path of a CTP DicomPixelAnonymizer rule file (known text regions); "" = none."""
    ocr_scope: OcrScope = OcrScope.AUTO
    residual_sweep: bool = True
    """After the profile, kept text holding this instance's own identifying values is
    cleaned (beyond PS3.15; see :mod:`dicom_deid.deid.sweep`). False: the profile only."""

    def __post_init__(self) -> None:
        if len(self.id_prefix) > 6 or not all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in self.id_prefix
        ):
            raise ConfigError(
                "id_prefix: at most 6 ASCII letters, digits, '-', '_' or '.' "
                "(AccessionNumber and StudyID pseudonyms must fit in 16 characters)"
            )
        if not 1 <= self.max_date_shift_days <= 36500:
            raise ConfigError("max_date_shift_days: must be between 1 and 36500")
        # The loaders check these first, naming the JSON field or flag; here for every
        # other way a DeidConfig is made (project files, DeidConfig(**changes)).
        conflict = profile_conflict(self.profile, self.options, self.primary_ids)
        if conflict is not None:
            raise ConfigError(f"{conflict[0]}: {conflict[1]}")
        problem = protected_action_problem(self.actions)
        if problem is not None:
            index, query, message = problem
            raise ConfigError(f"actions[{index}].queries[{query}]: {message}")

    @property
    def clean_descriptors(self) -> bool:
        """True when descriptor text is cleaned (PS3.15 option or Google cleanDescriptors)."""
        return Option.CLEAN_DESCRIPTORS in self.options

    @property
    def image(self) -> ImageConfig:
        """The burned-in text settings in force: a cleanImageTag action wins over
        options.cleanImage; the PS3.15 Clean Pixel Data option alone means removed
        values (and generic identifiers) are redacted from the pixels."""
        for action in self.actions:
            if action.kind is TagActionKind.CLEAN_IMAGE and action.image is not None:
                return action.image
        if self.clean_image is not None and (
            self.clean_image.text_redaction_mode is not TextRedactionMode.REDACT_NO_TEXT
            or not self.clean_pixel_data
        ):
            return self.clean_image
        if self.clean_pixel_data:
            return ImageConfig(TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS)
        return ImageConfig()

    @property
    def cleans_pixels(self) -> bool:
        """True when pixel data may be changed: text redaction, or known-region rules."""
        return (
            self.image.text_redaction_mode is not TextRedactionMode.REDACT_NO_TEXT
            or bool(self.pixel_rules)
        )

    def fingerprint(self) -> str:
        """Stable SHA-256 of the configuration, recorded with every run."""

        def norm(obj: object) -> object:
            if isinstance(obj, dict):
                return {k: norm(v) for k, v in sorted(obj.items())}
            if isinstance(obj, frozenset | set):
                return sorted(norm(v) for v in obj)  # type: ignore[type-var]
            if isinstance(obj, list | tuple):
                return [norm(v) for v in obj]
            if isinstance(obj, Enum):
                return obj.value
            return obj

        blob = json.dumps(norm(asdict(self)), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def privacy_first(**fields: Any) -> DeidConfig:
    """The default policy of the command line and of every project that does not choose
    another: the PS3.15 Basic Profile with Clean Descriptors, the residual-identifier
    sweep, and burned-in text of images at risk (``ocrScope`` AUTO: US, secondary
    captures, BurnedInAnnotation YES...) redacted where it matches this instance's
    identifying values or a sensitive pattern (``REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS``).
    Safe on a hospital's data without tuning; anything weaker is an explicit choice.
    ``fields`` set other :class:`DeidConfig` fields (a prefix, the sweep switch)."""
    return DeidConfig(**{
        "profile": ProfileType.BASIC,
        "options": frozenset({Option.CLEAN_DESCRIPTORS}),
        # PS3.15 Clean Pixel Data: REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS (see image);
        # the same DeidConfig as the options CleanDescriptors + CleanPixelData.
        "clean_pixel_data": True,
        "ocr_scope": OcrScope.AUTO,
        "residual_sweep": True,
        **fields,
    })
