"""Nightly: export the metadata of DICOM files not exported yet, then load it.

Each run covers one day [data_interval_start, data_interval_end) in UTC: it exports every
landing file modified before the interval's end that was not exported yet or changed since
(late arrivals and copies that kept an old mtime included), as the interval's run and
``ingest_date`` partition; files modified later wait for their own night. Backfill past
days with ``airflow backfill create --dag-id dicom_metadata_export --from-date ...
--to-date ...``. A new ``dicom_metadata`` Asset event schedules the projects' DAGs
(``dicom_deid__<project>``, those whose schedule is ``dicom_metadata``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, dag

from dicom_deid.airflow.tasks import export_landing, load_metadata, notify_failure


@dag(
    dag_id="dicom_metadata_export",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one writer of the export state and the DuckDB file at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5),
                  "on_failure_callback": notify_failure},
    tags=["dicom", "metadata"],
    doc_md=__doc__,
)
def dicom_metadata_export() -> None:
    load_metadata(export_landing())


dicom_metadata_export()
