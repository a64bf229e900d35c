"""The residual-identifier sweep: the instance's own identifiers where the profile keeps text.

Every case runs through both paths (``instances.deidentify_bytes`` requires the byte path
to write the same bytes where it takes the file) and checks the byte path took it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import instances
from dicom_deid.config.model import (
    DeidConfig,
    Option,
    QueryKind,
    TagAction,
    TagActionKind,
    TagQuery,
)
from dicom_deid.deid.pseudonyms import Pseudonymizer
from instances import KEY, deidentify_bytes, make_instance, to_bytes


def run(ds: Dataset, **config: object) -> Dataset:
    taken = instances.BYTE_PATH_RUNS["taken"]
    out, _, _ = deidentify_bytes(to_bytes(ds), DeidConfig(**config))  # type: ignore[arg-type]
    assert instances.BYTE_PATH_RUNS["taken"] == taken + 1, "the byte path declined"
    return out


def _local_code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = "LOC123"
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = meaning
    return item


def test_uids_written_in_kept_text_are_mapped_as_uids_are() -> None:
    """The study's own UID in a comment, a prior study's in a kept code meaning: each
    becomes its keyed pseudonym (the one the study's own UI elements get), so the file is
    released, not rejected by the gate, and the original can no longer find the study;
    a registered UID (a SOP class) and decimals stay."""
    ds = make_instance()
    prior = "1.2.826.0.1.3680043.10.543.99.7"
    ds.ImageComments = f"Reformat of {ds.StudyInstanceUID}"
    standard = "CT 1.2.840.10008.5.1.4.1.1.2 at 1.25 mm, v2.1.0.5.17, 10.1.2.3"
    ds.AnatomicRegionSequence = Sequence([_local_code(f"prior {prior}"),
                                          _local_code(standard)])
    out = run(ds, options=frozenset({Option.CLEAN_DESCRIPTORS}))
    assert str(out.ImageComments) == f"Reformat of {out.StudyInstanceUID}"
    meaning = out.AnatomicRegionSequence[0].CodeMeaning
    assert prior not in meaning and meaning.startswith("prior 2.25.")
    assert out.AnatomicRegionSequence[1].CodeMeaning == standard
    again = run(ds).AnatomicRegionSequence[0].CodeMeaning  # (kept by the profile alone)
    assert again == meaning  # keyed: the same pseudonym every time


def test_identifiers_in_kept_urls_are_swept_and_the_url_stays_a_uri() -> None:
    """A kept URL (UR) can hold the patient's ID in its path or as a URN; the sweep
    writes the marker percent-encoded, as RFC 3986 wants brackets in a path."""
    ds = make_instance()
    ds.FilenameInContainer = "export/1234567/img0001.dcm"
    ds.AnatomicRegionSequence = Sequence([_local_code("abdomen")])
    ds.AnatomicRegionSequence[0].URNCodeValue = "urn:site:mrn:MRN1234567"
    out = run(ds)
    assert out.FilenameInContainer == "export/%5BCTX%5D/img0001.dcm"
    assert out.AnatomicRegionSequence[0].URNCodeValue == "urn:site:mrn:%5BCTX%5D"
    assert b"1234567" not in to_bytes(out)


def test_a_long_code_value_stays_longer_than_a_code_value() -> None:
    """A Long Code Value holds codes of more than 16 characters; one the sweep shortened
    ("SMITH-JOHN-KNEE-L" to 16) would be invalid (an external probe's dciodvfy error):
    it is filled up to 17."""
    ds = make_instance()
    item = _local_code("knee")
    del item.CodeValue
    item.LongCodeValue = "SMITH-JOHN-KNEE-L"
    ds.AnatomicRegionSequence = Sequence([item])
    code = run(ds).AnatomicRegionSequence[0].LongCodeValue
    assert code == "[CTX]-[CTX]-KNEE-L" and len(code) > 16
    item.LongCodeValue = "SMITH-JOHN-KNEE"
    assert run(ds).AnatomicRegionSequence[0].LongCodeValue == "[CTX]-[CTX]-KNEE_"


def test_a_surname_in_a_local_code_meaning_is_swept() -> None:
    """The profile keeps AnatomicRegionSequence and its code meaning (Table E.1-1 does
    not list them); the site wrote the patient's surname into it."""
    ds = make_instance()
    ds.AnatomicRegionSequence = Sequence([_local_code("CT ABD PELVIS W/O for SMITH")])
    out = run(ds)
    assert out.AnatomicRegionSequence[0].CodeMeaning == "CT ABD PELVIS W/O for [CTX]"
    assert out.AnatomicRegionSequence[0].CodeValue == "LOC123"
    kept = run(ds, residual_sweep=False)  # the switch: the profile alone keeps it
    assert kept.AnatomicRegionSequence[0].CodeMeaning == "CT ABD PELVIS W/O for SMITH"


@pytest.mark.parametrize(("text", "expected"), [
    ("Protocol for john smith", "Protocol for [CTX] [CTX]"),  # any case
    ("SMITH, JOHN follow-up", "[CTX], [CTX] follow-up"),  # any order
    ("id 0001234567 recalled", "id [CTX] recalled"),  # leading zeros
    ("MRN 1234567", "[CTX]"),  # prefix written apart
    ("born 03/02/1970", "born [CTX]"),  # birth date in another format
    ("acc ACC7766554", "acc [CTX]"),  # accession
    ("Seen at St Elsewhere Hospital", "Seen at [CTX]"),  # institution
    ("Tech Tina, Dr Ruth Doctor", "[CTX] [CTX], Dr [CTX] [CTX]"),  # operator, physician
    ("Abdomen 5mm", "Abdomen 5mm"),  # nothing of the patient: unchanged
])
def test_what_a_kept_description_is_searched_for(text: str, expected: str) -> None:
    ds = make_instance()
    ds.AnatomicRegionSequence = Sequence([_local_code(text)])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == expected


def test_diacritics_are_folded() -> None:
    ds = make_instance(name="Großkopf^Sören")
    ds.AnatomicRegionSequence = Sequence([_local_code("MR knee GROSSKOPF")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "MR knee [CTX]"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("Smith-Jones^Mary", "CT Smith Jones chest", "CT [CTX] chest"),  # hyphen dropped
    ("Smith-Jones^Mary", "CT for Jones", "CT for [CTX]"),  # one part of a double name
    ("O'Neill^Sean", "CT ONeill follow-up", "CT [CTX] follow-up"),  # apostrophe dropped
    ("Müller^Jörg", "Herr Mueller", "Herr [CTX]"),  # umlauts written out
    ("Zarkovsky^Belinda", "ZARKOVSKYBELINDA", "[CTX]"),  # run together
    ("Zarkovsky^Belinda", "BelindaZarkovsky CT", "[CTX] CT"),
    ("van der Berg^Anna", "CT for Vanderberg", "CT for [CTX]"),  # words run together
    ("Mc Allister^Ross", "follow-up McAllister", "follow-up [CTX]"),
    ("Quinterra^Delphine", "pt Quintérra seen", "pt [CTX] seen"),  # accent in the text only
    ("DRWOBBLEFORD^HANS", "ref Dr Wobbleford", "ref Dr [CTX]"),  # a title glued on
    ("DRWOBBLEFORD^HANS", "by Hans Wobbleford", "by [CTX] [CTX]"),
])
def test_names_as_sites_spell_them(name: str, text: str, expected: str) -> None:
    """Spellings an external probe found kept: free text drops hyphens and apostrophes,
    writes umlauts out and runs given and family names together."""
    ds = make_instance(charset="ISO_IR 100", name=name)
    ds.AnatomicRegionSequence = Sequence([_local_code(text)])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == expected


@pytest.mark.parametrize("written", ["4/17/63", "17.04.63", "17-Apr-63", "Apr-17-1963"])
def test_a_birth_date_with_a_two_digit_year_is_swept(written: str) -> None:
    ds = make_instance()
    ds.PatientBirthDate = "19630417"
    ds.AnatomicRegionSequence = Sequence([_local_code(f"CT DOB {written}")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "CT DOB [CTX]"
    ds.AnatomicRegionSequence = Sequence([_local_code("CT 4/17/64 and 17.04.1964")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "CT 4/17/64 and 17.04.1964"


def test_a_place_written_by_one_distinctive_word_is_swept() -> None:
    """"Quillan" names "Harborview Quillan Clinic" alone; "Clinic" and "General" do not."""
    ds = make_instance()
    ds.InstitutionName = "Harborview Quillan Clinic"
    ds.AnatomicRegionSequence = Sequence([_local_code("CT Quillan site, General clinic")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "CT [CTX] site, General clinic"


def test_kept_private_blocks_are_swept() -> None:
    """RetainSafePrivate keeps GE's Internal Pulse Sequence Name (safe by Table E.3.10-1);
    this site wrote the patient's name into it."""
    ds = make_instance()
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x0019109E, "LO", "fgre for Smith")
    out = run(ds, options=frozenset({Option.RETAIN_SAFE_PRIVATE}))
    assert out[0x0019109E].value == "fgre for [CTX]"
    assert run(ds, options=frozenset({Option.RETAIN_SAFE_PRIVATE}), residual_sweep=False
               )[0x0019109E].value == "fgre for Smith"


def test_a_kept_person_name_holding_an_identifier_gets_the_pseudonym() -> None:
    ds = make_instance()
    ds.PerformingPhysicianName = "Smith^John"  # the patient's own name, kept by the config
    keep = TagAction((TagQuery(QueryKind.KEYWORD, keyword="PerformingPhysicianName"),),
                     TagActionKind.KEEP)
    out = run(ds, actions=(keep,))
    assert out.PerformingPhysicianName == Pseudonymizer(KEY).patient_name("Smith^John")
    ds.PerformingPhysicianName = "Jones^Ann"  # nobody this instance names: kept
    assert run(ds, actions=(keep,)).PerformingPhysicianName == "Jones^Ann"


def test_a_code_string_a_user_typed_a_name_into_gets_one_pseudonym_everywhere() -> None:
    """An external probe: a presentation state's ContentLabel and GraphicLayer (CS, kept
    by PS3.15) held the patient's surname. A CS cannot hold ``[CTX]``: the value becomes
    one keyed pseudonym, still a CS, so the layer and its references stay linked."""
    ds = make_instance()  # PatientName Smith^John, ISO_IR 100
    layer = Dataset()
    layer.GraphicLayer, layer.GraphicLayerOrder = "SMITH", 1
    annotation = Dataset()
    annotation.GraphicLayer = "SMITH"
    ds.GraphicLayerSequence = Sequence([layer])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    ds.ContentLabel, ds.BodyPartExamined = "SMITH", "CHEST"
    out = run(ds)
    pseudonym = Pseudonymizer(KEY).code_string("SMITH")
    assert re.fullmatch(r"[A-Z0-9]{12}", pseudonym)
    assert (out.ContentLabel, out.GraphicLayerSequence[0].GraphicLayer,
            out.GraphicAnnotationSequence[0].GraphicLayer) == (pseudonym,) * 3
    assert out.BodyPartExamined == "CHEST" and out.Modality == ds.Modality
    # Any other code string holds a standard term, which a name may equal by chance: a
    # pseudonym would make the output less valid (a second probe: ImageType ORIGINAL).
    ds.PatientName, ds.BodyPartExamined = "Head^Original", "HEAD"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    out = run(ds)
    assert (out.BodyPartExamined, list(out.ImageType)) == ("HEAD", ["ORIGINAL", "PRIMARY",
                                                                     "AXIAL"])
    assert out.PhotometricInterpretation == "MONOCHROME2"
    ds.PatientName, ds.ContentLabel = "Test^S R", "SR"  # pydicom's test-SR.dcm: no initials
    assert run(ds).ContentLabel == "SR"


def test_an_earlier_mrn_in_other_patient_ids_sequence_is_swept() -> None:
    """A second probe: a local code quoting the patient's earlier MRN, which only the
    Other Patient IDs Sequence holds, was rejected by the gate instead of swept."""
    ds = make_instance()
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "MRN-998877", "ST MARYS"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.AnatomicRegionSequence = Sequence([_local_code("CT MRN-998877")])
    out = run(ds)  # the byte path too (run asserts it took the file)
    assert out.AnatomicRegionSequence[0].CodeMeaning == "CT [CTX]"
    assert "OtherPatientIDsSequence" not in out


def test_values_the_configuration_keeps_are_not_searched_for() -> None:
    """A project that keeps institution identity keeps the institution in descriptions."""
    ds = make_instance()
    ds.AnatomicRegionSequence = Sequence([_local_code("Seen at St Elsewhere Hospital")])
    out = run(ds, options=frozenset({Option.RETAIN_INSTITUTION_IDENTITY}))
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Seen at St Elsewhere Hospital"


def test_swept_text_still_fits_its_vr() -> None:
    """[CTX] is longer than a short ID: a Short String is cut to its 16 characters."""
    ds = make_instance()
    ds.ConvolutionKernel = "K1 MRN1234567 X"  # SH, kept
    out = run(ds)
    assert out.ConvolutionKernel == "K1 [CTX] X" and len(out.ConvolutionKernel) <= 16


def test_non_ascii_values_are_swept_in_their_character_set() -> None:
    ds = make_instance(charset="ISO_IR 192", name="Müller^Jürgen")
    ds.AnatomicRegionSequence = Sequence([_local_code("Kniegelenk Müller")])
    out = run(ds)
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Kniegelenk [CTX]"


def test_one_byte_deidentifier_over_many_files_sweeps_each_as_the_dataset_path() -> None:
    """Production keeps one byte deidentifier per worker, with memos of contexts and swept
    values across files: an implicit and an explicit VR file of one patient, then another
    patient whose description names the first, must each be written as the Dataset path
    writes them alone."""
    from pydicom.uid import ImplicitVRLittleEndian

    from dicom_deid.deid.byte_path import ByteDeidentifier
    from dicom_deid.deid.deidentifier import Deidentifier, dataset_encodings
    from dicom_deid.dicom.reader import parse_instance
    from dicom_deid.dicom.writer import encode_instance

    def instance(name: str, meaning: str, implicit: bool) -> bytes:
        ds = make_instance(name=name)
        ds.AnatomicRegionSequence = Sequence([_local_code(meaning)])
        ds.StudyDescription = meaning
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return to_bytes(ds)

    files = [instance("Smith^John", "CT for SMITH", False),
             instance("Smith^John", "CT for SMITH", True),
             instance("Jones^Ann", "CT for SMITH", False),  # Smith is not this patient
             instance("Jones^Ann", "CT for Jones", True),
             instance("Smith^John", "CT for SMITH", False)]  # memo hit
    config = DeidConfig(actions=(TagAction(
        (TagQuery(QueryKind.KEYWORD, keyword="StudyDescription"),), TagActionKind.KEEP),))
    fast = ByteDeidentifier(Deidentifier(config, KEY))
    meanings = []
    for data in files:
        done = fast.deidentify(data)
        assert done is not None, "the byte path declined"
        inst = parse_instance(data)
        encodings = dataset_encodings(inst.dataset)
        Deidentifier(config, KEY).deidentify(inst.dataset)
        expected = encode_instance(inst.dataset, inst.transfer_syntax, encodings)
        assert b"".join(bytes(c) for c in done[0]) == expected
        meanings.append((inst.dataset.StudyDescription,
                         inst.dataset.AnatomicRegionSequence[0].CodeMeaning))
    assert meanings == [("CT for [CTX]",) * 2] * 2 + [("CT for SMITH",) * 2] + [
        ("CT for [CTX]",) * 2] * 2


def test_kanji_in_kept_text_is_swept_in_iso_2022() -> None:
    """ISO 2022 IR 87 writes kanji in 7-bit bytes after an escape: ASCII bytes are not
    ASCII text, and the byte path must not take them for it."""
    ds = make_instance(charset=["", "ISO 2022 IR 87"], name="Yamada^Tarou=山田^太郎")
    ds.AnatomicRegionSequence = Sequence([_local_code("US ABDOMEN for 山田太郎")])
    out = run(ds)
    assert out.AnatomicRegionSequence[0].CodeMeaning == "US ABDOMEN for [CTX]"


@pytest.mark.parametrize("implicit", [True, False])
def test_a_safe_private_text_read_without_its_vr_is_swept(implicit: bool) -> None:
    """NeuroQuant's Return Message (0099,xx05) is LT in Table E.3.10-1, but pydicom has no
    dictionary entry for it: read from implicit VR (or written as UN) it has no VR. The
    table's VR says it is text, so the sweep searches it."""
    from pydicom.uid import ImplicitVRLittleEndian

    ds = make_instance()
    ds.add_new(0x00990010, "LO", "NQHeader")
    ds.add_new(0x00991005, "LT" if implicit else "UN",
               "Report for Smith" if implicit else b"Report for Smith")
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    options = frozenset({Option.RETAIN_SAFE_PRIVATE})
    out = run(ds, options=options)
    value = out[0x00991005].value
    assert (value if isinstance(value, str) else value.decode()) == "Report for [CTX]"
    kept = run(ds, options=options, residual_sweep=False)[0x00991005].value
    assert b"Smith" in (kept if isinstance(kept, bytes) else kept.encode())


def test_cleaned_text_is_swept_too() -> None:
    """A cleanTextTag whose TextConfig transforms only dates leaves the patient ID and the
    operator's name in the text; the sweep (every identifying value of the instance)
    takes them after the cleaner."""
    from dicom_deid.config.google import load_config

    ds = make_instance()
    ds.SeriesDescription = "Axial 5mm MRN1234567 Tina 2023-05-14"

    def config(sweep: bool) -> DeidConfig:
        return load_config({
            "dicomTagConfig": {"actions": [
                {"queries": ["SeriesDescription"], "cleanTextTag": {}}]},
            "text": {"transformations": [{"infoTypes": ["DATE"], "redactConfig": {}}]},
            "dicomDeid": {"residualSweep": sweep}})

    assert deidentify_bytes(to_bytes(ds), config(True))[0].SeriesDescription == \
        "Axial 5mm [CTX] [CTX]"
    assert deidentify_bytes(to_bytes(ds), config(False))[0].SeriesDescription == \
        "Axial 5mm MRN1234567 Tina"  # the cleaner alone keeps them


def test_coding_scheme_designators_are_codes_not_text() -> None:
    """A patient named like a coding scheme ("Test") must not break every code: the
    scheme designator stays, the code meaning naming the patient is still swept."""
    ds = make_instance(name="Test^Anna")
    item = _local_code("CT for TEST")
    item.CodingSchemeDesignator = "TEST"
    ds.AnatomicRegionSequence = Sequence([item])
    out = run(ds).AnatomicRegionSequence[0]
    assert (out.CodingSchemeDesignator, out.CodeMeaning) == ("TEST", "CT for [CTX]")


def test_addresses_of_the_source_systems_go_and_code_urls_stay() -> None:
    """Table E.1-1 does not list Retrieve URL, yet a DICOMweb source writes the original
    Study Instance UID into it: the default CLI run (no gate) used to publish it. A code's
    URN value names a concept, not a system, and stays."""
    ds = make_instance()
    ds.RetrieveURL = f"https://pacs.hospital.example/dicomweb/studies/{ds.StudyInstanceUID}"
    code = Dataset()
    code.URNCodeValue, code.CodingSchemeDesignator = "urn:oid:2.16.840.1.113883.6.1", "LN"
    code.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    out = run(ds)
    assert "RetrieveURL" not in out
    assert out.AnatomicRegionSequence[0].URNCodeValue == "urn:oid:2.16.840.1.113883.6.1"
    kept = run(ds, options=frozenset({Option.RETAIN_INSTITUTION_IDENTITY}))
    assert kept.RetrieveURL.startswith("https://pacs.hospital.example/")
    ds.HL7InstanceIdentifier = "1.2.826.0.1.3680043.99.777.55^RPT7731-0042"  # a report's
    assert run(ds).HL7InstanceIdentifier == "ANONYMIZED"  # an encapsulated CDA needs one


@pytest.mark.parametrize("birth", ["19000000", "00000000", "19630231", "11111111"])
def test_a_birth_date_that_is_no_date_leaves_kept_numbers_alone(birth: str) -> None:
    """An external probe: a birth date that is no calendar date, beside kept text holding
    its year's digits ("100 mAs"), failed every such file with a TypeError."""
    ds = make_instance()
    ds.PatientBirthDate = birth
    ds.AnatomicRegionSequence = Sequence([_local_code("Abdomen 100 mAs 11 ml")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "Abdomen 100 mAs 11 ml"


# Written forms an external probe (files built from pydicom's CT_small, the default run)
# found released in a kept code meaning: each is the source's value as another writer
# spells it. Both paths must sweep them, the byte path first.
_WRITTEN_FORMS = [  # (source values, the kept meaning, what of it must go)
    ({"PatientName": "KOWALCZYK^JAN"}, "badanie Kowalczyka, dla Kowalczykowi", ["Kowalczyk"]),
    ({"PatientName": "KOWALCZYK^JAN"}, "KowalczykJ head", ["Kowalczyk"]),
    ({"PatientName": "Иванов^Иван"}, "КТ Иванова", ["Иванов"]),
    ({"ReferringPhysicianName": "NOWAK^ANNA"}, "skier. dr Nowaka", ["Nowak"]),
    ({"PatientName": "MUELLER^JUERGEN"}, "Jürgen Müller", ["Jürgen", "Müller"]),
    ({"PatientName": "MUELLER^JUERGEN"}, "Ju\u0308rgen Mu\u0308ller", ["rgen", "ller"]),
    ({"PatientName": "GROSSKOPF^ANNA"}, "CT Großkopf", ["Großkopf"]),
    ({"PatientName": "YILMAZ^AYSE"}, "CT Yılmaz", ["Yılmaz"]),
    ({"PatientName": "OEHLER^KARL"}, "CT Œhler", ["Œhler"]),
    ({"PatientName": "Guðmundsdóttir^Sigríður"}, "Sigridur GUDMUNDSDOTTIR",
     ["Sigridur", "GUDMUNDSDOTTIR"]),
    ({"PatientID": "48213977"}, "MRN48213977 CT", ["48213977"]),
    ({"PatientID": "48213977"}, "ＩＤ４８２１３９７７", ["４８２１３９７７"]),
    ({"PatientID": "48213977"}, "ID 48.213.977", ["48.213.977"]),
    ({"PatientBirthDate": "19610314"}, "ur. 14 marca 1961", ["1961"]),
    ({"PatientBirthDate": "19610314"}, "geb. 14. März 1961", ["1961"]),
    ({"PatientBirthDate": "19610314"}, "ur.14.03.1961r.", ["1961"]),
    ({"PatientBirthDate": "19610314"}, "DOB 610314", ["610314"]),
    ({"PatientBirthDate": "19610314"}, "생년월일 1961년 3월 14일", ["1961"]),
    ({"PatientTelephoneNumbers": "+48 601 234 567"}, "tel 601-234-567", ["601-234-567"]),
    ({"PlacerOrderNumberImagingServiceRequest": "ORD77125"}, "order 77125", ["77125"]),
    ({"PatientBirthDate": "19610314"}, "DOB 14 03 1961", ["1961"]),
    ({"PatientBirthDate": "19610314"}, "生年月日 昭和36年3月14日", ["36年"]),
    ({"PatientBirthDate": "19610314"}, "S36.3.14生", ["S36"]),
    ({"PatientBirthDate": "19610314"}, "民國50年3月14日", ["50年"]),
    ({"PatientBirthDate": "19610314"}, "เกิด 14/03/2504", ["2504"]),
    ({"PatientName": "王^伟"}, "王伟 CT", ["王伟"]),
    # probe 12: an initial or digits glued on, percent escapes, year-first dates with a
    # month's name, six-digit dates in the other orders, thousands separators, the dates
    # of the visit written out
    ({"PatientName": "KOWALSKI^JANINA"}, "user jkowalski1", ["kowalski"]),
    ({"PatientName": "KOWALSKI^JANINA"}, "KOWALSKI01 dup", ["KOWALSKI"]),
    ({"PatientName": "KOWALSKI^JANINA"}, "kowalski1957 and 1957kowalski", ["kowalski"]),
    ({"PatientName": "KOWALSKI^JANINA"}, "Janina57", ["Janina"]),
    ({"PatientName": "ÅSTRÖM^BJÖRN"}, "BAstrom", ["strom"]),
    ({"PatientName": "KOWALSKI^JANINA"}, "viewer?pt=Kowalski%2C%20Janina",
     ["Kowalski", "Janina"]),
    ({"PatientBirthDate": "19570314"}, "DOB 1957 Mar 14", ["1957"]),
    ({"PatientBirthDate": "19570314"}, "DOB 1957, March 14th", ["1957"]),
    ({"PatientBirthDate": "19570314"}, "DOB 140357", ["140357"]),
    ({"PatientBirthDate": "19570314"}, "DOB 031457", ["031457"]),
    ({"PatientID": "MRN4821397"}, "MRN 4,821,397", ["821"]),
    ({"PatientID": "MRN4821397"}, "MRN 4.821.397", ["821"]),
    ({"PatientID": "MRN4821397"}, "ref 482.1397", ["1397"]),
    ({"StudyDate": "20240105"}, "acquired 2024-01-05", ["2024"]),
    ({"AcquisitionDate": "20240105"}, "B30f 20240105", ["20240105"]),
    # probe 14: two letters or a title glued on, CamelCase, organisations run together,
    # postcodes, more date spellings, a local phone number, the issuer of the ID
    ({"PatientName": "KOWALSKI^JANINA^MARIA"}, "JMKOWALSKI and MJKowalski", ["KOWALSKI",
                                                                           "Kowalski"]),
    ({"PatientName": "KOWALSKI^JANINA"}, "JanKowalski", ["Kowalski"]),
    ({"ReferringPhysicianName": "HALVORSEN^PIETER"}, "ref DrHalvorsen, DRHALVORSEN",
     ["alvorsen", "ALVORSEN"]),
    ({"InstitutionName": "Thornbury Valley Hospital"},
     "ThornburyValleyHospital ThornburyCT1 THORNBURYVH", ["Thornbury", "THORNBURY"]),
    ({"PatientAddress": "12 Larkspur Lane, Exeter EX4 3PQ"}, "EX43PQ and 12LarkspurLane",
     ["EX4", "3PQ", "Larkspur"]),
    ({"PatientBirthDate": "19570314"}, "DOB 14MAR57", ["14MAR57"]),
    ({"PatientBirthDate": "19570314"}, "DOB 14 III 57", ["57"]),
    ({"PatientBirthDate": "19570314"}, "DOB 1957-W11-4 or 1957-073", ["1957"]),
    ({"PatientBirthDate": "19570314"}, "born Mar 1957, 03/1957", ["1957"]),
    ({"StudyDate": "20240105"}, "scan 5 I 2024", ["2024"]),
    ({"PatientTelephoneNumbers": "+44 20 7946 0958"}, "ext 7946 0958", ["7946"]),
    ({"PatientID": "4821397", "IssuerOfPatientID": "TVHPAS"}, "4821397^^^TVHPAS^MR",
     ["4821397", "TVHPAS"]),
]


def test_a_one_character_anchor_is_swept_by_the_byte_path_too() -> None:
    """pydicom's CT_small with a telephone number (its forms' anchor was one digit,
    which the byte path's first-letters filter could not hold): the byte path left a
    kept code meaning the Dataset path swept (an external probe's file)."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.PatientTelephoneNumbers, ds.PatientBirthDate = "+48 601 234 567", "19610314"
    ds.AnatomicRegionSequence = Sequence([_local_code("tel 601-234-567")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "tel [CTX]"


@pytest.mark.parametrize(("values", "meaning", "planted"), _WRITTEN_FORMS)
def test_a_value_written_another_way_in_a_kept_code_meaning_is_swept(
    values: dict[str, str], meaning: str, planted: list[str]
) -> None:
    ds = make_instance()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.AnatomicRegionSequence = Sequence([_local_code(meaning)])
    out = run(ds).AnatomicRegionSequence[0].CodeMeaning
    assert "[CTX]" in out and not [p for p in planted if p in out], out


def test_the_issuer_of_the_patient_id_is_swept_unless_the_institution_is_retained() -> None:
    """Probe 14: "TVHPAS" (the issuer) survived in kept text; it is swept now. The issuer
    names the assigning institution, so under Retain Institution Identity the retained
    name and address keep it ("St Elsewhere" for an issuer "ST ELSEWHERE")."""
    ds = make_instance()
    ds.IssuerOfPatientID = "TVHPAS"
    ds.AnatomicRegionSequence = Sequence([_local_code("ref TVHPAS")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "ref [CTX]"
    ds.IssuerOfPatientID = "ST ELSEWHERE"
    kept = run(ds, options=frozenset({Option.RETAIN_INSTITUTION_IDENTITY}))
    assert kept.InstitutionName == "St Elsewhere Hospital"
    ds.IssuerOfPatientID = "MR"  # as short as a term: not searched for (nor by the gate)
    ds.AnatomicRegionSequence = Sequence([_local_code("MR Brain")])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == "MR Brain"


def test_this_sessions_spellings_on_a_file_we_did_not_make() -> None:
    """pydicom's CT_small with the probes' identifiers, each spelled as they found it
    released, in kept code meanings, and an unlisted date: both paths (the byte path
    taken, asserted by ``run``) sweep or remove every one."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.PatientName, ds.PatientID = "KOWALSKI^JANINA^MARIA", "MRN4821397"
    ds.PatientBirthDate, ds.StudyDate = "19570314", "20240105"
    ds.InstitutionName = "Thornbury Valley Hospital"
    ds.PatientAddress = "12 Larkspur Lane, Exeter EX4 3PQ"
    ds.add_new(0x0008041F, "DT", "20240105101500")  # StudyUpdateDateTime, no table row
    planted = ["jkowalski", "JMKOWALSKI", "JanKowalski", "Kowalski%20Janina", "KOWALSKI01",
               "4,821,397", "482.1397", "1957 Mar 14", "140357", "14MAR57", "1957-W11-4",
               "acquired 2024-01-05", "ThornburyValleyHospital", "EX43PQ"]
    ds.AnatomicRegionSequence = Sequence([_local_code(f"x {p} y") for p in planted])
    out = run(ds)
    assert "StudyUpdateDateTime" not in out or not out.StudyUpdateDateTime
    for item, p in zip(out.AnatomicRegionSequence, planted, strict=True):
        assert item.CodeMeaning != f"x {p} y" and "[CTX]" in item.CodeMeaning, p


def test_stems_acronyms_runs_partial_dates_and_split_codes_on_a_file_we_did_not_make() -> None:
    """Probe 14's last header spellings, on pydicom's CT_small, through both paths: a
    name with its last vowel changed (Polish cases), the institution's acronym and a run
    of its words in a mailbox, the birth day without its year, the MRN digit by digit and
    the issuer with a hyphen written in."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.PatientName, ds.PatientID = "KOWALSKI^JANINA^MARIA", "MRN4821397"
    ds.IssuerOfPatientID, ds.PatientBirthDate = "TVHPAS", "19570314"
    ds.InstitutionName = "Thornbury Valley Hospital"
    planted = ["Kowalska", "KOWALSKIEGO", "Janiny", "Janinie", "TVH", "T.V.H.", "TVHospital",
               "pacs.tvh.nhs.uk", "radiology@thornburyvalley.nhs.uk", "14 March",
               "Mar 14th", "14/03", "4-8-2-1-3-9-7", "4 8 2 1 3 9 7", "TVH-PAS"]
    ds.AnatomicRegionSequence = Sequence([_local_code(f"x {p} y") for p in planted])
    out = run(ds)
    for item, p in zip(out.AnatomicRegionSequence, planted, strict=True):
        assert item.CodeMeaning != f"x {p} y" and "[CTX]" in item.CodeMeaning, p


@pytest.mark.parametrize("meaning", [
    "MRI Brain", "the cat sat", "Series 01/05", "marker 14", "Kowals", "tvh", "Mar 1 view",
    "4.8.2.1.3.9.7.5", "48213977", "Valley Road", "TV-HPASS",
])
def test_what_the_new_spellings_leave_alone(meaning: str) -> None:
    """The same values, and text that only looks like their new spellings: a shorter cut
    of the name, the acronym in lower case outside a host name, a day that could be a
    month, another month's day, longer numbers, generic words of the address."""
    ds = make_instance()
    ds.PatientName, ds.PatientID = "KOWALSKI^JANINA^MARIA", "MRN4821397"
    ds.IssuerOfPatientID, ds.PatientBirthDate = "TVHPAS", "19570314"
    ds.InstitutionName = "Thornbury Valley Hospital"
    ds.AnatomicRegionSequence = Sequence([_local_code(meaning)])
    assert run(ds).AnatomicRegionSequence[0].CodeMeaning == meaning


_CHARSETS = Path(pydicom.data.__file__).parent / "charset_files"


@pytest.mark.parametrize(("name", "source", "text"), [
    ("DuBois^JeanPierre", "CT_small.dcm", "CT JEAN PIERRE DU BOIS"),
    ("LeBlanc^MarieClaude", "CT_small.dcm", "Head CT Marie-Claude Le Blanc"),
    ("Hong^Gildong", "CT_small.dcm", "HONG GIL DONG"),
    ("Hong^Gildong", "CT_small.dcm", "CT Gil-dong Hong"),
    (None, "chrX1.dcm", "WANG XIAO DONG CT"),  # Wang^XiaoDong=王^小東
    (None, "chrX1.dcm", "王小东 CT"),  # in simplified characters
    (None, "chrX1.dcm", "CT 王 小東"),  # the family name apart from the given name
    (None, "chrJapMulti.dcm", "ヤマダ タロウ CT"),  # やまだ^たろう, hiragana only
    (None, "chrJapMulti.dcm", "YAMADA TAROU CT"),
    (None, "chrH32.dcm", "YAMADA TARO"),  # ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう
])
def test_a_name_written_apart_or_in_another_script_is_swept(
        name: str | None, source: str, text: str) -> None:
    """Probe 15, on pydicom's files: a one-word component written as two words (a
    compound given name, a particle, romanised syllables), a kana name in the other
    script or in romaji, a Chinese name in simplified characters or with its family name
    apart, were released in kept text; both paths sweep them."""
    folder = _CHARSETS if source.startswith("chr") else _CHARSETS.parent / "test_files"
    ds = pydicom.dcmread(folder / source)
    if name is not None:
        ds.PatientName = name
    ds.AnatomicRegionSequence = Sequence([_local_code(text)])
    out = deidentify_bytes(to_bytes(ds))[0].AnatomicRegionSequence[0].CodeMeaning
    assert "[CTX]" in out
    left = [w for w in text.replace("-", " ").split() if w not in ("CT", "Head") and w in out]
    left += [c for c in "王小东東" if c in text and c in out]
    assert not left, out


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "latin-1", "utf-8"])
def test_identifiers_written_in_a_kept_byte_value_are_overwritten_byte_for_byte(
        codec: str) -> None:
    """An external probe: the patient's name and MRN in a kept ICC profile's description,
    written as UTF-16 (as ICC ``mluc`` tags write text). Both paths overwrite them in
    whatever encoding they are written, and the value keeps its length and the rest of
    its bytes: an ICC profile's offsets still point where they did."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.PatientName, ds.PatientID = "Müller-Kowalczyk^Janina", "MRN4471902"
    text = "Profile of Müller-Kowalczyk 4471902, monitor 2"
    head = b"\x00\x00\x02\x10acspAPPL\x00\x00\x00\x00desc"
    tail = b"\x00" * (16 - len(text.encode(codec)) % 2)  # an even length, as written
    ds.ICCProfile = head + text.encode(codec) + tail
    out = run(ds)
    icc = out.ICCProfile
    assert len(icc) == len(ds.ICCProfile)
    assert icc.startswith(head) and icc.endswith(tail)
    written = icc[len(head):-len(tail)].decode(codec)
    for planted in ("Müller", "Kowalczyk", "4471902"):
        assert planted not in written, planted
    assert written.startswith("Profile of ") and written.endswith(", monitor 2")
    assert "X" * len("Kowalczyk") in written


def test_sample_data_is_not_read_as_text() -> None:
    """Pixels, overlays and waveforms are samples: bytes that spell a name there by chance
    are left to the pixel cleaning (and not decoded for it); only other byte values are
    swept."""
    from dicom_deid.deid.sweep import sweeps

    assert sweeps(0x00282000, "OB")  # ICC Profile
    assert sweeps(0x00420011, "OB")  # Encapsulated Document
    assert sweeps(0x00091010, "UN")  # a private value read without its VR
    for tag, vr in ((0x7FE00010, "OB"), (0x60003000, "OB"), (0x60023000, "OW"),
                    (0x54001010, "OB"), (0x00283006, "OW")):
        assert not sweeps(tag, vr), hex(tag)
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.PatientName = "Kowalczyk^Janina"
    pixels = bytearray(ds.PixelData)
    pixels[100:118] = "Kowalczyk".encode("utf-16-le")
    ds.PixelData = bytes(pixels)
    assert run(ds).PixelData == bytes(pixels)
