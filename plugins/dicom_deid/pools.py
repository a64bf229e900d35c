"""Worker pools that start in milliseconds inside a host process such as Airflow's.

A ``forkserver`` or ``spawn`` worker first re-runs the parent's ``__main__`` script (as
``__mp_main__``) so that functions defined there unpickle. Under Airflow that script is
the ``airflow`` command: every worker of every pool imported and configured all of Airflow
again, 2-3 s of CPU each, before its first file. Our workers run functions of importable
modules only, so they are started without the parent's main script; the forkserver
preloads the module that holds the worker functions instead.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any

__all__ = ["start_pool"]


@contextmanager
def _without_parent_main() -> Iterator[None]:
    """While workers start, ``__main__`` is an empty module, so the preparation data sent
    to each names no main script to re-run (``python -m`` mains carry a module name and
    are skipped by multiprocessing already)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not getattr(
            main, "__file__", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _worker_start(initializer: Callable[..., object] | None, *initargs: Any) -> None:
    """A worker's first step: SIGTERM back to the kernel's default, then ``initializer``.

    A pool ends its workers with SIGTERM (also after a batch that went well). A forked
    worker inherits its parent's Python-level handler (the command line unwinds on
    SIGTERM), and a Python handler runs only between bytecodes: a worker blocked in the
    pool's queue lock, which the pool holds while it shuts down, never ran it, and the
    command waited for that worker for ever. With the default action the kernel ends it
    wherever it is blocked."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def start_pool(
    workers: int, start_method: str, preload: str,
    initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
) -> Pool:
    """A pool of ``workers`` processes started by ``start_method``. ``preload``: the module
    holding the worker functions (the forkserver imports it once; its workers fork from
    there). ``fork`` inherits everything and is unaffected. A worker the pool replaces
    later (one that died) starts the ordinary way. Every worker ends at once on SIGTERM
    (:func:`_worker_start`)."""
    ctx = mp.get_context(start_method)
    args = (initializer, *initargs)
    if start_method == "fork":
        return ctx.Pool(workers, initializer=_worker_start, initargs=args)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([preload])
    with _without_parent_main():
        return ctx.Pool(workers, initializer=_worker_start, initargs=args)
