"""A name written as its PN (caret-joined components, ``=``-separated groups) goes whole
when a component of it matches: components too short to be searched alone (a
one-character CJK family name, an initial) go with it. A one-character family name
before a replaced given name ("王^[CTX]") is the name too; anywhere else it is not (it is
in every kept Chinese or Korean text). An external probe released 王 of
``seen by Wang^XiaoDong=王^小東`` after Clean Descriptors and the sweep, and the gate
passed it."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset

import instances
from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, Option
from dicom_deid.deid.gate import Gate, Verdict
from dicom_deid.deid.sweep import sweep_text
from dicom_deid.text.banner import clean_descriptor
from dicom_deid.text.context import PhiContext
from instances import deidentify_bytes, make_instance, to_bytes

PN = "Wang^XiaoDong=王^小東"
CTX = PhiContext.from_values([("PERSON_NAME", PN), ("MEDICAL_RECORD_NUMBER", "MRN4821397")])


@pytest.mark.parametrize(("text", "expected"), [
    ("seen by Wang^XiaoDong=王^小東", "seen by [CTX]"),
    ("seen by 王^小東", "seen by [CTX]"),
    ("seen by Wang^XiaoDong^Q.", "seen by [CTX]."),  # an initial goes with the name
    ("seen by Wang^XiaoDong=王^小東=ワン^シャオドン", "seen by [CTX]"),
    ("seen by [CTX]=王^[CTX]", "seen by [CTX]=[CTX]^[CTX]"),  # an earlier pass's leftover
    ("seen by Wang^[CTX]^Q", "seen by [CTX]^[CTX]^[CTX]"),
    ("to=Wang^XiaoDong", "to=[CTX]"),  # a group that is no caret-joined name stays
])
def test_a_name_written_as_its_pn_goes_whole(text: str, expected: str) -> None:
    assert sweep_text(text, CTX) == expected
    assert clean_descriptor(text, CTX) == expected


def test_a_one_character_family_name_is_the_name_only_in_a_name_layout() -> None:
    assert sweep_text("王^[CTX]", CTX) == "[CTX]^[CTX]"
    for text in (
        "王先生の検査",  # the family name alone, in any text: no form of the name
        "王 선생님",
        "李^王",  # a one-character component after another
        "王^明",  # another given name: nothing was replaced
        "王様^[CTX]",  # 王 inside a longer component
        "Li^Ming=李^明",
    ):
        assert sweep_text(text, CTX) is None, text
    # Only a name's components widen, and only whole ones: an ID is none, and CJK
    # values match inside longer runs (小東 in 小東京 is no component of a name).
    assert sweep_text("MRN4821397^CHEST", CTX) == "[CTX]^CHEST"
    assert sweep_text("王^小東京", CTX) == "王^[CTX]京"


def _run(ds: Dataset, config: DeidConfig) -> tuple[Dataset, bytes]:
    taken = instances.BYTE_PATH_RUNS["taken"]
    out, _, output = deidentify_bytes(to_bytes(ds), config)
    assert instances.BYTE_PATH_RUNS["taken"] == taken + 1, "the byte path declined"
    return out, output


def _keeping(*keywords: str, sweep: bool = True) -> DeidConfig:
    return load_config({"dicomTagConfig": {"actions": [
        {"queries": list(keywords), "keepTag": {}}]}, "dicomDeid": {"residualSweep": sweep}})


@pytest.mark.parametrize(("comment", "expected"), [
    ("seen by " + PN, "seen by [CTX]"),
    ("seen by [CTX]=王^[CTX]", "seen by [CTX]=[CTX]^[CTX]"),
    ("王 検査", None),
])
def test_the_sweep_and_clean_descriptors_write_the_same_on_both_paths(
        comment: str, expected: str | None) -> None:
    ds = make_instance(charset="ISO_IR 192", name=PN)
    ds.ImageComments = comment
    out, _ = _run(ds, _keeping("ImageComments"))  # the residual sweep
    assert out.ImageComments == (expected or comment)
    out, _ = _run(ds, DeidConfig(options=frozenset({Option.CLEAN_DESCRIPTORS})))
    assert out.ImageComments == (expected or comment)
    ds = make_instance(name="Smith^John^Q")  # ASCII: the byte path's memo of swept values
    ds.ImageComments = "seen by Smith^John^Q"
    out, _ = _run(ds, _keeping("ImageComments"))
    assert out.ImageComments == "seen by [CTX]"


def _verdict(source: bytes, output: bytes) -> Verdict:
    gate = Gate()
    ds = pydicom.dcmread(io.BytesIO(output))
    uids = {t: str(ds[t].value) for t in (0x0020000D, 0x0020000E, 0x00080018) if t in ds}
    return gate.check("out.dcm", output, gate.source_facts(source, len(source)), uids)


@pytest.mark.parametrize(("charset", "name", "comment"), [
    # the family name before a replaced given name (two bytes in GB18030)
    ("ISO_IR 192", PN, "seen by [CTX]=王^[CTX]"),
    ("GB18030", PN, "seen by [CTX]=王^[CTX]"),
    # a group of one-character components run together, in any group of the PN
    ("ISO_IR 192", "Wang^Wei=王^伟", "seen by 王伟"),
])
def test_the_gate_judges_a_one_character_family_name_in_a_name_layout(
        charset: str, name: str, comment: str) -> None:
    encoding = "gb18030" if charset == "GB18030" else "utf-8"

    def verdict(text: str, sweep: bool = False) -> Verdict:
        ds = make_instance(charset=charset, name=name)
        ds.ImageComments = text
        data = to_bytes(ds)
        _, _, output = deidentify_bytes(data, _keeping("ImageComments", sweep=sweep))
        assert sweep or text.encode(encoding) in output
        return _verdict(data, output)

    assert verdict(comment).problems == ("original PatientName value found",)
    assert verdict(comment, sweep=True).ok  # the sweep leaves nothing of it
    for text in ("王 先生 검사", "李王^明", "王^明"):  # 王 alone is no form of the name
        found = verdict(text)
        assert found.ok, (text, found.problems)
