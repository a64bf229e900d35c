"""Fixtures shared by every test folder; helpers live in ``instances.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
