"""Where a deployment keeps its data: one dataclass filled from environment variables.

The DAGs read these at task run time (never at parse time), so the same DAG files run
on a laptop (everything under ``$DICOM_DEID_DATA_DIR``, default ``./var``) and in
production (``gs://`` stores, ``bigquery://`` warehouse) by changing the environment of
the workers only. Every value can be overridden per run through DAG params.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dicom_deid.cohort.cohorts import COHORT_DIR_ENV
from dicom_deid.warehouse.factory import DATA_DIR_ENV

__all__ = ["PipelineSettings"]

ENV = {
    "landing": "DICOM_DEID_LANDING",
    "destination": "DICOM_DEID_DESTINATION",
    "warehouse": "DICOM_DEID_WAREHOUSE",
    "metadata_dir": "DICOM_DEID_METADATA_DIR",
    "work_dir": "DICOM_DEID_WORK_DIR",
    "workers": "DICOM_DEID_WORKERS",
    "cohort_dir": COHORT_DIR_ENV,
}


@dataclass(frozen=True)
class PipelineSettings:
    """The stores, warehouse and folders one deployment uses.

    ``landing``: where new DICOM files arrive (read only). ``destination``: where
    de-identified batches are published. ``metadata_dir``: the Parquet exports.
    ``work_dir``: per-run working files (filter file, instance lists, shard mapping
    and error files); it holds original identifiers, so it is restricted like the
    mapping table. ``workers``: processes per de-identification task (0: all cores).
    ``cohort_dir``: the deployment's cohort folder, searched by name before the
    examples shipped with the package (None: the examples only).
    """

    landing: str
    destination: str
    warehouse: str
    metadata_dir: Path
    work_dir: Path
    workers: int = 0
    cohort_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Settings from ``DICOM_DEID_*`` variables, defaulting under the data folder."""
        env = os.environ if environ is None else environ
        data = Path(env.get(DATA_DIR_ENV, "var")).absolute()
        return cls(
            landing=env.get(ENV["landing"], str(data / "landing")),
            destination=env.get(ENV["destination"], str(data / "deid")),
            warehouse=env.get(
                ENV["warehouse"], f"duckdb://{data / 'warehouse' / 'dicom_deid.duckdb'}"
            ),
            metadata_dir=Path(env.get(ENV["metadata_dir"], str(data / "metadata"))),
            work_dir=Path(env.get(ENV["work_dir"], str(data / "runs"))),
            workers=int(env.get(ENV["workers"], "0")),
            cohort_dir=Path(env[ENV["cohort_dir"]]) if env.get(ENV["cohort_dir"]) else None,
        )

    def override(self, **values: object) -> PipelineSettings:
        """A copy with the non-empty ``values`` replacing the defaults (DAG params)."""
        given = {k: v for k, v in values.items() if v not in (None, "")}
        for name in ("metadata_dir", "work_dir", "cohort_dir"):
            if name in given:
                given[name] = Path(str(given[name]))
        return replace(self, **given)  # type: ignore[arg-type]
