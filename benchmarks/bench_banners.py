"""Burned-in banners under REDACT_SENSITIVE_TEXT: how many identifying lines survive.

The synthetic generator burns banners into ultrasound images that spell the patient's
name and the institution unlike the header (``SMITH, JOHN``, ``SMITH^J``, the institution
cut to 30 characters, romaji where the header has kanji); its answer key records what was
drawn. This script de-identifies those images with ``cleanImage`` in
``REDACT_SENSITIVE_TEXT`` (the batch, as the CLI runs it), reads every input and output
back with the same OCR engine, and counts the banner values (name, ID, institution)
readable before and after. It prints a Markdown table for BENCHMARKS.md. ``--engine-path``
runs the de-identification with another checkout's ``plugins`` folder (e.g. a commit
before the sensitive modes matched banners loosely), for comparison.

    python benchmarks/bench_banners.py [--patients 12] [--seed 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from dicom_deid.config.google import load_config
from dicom_deid.deid.batch import Source, run_batch
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.pixels.ocr import find_text, to_detection_image
from dicom_deid.synth import generate

KEY = bytes(range(32))


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _readable(path: Path, values: list[str]) -> set[str]:
    """The banner values whose letters and digits OCR reads back in the first frame."""
    ds = pydicom.dcmread(path, force=True)  # the corpus has raw datasets too
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = parse_instance(path.read_bytes()).transfer_syntax
    frame = ds.pixel_array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    lines = find_text(to_detection_image(frame, ds.PhotometricInterpretation == "MONOCHROME1"))
    read = _norm(" ".join(line.text for line in lines))
    return {v for v in values if _norm(v) and _norm(v) in read}


def _run_other_engine(plugins: Path, banners: list, root: Path, work: Path) -> int:
    """The CLI of another checkout over the banner images (copied: it walks a folder)."""
    inputs = work / "banners"
    for rec in banners:
        (inputs / rec.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rec.path, inputs / rec.path)
    (work / "config.json").write_text(json.dumps({"dicomTagConfig": {"options": {
        "cleanImage": {"textRedactionMode": "REDACT_SENSITIVE_TEXT"}}}}))
    (work / "key").write_text(KEY.hex())
    subprocess.run([sys.executable, "-c", "from dicom_deid.cli.main import main; "
                    "import sys; sys.exit(main(sys.argv[1:]))", "deidentify", str(inputs),
                    str(work / "out"), "--key-file", str(work / "key"), "--config",
                    str(work / "config.json"), "--layout", "relative", "--no-progress",
                    "--no-verify"],  # what the cleaner left, before any gate
                   env={**os.environ, "PYTHONPATH": str(plugins)}, check=False)
    return sum(1 for p in (work / "out").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--engine-path", type=Path, default=None,
                        help="de-identify with the dicom_deid under this plugins folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-banners-"))
    key = generate(work / "corpus", patients=args.patients, seed=args.seed, bad_inputs=False,
                   duplicates=False)
    root = work / "corpus" / "dicom"
    banners = [r for r in key.files if r.modality == "US" and r.burned_in]
    sources = [Source(str(root / r.path), r.path) for r in banners]
    config = load_config({"dicomTagConfig": {"options": {"cleanImage": {
        "textRedactionMode": "REDACT_SENSITIVE_TEXT"}}}})
    started = time.perf_counter()
    if args.engine_path is None:
        processed = run_batch(sources, work / "out", config, KEY, workers=2, layout="relative",
                              progress=False).processed
    else:
        processed = _run_other_engine(args.engine_path, banners, root, work)
    seconds = time.perf_counter() - started
    before = after = 0
    survivors: dict[str, int] = {"name": 0, "id": 0, "institution": 0}
    for rec in banners:
        name, patient_id, _date, institution = rec.burned_in
        values = {"name": name, "id": patient_id, "institution": institution}
        read_in = _readable(root / rec.path, list(values.values()))
        read_out = _readable(work / "out" / rec.path, list(values.values()))
        before += len(read_in)
        after += len(read_out)
        for kind, value in values.items():
            survivors[kind] += value in read_out
    print(json.dumps({"images": len(banners), "processed": processed,
                      "seconds": round(seconds, 1)}))
    print("| banner values | readable in the inputs | readable after REDACT_SENSITIVE_TEXT |")
    print("|---|--:|--:|")
    print(f"| name, ID, institution ({len(banners)} US images) | {before} | {after} |")
    print("survivors by kind:", survivors)


if __name__ == "__main__":
    main()
