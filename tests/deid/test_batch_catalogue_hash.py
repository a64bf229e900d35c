"""An input the pipeline chose from the export's catalogue is released only if its bytes
are those the export hashed (probe 10 #5): a file replaced in place at the same size,
modification time and SOP Instance UID (a corrected re-send copied with ``cp -p``) is
listed as ``changed``, never de-identified in the catalogued file's place. Inputs
without a catalogue hash (the command line) are not hashed at all."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from dicom_deid.config.model import privacy_first
from dicom_deid.deid import batch
from dicom_deid.deid.batch import Source, run_batch
from dicom_deid.dicom.files import HEAD_BYTES, InputFile, content_sha256
from instances import KEY, make_instance, to_bytes


def _instance_bytes(patient_id: str, large: bool) -> bytes:
    ds = make_instance()
    ds.PatientID = patient_id
    if large:  # beyond the head: the pixel data is copied by the kernel, never read here
        ds.Rows, ds.Columns = 256, 512
        ds.PixelData = bytes(range(256)) * (256 * 512 * 2 // 256)
    return to_bytes(ds)


def _landed(tmp: Path, patient_id: str = "MRN1234567", large: bool = False) -> Path:
    path = tmp / "in" / "IM0001"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(_instance_bytes(patient_id, large))
    return path


def _replace_keeping_size_and_time(path: Path, patient_id: str, large: bool) -> None:
    """Another patient's instance under the same name, size, mtime (to the ns) and SOP
    Instance UID, written in place (``cp -p`` of a re-send)."""
    st = os.stat(path)
    data = _instance_bytes(patient_id, large)
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _catalogue(path: Path) -> tuple[tuple[int, int, str], str]:
    st = os.stat(path)
    return ((st.st_size, st.st_mtime_ns // 1000, make_instance().SOPInstanceUID),
            hashlib.sha256(path.read_bytes()).hexdigest())


def _run(path: Path, tmp: Path, **source: Any) -> list[dict[str, str]]:
    errors = tmp / "errors.csv"
    run_batch([Source(path, path.name, **source)], tmp / "out", privacy_first(), KEY,
              workers=1, errors_path=errors, progress=False)
    with open(errors, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("large", [False, True], ids=["read-whole", "head-and-copy"])
def test_a_file_swapped_at_the_same_size_time_and_sop_uid_is_not_released(
        tmp_path: Path, large: bool) -> None:
    path = _landed(tmp_path, large=large)
    catalogued, digest = _catalogue(path)
    _replace_keeping_size_and_time(path, "MRN7734999", large)
    assert _catalogue(path)[0] == catalogued  # what the old check compared: all the same
    rows = _run(path, tmp_path, catalogued=catalogued, catalogued_sha256=digest)
    assert [(r["kind"], r["path"]) for r in rows] == [("changed", "IM0001")]
    assert "content is not what the export catalogued" in rows[0]["reason"]
    assert "MRN" not in rows[0]["reason"]
    assert not list((tmp_path / "out").rglob("*.dcm"))
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


@pytest.mark.parametrize("large", [False, True], ids=["read-whole", "head-and-copy"])
def test_the_catalogued_content_is_released(tmp_path: Path, large: bool) -> None:
    path = _landed(tmp_path, large=large)
    catalogued, digest = _catalogue(path)
    assert _run(path, tmp_path, catalogued=catalogued, catalogued_sha256=digest.upper()) == []
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1


def test_without_a_catalogue_hash_nothing_is_hashed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line (no catalogue) pays nothing for the check."""
    path = _landed(tmp_path, large=True)
    catalogued, _ = _catalogue(path)
    hashed: list[int] = []
    monkeypatch.setattr(batch, "content_sha256",
                        lambda source: hashed.append(source.size) or "")
    for run, source in (("catalogued", {"catalogued": catalogued}), ("cli", {})):
        (tmp_path / run).mkdir()
        assert _run(path, tmp_path / run, **source) == []
        assert len(list((tmp_path / run / "out").rglob("*.dcm"))) == 1
    assert hashed == []


def test_a_file_written_to_while_it_is_de_identified_is_not_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashed when opened, then rewritten in place (its time set back) before its pixel
    data is copied: what would be released is not what was hashed."""
    path = _landed(tmp_path, large=True)
    catalogued, digest = _catalogue(path)
    real = batch.write_staged

    def rewritten_meanwhile(*args: Any, **kwargs: Any) -> str:
        _replace_keeping_size_and_time(path, "MRN7734999", True)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "write_staged", rewritten_meanwhile)
    rows = _run(path, tmp_path, catalogued=catalogued, catalogued_sha256=digest)
    assert [(r["kind"], r["path"]) for r in rows] == [("changed", "IM0001")]
    assert "written to while it was read" in rows[0]["reason"]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_content_sha256_hashes_the_head_and_the_rest(tmp_path: Path) -> None:
    data = os.urandom(3 * HEAD_BYTES + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, HEAD_BYTES, 0)
        assert content_sha256(InputFile(fd, len(data), head)) == hashlib.sha256(data).hexdigest()
        whole = InputFile(fd, len(data), data)
        assert content_sha256(whole) == hashlib.sha256(data).hexdigest()
        os.truncate(path, 2 * HEAD_BYTES)  # cut short since opened: another digest
        assert content_sha256(InputFile(fd, len(data), head)) \
            != hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
