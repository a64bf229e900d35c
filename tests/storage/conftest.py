"""Stores to test: a local folder, and a bucket of its own on fake-gcs-server per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud.storage import Client

from dicom_deid.storage import LocalStore, Store
from dicom_deid.storage.gcs import GcsStore
from emulators import Cloud


@pytest.fixture
def gcs_client(gcloud_env: Cloud) -> Client:
    """A client made the library's own way: STORAGE_EMULATOR_HOST points it at the
    emulator (anonymous, GOOGLE_CLOUD_PROJECT as the project)."""
    return Client()


@pytest.fixture
def bucket(gcs_client: Client) -> Iterator[str]:
    """A fresh bucket's name (the emulator is shared by the session's tests)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(name)
    yield name
    for blob in gcs_client.list_blobs(name):
        blob.delete()
    gcs_client.bucket(name).delete()


@pytest.fixture
def gcs(bucket: str, gcs_client: Client) -> GcsStore:
    """A store under a prefix of the test's bucket, with paging that really pages and a
    quick lock poll."""
    return GcsStore(f"gs://{bucket}/root", client=gcs_client, page_size=2, lock_poll=0.01)


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each shared-contract test runs on both backends."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("gcs")  # type: ignore[no-any-return]
