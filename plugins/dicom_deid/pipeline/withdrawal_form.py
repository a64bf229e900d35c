"""What a withdrawal request may say: its levels and the length of its fields.

Kept apart from :mod:`.withdraw` (which needs the warehouse, the vault and the text
detectors) because the Airflow DAG files declare their params from it when they are
parsed, and a DAG file's imports are paid on every parse.
"""

from __future__ import annotations

__all__ = ["LEVELS", "REASON_MAX", "VALUE_MAX"]

#: Level -> the ledger column holding its pseudonymous identifier.
LEVELS: dict[str, str] = {"patient": "patient_id", "study": "study_uid",
                          "series": "series_uid", "instance": "sop_uid"}
REASON_MAX = 200
"""The longest reason accepted, in characters: a reason says why, not the case's story."""
VALUE_MAX = 128
"""The longest identifier accepted (a UID is at most 64 characters)."""
