"""What a killed run leaves in the output folder is removed by the next run there.

A run stages each output under a hidden name holding its token until the driver
publishes it; a run killed outright (SIGKILL, OOM, power cut) never removes them, and
they are de-identified outputs the gate may not have passed. The next run that finds
the folder free removes them (deid/staging.py); a run that is still working is never
touched.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from dicom_deid.config.model import privacy_first
from dicom_deid.deid import staging
from dicom_deid.deid.batch import Source, run_batch
from instances import KEY, make_instance, to_bytes


def _inputs(root: Path, n: int = 3) -> list[Source]:
    root.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(n):
        ds = make_instance()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.9.7.{i}"
        path = root / f"in{i}.dcm"
        path.write_bytes(to_bytes(ds))
        sources.append(Source(str(path), path.name))
    return sources


def _dead_run(out: Path, token: str = "0123456789ab") -> Path:
    """What a run killed mid-batch leaves: its marker and a staged output."""
    folder = out / "1.2.3" / "4.5.6"
    folder.mkdir(parents=True)
    staged = folder / f".7.8.9.dcm.{token}-4242-1.tmp"
    staged.write_bytes(b"DICM staged, never published")
    (out / f"{staging.MARKER_PREFIX}{token}").touch()
    return staged


def test_a_run_removes_what_a_killed_run_staged(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    staged = _dead_run(out)
    unrelated = out / ".notes.tmp"  # not a staged name of a dead run: left alone
    unrelated.write_text("x")
    with caplog.at_level(logging.WARNING):
        summary = run_batch(_inputs(tmp_path / "in"), out, privacy_first(), KEY, workers=1,
                            progress=False)
    assert summary.processed == 3
    assert not staged.exists()
    assert unrelated.exists()
    assert not list(out.glob(f"{staging.MARKER_PREFIX}*"))  # neither its marker nor ours
    assert "removed 1 staged output(s)" in caplog.text
    assert len([p for p in out.rglob("*.dcm")]) == 3


def test_a_working_run_is_not_swept(tmp_path: Path) -> None:
    """While another run holds the folder, nothing of any marker is removed."""
    out = tmp_path / "out"
    staged = _dead_run(out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # another run at work in OUT
        run_batch(_inputs(tmp_path / "in"), out, privacy_first(), KEY, workers=1,
                  progress=False)
    finally:
        os.close(fd)
    assert staged.exists()
    assert (out / f"{staging.MARKER_PREFIX}0123456789ab").exists()


def _hold_and_die(out: str, ready: multiprocessing.synchronize.Event) -> None:
    with staging.held(Path(out), "feedfacecafe"):
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_holder_leaves_its_marker_and_frees_the_folder(tmp_path: Path) -> None:
    """The kernel drops a dead process's lock; its marker stays for the next run."""
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_and_die, args=(str(out), ready))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    marker = out / f"{staging.MARKER_PREFIX}feedfacecafe"
    assert marker.exists()
    staged = out / ".a.dcm.feedfacecafe-1-1.tmp"
    staged.write_bytes(b"x")
    with staging.held(out, "000000000000") as swept:
        assert swept == 1
        assert (out / f"{staging.MARKER_PREFIX}000000000000").exists()
    assert not staged.exists() and not marker.exists()
    assert not (out / f"{staging.MARKER_PREFIX}000000000000").exists()
