"""The command line over an untrusted landing folder: links and special files listed,
never followed; a name that is not UTF-8 carried; nothing of a landing path printed by
``deidentify``; an INPUT that is no folder nor file refused as a bad argument."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from dicom_deid.cli.main import main
from instances import KEY, ROOT, make_instance, to_bytes


def _instance(i: int) -> bytes:
    ds = make_instance()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}6.{i}"
    return to_bytes(ds)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "SMITHERS_WAYLON_MRN777001").mkdir(parents=True)
    (src / "SMITHERS_WAYLON_MRN777001" / "a.dcm").write_bytes(_instance(1))
    with open(os.path.join(os.fsencode(src), b"DOE\xff\xfe_MRN777002.dcm"), "wb") as fh:
        fh.write(_instance(2))
    (tmp_path / "ROE_RICH_MRN777003").mkdir()
    (tmp_path / "ROE_RICH_MRN777003" / "p.dcm").write_bytes(_instance(3))
    (src / "ROE_RICH_MRN777003.dcm").symlink_to(tmp_path / "ROE_RICH_MRN777003" / "p.dcm")
    (src / "ROE_RICH_MRN777003").symlink_to(tmp_path / "ROE_RICH_MRN777003")
    (src / "POE_MRN777004_L1").symlink_to("POE_MRN777004_L2")
    (src / "POE_MRN777004_L2").symlink_to("POE_MRN777004_L1")
    os.mkfifo(src / "FIFO_MRN777005.dcm")
    return src


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "k"
    path.write_text(KEY.hex())
    path.chmod(0o600)
    return path


def test_deidentify_lists_every_entry_it_does_not_read_and_prints_no_path(
        landing: Path, key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    errors = tmp_path / "restricted" / "errors.csv"
    code = main(["-v", "deidentify", str(landing), str(tmp_path / "out"), "--key-file",
                 str(key), "--workers", "1", "--no-progress", "--errors", str(errors)])
    printed = capsys.readouterr()
    assert code == 3
    assert "processed 2, failed 5" in printed.out
    assert "MRN7770" not in printed.out + printed.err
    with open(errors, newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert rows == {
        "FIFO_MRN777005.dcm": "not a regular file (FIFO)",
        "POE_MRN777004_L1": "symbolic link loop (links are not followed)",
        "POE_MRN777004_L2": "symbolic link loop (links are not followed)",
        "ROE_RICH_MRN777003": "symbolic link to a folder (links are not followed)",
        "ROE_RICH_MRN777003.dcm": "symbolic link to a file (links are not followed)",
    }
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2  # none of ROE's


def test_deidentify_with_a_mapping_over_a_name_that_is_not_utf8(
        landing: Path, key: Path, tmp_path: Path) -> None:
    """The run crashed writing the mapping, after publishing every output."""
    mapping = tmp_path / "restricted" / "mapping.parquet"
    code = main(["deidentify", str(landing), str(tmp_path / "out"), "--key-file", str(key),
                 "--workers", "2", "--no-progress", "--mapping", str(mapping),
                 "--plain-mapping"])
    assert code == 3 and mapping.exists()


def test_export_metadata_goes_on_past_links_loops_and_odd_names(
        landing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export-metadata", str(landing), "--out", str(tmp_path / "meta"),
                 "--no-load", "--workers", "1"])
    assert code == 3
    assert "exported 2, unchanged 0, failed 5" in capsys.readouterr().out


def test_an_input_that_is_a_fifo_is_a_bad_argument(tmp_path: Path, key: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "DOE_JANE_MRN1")
    code = main(["deidentify", str(tmp_path / "DOE_JANE_MRN1"), str(tmp_path / "out"),
                 "--key-file", str(key), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("dicom-deid: the input is neither a folder nor a file: not a regular file "
                   "(FIFO)\n")
    assert not (tmp_path / "out").exists()
