"""The local paths of a ``deidentify`` run, checked before any file is touched.

A one-word slip must not destroy a key, an original or a de-identified tree: the errors
list or the mapping on the key file, on a landing file or on each other; an output folder
that is the input, or inside it (the originals end up in the research tree, and a rerun
de-identifies its own outputs again). Messages name the options, not the paths (a
landing path can carry a patient's name).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from dicom_deid.errors import ConfigError
from dicom_deid.vault.envelope import MAGIC as SEALED_MAGIC

__all__ = ["ERRORS_HEADER", "check_run_paths", "write_errors_csv"]

ERRORS_HEADER = b"path,kind,stage,reason"
"""How the errors list this tool writes starts."""
_PARQUET_MAGIC = b"PAR1"


def check_run_paths(source: object, output: object, errors: Path | None,
                    mapping: Path | None, keys: dict[str, Path | None]) -> None:
    """Refuse (:class:`ConfigError`) paths that would overwrite what the run must not:
    ``source`` and ``output`` are local paths or store URLs (only local ones are
    compared); ``keys`` maps an option (``--key-file``) to its path."""
    local_in = Path(source).resolve() if isinstance(source, Path) else None
    local_out = Path(output).resolve() if isinstance(output, Path) else None
    if local_in is not None and local_out is not None and (
            local_out == local_in or local_in in local_out.parents
            or local_out in local_in.parents):
        raise ConfigError("OUTPUT is INPUT, inside it or around it: the originals would be "
                          "mixed with the de-identified tree; choose a folder apart")
    if local_out is not None:
        _writable(local_out)
    written = {"--errors": errors, "--mapping": mapping}
    if errors is not None and mapping is not None and _same(errors, mapping):
        raise ConfigError("--errors and --mapping name the same file")
    for option, path in written.items():
        if path is None:
            continue
        for key_option, key_path in keys.items():
            if key_path is not None and _same(path, key_path):
                raise ConfigError(f"{option} names the file of {key_option}: it would be "
                                  "overwritten")
        if local_in is not None and (_same(path, local_in)
                                     or local_in in Path(path).resolve().parents):
            raise ConfigError(f"{option} is inside INPUT: it would overwrite or add to the "
                              "landing files; write it elsewhere")
        if os.path.lexists(path) and not _ours(Path(path), option):
            raise ConfigError(f"{option} names an existing file this tool did not write "
                              "(not an errors list or a mapping): remove it or choose another "
                              "path")


def _writable(folder: Path) -> None:
    """Refuse an OUTPUT (or the folder it would be made in) where no file can be created:
    a read-only mount would otherwise fail every input after reading it."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f".dicom-deid-write-check-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"OUTPUT cannot be written ({exc.strerror})") from None


def _same(a: Path, b: Path) -> bool:
    """The same file (by inode when both exist, else by resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _ours(path: Path, option: str) -> bool:
    """Whether an existing file is one a previous run wrote for ``option`` (a rerun
    replaces it): a regular file starting as this tool's errors list or mapping does."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ERRORS_HEADER))
    except OSError:
        return False
    if option == "--errors":
        return head.startswith(ERRORS_HEADER) or not head
    return head.startswith((_PARQUET_MAGIC, SEALED_MAGIC)) or not head


def write_errors_csv(path: Path, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """An errors list (path, kind, stage, reason) only its owner may read: landing paths
    can carry names and MRNs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(ERRORS_HEADER.decode().split(","))
        writer.writerows(rows)
