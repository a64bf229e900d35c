"""The command line on object stores: ``gs://`` inputs listed from their bucket, ``gs://``
outputs staged in a private local folder and uploaded when the batch is done.

Inputs are never copied as a whole: each worker fetches the file it works on (see
:mod:`dicom_deid.deid.batch`). Outputs are staged because a batch writes, links and
removes files while it applies the duplicate rule; the upload then sends each finished
file once, on a bounded pool.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicom_deid.deid.batch import Source
from dicom_deid.storage import is_object_uri, open_store
from dicom_deid.storage.base import parallel

__all__ = ["location", "staged_output", "store_sources"]


def location(text: str) -> Path | str:
    """An argument naming a local path (a :class:`Path`) or an object URI (kept as text)."""
    return text if is_object_uri(text) else Path(text)


def store_sources(url: str) -> list[Source]:
    """Every file under ``url`` (hidden names skipped), by URI, named relative to it, with
    the update time the listing gave (the worker then fetches it in one request)."""
    store = open_store(url)
    return [Source(store.uri(f.rel), f.rel, f.mtime_ns) for f in store.list_files()]


@contextmanager
def staged_output(output: Path | str, workers: int = 8) -> Iterator[Path]:
    """The local folder to write into: ``output`` itself, or for an object URI a private
    temporary folder whose files are uploaded under ``output`` when the block succeeds
    (and removed either way)."""
    if isinstance(output, Path):
        yield output
        return
    store = open_store(output)
    scratch = Path(tempfile.mkdtemp(prefix="dicom-deid-out-"))  # 0700
    try:
        yield scratch
        files = sorted(p for p in scratch.rglob("*") if p.is_file())
        parallel(lambda p: store.upload_file(p, p.relative_to(scratch).as_posix()), files,
                 workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
