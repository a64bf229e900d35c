"""The two Airflow DAGs against the same two steps on the command line, and where the DAG
time goes.

Issue 13 (item 6): an independent tester found ``airflow dags test`` of the metadata export
and de-identification DAGs about 5x slower than the same two steps on the ``dicom-deid``
command line; the goal is at most 2x. This script measures both over one synthetic corpus
(``dicom_deid.synth.generate``, full size, no bad inputs, cached under
``benchmarks/work/pipeline-corpus-p<N>-s<S>/``). Every landing file's modification time is
moved into yesterday's interval (UTC) before the runs, keeping the generator's order (its
re-sent duplicates are told apart by modification time), as ``make demo`` does with
``touch -d``.

Contenders; every command is one subprocess timed from outside (wall clock, spawn to exit):

``dag``
    a fresh ``AIRFLOW_HOME`` (SQLite) and data folder each round; ``airflow db migrate`` and
    the key as the ``dicom_deid_key`` connection are set-up, not timed; then
    ``airflow dags test dicom_metadata_export <today>T01:00Z`` (yesterday's interval) and
    ``airflow dags test dicom_deid__bench <today>T02:00Z --conf {...}``: the project file
    ``bench.yaml`` (written to ``$DICOM_DEID_PROJECTS_DIR``) names a cohort file that
    selects every study (``cohort_params`` covering all dates) and the policy file (the
    privacy-first default, as a file); the conf sets only
    ``max_shards``/``shard_max_files`` for ``--shards`` shards; and
    ``DICOM_DEID_WORKERS`` worker processes per shard. Per-task start and end times come
    from the run's metadata DB (``task_instance``).
``cli``
    ``dicom-deid export-metadata`` into a fresh DuckDB; ``dicom-deid cohort`` (the same file
    and params) writing a filter file; ``dicom-deid deidentify --filter --warehouse``
    (``--config`` the same policy file, mapping and errors written). ``export-metadata`` of the
    outputs into ``deid_metadata`` (what the DAG's ``load_deid_metadata`` does) is timed too,
    but left out of the ratio: the tester's two steps did not include it.

Before each contender's run (as ``bench_deidentify.py``): the earlier outputs deleted, the
disk synced, the page cache dropped (root; else a 61 s wait), one unmeasured run of the
contender over a one-patient corpus (its program files back in the page cache), then a
full read of the input. Contenders alternate (the order flips every round) for ``--repeat``
rounds; figures are medians. Both must de-identify the same files: the count, the output
paths and the output bytes are compared every round.

Usage: ``.venv/bin/python benchmarks/bench_pipeline.py [--patients N] [--seed S]
[--repeat R] [--workers W] [--shards K] [--rev COMMIT] [--write] [--keep]``. ``--rev``
measures a commit (``git archive`` of its ``plugins/`` and ``dags/``, put first on
``PYTHONPATH``) rather than the working tree: a before/after pair for a change (a commit
with project DAGs, ``dags/dicom_deid_projects.py``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from bench_deidentify import (
    Corpus,
    Measured,
    compile_engine,
    deid_bin,
    descendants,
    describe,
    forget_deleted_inodes,
    hold_lock,
    key_file,
    machine,
    measure,
    wait_for_quiet,
    warm,
    write_markdown,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
PIPE = WORK / "pipeline"
RUNS = PIPE / "runs"
LOGS = PIPE / "logs"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START_MARK = "<!-- bench:pipeline:start -->"
END_MARK = "<!-- bench:pipeline:end -->"

DAG, CLI = "dag", "cli"
CONTENDERS = (DAG, CLI)
PROJECT = "bench"
EXPORT_DAG, DEID_DAG = "dicom_metadata_export", f"dicom_deid__{PROJECT}"
KEY_CONN = "dicom_deid_key"
VAULT_CONN = "dicom_deid_vault_key"  # seals the mapping (issue 16); a fresh key per run


def use_restricted_key() -> None:
    """A fresh restricted key for the run's warehouse (its restricted file is encrypted),
    in this process's environment: every command started inherits it."""
    import secrets

    os.environ.setdefault("DICOM_DEID_RESTRICTED_KEY", secrets.token_hex(32))


def vault_key_hex() -> str:
    """A fresh vault key for the run's connection (what `dicom-deid keygen --vault` writes)."""
    import secrets

    return secrets.token_hex(32)
TARGET_RATIO = 2.0
MIN_FILES = 5000
DEFAULT_PATIENTS = 320
DEFAULT_SEED = 2026
WARMUP_PATIENTS = 1
ALL_DATES = {"start_date": "1900-01-01", "end_date": "2099-12-31"}
OPTIONS = ["CleanDescriptors", "CleanPixelData"]
POLICY = {"dicomDeid": {"ps315Options": OPTIONS}}
"""Both contenders' policy, one file: the DAG's project's ``policy.config``, the CLI's
--config (one file: one config fingerprint). It is the privacy-first default (the same
fingerprint as ``privacy_first()``): what both run without a choice."""


def policy_file(base: Path) -> Path:
    """The policy file both contenders read (one file: one config fingerprint); outside
    the rounds' folders, which each round makes and removes whole."""
    path = WORK / "pipeline-policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(POLICY))
    return path
COHORT_SQL = """\
-- Every study in dicom_metadata whose StudyDate is in [start_date, end_date] or missing:
-- with 1900-01-01..2099-12-31, the whole landing zone (written by bench_pipeline.py).
-- param start_date DATE
-- param end_date DATE
SELECT DISTINCT StudyInstanceUID
FROM dicom_metadata
WHERE StudyDate IS NULL OR StudyDate BETWEEN @start_date AND @end_date
"""
_SUMMARY_LINE = re.compile(r"processed (\d+), failed (\d+), skipped (\d+)")
_EXPORT_LINE = re.compile(
    r"exported (\d+)(?: \(\d+ late[^)]*\))?, unchanged (\d+), failed (\d+) in ([\d.]+) s")

_SHARD_LINE = re.compile(r"shard-\d+: processed (\d+), failed (\d+), skipped (\d+) in ([\d.]+) s")
STARTUP, BETWEEN, SHUTDOWN = "(start-up)", "(between tasks)", "(shut-down)"
PART_LABELS = {
    STARTUP: "start-up: process start to first task (imports, DAG parse, run created)",
    BETWEEN: "between tasks (scheduling, task set-up and tear-down)",
    SHUTDOWN: "shut-down: last task to process exit",
}


# -- corpus -------------------------------------------------------------------------------
def _generator_hash() -> str:
    import dicom_deid.synth

    sources = sorted(Path(dicom_deid.synth.__file__).parent.glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]


def pipeline_corpus(patients: int, seed: int) -> Corpus:
    """This benchmark's own synthetic corpus, generated once per (patients, seed, generator).

    Its own folder, because the runs rewrite its modification times; the generator's
    times are kept in ``mtimes.json`` so every run can map them into its own yesterday.
    """
    from dicom_deid.synth import generate

    root = WORK / f"pipeline-corpus-p{patients}-s{seed}-norisk"
    meta = root / "corpus.json"
    generator = _generator_hash()
    if meta.exists():
        data = json.loads(meta.read_text())
        if data.pop("generator", None) == generator:
            data["dicom_dir"], data["list_file"] = Path(data["dicom_dir"]), Path(data["list_file"])
            return Corpus(**data)
        print(f"the generator changed since {root.name} was generated: generating it again")
    if root.exists():
        shutil.rmtree(root)  # an interrupted or outdated generation
    print(f"generating corpus: {patients} patients, seed {seed} -> {root}", flush=True)
    started = time.perf_counter()
    key = generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    removed = _drop_images_at_risk(root / "dicom", key)
    print(f"  generated in {time.perf_counter() - started:.0f} s ({removed} images at risk "
          "of burned-in text left out)", flush=True)
    corpus = describe(root / "dicom", root / "files.txt", seed=seed, patients=patients)
    mtimes = {rel: (corpus.dicom_dir / rel).stat().st_mtime_ns for rel in corpus.rel_paths()}
    (root / "mtimes.json").write_text(json.dumps(mtimes) + "\n")
    data = asdict(corpus)
    data["dicom_dir"], data["list_file"] = str(corpus.dicom_dir), str(corpus.list_file)
    data["generator"] = generator
    meta.write_text(json.dumps(data, indent=1) + "\n")
    return corpus


def _drop_images_at_risk(dicom_dir: Path, key: Any) -> int:
    """Remove the images the privacy-first policy reads by OCR (ultrasound and the other
    text-prone modalities, secondary captures, anything with text drawn in): on them OCR
    takes most of the time of both contenders alike (0.2-0.4 s a frame, see "Burned-in
    text"), which would hide what the pipeline itself costs. The gate's share of OCR is
    measured by ``bench_gate.py``'s notes and BENCHMARKS.md's pixel sections."""
    from dicom_deid.pixels.clean import TEXT_PRONE_MODALITIES

    removed = 0
    for rec in key.files:
        if (rec.modality.upper() in TEXT_PRONE_MODALITIES or rec.burned_in
                or rec.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.7")):
            (dicom_dir / rec.path).unlink(missing_ok=True)
            removed += 1
    return removed


def arrive_on(corpus: Corpus, day: dt.date) -> None:
    """Set every file's modification time inside ``day`` (UTC), 01:00 to 23:00, in the
    generator's order: files the generator gave the same time get the same new time."""
    original: dict[str, int] = json.loads((corpus.dicom_dir.parent / "mtimes.json").read_text())
    distinct = sorted(set(original.values()))
    rank = {ns: i for i, ns in enumerate(distinct)}
    start = dt.datetime(day.year, day.month, day.day, 1, tzinfo=dt.UTC).timestamp()
    step = 22 * 3600 / max(1, len(distinct))
    for rel, ns in original.items():
        new = int((start + rank[ns] * step) * 1e9)
        os.utime(corpus.dicom_dir / rel, ns=(new, new))


# -- the two contenders' commands ---------------------------------------------------------
def airflow_bin() -> Path:
    path = Path(sys.executable).parent / "airflow"
    if not path.exists():
        raise SystemExit("airflow is not installed in this environment (pip install -e "
                         "'.[airflow]', as make install does)")
    return path


@dataclass(frozen=True)
class Plan:
    """One contender's commands over one landing folder, in its own base folder."""

    contender: str
    base: Path
    setup: list[list[str]]
    steps: list[tuple[str, list[str]]]
    """(step name, command), timed one by one."""


def _with_env(env: dict[str, str], cmd: list[str]) -> list[str]:
    """``cmd`` run through ``env`` (which execs it: the timed process is the command)."""
    return ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]


def code_env(src: Path) -> dict[str, str]:
    """Run the package and DAGs of ``src`` (a ``git archive`` of ``--rev``) instead of the
    editable install's working tree: PYTHONPATH comes before the install's path entry."""
    return {} if src == ROOT else {"PYTHONPATH": str(src / "plugins")}


def dag_env(base: Path, landing: Path, workers: int, src: Path, cohort: Path
            ) -> dict[str, str]:
    """What ``make demo`` sets (AIRFLOW_ENV), with a fresh home and data folder, and the
    benchmark's own project folder."""
    return {
        **code_env(src),
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(src / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DICOM_DEID_DATA_DIR": str(base / "data"),
        "DICOM_DEID_LANDING": str(landing),
        "DICOM_DEID_WORKERS": str(workers),
        "DICOM_DEID_PROJECTS_DIR": str(projects_dir(base, cohort)),
    }


def projects_dir(base: Path, cohort: Path) -> Path:
    """A project folder holding ``bench.yaml``: the cohort file over all dates, the policy
    file both contenders read, the key connection; triggered by hand (no schedule)."""
    folder = WORK / "pipeline-projects"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PROJECT}.yaml").write_text(json.dumps({  # JSON is YAML
        "name": PROJECT, "description": "bench_pipeline.py: every study of the corpus",
        "cohort": str(cohort), "cohort_params": ALL_DATES,
        "policy": {"config": str(policy_file(base))}, "key_conn_id": KEY_CONN,
        "schedule": None, "review": "none"}, indent=2) + "\n")
    return folder


def deid_conf(files: int, shards: int) -> dict[str, Any]:
    """The de-identification DAG's trigger params: ``shards`` shards (the cohort, its
    window and the policy are the project's: ``bench.yaml``)."""
    return {
        "priority": "routine",
        "shard_max_files": max(1, math.ceil(files / shards)),
        "max_shards": shards,
    }


def dag_plan(base: Path, corpus: Corpus, today: dt.date, key: Path, cohort: Path,
             workers: int, shards: int, src: Path) -> Plan:
    if not (src / "dags" / "dicom_deid_projects.py").exists():
        raise SystemExit(f"{src}: no project DAGs (dags/dicom_deid_projects.py): --rev "
                         "needs a commit with projects")
    env = dag_env(base, corpus.dicom_dir, workers, src, cohort)
    airflow = str(airflow_bin())
    conf = json.dumps(deid_conf(corpus.files, shards))
    return Plan(DAG, base, setup=[
        _with_env(env, [airflow, "db", "migrate"]),
        _with_env(env, [airflow, "connections", "add", KEY_CONN, "--conn-type", "generic",
                        "--conn-password", key.read_text().strip()]),
        _with_env(env, [airflow, "connections", "add", VAULT_CONN, "--conn-type", "generic",
                        "--conn-password", vault_key_hex()]),
    ], steps=[
        ("export", _with_env(env, [airflow, "dags", "test", EXPORT_DAG,
                                   f"{today.isoformat()}T01:00:00+00:00"])),
        ("deidentify", _with_env(env, [airflow, "dags", "test", DEID_DAG,
                                       f"{today.isoformat()}T02:00:00+00:00", "--conf", conf])),
    ])


def cli_plan(base: Path, corpus: Corpus, key: Path, cohort: Path, workers: int,
             src: Path) -> Plan:
    dd = str(deid_bin())
    warehouse = f"duckdb://{base / 'warehouse' / 'dicom_deid.duckdb'}"
    w = ["--workers", str(workers)]
    params = [a for k, v in ALL_DATES.items() for a in ("--param", f"{k}={v}")]
    options = ["--config", str(policy_file(base))]
    steps = [
        ("export", [dd, "export-metadata", str(corpus.dicom_dir), "--out",
                    str(base / "metadata" / "dicom_metadata"), "--warehouse", warehouse, *w]),
        ("cohort", [dd, "cohort", str(cohort), *params, "--out", str(base / "cohort.filter"),
                    "--warehouse", warehouse]),
        ("deidentify", [dd, "deidentify", str(corpus.dicom_dir), str(base / "deid"),
                        "--key-file", str(key), *options, "--filter",
                        str(base / "cohort.filter"), "--warehouse", warehouse, *w,
                        "--verify", "--no-progress", "--errors", str(base / "errors.csv"),
                        "--mapping", str(base / "mapping.parquet"), "--plain-mapping"]),
        ("load-back", [dd, "export-metadata", str(base / "deid"), "--table", "deid_metadata",
                       "--out", str(base / "metadata" / "deid_metadata"),
                       "--warehouse", warehouse, *w]),
    ]
    return Plan(CLI, base, setup=[], steps=[(name, _with_env(code_env(src), cmd))
                                            for name, cmd in steps])


# -- what a run did -----------------------------------------------------------------------
@dataclass
class TaskTime:
    """One task instance of a DAG run, from the metadata DB."""

    dag_id: str
    task_id: str
    map_index: int
    state: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _epoch(value: str) -> float:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # Airflow stores UTC
    return moment.timestamp()


def task_times(db: Path) -> tuple[list[TaskTime], dict[str, str]]:
    """Every task instance with its start and end, and each DAG run's final state."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT dag_id, task_id, map_index, state, start_date, end_date "
                           "FROM task_instance").fetchall()
        runs = dict(con.execute("SELECT dag_id, state FROM dag_run").fetchall())
    finally:
        con.close()
    tasks = [TaskTime(d, t, m, s or "none", _epoch(a), _epoch(b))
             for d, t, m, s, a, b in rows if a and b]
    return tasks, {str(k): str(v) for k, v in runs.items()}


def breakdown(tasks: list[TaskTime], spawned: float, wall: float) -> dict[str, float]:
    """Seconds per task id (mapped instances summed) plus start-up, between and shut-down."""
    if not tasks:
        return {STARTUP: wall}
    first = min(t.start for t in tasks)
    last = max(t.end for t in tasks)
    parts: dict[str, float] = {STARTUP: first - spawned}
    for t in sorted(tasks, key=lambda t: (t.start, t.map_index)):
        parts[t.task_id] = parts.get(t.task_id, 0.0) + t.seconds
    parts[BETWEEN] = (last - first) - sum(t.seconds for t in tasks)
    parts[SHUTDOWN] = spawned + wall - last
    return parts


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every ``.dcm`` file under ``root``, by path relative to it."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*.dcm")):
        with open(path, "rb") as fh:
            out[path.relative_to(root).as_posix()] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def query(warehouse: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of ``sql`` on a DuckDB warehouse, read only, its restricted file attached (None
    when the file or table is missing)."""
    import duckdb

    from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

    if not warehouse.exists():
        return None
    try:
        wh = DuckDBWarehouse(warehouse, read_only=True)
        with wh:
            return list(wh.connection.execute(sql).fetchall())
    except duckdb.Error:
        return None


def table_rows(warehouse: Path, table: str) -> int | None:
    """Rows in ``table`` of a DuckDB file (None when the file or table is missing)."""
    found = query(warehouse, f"SELECT count(*) FROM {table}")
    return int(found[0][0]) if found else None


@dataclass
class StepRun:
    """One timed command."""

    step: str
    wall: float
    cpu_seconds: float
    peak_tree_mb: float
    other_cpu_pct: float
    returncode: int
    parts: dict[str, float] = field(default_factory=dict)
    """DAG steps: seconds per task id and outside tasks (see :func:`breakdown`), in the
    order the tasks started."""
    instances: dict[str, int] = field(default_factory=dict)
    """DAG steps: task instances per task id (mapped tasks: one per shard)."""


@dataclass
class RoundRun:
    """One contender's run in one round, with what it produced."""

    contender: str
    round: int
    steps: list[StepRun]
    processed: int = 0
    failed: int = 0
    exported_rows: int | None = None
    shards: int = 0
    engine_seconds: float = 0.0
    """DAG: seconds inside run_batch, summed over shards (from the shard results)."""
    export_seconds: float = 0.0
    """Seconds inside export_metadata (its own summary line)."""
    not_written: dict[str, int] = field(default_factory=dict)
    """Inputs without an output, by kind (``duplicate``: the newest copy was kept)."""
    dag_states: dict[str, str] = field(default_factory=dict)
    failed_tasks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict, repr=False)
    """Relative path -> SHA-256 of every de-identified file (not written to the JSON)."""

    def wall(self, *names: str) -> float:
        return sum(s.wall for s in self.steps if s.step in names)


class CpuSampler(threading.Thread):
    """CPU seconds of every process below this one, as last seen in ``/proc`` every 50 ms.

    ``wait4``'s rusage misses processes nobody waits for: the ``forkserver`` the pipeline
    steps start (and the workers it forks and reaps) exits with its parent, unreaped, so
    its CPU time would show up as other load. Processes are keyed by (pid, start time).
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[tuple[int, int], float] = {}
        self._stop_event = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        me = os.getpid()
        while not self._stop_event.is_set():
            for pid in descendants(me):
                if pid == me:
                    continue
                try:
                    with open(f"/proc/{pid}/stat", "rb") as fh:
                        fields = fh.read().rsplit(b")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                # after the ")": state is field 3, utime 14, stime 15, starttime 22
                self.seen[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) \
                    / self._tick
            self._stop_event.wait(0.05)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return sum(self.seen.values())


def timed(cmd: list[str], log_stem: Path) -> tuple[Measured, float]:
    """``measure`` the command, with the CPU seconds of its tree sampled from ``/proc``."""
    sampler = CpuSampler()
    sampler.start()
    m = measure(cmd, log_stem)
    return m, sampler.stop()


def _step_run(step: str, m: Measured, sampled_cpu: float) -> StepRun:
    """The figures of one command; CPU: the larger of rusage and the /proc samples, and the
    other load corrected by the difference."""
    cpu = max(m.cpu_seconds, sampled_cpu)
    span = m.wall * len(os.sched_getaffinity(0))
    other = max(0.0, m.other_cpu_share - (cpu - m.cpu_seconds) / span) if span else 0.0
    return StepRun(step, m.wall, cpu, m.peak_tree_rss / 1e6, 100 * other, m.returncode)


def _tail(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1][:200]


Measurement = tuple[str, Measured | None, float, float]
"""(step, what ``measure`` saw, spawn epoch, CPU seconds sampled from /proc)."""


def run_steps(plan: Plan, rnd: int, timed_run: bool) -> list[Measurement]:
    """Run the plan's set-up (untimed) and steps; (step, measurement, spawn epoch) each."""
    LOGS.mkdir(parents=True, exist_ok=True)
    tag = f"{plan.contender}-r{rnd}" if timed_run else f"{plan.contender}-warmup"
    for i, cmd in enumerate(plan.setup):
        done = subprocess.run(cmd, capture_output=True, text=True)
        (LOGS / f"{tag}-setup{i}.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise SystemExit(f"{plan.contender} set-up command {i} failed (log: "
                             f"{LOGS / f'{tag}-setup{i}.log'})")
    out: list[Measurement] = []
    for step, cmd in plan.steps:
        if not timed_run:
            done = subprocess.run(cmd, capture_output=True, text=True)
            (LOGS / f"{tag}-{step}.log").write_text(done.stdout + done.stderr)
            if done.returncode:
                print(f"    warm-up {step} exited {done.returncode}: {_tail(done.stderr)}")
            out.append((step, None, 0.0, 0.0))
            continue
        wait_for_quiet()
        spawned = time.time()
        m, cpu = timed(cmd, LOGS / f"{tag}-{step}")
        out.append((step, m, spawned, cpu))
        print(f"    {plan.contender} {step:<10} {m.wall:7.2f} s  exit {m.returncode}", flush=True)
    return out


def collect_dag(plan: Plan, rnd: int, measured: list[Measurement]) -> RoundRun:
    """A DAG round's timings, per-task breakdown and outputs."""
    tasks, states = task_times(plan.base / "airflow" / "airflow.db")
    steps = []
    for step, m, spawned, cpu in measured:
        assert m is not None
        s = _step_run(step, m, cpu)
        dag_id = EXPORT_DAG if step == "export" else DEID_DAG
        mine = [t for t in tasks if t.dag_id == dag_id]
        s.parts = breakdown(mine, spawned, m.wall)
        for t in mine:
            s.instances[t.task_id] = s.instances.get(t.task_id, 0) + 1
        steps.append(s)
        if m.returncode:
            log = (LOGS / f"dag-r{rnd}-{step}").with_suffix(".out")
            print(f"    {dag_id} exited {m.returncode}; log {log}", flush=True)
    run = RoundRun(DAG, rnd, steps, dag_states=states)
    export_log = next((m.stdout for step, m, _, _ in measured if m and step == "export"), "")
    if found := _EXPORT_LINE.search(export_log):
        run.export_seconds = float(found.group(4))
    run.failed_tasks = sorted(f"{t.task_id}[{t.map_index}]: {t.state}" for t in tasks
                              if t.state not in ("success", "skipped"))
    data = plan.base / "data"
    run.exported_rows = table_rows(data / "warehouse" / "dicom_deid.duckdb", "dicom_metadata")
    run.shards = next((s.instances.get("deidentify_shard", 0) for s in steps
                       if s.step == "deidentify"), 0)
    _shard_results(run, data, next((m.stdout for step, m, _, _ in measured
                                    if m and step == "deidentify"), ""))
    tree = data / "deid" / PROJECT  # the project's research tree: a link to its release
    if tree.is_symlink():
        run.outputs = digests(tree.resolve())
    else:
        run.problems.append(f"no released tree at {tree}")
    for dag_id in (EXPORT_DAG, DEID_DAG):
        if states.get(dag_id) != "success":
            run.problems.append(f"{dag_id} run state: {states.get(dag_id, 'no run')}")
    return run


def _shard_results(run: RoundRun, data: Path, log: str) -> None:
    """What the de-identification run did: counts from the warehouse's ``deid_runs`` and
    ``deid_errors`` (the run's own record), seconds inside ``run_batch`` from the shard
    result files when the run keeps them, else from the shards' log lines."""
    warehouse = data / "warehouse" / "dicom_deid.duckdb"
    totals = query(warehouse, "SELECT sum(processed), sum(failed) + sum(skipped) "
                              "FROM deid_runs")
    if totals and totals[0][0] is not None:
        run.processed, run.failed = int(totals[0][0]), int(totals[0][1] or 0)
    else:
        run.problems.append("no row in deid_runs")
    kinds = query(warehouse, "SELECT kind, count(*) FROM deid_errors GROUP BY kind") or []
    run.not_written = {str(k): int(n) for k, n in kinds}
    if sum(run.not_written.values()) != run.failed:
        run.problems.append(f"deid_errors lists {sum(run.not_written.values())} input(s), "
                            f"deid_runs counts {run.failed} failed or skipped")
    batches = [p for p in (data / "runs").glob("batch-*") if p.is_dir()]
    seconds = [json.loads(p.read_text())["seconds"] for b in batches
               for p in sorted((b / "deidentified").glob("shard-*.json"))]
    if not seconds:
        seconds = [float(found[3]) for found in _SHARD_LINE.findall(log)]
    run.engine_seconds = sum(seconds)


def collect_cli(plan: Plan, rnd: int, measured: list[Measurement]) -> RoundRun:
    """A CLI round's timings and outputs."""
    steps: list[StepRun] = []
    run = RoundRun(CLI, rnd, steps)
    for step, m, _, cpu in measured:
        assert m is not None
        steps.append(_step_run(step, m, cpu))
        if m.returncode not in (0, 3):  # 3: some inputs failed (counted below)
            run.problems.append(f"{step} exited {m.returncode}: {_tail(m.stderr)}")
        if step == "deidentify":
            found = _SUMMARY_LINE.search(m.stdout)
            if found:
                run.processed = int(found.group(1))
                run.failed = int(found.group(2)) + int(found.group(3))
        if step == "export" and (found := _EXPORT_LINE.search(m.stdout)):
            run.export_seconds = float(found.group(4))
            if int(found.group(3)):
                run.problems.append(f"export-metadata failed on {found.group(3)} file(s)")
    errors = plan.base / "errors.csv"
    if errors.exists():
        with open(errors, newline="") as fh:
            for row in csv.DictReader(fh):
                run.not_written[row["kind"]] = run.not_written.get(row["kind"], 0) + 1
    run.exported_rows = table_rows(plan.base / "warehouse" / "dicom_deid.duckdb",
                                   "dicom_metadata")
    run.outputs = digests(plan.base / "deid")
    return run


# -- one round ----------------------------------------------------------------------------
def clear_earlier() -> bool:
    """Delete earlier runs and warm-ups, sync, and make the deletion cost the next run
    nothing (see ``bench_deidentify.forget_deleted_inodes``); True if the cache was dropped."""
    for old in (*RUNS.glob("*"), *PIPE.glob("warmup-*")):
        shutil.rmtree(old)
    os.sync()
    return forget_deleted_inodes(time.monotonic())


@dataclass
class Setting:
    """What every round shares."""

    corpus: Corpus
    small: Corpus
    today: dt.date
    key: Path
    cohort: Path
    workers: int
    shards: int
    src: Path
    """The source tree whose package and DAGs run (this checkout, or ``--rev``'s archive)."""

    def plan(self, contender: str, base: Path, corpus: Corpus) -> Plan:
        if contender == DAG:
            return dag_plan(base, corpus, self.today, self.key, self.cohort, self.workers,
                            self.shards, self.src)
        return cli_plan(base, corpus, self.key, self.cohort, self.workers, self.src)


def run_contender(contender: str, rnd: int, s: Setting) -> tuple[RoundRun, bool]:
    """Clear, warm up, set up and run one contender once; its round and whether the page
    cache was dropped."""
    dropped = clear_earlier()
    run_steps(s.plan(contender, PIPE / f"warmup-{contender}", s.small), rnd, timed_run=False)
    plan = s.plan(contender, RUNS / f"r{rnd}-{contender}", s.corpus)
    plan.base.mkdir(parents=True)
    warm(s.corpus)
    measured = run_steps(plan, rnd, timed_run=True)
    collect = collect_dag if contender == DAG else collect_cli
    return collect(plan, rnd, measured), dropped


def compare(dag: RoundRun, cli: RoundRun) -> list[str]:
    """Differences between the two contenders' results in one round (empty: the same)."""
    out = []
    if dag.exported_rows != cli.exported_rows:
        out.append(f"dicom_metadata rows: DAG {dag.exported_rows}, CLI {cli.exported_rows}")
    if len(dag.outputs) != len(cli.outputs):
        out.append(f"de-identified files: DAG {len(dag.outputs)}, CLI {len(cli.outputs)}")
    if set(dag.outputs) != set(cli.outputs):
        only = len(set(dag.outputs) ^ set(cli.outputs))
        out.append(f"{only} output path(s) written by only one of them")
    differ = sum(1 for p in set(dag.outputs) & set(cli.outputs) if dag.outputs[p] != cli.outputs[p])
    if differ:
        out.append(f"{differ} output file(s) differ in content")
    return out


# -- report -------------------------------------------------------------------------------
def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else 0.0


def step_table(dags: list[RoundRun], clis: list[RoundRun]) -> list[str]:
    rows = [
        ("metadata export", ("export",), ("export",),
         "`dicom_metadata_export` / `export-metadata`"),
        ("de-identification", ("deidentify",), ("cohort", "deidentify"),
         "`dicom_deid__bench` / `cohort` + `deidentify --filter --verify`"),
        ("total", ("export", "deidentify"), ("export", "cohort", "deidentify"), "both steps"),
    ]
    lines = ["| step | what runs (DAG / CLI) | DAG wall s (median; min–max) "
             "| CLI wall s (median; min–max) | DAG ÷ CLI | DAG CPU s | CLI CPU s "
             "| other load % (DAG / CLI) |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for name, dag_steps, cli_steps, what in rows:
        d = [r.wall(*dag_steps) for r in dags]
        c = [r.wall(*cli_steps) for r in clis]
        d_cpu = _median(sum(s.cpu_seconds for s in r.steps if s.step in dag_steps) for r in dags)
        c_cpu = _median(sum(s.cpu_seconds for s in r.steps if s.step in cli_steps)
                        for r in clis)
        d_other = _median(s.other_cpu_pct for r in dags for s in r.steps if s.step in dag_steps)
        c_other = _median(s.other_cpu_pct for r in clis for s in r.steps if s.step in cli_steps)
        ratio = statistics.median(d) / statistics.median(c)
        bold = "**" if name == "total" else ""
        lines.append(f"| {bold}{name}{bold} | {what} | {_spread(d)} | {_spread(c)} "
                     f"| {bold}{ratio:.2f}x{bold} | {d_cpu:.1f} | {c_cpu:.1f} "
                     f"| {d_other:.0f} / {c_other:.0f} |")
    return lines


def task_table(dags: list[RoundRun]) -> list[str]:
    lines = ["| DAG | part | task instances | s (median) | share of the DAG's wall |",
             "|---|---|--:|--:|--:|"]
    for step, dag_id in (("export", EXPORT_DAG), ("deidentify", DEID_DAG)):
        runs = [s for r in dags for s in r.steps if s.step == step]
        wall = _median(s.wall for s in runs)
        tasks: list[str] = []  # in the order they started, first round first
        for s in runs:
            tasks += [k for k in s.parts if k not in PART_LABELS and k not in tasks]
        for part in (STARTUP, *tasks, BETWEEN, SHUTDOWN):
            if not any(part in s.parts for s in runs):
                continue
            secs = _median(s.parts.get(part, 0.0) for s in runs)
            label = PART_LABELS.get(part, f"`{part}`")
            n = "" if part in PART_LABELS else str(max(s.instances.get(part, 0) for s in runs))
            lines.append(f"| `{dag_id}` | {label} | {n} | {secs:.2f} "
                         f"| {100 * secs / wall if wall else 0:.0f} % |")
        lines.append(f"| `{dag_id}` | **whole `airflow dags test`** | | **{wall:.2f}** "
                     "| 100 % |")
    return lines


def cli_table(clis: list[RoundRun]) -> list[str]:
    labels = {
        "export": "`export-metadata LANDING --warehouse W`",
        "cohort": "`cohort all_studies.sql --param ... --out F --warehouse W`",
        "deidentify": "`deidentify LANDING OUT --filter F --warehouse W --config "
                      "policy.json --verify --mapping --errors`",
        "load-back": "`export-metadata OUT --table deid_metadata` (the DAG's "
                     "`load_deid_metadata`; not in the ratio)",
    }
    lines = ["| CLI command | wall s (median; min–max) | CPU s | peak RSS MB (tree) |",
             "|---|--:|--:|--:|"]
    for step, label in labels.items():
        runs = [s for r in clis for s in r.steps if s.step == step]
        if runs:
            lines.append(f"| {label} | {_spread([s.wall for s in runs])} "
                         f"| {_median(s.cpu_seconds for s in runs):.1f} "
                         f"| {_median(s.peak_tree_mb for s in runs):.0f} |")
    return lines


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def real_failures(run: RoundRun) -> list[str]:
    """Inputs left out for a reason other than being an older copy of a re-sent instance."""
    return [f"{n} input(s) not de-identified ({kind})" for kind, n in
            sorted(run.not_written.items()) if kind != "duplicate"]


def outcome_lines(dags: list[RoundRun], clis: list[RoundRun], diffs: list[list[str]],
                  corpus: Corpus) -> list[str]:
    d, c = dags[0], clis[0]
    same = not any(diffs)
    lines = [
        f"- Inputs: {corpus.files} landing files. Rows in `dicom_metadata`: DAG "
        f"{d.exported_rows}, CLI {c.exported_rows}. De-identified files: DAG "
        f"{len(d.outputs)} published ({d.processed} processed), CLI {len(c.outputs)} written "
        f"({c.processed} processed). Inputs without an output: DAG {_kinds(d.not_written)}; "
        f"CLI {_kinds(c.not_written)} (`duplicate`: the corpus re-sends some instances under "
        "a second file name, and the newest copy is kept; the CLI then exits 3).",
        "- Same result: " + ("**yes**, every round: the same number of de-identified files, "
                             "the same output paths and byte-identical files."
                             if same else "**NO**: " + "; ".join(
                                 f"round {i + 1}: {', '.join(x)}" for i, x in enumerate(diffs)
                                 if x)),
    ]
    problems = [f"round {r.round + 1} {r.contender}: {p}" for r in (*dags, *clis)
                for p in (*r.problems, *real_failures(r))]
    problems += [f"round {r.round + 1} DAG task {t}" for r in dags for t in r.failed_tasks]
    lines.append("- Failures: " + ("; ".join(problems) if problems else
                                   "none (every DAG run and task succeeded; no command failed "
                                   "and no input was left out for another reason)."))
    return lines


BUSY_PCT = 25.0


def busy_warning(dags: list[RoundRun], clis: list[RoundRun]) -> list[str]:
    """A caution when other processes took a large share of the CPUs during the runs."""
    worst = max((s.other_cpu_pct for r in (*dags, *clis) for s in r.steps), default=0.0)
    if worst <= BUSY_PCT:
        return []
    return ["", f"**Caution:** other processes used up to {worst:.0f} % of the CPUs during "
            "a timed command (see the other load column): both contenders ran slower than "
            "on a quiet machine, by amounts that need not be equal."]


def report(ctx: dict[str, Any], dags: list[RoundRun], clis: list[RoundRun],
           diffs: list[list[str]]) -> str:
    corpus: Corpus = ctx["corpus"]
    m = ctx["machine"]
    mix = ", ".join(f"{k} {v}" for k, v in sorted(corpus.modalities.items(),
                                                  key=lambda x: -x[1]))
    total_d = statistics.median(r.wall("export", "deidentify") for r in dags)
    total_c = statistics.median(r.wall("export", "cohort", "deidentify") for r in clis)
    ratio = total_d / total_c
    met = "MET" if ratio <= TARGET_RATIO else "NOT MET"
    engine = _median(r.engine_seconds for r in dags)
    export_engine = _median(r.export_seconds for r in dags)
    cli_export = _median(r.export_seconds for r in clis)
    export_task = _median(s.parts.get("export_landing", 0.0) for r in dags for s in r.steps
                          if s.step == "export")
    shard_task = _median(s.parts.get("deidentify_shard", 0.0) for r in dags for s in r.steps
                         if s.step == "deidentify")
    lines = [
        START_MARK,
        "## The DAGs against the command line (`airflow dags test` vs `dicom-deid`)",
        "",
        f"Run {ctx['date']} by `benchmarks/bench_pipeline.py` (`--repeat {ctx['repeat']} "
        f"--workers {ctx['workers']} --shards {ctx['shards']}"
        + (f" --rev {ctx['rev']}" if ctx["rev"] else "") + "`).",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, "
        f"{m['os']}.",
        f"- Corpus: {corpus.files} files, {corpus.megabytes:.0f} MB; synthetic, "
        f"`dicom_deid.synth.generate(patients={corpus.patients}, seed={corpus.seed}, "
        f"small=False, bad_inputs=False)` without its images at risk of burned-in text "
        f"(US, secondary captures, anything with text drawn in: OCR would dominate both "
        f"contenders alike). Modalities: {mix}. Every file's modification time "
        f"moved into {ctx['yesterday']} (UTC), in the generator's order.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items()) + ".",
        f"- DAG: a fresh `AIRFLOW_HOME` (SQLite) and data folder each round (`db migrate` and "
        f"the `{KEY_CONN}` connection not timed); `airflow dags test {EXPORT_DAG} "
        f"{ctx['today']}T01:00:00+00:00`, then `airflow dags test {DEID_DAG} "
        f"{ctx['today']}T02:00:00+00:00 --conf`; its project file `{PROJECT}.yaml` names a "
        f"cohort file selecting every study (`cohort_params` {json.dumps(ALL_DATES)}) and "
        f"the policy file {json.dumps(POLICY)} (`policy.config`); the conf sets "
        f"`max_shards` {ctx['shards']} and `shard_max_files` "
        f"{math.ceil(corpus.files / ctx['shards'])} ({dags[0].shards} shards planned), "
        f"`DICOM_DEID_WORKERS={ctx['workers']}` (per shard; `dags test` runs tasks one at a "
        "time). Per-task times: `task_instance` start and end in the run's metadata DB.",
        f"- CLI: `export-metadata` into a fresh DuckDB, then **with a filter file**: `cohort` "
        f"(the same cohort file and params) and `deidentify --filter --warehouse --verify` "
        f"(`--workers {ctx['workers']}`, `--config` the same policy file, mapping and errors "
        "written; `--verify` runs the same verification gate in its workers as the DAG's "
        "shards do, so both do the same work); the de-identification step is the sum of "
        "the two commands.",
        f"- Each command is one subprocess timed from outside (spawn to exit); figures are "
        f"medians of {ctx['repeat']} round(s), contenders alternating (order flipped each "
        "round). Before each contender: earlier outputs deleted, disk synced, "
        + ("page cache dropped, " if ctx["cache_dropped"] else "61 s waited, ")
        + "one unmeasured run over a one-patient corpus (program files cached), a full read "
        "of the input; each command waits (up to 60 s) for other load below 25 % of the CPUs. "
        "CPU s: user + system seconds of the command's whole process tree (rusage, or the "
        "`/proc` samples when larger: the pipeline's `forkserver` is never reaped); other "
        "load: CPU used by anything else during the command, as a share of all cores.",
        "",
        *step_table(dags, clis),
        "",
        f"**Target (DAG total <= {TARGET_RATIO:g}x the CLI): {met}** — {total_d:.1f} s "
        f"against {total_c:.1f} s, {ratio:.2f}x.",
        *busy_warning(dags, clis),
        "",
        "Where the DAG time goes (medians; mapped tasks summed over their shards; start-up and "
        "shut-down are the process's wall time outside any task):",
        "",
        *task_table(dags),
        "",
        f"Inside the tasks: `export_metadata` took {export_engine:.2f} s of `export_landing`'s "
        f"{export_task:.2f} s (its own summary line; {cli_export:.2f} s inside the CLI's "
        f"`export-metadata`), and `run_batch` {engine:.2f} s of the {shard_task:.2f} s of "
        "`deidentify_shard` (`run_batch`'s own summary, summed over shards).",
        "",
        "The command line, command by command:",
        "",
        *cli_table(clis),
        "",
        *outcome_lines(dags, clis, diffs, corpus),
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


# -- driver -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help=f"synthetic patients (default {DEFAULT_PATIENTS}: >= {MIN_FILES} files)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians reported")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes (CLI --workers, DAG DICOM_DEID_WORKERS)")
    p.add_argument("--shards", type=int, default=2,
                   help="shards the DAG cuts the cohort into (max_shards)")
    p.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    p.add_argument("--rev", default=None, metavar="COMMIT",
                   help="measure this commit's package and DAGs (git archive) instead of "
                        "the working tree")
    p.add_argument("--keep", action="store_true",
                   help="keep the last round's folders under benchmarks/work/pipeline/runs")
    args = p.parse_args(argv)
    if min(args.repeat, args.workers, args.patients, args.shards) < 1:
        p.error("--repeat, --workers, --patients and --shards must be >= 1")
    return args


def hold_locks() -> list[IO[str]]:
    """This benchmark and bench_deidentify.py share the CPUs, the page cache and key: one at
    a time."""
    return [hold_lock("bench_pipeline"), hold_lock("bench_deidentify")]


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def source_tree(rev: str | None) -> tuple[Path, str]:
    """The tree whose package and DAGs the contenders run, and how the report names it.

    Without ``rev``: this checkout as it is (with whatever is uncommitted). With ``rev``: the
    files of that commit, written once by ``git archive`` under ``work/``, so a run measures
    a commit even while the working tree is being edited.
    """
    if not rev:
        dirty = _git("status", "--porcelain", "--", "plugins", "dags", "pyproject.toml")
        return ROOT, f"the working tree at commit {_git('rev-parse', '--short', 'HEAD')}" + (
            " with uncommitted changes" if dirty else "")
    sha = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    if not sha:
        raise SystemExit(f"--rev {rev}: not a commit of {ROOT}")
    dest = WORK / f"pipeline-src-{sha}"
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "plugins", "dags"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest)], check=True)
        (dest / ".complete").touch()
    found = subprocess.run(
        _with_env(code_env(dest), [sys.executable, "-c",
                                   "import dicom_deid; print(dicom_deid.__file__)"]),
        capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(str(dest)):
        raise SystemExit(f"PYTHONPATH did not take the package from {dest} but {found}")
    return dest, f"commit {sha} (`--rev {rev}`: its `plugins/` and `dags/` from `git archive`)"


def versions(code: str) -> dict[str, str]:
    import dicom_deid

    out = {"dicom-deid": f"{dicom_deid.__version__} ({code})"}
    for dist in ("apache-airflow", "duckdb", "pyarrow", "pydicom"):
        out[dist] = metadata.version(dist)
    return out


def main(argv: list[str] | None = None) -> int:
    use_restricted_key()
    args = parse_args(argv)
    locks = hold_locks()
    compile_engine()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "dags")], check=True)
    src, code = source_tree(args.rev)
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    corpus = pipeline_corpus(args.patients, args.seed)
    small = pipeline_corpus(WARMUP_PATIENTS, args.seed)
    for c in (corpus, small):
        arrive_on(c, yesterday)
    if corpus.files < MIN_FILES:
        print(f"note: corpus has {corpus.files} files (< {MIN_FILES}, the issue's size)")
    PIPE.mkdir(parents=True, exist_ok=True)
    cohort = PIPE / "all_studies.sql"
    cohort.write_text(COHORT_SQL)
    setting = Setting(corpus, small, today, key_file(), cohort, args.workers, args.shards,
                      src)
    print(f"corpus: {corpus.files} files, {corpus.megabytes:.0f} MB", flush=True)
    results: dict[str, list[RoundRun]] = {DAG: [], CLI: []}
    diffs: list[list[str]] = []
    dropped = True
    for rnd in range(args.repeat):
        order = CONTENDERS if rnd % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            print(f"  round {rnd + 1}/{args.repeat}: {contender}", flush=True)
            run, was_dropped = run_contender(contender, rnd, setting)
            dropped = dropped and was_dropped
            results[contender].append(run)
        diffs.append(compare(results[DAG][-1], results[CLI][-1]))
        for line in diffs[-1]:
            print(f"  round {rnd + 1} differs: {line}", flush=True)
    if not args.keep:
        shutil.rmtree(RUNS, ignore_errors=True)
    ctx: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "versions": versions(code), "rev": args.rev, "corpus": corpus,
        "repeat": args.repeat, "workers": args.workers, "shards": args.shards,
        "today": today.isoformat(), "yesterday": yesterday.isoformat(),
        "cache_dropped": dropped,
    }
    section = report(ctx, results[DAG], results[CLI], diffs)
    print()
    print(section)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = {"context": {**ctx, "corpus": asdict(corpus)}, "differences": diffs,
           "runs": [{k: v for k, v in asdict(r).items() if k != "outputs"}
                    for r in (*results[DAG], *results[CLI])]}
    (WORK / f"pipeline-results-{stamp}.json").write_text(
        json.dumps(raw, indent=1, default=str) + "\n")
    if args.write:
        write_markdown(section, START_MARK, END_MARK)
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    for fh in locks:
        fh.close()
    ok = not any(diffs) and not any(r.problems or r.failed_tasks or real_failures(r)
                                    for r in (*results[DAG], *results[CLI]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
