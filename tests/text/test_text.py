"""Sensitive text is found in free text (context values and generic detectors) and
transformed as PS3.15 Clean Descriptors and Google TextConfig say."""

from __future__ import annotations

import datetime
import itertools
import random

import pytest

import dicom_deid.text.context as context_module
from dicom_deid.config.model import INFO_TYPES, TextConfig, Transformation, TransformationKind
from dicom_deid.text.banner import clean_descriptor
from dicom_deid.text.context import PhiContext
from dicom_deid.text.find import find_spans
from dicom_deid.text.spans import CTX_MARKER, Span
from dicom_deid.text.transform import apply_text_config, transform_whole_value

VALUES = [
    ("PERSON_NAME", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("MEDICAL_RECORD_NUMBER", "MRN1234567"),
    ("DATE", "20230514"),
    ("ORGANIZATION_NAME", "St Elsewhere Hospital"),
    ("PERSON_NAME", "Li^Wei"),
]
SHIFT = datetime.timedelta(days=10)


@pytest.fixture(scope="module")
def ctx() -> PhiContext:
    return PhiContext.from_values(VALUES)


def _hasher(value: str) -> str:
    return f"H({value})"


def _shifter(day: datetime.date) -> datetime.date:
    return day + SHIFT


def _apply(
    text: str, ctx: PhiContext | None, *transformations: Transformation, **kw: object
) -> str:
    config = TextConfig(transformations=transformations, **kw)  # type: ignore[arg-type]
    return apply_text_config(text, ctx, config, hasher=_hasher, date_shifter=_shifter)


def _found(text: str, ctx: PhiContext | None) -> list[tuple[str, str, bool]]:
    return [(text[s.start : s.end], s.info_type, s.from_context) for s in find_spans(text, ctx)]


# --- context matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Patient TAROU YAMADA arrived",
        "patient tarou yamada arrived",
        "Patient Yamada, Tarou arrived",
        "Patient Yamada^Tarou arrived",
        "Patient yamada tarou arrived",
    ],
)
def test_names_in_any_order_and_case(ctx: PhiContext, text: str) -> None:
    assert clean_descriptor(text, ctx) == f"{text.split()[0]} {CTX_MARKER} arrived"


def test_japanese_names_inside_japanese_text(ctx: PhiContext) -> None:
    assert clean_descriptor("山田太郎様の胸部CT", ctx) == "[CTX]様の胸部CT"
    assert clean_descriptor("担当: 太郎、検査日不明", ctx) == "担当: [CTX]、検査日不明"
    assert clean_descriptor("やまだたろうさん", ctx) == "[CTX]さん"
    spans = find_spans("山田太郎様", ctx)
    assert spans == [Span(0, 4, "PERSON_NAME", True)]


def test_no_match_inside_longer_words(ctx: PhiContext) -> None:
    for text in ("Oblique view", "Linear probe", "Weight 60", "Tarouxyzzy", "Yamadastadt",
                 "Clinic", "xyzyamada"):
        assert find_spans(text, ctx) == [], text
    # A name of 5 letters or more with up to four glued on is that name, inflected or
    # with an initial: "Yamadas", "Kowalczyka", "KowalczykJ" (an external probe); with
    # one or two initials in front or digits on either side too ("tyamada", a login:
    # probe 12; "tyyamada": probe 14).
    for text in ("Yamadas", "Tarouxyz", "YamadaT", "xYamada", "xyyamada", "Yamada02"):
        assert [s.info_type for s in find_spans(text, ctx)] == ["PERSON_NAME"], text
    assert clean_descriptor("Dr Li reviewed", ctx) == "Dr [CTX] reviewed"


def test_latin_name_next_to_japanese_text_still_matches(ctx: PhiContext) -> None:
    assert clean_descriptor("患者Yamadaさん", ctx) == "患者[CTX]さん"


def test_context_spans_take_the_info_type_they_were_given(ctx: PhiContext) -> None:
    text = "Tarou Yamada, MRN1234567, St. Elsewhere Hospital, 14 May 2023"
    assert _found(text, ctx) == [
        ("Tarou Yamada", "PERSON_NAME", True),
        ("MRN1234567", "MEDICAL_RECORD_NUMBER", True),
        ("St. Elsewhere Hospital", "ORGANIZATION_NAME", True),
        ("14 May 2023", "DATE", True),
    ]


@pytest.mark.parametrize(
    "text", ["MRN1234567", "mrn 1234567", "MRN: 1234567", "1234567", "ID 01234567"]
)
def test_ids_also_without_prefix_and_leading_zeros(ctx: PhiContext, text: str) -> None:
    (span,) = find_spans(text, ctx)
    assert span.from_context and span.info_type == "MEDICAL_RECORD_NUMBER"


@pytest.mark.parametrize("text", ["MRN 123-4567", "mrn 12 34 567", "MRN: 12/345/67",
                                  "ID 0123 - 4567", "MRN1234-567"])
def test_ids_of_six_digits_or_more_also_written_in_groups(ctx: PhiContext, text: str) -> None:
    (span,) = find_spans(text, ctx)
    assert span.from_context and span.info_type == "MEDICAL_RECORD_NUMBER"
    assert text[span.start:span.end].replace(" ", "").replace("-", "").replace(
        "/", "").replace(":", "").lower().endswith("1234567")


def test_grouped_digits_are_an_id_only_as_a_whole_token() -> None:
    mrn = PhiContext.from_values([("MEDICAL_RECORD_NUMBER", "48213977")])
    assert clean_descriptor("MRN 48-21-39-77, again 4821 3977, ID 48.213.977.", mrn) == \
        "MRN [CTX], again [CTX], ID [CTX]."
    # Letters touching a long number do not make it another one (an external probe).
    assert [text[m.start:m.end] for text in ("MRN48213977 CT", "48213977a")
            for m in mrn.matches(text)] == ["48213977", "48213977"]
    for other in ("ref 148-21-39-77", "48-21-39-770", "width 48 21", "1.2.48.21.39.77",
                  "48-21-39"):
        assert clean_descriptor(other, mrn) == other
    short = PhiContext.from_values([("MEDICAL_RECORD_NUMBER", "48213")])  # 5 digits: as is
    assert clean_descriptor("48-213 and 48213", short) == "48-213 and [CTX]"


def test_glued_names_escapes_and_grouped_ids_only_where_they_are_the_value() -> None:
    """Probe 12's forms are found, and what merely holds their characters is not: three
    letters in front are another word, a longer number is another number."""
    name = PhiContext.from_values([("PERSON_NAME", "KOWALSKI^JANINA")])
    assert [t[m.start:m.end] for t in ("jkowalski", "KOWALSKI01", "pt=x%20Janina",
                                      "1957kowalski") for m in name.matches(t)] == [
        "jkowalski", "KOWALSKI01", "Janina", "1957kowalski"]
    assert not list(name.matches("xyzkowalski")) and not list(name.matches("%20xkowals"))
    mrn = PhiContext.from_values([("MEDICAL_RECORD_NUMBER", "MRN4821397")])
    assert clean_descriptor("MRN 4,821,397 and 4.821.397", mrn) == "[CTX] and [CTX]"
    for other in ("14,821,397", "4,821,3970", "1.4.821.397", "4,821"):
        assert clean_descriptor(other, mrn) == other
    birth = PhiContext.from_values([("DATE", "19570314")])
    assert clean_descriptor("DOB 140357, 031457, 1957 Mar 14", birth) == \
        "DOB [CTX], [CTX], [CTX]"
    assert not [m for t in ("ref 1403570", "2140357", "19571403") for m in birth.matches(t)]


@pytest.mark.parametrize("text", ["DWI b 0 50 400 800", "kV 80 100 120 140",
                                  "Matrix 256 256 128", "Angles 0 45 90 135 180",
                                  "FOV 220 220 144"])
def test_imaging_parameter_lists_are_no_phone_numbers(text: str) -> None:
    """Probe 14: any three number groups in a cleaned description became a phone."""
    assert clean_descriptor(text, None) == text


@pytest.mark.parametrize("text", ["tel 020 7946 0958", "ph 555 123 4567", "06 12 34 56 78",
                                  "+44 20 7946 0958"])
def test_phone_numbers_are_still_phone_numbers(text: str) -> None:
    assert "[PHONE_NUMBER]" in clean_descriptor(text, None)


def test_ids_with_leading_zeros() -> None:
    zeros = PhiContext.from_values([("MEDICAL_RECORD_NUMBER", "00012345")])
    assert clean_descriptor("ref 12345 and 00012345", zeros) == "ref [CTX] and [CTX]"
    assert find_spans("ref 123456", zeros) == [Span(4, 10, "MEDICAL_RECORD_NUMBER")]  # generic


@pytest.mark.parametrize(
    "text",
    [
        "20230514",
        "2023-05-14",
        "2023/05/14",
        "2023/5/14",
        "14/05/2023",
        "05/14/2023",
        "5/14/2023",
        "14.05.2023",
        "14-05-2023",
        "14 May 2023",
        "14th May 2023",
        "14-MAY-2023",
        "May 14, 2023",
        "May 14 2023",
        "2023年5月14日",
        "2023年05月14日",
    ],
)
def test_context_dates_in_each_format(ctx: PhiContext, text: str) -> None:
    assert _found(f"seen {text}.", ctx) == [(text, "DATE", True)]


def test_other_values(ctx: PhiContext) -> None:
    phone = PhiContext.from_values([("PHONE_NUMBER", "+81 3-1234-5678"), ("AGE", "045Y")])
    assert clean_descriptor("call 03 1234 5678", phone) == "call [CTX]"
    assert clean_descriptor("a 45-year-old man, 45 yo, 45歳", phone) == "a [CTX] man, [CTX], [CTX]"
    assert clean_descriptor("45 mm lesion", phone) == "45 mm lesion"


def test_short_values_and_components_are_ignored() -> None:
    assert not PhiContext.from_values([("PERSON_NAME", "A^B"), ("CONTEXT", "X")])
    small = PhiContext.from_values([("PERSON_NAME", "Ng^A")])
    assert clean_descriptor("Ng A", small) == "[CTX] A"


def test_multiple_values_are_split() -> None:
    many = PhiContext.from_values([("MEDICAL_RECORD_NUMBER", "AB123456\\CD654321")])
    assert clean_descriptor("AB123456 / CD654321", many) == "[CTX] / [CTX]"


def test_unknown_info_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown info type 'FIRST_NAME'"):
        PhiContext.from_values([("FIRST_NAME", "Tarou")])


def test_repr_never_shows_values(ctx: PhiContext) -> None:
    assert "Yamada" not in repr(ctx)
    assert "1234567" not in repr(ctx)


def test_forms_are_made_once_per_patient_and_only_when_a_text_needs_them() -> None:
    context_module._forms_of.cache_clear()
    first = PhiContext.from_values(VALUES)
    assert clean_descriptor("nothing to see", first) == "nothing to see"
    assert context_module._forms_of.cache_info().misses == 0  # cleared by its anchors
    assert clean_descriptor("Yamada", first) == "[CTX]"
    assert clean_descriptor("Yamada", PhiContext.from_values(list(VALUES))) == "[CTX]"
    info = context_module._forms_of.cache_info()
    assert info.misses == 1 and info.hits >= 1  # made for the first context, reused


_ANCHOR_VALUES = [
    ("PERSON_NAME", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("PERSON_NAME", "van der Berg^Jan-Willem^J.^Dr.^Jr."),
    ("PERSON_NAME", "O'Brien, Mary^Ann,Jo"),
    ("PERSON_NAME", "J. R.^Ng"),
    ("PERSON_NAME", "Smith,Jr^St. John\\Doe^Jane"),
    ("PERSON_NAME", "Großkopf^Sören"),
    ("ORGANIZATION_NAME", "St. Mary's Hospital, Dept. of Radiology"),
    ("ORGANIZATION_NAME", "Klinikum^Rechts der Isar\r\nMünchen"),
    ("STREET_ADDRESS", "12 Main St.^Springfield, IL 62704"),
    ("LOCATION", "東京都^千代田区"),
    ("DATE", "19560312"),
    ("DATE", "12031956"),
    ("DATE", "20241301"),
    ("DATE", "1956-03-12"),
    ("MEDICAL_RECORD_NUMBER", "MRN-000123456"),
    ("MEDICAL_RECORD_NUMBER", "AB12"),
    ("MEDICAL_RECORD_NUMBER", "TVHPAS"),
    ("DATE", "19570314"),
    ("ORGANIZATION_NAME", "Thornbury Valley Hospital"),
    ("PERSON_NAME", "KOWALSKI^JANINA"),
]


@pytest.mark.parametrize(("info_type", "raw"), _ANCHOR_VALUES)
def test_every_form_anchor_contains_one_of_the_values_anchors(info_type: str, raw: str) -> None:
    """Texts are cleared by the value's anchors before any form is made: that is only
    sound if every form's own anchor contains one of them."""
    anchors = context_module._anchors_of(info_type, raw)
    forms = context_module._variants_of(info_type, raw)
    assert forms, raw
    for form, _ in forms:
        assert _covered(form.anchor, anchors), (raw, form.anchor)


def _covered(anchor: str, anchors: tuple[str, ...]) -> bool:
    """Whether a text holding a form's anchor passes a value's screening: it holds one of
    the value's anchors once despaced."""
    return any(a in context_module.despaced(anchor) for a in anchors)


# --- generic detectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "info_type"),
    [
        ("2023-05-14", "DATE"),
        ("2023-05-14T10:20:30+09:00", "DATE"),
        ("2023-05-14 10:20", "DATE"),
        ("20230514", "DATE"),
        ("20230514102030.123", "DATE"),
        ("2023/05/14", "DATE"),
        ("14/05/2023", "DATE"),
        ("05/14/2023", "DATE"),
        ("14.05.2023", "DATE"),
        ("3 Feb 1978", "DATE"),
        ("February 3, 1978", "DATE"),
        ("1978年2月3日", "DATE"),
        ("(555) 123-4567", "PHONE_NUMBER"),
        ("555-123-4567", "PHONE_NUMBER"),
        ("+44 20 7946 0958", "PHONE_NUMBER"),
        ("03-1234-5678", "PHONE_NUMBER"),
        ("555-0134", "PHONE_NUMBER"),
        ("+47 912 34 567", "PHONE_NUMBER"),  # international numbers, grouped any way
        ("+33 1 23 45 67 89", "PHONE_NUMBER"),
        ("+49 30 1234567", "PHONE_NUMBER"),
        ("06 12 34 56 78", "PHONE_NUMBER"),  # in pairs
        ("06.12.34.56.78", "PHONE_NUMBER"),
        ("tarou.yamada@example.org", "EMAIL_ADDRESS"),
        ("123-45-6789", "US_SOCIAL_SECURITY_NUMBER"),
        ("MRN9876543", "MEDICAL_RECORD_NUMBER"),
        ("9876543", "MEDICAL_RECORD_NUMBER"),
        ("45 yo", "AGE"),
        ("45-year-old", "AGE"),
        ("45Y", "AGE"),
        ("045Y", "AGE"),
        ("aged 45", "AGE"),
        ("https://pacs.example.org/viewer?study=1", "URL"),
        ("www.example.org/a", "URL"),
        ("192.168.10.20", "IP_ADDRESS"),
        ("fe80::1ff:fe23:4567:890a", "IP_ADDRESS"),
    ],
)
def test_generic_detectors(text: str, info_type: str) -> None:
    assert _found(f"note: {text}; end", None) == [(text, info_type, False)]


@pytest.mark.parametrize(
    "text",
    [
        "Pixel spacing 0.488281 mm",
        "UID 1.2.840.10008.5.1.4.1.1.2",
        "T2 FLAIR AX 5mm",
        "512 x 512 matrix",
        "time 12:30:45",
        "Series 3 of 12",
        "CT 120 kV 250 mAs",
        "offset +120 mm, +12.5 dB",
        "Series 12 34 56 78 90",
        "3D reconstruction",
    ],
)
def test_generic_detectors_leave_ordinary_values(text: str) -> None:
    assert find_spans(text, None) == [], _found(text, None)


def test_longest_span_wins_and_spans_are_sorted(ctx: PhiContext) -> None:
    text = "mail tarou.yamada@example.org on 2023-05-14T10:00 id MRN1234567"
    assert _found(text, ctx) == [
        ("tarou.yamada@example.org", "EMAIL_ADDRESS", False),
        ("2023-05-14T10:00", "DATE", False),
        ("MRN1234567", "MEDICAL_RECORD_NUMBER", True),
    ]
    spans = find_spans(text, ctx)
    assert spans == sorted(spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


def test_include_and_exclude() -> None:
    text = "born 1978-02-03, tel 555-123-4567"
    assert _found(text, None) == [
        ("1978-02-03", "DATE", False),
        ("555-123-4567", "PHONE_NUMBER", False),
    ]
    assert [s.info_type for s in find_spans(text, None, include=frozenset({"DATE"}))] == ["DATE"]
    assert [s.info_type for s in find_spans(text, None, exclude=frozenset({"DATE"}))] == [
        "PHONE_NUMBER"
    ]
    # An excluded date is not re-read as a record number.
    assert find_spans("on 20230514", None, exclude=frozenset({"DATE"})) == []


# --- clean descriptors -----------------------------------------------------------------------


def test_clean_descriptor_markers(ctx: PhiContext) -> None:
    text = "Yamada Tarou, St Elsewhere Hospital, call 555-123-4567 on 2024-01-02"
    assert clean_descriptor(text, ctx) == "[CTX], [CTX], call [PHONE_NUMBER] on [DATE]"
    assert clean_descriptor("CT CHEST W/O CONTRAST", ctx) == "CT CHEST W/O CONTRAST"
    assert clean_descriptor("", ctx) == ""
    assert clean_descriptor("Visit 2024-01-02", None) == "Visit [DATE]"


@pytest.mark.parametrize(
    "text",
    [
        "Yamada Tarou, St Elsewhere Hospital, call 555-123-4567 on 2024-01-02",
        "Tarou2023-05-14",
        "[CTX] Yamada [DATE] 2023-05-14",
        "山田太郎様 2023年5月14日 MRN1234567",
        "Li Wei ctx [CTX][CTX] 45 yo",
    ],
)
def test_clean_descriptor_is_idempotent(ctx: PhiContext, text: str) -> None:
    once = clean_descriptor(text, ctx)
    assert clean_descriptor(once, ctx) == once


def test_placeholders_are_never_detected() -> None:
    named = PhiContext.from_values([("PERSON_NAME", "Ctx^Date")])
    assert clean_descriptor("[CTX] [DATE] [PERSON_NAME]", named) == "[CTX] [DATE] [PERSON_NAME]"


# --- TextConfig transformations -------------------------------------------------------------

TEXT = "Tarou Yamada seen 14 May 2023, mail t@example.org"


def test_no_transformations_replace_every_span_with_its_info_type(ctx: PhiContext) -> None:
    assert _apply(TEXT, ctx) == "[PERSON_NAME] seen [DATE], mail [EMAIL_ADDRESS]"


def test_replace_redact_mask_and_hash(ctx: PhiContext) -> None:
    names = ("PERSON_NAME",)
    assert _apply(TEXT, ctx, Transformation(TransformationKind.REPLACE_WITH_INFO_TYPE, names)) == (
        "[PERSON_NAME] seen 14 May 2023, mail t@example.org"
    )
    assert _apply(TEXT, ctx, Transformation(TransformationKind.REDACT, names)) == (
        " seen 14 May 2023, mail t@example.org"
    )
    masked = _apply(TEXT, ctx, Transformation(TransformationKind.CHARACTER_MASK, names, "#"))
    assert masked == "##### ###### seen 14 May 2023, mail t@example.org"
    hashed = _apply(TEXT, ctx, Transformation(TransformationKind.CRYPTO_HASH, names))
    assert hashed == "H(Tarou Yamada) seen 14 May 2023, mail t@example.org"


def test_date_shift_writes_the_same_format(ctx: PhiContext) -> None:
    text = (
        "a 14 May 2023 b May 14, 2023 c 14.05.2023 d 2023/5/14 e 2023年5月14日 "
        "f 20230514123000 g 2023-05-14T10:00:00Z h 05/14/2023 i 14/05/2023 j 31 Dec 2023"
    )
    shifted = _apply(text, ctx, Transformation(TransformationKind.DATE_SHIFT))
    assert shifted == (
        "a 24 May 2023 b May 24, 2023 c 24.05.2023 d 2023/5/24 e 2023年5月24日 "
        "f 20230524123000 g 2023-05-24T10:00:00Z h 05/24/2023 i 24/05/2023 j 10 Jan 2024"
    )


def test_date_shift_leaves_other_info_types(ctx: PhiContext) -> None:
    assert _apply(TEXT, ctx, Transformation(TransformationKind.DATE_SHIFT)) == (
        "Tarou Yamada seen 24 May 2023, mail t@example.org"
    )


def test_only_configured_info_types_change(ctx: PhiContext) -> None:
    result = _apply(TEXT, ctx, Transformation(TransformationKind.REDACT, ("EMAIL_ADDRESS",)))
    assert result == "Tarou Yamada seen 14 May 2023, mail "


def test_additional_transformations_override(ctx: PhiContext) -> None:
    config = TextConfig(
        additional_transformations=(Transformation(TransformationKind.DATE_SHIFT, ("DATE",)),)
    )
    result = apply_text_config(TEXT, ctx, config, hasher=_hasher, date_shifter=_shifter)
    assert result == "[PERSON_NAME] seen 24 May 2023, mail [EMAIL_ADDRESS]"
    config = TextConfig(
        transformations=(Transformation(TransformationKind.REDACT),),
        additional_transformations=(
            Transformation(TransformationKind.CRYPTO_HASH, ("EMAIL_ADDRESS",)),
        ),
    )
    result = apply_text_config(TEXT, ctx, config, hasher=_hasher, date_shifter=_shifter)
    assert result == " seen , mail H(t@example.org)"


def test_specific_transformation_beats_catch_all(ctx: PhiContext) -> None:
    result = _apply(
        TEXT,
        ctx,
        Transformation(TransformationKind.REDACT),
        Transformation(TransformationKind.CHARACTER_MASK, ("PERSON_NAME",)),
    )
    assert result == "***** ****** seen , mail "


def test_excluded_info_types_are_never_transformed(ctx: PhiContext) -> None:
    result = _apply(TEXT, ctx, exclude_info_types=("DATE", "EMAIL_ADDRESS"))
    assert result == "[PERSON_NAME] seen 14 May 2023, mail t@example.org"


def test_context_type_replaces_with_ctx() -> None:
    context = PhiContext.from_values([("CONTEXT", "Project Falcon")])
    assert _apply("Protocol project falcon v2", context) == "Protocol [CTX] v2"


# --- whole values ----------------------------------------------------------------------------


def _whole(value: str, info_type: str, *transformations: Transformation) -> str:
    config = TextConfig(transformations=transformations)
    return transform_whole_value(value, info_type, config, _hasher, _shifter)


def test_whole_person_name() -> None:
    name = "Yamada^Tarou=山田^太郎"
    assert _whole(name, "PERSON_NAME") == "[PERSON_NAME]"
    mask = Transformation(TransformationKind.CHARACTER_MASK)
    assert _whole(name, "PERSON_NAME", mask) == "******^*****=**^**"
    assert _whole(name, "PERSON_NAME", Transformation(TransformationKind.CRYPTO_HASH)) == (
        f"H({name})"
    )
    assert _whole(name, "PERSON_NAME", Transformation(TransformationKind.REDACT)) == ""


def test_whole_dates() -> None:
    shift = Transformation(TransformationKind.DATE_SHIFT)
    assert _whole("20230514", "DATE", shift) == "20230524"
    assert _whole("20230514\\20231225", "DATE", shift) == "20230524\\20240104"
    assert _whole("20230514101500.25+0900", "DATE", shift) == "20230524101500.25+0900"
    assert _whole("2023.05.14", "DATE", shift) == "2023.05.24"
    assert _whole("202305", "DATE", shift) == "202305"  # month precision: 1 May + 10 days
    assert _whole("garbage", "DATE", shift) == ""  # never kept when it cannot be shifted
    assert _whole("045Y", "AGE", shift) == "045Y"  # dateShift leaves non-dates


def test_whole_value_exclusion_and_uncovered_types() -> None:
    config = TextConfig(exclude_info_types=("PERSON_NAME",))
    assert transform_whole_value("Yamada^Tarou", "PERSON_NAME", config, _hasher, _shifter) == (
        "Yamada^Tarou"
    )
    redact_dates = Transformation(TransformationKind.REDACT, ("DATE",))
    assert _whole("Yamada^Tarou", "PERSON_NAME", redact_dates) == "Yamada^Tarou"


# --- scale -----------------------------------------------------------------------------------


def test_many_values_and_long_texts_stay_linear(ctx: PhiContext) -> None:
    """A sanity check, not a benchmark: no catastrophic backtracking on large inputs."""
    report = " ".join(["No acute abnormality. 12.5 mm nodule, 2023-05-14."] * 2000)
    cleaned = clean_descriptor(report + " Tarou Yamada", ctx)
    assert cleaned.endswith("[CTX]")
    assert cleaned.count("[CTX]") == 2001  # the context date, each time
    many = [("MEDICAL_RECORD_NUMBER", f"ID{n:08d}") for n in range(300)]
    big = PhiContext.from_values(many)
    assert clean_descriptor("ref ID00000299 ok", big) == "ref [CTX] ok"
    assert len(INFO_TYPES) == 13


@pytest.mark.parametrize(
    "info_type", sorted(context_module._WORD_TYPES | {"MEDICAL_RECORD_NUMBER", "CONTEXT"}))
def test_form_anchors_are_covered_on_random_values(info_type: str) -> None:
    """The same containment on 600 random strings built from the characters the splits
    care about (fixed seed: the same strings every run)."""
    rng = random.Random(12)
    alphabet = "abXY  ,,..^^=\\\r\n-:#'é山田000123"
    for _ in range(600):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        anchors = context_module._anchors_of(info_type, raw)
        for form, _ in context_module._variants_of(info_type, raw):
            assert _covered(form.anchor, anchors), (raw, form.anchor)


@pytest.mark.parametrize(("stored", "written"), [
    ("MACDONALD^ANNA", "McDonald"), ("MACDONALD^ANNA", "Mc Donald"),
    ("MACDONALD^ANNA", "M'Donald"), ("MCDONALD^ANNA", "MacDonald"),
    ("MCDONALD^ANNA", "Mac Donald"), ("MACKENZIE^JO", "McKenzie"),
    ("MC DONALD^ANNA", "MacDonald"),
])
def test_a_mac_surname_is_found_in_its_other_spellings(stored: str, written: str) -> None:
    """An external probe released "McDonald" for MACDONALD, and back."""
    ctx = PhiContext.from_values([("PERSON_NAME", stored)])
    assert clean_descriptor(f"seen by {written} today", ctx) == "seen by [CTX] today"


def test_a_mac_surname_does_not_take_other_mac_names() -> None:
    ctx = PhiContext.from_values([("PERSON_NAME", "MACDONALD^ANNA")])
    assert clean_descriptor("McKenzie, the machine, Mackintosh", ctx) == (
        "McKenzie, the machine, Mackintosh")


@pytest.mark.parametrize(("text", "expected"), [
    ("Prior for DUNSTERFORD^MARGERY", "Prior for [PERSON_NAME]"),
    ("Seen with Mrs Margery Dunsterford", "Seen with [PERSON_NAME]"),
    ("Patient: Jane Doe", "Patient: [PERSON_NAME]"),
    ("Home: 12 Baker Street, London NW1 6XE", "Home: [STREET_ADDRESS], London [LOCATION]"),
    ("Lives at 221B Quillfeather Avenue", "Lives at [STREET_ADDRESS]"),
    ("Dr. Smith request", "[PERSON_NAME] request"),
    # what descriptions write of anatomy and procedures stays
    ("Biopsy, Core", "Biopsy, Core"),
    ("Neuro, Stroke Protocol", "Neuro, Stroke Protocol"),
    ("MS lesion follow-up", "MS lesion follow-up"),
    ("DR Chest PA", "DR Chest PA"),
    ("5000 Units heparin", "5000 Units heparin"),
    ("CT CHEST ABDOMEN PELVIS W CONTRAST", "CT CHEST ABDOMEN PELVIS W CONTRAST"),
])
def test_descriptors_lose_anyones_name_and_address(text: str, expected: str) -> None:
    """An external probe: Clean Descriptors kept a third person's name written as a form
    writes it, and street addresses, which the same line burned into pixels loses."""
    assert clean_descriptor(text, None) == expected
