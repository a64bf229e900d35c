"""A local landing zone's listing: symbolic links and special files are never listed nor
followed, and a subfolder it cannot list does not stop the listing; a warning counts what
was left out, naming no path. :func:`open_regular` never blocks on a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_deid.errors import BadInput
from dicom_deid.storage import LocalStore
from dicom_deid.storage.local import NOT_A_FILE, open_regular


def test_the_listing_leaves_out_links_special_files_and_unlistable_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "landing"
    (root / "DOE_JANE_MRN1").mkdir(parents=True)
    (root / "DOE_JANE_MRN1" / "b.dcm").write_bytes(b"b")
    (root / "a.dcm").write_bytes(b"a")
    (tmp_path / "ROE_MRN2.dcm").write_bytes(b"x")
    (root / "ROE_MRN2.dcm").symlink_to(tmp_path / "ROE_MRN2.dcm")
    (root / "L1").symlink_to("L2")
    (root / "L2").symlink_to("L1")
    os.mkfifo(root / "fifo.dcm")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # as a folder of mode 000 to a user who is not root
        if str(path).endswith("DOE_JANE_MRN1"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [f.rel for f in LocalStore(root).list_files()] == ["a.dcm"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("5 entr(ies) not listed")
    assert "1 cannot list folder: Permission denied" in warning
    assert "2 symbolic link loop" in warning and "1 not a regular file (FIFO)" in warning
    assert "MRN" not in caplog.text and str(tmp_path) not in caplog.text


def test_open_regular_refuses_a_fifo_a_device_and_a_link_at_once(tmp_path: Path,
                                                                 no_hang: None) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for path, reason in ((tmp_path / "fifo", "not a regular file (FIFO)"),
                         (Path("/dev/zero"), "not a regular file (character device)"),
                         (tmp_path / "link", "symbolic link (links are not followed)")):
        with pytest.raises(BadInput) as refused:
            open_regular(str(path))
        assert (refused.value.kind, refused.value.reason) == (NOT_A_FILE, reason)
    fd, st = open_regular(str(tmp_path / "file"))
    try:
        assert os.get_blocking(fd) and os.read(fd, 10) == b"data" and st.st_size == 4
    finally:
        os.close(fd)
