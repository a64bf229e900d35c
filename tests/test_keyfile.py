"""Key files are read as untrusted paths: a regular file (a link to one followed) of a
key's size, opened without blocking, with a warning when others may read it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_deid.errors import KeyConfigError
from dicom_deid.keyfile import MAX_KEY_FILE_BYTES, load_key

KEY = bytes(range(32))




def _key_file(path: Path, mode: int) -> Path:
    path.write_text(KEY.hex() + "\n")
    path.chmod(mode)
    return path


def test_a_private_key_file_is_read_without_a_word(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    assert load_key(_key_file(tmp_path / "k", 0o600)) == KEY
    assert not caplog.records


@pytest.fixture
def quiet_root() -> Iterator[None]:
    """The command line's logging without -v: errors only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_key_file_others_may_read_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, quiet_root: None, mode: int) -> None:
    path = _key_file(tmp_path / "k", mode)
    assert load_key(path) == KEY
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"mode {mode:04o}" in record.getMessage() and str(path) in record.getMessage()
    assert KEY.hex() not in caplog.text


def test_a_link_to_a_key_file_is_followed(tmp_path: Path) -> None:
    """Secrets mounted by Kubernetes are links into a hidden folder."""
    (tmp_path / "..data").mkdir()
    real = _key_file(tmp_path / "..data" / "k", 0o600)
    (tmp_path / "k").symlink_to(real)
    assert load_key(tmp_path / "k") == KEY


def test_a_fifo_as_key_file_is_refused_at_once(tmp_path: Path, no_hang: None) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KeyConfigError, match="is not a regular file"):
        load_key(tmp_path / "fifo")


def test_a_device_as_key_file_is_refused_not_read_without_end(no_hang: None) -> None:
    with pytest.raises(KeyConfigError, match="is not a regular file"):
        load_key(Path("/dev/zero"), what="vault key")


def test_a_key_file_larger_than_a_key_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(MAX_KEY_FILE_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(KeyConfigError, match="larger than 64 KiB"):
        load_key(big)
    big.write_bytes(os.urandom(4096))  # a long raw key is still a key
    assert len(load_key(big)) == 4096


def test_a_folder_or_a_missing_file_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="is not a regular file"):
        load_key(tmp_path)
    with pytest.raises(KeyConfigError, match=r"cannot read de-identification key file .*: "
                                             r"No such file or directory"):
        load_key(tmp_path / "none")
