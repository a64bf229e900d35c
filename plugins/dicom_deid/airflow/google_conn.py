"""Google Cloud credentials for the tasks: an Airflow connection of the Google Cloud type,
else Application Default Credentials -- read without the Google provider.

``apache-airflow-providers-google`` would bring about 134 packages (2.1 GB of environment)
to read three fields of a connection; this module reads them itself, with the provider's
field names, so a connection made for the provider (UI form, ``AIRFLOW_CONN_*`` JSON,
secrets backend) works unchanged:

- ``keyfile_dict``: the service account key JSON (a string or an object);
- ``key_path``: a path to that JSON on the workers;
- ``project``: the default project (``GOOGLE_CLOUD_PROJECT``).

Older connections spell them ``extra__google_cloud_platform__<name>``; both are read.
The credentials reach the Google clients (storage, BigQuery, in this process and in the
worker pools it starts) the clients' own way: ``GOOGLE_APPLICATION_CREDENTIALS`` names
the key file (a key given inline is written to a private 0600 file, removed at exit).
No connection: nothing is set, and the clients use Application Default Credentials (the
worker's service account on GCP, ``gcloud auth application-default login`` elsewhere).
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from dicom_deid.errors import ConfigError

__all__ = ["DEFAULT_GCP_CONN_ID", "GCP_CONN_ENV", "apply_google_connection", "uses_google"]

GCP_CONN_ENV = "DICOM_DEID_GCP_CONN_ID"
DEFAULT_GCP_CONN_ID = "google_cloud_default"  # the Google provider's default name
_PREFIX = "extra__google_cloud_platform__"
_APPLIED: dict[str, str] = {}  # conn id -> the key file this process wrote for it


def uses_google(*urls: str) -> bool:
    """True if any store or warehouse URL is on Google Cloud."""
    return any(u.startswith(("gs://", "bigquery://")) for u in urls)


def _field(extras: Mapping[str, Any], name: str) -> Any:
    value = extras.get(name)
    return value if value not in (None, "") else extras.get(_PREFIX + name) or None


def apply_google_connection(conn_id: str | None = None) -> str:
    """Point the Google clients at the connection's credentials (see the module
    docstring); returns what is used, for the log (never a secret)."""
    conn_id = conn_id or os.environ.get(GCP_CONN_ENV) or DEFAULT_GCP_CONN_ID
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return "application default credentials"
    extras = conn.extra_dejson
    project = _field(extras, "project")
    if project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = str(project)
    key = _field(extras, "keyfile_dict")
    path = _field(extras, "key_path")
    if key:
        info = key if isinstance(key, Mapping) else _parse(conn_id, str(key))
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = _key_file(conn_id, info)
        return f"connection {conn_id!r} (service account key)"
    if path:
        if not Path(str(path)).is_file():
            raise ConfigError(f"connection {conn_id!r}: key_path names no file on this worker")
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(path)
        return f"connection {conn_id!r} (key file)"
    return f"connection {conn_id!r} (no key: application default credentials)"


def _parse(conn_id: str, text: str) -> Mapping[str, Any]:
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, Mapping) or "type" not in info:
        raise ConfigError(f"connection {conn_id!r}: keyfile_dict is not a Google key JSON")
    return info


def _key_file(conn_id: str, info: Mapping[str, Any]) -> str:
    """The connection's key in a 0600 file of this process (one per connection)."""
    if conn_id not in _APPLIED:
        fd, name = tempfile.mkstemp(prefix="dicom-deid-gcp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:  # mkstemp: 0600, owner only
            json.dump(dict(info), fh)
        atexit.register(Path(name).unlink, missing_ok=True)
        _APPLIED[conn_id] = name
    return _APPLIED[conn_id]
