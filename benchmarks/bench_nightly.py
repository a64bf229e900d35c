"""Two nights of the nightly DAGs, and the planning steps' memory against the ledger's size.

Issue 14 (item 6): a night's cost should follow what is new in it. On a generated landing
zone of over 5,000 files, night 1 releases everything; night 2 adds 1 % new files and
changes 0.5 % of the existing ones; night 2's de-identification DAG (wall time of
``airflow dags test``) should take at most 10 % of night 1's, and the export DAG likewise.
The memory of the planning steps should not grow with the release ledger (shown at 100k
ledger rows, generated).

Nights (one fresh ``AIRFLOW_HOME``, SQLite, and one data folder for both; ``db migrate``
and the ``dicom_deid_key`` connection are set-up, not timed): the corpus and the Airflow
environment are ``bench_pipeline.py``'s (the synthetic corpus without its images at risk
of burned-in text, copied to ``benchmarks/work/nightly/landing/``; its project file
``bench.yaml`` selects every study under the privacy-first default). Night 1: every
landing file's mtime in day 1 (UTC), then ``airflow dags test dicom_metadata_export``
(day 1's interval) and ``airflow dags test dicom_deid__bench``. Night 2: 1 % new files
(copies of existing ones under new Study/Series/SOP Instance UIDs, written by pydicom) and
0.5 % changed ones (StudyDescription rewritten by pydicom), all with an mtime in day 2,
then the two DAGs again for day 2. Every command is one subprocess timed from outside;
per-task start and end come from the run's metadata DB, so each DAG's wall splits into
Airflow's fixed cost of a ``dags test`` process (start-up before the first task, shut-down
after the last), the gaps between tasks, and the tasks' own time. The benchmark checks
what the runs did and fails (exit 1) otherwise: night 2 exported and de-identified exactly
the new and changed files, released them as added and replaced, and the tree holds one
file per instance of the landing zone (as many as ``released`` ledger rows).

Memory: a fresh DuckDB warehouse per size, ``dicom_metadata`` rows tiled from a real
export of a one-patient corpus (every column of it) with synthetic identifiers and
``deid_ledger`` rows saying that all but 1 % of the cohort was released under the
current config and key (of the 1 %: two thirds new, one third changed), and one more with
the largest ledger over the smallest cohort (the ledger's own share); then, in a child
process each, the planning steps as the DAG's tasks call them (``deid_steps.run_cohort``,
``write_filter_file``, ``resolve_instances``, ``plan_run_shards``), with the child's peak
RSS after each step and each step's seconds.

Usage: ``.venv/bin/python benchmarks/bench_nightly.py [--patients N] [--seed S]
[--workers W] [--shards K] [--ledger-rows 10000,100000] [--part all|nights|memory]
[--write] [--keep]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_deidentify import (
    Corpus,
    compile_engine,
    deid_bin,
    forget_deleted_inodes,
    key_file,
    machine,
    wait_for_quiet,
    warm,
    write_markdown,
)
from bench_pipeline import (
    ALL_DATES,
    BETWEEN,
    COHORT_SQL,
    DEFAULT_PATIENTS,
    DEFAULT_SEED,
    DEID_DAG,
    EXPORT_DAG,
    KEY_CONN,
    MIN_FILES,
    PIPE,
    POLICY,
    PROJECT,
    SHUTDOWN,
    STARTUP,
    VAULT_CONN,
    WARMUP_PATIENTS,
    WORK,
    TaskTime,
    _step_run,
    airflow_bin,
    arrive_on,
    breakdown,
    dag_env,
    deid_conf,
    hold_locks,
    pipeline_corpus,
    policy_file,
    query,
    source_tree,
    task_times,
    timed,
    use_restricted_key,
    vault_key_hex,
    versions,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NIGHTLY = WORK / "nightly"
LOGS = NIGHTLY / "logs"
MEMORY = NIGHTLY / "memory"
START_MARK = "<!-- bench:nightly:start -->"
END_MARK = "<!-- bench:nightly:end -->"

NEW_SHARE, CHANGED_SHARE = 0.01, 0.005
TARGET_SHARE = 0.10
"""Night 2's wall time at most this share of night 1's, for each DAG (the issue's goal)."""
FLAT_TOLERANCE = 0.10
"""Peak RSS of the planning steps at the largest ledger within 10 % of the smallest's."""
LEDGER_SIZES = (10_000, 100_000)
STUDY_SIZE, SERIES_SIZE, PATIENT_SIZE = 50, 10, 200
"""Synthetic cohort of the memory part: instances per study, per series, per patient."""
CHANGED_EVERY = 300
"""One ledger instance in this many has new content (changed); new instances are one in
150 of the ledger's size: together 1 % of it is to be released."""
MEMORY_KEY_ID = "00000000feedc0de"
"""The key id the memory part's ledger and planning use (the steps only compare it)."""
SUPERSEDED_CHANGED = "content changed"
API_SETUP = "(Execution API set-up)"
OUTSIDE = (STARTUP, API_SETUP, BETWEEN, SHUTDOWN)


# -- the landing zone of two nights ----------------------------------------------------------
def _uid(seed: int, *parts: object) -> str:
    """A repeatable UID under ``2.25.`` (a UUID-derived integer, as PS3.5 B.2 describes)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16]).int}"


def copy_landing(corpus: Corpus) -> Corpus:
    """The corpus copied to this benchmark's landing folder (the runs add and rewrite
    files there; the cache stays as ``bench_pipeline.py`` expects it)."""
    landing = NIGHTLY / "landing"
    subprocess.run(["cp", "-a", "--reflink=auto", str(corpus.dicom_dir), str(landing / "dicom")],
                   check=True)
    shutil.copy2(corpus.dicom_dir.parent / "mtimes.json", landing / "mtimes.json")
    return replace(corpus, dicom_dir=landing / "dicom")


def instance_index(landing: Corpus) -> dict[str, list[str]]:
    """Landing files by SOP Instance UID (the corpus re-sends some instances under a
    second file name)."""
    from pydicom import dcmread

    found: dict[str, list[str]] = {}
    for rel in landing.rel_paths():
        ds = dcmread(landing.dicom_dir / rel, stop_before_pixels=True, force=True,
                     specific_tags=["SOPInstanceUID"])
        found.setdefault(str(ds.SOPInstanceUID), []).append(rel)
    return found


@dataclass
class NightTwo:
    """What night 2 brings: new files (relative paths) and changed ones."""

    new: list[str]
    changed: list[str]
    instances_before: int
    """Distinct instances in the landing zone before night 2."""


def prepare_night_two(landing: Corpus, day: dt.date, seed: int) -> NightTwo:
    """Add ``NEW_SHARE`` new files and rewrite ``CHANGED_SHARE`` of the existing ones, all
    modified inside ``day`` (UTC). Sources are files holding an instance no other file
    holds, so every new file is one new instance and every changed file one that night 1
    released."""
    from pydicom import dcmread

    by_sop = instance_index(landing)
    single = sorted(rels[0] for rels in by_sop.values() if len(rels) == 1)
    n_new = max(1, round(landing.files * NEW_SHARE))
    n_changed = max(1, round(landing.files * CHANGED_SHARE))
    picked = random.Random(seed).sample(single, n_new + n_changed)
    start = dt.datetime(day.year, day.month, day.day, 1, tzinfo=dt.UTC).timestamp()
    step = 22 * 3600 / (n_new + n_changed)
    new: list[str] = []
    for n, rel in enumerate(picked[:n_new]):
        ds = dcmread(landing.dicom_dir / rel, force=True)  # some have no file meta
        ds.StudyInstanceUID = _uid(seed, "study", ds.StudyInstanceUID)
        ds.SeriesInstanceUID = _uid(seed, "series", ds.SeriesInstanceUID)
        ds.SOPInstanceUID = _uid(seed, "sop", n)
        if "MediaStorageSOPInstanceUID" in getattr(ds, "file_meta", {}):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = f"night2/new-{n:05d}.dcm"
        (landing.dicom_dir / out).parent.mkdir(exist_ok=True)
        ds.save_as(landing.dicom_dir / out, enforce_file_format=False)
        new.append(out)
    for rel in picked[n_new:]:
        ds = dcmread(landing.dicom_dir / rel, force=True)
        ds.StudyDescription = f"{ds.get('StudyDescription') or ''} (revised)".strip()
        ds.save_as(landing.dicom_dir / rel, enforce_file_format=False)
    for i, rel in enumerate([*new, *picked[n_new:]]):
        moment = int((start + i * step) * 1e9)
        os.utime(landing.dicom_dir / rel, ns=(moment, moment))
    return NightTwo(new, picked[n_new:], len(by_sop))


# -- one `airflow dags test`, and what its run did ------------------------------------------
@dataclass
class DagRun:
    """One ``airflow dags test`` of one night."""

    night: int
    dag_id: str
    wall: float
    cpu_seconds: float
    other_cpu_pct: float
    returncode: int
    run_id: str = ""
    state: str = ""
    parts: dict[str, float] = field(default_factory=dict)
    """Seconds per task id (mapped instances summed), start-up, between and shut-down."""
    tasks: list[TaskTime] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    """Each task's return value (XCom; mapped tasks: a list over map indexes)."""
    processed: int = 0

    @property
    def fixed(self) -> float:
        """Airflow's own cost of the process: before the first task, its Execution API's
        set-up inside the first task, after the last task."""
        return sum(self.parts.get(k, 0.0) for k in (STARTUP, API_SETUP, SHUTDOWN))

    @property
    def task_seconds(self) -> float:
        """The tasks' own time (the first one's without the Execution API's set-up)."""
        return sum(t.seconds for t in self.tasks) - self.parts.get(API_SETUP, 0.0)

    @property
    def between(self) -> float:
        return self.parts.get(BETWEEN, 0.0)


def _latest_run(db: Path, dag_id: str) -> tuple[str, str]:
    """(run id, state) of ``dag_id``'s newest run in the metadata DB."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? "
                          "ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
    finally:
        con.close()
    return (str(row[0]), str(row[1])) if row else ("", "no run")


def _xcoms(db: Path, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's task return values (JSON in the metadata DB)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND "
                           "run_id = ? AND key = 'return_value' ORDER BY task_id, map_index",
                           (dag_id, run_id)).fetchall()
    finally:
        con.close()
    out: dict[str, Any] = {}
    for task_id, map_index, value in rows:
        decoded = json.loads(value) if isinstance(value, str | bytes) else value
        if isinstance(decoded, str):  # stored as JSON text of JSON
            decoded = json.loads(decoded)
        if map_index >= 0:
            out.setdefault(task_id, []).append(decoded)
        else:
            out[task_id] = decoded
    return out


def _api_setup(tasks: list[TaskTime], log: str) -> tuple[str, float]:
    """The first task and the seconds its recorded time spends before Airflow's Execution
    API reports it started: ``dags test`` builds that API in-process on its first task,
    once per process, whatever the task does."""
    if not tasks:
        return "", 0.0
    first = min(tasks, key=lambda t: t.start)
    for line in log.splitlines():
        if "Task started" in line:
            started = dt.datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
            return first.task_id, max(0.0, min(started, first.end) - first.start)
    return first.task_id, 0.0


def run_dag(env: dict[str, str], night: int, dag_id: str, logical: dt.datetime,
            conf: dict[str, Any] | None, db: Path) -> DagRun:
    """Time one ``airflow dags test`` and read its run back from the metadata DB."""
    cmd = ["env", *(f"{k}={v}" for k, v in env.items()), str(airflow_bin()), "dags", "test",
           dag_id, logical.isoformat(), *(["--conf", json.dumps(conf)] if conf else [])]
    LOGS.mkdir(parents=True, exist_ok=True)
    wait_for_quiet()
    spawned = time.time()
    m, sampled = timed(cmd, LOGS / f"night{night}-{dag_id}")
    step = _step_run(dag_id, m, sampled)
    tasks, _ = task_times(db)
    mine = [t for t in tasks if t.dag_id == dag_id and spawned <= t.start <= spawned + m.wall]
    run_id, state = _latest_run(db, dag_id)
    parts = breakdown(mine, spawned, m.wall)
    first, setup = _api_setup(mine, m.stdout + m.stderr)
    if setup:
        parts[first] -= setup
        parts[API_SETUP] = setup
    run = DagRun(night, dag_id, m.wall, step.cpu_seconds, step.other_cpu_pct, m.returncode,
                 run_id, state, parts, mine, _xcoms(db, dag_id, run_id))
    print(f"  night {night} {dag_id:<22} {m.wall:7.2f} s (tasks {run.task_seconds:.2f} s) "
          f"exit {m.returncode}, {state}", flush=True)
    return run


def setup_airflow(env: dict[str, str], key: Path, tag: str) -> None:
    """``airflow db migrate`` and the key connection (not timed)."""
    airflow = str(airflow_bin())
    envs = ["env", *(f"{k}={v}" for k, v in env.items())]
    LOGS.mkdir(parents=True, exist_ok=True)
    for i, cmd in enumerate(([airflow, "db", "migrate"],
                             [airflow, "connections", "add", KEY_CONN, "--conn-type", "generic",
                              "--conn-password", key.read_text().strip()],
                             [airflow, "connections", "add", VAULT_CONN, "--conn-type",
                              "generic", "--conn-password", vault_key_hex()])):
        done = subprocess.run([*envs, *cmd], capture_output=True, text=True)
        (LOGS / f"{tag}-setup{i}.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise SystemExit(f"set-up command {i} failed (log: {LOGS / f'{tag}-setup{i}.log'})")


def warm_up(small: Corpus, day: dt.date, key: Path, cohort: Path, workers: int) -> None:
    """Both DAGs once, unmeasured, over a one-patient corpus: Airflow's and the engine's
    files in the page cache before night 1, as night 2 finds them."""
    base = NIGHTLY / "warmup"
    arrive_on(small, day)
    env = dag_env(base, small.dicom_dir, workers, ROOT, cohort)
    setup_airflow(env, key, "warmup")
    after = day + dt.timedelta(days=1)
    for dag_id, hour, conf in ((EXPORT_DAG, 1, None), (DEID_DAG, 2, deid_conf(small.files, 1))):
        logical = dt.datetime(after.year, after.month, after.day, hour, tzinfo=dt.UTC)
        cmd = ["env", *(f"{k}={v}" for k, v in env.items()), str(airflow_bin()), "dags",
               "test", dag_id, logical.isoformat(),
               *(["--conf", json.dumps(conf)] if conf else [])]
        done = subprocess.run(cmd, capture_output=True, text=True)
        (LOGS / f"warmup-{dag_id}.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            print(f"  warm-up {dag_id} exited {done.returncode} (log in {LOGS})")
    shutil.rmtree(base)


# -- what the nights did, checked -----------------------------------------------------------
@dataclass
class Night:
    """One night: its two DAG runs and what the warehouse and tree say afterwards."""

    number: int
    export: DagRun
    deid: DagRun
    exported: int = 0
    selected: dict[str, int] = field(default_factory=dict)
    released: dict[str, int] = field(default_factory=dict)
    tree_files: int = 0
    ledger_released: int = 0
    instances: int = 0
    """Distinct (study, series, SOP) in ``dicom_metadata``: the landing zone's instances."""
    duplicates: int = 0


def _batch_id(logical: dt.datetime) -> str:
    """The batch id the de-identification DAG gives its run for ``logical``."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    return batch_id_for(logical, PROJECT)


def collect_night(night: Night, data: Path, batch: str) -> None:
    """Counts of what the night did: exported, selected, de-identified, released."""
    export = night.export.results.get("export_landing") or {}
    night.exported = int(export.get("exported", 0))
    night.export.processed = night.exported
    resolved = night.deid.results.get("resolve_instances") or {}
    night.selected = {k: int(resolved.get(k, 0)) for k in
                      ("cohort_instances", "to_release", "new", "changed", "policy",
                       "unchanged")}
    published = night.deid.results.get("publish") or {}
    night.released = {k: int(published.get(k) or 0) for k in
                      ("added", "replaced", "removed", "withdrawn", "files")}
    wh = data / "warehouse" / "dicom_deid.duckdb"
    row = query(wh, f"SELECT processed FROM deid_runs WHERE run_id = '{batch}'")
    night.deid.processed = int(row[0][0]) if row else -1
    dup = query(wh, f"SELECT count(*) FROM deid_errors WHERE run_id = '{batch}' "
                    "AND kind = 'duplicate'")
    night.duplicates = int(dup[0][0]) if dup else 0
    tree = data / "deid" / PROJECT
    night.tree_files = sum(1 for _ in tree.rglob("*.dcm")) if tree.exists() else 0
    ledger = query(wh, f"SELECT count(*) FROM deid_ledger WHERE project = '{PROJECT}' "
                       "AND status = 'released'")
    night.ledger_released = int(ledger[0][0]) if ledger else -1
    found = query(wh, "SELECT count(*) FROM (SELECT DISTINCT StudyInstanceUID, "
                      "SeriesInstanceUID, SOPInstanceUID FROM dicom_metadata)")
    night.instances = int(found[0][0]) if found else -1


def _expect(problems: list[str], what: str, got: object, want: object) -> None:
    """Note a problem when ``got`` is not ``want``."""
    if got != want:
        problems.append(f"{what}: {got}, expected {want}")


def check_runs(night: Night) -> list[str]:
    """Every run and task succeeded; the tree holds one file per landing instance."""
    problems: list[str] = []
    for run in (night.export, night.deid):
        if run.returncode or run.state != "success":
            problems.append(f"night {night.number} {run.dag_id}: exit {run.returncode}, "
                            f"run {run.state}")
        problems += [f"night {night.number} {run.dag_id} task {t.task_id}[{t.map_index}]: "
                     f"{t.state}" for t in run.tasks if t.state not in ("success", "skipped")]
    n = f"night {night.number}"
    _expect(problems, f"{n}: files in the tree", night.tree_files, night.instances)
    _expect(problems, f"{n}: released ledger rows", night.ledger_released, night.instances)
    return problems


def check_night_one(night: Night, landing_files: int) -> list[str]:
    """Night 1 exported every landing file and de-identified every instance."""
    problems = check_runs(night)
    _expect(problems, "night 1: exported", night.exported, landing_files)
    _expect(problems, "night 1: de-identified", night.deid.processed,
            landing_files - night.duplicates)
    _expect(problems, "night 1: de-identified (instances)", night.deid.processed,
            night.instances)
    return problems


def check_night_two(night: Night, two: NightTwo, first: Night, db_superseded: int
                    ) -> list[str]:
    """Night 2 took up exactly the new and changed files, and nothing else."""
    problems = check_runs(night)
    n_new, n_changed = len(two.new), len(two.changed)
    _expect(problems, "night 2: exported", night.exported, n_new + n_changed)
    _expect(problems, "night 2: selected new", night.selected["new"], n_new)
    _expect(problems, "night 2: selected changed", night.selected["changed"], n_changed)
    _expect(problems, "night 2: selected under a new config or key", night.selected["policy"], 0)
    _expect(problems, "night 2: de-identified", night.deid.processed, n_new + n_changed)
    _expect(problems, "night 2: added to the tree", night.released["added"], n_new)
    _expect(problems, "night 2: replaced in the tree", night.released["replaced"], n_changed)
    _expect(problems, "night 2: removed from the tree", night.released["removed"], 0)
    _expect(problems, "night 2: ledger rows superseded as changed", db_superseded, n_changed)
    _expect(problems, "night 1: instances in dicom_metadata against the landing files' SOP "
            "Instance UIDs (read by pydicom)", first.instances, two.instances_before)
    _expect(problems, "night 2: instances", night.instances, first.instances + n_new)
    return problems


def superseded_changed(data: Path) -> int:
    """Ledger rows superseded because their landing file's content changed."""
    found = query(data / "warehouse" / "dicom_deid.duckdb",
                  f"SELECT count(*) FROM deid_ledger WHERE project = '{PROJECT}' AND "
                  f"status = 'superseded' AND status_reason = '{SUPERSEDED_CHANGED}'")
    return int(found[0][0]) if found else -1


@dataclass
class NightsResult:
    """Both nights, what night 2 brought, and every failed check."""

    landing: Corpus
    two: NightTwo
    nights: list[Night]
    problems: list[str]
    days: tuple[str, str]


def run_nights(corpus: Corpus, small: Corpus, key: Path, cohort: Path, workers: int,
               shards: int, seed: int) -> NightsResult:
    """Night 1 (everything), then night 2 (1 % new, 0.5 % changed), in one Airflow home."""
    today = dt.datetime.now(dt.UTC).date()
    day1, day2 = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    for old in (NIGHTLY / "run", NIGHTLY / "landing", NIGHTLY / "warmup"):
        shutil.rmtree(old, ignore_errors=True)
    os.sync()
    forget_deleted_inodes(time.monotonic())  # deleted inodes must not slow night 1's writes
    (NIGHTLY / "landing").mkdir(parents=True)
    landing = copy_landing(corpus)
    arrive_on(landing, day1)
    warm_up(small, day1, key, cohort, workers)
    base = NIGHTLY / "run"
    env = dag_env(base, landing.dicom_dir, workers, ROOT, cohort)
    setup_airflow(env, key, "nights")
    db, data = base / "airflow" / "airflow.db", base / "data"
    conf = deid_conf(landing.files, shards)
    nights: list[Night] = []
    two = NightTwo([], [], 0)
    problems: list[str] = []
    for number, day in ((1, day1), (2, day2)):
        if number == 2:
            two = prepare_night_two(landing, day, seed)
            print(f"  night 2 brings {len(two.new)} new and {len(two.changed)} changed "
                  "file(s)", flush=True)
        warm(landing)
        after = day + dt.timedelta(days=1)
        export_at = dt.datetime(after.year, after.month, after.day, 1, tzinfo=dt.UTC)
        deid_at = export_at + dt.timedelta(hours=1)
        night = Night(number, run_dag(env, number, EXPORT_DAG, export_at, None, db),
                      run_dag(env, number, DEID_DAG, deid_at, conf, db))
        collect_night(night, data, _batch_id(deid_at))
        nights.append(night)
        problems += (check_night_one(night, landing.files) if number == 1 else
                     check_night_two(night, two, nights[0], superseded_changed(data)))
    return NightsResult(landing, two, nights, problems, (day1.isoformat(), day2.isoformat()))


# -- memory of the planning steps against the ledger's size ---------------------------------
def _status_mb(field_name: str) -> float:
    """``VmHWM`` (peak RSS since exec) or ``VmRSS`` of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def memory_child(folder: Path) -> None:
    """The planning steps over ``folder``'s warehouse, as the DAG's tasks call them; prints
    seconds and the process's peak RSS after each step (JSON, the last line)."""
    started_mb = _status_mb("VmHWM")
    import duckdb  # noqa: F401  (imported by the steps anyway: part of the baseline)
    import pyarrow  # noqa: F401

    from dicom_deid.config.google import load_config
    from dicom_deid.pipeline import deid_steps
    from dicom_deid.pipeline.deid_steps import RunWorkspace
    from dicom_deid.pipeline.projects import RunRequest
    from dicom_deid.pipeline.settings import PipelineSettings

    imported_mb = _status_mb("VmHWM")
    folder = folder.resolve()
    spec = json.loads((folder / "spec.json").read_text())
    settings = PipelineSettings(
        landing=str(folder / "landing"), destination=str(folder / "deid" / PROJECT),
        warehouse=f"duckdb://{folder / 'warehouse' / 'dicom_deid.duckdb'}",
        metadata_dir=folder / "metadata", work_dir=folder / "runs", workers=1)
    req = RunRequest(cohort=spec["cohort"], cohort_params=ALL_DATES,
                     policy=load_config(spec["policy"]), project=PROJECT)
    ws = RunWorkspace(settings.work_dir, "batch-memory")
    steps: list[tuple[str, Any]] = [
        ("run_cohort", lambda: deid_steps.run_cohort(ws, settings, req)),
        ("write_filter_file", lambda: deid_steps.write_filter_file(ws)),
        ("resolve_instances",
         lambda: deid_steps.resolve_instances(ws, settings, req, MEMORY_KEY_ID)),
        ("plan_run_shards", lambda: deid_steps.plan_run_shards(ws, settings=settings)),
    ]
    out: dict[str, Any] = {"started_mb": started_mb, "imported_mb": imported_mb, "steps": []}
    for name, call in steps:
        t0 = time.perf_counter()
        result = call()
        out["steps"].append({"step": name, "seconds": time.perf_counter() - t0,
                             "hwm_mb": _status_mb("VmHWM"), "rss_mb": _status_mb("VmRSS")})
        if name == "resolve_instances":
            out["selected"] = {k: result[k] for k in ("cohort_instances", "to_release", "new",
                                                      "changed", "policy")}
        if name == "plan_run_shards":
            out["shards"] = len(result)
    out["peak_mb"] = _status_mb("VmHWM")
    print(json.dumps(out))


def memory_template(small: Corpus) -> list[str]:
    """Parquet of a real export of the one-patient corpus (every column the exporter
    writes), the rows the synthetic ``dicom_metadata`` is tiled from."""
    out = MEMORY / "template"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([str(deid_bin()), "export-metadata", str(small.dicom_dir), "--out",
                    str(out), "--no-load"], check=True, capture_output=True)
    return sorted(str(p) for p in out.rglob("*.parquet"))


def _synthetic(i: str) -> dict[str, str]:
    """SQL expressions of instance ``i``'s landing path, content hash and UIDs."""
    return {
        "source_uri": f"'/landing/p' || ({i} // {PATIENT_SIZE}) || '/' || {i} || '.dcm'",
        "hash": f"sha256('content-' || {i})",
        "study": f"printf('2.25.1%012d', {i} // {STUDY_SIZE})",
        "series": f"printf('2.25.2%012d', {i} // {SERIES_SIZE})",
        "sop": f"printf('2.25.3%012d', {i})",
    }


def expected_selection(ledger_rows: int, every: int) -> dict[str, int]:
    """What ``resolve_instances`` must select from :func:`build_warehouse`'s warehouse."""
    kept = range(0, ledger_rows + ledger_rows // 150, every)
    new = sum(1 for i in kept if i >= ledger_rows)
    changed = sum(1 for i in kept if i < ledger_rows and i % CHANGED_EVERY == 0)
    return {"cohort_instances": len(kept), "to_release": new + changed, "new": new,
            "changed": changed, "policy": 0}


def build_warehouse(folder: Path, ledger_rows: int, template: list[str], config: str,
                    every: int = 1) -> None:
    """A warehouse whose ledger has ``ledger_rows`` released instances, one in
    ``CHANGED_EVERY`` of them changed since, and whose ``dicom_metadata`` also holds
    ``ledger_rows // 150`` new instances; ``every`` > 1 keeps only one instance in
    ``every`` in ``dicom_metadata`` (a cohort smaller than the ledger)."""
    from dicom_deid.pipeline.restricted import open_private_warehouse

    instances = ledger_rows + ledger_rows // 150
    e = _synthetic("i")
    changed = f"(i < {ledger_rows} AND i % {CHANGED_EVERY} = 0)"
    with open_private_warehouse(f"duckdb://{folder / 'warehouse' / 'dicom_deid.duckdb'}") as wh:
        wh.ensure_schema()
        wh.load_parquet("dicom_metadata", template)
        con = wh.connection  # type: ignore[attr-defined]
        con.execute("CREATE TEMP TABLE tpl AS SELECT *, row_number() OVER () - 1 AS _k "
                    "FROM dicom_metadata")
        size = con.execute("SELECT count(*) FROM tpl").fetchone()[0]
        con.execute("DELETE FROM dicom_metadata")
        con.execute(f"""
            INSERT INTO dicom_metadata BY NAME
            SELECT * EXCLUDE (_k, i) REPLACE (
              {e['source_uri']} AS source_uri,
              CASE WHEN {changed} THEN sha256('revised-' || i) ELSE {e['hash']} END
                AS content_sha256,
              {e['study']} AS StudyInstanceUID, {e['series']} AS SeriesInstanceUID,
              {e['sop']} AS SOPInstanceUID, 'P' || (i // {PATIENT_SIZE}) AS PatientID,
              DATE '2000-01-01' + (i // {STUDY_SIZE} % 9000)::INTEGER AS StudyDate,
              TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS mtime)
            FROM range(0, {instances}, {every}) AS r(i) JOIN tpl ON tpl._k = i % {size}""")
        con.execute(f"""
            INSERT INTO deid_ledger BY NAME
            SELECT '{PROJECT}' AS project, {e['source_uri']} AS source_uri,
              {e['hash']} AS source_sha256,
              printf('2.25.4%012d', i // {STUDY_SIZE}) AS study_uid,
              printf('2.25.5%012d', i // {SERIES_SIZE}) AS series_uid,
              printf('2.25.6%012d', i) AS sop_uid, 'PSEUDO' || (i // {PATIENT_SIZE}) AS patient_id,
              printf('2.25.4%012d/2.25.5%012d/2.25.6%012d.dcm', i // {STUDY_SIZE},
                     i // {SERIES_SIZE}, i) AS output_path,
              sha256('released-' || i) AS output_sha256, '{config}' AS config_sha256,
              '{MEMORY_KEY_ID}' AS key_id, 'batch-20260101T020000Z-{PROJECT}' AS batch_id,
              TIMESTAMPTZ '2026-01-02 02:00:00+00' AS released_at, 'released' AS status
            FROM range({ledger_rows}) AS r(i)""")


@dataclass
class MemoryRun:
    """The planning steps over one generated warehouse, in a child process."""

    ledger_rows: int
    instances: int
    expected: dict[str, int]
    seconds: float
    peak_mb: float
    """The child's own peak RSS (``VmHWM``, reset at exec)."""
    ru_maxrss_mb: float
    """``ru_maxrss`` of the child from ``wait4`` (spawned by fork: see :func:`run_memory`)."""
    imported_mb: float
    steps: list[dict[str, Any]]
    selected: dict[str, int]
    shards: int


def run_memory(sizes: list[int], small: Corpus, cohort: Path) -> list[MemoryRun]:
    """Generate a warehouse per size, then the planning steps over it in a child each."""
    from dicom_deid.config.google import load_config

    shutil.rmtree(MEMORY, ignore_errors=True)
    template = memory_template(small)
    policy = policy_file(NIGHTLY)
    config = load_config(policy).fingerprint()
    runs = []
    cases = [(rows, 1) for rows in sizes]
    if len(sizes) > 1:  # the largest ledger over the smallest cohort: the ledger alone
        cases.append((sizes[-1], sizes[-1] // sizes[0]))
    for rows, every in cases:
        folder = MEMORY / f"ledger-{rows}-every-{every}"
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        build_warehouse(folder, rows, template, config, every)
        expected = expected_selection(rows, every)
        print(f"  ledger {rows:,} rows, cohort {expected['cohort_instances']:,} instances: "
              f"generated in {time.perf_counter() - t0:.1f} s", flush=True)
        (folder / "spec.json").write_text(json.dumps({"cohort": str(cohort),
                                                      "policy": str(policy)}))
        runs.append(_measure_child(folder, rows, expected))
    return runs


def _measure_child(folder: Path, rows: int, expected: dict[str, int]) -> MemoryRun:
    """One child over ``folder``. Spawned by fork (a ``preexec_fn`` turns off vfork):
    after a vfork the child's ``ru_maxrss`` starts at the parent's own peak."""
    out = folder / "child.json"
    started = time.perf_counter()
    with open(out, "w") as fh, open(folder / "child.err", "w") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                 "--memory-child", str(folder)], stdout=fh, stderr=err,
                                preexec_fn=os.getpid)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"the planning steps failed over {folder} (exit "
                         f"{os.waitstatus_to_exitcode(status)}): see {folder / 'child.err'}")
    child = json.loads(out.read_text().strip().splitlines()[-1])
    run = MemoryRun(rows, expected["cohort_instances"], expected, seconds, child["peak_mb"],
                    usage.ru_maxrss * 1024 / 1e6,
                    child["imported_mb"], child["steps"], child["selected"], child["shards"])
    print(f"  ledger {rows:,}: peak RSS {run.peak_mb:.0f} MB (after imports "
          f"{run.imported_mb:.0f} MB), {seconds:.1f} s", flush=True)
    return run


def check_memory(runs: list[MemoryRun]) -> list[str]:
    """Each warehouse's planning selected exactly the new and changed instances generated."""
    return [f"ledger {r.ledger_rows}, cohort {r.instances}: selected {r.selected}, expected "
            f"{r.expected}" for r in runs if r.selected != r.expected]


# -- report -------------------------------------------------------------------------------
LABEL = {EXPORT_DAG: "metadata export", DEID_DAG: "de-identification"}


def _pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``."""
    return f"{100 * part / whole:.1f} %" if whole else "-"


def nights_table(nights: list[Night]) -> list[str]:
    """Per night and DAG: files, wall, fixed cost, gaps, tasks, CPU; then night 2 ÷ 1."""
    lines = ["| night | DAG | files processed | wall s | Airflow's fixed cost s (start-up "
             "+ Execution API + shut-down) | between tasks s | tasks s | CPU s |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for n in nights:
        for run in (n.export, n.deid):
            what = "exported" if run.dag_id == EXPORT_DAG else "de-identified"
            split = " + ".join(f"{run.parts.get(k, 0.0):.2f}"
                               for k in (STARTUP, API_SETUP, SHUTDOWN))
            lines.append(f"| {n.number} | `{run.dag_id}` | {run.processed} {what} "
                         f"| {run.wall:.2f} | {run.fixed:.2f} ({split}) | {run.between:.2f} "
                         f"| {run.task_seconds:.2f} | {run.cpu_seconds:.1f} |")
    one, two = nights
    for a, b in ((one.export, two.export), (one.deid, two.deid)):
        lines.append(f"| **2 ÷ 1** | `{a.dag_id}` | {_pct(b.processed, a.processed)} "
                     f"| **{_pct(b.wall, a.wall)}** | {_pct(b.fixed, a.fixed)} "
                     f"| {_pct(b.between, a.between)} "
                     f"| **{_pct(b.task_seconds, a.task_seconds)}** "
                     f"| {_pct(b.cpu_seconds, a.cpu_seconds)} |")
    return lines


def task_table(nights: list[Night]) -> list[str]:
    """Every part of each DAG's wall, night 1 against night 2."""
    lines = ["| DAG | task | night 1 s | night 2 s | 2 ÷ 1 |", "|---|---|--:|--:|--:|"]
    one, two = nights
    for a, b in ((one.export, two.export), (one.deid, two.deid)):
        names = [k for k in a.parts if k not in OUTSIDE]
        names += [k for k in b.parts if k not in names and k not in OUTSIDE]
        for name in (STARTUP, API_SETUP, *names, BETWEEN, SHUTDOWN):
            x, y = a.parts.get(name, 0.0), b.parts.get(name, 0.0)
            label = f"`{name}`" if name not in OUTSIDE else OUTSIDE_LABELS[name]
            lines.append(f"| `{a.dag_id}` | {label} | {x:.2f} | {y:.2f} | {_pct(y, x)} |")
        lines.append(f"| `{a.dag_id}` | **whole `airflow dags test`** | **{a.wall:.2f}** "
                     f"| **{b.wall:.2f}** | **{_pct(b.wall, a.wall)}** |")
    return lines


OUTSIDE_LABELS = {
    STARTUP: "start-up: process start to the first task",
    API_SETUP: "the first task's wait for Airflow's in-process Execution API",
    BETWEEN: "between tasks (scheduling, task set-up and tear-down)",
    SHUTDOWN: "shut-down: the last task's end to process exit",
}


def _largest_tasks(run: DagRun, n: int = 3) -> str:
    """The ``n`` tasks that took longest in ``run``, with their seconds."""
    tasks = sorted(((v, k) for k, v in run.parts.items() if k not in OUTSIDE), reverse=True)
    return ", ".join(f"`{k}` {v:.2f} s" for v, k in tasks[:n])


def goal_lines(nights: list[Night]) -> list[str]:
    """The issue's wall-time goal per DAG, and why the wall and task ratios differ."""
    one, two = nights
    verdicts = []
    for a, b in ((one.export, two.export), (one.deid, two.deid)):
        share = b.wall / a.wall
        verdicts.append(f"{LABEL[a.dag_id]} **{'MET' if share <= TARGET_SHARE else 'NOT MET'}"
                        f"** ({_pct(b.wall, a.wall)}: {b.wall:.1f} s against {a.wall:.1f} s; "
                        f"task time {_pct(b.task_seconds, a.task_seconds)})")
    e1, d1, e2, d2 = one.export, one.deid, two.export, two.deid
    outside2 = e2.fixed + e2.between + d2.fixed + d2.between
    return [
        f"**Goal (night 2's wall at most {TARGET_SHARE:.0%} of night 1's, per DAG, as the "
        f"issue states it):** " + "; ".join(verdicts) + ".",
        "",
        f"Why the wall ratio and the task ratio differ: each `airflow dags test` is one "
        f"process that pays a fixed cost whatever the night brings: interpreter start, "
        f"Airflow's imports, parsing the DAG folder and creating the run before the first "
        f"task; Airflow building its in-process Execution API inside the first task (once "
        f"per process); the interpreter's shut-down after the last task. That is "
        f"{e1.fixed:.1f} s (export) and {d1.fixed:.1f} s (de-identification) on night 1, "
        f"{e2.fixed:.1f} s and {d2.fixed:.1f} s on night 2; the gaps in which Airflow "
        f"schedules and sets up each task add {e2.between:.1f} s and {d2.between:.1f} s on "
        f"night 2 ({len(d2.tasks)} task instances in the de-identification). So night 2 "
        f"spends {outside2:.1f} of its {e2.wall + d2.wall:.1f} s outside the tasks. The "
        f"tasks' own time does follow what is new: night 2's export tasks take "
        f"{_pct(e2.task_seconds, e1.task_seconds)} of night 1's and its de-identification "
        f"tasks {_pct(d2.task_seconds, d1.task_seconds)}, for "
        f"{_pct(d2.processed, d1.processed)} of the files (its largest tasks: "
        f"{_largest_tasks(e2)}; {_largest_tasks(d2)}). A night can never take less than "
        f"the fixed cost, so the wall ratio reaches {TARGET_SHARE:.0%} only when night 1's "
        f"work is about ten times that cost; this benchmark does not measure what a running "
        f"scheduler and its workers pay per run instead.",
    ]


def check_lines(result: NightsResult) -> list[str]:
    """What the checks established (or what failed)."""
    one, two = result.nights
    if result.problems:
        return ["**Checks FAILED:** " + "; ".join(result.problems) + "."]
    return [
        f"Checks (all passed): night 1 exported all {one.exported} landing files and "
        f"de-identified {one.deid.processed} of them, every instance of the landing zone "
        f"({one.duplicates} older copies of re-sent instances set aside as duplicates); "
        f"night 2 exported exactly the {len(result.two.new)} new and "
        f"{len(result.two.changed)} changed files, selected them as new and changed (none "
        f"under a new config or key, {two.selected['unchanged']} released before and "
        f"unchanged), de-identified those {two.deid.processed} alone and released them as "
        f"{two.released['added']} added and {two.released['replaced']} replaced (the "
        f"replaced ledger rows superseded); after each night the tree holds one file per "
        f"instance of the landing zone ({one.tree_files}, then {two.tree_files}), as many as "
        f"the `released` ledger rows."]


def _label(r: MemoryRun) -> str:
    """``ledger rows / cohort instances`` of one memory run."""
    return f"{r.ledger_rows:,} / {r.instances:,}"


def _step_hwm(r: MemoryRun, step: str) -> float:
    """The child's peak RSS (MB) once ``step`` had run."""
    return float(next(s["hwm_mb"] for s in r.steps if s["step"] == step))


def memory_lines(runs: list[MemoryRun], problems: list[str]) -> list[str]:
    """Peak RSS and seconds per warehouse and step, and the flatness goal."""
    lines = ["| ledger rows / cohort instances | to release (new + changed) | shards "
             "| peak RSS MB | after imports MB | steps above imports MB | seconds (child) |",
             "|--:|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        lines.append(f"| {_label(r)} | {r.selected['to_release']:,} "
                     f"({r.selected['new']:,} + {r.selected['changed']:,}) | {r.shards} "
                     f"| {r.peak_mb:.0f} | {r.imported_mb:.0f} | {r.peak_mb - r.imported_mb:.0f} "
                     f"| {r.seconds:.1f} |")
    lines += ["", "| step | " + " | ".join(f"s ({_label(r)})" for r in runs) + " | "
              + " | ".join(f"peak RSS MB after it ({_label(r)})" for r in runs) + " |",
              "|---|" + "--:|" * (2 * len(runs))]
    for i, step in enumerate(runs[0].steps):
        lines.append(f"| `{step['step']}` | "
                     + " | ".join(f"{r.steps[i]['seconds']:.2f}" for r in runs) + " | "
                     + " | ".join(f"{r.steps[i]['hwm_mb']:.0f}" for r in runs) + " |")
    full = [r for r in runs if r.instances >= r.ledger_rows]
    alone = [r for r in runs if r.instances < r.ledger_rows]
    small, large = full[0], full[-1]
    growth = large.peak_mb / small.peak_mb - 1
    if alone:
        # The ledger's size alone: the same cohort over a ledger ten times larger.
        held = alone[0].peak_mb / small.peak_mb - 1
        lines += ["", f"**Goal (peak RSS of the planning steps flat in the ledger's size, within "
                  f"{FLAT_TOLERANCE:.0%}: the same cohort, {small.instances:,} and "
                  f"{alone[0].instances:,} instances, over {small.ledger_rows:,} and "
                  f"{alone[0].ledger_rows:,} ledger rows): "
                  f"{'MET' if abs(held) <= FLAT_TOLERANCE else 'NOT MET'}** — "
                  f"{small.peak_mb:.0f} MB against {alone[0].peak_mb:.0f} MB ({held:+.1%}). "
                  f"With the cohort growing as much as the ledger ({large.instances:,} "
                  f"instances over {large.ledger_rows:,} ledger rows, "
                  f"{large.selected['to_release']:,} to release): {large.peak_mb:.0f} MB "
                  f"({growth:+.1%}), which is the cohort's size, not the ledger's (below)."]
    else:
        lines += ["", f"**Goal (peak RSS of the planning steps flat in the ledger's size, "
                  f"within {FLAT_TOLERANCE:.0%}): not measured** (no run with the cohort "
                  f"held); with the cohort growing alongside, {small.peak_mb:.0f} MB against "
                  f"{large.peak_mb:.0f} MB ({growth:+.1%})."]
    if len(full) > 1:
        lines += ["", *memory_analysis(small, large, alone[0] if alone else None)]
    if problems:
        lines += ["", "**Checks FAILED:** " + "; ".join(problems) + "."]
    return lines


def memory_analysis(small: MemoryRun, large: MemoryRun, alone: MemoryRun | None) -> list[str]:
    """Where the growth is: the step that raises the peak, and what it holds."""
    before = [_step_hwm(r, "write_filter_file") for r in (small, large)]
    after = [_step_hwm(r, "resolve_instances") for r in (small, large)]
    per_k = (after[1] - after[0]) / (large.instances - small.instances) * 1000
    text = (
        f"Where it grows: the steps before `resolve_instances` peak at {before[0]:.0f} and "
        f"{before[1]:.0f} MB (the cohort result and filter file hold one line per study); "
        f"`resolve_instances` raises the peak to {after[0]:.0f} and {after[1]:.0f} MB, "
        f"about {per_k:.2f} MB per 1,000 more instances, while what it hands back to Python "
        f"(the instances to release, {small.selected['to_release']:,} and "
        f"{large.selected['to_release']:,}) stays small. The memory is DuckDB's, working in "
        f"this process on `ledger.pending_instances`'s two queries: the cohort's instances "
        f"(the `DISTINCT` of the filter resolution, the newest-export window, the "
        f"`COUNT(DISTINCT source_uri)` of the cohort's size) and the ledger rows of the "
        f"cohort's own files only (the ledger is semi-joined to the cohort before its "
        f"window and `DISTINCT`")
    if alone is not None:
        held = _step_hwm(alone, "resolve_instances") - _step_hwm(alone, "write_filter_file")
        text += (f": {held:.0f} MB above the filter step with {alone.ledger_rows:,} ledger "
                 f"rows over a {alone.instances:,}-instance cohort, against "
                 f"{after[0] - before[0]:.0f} MB with {small.ledger_rows:,}")
    text += ("). \"In the warehouse\" keeps the planner flat on BigQuery, where those "
             "queries run elsewhere; on the embedded DuckDB the warehouse's working memory "
             "is the planner's, and it follows the standing cohort's size.")
    return [text]


def report(ctx: dict[str, Any], nights: NightsResult | None, memory: list[MemoryRun],
           memory_problems: list[str]) -> str:
    """The BENCHMARKS.md section, between its markers."""
    m = ctx["machine"]
    lines = [
        START_MARK,
        "## Nightly runs: what a night costs against what is new in it",
        "",
        f"Run {ctx['date']} by `benchmarks/bench_nightly.py` ({ctx['argv']}).",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, "
        f"{m['os']}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items()) + ".",
    ]
    if nights is not None:
        lines += nights_section(ctx, nights)
    if memory:
        lines += ["", "### Memory of the planning steps against the ledger's size", "",
                  f"A fresh DuckDB warehouse per size: `dicom_metadata` tiled from a real "
                  f"export of a one-patient corpus (all its columns), with synthetic "
                  f"identifiers ({STUDY_SIZE} instances a study, {SERIES_SIZE} a series); "
                  f"`deid_ledger` rows `released` under the project's current config and key "
                  f"for all of them but 1 % (one in {CHANGED_EVERY} has new content since, and "
                  f"a further two thirds of 1 % are new). In a child process per size: "
                  f"`deid_steps.run_cohort` (the project's cohort file: every study), "
                  f"`write_filter_file`, `resolve_instances`, `plan_run_shards`, as the DAG's "
                  f"tasks call them. Peak RSS: the child's own high-water mark (`VmHWM`, "
                  f"reset at exec; its `ru_maxrss` from `wait4`, spawned by fork, gave "
                  + ", ".join(f"{r.ru_maxrss_mb:.0f}" for r in memory) + " MB).",
                  "", *memory_lines(memory, memory_problems)]
    lines.append(END_MARK)
    return "\n".join(lines) + "\n"


def nights_section(ctx: dict[str, Any], result: NightsResult) -> list[str]:
    """How the nights ran, their tables, the goal and the checks."""
    landing, two = result.landing, result.two
    mix = ", ".join(f"{k} {v}" for k, v in sorted(landing.modalities.items(),
                                                  key=lambda x: -x[1]))
    day1, day2 = result.days
    return [
        f"- Landing zone: {landing.files} files, {landing.megabytes:.0f} MB; synthetic, "
        f"`dicom_deid.synth.generate(patients={landing.patients}, seed={landing.seed}, "
        f"small=False, bad_inputs=False)` without its images at risk of burned-in text, as "
        f"`bench_pipeline.py`'s. Modalities: {mix}. Night 1: every file modified in {day1} "
        f"(UTC). Night 2 ({day2}): {len(two.new)} new files (copies of files holding one "
        f"instance each, under new Study/Series/SOP Instance UIDs, written by pydicom) and "
        f"{len(two.changed)} changed ones (StudyDescription rewritten by pydicom), "
        f"{len(two.new) + len(two.changed)} in all.",
        f"- One fresh `AIRFLOW_HOME` (SQLite) and data folder for both nights (`db migrate` "
        f"and the `{KEY_CONN}` connection not timed); before night 1, both DAGs once over a "
        f"one-patient corpus, unmeasured. Each night: `airflow dags test {EXPORT_DAG} "
        f"<next day>T01:00:00+00:00` (the night's interval), then `airflow dags test "
        f"{DEID_DAG} <next day>T02:00:00+00:00 --conf` (project file `{PROJECT}.yaml`: "
        f"every study, the policy {json.dumps(POLICY)}; `max_shards` {ctx['shards']}, "
        f"`shard_max_files` {math.ceil(landing.files / ctx['shards'])} both nights), "
        f"`DICOM_DEID_WORKERS={ctx['workers']}`. Wall: each command timed from outside, "
        f"spawn to exit; fixed cost, gaps and task time from `task_instance` start and end "
        f"in the run's metadata DB; files processed: the export's `exported` and "
        f"`deid_runs.processed`.",
        "",
        *nights_table(result.nights),
        "",
        *goal_lines(result.nights),
        "",
        "Task by task (mapped tasks summed over their shards):",
        "",
        *task_table(result.nights),
        "",
        *busy_lines(result.nights),
        *check_lines(result),
    ]


BUSY_PCT = 25.0


def busy_lines(nights: list[Night]) -> list[str]:
    """A caution when other processes took a large share of the CPUs during a command."""
    worst = max(r.other_cpu_pct for n in nights for r in (n.export, n.deid))
    if worst <= BUSY_PCT:
        return []
    return [f"**Caution:** other processes used up to {worst:.0f} % of the CPUs during a timed "
            "command: the machine was busy, and the figures are slower than on a quiet one.",
            ""]


# -- driver -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--memory-child``: the planning steps, in the child)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help=f"synthetic patients (default {DEFAULT_PATIENTS}: >= {MIN_FILES} files)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes per shard (DICOM_DEID_WORKERS)")
    p.add_argument("--shards", type=int, default=2, help="max_shards of both nights")
    p.add_argument("--ledger-rows", default=",".join(map(str, LEDGER_SIZES)),
                   help="ledger sizes of the memory part, comma-separated, smallest first")
    p.add_argument("--part", choices=("all", "nights", "memory"), default="all")
    p.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    p.add_argument("--keep", action="store_true",
                   help="keep benchmarks/work/nightly/ (landing copy, runs, warehouses)")
    p.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.workers, args.patients, args.shards) < 1:
        p.error("--workers, --patients and --shards must be >= 1")
    args.sizes = sorted(int(s) for s in args.ledger_rows.split(","))
    if args.write and args.part != "all":
        p.error("--write needs --part all (the section holds both parts)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print the section (and write it with ``--write``); 1 if a check failed."""
    use_restricted_key()
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    locks = hold_locks()
    compile_engine()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "dags")], check=True)
    _, code = source_tree(None)
    corpus = pipeline_corpus(args.patients, args.seed)
    small = pipeline_corpus(WARMUP_PATIENTS, args.seed)
    if corpus.files < MIN_FILES:
        print(f"note: corpus has {corpus.files} files (< {MIN_FILES}, the issue's size)")
    PIPE.mkdir(parents=True, exist_ok=True)
    cohort = PIPE / "all_studies.sql"  # bench_pipeline.py's: its project file names it
    cohort.write_text(COHORT_SQL)
    nights = memory = None
    problems: list[str] = []
    if args.part in ("all", "nights"):
        print(f"nights: {corpus.files} landing files", flush=True)
        nights = run_nights(corpus, small, key_file(), cohort, args.workers, args.shards,
                            args.seed)
        problems += nights.problems
    if args.part in ("all", "memory"):
        print(f"memory: ledger sizes {args.sizes}", flush=True)
        memory = run_memory(args.sizes, small, cohort)
    memory_problems = check_memory(memory or [])
    problems += memory_problems
    ctx: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "versions": versions(code), "workers": args.workers,
        "shards": args.shards,
        "argv": "`" + " ".join(["bench_nightly.py", *(argv if argv is not None
                                                      else sys.argv[1:])]) + "`",
    }
    section = report(ctx, nights, memory or [], memory_problems)
    print()
    print(section)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = {"context": ctx, "problems": problems,
           "nights": asdict(nights) if nights else None,
           "memory": [asdict(r) for r in memory or []]}
    (WORK / f"nightly-results-{stamp}.json").write_text(
        json.dumps(raw, indent=1, default=str) + "\n")
    if args.write:
        write_markdown(section, START_MARK, END_MARK)
        print("wrote BENCHMARKS.md")
    if not args.keep:
        for name in ("landing", "run", "memory"):
            shutil.rmtree(NIGHTLY / name, ignore_errors=True)
    for fh in locks:
        fh.close()
    if problems:
        print("CHECKS FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
