"""Duplicate SOP Instance UIDs: one rule, whatever the order of inputs or of workers.

The rule (deid/batch.py): the newest input wins (latest modification time; equal times:
the path first in sort order). The output, its mapping row and its errors-file entry
must describe the same input; the loser is listed as a duplicate naming the winner.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_deid.config.model import DeidConfig, privacy_first
from dicom_deid.deid.batch import BatchSummary, Source, iter_sources, run_batch
from instances import KEY, ROOT, make_instance, to_bytes

OLD, NEW = 1_700_000_000_000_000_000, 1_700_000_100_000_000_000  # mtimes (ns)


def _uncompressed() -> bytes:
    return to_bytes(make_instance())


def _compressed() -> bytes:
    ds = make_instance()
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return to_bytes(ds)


def _other(i: int) -> bytes:
    """An unrelated instance, so several workers share the run."""
    ds = make_instance()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}9.{i}"
    return to_bytes(ds)


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _run(src: Path, out: Path, restricted: Path, workers: int,
         sources: list[Source] | None = None) -> tuple[BatchSummary, list[dict], list[dict]]:
    summary = run_batch(sources if sources is not None else iter_sources(src), out,
                        DeidConfig(), KEY, workers=workers,
                        errors_path=restricted / "errors.csv",
                        mapping_path=restricted / "mapping.parquet", progress=False)
    rows = pq.read_table(restricted / "mapping.parquet").to_pylist()
    with open(restricted / "errors.csv", newline="") as fh:
        errors = list(csv.DictReader(fh))
    return summary, rows, errors


def _stored(path: Path) -> tuple[str, bytes]:
    ds = pydicom.dcmread(path)
    return str(ds.file_meta.TransferSyntaxUID), ds[0x7FE00010].value


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("newest", ["compressed", "uncompressed"])
@pytest.mark.parametrize("names", [("a.dcm", "b.dcm"), ("b.dcm", "a.dcm")])
def test_the_newest_copy_wins_in_any_order_with_any_workers(
    tmp_path: Path, workers: int, newest: str, names: tuple[str, str]
) -> None:
    """A compressed and an uncompressed copy of one instance, among others: the newer is
    published whichever path sorts first and however many workers share the run."""
    src = tmp_path / "in"
    compressed_name, uncompressed_name = names
    _write(src / compressed_name, _compressed(), NEW if newest == "compressed" else OLD)
    _write(src / uncompressed_name, _uncompressed(), NEW if newest == "uncompressed" else OLD)
    for i in range(10):
        _write(src / f"other{i:02d}.dcm", _other(i), OLD)
    assert pydicom.dcmread(src / compressed_name).file_meta.TransferSyntaxUID == RLELossless
    winner = compressed_name if newest == "compressed" else uncompressed_name
    loser = uncompressed_name if winner == compressed_name else compressed_name

    summary, rows, errors = _run(src, tmp_path / "out", tmp_path / "restricted", workers)

    assert (summary.processed, summary.failed) == (11, 1)
    assert summary.failures_by_kind == {"duplicate": 1}
    files = _files(tmp_path / "out")
    assert len(files) == 11 and not [p for p in files if p.name.startswith(".")]
    row = next(r for r in rows if r["source_path"] in names)
    assert row["source_path"] == winner
    assert [r["source_path"] for r in rows].count(loser) == 0
    # The output is the winner's own: its transfer syntax and stored pixel bytes.
    winner_ds = pydicom.dcmread(src / winner)
    assert _stored(tmp_path / "out" / row["output_path"]) == (
        str(winner_ds.file_meta.TransferSyntaxUID), winner_ds[0x7FE00010].value)
    assert [(e["path"], e["kind"]) for e in errors] == [(loser, "duplicate")]
    assert winner in errors[0]["reason"]


def test_equal_times_the_first_path_wins_and_reruns_are_identical(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _write(src / "x" / "2.dcm", _compressed(), OLD)
    _write(src / "x" / "1.dcm", _uncompressed(), OLD)
    runs = []
    for n in range(2):
        out, restricted = tmp_path / f"out{n}", tmp_path / f"restricted{n}"
        # Listed in the order a filter file might give: the later path first.
        sources = [Source(str(src / "x" / "2.dcm"), "x/2.dcm"),
                   Source(str(src / "x" / "1.dcm"), "x/1.dcm")]
        _, rows, errors = _run(src, out, restricted, 2, sources)
        assert [r["source_path"] for r in rows] == ["x/1.dcm"]
        assert [e["path"] for e in errors] == ["x/2.dcm"]
        runs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in _files(out)})
    assert runs[0] == runs[1]
    assert _stored(tmp_path / "out0" / next(iter(runs[0])))[0] == ExplicitVRLittleEndian


def test_a_newer_copy_in_another_study_replaces_the_published_one(tmp_path: Path) -> None:
    """The same SOP Instance UID re-sent under another study (a corrected re-send): the
    newer replaces the older, whose output (elsewhere in the tree) and row are taken back
    and whose emptied folders go."""
    src = tmp_path / "in"
    _write(src / "a.dcm", _uncompressed(), OLD)
    moved: Dataset = make_instance()
    moved.StudyInstanceUID = ROOT + "77"
    _write(src / "b.dcm", to_bytes(moved), NEW)

    summary, rows, errors = _run(src, tmp_path / "out", tmp_path / "restricted", 1)

    assert (summary.processed, summary.failed, summary.byte_path) == (1, 1, 1)
    assert [r["source_path"] for r in rows] == ["b.dcm"]
    assert [e["path"] for e in errors] == ["a.dcm"] and "b.dcm" in errors[0]["reason"]
    files = _files(tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in files] == [rows[0]["output_path"]]
    assert pydicom.dcmread(files[0]).StudyInstanceUID == rows[0]["study_uid"]
    assert len(list((tmp_path / "out").iterdir())) == 1  # the older study's folder is gone


def test_the_same_path_listed_twice_is_one_input(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _write(src / "a.dcm", _uncompressed(), OLD)
    twice = [Source(str(src / "a.dcm"), "a.dcm")] * 2
    summary, rows, errors = _run(src, tmp_path / "out", tmp_path / "restricted", 2, twice)
    assert (summary.processed, summary.failed) == (1, 1)
    assert [r["source_path"] for r in rows] == ["a.dcm"]
    assert [e["path"] for e in errors] == ["a.dcm"]


def test_a_failed_run_leaves_no_staged_outputs(tmp_path: Path, monkeypatch) -> None:
    """Workers stage outputs for the driver to publish: if the driver fails, what was
    staged and not published is removed."""
    import dicom_deid.deid.batch as batch

    src = tmp_path / "in"
    for i in range(40):  # enough that the workers are still busy when the driver fails
        _write(src / f"{i:02d}.dcm", _other(i), OLD)
    taken = batch._Publisher.take

    def take_then_fail(self: batch._Publisher, index: int, o: batch.FileOutcome) -> object:
        if index == 3:
            raise KeyboardInterrupt
        return taken(self, index, o)

    monkeypatch.setattr(batch._Publisher, "take", take_then_fail)
    with pytest.raises(KeyboardInterrupt):
        _run(src, tmp_path / "out", tmp_path / "restricted", 2)
    left = [p.name for p in _files(tmp_path / "out")]
    assert len(left) == 3 and not [n for n in left if n.startswith(".")]


def test_every_loser_names_the_final_winner(tmp_path: Path) -> None:
    """y loses to x, then z displaces x: y's entry must name z, not x."""
    src = tmp_path / "in"
    _write(src / "x.dcm", _uncompressed(), OLD + 2)
    _write(src / "y.dcm", _uncompressed(), OLD + 1)
    _write(src / "z.dcm", _compressed(), OLD + 3)
    _, rows, errors = _run(src, tmp_path / "out", tmp_path / "restricted", 1)
    assert [r["source_path"] for r in rows] == ["z.dcm"]
    named = {e["path"]: e["reason"] for e in errors}
    assert set(named) == {"x.dcm", "y.dcm"}
    assert all("z.dcm" in reason and "x.dcm" not in reason.split(":", 1)[1]
               for reason in named.values())


def test_nothing_is_written_outside_the_output_folder(tmp_path: Path) -> None:
    """An instance without Study or Series UID goes to a named folder of its own (an
    empty UID once made the path absolute); an input path that would leave the output
    folder in the relative layout is refused."""
    src = tmp_path / "in"
    ds = make_instance()
    del ds.StudyInstanceUID, ds.SeriesInstanceUID
    _write(src / "a.dcm", to_bytes(ds), OLD)
    summary, rows, _ = _run(src, tmp_path / "out", tmp_path / "restricted", 1)
    assert summary.processed == 1
    assert rows[0]["output_path"].startswith("no-study-uid/no-series-uid/")
    assert (tmp_path / "out" / rows[0]["output_path"]).is_file()

    outside = [Source(str(src / "a.dcm"), "../escaped.dcm")]
    summary = run_batch(outside, tmp_path / "rel" / "out", DeidConfig(), KEY, workers=1,
                        layout="relative", errors_path=tmp_path / "rel" / "errors.csv",
                        progress=False)
    assert (summary.processed, summary.failures_by_kind) == (0, {"bad-path": 1})
    assert not (tmp_path / "rel" / "escaped.dcm").exists()


def test_a_rejected_output_leaves_no_folder_named_after_the_patient(tmp_path: Path) -> None:
    """``--layout relative`` keeps the input's folders; the gate rejects an output whose
    path names the patient, and the folders made for it go with it (an external probe
    found ``OUT/HALVORSEN_INGRID_19540822/73019455/`` left behind, empty)."""
    src = tmp_path / "in"
    named = src / "SMITH_JOHN" / "MRN1234567" / "1.dcm"
    named.parent.mkdir(parents=True)
    named.write_bytes(to_bytes(make_instance()))
    other = src / "batch7" / "2.dcm"
    other.parent.mkdir(parents=True)
    other_ds = make_instance()
    other_ds.SOPInstanceUID = other_ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    other.write_bytes(to_bytes(other_ds))
    out = tmp_path / "out"
    summary = run_batch(list(iter_sources(src)), out, privacy_first(), KEY, workers=2,
                        layout="relative", progress=False, gate=(), drop_rejected=True)
    assert summary.rejected == 1 and summary.processed == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "batch7", "batch7/2.dcm"]
