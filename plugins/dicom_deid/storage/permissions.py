"""File modes of restricted local files: what holds original identifiers is readable by
its owner only.

Folders that will hold restricted files are made 0700 *before* anything is written into
them (so a file is never reachable by others, whatever mode the code that wrote it used:
:func:`dicom_deid.dicom.files.write_atomic` creates 0666 less the umask), and the files
are tightened to 0600 after the fact.

Why not a umask: it is per process, so setting it inside a step races with the other
threads of an Airflow task, and a worker pool started meanwhile would inherit it for the
de-identified outputs, which are meant to be shared.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "restrict", "restrict_tree"]

log = logging.getLogger(__name__)
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create folder ``path`` with mode 0700, or tighten it to 0700 if it exists.

    Missing parents are created with the default mode: only what is restricted is made
    private (a data folder also holds the published, shareable batches).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    restrict(path)
    return path


def restrict(path: Path) -> None:
    """Set a folder to 0700, a file to 0600 (symlinks and missing paths are left alone).

    A folder owned by someone else cannot be changed: that is logged, not raised, since
    what the pipeline writes below it is in folders of its own.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    wanted = PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE
    if stat.S_IMODE(st.st_mode) == wanted:
        return
    try:
        os.chmod(path, wanted)
    except FileNotFoundError:
        pass
    except PermissionError:
        log.warning("cannot restrict %s to mode %o (not its owner)", path, wanted)


def restrict_tree(root: Path) -> None:
    """:func:`restrict` ``root`` and everything below it (files may come and go meanwhile)."""
    restrict(root)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            restrict(Path(folder) / name)
