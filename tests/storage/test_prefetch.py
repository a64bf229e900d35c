"""The read-ahead window the de-identification workers and the metadata export use for
object-store reads: order kept, a bounded number in flight, nothing left behind."""

from __future__ import annotations

import os
import threading
import time

import pytest

from dicom_deid.storage import prefetch
from dicom_deid.storage.prefetch import AHEAD, prefetched


class Reads:
    """A read that records which items started and blocks until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, item: int) -> str:
        with self.lock:
            self.started.append(item)
        if not self.release.wait(10):
            raise TimeoutError("never released")
        if item == 5:
            raise ValueError("unreadable")
        return f"read {item}"

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.started) < n and time.monotonic() < deadline:
            time.sleep(0.01)


def test_reads_start_ahead_in_a_bounded_window_and_come_back_in_order() -> None:
    reads = Reads()
    items = list(range(12))
    window = prefetched(items, reads, lambda i: i % 4 != 3)  # 3, 7, 11: not read
    first, future = next(window)
    in_window = [i for i in range(AHEAD + 1) if i % 4 != 3]  # item 0 and AHEAD after it
    reads.wait_for(len(in_window))
    time.sleep(0.1)  # nothing more may start while the consumer holds item 0
    assert first == 0 and future is not None
    assert sorted(reads.started) == in_window
    reads.release.set()
    got = [(first, future.result())]
    for item, pending in window:
        if item % 4 == 3:
            assert pending is None
            got.append((item, None))
        elif item == 5:
            with pytest.raises(ValueError, match="unreadable"):
                assert pending is not None
                pending.result()
        else:
            assert pending is not None
            got.append((item, pending.result()))
    assert [i for i, _ in got] == [i for i in items if i != 5]
    assert all(r == (None if i % 4 == 3 else f"read {i}") for i, r in got)
    assert sorted(reads.started) == [i for i in items if i % 4 != 3]  # each read once


def test_reads_not_taken_are_discarded_when_the_consumer_stops() -> None:
    reads = Reads()
    discarded: list[str] = []
    window = prefetched(range(20), reads, lambda i: True, discard=discarded.append)
    next(window)
    reads.wait_for(AHEAD)  # item 0's read and three of those ahead (AHEAD threads)
    reads.release.set()
    window.close()
    time.sleep(0.1)
    # every read handed out but not taken was either cancelled before it started or its
    # result discarded (item 5's read fails: nothing to discard); nothing beyond the
    # window was ever read
    assert sorted(discarded) == sorted(f"read {i}" for i in reads.started if i not in (0, 5))
    assert len(discarded) >= AHEAD - 1 and max(reads.started) <= AHEAD


def test_a_forked_child_starts_its_own_threads() -> None:
    list(prefetched(range(3), str, lambda i: True))
    assert prefetch._POOL
    pid = os.fork()
    if pid == 0:  # the child: its parent's read threads do not exist here
        ok = not prefetch._POOL and [f.result() for _, f in prefetched(  # type: ignore[union-attr]
            range(3), str, lambda i: True)] == ["0", "1", "2"]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
