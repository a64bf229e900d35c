"""Resolve the configuration into one concrete action per attribute.

Precedence, as Google documents it: explicit ``actions`` (first match wins), then
``options`` (primaryIds), then the profile. The PS3.15 table decides the profile
action; attributes it does not list are kept (standard) or removed (private), except
the project's additions: the identifying attributes of :func:`beyond_table`, the source
systems' addresses, and every other date or time (:func:`unlisted_dates`), which gets the
row the table gives its own dates.

An action depends on where the attribute is (a :data:`Scope`: the instance's IOD and the
keyword of the sequence holding it): compound profile codes resolve by the attribute's Type
there, so do plain removals of attributes the IOD requires there (``X`` or ``Z``, and
Google's deleteTag / removeTag: a fixed dummy for Type 1, empty for Type 2; see
:func:`~.ps3_15.resolve_required`), a sequence is never left with zero items where the IOD
needs one, and attributes whose condition names a removed attribute go with it
(:func:`dependents_to_drop`). A dummied Encapsulated Document becomes a minimal empty
document of its MIME type, its length following it (``data/dummies/``). Google's resetTag
writes its placeholder only where one is valid (:func:`_reset_act`).

The profiles other than the Basic Profile follow the same rules where they would write an
instance less valid than its input: MINIMAL_KEEP_LIST keeps or resolves what the IOD
requires (:meth:`Plan._minimal`), DEIDENTIFY_TAG_CONTENTS does not clean required values
into empty ones nor codes into placeholders (:meth:`Plan._tag_contents`). The cleaning
options (Clean Descriptors, Structured Content, Graphics) clean what any profile keeps
(:meth:`Plan._option_clean`). ``primaryIds`` decides the UIDs that reference the primary
UIDs as it decides them (:func:`referencing_uid_tags`), so references still resolve.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, auto
from functools import cache
from importlib import resources

from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag, tag_for_keyword

from .iod import (
    AttributeType,
    ConditionKind,
    dependents_of,
    iod_for,
    iod_named,
    load_tables,
    module_keywords,
)
from .model import (
    DeidConfig,
    Option,
    PrimaryIds,
    ProfileType,
    QueryKind,
    TagAction,
    TagActionKind,
    TextConfig,
    TransformationKind,
)
from .ps3_15 import (
    ActionCode,
    ProfileRow,
    load_safe_private,
    load_table,
    resolve_compound,
    resolve_required,
    safe_private_vrs,
)


class Act(IntEnum):
    """What the engine does to one element."""

    KEEP = auto()
    DELETE = auto()
    EMPTY = auto()
    DUMMY = auto()
    CLEAN = auto()
    """Clean free text (PS3.15 C): identifying phrases replaced, meaning kept."""
    UID = auto()
    PSEUDONYM = auto()
    SHIFT = auto()
    RESET = auto()
    CLEAN_TEXT = auto()
    """Google cleanTextTag: TextConfig transformations on detected info types."""
    RECURSE = auto()
    RECURSE_STRICT = auto()
    """D on a sequence: recurse, and free text without its own rule becomes a dummy."""
    RECURSE_CLEAN = auto()
    """C on a sequence (Clean Structured Content / Graphics): recurse and clean free text."""
    DELETE_GROUP = auto()
    """Overlay data removed: the whole 60xx group goes, so no half overlay remains."""
    DUMMY_DOCUMENT = auto()
    """D on Encapsulated Document: a minimal empty document of the MIME type at its level
    (:meth:`Plan.document_value`), not bytes that claim to be a PDF and are none."""
    DOCUMENT_LENGTH = auto()
    """Encapsulated Document Length beside a dummied document: the dummy's length."""


class Mode(IntEnum):
    """How free text without a rule of its own is treated inside a sequence."""

    NORMAL = auto()
    STRICT = auto()
    CLEAN = auto()


FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
_LONG_TEXT_VRS = frozenset({"LT", "ST", "UT"})
"""Free text by its VR alone (UC also holds long code values)."""
_SOURCE_SYSTEM_CODES: dict[int, ActionCode] = {
    **{t: ActionCode.X for k in (
        "RetrieveURL", "RetrieveURI", "StorageURL", "StoredInstanceBaseURI",
        "FolderAccessURI", "FileAccessURI", "ContactURI", "PixelDataProviderURL",
    ) if (t := tag_for_keyword(k)) is not None},
    0x0040E001: ActionCode.D,  # HL7 Instance Identifier: the encapsulated CDA needs one
}
"""Addresses and identifiers the source systems gave the instance, which Table E.1-1 does
not list, with the code they get beyond PS3.15 (as Retrieve AE Title gets X by it) unless
the configuration retains institution identity: URLs name the institution's hosts and
carry its original UIDs (``.../studies/<Study Instance UID>``), removed (the D dummy where
the IOD requires one); the HL7 Instance Identifier is the hospital's document OID and
report number, dummied."""


@cache
def beyond_table() -> dict[int, ActionCode]:
    """Attributes Table E.1-1 does not list that hold a patient's dates, people's names
    or free text about them (``data/beyond_table_e1.csv``): the code each gets, as if the
    table listed it. What the list misses, the rule for unlisted free text still cleans
    (:meth:`Plan._unlisted`)."""
    text = resources.files(__package__).joinpath("data/beyond_table_e1.csv").read_text(
        encoding="utf-8")
    codes: dict[int, ActionCode] = {}
    for rec in csv.DictReader(text.splitlines()):
        tag = tag_for_keyword(rec["keyword"])
        if tag is None:
            raise ValueError(f"beyond_table_e1.csv: unknown keyword {rec['keyword']!r}")
        codes[tag] = ActionCode(rec["code"])
    return codes


DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
_DEVICE_DATE_WORD = "Calibration"
"""The word of a date's name that makes it the device's (Date of Last Calibration): the
table keeps its calibration dates under Retain Device Identity, so an unlisted one with the
word in its name is kept there too."""


@cache
def _table_date_row(word: str) -> tuple[ActionCode, tuple[tuple[Option, ActionCode], ...]]:
    """The Basic Profile code and option codes Table E.1-1 gives most of its dates and
    times (dictionary VR DA, DT or TM) whose name has ``word`` ("": all of them): read off
    the table, so an unlisted date follows the edition shipped, not a copy of it."""
    counts = Counter((row.basic, row.option_codes) for tag, row in load_table().exact.items()
                     if dictionary_vr(tag) in DATE_TIME_VRS and word in row.name)
    return counts.most_common(1)[0][0]


@cache
def unlisted_dates() -> dict[int, ProfileRow]:
    """The dates and times of PS3.6 (dictionary VR DA, DT or TM, retired ones too) that
    neither Table E.1-1 nor the project's own lists (:func:`beyond_table`, the source
    systems' addresses) give a code: Study Update DateTime, a secondary review's date, an
    alarm's time. Each is a date of the patient's record and gets the row the table gives
    most of its own dates (:func:`_table_date_row`): ``X`` (resolved by its Type where it
    is, as any plain ``X``), kept under Retain Longitudinal Full Dates, shifted under
    Modified Dates; a calibration date also as the table's calibration dates, kept under
    Retain Device Identity. Generated from pydicom's dictionary, so a date PS3.6 adds
    before the table lists it is removed, not kept."""
    table, beyond = load_table(), beyond_table()
    rows: dict[int, ProfileRow] = {}
    for tag, (vr, _, name, retired, keyword) in DicomDictionary.items():
        if (vr not in DATE_TIME_VRS or table.row_for(tag) is not None or tag in beyond
                or tag in _SOURCE_SYSTEM_CODES):
            continue
        basic, option_codes = _table_date_row(
            _DEVICE_DATE_WORD if _DEVICE_DATE_WORD in name else "")
        rows[tag] = ProfileRow(f"({tag >> 16:04X},{tag & 0xFFFF:04X})", name, keyword,
                               retired == "Retired", basic, option_codes)
    return rows


_IDENTITY_CODES = frozenset({"PersonIdentificationCodeSequence", "InstitutionCodeSequence"})
"""Code sequences whose code is a person's or an institution's identity ("ZB123456",
"Belinda Zarkovsky, dosimetrist")."""
_CODE_TEXT_VRS = frozenset({"LO", "SH", "UC"})
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                      "UR", "UT"})
CLEAN_TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "DA", "DT", "AS"})
DATE_VRS = frozenset({"DA", "DT"})

TAG_PATIENT_NAME = 0x00100010
TAG_PATIENT_ID = 0x00100020
TAG_ISSUER_OF_PATIENT_ID = 0x00100021
TAG_ACCESSION = 0x00080050
TAG_STUDY_ID = 0x00200010
PSEUDONYM_TAGS = frozenset({TAG_PATIENT_NAME, TAG_PATIENT_ID, TAG_ACCESSION, TAG_STUDY_ID})
PRIMARY_UID_TAGS = frozenset({0x0020000D, 0x0020000E, 0x00080018, 0x00020003})
CLEANING_OPTIONS = frozenset({Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT,
                              Option.CLEAN_GRAPHICS})
"""The options that clean (Table E.1-1 ``C``) what a profile would keep: they apply under
every profile, the retain options only under the Basic Profile."""
CODE_TAGS = frozenset(t for k in (
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "LongCodeValue",
    "URNCodeValue",
) if (t := tag_for_keyword(k)) is not None)
"""The code of a coded concept (PS3.3 8.1): a value from a coding scheme ("121071", "DCM"),
never a record number, except in the sequences whose codes are an identity."""
_SHORT_TEXT_VRS = frozenset({"AE", "SH"})
"""Text VRs too short for a placeholder: DEIDENTIFY_TAG_CONTENTS's cleaned value of one
detected as a whole is cut to nothing."""
_PLACEHOLDER_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA",
                              "DT", "TM", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""VRs whose values are free in form: Google resetTag's placeholder is a valid value of
them. A code string (enumerated values), a number (a count, a size) or a tag pointer is
not free: a placeholder there says something false or invalid."""
_PIXEL_MODULES = ("image-pixel", "floating-point-image-pixel",
                  "double-floating-point-image-pixel", "multi-frame")
"""The modules that describe the pixel data (and hold it): a placeholder in them makes
the pixels unreadable."""
OVERLAY_DATA_MASK = (0xFF01FFFF, 0x60003000)
TAG_ENCAPSULATED_DOCUMENT = 0x00420011
TAG_DOCUMENT_MIME = 0x00420012
TAG_DOCUMENT_LENGTH = 0x00420015
DOCUMENT_ACTS = frozenset({Act.DUMMY_DOCUMENT, Act.DOCUMENT_LENGTH})

Scope = tuple[str, str]
"""Where an attribute is: (the instance's IOD name, "" when unknown; the keyword of the
sequence whose item holds it, "" at the top level)."""
NO_SCOPE: Scope = ("", "")


def iod_name(sop_class_uid: str) -> str:
    """The IOD of a SOP class as a :data:`Scope` names it ("" when unknown)."""
    found = iod_for(sop_class_uid)
    return "" if found is None else found.name


@cache
def item_scope(scope: Scope, sequence_tag: int) -> Scope:
    """The scope of the items of the sequence ``sequence_tag`` found at ``scope``."""
    return (scope[0], "" if sequence_tag >> 16 & 1 else keyword_for_tag(sequence_tag) or "")


@cache
def minimal_keep_tags() -> frozenset[int]:
    """Tags of data/minimal_keep_list.csv (MINIMAL_KEEP_LIST_PROFILE)."""
    text = resources.files(__package__).joinpath("data/minimal_keep_list.csv").read_text()
    tags = set()
    for rec in csv.DictReader(text.splitlines()):
        tag = tag_for_keyword(rec["keyword"])
        if tag is None:
            raise ValueError(f"minimal_keep_list.csv: unknown keyword {rec['keyword']!r}")
        tags.add(tag)
    return frozenset(tags)


def dictionary_vr(tag: int) -> str:
    """The dictionary VR of a standard tag ('UN' when unknown; first of 'US or SS' forms)."""
    try:
        return dictionary_VR(tag).split(" ")[0]
    except KeyError:
        return "UN"


@dataclass(frozen=True)
class _Query:
    tags: frozenset[int]
    vrs: frozenset[str]


class Plan:
    """Memoised attribute -> :class:`Act` resolution for one configuration."""

    def __init__(self, config: DeidConfig) -> None:
        self.config = config
        self.options = config.options
        self._table = load_table()
        self._safe_private = load_safe_private()
        self._actions = [(self._compile(a), a) for a in config.actions]
        load_tables()  # before a batch forks its workers: read once, shared
        unlisted_dates()
        _attribute_dummies()
        _dummy_documents()
        self._memo: dict[tuple[int, str, Mode, Scope], Act] = {}
        cleaning_options = {
            opt
            for row in self._table.exact.values()
            for opt, code in row.option_codes
            if code is ActionCode.C
        }
        # Context (the instance's own identifying values) is only gathered when some
        # rule may clean text, so the common case pays nothing for it.
        self.needs_context = (
            bool(self.options & cleaning_options)
            or config.profile is ProfileType.DEIDENTIFY_TAG_CONTENTS
            or any(a.kind is TagActionKind.CLEAN_TEXT for a in config.actions)
        )

    @staticmethod
    def _compile(action: TagAction) -> _Query:
        tags: set[int] = set()
        vrs: set[str] = set()
        for q in action.queries:
            if q.kind is QueryKind.TAG and q.tag is not None:
                tags.add(q.tag)
            elif q.kind is QueryKind.KEYWORD and q.keyword:
                tag = tag_for_keyword(q.keyword)
                if tag is not None:
                    tags.add(tag)
            elif q.kind is QueryKind.VR and q.vr:
                vrs.add(q.vr)
        return _Query(frozenset(tags), frozenset(vrs))

    def explicit_action(self, tag: int, vr: str) -> TagAction | None:
        """The first configured action selecting this attribute, if any."""
        for query, action in self._actions:
            if tag in query.tags or vr in query.vrs:
                return action
        return None

    def act(self, tag: int, vr: str, mode: Mode, scope: Scope = NO_SCOPE) -> Act:
        """The action for a standard (even group) attribute at ``scope``."""
        key = (tag, vr, mode, scope)
        found = self._memo.get(key)
        if found is None:
            found = self._resolve(tag, vr, mode, scope)
            if found is Act.EMPTY and vr == "SQ":
                found = _empty_sequence_act(_attribute_type(tag, scope))
            elif tag == TAG_ENCAPSULATED_DOCUMENT and (found is Act.DUMMY or found is Act.RESET):
                found = Act.DUMMY_DOCUMENT  # resetTag's placeholder: the same empty document
            elif tag == TAG_DOCUMENT_LENGTH and found is Act.KEEP and (
                    self.explicit_action(tag, vr) is None
                    and self.act(TAG_ENCAPSULATED_DOCUMENT, "OB", mode, scope)
                    is Act.DUMMY_DOCUMENT):
                found = Act.DOCUMENT_LENGTH
            self._memo[key] = found
        return found

    def document_value(self, act: Act, mime: str, scope: Scope) -> bytes | int:
        """The value of a :attr:`Act.DUMMY_DOCUMENT` (the document, padded to even length
        with a NUL) or of a :attr:`Act.DOCUMENT_LENGTH` (its length before padding), for
        ``mime``, the MIME Type of Encapsulated Document at its level.

        A MIME type without a dummy of its own gets an empty value where the IOD allows
        one (Type 2 or 3 at ``scope``); where it needs a value (Type 1 or 1C, or an
        unknown IOD) an empty document would be invalid, so two NUL bytes, as any OB dummy.
        """
        document = document_dummy(mime)
        if document is None:
            optional = _attribute_type(TAG_ENCAPSULATED_DOCUMENT, scope) in _EMPTY_ALLOWED
            document = b"" if optional else b"\x00\x00"
        if act is Act.DOCUMENT_LENGTH:
            return len(document)
        return document + b"\x00" if len(document) % 2 else document

    def _resolve(self, tag: int, vr: str, mode: Mode, scope: Scope) -> Act:
        action = self.explicit_action(tag, vr)
        if action is not None:
            found = _ACTION_ACTS[action.kind]
            if found is Act.DELETE or found is Act.EMPTY:  # deleteTag, removeTag
                return _required_act(found, tag, vr, scope)
            if found is Act.RESET:
                return _reset_act(tag, vr, scope)
            return found
        primary_ids = self.config.primary_ids
        if primary_ids is not PrimaryIds.UNSPECIFIED and (
                tag in PRIMARY_UID_TAGS or tag in referencing_uid_tags()):
            return Act.KEEP if primary_ids is PrimaryIds.KEEP else Act.UID
        profile = self.config.profile
        if profile is ProfileType.BASIC:
            return self._basic(tag, vr, mode, scope)
        if profile is ProfileType.KEEP_ALL:
            found = Act.RECURSE if vr == "SQ" else Act.KEEP
        elif profile is ProfileType.MINIMAL_KEEP_LIST:
            found = self._minimal(tag, vr, mode, scope)
        else:
            found = self._tag_contents(tag, vr, scope)
        if found is Act.KEEP or found is Act.RECURSE:
            return self._option_clean(tag, vr, mode, scope) or found
        return found

    def _minimal(self, tag: int, vr: str, mode: Mode, scope: Scope) -> Act:
        """MINIMAL_KEEP_LIST_PROFILE ("keep only the tags required to produce valid DICOM"):
        the keep list, and what the IOD requires where the attribute is. A required
        attribute that identifies (Table E.1-1 or :func:`beyond_table` lists it, it names
        the source systems, or it is a date :func:`unlisted_dates` gives a row) is removed
        as a required one is elsewhere (:func:`_required_act`: a dummy for Type 1, empty
        for Type 2); one the standard does not count as identifying (an SR's Value Type, a
        code, the KVP) is kept as the Basic Profile keeps it (:meth:`_unlisted`). Anything
        else goes, overlays and curves with their whole group (:func:`_in_repeating_group`)."""
        if tag in minimal_keep_tags():
            return Act.UID if vr == "UI" else Act.KEEP
        if _in_repeating_group(tag) or _attribute_type(tag, scope) in _REMOVABLE:
            return Act.DELETE
        if (self._table.row_for(tag) is not None or tag in beyond_table()
                or tag in _SOURCE_SYSTEM_CODES or tag in unlisted_dates()):
            return _required_act(Act.DELETE, tag, vr, scope)
        return self._unlisted(vr, mode, scope)

    def _tag_contents(self, tag: int, vr: str, scope: Scope) -> Act:
        """DEIDENTIFY_TAG_CONTENTS: Google's cleanTextTag on every text attribute, except
        where it would write an invalid value: the code of a coded concept is kept (outside
        the sequences whose codes are an identity), and a value the IOD requires
        (Type 1 or 1C at ``scope``) that cleaning could leave empty (a date not shifted,
        an age, a text too short for a placeholder) gets the fixed dummy instead."""
        if vr == "SQ":
            return Act.RECURSE
        if vr not in CLEAN_TEXT_VRS:
            return Act.KEEP
        if tag in CODE_TAGS and scope[1] and scope[1] not in _IDENTITY_CODES:
            return Act.KEEP
        if _attribute_type(tag, scope) in _VALUE_REQUIRED and not self._cleaned_never_empty(vr):
            return Act.DUMMY
        return Act.CLEAN_TEXT

    def _cleaned_never_empty(self, vr: str) -> bool:
        """Whether cleanTextTag's value of a ``vr`` attribute is non-empty whatever it finds:
        a date only when dates are shifted (any other transformation of a whole date is no
        date), an age never, a short text never; longer text keeps room for a placeholder
        unless the configuration redacts."""
        if vr in DATE_VRS:
            return shifts_dates(self.config.text)
        if vr == "AS" or vr in _SHORT_TEXT_VRS:
            return False
        return not _redacts(self.config.text)

    def _option_clean(self, tag: int, vr: str, mode: Mode, scope: Scope) -> Act | None:
        """What a selected cleaning option (:data:`CLEANING_OPTIONS`) does to an attribute a
        profile other than the Basic Profile keeps: ``C`` in Table E.1-1 under the option
        cleans it as under the Basic Profile; free text the table does not list is cleaned
        as :meth:`_unlisted` cleans it (UIDs stay the profile's). None: kept."""
        selected = self.options & CLEANING_OPTIONS
        if not selected:
            return None
        row = self._table.row_for(tag)
        if row is not None:
            code, option = row.code_for(selected)
            if code is not ActionCode.C:
                return None
            return self._clean_act(option, vr, tag & OVERLAY_DATA_MASK[0] == OVERLAY_DATA_MASK[1])
        if vr == "UI":
            return None
        found = self._unlisted(vr, mode, scope)
        return None if found is Act.KEEP or found is Act.RECURSE else found

    def _basic(self, tag: int, vr: str, mode: Mode, scope: Scope) -> Act:
        """The Basic Profile with its options: the table's row (or, for a date it does not
        list, the row :func:`unlisted_dates` gives it), else the project's code (the
        source systems' addresses, :func:`beyond_table`), else the rule for unlisted
        attributes (:meth:`_unlisted`)."""
        row = self._table.row_for(tag) or unlisted_dates().get(tag)
        if row is None:
            code = None if Option.RETAIN_INSTITUTION_IDENTITY in self.options else \
                _SOURCE_SYSTEM_CODES.get(tag)
            if code is None:
                code = beyond_table().get(tag)
            if code is None:
                return self._unlisted(vr, mode, scope)
            return self._code_act(resolve_required(code, _attribute_type(tag, scope)), None,
                                  tag, vr)
        code, option = row.code_for(self.options)
        attribute_type = _attribute_type(tag, scope)
        code = resolve_compound(code, attribute_type)
        if not _in_repeating_group(tag):
            code = resolve_required(code, attribute_type)
        return self._code_act(code, option, tag, vr)

    def _unlisted(self, vr: str, mode: Mode, scope: Scope = NO_SCOPE) -> Act:
        """Attributes Table E.1-1 does not list are kept; UIDs and free text in D/C sequences
        still get treated, because a UID anywhere can re-identify and a dummied sequence
        must not carry original text. In the items of a dummied code sequence that names a
        person or an institution, the codes' values and meanings are that identity: they
        are dummied too."""
        if mode is Mode.STRICT and scope[1] in _IDENTITY_CODES and vr in _CODE_TEXT_VRS:
            return Act.DUMMY
        if vr == "SQ":
            return Act.RECURSE_STRICT if mode is Mode.STRICT else (
                Act.RECURSE_CLEAN if mode is Mode.CLEAN else Act.RECURSE
            )
        if vr == "UI":
            return Act.KEEP if Option.RETAIN_UIDS in self.options else Act.UID
        if mode is Mode.STRICT and (vr in FREE_TEXT_VRS or vr == "PN"):
            return Act.DUMMY
        if mode is Mode.CLEAN:
            if vr in FREE_TEXT_VRS:
                return Act.CLEAN
            if vr == "PN":
                return Act.DUMMY
        if vr in _LONG_TEXT_VRS and Option.CLEAN_DESCRIPTORS in self.options:
            return Act.CLEAN  # comments and notes the table does not know of: descriptors
        return Act.KEEP

    def _code_act(self, code: ActionCode, option: Option | None, tag: int, vr: str) -> Act:
        is_overlay_data = tag & OVERLAY_DATA_MASK[0] == OVERLAY_DATA_MASK[1]
        if code is ActionCode.K:
            if vr == "SQ":
                return Act.RECURSE
            return Act.KEEP
        if code is ActionCode.X:
            return Act.DELETE_GROUP if is_overlay_data else Act.DELETE
        if code in (ActionCode.Z, ActionCode.D):
            if tag in PSEUDONYM_TAGS:
                return Act.PSEUDONYM
            if vr == "SQ":
                return Act.EMPTY if code is ActionCode.Z else Act.RECURSE_STRICT
            return Act.EMPTY if code is ActionCode.Z else Act.DUMMY
        if code is ActionCode.U:
            return Act.RECURSE if vr == "SQ" else Act.UID
        return self._clean_act(option, vr, is_overlay_data)

    @staticmethod
    def _clean_act(option: Option | None, vr: str, is_overlay_data: bool) -> Act:
        """C: what "clean" means depends on the option that asked for it and the VR."""
        if option is Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
            if vr in DATE_VRS:
                return Act.SHIFT
            if vr == "TM":
                return Act.KEEP  # whole-day shifts leave the time of day unchanged
            return Act.RECURSE_CLEAN if vr == "SQ" else Act.CLEAN
        if is_overlay_data:
            # Clean Graphics: the overlay stays; pixels/clean.py blanks text found in its bitmap
            # before the attributes are processed.
            return Act.KEEP
        if vr == "SQ":
            return Act.RECURSE_CLEAN
        if vr == "PN":
            return Act.DUMMY
        if vr in DATE_VRS or vr == "TM":
            return Act.EMPTY
        if vr in TEXT_VRS:
            return Act.CLEAN
        return Act.DUMMY

    def private_vr(self, tag: int, creator: str) -> str | None:
        """The VR Table E.3.10-1 gives a private attribute (None: not listed)."""
        return safe_private_vrs().get((tag >> 16, creator, tag & 0xFF))

    def private_act(self, tag: int, creator: str, vr: str) -> Act:
        """Action for a private data element given its block's creator."""
        action = self.explicit_action(tag, vr)
        if action is not None:
            return _ACTION_ACTS[action.kind]
        group, element_byte = tag >> 16, tag & 0xFF
        profile = self.config.profile
        if profile is ProfileType.KEEP_ALL:
            return Act.RECURSE if vr == "SQ" else Act.KEEP
        if (
            profile is ProfileType.BASIC
            and Option.RETAIN_SAFE_PRIVATE in self.options
            and (group, creator, element_byte) in self._safe_private
        ):
            return Act.KEEP
        return Act.DELETE



def _attribute_type(tag: int, scope: Scope) -> AttributeType | None:
    """The Type of a standard attribute at ``scope`` (None: unknown IOD or attribute)."""
    if not scope[0]:
        return None
    keyword = keyword_for_tag(tag)
    return iod_named(scope[0]).type_of(scope[1], keyword) if keyword else None


_REMOVABLE = frozenset({None, AttributeType.T3})
"""Types that let an attribute go: optional, or not known to the IOD there."""
_VALUE_REQUIRED = frozenset({AttributeType.T1, AttributeType.T1C})


def shifts_dates(text: TextConfig) -> bool:
    """Whether cleanTextTag shifts a DATE under ``text`` (Google's choice of transformation:
    additional ones first, one naming DATE before a catch-all; none listed: replaced)."""
    if "DATE" in text.exclude_info_types:
        return False
    for group in (text.additional_transformations, text.transformations):
        chosen = next((t for t in group if "DATE" in t.info_types), None) or next(
            (t for t in group if not t.info_types), None)
        if chosen is not None:
            return chosen.kind is TransformationKind.DATE_SHIFT
    return False


def _redacts(text: TextConfig) -> bool:
    """Whether some transformation of ``text`` redacts (writes nothing for what it finds)."""
    return any(t.kind is TransformationKind.REDACT
               for t in (*text.transformations, *text.additional_transformations))


@cache
def referencing_uid_tags() -> frozenset[int]:
    """The UID attributes that hold a SOP, Series or Study Instance UID of an instance
    (Referenced SOP Instance UID, ... in File, Multi-frame Source SOP Instance UID...), by
    the dictionary's names (PS3.6): they follow the primary UIDs' fate under
    ``primaryIds``, or the references would name instances that no longer exist."""
    named = re.compile(r"\b(SOP|Study|Series) Instance UID\b")
    return frozenset(tag for tag, (vr, _, name, _, _) in DicomDictionary.items()
                     if vr == "UI" and named.search(name)) - PRIMARY_UID_TAGS


@cache
def _pixel_description_tags() -> frozenset[int]:
    """The attributes of the modules that describe the pixel data (:data:`_PIXEL_MODULES`)
    and the pixel data itself, as the IOD tables give them (not the provider's URL: where
    the pixels are, not what they are)."""
    keywords = frozenset().union(*(module_keywords(m) for m in _PIXEL_MODULES))
    return frozenset(tag for k in keywords if (tag := tag_for_keyword(k)) is not None
                     and dictionary_vr(tag) != "UR")


def _reset_act(tag: int, vr: str, scope: Scope) -> Act:
    """Google's resetTag (a placeholder value) where the placeholder is valid: free-form
    values (:data:`_PLACEHOLDER_VRS`). The pixel description stays as it is (a placeholder
    Rows would leave the pixels unreadable; the configuration should not ask for it);
    a required UID gets a new one (one fixed placeholder would be the same in every
    file); elsewhere, and for sequences, it reads as removeTag (:func:`_required_act`):
    empty where the IOD allows, the dummy where it needs a value, a sequence's items
    kept (text dummied) where it needs items."""
    if tag in _pixel_description_tags():
        return Act.KEEP
    if vr == "UI":
        return Act.UID if _attribute_type(tag, scope) in _VALUE_REQUIRED else Act.RESET
    if vr in _PLACEHOLDER_VRS:
        return Act.RESET
    return _required_act(Act.EMPTY, tag, vr, scope)


def _in_repeating_group(tag: int) -> bool:
    """Overlays (60xx) and curves (50xx): removed with their whole group, their module
    goes with them, so the Types of its attributes ask nothing of the output."""
    return (tag >> 16) & 0xFF01 in (0x5000, 0x6000)


def _required_act(act: Act, tag: int, vr: str, scope: Scope) -> Act:
    """Google's deleteTag (``act`` DELETE) and removeTag (EMPTY) read as PS3.15's X and Z
    where the IOD requires the attribute (:func:`~.ps3_15.resolve_required`): the value
    still goes, the attribute stays as the IOD needs it (a fixed dummy, a new UID for a
    UID, a sequence's items with their text dummied, or empty)."""
    if _in_repeating_group(tag):
        return act
    code = ActionCode.X if act is Act.DELETE else ActionCode.Z
    resolved = resolve_required(code, _attribute_type(tag, scope))
    if resolved is code:
        return act
    if resolved is ActionCode.Z:
        return Act.EMPTY
    if vr == "SQ":
        return Act.RECURSE_STRICT
    return Act.UID if vr == "UI" else Act.DUMMY


_EMPTY_ALLOWED = frozenset({AttributeType.T2, AttributeType.T2C, AttributeType.T3})


@cache
def _dummy_documents() -> dict[str, bytes]:
    """data/dummies/documents.csv: the dummy document per MIME type (lower case)."""
    folder = resources.files(__package__).joinpath("data/dummies")
    text = folder.joinpath("documents.csv").read_text(encoding="utf-8")
    return {r["mime_type"].lower(): folder.joinpath(r["file"]).read_bytes()
            for r in csv.DictReader(text.splitlines())}


def document_dummy(mime: str) -> bytes | None:
    """The minimal empty document shipped for a MIME type (its parameters and case
    ignored: the CDA IOD writes ``text/XML``); None for a type without one."""
    return _dummy_documents().get(mime.split(";")[0].strip().lower())


@cache
def _attribute_dummies() -> dict[int, str]:
    text = resources.files(__package__).joinpath("data/dummies/attribute_dummies.csv"
                                                  ).read_text(encoding="utf-8")
    found: dict[int, str] = {}
    for rec in csv.DictReader(text.splitlines()):
        tag = tag_for_keyword(rec["keyword"])
        if tag is None:
            raise ValueError(f"attribute_dummies.csv: unknown keyword {rec['keyword']!r}")
        found[tag] = rec["value"]
    return found


def attribute_dummy(tag: int) -> str | None:
    """The dummy of an attribute whose values have a form of their own beyond the VR's
    (``data/dummies/attribute_dummies.csv``); None: the VR's dummy serves."""
    return _attribute_dummies().get(tag)


def _empty_sequence_act(attribute_type: AttributeType | None) -> Act:
    """Emptying a sequence is valid only where the IOD allows zero items (Type 2): a Type 3
    sequence is removed instead, a Type 1 one keeps its items with their text dummied."""
    if attribute_type is AttributeType.T3:
        return Act.DELETE
    if attribute_type is AttributeType.T1 or attribute_type is AttributeType.T1C:
        return Act.RECURSE_STRICT
    return Act.EMPTY


def dependents_to_drop(acts: Iterable[tuple[int, Act | None]]) -> set[int]:
    """Tags of one dataset level to remove because the attribute their condition names is
    removed (or, for "has a value" conditions, emptied) at that level (see
    ``data/iod/conditional_dependents.csv``). ``acts`` are the level's (tag, action)."""
    drop: set[int] = set()
    for tag, act in acts:
        if act is not Act.DELETE and act is not Act.EMPTY:
            continue
        for dependent, kind in dependents_of(tag):
            if act is Act.DELETE or kind is ConditionKind.HAS_VALUE:
                drop.add(dependent)
    return drop


_ACTION_ACTS: dict[TagActionKind, Act] = {
    TagActionKind.KEEP: Act.KEEP,
    TagActionKind.REMOVE: Act.EMPTY,
    TagActionKind.DELETE: Act.DELETE,
    TagActionKind.RESET: Act.RESET,
    TagActionKind.CLEAN_TEXT: Act.CLEAN_TEXT,
    TagActionKind.REGEN_UID: Act.UID,
    TagActionKind.RECURSE: Act.RECURSE,
    TagActionKind.CLEAN_IMAGE: Act.KEEP,  # pixels/clean.py redacts the text inside PixelData
}
