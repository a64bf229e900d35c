"""A batch's hold on its output folder, and what runs that died there left behind.

Workers stage each output under a hidden name holding the run's token until the driver
publishes it; a run that fails removes its own. A run that is killed (SIGKILL, the OOM
killer, a power cut) cannot: its staged files are de-identified outputs the gate may not
have passed, hidden in the de-identified store. So each run marks the folder while it
works (an empty hidden file naming its token) and holds a shared lock on it; a run that
finds the folder unlocked removes the staged files of every marker left there first,
since those runs are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

MARKER_PREFIX = ".dicom-deid-run-"
"""A running batch's marker in its output folder: this prefix, then its token."""


def staged_marker(token: str) -> str:
    """The part of every name a run with ``token`` stages (see ``files.staged_name``)."""
    return f".{token}-"


def remove_staged(root: Path, token: str) -> int:
    """Remove the files under ``root`` that the run with ``token`` staged and never
    published; return how many."""
    marker = staged_marker(token)
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if marker in name and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


@contextlib.contextmanager
def held(out_root: Path, token: str, also: Iterable[Path] = ()) -> Iterator[int]:
    """Hold ``out_root`` for the run with ``token`` (made if missing); yields how many
    staged files of dead runs were removed from it and from ``also`` (folders the runs
    staged other files in) before this run began.

    The sweep needs the folder's lock alone: while another run holds it shared, nothing
    is swept (that run, or a later one, does it). Runs into one folder side by side
    still work; each holds the lock shared while it works.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        swept = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a run is working here: its marker is not stale
        except OSError:
            pass  # a filesystem without locks: nothing is swept (a dead run's stay)
        else:
            swept = _sweep_dead(out_root, also)
        # the marker is made under the shared lock: a sweeper (exclusive) never sees a
        # live run's marker
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        marker = out_root / f"{MARKER_PREFIX}{token}"
        with open(marker, "x"):
            pass
        try:
            yield swept
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()
    finally:
        os.close(fd)  # releases the lock


def _sweep_dead(out_root: Path, also: Iterable[Path]) -> int:
    """Remove what the runs whose markers are in ``out_root`` staged, then the markers
    (called with the folder's lock held exclusively: those runs are gone)."""
    roots = [out_root, *(p for p in also if p.is_dir())]
    swept = 0
    for entry in os.scandir(out_root):
        if not entry.name.startswith(MARKER_PREFIX):
            continue
        token = entry.name[len(MARKER_PREFIX):]
        if token:
            swept += sum(remove_staged(root, token) for root in roots)
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
    return swept
