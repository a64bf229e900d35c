"""Deterministic synthetic DICOM corpus with planted PHI and an answer key.

Why: a de-identifier can only be tested against data whose every identifying value is
known. :func:`generate` writes a realistic multi-patient tree (CT, MR, US, CR, SR and
Secondary Capture dose screens, several transfer syntaxes and character sets, a few broken
files) under ``out/dicom/`` and the answer key to ``out/answer_key.json``, outside the tree.

Every PHI string is planted only in attributes that the PS3.15 Basic Profile removes or
replaces (or in private tags), so after a correct de-identification a byte search for
:func:`planted_byte_patterns` finds nothing. Pixel text drawn for OCR tests is listed
separately (``burned_in``): a byte search cannot see it.

Same arguments give byte-identical output: all randomness comes from ``random.Random(seed)``
and a seeded numpy ``Generator``, and all dates derive from fixed base dates.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from pydicom.valuerep import PersonName

__all__ = [
    "AnswerKey",
    "BadInput",
    "FileRecord",
    "generate",
    "load_answer_key",
    "main_args",
    "planted_byte_patterns",
    "value_patterns",
]

UID_ROOT = "1.2.826.0.1.3680043.10.543."
"""Root of every generated UID (never ``2.25.``, which the de-identifier uses for new UIDs)."""
IMPLEMENTATION_CLASS_UID = UID_ROOT + "1"
"""Fixed so output does not depend on the installed pydicom version; not listed in ``uids``."""
IMPLEMENTATION_VERSION_NAME = "DEID_SYNTH_1"
ANSWER_KEY_NAME = "answer_key.json"
DICOM_DIR_NAME = "dicom"
BAD_REASONS = ("zero-byte", "truncated", "not-dicom", "bad-charset")

_BASE_STUDY_DATE = date(2022, 1, 3)
_BASE_BIRTH_DATE = date(1935, 1, 1)
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# --------------------------------------------------------------------------- answer key


@dataclass(frozen=True)
class FileRecord:
    """One good DICOM file as written, with what was planted in it."""

    path: str
    """Relative to ``out/dicom``, POSIX separators."""
    modality: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    has_file_meta: bool
    """False for raw datasets written without preamble and file meta (implicit VR LE)."""
    charset: str
    """SpecificCharacterSet as written (values joined by backslash), "" if absent."""
    phi: tuple[str, ...]
    """Planted PHI strings present in this file's bytes (in ``charset``)."""
    burned_in: tuple[str, ...]
    """Identifying strings drawn into the pixels, () if none."""
    references: tuple[str, ...]
    """SOP Instance UIDs of corpus instances this instance references."""
    burned_in_other: tuple[str, ...] = ()
    """Non-identifying text drawn into the pixels (dose tables), to test selective redaction."""
    number_of_frames: int = 1


@dataclass(frozen=True)
class BadInput:
    """A file under ``out/dicom`` that a reader must reject or quarantine."""

    path: str
    reason: str
    """One of :data:`BAD_REASONS`."""


@dataclass(frozen=True)
class AnswerKey:
    """Everything planted by :func:`generate`; serialised to ``out/answer_key.json``."""

    seed: int
    patients: int
    files: tuple[FileRecord, ...]
    bad_inputs: tuple[BadInput, ...]
    phi: tuple[str, ...]
    """Sorted union of every file's ``phi``."""
    uids: tuple[str, ...]
    """Sorted original non-registry UIDs written (study, series, SOP, frame of reference...)."""
    instances_per_series: int = 8
    small: bool = False
    burned_in_fraction: float = 0.25
    retained_by: dict[str, str] = field(default_factory=dict)
    """PHI values a PS3.15 option legitimately keeps, mapped to that option's column in
    basic_profile.csv (``rtn_long_full_dates``, ``rtn_dev_id``, ``rtn_inst_id``); exclude
    them from a leak search when that option is on."""

    def to_json(self) -> str:
        """Stable JSON text (sorted keys, indent 1) so the key is byte-identical per seed."""
        return json.dumps(asdict(self), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerKey:
        """Inverse of ``asdict``: lists back to tuples, nested records back to dataclasses."""
        files = tuple(
            FileRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in f.items()})
            for f in data["files"]
        )
        bad = tuple(BadInput(**b) for b in data["bad_inputs"])
        rest = {k: v for k, v in data.items() if k not in ("files", "bad_inputs")}
        rest["phi"] = tuple(rest["phi"])
        rest["uids"] = tuple(rest["uids"])
        return cls(files=files, bad_inputs=bad, **rest)


def load_answer_key(out: Path) -> AnswerKey:
    """Read ``out/answer_key.json`` written by :func:`generate`."""
    text = (Path(out) / ANSWER_KEY_NAME).read_text(encoding="utf-8")
    return AnswerKey.from_dict(json.loads(text))


def value_patterns(value: str, charset: str) -> set[bytes]:
    """Byte forms ``value`` takes in a file whose SpecificCharacterSet is ``charset``.

    Plain text and person-name encodings differ under ISO 2022 (escape sequences reset at
    ``^`` and ``=``), so both are returned for values that look like person names.
    """
    if value.isascii():
        return {value.encode("ascii")}
    terms = charset.split("\\") if charset else [""]
    encodings = convert_encodings(terms)
    patterns = {encode_string(value, encodings)}
    if "^" in value or "=" in value:
        patterns.add(PersonName(value).encode(encodings))
    # pydicom may open with a redundant ESC ( B; inside a longer value it is not repeated.
    return {p.removeprefix(b"\x1b(B") for p in patterns}


def planted_byte_patterns(key: AnswerKey) -> set[bytes]:
    """Every planted PHI value in every encoding it was written in (search outputs for these)."""
    patterns: set[bytes] = set()
    for record in key.files:
        for value in record.phi:
            patterns |= value_patterns(value, record.charset)
    return patterns


# --------------------------------------------------------------------------- vocabularies

_ASCII_FAMILY = (
    "Thornbury", "Whitcombe", "Ashdown", "Pemberton", "Kingsolver", "Halloran",
    "Featherstone", "Castellane", "Underhill", "Blackwood", "Marchetti", "Oyelaran",
    "Fairweather", "Lindqvist", "Dunmore", "Ellsworth", "Quennell", "Radcliffe",
    "Stanhope", "Treloar", "Vanstone", "Westerby", "Yardley", "Brightwell",
)  # fmt: skip
_ASCII_GIVEN = (
    "Jonathan", "Margaret", "Eleanor", "Theodore", "Beatrice", "Cornelius", "Rosalind",
    "Frederick", "Henrietta", "Lucinda", "Bartholomew", "Genevieve", "Ambrose",
    "Clementine", "Desmond", "Winifred", "Percival", "Josephine", "Augustin", "Imogen",
)  # fmt: skip
_LATIN1_FAMILY = (
    "Großkopf", "Lefèvre", "Sørensen", "Ibáñez", "Brönnimann", "Magalhães", "Åkerlund",
    "Nyström", "Castaño", "Dürrenmatt", "Løvengård", "Boëtie",
)  # fmt: skip
_LATIN1_GIVEN = (
    "Jürgen", "Amélie", "Käthe", "Inês", "Björn", "Zoé", "Raúl", "Frédéric", "Søren",
    "Íñigo", "Mónica", "Loïc",
)  # fmt: skip
_UTF8_NAMES = (  # (family, given, roman family, roman given)
    ("Dvořák", "Tomáš", "Dvorak", "Tomas"),
    ("Nowakowska", "Łucja", "Nowakowska", "Lucja"),
    ("Kovačević", "Dragana", "Kovacevic", "Dragana"),
    ("Παπαδάκης", "Ελένη", "Papadakis", "Eleni"),
    ("Петрова", "Анастасия", "Petrova", "Anastasia"),
    ("Şahinoğlu", "Çağla", "Sahinoglu", "Cagla"),
    ("Wiśniewski", "Paweł", "Wisniewski", "Pawel"),
    ("Nguyễn", "Thị Hương", "Nguyen", "Thi Huong"),
)
# (romaji family, romaji given, kanji family, kanji given, kana family, kana given). No
# character whose JIS X 0208 code contains 0x5C: readers would split the value at that "\\".
_JAPANESE_NAMES = (
    ("Takeda", "Shinji", "武田", "信二", "たけだ", "しんじ"),
    ("Morikawa", "Yumiko", "森川", "由美子", "もりかわ", "ゆみこ"),
    ("Hoshino", "Kenta", "星野", "健太", "ほしの", "けんた"),
    ("Ishikawa", "Naoko", "石川", "直子", "いしかわ", "なおこ"),
    ("Fujita", "Daisuke", "藤田", "大輔", "ふじた", "だいすけ"),
    ("Nakagawa", "Emiko", "中川", "恵美子", "なかがわ", "えみこ"),
)
_STAFF = (
    "Okafor^Bernadette", "Villiers^Rupert", "Castellanos^Mireille", "Abernethy^Douglas",
    "Lindgren^Astrid", "Penhaligon^Morwenna", "Fitzgerald^Declan", "Rasmussen^Ingrid",
    "Achterberg^Wouter", "Szabados^Katalin", "Montgomery^Felix", "Delacroix^Odile",
)  # fmt: skip
_INSTITUTIONS = (  # (name, address, code)
    ("Westbrook Regional Hospital", "14 Quarry Lane, Westbrook WB4 7QT", "WBR"),
    ("St. Aldric Medical Centre", "220 Fenwick Road, Harlow Cross HC2 9LD", "SAM"),
    ("Kessington University Clinic", "7 Observatory Way, Kessington KS1 3RA", "KUC"),
)
_STREETS = ("Linden Crescent", "Mortlake Street", "Saffron Row", "Heron Close", "Gallows Hill")
_TOWNS = ("Westbrook", "Harlow Cross", "Kessington", "Bramford Vale", "Ottery Mead")
_ETHNIC = ("White", "Asian", "Black", "Hispanic", "Mixed")

# Charset per patient, cycled so that a handful of patients covers every repertoire.
# Patient 0 is Latin-1 so the bad-charset input always has a non-ASCII source.
_CHARSET_CYCLE: tuple[tuple[str, ...], ...] = (
    ("ISO_IR 100",), (), ("", "ISO 2022 IR 87"), ("ISO_IR 192",), (), ("ISO_IR 6",),
    (), ("ISO_IR 100",), (), ("", "ISO 2022 IR 87"), (), ("ISO_IR 192",),
)  # fmt: skip

_BODY = {
    "CT": ("CHEST", "ABDOMEN", "HEAD"),
    "MR": ("BRAIN", "LSPINE", "ABDOMEN"),
    "US": ("ABDOMEN", "PELVIS"),
    "CR": ("CHEST", "ABDOMEN", "SKULL"),
}
_SERIES_LABEL = {
    "CT": ("AX 5mm", "AX 1.25mm", "COR MPR"),
    "MR": ("AX T2 FSE", "SAG T1", "AX FLAIR"),
    "US": ("Abd survey", "Doppler", "Cine loops"),
    "CR": ("PA view", "AP view"),
    "SC": ("Dose Report",),
    "SR": ("Radiology report",),
}
_TS_OPTIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "CT": ((ExplicitVRLittleEndian, 0.65), (ImplicitVRLittleEndian, 0.15), (RLELossless, 0.2)),
    "MR": ((ExplicitVRLittleEndian, 0.6), (ImplicitVRLittleEndian, 0.2), (RLELossless, 0.2)),
    "US": ((ExplicitVRLittleEndian, 0.5), (JPEGBaseline8Bit, 0.5)),
    "CR": ((ExplicitVRLittleEndian, 0.6), (ImplicitVRLittleEndian, 0.3), (RLELossless, 0.1)),
    "SC": ((ExplicitVRLittleEndian, 0.8), (ImplicitVRLittleEndian, 0.2)),
    "SR": ((ExplicitVRLittleEndian, 0.7), (ImplicitVRLittleEndian, 0.3)),
}
_STUDY_MODALITIES = (("CT", 0.35), ("MR", 0.25), ("US", 0.2), ("CR", 0.2))
_EXTRA_SERIES = {
    "CT": ("CT", "SC", "SR"),
    "MR": ("MR", "SR"),
    "US": ("US", "SR"),
    "CR": ("CR", "SR"),
}
# The first study of each modality gets these series, so small corpora cover every IOD.
_FORCED_SERIES = {"CT": ("CT", "SC", "SR"), "MR": ("MR", "SR"), "US": ("US", "US"), "CR": ("CR",)}
_SIZE = {"CT": (512, 512), "MR": (256, 256), "US": (480, 640), "CR": (1024, 1024), "SC": (512, 512)}
_SMALL_SIZE = {"CT": (32, 32), "MR": (32, 32), "US": (96, 128), "CR": (32, 32), "SC": (96, 128)}
_SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "US": UltrasoundImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "SC": SecondaryCaptureImageStorage,
}
_US_FRAMES = 5
_RAW_FRACTION = 0.03
# Retired Detached Patient Management SOP Class: what ReferencedPatientSequence points at.
_PATIENT_SOP_CLASS = "1.2.840.10008.3.1.2.1.1"

# --------------------------------------------------------------------------- planning model


@dataclass(frozen=True)
class _Institution:
    """A site: its name, address and staff appear in every study performed there."""

    name: str
    address: str
    code: str
    staff: tuple[str, ...]
    serials: dict[str, str]


@dataclass(frozen=True)
class _Patient:
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
class _Study:
    """One study: its identifiers, date and the people and place involved."""

    index: int
    uid: str
    when: date
    time: str
    accession: str
    study_id: str
    modality: str
    body: str
    site: _Institution
    referring: str
    requesting: str
    reading: str
    procedure_id: str
    step_id: str
    performed_step_id: str

    @property
    def folder(self) -> str:
        """Opaque folder name (never PHI)."""
        return f"st{self.index + 1:02d}"

    @property
    def da(self) -> str:
        """Study date as DA (YYYYMMDD)."""
        return _da(self.when)

    @property
    def dmy(self) -> str:
        """Study date as typed in free text (DD/MM/YYYY)."""
        return f"{self.when.day:02d}/{self.when.month:02d}/{self.when.year}"


@dataclass(frozen=True)
class _Series:
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
class _Written:
    """A written instance, as later references (SR evidence) need it."""

    series_uid: str
    sop_class: str
    sop_uid: str


@dataclass
class _Ctx:
    """Mutable generation state: random sources, counters and collected records."""

    rng: random.Random
    nprng: np.random.Generator
    root: Path
    small: bool
    instances_per_series: int
    burned_in_fraction: float
    uid_stem: str
    sites: tuple[_Institution, ...] = ()
    uid_counter: int = 0
    file_counter: int = 0
    study_counter: int = 0
    sr_counter: int = 0
    raw_count: int = 0
    raw_eligible: int = 0
    uids: set[str] = field(default_factory=set)
    records: list[FileRecord] = field(default_factory=list)
    kind_counter: dict[str, int] = field(default_factory=dict)
    burn_counter: dict[str, int] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    retained: dict[str, str] = field(default_factory=dict)
    folders: set[Path] = field(default_factory=set)
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = field(default_factory=dict)

    def uid(self) -> str:
        """Next UID under :data:`UID_ROOT`; short components never hold an 8-digit date."""
        self.uid_counter += 1
        value = f"{UID_ROOT}{self.uid_stem}.{self.uid_counter}"
        self.uids.add(value)
        return value

    def unique(self, prefix: str, digits: int) -> str:
        """A fresh identifier like ``MRN0123456``, distinct across the corpus."""
        while True:
            value = f"{prefix}{self.rng.randrange(10**digits):0{digits}d}"
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


def _da(d: date) -> str:
    """DICOM DA string."""
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _weighted(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    """Pick a value by weight."""
    values = [v for v, _ in options]
    weights = [w for _, w in options]
    return rng.choices(values, weights=weights, k=1)[0]


def _fold(text: str) -> str:
    """ASCII transliteration of Latin text for burned-in pixels (the font has no CJK)."""
    text = text.replace("ß", "ss").replace("ø", "o").replace("Ø", "O").replace("Å", "A")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


# --------------------------------------------------------------------------- patients


def _make_sites(rng: random.Random) -> tuple[_Institution, ...]:
    """Three institutions, each with staff and one device serial per modality."""
    staff = list(_STAFF)
    rng.shuffle(staff)
    sites = []
    for i, (name, address, code) in enumerate(_INSTITUTIONS):
        serials = {m: f"SN{rng.randrange(10**7):07d}" for m in ("CT", "MR", "US", "CR", "OT", "SR")}
        sites.append(_Institution(name, address, code, tuple(staff[4 * i : 4 * i + 4]), serials))
    return tuple(sites)


def _make_name(rng: random.Random, charset: tuple[str, ...]) -> tuple[str, str, str, str, str]:
    """(PN as written, family, given, ASCII "FAMILY, GIVEN", native free-text form)."""
    term = charset[-1] if charset else ""
    if term == "ISO 2022 IR 87":
        rf, rg, kf, kg, hf, hg = rng.choice(_JAPANESE_NAMES)
        return f"{rf}^{rg}={kf}^{kg}={hf}^{hg}", rf, rg, f"{rf}, {rg}".upper(), f"{kf}{kg}様"
    if term == "ISO_IR 192":
        fam, giv, rf, rg = rng.choice(_UTF8_NAMES)
        return f"{fam}^{giv}", fam, giv, f"{rf}, {rg}".upper(), ""
    if term == "ISO_IR 100":
        fam, giv = rng.choice(_LATIN1_FAMILY), rng.choice(_LATIN1_GIVEN)
        return f"{fam}^{giv}", fam, giv, _fold(f"{fam}, {giv}").upper(), ""
    fam, giv, mid = rng.choice(_ASCII_FAMILY), rng.choice(_ASCII_GIVEN), rng.choice(_ASCII_GIVEN)
    return f"{fam}^{giv}^{mid}", fam, giv, f"{fam}, {giv}".upper(), ""


def _make_patient(ctx: _Ctx, index: int) -> _Patient:
    """Draw one patient's demographics from the seeded generator."""
    rng = ctx.rng
    charset = _CHARSET_CYCLE[index % len(_CHARSET_CYCLE)]
    pn, family, given, roman, native = _make_name(rng, charset)
    area, line = rng.randrange(200, 990), rng.randrange(10000)
    address = (
        f"{rng.randrange(2, 240)} {rng.choice(_STREETS)}, {rng.choice(_TOWNS)} "
        f"{rng.choice('ABCDEFGH')}{rng.choice('KLMNPRST')}{rng.randrange(1, 10)} "
        f"{rng.randrange(1, 10)}{rng.choice('QRTUVWX')}{rng.choice('ABDEFGHJ')}"
    )
    return _Patient(
        index=index,
        charset=charset,
        pn=pn,
        family=family,
        given=given,
        roman=roman,
        native=native,
        patient_id=ctx.unique("MRN", 7),
        other_id=ctx.unique("HX-", 6),
        birth=_BASE_BIRTH_DATE + timedelta(days=rng.randrange(80 * 365)),
        sex=rng.choice("MF"),
        weight=f"{rng.uniform(45, 110):.1f}",
        size=f"{rng.uniform(1.5, 1.95):.2f}",
        address=address,
        phone=f"(555) {area:03d}-{line:04d}",
        phone_alt=f"555.{area:03d}.{line:04d}",
        ethnic=rng.choice(_ETHNIC),
        mother=f"{rng.choice(_ASCII_FAMILY)}^{rng.choice(_ASCII_GIVEN)}",
        uid=ctx.uid(),
    )


def _age(birth: date, on: date) -> str:
    """DICOM AS value in years."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


# --------------------------------------------------------------------------- planning


def _plan_study(ctx: _Ctx, index: int) -> _Study:
    """Pick modality, site, people and identifiers for one study."""
    rng = ctx.rng
    g = ctx.study_counter
    ctx.study_counter += 1
    modality = ("CT", "MR", "US", "CR")[g] if g < 4 else _weighted(rng, _STUDY_MODALITIES)
    site = rng.choice(ctx.sites)
    people = rng.sample(site.staff, 3)
    return _Study(
        index=index,
        uid=ctx.uid(),
        when=_BASE_STUDY_DATE + timedelta(days=rng.randrange(730)),
        time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
        accession=ctx.unique("ACC", 7),
        study_id=ctx.unique("ST", 6),
        modality=modality,
        body=rng.choice(_BODY[modality]),
        site=site,
        referring=people[0],
        requesting=people[1],
        reading=people[2],
        procedure_id=ctx.unique("RP", 7),
        step_id=ctx.unique("SPS", 6),
        performed_step_id=ctx.unique("PPS", 6),
    )


def _series_kinds(ctx: _Ctx, study: _Study) -> list[str]:
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


def _pick_ts(ctx: _Ctx, kind: str) -> str:
    """Transfer syntax for a series; the first series of a kind cycle through all options."""
    options = _TS_OPTIONS[kind]
    n = ctx.next_of(ctx.kind_counter, "ts-" + kind)
    return options[n][0] if n < len(options) else _weighted(ctx.rng, options)


def _instance_count(ctx: _Ctx, kind: str) -> int:
    """How many instances a series of this kind gets."""
    n = ctx.instances_per_series
    if kind in ("SC", "SR"):
        return 1
    if kind == "CR":
        return min(n, ctx.rng.randint(1, 2))
    if kind == "US":
        return max(2, n // 2)
    return n


def _plan_series(ctx: _Ctx, study: _Study, index: int, kind: str) -> _Series:
    """Allocate UIDs, file names and per-series options."""
    rng = ctx.rng
    first = ctx.next_of(ctx.kind_counter, "series-" + kind) == 0
    count = _instance_count(ctx, kind)
    dcm_ext = rng.random() < 0.5
    return _Series(
        index=index,
        kind=kind,
        uid=ctx.uid(),
        ts=_pick_ts(ctx, kind),
        sop_uids=tuple(ctx.uid() for _ in range(count)),
        names=tuple(ctx.file_name(dcm_ext) for _ in range(count)),
        for_uid=ctx.uid() if kind in ("CT", "MR") else "",
        label=rng.choice(_SERIES_LABEL[kind]),
        overlay=kind in ("CT", "MR") and (first or rng.random() < 0.35),
        refs=kind in ("CT", "MR") and (first or rng.random() < 0.5),
        monochrome1=kind == "CR" and rng.random() < 0.5,
        performing=rng.choice(study.site.staff),
        operator=rng.choice(study.site.staff),
    )


# --------------------------------------------------------------------------- attributes


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _set_charset(ds: Dataset, p: _Patient) -> None:
    """SpecificCharacterSet first: pydicom encodes every text value with it on write."""
    if len(p.charset) == 1:
        ds.SpecificCharacterSet = p.charset[0]
    elif p.charset:
        ds.SpecificCharacterSet = list(p.charset)


def _patient_module(ds: Dataset, p: _Patient, st: _Study, phi: set[str]) -> None:
    """Patient and Patient Study modules, plus free text that repeats the identity."""
    ds.PatientName = p.pn
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "WBMPI"
    ds.PatientBirthDate = _da(p.birth)
    ds.PatientSex = p.sex
    ds.PatientAge = _age(p.birth, st.when)
    ds.PatientSize = p.size
    ds.PatientWeight = p.weight
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.PatientMotherBirthName = p.mother
    ds.EthnicGroup = p.ethnic
    other = Dataset()
    other.PatientID = p.other_id
    other.IssuerOfPatientID = "HXREG"
    other.TypeOfPatientID = "TEXT"
    qualifiers = Dataset()
    qualifiers.IdentifierTypeCode = "MR"
    facility = Dataset()
    facility.LocalNamespaceEntityID = "HXREGISTRY"
    qualifiers.AssigningFacilitySequence = [facility]
    other.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    ds.OtherPatientIDsSequence = [other]
    dob_iso = p.birth.isoformat()
    ds.AdditionalPatientHistory = (
        f"Referred re {p.family}, {p.given}; DOB {dob_iso}; {p.patient_id}"
    )
    comments = f"Patient {p.name_upper} prefers phone {p.phone_alt}"
    if p.native:
        comments += f" ({p.native})"
        phi.add(p.native)
    ds.PatientComments = comments
    phi.update({p.pn, p.patient_id, _da(p.birth), p.address, p.phone, p.mother, p.other_id})
    phi.update({f"{p.family}, {p.given}", dob_iso, p.name_upper, p.phone_alt})


def _request_item(p: _Patient, st: _Study, phi: set[str]) -> Dataset:
    """Request Attributes item, with PHI three sequences deep (protocol context)."""
    item = Dataset()
    item.StudyInstanceUID = st.uid
    item.AccessionNumber = st.accession
    item.RequestedProcedureID = st.procedure_id
    item.RequestedProcedureDescription = f"{st.modality} {st.body} - {p.name_upper}"
    item.RequestedProcedureCodeSequence = [
        _code(f"RPC{st.modality}{st.body[:3]}", "99SYNTH", f"{st.modality} {st.body.lower()}")
    ]
    item.ReasonForTheRequestedProcedure = f"Follow-up of {p.name_title}"
    item.ScheduledProcedureStepID = st.step_id
    item.ScheduledProcedureStepDescription = f"{st.body.lower()} for {p.name_lower}"
    context = Dataset()
    context.ValueType = "TEXT"
    context.ConceptNameCodeSequence = [_code("121106", "DCM", "Comment")]
    context.TextValue = f"Consent signed by {p.name_title} on {st.dmy}"
    protocol = _code(f"PRT{st.body[:3]}", "99SYNTH", f"{st.body.lower()} routine")
    protocol.ProtocolContextSequence = [context]
    item.ScheduledProtocolCodeSequence = [protocol]
    phi.update({st.accession, st.procedure_id, st.step_id, p.name_upper, p.name_title})
    phi.update({p.name_lower, st.dmy})
    return item


def _study_module(ds: Dataset, p: _Patient, st: _Study, phi: set[str]) -> None:
    """General Study module plus the study-level request, procedure step and site."""
    site = st.site
    ds.StudyInstanceUID = st.uid
    ds.StudyDate = st.da
    ds.StudyTime = st.time
    ds.ReferringPhysicianName = st.referring
    ds.StudyID = st.study_id
    ds.AccessionNumber = st.accession
    ds.StudyDescription = f"{st.modality} {st.body.lower()} for {p.name_lower}"
    ds.NameOfPhysiciansReadingStudy = st.reading
    ds.RequestingPhysician = st.requesting
    ds.PerformedProcedureStepID = st.performed_step_id
    ds.PerformedProcedureStepStartDate = st.da
    ds.PerformedProcedureStepDescription = f"{st.modality} {st.body} for {p.name_upper}"
    ds.InstitutionName = site.name
    ds.InstitutionAddress = site.address
    ds.InstitutionalDepartmentName = "Radiology"
    ds.Manufacturer = "Synthetica Medical"
    ds.SoftwareVersions = "4.2.1"
    phi.update({st.da, st.referring, st.study_id, st.accession, st.reading, st.requesting})
    phi.update({p.name_lower, st.performed_step_id, p.name_upper, site.name, site.address})


def _modality(se: _Series) -> str:
    """Modality attribute value: dose screens are "OT"."""
    return "OT" if se.kind == "SC" else se.kind


def _station(st: _Study, se: _Series) -> str:
    """Station name: site code, modality, room number."""
    return f"{st.site.code}{_modality(se)}{st.index % 3 + 1:02d}"


def _series_module(ds: Dataset, p: _Patient, st: _Study, se: _Series, phi: set[str]) -> None:
    """General Series module and the device part of General Equipment."""
    modality = _modality(se)
    ds.Modality = modality
    ds.SeriesInstanceUID = se.uid
    ds.SeriesNumber = se.index + 1
    ds.SeriesDate = st.da
    ds.SeriesTime = st.time
    ds.SeriesDescription = f"{se.label} {p.patient_id}"
    ds.PerformingPhysicianName = se.performing
    ds.OperatorsName = se.operator
    ds.ManufacturerModelName = f"Synth {modality} 3000"
    station = _station(st, se)
    ds.StationName = station
    ds.DeviceSerialNumber = st.site.serials[modality]
    phi.update({st.da, p.patient_id, se.performing, se.operator, station})
    phi.add(st.site.serials[modality])


def _private_blocks(ds: Dataset, p: _Patient, phi: set[str]) -> None:
    """A vendor block holding identity (removed with all private tags by the profile)."""
    block = ds.private_block(0x0009, "ACME PHI 1.0", create=True)
    block.add_new(0x10, "PN", p.pn)
    block.add_new(0x11, "LO", p.patient_id)
    block.add_new(0x12, "LT", f"Exported for {p.name_title}")
    phi.update({p.pn, p.patient_id, p.name_title})


def _safe_private_block(ds: Dataset, rng: random.Random) -> None:
    """ELSCINT1 DLP, on the safe-private list: a harmless number kept by Retain Safe Private."""
    safe = ds.private_block(0x00E1, "ELSCINT1", create=True)
    safe.add_new(0x21, "DS", f"{rng.uniform(150, 900):.1f}")


def _referenced_patient(ds: Dataset, p: _Patient) -> None:
    """ReferencedPatientSequence pointing at the patient's (non-corpus) UID."""
    item = Dataset()
    item.ReferencedSOPClassUID = _PATIENT_SOP_CLASS
    item.ReferencedSOPInstanceUID = p.uid
    ds.ReferencedPatientSequence = [item]


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (open grids, broadcast on use)."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    return y, x


def _ellipse(
    y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse."""
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _ct_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Chest-like slice; stored values 0..~1800 (HU + 1024), always < 4096.

    Keeping 16-bit values below 4096 means every other byte is < 0x10, so the pixel
    stream cannot contain a planted text string.
    """
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.03, 0.03, 4)
    img = np.zeros((rows, cols), np.int16)
    img[_ellipse(y, x, 0.05 + j[0], j[1], 0.62, 0.85)] = 1064
    img[_ellipse(y, x, -0.05, -0.38 + j[2], 0.42, 0.3)] = 224
    img[_ellipse(y, x, -0.05, 0.38 + j[3], 0.42, 0.3)] = 224
    img[_ellipse(y, x, 0.05, 0.1, 0.22, 0.2)] = 1074
    img[_ellipse(y, x, 0.45, 0.0, 0.12, 0.1)] = 1724
    return img


def _mr_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Head-like slice with smooth shading; unsigned values < 4096."""
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.04, 0.04, 2)
    shade = 1.0 - 0.35 * (y * y + x * x)
    img = np.zeros((rows, cols), np.float32)
    img[_ellipse(y, x, j[0], j[1], 0.85, 0.7)] = 700.0
    img[_ellipse(y, x, j[0], j[1], 0.78, 0.63)] = 1500.0
    img[_ellipse(y, x, j[0] - 0.05, j[1] - 0.12, 0.22, 0.07)] = 300.0
    img[_ellipse(y, x, j[0] - 0.05, j[1] + 0.12, 0.22, 0.07)] = 300.0
    return (img * shade).astype(np.uint16)


def _cr_base(nprng: np.random.Generator, rows: int, cols: int, inverse: bool) -> np.ndarray:
    """Chest radiograph-like image; values < 4096, inverted for MONOCHROME1."""
    y, x = _grid(rows, cols)
    j = nprng.uniform(-0.03, 0.03, 2)
    img = np.full((rows, cols), 300.0, np.float32)
    img[_ellipse(y, x, 0.1 + j[0], j[1], 0.95, 0.8)] = 2100.0
    img[_ellipse(y, x, -0.05, -0.35, 0.6, 0.28)] = 1100.0
    img[_ellipse(y, x, -0.05, 0.35, 0.6, 0.28)] = 1100.0
    img[:, np.abs(x[0]) < 0.06] = 3200.0
    img = img * (1.0 - 0.15 * y)
    out = np.clip(img, 0, 4095).astype(np.uint16)
    return (4095 - out).astype(np.uint16) if inverse else out


def _us_base(nprng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Gray ultrasound sector (uint8), smooth texture."""
    y, x = _grid(rows, cols)
    yy = y + 1.0
    r = np.sqrt(yy * yy + x * x)
    theta = np.arctan2(x, yy)
    fan = (np.abs(theta) < 0.7) & (r < 1.9) & (r > 0.12)
    phase = float(nprng.uniform(0.0, 6.28))
    rings = np.sin(r * 14 + phase) * np.cos(theta * 9)
    tex = 80 + 45 * rings + 60 * np.exp(-((r - 1.0) ** 2) / 0.05)
    tex[_ellipse(y, x, 0.25, 0.12, 0.15, 0.11)] = 12
    return np.where(fan, np.clip(tex, 0, 255), 0).astype(np.uint8)


def _base_pixels(ctx: _Ctx, se: _Series) -> np.ndarray:
    """One base image per series; instances vary it cheaply."""
    rows, cols = (_SMALL_SIZE if ctx.small else _SIZE)[se.kind]
    if se.kind == "CT":
        return _ct_base(ctx.nprng, rows, cols)
    if se.kind == "MR":
        return _mr_base(ctx.nprng, rows, cols)
    if se.kind == "CR":
        return _cr_base(ctx.nprng, rows, cols, se.monochrome1)
    if se.kind == "US":
        return _us_base(ctx.nprng, rows, cols)
    return np.zeros((rows, cols), np.uint8)


def _slice_pixels(base: np.ndarray, kind: str, k: int) -> np.ndarray:
    """Instance ``k`` of a series: a per-slice offset or shift of the base image."""
    if kind in ("CT", "MR"):
        return base + (base > 0).astype(base.dtype) * np.asarray(k % 13 * 3, base.dtype)
    if kind == "CR":
        return np.roll(base, k * 3, axis=1)
    return base


def _us_frames(base: np.ndarray, frames: int, k: int) -> np.ndarray:
    """RGB frames (n, rows, cols, 3): a shifted gray sector with a red 'Doppler' blob."""
    out = []
    for f in range(frames):
        gray = np.roll(base, (k + f) * 2, axis=1)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rows, cols = gray.shape
        r0, c0 = rows // 2 + f, cols // 2
        rgb[r0 : r0 + rows // 10, c0 : c0 + cols // 12, 0] = 200
        out.append(rgb)
    return np.stack(out)


def _draw_lines(
    arr: np.ndarray, lines: Sequence[str], font: Any, top: int, banner: bool
) -> np.ndarray:
    """Draw white text lines (optionally over a black top banner) into a uint8 image."""
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    size = int(getattr(font, "size", 10))
    white: int | tuple[int, int, int] = (255, 255, 255) if arr.ndim == 3 else 255
    black: int | tuple[int, int, int] = (0, 0, 0) if arr.ndim == 3 else 0
    if banner:
        draw.rectangle([0, 0, arr.shape[1], top + size * len(lines) + 4], fill=black)
    for i, line in enumerate(lines):
        draw.text((4, top + i * (size + 4)), line, fill=white, font=font)
    return np.asarray(img)


def _jpeg_frames(frames: np.ndarray) -> list[bytes]:
    """Baseline JPEG per RGB frame, 4:2:2 chroma (matches YBR_FULL_422)."""
    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=90, subsampling=1)
        out.append(buf.getvalue())
    return out


def _packbits_rows(plane: np.ndarray) -> bytes:
    """PackBits-encode each row of a 2-D uint8 array: one DICOM RLE segment (PS3.5 G.3.1).

    Vectorised (pydicom's pure-Python encoder needs ~70 ms per 512x512 frame). Runs of two
    or more equal bytes become replicate packets, the rest literal packets; no packet
    crosses a row, and every packet is at most 128 bytes long.
    """
    cols = plane.shape[1]
    flat = plane.ravel()
    size = flat.size
    change = np.ones(size, bool)
    change[1:] = flat[1:] != flat[:-1]
    change[::cols] = True
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, size))
    pieces = (lengths + 127) // 128
    run = np.repeat(np.arange(starts.size), pieces)
    within = np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    p_start = starts[run] + within * 128
    p_len = np.minimum(lengths[run] - within * 128, 128)
    literal = p_len == 1
    index = np.arange(p_len.size)
    row = p_start // cols
    follows = np.concatenate(([False], literal[:-1] & (row[1:] == row[:-1])))
    seq_start = np.maximum.accumulate(np.where(literal & ~follows, index, 0))
    head = literal & (~follows | ((index - seq_start) % 128 == 0))
    group = np.cumsum(head) - 1
    counts = np.bincount(group[literal], minlength=int(head.sum()))
    out_len = np.where(literal, 1 + head, 2)
    pos = np.cumsum(out_len) - out_len
    out = np.empty(int(out_len.sum()), np.uint8)
    rep = ~literal
    out[pos[rep]] = (257 - p_len[rep]).astype(np.uint8)
    out[pos[rep] + 1] = flat[p_start[rep]]
    out[pos[head]] = (counts[group[head]] - 1).astype(np.uint8)
    out[pos[literal] + head[literal]] = flat[p_start[literal]]
    data = out.tobytes()
    return data + b"\x00" if len(data) % 2 else data


def _rle_frame(frame: np.ndarray) -> bytes:
    """One RLE Lossless frame: 64-byte header, then one segment per byte plane (MSB first)."""
    if frame.dtype.itemsize == 2:
        word = np.ascontiguousarray(frame).view(np.uint16)
        planes = [(word >> 8).astype(np.uint8), (word & 0xFF).astype(np.uint8)]
    elif frame.ndim == 3:
        planes = [np.ascontiguousarray(frame[..., i]) for i in range(frame.shape[2])]
    else:
        planes = [frame]
    segments = [_packbits_rows(p) for p in planes]
    offsets = np.cumsum([64] + [len(s) for s in segments[:-1]]).tolist()
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(segments))))
    return header + b"".join(segments)


def _set_pixel_data(dyn: Dataset, frames: np.ndarray, ts: str) -> None:
    """Pixel Data in the series' transfer syntax (native, RLE or JPEG Baseline)."""
    if ts in _UNCOMPRESSED:
        vr = "OW" if frames.dtype.itemsize > 1 else "OB"
        dyn.add_new(0x7FE00010, vr, frames.tobytes())
        return
    if ts == RLELossless:
        encoded = [_rle_frame(f) for f in frames]
    else:
        encoded = _jpeg_frames(frames)
        dyn.LossyImageCompressionRatio = f"{frames.nbytes / sum(map(len, encoded)):.2f}"
    dyn.add_new(0x7FE00010, "OB", encapsulate(encoded, has_bot=len(encoded) > 1))
    dyn["PixelData"].is_undefined_length = True


def _image_pixel_module(ds: Dataset, kind: str, rows: int, cols: int) -> None:
    """Image Pixel module attributes shared by a series (frame count is per instance)."""
    rgb = kind == "US"
    bits = 8 if kind in ("US", "SC") else 16
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits
    ds.BitsStored = 8 if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if kind == "CT" else 0
    if rgb:
        ds.PlanarConfiguration = 0


def _overlay(ds: Dataset, p: _Patient, rows: int, cols: int, phi: set[str]) -> None:
    """Graphics overlay in group 6000 (a rectangle), comments naming the patient."""
    mask = np.zeros((rows, cols), bool)
    r0, r1, c0, c1 = rows // 4, rows // 2, cols // 3, cols // 2
    mask[r0, c0:c1] = mask[r1, c0:c1] = True
    mask[r0:r1, c0] = mask[r0:r1, c1] = True
    packed = np.packbits(mask.ravel(), bitorder="little").tobytes()
    if len(packed) % 2:
        packed += b"\x00"
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000022, "LO", "ROI outline")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", packed)
    ds.add_new(0x60004000, "LT", f"ROI drawn for {p.name_title}")
    phi.add(p.name_title)


# --------------------------------------------------------------------------- modality modules


def _plane(ds: Dataset, se: _Series, fov: float, thickness: float) -> None:
    """Frame of Reference and the series-constant part of Image Plane."""
    ds.FrameOfReferenceUID = se.for_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    spacing = f"{fov / ds.Rows:.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = f"{thickness:g}"


def _position(dyn: Dataset, tmpl: Dataset, k: int) -> None:
    """Per-slice Image Position and Slice Location (slices stacked along z)."""
    fov = float(tmpl.PixelSpacing[0]) * tmpl.Rows
    z = -k * float(tmpl.SliceThickness)
    dyn.ImagePositionPatient = [f"{-fov / 2:.6g}", f"{-fov / 2:.6g}", f"{z:g}"]
    dyn.SliceLocation = f"{z:g}"


def _ct_module(ds: Dataset, se: _Series) -> None:
    """CT Image module (series-constant part)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.ConvolutionKernel = "STANDARD"
    _plane(ds, se, 350.0, 5.0)


def _mr_module(ds: Dataset, se: _Series) -> None:
    """MR Image module (series-constant part)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "500"
    ds.EchoTime = "15"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "1.5"
    ds.ImagedNucleus = "1H"
    ds.AcquisitionNumber = 1
    _plane(ds, se, 240.0, 4.0)


def _cr_module(ds: Dataset, se: _Series) -> None:
    """CR Series and CR Image modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PhotometricInterpretation = "MONOCHROME1" if se.monochrome1 else "MONOCHROME2"
    ds.ViewPosition = "PA" if "PA" in se.label else "AP"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = ["0.35", "0.35"]
    ds.KVP = "110"


def _us_module(ds: Dataset, se: _Series) -> None:
    """US Image module (series-constant part; cine attributes are per instance)."""
    jpeg = se.ts == JPEGBaseline8Bit
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg else "RGB"
    ds.PatientOrientation = ""
    ds.LossyImageCompression = "01" if jpeg else "00"
    if jpeg:
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def _sc_module(ds: Dataset) -> None:
    """SC Equipment and SC Image modules for a dose screen capture."""
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""


def _modality_module(ds: Dataset, se: _Series) -> None:
    """The IOD-specific image module(s); needs Rows already set."""
    if se.kind == "CT":
        _ct_module(ds, se)
    elif se.kind == "MR":
        _mr_module(ds, se)
    elif se.kind == "CR":
        _cr_module(ds, se)
    elif se.kind == "US":
        _us_module(ds, se)
    else:
        _sc_module(ds)


def _burn(ctx: _Ctx, kind: str) -> bool:
    """Exactly ``burned_in_fraction`` of each kind, evenly spread, the first one included."""
    k = ctx.next_of(ctx.burn_counter, kind)
    f = ctx.burned_in_fraction
    return int((k + 1) * f + 1 - f) > int(k * f + 1 - f)


def _us_pixels(
    ctx: _Ctx, p: _Patient, st: _Study, base: np.ndarray, k: int, multiframe: bool
) -> tuple[np.ndarray, list[str]]:
    """US frames, with a top banner naming the patient on a fraction of them."""
    frames = _us_frames(base, _US_FRAMES if multiframe else 1, k)
    if not _burn(ctx, "US"):
        return frames, []
    text = [p.roman, p.patient_id, st.dmy]
    font = ctx.font(9 if ctx.small else 16)
    line = "   ".join(text)
    frames = np.stack([_draw_lines(f, [line], font, 2, banner=True) for f in frames])
    return frames, text


def _sc_pixels(
    ctx: _Ctx, p: _Patient, st: _Study, base: np.ndarray
) -> tuple[np.ndarray, list[str], list[str]]:
    """Dose screen: white text on black; identity lines only on a fraction of them."""
    dlp = ctx.rng.uniform(150, 900)
    ctdi = ctx.rng.uniform(4, 25)
    other = [f"CTDIvol {ctdi:.1f} mGy", f"Total DLP {dlp:.1f} mGy-cm"]
    burned = [p.roman, p.patient_id, st.dmy] if _burn(ctx, "SC") else []
    lines = [burned[0], f"{burned[1]}  {burned[2]}", *other] if burned else other
    font = ctx.font(9 if ctx.small else 20)
    img = _draw_lines(base.copy(), lines, font, 4, banner=False)
    return img[None, ...], burned, other


def _image_pixels(
    ctx: _Ctx, p: _Patient, st: _Study, se: _Series, base: np.ndarray, k: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """This instance's frames, identifying burned-in strings and other burned-in text."""
    if se.kind == "US":
        frames, burned = _us_pixels(ctx, p, st, base, k, multiframe=_is_cine(se, k))
        return frames, burned, []
    if se.kind == "SC":
        return _sc_pixels(ctx, p, st, base)
    return _slice_pixels(base, se.kind, k)[None, ...], [], []


def _is_cine(se: _Series, k: int) -> bool:
    """Every third US instance (from the second) is a multi-frame cine loop."""
    return se.kind == "US" and k % 3 == 1


# --------------------------------------------------------------------------- writing


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
class _Template:
    """A layer of shared elements (study or series level), each encoded once and reused."""

    ds: Dataset
    phi: set[str]
    charset: str | list[str]
    base: _Template | None = None
    encoded: dict[bool, dict[int, bytes]] = field(default_factory=dict)

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


def _charset_arg(p: _Patient) -> str | list[str]:
    """SpecificCharacterSet as pydicom's element writer takes it."""
    if not p.charset:
        return "iso8859"
    return p.charset[0] if len(p.charset) == 1 else list(p.charset)


def _store(ctx: _Ctx, rel: str, data: bytes) -> None:
    """Write bytes under out/dicom (folders created once)."""
    path = ctx.root / rel
    if path.parent not in ctx.folders:
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx.folders.add(path.parent)
    path.write_bytes(data)


def _rel(p: _Patient, st: _Study, se: _Series, name: str) -> str:
    """Relative path: opaque folder names only."""
    return f"{p.folder}/{st.folder}/{se.folder}/{name}"


def _is_raw(ctx: _Ctx, se: _Series, frames: int) -> bool:
    """About 3% of native single-frame files are raw datasets; at least one per corpus."""
    if se.ts not in _UNCOMPRESSED or frames > 1:
        return False
    ctx.raw_eligible += 1
    raw = ctx.rng.random() < _RAW_FRACTION or (ctx.raw_count == 0 and ctx.raw_eligible == 3)
    ctx.raw_count += raw
    return raw


@dataclass(frozen=True)
class _Instance:
    """Per-instance facts that go into the answer key."""

    sop_class: str
    sop_uid: str
    raw: bool
    phi: set[str]
    burned_in: tuple[str, ...] = ()
    burned_in_other: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    frames: int = 1


def _emit(
    ctx: _Ctx,
    where: tuple[_Patient, _Study, _Series, str],
    tmpl: _Template,
    dyn: Dataset,
    inst: _Instance,
) -> None:
    """Splice series and instance elements, write the file, record it in the key."""
    p, st, se, name = where
    implicit = inst.raw or se.ts == ImplicitVRLittleEndian
    merged = {**tmpl.parts(implicit), **_encode_elements(dyn, implicit, tmpl.charset)}
    body = b"".join(merged[tag] for tag in sorted(merged))
    head = b"" if inst.raw else _preamble_and_meta(inst.sop_class, inst.sop_uid, se.ts)
    rel = _rel(p, st, se, name)
    _store(ctx, rel, head + body)
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
        )
    )


def _study_layer(p: _Patient, st: _Study) -> _Template:
    """Patient and study attributes every instance of the study shares (SR included)."""
    phi: set[str] = set()
    ds = Dataset()
    _set_charset(ds, p)
    ds.InstanceCreationDate = st.da
    ds.InstanceCreationTime = st.time
    _patient_module(ds, p, st, phi)
    _study_module(ds, p, st, phi)
    _private_blocks(ds, p, phi)
    return _Template(ds, phi, _charset_arg(p))


def _image_study_layer(p: _Patient, st: _Study, base: _Template) -> _Template:
    """Study-level attributes only image IODs carry."""
    phi: set[str] = set()
    ds = Dataset()
    _referenced_patient(ds, p)
    ds.RequestAttributesSequence = [_request_item(p, st, phi)]
    ds.ProtocolName = f"{st.body} ROUTINE {p.family.upper()}"
    ds.ContentDate = ds.AcquisitionDate = st.da
    ds.ContentTime = ds.AcquisitionTime = st.time
    comments = f"Pt {p.name_title} scanned {st.dmy}, call {p.phone_alt}"
    ds.ImageComments = f"{comments} {p.native}" if p.native else comments
    phi.update({p.family.upper(), p.name_title, st.dmy, p.phone_alt})
    ds.BodyPartExamined = st.body
    return _Template(ds, phi, base.charset, base)


def _series_layer(ctx: _Ctx, p: _Patient, st: _Study, se: _Series, base: _Template) -> _Template:
    """Series, equipment, pixel and modality attributes shared by a series' images."""
    phi: set[str] = set()
    ds = Dataset()
    _series_module(ds, p, st, se, phi)
    rows, cols = (_SMALL_SIZE if ctx.small else _SIZE)[se.kind]
    _image_pixel_module(ds, se.kind, rows, cols)
    _modality_module(ds, se)
    if se.kind == "CT":
        _safe_private_block(ds, ctx.rng)
    return _Template(ds, phi, base.charset, base)


def _write_image(
    ctx: _Ctx,
    p: _Patient,
    st: _Study,
    se: _Series,
    series_data: tuple[_Template, np.ndarray],
    k: int,
) -> _Written:
    """Build the per-instance elements of one image and write it."""
    tmpl, base = series_data
    cine = _is_cine(se, k)
    sop_class = UltrasoundMultiFrameImageStorage if cine else _SOP_CLASS[se.kind]
    dyn = Dataset()
    dyn.SOPClassUID = sop_class
    dyn.SOPInstanceUID = se.sop_uids[k]
    dyn.InstanceNumber = k + 1
    if se.kind in ("CT", "MR"):
        _position(dyn, tmpl.ds, k)
    frames, burned, other = _image_pixels(ctx, p, st, se, base, k)
    if cine:
        dyn.NumberOfFrames = int(frames.shape[0])
        dyn.FrameTime = "33.3"
        dyn.FrameIncrementPointer = 0x00181063
        dyn.CineRate = 30
    dyn.BurnedInAnnotation = "YES" if burned else "NO"
    references: tuple[str, ...] = ()
    if se.refs and k > 0:
        dyn.ReferencedImageSequence = [_sop_ref(_SOP_CLASS[se.kind], se.sop_uids[0])]
        references = (se.sop_uids[0],)
    phi = tmpl.all_phi()
    if se.overlay and k % 2 == 0:
        _overlay(dyn, p, tmpl.ds.Rows, tmpl.ds.Columns, phi)
    _set_pixel_data(dyn, frames, se.ts)
    inst = _Instance(
        sop_class=sop_class,
        sop_uid=se.sop_uids[k],
        raw=_is_raw(ctx, se, int(frames.shape[0])),
        phi=phi,
        burned_in=tuple(burned),
        burned_in_other=tuple(other),
        references=references,
        frames=int(frames.shape[0]),
    )
    _emit(ctx, (p, st, se, se.names[k]), tmpl, dyn, inst)
    return _Written(se.uid, sop_class, se.sop_uids[k])


# --------------------------------------------------------------------------- structured report


def _content(rel: str, value_type: str, concept: Dataset, **attrs: Any) -> Dataset:
    """One SR content item."""
    item = Dataset()
    item.RelationshipType = rel
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def _sop_ref(sop_class: str, sop_uid: str) -> Dataset:
    """SOP Instance Reference Macro item."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _sr_findings(p: _Patient, st: _Study, images: Sequence[_Written]) -> Dataset:
    """Findings container > TEXT > IMAGE: content three levels deep."""
    text = f"Reviewed with {p.name_lower} on {st.dmy}; no acute findings."
    finding = _content(
        "CONTAINS",
        "TEXT",
        _code("121071", "DCM", "Finding"),
        TextValue=f"{text} {p.native}" if p.native else text,
    )
    finding.ContentSequence = [
        _content(
            "INFERRED FROM",
            "IMAGE",
            _code("121112", "DCM", "Source of Measurement"),
            ReferencedSOPSequence=[_sop_ref(w.sop_class, w.sop_uid)],
        )
        for w in images
    ]
    normal = _content(
        "CONTAINS",
        "CODE",
        _code("121071", "DCM", "Finding"),
        ConceptCodeSequence=[_code("17621005", "SCT", "Normal")],
    )
    return _content(
        "CONTAINS",
        "CONTAINER",
        _code("121070", "DCM", "Findings"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=[finding, normal],
    )


def _sr_tree(p: _Patient, st: _Study, images: Sequence[_Written], phi: set[str]) -> list[Dataset]:
    """Report content: observation context, findings, conclusions."""
    conclusion = _content(
        "CONTAINS",
        "TEXT",
        _code("121077", "DCM", "Conclusion"),
        TextValue=f"Patient {p.name_upper} ({p.patient_id}) to follow up; call {p.phone_alt}.",
    )
    conclusions = _content(
        "CONTAINS",
        "CONTAINER",
        _code("121076", "DCM", "Conclusions"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=[conclusion],
    )
    obs = "HAS OBS CONTEXT"
    context = [
        _content(obs, "PNAME", _code("121008", "DCM", "Person Observer Name"),
                 PersonName=st.reading),
        _content(obs, "PNAME", _code("121029", "DCM", "Subject Name"), PersonName=p.pn),
        _content(obs, "UIDREF", _code("110180", "DCM", "Study Instance UID"), UID=st.uid),
        _content(obs, "DATE", _code("111060", "DCM", "Study Date"), Date=st.da),
    ]  # fmt: skip
    phi.update({p.name_lower, st.dmy, p.name_upper, p.patient_id, p.phone_alt, st.reading})
    phi.update({p.pn, st.da} | ({p.native} if p.native else set()))
    return [*context, _sr_findings(p, st, images), conclusions]


def _evidence(st: _Study, written: Sequence[_Written]) -> Dataset:
    """Hierarchical SOP Instance Reference item for every image of the study."""
    item = Dataset()
    item.StudyInstanceUID = st.uid
    series: dict[str, list[_Written]] = {}
    for w in written:
        series.setdefault(w.series_uid, []).append(w)
    items = []
    for series_uid, members in series.items():
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        s.ReferencedSOPSequence = [_sop_ref(w.sop_class, w.sop_uid) for w in members]
        items.append(s)
    item.ReferencedSeriesSequence = items
    return item


def _write_sr(
    ctx: _Ctx,
    p: _Patient,
    st: _Study,
    se: _Series,
    written: Sequence[_Written],
    study: _Template,
) -> None:
    """Build and write an SR document referencing the study's images."""
    sop_class = ComprehensiveSRStorage if ctx.sr_counter % 2 == 0 else BasicTextSRStorage
    ctx.sr_counter += 1
    phi: set[str] = set()
    ds = Dataset()
    _series_module(ds, p, st, se, phi)
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
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = _sr_tree(p, st, firsts, phi)
    tmpl = _Template(ds, phi, study.charset, study)
    inst = _Instance(
        sop_class=sop_class,
        sop_uid=se.sop_uids[0],
        raw=False,
        phi=tmpl.all_phi(),
        references=tuple(w.sop_uid for w in written),
    )
    _emit(ctx, (p, st, se, se.names[0]), tmpl, Dataset(), inst)


# --------------------------------------------------------------------------- bad inputs


def _clone(ctx: _Ctx, record: FileRecord) -> tuple[Dataset, bytes]:
    """Re-write a good file with a fresh SOP Instance UID (so outputs never collide)."""
    ds = dcmread(ctx.root / record.path)
    ds.SOPInstanceUID = ctx.uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return ds, buf.getvalue()


def _meta_end(data: bytes) -> int:
    """Offset just past the file meta group (from its group length)."""
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def _png_bytes() -> bytes:
    """A small PNG (a stray screenshot in the landing zone)."""
    y, x = _grid(48, 64)
    img = (np.clip(128 + 100 * np.sin(6 * x) * np.cos(4 * y), 0, 255)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_bad_inputs(ctx: _Ctx) -> list[BadInput]:
    """Zero-byte, truncated (pixel data, header), non-DICOM and unknown-charset files."""
    recs = ctx.records
    folder = [r.path.rsplit("/", 1)[0] for r in recs]
    native = [
        r
        for r in recs
        if r.has_file_meta
        and r.transfer_syntax_uid in _UNCOMPRESSED
        and r.modality in ("CT", "MR", "CR")
    ] or [r for r in recs if r.has_file_meta]
    bad: list[BadInput] = []

    def put(where: str, name: str, data: bytes, reason: str) -> None:
        rel = f"{where}/{name}"
        _store(ctx, rel, data)
        bad.append(BadInput(rel, reason))

    put(folder[-1], ctx.file_name(False), b"", "zero-byte")
    src = native[len(native) // 2]
    ds, data = _clone(ctx, src)
    cut = len(data) - len(ds.PixelData) // 2
    put(src.path.rsplit("/", 1)[0], ctx.file_name(True), data[:cut], "truncated")
    src = native[0]
    _, data = _clone(ctx, src)
    put(
        src.path.rsplit("/", 1)[0], ctx.file_name(False), data[: _meta_end(data) + 200], "truncated"
    )
    put(
        folder[len(folder) // 3],
        ctx.file_name(False),
        b"Transfer log\nbatch 7 complete, 0 errors\n",
        "not-dicom",
    )
    put(folder[2 * len(folder) // 3], ctx.file_name(True), _png_bytes(), "not-dicom")
    latin = [r for r in recs if r.charset == "ISO_IR 100" and r.has_file_meta]
    if latin:
        _, data = _clone(ctx, latin[0])
        data = data.replace(b"ISO_IR 100", b"ISO_IR 999")
        put(latin[0].path.rsplit("/", 1)[0], ctx.file_name(True), data, "bad-charset")
    return bad


# --------------------------------------------------------------------------- driver


def _write_study(ctx: _Ctx, p: _Patient, st: _Study) -> None:
    """Plan and write all series of one study; the SR (if any) comes last."""
    series = [_plan_series(ctx, st, i, kind) for i, kind in enumerate(_series_kinds(ctx, st))]
    study = _study_layer(p, st)
    ctx.retained.update({st.da: "rtn_long_full_dates", st.site.name: "rtn_inst_id"})
    ctx.retained[st.site.address] = "rtn_inst_id"
    for se in series:
        ctx.retained[_station(st, se)] = ctx.retained[st.site.serials[_modality(se)]] = "rtn_dev_id"
    images: _Template | None = None
    written: list[_Written] = []
    for se in series:
        if se.kind == "SR":
            _write_sr(ctx, p, st, se, written, study)
            continue
        images = images or _image_study_layer(p, st, study)
        data = (_series_layer(ctx, p, st, se, images), _base_pixels(ctx, se))
        written.extend(_write_image(ctx, p, st, se, data, k) for k in range(len(se.sop_uids)))


def _check_args(patients: int, instances_per_series: int, burned_in_fraction: float) -> None:
    """Reject arguments that cannot give a meaningful corpus."""
    if patients < 1:
        raise ValueError("patients must be >= 1")
    if instances_per_series < 1:
        raise ValueError("instances_per_series must be >= 1")
    if not 0.0 <= burned_in_fraction <= 1.0:
        raise ValueError("burned_in_fraction must be within [0, 1]")


def generate(
    out: Path,
    *,
    patients: int,
    seed: int,
    instances_per_series: int = 8,
    small: bool = False,
    bad_inputs: bool = True,
    burned_in_fraction: float = 0.25,
) -> AnswerKey:
    """Write a synthetic corpus to ``out/dicom`` and its answer key to ``out/answer_key.json``.

    Refuses to write into a non-empty ``out/dicom`` so stale files cannot mix in.
    """
    _check_args(patients, instances_per_series, burned_in_fraction)
    out = Path(out)
    root = out / DICOM_DIR_NAME
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ctx = _Ctx(
        rng=rng,
        nprng=np.random.default_rng(seed),
        root=root,
        small=small,
        instances_per_series=instances_per_series,
        burned_in_fraction=burned_in_fraction,
        uid_stem=str(rng.randrange(100000, 1000000)),
    )
    ctx.sites = _make_sites(rng)
    for index in range(patients):
        patient = _make_patient(ctx, index)
        for s in range(rng.randint(1, 3)):
            _write_study(ctx, patient, _plan_study(ctx, s))
    bad = _write_bad_inputs(ctx) if bad_inputs else []
    key = AnswerKey(
        seed=seed,
        patients=patients,
        files=tuple(ctx.records),
        bad_inputs=tuple(bad),
        phi=tuple(sorted({v for r in ctx.records for v in r.phi})),
        uids=tuple(sorted(ctx.uids)),
        instances_per_series=instances_per_series,
        small=small,
        burned_in_fraction=burned_in_fraction,
        retained_by=dict(sorted(ctx.retained.items())),
    )
    (out / ANSWER_KEY_NAME).write_text(key.to_json(), encoding="utf-8")
    return key


def main_args(argv: Sequence[str] | None = None) -> int:
    """``dicom-deid synth OUT --patients N --seed S``: generate and print a summary."""
    parser = argparse.ArgumentParser(
        prog="dicom-deid synth", description="Synthetic DICOM corpus with planted PHI."
    )
    parser.add_argument("out", type=Path, help="output folder (DICOM under OUT/dicom)")
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--instances-per-series", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="tiny images, for tests")
    parser.add_argument("--no-bad-inputs", action="store_true")
    parser.add_argument("--burned-in-fraction", type=float, default=0.25)
    args = parser.parse_args(argv)
    key = generate(
        args.out,
        patients=args.patients,
        seed=args.seed,
        instances_per_series=args.instances_per_series,
        small=args.small,
        bad_inputs=not args.no_bad_inputs,
        burned_in_fraction=args.burned_in_fraction,
    )
    print(
        f"{len(key.files)} DICOM files, {len(key.bad_inputs)} bad inputs, "
        f"{len(key.phi)} PHI strings -> {args.out / ANSWER_KEY_NAME}"
    )
    return 0
