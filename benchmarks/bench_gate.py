"""What the verification gate adds to de-identification, without OCR.

The pipeline's workers de-identify each file, then check the output against its source
(:mod:`dicom_deid.deid.gate`) and make its de-identified metadata row. This measures the
three, one after the other, on one core (``run_batch`` in this process, ``workers=1``):

- ``deidentify``: the privacy-first policy, no gate;
- ``+ gate``: the same with the gate (source values at any depth, the output searched,
  structure checked, SHA-256 of every output);
- ``+ gate + metadata``: also the metadata row the load step uses instead of re-reading;
- ``+ metadata``: the metadata row without the gate (its ``content_sha256`` then hashes
  every output itself), so that the last two give what the gate adds to what the
  pipeline's workers do anyway.

The corpus is generated; images at risk of burned-in text (ultrasound, secondary
captures, anything with text drawn in) are left out, since on them OCR dominates and the
issue's goal is stated without OCR. CPU seconds of this process (user + system) are the
measure; each contender runs ``--repeat`` times, in rotating order, medians reported.

    .venv/bin/python benchmarks/bench_gate.py [--patients 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dicom_deid.config.model import privacy_first
from dicom_deid.deid.batch import Source, run_batch
from dicom_deid.pixels.clean import TEXT_PRONE_MODALITIES
from dicom_deid.synth import generate

KEY = bytes(range(32))
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # One core throughout: the contenders' CPU seconds then differ by their work, not by
    # which core (and which of its caches) the scheduler gave each round.
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    key = generate(work / "corpus", patients=args.patients, seed=args.seed, bad_inputs=False,
                   duplicates=False)
    root = work / "corpus" / "dicom"
    records = [r for r in key.files if r.modality.upper() not in TEXT_PRONE_MODALITIES
               and not r.sop_class_uid.startswith(_SECONDARY_CAPTURE) and not r.burned_in]
    sources = [Source(str(root / r.path), r.path) for r in records]
    size = sum(os.path.getsize(s.path) for s in sources)
    config = privacy_first()
    contenders: dict[str, dict[str, Any]] = {
        "deidentify": {},
        "+ gate": {"gate": ()},
        "+ gate + metadata": {"gate": (), "metadata": True},
        "+ metadata": {"metadata": True},
    }
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for _ in range(2):  # warm the page cache and the per-process caches, unmeasured
        run_batch(sources, work / "out", config, KEY, workers=1, progress=False)
        shutil.rmtree(work / "out")
    for round_no in range(args.repeat):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            options = contenders[name]
            out = work / "out"
            started, cpu0 = time.perf_counter(), _cpu()
            summary = run_batch(
                sources, out, config, KEY, workers=1, progress=False,
                gate=options.get("gate"),
                verdicts_path=work / "v.parquet" if "gate" in options else None,
                metadata_path=work / "m.parquet" if options.get("metadata") else None)
            cpu[name].append(_cpu() - cpu0)
            wall[name].append(time.perf_counter() - started)
            assert summary.processed == len(sources) and summary.rejected == 0
            shutil.rmtree(out)
    base = statistics.median(cpu["deidentify"])
    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
          f"`benchmarks/bench_gate.py --patients {args.patients} --seed {args.seed} "
          f"--repeat {args.repeat}`; {os.cpu_count()} cores (pinned to core {core}), Python "
          f"{platform.python_version()}.")
    print(f"Corpus: {len(sources)} files, {size / 2**20:.0f} MiB (generated; images at risk "
          "of burned-in text left out).\n")
    print("| contender | CPU s (median) | min–max | wall s (median) | files/s (CPU) "
          "| added to de-identification |")
    print("|---|--:|--:|--:|--:|--:|")
    for name in names:
        med = statistics.median(cpu[name])
        added = "—" if name == "deidentify" else f"{(med / base - 1) * 100:+.1f} %"
        print(f"| {name} | {med:.2f} | {min(cpu[name]):.2f}–{max(cpu[name]):.2f} "
              f"| {statistics.median(wall[name]):.2f} | {len(sources) / med:.0f} | {added} |")
    worker = statistics.median(cpu["+ metadata"])
    print(f"\nThe gate over the pipeline's worker without it (`+ metadata`, {worker:.2f} s): "
          f"{(statistics.median(cpu['+ gate + metadata']) / worker - 1) * 100:+.1f} %.")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
