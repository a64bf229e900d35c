"""Throughput and peak memory of ``export_metadata`` against a naive pydicom -> pandas loop.

Both run as subprocesses over the same synthetic corpus (page cache warmed first), each
timed from outside (interpreter start and imports included); peak RSS is the peak of the
RSS summed over the process tree, sampled from ``/proc`` every 50 ms. The time spent
inside the ``export_metadata`` call is reported too. ``export_metadata`` also runs on a
fifth of the corpus to show that memory does not grow with corpus size. Then, in this
process on one core, the cost per file of each stage (read, SHA-256, the one-pass
scanner, the general pydicom-backed path it replaces, Arrow conversion), measured on
files the caches have not seen. Prints markdown tables (for BENCHMARKS.md).

Usage: ``.venv/bin/python benchmarks/bench_export.py [--patients N] [--seed S]
[--workers W] [--repeat R]`` (the naive loop needs ``pandas`` in the same virtualenv).
``--memory-copies 1,6,12 [--scratch DIR]`` instead measures peak RSS per process against
corpus size, on the corpus hard-linked that many times under ``DIR`` (removed after).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"

_EXPORT = """
import sys
from datetime import date
from pathlib import Path
from dicom_deid.metadata.export import export_metadata
files = Path(sys.argv[1]).read_text().split("\\n")
s = export_metadata(files, Path(sys.argv[2]), run_id="bench", ingest_date=date(2026, 1, 1),
                    workers=int(sys.argv[3]))
print(s.exported, len(s.errors), s.seconds)
"""

_NAIVE = """
import sys
from pathlib import Path
import pandas as pd
import pydicom
files = Path(sys.argv[1]).read_text().split("\\n")
rows = []
for f in files:
    ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
    row = {"source_uri": f}
    for elem in ds:
        if elem.keyword and elem.VR not in ("OB", "OW", "UN", "SQ"):
            row[elem.keyword] = str(elem.value)
    rows.append(row)
Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
pd.DataFrame(rows).to_parquet(Path(sys.argv[2]) / "naive.parquet")
print(len(rows), 0, "nan")
"""


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` from ``/proc/<pid>/task/*/children`` (cheap: no /proc scan)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    stack = [pid]
    while stack:
        p = stack.pop()
        stack.extend(_children(p))
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except OSError:
            continue
    return total


def _rss(pid: int) -> int:
    """RSS in bytes of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def run(script: str, file_list: Path, out: Path, workers: int
        ) -> tuple[float, int, str, int, int]:
    """Run one contender; return (seconds, peak tree RSS, its stdout, peak RSS of the
    parent process, peak RSS of its largest child)."""
    shutil.rmtree(out, ignore_errors=True)
    peak = parent_peak = child_peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script, str(file_list), str(out),
                             str(workers)], stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, parent_peak, child_peak
        while not done.is_set():
            parent = _rss(proc.pid)
            children = [_rss(c) for c in _children(proc.pid)]
            peak = max(peak, _tree_rss(proc.pid))
            parent_peak = max(parent_peak, parent)
            child_peak = max([child_peak, *children])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"contender failed with exit code {proc.returncode}")
    return seconds, peak, stdout.strip(), parent_peak, child_peak


def memory_scaling(root: Path, copies: list[int], scratch: Path, workers: int) -> None:
    """Peak RSS per process against corpus size: the corpus hard-linked ``c`` times for
    each ``c`` in ``copies`` (no extra data on disk; each copy is other URIs, so every
    file is exported). Prints a markdown table."""
    print("\n| files | seconds in the call | parent peak RSS (MiB) | largest worker (MiB) "
          "| process tree (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for i in range(max(copies)):
            subprocess.run(["cp", "-al", str(root), str(scratch / f"copy{i + 1:02d}")],
                           check=True)
        everything = sorted(str(p) for p in scratch.rglob("*") if p.is_file())
        per_copy = len(everything) // max(copies)
        for c in copies:
            file_list = scratch / f"files-{c}.txt"
            file_list.write_text("\n".join(everything[:c * per_copy]))
            _, tree, stdout, parent, child = run(_EXPORT, file_list, scratch / "out", workers)
            print(f"| {c * per_copy:,} | {float(stdout.split()[2]):.1f} | {parent / 2**20:,.0f} "
                  f"| {child / 2**20:,.0f} | {tree / 2**20:,.0f} |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def corpus(patients: int, seed: int) -> list[Path]:
    """Files of the synthetic corpus ``work/export-corpus-p<N>-s<S>`` (generated if missing)."""
    root = WORK / f"export-corpus-p{patients}-s{seed}"
    if not (root / "dicom").exists():
        from dicom_deid.synth import generate
        generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


def stages(files: list[Path], warm: int = 500, measure: int = 1000) -> list[tuple[str, float]]:
    """Milliseconds per file of each export stage, one core, on files not seen before.

    The first ``warm`` files fill the per-process caches (as in a worker well into a run);
    the next ``measure`` files are timed.
    """
    import hashlib

    from dicom_deid.metadata import export as me
    from dicom_deid.metadata import schema as ms
    from dicom_deid.metadata.scan import scan_row

    warm_files = files[:warm]
    timed = files[warm:warm + measure]
    warm_rows = []
    for f in warm_files:
        warm_rows.append(me.instance_row(f.read_bytes()))
        me.general_row(f.read_bytes())
    merger = ms.ShapeMerger()
    for _, shape, _ in warm_rows:
        merger.add(shape)
    me._to_table([r for r, _, _ in warm_rows], merger.shape)  # pyarrow's lazy imports
    datas = [me._read(str(f), f.stat().st_size) for f in timed]
    clock = time.perf_counter
    out: list[tuple[str, float]] = []
    start = clock()
    for f in timed:
        me._read(str(f), f.stat().st_size)
    out.append(("read (os.read of the whole file)", clock() - start))
    start = clock()
    for d in datas:
        hashlib.sha256(d).hexdigest()
    out.append(("SHA-256", clock() - start))
    start = clock()
    rows = [scan_row(d) for d in datas]
    out.append(("parse + convert, one-pass scanner (fast path)", clock() - start))
    start = clock()
    for d in datas:
        me.general_row(d)
    out.append(("parse + convert, general path (pydicom-backed; before)", clock() - start))
    start = clock()
    for b in range(0, len(rows), 256):
        merger = ms.ShapeMerger()
        for _, shape, _ in rows[b:b + 256]:
            merger.add(shape)
        me._to_table([r for r, _, _ in rows[b:b + 256]], merger.shape)
    out.append(("shape merge + Arrow table (256-row batches)", clock() - start))
    return [(name, 1e3 * secs / len(timed)) for name, secs in out]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=280)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--memory-copies", default="",
                        help="only the memory scaling: e.g. 1,6,12 hard-linked copies")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-export-copies"))
    args = parser.parse_args(argv)
    files = corpus(args.patients, args.seed)
    if args.memory_copies:
        memory_scaling(WORK / f"export-corpus-p{args.patients}-s{args.seed}" / "dicom",
                       [int(c) for c in args.memory_copies.split(",")], args.scratch,
                       args.workers)
        return 0
    size = sum(f.stat().st_size for f in files)
    lists = {}
    for name, subset in (("full", files), ("fifth", files[: len(files) // 5])):
        lists[name] = WORK / f"export-files-{name}.txt"
        lists[name].write_text("\n".join(str(f) for f in subset))
    for f in files:  # warm the page cache
        f.read_bytes()
    contenders = [
        (f"export_metadata, {args.workers} workers", _EXPORT, "full", args.workers),
        (f"export_metadata, {args.workers} workers, 1/5 corpus", _EXPORT, "fifth",
         args.workers),
        ("export_metadata, 1 worker", _EXPORT, "full", 1),
    ]
    if not args.skip_naive:
        contenders.append(("naive pydicom -> pandas loop (1 process)", _NAIVE, "full", 1))
    results = []
    for label, script, which, workers in contenders:
        runs = [run(script, lists[which], WORK / "export-out", workers)
                for _ in range(args.repeat)]
        n = int(runs[0][2].split()[0])
        secs = statistics.median(r[0] for r in runs)
        inside = statistics.median(float(r[2].split()[2]) for r in runs)
        peak = max(r[1] for r in runs)
        results.append((label, n, secs, n / secs, inside, peak / 2**20))
        print(f"{label}: {n} files in {secs:.2f} s", file=sys.stderr)
    print(f"Metadata export, {len(files)} files ({size / 2**30:.2f} GiB, synthetic corpus "
          f"p{args.patients} s{args.seed}, small=False), {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"median of {args.repeat}:\n")
    print("| contender | files | seconds | files/s | seconds in the call | files/s in the call "
          "| peak RSS (MiB, process tree) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, secs, rate, inside, mib in results:
        in_call = "-" if inside != inside else f"{inside:.2f}"  # NaN: not export_metadata
        in_rate = "-" if inside != inside else f"{n / inside:,.0f}"
        print(f"| {label} | {n} | {secs:.2f} | {rate:,.0f} | {in_call} | {in_rate} "
              f"| {mib:,.0f} |")
    print("\nPer file, one core, files the caches have not seen (ms):\n")
    print("| stage | ms/file |")
    print("|---|---:|")
    for name, ms_per_file in stages(files):
        print(f"| {name} | {ms_per_file:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
