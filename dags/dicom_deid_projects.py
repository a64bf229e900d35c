"""De-identify each research project's cohort: one DAG per project file.

Every ``projects/<name>.yaml`` (the folder ``$DICOM_DEID_PROJECTS_DIR`` names, else
``projects/`` beside ``dags/``) becomes a DAG ``dicom_deid__<name>``: cohort -> filter
file -> what the project has not released yet (the ledger) -> shards -> de-identify ->
verify -> publish one release of the project's growing tree -> load. The project file
says how (policy, key connection, destination, cohort, schedule, exceptions); a trigger
may only narrow a run (``start_date``/``end_date`` inside the project's window,
``dry_run``, ``priority``, shard limits), and naming anything else fails it. Nothing is
published unless every shard passes verification. Whatever happens, the ``finish_run``
teardown records the run in ``deid_runs`` (success, failed, leak or dry_run) and cleans
up; a failed task is reported by ``notify_failure`` (log, ``$DICOM_DEID_NOTIFY_CONN_ID``).
A bad project file is an import error naming the file and the field.
"""

from __future__ import annotations

from airflow.sdk import dag

from dicom_deid.airflow.dag_factory import project_dags
from dicom_deid.airflow.tasks import (
    deidentify_shard,
    finish_run,
    load_deid_metadata,
    load_mapping,
    plan_shards,
    publish,
    resolve_instances,
    run_cohort,
    verify_shard,
    write_filter_file,
)


def deidentify_project() -> None:
    shards = run_cohort() >> write_filter_file() >> resolve_instances() >> plan_shards()
    deidentified = deidentify_shard.expand(shard=shards)
    verified, released = verify_shard.expand(result=deidentified), publish()
    loaded = verified >> released >> load_mapping() >> load_deid_metadata()
    # Then, whatever happened, the teardown records the run. It waits for every task that
    # can still run when another fails, so none races the clean-up.
    [shards, deidentified, verified, released, loaded] >> finish_run().as_teardown(
        on_failure_fail_dagrun=True)


for _project in project_dags(__file__, __doc__ or ""):
    dag(**_project)(deidentify_project)()
