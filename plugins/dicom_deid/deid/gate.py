"""The verification gate: one output checked against its own source, in the worker.

Right after a worker has de-identified a file it holds both the source bytes and the
output bytes; :class:`Gate` checks the output there, independently of the configuration
that produced it:

- **No identifying value of the source survives.** Every person name (VR PN, whole and
  by component), ID, accession number, birth date, institution, station and device
  identifier, and every UID the Basic Profile replaces, read from the source file itself
  at any depth (not from possibly stale metadata), is searched for in every byte of the
  output outside the pixel data, case-insensitively, as a whole token; an ID also in the
  forms the residual sweep finds it in (its digits without a letter prefix: "4821397" of
  "MRN4821397"), and its digits as a whole component of a UID. Only the project's
  declared exceptions (keywords it deliberately keeps) are not searched.
- **The output is structurally sound.** File meta present and naming the instance, the
  Study/Series/SOP Instance UIDs those of the mapping, and every Type 1 attribute of the
  IOD that the source had with a value still there with one.

The result is a :class:`Verdict` bound to the output by its SHA-256: the verify step
trusts a staged file only when a passing verdict names its exact bytes. Verdicts name
attributes and reasons, never a value.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicom_deid.config.coding_schemes import is_scheme_designator, is_scheme_version
from dicom_deid.config.declared_exceptions import expand_exceptions
from dicom_deid.config.iod import AttributeType, iod_for
from dicom_deid.config.model import info_type_of, privacy_first
from dicom_deid.config.ps3_15 import ActionCode, load_table
from dicom_deid.dicom.reader import PYDICOM_ONLY_SYNTAXES, parse_instance
from dicom_deid.dicom.walker import (
    EXPLICIT_BE,
    PIXEL_DATA_TAG,
    Element,
    elements,
    locate_dataset,
    sequence_items,
)
from dicom_deid.errors import BadInput
from dicom_deid.pixels.codestream import (
    CODESTREAM_SYNTAXES,
    VIDEO_SYNTAXES,
    frame_layout,
    pixel_data_segments,
)
from dicom_deid.pixels.overlays import embedded_overlay_groups
from dicom_deid.pixels.risk import RISK_TAGS
from dicom_deid.text.chars import CJK_RE, plain_spellings
from dicom_deid.text.context import (
    ID_TYPES,
    REPLACED_GIVEN,
    SPACED_ID_DIGITS,
    PhiContext,
    id_digit_forms,
    spaced_digits,
    untitled,
)

from .sweep import SWEEP_EXEMPT, SWEEP_TAGS

if TYPE_CHECKING:  # the pixel modules (numpy, the OCR engine) load on first use
    from dicom_deid.pixels.clean import OcrReadout, PixelCleaner

__all__ = ["IDENTIFYING_KEYWORDS", "Gate", "Verdict", "expand_exceptions"]

#: Attributes whose values identify a patient, a person or a place, searched for in the
#: output whatever the configuration did with them (with every PN and every UID the Basic
#: Profile replaces, see :func:`_gathered_tags`).
IDENTIFYING_KEYWORDS: frozenset[str] = frozenset({
    "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator", "AccessionNumber",
    "StudyID", "AdmissionID", "RequestedProcedureID", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "MilitaryRank",
    "BranchOfService", "RegionOfResidence", "CountryOfResidence",
})
_MIN_TEXT = 4
"""Shorter values ("M", "12", an initial) match by chance in any file; non-ASCII values
of two bytes or more are searched (two CJK characters are a name)."""
_PIXEL_TAGS = frozenset({PIXEL_DATA_TAG, 0x7FE00008, 0x7FE00009})
_EXTENSION = re.compile(rb"\.(?:dcm|dicom|dic|ima)(?=/|$)", re.IGNORECASE)
_TEXT_SPLIT = re.compile(rb"[\\]")
_NAME_SPLIT = re.compile(rb"[\\=^]")
_SEQUENCE_MEMO = 4096
_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)
_RISK_TAGS = frozenset(RISK_TAGS)
"""What decides an image at risk (:func:`~dicom_deid.pixels.risk.at_risk_by_header`)."""
_UID_NAMES = {0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
              0x00080018: "SOPInstanceUID"}


@dataclass(frozen=True)
class Verdict:
    """What the gate found for one output (PHI-free: attributes and reasons only)."""

    output: str
    sha256: str
    size: int
    problems: tuple[str, ...] = ()
    leaks: int = 0
    """How many of ``problems`` are an identifying value of the source found in the output."""
    values_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_row(self) -> dict[str, object]:
        return {"output_path": self.output, "sha256": self.sha256, "size": self.size,
                "ok": self.ok, "leaks": self.leaks, "values_checked": self.values_checked,
                "problems": "; ".join(self.problems)}


@cache
def _gathered_tags() -> dict[int, str]:
    """Tag -> keyword of the attributes whose values are gathered (PN comes by its VR)."""
    out: dict[int, str] = {}
    for kw in IDENTIFYING_KEYWORDS:
        tag = tag_for_keyword(kw)
        assert tag is not None, kw
        out[tag] = kw
    for tag, row in load_table().exact.items():
        if row.basic is ActionCode.U:
            out[tag] = row.keyword
    return out


@cache
def _id_keywords() -> frozenset[str]:
    """The gathered keywords whose values the residual sweep reads as IDs: searched for
    in the forms it finds them in without their letter prefix too
    (:func:`~dicom_deid.text.context.id_digit_forms`)."""
    gathered = set(_gathered_tags().values())
    return frozenset(keyword for tag, keyword in SWEEP_TAGS.items() if keyword in gathered
                     and info_type_of(keyword, _vr_of(tag)) in ID_TYPES)


@cache
def _vr_of(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@cache
def _type1_tags(sop_class_uid: str) -> tuple[int, ...]:
    """The top-level Type 1 attributes of the SOP class's IOD (none for an unknown class)."""
    iod = iod_for(sop_class_uid)
    if iod is None:
        return ()
    tags = []
    for (parent, keyword), kind in iod.types.items():
        if parent == "" and kind is AttributeType.T1:
            tag = tag_for_keyword(keyword)
            if tag is not None:
                tags.append(tag)
    return tuple(sorted(tags))


@dataclass
class SourceFacts:
    """What the gate reads from a source file: identifying values and top-level tags."""

    values: dict[bytes, frozenset[str]] = field(default_factory=dict)
    """Each searchable byte form of a text value -> the keywords it came from (shared
    between files: never changed in place)."""
    uids: dict[bytes, frozenset[str]] = field(default_factory=dict)
    """The same for UIDs (searched as digits-and-dots tokens, no pattern compiled)."""
    filled: set[int] = field(default_factory=set)
    """Top-level tags with a non-empty value."""
    header: dict[int, str] = field(default_factory=dict)
    """The top-level attributes that put an image at risk of burned-in text."""
    whole: list[tuple[str, str, bytes]] = field(default_factory=list)
    """Each gathered text value as written (keyword, VR, bytes): the context burned-in
    text is judged against."""
    nested: list[tuple[str, str, bytes]] = field(default_factory=list)
    """The part of :attr:`whole` found inside sequences (the residual sweep searches kept
    text for these too, so that it and the gate agree on what is a leak)."""
    encodings: str = "latin-1"
    walked: tuple[bytes, bool, list[Element]] | None = field(
        default=None, compare=False, repr=False)
    """The source's bytes, VR encoding and top-level elements in tag order, as the byte
    path walks them (None: out of order, or converted first): it takes them instead of
    walking the same level again."""

    @property
    def sop_class_uid(self) -> str:
        return self.header.get(0x00080016, "")


_REGISTERED = frozenset(uid.encode("ascii") for uid in UID_dictionary)
"""UIDs the standard registers (PS3.6 Annex A: SOP classes, the well-known palette SOP
instances...): they name no patient, and a profile keeps them."""
_MAY_HOLD = frozenset({None, "PN", "SQ", "UN"})
"""Written VRs of elements that may hold a gathered value without a gathered tag."""


def _context(facts: SourceFacts) -> PhiContext:
    """The source's values as the pixel cleaner judges text against them (every
    spelling it recognises: run together, cut, reordered, dates in other formats)."""
    pairs = []
    for keyword, vr, raw in facts.whole:
        text = raw.decode(facts.encodings, "replace").strip(" \x00")
        for value in text.split("\\"):
            if value.strip():
                pairs.append((info_type_of(keyword, vr), value))
    return PhiContext.from_values(plain_spellings(pairs))


_UID_PATH = re.compile(rb"[0-9./]*")
"""A path of UIDs alone (``--layout uid``: pseudonyms, searched as UIDs above)."""
_PATH_EXTENSION = re.compile(r"\.(?:dcm|dicom|dic|ima)$", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_PATH_SEPARATORS = re.compile(r"[_/\\]+")


def _spelled_in_path(name: str, ctx: PhiContext) -> bool:
    """Whether a path spells one of the source's values another way than it is written
    ("JaneDoe/", "born_1960-01-01/", "MRN-777009/"): words split at separators and at
    CamelCase, then matched as burned-in text is against the source's own values (a
    date or a number that is not one of them, "series_000123", names no one)."""
    from dicom_deid.text.fuzzy import fuzzy_matches

    text = _PATH_SEPARATORS.sub(" ", _CAMEL.sub(" ", _PATH_EXTENSION.sub("", name)))
    return any(True for _ in ctx.matches(text)) or bool(fuzzy_matches(text, ctx))


@cache
def _named(keyword: str) -> frozenset[str]:
    return frozenset((keyword,))


@lru_cache(maxsize=4096)
def _forms(raw: bytes, name: bool, ident: bool = False) -> tuple[bytes, ...]:
    """The byte forms of one value worth searching for: the whole value and its parts
    (values of a multi-valued element; a name's groups and components; an ID's digits
    without its letter prefix, ``ident``). A series' files repeat most values:
    remembered."""
    out = set()
    parts = {raw, *(_NAME_SPLIT if name else _TEXT_SPLIT).split(raw)}
    if ident and raw.isascii():  # "MRN4821397": also "4821397", as the sweep finds it
        parts |= {form.encode("ascii") for form in id_digit_forms(
            raw.decode("ascii").rstrip(" \x00"))}
    if name:  # "DRSMITH^JOHN": also "SMITH" (text writes "Dr Smith")
        parts |= {bare.encode("ascii") for p in parts if p.isascii()
                  and (bare := untitled(p.decode("ascii").strip())) is not None}
        for value in raw.split(b"\\"):
            for group in value.split(b"="):  # 王^伟 written 王伟, in any group
                family, _, rest = group.partition(b"^")
                family, given = family.strip(b" \x00"), rest.split(b"^")[0].strip(b" \x00")
                if family and given and not (family + given).isascii():
                    parts.add(family + given)
                if rest and _one_cjk(family):  # 王 of "王^[CTX]" (a one-character
                    parts.add(family + _REPLACED_GIVEN)  # family name is no form alone)
    for part in parts:
        part = part.strip(b" \x00^=")  # an empty name is "^^^^": no form of anything
        if len(part) >= _MIN_TEXT if part.isascii() else _characters(part) >= 2:
            out.add(part)
    return tuple(sorted(out))


_REPLACED_GIVEN = REPLACED_GIVEN.encode("ascii")


def _one_cjk(raw: bytes) -> bool:
    """Whether a value is one CJK character: in UTF-8, or two bytes of a double-byte set
    (GB2312, EUC-KR) both above 127."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return len(raw) == 2 and raw[0] > 127 and raw[1] > 127
    return len(text) == 1 and CJK_RE.match(text) is not None


def _characters(raw: bytes) -> int:
    """How many characters a non-ASCII value holds, about: UTF-8 when it decodes as such;
    two bytes both above 127 are one character of a double-byte set (EUC-KR, GB2312);
    else a byte each. A one-character family name (김, 王) is no form: the sweep leaves
    it too, as every kept CJK text holds it (but where it stands before a replaced given
    name, :data:`~dicom_deid.text.context.REPLACED_GIVEN`)."""
    try:
        return len(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return 1 if len(raw) == 2 and raw[0] > 127 and raw[1] > 127 else len(raw)


class Gate:
    """Checks outputs against their sources; one per worker (caches per SOP class)."""

    def __init__(self, exceptions: Iterable[str] = ()) -> None:
        self.exceptions = expand_exceptions(exceptions)
        self._risk: PixelCleaner | None = None
        self._sequences: dict[tuple[bytes, bool], SourceFacts] = {}
        self._tags = {t: k for t, k in _gathered_tags().items() if k not in self.exceptions}
        self._pn = "PersonName" not in self.exceptions

    # -- the source ------------------------------------------------------------------

    def source_facts(self, data: bytes, size: int | None = None,
                     walked: tuple[bytes, bool, list[Element]] | None = None) -> SourceFacts:
        """Identifying values at any depth and filled top-level tags of DICOM bytes (the
        whole file, or its head when it holds everything before the pixel data).
        ``walked``: these same bytes' VR encoding and top-level elements as the byte path
        walked them (the same walker; taken only when they are of ``data`` itself).
        :class:`BadInput` when the bytes cannot be walked (the caller reads the whole
        file, or fails the output)."""
        facts = SourceFacts()
        if walked is not None and walked[0] is data:
            implicit, top = walked[1], walked[2]
            facts.walked = walked
        else:
            start = locate_dataset(data)
            if start.transfer_syntax in _WALKER_CANNOT:
                # raises BadInput if pydicom cannot read it either; the copy has no pixels
                data, had_pixels = _as_explicit_le(data)
                start, size = locate_dataset(data), None
                if had_pixels:
                    facts.filled.add(PIXEL_DATA_TAG)  # an image at risk is still one
            end = max(len(data), size or 0)
            implicit = start.implicit
            try:
                top = elements(data, start.pos, end, implicit, ordered=True)
                facts.walked = (data, implicit, top)
            except BadInput:  # out of order, or cut inside a head: up to the pixels
                top = _until_pixels(data, start.pos, end, implicit)
        for tag, _vr, _h, vs, ve, undefined in top:
            if undefined or ve > vs:
                facts.filled.add(tag)
            if tag in _RISK_TAGS:
                facts.header[tag] = data[vs:ve].rstrip(b" \x00").decode("ascii", "replace")
            elif tag == 0x00080005 and b"192" in data[vs:ve]:
                facts.encodings = "utf-8"
        self._gather(data, top, implicit, facts, 0)
        return facts

    def _gather(self, data: bytes, elems: Sequence[Element], implicit: bool,
                facts: SourceFacts, depth: int) -> None:
        tags, names = self._tags, self._pn
        for tag, written, _h, vs, ve, undefined in elems:
            keyword = tags.get(tag)
            if keyword is None and written not in _MAY_HOLD:  # most elements: one lookup
                continue
            if tag in _PIXEL_TAGS or tag >> 16 == 0x0002:
                continue
            vr = written
            if vr is None or vr == "UN":  # implicit VR, or unknown to the writer
                vr = _vr_of(tag) if not tag >> 16 & 1 else ("SQ" if undefined else "UN")
            if vr == "SQ":
                if depth < 32:  # items of an implicit or UN sequence are implicit VR
                    self._sequence(data[vs:ve], tag, implicit or written == "UN", facts,
                                   depth)
                continue
            if keyword is None:
                if vr != "PN" or not names:
                    continue
                keyword = keyword_for_tag(tag) or "PersonName"
                if keyword in self.exceptions:  # a person name the project keeps
                    continue
            if vr == "UI":
                out = facts.uids
                forms = tuple(u for u in _forms(data[vs:ve], False) if u not in _REGISTERED)
            else:
                out = facts.values
                forms = _forms(data[vs:ve], vr == "PN", keyword in _id_keywords())
                if forms:
                    facts.whole.append((keyword, vr, data[vs:ve]))
            for form in forms:
                kws = out.get(form)
                if kws is None:
                    out[form] = _named(keyword)
                elif keyword not in kws:
                    out[form] = kws | _named(keyword)

    def _sequence(self, value: bytes, tag: int, implicit: bool, facts: SourceFacts,
                  depth: int) -> None:
        """Gather from a sequence's items; a series' files repeat most sequences byte for
        byte, so what one holds is remembered by its bytes."""
        key = (value, implicit)
        found = self._sequences.get(key)
        if found is None:
            found = SourceFacts()
            for item in sequence_items(value, 0, len(value), implicit, tag):
                self._gather(value, item, implicit, found, depth + 1)
            if len(self._sequences) >= _SEQUENCE_MEMO:
                self._sequences.clear()
            self._sequences[key] = found
        for mine, theirs in ((facts.values, found.values), (facts.uids, found.uids)):
            for form, kws in theirs.items():
                known = mine.get(form)
                if known is None:
                    mine[form] = kws
                elif known is not kws and not kws <= known:
                    mine[form] = known | kws
        facts.whole += found.whole
        facts.nested += found.whole

    # -- the output ------------------------------------------------------------------

    def check(
        self, name: str, data: bytes, facts: SourceFacts, uids: dict[int, str],
        ocr: OcrReadout | None = None,
    ) -> Verdict:
        """The verdict on one output's bytes as written (e.g.
        :func:`~dicom_deid.dicom.files.written_view`). ``uids``: the Study/Series/SOP
        Instance UIDs the mapping records for it. ``ocr``: what the pixel cleaner's OCR
        read and kept in this image (None: it did not read it; an image at risk is then
        read here)."""
        digest = hashlib.sha256(data).hexdigest()
        problems: list[str] = []
        try:
            start = locate_dataset(data, meta_values=True)
        except BadInput as exc:
            return Verdict(name, digest, len(data), (f"not readable DICOM ({exc.kind})",))
        if start.meta is None:
            problems.append("no file meta information")
        size, written = len(data), data
        try:
            if start.transfer_syntax in _WALKER_CANNOT:
                # Deflated or big endian: checked as pydicom reads it, re-encoded as
                # explicit VR little endian (text values keep their bytes); the file
                # meta is always explicit VR little endian, read as it is.
                data = _as_explicit_le(bytes(data))[0]  # a map: copied, pydicom keeps views
                start = locate_dataset(data)._replace(meta=start.meta)
            top = _until_pixels(data, start.pos, len(data), start.implicit)
        except BadInput as exc:
            return Verdict(name, digest, size, (f"not readable DICOM ({exc.kind})",))
        self._structure(data, top, start.meta, facts, uids, problems)
        leaks = self._leaks(data, top, start.implicit, facts, problems)
        leaks += self._name_leaks(name, facts, problems)
        leaks += self._frame_metadata(data, top, start.transfer_syntax, problems)
        if self.at_risk(facts):
            # The output's own pixels are read back (the bytes as written: the re-encoded
            # copy has no pixels), whether or not the policy read the image: text the
            # cleaner's read missed over image content may read in the output (probe 14:
            # an accession number over mid-grey tissue, read back in 5 of 20 images); the
            # lines the cleaner read and left are judged too.
            kept = ocr.kept if ocr is not None and ocr.read else []
            lines = [*kept, *self._read_pixels(written, problems)]
            found = self._burned_in(lines, facts)
            if found:
                problems.append(f"burned-in text: {found} line(s) read back hold an "
                                "identifying value or a sensitive pattern")
                leaks += 1
        return Verdict(name, digest, size, tuple(problems), leaks,
                       len(facts.values) + len(facts.uids))

    @staticmethod
    def _frame_metadata(data: bytes, top: Sequence[Element], transfer_syntax: str,
                        problems: list[str]) -> int:
        """Text left in the output's compressed frames outside the image (JPEG COM and
        APPn segments, JPEG 2000 COM markers...), which the value search cannot see in
        compressed bytes: 1 (a leak) when a frame carries any. Marker segments only are
        walked; a frame that is no well-formed codestream fails the output too. A video
        stream (MPEG, HEVC) is not walked and fails the output: its user data and SEI
        messages may carry any text, and no decoder here can read its frames."""
        if transfer_syntax in VIDEO_SYNTAXES:
            problems.append("video pixel data cannot be inspected (its stream may carry text)")
            return 0
        if transfer_syntax not in CODESTREAM_SYNTAXES:
            return 0
        by_tag = {e[0]: e for e in top}
        pixels = by_tag.get(PIXEL_DATA_TAG)
        if pixels is None or not pixels[5]:
            return 0
        try:
            found = pixel_data_segments(bytes(data[pixels[3]:pixels[4]]), transfer_syntax,
                                        *frame_layout(data, by_tag))
        except BadInput as exc:
            problems.append(f"compressed pixel data cannot be walked ({exc.kind})")
            return 0
        where: dict[str, list[int]] = {}
        for number, segment in found:
            where.setdefault(segment.name, []).append(number)
        for name, numbers in where.items():
            more = f" (and {len(numbers) - 1} more)" if len(numbers) > 1 else ""
            problems.append(f"pixel data carries {name} in frame {numbers[0]}{more}")
        return 1 if found else 0

    @staticmethod
    def has_pixels(facts: SourceFacts) -> bool:
        """Whether the source is an image (pixel data with a value)."""
        return PIXEL_DATA_TAG in facts.filled

    def at_risk(self, facts: SourceFacts) -> bool:
        """Whether the image may carry burned-in text, by the privacy-first policy's rule
        (``ocrScope`` AUTO: BurnedInAnnotation YES, US and other text-prone modalities,
        secondary captures, screen saves), whatever the project's policy chose."""
        if not self.has_pixels(facts):
            return False
        if self._risk is None:
            from dicom_deid.pixels.clean import PixelCleaner

            self._risk = PixelCleaner(privacy_first())
        return self._risk.ocr_by_header(facts.header)

    @staticmethod
    def _read_pixels(data: bytes, problems: list[str]) -> list[str]:
        """OCR of the output's own pixels, every distinct frame."""
        from dicom_deid.pixels.clean import read_text_lines

        try:
            return read_text_lines(parse_instance(bytes(data)).dataset)
        except BadInput as exc:
            problems.append(f"pixel data of an image at risk cannot be read back ({exc.kind})")
            return []

    def _burned_in(self, lines: Sequence[str], facts: SourceFacts) -> int:
        """How many ``lines`` hold one of the source's values (any spelling the pixel
        cleaner recognises) or a sensitive pattern (a date, an ID, a name...)."""
        if not lines:
            return 0
        from dicom_deid.pixels.clean import DEFAULT_IMAGE_INFO_TYPES
        from dicom_deid.text.banner import line_spans

        ctx = _context(facts)
        return sum(bool(line_spans(line, ctx, include=DEFAULT_IMAGE_INFO_TYPES))
                   for line in lines)

    def _structure(self, data: bytes, top: Sequence[Element], meta: dict[int, str] | None,
                   facts: SourceFacts, uids: dict[int, str], problems: list[str]) -> None:
        values = {tag: (vs, ve, u) for tag, _vr, _h, vs, ve, u in top}

        def text(tag: int) -> str:
            vs, ve, _u = values.get(tag, (0, 0, False))
            return data[vs:ve].rstrip(b" \x00").decode("ascii", "replace")

        for tag in _UID_TAGS:
            expected = uids.get(tag)
            if expected is not None and text(tag) != expected:
                problems.append(f"{_UID_NAMES[tag]} differs from the mapping")
        if meta is not None:
            if meta.get(0x00020003, "") != text(0x00080018):
                problems.append("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
            if meta.get(0x00020002, "") != text(0x00080016):
                problems.append("MediaStorageSOPClassUID differs from SOPClassUID")
        for tag in _type1_tags(facts.sop_class_uid):
            vs, ve, undefined = values.get(tag, (0, 0, False))
            if tag in facts.filled and not (undefined or ve > vs):
                problems.append(f"Type 1 attribute {keyword_for_tag(tag)} lost its value")
        if embedded_overlay_groups(values):  # Overlay Data hidden in the pixels' high bits
            problems.append("an overlay plane is embedded in the pixel data")

    @staticmethod
    def _name_leaks(name: str, facts: SourceFacts, problems: list[str]) -> int:
        """The source's values in the output's own path (``--layout relative`` keeps the
        input's: a folder named after the patient)."""
        raw = _EXTENSION.sub(b"", name.encode("utf-8", "replace"))  # "<uid>.dcm": a UID
        found: set[str] = set()
        for haystack, forms, uid in ((raw.lower(), facts.values, False),
                                     (raw, facts.uids, True)):
            for form, kws in forms.items():
                needle, border = _needle(form, uid)
                if haystack.find(needle) >= 0 and not kws <= found and any(
                        whole for _, _, whole in _occurrences(haystack, needle, border)):
                    found |= kws
        if not found and not _UID_PATH.fullmatch(raw) and \
                _spelled_in_path(name, _context(facts)):
            found.add("identifying")  # (the spelling that matched is not named)
        for kw in sorted(found):
            problems.append(f"original {kw} value found in the file's path")
        return len(found)

    def _leaks(self, data: bytes, top: Sequence[Element], implicit: bool,
               facts: SourceFacts, problems: list[str]) -> int:
        found: set[str] = set()
        # walked only when something matched (rarely), once
        exempt = cache(lambda: _Exempt.walk(data, top, implicit))
        for lo, hi in _outside_pixels(top, len(data)):
            # Case-folded once; each form is then a plain substring search (C speed),
            # whole tokens only (a name inside a longer word is not that name).
            region = data[lo:hi]
            for haystack, forms, uid in ((region.lower(), facts.values, False),
                                         (region, facts.uids, True)):
                find = haystack.find
                for form, kws in forms.items():
                    needle, border = _needle(form, uid)
                    if find(needle) < 0 or kws <= found:  # most forms: one search
                        continue
                    for at, stop, whole in _occurrences(haystack, needle, border):
                        start, stop = lo + at, lo + stop
                        if not whole and not exempt().whole_in_value(
                                data, start, stop, border) and not (
                                not uid and _id_digits(needle, kws)
                                and exempt().uid_component(data, start, stop)):
                            continue  # inside a longer word, even within its value
                        if not any(x <= start and stop <= y and not _the_number(
                                       data[x:y], needle, kws)
                                   for x, y in (exempt().schemes_and_numbers if (
                                       needle.isdigit() and len(needle) < _LONG_NUMBER)
                                       else exempt().schemes)):
                            found |= kws
                            break
            found |= _grouped_ids(data, lo, region, facts, found, exempt)
        for kw in sorted(found):
            problems.append(f"original {kw} value found")
        return len(found)


_NUMBER_ID = 7
"""An ID's digits of this many (below :data:`_LONG_NUMBER`) that are a number element's
whole value are the ID (probe 12: a 7-digit MRN as the Acquisition Number or an SR
measurement); a round one ("2500000") may be a number by chance, and stays one."""


def _the_number(value: bytes, needle: bytes, kws: frozenset[str]) -> bool:
    """Whether an exempt range's ``value`` is, whole (one of its values, padding, sign
    and leading zeros aside), an ID's digits of :data:`_NUMBER_ID` digits or more."""
    if len(needle) < _NUMBER_ID or needle.endswith(b"00") or not _id_digits(needle, kws):
        return False
    return any(v.strip(b" \x00+").lstrip(b"0") == needle for v in value.split(b"\\"))


def _id_digits(form: bytes, kws: frozenset[str]) -> bool:
    """Whether a form is the digits of an ID (:func:`_id_keywords`) long enough to be
    judged as a UID's component (:meth:`_Exempt.uid_component`)."""
    return len(form) >= SPACED_ID_DIGITS and form.isdigit() and not kws.isdisjoint(
        _id_keywords())


def _grouped_ids(data: bytes, lo: int, region: bytes, facts: SourceFacts, found: set[str],
                 exempt: Callable[[], _Exempt]) -> set[str]:
    """The keywords of the all-digit source values of 6 digits or more written in groups
    in ``region`` (at ``lo`` in ``data``) as whole numbers, outside code scheme
    designators (``exempt``: walked only if a grouping is there at all)."""
    hits: set[str] = set()
    for form, kws in facts.values.items():
        if len(form) < SPACED_ID_DIGITS or not form.isdigit() or kws <= found | hits:
            continue
        border = _number_border(form)
        for at, stop in _spaced_occurrences(region, form):
            start, end = lo + at, lo + stop
            touches = (at > 0 and region[at - 1] in border) or (
                stop < len(region) and region[stop] in border)
            if touches and not exempt().whole_in_value(data, start, end, border):
                continue  # part of a longer number
            if not any(x <= start and end <= y for x, y in exempt().schemes):
                hits |= kws
                break
    return hits


@lru_cache(maxsize=128)
def _grouping_head(head: bytes) -> re.Pattern[bytes]:
    """Two digits, then a separator :func:`~dicom_deid.text.context.spaced_digits` writes."""
    return re.compile(re.escape(head) + rb"[\s\-/]")


@lru_cache(maxsize=4096)
def _spaced_id(digits: bytes) -> re.Pattern[bytes]:
    return re.compile(spaced_digits(digits.decode("ascii")).encode("ascii"))


def _spaced_occurrences(region: bytes, digits: bytes) -> Iterable[tuple[int, int]]:
    """Where an all-digit ID is written in groups ("48-21-39-77" for 48213977): its
    compact form is the plain search's. Each grouping starts with its first two digits
    and then its third or a separator: a region holding neither (most, for most IDs) is
    not scanned by the ID's own pattern."""
    if region.find(digits[:3]) < 0 and _grouping_head(digits[:2]).search(region) is None:
        return
    for m in _spaced_id(digits).finditer(region):
        if not m.group().isdigit():
            yield m.span()


_UID_CHARS = frozenset(b"0123456789.")
_DOT = ord(".")
_UID_SHAPE = re.compile(rb"[0-9]+(?:\.[0-9]+){2,}")
"""A UID as the gate judges one an ID's digits are a component of: three components or
more (a decimal number has two)."""
_WORD_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NUMBER_CHARS = _WORD_CHARS | _UID_CHARS


@lru_cache(maxsize=8192)
def _needle(form: bytes, uid: bool) -> tuple[bytes, frozenset[int]]:
    """What :meth:`Gate._leaks` searches for one form, and the bytes that may not touch
    it: a UID as it is, inside digits and dots; a text value case-folded, inside letters
    and digits ("10008" in a kept UID is not an ID: a number also inside dots)."""
    if uid:
        return form, _UID_CHARS
    needle = form.lower()
    return needle, _number_border(needle) if needle.isdigit() else _WORD_CHARS


def _number_border(digits: bytes) -> frozenset[int]:
    """What may not touch an all-digit value: a letter, digit or dot ("10008" in a kept
    UID, "A1500" is not StudyID 1500); a long one (an MRN, a birth date) is one whatever
    letters touch it ("MRN48213977"), so only digits and dots."""
    return _UID_CHARS if len(digits) >= _LONG_NUMBER else _NUMBER_CHARS


def _occurrences(haystack: bytes, needle: bytes, token: frozenset[int]
                 ) -> Iterable[tuple[int, int, bool]]:
    """Where ``needle`` occurs in ``haystack`` (start, and the end of what it spans there),
    and whether it touches no ``token`` byte on either side there (an alphanumeric name
    inside a longer word, a UID inside a longer UID, is not it); a side of the needle
    that is itself no token byte needs no such border. A word of
    :data:`_GLUED_NAME` letters or more spans some of what the sweep takes glued to it:
    one letter in front ("jkowalski"; the sweep takes two, but a rejection costs the
    whole output), digits on either side ("KOWALSKI01", "%20janina"). A
    side that touches one may still be the end of its value (the next bytes are the next
    element's tag): :meth:`_Exempt.whole_in_value` decides those."""
    check_left = needle[0] in token
    check_right = needle[-1] in token
    glued = len(needle) >= _GLUED_NAME and needle.isalpha()
    end = len(haystack)
    at = haystack.find(needle)
    while at >= 0:
        first, after = at, at + len(needle)
        if glued:
            first, after = _glued(haystack, at, after)
        yield first, after, (not check_left or first == 0 or haystack[first - 1] not in token
                             ) and (not check_right or after >= end or haystack[after] not in token)
        at = haystack.find(needle, at + 1)


_GLUED_NAME = 5
"""The sweep's least length of a name word it finds with letters or digits glued on
(:data:`dicom_deid.text.context._INFLECTED`)."""
_DIGITS = frozenset(b"0123456789")
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyz")


def _glued(haystack: bytes, at: int, after: int) -> tuple[int, int]:
    """The span of a name word at ``haystack[at:after]`` (case-folded) with what is glued
    to it: digits before it, else one letter with no word byte before that; digits after."""
    first = at
    if first and haystack[first - 1] in _DIGITS:
        while first and haystack[first - 1] in _DIGITS:
            first -= 1
    elif first and haystack[first - 1] in _LETTERS and (
            first == 1 or haystack[first - 2] not in _WORD_CHARS):
        first -= 1
    end = len(haystack)
    while after < end and haystack[after] in _DIGITS:
        after += 1
    return first, after


@dataclass
class _Exempt:
    """What the search of one output needs once something matched: the value ranges it
    skips (:func:`_exempt_values`) and where every value starts and ends, at any depth."""

    schemes: list[tuple[int, int]]
    schemes_and_numbers: list[tuple[int, int]]
    starts: list[int]
    ends: list[int]

    @classmethod
    def walk(cls, data: bytes, top: Sequence[Element], implicit: bool) -> _Exempt:
        schemes: list[tuple[int, int]] = []
        numbers: list[tuple[int, int]] = []
        values: list[tuple[int, int]] = []
        _exempt_values(data, top, implicit, schemes, numbers, values)
        values.sort()
        return cls(schemes, schemes + numbers, [v[0] for v in values], [v[1] for v in values])

    def whole_in_value(self, data: bytes, start: int, stop: int, token: frozenset[int]
                       ) -> bool:
        """Whether ``data[start:stop]``, inside one value, touches no ``token`` byte of
        that value: a value of even length has no padding, and the byte after it is the
        low byte of the next tag's group ("p" for group 0x0070)."""
        i = bisect_right(self.starts, start) - 1
        if i < 0 or stop > self.ends[i]:
            return False
        vs, ve = self.starts[i], self.ends[i]
        return (start == vs or data[start - 1] not in token) and (
            stop == ve or data[stop] not in token)

    def uid_component(self, data: bytes, start: int, stop: int) -> bool:
        """Whether the digits ``data[start:stop]`` are a whole component of a UID written
        in one value (digits and dots, three components or more, no letter or digit
        touching it): an ID's digits there ("...2.1125.4821397.4.1" for MRN4821397, a
        site's UIDs built from the patient's record number and kept by RetainUIDs) name
        the patient. A UID's components are an organisation's registered root and numbers
        its systems count; one equal to this patient's ID of 6 digits or more is no
        chance but where the ID equals a registered root's number (113619, GE's), which
        then fails closed."""
        i = bisect_right(self.starts, start) - 1
        if i < 0 or stop > self.ends[i]:
            return False
        vs, ve = self.starts[i], self.ends[i]
        first, last = start, stop
        while first > vs and data[first - 1] in _UID_CHARS:
            first -= 1
        while last < ve and data[last] in _UID_CHARS:
            last += 1
        return (start == first or data[start - 1] == _DOT) and (
            stop == last or data[stop] == _DOT) and not (
            first > vs and data[first - 1] in _WORD_CHARS) and not (
            last < ve and data[last] in _WORD_CHARS) and _UID_SHAPE.fullmatch(
            data[first:last].strip(b".")) is not None


_WALKER_CANNOT = frozenset({EXPLICIT_BE, *PYDICOM_ONLY_SYNTAXES})
"""Encodings the little-endian walker cannot read (big endian, deflated)."""


def _as_explicit_le(data: bytes) -> tuple[bytes, bool]:
    """The dataset of DICOM bytes pydicom reads, re-encoded explicit VR little endian,
    without file meta and pixel data, and whether it had pixel data (:class:`BadInput`
    when pydicom cannot read it)."""
    from io import BytesIO

    from pydicom import dcmwrite

    ds = parse_instance(data).dataset
    had_pixels = PIXEL_DATA_TAG in ds
    for tag in _PIXEL_TAGS:
        if tag in ds:
            del ds[tag]
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    ds.preamble = None
    buf = BytesIO()
    try:
        dcmwrite(buf, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    except Exception as exc:  # pydicom's own errors can quote values: the type only
        raise BadInput("unreadable", f"cannot re-encode for checking ({type(exc).__name__})"
                       ) from None
    return buf.getvalue(), had_pixels


_DESIGNATOR = 0x00080102
_NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD",
                         "OF", "OD", "OL", "OV", "AT"})
"""VRs whose values are numbers: a number there ("1500", a lung window's width) is no
written ID, even when an ID of the source is that number..."""
_LONG_NUMBER = 8
"""... unless it has this many digits or more: a birth date or a long MRN written as a
number is no coincidence, where a 6-digit MRN equal to an exposure time of 250000 can be
(a rejection fails the whole batch, night after night)."""


def _exempt_values(data: bytes, elems: Sequence[Element], implicit: bool,
                   schemes: list[tuple[int, int]], numbers: list[tuple[int, int]],
                   values: list[tuple[int, int]], depth: int = 0) -> None:
    """Value ranges the search skips at any depth: in ``schemes``, a code's scheme
    designator and version when they read as such ("BARI", "99LOCAL", "TEST" name a
    scheme, never a person; "2.64" is a version: see :mod:`dicom_deid.config.coding_schemes`); in
    ``numbers``, values of number VRs, skipped by the search for an all-digit value.
    Any other designator or version is searched like any text: a name written there is
    a leak. ``values``: every value's range that is not a sequence's."""
    for tag, vr, _h, vs, ve, undefined in elems:
        if not (vr == "SQ" or undefined):
            values.append((vs, ve))
        if tag in SWEEP_EXEMPT:
            value = data[vs:ve].decode("latin-1")
            if (is_scheme_designator if tag == _DESIGNATOR else is_scheme_version)(value):
                schemes.append((vs, ve))
        elif (vr == "SQ" or (vr in (None, "UN") and (undefined or _vr_of(tag) == "SQ"))
              ) and tag not in _PIXEL_TAGS and depth < 32:
            for item in sequence_items(data, vs, ve, implicit or vr == "UN", tag):
                _exempt_values(data, item, implicit or vr == "UN", schemes, numbers,
                               values, depth + 1)
        elif (vr if vr not in (None, "UN") else _vr_of(tag)) in _NUMBER_VRS:
            numbers.append((vs, ve))


def _until_pixels(data: bytes, pos: int, end: int, implicit: bool) -> list[Element]:
    """The top-level elements up to and including the pixel data (which may reach past
    a head; nothing after it is identifying: trailing padding at most)."""
    try:
        return elements(data, pos, end, implicit)
    except BadInput:
        found = data.find(b"\xe0\x7f\x10\x00", pos)
        if found < 0 or found >= len(data):
            raise
        top = elements(data, pos, found, implicit)
        return top


def _outside_pixels(top: Sequence[Element], size: int) -> list[tuple[int, int]]:
    """The output's byte ranges outside the pixel data value (burned-in text is not
    bytes, and compressed pixels would match short values by chance)."""
    for tag, _vr, _h, vs, ve, undefined in top:
        if tag in _PIXEL_TAGS:
            return [(0, vs), (ve + (8 if undefined else 0), size)]
    return [(0, size)]
