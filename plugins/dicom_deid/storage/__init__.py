"""Where pipeline files live: one small interface (:class:`Store`) over storage backends.

Local folders (:class:`LocalStore`, the embedded default: releases are a directory
rename) and Google Cloud Storage (:class:`~dicom_deid.storage.gcs.GcsStore`: releases
are committed by a manifest written last) behind :func:`open_store`. The file-mode helpers
of restricted local files are in :mod:`dicom_deid.storage.permissions`.

This package may import only ``dicom_deid.errors`` and ``dicom_deid.dicom`` (and
google-cloud-storage, loaded for ``gs://`` URLs only); the pipeline, the command line
and the Airflow adapters import it.
"""

from dicom_deid.errors import StorageError

from .base import AlreadyExists, Release, Store, StoredFile
from .factory import download, is_object_uri, object_at, open_store
from .local import LocalStore

__all__ = ["AlreadyExists", "LocalStore", "Release", "StorageError", "Store", "StoredFile",
           "download", "is_object_uri", "object_at", "open_store"]
