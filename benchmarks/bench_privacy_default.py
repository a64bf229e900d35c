"""The privacy-first default at full speed (issue 17, item 4): the command line's default
policy with the verification gate, against the same run without pixel cleaning.

Corpus: the synthetic one of ``bench_deidentify.py`` (``synth.generate``, full-size images,
cached under ``benchmarks/work/``; 280 patients give over 5,000 files, about 12 % of them
images at risk of burned-in text: ultrasound with banners and cine loops, secondary
captures). "At risk" is decided as the cleaner decides it, from each file's header
(``PixelCleaner.wants_ocr`` under the privacy-first policy); the count is cached next to
the corpus.

Runs, each the real ``dicom-deid deidentify`` as one subprocess with ``--workers W``
(timed from outside, spawn to exit; outputs deleted, disk synced, page cache dropped or
61 s waited, input read once, a quiet machine awaited, as in ``bench_deidentify.py``):

``no pixel cleaning``
    ``--profile basic --option CleanDescriptors``: the default policy less its pixel
    cleaning (the residual sweep is on in both), no gate;
``default``
    no policy option (the privacy-first default: burned-in text of images at risk
    redacted where it identifies), no gate;
``default + verify``
    the same with ``--verify``: every output checked by the gate, which judges again the
    lines the cleaner's OCR read and kept (no second OCR);
``default + verify, 1/5 corpus``
    the same on a corpus of a fifth of the patients, for peak memory against corpus size.

At-risk images per second = images at risk / (wall of ``default + verify`` - wall of ``no
pixel cleaning``): everything the default run does beyond the run without pixel work
(decoding, OCR, re-encoding, the Dataset path, and the gate on every file) is charged to
the images at risk. The byte-path count of each run's summary line is compared with the
number of files without pixel work (files less images at risk).

    .venv/bin/python benchmarks/bench_privacy_default.py [--patients 280] [--seed 2026]
        [--workers 2] [--repeat 1] [--write]

``--patients 5 --repeat 1`` is a smoke check of about a minute. ``--write`` replaces the
section between the ``bench:privacy-default`` markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass

from bench_deidentify import (
    WORK,
    Corpus,
    Measured,
    compile_engine,
    deid_bin,
    key_file,
    machine,
    measure,
    prepare_out,
    project_commit,
    synth_corpus,
    wait_for_quiet,
    warm,
    write_markdown,
)

START_MARK = "<!-- bench:privacy-default:start -->"
END_MARK = "<!-- bench:privacy-default:end -->"
GOAL_AT_RISK_PER_S = 10.0
FLAT_TOLERANCE = 1.25
"""Peak RSS counts as flat when the full corpus needs at most this times the 1/5 one's."""
_SUMMARY = re.compile(r"processed (\d+), failed (\d+), skipped (\d+) .*?(\d+) by the byte path")
RUNS = {
    "no pixel cleaning": ["--profile", "basic", "--option", "CleanDescriptors", "--no-verify"],
    "default": ["--no-verify"],  # the policy alone (the CLI's default also runs the gate)
    "default + verify": ["--verify"],
}
MEASURED = "default + verify"
BASELINE = "no pixel cleaning"


@dataclass
class AtRisk:
    """The images of a corpus the privacy-first default reads by OCR."""

    paths: list[str]
    frames: int
    by_modality: dict[str, int]

    @property
    def images(self) -> int:
        return len(self.paths)


def at_risk(corpus: Corpus) -> AtRisk:
    """Count (once per corpus, cached beside it) the files whose pixels the default cleans."""
    cache = corpus.dicom_dir.parent / "at_risk.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        if "paths" in data:
            return AtRisk(**data)
    from dicom_deid.config.model import privacy_first
    from dicom_deid.dicom.reader import parse_instance
    from dicom_deid.errors import BadInput
    from dicom_deid.pixels.clean import PixelCleaner

    cleaner = PixelCleaner(privacy_first())
    paths, frames = [], 0
    modalities: Counter[str] = Counter()
    for rel in corpus.rel_paths():
        try:
            ds = parse_instance((corpus.dicom_dir / rel).read_bytes()).dataset
        except BadInput:
            continue
        if cleaner.wants_ocr(ds):
            paths.append(rel)
            frames += int(ds.get("NumberOfFrames", 1) or 1)
            modalities[str(ds.get("Modality", "?"))] += 1
    found = AtRisk(paths, frames, dict(sorted(modalities.items())))
    cache.write_text(json.dumps(found.__dict__, indent=1) + "\n")
    return found


@dataclass
class Outcome:
    """One run's measurement and its summary line."""

    name: str
    corpus: str
    measured: Measured
    processed: int
    failed: int
    byte_path: int
    failures: dict[str, int]
    failed_paths: set[str]


def run(name: str, corpus: Corpus, label: str, workers: int) -> Outcome:
    """One timed ``dicom-deid deidentify`` over ``corpus`` with run ``name``'s options."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"privacy {name} {label}").strip("-")
    out, _dropped = prepare_out(slug)
    errors = WORK / f"{slug}-errors.csv"
    warm(corpus)
    wait_for_quiet()
    cmd = [str(deid_bin()), "deidentify", str(corpus.dicom_dir), str(out), *RUNS[name],
           "--key-file", str(key_file()), "--workers", str(workers), "--no-progress",
           "--errors", str(errors)]
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    m = measure(cmd, logs / slug)
    found = _SUMMARY.search(m.stdout)
    if m.returncode not in (0, 3) or not found:
        tail = (m.stderr.strip().splitlines() or ["(no stderr)"])[-1][:200]
        raise SystemExit(f"{name} ({label}) failed with exit {m.returncode}: {tail}")
    processed, failed, skipped, byte_path = (int(v) for v in found.groups())
    kinds: Counter[str] = Counter()
    failed_paths = set()
    if errors.exists():
        with open(errors, newline="") as fh:
            for row in csv.DictReader(fh):
                kinds[row["kind"]] += 1
                failed_paths.add(row["path"])
    return Outcome(name, label, m, processed, failed + skipped, byte_path, dict(kinds),
                   failed_paths)


def median_wall(runs: list[Outcome]) -> float:
    return statistics.median(r.measured.wall for r in runs)


def report(args: argparse.Namespace, corpora: dict[str, Corpus], risk: dict[str, AtRisk],
           runs: list[Outcome]) -> str:
    """The Markdown section: the table, then the goals, each met or not."""
    full, fifth = corpora["full"], corpora["fifth"]
    by: dict[tuple[str, str], list[Outcome]] = {}
    for r in runs:
        by.setdefault((r.name, r.corpus), []).append(r)
    mach = machine()
    lines = [
        START_MARK,
        f"Run {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} by "
        f"`benchmarks/bench_privacy_default.py --patients {args.patients} --seed {args.seed} "
        f"--workers {args.workers} --repeat {args.repeat}`{project_commit()}; "
        f"{mach['nproc']} cores ({mach['cpu']}), Python {mach['python']}.",
        "",
        f"Corpus: {full.files} files, {full.megabytes:.0f} MB (`synth.generate(patients="
        f"{args.patients}, seed={args.seed})`); {risk['full'].images} images at risk "
        f"({100 * risk['full'].images / full.files:.1f} %; "
        + ", ".join(f"{k} {v}" for k, v in risk["full"].by_modality.items())
        + f"; {risk['full'].frames} frames). The 1/5 corpus: {fifth.files} files, "
        f"{risk['fifth'].images} at risk. Wall times are medians of {args.repeat} run(s) "
        "(min-max in brackets); other load = CPU used by anything else on the machine "
        "during the run, as a share of all cores.",
        "",
        "| run | corpus files | wall s | files/s | byte path (summary line) "
        "| failed | peak RSS MB (tree) | CPU s | other load % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (name, label), group in by.items():
        corpus = corpora[label]
        wall = median_wall(group)
        last = group[-1]
        kinds = ", ".join(f"{k} {v}" for k, v in last.failures.items())
        walls = [r.measured.wall for r in group]
        lines.append(
            f"| {name} | {corpus.files} | {wall:.1f} ({min(walls):.1f}-{max(walls):.1f}) "
            f"| {corpus.files / wall:.0f} "
            f"| {last.byte_path} | {last.failed}{f' ({kinds})' if kinds else ''} "
            f"| {statistics.median(r.measured.peak_tree_rss for r in group) / 1e6:.0f} "
            f"| {statistics.median(r.measured.cpu_seconds for r in group):.0f} "
            f"| {100 * statistics.median(r.measured.other_cpu_share for r in group):.0f} |")
    base = median_wall(by[(BASELINE, "full")])
    measured = median_wall(by[(MEASURED, "full")])
    plain = median_wall(by[("default", "full")])
    images = risk["full"].images
    rate = images / (measured - base) if measured > base else float("inf")
    no_gate = images / (plain - base) if plain > base else float("inf")
    best = images / max(1e-9, min(r.measured.wall for r in by[(MEASURED, "full")])
                        - min(r.measured.wall for r in by[(BASELINE, "full")]))
    baseline = by[(BASELINE, "full")][-1]
    # every file the run without pixel work wrote took the byte path there; of those, the
    # images at risk (skipped duplicates left out) are the ones the default must decode
    at_risk_written = len(set(risk["full"].paths) - baseline.failed_paths)
    expected = baseline.byte_path - at_risk_written
    byte_path = by[(MEASURED, "full")][-1].byte_path
    small = statistics.median(r.measured.peak_tree_rss for r in by[(MEASURED, "fifth")])
    large = statistics.median(r.measured.peak_tree_rss for r in by[(MEASURED, "full")])
    growth = large / small
    lines += [
        "",
        f"**At least {GOAL_AT_RISK_PER_S:g} images at risk per second on {args.workers} "
        f"cores, gate included: {'MET' if rate >= GOAL_AT_RISK_PER_S else 'NOT MET'}** — "
        f"{images} images at risk / ({measured:.1f} s - {base:.1f} s) = **{rate:.1f} "
        f"images/s** (medians; from the fastest runs: {best:.1f}/s). The gate's work on all "
        f"{full.files} files ({measured - plain:+.1f} s against the default without "
        f"`--verify`) is charged to the images at risk too; without the gate: {images} / "
        f"({plain:.1f} s - {base:.1f} s) = {no_gate:.1f}/s.",
        f"**Files without pixel work on the byte path: "
        f"{'MET' if byte_path == expected else 'NOT MET'}** — the summary line says "
        f"{byte_path} by the byte path; the run without pixel cleaning wrote "
        f"{baseline.byte_path} files by the byte path, {at_risk_written} of them images at "
        f"risk: {expected} files need no pixel work ({baseline.failed} inputs are "
        "re-sent duplicates, skipped in every run).",
        f"**Peak memory flat in corpus size: "
        f"{'MET' if growth <= FLAT_TOLERANCE else 'NOT MET'}** (within {FLAT_TOLERANCE:g}x) — "
        f"{fifth.files} files: {small / 1e6:.0f} MB; {full.files} files: {large / 1e6:.0f} MB "
        f"({growth:.2f}x for {full.files / fifth.files:.1f}x the files).",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=280)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="rounds; medians reported")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args(argv)
    compile_engine()
    corpora = {"full": synth_corpus(args.patients, args.seed),
               "fifth": synth_corpus(max(1, round(args.patients / 5)), args.seed)}
    risk = {label: at_risk(c) for label, c in corpora.items()}
    for label, c in corpora.items():
        print(f"{label}: {c.files} files, {risk[label].images} images at risk "
              f"({risk[label].frames} frames)", flush=True)
    jobs = [(name, "full") for name in RUNS] + [(MEASURED, "fifth")]
    runs: list[Outcome] = []
    for rnd in range(args.repeat):
        shift = rnd % len(jobs)
        for name, label in jobs[shift:] + jobs[:shift]:
            outcome = run(name, corpora[label], label, args.workers)
            runs.append(outcome)
            m = outcome.measured
            print(f"  round {rnd + 1} {name:<18} {label:<5} {m.wall:7.1f} s  byte path "
                  f"{outcome.byte_path:5}  failed {outcome.failed}  peak "
                  f"{m.peak_tree_rss / 1e6:5.0f} MB", flush=True)
    section = report(args, corpora, risk, runs)
    print()
    print(section)
    if args.write:
        write_markdown(section, START_MARK, END_MARK)
    return 0


if __name__ == "__main__":
    sys.exit(main())
