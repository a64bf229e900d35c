"""Both DAGs end to end on Google Cloud: landing and research store on gs://
(fake-gcs-server), warehouse on bigquery:// (bqemulator), run with ``dag.test()`` beside
the same DAGs on local folders and DuckDB in the same Airflow: the same released bytes and
the same row counts."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud.storage import Client
from test_dags import ROOT, STUDY, STUDY_YAML, airflow_env

from dicom_deid.synth import generate, planted_byte_patterns
from emulators import Cloud, upload_folder

pytestmark = pytest.mark.airflow
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).replace(hour=1, minute=0, second=0,
                                                          microsecond=0)
LOCAL_EXPORT = TOMORROW  # its interval ends after every file landed (today)
LOCAL_DEID = TOMORROW + timedelta(hours=8)
CLOUD_EXPORT = TOMORROW + timedelta(days=1)
CLOUD_DEID = TOMORROW + timedelta(days=1, hours=8)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gcloud: Cloud) -> Iterator[dict[str, Any]]:
    """An Airflow home, a landing zone both on disk and in a bucket (same files, same
    times), and the key connections."""
    base = tmp_path_factory.mktemp("cloud-dags")
    data = base / "data"
    key = generate(data / "landing", patients=3, seed=11, instances_per_series=3, small=True)
    landing = data / "landing" / "dicom"
    projects = base / "projects"
    projects.mkdir()
    (projects / f"{STUDY}.yaml").write_text(STUDY_YAML)
    bucket = f"hospital-{uuid.uuid4().hex[:8]}"
    values = {**gcloud.env, **airflow_env(base, projects, data, landing)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        client = Client()
        client.create_bucket(bucket)

        upload_folder(client, bucket, landing, "landing")
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
        yield {"data": data, "bucket": bucket, "client": client, "answer_key": key,
               "mp": mp, "gcloud": gcloud, "cloud_wh": f"bigquery://{gcloud.project}/research_{bucket[9:]}"}


@pytest.fixture(scope="module")
def runs(site: dict[str, Any]) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for t in dag.tasks:
            t.retries = 0
    export, deid = bag.dags["dicom_metadata_export"], bag.dags[f"dicom_deid__{STUDY}"]
    out = {"local": (export.test(logical_date=LOCAL_EXPORT).state,
                     deid.test(logical_date=LOCAL_DEID).state)}
    mp, bucket = site["mp"], site["bucket"]
    mp.setenv("DICOM_DEID_LANDING", f"gs://{bucket}/landing")
    mp.setenv("DICOM_DEID_DESTINATION", f"gs://{bucket}/research")
    mp.setenv("DICOM_DEID_WAREHOUSE", site["cloud_wh"])
    # a deployment of its own: the local one's export is encrypted for its DuckDB file
    mp.setenv("DICOM_DEID_METADATA_DIR", str(site["data"] / "metadata-cloud"))
    out["cloud"] = (export.test(logical_date=CLOUD_EXPORT).state,
                    deid.test(logical_date=CLOUD_DEID).state)
    return out


def _count(url: str, table: str) -> int:
    from dicom_deid.warehouse.factory import open_warehouse

    with open_warehouse(url) as wh:
        return int(wh.run_cohort(f"SELECT COUNT(*) FROM {table}").column(0)[0].as_py())


def test_both_dags_on_gcs_and_bigquery_give_what_local_gives(
    site: dict[str, Any], runs: dict[str, Any]
) -> None:
    from dicom_deid.storage import open_store

    assert runs == {"local": ("success", "success"), "cloud": ("success", "success")}
    local_tree = site["data"] / "deid" / STUDY
    mine = {p.relative_to(local_tree).as_posix(): p.read_bytes()
            for p in local_tree.rglob("*") if p.is_file()}
    store = open_store(f"gs://{site['bucket']}/research")
    released = store.release_files(STUDY)  # the reader contract: the manifest's files
    theirs = {f.rel.removeprefix(f"{STUDY}/"): store.read_bytes(f.rel) for f in released}
    # Each batch's manifest is named for its batch (the two runs have their own dates).
    manifests = [{k for k in side if k.startswith("manifests/")} for side in (mine, theirs)]
    assert [len(m) for m in manifests] == [1, 1]
    for side, names in zip((mine, theirs), manifests, strict=True):
        for name in names:
            del side[name]
    assert len(mine) > 5 and mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine)
    patterns = planted_byte_patterns(site["answer_key"])
    assert not [k for k, v in theirs.items() if any(p in v for p in patterns)]
    local_wh = f"duckdb://{site['data'] / 'warehouse' / 'dicom_deid.duckdb'}"
    for table in ("dicom_metadata", "deid_metadata", "deid_mapping", "deid_ledger"):
        assert _count(local_wh, table) == _count(site["cloud_wh"], table) > 0, table
    # The analysts' dataset holds no identifying table.
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    dataset = site["cloud_wh"].rsplit("/", 1)[1]
    bq = bigquery.Client(project=site["gcloud"].project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=site["gcloud"].bq_endpoint))
    analysts = {t.table_id for t in bq.list_tables(dataset)}
    assert "deid_metadata" in analysts
    assert not analysts & {"dicom_metadata", "deid_mapping", "deid_ledger", "deid_errors"}


def test_a_withdrawal_on_gcs_releases_the_tree_without_the_study(
    site: dict[str, Any], runs: dict[str, Any]
) -> None:
    """After the comparison above: the withdrawal DAG on the bucket's tree."""
    from airflow.dag_processing.dagbag import DagBag

    from dicom_deid.storage import open_store

    store = open_store(f"gs://{site['bucket']}/research")
    before = {f.rel.removeprefix(f"{STUDY}/") for f in store.release_files(STUDY)}
    study = sorted(p.split("/")[0] for p in before if p.endswith(".dcm"))[0]
    gone = {p for p in before if p.startswith(f"{study}/")}
    metadata = _count(site["cloud_wh"], "deid_metadata")
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["dicom_deid_withdraw"]
    run = dag.test(logical_date=CLOUD_DEID + timedelta(hours=1), run_conf={
        "project": STUDY, "level": "study", "value": study,
        "reason": "consent withdrawn by the participant"})
    assert run.state == "success"
    wid = run.get_task_instance("withdraw").xcom_pull(task_ids="withdraw")["withdrawal_id"]
    assert store.release_of(STUDY) == wid
    after = {f.rel.removeprefix(f"{STUDY}/") for f in store.release_files(STUDY)}
    assert after == (before - gone) | {f"manifests/{wid}.json"}
    assert not any(f.rel.startswith(f"{STUDY}/{study}/") for f in store.list_files(STUDY))
    assert _count(site["cloud_wh"], "deid_metadata") == metadata - len(gone)
