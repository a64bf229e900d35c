"""Planted bad inputs: zero-byte, truncated, non-DICOM and unknown-charset files in the
landing zone, which a reader must reject or quarantine."""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset

from .answer_key import FileRecord, PlantedBadInput
from .pixels import UNCOMPRESSED, png_bytes
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
