"""dicom-deid: de-identify DICOM with PS3.15 profiles or Google DicomTagConfig, keyed pseudonyms.

The engine (everything in this package outside ``airflow/``) never imports Airflow.
"""

import os

__version__ = "0.1.0"

# onnxruntime (the OCR engine's runtime) carries Microsoft's 1DS telemetry on Linux: its
# import writes a session file into $TMPDIR, and the SDK can send usage events to
# Microsoft's collector. De-identification on a hospital's machines does not phone
# home: off before anything of this package imports it, unless set explicitly.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
