"""Where a deployment keeps its data: one dataclass filled from environment variables.

The DAGs read these at task run time (never at parse time), so the same DAG files run
on a laptop (everything under ``$DICOM_DEID_DATA_DIR``) and in production (``gs://``
stores, ``bigquery://`` warehouse) by changing the environment of the workers only.
How to de-identify (policy, key connection, cohort, schedule) is not a setting: each
research project says it in its version-controlled file (:mod:`.projects`).

Local folders must be absolute paths: a relative one would put identified data wherever
a worker happens to start (``/var/runs`` for a worker started in ``/``). There is no
default data folder for the same reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from dicom_deid.cohort.cohorts import COHORT_DIR_ENV
from dicom_deid.errors import ConfigError
from dicom_deid.warehouse.factory import DATA_DIR_ENV

from .restricted import duckdb_file

__all__ = ["ENV", "NOTIFY_CONN_ENV", "PipelineSettings", "notify_conn_id"]

ENV = {
    "landing": "DICOM_DEID_LANDING",
    "destination": "DICOM_DEID_DESTINATION",
    "warehouse": "DICOM_DEID_WAREHOUSE",
    "metadata_dir": "DICOM_DEID_METADATA_DIR",
    "work_dir": "DICOM_DEID_WORK_DIR",
    "workers": "DICOM_DEID_WORKERS",
    "cohort_dir": COHORT_DIR_ENV,
    "audit_dir": "DICOM_DEID_AUDIT_DIR",
}
#: The Airflow connection a failed task's one-line notice is posted to (unset: log only).
NOTIFY_CONN_ENV = "DICOM_DEID_NOTIFY_CONN_ID"
_DERIVED = ("landing", "destination", "warehouse", "metadata_dir", "work_dir")


def notify_conn_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The notification connection id from ``$DICOM_DEID_NOTIFY_CONN_ID`` (None if unset)."""
    env = os.environ if environ is None else environ
    return env.get(NOTIFY_CONN_ENV) or None


def _local_path(url: str) -> str | None:
    """The path of a local store URL (plain path or ``file://``); None for other schemes."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and url[1:3] == ":\\"):
        return url
    return None


@dataclass(frozen=True)
class PipelineSettings:
    """The stores, warehouse and folders one deployment uses.

    ``landing``: where new DICOM files arrive (read only). ``destination``: where
    de-identified batches are published. ``metadata_dir``: the Parquet exports.
    ``work_dir``: per-run working files (filter file, instance lists, shard mapping
    and error files); it holds original identifiers, so it is restricted like the
    mapping table. ``workers``: processes per de-identification task (0: all cores).
    ``cohort_dir``: the deployment's cohort folder, searched by name before the
    examples shipped with the package (None: the examples only). A project publishes
    under ``destination/<project>`` unless its file names another destination. Local
    paths must be absolute (:class:`ConfigError` naming the setting otherwise).
    """

    landing: str
    destination: str
    warehouse: str
    metadata_dir: Path
    work_dir: Path
    workers: int = 0
    cohort_dir: Path | None = None
    audit_dir: Path | None = None
    """Where re-identifications are audited (None: ``audit/`` beside ``work_dir``)."""

    def audit_log(self, project: str) -> Path:
        """A project's re-identification audit: JSON lines, hash-chained under its vault
        key (one chain per project: projects may have vault keys of their own)."""
        return (self.audit_dir or self.work_dir.parent / "audit") / f"reidentify-{project}.jsonl"

    def __post_init__(self) -> None:
        for name in ("landing", "destination"):
            local = _local_path(str(getattr(self, name)))
            if local is not None and not Path(local).is_absolute():
                raise _relative(name)
        wh_file = duckdb_file(self.warehouse)
        if wh_file is not None and not wh_file.is_absolute():
            raise _relative("warehouse")
        for name in ("metadata_dir", "work_dir"):
            if not Path(getattr(self, name)).is_absolute():
                raise _relative(name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Settings from ``DICOM_DEID_*`` variables, defaulting under the data folder.

        ``$DICOM_DEID_DATA_DIR`` (absolute) is required unless every location below it
        is set on its own.
        """
        env = os.environ if environ is None else environ
        data_text = env.get(DATA_DIR_ENV, "")
        unset = [ENV[n] for n in _DERIVED if not env.get(ENV[n])]
        if not data_text and unset:
            raise ConfigError(
                f"${DATA_DIR_ENV} is not set: set it to the absolute path of the pipeline's "
                f"data folder (or set {', '.join('$' + v for v in unset)})"
            )
        if data_text and not Path(data_text).is_absolute():
            raise ConfigError(
                f"${DATA_DIR_ENV} must be an absolute path, not {data_text!r}: a relative "
                "one puts identified data wherever a worker starts"
            )
        data = Path(data_text)
        return cls(
            landing=env.get(ENV["landing"]) or str(data / "landing"),
            destination=env.get(ENV["destination"]) or str(data / "deid"),
            warehouse=env.get(ENV["warehouse"])
            or f"duckdb://{data / 'warehouse' / 'dicom_deid.duckdb'}",
            metadata_dir=Path(env.get(ENV["metadata_dir"]) or data / "metadata"),
            work_dir=Path(env.get(ENV["work_dir"]) or data / "runs"),
            workers=int(env.get(ENV["workers"]) or "0"),
            cohort_dir=Path(env[ENV["cohort_dir"]]) if env.get(ENV["cohort_dir"]) else None,
            audit_dir=Path(env[ENV["audit_dir"]]) if env.get(ENV["audit_dir"]) else None,
        )



def _relative(name: str) -> ConfigError:
    """The error for a relative local location, naming its setting."""
    return ConfigError(
        f"{name} (${ENV[name]}) must be an absolute path or a URL: a relative one puts "
        "identified data wherever a worker starts"
    )
