"""Throughput and peak memory of ``dicom-deid deidentify`` against its peers, in one run.

Contenders, each run over the same synthetic corpus with the same number of worker
processes, writing to ``benchmarks/work/out-<name>/``. Before every run: every contender's
output deleted, the disk synced and the page cache dropped (root; else a 61 s wait, see
``forget_deleted_inodes``), one unmeasured warm-up run of the contender over a one-patient
corpus (its program files cached), and a full read of the input (its page cache warm):

``dicom-deid``
    the real command line as a subprocess:
    ``dicom-deid deidentify IN OUT --profile basic --key-file K --workers W --no-progress
    --errors E --mapping M`` (its own walk of IN, Basic Profile and the residual sweep,
    mapping written; the peers do no pixel work, so neither does this run: the CLI's
    privacy-first default also cleans burned-in text, measured by bench_pixels.py).
``pydicom``, ``dicognito``, ``dcmanon``
    ``benchmarks/peer_runner.py`` in the separate virtualenv ``benchmarks/.venv-peers``
    (made by ``setup_peers.sh`` when missing), a ``multiprocessing`` pool of W workers over
    the same file list.

Every contender is one subprocess timed from outside (wall clock from spawn to exit). Peak
RSS is the peak over the run of the RSS *summed over the process tree* (parent and
workers), sampled from ``/proc`` every 50 ms; the largest single process (the highest
``VmHWM`` seen) is kept as well. Runs go round-robin (the order rotates every round) and
each figure reported is the median of ``--repeat`` runs. ``dicom-deid`` also runs on a
corpus about 1/5 the size, to show whether its peak RSS grows with corpus size.

Usage: ``.venv/bin/python benchmarks/bench_deidentify.py [--patients N] [--seed S]
[--repeat R] [--workers W] [--only NAME ...] [--no-write] [--corpus DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
PEERS_VENV = HERE / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEER_RUNNER = HERE / "peer_runner.py"
SETUP_PEERS = HERE / "setup_peers.sh"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START_MARK = "<!-- bench:deidentify:start -->"
END_MARK = "<!-- bench:deidentify:end -->"

DEID = "dicom-deid"
PEERS = ("pydicom", "dicognito", "dcmanon")
CONTENDERS = (DEID, *PEERS)
TARGET_RATIO = 2.0
FLAT_TOLERANCE = 1.25
"""Peak RSS counts as flat when the full corpus needs at most this times the small one's."""
MIN_FILES = 5000
DEFAULT_PATIENTS = 280
DEFAULT_SEED = 2026
SAMPLE_SECONDS = 0.05
_SUMMARY_LINE = re.compile(r"processed (\d+), failed (\d+), skipped (\d+)")


# -- corpus -------------------------------------------------------------------------------
@dataclass
class Corpus:
    """A folder of DICOM files and what the report says about it."""

    dicom_dir: Path
    list_file: Path
    files: int
    bytes: int
    modalities: dict[str, int]
    seed: int | None = None
    patients: int | None = None

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6

    def rel_paths(self) -> list[str]:
        return [line for line in self.list_file.read_text().splitlines() if line]


def walk(root: Path) -> list[str]:
    """Relative paths of every regular, non-hidden file under ``root``, sorted (as the CLI)."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                found.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(found)


def _modality(path: Path) -> str:
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True, force=True, specific_tags=["Modality"])
        return str(ds.get("Modality", "") or "?")
    except Exception:
        return "unreadable"


def describe(dicom_dir: Path, list_file: Path, **extra: Any) -> Corpus:
    """List the files (written to ``list_file``), total their size and count modalities."""
    rels = walk(dicom_dir)
    list_file.write_text("\n".join(rels) + "\n")
    size = sum((dicom_dir / r).stat().st_size for r in rels)
    mods = Counter(_modality(dicom_dir / r) for r in rels)
    return Corpus(dicom_dir, list_file, len(rels), size, dict(sorted(mods.items())), **extra)


def synth_corpus(patients: int, seed: int) -> Corpus:
    """The synthetic corpus for (patients, seed), generated once and cached under work/.

    The cache is also keyed by a hash of the generator's sources (``dicom_deid/synth/``), so
    a changed generator is rerun.
    """
    import dicom_deid.synth
    from dicom_deid.synth import generate

    root = WORK / f"corpus-p{patients}-s{seed}"
    meta = root / "corpus.json"
    sources = sorted(Path(dicom_deid.synth.__file__).parent.glob("*.py"))
    generator = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    if meta.exists():
        data = json.loads(meta.read_text())
        if data.pop("generator", None) == generator:
            data["dicom_dir"] = Path(data["dicom_dir"])
            data["list_file"] = Path(data["list_file"])
            return Corpus(**data)
        print(f"the generator changed since {root.name} was generated: generating it again")

    if root.exists():
        shutil.rmtree(root)  # an interrupted generation
    print(f"generating corpus: {patients} patients, seed {seed} -> {root}", flush=True)
    started = time.perf_counter()
    generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    corpus = describe(root / "dicom", root / "files.txt", seed=seed, patients=patients)
    data = asdict(corpus)
    data["dicom_dir"], data["list_file"] = str(corpus.dicom_dir), str(corpus.list_file)
    data["generator"] = generator
    meta.write_text(json.dumps(data, indent=1) + "\n")
    return corpus


def folder_corpus(folder: Path) -> Corpus:
    """An existing folder of DICOM files (``--corpus``), described, not cached."""
    WORK.mkdir(parents=True, exist_ok=True)
    return describe(folder.resolve(), WORK / "files-custom.txt")


def warm(corpus: Corpus) -> None:
    """Read every input byte so every contender starts with the corpus in the page cache."""
    buf = bytearray(1 << 20)
    for rel in corpus.rel_paths():
        with open(corpus.dicom_dir / rel, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


# -- measuring one process tree ------------------------------------------------------------
def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _rss_and_hwm(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in bytes; (0, 0) once it is gone.

    VmHWM is the process's own peak RSS, reset by ``exec`` (unlike ``ru_maxrss``, which
    inherits the peak of the process that forked it).
    """
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        return 0, 0
    return rss, hwm


def descendants(root_pid: int) -> list[int]:
    """``root_pid`` and every process below it."""
    children = _ppid_map()
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


class TreeSampler(threading.Thread):
    """Samples one process tree every ``SAMPLE_SECONDS``: peak of summed RSS, largest VmHWM.

    The tree is listed anew at every sample (about 1.5 ms here), so short-lived workers are
    not missed; the cost, under 2 % of the machine, is the same for every contender.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.largest = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            sizes = [_rss_and_hwm(pid) for pid in descendants(self.pid)]
            self.peak = max(self.peak, sum(rss for rss, _ in sizes))
            self.largest = max(self.largest, *(hwm for _, hwm in sizes))
            self.samples += 1
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds since boot, summed over cores, steal included."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    # steal: time the hypervisor gave our virtual CPUs to someone else (guest time is
    # already inside user and nice)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float = 60.0, busy_share: float = 0.25) -> float:
    """Wait (up to ``limit`` s) until other processes use < ``busy_share`` of the CPUs.

    The machine may be shared: a run started while something else is busy is slower for
    reasons that have nothing to do with the contender. Returns the last share seen.
    """
    cores = len(os.sched_getaffinity(0))
    deadline = time.monotonic() + limit
    while True:
        before = cpu_busy_seconds()
        time.sleep(1.0)
        share = (cpu_busy_seconds() - before) / cores
        if share < busy_share or time.monotonic() > deadline:
            return share


@dataclass
class Measured:
    """One timed subprocess."""

    wall: float
    peak_tree_rss: int
    max_proc_rss: int
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str
    samples: int
    other_cpu_share: float
    """CPU used by anything else on the machine during the run, as a share of all cores."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a run that went over its time limit (e.g. a pool waiting on a dead worker)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def measure(cmd: list[str], log_stem: Path, timeout: float = 1800.0) -> Measured:
    """Run ``cmd``, timing it and sampling its process tree's RSS until it exits.

    The run gets its own process group, killed whole after ``timeout`` seconds (it then
    reports a negative return code and counts as crashed).
    """
    out_path, err_path = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy_before = cpu_busy_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        watchdog = threading.Timer(timeout, _kill_group, (proc,))
        watchdog.start()
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        busy = cpu_busy_seconds() - busy_before
        watchdog.cancel()
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    cores = len(os.sched_getaffinity(0))
    return Measured(
        wall=wall,
        peak_tree_rss=sampler.peak,
        max_proc_rss=sampler.largest,
        cpu_seconds=cpu,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        samples=sampler.samples,
        other_cpu_share=max(0.0, (busy - cpu) / (wall * cores)),
    )


# -- contenders ---------------------------------------------------------------------------
@dataclass
class Run:
    """One contender's run over one corpus, with its outcome counts."""

    contender: str
    corpus: str
    round: int
    measured: Measured
    ok: int
    failed: int
    outputs: int
    failures_by_type: dict[str, int] = field(default_factory=dict)
    failure_examples: dict[str, str] = field(default_factory=dict)
    cache_dropped: bool = False


def deid_bin() -> Path:
    path = Path(sys.executable).parent / "dicom-deid"
    if path.exists():
        return path
    found = shutil.which("dicom-deid")
    if not found:
        raise SystemExit("dicom-deid is not installed in this environment (run make install)")
    return Path(found)


def key_file() -> Path:
    key = WORK / "bench.key"
    if not key.exists():
        subprocess.run([str(deid_bin()), "keygen", str(key)], check=True, capture_output=True)
    return key


def count_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


DROP_CACHES = Path("/proc/sys/vm/drop_caches")
RECENTLY_DELETED_SECONDS = 61
"""ext4 without a journal skips an inode freed less than 60 s ago (clean buffers) when it
allocates one, by looking its inode-table block up in the buffer cache for every candidate."""


def forget_deleted_inodes(deleted_at: float) -> bool:
    """Make the last deletion cost the next run nothing; True if the page cache was dropped.

    ``perf`` showed why runs slowed down one after another (system time 2 -> 7 s over four
    runs): on ext4 without a journal, every file a run creates scans past the inodes the
    previous clean-up freed, up to 5,000 of them, each a buffer-cache lookup
    (``recently_deleted`` in ``find_inode_bit``). Dropping the clean page cache (root
    only; the input is re-read by ``warm`` afterwards) or waiting 60 s ends that.
    """
    try:
        DROP_CACHES.write_text("1\n")
        return True
    except OSError:
        left = RECENTLY_DELETED_SECONDS - (time.monotonic() - deleted_at)
        if left > 0:
            time.sleep(left)
        return False


def prepare_out(name: str) -> tuple[Path, bool]:
    """An empty output folder for ``name``, every contender's earlier output deleted.

    Deleting all of them (not only this contender's) gives each run the same free memory:
    otherwise the page cache still holds up to three other 2 GB outputs, and the kernel
    reclaiming it while this run writes doubled the system time of whichever ran next.
    Returns the folder and whether the page cache was dropped.
    """
    for old in WORK.glob("out-*"):
        shutil.rmtree(old)
    out = WORK / f"out-{name}"
    out.mkdir(parents=True)
    os.sync()  # no write-back of an earlier run's output during this one
    return out, forget_deleted_inodes(time.monotonic())


def command(name: str, corpus: Corpus, out: Path, workers: int) -> list[str]:
    if name == DEID:
        return [
            str(deid_bin()), "deidentify", str(corpus.dicom_dir), str(out), "--profile", "basic",
            # the peers run no verification gate: the same work, the profile alone
            "--no-verify",
            "--key-file", str(key_file()), "--workers", str(workers), "--no-progress",
            "--errors", str(WORK / "deid-errors.csv"),
            "--mapping", str(WORK / "deid-mapping.parquet"), "--plain-mapping",
        ]
    return [
        str(PEERS_PYTHON), str(PEER_RUNNER), name, "--in-root", str(corpus.dicom_dir),
        "--files", str(corpus.list_file), "--out", str(out), "--workers", str(workers),
    ]


Outcome = tuple[int, int, dict[str, int], dict[str, str]]
"""Files done, files failed, failures by kind, one example per kind."""


def _crashed(name: str, m: Measured, files: int) -> Outcome:
    """A run that died as a whole: every file counts as failed, with the exit code as kind."""
    tail = (m.stderr.strip().splitlines() or ["(no stderr)"])[-1][:200]
    kind = f"whole run crashed (exit {m.returncode})"
    print(f"  {name}: {kind}: {tail}", flush=True)
    return 0, files, {kind: files}, {kind: tail}


def _deid_outcome(m: Measured, files: int) -> Outcome:
    match = _SUMMARY_LINE.search(m.stdout)
    if m.returncode not in (0, 3) or not match:
        return _crashed(DEID, m, files)
    ok, failed = int(match.group(1)), int(match.group(2)) + int(match.group(3))
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    errors = WORK / "deid-errors.csv"
    if failed and errors.exists():
        with open(errors, newline="") as fh:
            for row in csv.DictReader(fh):
                kinds[row["kind"]] += 1
                examples.setdefault(row["kind"], f"{row['path']}: {row['reason']}")
    return ok, failed, dict(kinds), examples


def _peer_outcome(name: str, m: Measured, files: int) -> Outcome:
    lines = m.stdout.strip().splitlines()
    if m.returncode != 0 or not lines:
        return _crashed(name, m, files)
    summary = json.loads(lines[-1])
    return (summary["ok"], summary["failed"], summary["failures_by_type"],
            summary["failure_examples"])


WARMUP_PATIENTS = 1


def warm_up(name: str, workers: int) -> None:
    """Run ``name`` once, unmeasured, over a one-patient corpus: its interpreter, libraries
    and data files are then in the page cache, as in any run but the first after a boot
    (dropping the page cache had evicted them, so the next start read them from disk)."""
    tiny = synth_corpus(WARMUP_PATIENTS, DEFAULT_SEED)
    out = WORK / f"out-warmup-{name}"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(command(name, tiny, out, workers), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def run_one(name: str, corpus: Corpus, label: str, rnd: int, workers: int) -> Run:
    """Clear the output, warm the caches, wait for a quiet machine, run one contender once."""
    out, dropped = prepare_out(name)
    warm_up(name, workers)
    warm(corpus)
    wait_for_quiet()
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    m = measure(command(name, corpus, out, workers), logs / f"{name}-{label}-{rnd}")
    if name == DEID:
        ok, failed, kinds, examples = _deid_outcome(m, corpus.files)
    else:
        ok, failed, kinds, examples = _peer_outcome(name, m, corpus.files)
    outputs = count_files(out)
    if ok + failed != corpus.files:
        print(f"  warning: {name} accounted for {ok + failed} of {corpus.files} files")
    if outputs != ok:
        print(f"  warning: {name} reported {ok} files done but wrote {outputs}")
    return Run(name, label, rnd, m, ok, failed, outputs, kinds, examples, dropped)


# -- peers' environment and versions ------------------------------------------------------
def compile_engine() -> None:
    """Byte-compile dicom-deid's package, as pip does for the peers' (an editable install
    is not compiled, and with PYTHONDONTWRITEBYTECODE set every run would compile it)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "plugins")],
                   check=True)


def ensure_peers() -> None:
    probe = [str(PEERS_PYTHON), str(PEER_RUNNER), "versions"]
    if PEERS_PYTHON.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    print("creating benchmarks/.venv-peers (pydicom, dicognito, dcmanon, psutil)", flush=True)
    subprocess.run(["bash", str(SETUP_PEERS)], check=True)


def project_commit() -> str:
    """`` (commit abc1234)``, with a note when the engine has uncommitted changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return ""
    dirty = git("status", "--porcelain", "--", "plugins", "pyproject.toml")
    return f" (commit {head}{' + uncommitted changes' if dirty else ''})"


def versions(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if DEID in names:
        line = subprocess.run([str(deid_bin()), "--version"], capture_output=True, text=True)
        out[DEID] = (line.stdout.split()[-1] if line.stdout else "?") + project_commit()
        out["pydicom (dicom-deid's)"] = metadata.version("pydicom")
    if any(n in PEERS for n in names):
        probe = subprocess.run(
            [str(PEERS_PYTHON), str(PEER_RUNNER), "versions"],
            capture_output=True, text=True, check=True,
        )
        peer = json.loads(probe.stdout)
        out["pydicom (peers')"] = peer["pydicom"]
        for n in ("dicognito", "dcmanon"):
            if n in names:
                out[n] = peer[n]
    return out


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": f"{mem:.0f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


# -- summarising --------------------------------------------------------------------------
@dataclass
class Row:
    """Median figures of one contender on one corpus."""

    contender: str
    corpus: str
    files: int
    runs: int
    wall: float
    wall_min: float
    wall_max: float
    files_per_s: float
    mb_per_s: float
    peak_tree_mb: float
    max_proc_mb: float
    cpu_s: float
    other_cpu_pct: float
    failed: int
    failures_by_type: dict[str, int]
    failure_examples: dict[str, str]


def summarise(runs: list[Run], corpus: Corpus) -> Row:
    walls = [r.measured.wall for r in runs]
    wall = statistics.median(walls)
    first = runs[0]
    return Row(
        contender=first.contender,
        corpus=first.corpus,
        files=corpus.files,
        runs=len(runs),
        wall=wall,
        wall_min=min(walls),
        wall_max=max(walls),
        files_per_s=corpus.files / wall,
        mb_per_s=corpus.megabytes / wall,
        peak_tree_mb=statistics.median(r.measured.peak_tree_rss for r in runs) / 1e6,
        max_proc_mb=statistics.median(r.measured.max_proc_rss for r in runs) / 1e6,
        cpu_s=statistics.median(r.measured.cpu_seconds for r in runs),
        other_cpu_pct=100 * statistics.median(r.measured.other_cpu_share for r in runs),
        failed=max(r.failed for r in runs),
        failures_by_type=max(runs, key=lambda r: r.failed).failures_by_type,
        failure_examples=max(runs, key=lambda r: r.failed).failure_examples,
    )


def _mix(corpus: Corpus) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(corpus.modalities.items(), key=lambda x: -x[1]))


def verdicts(rows: list[Row], small: Row | None) -> list[str]:
    """The target lines: speed vs the fastest other contender, and flat memory."""
    deid = next((r for r in rows if r.contender == DEID), None)
    others = [r for r in rows if r.contender != DEID]
    lines: list[str] = []
    if deid is None or not others:
        lines.append("**Target (>= 2x the fastest peer): not evaluated** "
                     "(dicom-deid and at least one peer must run).")
    else:
        fastest = max(others, key=lambda r: r.files_per_s)
        ratio = deid.files_per_s / fastest.files_per_s
        met = "MET" if ratio >= TARGET_RATIO else "NOT MET"
        peers = ", ".join(r.contender for r in others)
        caveat = (
            f" ({fastest.contender} failed on {fastest.failed} of {fastest.files} files; "
            "its files/s counts them)" if fastest.failed else ""
        )
        lines.append(
            f"**Target (>= {TARGET_RATIO:g}x the fastest of {peers}): {met}** — dicom-deid "
            f"{deid.files_per_s:.0f} files/s is {ratio:.2f}x the fastest, {fastest.contender} "
            f"at {fastest.files_per_s:.0f} files/s{caveat}."
        )
    if deid is not None and small is not None:
        growth = deid.peak_tree_mb / small.peak_tree_mb
        flat = "flat" if growth <= FLAT_TOLERANCE else "NOT flat"
        extra_files = max(1, deid.files - small.files)
        per_k = (deid.peak_tree_mb - small.peak_tree_mb) / extra_files * 1000
        lines.append(
            f"**Peak RSS vs corpus size: {flat}** (within {FLAT_TOLERANCE:g}x counts as flat) — "
            f"{small.files} files: {small.peak_tree_mb:.0f} MB; {deid.files} files: "
            f"{deid.peak_tree_mb:.0f} MB ({growth:.2f}x for {deid.files / small.files:.1f}x "
            f"the files, {per_k:+.1f} MB per 1,000 files; largest single process "
            f"{small.max_proc_mb:.0f} -> {deid.max_proc_mb:.0f} MB)."
        )
    return lines


def table(rows: list[Row]) -> list[str]:
    deid = next((r for r in rows if r.contender == DEID and r.corpus == "full"), None)
    head = [
        "| contender | corpus files | wall s (median; min–max) | files/s | MB/s "
        "| peak RSS MB (tree) | largest process MB | CPU s | other load % | failed files "
        "| dicom-deid speed ÷ this |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    body = []
    for r in rows:
        ratio = f"{deid.files_per_s / r.files_per_s:.2f}x" if deid else "n/a"
        if r.corpus != "full":
            ratio = "—"  # another corpus: the row is there for its memory
        name = r.contender if r.corpus == "full" else f"{r.contender} (1/5 corpus)"
        body.append(
            f"| {name} | {r.files} | {r.wall:.2f} ({r.wall_min:.2f}–{r.wall_max:.2f}) "
            f"| {r.files_per_s:.0f} | {r.mb_per_s:.1f} | {r.peak_tree_mb:.0f} "
            f"| {r.max_proc_mb:.0f} | {r.cpu_s:.1f} | {r.other_cpu_pct:.0f} | {r.failed} "
            f"| {ratio} |"
        )
    return head + body


def failures_text(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        if r.failed:
            kinds = ", ".join(f"{k}: {v}" for k, v in r.failures_by_type.items())
            lines.append(f"- {r.contender} ({r.corpus}) failed on {r.failed} files ({kinds}).")
            lines.extend(f"  - e.g. `{ex}`" for ex in r.failure_examples.values())
    return lines or ["- No contender failed on any file."]


def report(ctx: dict[str, Any], rows: list[Row], small: Row | None) -> str:
    corpus: Corpus = ctx["corpus"]
    m = ctx["machine"]
    origin = (
        f"synthetic, `dicom_deid.synth.generate(patients={corpus.patients}, seed={corpus.seed}, "
        "small=False, bad_inputs=False)`" if corpus.seed is not None else f"`{corpus.dicom_dir}`"
    )
    lines = [
        START_MARK,
        "## De-identification throughput and peak memory",
        "",
        f"Run {ctx['date']} by `benchmarks/bench_deidentify.py` "
        f"(`--workers {ctx['workers']} --repeat {ctx['repeat']}`).",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, "
        f"{m['os']}.",
        f"- Corpus: {corpus.files} files, {corpus.megabytes:.0f} MB; {origin}. "
        f"Modalities: {_mix(corpus)}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items()) + ".",
        f"- Every figure is the **median of {ctx['repeat']} run(s)** per contender (runs "
        "round-robin, order rotated each round); files/s and MB/s are corpus files and bytes "
        "over the median wall time, failed files included in the count.",
        f"- {ctx['workers']} worker processes each; wall time is the whole subprocess "
        "(interpreter start, imports, pool, all files) timed from outside; every package "
        "byte-compiled (pip does it for the peers; `compileall` for dicom-deid's editable "
        "install); page cache warmed "
        "by a full read of the input before each run; outputs written to local disk; "
        "every contender's output deleted and the disk synced before each run, then "
        + ("the page cache dropped (`/proc/sys/vm/drop_caches`; then one unmeasured run of "
           "the contender over a one-patient corpus, so its program files are cached, "
           "and the warming read of the input)"
           if ctx.get("cache_dropped") else "61 s waited (no root to drop the page cache)")
        + ", because on ext4 without a journal each new file otherwise scans past the inodes "
        "freed in the last 60 s (`perf`: system time grew 2 -> 7 s over four back-to-back "
        "runs of the same command).",
        "- Peak RSS (tree) = peak over the run of RSS summed over the process and its workers, "
        f"sampled every {SAMPLE_SECONDS * 1000:.0f} ms (pages a forked worker shares with "
        "its parent count in both); largest process = the highest `VmHWM` (a process's own "
        "peak RSS) seen among them; CPU s = user + system time of the whole tree; other load = "
        "CPU used by anything else on the machine (or taken by the hypervisor) during the run, "
        "as a share of all cores (each run waits, up to 60 s, for it to drop below 25 %).",
        "",
        *table(rows + ([small] if small else [])),
        "",
        *verdicts(rows, small),
        "",
        "Failures:",
        "",
        *failures_text(rows + ([small] if small else [])),
        "",
        "How each peer is called (`benchmarks/peer_runner.py`, a `multiprocessing` fork pool, "
        "one initialised tool per worker): pydicom `dcmread(path, force=True)` + `dcmwrite` "
        "(no change); dicognito `dcmread(path)` (no `force`, as its CLI reads), "
        "`Anonymizer(seed=...).anonymize(ds)`, `ds.save_as(out, enforce_file_format=True)` "
        "(as its CLI saves); dcmanon `Anonymizer()` (default config), "
        "`anonymize(path) -> bytes`, bytes written to the output.",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(section: str, start_mark: str = START_MARK, end_mark: str = END_MARK) -> None:
    """Replace the section between the markers in BENCHMARKS.md (appended when absent)."""
    if BENCHMARKS_MD.exists():
        text = BENCHMARKS_MD.read_text()
        start, end = text.find(start_mark), text.find(end_mark)
        if start != -1 and end > start:
            rest = text[end + len(end_mark):].lstrip("\n")
            text = text[:start] + section + ("\n" + rest if rest else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        text = "# Benchmarks\n\n" + section
    BENCHMARKS_MD.write_text(text)


# -- driver -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help=f"synthetic patients (default {DEFAULT_PATIENTS}: >= {MIN_FILES} files)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--repeat", type=int, default=3, help="runs per contender; median reported")
    p.add_argument("--workers", type=int, default=2, help="worker processes per contender")
    p.add_argument("--only", action="append", choices=CONTENDERS, metavar="NAME",
                   help=f"run only this contender (repeatable): {', '.join(CONTENDERS)}")
    p.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    p.add_argument("--corpus", type=Path,
                   help="use this folder of DICOM files instead of the synthetic corpus "
                        "(no 1/5-size run)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.workers < 1 or args.patients < 1:
        p.error("--repeat, --workers and --patients must be >= 1")
    return args


def schedule(
    names: list[str], corpora: dict[str, Corpus], repeat: int, workers: int
) -> list[Run]:
    """Round-robin over contenders (order rotated each round) and corpora, ``repeat`` rounds."""
    jobs = [(n, "full") for n in names]
    if "small" in corpora:
        jobs.append((DEID, "small"))
    runs: list[Run] = []
    for rnd in range(repeat):
        shift = rnd % len(jobs)
        for name, label in jobs[shift:] + jobs[:shift]:
            run = run_one(name, corpora[label], label, rnd, workers)
            runs.append(run)
            m = run.measured
            fps = corpora[label].files / m.wall
            print(
                f"  round {rnd + 1}/{repeat} {name:<10} {label:<5} {m.wall:7.2f} s "
                f"{fps:7.0f} files/s  peak {m.peak_tree_rss / 1e6:6.0f} MB"
                f"  failed {run.failed}",
                flush=True,
            )
    return runs


def hold_lock(name: str) -> IO[str]:
    """Hold the exclusive lock ``work/.<name>.lock`` until the process exits: benchmarks
    that share the CPUs, the page cache or their outputs run one at a time."""
    WORK.mkdir(parents=True, exist_ok=True)
    fh = open(WORK / f".{name}.lock", "w")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another benchmark holds .{name}.lock (a {name}.py run?)") from None
    return fh


def single_instance() -> IO[str]:
    """Hold an exclusive lock for the whole run: two runs would share outputs and the CPUs."""
    return hold_lock("bench_deidentify")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in CONTENDERS if not args.only or n in args.only]
    lock = single_instance()
    if any(n in PEERS for n in names):
        ensure_peers()
    if DEID in names:
        compile_engine()
    corpora: dict[str, Corpus] = {}
    if args.corpus:
        corpora["full"] = folder_corpus(args.corpus)
    else:
        corpora["full"] = synth_corpus(args.patients, args.seed)
        if DEID in names:
            corpora["small"] = synth_corpus(max(1, round(args.patients / 5)), args.seed)
    full = corpora["full"]
    if full.files < MIN_FILES:
        print(f"note: corpus has {full.files} files (< {MIN_FILES}, the issue's minimum)")
    print(f"corpus: {full.files} files, {full.megabytes:.0f} MB, {_mix(full)}", flush=True)
    ctx: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "versions": versions(names),
        "corpus": full,
        "workers": args.workers,
        "repeat": args.repeat,
    }
    runs = schedule(names, corpora, args.repeat, args.workers)
    rows = [summarise([r for r in runs if r.contender == n and r.corpus == "full"], full)
            for n in names]
    small_runs = [r for r in runs if r.corpus == "small"]
    small = summarise(small_runs, corpora["small"]) if small_runs else None
    ctx["cache_dropped"] = all(r.cache_dropped for r in runs)
    section = report(ctx, rows, small)
    print()
    print(section)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = {"context": {**ctx, "corpus": asdict(full)}, "runs": [asdict(r) for r in runs]}
    (WORK / f"results-{stamp}.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    if not args.no_write:
        write_markdown(section)
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
