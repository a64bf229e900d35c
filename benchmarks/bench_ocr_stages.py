"""Where burned-in text redaction spends its time, stage by stage (issue 17, item 2).

Every image at risk of a generated corpus (ultrasound with banners and cine loops,
secondary captures) is cleaned by the real :meth:`PixelCleaner.clean` under the
privacy-first default (``REDACT_SENSITIVE_TEXT``, ``ocrScope`` AUTO), in this process on
one core; the functions it calls are wrapped with timers, so each stage is timed where
production runs it:

- ``decode``: pixel data to frames (pydicom's decoders) and the 8-bit detection images;
- ``detect``: ``find_text`` (one call per distinct frame) less recognition: the detection
  model, its pre- and post-processing, cropping the lines;
- ``recognise``: rapidocr's ``TextRecognizer`` (the line images not seen before in the
  image);
- ``match``: each line judged against the instance's values and the sensitive patterns
  (``text.banner.line_spans``);
- ``encode``: the boxes blanked and the pixel data stored again;
- ``other``: the rest of ``clean`` (frame hashes, the line cache, boxes, bookkeeping).

Only functions every version of the cleaner has are wrapped, so an earlier checkout can
be measured the same way: ``PYTHONPATH=OTHER/plugins .venv/bin/python
benchmarks/bench_ocr_stages.py``. ``--repeat N`` cleans every image N times and reports
the pass with the least time in ``clean`` (the machine is shared). ``--detector
original`` runs the wheel's own detection model instead of the int8 copy (what a CPU
without VNNI runs). ``--write`` replaces the section between the ``bench:ocr-stages``
markers of BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_ocr_stages.py [--patients 12] [--seed 5]
        [--repeat 1] [--detector int8|original] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench_deidentify import write_markdown
from dicom_deid.config.model import privacy_first
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.dicom.reader import parse_instance
from dicom_deid.pixels import clean as pc
from dicom_deid.pixels import ocr
from dicom_deid.synth import generate

KEY = bytes(range(32))
STAGES = ("decode", "detect", "recognise", "match", "encode", "other")
OCR = "ocr"
"""find_text as a whole; detect is this less recognise."""
START_MARK = "<!-- bench:ocr-stages:start -->"
END_MARK = "<!-- bench:ocr-stages:end -->"
LABELS = {
    "decode": "decode (pixel data to frames, 8-bit detection images)",
    "detect": "detect (`find_text` less recognition: model, pre- and post-processing)",
    "recognise": "recognise (rapidocr's `TextRecognizer`, lines not seen before)",
    "match": "match (`line_spans` against the instance's values and the patterns)",
    "encode": "encode (boxes blanked, pixel data stored)",
    "other": "other (frame hashes, line cache, bookkeeping)",
}


class Timers:
    """Seconds and calls per stage, filled by the wrapped functions."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((*STAGES, OCR), 0.0)
        self.calls = dict.fromkeys((*STAGES, OCR), 0)
        self.items = dict.fromkeys((*STAGES, OCR), 0)

    def wrap(self, stage: str, fn: Callable[..., Any],
             count: Callable[[tuple[Any, ...]], int] | None = None) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started
                self.calls[stage] += 1
                self.items[stage] += count(args) if count else 1
        return timed


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """Within this block, what the cleaner calls is timed: module attributes (looked up at
    call time) and rapidocr's recogniser at class level, so a cache in front of it is not
    timed. Everything is put back on exit."""
    from rapidocr.ch_ppocr_rec.main import TextRecognizer

    def line_images(args: tuple[Any, ...]) -> int:
        img = args[1].img
        return 1 if isinstance(img, np.ndarray) else len(img)

    targets: list[tuple[Any, str, str, Callable[[tuple[Any, ...]], int] | None]] = [
        (TextRecognizer, "__call__", "recognise", line_images),
        (pc, "find_text", OCR, None),
        (pc, "_open_pixels", "decode", None),
        (pc, "to_detection_image", "decode", None),
        (pc, "line_spans", "match", None),
    ]
    for cls in (pc._NativePixels, pc._BitPixels, pc._EncapsulatedPixels):
        targets += [(cls, "fill", "encode", None), (cls, "store", "encode", None)]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _, _ in targets]
    try:
        for owner, name, stage, count in targets:
            setattr(owner, name, timers.wrap(stage, getattr(owner, name), count))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def at_risk_images(patients: int, seed: int) -> list[bytes]:
    """The bytes of every image the privacy-first default reads by OCR, in path order."""
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    generate(work / "corpus", patients=patients, seed=seed, bad_inputs=False,
             duplicates=False)
    cleaner = Deidentifier(privacy_first(), KEY).pixels
    assert cleaner is not None
    found = []
    for path in sorted((work / "corpus" / "dicom").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if cleaner.wants_ocr(parse_instance(data).dataset):
                found.append(data)
    return found


def clean_all(images: list[bytes]) -> tuple[Timers, float, int, int, int]:
    """One pass: every image cleaned with fresh timers; (timers, seconds in clean, frames,
    boxes, lines kept)."""
    deid = Deidentifier(privacy_first(), KEY)
    cleaner = deid.pixels
    assert cleaner is not None
    timers = Timers()
    frames = boxes = kept = 0
    whole = 0.0
    with instrumented(timers):
        for data in images:
            ds = parse_instance(data).dataset
            frames += int(ds.get("NumberOfFrames", 1) or 1)
            readout = pc.OcrReadout()
            started = time.perf_counter()
            boxes += cleaner.clean(ds, functools.partial(deid._pixel_context, ds), readout)
            whole += time.perf_counter() - started
            kept += len(readout.kept)
    timers.seconds["detect"] = timers.seconds[OCR] - timers.seconds["recognise"]
    timers.calls["detect"] = timers.calls[OCR]
    timers.seconds["other"] = whole - sum(timers.seconds[s] for s in STAGES)
    return timers, whole, frames, boxes, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="passes; the fastest reported")
    parser.add_argument("--detector", choices=("int8", "original"), default="int8",
                        help="int8: the copy CPUs with VNNI run; original: the wheel's model")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    chooser = getattr(ocr, "detection_model", None)
    if args.detector == "original" and chooser is not None:
        original = ocr.models_dir() / ocr._DET_MODEL
        ocr.detection_model = lambda: original
    model = ocr.detection_model().name if chooser is not None else ocr._DET_MODEL
    detector = args.detector if chooser is not None else "original (the only one there)"
    checkout = Path(pc.__file__).resolve().parents[3]
    images = at_risk_images(args.patients, args.seed)
    ocr.find_text(np.zeros((64, 64, 3), np.uint8))  # engine and models loaded, not timed
    passes = [clean_all(images) for _ in range(args.repeat)]
    timers, whole, frames, boxes, kept = min(passes, key=lambda p: p[1])
    n = max(len(images), 1)
    lines = [
        START_MARK,
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`benchmarks/bench_ocr_stages.py --patients {args.patients} --seed {args.seed} "
        f"--repeat {args.repeat}`, detector {detector}, on `{checkout.name}` "
        f"(one core; detection model `{model}`; the fastest of {args.repeat} pass(es), "
        f"all: {', '.join(f'{p[1]:.1f}' for p in passes)} s): {len(images)} images at risk, "
        f"{frames} frames ({timers.calls['detect']} distinct, detected), "
        f"{timers.items['recognise']} line images recognised, {timers.calls['match']} lines "
        f"judged ({kept} kept), {boxes} boxes blanked; {whole:.2f} s in `clean`, "
        f"{1000 * whole / n:.0f} ms per image.",
        "",
        "| stage | s (total) | ms per image | share |",
        "|---|--:|--:|--:|",
    ]
    for stage in STAGES:
        seconds = timers.seconds[stage]
        lines.append(f"| {LABELS[stage]} | {seconds:.2f} | {1000 * seconds / n:.0f} "
                     f"| {100 * seconds / (whole or 1.0):.0f} % |")
    lines.append(END_MARK)
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_markdown(section, START_MARK, END_MARK)


if __name__ == "__main__":
    main()
