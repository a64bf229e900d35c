"""dicom-deid: de-identify DICOM with PS3.15 profiles or Google DicomTagConfig, keyed pseudonyms.

The engine (everything in this package outside ``airflow/``) never imports Airflow.
"""

__version__ = "0.1.0"
