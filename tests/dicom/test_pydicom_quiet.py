"""pydicom's reports of odd values quote the value; none may reach stderr or a log.

The input is pydicom's own CT file with a referenced UID that breaks the UI rules (a
component with a leading zero, as some scanners write), saved big endian so that the
Dataset path (pydicom) reads and writes every value.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

BAD_UID = "1.2.826.0.1.3680043.99.048213977.7"
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


@pytest.fixture
def big_endian_input(tmp_path: Path) -> Path:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = BAD_UID
    ds.ReferencedImageSequence = Sequence([ref])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    folder = tmp_path / "in"
    folder.mkdir()
    pydicom.dcmwrite(folder / "ct.dcm", ds, little_endian=False, implicit_vr=False,
                     force_encoding=True)
    return folder


def test_a_value_pydicom_finds_invalid_is_not_printed(big_endian_input: Path,
                                                      tmp_path: Path) -> None:
    key = tmp_path / "deid.key"
    key.write_text(bytes(range(32)).hex())
    proc = subprocess.run(
        [sys.executable, "-c", "from dicom_deid.cli import run; run()", "deidentify",
         str(big_endian_input), str(tmp_path / "out"), "--key-file", str(key),
         "--workers", "1", "--no-progress", "--verify"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = list((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 1
    assert b"\x00\x08\x11\x40" in written[0].read_bytes() or \
        b"\x08\x00\x40\x11" in written[0].read_bytes()  # the sequence is still there
    assert BAD_UID not in proc.stderr and BAD_UID not in proc.stdout
    assert "048213977" not in proc.stderr


def test_pydicom_logs_no_value_once_the_engine_is_imported(
        caplog: pytest.LogCaptureFixture) -> None:
    import dicom_deid.dicom  # noqa: F401  (its import is what quiets pydicom)

    caplog.set_level(logging.DEBUG)
    ds = Dataset()
    ds.SOPInstanceUID = BAD_UID  # pydicom validates UI values as they are set
    assert ds.SOPInstanceUID == BAD_UID
    assert BAD_UID not in caplog.text
    assert logging.getLogger("pydicom").getEffectiveLevel() >= logging.CRITICAL
