"""The DAG files that need no project file parse without the engine: Airflow's DAG
processor parses each DAG file in a fresh process, again and again, and every module a
DAG file imports is paid on each parse. The engine (pydicom, pyarrow, DuckDB, the Google
clients) is imported by the task that runs instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pydicom", "pyarrow", "duckdb", "google.cloud.storage", "google.cloud.bigquery",
         "onnxruntime", "numpy")
PROBE = """
import json, sys
import airflow.sdk, airflow.sdk.execution_time.task_runner  # what the processor has loaded
before = set(sys.modules)
sys.path.insert(0, sys.argv[1])
import importlib
from airflow.sdk.definitions._internal.contextmanager import DagContext
DagContext.current_autoregister_module_name = sys.argv[2]  # as Airflow's DagBag does
importlib.import_module(sys.argv[2])
added = sorted(set(sys.modules) - before)
dags = sorted(dag.dag_id for dag, _ in DagContext.autoregistered_dags)
print(json.dumps({"added": added, "dags": dags}))
"""


def _parse(dag_file: str, tmp_path: Path) -> dict[str, list[str]]:
    """What parsing ``dag_file`` adds to a process that holds what the processor has."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("DICOM_DEID_PROJECTS_DIR", None)  # the shipped project folder
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags"), dag_file],
                          env=env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _heavy(added: list[str], heavy: tuple[str, ...]) -> list[str]:
    return [m for m in added if m.split(".")[0] in heavy or m in heavy]


@pytest.mark.parametrize("dag_file", ["dicom_metadata_export", "dicom_deid_withdraw",
                                      "dicom_deid_reidentify"])
def test_a_dag_file_parses_without_importing_the_engine(dag_file: str, tmp_path: Path
                                                        ) -> None:
    seen = _parse(dag_file, tmp_path)
    assert seen["dags"] == [dag_file]  # the file did define its DAG
    heavy = _heavy(seen["added"], HEAVY)
    assert not heavy, f"{dag_file} imports the engine at parse time: {heavy[:10]}"


def test_the_projects_file_validates_projects_with_the_data_dictionary_alone(
        tmp_path: Path) -> None:
    # It checks every project file when parsed (the policy's keywords: pydicom's data
    # dictionary), but nothing of the de-identification steps, the warehouse, the
    # review page's web app or the clouds.
    seen = _parse("dicom_deid_projects", tmp_path)
    assert seen["dags"] == ["dicom_deid__demo_ultrasound"]
    assert "pydicom.datadict" in seen["added"]
    heavy = _heavy(seen["added"], ("pyarrow", "duckdb", "sqlglot", "fastapi", "onnxruntime",
                                   "google.cloud.storage", "google.cloud.bigquery"))
    engine = [m for m in seen["added"] if m in (
        "dicom_deid.pipeline.deid_steps", "dicom_deid.deid.batch", "dicom_deid.deid.gate")]
    assert not heavy and not engine, f"parsed with {(heavy + engine)[:10]}"
