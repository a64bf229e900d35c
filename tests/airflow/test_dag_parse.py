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


@pytest.mark.parametrize("dag_file", ["dicom_metadata_export", "dicom_deid_withdraw",
                                      "dicom_deid_reidentify"])
def test_a_dag_file_parses_without_importing_the_engine(dag_file: str, tmp_path: Path
                                                        ) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags"), dag_file],
                          env=env, capture_output=True, text=True, check=True, timeout=120)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["dags"] == [dag_file]  # the file did define its DAG
    heavy = [m for m in seen["added"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert not heavy, f"{dag_file} imports the engine at parse time: {heavy[:10]}"
