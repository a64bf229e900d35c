"""Inputs a landing zone holds besides good instances: planted bad inputs (zero-byte,
truncated, non-DICOM and unknown-charset files, which a reader must reject or quarantine)
and re-sent instances (a few images written a second time under another name, in another
transfer syntax -- an RLE-compressed copy, or the other native syntax -- with modification
times set so that the rule a batch applies -- the newest input wins, equal times the path
first in sort order -- has one right answer, recorded in the answer key)."""

from __future__ import annotations

import dataclasses
import io
import os

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from .answer_key import Duplicate, FileRecord, PlantedBadInput
from .pixels import UNCOMPRESSED, png_bytes, rle_frame
from .planning import GenerationContext
from .writing import store


def _clone(ctx: GenerationContext, record: FileRecord) -> tuple[Dataset, bytes]:
    """Re-write a good file with a fresh SOP Instance UID (so outputs never collide)."""
    ds = dcmread(ctx.root / record.path)
    ds.SOPInstanceUID = ctx.uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return ds, buf.getvalue()


def _meta_end(data: bytes) -> int:
    """Offset just past the file meta group (from its group length)."""
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def write_bad_inputs(ctx: GenerationContext) -> list[PlantedBadInput]:
    """Zero-byte, truncated (pixel data, header), non-DICOM and unknown-charset files."""
    recs = ctx.records
    folder = [r.path.rsplit("/", 1)[0] for r in recs]
    native = [
        r
        for r in recs
        if r.has_file_meta
        and r.transfer_syntax_uid in UNCOMPRESSED
        and r.modality in ("CT", "MR", "CR")
    ] or [r for r in recs if r.has_file_meta]
    bad: list[PlantedBadInput] = []

    def put(where: str, name: str, data: bytes, reason: str) -> None:
        rel = f"{where}/{name}"
        store(ctx, rel, data)
        bad.append(PlantedBadInput(rel, reason))

    put(folder[-1], ctx.file_name(False), b"", "zero-byte")
    src = native[len(native) // 2]
    ds, data = _clone(ctx, src)
    cut = len(data) - len(ds.PixelData) // 2
    put(src.path.rsplit("/", 1)[0], ctx.file_name(True), data[:cut], "truncated")
    src = native[0]
    _, data = _clone(ctx, src)
    put(
        src.path.rsplit("/", 1)[0], ctx.file_name(False), data[: _meta_end(data) + 200], "truncated"
    )
    put(
        folder[len(folder) // 3],
        ctx.file_name(False),
        b"Transfer log\nbatch 7 complete, 0 errors\n",
        "not-dicom",
    )
    put(folder[2 * len(folder) // 3], ctx.file_name(True), png_bytes(), "not-dicom")
    latin = [r for r in recs if r.charset == "ISO_IR 100" and r.has_file_meta]
    if latin:
        _, data = _clone(ctx, latin[0])
        data = data.replace(b"ISO_IR 100", b"ISO_IR 999")
        put(latin[0].path.rsplit("/", 1)[0], ctx.file_name(True), data, "bad-charset")
    return bad


_EPOCH_S = 1_767_225_600
"""2026-01-01T00:00Z: re-sent pairs get modification times in the month after it."""
_SHARE = 40
"""About one instance in this many is re-sent (at least two per corpus)."""


def _winner(paths: tuple[str, ...], mtimes_ns: tuple[int, ...]) -> str:
    """The batch rule: latest modification time; equal times, the path first in sort order."""
    return min(zip(paths, mtimes_ns, strict=True), key=lambda pm: (-pm[1], pm[0]))[0]


def _recoded(ctx: GenerationContext, record: FileRecord) -> tuple[bytes, str]:
    """The file of ``record`` in another transfer syntax: RLE Lossless or the other native
    one (half each), same elements and values otherwise."""
    ds = dcmread(ctx.root / record.path)
    if ctx.plants.random() < 0.5:
        frame = ds.pixel_array
        ds.PixelData = encapsulate([rle_frame(frame)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ts = RLELossless
    else:
        native = record.transfer_syntax_uid == ExplicitVRLittleEndian
        ts = ImplicitVRLittleEndian if native else ExplicitVRLittleEndian
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ts


def write_duplicates(ctx: GenerationContext) -> list[Duplicate]:
    """Re-send a few single-frame native CT, MR and CR images (file meta present; at most
    one per series) next to the original, set both files' modification times and return
    what the key records."""
    eligible = [
        r for r in ctx.records
        if r.has_file_meta and r.transfer_syntax_uid in UNCOMPRESSED
        and r.modality in ("CT", "MR", "CR") and r.number_of_frames == 1
    ]  # fmt: skip
    by_series: dict[str, list[FileRecord]] = {}
    for r in eligible:
        by_series.setdefault(r.series_uid, []).append(r)
    count = min(len(by_series), max(2, len(ctx.records) // _SHARE))
    found: list[Duplicate] = []
    for n, series in enumerate(ctx.plants.sample(sorted(by_series), count)):
        record = ctx.plants.choice(by_series[series])  # one instance per series
        data, ts = _recoded(ctx, record)
        folder, name = record.path.rsplit("/", 1)
        rel = f"{folder}/{ctx.file_name(name.endswith('.dcm'))}"
        store(ctx, rel, data)
        ctx.records.append(dataclasses.replace(record, path=rel, transfer_syntax_uid=ts))
        sent = _EPOCH_S + ctx.plants.randrange(30 * 86400)
        later = sent + ctx.plants.randrange(60, 86400)
        # Mostly the re-send is the newer; every third time an old copy arrives late.
        resend_newer = n % 3 != 1
        times = {record.path: sent if resend_newer else later, rel: later if resend_newer else sent}
        paths = tuple(sorted(times))
        mtimes = tuple(times[p] * 10**9 for p in paths)
        for path, ns in zip(paths, mtimes, strict=True):
            os.utime(ctx.root / path, ns=(ns, ns))
        found.append(Duplicate(record.sop_uid, paths, mtimes, _winner(paths, mtimes)))
    return found
