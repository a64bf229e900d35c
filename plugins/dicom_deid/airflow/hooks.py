"""Where the DAGs get the HMAC key: an Airflow connection (or any secrets backend)."""

from __future__ import annotations

import os

from airflow.sdk import BaseHook

from dicom_deid.deid.keys import parse_key
from dicom_deid.errors import KeyConfigError
from dicom_deid.warehouse.restricted_file import RESTRICTED_KEY_ENV, RESTRICTED_KEY_FILE_ENV

DEFAULT_KEY_CONN_ID = "dicom_deid_key"
RESTRICTED_KEY_CONN_ID = "dicom_deid_restricted_key"
"""The deployment's restricted key (the embedded warehouse's encrypted restricted file)."""


class DeidKeyHook(BaseHook):
    """Reads the pseudonymisation key from a connection's password field.

    The key is the hex text ``dicom-deid keygen`` writes (at least 32 bytes); nothing
    else is accepted, so no password typed into a connection form becomes a key.
    Because it is a connection, it can live in the metadata DB, in an
    ``AIRFLOW_CONN_DICOM_DEID_KEY`` variable or in a secrets backend (Vault, Google
    Secret Manager...), and Airflow masks it in task logs.
    """

    conn_name_attr = "key_conn_id"
    default_conn_name = DEFAULT_KEY_CONN_ID
    conn_type = "generic"
    hook_name = "dicom-deid key"

    def __init__(self, key_conn_id: str = DEFAULT_KEY_CONN_ID) -> None:
        super().__init__()
        self.key_conn_id = key_conn_id

    def get_key(self) -> bytes:
        """The key bytes; a clear error (never the key) when missing or too short."""
        conn = self.get_connection(self.key_conn_id)
        if not conn.password:
            raise KeyConfigError(
                f"connection {self.key_conn_id!r} has no password: put the key "
                "(the hex text `dicom-deid keygen` writes) there"
            )
        return parse_key(conn.password.encode(), hex_only=True)


def apply_restricted_key(conn_id: str = RESTRICTED_KEY_CONN_ID) -> bool:
    """Hand the restricted key of connection ``conn_id`` to this task's warehouse (through
    the task process's environment, where the engine looks for it), unless the workers'
    environment names one already. False when neither has one: the embedded warehouse
    then refuses to write its restricted file, naming what to set."""
    if os.environ.get(RESTRICTED_KEY_ENV) or os.environ.get(RESTRICTED_KEY_FILE_ENV):
        return False
    try:
        key = DeidKeyHook(conn_id).get_key()
    except KeyConfigError:
        raise
    except Exception:  # no such connection: the deployment uses the environment, or none
        return False
    os.environ[RESTRICTED_KEY_ENV] = key.hex()
    return True
