"""Apply a :class:`~dicom_deid.config.plan.Plan` to one pydicom dataset, in place.

Untouched elements stay pydicom ``RawDataElement`` objects and are never decoded;
only values the plan changes (or needs as context) are converted. Pixel data is
decoded only when the configuration cleans pixels and this instance needs it
(see :mod:`dicom_deid.pixels.clean`); otherwise it stays the raw bytes that were read,
less the text compressed frames carry outside the image (see
:mod:`dicom_deid.pixels.codestream`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicom_deid import __version__
from dicom_deid.config.claims import Claims, claims_of
from dicom_deid.config.model import DeidConfig, Option, TextRedactionMode, info_type_of
from dicom_deid.config.plan import (
    DOCUMENT_ACTS,
    NO_SCOPE,
    TAG_ACCESSION,
    TAG_DOCUMENT_MIME,
    TAG_ISSUER_OF_PATIENT_ID,
    TAG_PATIENT_ID,
    TAG_PATIENT_NAME,
    TAG_STUDY_ID,
    Act,
    Mode,
    Plan,
    Scope,
    attribute_dummy,
    dependents_to_drop,
    dictionary_vr,
    iod_name,
    item_scope,
)
from dicom_deid.config.ps3_15 import TABLE_EDITION, method_codes
from dicom_deid.dicom.dates import shift_da, shift_dt
from dicom_deid.dicom.reader import element_texts, input_transfer_syntax, text_value
from dicom_deid.dicom.writer import METHOD_TOOL, encode_element_value
from dicom_deid.errors import BadInput
from dicom_deid.pixels.codestream import VIDEO_SYNTAXES, remove_frame_metadata
from dicom_deid.pixels.excess import trim_native_excess
from dicom_deid.pixels.overlays import OVERLAY_DATA_TAG, remove_embedded_overlays
from dicom_deid.text.banner import clean_descriptor
from dicom_deid.text.chars import plain_spellings
from dicom_deid.text.context import PhiContext
from dicom_deid.text.spans import CTX_MARKER
from dicom_deid.text.transform import apply_text_config, transform_whole_value

from .pseudonyms import Pseudonymizer, names_standard_uids
from .pseudonyms import patient_key as pseudonym_patient_key
from .related import RelatedValues, group_keys, of_instance
from .sweep import (
    BINARY_SWEEP_VRS,
    CODE_MATCH,
    NESTED_SWEEP_TAGS,
    SWEEP_VRS,
    URL_MARKER,
    attribute_context,
    remap_uids,
    sweep_binary,
    sweep_context,
    sweep_sources,
    sweep_text,
    sweep_whole,
    sweeps,
)

if TYPE_CHECKING:
    from dicom_deid.pixels.clean import OcrReadout, PixelCleaner

DUMMY_TEXT = "ANONYMIZED"
RESET_TEXT = "PLACEHOLDER"
_DUMMIES: dict[str, object] = {
    "AE": "DEID",
    "AS": "000D",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "UR": "urn:deid",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
}
BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
CONTEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE", "DA", "DT"})
REMOVING_ACTS = frozenset(
    {Act.DELETE, Act.EMPTY, Act.DUMMY, Act.PSEUDONYM, Act.RESET, Act.SHIFT, Act.DELETE_GROUP}
)
_STRUCTURAL_TAGS = frozenset({
    0x00080005,  # SpecificCharacterSet: decodes the rest
    0x00080016,  # SOPClassUID: what the object is (a private class's UID names no one)
})
# Values that identify the patient or visit whatever the profile does with them: free
# text is checked against them even when the attribute itself is kept (KEEP_ALL etc.).
_IDENTITY_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "AccessionNumber", "StudyID", "InstitutionName",
    "InstitutionAddress", "MedicalRecordLocator", "PatientMotherBirthName",
)
IDENTITY_TAGS = frozenset(tag_for_keyword(k) for k in _IDENTITY_KEYWORDS)
# What burned-in text is compared with under REDACT_SENSITIVE_TEXT: the identity values
# above, the people named in the header, and the dates of the visit.
_PIXEL_IDENTITY_KEYWORDS = (
    *_IDENTITY_KEYWORDS, "PatientName", "OtherPatientNames", "PatientBirthName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StationName", "InstitutionalDepartmentName",
)




@dataclass
class InstanceResult:
    """What changed for one instance; feeds the mapping table (restricted) and the run report."""

    original_study_uid: str = ""
    original_series_uid: str = ""
    original_sop_uid: str = ""
    original_patient_id: str = ""
    original_accession: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    patient_id: str = ""
    accession: str = ""
    sop_class_uid: str = ""
    modality: str = ""
    date_shift_days: int | None = None
    redacted_boxes: int = 0
    """Rectangles blanked in the pixel data and overlays (burned-in text, known regions)."""
    ocr: OcrReadout | None = field(default=None, compare=False, repr=False)
    """What OCR read and kept in the pixels (None: not read). PHI until the verification
    gate has judged it; the worker drops it before the result leaves the process."""


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """(group, block) -> private creator text for every private block in ``ds``."""
    creators: dict[tuple[int, int], str] = {}
    for tag in ds.keys():
        group, elem = tag >> 16, tag & 0xFFFF
        if group & 1 and 0x0010 <= elem <= 0x00FF:
            value = ds[tag].value
            creators[(group, elem)] = str(value).strip() if value is not None else ""
    return creators


class Deidentifier:
    """De-identifies datasets in place according to one configuration and one key."""

    def __init__(self, config: DeidConfig, key: bytes) -> None:
        self.config = config
        self.sweep_tags = sweep_sources(Option.RETAIN_INSTITUTION_IDENTITY in config.options)
        """The identifying attributes whose values the residual sweep searches for."""
        self.plan = Plan(config)
        self.pixels: PixelCleaner | None = None
        if config.cleans_pixels or Option.CLEAN_GRAPHICS in config.options:
            from dicom_deid.pixels.clean import PixelCleaner

            self.pixels = PixelCleaner(config)
        self.pseudo = Pseudonymizer(
            key, prefix=config.id_prefix, max_shift_days=config.max_date_shift_days
        )
        self._fixed: dict[tuple[str, Act] | tuple[str, Act, int], bytes] = {}
        self.drops_overlays = self.plan.act(OVERLAY_DATA_TAG, "OW", Mode.NORMAL) is not Act.KEEP
        """Whether Overlay Data goes, and with it planes embedded in the pixel data."""
        self.claims = claims_of(config)
        self.related: RelatedValues = {}
        """Identifying values of the batch's groups (set by the batch's workers)."""
        self._related_contexts: dict[Any, PhiContext] = {}
        self.nested_values: tuple[tuple[int, str, tuple[str, ...]], ...] = ()
        """(tag, VR, values) of the identifying attributes inside the next instance's
        sequences, as the verification gate read them before it was de-identified (set by
        the batch's worker: the sweep then searches for what the gate will)."""
        # Clean Pixel Data is claimed only for pixels examined (read by OCR, or blanked by
        # rule or whole): the elements with it, and without it (the byte path's: it never
        # takes an image whose pixels may change).
        self._method_elements = {
            examined: _method_elements(config, self.claims, examined)
            for examined in (False, True)}
        self._method_raw = {
            examined: {implicit: _pre_encode(elements, implicit) for implicit in (True, False)}
            for examined, elements in self._method_elements.items()}
        self.method_raw = self._method_raw[False]

    # -- public -----------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> InstanceResult:
        """De-identify ``ds`` (and its file meta) in place; return what changed."""
        examined = False
        res = InstanceResult(
            original_study_uid=text_value(ds, 0x0020000D),
            original_series_uid=text_value(ds, 0x0020000E),
            original_sop_uid=text_value(ds, 0x00080018),
            original_patient_id=text_value(ds, TAG_PATIENT_ID),
            original_accession=text_value(ds, TAG_ACCESSION),
            sop_class_uid=text_value(ds, 0x00080016),
            modality=text_value(ds, 0x00080060),
        )
        if 0x7FE00010 in ds and input_transfer_syntax(ds) in VIDEO_SYNTAXES:
            raise BadInput("pixel-decode", "video pixel data (MPEG, HEVC) cannot be inspected "
                           "for text in its frames or its stream's user data")
        issuer = text_value(ds, TAG_ISSUER_OF_PATIENT_ID)
        patient_key = pseudonym_patient_key(res.original_patient_id, issuer,
                                            res.original_study_uid)
        state = WalkState(patient_key=patient_key, iod=iod_name(res.sop_class_uid),
                          groups=group_keys(patient_key, res.original_study_uid))
        if self.drops_overlays:
            remove_embedded_overlays(ds)
        if self.pixels is not None:  # before any attribute changes: rules and context read them
            from dicom_deid.pixels.clean import OcrReadout

            res.ocr = OcrReadout()
            res.redacted_boxes = self.pixels.clean(ds, lambda: self._pixel_context(ds),
                                                   res.ocr)
            if not res.ocr.read and not res.ocr.boxes:
                res.ocr = None
        examined = res.ocr is not None
        remove_frame_metadata(ds)  # text in compressed frames (COM, APPn...) is not copied
        trim_native_excess(ds)  # nor what native pixel data carries beyond its image
        if self.plan.needs_context:
            state.context = PhiContext.from_values(
                self._context_values(ds, Mode.NORMAL, (state.iod, "")))
        if self.config.residual_sweep:
            state.sweep = sweep_context([
                *(attribute_context(tag, vr, values)
                  for tag, vr, values in self._sweep_values(ds, (state.iod, ""))),
                self.related_context(state.groups, (state.iod, ""))])
        self._process(ds, Mode.NORMAL, state, (state.iod, ""))
        self._record_method(ds, examined)
        res.study_uid = text_value(ds, 0x0020000D)
        res.series_uid = text_value(ds, 0x0020000E)
        res.sop_uid = text_value(ds, 0x00080018)
        res.patient_id = text_value(ds, TAG_PATIENT_ID)
        res.accession = text_value(ds, TAG_ACCESSION)
        if state.shift_used:
            res.date_shift_days = self.pseudo.date_shift_days(patient_key)
        return res

    # -- traversal ----------------------------------------------------------------------
    def _acts(self, ds: Dataset, mode: Mode, scope: Scope) -> list[tuple[int, str, Act]]:
        """(tag, VR, action) for every element of ``ds`` (not recursing), conditional
        dependents of removed attributes included (see :func:`dependents_to_drop`).

        This is the hot loop: it reads pydicom's element dict directly (see
        :func:`_elements`) and works on plain ints, not ``BaseTag`` objects.
        """
        found: dict[tuple[int, int], str] | None = None

        def creators() -> dict[tuple[int, int], str]:
            nonlocal found
            if found is None:
                found = _private_creators(ds)
            return found

        acts: list[tuple[int, str, Act]] = []
        for key, elem in list(_elements(ds).items()):
            vr, act = self.element_act(int(key), elem.VR, mode, creators, scope)
            if act is not None:
                acts.append((int(key), vr, act))
        drop = dependents_to_drop((tag, act) for tag, _, act in acts if not tag >> 16 & 1)
        if drop:
            acts = [(tag, vr, Act.DELETE if tag in drop else act) for tag, vr, act in acts]
        return acts

    def element_act(
        self, tag: int, vr: str | None, mode: Mode,
        creators: Callable[[], dict[tuple[int, int], str]], scope: Scope = NO_SCOPE,
    ) -> tuple[str, Act | None]:
        """(VR, action) for one element as read; ``None`` for a private creator, which is
        kept only if its block keeps something (decided after the block)."""
        group, element = tag >> 16, tag & 0xFFFF
        if not vr or (vr == "UN" and not group & 1):
            vr = "UN" if group & 1 else dictionary_vr(tag)
        if group & 1:
            if element < 0x0010:
                return vr, Act.DELETE  # private group length / invalid
            if element <= 0x00FF:
                return vr, None
            creator = creators().get((group, element >> 8), "")
            act = self.plan.private_act(tag, creator, vr)
            if vr == "UN" and act is Act.KEEP and self.config.residual_sweep:
                # Kept without a VR as read (implicit VR, or UN): the safe private table's
                # VR says whether it holds text the residual sweep must search.
                listed = self.plan.private_vr(tag, creator)
                if listed in SWEEP_VRS:
                    vr = listed
            return vr, act
        if element == 0x0000 or tag in _STRUCTURAL_TAGS:
            return vr, (Act.DELETE if element == 0 else Act.KEEP)
        return vr, self.plan.act(tag, vr, mode, scope)

    def _process(self, ds: Dataset, mode: Mode, state: WalkState, scope: Scope) -> None:
        """One dataset level, with its own IssuerOfPatientID for the PatientID pseudonym."""
        outer, state.issuer = state.issuer, text_value(ds, TAG_ISSUER_OF_PATIENT_ID)
        self._process_level(ds, mode, state, scope)
        state.issuer = outer

    def _process_level(self, ds: Dataset, mode: Mode, state: WalkState, scope: Scope) -> None:
        kept_blocks: set[tuple[int, int]] = set()
        private_creator_tags: list[int] = []
        deleted_groups: set[int] = set()
        elements = _elements(ds)
        # A dummy document follows its level's MIME type as read (before any change).
        mime = text_value(ds, TAG_DOCUMENT_MIME) if TAG_DOCUMENT_MIME in elements else ""
        for tag, vr, act in self._acts(ds, mode, scope):
            if tag >> 16 & 1 and act is not Act.DELETE:
                kept_blocks.add((tag >> 16, (tag >> 8) & 0xFF))
            if act is Act.KEEP:
                if state.sweep and sweeps(tag, vr):
                    self._sweep_kept(ds, tag, vr, state.sweep)
                continue
            if act is Act.DELETE_GROUP:
                deleted_groups.add(tag >> 16)
            elif act is Act.DELETE:
                del elements[tag]
            elif act in (Act.RECURSE, Act.RECURSE_STRICT, Act.RECURSE_CLEAN):
                self._recurse(ds, tag, vr, act, state, scope)
            elif act in DOCUMENT_ACTS:
                ds[tag] = DataElement(tag, vr, self.plan.document_value(act, mime, scope))
            else:
                self._replace(ds, tag, vr, act, state)
        if not deleted_groups and not any(t >> 16 & 1 for t in elements):
            return
        for tag in list(elements):
            group, element = tag >> 16, tag & 0xFFFF
            if group in deleted_groups:
                del elements[tag]
            elif group & 1 and 0x0010 <= element <= 0x00FF:
                private_creator_tags.append(tag)
        for tag in private_creator_tags:
            if (tag >> 16, tag & 0xFF) not in kept_blocks:
                del elements[tag]

    def _sweep_kept(self, ds: Dataset, tag: int, vr: str, ctx: PhiContext) -> None:
        """The residual sweep of a kept element; one read without its VR is searched as
        the text ``vr`` says it holds (see :meth:`element_act`) and replaced if swept."""
        elem = ds[tag]
        if elem.VR == "UN" and isinstance(elem.value, bytes) and vr not in BINARY_SWEEP_VRS:
            text = _as_text(elem.value, tag, vr, ds)
            if self.sweep_element(text, vr, ctx):
                ds[tag] = text
        else:
            self.sweep_element(elem, vr, ctx)

    def _recurse(self, ds: Dataset, tag: int, vr: str, act: Act, state: WalkState,
                 scope: Scope) -> None:
        elem = ds[tag]
        if vr == "UN" or not isinstance(elem.value, Sequence):
            # A sequence we cannot parse (e.g. private, implicit VR) cannot be cleaned.
            if act is not Act.RECURSE or tag >> 16 & 1:
                del ds[tag]
            return
        mode = {Act.RECURSE: Mode.NORMAL, Act.RECURSE_STRICT: Mode.STRICT}.get(act, Mode.CLEAN)
        inner = item_scope(scope, tag)
        for item in elem.value:
            self._process(item, mode, state, inner)

    # -- values -------------------------------------------------------------------------
    def _replace(self, ds: Dataset, tag: int, vr: str, act: Act, state: WalkState) -> None:
        if act is Act.EMPTY or act is Act.DUMMY or act is Act.RESET:
            if vr == "SQ":
                ds[tag] = DataElement(tag, vr, Sequence([]))
            else:
                _elements(ds)[tag] = _raw(tag, vr, self.fixed_value(vr, act, tag))
            return
        if vr in BYTES_VRS or vr == "SQ":
            del ds[tag]  # no text semantics to apply: privacy first
            return
        if act is Act.UID:
            old = ds.get_item(tag)
            raw = old.value if isinstance(old, RawDataElement) else None
            if raw is None:
                values = self.element_values(ds[tag])
            else:
                values = raw.rstrip(b"\x00 ").decode("ascii", "replace").split("\\")
            _elements(ds)[tag] = _raw(tag, vr, self.uid_value(values, tag))
            return
        self.change_text(ds[tag], tag, vr, act, state)

    def sweep_element(self, elem: DataElement, vr: str, ctx: PhiContext) -> bool:
        """The residual sweep of one kept text element, in place: phrases holding the
        instance's identifying values become ``[CTX]``, a person name or code string
        holding one its pseudonym; in a byte value (:data:`~.sweep.BINARY_SWEEP_VRS`)
        they are overwritten byte for byte (:func:`~.sweep.sweep_binary`). True when the
        value changed."""
        if vr in BINARY_SWEEP_VRS:
            if not isinstance(elem.value, bytes):
                return False
            overwritten = sweep_binary(elem.value, ctx)
            if overwritten is None:
                return False
            elem.value = overwritten
            return True
        values = self.element_values(elem)
        if vr == "PN":
            found = [sweep_whole(v, ctx, self.pseudo.patient_name) for v in values]
        elif vr == "CS":
            found = [sweep_whole(v, ctx, self.pseudo.code_string, CODE_MATCH) for v in values]
        else:
            found = []
            marker = URL_MARKER if vr == "UR" else CTX_MARKER
            for v in values:
                swept = sweep_text(v, ctx, marker)
                mapped = v if swept is None else swept
                if not (vr == "UR" and mapped.lower().startswith("urn:oid:")):
                    # (an OID URN names a registered object: a code system, an issuer)
                    mapped = self._uids_mapped(mapped)
                found.append(None if mapped == v else mapped)
        if all(new is None for new in found):
            return False
        _set_values(elem, [v if new is None else _fit(vr, new, elem.tag)
                           for v, new in zip(values, found, strict=True)])
        return True

    def _uids_mapped(self, text: str) -> str:
        """``text`` with the UIDs written in it mapped as UI elements are
        (:func:`~.sweep.remap_uids`)."""
        return remap_uids(text, self.pseudo.uid) or text

    def related_context(self, groups: tuple[str, ...], scope: Scope) -> PhiContext:
        """The sweep's context from the identifying values of the instance's relatives in
        the batch (:mod:`.related`) and of its own sequences (:attr:`nested_values`) that
        the plan does not keep, remembered per groups and values."""
        key = (groups, scope, self.nested_values)
        found = self._related_contexts.get(key)
        if found is None:
            found = PhiContext.merge(
                attribute_context(tag, vr, list(values))
                for tag, vr, values in (*of_instance(self.related, groups),
                                        *self.nested_values)
                if self.plan.act(tag, vr, Mode.NORMAL, scope) is not Act.KEEP)
            if len(self._related_contexts) >= 256:
                self._related_contexts.clear()
            self._related_contexts[key] = found
        return found

    def _sweep_values(self, ds: Dataset, scope: Scope) -> Iterator[tuple[int, str, list[str]]]:
        """(tag, VR, values) of the identifying attributes at the top of ``ds`` that the
        plan does not keep: what the residual sweep searches kept text for."""
        acts = {tag: (vr, act) for tag, vr, act in self._acts(ds, Mode.NORMAL, scope)}
        for tag in sorted(self.sweep_tags):
            found = acts.get(tag)
            if found is None or found[1] is Act.KEEP:
                continue
            inner = NESTED_SWEEP_TAGS.get(tag)
            if inner is None:
                yield tag, found[0], self.element_values(ds[tag])
            elif isinstance(items := ds[tag].value, Sequence):
                yield tag, found[0], [v for item in items if inner in item
                                      for v in self.element_values(item[inner])]

    def uid_value(self, values: list[str], tag: int) -> bytes:
        """Encoded pseudonymous UIDs for ``values`` of the attribute ``tag`` (empty ones
        dropped)."""
        standard = names_standard_uids(tag)
        new_uids = "\\".join(self.pseudo.uid(v, standard) for v in values if v)
        return _pad(new_uids.encode("ascii"), b"\x00")

    def change_text(self, elem: DataElement, tag: int, vr: str, act: Act, state: WalkState) -> None:
        """Pseudonymise, shift or clean the decoded text values of ``elem`` in place."""
        values = self.element_values(elem)
        if act is Act.PSEUDONYM:
            new = [self.pseudonym(tag, v, state.issuer) for v in values]
        elif act is Act.SHIFT:
            shifted = [self._shift(v, vr, state) for v in values]
            new = [] if any(s is None for s in shifted) else [s for s in shifted if s]
        elif act is Act.CLEAN:  # UIDs mapped first: an ID detector would cut them up
            new = [_fit(vr, _swept(clean_descriptor(self._uids_mapped(v), state.context),
                                   state), tag) for v in values]
        elif act is Act.CLEAN_TEXT:
            new = [_fit(vr, _swept(self._clean_text(self._uids_mapped(v), vr, state), state),
                        tag) for v in values]
        else:  # pragma: no cover - every Act is handled above
            raise AssertionError(act)
        _set_values(elem, new)

    def fixed_value(self, vr: str, act: Act, tag: int = 0) -> bytes:
        """Encoded empty, dummy or placeholder value of ``tag`` (memoised: the same for
        every file); a dummy of an attribute with a form of its own is its own."""
        special = attribute_dummy(tag) if act is Act.DUMMY else None
        key = (vr, act) if special is None else (vr, act, tag)
        found = self._fixed.get(key)
        if found is None:
            found = _encode_fixed(vr, act, self.pseudo.uid("dummy")) if special is None \
                else _pad(special.encode("ascii"), b" ")
            self._fixed[key] = found
        return found

    @staticmethod
    def element_values(elem: DataElement) -> list[str]:
        return element_texts(elem)

    def pseudonym(self, tag: int, value: str, issuer: str = "") -> str:
        """The keyed pseudonym of one PatientID (with the IssuerOfPatientID of its
        dataset), PatientName, AccessionNumber or StudyID."""
        if not value.strip():
            return value
        if tag == TAG_PATIENT_ID:
            return self.pseudo.patient_id(value, issuer)
        if tag == TAG_PATIENT_NAME:
            return self.pseudo.patient_name(value)
        if tag == TAG_ACCESSION:
            return self.pseudo.accession_number(value)
        if tag == TAG_STUDY_ID:
            return self.pseudo.study_id(value)
        raise AssertionError(hex(tag))

    def _shift(self, value: str, vr: str, state: WalkState) -> str | None:
        if not value.strip():
            return ""
        days = self.pseudo.date_shift_days(state.patient_key)
        state.shift_used = True
        return shift_da(value, days) if vr == "DA" else shift_dt(value, days)

    def _clean_text(self, value: str, vr: str, state: WalkState) -> str:
        def shifter(day: date) -> date:
            state.shift_used = True
            return self.pseudo.shift_date(state.patient_key, day)

        whole = {"PN": "PERSON_NAME", "DA": "DATE", "DT": "DATE", "AS": "AGE"}.get(vr)
        if whole is not None:
            return transform_whole_value(
                value, whole, self.config.text, self.pseudo.text_hash, shifter
            )
        return apply_text_config(
            value, state.context, self.config.text, hasher=self.pseudo.text_hash,
            date_shifter=shifter,
        )

    # -- context ------------------------------------------------------------------------
    def _context_values(self, ds: Dataset, mode: Mode, scope: Scope
                        ) -> Iterator[tuple[str, str]]:
        """Identifying values this plan removes, anywhere in ``ds``: what free text is
        checked against (PS3.15 Clean Descriptors, Google cleanDescriptors)."""
        for tag, vr, act in self._acts(ds, mode, scope):
            if vr == "SQ" and act in (Act.RECURSE, Act.RECURSE_STRICT, Act.RECURSE_CLEAN):
                value = ds[tag].value
                if isinstance(value, Sequence):
                    sub = {Act.RECURSE: Mode.NORMAL, Act.RECURSE_STRICT: Mode.STRICT}.get(
                        act, Mode.CLEAN)
                    for item in value:
                        yield from self._context_values(item, sub, item_scope(scope, tag))
                continue
            if vr == "SQ" and act in (Act.DELETE, Act.EMPTY):
                value = ds[tag].value
                if isinstance(value, Sequence):
                    for item in value:
                        yield from self._context_values(item, Mode.STRICT,
                                                        item_scope(scope, tag))
                continue
            if vr not in CONTEXT_VRS or not (
                act in REMOVING_ACTS or vr == "PN" or tag in IDENTITY_TAGS
            ):
                continue
            keyword = ds[tag].keyword or ""
            for v in self.element_values(ds[tag]):
                if v.strip():
                    yield info_type_of(keyword, vr), v

    def _pixel_context(self, ds: Dataset) -> PhiContext:
        """What burned-in text is judged against: this instance's identifying values (and,
        with ..._CLEAN_DESCRIPTORS or Clean Pixel Data, every value the plan removes)."""
        pairs: list[tuple[str, str]] = []
        for keyword in _PIXEL_IDENTITY_KEYWORDS:
            tag = tag_for_keyword(keyword)
            if tag is None or tag not in ds:
                continue
            vr = ds[tag].VR
            for value in self.element_values(ds[tag]):
                if value.strip():
                    pairs.append((info_type_of(keyword, vr), value))
        if self.config.image.text_redaction_mode is (
            TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS
        ):
            pairs.extend(self._context_values(
                ds, Mode.NORMAL, (iod_name(text_value(ds, 0x00080016)), "")))
        return PhiContext.from_values(plain_spellings(pairs))

    def _record_method(self, ds: Dataset, examined: bool) -> None:
        implicit, little = ds.original_encoding
        elements = self._method_raw[examined][bool(implicit)] if little \
            else self._method_elements[examined]
        if not self.claims.identity_removed:  # nothing of a profile to claim (PS3.3 C.12.1)
            ds.pop(0x00120064, None)  # a code sequence the source had
        for elem in elements:
            ds[elem.tag] = elem


@dataclass
class WalkState:
    """Per-instance state threaded through the recursion."""

    patient_key: str
    iod: str = ""
    """The instance's IOD ("" when its SOP class is not in the standard's tables)."""
    context: PhiContext | None = None
    sweep: PhiContext | None = None
    """The residual sweep's context (None: no sweep; empty: nothing to search for)."""
    sweep_memo: dict[Any, Any] | None = None
    """The byte path's swept values under this context (see ``ByteDeidentifier``)."""
    sweep_heads: frozenset[str] = frozenset()
    """The first three letters of the context's anchors (the byte path's level filter)."""
    issuer: str = ""
    """IssuerOfPatientID of the dataset level at hand (the PatientID pseudonym takes it)."""
    shift_used: bool = False
    groups: tuple[str, ...] = ()
    """The batch's groups the instance belongs to (its patient's, its study's): their
    identifying values are swept for too (see :mod:`.related`)."""


def _method_elements(config: DeidConfig, claims: Claims, examined: bool
                     ) -> list[DataElement]:
    """The PatientIdentityRemoved / DeidentificationMethod attributes PS3.15 asks for,
    as :mod:`~dicom_deid.config.claims` allows them; ``examined``: this instance's pixel
    data was examined by the pixel cleaner (Clean Pixel Data may be claimed)."""
    ds = Dataset()
    if claims.identity_removed:
        codes = method_codes()
        names = {o.name for o in claims.options}
        if examined and config.cleans_pixels:
            names.add("CLEAN_PIXEL_DATA")
        items = []
        for key in ["BASIC", *sorted(names)]:
            code_value, meaning = codes[key]
            item = Dataset()
            item.CodeValue = code_value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethodCodeSequence = Sequence(items)
    else:
        ds.PatientIdentityRemoved = "NO"
    ds.LongitudinalTemporalInformationModified = claims.dates
    ds.DeidentificationMethod = [
        f"{METHOD_TOOL} {__version__}",
        f"{config.profile.value} (PS3.15 {TABLE_EDITION})"[:64],
        f"config sha256 {config.fingerprint()[:16]}",
        *_kept_values(claims.kept),
    ]
    return [ds[tag] for tag in ds.keys()]


def _kept_values(keywords: tuple[str, ...], lines: int = 3) -> list[str]:
    """``kept: A B ...`` in at most ``lines`` values of 64 characters (LO): the attributes
    kept beyond the profile, named (keywords only, never values); a long list is counted."""
    values: list[str] = []
    line = "kept:"
    for i, keyword in enumerate(keywords):
        if len(line) + 1 + len(keyword) > 64:
            values.append(line)
            line = "kept:"
            if len(values) == lines - 1:
                return [*values, f"kept: {len(keywords) - i} more attributes"]
        line += f" {keyword}"
    return [*values, line] if keywords else []


def _pre_encode(elements: list[DataElement], implicit: bool) -> list[RawDataElement]:
    """Encode constant elements once, so every file just copies their bytes."""
    return [
        RawDataElement(e.tag, e.VR, len(v), v, 0, implicit, True, True, False)
        for e in elements
        for v in [encode_element_value(e, implicit)]
    ]


_FIXED_BINARY = {"FL": 4, "FD": 8, "SL": 4, "SS": 2, "UL": 4, "US": 2, "SV": 8, "UV": 8,
                 "AT": 4}


def _encode_fixed(vr: str, act: Act, dummy_uid: str) -> bytes:
    """Bytes of an empty (Z), dummy (D) or placeholder (Google resetTag) value for ``vr``."""
    if act is Act.EMPTY:
        return b""
    if vr in BYTES_VRS:
        return b"\x00\x00"
    if vr in _FIXED_BINARY:
        return b"\x00" * _FIXED_BINARY[vr]
    if vr == "UI":
        return _pad(dummy_uid.encode("ascii"), b"\x00")
    text = _DUMMIES.get(vr, DUMMY_TEXT)
    if act is Act.RESET and text == DUMMY_TEXT:
        text = RESET_TEXT
    return _pad(str(text).encode("ascii"), b" ")


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """A raw element with an already encoded value: written as is, never re-encoded."""
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True, True, False)


_MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "PN": 64}
_FORMAT = {"DA": re.compile(r"\d{8}"), "DT": re.compile(r"\d{4,14}(\.\d{1,6})?([+-]\d{4})?"),
           "AS": re.compile(r"\d{3}[DWMY]")}


_LONG_CODE_VALUE = 0x00080119
_LONG_CODE_MIN = 17
"""A Long Code Value holds a code longer than Code Value's 16 characters (PS3.3 8.8):
one that cleaning shortened is filled up to stay one."""


def _fit(vr: str, value: str, tag: int) -> str:
    """Keep a cleaned value of ``tag`` valid for its VR: dates and ages that are no longer
    dates or ages become empty; text is cut to the VR's maximum length, before the word
    the limit falls in (a UID or an ID cut in half is no longer the value the gate
    searches for, yet its first half still names the study); a Long Code Value is kept
    longer than 16 characters."""
    fmt = _FORMAT.get(vr)
    if fmt is not None:
        return value if fmt.fullmatch(value) else ""
    limit = _MAX_LENGTH.get(vr)
    if limit is not None and len(value) > limit:
        cut = value[:limit]
        if not value[limit].isspace():
            cut = cut[:cut.rfind(" ") + 1]  # "" when the value is one long word
        return cut.rstrip()
    if tag == _LONG_CODE_VALUE and 0 < len(value) < _LONG_CODE_MIN:
        return value.ljust(_LONG_CODE_MIN, "_")
    return value


def _elements(ds: Dataset) -> dict[int, RawDataElement | DataElement]:
    """pydicom's own tag -> element dict of ``ds``.

    The public API (``get_item``, ``__setitem__``, ``__delitem__``) validates and
    wraps every call, which costs more than the de-identification itself on a
    typical file. Only raw elements are read or stored here; anything that needs a
    decoded value still goes through ``ds[tag]``. pydicom is pinned below 4.
    """
    return ds._dict  # type: ignore[return-value]


def _set_values(elem: DataElement, values: list[str]) -> None:
    if not values:
        elem.value = None
    elif len(values) == 1:
        elem.value = values[0]
    else:
        elem.value = values


def dataset_encodings(ds: Dataset) -> list[str]:
    """Python codecs for the dataset's SpecificCharacterSet (ASCII when absent)."""
    value = ds.get("SpecificCharacterSet")
    return convert_encodings(value if value else "ISO_IR 6")


def _swept(text: str, state: WalkState) -> str:
    """Cleaned text after the residual sweep too: a cleaner searches for what the profile
    removes, the sweep for every identifying value of the instance (physicians, operators,
    the institution...); what either finds goes."""
    if not state.sweep:
        return text
    swept = sweep_text(text, state.sweep)
    return text if swept is None else swept


def _as_text(raw: bytes, tag: int, vr: str, ds: Dataset) -> DataElement:
    """A value read without its VR, decoded as ``vr`` in the dataset's character set."""
    return convert_raw_data_element(
        RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, True, True),
        encoding=ds._character_set)
