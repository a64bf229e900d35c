"""The planning model: patients, sites, studies and series drawn from the seeded random
sources before anything is written, and the mutable state of one generation run."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import ImageFont
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from .answer_key import FileRecord
from .vocabulary import (
    ASCII_FAMILY,
    ASCII_GIVEN,
    BODY_PARTS,
    CHARSET_CYCLE,
    ETHNIC_GROUPS,
    INSTITUTIONS,
    JAPANESE_NAMES,
    LATIN1_FAMILY,
    LATIN1_GIVEN,
    SERIES_LABELS,
    STAFF,
    STREETS,
    TOWNS,
    UTF8_NAMES,
)

UID_ROOT = "1.2.826.0.1.3680043.10.543."
"""Root of every generated UID (never ``2.25.``, which the de-identifier uses for new UIDs)."""

# Every date is an offset from these, so the output never depends on today's date.
_BASE_STUDY_DATE = date(2022, 1, 3)
_BASE_BIRTH_DATE = date(1935, 1, 1)
_MINOR_BORN_FROM = 2006
"""Patients born this year or later are minors at every study date (2022-2023)."""

# Transfer syntaxes of a series kind, weighted (the first series of a kind try each in turn).
_TS_OPTIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "CT": ((ExplicitVRLittleEndian, 0.65), (ImplicitVRLittleEndian, 0.15), (RLELossless, 0.2)),
    "MR": ((ExplicitVRLittleEndian, 0.6), (ImplicitVRLittleEndian, 0.2), (RLELossless, 0.2)),
    "US": ((ExplicitVRLittleEndian, 0.5), (JPEGBaseline8Bit, 0.5)),
    "CR": ((ExplicitVRLittleEndian, 0.6), (ImplicitVRLittleEndian, 0.3), (RLELossless, 0.1)),
    "SC": ((ExplicitVRLittleEndian, 0.8), (ImplicitVRLittleEndian, 0.2)),
    "SR": ((ExplicitVRLittleEndian, 0.7), (ImplicitVRLittleEndian, 0.3)),
}
# Primary modality of a study, weighted (the first four studies take one each).
_STUDY_MODALITIES = (("CT", 0.35), ("MR", 0.25), ("US", 0.2), ("CR", 0.2))
# Kinds a study may add after its primary series (SC and SR at most once).
_EXTRA_SERIES = {
    "CT": ("CT", "SC", "SR"),
    "MR": ("MR", "SR"),
    "US": ("US", "SR"),
    "CR": ("CR", "SR"),
}
# The first study of each modality gets these series, so small corpora cover every IOD.
_FORCED_SERIES = {"CT": ("CT", "SC", "SR"), "MR": ("MR", "SR"), "US": ("US", "US"), "CR": ("CR",)}


@dataclass(frozen=True)
class Institution:
    """A site: its name, address and staff appear in every study performed there."""

    name: str
    address: str
    code: str
    staff: tuple[str, ...]
    serials: dict[str, str]


@dataclass(frozen=True)
class Patient:
    """One synthetic patient; every string here is PHI except sex/size/weight/ethnic."""

    index: int
    charset: tuple[str, ...]
    pn: str
    family: str
    given: str
    roman: str
    native: str
    patient_id: str
    other_id: str
    birth: date
    sex: str
    weight: str
    size: str
    address: str
    phone: str
    phone_alt: str
    ethnic: str
    mother: str
    uid: str
    responsible: str = ""
    """ResponsiblePerson (PN), "" when the patient has none recorded."""
    responsible_role: str = ""
    """ResponsiblePersonRole (a defined term), set with :attr:`responsible`."""
    trial_subject: str = ""
    """ClinicalTrialSubjectID when the patient is enrolled in a trial, else ""."""

    @property
    def folder(self) -> str:
        """Opaque folder name (never PHI)."""
        return f"p{self.index:04d}"

    @property
    def charset_text(self) -> str:
        """SpecificCharacterSet as written, backslash-joined."""
        return "\\".join(self.charset)

    @property
    def name_lower(self) -> str:
        """ "given family" in lower case, as typed into a description."""
        return f"{self.given} {self.family}".lower()

    @property
    def name_upper(self) -> str:
        """ "FAMILY, GIVEN", as on a worklist."""
        return f"{self.family}, {self.given}".upper()

    @property
    def name_title(self) -> str:
        """ "Given Family", as in a sentence."""
        return f"{self.given} {self.family}"


@dataclass(frozen=True)
class Study:
    """One study: its identifiers, date and the people and place involved."""

    index: int
    uid: str
    when: date
    time: str
    accession: str
    study_id: str
    modality: str
    body: str
    site: Institution
    referring: str
    requesting: str
    reading: str
    procedure_id: str
    step_id: str
    performed_step_id: str
    prior_uid: str = ""
    """Study Instance UID of an earlier study this one references (ReferencedStudySequence),
    "" for none."""

    @property
    def folder(self) -> str:
        """Opaque folder name (never PHI)."""
        return f"st{self.index + 1:02d}"

    @property
    def da(self) -> str:
        """Study date as DA (YYYYMMDD)."""
        return format_da(self.when)

    @property
    def dmy(self) -> str:
        """Study date as typed in free text (DD/MM/YYYY)."""
        return f"{self.when.day:02d}/{self.when.month:02d}/{self.when.year}"


@dataclass(frozen=True)
class Series:
    """One series: kind (CT, MR, US, CR, SC, SR), transfer syntax and pre-allocated UIDs."""

    index: int
    kind: str
    uid: str
    ts: str
    sop_uids: tuple[str, ...]
    names: tuple[str, ...]
    for_uid: str
    label: str
    overlay: bool
    refs: bool
    monochrome1: bool
    performing: str
    operator: str

    @property
    def folder(self) -> str:
        """Opaque folder name (never PHI)."""
        return f"se{self.index + 1:02d}"


@dataclass
class GenerationContext:
    """Mutable generation state: random sources, counters and collected records."""

    rng: random.Random
    nprng: np.random.Generator
    plants: random.Random
    """The kept-place, validity and duplicate plants' own stream: drawing from it leaves
    ``rng``'s sequence, hence the corpus' patients, studies, series and files, unchanged."""
    root: Path
    """``out/dicom``: file paths in the answer key are relative to it."""
    small: bool
    instances_per_series: int
    burned_in_fraction: float
    uid_stem: str
    """Seeded UID component after :data:`UID_ROOT`, so corpora of different seeds differ."""
    sites: tuple[Institution, ...] = ()
    uid_counter: int = 0
    extra_uid_counter: int = 0
    file_counter: int = 0
    study_counter: int = 0
    sr_counter: int = 0
    raw_count: int = 0
    """Raw datasets (no preamble, no file meta) written so far."""
    raw_eligible: int = 0
    """Files that could have been written raw so far (native, single frame)."""
    uids: set[str] = field(default_factory=set)
    records: list[FileRecord] = field(default_factory=list)
    kind_counter: dict[str, int] = field(default_factory=dict)
    """How many studies, series and transfer syntax picks of each kind so far."""
    burn_counter: dict[str, int] = field(default_factory=dict)
    """How many images of each kind were considered for burned-in text."""
    used: set[str] = field(default_factory=set)
    """Identifiers :meth:`unique` has handed out."""
    retained: dict[str, str] = field(default_factory=dict)
    """PHI value -> the PS3.15 retain option that keeps it (:attr:`AnswerKey.retained_by`)."""
    folders: set[Path] = field(default_factory=set)
    """Folders already created, so each is made once."""
    name_turns: dict[str, int] = field(default_factory=dict)
    """Kept-place name plants so far, per patient (which name form comes next)."""
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = field(default_factory=dict)

    def uid(self) -> str:
        """Next UID under :data:`UID_ROOT`; short components never hold an 8-digit date."""
        self.uid_counter += 1
        value = f"{UID_ROOT}{self.uid_stem}.{self.uid_counter}"
        self.uids.add(value)
        return value

    def extra_uid(self) -> str:
        """Next UID of the plants (an outside study referenced, say): under :data:`UID_ROOT`,
        apart from :meth:`uid`'s, whose sequence it leaves unchanged."""
        self.extra_uid_counter += 1
        value = f"{UID_ROOT}{self.uid_stem}.0.{self.extra_uid_counter}"
        self.uids.add(value)
        return value

    def unique(self, prefix: str, digits: int, rng: random.Random | None = None) -> str:
        """A fresh identifier like ``MRN0123456``, distinct across the corpus (drawn from
        ``rng``, by default the main stream)."""
        rng = self.rng if rng is None else rng
        while True:
            value = f"{prefix}{rng.randrange(10**digits):0{digits}d}"
            if value not in self.used:
                self.used.add(value)
                return value

    def file_name(self, dcm_ext: bool) -> str:
        """Opaque file name: ``IM000123`` or ``000123.dcm``."""
        self.file_counter += 1
        return f"{self.file_counter:06d}.dcm" if dcm_ext else f"IM{self.file_counter:06d}"

    def font(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        """Pillow's bundled font (no download), cached per size."""
        if size not in self.fonts:
            self.fonts[size] = ImageFont.load_default(size=size)
        return self.fonts[size]

    def next_of(self, counter: dict[str, int], kind: str) -> int:
        """Post-increment a per-kind counter."""
        value = counter.get(kind, 0)
        counter[kind] = value + 1
        return value


def format_da(d: date) -> str:
    """DICOM DA string."""
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _weighted(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    """Pick a value by weight."""
    values = [v for v, _ in options]
    weights = [w for _, w in options]
    return rng.choices(values, weights=weights, k=1)[0]


_FOLD_EXTRA = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "Å": "A", "æ": "ae", "Æ": "AE",
                             "ł": "l", "Ł": "L", "đ": "d", "Đ": "D"})


def fold(text: str) -> str:
    """ASCII transliteration of Latin text, as burned-in pixels (the font has no CJK) and
    systems without diacritics write a name; non-Latin letters are dropped."""
    text = text.translate(_FOLD_EXTRA)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def make_sites(rng: random.Random) -> tuple[Institution, ...]:
    """Three institutions, each with staff and one device serial per modality."""
    staff = list(STAFF)
    rng.shuffle(staff)
    sites = []
    for i, (name, address, code) in enumerate(INSTITUTIONS):
        serials = {m: f"SN{rng.randrange(10**7):07d}" for m in ("CT", "MR", "US", "CR", "OT", "SR")}
        sites.append(Institution(name, address, code, tuple(staff[4 * i : 4 * i + 4]), serials))
    return tuple(sites)


def _make_name(rng: random.Random, charset: tuple[str, ...]) -> tuple[str, str, str, str, str]:
    """(PN as written, family, given, ASCII "FAMILY, GIVEN", native free-text form)."""
    term = charset[-1] if charset else ""
    if term == "ISO 2022 IR 87":
        rf, rg, kf, kg, hf, hg = rng.choice(JAPANESE_NAMES)
        return f"{rf}^{rg}={kf}^{kg}={hf}^{hg}", rf, rg, f"{rf}, {rg}".upper(), f"{kf}{kg}様"
    if term == "ISO_IR 192":
        fam, giv, rf, rg = rng.choice(UTF8_NAMES)
        return f"{fam}^{giv}", fam, giv, f"{rf}, {rg}".upper(), ""
    if term == "ISO_IR 100":
        fam, giv = rng.choice(LATIN1_FAMILY), rng.choice(LATIN1_GIVEN)
        return f"{fam}^{giv}", fam, giv, fold(f"{fam}, {giv}").upper(), ""
    fam, giv, mid = rng.choice(ASCII_FAMILY), rng.choice(ASCII_GIVEN), rng.choice(ASCII_GIVEN)
    return f"{fam}^{giv}^{mid}", fam, giv, f"{fam}, {giv}".upper(), ""


def _responsible(rng: random.Random, family: str, birth: date, index: int) -> tuple[str, str]:
    """(ResponsiblePerson, ResponsiblePersonRole): a parent for every minor, someone for a
    few adults (patient 1 always, so small corpora hold one); ("", "") for the others."""
    minor = birth.year >= _MINOR_BORN_FROM
    if not (minor or index == 1 or rng.random() < 0.15):
        return "", ""
    role = "PARENT" if minor else rng.choice(("SPOUSE", "CHILD", "GUARDIAN"))
    return f"{family}^{rng.choice(ASCII_GIVEN)}", role


def make_patient(ctx: GenerationContext, index: int) -> Patient:
    """Draw one patient's demographics from the seeded generator."""
    rng = ctx.rng
    charset = CHARSET_CYCLE[index % len(CHARSET_CYCLE)]
    pn, family, given, roman, native = _make_name(rng, charset)
    area, line = rng.randrange(200, 990), rng.randrange(10000)
    address = (
        f"{rng.randrange(2, 240)} {rng.choice(STREETS)}, {rng.choice(TOWNS)} "
        f"{rng.choice('ABCDEFGH')}{rng.choice('KLMNPRST')}{rng.randrange(1, 10)} "
        f"{rng.randrange(1, 10)}{rng.choice('QRTUVWX')}{rng.choice('ABDEFGHJ')}"
    )
    patient_id, other_id = ctx.unique("MRN", 7), ctx.unique("HX-", 6)
    birth = _BASE_BIRTH_DATE + timedelta(days=rng.randrange(80 * 365))
    responsible, role = _responsible(ctx.plants, family, birth, index)
    in_trial = index == 2 or ctx.plants.random() < 0.25
    return Patient(
        index=index,
        charset=charset,
        pn=pn,
        family=family,
        given=given,
        roman=roman,
        native=native,
        patient_id=patient_id,
        other_id=other_id,
        birth=birth,
        sex=rng.choice("MF"),
        weight=f"{rng.uniform(45, 110):.1f}",
        size=f"{rng.uniform(1.5, 1.95):.2f}",
        address=address,
        phone=f"(555) {area:03d}-{line:04d}",
        phone_alt=f"555.{area:03d}.{line:04d}",
        ethnic=rng.choice(ETHNIC_GROUPS),
        mother=f"{rng.choice(ASCII_FAMILY)}^{rng.choice(ASCII_GIVEN)}",
        uid=ctx.uid(),
        responsible=responsible,
        responsible_role=role,
        trial_subject=ctx.unique("SUBJ-", 4, ctx.plants) if in_trial else "",
    )


def plan_study(ctx: GenerationContext, index: int, first_uid: str = "") -> Study:
    """Pick modality, site, people and identifiers for one study.

    A later study references the patient's first (``first_uid``); a first study sometimes
    references a prior from elsewhere (a UID of no corpus study).
    """
    rng = ctx.rng
    g = ctx.study_counter
    ctx.study_counter += 1
    modality = ("CT", "MR", "US", "CR")[g] if g < 4 else _weighted(rng, _STUDY_MODALITIES)
    # The first studies take the sites in turn: the first US study (burned-in banner) is
    # at the site whose name is too long for the banner. (Drawn all the same, so the rest
    # of the sequence is as it was before the rotation.)
    drawn = rng.choice(ctx.sites)
    site = ctx.sites[g % len(ctx.sites)] if g < 4 else drawn
    people = rng.sample(site.staff, 3)
    return Study(
        index=index,
        uid=ctx.uid(),
        when=_BASE_STUDY_DATE + timedelta(days=rng.randrange(730)),
        time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
        accession=ctx.unique("ACC", 7),
        study_id=ctx.unique("ST", 6),
        modality=modality,
        body=rng.choice(BODY_PARTS[modality]),
        site=site,
        referring=people[0],
        requesting=people[1],
        reading=people[2],
        procedure_id=ctx.unique("RP", 7),
        step_id=ctx.unique("SPS", 6),
        performed_step_id=ctx.unique("PPS", 6),
        prior_uid=first_uid or (ctx.extra_uid() if ctx.plants.random() < 0.3 else ""),
    )


def series_kinds(ctx: GenerationContext, study: Study) -> list[str]:
    """Series kinds of a study: the primary modality first, SR (if any) last."""
    first_of_kind = ctx.next_of(ctx.kind_counter, "study-" + study.modality) == 0
    if first_of_kind:
        return list(_FORCED_SERIES[study.modality])
    kinds = [study.modality]
    extras = list(_EXTRA_SERIES[study.modality])
    for _ in range(ctx.rng.randrange(3)):
        pick = ctx.rng.choice(extras)
        if pick in ("SC", "SR"):
            extras.remove(pick)
        kinds.append(pick)
    return sorted(kinds, key=lambda k: k == "SR")


def _pick_ts(ctx: GenerationContext, kind: str) -> str:
    """Transfer syntax for a series; the first series of a kind cycle through all options."""
    options = _TS_OPTIONS[kind]
    n = ctx.next_of(ctx.kind_counter, "ts-" + kind)
    return options[n][0] if n < len(options) else _weighted(ctx.rng, options)


def _instance_count(ctx: GenerationContext, kind: str) -> int:
    """How many instances a series of this kind gets."""
    n = ctx.instances_per_series
    if kind in ("SC", "SR"):
        return 1
    if kind == "CR":
        return min(n, ctx.rng.randint(1, 2))
    if kind == "US":
        return max(2, n // 2)
    return n


def plan_series(ctx: GenerationContext, study: Study, index: int, kind: str) -> Series:
    """Allocate UIDs, file names and per-series options."""
    rng = ctx.rng
    first = ctx.next_of(ctx.kind_counter, "series-" + kind) == 0
    count = _instance_count(ctx, kind)
    dcm_ext = rng.random() < 0.5
    return Series(
        index=index,
        kind=kind,
        uid=ctx.uid(),
        ts=_pick_ts(ctx, kind),
        sop_uids=tuple(ctx.uid() for _ in range(count)),
        names=tuple(ctx.file_name(dcm_ext) for _ in range(count)),
        for_uid=ctx.uid() if kind in ("CT", "MR") else "",
        label=rng.choice(SERIES_LABELS[kind]),
        overlay=kind in ("CT", "MR") and (first or rng.random() < 0.35),
        refs=kind in ("CT", "MR") and (first or rng.random() < 0.5),
        monochrome1=kind == "CR" and rng.random() < 0.5,
        performing=rng.choice(study.site.staff),
        operator=rng.choice(study.site.staff),
    )


def is_cine(se: Series, k: int) -> bool:
    """Every third US instance (from the second) is a multi-frame cine loop."""
    return se.kind == "US" and k % 3 == 1
