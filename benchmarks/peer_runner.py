"""Run one peer contender over a file list with a process pool (runs in benchmarks/.venv-peers).

Called by ``bench_deidentify.py`` as one subprocess per timed run, so the whole run
(interpreter start, imports, pool, every file) is timed and memory-sampled from outside.
It imports nothing from the project: peers live in their own virtualenv.

Contenders:

``pydicom``
    ``dcmread(path, force=True)`` then ``dcmwrite(out, ds)``: a plain round trip, nothing
    changed (``force`` so that valid datasets stored without file meta are read too: this is
    the I/O baseline, not a tool with opinions about input).
``dicognito``
    ``Anonymizer(seed=...)`` once per worker (seeded, so every worker gives the same
    pseudonyms, as one ``dicognito`` process would), ``dcmread(path)`` (``force=False``, as
    dicognito's own command line reads: it skips files without file meta),
    ``anonymize(ds)`` per file, then ``ds.save_as(out, enforce_file_format=True)`` as its
    command line saves.
``dcmanon``
    ``Anonymizer()`` once per worker (default config), ``anonymize(path) -> bytes`` per
    file, bytes written to ``out``.

Each output mirrors the input's relative path under the output folder. A file that raises
counts as failed (never retried); the summary printed on stdout as one JSON line counts
failures by exception type and keeps a few examples.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

CONTENDERS = ("pydicom", "dicognito", "dcmanon")
DICOGNITO_SEED = "dicom-deid-benchmark"

_STATE: dict[str, Any] = {}


def _init_pydicom() -> Callable[[Path, Path], None]:
    from pydicom import dcmread, dcmwrite

    def run(src: Path, dst: Path) -> None:
        dcmwrite(dst, dcmread(src, force=True))

    return run


def _init_dicognito() -> Callable[[Path, Path], None]:
    from dicognito.anonymizer import Anonymizer
    from pydicom import dcmread

    anonymizer = Anonymizer(seed=DICOGNITO_SEED)

    def run(src: Path, dst: Path) -> None:
        ds = dcmread(src)
        anonymizer.anonymize(ds)
        ds.save_as(dst, enforce_file_format=True)

    return run


def _init_dcmanon() -> Callable[[Path, Path], None]:
    from dcmanon import Anonymizer

    anonymizer = Anonymizer()

    def run(src: Path, dst: Path) -> None:
        data = anonymizer.anonymize(str(src))
        with open(dst, "wb") as fh:
            fh.write(data)

    return run


_INITS: dict[str, Callable[[], Callable[[Path, Path], None]]] = {
    "pydicom": _init_pydicom,
    "dicognito": _init_dicognito,
    "dcmanon": _init_dcmanon,
}


def _init_worker(name: str, in_root: str, out_root: str) -> None:
    _STATE["run"] = _INITS[name]()
    _STATE["in_root"] = Path(in_root)
    _STATE["out_root"] = Path(out_root)
    _STATE["dirs"] = set()


def _process(rel: str) -> tuple[str, str, str]:
    """Return ``(rel, "", "")`` on success, else ``(rel, exception type, message)``."""
    dst = _STATE["out_root"] / rel
    parent = dst.parent
    try:
        if parent not in _STATE["dirs"]:
            parent.mkdir(parents=True, exist_ok=True)
            _STATE["dirs"].add(parent)
        _STATE["run"](_STATE["in_root"] / rel, dst)
    except Exception as exc:
        return rel, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else ""
    return rel, "", ""


def _chunksize(n: int, workers: int) -> int:
    """The same chunking rule ``dicom-deid``'s batch runner uses."""
    return max(1, min(32, n // (workers * 8) or 1))


def run(name: str, in_root: Path, file_list: Path, out_root: Path, workers: int) -> dict[str, Any]:
    """Process every file in ``file_list`` (paths relative to ``in_root``); return a summary."""
    rels = [line for line in file_list.read_text().splitlines() if line]
    initargs = (name, str(in_root), str(out_root))
    if workers <= 1:
        _init_worker(*initargs)
        results = map(_process, rels)
        ok, failures, examples = _tally(results)
    else:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
            results = pool.imap(_process, rels, chunksize=_chunksize(len(rels), workers))
            ok, failures, examples = _tally(results)
    return {
        "contender": name,
        "files": len(rels),
        "ok": ok,
        "failed": sum(failures.values()),
        "failures_by_type": dict(failures),
        "failure_examples": examples,
    }


def _tally(results: Iterable[tuple[str, str, str]]) -> tuple[int, Counter[str], dict[str, str]]:
    ok = 0
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for rel, kind, message in results:
        if not kind:
            ok += 1
            continue
        failures[kind] += 1
        if len(examples) < 5 and kind not in examples:
            examples[kind] = f"{rel}: {message}"
    return ok, failures, examples


def versions() -> dict[str, str]:
    """Installed versions of the peers and of the pydicom they run on."""
    out = {"python": sys.version.split()[0]}
    for dist in ("pydicom", "dicognito", "dcmanon", "psutil"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contender", choices=(*CONTENDERS, "versions"))
    p.add_argument("--in-root", type=Path)
    p.add_argument("--files", type=Path, help="text file: one path relative to --in-root a line")
    p.add_argument("--out", type=Path)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.contender == "versions":
        print(json.dumps(versions()))
        return 0
    if not (args.in_root and args.files and args.out):
        p.error("--in-root, --files and --out are required")
    os.makedirs(args.out, exist_ok=True)
    summary = run(args.contender, args.in_root, args.files, args.out, args.workers)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
