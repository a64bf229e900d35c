"""Google Cloud credentials from an Airflow connection, read the Google provider's way."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicom_deid.errors import ConfigError


def _service_account(project: str) -> dict[str, str]:
    """A service account key JSON as Google issues it (a real RSA key; never used)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": project, "private_key_id": "k1",
            "private_key": pem, "client_email": f"deid@{project}.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
                 "DICOM_DEID_GCP_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    return monkeypatch


def test_inline_key_becomes_application_default_credentials(clean_env: pytest.MonkeyPatch
                                                            ) -> None:
    import google.auth
    from google.oauth2 import service_account

    from dicom_deid.airflow.google_conn import apply_google_connection

    info = _service_account("research-imaging")
    # The provider's legacy prefixed field name, key as a JSON string, as the UI saves it.
    extra = {"extra__google_cloud_platform__keyfile_dict": json.dumps(info),
             "project": "research-imaging"}
    clean_env.setenv("AIRFLOW_CONN_GCP_DEID", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": extra}))
    used = apply_google_connection("gcp_deid")
    assert "gcp_deid" in used and "BEGIN" not in used
    key_file = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    credentials, project = google.auth.default()
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == info["client_email"]
    assert project == "research-imaging" == os.environ["GOOGLE_CLOUD_PROJECT"]


def test_key_path_and_missing_connection(clean_env: pytest.MonkeyPatch, tmp_path: Path
                                         ) -> None:
    from dicom_deid.airflow.google_conn import apply_google_connection

    key = tmp_path / "key.json"
    key.write_text(json.dumps(_service_account("p2")))
    clean_env.setenv("DICOM_DEID_GCP_CONN_ID", "by_path")
    clean_env.setenv("AIRFLOW_CONN_BY_PATH", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"key_path": str(key)}}))
    assert apply_google_connection() == "connection 'by_path' (key file)"
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == str(key)

    clean_env.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    assert apply_google_connection("nobody_made_this") == "application default credentials"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ


def test_bad_connection_is_a_clear_error(clean_env: pytest.MonkeyPatch) -> None:
    from dicom_deid.airflow.google_conn import apply_google_connection

    clean_env.setenv("AIRFLOW_CONN_BAD_KEY", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "not json"}}))
    with pytest.raises(ConfigError, match="not a Google key JSON"):
        apply_google_connection("bad_key")
    clean_env.setenv("AIRFLOW_CONN_GONE", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"key_path": "/nonexistent/k.json"}}))
    with pytest.raises(ConfigError, match="names no file"):
        apply_google_connection("gone")
