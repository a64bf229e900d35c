"""A run inside Airflow's own process (``airflow dags test``, ``dag.test()``) exits with
the heap frozen, as the ``dicom-deid`` command does: the interpreter's final collections
then skip Airflow's objects (1.3-2.0 s of every ``dags test``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.airflow

PROBE = """
import atexit, gc
# Registered first, so it runs last: after the tasks' handler, as the interpreter exits.
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
from dicom_deid.airflow import tasks
before = atexit._ncallbacks()
tasks._exit_frozen()
tasks._exit_frozen()  # every task asks; one handler
print("handlers added:", atexit._ncallbacks() - before)
print("frozen now:", gc.get_freeze_count() > 0)
"""


def test_the_heap_is_frozen_at_exit_once_and_not_before() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.splitlines()[-3:] == [
        "handlers added: 1", "frozen now: False", "frozen at exit: True"]
