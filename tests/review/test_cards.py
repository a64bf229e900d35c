"""A run's review read back: the cards of every shard, the counts of the approval's
message, the one way to a thumbnail file (no name reaches outside the review folder),
and a rejected review ending the run (``finish_run``) with nothing left to publish."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dicom_deid.deid.batch import review_schema, write_review_cards
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.run_record import TIMEOUT, ReviewDecision
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.review.cards import read_cards, review_summary, thumbnail_path
from dicom_deid.warehouse.factory import open_warehouse

STEM = "0123456789abcdef0123"  # 20 hex digits, as batch.thumbnail_stem makes them


def _card(path: str, **changes: Any) -> dict[str, Any]:
    """A card as the batch writes one (every column of review_schema)."""
    card: dict[str, Any] = {
        "output_path": path, "modality": "US", "reason": "at-risk", "at_risk": True,
        "ok": True, "leaks": 0, "values_checked": 12, "problems": "", "frames": 1,
        "shown_frames": [0], "thumbnails": [f"{STEM}-f0.png"], "boxes": 2, "ocr_read": True,
        "ocr_kept": ["C5-1"], "overlays": 0, "shown": ""}
    assert set(card) == set(review_schema().names)
    card.update(changes)
    return card


# -- cards ---------------------------------------------------------------------------------


def test_cards_of_every_shard_in_shard_then_path_order(tmp_path: Path) -> None:
    write_review_cards(tmp_path / "shard-00010.parquet", [_card("b/2.dcm"), _card("a/9.dcm")])
    write_review_cards(tmp_path / "shard-00002.parquet", [_card("z/1.dcm", modality="CT")])
    write_review_cards(tmp_path / "shard-00003.parquet", [])  # a shard with nothing selected
    (tmp_path / "shard-00002").mkdir()  # thumbnails' folders and other files are not cards
    (tmp_path / "notes.parquet").write_bytes(b"not parquet")
    cards = read_cards(tmp_path)
    assert [(c["shard"], c["output_path"]) for c in cards] == [
        (2, "z/1.dcm"), (10, "a/9.dcm"), (10, "b/2.dcm")]
    assert {k: v for k, v in cards[1].items() if k != "shard"} == _card("a/9.dcm")


def test_written_cards_are_sorted_and_typed(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.parquet"
    write_review_cards(path, [_card("b.dcm", boxes=None), _card("a.dcm", ocr_kept=[])])
    table = pq.read_table(path)
    assert table.schema.equals(review_schema())
    assert table.column("output_path").to_pylist() == ["a.dcm", "b.dcm"]
    assert [n.name for n in tmp_path.iterdir()] == ["shard-00000.parquet"]  # no temporary


def test_no_review_folder_no_cards(tmp_path: Path) -> None:
    assert read_cards(tmp_path / "review") == []
    assert read_cards(tmp_path) == []


def test_the_summary_counts_without_values() -> None:
    cards = [
        _card("a", modality="US", boxes=3),
        _card("b", modality="US", ok=False, leaks=1, problems="original PatientID value found",
              boxes=None),
        _card("c", modality="CT", at_risk=False, reason="all", boxes=0),
        _card("d", modality="", thumbnails=[], shown="not shown: pixel data cannot be "
              "decoded", boxes=1),
        _card("e", modality=None, ok=False, at_risk=False),
    ]
    assert review_summary(cards) == {
        "selected": 5, "flagged": 2, "at_risk": 3, "regions_redacted": 3 + 0 + 0 + 1 + 2,
        "by_modality": {"?": 2, "CT": 1, "US": 2}, "not_shown": 1}
    assert review_summary([]) == {"selected": 0, "flagged": 0, "at_risk": 0,
                                  "regions_redacted": 0, "by_modality": {}, "not_shown": 0}


def test_the_summary_of_cards_read_back(tmp_path: Path) -> None:
    write_review_cards(tmp_path / "shard-00001.parquet", [_card("a"), _card("b", ok=False)])
    summary = review_summary(read_cards(tmp_path))
    assert (summary["selected"], summary["flagged"], summary["regions_redacted"]) == (2, 1, 4)


# -- thumbnails ----------------------------------------------------------------------------


@pytest.fixture
def review_folder(tmp_path: Path) -> Path:
    """A review folder with one thumbnail in shard 1, and a file outside it."""
    folder = tmp_path / "run" / "review"
    (folder / "shard-00001").mkdir(parents=True)
    (folder / "shard-00001" / f"{STEM}-f0.png").write_bytes(b"\x89PNG")
    (folder / "shard-00001" / f"{STEM}-f7.png").mkdir()  # not a file
    (tmp_path / "run" / "secret.png").write_bytes(b"mapping")
    (folder / "stolen.png").write_bytes(b"cards of another kind")
    (folder / "shard-00001.parquet").write_bytes(b"cards")
    return folder


def test_a_thumbnail_is_found_in_its_shard(review_folder: Path) -> None:
    path = thumbnail_path(review_folder, 1, f"{STEM}-f0.png")
    assert path == review_folder / "shard-00001" / f"{STEM}-f0.png"
    assert path is not None and path.read_bytes() == b"\x89PNG"
    assert thumbnail_path(review_folder, 2, f"{STEM}-f0.png") is None  # another shard
    assert thumbnail_path(review_folder, 1, f"{STEM}-f1.png") is None  # no such frame
    assert thumbnail_path(review_folder, 1, f"{STEM}-f7.png") is None  # a folder


@pytest.mark.parametrize("name", [
    "../stolen.png", "../../secret.png", "../shard-00001/" + f"{STEM}-f0.png",
    f"../../review/shard-00001/{STEM}-f0.png", "..%2Fstolen.png", "..%2F..%2Fsecret.png",
    "..\\secret.png", "/etc/passwd", "secret.png", "shard-00001.parquet",
    f"shard-00001/{STEM}-f0.png", f"./{STEM}-f0.png", f"{STEM}-f0.png/", f"{STEM}-f0.png\n",
    f"{STEM}-f0.png\x00.txt", f" {STEM}-f0.png", f"{STEM}-f0.PNG", f"{STEM.upper()}-f0.png",
    f"{STEM[:-1]}-f0.png", f"{STEM}0-f0.png", f"{STEM}-f.png", f"{STEM}-f-1.png",
    f"{STEM}-f0.png.png", f"{STEM}-f0", "", ".", "..",
])
def test_no_other_name_reaches_a_file(review_folder: Path, name: str) -> None:
    assert thumbnail_path(review_folder, 1, name) is None


def test_an_absolute_name_of_a_real_file_is_refused(review_folder: Path) -> None:
    real = review_folder / "shard-00001" / f"{STEM}-f0.png"
    assert thumbnail_path(review_folder, 1, os.fspath(real)) is None
    assert thumbnail_path(review_folder, 1, os.fspath(review_folder.parent / "secret.png")
                          ) is None


@pytest.mark.parametrize("shard", [-1, -99999, 100_000, 10**12])
def test_shards_out_of_range_are_refused(review_folder: Path, shard: int) -> None:
    assert thumbnail_path(review_folder, shard, f"{STEM}-f0.png") is None


def test_the_last_shard_number_is_in_range(tmp_path: Path) -> None:
    (tmp_path / "shard-99999").mkdir()
    (tmp_path / "shard-99999" / f"{STEM}-f12.png").write_bytes(b"png")
    assert thumbnail_path(tmp_path, 99999, f"{STEM}-f12.png") == (
        tmp_path / "shard-99999" / f"{STEM}-f12.png")
    assert thumbnail_path(tmp_path, 0, f"{STEM}-f12.png") is None


# -- a rejected review ends the run -----------------------------------------------------------

STARTED = datetime(2026, 5, 1, tzinfo=UTC)


def _workspace(tmp_path: Path, batch: str) -> tuple[RunWorkspace, PipelineSettings, Path]:
    """A run that got as far as its review: a shard's cards and thumbnails, its outputs
    staged beside the destination tree; returns the staged folder."""
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path / "data")})
    ws = RunWorkspace(settings.work_dir, batch)
    ws.prepare()
    write_review_cards(ws.review_root / "shard-00000.parquet", [_card("a.dcm")])
    (ws.review_root / "shard-00000").mkdir()
    (ws.review_root / "shard-00000" / f"{STEM}-f0.png").write_bytes(b"png")
    _, tree = deid_steps.destination(settings)
    staged = Path(settings.destination).parent / deid_steps.staging_root(tree) / batch
    (staged / "shard-00000").mkdir(parents=True)
    (staged / "shard-00000" / "a.dcm").write_bytes(b"deidentified")
    return ws, settings, staged


def _finish(ws: RunWorkspace, settings: PipelineSettings, review: ReviewDecision | None,
            failed: list[str] | None = None, completed: bool = False) -> dict[str, Any]:
    return deid_steps.finish_run(ws, settings, None, failed_tasks=failed or [],
                                 completed=completed, started_at=STARTED, user="scheduler",
                                 cohort="/cohorts/us.sql", project="proj", review=review)


def _row(settings: PipelineSettings, batch: str) -> dict[str, Any]:
    with open_warehouse(settings.warehouse) as wh:
        rows = wh.query(f"SELECT status, reason, reviewer, project FROM deid_runs "
                        f"WHERE run_id = '{batch}'").to_pylist()
    assert len(rows) == 1
    return dict(rows[0])


@pytest.mark.parametrize(("decision", "reason"), [
    (ReviewDecision(False, "alice", "text left on the sector edge"),
     "rejected by alice: text left on the sector edge"),
    (ReviewDecision(False, "alice"), "rejected by alice"),
    (ReviewDecision(False, TIMEOUT, "no answer within the review timeout"),
     "rejected by timeout: no answer within the review timeout"),
])
def test_a_rejected_review_discards_the_release_and_the_review(
    tmp_path: Path, decision: ReviewDecision, reason: str
) -> None:
    ws, settings, staged = _workspace(tmp_path, "batch-r1")
    # The tasks after the review were skipped: the last work step did not complete.
    result = _finish(ws, settings, decision)
    assert (result["status"], result["reason"]) == ("rejected", reason)
    assert not staged.exists() and not ws.review_root.exists()
    assert _row(settings, "batch-r1") == {"status": "rejected", "reason": reason,
                                          "reviewer": decision.reviewer, "project": "proj"}
    assert f"Status: rejected ({reason})" in (ws.root / "report.md").read_text()


def test_an_approved_review_is_recorded_with_the_reviewer(tmp_path: Path) -> None:
    ws, settings, staged = _workspace(tmp_path, "batch-a1")
    result = _finish(ws, settings, ReviewDecision(True, "alice", "checked every card"),
                     completed=True)
    assert result["status"] == "success"
    assert _row(settings, "batch-a1")["reviewer"] == "alice"
    assert not staged.exists()  # published (or, here, never published): not left staged
    assert (ws.review_root / "shard-00000.parquet").exists()  # what the reviewer approved


def test_a_failure_or_a_leak_is_not_hidden_behind_a_rejection(tmp_path: Path) -> None:
    rejected = ReviewDecision(False, "alice", "blurry")
    ws, settings, staged = _workspace(tmp_path, "batch-f1")
    failed = _finish(ws, settings, rejected, failed=["publish"])
    assert failed["status"] == "failed" and "publish" in failed["reason"]
    assert not staged.exists() and not ws.review_root.exists()
    assert _row(settings, "batch-f1")["reviewer"] == "alice"
    # A verification that found a leak (its task could not leave a note).
    ws, settings, staged = _workspace(tmp_path, "batch-l1")
    ws.write_json(ws.root / "verified" / "shard-00000.json", {"leaks": 1})
    leak = _finish(ws, settings, rejected)
    assert leak["status"] == "leak"
    assert not staged.exists() and not ws.review_root.exists()


def test_no_review_step_no_reviewer(tmp_path: Path) -> None:
    ws, settings, _ = _workspace(tmp_path, "batch-n1")
    assert _finish(ws, settings, None, completed=True)["status"] == "success"
    assert _row(settings, "batch-n1")["reviewer"] is None
