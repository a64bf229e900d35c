"""De-identify a SQL cohort: cohort -> filter file -> shards -> verify -> publish -> load.

Runs when ``dicom_metadata`` gets new instances, or on demand with params (Trigger DAG
w/ config, or ``airflow dags trigger dicom_deidentify --conf '{...}'``). Params choose
what to de-identify (a cohort, its window, a priority), never how: the policy, key and
destination are the deployment's ($DICOM_DEID_POLICY, $DICOM_DEID_KEY_CONN_ID,
$DICOM_DEID_DESTINATION), and a trigger naming them fails. Nothing is published unless
every shard passes verification. Whatever happens, the ``finish_run``
teardown records the run in ``deid_runs`` (success, failed or leak) and cleans up; a
failed task is reported by ``notify_failure`` (log, and ``$DICOM_DEID_NOTIFY_CONN_ID``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from dicom_deid.airflow.tasks import (
    DICOM_METADATA,
    deidentify_shard,
    finish_run,
    load_deid_metadata,
    load_mapping,
    notify_failure,
    plan_shards,
    publish,
    resolve_instances,
    run_cohort,
    verify_shard,
    write_filter_file,
    write_manifest,
)

PARAMS = {
    "cohort": Param("patients_with_us", type="string",
                    description="A cohort name ($DICOM_DEID_COHORT_DIR, then the "
                    "examples shipped with the package) or a path to a .sql file."),
    "cohort_params": Param({"start_date": "2000-01-01", "end_date": "2099-12-31"},
                           type="object", description="Values of the cohort's @params."),
    "priority": Param("routine", enum=["stat", "urgent", "routine", "low"]),
    "shard_max_files": Param(2000, type="integer", minimum=1),
    "max_shards": Param(256, type="integer", minimum=1, maximum=1000),
}


@dag(
    dag_id="dicom_deidentify",
    schedule=[DICOM_METADATA],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2),
                  "on_failure_callback": notify_failure},
    tags=["dicom", "deid"],
    doc_md=__doc__,
)
def dicom_deidentify() -> None:
    shards = run_cohort() >> write_filter_file() >> resolve_instances() >> plan_shards()
    deidentified = deidentify_shard.expand(shard=shards)
    verified, loaded = verify_shard.expand(result=deidentified), [load_deid_metadata(),
                                                                  load_mapping()]
    manifest = verified >> publish() >> loaded >> write_manifest()
    # Then, whatever happened, the teardown records the run. It waits for every task that
    # can still run when another fails (each shard, each load), so none races the clean-up.
    [shards, deidentified, verified, *loaded, manifest] >> finish_run().as_teardown(
        on_failure_fail_dagrun=True)


dicom_deidentify()
