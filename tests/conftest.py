"""Fixtures shared by every test folder; helpers live in ``instances.py``."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from pydicom.dataset import Dataset

from emulators import Cloud, cloud
from instances import make_instance

#: The restricted key of every test's embedded warehouse (its restricted file is always
#: encrypted); the commands tests start inherit it. Tests of a missing key remove it.
RESTRICTED_KEY_HEX = bytes(range(100, 132)).hex()
os.environ["DICOM_DEID_RESTRICTED_KEY"] = RESTRICTED_KEY_HEX
os.environ.pop("DICOM_DEID_RESTRICTED_KEY_FILE", None)


@pytest.fixture
def instance() -> Dataset:
    """A small CT instance with PHI in standard, nested, private and overlay elements."""
    return make_instance()


@pytest.fixture(scope="session")
def gcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """fake-gcs-server and bqemulator on 127.0.0.1, one pair per test worker."""
    with cloud(tmp_path_factory.mktemp("cloud")) as started:
        yield started


@pytest.fixture
def gcloud_env(gcloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """The emulators, with the clients' own variables pointing at them for this test."""
    for name, value in gcloud.env.items():
        monkeypatch.setenv(name, value)
    return gcloud


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fails the test instead of hanging it (a FIFO or /dev/zero opened for reading blocks
    forever): an alarm after 30 s."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("the test hung (a FIFO or a device was opened for reading?)")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
