"""De-identify a little-endian file straight from its bytes: the fast path.

Elements the plan keeps are copied as slices of the input (a run of kept elements is one
slice); deleted ones are skipped; empty, dummy and UID values are written from bytes.
Only the few elements whose text changes (pseudonyms, shifted dates, cleaned text) are
decoded, by the same :class:`~.deidentifier.Deidentifier` code the Dataset path uses.

The Dataset path (the reader's ``parse_instance``, :meth:`Deidentifier.deidentify`, the
writer's ``encode_instance_chunks``) is the reference: for every input this module either
returns exactly the bytes that path writes or declines (``None``), and the caller
then takes that path. It declines whatever it does not mirror exactly: bad or unusual
input (the Dataset path then reports the precise reason), big-endian and deflated files,
files whose pixels or overlays the configuration may change (images at risk under the
OCR scope, overlays under Clean Graphics, any image when region rules are set: the
decision reads the same four attributes as ``PixelCleaner.wants_ocr``), compressed
frames carrying text outside the image (COM, APPn: :mod:`dicom_deid.pixels.codestream`),
standard attributes written with VR UN, sequence items with their own character set,
elements out of order. Tests compare both paths byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydicom.charset import convert_encodings, python_encoding
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from dicom_deid.config.model import info_type_of
from dicom_deid.config.plan import (
    DOCUMENT_ACTS,
    TAG_ACCESSION,
    TAG_DOCUMENT_MIME,
    TAG_ISSUER_OF_PATIENT_ID,
    TAG_PATIENT_ID,
    Act,
    Mode,
    Plan,
    Scope,
    dependents_to_drop,
    iod_name,
    item_scope,
)
from dicom_deid.dicom.files import Chunk, FileRange
from dicom_deid.dicom.reader import PYDICOM_ONLY_SYNTAXES, ascii_text, plain_text, raw_texts
from dicom_deid.dicom.walker import (
    PIXEL_DATA_TAG,
    SEQ_DELIM_ITEM,
    UNDEFINED,
    Element,
    elements,
    locate_dataset,
    sequence_items,
)
from dicom_deid.dicom.writer import (
    ITEM_DELIM_ITEM,
    ITEM_START_UNDEFINED,
    element_header,
    encode_file_meta,
    raw_header,
)
from dicom_deid.pixels.codestream import (
    CODESTREAM_SYNTAXES,
    VIDEO_SYNTAXES,
    carries_metadata,
    frame_layout,
    number_of_frames,
)
from dicom_deid.pixels.excess import NATIVE_SYNTAXES, image_length, written_layout
from dicom_deid.pixels.overlays import embedded_overlay_groups
from dicom_deid.pixels.risk import RISK_TAGS
from dicom_deid.text.context import PhiContext, despaced

from .deidentifier import (
    BYTES_VRS,
    CONTEXT_VRS,
    IDENTITY_TAGS,
    REMOVING_ACTS,
    Deidentifier,
    InstanceResult,
    WalkState,
)
from .pseudonyms import patient_key as pseudonym_patient_key
from .related import group_keys
from .sweep import (
    BINARY_SWEEP_VRS,
    NESTED_SWEEP_TAGS,
    SWEEP_TAGS,
    UID_IN_BYTES,
    attribute_context,
    sweep_context,
    sweeps,
)

_TAG_SOP_CLASS = 0x00080016
_TAG_SOP_INSTANCE = 0x00080018
_TAG_STUDY = 0x0020000D
_TAG_SERIES = 0x0020000E
_TAG_CHARSET = 0x00080005
_RESULT_TAGS = frozenset({_TAG_SOP_CLASS, _TAG_SOP_INSTANCE, _TAG_STUDY, _TAG_SERIES,
                          TAG_PATIENT_ID, TAG_ACCESSION})
_HEAD_TAGS = _RESULT_TAGS | {_TAG_CHARSET, 0x00080060, 0x00100021}
"""Read from the head by ``_deidentify``: never the element past it."""
_RECURSE_MODES = {Act.RECURSE: Mode.NORMAL, Act.RECURSE_STRICT: Mode.STRICT,
                  Act.RECURSE_CLEAN: Mode.CLEAN}
_FIXED_ACTS = frozenset({Act.EMPTY, Act.DUMMY, Act.RESET})
_TEXT_ACTS = frozenset({Act.PSEUDONYM, Act.SHIFT, Act.CLEAN, Act.CLEAN_TEXT})

_TAG_METHOD_CODES = 0x00120064  # De-identification Method Code Sequence
_Elem = Element  # tag, VR as read, header, value start, value end, undefined length
Chunks = list[Chunk]


class _Decline(Exception):
    """This input is not mirrored exactly here: the Dataset path takes it."""


class ByteDeidentifier:
    """The fast path for one :class:`Deidentifier` (same configuration and key)."""

    def __init__(self, deid: Deidentifier) -> None:
        self.deid = deid
        self.plan = deid.plan
        self.walked: tuple[bytes, bool, list[_Elem]] | None = None
        """The last input's bytes, VR encoding and top-level elements, as walked here: the
        verification gate reads the same source and need not walk its top level again."""
        self._method = {
            implicit: sorted((int(r.tag), raw_header(r, implicit) + (r.value or b"")) for r in raws)
            for implicit, raws in deid.method_raw.items()
        }
        self._acts: dict[tuple[int, str | None, Mode, Scope], tuple[str, Act | None]] = {}
        self._fixed: dict[tuple[int, str, Act, bool], bytes] = {}
        self._private_acts: dict[tuple[int, str | None, Mode, str], tuple[str, Act | None]] = {}
        self._layouts: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        # UID and ASCII pseudonym elements as written, per input value (a series repeats
        # its study, series and frame-of-reference UIDs and its patient's identifiers).
        self._outputs: dict[tuple[int, str, Act, bool, bytes, str], tuple[Chunk, bytes]] = {}
        # Bounded memos of what repeats across a series' files: its character set, and
        # non-ASCII names' pseudonyms (decoding and re-encoding them takes pydicom).
        self._charsets: dict[tuple[bytes, bool], list[str]] = {}
        self._names: dict[tuple[int, str, bool, bytes, tuple[str, ...], str],
                          tuple[bytes | memoryview, DataElement]] = {}
        # The residual sweep: its context per patient's raw identifying values, with the
        # swept (or unchanged: None) kept values found under it, one memo per VR encoding;
        # each attribute's part of a context; each level's kept text, case-folded, with
        # its 2- and 3-letter pieces (None: not all ASCII).
        self._sweeps: dict[Any, tuple[PhiContext, tuple[dict[Any, Any], dict[Any, Any]],
                                      frozenset[str]]] = {}
        self._attributes: dict[Any, PhiContext] = {}
        self._kept_texts: dict[Any, tuple[str, frozenset[str]] | None] = {}
        # Swept ASCII values by (tag, VR, raw, VR encoding, the context's live values).
        self._swept_values: dict[tuple[Any, ...], Chunk | None] = {}

    def deidentify(
        self, data: bytes, size: int | None = None,
        walked: tuple[bytes, bool, list[_Elem]] | None = None,
    ) -> tuple[Chunks, InstanceResult] | None:
        """Output chunks and result for ``data``, or ``None`` for the Dataset path.

        With ``size`` larger than ``len(data)``, ``data`` is the head of a file of
        ``size`` bytes: the last element's value may lie past it, and is then emitted as
        a :class:`~dicom_deid.dicom.files.FileRange` if kept. ``None`` then means: try the
        whole file. ``walked``: these bytes' VR encoding and top-level elements in tag
        order, walked already by the same walker (the gate's reading of the source),
        taken instead of a second walk when they are of ``data`` itself.
        """
        try:
            return self._deidentify(data, len(data) if size is None else size, walked)
        except Exception:  # _Decline, or bad input the Dataset path reports precisely
            return None

    # -- whole file ---------------------------------------------------------------------
    def _deidentify(self, data: bytes, size: int,
                    walked: tuple[bytes, bool, list[_Elem]] | None = None,
                    ) -> tuple[Chunks, InstanceResult]:
        ts, implicit, pos, _meta, _preamble = locate_dataset(data)
        if ts in PYDICOM_ONLY_SYNTAXES or ts in VIDEO_SYNTAXES:
            raise _Decline  # (video: the Dataset path reports it)
        view = memoryview(data)
        self.walked = None
        if walked is not None and walked[0] is data and walked[1] == implicit:
            top = walked[2]
        else:
            top = _level_elements(data, pos, size, implicit)
        self.walked = (data, implicit, top)
        if size > len(data):
            _check_head(top, len(data))
        by_tag = {e[0]: e for e in top}
        if _TAG_SOP_INSTANCE not in by_tag or _TAG_SOP_CLASS not in by_tag:
            raise _Decline
        if self.deid.pixels is not None and self.deid.pixels.may_change_by_header(
            0x7FE00010 in by_tag, any(e[0] & 0xFF01FFFF == 0x60003000 for e in top),
            {t: _text(data, by_tag.get(t)) for t in RISK_TAGS},
        ):
            raise _Decline  # its pixels (or overlays) may change: the Dataset path
        if self.deid.drops_overlays and embedded_overlay_groups(by_tag):
            raise _Decline  # an overlay plane in the pixel data's bits: the Dataset path
        if not self.deid.claims.identity_removed and _TAG_METHOD_CODES in by_tag:
            raise _Decline  # the source's claims go (Patient Identity Removed NO): rare
        if ts in CODESTREAM_SYNTAXES and _frames_carry_metadata(data, by_tag, ts):
            raise _Decline  # text in its compressed frames (COM, APPn): the Dataset path
        if ts in NATIVE_SYNTAXES and _native_excess(data, by_tag):
            raise _Decline  # bytes past its image: the Dataset path cuts them
        encodings = self._charset(data, by_tag.get(_TAG_CHARSET))
        res = InstanceResult(
            original_study_uid=_text(data, by_tag.get(_TAG_STUDY)),
            original_series_uid=_text(data, by_tag.get(_TAG_SERIES)),
            original_sop_uid=_text(data, by_tag.get(_TAG_SOP_INSTANCE)),
            original_patient_id=_text(data, by_tag.get(TAG_PATIENT_ID)),
            original_accession=_text(data, by_tag.get(TAG_ACCESSION)),
            sop_class_uid=_text(data, by_tag.get(_TAG_SOP_CLASS)),
            modality=_text(data, by_tag.get(0x00080060)),
        )
        issuer = _text(data, by_tag.get(0x00100021))
        patient_key = pseudonym_patient_key(res.original_patient_id, issuer,
                                            res.original_study_uid)
        state = WalkState(patient_key=patient_key, iod=iod_name(res.sop_class_uid),
                          groups=group_keys(patient_key, res.original_study_uid))
        scope = (state.iod, "")
        if self.plan.needs_context:
            state.context = PhiContext.from_values(
                self._context(view, top, implicit, Mode.NORMAL, scope, encodings))
        final: dict[int, bytes | DataElement] = {}
        body: Chunks = []
        self._level(view, top, implicit, Mode.NORMAL, scope, state, encodings, body,
                    self._method[implicit], final)
        res.study_uid = _final_text(final.get(_TAG_STUDY))
        res.series_uid = _final_text(final.get(_TAG_SERIES))
        res.sop_uid = _final_text(final.get(_TAG_SOP_INSTANCE))
        res.patient_id = _final_text(final.get(TAG_PATIENT_ID))
        res.accession = _final_text(final.get(TAG_ACCESSION))
        if state.shift_used:
            res.date_shift_days = self.deid.pseudo.date_shift_days(patient_key)
        meta = encode_file_meta(_final_text(final.get(_TAG_SOP_CLASS)), res.sop_uid, ts)
        return [meta, *body], res

    def _charset(self, data: bytes, e: _Elem | None) -> list[str]:
        """:func:`_encodings`, remembered per raw Specific Character Set value."""
        if e is None:
            return _encodings(data, None)
        key = (data[e[3]:e[4]], e[1] is None)
        found = self._charsets.get(key)
        if found is None:
            found = _encodings(data, e)
            _remember(self._charsets, key, found)
        return list(found)

    # -- one dataset level --------------------------------------------------------------
    def _acts_of(
        self, view: memoryview, elems: list[_Elem], mode: Mode, scope: Scope,
    ) -> tuple[list[tuple[_Elem, str, Act | None]], set[tuple[int, int]], set[int], Any]:
        """Per element (VR, action) as ``Deidentifier._acts`` decides them, the private
        blocks that keep something, and the groups deleted whole: the first half of
        ``Deidentifier._process``.

        The files of a series share their layout (the same tags with the same VRs), so
        the standard elements' decisions are remembered per layout; the key holds every
        tag and VR, so only an identical layout reuses them. Private elements, whose
        action depends on their creator's value, are decided anew each time."""
        tags = tuple([e[0] for e in elems])
        key = (mode, scope, tags, tuple([e[1] for e in elems]))
        layout = self._layouts.get(key)
        if layout is None:
            return (*self._decide(view, elems, mode, scope, key), key)
        vrs, acts_seen, privates, deleted = layout
        acts = list(zip(elems, vrs, acts_seen, strict=True))
        kept_blocks: set[tuple[int, int]] = set()
        deleted_groups = set(deleted)
        if privates:
            creators = _lazy_creators(view, [elems[i] for i in privates])
            for i in privates:
                e = elems[i]
                vr, act = self._private_act(e[0], e[1], mode, creators)
                if act is not Act.DELETE and act is not None:
                    kept_blocks.add((e[0] >> 16, (e[0] >> 8) & 0xFF))
                if act is Act.DELETE_GROUP:
                    deleted_groups.add(e[0] >> 16)
                acts[i] = (e, vr, act)
        return acts, kept_blocks, deleted_groups, key

    def _decide(
        self, view: memoryview, elems: list[_Elem], mode: Mode, scope: Scope,
        key: tuple[Any, ...],
    ) -> tuple[list[tuple[_Elem, str, Act | None]], set[tuple[int, int]], set[int]]:
        """:meth:`_acts_of` for a layout not seen before (remembered for the next)."""
        element_act = self.deid.element_act
        memo = self._acts
        creators = _lazy_creators(view, elems)
        acts: list[tuple[_Elem, str, Act | None]] = []
        kept_blocks: set[tuple[int, int]] = set()
        deleted_groups: set[int] = set()
        standard_deleted: set[int] = set()
        privates: list[int] = []
        for i, e in enumerate(elems):
            tag = e[0]
            if tag >> 16 & 1:
                privates.append(i)
                vr, act = self._private_act(tag, e[1], mode, creators)
                if act is not Act.DELETE and act is not None:
                    kept_blocks.add((tag >> 16, (tag >> 8) & 0xFF))
            else:
                mkey = (tag, e[1], mode, scope)
                found_act = memo.get(mkey)
                if found_act is None:
                    if e[1] == "UN":
                        raise _Decline  # pydicom re-reads it with its dictionary VR
                    found_act = memo[mkey] = element_act(tag, e[1], mode, creators, scope)
                vr, act = found_act
                if act is Act.DELETE_GROUP:
                    standard_deleted.add(tag >> 16)
            if act is Act.DELETE_GROUP:
                deleted_groups.add(tag >> 16)
            acts.append((e, vr, act))
        drop = dependents_to_drop((a[0][0], a[2]) for a in acts if not a[0][0] >> 16 & 1)
        if drop:
            acts = [(e, vr, Act.DELETE if e[0] in drop else act) for e, vr, act in acts]
        _remember(self._layouts, key, (
            tuple(a[1] for a in acts), tuple(a[2] for a in acts), tuple(privates),
            frozenset(standard_deleted)), size=_LAYOUTS_SIZE)
        return acts, kept_blocks, deleted_groups

    def _private_act(
        self, tag: int, vr: str | None, mode: Mode,
        creators: Callable[[], dict[tuple[int, int], str]],
    ) -> tuple[str, Act | None]:
        """(VR, action) of a private element; a data element's is remembered per creator."""
        if not tag & 0xFF00:  # group length or private creator
            return self.deid.element_act(tag, vr, mode, creators)
        pkey = (tag, vr, mode, creators().get((tag >> 16, tag >> 8 & 0xFF), ""))
        found = self._private_acts.get(pkey)
        if found is None:
            found = self.deid.element_act(tag, vr, mode, creators)
            _remember(self._private_acts, pkey, found)
        return found

    def _context(
        self, view: memoryview, elems: list[_Elem], implicit: bool, mode: Mode, scope: Scope,
        encodings: list[str],
    ) -> Iterator[tuple[str, str]]:
        """The identifying values free text is checked against, in the order (and with the
        decoding) of ``Deidentifier._context_values``."""
        for e, vr, act in self._acts_of(view, elems, mode, scope)[0]:
            if act is None:
                continue
            if vr == "SQ":
                if act in _RECURSE_MODES:
                    sub = _RECURSE_MODES[act]
                elif act is Act.DELETE or act is Act.EMPTY:
                    sub = Mode.STRICT
                else:
                    continue
                inner = item_scope(scope, e[0])
                for items in _items(view, e, implicit):
                    yield from self._context(view, items, implicit, sub, inner, encodings)
                continue
            if vr not in CONTEXT_VRS or not (
                act in REMOVING_ACTS or vr == "PN" or e[0] in IDENTITY_TAGS
            ):
                continue
            if e[5] or e[4] > len(view):
                raise _Decline
            raw = bytes(view[e[3]:e[4]])
            text = plain_text(raw, vr)
            if text is not None:
                if text.strip():
                    yield info_type_of(keyword_for_tag(e[0]), vr), text
                continue
            elem = convert_raw_data_element(
                RawDataElement(BaseTag(e[0]), e[1], len(raw), raw, 0, implicit, True),
                encoding=encodings,
            )
            keyword = elem.keyword or ""
            for v in Deidentifier.element_values(elem):
                if v.strip():
                    yield info_type_of(keyword, vr), v

    def _level(
        self, view: memoryview, elems: list[_Elem], implicit: bool, mode: Mode, scope: Scope,
        state: WalkState, encodings: list[str], out: Chunks,
        added: list[tuple[int, bytes]] | None, final: dict[int, bytes | DataElement] | None,
    ) -> None:
        """Emit one dataset (top level or item), mirroring ``Deidentifier._process`` and
        the writer's ``_encode_dataset``; ``added`` are elements to insert (or replace).

        What a layout's standard elements become is compiled once into a plan (see
        :func:`_compile_plan`): runs of kept elements copied as one slice each, elements
        to change, elements to add. Private elements are decided for each file."""
        acts, kept_blocks, deleted_groups, key = self._acts_of(view, elems, mode, scope)
        pkey = (key, implicit, final is None, added is not None)
        plan = self._plans.get(pkey)
        if plan is None:
            plan = _compile_plan(acts, added, final is None, self.deid.config.residual_sweep,
                                 self.deid.sweep_tags)
            _remember(self._plans, pkey, plan, size=_LAYOUTS_SIZE)
        ops, sq_checks, captures, swept, sources, issuer_at = plan
        if issuer_at is not None:  # this level pseudonymises a PatientID: with its issuer
            outer, state.issuer = state.issuer, _level_issuer(view, elems, issuer_at)
        if final is not None and self.deid.config.residual_sweep:
            state.sweep, state.sweep_memo, state.sweep_heads = self._sweep_context(
                view, elems, sources, implicit, encodings, state.groups, scope)
        changed = self._swept(view, elems, swept, implicit, state, encodings) \
            if swept[0] and state.sweep is not None else None
        if any(elems[i][5] for i in sq_checks):
            raise _Decline  # pydicom re-encodes nested undefined-length sequences
        for op in ops:
            kind = op[0]
            if kind is _RUN:
                if changed:
                    _emit_runs_with(view, elems, op[1], op[2], changed, out)
                    continue
                last = elems[op[2] - 1]
                _emit_run(view, elems[op[1]][2], last[4] + 8 if last[5] else last[4], out)
            elif kind is _ADD:
                out.append(op[1])
            elif kind is _CHANGE:
                self._emit_change(view, elems, op, implicit, scope, state, encodings, out, final)
            else:  # _PRIVATE: decided for this file
                e, vr, act = acts[op[1]]
                if e[0] >> 16 in deleted_groups:
                    continue
                if act is None:  # private creator: kept if its block keeps something
                    if (e[0] >> 16, e[0] & 0xFF) not in kept_blocks:
                        continue
                    act = Act.KEEP
                self._emit_private(view, e, vr, act, implicit, scope, state, encodings, out,
                                   final)
        if final is not None:
            final.update((elems[i][0], bytes(view[elems[i][3]:elems[i][4]])) for i in captures)
        if issuer_at is not None:
            state.issuer = outer

    def _emit_change(
        self, view: memoryview, elems: list[_Elem], op: tuple[Any, ...], implicit: bool,
        scope: Scope, state: WalkState, encodings: list[str], out: Chunks,
        final: dict[int, bytes | DataElement] | None,
    ) -> None:
        """A ``(_CHANGE, i, vr, act)`` op: a dummy document (or its length), which its
        level's MIME type decides, or :meth:`_emit_changed`."""
        if op[3] in DOCUMENT_ACTS:
            out.append(_document_element(self.plan, view, elems, op, implicit, scope))
            return
        self._emit_changed(view, elems[op[1]], op[2], op[3], implicit, scope, state, encodings,
                           out, final)

    def _emit_private(
        self, view: memoryview, e: _Elem, vr: str, act: Act, implicit: bool, scope: Scope,
        state: WalkState, encodings: list[str], out: Chunks,
        final: dict[int, bytes | DataElement] | None,
    ) -> None:
        """A private element (or a kept creator) as this file's creators decide it."""
        if act is Act.KEEP:
            if e[5] and e[1] == "SQ" and final is None:
                raise _Decline  # pydicom re-encodes nested undefined-length sequences
            if state.sweep and sweeps(e[0], vr):
                swept = self._swept_element(view, e, vr, implicit, state, encodings)
                if swept is not None:
                    out.append(swept)
                    return
            _emit_run(view, e[2], e[4] + 8 if e[5] else e[4], out)
        elif act is not Act.DELETE and act is not Act.DELETE_GROUP:
            self._emit_changed(view, e, vr, act, implicit, scope, state, encodings, out, final)

    def _emit_changed(
        self, view: memoryview, e: _Elem, vr: str, act: Act, implicit: bool, scope: Scope,
        state: WalkState, encodings: list[str], out: Chunks,
        final: dict[int, bytes | DataElement] | None,
    ) -> None:
        """An element the plan changes: a fixed value written before, or :meth:`_changed`."""
        tag = e[0]
        whole = self._fixed.get((tag, vr, act, implicit))
        if whole is not None:  # an empty, dummy or placeholder value seen before
            out.append(whole)
            if final is not None and tag in _RESULT_TAGS:
                final[tag] = self.deid.fixed_value(vr, act, tag)
            return
        new = self._changed(view, e, vr, act, implicit, scope, state, encodings, out)
        if final is not None and tag in _RESULT_TAGS and new is not None:
            final[tag] = new

    def _changed(
        self, view: memoryview, e: _Elem, vr: str, act: Act, implicit: bool, scope: Scope,
        state: WalkState, encodings: list[str], out: Chunks,
    ) -> bytes | DataElement | None:
        """Emit one element the plan changes; return its new value (None if dropped)."""
        if e[4] > len(view):
            raise _Decline  # its value lies past the head that was read
        tag = e[0]
        if act in _RECURSE_MODES:
            self._recurse(view, e, vr, act, implicit, scope, state, encodings, out)
            return None
        if act in _FIXED_ACTS:
            if vr == "SQ":
                out.append(_seq_header(tag, implicit) + SEQ_DELIM_ITEM)
                return None
            value = self.deid.fixed_value(vr, act, tag)  # _level reuses it next time
            whole = element_header(tag, vr, len(value), implicit) + value
            self._fixed[(tag, vr, act, implicit)] = whole
            out.append(whole)
            return value
        if vr in BYTES_VRS or vr == "SQ":
            return None
        raw = bytes(view[e[3]:e[4]])
        if act is Act.UID:
            return self._keyed(tag, vr, act, implicit, raw, out, "")
        if act not in _TEXT_ACTS or e[5]:
            raise _Decline
        if act is Act.PSEUDONYM:
            done = self._keyed(tag, vr, act, implicit, raw, out,
                               state.issuer if tag == TAG_PATIENT_ID else "")
            if done is not None:  # b"" too: an empty value stays empty
                return done
        text = plain_text(raw, vr)
        if text is not None:
            elem = DataElement(tag, vr, text)
            self.deid.change_text(elem, tag, vr, act, state)
            new = elem.value
            if new is None or (isinstance(new, str | PersonName) and str(new).isascii()):
                value = str(new).encode("ascii") if new is not None else b""
                return self._emit_text(tag, vr, value, implicit, out)
            return self._encode(elem, implicit, encodings, out)
        return self._recoded(e, vr, act, raw, implicit, state, encodings, out)

    def _recurse(
        self, view: memoryview, e: _Elem, vr: str, act: Act, implicit: bool, scope: Scope,
        state: WalkState, encodings: list[str], out: Chunks,
    ) -> None:
        """Emit a sequence with each item de-identified (as an undefined-length sequence,
        as the writer's ``_encode_sequence`` writes it); a recursed non-sequence is dropped."""
        if vr != "SQ":
            if act is not Act.RECURSE or e[0] >> 16 & 1:
                return
            raise _Decline  # pydicom would convert and re-encode this value
        out.append(_seq_header(e[0], implicit))
        inner = item_scope(scope, e[0])
        for items in _items(view, e, implicit):
            out.append(ITEM_START_UNDEFINED)
            self._level(view, items, implicit, _RECURSE_MODES[act], inner, state, encodings,
                        out, None, None)
            out.append(ITEM_DELIM_ITEM)
        out.append(SEQ_DELIM_ITEM)

    def _sweep_context(
        self, view: memoryview, elems: list[_Elem], sources: _Sites,
        implicit: bool, encodings: list[str], groups: tuple[str, ...] = (),
        scope: Scope = ("", ""),
    ) -> tuple[PhiContext, dict[Any, Chunk | None], frozenset[str]]:
        """The residual sweep's context from the top level's identifying values the plan
        does not keep (``sources``: their positions and (tag, VR)s, as
        ``Deidentifier._sweep_values`` reads them), the memo of swept values for it and
        this VR encoding, and its anchors' heads (see :meth:`_swept`): a patient's files
        share them, and an attribute's part of the context recurs across patients. The
        values of the instance's ``groups`` in the batch are part of it (see
        :meth:`Deidentifier.related_context`)."""
        positions, signature, number = sources
        raws = _raw_values(view, elems, positions)
        key = (number, groups, scope, self.deid.nested_values, *encodings, *raws)
        known = self._sweeps.get(key)
        if known is None:
            parts = []
            for i, (tag, vr), raw in zip(positions, signature, raws, strict=True):
                akey = (tag, vr, raw, *encodings)
                part = self._attributes.get(akey)
                if part is None:
                    inner = NESTED_SWEEP_TAGS.get(tag)
                    values = self._values(view, elems[i], vr, implicit, encodings) \
                        if inner is None else [
                            v for item in _items(view, elems[i], implicit)
                            for e in item if e[0] == inner
                            for v in self._values(view, e, "LO", implicit, encodings)]
                    part = attribute_context(tag, vr, values)
                    _remember(self._attributes, akey, part)
                parts.append(part)
            parts.append(self.deid.related_context(groups, scope))
            ctx = sweep_context(parts)
            known = (ctx, ({}, {}), frozenset(a[:3] for a in ctx.anchors))
            _remember(self._sweeps, key, known, size=_SWEEP_CONTEXTS)
        return known[0], known[1][implicit], known[2]

    def _values(self, view: memoryview, e: _Elem, vr: str, implicit: bool,
                encodings: list[str]) -> list[str]:
        """An element's values as the Dataset path decodes them."""
        return raw_texts(bytes(view[e[3]:e[4]]), e[0], vr, e[1], implicit, encodings)

    def _swept(
        self, view: memoryview, elems: list[_Elem], swept: _Sites, implicit: bool,
        state: WalkState, encodings: list[str],
    ) -> dict[int, Chunk] | None:
        """The kept text elements of a level the residual sweep changes: position -> the
        element as written; None when it changes none (the usual case). A level's kept
        values, joined and case-folded, are remembered across contexts with their 2- and
        3-letter pieces (the files of a series, and of a scanner, repeat them): a level
        holding no anchor's first three letters (one set operation) or, failing that, no
        anchor (one search per anchor) is cleared at once; the rest are remembered per
        level under the context."""
        positions, signature, number = swept
        raws = _raw_values(view, elems, positions)
        key = (number, *raws)
        kept = self._kept_texts.get(key, _MISSING)
        if kept is _MISSING:
            joined = b"\0".join(raws)  # an anchor holds no NUL: it cannot span two values
            # (text without a UID written in it, which the sweep maps whatever the context;
            # no byte value, whose UTF-16 text is ASCII bytes with a NUL in every other)
            kept = _pieces(despaced(joined.decode("ascii").lower())) if _is_ascii_text(
                joined) and not UID_IN_BYTES.search(joined) and not any(
                vr in BINARY_SWEEP_VRS for _tag, vr in signature) else None
            _remember(self._kept_texts, key, kept, size=_KEPT_TEXTS)
        if kept is not None and (state.sweep_heads.isdisjoint(kept[1]) or not (
                state.sweep is not None and state.sweep.screens(kept[0]))):
            return None  # no kept value holds an anchor: the usual case
        memo = state.sweep_memo
        assert memo is not None
        known = memo.get(key, _MISSING)
        if known is not _MISSING:
            return known
        changed: dict[int, Chunk] | None = None
        for i, (_tag, vr) in zip(positions, signature, strict=True):
            found = self._swept_element(view, elems[i], vr, implicit, state, encodings)
            if found is not None:
                if changed is None:
                    changed = {}
                changed[i] = found
        _remember(memo, key, changed)
        return changed

    def _swept_element(
        self, view: memoryview, e: _Elem, vr: str, implicit: bool, state: WalkState,
        encodings: list[str],
    ) -> Chunk | None:
        """One kept text element after the residual sweep, as the Dataset path writes it;
        None when the sweep leaves it as it is. Remembered per value and context."""
        if e[4] > len(view) or e[5]:
            raise _Decline  # a kept text value past the head that was read
        raw = bytes(view[e[3]:e[4]])
        memo = state.sweep_memo
        assert memo is not None and state.sweep is not None
        key = (e[0], vr, raw)
        known = memo.get(key, _MISSING)
        if known is not _MISSING:
            return known
        shared: tuple[Any, ...] | None = None
        if _is_ascii_text(raw) and not UID_IN_BYTES.search(raw) and vr not in BINARY_SWEEP_VRS:
            folded = raw.decode("ascii").casefold()
            if not state.sweep.screens(folded):
                _remember(memo, key, None)
                return None  # no value can hold an identifier (the usual case)
            # What the sweep makes of it depends on the values with an anchor in it alone
            # (PhiContext.live_pairs): the other series of the patient share the result.
            shared = (e[0], vr, raw, implicit, state.sweep.live_pairs(folded))
            found = self._swept_values.get(shared, _MISSING)
            if found is not _MISSING:
                _remember(memo, key, found)
                return found
        text = plain_text(raw, vr)
        if text is not None:
            elem = DataElement(e[0], vr, text)
        else:  # as read, or (read without one) as element_act resolved it
            elem = convert_raw_data_element(
                RawDataElement(BaseTag(e[0]), vr if e[1] in (None, "UN") else e[1], len(raw),
                               raw, 0, implicit, True),
                encoding=encodings)
        chunk: Chunk | None = None
        if self.deid.sweep_element(elem, vr, state.sweep):
            new = elem.value
            if isinstance(new, str | PersonName) and str(new).isascii():
                chunk = _text_element(e[0], vr, str(new).encode("ascii"), implicit)[0]
            else:
                written: Chunks = []
                self._encode(elem, implicit, encodings, written)
                chunk = written[0]
        _remember(memo, key, chunk)
        if shared is not None:
            _remember(self._swept_values, shared, chunk)
        return chunk

    def _keyed(
        self, tag: int, vr: str, act: Act, implicit: bool, raw: bytes, out: Chunks,
        issuer: str,
    ) -> bytes | None:
        """Emit a UID element or an ASCII pseudonym: they depend on the key, the value
        and (a PatientID) its ``issuer`` only, so each is remembered as written. None for
        a pseudonym of non-ASCII text."""
        okey = (tag, vr, act, implicit, raw, issuer)
        known = self._outputs.get(okey)
        if known is None:
            if act is Act.UID:
                values = raw.rstrip(b"\x00 ").decode("ascii", "replace").split("\\")
                value = self.deid.uid_value(values, tag)
                known = (element_header(tag, vr, len(value), implicit) + value, value)
            else:
                text = plain_text(raw, vr)
                if text is None:
                    return None
                value = self.deid.pseudonym(tag, text, issuer).encode("ascii") if text else b""
                known = _text_element(tag, vr, value, implicit)
            _remember(self._outputs, okey, known)
        out.append(known[0])
        return known[1]

    def _recoded(
        self, e: _Elem, vr: str, act: Act, raw: bytes, implicit: bool, state: WalkState,
        encodings: list[str], out: Chunks,
    ) -> DataElement:
        """Change a value only pydicom decodes (a character set, several values); a
        pseudonym depends on the key and the value only, so it is remembered."""
        key = (e[0], vr, implicit, raw, tuple(encodings), state.issuer)
        if act is Act.PSEUDONYM and (known := self._names.get(key)) is not None:
            out.append(known[0])
            return known[1]
        elem = convert_raw_data_element(
            RawDataElement(BaseTag(e[0]), e[1], len(raw), raw, 0, implicit, True),
            encoding=encodings,
        )
        self.deid.change_text(elem, e[0], vr, act, state)
        self._encode(elem, implicit, encodings, out)
        if act is Act.PSEUDONYM:
            _remember(self._names, key, (out[-1], elem))
        return elem

    @staticmethod
    def _encode(elem: DataElement, implicit: bool, encodings: list[str], out: Chunks
                ) -> DataElement:
        """Emit ``elem`` as pydicom writes it."""
        buf = DicomBytesIO()
        buf.is_little_endian = True
        buf.is_implicit_VR = implicit
        write_data_element(buf, elem, encodings)
        out.append(buf.getvalue())
        return elem

    @staticmethod
    def _emit_text(tag: int, vr: str, value: bytes, implicit: bool, out: Chunks) -> bytes:
        """One ASCII text value, padded with a space as pydicom pads text."""
        whole, value = _text_element(tag, vr, value, implicit)
        out.append(whole)
        return value


# VRs whose single ASCII value pydicom reads as the bytes less trailing NULs and spaces.
# -- parsing ---------------------------------------------------------------------------


def _level_elements(data: bytes, pos: int, end: int, implicit: bool) -> list[_Elem]:
    """The walker's elements of the top level, in tag order (else :class:`BadInput`: the
    Dataset path then reads the file)."""
    return elements(data, pos, end, implicit, ordered=True)


_MISSING: Any = object()
_RUN, _ADD, _CHANGE, _PRIVATE = "run", "add", "change", "private"
_Sites = tuple[tuple[int, ...], tuple[tuple[int, str], ...], int]
"""Positions of some of a level's elements, their (tag, VR)s, and a number naming the two
(a memo key holds it rather than hash two tuples for every file)."""
_SITE_NUMBERS: dict[tuple[tuple[int, ...], tuple[tuple[int, str], ...]], int] = {}


def _sites(positions: tuple[int, ...], signature: tuple[tuple[int, str], ...]) -> _Sites:
    number = _SITE_NUMBERS.setdefault((positions, signature), len(_SITE_NUMBERS))
    return positions, signature, number
_Plan = tuple[list[tuple[Any, ...]], list[int], list[int], _Sites, _Sites, int | None]


def _compile_plan(
    acts: list[tuple[_Elem, str, Act | None]], added: list[tuple[int, bytes]] | None,
    nested: bool, sweep: bool, sweep_tags: frozenset[int] = frozenset(SWEEP_TAGS),
) -> _Plan:
    """What a level of this layout becomes, as ``Deidentifier._process`` decides it for
    its standard elements: (ops, positions whose undefined length declines, positions of
    kept result values, positions of kept text the residual sweep reads when ``sweep``,
    positions and (tag, VR)s of the top level's identifying values it searches for).
    Ops: ``(_RUN, i, j)`` copy elements i..j-1 as one slice; ``(_ADD, bytes)`` an added
    element; ``(_CHANGE, i, vr, act)``; ``(_PRIVATE, i)`` decided per file. Depends only on
    the tags, the VRs as read and the plan's actions."""
    ops: list[tuple[Any, ...]] = []
    sq_checks: list[int] = []
    captures: list[int] = []
    swept: list[tuple[int, int, str]] = []
    sources = [i for i, (e, _vr, act) in enumerate(acts)
               if sweep and not nested and e[0] in sweep_tags and act is not Act.KEEP]
    signature = tuple((acts[i][0][0], acts[i][1]) for i in sources)
    pending = list(added) if added else []
    replaced = {t for t, _ in pending}
    deleted_groups = {e[0] >> 16 for e, _vr, act in acts
                      if act is Act.DELETE_GROUP and not e[0] >> 16 & 1}
    run_start = -1

    def close(i: int) -> None:
        nonlocal run_start
        if run_start >= 0:
            ops.append((_RUN, run_start, i))
            run_start = -1

    for i, (e, vr, act) in enumerate(acts):
        tag = e[0]
        while pending and pending[0][0] <= tag:
            close(i)
            ops.append((_ADD, pending.pop(0)[1]))
        if tag >> 16 & 1:
            close(i)
            ops.append((_PRIVATE, i))
            continue
        if tag in replaced or tag >> 16 in deleted_groups:
            close(i)
            continue
        if act is Act.KEEP:
            if nested and e[1] == "SQ":
                sq_checks.append(i)
            if not nested and tag in _RESULT_TAGS:
                captures.append(i)
            if sweep and sweeps(tag, vr):
                swept.append((i, tag, vr))
            if run_start < 0:
                run_start = i
            continue
        close(i)
        if act is not Act.DELETE and act is not Act.DELETE_GROUP:
            ops.append((_CHANGE, i, vr, act))
    close(len(acts))
    ops.extend((_ADD, chunk) for _, chunk in pending)
    # A level that pseudonymises its PatientID needs its IssuerOfPatientID (-1: none).
    issuer_at = None
    if any(op[0] is _CHANGE and acts[op[1]][0][0] == TAG_PATIENT_ID for op in ops):
        issuer_at = next((i for i, (e, _vr, _act) in enumerate(acts)
                          if e[0] == TAG_ISSUER_OF_PATIENT_ID), -1)
    return (ops, sq_checks, captures,
            _sites(tuple(i for i, _, _ in swept), tuple((t, vr) for _, t, vr in swept)),
            _sites(tuple(sources), signature), issuer_at)


def _emit_run(view: memoryview, start: int, end: int, out: Chunks) -> None:
    """Input bytes ``start``..``end`` as one chunk; the part past the head that was read
    (a kept last value, see :func:`_check_head`) as a :class:`~dicom_deid.dicom.files.FileRange`."""
    if end <= len(view):
        out.append(view[start:end])
        return
    head = max(start, len(view))
    if start < head:
        out.append(view[start:head])
    out.append(FileRange(head, end - head))


def _emit_runs_with(view: memoryview, elems: list[_Elem], start: int, stop: int,
                    changed: dict[int, Chunk], out: Chunks) -> None:
    """Elements ``start``..``stop``-1 as slices of the input, except those the residual
    sweep changed (written as ``changed`` holds them)."""
    run = start
    for i in range(start, stop):
        new = changed.get(i)
        if new is None:
            continue
        if run < i:
            last = elems[i - 1]
            _emit_run(view, elems[run][2], last[4] + 8 if last[5] else last[4], out)
        out.append(new)
        run = i + 1
    if run < stop:
        last = elems[stop - 1]
        _emit_run(view, elems[run][2], last[4] + 8 if last[5] else last[4], out)


def _raw_values(view: memoryview, elems: list[_Elem], positions: tuple[int, ...]) -> list[bytes]:
    """The raw values of the elements at ``positions`` (a text value read only in part,
    or of undefined length, declines)."""
    found = [elems[i] for i in positions]
    if not found:
        return []
    if found[-1][4] > len(view):  # elements are in file order: the last one ends last
        raise _Decline
    for e in found:
        if e[5]:
            raise _Decline
    data: bytes = view.obj  # type: ignore[assignment]
    return [data[e[3]:e[4]] for e in found]


def _level_issuer(view: memoryview, elems: list[_Elem], at: int) -> str:
    """A level's IssuerOfPatientID as ``text_value`` reads it ("" when ``at`` is -1)."""
    if at < 0:
        return ""
    e = elems[at]
    if e[4] > len(view) or e[5]:
        raise _Decline
    raw = bytes(view[e[3]:e[4]])
    if not _is_ascii_text(raw):
        raise _Decline  # the Dataset path decodes it in the dataset's character set
    return ascii_text(raw)


def _is_ascii_text(raw: bytes) -> bool:
    """Whether ``raw`` decodes to the same ASCII text in any character set: ISO 2022 sets
    (Japanese, Korean) write their characters in 7-bit bytes after an escape."""
    return raw.isascii() and b"\x1b" not in raw


def _pieces(folded: str) -> tuple[str, frozenset[str]]:
    """A text with its 1-, 2- and 3-letter pieces: an anchor occurs in it only if its
    first three letters (or all of a shorter one) are among them."""
    return folded, frozenset(
        [folded[i:i + 3] for i in range(len(folded) - 2)]
        + [folded[i:i + 2] for i in range(len(folded) - 1)] + list(folded))


def _check_head(top: list[_Elem], head: int) -> None:
    """Decline unless only the last top-level element reaches past the ``head`` bytes
    read, with a defined length, its header inside the head, and no value read here."""
    if not top or top[-1][3] > head or top[-1][5] or top[-1][0] in _HEAD_TAGS:
        raise _Decline
    if len(top) > 1 and top[-2][4] > head:
        raise _Decline


def _items(view: memoryview, e: _Elem, implicit: bool) -> list[list[_Elem]]:
    """The elements of each item of a sequence, in tag order. Declined: an item with
    its own character set, and (explicit VR) an undefined length other than a sequence's
    or pixel data's (pydicom reads those its own way)."""
    found = sequence_items(view.obj, e[3], e[4], implicit, e[0], ordered=True)  # type: ignore[arg-type]
    for item in found:
        for i in item:
            if i[0] == _TAG_CHARSET or (
                    i[5] and not implicit and i[1] != "SQ" and i[0] != PIXEL_DATA_TAG):
                raise _Decline
    return found


def _creators(view: memoryview, elems: list[_Elem]) -> dict[tuple[int, int], str]:
    """Private creator strings of one level, read as the Dataset path reads them."""
    creators: dict[tuple[int, int], str] = {}
    for tag, _vr, _h, start, stop, _u in elems:
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1 and 0x0010 <= element <= 0x00FF:
            if stop > len(view):
                raise _Decline
            raw = bytes(view[start:stop])
            if not _is_ascii_text(raw) or b"\\" in raw:
                raise _Decline
            creators[(group, element)] = raw.decode("ascii").rstrip("\x00 ").strip()
    return creators


_MEMO_SIZE = 4096


_LAYOUTS_SIZE = 512  # a key holds every tag of a level: about 2 KB each
_SWEEP_CONTEXTS = 256  # patients whose sweep context (and swept values) are remembered
_KEPT_TEXTS = 1024  # levels' kept text with its pieces (a few KB each)


def _remember(memo: dict[Any, Any], key: Any, value: Any, size: int = _MEMO_SIZE) -> None:
    """Store in a memo that is emptied when full: bounded memory over any corpus."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value


def _lazy_creators(view: memoryview, elems: list[_Elem]
                   ) -> Callable[[], dict[tuple[int, int], str]]:
    """:func:`_creators` of a level, read on first call only (most levels need none)."""
    found: list[dict[tuple[int, int], str]] = []

    def creators() -> dict[tuple[int, int], str]:
        if not found:
            found.append(_creators(view, elems))
        return found[0]

    return creators


def _encodings(data: bytes, e: _Elem | None) -> list[str]:
    """Python codecs of the dataset's character set, checked as ``parse_instance`` does."""
    if e is None:
        return convert_encodings("ISO_IR 6")
    raw = data[e[3]:e[4]]
    elem = convert_raw_data_element(
        RawDataElement(BaseTag(_TAG_CHARSET), e[1], len(raw), raw, 0, e[1] is None, True),
        encoding=None,
    )
    value = elem.value
    terms = [value] if isinstance(value, str) else list(value or [])
    for term in terms:
        term = (term or "").strip()
        if term and term not in python_encoding:
            raise _Decline
    return convert_encodings(value if value else "ISO_IR 6")


def _text(data: bytes, e: _Elem | None) -> str:
    """A single-valued ASCII attribute as the reader's ``text_value`` reads it."""
    if e is None:
        return ""
    raw = data[e[3]:e[4]]
    if not raw.isascii():
        raise _Decline
    return ascii_text(raw)


def _frames_carry_metadata(data: bytes, by_tag: dict[int, _Elem], ts: str) -> bool:
    """Whether encapsulated Pixel Data's frames carry a segment the Dataset path removes
    (:func:`~dicom_deid.pixels.codestream.remove_frame_metadata`), read as it reads them:
    NumberOfFrames, the Extended Offset Table. Only marker segments are walked."""
    pixels = by_tag.get(PIXEL_DATA_TAG)
    if pixels is None or not pixels[5]:
        return False
    if pixels[4] > len(data):
        raise _Decline
    return carries_metadata(data[pixels[3]:pixels[4]], ts, *frame_layout(data, by_tag))


def _native_excess(data: bytes, by_tag: dict[int, _Elem]) -> bool:
    """Whether native Pixel Data is longer than its image
    (:func:`~dicom_deid.pixels.excess.trim_native_excess`), from the layout as written."""
    pixels = by_tag.get(PIXEL_DATA_TAG)
    if pixels is None or pixels[5]:
        return False
    rows, columns, samples, bits = written_layout(data, by_tag)
    frames = number_of_frames(_raw(data, by_tag.get(0x00280008))) or 0
    size = image_length(rows, columns, samples, bits, frames,
                        _raw(data, by_tag.get(0x00280004)).decode("ascii", "replace"))
    return size is not None and pixels[4] - pixels[3] > size


def _raw(data: bytes, e: _Elem | None) -> bytes:
    return b"" if e is None else data[e[3]:e[4]]


def _document_element(plan: Plan, view: memoryview, elems: list[_Elem], op: tuple[Any, ...],
                      implicit: bool, scope: Scope) -> bytes:
    """A dummy document or its length (``op``: ``(_CHANGE, i, vr, act)``) as
    ``Deidentifier._process_level`` writes it, for the MIME type of its level as read."""
    mime = ""
    for e in elems:
        if e[0] == TAG_DOCUMENT_MIME:
            raw = bytes(view[e[3]:e[4]])
            if e[4] > len(view) or e[5] or not raw.isascii():
                raise _Decline  # the Dataset path reads it (decoded, past the head...)
            mime = ascii_text(raw)
    value = plan.document_value(op[3], mime, scope)
    data = value if isinstance(value, bytes) else value.to_bytes(4, "little")
    return element_header(elems[op[1]][0], op[2], len(data), implicit) + data


def _final_text(value: bytes | DataElement | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return ascii_text(value)
    v = value.value
    return "" if v is None else str(v).strip()


def _text_element(tag: int, vr: str, value: bytes, implicit: bool) -> tuple[bytes, bytes]:
    """(element, value) for one ASCII text value, padded with a space as pydicom pads."""
    value = value + b" " if len(value) % 2 else value
    return element_header(tag, vr, len(value), implicit) + value, value


def _seq_header(tag: int, implicit: bool) -> bytes:
    """An undefined-length sequence header, as the writer's ``_encode_sequence`` writes it."""
    return element_header(tag, "SQ", UNDEFINED, implicit)
