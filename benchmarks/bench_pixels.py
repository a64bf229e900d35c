"""Cost of burned-in text redaction: OCR time per image, and whole-run throughput.

Two measurements on one synthetic corpus (``dicom_deid.synth.generate``, full-size images,
25 % of US and SC images with burned-in names, IDs and dates):

* **OCR per image**, in this process on one core: the first call (engine and model load)
  and the median of ``--repeat`` calls on one image of each kind (US 640x480 RGB with a
  banner, SC 512x512 dose screen, CT 512x512 16-bit without text).
* **Throughput** of the real command line, ``dicom-deid deidentify`` as a subprocess with
  ``--workers W`` (wall clock from spawn to exit: imports, pool start-up, the OCR engine
  load in every worker and every file count) for: no pixel action (Basic Profile), then
  options.cleanImage REDACT_ALL_TEXT and REDACT_SENSITIVE_TEXT with the default OCR scope
  (AUTO) and REDACT_ALL_TEXT with scope ALL (every image is read).

* **Cine loop**, in this process on one core: one synthetic ultrasound cine (``--cine-frames``
  frames, 640x480 RGB, a moving speckle sector, a static name banner, a frame counter that
  changes every frame, and an ID written into one frame only) cleaned with
  REDACT_ALL_TEXT by :class:`~dicom_deid.pixels.PixelCleaner`, once recognising every
  line of every frame and once with the per-image line cache that production uses.

The mapping of each run gives how many files had boxes blanked, and how many of the files
with planted burned-in identifiers did. Results go between the ``bench:pixels`` markers of
BENCHMARKS.md unless ``--no-write``.

Usage: ``.venv/bin/python benchmarks/bench_pixels.py [--patients N] [--seed S]
[--workers W] [--repeat R] [--cine-frames F] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START_MARK = "<!-- bench:pixels:start -->"
END_MARK = "<!-- bench:pixels:end -->"
CONFIGS: dict[str, dict[str, object] | None] = {
    "no pixel action": None,
    "REDACT_ALL_TEXT, scope AUTO": {"mode": "REDACT_ALL_TEXT", "scope": "AUTO"},
    "REDACT_SENSITIVE_TEXT, scope AUTO": {"mode": "REDACT_SENSITIVE_TEXT", "scope": "AUTO"},
    "REDACT_ALL_TEXT, scope ALL": {"mode": "REDACT_ALL_TEXT", "scope": "ALL"},
}


def _corpus(patients: int, seed: int) -> Path:
    """The synthetic corpus for (patients, seed), generated once and cached."""
    from dicom_deid.synth import generate

    out = WORK / f"pixels-corpus-p{patients}-s{seed}"
    if not (out / "answer_key.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        generate(out, patients=patients, seed=seed, bad_inputs=False, burned_in_fraction=0.25)
    return out


def _ocr_per_image(corpus: Path, repeat: int) -> dict[str, object]:
    """Median OCR time per kind of image, one core, after the first (loading) call."""
    import numpy as np
    import pydicom

    from dicom_deid.pixels import ocr
    from dicom_deid.synth import load_answer_key

    key = load_answer_key(corpus)
    picks: dict[str, Path] = {}
    for rec in key.files:
        kind = {"US": "US 640x480 RGB, banner", "OT": "SC 512x512 dose screen",
                "CT": "CT 512x512 16-bit, no text"}.get(rec.modality)
        wants_text = rec.modality != "CT"
        if kind and kind not in picks and bool(rec.burned_in) == wants_text and (
                rec.number_of_frames == 1):
            picks[kind] = corpus / "dicom" / rec.path
    result: dict[str, object] = {}
    first = True
    for kind, path in sorted(picks.items()):
        arr = pydicom.dcmread(path).pixel_array
        image = ocr.to_detection_image(np.asarray(arr))
        if first:
            started = time.perf_counter()
            ocr.find_text(image)
            result["first call (engine load + OCR), ms"] = round(
                (time.perf_counter() - started) * 1000)
            first = False
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            ocr.find_text(image)
            times.append(time.perf_counter() - started)
        result[kind] = round(statistics.median(times) * 1000)
    return result


def _candidates(corpus: Path) -> tuple[int, int, int]:
    """(files, OCR candidates under AUTO, frames those candidates hold)."""
    from dicom_deid.config.model import DeidConfig, ImageConfig, TextRedactionMode
    from dicom_deid.dicom.reader import read_instance
    from dicom_deid.pixels.clean import PixelCleaner

    cleaner = PixelCleaner(DeidConfig(clean_image=ImageConfig(
        TextRedactionMode.REDACT_ALL_TEXT)))
    files = candidates = frames = 0
    for path in sorted((corpus / "dicom").rglob("*")):
        if not path.is_file():
            continue
        files += 1
        ds = read_instance(path).dataset
        if cleaner.wants_ocr(ds):
            candidates += 1
            frames += int(ds.get("NumberOfFrames", 1) or 1)
    return files, candidates, frames


def _cine_dataset(frames: int) -> tuple[object, tuple[int, int, int, int]]:
    """A US cine with a banner, a frame counter and a one-frame ID; and that ID's box."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage

    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 140, (480, 640), dtype=np.uint8)
    yy, xx = np.mgrid[:480, :640]
    sector = ((yy - 40) ** 2 + (xx - 320) ** 2 < 430**2) & (np.abs(xx - 320) < (yy - 40) * 0.8)
    font = ImageFont.load_default(size=16)
    once = frames * 2 // 3
    out = []
    for f in range(frames):
        gray = np.where(sector, np.roll(speckle, f * 3, axis=1), 0).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rgb[:28] = 0
        img = Image.fromarray(rgb)
        draw = ImageDraw.Draw(img)
        draw.text((4, 4), "DOE, JANE   MRN1234567   14/05/2023", fill=(255, 255, 255), font=font)
        draw.text((520, 452), f"FR {f + 1}/{frames}", fill=(255, 255, 0), font=font)
        if f == once:
            draw.text((200, 300), "MRN7654321", fill=(255, 255, 255), font=font)
        out.append(np.asarray(img))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = "2.25.1"
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 480, 640, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.stack(out).tobytes()
    return ds, (once, 300, 200, 290)


def _cine(frames: int) -> dict[str, object]:
    """Seconds to clean one cine with and without the per-image line cache."""
    import contextlib
    import copy

    import numpy as np

    from dicom_deid.config.model import DeidConfig, ImageConfig, TextRedactionMode
    from dicom_deid.pixels import clean as pixels
    from dicom_deid.pixels import ocr

    ds, (once, y, x0, x1) = _cine_dataset(frames)
    cleaner = pixels.PixelCleaner(DeidConfig(clean_image=ImageConfig(
        TextRedactionMode.REDACT_ALL_TEXT)))
    ocr.find_text(np.zeros((64, 64, 3), np.uint8))  # engine load, not timed
    rec = ocr._recognizer()
    result: dict[str, object] = {"frames": frames}
    for label, cached in (("every line recognised", False), ("line cache", True)):
        work = copy.deepcopy(ds)
        if not cached:
            pixels.line_cache = contextlib.nullcontext  # type: ignore[assignment]
        if rec is not None:
            rec.calls = 0
        started = time.perf_counter()
        try:
            boxes = cleaner.clean(work, lambda: None)  # type: ignore[arg-type, return-value]
        finally:
            pixels.line_cache = ocr.line_cache
        seconds = time.perf_counter() - started
        arr = np.frombuffer(work.PixelData, np.uint8).reshape(frames, 480, 640, 3)
        result[label] = {"seconds": round(seconds, 1), "ms_per_frame": round(
            seconds / frames * 1000), "boxes": boxes, "line_images_recognised": (
            rec.calls if rec is not None else None),
            "one_frame_id_blanked": bool((arr[once, y : y + 14, x0:x1] == 0).all())}
    return result


def _run(name: str, spec: dict[str, object] | None, corpus: Path, workers: int,
         key_file: Path) -> dict[str, object]:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    out = WORK / f"pixels-out-{slug}"
    mapping = WORK / f"pixels-mapping-{slug}.parquet"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "dicom-deid"), "deidentify", str(corpus / "dicom"),
           str(out), "--key-file", str(key_file), "--workers", str(workers), "--no-progress",
           "--mapping", str(mapping), "--plain-mapping", "--no-verify",  # pixel work alone
           "--errors", str(WORK / f"pixels-errors-{slug}.csv")]
    if spec is None:
        cmd += ["--profile", "basic"]  # the baseline: no pixel work (not the CLI default)
    if spec is not None:
        cmd += ["--text-redaction", str(spec["mode"]), "--ocr-scope", str(spec["scope"]).lower()]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    rows = pq.read_table(mapping).to_pylist()
    return {"name": name, "seconds": seconds, "files": len(rows),
            "files_per_s": len(rows) / seconds,
            "files_with_boxes": sum(1 for r in rows if r["redacted_boxes"]),
            "boxes": sum(r["redacted_boxes"] for r in rows), "rows": rows}


def _burned_hit(rows: list[dict[str, object]], corpus: Path) -> tuple[int, int]:
    from dicom_deid.synth import load_answer_key

    burned = {r.path for r in load_answer_key(corpus).files if r.burned_in}
    hit = sum(1 for r in rows if r["source_path"] in burned and r["redacted_boxes"])
    return hit, len(burned)


def _markdown(args: argparse.Namespace, corpus: Path, ocr_ms: dict[str, object],
              cand: tuple[int, int, int], runs: list[dict[str, object]],
              cine: dict[str, object]) -> str:
    from dicom_deid.synth import load_answer_key

    key = load_answer_key(corpus)
    kinds = Counter(r.modality for r in key.files)
    base = runs[0]["seconds"]
    lines = [
        f"Run {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}: `benchmarks/bench_pixels.py "
        f"--patients {args.patients} --seed {args.seed} --workers {args.workers}`.",
        "",
        f"Corpus: {len(key.files)} files ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}"
        f"); {sum(1 for r in key.files if r.burned_in)} carry burned-in identifiers "
        "(25 % of US and SC images). OCR candidates under scope AUTO (US/SC/OT/XA/..., "
        f"secondary capture, or BurnedInAnnotation YES): {cand[1]} files, {cand[2]} frames.",
        "",
        "OCR per image, one core, median of "
        f"{args.repeat} after the first call (rapidocr PP-OCRv6 small, onnxruntime, 1 thread):",
        "",
        "| image | ms |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in ocr_ms.items()),
        "",
        f"Whole runs, `dicom-deid deidentify --workers {args.workers}` (wall clock, "
        "subprocess):",
        "",
        "| configuration | seconds | files/s | vs no pixel action | files with boxes | "
        "boxes | burned-in files redacted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        hit, total = _burned_hit(run["rows"], corpus)  # type: ignore[arg-type]
        lines.append(
            f"| {run['name']} | {run['seconds']:.1f} | {run['files_per_s']:.0f} | "
            f"{run['seconds'] / base:.1f}x | {run['files_with_boxes']} | {run['boxes']} | "
            f"{hit if run is not runs[0] else 0}/{total} |")
    lines += [
        "",
        f"Cine loop, one core: {cine['frames']} frames 640x480 RGB (moving sector, static name "
        "banner, frame counter changing every frame, an ID written into one frame only), "
        "REDACT_ALL_TEXT, `PixelCleaner.clean` in this process (decode + OCR + blanking):",
        "",
        "| recognition | seconds | ms/frame | line images recognised | boxes | "
        "one-frame ID blanked |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label in ("every line recognised", "line cache"):
        row: dict[str, object] = cine[label]  # type: ignore[assignment]
        lines.append(f"| {label} | {row['seconds']} | {row['ms_per_frame']} | "
                     f"{row['line_images_recognised']} | {row['boxes']} | "
                     f"{'yes' if row['one_frame_id_blanked'] else 'NO'} |")
    return "\n".join(lines)


def _write(text: str) -> None:
    md = BENCHMARKS_MD.read_text()
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    if START_MARK in md:
        head, rest = md.split(START_MARK, 1)
        md = head + block + rest.split(END_MARK, 1)[1]
    else:
        md = md.rstrip("\n") + "\n\n## Burned-in text redaction (cleanImage)\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(md)


def main() -> int:
    """Run the benchmark; print (and unless --no-write, record) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cine-frames", type=int, default=48)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args.patients, args.seed)
    key_file = WORK / "pixels-bench.key"
    if not key_file.exists():
        key_file.write_text(os.urandom(32).hex())
    ocr_ms = _ocr_per_image(corpus, args.repeat)
    cine = _cine(args.cine_frames)
    cand = _candidates(corpus)
    runs = [_run(name, spec, corpus, args.workers, key_file) for name, spec in CONFIGS.items()]
    text = _markdown(args, corpus, ocr_ms, cand, runs, cine)
    print(text)
    print(json.dumps({"ocr_ms": ocr_ms, "cine": cine}, indent=1))
    if not args.no_write:
        _write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
