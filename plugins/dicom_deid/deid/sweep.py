"""The residual-identifier sweep: the instance's own identifiers, wherever kept text holds them.

PS3.15 keeps what its table does not list, and real sites write identifiers into exactly
those places: a local procedure code whose meaning ends "for SMITH", a kept description, a
kept private block, SR text, a name in a PN the profile keeps. After the profile has run,
every kept text value (any depth, private elements included) is searched for this
instance's own identifying values -- its patient's names (components in any order and case,
diacritics folded), IDs (with or without leading zeros and prefixes), accession number,
study ID, birth date in common written formats, institution and department, the people
named in it -- the ones the configuration does not itself keep. A phrase that matches
becomes ``[CTX]``, as Clean Descriptors writes it; a kept person name or code string
(CS: a presentation state's ContentLabel and GraphicLayer, labels a user types, not
standard terms) that matches becomes its keyed pseudonym. This goes beyond PS3.15 and is
on by default (``DeidConfig.residual_sweep``; ``dicomDeid.residualSweep: false`` turns it
off). A UID written into kept text (the study's own, a prior study's, a referenced
instance's) becomes its keyed pseudonym, as the profile maps UIDs in UI elements: the
original would find the study in the hospital's archive, and the pseudonym still links
the text to the de-identified objects it names.

Both paths call these functions on the same decoded values, so they write the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import tag_for_keyword

from dicom_deid.config.model import info_type_of
from dicom_deid.text.binary import overwrite, text_runs, unit_texts
from dicom_deid.text.chars import lazy_pattern, plain_spellings
from dicom_deid.text.context import PhiContext
from dicom_deid.text.spans import CTX_MARKER, splice

__all__ = [
    "BINARY_SWEEP_VRS",
    "CODE_MATCH",
    "LABEL_CODE_STRINGS",
    "NESTED_SWEEP_TAGS",
    "SWEEP_EXEMPT",
    "SWEEP_TAGS",
    "SWEEP_VRS",
    "UID_IN_BYTES",
    "URL_MARKER",
    "attribute_context",
    "remap_uids",
    "sweep_binary",
    "sweep_context",
    "sweep_sources",
    "sweep_text",
    "sweep_whole",
    "sweeps",
]

_SWEEP_KEYWORDS = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "MedicalRecordLocator",
    "AccessionNumber", "StudyID", "AdmissionID", "RequestedProcedureID",
    "PerformedProcedureStepID", "ScheduledProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "PatientTelephoneNumbers", "PatientBirthDate", "PatientAddress", "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "OperatorsName", "ResponsiblePerson", "ResponsibleOrganization",
    # the dates of the visit, searched for when the plan removes or shifts them: a kept
    # text that writes one out ("acquired 2024-01-05", a kernel "B30f 20240105") would
    # give back what the profile took (and what LongitudinalTemporalInformationModified
    # says is gone)
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime",
)
NESTED_SWEEP_TAGS: dict[int, int] = {0x00101002: 0x00100020}
"""Sequences whose items' values are searched for too: Other Patient IDs Sequence >
Patient ID (an earlier MRN, which a local code may still quote)."""
SWEEP_TAGS: dict[int, str] = {t: k for k in _SWEEP_KEYWORDS
                              if (t := tag_for_keyword(k)) is not None} | {
    0x00101002: "OtherPatientIDs"}
"""The top-level attributes whose values are searched for (when not kept by the plan);
for a sequence of :data:`NESTED_SWEEP_TAGS`, its items' values, as IDs."""
_INSTITUTIONAL = frozenset({0x00100021})
"""Sweep targets that name an institution rather than the patient: the issuer of the
patient ID (its assigning authority, often the hospital's own name or code)."""


def sweep_sources(retains_institution: bool) -> frozenset[int]:
    """The :data:`SWEEP_TAGS` whose values kept text is searched for: all, but under
    Retain Institution Identity not those that name the institution, whose name and
    address the project keeps (an issuer "ST ELSEWHERE" would empty "St Elsewhere
    Hospital")."""
    return frozenset(SWEEP_TAGS) - (_INSTITUTIONAL if retains_institution else frozenset())


SWEEP_KEYWORD_TAGS: dict[str, int] = {k: t for t, k in SWEEP_TAGS.items()
                                      if t not in NESTED_SWEEP_TAGS}
"""The same attributes by keyword (as the gate names what it reads at any depth)."""
SWEEP_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "UR", "PN"})
"""Kept values of these VRs are swept (text a site can write a name or an ID into: a
URL's path or query too, "export/8841207/img.dcm", "urn:site:mrn:8841207")."""
URL_MARKER = "%5BCTX%5D"
"""``[CTX]`` in a URL (UR): brackets are reserved characters of RFC 3986, so they are
percent-encoded; the value stays a valid URI and reads as ``[CTX]`` when decoded."""
LABEL_CODE_STRINGS = frozenset({0x00700002, 0x00700080})
"""Code strings (CS) whose values a user types, not terms of the standard: a
presentation state's Graphic Layer and Content Label. They are swept too; any other CS
holds a standard term ("HEAD", "ORIGINAL", "HELICAL"), which a patient's name may equal
by chance and a pseudonym would break: a name there is left to the gate (fails closed)."""
CODE_MATCH = 4
"""The fewest characters of an identifying value a code string must hold to be swept:
the gate's own least (shorter ones are terms and initials: "SR", "L", "CT")."""
SWEEP_EXEMPT = frozenset({0x00080102, 0x00080103})
"""Coding Scheme Designator and Version name a code's scheme ("DCM", "SCT", "99LOCAL"),
never a person: a patient whose name is a scheme's ("Test", "Ln") must not break every
code of the instance. The code's value and meaning are still swept."""


BINARY_SWEEP_VRS = frozenset({"OB", "UN"})
"""Kept byte values of these VRs are swept too, as the text runs written in them
(:mod:`dicom_deid.text.binary`): an ICC profile's description, an encapsulated
document, a value read without its VR. Words (OW) and numbers (OF, OD, OL, OV) are
samples and tables, whose values may spell digits by chance."""


def _samples(tag: int) -> bool:
    """Sample data, never text: pixels (group 7FE0), overlay and curve data, waveforms."""
    group = tag >> 16
    return group in (0x7FE0, 0x5400) or (
        (group & 0xFF00) in (0x6000, 0x5000) and tag & 0xFFFF == 0x3000)


def sweeps(tag: int, vr: str) -> bool:
    """Whether a kept element is swept: text (:data:`SWEEP_VRS`) that is no coding
    scheme's name (:data:`SWEEP_EXEMPT`), a label code string, or bytes
    (:data:`BINARY_SWEEP_VRS`) that are no sample data."""
    return (vr in SWEEP_VRS and tag not in SWEEP_EXEMPT) or tag in LABEL_CODE_STRINGS or (
        vr in BINARY_SWEEP_VRS and not _samples(tag))


def attribute_context(tag: int, vr: str, texts: list[str]) -> PhiContext:
    """What one identifying attribute adds to the sweep's context: its decoded ``texts``
    and their spellings without diacritics (banners and local codes often drop them,
    or write umlauts out: "Mueller")."""
    kind = info_type_of(SWEEP_TAGS[tag], vr)
    # an issuer as short as a term ("MR", "PAS") would empty every "MR Brain": as the gate,
    # from CODE_MATCH characters
    least = CODE_MATCH if tag in _INSTITUTIONAL else 1
    pairs = [(kind, text) for text in texts if len(text.strip()) >= least]
    return PhiContext(tuple(plain_spellings(pairs)))  # info types from info_type_of: valid


def sweep_context(parts: Iterable[PhiContext]) -> PhiContext:
    """The context of an instance's identifying values: the :func:`attribute_context` of
    each of the :data:`SWEEP_TAGS` present at its top level that the plan does not keep,
    in tag order."""
    return PhiContext.merge(parts)


def sweep_text(text: str, ctx: PhiContext, marker: str = CTX_MARKER) -> str | None:
    """``text`` with each phrase matching the context replaced by ``marker`` (``[CTX]``;
    :data:`URL_MARKER` in a URL); None when nothing matches (the value stays as it is)."""
    spans = list(ctx.matches(text))
    if not spans:
        return None
    return splice(text, spans, lambda _: marker)


def sweep_whole(value: str, ctx: PhiContext, pseudonym: Callable[[str], str],
                shortest: int = 1) -> str | None:
    """A kept person name or code string that holds an identifying value becomes its
    keyed pseudonym (``[CTX]`` is no name, and no code string's characters); None when
    it holds none. ``shortest``: the fewest characters a match must have (a code
    string's "SR" is a modality, not the initials of "Test^S R")."""
    if not any(m.end - m.start >= shortest for m in ctx.matches(value)):
        return None
    return pseudonym(value)


def sweep_binary(value: bytes, ctx: PhiContext) -> bytes | None:
    """A kept byte value with each phrase matching the context, in the text runs written
    in it (8-bit or UTF-16; for a name in other letters, the value read whole as
    UTF-16), overwritten with ``X`` byte for byte: a binary format's lengths and offsets
    stay as they were, where ``[CTX]`` would shift them. None when nothing matches (the
    usual case)."""
    runs = list(text_runs(value))
    if any(ord(max(anchor)) > _EUROPEAN for anchor in ctx.anchors if anchor):
        runs += unit_texts(value)  # a CJK or Hangul name: the value read whole as UTF-16
    spans = [(run, m.start, m.end) for run in runs
             if ctx.screens(run.text.casefold()) for m in ctx.matches(run.text)]
    return overwrite(value, spans) if spans else None


_EUROPEAN = 0x4FF
"""The last of the letters :func:`~dicom_deid.text.binary.text_runs` reads in UTF-16
(Latin, Greek, Cyrillic)."""


_UID_FORM = r"(?:[0-2](?:\.(?:0|[1-9][0-9]*)){5,}|2\.25\.[0-9]{18,})"
"""A UID as text: six components or more ("1.2.840.113619.2.55..."), or a UUID-derived
"2.25." one (decimals, dates and version strings such as "5.0.1.23.4" have fewer)."""
UID_IN_TEXT = lazy_pattern(r"(?<![0-9.])" + _UID_FORM + r"(?![0-9.])")
UID_IN_BYTES = re.compile((r"(?<![0-9.])" + _UID_FORM + r"(?![0-9.])").encode("ascii"))
"""The same for raw values: the byte path's test of whether a kept value needs the sweep."""
_REGISTERED = frozenset(UID_dictionary)


def remap_uids(text: str, uid: Callable[[str], str]) -> str | None:
    """``text`` with each UID written in it replaced by ``uid(original)`` (the keyed
    pseudonym), the standard's registered UIDs (SOP classes, transfer syntaxes) kept;
    None when it holds none."""
    if "." not in text:
        return None
    changed = False

    def swap(m: re.Match[str]) -> str:
        nonlocal changed
        if m.group() in _REGISTERED:
            return m.group()
        changed = True
        return uid(m.group())

    new = UID_IN_TEXT.sub(swap, text)
    return new if changed else None
