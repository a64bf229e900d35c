"""Structured reports (Comprehensive and Basic Text SR): a content tree with PHI several
levels deep, referencing the images of its study."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, ComprehensiveSRStorage

from .attributes import code_item, series_module, sop_ref
from .images import WrittenImage
from .planning import GenerationContext, Patient, Series, Study
from .writing import InstanceFacts, Template, emit


def _content(rel: str, value_type: str, concept: Dataset, **attrs: Any) -> Dataset:
    """One SR content item."""
    item = Dataset()
    item.RelationshipType = rel
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def _sr_findings(p: Patient, st: Study, images: Sequence[WrittenImage]) -> Dataset:
    """Findings container > TEXT > IMAGE: content three levels deep."""
    text = f"Reviewed with {p.name_lower} on {st.dmy}; no acute findings."
    finding = _content(
        "CONTAINS",
        "TEXT",
        code_item("121071", "DCM", "Finding"),
        TextValue=f"{text} {p.native}" if p.native else text,
    )
    finding.ContentSequence = [
        _content(
            "INFERRED FROM",
            "IMAGE",
            code_item("121112", "DCM", "Source of Measurement"),
            ReferencedSOPSequence=[sop_ref(w.sop_class, w.sop_uid)],
        )
        for w in images
    ]
    normal = _content(
        "CONTAINS",
        "CODE",
        code_item("121071", "DCM", "Finding"),
        ConceptCodeSequence=[code_item("17621005", "SCT", "Normal")],
    )
    return _content(
        "CONTAINS",
        "CONTAINER",
        code_item("121070", "DCM", "Findings"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=[finding, normal],
    )


def _sr_tree(p: Patient, st: Study, images: Sequence[WrittenImage], phi: set[str]) -> list[Dataset]:
    """Report content: observation context, findings, conclusions."""
    conclusion = _content(
        "CONTAINS",
        "TEXT",
        code_item("121077", "DCM", "Conclusion"),
        TextValue=f"Patient {p.name_upper} ({p.patient_id}) to follow up; call {p.phone_alt}.",
    )
    conclusions = _content(
        "CONTAINS",
        "CONTAINER",
        code_item("121076", "DCM", "Conclusions"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=[conclusion],
    )
    obs = "HAS OBS CONTEXT"
    context = [
        _content(obs, "PNAME", code_item("121008", "DCM", "Person Observer Name"),
                 PersonName=st.reading),
        _content(obs, "PNAME", code_item("121029", "DCM", "Subject Name"), PersonName=p.pn),
        _content(obs, "UIDREF", code_item("110180", "DCM", "Study Instance UID"), UID=st.uid),
        _content(obs, "DATE", code_item("111060", "DCM", "Study Date"), Date=st.da),
    ]  # fmt: skip
    phi.update({p.name_lower, st.dmy, p.name_upper, p.patient_id, p.phone_alt, st.reading})
    phi.update({p.pn, st.da} | ({p.native} if p.native else set()))
    return [*context, _sr_findings(p, st, images), conclusions]


def _evidence(st: Study, written: Sequence[WrittenImage]) -> Dataset:
    """Hierarchical SOP Instance Reference item for every image of the study."""
    item = Dataset()
    item.StudyInstanceUID = st.uid
    series: dict[str, list[WrittenImage]] = {}
    for w in written:
        series.setdefault(w.series_uid, []).append(w)
    items = []
    for series_uid, members in series.items():
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        s.ReferencedSOPSequence = [sop_ref(w.sop_class, w.sop_uid) for w in members]
        items.append(s)
    item.ReferencedSeriesSequence = items
    return item


def write_sr(
    ctx: GenerationContext,
    p: Patient,
    st: Study,
    se: Series,
    written: Sequence[WrittenImage],
    study: Template,
) -> None:
    """Build and write an SR document referencing the study's images."""
    sop_class = ComprehensiveSRStorage if ctx.sr_counter % 2 == 0 else BasicTextSRStorage
    ctx.sr_counter += 1
    phi: set[str] = set()
    ds = Dataset()
    series_module(ds, p, st, se, phi)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = se.sop_uids[0]
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.InstanceNumber = 1
    ds.ContentDate = st.da
    ds.ContentTime = st.time
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = st.reading
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = st.site.name
    observer.VerificationDateTime = f"{st.da}{st.time}"
    ds.VerifyingObserverSequence = [observer]
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = [_evidence(st, written)]
    firsts = list({w.series_uid: w for w in reversed(written)}.values())[::-1][:3]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code_item("18748-4", "LN", "Diagnostic imaging report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = _sr_tree(p, st, firsts, phi)
    tmpl = Template(ds, phi, study.charset, study)
    inst = InstanceFacts(
        sop_class=sop_class,
        sop_uid=se.sop_uids[0],
        raw=False,
        phi=tmpl.all_phi(),
        references=tuple(w.sop_uid for w in written),
        kept=tmpl.all_kept(),
    )
    emit(ctx, (p, st, se, se.names[0]), tmpl, Dataset(), inst)
