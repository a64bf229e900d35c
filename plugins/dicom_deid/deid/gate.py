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
  "MRN4821397"), its digits as a whole component of a UID, and its digits written in
  groups or one by one ("48-21-397", "4 8 2 1 3 9 7"). Only the project's declared
  exceptions (keywords it deliberately keeps) are not searched.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, NamedTuple

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
from dicom_deid.text.binary import wide_runs
from dicom_deid.text.chars import CJK_RE, plain_spellings
from dicom_deid.text.context import (
    ID_TYPES,
    REPLACED_GIVEN,
    SPACED_ID_DIGITS,
    PhiContext,
    id_digit_forms,
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
_TEXTS_MEMO = 1024
"""Sets of a source's text values remembered (a series' files repeat theirs)."""
_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)
_RISK_TAGS = frozenset(RISK_TAGS)
"""What decides an image at risk (:func:`~dicom_deid.pixels.risk.at_risk_by_header`)."""
_HEADER_TAGS = _RISK_TAGS | {0x00080005}
"""The top-level attributes :meth:`Gate.source_facts` reads: those and the character set."""
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
    between files: never changed in place). Made from :attr:`whole` once it is read."""
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
    searched: tuple[dict[bytes, frozenset[str]], _TextNeedles] | None = field(
        default=None, compare=False, repr=False)
    """:attr:`values` as the output is searched for them, made with them (taken only
    while :attr:`values` is that same dict)."""

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


def _name_form(forms: dict[bytes, frozenset[str]], form: bytes, keyword: str) -> None:
    """Record that ``form`` came from ``keyword`` too (the sets are shared: replaced,
    never changed in place)."""
    kws = forms.get(form)
    if kws is None:
        forms[form] = _named(keyword)
    elif keyword not in kws:
        forms[form] = kws | _named(keyword)


@lru_cache(maxsize=4096)
def _person_keyword(tag: int) -> str:
    """The keyword a person name of a tag the gate does not gather is named by (a
    private one's: PersonName); remembered, as every file of a series has the same."""
    return keyword_for_tag(tag) or "PersonName"


@lru_cache(maxsize=4096)
def _uid_forms(raw: bytes) -> tuple[bytes, ...]:
    """The forms of a UID value searched for: those the standard does not register."""
    return tuple(u for u in _forms(raw, False) if u not in _REGISTERED)


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
        self._risky: dict[tuple[tuple[int, str], ...], bool] = {}
        self._sequences: dict[tuple[bytes, bool], SourceFacts] = {}
        self._texts: dict[tuple[tuple[str, str, bytes], ...],
                          tuple[dict[bytes, frozenset[str]], _TextNeedles]] = {}
        self._tags = {t: k for t, k in _gathered_tags().items() if k not in self.exceptions}
        self._pn = "PersonName" not in self.exceptions
        self._ids = _id_keywords()

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
        facts.filled |= {tag for tag, _vr, _h, vs, ve, undefined in top if undefined or ve > vs}
        for tag, _vr, _h, vs, ve, _u in [e for e in top if e[0] in _HEADER_TAGS]:
            if tag in _RISK_TAGS:
                facts.header[tag] = data[vs:ve].rstrip(b" \x00").decode("ascii", "replace")
            elif b"192" in data[vs:ve]:  # Specific Character Set: ISO_IR 192, UTF-8
                facts.encodings = "utf-8"
        self._gather(data, top, implicit, facts, 0)
        self._text_values(facts)
        return facts

    def _text_values(self, facts: SourceFacts) -> None:
        """:attr:`SourceFacts.values` from the text values gathered, and how the output
        is searched for them: a series' files repeat the same values, so both are
        remembered by the values as written."""
        key = tuple(facts.whole)
        known = self._texts.get(key)
        if known is None:
            values: dict[bytes, frozenset[str]] = {}
            for keyword, vr, raw in key:
                for form in _forms(raw, vr == "PN", keyword in self._ids):
                    _name_form(values, form, keyword)
            known = values, _text_needles(values)
            if len(self._texts) >= _TEXTS_MEMO:
                self._texts.clear()
            self._texts[key] = known
        facts.values = dict(known[0])
        facts.searched = facts.values, known[1]

    def _gather(self, data: bytes, elems: Sequence[Element], implicit: bool,
                facts: SourceFacts, depth: int) -> None:
        tags, names, ids = self._tags, self._pn, self._ids
        uids, whole = facts.uids, facts.whole
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
                keyword = _person_keyword(tag)
                if keyword in self.exceptions:  # a person name the project keeps
                    continue
            if vr != "UI":  # its forms are made with the others' (:meth:`_text_values`)
                raw = data[vs:ve]
                if _forms(raw, vr == "PN", keyword in ids):
                    whole.append((keyword, vr, raw))
                continue
            for form in _uid_forms(data[vs:ve]):
                _name_form(uids, form, keyword)

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
        uids = facts.uids
        for form, kws in found.uids.items():
            known = uids.get(form)
            if known is None:
                uids[form] = kws
            elif known is not kws and not kws <= known:
                uids[form] = known | kws
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
        by_tag = {e[0]: e for e in top}
        needles = _needles(facts)
        self._structure(data, by_tag, start.meta, facts, uids, problems)
        leaks = self._leaks(data, top, start.implicit, needles, problems)
        leaks += self._name_leaks(name, facts, needles, problems)
        leaks += self._frame_metadata(data, by_tag, start.transfer_syntax, problems)
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
    def _frame_metadata(data: bytes, by_tag: dict[int, Element], transfer_syntax: str,
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
        key = tuple(facts.header.items())  # a series' images say the same: remembered
        risky = self._risky.get(key)
        if risky is None:
            if self._risk is None:
                from dicom_deid.pixels.clean import PixelCleaner

                self._risk = PixelCleaner(privacy_first())
            risky = self._risk.ocr_by_header(facts.header)
            if len(self._risky) >= _SEQUENCE_MEMO:
                self._risky.clear()
            self._risky[key] = risky
        return risky

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

    def _structure(self, data: bytes, values: dict[int, Element], meta: dict[int, str] | None,
                   facts: SourceFacts, uids: dict[int, str], problems: list[str]) -> None:
        """The UIDs of the mapping, the file meta naming the instance, the source's filled
        Type 1 attributes still filled, no overlay hidden in the pixels (``values``: the
        output's top-level elements by tag)."""
        def text(tag: int) -> str:
            e = values.get(tag)
            return "" if e is None else data[e[3]:e[4]].rstrip(b" \x00").decode(
                "ascii", "replace")

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
            e = values.get(tag)
            if tag in facts.filled and (e is None or not (e[5] or e[4] > e[3])):
                problems.append(f"Type 1 attribute {keyword_for_tag(tag)} lost its value")
        if embedded_overlay_groups(values):  # Overlay Data hidden in the pixels' high bits
            problems.append("an overlay plane is embedded in the pixel data")

    @staticmethod
    def _name_leaks(name: str, facts: SourceFacts, needles: _Needles,
                    problems: list[str]) -> int:
        """The source's values in the output's own path (``--layout relative`` keeps the
        input's: a folder named after the patient). A path of UIDs alone can hold no
        value with a byte other than its digits, dots and slashes: those are not sought."""
        raw = _EXTENSION.sub(b"", name.encode("utf-8", "replace"))  # "<uid>.dcm": a UID
        uid_path = _UID_PATH.fullmatch(raw) is not None
        found: set[str] = set()
        text = needles.text
        words, seek = (text.path, text.path_sought) if uid_path else (
            text.text, text.text_sought)
        for haystack, forms, sought in ((raw.lower(), words, seek),
                                        (raw, needles.uids, needles.uid_sought)):
            find = haystack.find
            if not sought or max(map(find, sought)) < 0:  # most paths: none is there
                continue
            for needle, border, kws in forms:
                if find(needle) >= 0 and not kws <= found and any(
                        whole for _, _, whole in _occurrences(haystack, needle, border)):
                    found |= kws
        if not found and not uid_path and _spelled_in_path(name, _context(facts)):
            found.add("identifying")  # (the spelling that matched is not named)
        for kw in sorted(found):
            problems.append(f"original {kw} value found in the file's path")
        return len(found)

    def _leaks(self, data: bytes, top: Sequence[Element], implicit: bool,
               needles: _Needles, problems: list[str]) -> int:
        """How many keywords' values of the source the output holds outside its pixel
        data (each named in ``problems``)."""
        found: set[str] = set()
        walked: list[_Exempt] = []

        def exempt() -> _Exempt:  # walked only when something matched (rarely), once
            if not walked:
                walked.append(_Exempt.walk(data, top, implicit))
            return walked[0]

        for lo, hi in _outside_pixels(top, len(data)):
            if lo >= hi:  # nothing after the pixel data (most files)
                continue
            # Case-folded once; each form is then a plain substring search (C speed),
            # whole tokens only (a name inside a longer word is not that name).
            region = data[lo:hi]
            for haystack, forms, sought, uid in (
                    (region.lower(), needles.text.text, needles.text.text_sought, False),
                    (region, needles.uids, needles.uid_sought, True)):
                find = haystack.find
                if not sought or max(map(find, sought)) < 0:  # most outputs: none at all
                    continue
                for needle, border, kws in forms:
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
            if needles.text.ids:
                found |= _grouped_ids(data, lo, region, needles.text.ids, found, exempt)
            found |= _wide_leaks(region, needles, found)
        for kw in sorted(found):
            problems.append(f"original {kw} value found")
        return len(found)


def _wide_leaks(region: bytes, needles: _Needles, found: set[str]) -> set[str]:
    """The keywords whose values an output's UTF-16 text holds (an ICC profile's
    description, a vendor's blob): each run of European letters read as text, written
    in UTF-8, Latin-1 and the source's character set, and searched as the output's own
    bytes are, whole tokens only; values in other letters sought as their UTF-16 bytes
    (:attr:`_Needles.wide`)."""
    hits: set[str] = set()
    for needle, kws in needles.wide:
        if not kws <= found | hits and needle in region:
            hits |= kws
    for run in wide_runs(region):
        for narrow in {run.text.encode(codec, "replace").lower()
                       for codec in ("utf-8", "latin-1", needles.codec)}:
            for forms in (needles.text.text, needles.uids):
                for needle, border, kws in forms:
                    if kws <= found | hits or narrow.find(needle) < 0:
                        continue
                    if any(whole for _at, _stop, whole in _occurrences(narrow, needle, border)):
                        hits |= kws
    return hits


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


def _grouped_ids(data: bytes, lo: int, region: bytes, ids: Sequence[tuple[bytes, frozenset[str]]],
                 found: set[str], exempt: Callable[[], _Exempt]) -> set[str]:
    """The keywords of the all-digit source values of 6 digits or more (``ids``) written
    in groups in ``region`` (at ``lo`` in ``data``) as whole numbers, outside code scheme
    designators (``exempt``: walked only if a grouping is there at all): "48-21-39-77",
    "4821 3977", or digit by digit, "4 8 2 1 3 9 7". Each run of digits joined by
    separators is read once, its digits searched for every ID; an occurrence with no
    separator inside is the plain search's."""
    hits: set[str] = set()
    for at, run in _grouped_runs(region):
        digits = run.translate(None, _SEPARATORS)
        if len(digits) < SPACED_ID_DIGITS:
            continue
        where: list[int] = []  # the offset in ``region`` of each of the run's digits
        for form, kws in ids:
            i = digits.find(form)
            if i < 0 or kws <= found | hits:
                continue
            if not where:
                where = [at + k for k, c in enumerate(run) if c in _DIGITS]
            border, n = _number_border(form), len(form)
            while i >= 0:
                first, stop = where[i], where[i + n - 1] + 1
                if stop - first > n and _grouped_id_at(data, lo, region, first, stop,
                                                       border, exempt):
                    hits |= kws
                    break
                i = digits.find(form, i + 1)
    return hits


def _grouped_id_at(data: bytes, lo: int, region: bytes, first: int, stop: int,
                   border: frozenset[int], exempt: Callable[[], _Exempt]) -> bool:
    """Whether the grouped ID at ``region[first:stop]`` is a whole number (touching no
    ``border`` byte, or its value whole) outside a code scheme designator."""
    start, end = lo + first, lo + stop
    touches = (first > 0 and region[first - 1] in border) or (
        stop < len(region) and region[stop] in border)
    if touches and not exempt().whole_in_value(data, start, end, border):
        return False  # part of a longer number
    return not any(x <= start and end <= y for x, y in exempt().schemes)


_SEPARATORS = b" \t\n\r\f\v-/"
"""What :func:`~dicom_deid.text.context.spaced_digits` writes between an ID's digits (a
space, any ASCII white space, a hyphen or a slash), up to :data:`_MAX_SEPARATORS` of them."""
_MAX_SEPARATORS = 3
_CLASSES = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 if b in _SEPARATORS else 0x78
                 for b in range(256))
"""Bytes translated to their class: a digit to "0", a separator to " ", any other to "x"."""
_JOIN = re.compile(rb"0 {1,%d}0" % _MAX_SEPARATORS)
_BREAK = b" " * (_MAX_SEPARATORS + 1)
_RUN_ON = re.compile(rb"0++(?: {1,%d}+0++)*+" % _MAX_SEPARATORS)


def _grouped_runs(region: bytes) -> Iterator[tuple[int, bytes]]:
    """Each run of digits in ``region`` with separators between some of them (where it
    starts, its bytes): digits and at most :data:`_MAX_SEPARATORS` separators between two
    of them, from a digit to a digit. The region's bytes are classed once, then searched
    for a join (digit, separators, digit) of literal bytes: most regions have none or a
    few (a date in a description); each run is read from its first join."""
    classes = region.translate(_CLASSES)
    rfind = classes.rfind
    pos = 0
    while (join := _JOIN.search(classes, pos)) is not None:
        at = join.start()
        start = rfind(b"x", 0, at) + 1  # after what no run holds: a byte of no class ...
        gap = rfind(_BREAK, start, at)  # ... or more separators than a grouping writes
        if gap >= 0:
            start = gap + len(_BREAK)
        start = classes.find(b"0", start)
        run = _RUN_ON.match(classes, at)
        assert run is not None  # (``at`` is a digit)
        pos = run.end()
        yield start, region[start:pos]


_UID_CHARS = frozenset(b"0123456789.")
_DOT = ord(".")
_UID_SHAPE = re.compile(rb"[0-9]+(?:\.[0-9]+){2,}")
"""A UID as the gate judges one an ID's digits are a component of: three components or
more (a decimal number has two)."""
_WORD_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NUMBER_CHARS = _WORD_CHARS | _UID_CHARS


@lru_cache(maxsize=8192)
def _text_needle(form: bytes) -> tuple[bytes, frozenset[int], bool, bool]:
    """What :meth:`Gate._leaks` searches for one text form, and the bytes that may not
    touch it: the form case-folded, inside letters and digits ("10008" in a kept UID is
    not an ID: a number also inside dots; a UID is searched as it is, inside digits and
    dots). Then whether a path of UIDs could hold it (digits, dots, slashes only), and
    whether it is an ID's digits also written in groups (:func:`_grouped_ids`)."""
    needle = form.lower()
    return (needle, _number_border(needle) if needle.isdigit() else _WORD_CHARS,
            not needle.strip(b"0123456789./"),
            len(form) >= SPACED_ID_DIGITS and form.isdigit())


_Needle = tuple[bytes, frozenset[int], frozenset[str]]
"""What is searched for (a form as :meth:`Gate._leaks` seeks it), the bytes that may not
touch it, and the keywords it came from."""


class _TextNeedles(NamedTuple):
    """A source's text values as outputs are searched for them: each needle with its
    border and keywords, and the needles alone (all sought at once, in C: most outputs
    hold none of them)."""

    text: tuple[_Needle, ...]
    text_sought: tuple[bytes, ...]
    path: tuple[_Needle, ...]
    """The needles a path of UIDs alone may hold: digits, dots and slashes only."""
    path_sought: tuple[bytes, ...]
    ids: tuple[tuple[bytes, frozenset[str]], ...]
    """All-digit values of :data:`~dicom_deid.text.context.SPACED_ID_DIGITS` digits or
    more, and their keywords: also searched for written in groups."""


class _Needles(NamedTuple):
    """A source's forms as one output is searched for them (made once per output)."""

    text: _TextNeedles
    uids: tuple[_Needle, ...]
    uid_sought: tuple[bytes, ...]
    codec: str = "latin-1"
    """The source's character set (Python's name): UTF-16 text is sought in it too."""
    wide: tuple[tuple[bytes, frozenset[str]], ...] = ()
    """The forms written in letters past Europe's (CJK, Hangul, Arabic...), as UTF-16 in
    either byte order: :func:`_wide_leaks` reads runs of Latin, Greek and Cyrillic
    letters alone."""


def _text_needles(values: dict[bytes, frozenset[str]]) -> _TextNeedles:
    """The needles of a source's text values, sorted out once for the output's regions
    and its path."""
    made = [(_text_needle(form), kws) for form, kws in values.items()]
    text = tuple((n, b, kws) for (n, b, _p, _g), kws in made)
    path = tuple((n, b, kws) for (n, b, plain, _g), kws in made if plain)
    return _TextNeedles(text, tuple(n for n, _b, _k in text), path,
                        tuple(n for n, _b, _k in path),
                        tuple((n, kws) for (n, _b, _p, grouped), kws in made if grouped))


def _needles(facts: SourceFacts) -> _Needles:
    """The needles of a source's values: its text values' as they were made with them
    (:meth:`Gate._text_values`), its UIDs'."""
    searched = facts.searched
    text = searched[1] if searched is not None and searched[0] is facts.values else \
        _text_needles(facts.values)
    uids = tuple((form, _UID_CHARS, kws) for form, kws in facts.uids.items())
    return _Needles(text, uids, tuple(facts.uids), facts.encodings, _wide_needles(facts))


def _wide_needles(facts: SourceFacts) -> tuple[tuple[bytes, frozenset[str]], ...]:
    """:attr:`_Needles.wide` of a source (none for the usual, all-ASCII values)."""
    found = []
    for form, kws in facts.values.items():
        if form.isascii():
            continue
        text = form.decode(facts.encodings, "replace")
        if max(map(ord, text)) > 0x4FF and "\ufffd" not in text:
            found += [(text.encode(codec), kws) for codec in ("utf-16-le", "utf-16-be")]
    return tuple(found)


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
