"""Re-identification end to end on the command line: `deidentify` seals the mapping under
the vault key, `reidentify` gives the originals back to a requester with a purpose and
audits every lookup, `audit verify` checks the chain, `vault rotate` re-keys the mapping.
Inputs: the generator's corpus and a pydicom file the project did not make."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_deid.cli.main import main
from dicom_deid.synth import generate
from dicom_deid.vault.envelope import is_sealed

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("vault")
    generate(root / "landing", patients=2, seed=31, instances_per_series=2, small=True)
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", root / "landing" / "dicom" / "ct_small.dcm")
    key, vault_key = root / "deid.key", root / "vault.key"
    assert main(["keygen", str(key)]) == 0
    assert main(["keygen", "--vault", str(vault_key)]) == 0
    mapping = root / "mapping.parquet"
    code = main(["deidentify", str(root / "landing" / "dicom"), str(root / "out"),
                 "--key-file", str(key), "--mapping", str(mapping), "--vault-key-file",
                 str(vault_key), "--workers", "1", "--no-progress"])
    assert code in (0, 3)  # the generator plants bad files: they fail, the rest go on
    pairs = []  # (source dataset, output dataset) for each de-identified file
    by_sop = {}
    for path in (root / "landing" / "dicom").rglob("*"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            by_sop[str(ds.SOPInstanceUID)] = ds
        except Exception:
            continue
    outputs = [pydicom.dcmread(p, stop_before_pixels=True) for p in (root / "out").rglob("*.dcm")]
    originals = {}
    from dicom_deid.vault.envelope import read_sealed_table
    from dicom_deid.vault.keys import load_vault_key

    table = read_sealed_table(mapping, load_vault_key(vault_key)).to_pylist()
    for row in table:
        originals[row["sop_uid"]] = row
    for out in outputs:  # (a source pydicom cannot read plainly is left out of the pairs)
        row = originals[str(out.SOPInstanceUID)]
        if row["original_sop_uid"] in by_sop:
            pairs.append((by_sop[row["original_sop_uid"]], out))
    assert len(pairs) >= len(outputs) // 2
    return {"root": root, "key": key, "vault_key": vault_key, "mapping": mapping,
            "pairs": pairs, "audit": root / "audit.jsonl"}


def _reidentify(s: dict[str, Any], *extra: str, key: Path | None = None) -> int:
    return main(["reidentify", "--mapping", str(s["mapping"]), "--vault-key-file",
                 str(key or s["vault_key"]), "--audit", str(s["audit"]), *extra])


def _records(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in s["audit"].read_text().splitlines()]


def test_the_mapping_is_sealed_and_holds_no_original_in_any_byte(sealed: dict[str, Any]) -> None:
    assert is_sealed(sealed["mapping"])
    raw = sealed["mapping"].read_bytes()
    for src, _ in sealed["pairs"]:
        for value in (src.PatientID, src.StudyInstanceUID, src.SOPInstanceUID,
                      src.get("AccessionNumber", "")):
            if len(str(value)) >= 4:
                assert str(value).encode() not in raw


def test_reidentify_gives_the_originals_and_audits_the_lookup(
        sealed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = next((s, o) for s, o in sealed["pairs"] if s.get("Modality") == "CT"
                    and s.PatientID and "CT_small" not in str(s.filename))
    pydicom_src, pydicom_out = next((s, o) for s, o in sealed["pairs"]
                                    if str(s.filename).endswith("ct_small.dcm"))
    before = len(_records(sealed)) if sealed["audit"].exists() else 0
    out_csv = sealed["root"] / "originals.csv"
    code = _reidentify(sealed, "--purpose", "finding follow-up, tumour board",
                       "--requester", "dr-lee (radiology)",
                       "--study-uid", str(out.StudyInstanceUID),
                       "--patient-id", str(out.PatientID),
                       "--sop-uid", str(pydicom_out.SOPInstanceUID),
                       "--out", str(out_csv))
    assert code == 0
    rows = {(r["kind"], r["pseudonym"]): r["original"]
            for r in csv.DictReader(out_csv.open(encoding="utf-8"))}
    assert rows[("study_uid", str(out.StudyInstanceUID))] == str(src.StudyInstanceUID)
    assert rows[("patient_id", str(out.PatientID))] == str(src.PatientID)
    assert rows[("sop_uid", str(pydicom_out.SOPInstanceUID))] == str(pydicom_src.SOPInstanceUID)
    assert out_csv.stat().st_mode & 0o077 == 0
    records = _records(sealed)
    assert len(records) == before + 1
    last = records[-1]
    assert last["requester"] == "dr-lee (radiology)" and last["found"] == 3
    assert last["kinds"] == {"patient_id": 1, "sop_uid": 1, "study_uid": 1}
    text = sealed["audit"].read_text()
    for value in (src.StudyInstanceUID, src.PatientID, out.StudyInstanceUID, out.PatientID):
        assert str(value) not in text  # neither what was asked nor what was found
    # Printed to the terminal when no --out is given; an unknown pseudonym is counted.
    capsys.readouterr()
    assert _reidentify(sealed, "--purpose", "audit sample", "--requester", "privacy-office",
                       "--patient-id", str(out.PatientID), "--patient-id", "NOPE") == 1
    printed = capsys.readouterr()
    assert str(src.PatientID) in printed.out and "1 identifier(s) not found" in printed.err
    assert main(["audit", "verify", str(sealed["audit"]), "--vault-key-file",
                 str(sealed["vault_key"])]) == 0


@pytest.mark.parametrize("missing", ["--purpose", "--requester"])
def test_refused_without_purpose_or_requester(sealed: dict[str, Any], missing: str) -> None:
    given = {"--purpose": "research query", "--requester": "alice"}
    args = [a for k, v in given.items() if k != missing for a in (k, v)]
    with pytest.raises(SystemExit) as refused:
        _reidentify(sealed, *args, "--patient-id", "X")
    assert refused.value.code == 2
    assert _reidentify(sealed, *args, missing, "   ", "--patient-id", "X") == 2


def test_refused_with_a_wrong_vault_key_and_nothing_audited(
        sealed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    wrong = sealed["root"] / "wrong.key"
    assert main(["keygen", "--vault", str(wrong)]) == 0
    before = sealed["audit"].read_bytes() if sealed["audit"].exists() else b""
    _, out = sealed["pairs"][0]
    assert _reidentify(sealed, "--purpose", "p", "--requester", "r", "--patient-id",
                       str(out.PatientID), key=wrong) == 2
    err = capsys.readouterr()
    assert "vault key" in err.err and str(out.PatientID) not in err.out + err.err
    assert (sealed["audit"].read_bytes() if sealed["audit"].exists() else b"") == before
    # Nor with the pseudonym key in its place.
    assert _reidentify(sealed, "--purpose", "p", "--requester", "r", "--patient-id",
                       str(out.PatientID), key=sealed["key"]) == 2


def test_a_mapping_needs_a_vault_key_or_an_explicit_plain_choice(
        sealed: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DICOM_DEID_VAULT_KEY", raising=False)
    root = sealed["root"]
    args = ["deidentify", str(root / "landing" / "dicom"), str(root / "out2"), "--key-file",
            str(sealed["key"]), "--mapping", str(root / "m2.parquet"), "--workers", "1",
            "--no-progress"]
    assert main(args) == 2 and not (root / "out2").exists()
    assert "--plain-mapping" in capsys.readouterr().err
    assert main([*args, "--plain-mapping"]) in (0, 3)
    assert not is_sealed(root / "m2.parquet")


def test_rotating_the_vault_key(sealed: dict[str, Any], tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.parquet"
    shutil.copy(sealed["mapping"], mapping)
    new = tmp_path / "new.key"
    assert main(["keygen", "--vault", str(new)]) == 0
    assert main(["vault", "rotate", str(mapping), "--old-key-file", str(sealed["vault_key"]),
                 "--new-key-file", str(new)]) == 0
    audit = tmp_path / "audit.jsonl"
    _, out = sealed["pairs"][0]
    base = ["reidentify", "--mapping", str(mapping), "--audit", str(audit), "--purpose", "p",
            "--requester", "r", "--patient-id", str(out.PatientID)]
    assert main([*base, "--vault-key-file", str(sealed["vault_key"])]) == 2  # rotated away
    # The audit chain moves to the new key with the files: lookups go on appending to it.
    old_audit = tmp_path / "old-audit.jsonl"
    shutil.copy(sealed["mapping"], tmp_path / "old.parquet")
    assert main(["reidentify", "--mapping", str(tmp_path / "old.parquet"), "--audit",
                 str(old_audit), "--purpose", "p", "--requester", "r", "--patient-id",
                 str(out.PatientID), "--vault-key-file", str(sealed["vault_key"])]) == 0
    assert main(["vault", "rotate", "--audit", str(old_audit), "--old-key-file",
                 str(sealed["vault_key"]), "--new-key-file", str(new)]) == 0
    assert main(["audit", "verify", str(old_audit), "--vault-key-file", str(new)]) == 0
    assert main(["audit", "verify", str(old_audit), "--vault-key-file",
                 str(sealed["vault_key"])]) == 1
    assert main([*base[:4], str(old_audit), *base[5:], "--vault-key-file", str(new)]) == 0
    assert len(old_audit.read_text().splitlines()) == 2
    assert main([*base, "--vault-key-file", str(new)]) == 0
    # A second rotation with the old key is refused and changes nothing.
    before = mapping.read_bytes()
    assert main(["vault", "rotate", str(mapping), "--old-key-file", str(sealed["vault_key"]),
                 "--new-key-file", str(new)]) == 2
    assert mapping.read_bytes() == before


def test_the_originals_file_is_the_owners_only_even_when_it_existed(
        sealed: dict[str, Any], tmp_path: Path) -> None:
    out_csv = tmp_path / "originals.csv"
    out_csv.write_text("")
    out_csv.chmod(0o644)
    _, out = sealed["pairs"][0]
    assert _reidentify(sealed, "--purpose", "follow-up", "--requester", "r", "--patient-id",
                       str(out.PatientID), "--out", str(out_csv)) == 0
    assert out_csv.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("purpose", ["follow-up of MRN 12345678", "ask Jane Doe about it",
                                     "scan of 2023-05-14"])
def test_a_purpose_that_may_hold_phi_is_refused_and_not_audited(
        sealed: dict[str, Any], purpose: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = sealed["audit"].read_bytes() if sealed["audit"].exists() else b""
    assert _reidentify(sealed, "--purpose", purpose, "--requester", "r",
                       "--patient-id", "X") == 2
    assert purpose not in capsys.readouterr().err
    assert (sealed["audit"].read_bytes() if sealed["audit"].exists() else b"") == before


def test_the_pseudonym_key_cannot_seal_the_mapping(sealed: dict[str, Any]) -> None:
    root = sealed["root"]
    assert main(["deidentify", str(root / "landing" / "dicom"), str(root / "out3"),
                 "--key-file", str(sealed["key"]), "--mapping", str(root / "m3.parquet"),
                 "--vault-key-file", str(sealed["key"]), "--workers", "1",
                 "--no-progress"]) == 2
    assert not (root / "out3").exists() and not (root / "m3.parquet").exists()
