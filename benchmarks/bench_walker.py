"""Cost per file, on one core, of the three users of the little-endian element walker.

The reader (``parse_instance``: the Dataset path, verification, the export's general
path), the metadata scanner (``scan_row``: the export's fast path) and the byte path
(``ByteDeidentifier.deidentify``, Basic Profile) each walk every element header of a
file. This times each over the same files, held in memory (no I/O), after a warm-up pass
over other files (per-process memos filled, as in a worker well into a run); the best of
``--repeat`` passes is reported, in microseconds per file.

Usage: ``.venv/bin/python benchmarks/bench_walker.py [--patients N] [--seed S]
[--files F] [--repeat R]``; prints one markdown table row per user.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
HEAD = 1 << 16


def corpus(patients: int, seed: int) -> list[Path]:
    """Files of a synthetic corpus (no bad inputs), generated once under ``work/``."""
    from dicom_deid.synth import generate

    root = WORK / f"walker-corpus-p{patients}-s{seed}"
    if not (root / "dicom").exists():
        generate(root, patients=patients, seed=seed, small=False, bad_inputs=False)
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=70)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--files", type=int, default=500, help="files timed (after as many warm)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--only", choices=("reader", "scanner", "byte"), default=None,
                   help="time one user only (for instruction counts under valgrind)")
    args = p.parse_args()

    from dicom_deid.config.google import config_from_options
    from dicom_deid.deid.byte_path import ByteDeidentifier
    from dicom_deid.deid.deidentifier import Deidentifier
    from dicom_deid.dicom.reader import parse_instance
    from dicom_deid.metadata.scan import scan_row

    files = corpus(args.patients, args.seed)
    warm, timed = files[:args.files], files[args.files:2 * args.files]
    if len(timed) < args.files // 2:
        raise SystemExit(f"corpus too small: {len(files)} files")
    wholes = [f.read_bytes() for f in timed]
    heads = [d[:HEAD] if len(d) > 2 * HEAD else d for d in wholes]
    byte = ByteDeidentifier(Deidentifier(config_from_options("basic", []), b"k" * 32))

    def byte_path(head: bytes, sizes: dict[int, int] = {}) -> object:  # noqa: B006
        return byte.deidentify(head, sizes[id(head)])

    sizes = {id(h): len(w) for h, w in zip(heads, wholes, strict=True)}
    byte_path.__defaults__ = (sizes,)
    for f in warm:  # fill the memos and caches
        data = f.read_bytes()
        scan_row(data)
        parse_instance(data)
        byte.deidentify(data)
    declined = sum(byte_path(h) is None for h in heads)
    users = [
        ("reader (parse_instance, whole file)", lambda d: parse_instance(d), wholes),
        ("metadata scanner (scan_row, whole file)", scan_row, wholes),
        ("byte path (Basic Profile, 64 KB head)", byte_path, heads),
    ]
    print(f"{len(timed)} files timed, best of {args.repeat} passes; "
          f"byte path declined {declined}")
    print("| user | us per file |")
    print("|---|--:|")
    if args.only:
        users = [u for u in users if u[0].startswith({"reader": "reader", "scanner": "metadata",
                                                       "byte": "byte"}[args.only])]
    for name, fn, datas in users:
        print(f"| {name} | {best(fn, datas, args.repeat):.1f} |", flush=True)


if __name__ == "__main__":
    main()
