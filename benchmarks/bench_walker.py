"""Cost per file, on one core, of the three users of the little-endian element walker.

The reader (``parse_instance``: the Dataset path, verification, the export's general
path), the metadata scanner (``scan_row``: the export's fast path) and the byte path
(``ByteDeidentifier.deidentify``, Basic Profile) each walk every element header of a
file. Two measurements:

- wall time (default): each user over the same files held in memory, after a warm-up
  pass over other files; the best of ``--repeat`` passes, in microseconds per file. On
  a shared VM this moves by 10-30 % from one minute to the next.
- ``--instructions``: instructions per file counted by valgrind (callgrind), which repeat
  to about 1 % for the same code and files. For each user, this script runs itself twice
  under valgrind: warm-up on 150 files, then the user once over 150 or over 750 files it
  has not seen (cold: the caches hold only what the warm-up left); the difference of the
  two totals over 600 is the cost of one unseen file (start-up and warm-up cancel out).
  ``--warm`` instead repeats the user over the same 150 files 1 and 11 times (caches hot,
  as within a series). Hash seeds, ASLR and OpenBLAS threads are fixed for repeatability.

Usage: ``.venv/bin/python benchmarks/bench_walker.py [--patients 70] [--repeat 7]
[--instructions [--warm]]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
HEAD = 1 << 16
WARM_FILES = 150
USERS = {"reader": "reader (parse_instance, whole file)",
         "scanner": "metadata scanner (scan_row, whole file)",
         "byte": "byte path (Basic Profile, 64 KB head of large files)",
         "byte-nosweep": "byte path, residual sweep off (the sweep's cost is the difference)"}


def corpus(patients: int, seed: int) -> list[Path]:
    """Files of a synthetic corpus (no bad inputs), generated once under ``work/``."""
    from dicom_deid.synth import generate

    root = WORK / f"walker-corpus-p{patients}-s{seed}"
    if not (root / "dicom").exists():
        generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


def user_function(name: str) -> Callable[[bytes], object]:
    """The walker user ``name`` as a function of a file's bytes (head-limited for the byte
    path, as the batch reads large files)."""
    if name == "reader":
        from dicom_deid.dicom.reader import parse_instance

        return parse_instance
    if name == "scanner":
        from dicom_deid.metadata.scan import scan_row

        return scan_row
    from dicom_deid.config.google import config_from_options
    from dicom_deid.deid.byte_path import ByteDeidentifier
    from dicom_deid.deid.deidentifier import Deidentifier

    sweep = name != "byte-nosweep"
    byte = ByteDeidentifier(Deidentifier(
        config_from_options("basic", [], residual_sweep=sweep), b"k" * 32))

    def byte_path(data: bytes) -> object:
        head = data[:HEAD] if len(data) > 2 * HEAD else data
        return byte.deidentify(head, len(data))

    return byte_path


def best(fn: Callable[[bytes], object], datas: list[bytes], repeat: int) -> float:
    """Best wall time of ``repeat`` passes of ``fn`` over ``datas``, per file, in us."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for d in datas:
            fn(d)
        times.append(time.perf_counter() - start)
    return 1e6 * min(times) / len(datas)


def probe(files: list[Path], name: str, count: int, warm: bool) -> None:
    """What valgrind counts: warm-up, then ``name`` over ``count`` unseen files (or, with
    ``warm``, ``count`` passes over the same files)."""
    fn = user_function(name)
    for f in files[:WARM_FILES]:
        fn(f.read_bytes())
    if warm:
        datas = [f.read_bytes() for f in files[WARM_FILES:2 * WARM_FILES]]
        for _ in range(count):
            for d in datas:
                fn(d)
    else:
        for f in files[WARM_FILES:WARM_FILES + count]:
            fn(f.read_bytes())


def instructions(args: argparse.Namespace, name: str) -> int:
    """Instructions per file of ``name`` (see the module docstring)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    counts = []
    steps = (1, 11) if args.warm else (WARM_FILES, 5 * WARM_FILES)
    for count in steps:
        cmd = ["setarch", os.uname().machine, "-R", "valgrind", "--tool=callgrind",
               "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--patients", str(args.patients), "--seed", str(args.seed),
               "--probe", name, str(count), *(["--warm"] if args.warm else [])]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-800:]}")
        counts.append(int(found.group(1)))
    files = (steps[1] - steps[0]) * (WARM_FILES if args.warm else 1)
    return (counts[1] - counts[0]) // files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=70)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--files", type=int, default=500, help="files timed (after as many warm)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--instructions", action="store_true",
                   help="count instructions with valgrind instead of timing")
    p.add_argument("--warm", action="store_true",
                   help="with --instructions: the same files again (hot caches)")
    p.add_argument("--only", choices=list(USERS), help="one user only")
    p.add_argument("--probe", nargs=2, metavar=("USER", "COUNT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    files = corpus(args.patients, args.seed)
    if args.probe:
        probe(files, args.probe[0], int(args.probe[1]), args.warm)
        return
    users_run = {args.only: USERS[args.only]} if args.only else USERS
    if args.instructions:
        if not shutil.which("valgrind") or not shutil.which("setarch"):
            raise SystemExit("--instructions needs valgrind and setarch (apt-get install valgrind)")
        kind = "the same 150 files, caches hot" if args.warm else "files not seen before"
        print(f"instructions per file ({kind}; valgrind callgrind)\n")
        print("| user | instructions per file |")
        print("|---|--:|")
        for name, label in users_run.items():
            print(f"| {label} | {instructions(args, name):,} |", flush=True)
        return
    warm, timed = files[:args.files], files[args.files:2 * args.files]
    if len(timed) < args.files // 2:
        raise SystemExit(f"corpus too small: {len(files)} files")
    datas = [f.read_bytes() for f in timed]
    users = {name: user_function(name) for name in users_run}
    for f in warm:  # fill the memos and caches
        data = f.read_bytes()
        for fn in users.values():
            fn(data)
    print(f"{len(timed)} files timed, best of {args.repeat} passes\n")
    print("| user | us per file |")
    print("|---|--:|")
    for name, fn in users.items():
        print(f"| {USERS[name]} | {best(fn, datas, args.repeat):.1f} |", flush=True)


if __name__ == "__main__":
    main()
