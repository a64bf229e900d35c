"""Open a warehouse from its URL: the one place that knows every backend.

- ``duckdb:///abs/path/file.duckdb``, ``duckdb://relative/file.duckdb``,
  ``duckdb://:memory:``, or ``duckdb://`` / ``None`` for the default file under the
  project's data folder (``$DICOM_DEID_DATA_DIR``, else ``./var``);
- ``bigquery://project/dataset``, options in the query string: ``location=EU``,
  ``restricted=NAME`` (the dataset of the restricted tables; default
  ``<dataset>_restricted``), ``endpoint=http://host:port`` (an emulator, anonymous
  credentials; ``$BIGQUERY_EMULATOR_HOST`` does the same for every URL).

Backends are imported only when opened: the BigQuery client is heavy, DuckDB not free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from dicom_deid.errors import WarehouseError

from .base import Warehouse

__all__ = ["DATA_DIR_ENV", "default_duckdb_path", "duckdb_path", "open_warehouse"]

DATA_DIR_ENV = "DICOM_DEID_DATA_DIR"
#: ``bigquery://`` query-string options -> BigQueryWarehouse keyword.
_BIGQUERY_OPTIONS = {"location": "location", "restricted": "restricted_dataset",
                     "endpoint": "endpoint"}


def default_duckdb_path() -> Path:
    """Where the default DuckDB file lives: under the project's data folder."""
    return Path(os.environ.get(DATA_DIR_ENV, "var")) / "warehouse" / "dicom_deid.duckdb"


def duckdb_path(url: str | None) -> str:
    """The analysts' database file a ``duckdb://`` URL (or None: the default) names."""
    if not url or url in ("duckdb://", "duckdb:///"):
        return str(default_duckdb_path())
    if not url.startswith("duckdb://"):
        raise WarehouseError("expected a duckdb:// warehouse URL")
    rest = url[len("duckdb://") :]
    return ":memory:" if rest in (":memory:", "/:memory:") else rest


def open_warehouse(url: str | None = None, **kwargs: Any) -> Warehouse:
    """Open the warehouse named by ``url`` (see the module docstring); kwargs go to the class."""
    if not url or url.startswith("duckdb://"):
        from .duckdb_backend import DuckDBWarehouse

        return DuckDBWarehouse(duckdb_path(url), **kwargs)
    if url.startswith("bigquery://"):
        from .bigquery_backend import BigQueryWarehouse

        parsed = urlparse(url)
        dataset = parsed.path.strip("/")
        if not parsed.netloc or not dataset or "/" in dataset:
            raise WarehouseError("expected bigquery://PROJECT/DATASET")
        options = parse_qs(parsed.query)
        unknown = sorted(set(options) - set(_BIGQUERY_OPTIONS))
        if unknown:
            raise WarehouseError(f"unknown bigquery:// option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(_BIGQUERY_OPTIONS)}")
        for option, keyword in _BIGQUERY_OPTIONS.items():
            if option in options:
                kwargs.setdefault(keyword, options[option][-1])
        return BigQueryWarehouse(parsed.netloc, dataset, **kwargs)
    raise WarehouseError("warehouse URL must start with duckdb:// or bigquery://")
