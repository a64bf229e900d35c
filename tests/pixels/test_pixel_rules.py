"""Known-region rules (CTP DicomPixelAnonymizer format) and the pixel config surface.

No OCR here: these tests are fast and check parsing, matching and the config plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicom_deid.cli.main import _load_deid_config, _parser
from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, OcrScope, TextRedactionMode
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.errors import ConfigError, RuleFileError
from dicom_deid.pixels.ocr import Box
from dicom_deid.pixels.rules import load_rules, parse_rules

SCRIPT = """\
Burned-in Annotation Library (a test file in the CTP format)

GE screen captures (see the wiki page (section 3))
  { Manufacturer.containsIgnoreCase("ge medical") * Rows.equals("64") }
  (0,0,64,10)   (1,2,3)  (a,b,c,d)

Fallback with a negative corner (counts from the right / bottom)
  { Manufacturer.containsIgnoreCase("GE MEDICAL") }
  (-20,-10,30,30) (5,5,0,4)

Tag syntax, NOT, OR and a regular expression
  { [0008,0060].equals("US") * !SeriesDescription.contains("Clean") *
    ( ManufacturerModelName.matches("Logiq [0-9]+") + StationName.startsWith("ECHO") ) }
  (10,20,30,40)

Unknown keywords read as missing
  { NoSuchKeyword.equals("") * Modality.endsWithIgnoreCase("t") }
  (0,0,1,1)
"""


def _ds(**attrs: object) -> Dataset:
    ds = Dataset()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def test_parse_counts_regions_and_skips_comment_groups() -> None:
    rules = parse_rules(SCRIPT)
    assert len(rules.signatures) == 4
    # (1,2,3), (a,b,c,d), the zero-width (5,5,0,4) and the heading "(counts from the
    # right / bottom)" after the first signature are comment text, as in CTP; the group
    # before the first signature belongs to no signature at all.
    assert rules.region_count == 4
    assert rules.ignored == 4


def test_first_matching_signature_wins() -> None:
    rules = parse_rules(SCRIPT)
    ds = _ds(Manufacturer="GE Medical Systems", Rows=64)
    assert rules.boxes_for(ds, 64, 64) == [Box(0, 0, 64, 10)]
    # Rows differs: the second signature applies; its corner counts from the edges and
    # the rectangle is clipped to the image.
    ds.Rows = 100
    assert rules.boxes_for(ds, 100, 80) == [Box(60, 90, 80, 100)]


def test_expression_operators() -> None:
    rules = parse_rules(SCRIPT)
    us = _ds(Modality="US", ManufacturerModelName="Logiq 9", SeriesDescription="abdomen")
    assert rules.boxes_for(us, 200, 200) == [Box(10, 20, 40, 60)]
    assert rules.boxes_for(_ds(Modality="US", StationName="ECHO2"), 200, 200)
    negated = _ds(Modality="US", ManufacturerModelName="Logiq 9", SeriesDescription="Clean")
    assert rules.boxes_for(negated, 200, 200) == []
    partial = _ds(Modality="US", ManufacturerModelName="Logiq 9x")  # matches() is whole-value
    assert rules.boxes_for(partial, 200, 200) == []
    assert rules.boxes_for(_ds(Modality="OT"), 5, 5) == [Box(0, 0, 1, 1)]
    assert rules.boxes_for(_ds(Modality="MR"), 5, 5) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{ Manufacturer.equals("GE") ', "no closing"),
        ('\n\n{ Manufacturer.sortOf("GE") }', "line 3: unknown test"),
        ('{ Manufacturer.equals("GE") * }', "expected an attribute"),
        ('{ Manufacturer.matches("[") }', "invalid regular expression"),
    ],
)
def test_bad_rule_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        parse_rules(text)


def test_load_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rules(tmp_path / "missing.script")
    empty = tmp_path / "empty.script"
    empty.write_text("only comments (1,2,3,4)\n")
    with pytest.raises(RuleFileError, match="no signatures"):
        load_rules(empty)


def test_google_config_surface(tmp_path: Path) -> None:
    rules = tmp_path / "rules.script"
    rules.write_text(SCRIPT)
    doc = {
        "dicomTagConfig": {
            "actions": [{"queries": ["PixelData"],
                         "cleanImageTag": {"textRedactionMode": "REDACT_SENSITIVE_TEXT",
                                           "excludeInfoTypes": ["DATE"]}}],
            "options": {"cleanImage": {"textRedactionMode": "REDACT_ALL_TEXT"}},
        },
        "dicomDeid": {"ps315Options": ["CleanPixelData", "CleanGraphics"],
                      "pixelRules": str(rules), "ocrScope": "ALL"},
    }
    config = load_config(doc)
    # the cleanImageTag action wins over options.cleanImage
    assert config.image.text_redaction_mode is TextRedactionMode.REDACT_SENSITIVE_TEXT
    assert config.image.exclude_info_types == ("DATE",)
    assert config.clean_pixel_data and config.cleans_pixels
    assert config.pixel_rules == str(rules) and config.ocr_scope is OcrScope.ALL
    Deidentifier(config, bytes(32))  # accepted: no ConfigNotSupported any more
    with pytest.raises(ConfigError, match="ocrScope"):
        load_config({"dicomTagConfig": {}, "dicomDeid": {"ocrScope": "SOME"}})


def test_clean_pixel_data_alone_means_sensitive_text_with_removed_values() -> None:
    config = load_config({"dicomTagConfig": {}, "dicomDeid": {"ps315Options": ["CleanPixel"]}})
    assert config.image.text_redaction_mode is (
        TextRedactionMode.REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS)
    assert not DeidConfig().cleans_pixels


def test_cli_pixel_options(tmp_path: Path) -> None:
    rules = tmp_path / "rules.script"
    rules.write_text(SCRIPT)
    args = _parser().parse_args(
        ["deidentify", "in", "out", "--text-redaction", "REDACT_ALL_TEXT",
         "--pixel-rules", str(rules), "--ocr-scope", "all", "--option", "CleanPixelData"])
    config = _load_deid_config(args)
    assert config.image.text_redaction_mode is TextRedactionMode.REDACT_ALL_TEXT
    assert config.pixel_rules == str(rules) and config.ocr_scope is OcrScope.ALL
    assert config.clean_pixel_data
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"profileType": "KEEP_ALL_PROFILE"}))
    bad = _parser().parse_args(["deidentify", "in", "out", "--config", str(cfg),
                                     "--pixel-rules", str(tmp_path / "nope")])
    with pytest.raises(RuleFileError):
        _load_deid_config(bad)


def test_rules_only_blank_regions_without_ocr(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """A rule file alone blanks its regions in every photometric interpretation, with the
    right black for each (the darkest entry in use for a palette), and never runs OCR."""
    import dicom_deid.pixels.clean as pixels
    from instances import deidentify_bytes, make_instance, to_bytes

    def no_ocr(image: object) -> list[object]:
        raise AssertionError("OCR must not run without a text redaction mode")

    monkeypatch.setattr(pixels, "find_text", no_ocr)
    rules = tmp_path / "r.script"
    rules.write_text('{ Manufacturer.equals("ACME Medical") }\n(2,1,3,2)\n')
    config = DeidConfig(pixel_rules=str(rules))
    rng = np.random.default_rng(5)
    cases = {
        "MONOCHROME2": (rng.integers(10, 200, (6, 8), dtype=np.uint16), None),
        "MONOCHROME1": (rng.integers(10, 200, (6, 8), dtype=np.uint16), None),
        "RGB": (rng.integers(10, 200, (6, 8, 3), dtype=np.uint8), (0, 0, 0)),
        "YBR_FULL": (rng.integers(10, 200, (6, 8, 3), dtype=np.uint8), (0, 128, 128)),
        "PALETTE COLOR": (rng.integers(30, 60, (6, 8), dtype=np.uint8), (37,)),
    }
    for photometric, (arr, colour) in cases.items():
        ds = make_instance()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = arr.shape[:2]
        ds.PhotometricInterpretation = photometric
        ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
        ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        if arr.ndim == 3:
            ds.PlanarConfiguration = 0
        if photometric == "PALETTE COLOR":
            lut = np.full(256, 0xFFFF, np.uint16)
            lut[37] = 0  # the only black entry; the image uses indices 30..59
            for channel in ("Red", "Green", "Blue"):
                setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [256, 0, 16])
                setattr(ds, f"{channel}PaletteColorLookupTableData", lut.tobytes())
        ds.PixelData = arr.tobytes()
        out, result, _ = deidentify_bytes(to_bytes(ds), config)
        got = np.frombuffer(out.PixelData, arr.dtype).reshape(arr.shape)
        mask = np.zeros(arr.shape[:2], bool)
        mask[1:3, 2:5] = True
        assert result.redacted_boxes == 1
        assert np.array_equal(got[~mask], arr[~mask]), photometric
        if colour is not None:
            assert (got[mask] == colour).all(), photometric
        elif photometric == "MONOCHROME1":
            assert (got[mask] == arr.max()).all()
        else:
            assert (got[mask] == arr.min()).all()


def test_sequence_paths_private_elements_and_numeric_tests() -> None:
    """CTP identifiers beyond keywords: ``::`` into a sequence's first item, private
    elements by creator, ``isLessThan``/``isGreaterThan``, ``true.`` and ``//`` comments."""

    rules = parse_rules("""
      { SeqOfUltrasoundRegions::RegionLocationMinY0.isGreaterThan("40") // a comment with }
        * 0029[SIEMENS MEDCOM]10.containsIgnoreCase("GRAPHICS") }
      (1,2,3,4)
      { [0009,[GEMS_IDEN_01],01].equals("SC") * [00080060].equals("OT") * true. }
      (5,5,5,5)
      { ContentSeq::CodeMeaning.equals("Dose Report") + Rows.isLessThan("1e3") * false. }
      (7,7,7,7)
    """)
    assert rules.region_count == 3
    us = _ds(Modality="US")
    region = _ds(RegionLocationMinY0=64)
    us.SequenceOfUltrasoundRegions = Sequence([region, _ds(RegionLocationMinY0=0)])
    us.add_new(0x00290010, "LO", "SIEMENS MEDCOM")
    us.add_new(0x00291010, "UN", b"object graphics ")  # UN: decoded as text, as CTP does
    assert rules.boxes_for(us, 100, 100) == [Box(1, 2, 4, 6)]
    region.RegionLocationMinY0 = 12  # only the first item counts
    assert rules.boxes_for(us, 100, 100) == []
    ge = _ds(Modality="OT")
    ge.add_new(0x00090010, "LO", "OTHER")
    ge.add_new(0x00090011, "LO", "GEMS_IDEN_01")  # creator in block 11: (0009,1101)
    ge.add_new(0x00091101, "LO", "SC")
    ge.add_new(0x00091001, "LO", "not this one")
    assert rules.boxes_for(ge, 100, 100) == [Box(5, 5, 10, 10)]
    sr = _ds(Modality="SR")
    sr.ContentSequence = Sequence([_ds(CodeMeaning="Dose Report")])
    assert rules.boxes_for(sr, 100, 100) == [Box(7, 7, 14, 14)]
    # A bare keyword is top level only, as in CTP: CodeMeaning in a sequence is not seen.
    top_only = parse_rules('{ CodeMeaning.equals("Dose Report") } (0,0,1,1)')
    assert top_only.boxes_for(sr, 10, 10) == []


def test_file_meta_attributes_are_read() -> None:
    """Group 0002 comes from the file meta (the Mindray rule tests ImplementationVersionName)."""
    from pydicom.dataset import FileMetaDataset

    rules = parse_rules('{ Modality.equals("US") * ImplementationVersionName.contains("MINDRAY") }'
                        "\n(0,0,1229,69)")
    ds = _ds(Modality="US")
    assert rules.boxes_for(ds, 600, 800) == []
    ds.file_meta = FileMetaDataset()
    ds.file_meta.ImplementationVersionName = "MINDRAY_DC8"
    assert rules.boxes_for(ds, 600, 800) == [Box(0, 0, 800, 69)]


def test_file_meta_of_a_little_endian_file_is_read() -> None:
    """Through the real reader: group 0002 of an ordinary Explicit VR LE file is testable."""
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage

    from dicom_deid.dicom.reader import parse_instance

    ds = _ds(Modality="US", SOPClassUID=UltrasoundImageStorage, SOPInstanceUID="1.2.3.4")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationVersionName = "MINDRAY_DC8"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    parsed = parse_instance(buf.getvalue()).dataset
    rules = parse_rules('{ Modality.equals("US") * ImplementationVersionName.contains("MINDRAY") }'
                        "\n(0,0,1229,69)")
    assert rules.boxes_for(parsed, 600, 800) == [Box(0, 0, 800, 69)]


def test_sample_library_in_ctp_format() -> None:
    """A rule file in CTP's format (tests/data; the RSNA library is not shipped): headings
    and notes are commentary, and each kind of signature selects its own boxes."""
    from pydicom.dataset import FileMetaDataset

    rules = load_rules(Path(__file__).parent / "data" / "pixel_rules_sample.script")
    assert (len(rules.signatures), rules.region_count, rules.ignored) == (6, 7, 2)
    vendor_a = _ds(Modality="US", Manufacturer="Vendor A Medical", Columns=640)
    assert rules.boxes_for(vendor_a, 480, 640) == [Box(0, 0, 640, 40)]
    vendor_b = _ds(Modality="US", Manufacturer="VendorB", ImageType=["ORIGINAL", "PRIMARY"])
    assert rules.boxes_for(vendor_b, 600, 800) == [Box(0, 0, 800, 30), Box(700, 30, 800, 230)]
    vendor_b.ImageType = ["DERIVED", "SECONDARY"]
    assert rules.boxes_for(vendor_b, 600, 800) == []
    for model, hit in (("M123", True), ("Scout", True), ("M12", False)):
        found = rules.boxes_for(_ds(Modality="US", ManufacturerModelName=model), 100, 400)
        assert found == ([Box(10, 10, 310, 30)] if hit else [])
    dose = _ds(Modality="OT", ContentSequence=Sequence([_ds(CodeMeaning="CT Dose Report")]))
    assert rules.boxes_for(dose, 300, 512) == [Box(0, 0, 512, 100)]
    dose.BurnedInAnnotation = "NO"
    assert rules.boxes_for(dose, 300, 512) == []
    meta = _ds(Modality="CT", Rows=512)
    meta.file_meta = FileMetaDataset()
    meta.file_meta.ImplementationVersionName = "VENDORC_1"
    assert rules.boxes_for(meta, 512, 1024) == [Box(0, 0, 1024, 60)]
    private = _ds(Modality="MR")
    private.private_block(0x0029, "ACME IMAGING", create=True).add_new(0x10, "LO", "SCREEN")
    assert rules.boxes_for(private, 100, 300) == [Box(0, 0, 200, 50)]

