"""Re-identify pseudonymous identifiers, on request: manual trigger only, audited.

One DAG for every project. A trigger gives four params, all required: ``project`` (whose
mapping is looked up, opened with its vault key), ``kind`` (patient_id, accession,
study_uid, series_uid or sop_uid), ``values`` (the PSEUDONYMOUS identifiers, as
``deid_metadata`` shows them) and ``purpose``. The requester is the user who triggered the
run. The one task looks the values up in the project's own rows of ``deid_mapping`` only
(those of the batches its ledger records: another project's pseudonym is "not found",
even when both projects share the deployment's vault key), opens them with the project's
vault key, appends a record to the project's
hash-chained audit (``reidentify-<project>.jsonl`` in ``$DICOM_DEID_AUDIT_DIR``, else in
``audit/`` beside the run folders) before anything else, and writes the originals to a
file readable by the pipeline's owner only (``<runs>/reidentified/<run id>.csv``); XCom
and the logs carry counts and paths, never a value. Whoever may trigger this DAG may
re-identify: grant that with Airflow's DAG-level permissions to the privacy office only.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from dicom_deid.airflow.tasks import notify_failure, reidentify, reidentify_params


@dag(
    dag_id="dicom_deid_reidentify",
    schedule=None,  # manual only
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=reidentify_params(),
    default_args={"retries": 0, "on_failure_callback": notify_failure},
    tags=["dicom", "deid", "reidentification"],
    doc_md=__doc__,
)
def dicom_deid_reidentify() -> None:
    reidentify()


dicom_deid_reidentify()
