"""De-identify each research project's cohort: one DAG per project file.

Every ``projects/<name>.yaml`` (the folder ``$DICOM_DEID_PROJECTS_DIR`` names, else
``projects/`` beside ``dags/``) becomes a DAG ``dicom_deid__<name>``: cohort -> filter
file -> what the project has not released yet (the ledger) -> shards -> de-identify ->
verify -> review (unless the project's ``review: none``) -> publish one release of the
project's growing tree -> load. The project file says how (policy, key connection,
destination, cohort, schedule, exceptions, review); a trigger may only narrow a run
(``start_date``/``end_date`` inside the project's window, ``dry_run``, ``priority``, shard
limits), and naming anything else fails it. Nothing is published unless every shard
passes verification and, with a review, a person approved the contact sheet. Whatever
happens, the ``finish_run`` teardown records the run in ``deid_runs`` (success, failed,
leak, dry_run or rejected) and cleans up; a failed task is reported by
``notify_failure`` (log, ``$DICOM_DEID_NOTIFY_CONN_ID``). A bad project file is an
import error naming the file and the field.
"""

from __future__ import annotations

from airflow.sdk import dag

from dicom_deid.airflow.dag_factory import project_dags, project_graph

for _args, _project in project_dags(__file__, __doc__ or ""):
    dag(**_args)(project_graph(_project))()
