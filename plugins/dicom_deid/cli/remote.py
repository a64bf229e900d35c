"""The command line on object stores: ``gs://`` inputs listed from their bucket, ``gs://``
outputs uploaded one by one as the batch publishes them.

Inputs are never copied as a whole: each worker fetches the files it works on, a few
ahead (see :mod:`dicom_deid.deid.batch`). Outputs go through the store's
:meth:`~dicom_deid.storage.base.Store.tree_writer`: a private local folder, each output
uploaded as soon as the batch publishes it (:mod:`dicom_deid.storage.upload`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicom_deid.deid.batch import Source
from dicom_deid.storage import is_object_uri, open_store
from dicom_deid.storage.base import OutputSink

__all__ = ["location", "staged_output", "store_sources"]


def location(text: str) -> Path | str:
    """An argument naming a local path (a :class:`Path`) or an object URI (kept as text)."""
    return text if is_object_uri(text) else Path(text)


def store_sources(url: str) -> list[Source]:
    """Every file under ``url`` (hidden names skipped), by URI, named relative to it, with
    the update time and size the listing gave (the worker then fetches it in one
    request)."""
    store = open_store(url)
    return [Source(store.uri(f.rel), f.rel, f.mtime_ns, f.size) for f in store.list_files()]


@contextmanager
def staged_output(output: Path | str) -> Iterator[tuple[Path, OutputSink | None]]:
    """The local folder to write into and where published outputs go from there:
    ``output`` itself and nothing, or for an object URI a private temporary folder and
    the upload of each output to ``output`` as it is published (waited for when the
    block ends; the folder removed either way). As on local disk, outputs are added to
    what ``output`` holds, and a batch that stops half way leaves stored what it had
    published."""
    if isinstance(output, Path):
        yield output, None
        return
    with open_store(output).tree_writer("", replace=False) as written:
        yield written
