"""Sealed files: only the vault key opens them, any changed byte is refused, rotation
leaves the old key useless, and a sealed mapping holds no original value in any byte."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from dicom_deid.deid.mapping import MappingWriter, mapping_schema
from dicom_deid.vault.envelope import (
    MAGIC,
    VaultError,
    is_sealed,
    open_sealed,
    read_sealed_table,
    reseal,
    seal,
    seal_table,
)
from dicom_deid.vault.keys import derive, load_vault_key, vault_key_id

KEY, OTHER = bytes(range(32)), bytes(range(1, 33))
ORIGINALS = {"original_patient_id": "PAT-0042-SMITH", "original_accession": "ACC9981234",
             "original_study_uid": "1.2.840.99999.1.2.3.4.5.6.7"}


def test_a_sealed_blob_opens_with_its_key_only() -> None:
    blob = seal(b"original identifiers", KEY)
    assert blob.startswith(MAGIC) and b"original" not in blob
    assert open_sealed(blob, KEY) == b"original identifiers"
    with pytest.raises(VaultError, match="another vault key"):
        open_sealed(blob, OTHER)
    assert seal(b"same", KEY) != seal(b"same", KEY)  # a fresh data key and nonce each time


@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_any_changed_byte_is_refused(where: str) -> None:
    blob = bytearray(seal(b"x" * 200, KEY))
    header_end = blob.index(b"\n")
    pos = {"header": header_end - 5, "body": header_end + 10, "tag": len(blob) - 1}[where]
    blob[pos] ^= 0x01
    with pytest.raises(VaultError):
        open_sealed(bytes(blob), KEY)


def test_plain_bytes_are_not_taken_for_a_sealed_file() -> None:
    with pytest.raises(VaultError, match="not a sealed file"):
        open_sealed(b"PAR1....", KEY)


def test_the_subkeys_differ_and_the_key_id_is_no_key() -> None:
    assert derive(KEY, "wrap") != derive(KEY, "audit") != KEY
    assert len(vault_key_id(KEY)) == 16 and vault_key_id(KEY) != vault_key_id(OTHER)
    assert vault_key_id(KEY) not in KEY.hex()


def test_the_vault_key_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    path.write_text(KEY.hex() + "\n")
    assert load_vault_key(path) == KEY
    assert load_vault_key(environ={"DICOM_DEID_VAULT_KEY": OTHER.hex()}) == OTHER
    with pytest.raises(Exception, match="no vault key"):
        load_vault_key(environ={})
    with pytest.raises(Exception, match="passphrase"):
        load_vault_key(environ={"DICOM_DEID_VAULT_KEY": "correct horse battery staple!!!!!"})


def _rows(n: int) -> list[dict[str, object]]:
    return [{"run_id": "r", "source_path": f"in/{i}.dcm", "output_path": f"2.25.{i}.dcm",
             "study_uid": f"2.25.{i}", "patient_id": f"PSEUDO{i}", **{
                 k: f"{v}{i}" for k, v in ORIGINALS.items()}} for i in range(n)]


@pytest.mark.parametrize("dropped", [False, True])
def test_a_sealed_mapping_never_reaches_the_disk_in_clear(tmp_path: Path, dropped: bool) -> None:
    path = tmp_path / "mapping.parquet"
    writer = MappingWriter(path, batch_rows=3, seal=lambda data: seal(data, KEY))
    for row in _rows(7):
        writer.add(row)
    if dropped:
        writer.drop("in/2.dcm")
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["mapping.parquet"]  # no clear temp file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and is_sealed(path)
    raw = path.read_bytes()
    for value in ORIGINALS.values():
        assert value.encode() not in raw and value[:8].encode() not in raw
    table = read_sealed_table(path, KEY)
    assert table.schema.equals(mapping_schema())
    expected = [r["source_path"] for r in _rows(7) if not (dropped and r["source_path"] ==
                                                           "in/2.dcm")]
    assert table.column("source_path").to_pylist() == expected
    assert table.column("original_patient_id").to_pylist()[0] == "PAT-0042-SMITH0"


def test_rotation_re_encrypts_and_the_old_key_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    path.write_bytes(seal_table(pa.table({"original_patient_id": ["PAT1"]}), KEY))
    before = path.read_bytes()
    reseal(path, KEY, OTHER)
    assert path.read_bytes() != before
    assert read_sealed_table(path, OTHER).column(0).to_pylist() == ["PAT1"]
    with pytest.raises(VaultError):
        read_sealed_table(path, KEY)
    with pytest.raises(VaultError):  # deleting the key is crypto-shredding: nothing opens
        open_sealed(path.read_bytes(), bytes(32))
