"""Reads from an object store started ahead of their use, on threads of this process.

Against a store 20-50 ms away per request, a worker that waits for each read in turn
spends more time waiting than working; a few reads in flight ahead of the one it works
on hide that wait. Used by the de-identification workers (whole inputs) and the metadata
export (headers).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["AHEAD", "prefetched"]

T = TypeVar("T")
R = TypeVar("R")

AHEAD = 8
"""Reads in flight ahead of the item being worked on (and threads per process): at 20 ms
a request, 8 against 4 took the export from 226 to 339 files/s with 2 workers."""

_POOL: list[ThreadPoolExecutor] = []  # this process's read threads (made on first use)
os.register_at_fork(after_in_child=_POOL.clear)  # a forked child has none of its threads


def prefetched(
    items: Iterable[T], read: Callable[[T], R], wanted: Callable[[T], bool], *,
    discard: Callable[[R], None] | None = None, ahead: int = AHEAD,
) -> Iterator[tuple[T, Future[R] | None]]:
    """``items`` in order, each ``wanted`` one with the future of ``read(item)``, started
    up to ``ahead`` items before it is handed over; the others with None. When the caller
    stops early, reads not handed over are cancelled, or their results given to
    ``discard`` (a local copy to remove, say)."""
    window: deque[tuple[T, Future[R] | None]] = deque()
    todo = iter(items)

    def fill() -> None:
        while len(window) <= ahead:
            try:
                item = next(todo)
            except StopIteration:
                return
            future = None
            if wanted(item):
                if not _POOL:
                    _POOL.append(ThreadPoolExecutor(AHEAD, "dicom-deid-read"))
                future = _POOL[0].submit(read, item)
            window.append((item, future))

    try:
        fill()
        while window:
            yield window.popleft()
            fill()
    finally:
        for _, pending in window:
            if pending is not None and not pending.cancel() and discard is not None:
                with contextlib.suppress(Exception):
                    discard(pending.result())

