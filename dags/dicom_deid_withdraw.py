"""Withdraw released data from a research project's tree, on request: manual trigger only.

One DAG for every project. A trigger gives four params, all required: ``project`` (a
project file's name), ``level`` (patient, study, series or instance), ``value`` (its
PSEUDONYMOUS identifier, as the research tree and ``deid_metadata`` show it) and
``reason`` (PHI-free: why, not who; a reason holding a name, a date, an ID or a UID is
refused; a value that is not one of the project's pseudonyms, or that it never released,
is refused with one message, whatever it is). The one task takes the files out of the
project's tree in a new release (with a manifest naming them) and out of the release
shown until then (which is otherwise kept for readers that resolved it: no copy of the
files is left in the destination), deletes their ``deid_metadata`` rows, marks their ledger rows
``withdrawn`` and records the withdrawal in ``deid_withdrawals`` as asked by the user who
triggered the run, by the original identifiers, so that files of it arriving later are
held back. Asked again, it changes nothing. Whoever may trigger this DAG may withdraw:
grant that with Airflow's DAG-level permissions to the data stewards only.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from dicom_deid.airflow.tasks import notify_failure, withdraw, withdraw_params


@dag(
    dag_id="dicom_deid_withdraw",
    schedule=None,  # manual only
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=withdraw_params(),
    default_args={"retries": 0, "on_failure_callback": notify_failure},
    tags=["dicom", "deid", "withdrawal"],
    doc_md=__doc__,
)
def dicom_deid_withdraw() -> None:
    withdraw()


dicom_deid_withdraw()
