"""Image instances (CT, MR, US, CR, SC): the study, image-study and series element layers
and one file per instance; the study layer is shared with the structured reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from .attributes import (
    add_overlay,
    image_pixel_module,
    image_position,
    modality_module,
    patient_module,
    private_blocks,
    referenced_patient,
    request_item,
    safe_private_block,
    series_module,
    set_charset,
    sop_ref,
    study_module,
)
from .kept import KeptPlanter
from .pixels import UNCOMPRESSED, image_pixels, image_size, set_pixel_data
from .planning import GenerationContext, Patient, Series, Study, is_cine
from .writing import InstanceFacts, Template, charset_arg, emit

_SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "US": UltrasoundImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "SC": SecondaryCaptureImageStorage,
}
_RAW_FRACTION = 0.03


@dataclass
class WrittenImage:
    """A written instance, as later references (SR evidence) need it."""

    series_uid: str
    sop_class: str
    sop_uid: str


def study_layer(ctx: GenerationContext, p: Patient, st: Study) -> Template:
    """Patient and study attributes every instance of the study shares (SR included)."""
    phi: set[str] = set()
    ds = Dataset()
    set_charset(ds, p)
    ds.InstanceCreationDate = st.da
    ds.InstanceCreationTime = st.time
    patient_module(ds, p, st, phi)
    study_module(ds, p, st, phi)
    private_blocks(ds, p, phi)
    tmpl = Template(ds, phi, charset_arg(p))
    planter = KeptPlanter(ctx.plants, tmpl.kept, ctx.name_turns)
    planter.study(ds, p, st, force=st.index == 0)  # each patient's first study has one
    return tmpl


def image_study_layer(p: Patient, st: Study, base: Template) -> Template:
    """Study-level attributes only image IODs carry."""
    phi: set[str] = set()
    ds = Dataset()
    referenced_patient(ds, p)
    ds.RequestAttributesSequence = [request_item(p, st, phi)]
    ds.ProtocolName = f"{st.body} ROUTINE {p.family.upper()}"
    ds.ContentDate = ds.AcquisitionDate = st.da
    ds.ContentTime = ds.AcquisitionTime = st.time
    comments = f"Pt {p.name_title} scanned {st.dmy}, call {p.phone_alt}"
    ds.ImageComments = f"{comments} {p.native}" if p.native else comments
    phi.update({p.family.upper(), p.name_title, st.dmy, p.phone_alt})
    ds.BodyPartExamined = st.body
    return Template(ds, phi, base.charset, base)


def series_layer(
    ctx: GenerationContext, p: Patient, st: Study, se: Series, base: Template
) -> Template:
    """Series, equipment, pixel and modality attributes shared by a series' images."""
    phi: set[str] = set()
    ds = Dataset()
    series_module(ds, p, st, se, phi)
    rows, cols = image_size(se.kind, ctx.small)
    image_pixel_module(ds, se.kind, rows, cols)
    modality_module(ds, se)
    if se.kind == "CT":
        safe_private_block(ds, ctx.rng)
    tmpl = Template(ds, phi, base.charset, base)
    # Every place of a series kind is planted in its first series of each transfer syntax.
    first = ctx.next_of(ctx.kind_counter, f"kept-{se.kind}-{se.ts}") == 0
    KeptPlanter(ctx.plants, tmpl.kept, ctx.name_turns).series(ds, p, st, se, force=first)
    return tmpl


def _is_raw(ctx: GenerationContext, se: Series, frames: int) -> bool:
    """About 3% of native single-frame files are raw datasets; at least one per corpus."""
    if se.ts not in UNCOMPRESSED or frames > 1:
        return False
    ctx.raw_eligible += 1
    raw = ctx.rng.random() < _RAW_FRACTION or (ctx.raw_count == 0 and ctx.raw_eligible == 3)
    ctx.raw_count += raw
    return raw


def write_image(
    ctx: GenerationContext,
    p: Patient,
    st: Study,
    se: Series,
    series_data: tuple[Template, np.ndarray],
    k: int,
) -> WrittenImage:
    """Build the per-instance elements of one image and write it."""
    tmpl, base = series_data
    cine = is_cine(se, k)
    sop_class = UltrasoundMultiFrameImageStorage if cine else _SOP_CLASS[se.kind]
    dyn = Dataset()
    dyn.SOPClassUID = sop_class
    dyn.SOPInstanceUID = se.sop_uids[k]
    dyn.InstanceNumber = k + 1
    if se.kind in ("CT", "MR"):
        image_position(dyn, tmpl.ds, k)
    frames, burned, other = image_pixels(ctx, p, st, se, base, k)
    if cine:
        dyn.NumberOfFrames = int(frames.shape[0])
        dyn.FrameTime = "33.3"
        dyn.FrameIncrementPointer = 0x00181063
        dyn.CineRate = 30
    dyn.BurnedInAnnotation = "YES" if burned else "NO"
    references: tuple[str, ...] = ()
    if se.refs and k > 0:
        dyn.ReferencedImageSequence = [sop_ref(_SOP_CLASS[se.kind], se.sop_uids[0])]
        references = (se.sop_uids[0],)
    phi = tmpl.all_phi()
    if se.overlay and k % 2 == 0:
        add_overlay(dyn, p, tmpl.ds.Rows, tmpl.ds.Columns, phi)
    set_pixel_data(dyn, frames, se.ts)
    inst = InstanceFacts(
        sop_class=sop_class,
        sop_uid=se.sop_uids[k],
        raw=_is_raw(ctx, se, int(frames.shape[0])),
        phi=phi,
        burned_in=tuple(burned),
        burned_in_other=tuple(other),
        references=references,
        frames=int(frames.shape[0]),
        kept=tmpl.all_kept(),
    )
    emit(ctx, (p, st, se, se.names[k]), tmpl, dyn, inst)
    return WrittenImage(se.uid, sop_class, se.sop_uids[k])
