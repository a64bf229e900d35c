"""The embedded warehouse's restricted file: encrypted at rest under the restricted key,
refused without it, encrypted in place when an older version left it in clear, and moved
to a new key whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dicom_deid.errors import KeyConfigError
from dicom_deid.keyfile import generate_key_file, load_key
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.restricted_file import (
    RESTRICTED_KEY_ENV,
    RESTRICTED_KEY_FILE_ENV,
    load_restricted_key,
    rekey,
)

SECRET = "Doe^Jane-7f3a9c"
PATIENT = "PID-558812-X"


def _fill(wh: DuckDBWarehouse) -> None:
    wh.ensure_schema()
    wh.insert_rows("dicom_metadata", [{"source_uri": f"/landing/{SECRET}/1.dcm",
                                       "PatientID": PATIENT, "SOPInstanceUID": "1.2.3"}])
    wh.insert_rows("deid_errors", [{"run_id": "r", "path": f"/landing/{SECRET}/2.dcm",
                                    "stage": "read", "reason": "zero-byte file"}])


def _every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_no_identifier_is_readable_from_any_warehouse_file(tmp_path: Path) -> None:
    main = tmp_path / "wh" / "w.duckdb"
    with DuckDBWarehouse(main) as wh:
        _fill(wh)
        wh.connection.execute("CHECKPOINT restricted")
        # the rows are there, for whoever holds the key
        got = wh.query("SELECT PatientID FROM dicom_metadata").column(0).to_pylist()
        assert got == [PATIENT]
        during = _every_byte(tmp_path)  # the write-ahead log included, while open
    after = _every_byte(tmp_path)
    for data in (during, after):
        assert SECRET.encode() not in data and PATIENT.encode() not in data
    restricted = main.with_name("w_restricted.duckdb")
    assert restricted.stat().st_size > 0
    with duckdb.connect(":memory:") as con, pytest.raises(duckdb.Error, match="encrypted"):
        con.execute(f"ATTACH '{restricted}' AS r (READ_ONLY)")


def test_refused_without_the_key_or_with_another(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    main = tmp_path / "w.duckdb"
    with DuckDBWarehouse(main) as wh:
        _fill(wh)
    monkeypatch.delenv(RESTRICTED_KEY_ENV)
    with pytest.raises(KeyConfigError, match="DICOM_DEID_RESTRICTED_KEY") as caught:
        DuckDBWarehouse(main)
    assert SECRET not in str(caught.value)
    # read only without the key: an analyst's view, the restricted tables absent
    with DuckDBWarehouse(main, read_only=True) as ro:
        assert ro.columns("dicom_metadata") == {}
        assert ro.query("SELECT count(*) FROM deid_runs").column(0)[0].as_py() == 0
    with pytest.raises(KeyConfigError, match="does not open"):
        DuckDBWarehouse(main, restricted_key=bytes(range(1, 33)))


def test_a_clear_file_of_an_earlier_version_is_encrypted_in_place(tmp_path: Path) -> None:
    main = tmp_path / "w.duckdb"
    restricted = tmp_path / "w_restricted.duckdb"
    with duckdb.connect(str(restricted)) as con:
        con.execute("CREATE TABLE deid_errors (run_id VARCHAR, path VARCHAR, stage VARCHAR, "
                    "kind VARCHAR, reason VARCHAR)")
        con.execute(f"INSERT INTO deid_errors VALUES ('r', '/landing/{SECRET}/1.dcm', "
                    "'read', 'read', 'truncated')")
    assert SECRET.encode() in restricted.read_bytes()
    duckdb.connect(str(main)).close()  # the analysts' file, as that version left it too
    with pytest.raises(Exception, match="still in clear"):
        DuckDBWarehouse(main, read_only=True)
    with DuckDBWarehouse(main) as wh:
        wh.ensure_schema()
        paths = wh.query("SELECT path FROM deid_errors").column(0).to_pylist()
        assert paths == [f"/landing/{SECRET}/1.dcm"]
    assert SECRET.encode() not in _every_byte(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb", "w_restricted.duckdb"]


def test_rekey_moves_the_file_to_the_new_key(tmp_path: Path) -> None:
    main = tmp_path / "w.duckdb"
    old = load_restricted_key()
    assert old is not None
    with DuckDBWarehouse(main) as wh:
        _fill(wh)
    new = bytes(range(7, 39))
    with pytest.raises(KeyConfigError, match="old restricted key"):
        rekey(str(main.with_name("w_restricted.duckdb")), new, old)
    rekey(str(main.with_name("w_restricted.duckdb")), old, new)
    with pytest.raises(KeyConfigError):
        DuckDBWarehouse(main, restricted_key=old)
    with DuckDBWarehouse(main, restricted_key=new, read_only=True) as wh:
        assert wh.query("SELECT PatientID FROM dicom_metadata").column(0).to_pylist() == \
            [PATIENT]
    assert SECRET.encode() not in _every_byte(tmp_path)


def test_keygen_and_rekey_from_the_command_line(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    generate_key_file(old_file)
    cli = [str(Path(sys.executable).parent / "dicom-deid")]
    made = subprocess.run([*cli, "keygen", "--restricted", str(new_file)],
                          capture_output=True, text=True, check=True)
    assert "restricted key" in made.stdout and new_file.stat().st_mode & 0o777 == 0o600
    main = tmp_path / "w.duckdb"
    monkeypatch.delenv(RESTRICTED_KEY_ENV)
    monkeypatch.setenv(RESTRICTED_KEY_FILE_ENV, str(old_file))
    with DuckDBWarehouse(main) as wh:
        _fill(wh)
    done = subprocess.run([*cli, "warehouse", "rekey", "--warehouse", f"duckdb://{main}",
                           "--old-key-file", str(old_file), "--new-key-file", str(new_file)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_key(new_file).hex() not in done.stdout + done.stderr
    monkeypatch.setenv(RESTRICTED_KEY_FILE_ENV, str(new_file))
    assert load_restricted_key() == load_key(new_file)
    with DuckDBWarehouse(main, read_only=True) as wh:
        assert wh.query("SELECT count(*) FROM deid_errors").column(0)[0].as_py() == 1
