"""Where burned-in text redaction spends its time, stage by stage (issue 17, item 2).

Every image at risk of a generated corpus (ultrasound with banners, secondary captures)
goes through what the Dataset path does to it under the privacy-first default, one
stage at a time on one core, each timed on its own:

- ``decode``: pixel data to frames (pydicom's decoders), and the 8-bit detection images;
- ``detect`` and ``recognise``: rapidocr's own per-stage times (``elapse_list``) for the
  distinct frames (identical frames are read once, as the cleaner does);
- ``match``: each line judged against the instance's identifying values and the
  sensitive patterns (``text.banner.line_spans``);
- ``encode``: the boxes blanked and the pixel data stored again.

    .venv/bin/python benchmarks/bench_ocr_stages.py [--patients 12] [--seed 5]

Prints a Markdown table (seconds in total, per image, share) and the counts behind it.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from dicom_deid.config.model import privacy_first
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.pixels import clean as pc
from dicom_deid.pixels.ocr import _engine, find_text
from dicom_deid.synth import generate
from dicom_deid.text.banner import line_spans

KEY = bytes(range(32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    generate(work / "corpus", patients=args.patients, seed=args.seed, bad_inputs=False,
             duplicates=False)
    deid = Deidentifier(privacy_first(), KEY)
    cleaner = deid.pixels
    assert cleaner is not None
    totals = {k: 0.0 for k in ("decode", "detect", "recognise", "match", "encode")}
    images = frames = distinct = lines = redacted = 0
    find_text(pc.to_detection_image(__import__("numpy").zeros((64, 64), "uint8")))  # warm
    for path in sorted((work / "corpus" / "dicom").rglob("*")):
        if not path.is_file():
            continue
        ds = parse_instance(path.read_bytes()).dataset
        if not cleaner.wants_ocr(ds):
            continue
        images += 1
        started = time.perf_counter()
        pixels = pc._open_pixels(ds)
        detection = list(pixels.detection_frames())
        totals["decode"] += time.perf_counter() - started
        frames += len(detection)
        context = deid._pixel_context(ds)
        boxes: set[pc.Box] = set()
        seen: set[bytes] = set()
        for frame in detection:
            digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            distinct += 1
            result = _engine()(frame, use_det=True, use_cls=False, use_rec=True)
            det, _cls, rec = [*(result.elapse_list or []), 0.0, 0.0, 0.0][:3]
            totals["detect"] += float(det or 0.0)
            totals["recognise"] += float(rec or 0.0)
            found = find_text(frame)  # the same call as the cleaner's, for its lines
            started = time.perf_counter()
            for line in found:
                lines += 1
                if line_spans(line.text, context, include=cleaner.include,
                              exclude=cleaner.exclude):
                    box = pc._padded(line.box).clip(pixels.rows, pixels.cols)
                    if box is not None:
                        boxes.add(box)
            totals["match"] += time.perf_counter() - started
        started = time.perf_counter()
        if boxes:
            pixels.fill(sorted(boxes))
            pixels.store(ds)
        totals["encode"] += time.perf_counter() - started
        redacted += len(boxes)
    whole = sum(totals.values()) or 1.0
    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
          f"`benchmarks/bench_ocr_stages.py --patients {args.patients} --seed {args.seed}`: "
          f"{images} images at risk, {frames} frames ({distinct} distinct, read by OCR), "
          f"{lines} text lines, {redacted} boxes blanked.\n")
    print("| stage | s (total) | ms per image | share |")
    print("|---|--:|--:|--:|")
    for stage, seconds in totals.items():
        print(f"| {stage} | {seconds:.2f} | {1000 * seconds / max(images, 1):.0f} "
              f"| {100 * seconds / whole:.0f} % |")


if __name__ == "__main__":
    main()
