"""Lines of burned-in text are judged by what banners really print: the header's values
cut, misread, romanised or abbreviated (text/fuzzy.py), and facilities, addresses, places
and person names that no header value spells (text/banner.py). Ordinary banner lines stay.

Most banners here are spelled differently from the header on purpose; each positive case
also checks that the exact matcher of free text (find_spans) does not find it, so the
case is carried by the pixel-only code under test.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

import dicom_deid.text as text_package
from dicom_deid.text.banner import LINE_DETECTORS, line_spans, tokens
from dicom_deid.text.context import PhiContext, context_values
from dicom_deid.text.find import find_spans
from dicom_deid.text.fuzzy import fuzzy_forms, fuzzy_matches, romaji_key
from dicom_deid.text.lexicon import fold, lexicon, romanise_kana

INSTITUTION = "Wexcombe Valley Imaging Partners of the North"
HEADER = PhiContext.from_values([
    ("ORGANIZATION_NAME", INSTITUTION),
    ("ORGANIZATION_NAME", "Department of Radiology"),
    ("STREET_ADDRESS", "220 Fenwick Road, Harlow Cross HC2 9LD"),
    ("PERSON_NAME", "Smith^John^Quincy"),
    ("PERSON_NAME", "=山田^太郎=やまだ^たろう"),
    ("PERSON_NAME", "Großkopf-Leutheusser^Anna-Maria"),
    ("MEDICAL_RECORD_NUMBER", "MRN1234567"),
    ("DATE", "20230514"),
])
ORDINARY = [
    "MI 1.1 TIs 0.4", "C5-1 ABD", "FR 25Hz", "DR 60", "G 50", "Depth 16 cm", "2D", "PWR 100%",
    "L12-5 MSK", "ABD, GEN", "LEFT, KIDNEY", "ST segment", "ST Elevation 0.2 mV", "CLINICAL",
    "Frq 4.0MHz Gn 50 DR 65", "CF 60% 3.1MHz WF Med PRF 1.5kHz", "Thyroid, Right",
    "Main Portal, Hepatic", "Upper Pole, Left", "Series 5 CT", "MR BRAIN", "120 ms Delay",
    "CTDIvol 11.1 mGy", "Total DLP 763.8 mGy-cm", "Apical 4 Chamber", "Gallbladder, Long",
    "Philips EPIQ 7G", "GE LOGIQ E9", "Bladder Pre-void Vol 245 ml", "Selector ST Value",
    "ASL Bolus Cut-off Delay Time", "Anatomic Structure, Space or Region", "Radiology",
    "Imaging Partners", "Department of Cardiology",
]


def _found(line: str, ctx: PhiContext | None) -> list[tuple[str, str]]:
    return [(line[s.start : s.end], s.info_type) for s in line_spans(line, ctx)]


def _fuzzy(line: str) -> list[str]:
    return [line[s.start : s.end] for s in fuzzy_matches(line, HEADER)]


# -- the header's own values, spelled as banners spell them ------------------------------------


@pytest.mark.parametrize("cut", [30, 24, 18, 13])
def test_institution_cut_to_a_field_width(cut: int) -> None:
    banner = INSTITUTION.upper()[:cut]
    # exact matching finds only the name's distinctive word, or a run of its whole words
    # that holds it, when the cut left them
    assert [banner[s.start:s.end] for s in find_spans(banner, HEADER)] in (
        [], ["WEXCOMBE"], ["WEXCOMBE VALLEY"], ["WEXCOMBE VALLEY IMAGING"])
    assert _fuzzy(banner), banner
    assert _found(f"  {banner}  ", HEADER)


@pytest.mark.parametrize("banner", [
    "Wexcomb Valley Imaging Partners",  # a letter lost in the identifying word
    "WEXC0MBE VALLEY IMAGlNG PARTNERS",  # look-alikes
    "Wexcornbe Valley Imaging Partners",  # "rn" read for "m": two edits on a long value
    "Wexconbe Valley Imaging Partmers",  # two substitutions
    "WexcombeValley ImagingPartners",  # spaces lost
])
def test_institution_read_with_ocr_noise(banner: str) -> None:
    # exact matching finds at most the distinctive word (or its stem, "Wexcomb") and the
    # run of whole words around it where they are intact; the fuzzy matching finds the
    # noisy name
    exact = [banner[s.start:s.end] for s in find_spans(banner, HEADER)]
    assert exact in ([], ["Wexcomb"], ["Wexcombe"], ["WexcombeValley ImagingPartners"])
    assert _fuzzy(banner), banner


def test_truncation_and_noise_on_a_value_matched_only_by_its_prefix() -> None:
    """A value of no word-matched type (a station, under Clean Descriptors a removed
    description): only the prefix form can find it."""
    ctx = PhiContext.from_values([("CONTEXT", "Kessington Echo Suite North Wing")])
    assert fuzzy_matches("KESSINGTON ECHO SUI", ctx)
    assert fuzzy_matches("Kesslngton Echo Suite", ctx)  # look-alike
    assert fuzzy_matches("Kesington Echo Suite No", ctx)  # one letter lost
    assert fuzzy_matches("Kesington Ech0 Swite North", ctx)  # two edits once 20 long
    assert fuzzy_matches("Kesinqton Echo Su", ctx) == []  # two edits in 15: too many
    assert fuzzy_matches("KESSINGTO", ctx) == []  # 9 characters: too short
    assert fuzzy_matches("Echo Suite North Wing", ctx) == []  # not its beginning


def test_a_prefix_must_reach_into_an_identifying_word() -> None:
    # "Department of" is the start of the header's department, but of many others too
    assert fuzzy_matches("Department of Cardiology", HEADER) == []
    assert fuzzy_matches("Imaging Partners of the North", HEADER) == []
    # a prefix of 10+ characters that is common, then a different distinctive word
    other = PhiContext.from_values([("ORGANIZATION_NAME", "General Hospital of Kessington")])
    assert fuzzy_matches("GENERAL HOSPITAL OF LONDON", other) == []


def test_institution_acronyms() -> None:
    segh = PhiContext.from_values([("ORGANIZATION_NAME", "St Elsewhere General Hospital")])
    for banner in ("SEGH Radiology", "S.E.G.H.", "Echo lab EGH"):
        assert fuzzy_matches(banner, segh), banner
    # the whole acronym is the sweep's too (probe 14: "TVH" for Thornbury Valley Hospital)
    assert [s.end - s.start for s in find_spans("SEGH Radiology", segh)] == [4]
    assert len(find_spans("S.E.G.H.", segh)) == 1 and not find_spans("Echo lab EGH", segh)
    assert fuzzy_matches("SEGH", HEADER) == []  # another institution's initials
    assert fuzzy_matches("Segh", segh) == []  # initials are written in capitals
    assert fuzzy_matches("WVIPN 2", HEADER)


def test_distinctive_words_of_institution_and_address() -> None:
    for banner in ("WEXCOMBE", "Fenwick Rd", "HARLOW CROSS"):
        assert fuzzy_matches(banner, HEADER), banner
    for banner in ("VALLEY VIEW", "NORTH", "Road"):  # common words of such names
        assert fuzzy_matches(banner, HEADER) == [], banner


@pytest.mark.parametrize("banner", [
    "J. SMITH", "SMITH J", "SMITH JQ", "Smith, J.Q.", "JOHN Q SMITH",  # found exactly too
])
def test_initials_with_the_family_name(banner: str) -> None:
    assert _found(banner, HEADER)


@pytest.mark.parametrize("banner", ["SMlTH, J", "SM1TH J", "GROSSKOPF LEUTHEUSS"])
def test_names_misread(banner: str) -> None:
    assert find_spans(banner, HEADER) == []
    assert _fuzzy(banner), banner


@pytest.mark.parametrize("banner", ["SMITHJOHN", "JOHNSMITH", "SmithJohn"])
def test_names_run_together_are_found_exactly(banner: str) -> None:
    assert [banner[s.start:s.end] for s in find_spans(banner, HEADER)] == [banner]


@pytest.mark.parametrize("banner", ["YAMADA TARO", "Yamada Tarō", "YAMADA TAROU", "TAROH",
                                    "ヤマダ タロウ", "タロー"])
def test_kana_reading_as_romaji(banner: str) -> None:
    """The header holds the name in kanji and kana only; the banner in romaji or katakana.
    The exact matcher (the sweep's too) finds the other script and the romaji with and
    without the long vowel (an external probe: "YAMADA TAROU" released for やまだ^たろう);
    the fuzzy one also the spellings it does not make ("TAROH", "タロー")."""
    assert bool(find_spans(banner, HEADER)) == (banner not in ("TAROH", "タロー"))
    assert _fuzzy(banner), banner


def test_romanisation() -> None:
    assert romanise_kana("やまだ") == "yamada"
    assert romanise_kana("たろう") == "tarou"
    assert romanise_kana("しょうへい") == "shouhei"
    assert romanise_kana("きっちょう") == "kitchou"
    assert romanise_kana("タロー") == "taroo"
    assert romanise_kana("山田") is None  # kanji need a dictionary: not guessed
    assert romaji_key("Shouhei") == romaji_key("Syohei") == romaji_key("SHŌHEI")
    assert romaji_key("Ohno") == romaji_key("Ono") == romaji_key("Oono")


def test_ids_read_with_look_alikes() -> None:
    for banner in ("MRN 12345G7", "ID 1Z34567", "MRN1234S67"):
        assert find_spans(banner, HEADER) == []
        assert _fuzzy(banner), banner
    assert fuzzy_matches("ID 1234568", HEADER) == []  # a different number


def test_the_exact_matcher_stays_exact() -> None:
    """PhiContext.matches (free text, the residual sweep) is not loosened."""
    assert list(HEADER.matches("SMlTH")) == []
    cut = INSTITUTION[:30]  # "Wexcombe Valley Imaging Partn": the run of its whole words
    assert [cut[m.start:m.end] for m in HEADER.matches(cut)] == ["Wexcombe Valley Imaging"]
    assert [m.info_type for m in HEADER.matches("SMITH")] == ["PERSON_NAME"]


def test_forms_are_made_once_per_set_of_values() -> None:
    """Institution and patient recur from file to file: their forms are not made again."""
    one = PhiContext.from_values([("ORGANIZATION_NAME", INSTITUTION)])
    two = PhiContext.from_values([("ORGANIZATION_NAME", INSTITUTION)])
    assert fuzzy_forms(context_values(one)) is fuzzy_forms(context_values(two))
    assert not fuzzy_forms(context_values(PhiContext.from_values([("DATE", "20230514")])))


# -- generic detectors: no header value needed ---------------------------------------------------


ORGANISATIONS = [
    "Massachusetts General Hospital", "KEIO UNIV HOSP", "Royal Infirmary", "Mayo Clinic",
    "Riverside Medical Center", "Northgate Imaging Centre", "Summit Radiology Associates",
    "Klinikum Nord", "Städtisches Krankenhaus Kiel", "Kantonsspital Aarau",
    "Radiologische Praxis am Markt", "UNIVERSITÄTSKLINIKUM ESSEN", "UKE Hamburg",
    "Hôpital Necker", "HOPITAL SAINT-LOUIS", "Clinique du Parc", "CHU de Nantes",
    "Hospital Universitario La Paz", "Clínica Dávila", "Ospedale Niguarda",
    "Policlinico Gemelli", "Casa di Cura Villa Maria", "Ziekenhuis Rijnstate",
    "Maartenskliniek", "UZ Leuven", "AZ Groeninge", "Centro Hospitalar de Lisboa",
    "Clínica de Santo António", "東京大学医学部附属病院", "さくらクリニック", "中央医療センター",
    "TOKYO DAIGAKU BYOIN", "Seirei Byouin", "Kameda Iryo Center", "Rigshospitalet",
]


@pytest.mark.parametrize("line", ORGANISATIONS)
def test_facility_names(line: str) -> None:
    assert find_spans(line, None) == []
    assert "ORGANIZATION_NAME" in {t for _, t in _found(line, None)} or \
        "LOCATION" in {t for _, t in _found(line, None)}, line


@pytest.mark.parametrize(("line", "info_type"), [
    ("12 Harbour Road", "STREET_ADDRESS"), ("221B Baker Street", "STREET_ADDRESS"),
    ("1600 Amphitheatre Pkwy", "STREET_ADDRESS"), ("Mortlake Street", "STREET_ADDRESS"),
    ("12 rue de la Paix", "STREET_ADDRESS"), ("Avenue des Champs-Élysées", "STREET_ADDRESS"),
    ("Via Roma 12", "STREET_ADDRESS"), ("Calle de Alcalá 45", "STREET_ADDRESS"),
    ("Rua Augusta 120", "STREET_ADDRESS"), ("Maximilianstraße 10", "STREET_ADDRESS"),
    ("Berliner Allee 12", "STREET_ADDRESS"), ("Hauptstr. 5", "STREET_ADDRESS"),
    ("Kerkstraat 12", "STREET_ADDRESS"), ("Herengracht 502", "STREET_ADDRESS"),
    ("P.O. Box 77", "STREET_ADDRESS"),
    ("10115 Berlin", "LOCATION"), ("D-80331 München", "LOCATION"),
    ("1012 AB Amsterdam", "LOCATION"), ("SW1A 1AA", "LOCATION"),
    ("Boston, MA 02114", "LOCATION"), ("東京都新宿区西新宿", "LOCATION"), ("5丁目", "LOCATION"),
    ("St. Mary's", "LOCATION"), ("ST ELSEWHERE", "LOCATION"), ("Sankt Gallen", "LOCATION"),
    ("San Diego", "LOCATION"), ("Santa Monica", "LOCATION"),
])
def test_addresses_and_places(line: str, info_type: str) -> None:
    assert find_spans(line, None) == []
    assert info_type in {t for _, t in _found(line, None)}, line


@pytest.mark.parametrize("line", [
    "DOE^JANE", "Doe^Jane^M", "DOE, JANE", "Doe, Jane M.", "DOE, J.", "O'BRIEN, SEAN",
    "MÜLLER, HANS-PETER", "van der Berg, Jan", "Nguyen, Thi Huong", "Dr Ruth", "DR. HOUSE",
    "Prof. Müller", "Frau Weber", "Dott. Rossi", "Patient: Jane Doe", "Name: DOE JANE",
    "Nom : DUPONT Marie", "氏名：山田太郎", "山田様", "김민수님", "ABD GEN   DOE, JANE   2D",
])
def test_person_name_layouts_whoever_they_name(line: str) -> None:
    """Names of people the header does not hold (another system's banner, another
    patient): found from the layout."""
    ctx = PhiContext.from_values([("PERSON_NAME", "Smith^John")])
    assert find_spans(line, ctx) == []
    assert "PERSON_NAME" in {t for _, t in _found(line, ctx)}, line


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_banner_lines_are_kept(line: str) -> None:
    assert _found(line, None) == []
    assert _found(line, HEADER) == []


def test_a_japanese_postal_code_is_a_location() -> None:
    # the generic phone detector reads its digits as a phone number; the mark is longer
    assert _found("〒160-0023", None) == [("〒160-0023", "LOCATION")]


def test_include_and_exclude() -> None:
    line = "Klinikum Nord   DOE^JANE"
    assert {t for _, t in _found(line, None)} == {"ORGANIZATION_NAME", "PERSON_NAME"}
    only_names = line_spans(line, None, include=frozenset({"PERSON_NAME"}))
    assert [line[s.start : s.end] for s in only_names] == ["DOE^JANE"]
    assert line_spans("Klinikum Nord", None, exclude=frozenset({"ORGANIZATION_NAME"})) == []
    # an excluded date still shields what it holds from the other detectors
    assert line_spans("20230514", HEADER, exclude=frozenset({"DATE"})) == []


def test_spans_are_sorted_and_disjoint() -> None:
    line = "DOE, JANE  12 Harbour Road  Klinikum Nord  14/05/2023"
    spans = line_spans(line, HEADER)
    assert len(spans) == 4
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


def test_tokens_keep_what_follows_each_word() -> None:
    toks = tokens("DOE, J.  St. Mary's")
    assert [(t.text, t.after) for t in toks] == [
        ("DOE", ", "), ("J", ".  "), ("St", ". "), ("Mary's", "")]
    assert [name for name, _ in LINE_DETECTORS] == [
        "ORGANIZATION_NAME", "STREET_ADDRESS", "LOCATION", "PERSON_NAME"]


# -- the word lists --------------------------------------------------------------------------------


def test_word_lists_cover_the_languages() -> None:
    lex = lexicon()
    for word in ("hospital", "klinikum", "krankenhaus", "hopital", "clinique", "clinica",
                 "ospedale", "ziekenhuis", "kliniek", "byoin", "praxis", "infirmary"):
        assert word in lex.facility_words, word
    assert {"病院", "医院", "クリニック"} <= set(lex.facility_cjk)
    assert {"CHU", "UKE"} <= lex.facility_acronyms
    assert {"uz", "az"} == {fold(a) for a in lex.acronyms_before_name} & {"uz", "az"}
    assert {"rue", "via", "calle", "rua"} <= lex.street_before
    assert {"strasse", "straat", "laan", "weg"} <= set(lex.street_suffixes)
    assert fold("Straße") == "strasse" and fold("HÔPITAL") == "hopital"


def test_word_lists_travel_with_the_wheel() -> None:
    """Every data file of the package is named by a package-data pattern."""
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["dicom_deid.text"]
    data = Path(text_package.__file__).parent / "data"
    files = [p.name for p in data.iterdir() if p.is_file()]
    assert len(files) >= 5
    for name in files:
        assert any(fnmatch(f"data/{name}", p) for p in patterns), name
    for name in ("facilities.tsv", "addresses.tsv", "people.tsv"):
        rows = [r for r in (data / name).read_text().splitlines() if r and not r.startswith("#")]
        assert all(re.fullmatch(r"[a-z_]+\t[a-z]{2}\t[^\t]+", r) for r in rows), name
