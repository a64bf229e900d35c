"""Identifiers planted where the PS3.15 Basic Profile keeps the attribute, as real sites
write them: a local procedure code whose meaning ends "for SMITH", a protocol code holding
the MRN without its zeros, a window preset named after the technologist, a vendor's free-text
private element on the safe-private list naming patient, birth date and hospital.

Every form repeats a value of the same file's header, written differently (case, order,
diacritics folded, kanji, no prefix or leading zeros, a written date), so only a search for
the instance's own identifying values can find it. Each is recorded as a
:class:`~.answer_key.KeptPlant`; none is added to the file's ``phi`` list.
"""

from __future__ import annotations

import random
import re
from datetime import date

from pydicom.dataset import Dataset

from .answer_key import KeptPlant
from .attributes import code_item
from .planning import Patient, Series, Study, fold

LOCAL_SCHEME = "99LOCAL"
"""Coding scheme of the site-local codes (a private designator, PS3.16 8.2)."""
_PROCEDURES = {
    "CT": "CT ABD PELVIS W/O", "MR": "MR BRAIN W/WO", "US": "US ABDOMEN COMPLETE",
    "CR": "XR CHEST 2 VIEWS",
}  # fmt: skip
_PRESETS = {"CT": "ABDOMEN", "MR": "BRAIN"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ID_CORE = re.compile(r"[A-Za-z\-]*0*(\d+)")
_STUDY_FRACTION = 0.6
_PROTOCOL_FRACTION = 0.5
_PRESET_FRACTION = 0.4
_PRIVATE_FRACTION = 0.6
NQ_CREATOR = "NQHeader"
"""A private creator of Table E.3.10-1: its (0099,xx05) Return Message (LT) is safe."""

# Paths of the places (see KeptPlant.path).
_PROCEDURE_MEANING = "00081032/0/00080104"
_PROTOCOL_MEANING = "00400260/0/00080104"
_PRESET = "00281055"


def name_forms(p: Patient) -> list[tuple[str, str]]:
    """(kind, text) of the patient's name as other systems write it, the forms particular to
    this name first: kanji, diacritics folded (Latin names only), then family name in
    capitals and "Given FAMILY"."""
    forms = []
    if p.native:
        forms.append(("name-native", p.native.removesuffix("様")))
    plain = f"{p.family} {p.given}"
    folded = fold(plain)
    if folded != plain and len(folded.split()) == len(plain.split()):
        forms.append(("name-folded", folded))
    forms += [("name-upper", p.family.upper()), ("name-reordered", f"{p.given} {p.family.upper()}")]
    return forms


def id_bare(patient_id: str) -> str:
    """The ID without its letter prefix and leading zeros ("MRN0012345" -> "12345"); ""
    when fewer than five digits would remain (too short to be specific)."""
    m = _ID_CORE.fullmatch(patient_id)
    return m[1] if m and len(m[1]) >= 5 else ""


def written_date(rng: random.Random, d: date) -> str:
    """A date as typed into free text: 03/02/1970 (either order) or 3 Feb 1970."""
    forms = (
        f"{d.day:02d}/{d.month:02d}/{d.year}",
        f"{d.month:02d}/{d.day:02d}/{d.year}",
        f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    )
    return rng.choice(forms)


class KeptPlanter:
    """Writes the kept-place plants of one layer and records them.

    ``turns`` counts the name plants per patient, shared across layers: each patient's
    names take the forms in turn, its own first (so a corpus with a kanji or an accented
    name always plants that form).
    """

    def __init__(self, rng: random.Random, kept: list[KeptPlant], turns: dict[str, int]) -> None:
        self.rng = rng
        self.kept = kept
        self.turns = turns

    def _name(self, p: Patient) -> tuple[str, str]:
        forms = name_forms(p)
        turn = self.turns.get(p.patient_id, 0)
        self.turns[p.patient_id] = turn + 1
        return forms[turn % len(forms)]

    def _record(self, path: str, vr: str, form: tuple[str, str], source: str, place: str,
                creator: str = "") -> str:
        kind, value = form
        self.kept.append(KeptPlant(path, vr, value, kind, source, place, creator))
        return value

    def study(self, ds: Dataset, p: Patient, st: Study, force: bool) -> None:
        """ProcedureCodeSequence (General Study, kept): a local code naming the patient or
        the institution, in most studies (every file of the study, SR included); the
        patient's own name forms come first (see :meth:`_name`)."""
        if not (force or self.rng.random() < _STUDY_FRACTION):
            return
        if self.turns.get(p.patient_id, 0) and self.rng.random() < 0.25:
            form, source = ("institution", st.site.name.upper()), "InstitutionName"
        else:
            form, source = self._name(p), "PatientName"
        value = self._record(_PROCEDURE_MEANING, "LO", form, source, "local-code")
        code = f"L{st.modality}{self.rng.randrange(1000, 10000)}"
        ds.ProcedureCodeSequence = [
            code_item(code, LOCAL_SCHEME, f"{_PROCEDURES[st.modality]} for {value}")
        ]

    def series(self, ds: Dataset, p: Patient, st: Study, se: Series, force: bool) -> None:
        """Image series: a local protocol code (General Series), a window preset named
        after the operator (CT, MR), a NeuroQuant return message (MR, safe private)."""
        if force or self.rng.random() < _PROTOCOL_FRACTION:
            self._protocol(ds, p, se)
        if se.kind in _PRESETS and (force or self.rng.random() < _PRESET_FRACTION):
            family = se.operator.split("^")[0].upper()
            value = self._record(_PRESET, "LO", ("staff-name", family), "OperatorsName",
                                 "kept-description")
            if "WindowCenter" not in ds:  # the explanation comes with a window (VOI LUT)
                ds.WindowCenter, ds.WindowWidth = "600", "1200"
            ds.WindowCenterWidthExplanation = f"{value} {_PRESETS[se.kind]}"
        if se.kind == "MR" and (force or self.rng.random() < _PRIVATE_FRACTION):
            self._neuroquant(ds, p, st)

    def _protocol(self, ds: Dataset, p: Patient, se: Series) -> None:
        bare = id_bare(p.patient_id)
        if bare and self.rng.random() < 0.5:
            value = self._record(_PROTOCOL_MEANING, "LO", ("id-bare", bare), "PatientID",
                                 "local-code")
            meaning = f"{se.label.upper()} #{value}"
        else:
            form = ("birth-date-written", written_date(self.rng, p.birth))
            value = self._record(_PROTOCOL_MEANING, "LO", form, "PatientBirthDate", "local-code")
            meaning = f"{se.label.upper()} DOB {value}"
        code = f"P{se.kind}{self.rng.randrange(1000, 10000)}"
        ds.PerformedProtocolCodeSequence = [code_item(code, LOCAL_SCHEME, meaning)]

    def _neuroquant(self, ds: Dataset, p: Patient, st: Study) -> None:
        block = ds.private_block(0x0099, NQ_CREATOR, create=True)
        tag = block.get_tag(0x05)
        path = f"{tag:08X}"
        name = self._record(path, "LT", self._name(p), "PatientName",
                            "safe-private", NQ_CREATOR)
        form = ("birth-date-written", written_date(self.rng, p.birth))
        born = self._record(path, "LT", form, "PatientBirthDate", "safe-private", NQ_CREATOR)
        site = self._record(path, "LT", ("institution", st.site.name), "InstitutionName",
                            "safe-private", NQ_CREATOR)
        block.add_new(0x05, "LT", f"Volumetry report for {name} (DOB {born}) sent to {site}")
