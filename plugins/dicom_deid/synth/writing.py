"""Encoding and writing files: each shared element encoded once per layer, spliced with the
per-instance elements behind a fixed file meta, and recorded in the answer key."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ImplicitVRLittleEndian

from .answer_key import FileRecord, KeptPlant
from .planning import UID_ROOT, GenerationContext, Patient, Series, Study

IMPLEMENTATION_CLASS_UID = UID_ROOT + "1"
"""Fixed so output does not depend on the installed pydicom version; not listed in ``uids``."""
IMPLEMENTATION_VERSION_NAME = "DEID_SYNTH_1"


def _meta_element(elem: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian File Meta element (group 0002)."""
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    tag = struct.pack("<HH", 0x0002, elem)
    if vr == "OB":
        return tag + b"OB\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr.encode("ascii") + struct.pack("<H", len(value)) + value


def _preamble_and_meta(sop_class: str, sop_uid: str, ts: str) -> bytes:
    """128-byte preamble, ``DICM`` and the File Meta Information group."""
    body = b"".join(
        (
            _meta_element(0x0001, "OB", b"\x00\x01"),
            _meta_element(0x0002, "UI", sop_class.encode("ascii")),
            _meta_element(0x0003, "UI", sop_uid.encode("ascii")),
            _meta_element(0x0010, "UI", ts.encode("ascii")),
            _meta_element(0x0012, "UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _meta_element(0x0013, "SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
        )
    )
    length = _meta_element(0x0000, "UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + length + body


def _encode_elements(ds: Dataset, implicit: bool, charset: str | list[str]) -> dict[int, bytes]:
    """Each top-level element encoded on its own (as pydicom's writer would), keyed by tag.

    Why: the series-level attributes are identical for every instance of a series, so they
    are encoded once and spliced with the few per-instance elements; this is what makes a
    5,000-file corpus take seconds instead of minutes.
    """
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    starts: list[tuple[int, int]] = []
    for elem in ds:
        starts.append((int(elem.tag), fp.tell()))
        write_data_element(fp, elem, charset)
    data = fp.getvalue()
    ends = [s for _, s in starts[1:]] + [len(data)]
    return {} if not starts else {tag: data[s:e] for (tag, s), e in zip(starts, ends, strict=True)}


@dataclass
class Template:
    """A layer of shared elements (study or series level), each encoded once and reused."""

    ds: Dataset
    phi: set[str]
    charset: str | list[str]
    base: Template | None = None
    """The layer below (the study layer under a series layer), or None."""
    kept: list[KeptPlant] = field(default_factory=list)
    """Identifiers planted in this layer where the Basic Profile keeps the attribute."""
    encoded: dict[bool, dict[int, bytes]] = field(default_factory=dict)
    """Cache for :meth:`parts`, keyed by implicit VR."""

    def parts(self, implicit: bool) -> dict[int, bytes]:
        """Encoded elements of this layer and the layers below, by tag; cached."""
        if implicit not in self.encoded:
            own = _encode_elements(self.ds, implicit, self.charset)
            below = self.base.parts(implicit) if self.base else {}
            self.encoded[implicit] = {**below, **own}
        return self.encoded[implicit]

    def all_phi(self) -> set[str]:
        """PHI planted in this layer and the layers below."""
        return self.phi | (self.base.all_phi() if self.base else set())

    def all_kept(self) -> tuple[KeptPlant, ...]:
        """Kept-place plants of the layers below and this one, in that order."""
        return (self.base.all_kept() if self.base else ()) + tuple(self.kept)


def charset_arg(p: Patient) -> str | list[str]:
    """SpecificCharacterSet as pydicom's element writer takes it."""
    if not p.charset:
        return "iso8859"
    return p.charset[0] if len(p.charset) == 1 else list(p.charset)


def store(ctx: GenerationContext, rel: str, data: bytes) -> None:
    """Write bytes under out/dicom (folders created once)."""
    path = ctx.root / rel
    if path.parent not in ctx.folders:
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx.folders.add(path.parent)
    path.write_bytes(data)


def _rel(p: Patient, st: Study, se: Series, name: str) -> str:
    """Relative path: opaque folder names only."""
    return f"{p.folder}/{st.folder}/{se.folder}/{name}"


@dataclass(frozen=True)
class InstanceFacts:
    """Per-instance facts that go into the answer key (``phi`` includes the layers')."""

    sop_class: str
    sop_uid: str
    raw: bool
    phi: set[str]
    burned_in: tuple[str, ...] = ()
    burned_in_other: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    frames: int = 1
    kept: tuple[KeptPlant, ...] = ()


def emit(
    ctx: GenerationContext,
    where: tuple[Patient, Study, Series, str],
    tmpl: Template,
    dyn: Dataset,
    inst: InstanceFacts,
) -> None:
    """Splice series and instance elements, write the file, record it in the key."""
    p, st, se, name = where
    implicit = inst.raw or se.ts == ImplicitVRLittleEndian
    merged = {**tmpl.parts(implicit), **_encode_elements(dyn, implicit, tmpl.charset)}
    body = b"".join(merged[tag] for tag in sorted(merged))
    head = b"" if inst.raw else _preamble_and_meta(inst.sop_class, inst.sop_uid, se.ts)
    rel = _rel(p, st, se, name)
    store(ctx, rel, head + body)
    ctx.records.append(
        FileRecord(
            path=rel,
            modality=str(tmpl.ds.Modality),
            sop_class_uid=inst.sop_class,
            transfer_syntax_uid=ImplicitVRLittleEndian if inst.raw else se.ts,
            study_uid=st.uid,
            series_uid=se.uid,
            sop_uid=inst.sop_uid,
            patient_id=p.patient_id,
            has_file_meta=not inst.raw,
            charset=p.charset_text,
            phi=tuple(sorted(inst.phi)),
            burned_in=inst.burned_in,
            references=inst.references,
            burned_in_other=inst.burned_in_other,
            number_of_frames=inst.frames,
            kept_planted=inst.kept,
        )
    )
