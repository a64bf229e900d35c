"""The engine steps under the DAGs, without Airflow: storage, shards, verify, intervals,
settings, whole runs (restricted files, reruns, run records) and failure notices."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pydicom
import pytest

from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import privacy_first
from dicom_deid.errors import ConfigError, LeakError, VerificationError
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.interval_export import export_interval, load_export
from dicom_deid.pipeline.notify import failure_reason, failure_text, post_webhook, webhook_url
from dicom_deid.pipeline.projects import RunRequest
from dicom_deid.pipeline.run_record import (
    decide_outcome,
    key_id,
    note_failure,
    read_failures,
    triggering_user,
)
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.pipeline.shards import ShardLimits, plan_shards
from dicom_deid.synth import generate
from dicom_deid.warehouse.factory import open_warehouse
from instances import KEY, make_instance, to_bytes

DAY1 = datetime(2026, 5, 1, tzinfo=UTC)


def _touch(path: Path, moment: datetime, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (moment.timestamp(), moment.timestamp()))


# -- shards -----------------------------------------------------------------------------


def _instances(series_sizes: list[int]) -> pa.Table:
    rows = [{"source_uri": f"/l/{s}/{i}", "StudyInstanceUID": f"1.{s // 2}",
             "SeriesInstanceUID": f"1.{s // 2}.{s}", "SOPInstanceUID": f"1.{s}.{i}",
             "size_bytes": 100}
            for s, n in enumerate(series_sizes) for i in range(n)]
    return pa.Table.from_pylist(rows)


def test_shards_hold_whole_series_within_limits() -> None:
    plans, tables = plan_shards(_instances([3, 3, 5, 1, 2]), ShardLimits(max_files=6))
    assert [p.files for p in plans] == [6, 6, 2]
    for table in tables:
        series = table.column("SeriesInstanceUID").to_pylist()
        assert all(series.count(s) == _instances([3, 3, 5, 1, 2]).column(
            "SeriesInstanceUID").to_pylist().count(s) for s in set(series))
    assert sum(t.num_rows for t in tables) == 14
    big = plan_shards(_instances([9]), ShardLimits(max_files=2))[0]
    assert [p.files for p in big] == [9]  # a series is never split


def test_shard_count_is_capped_by_growing_shards() -> None:
    plans, _ = plan_shards(_instances([1] * 500), ShardLimits(max_files=1, max_shards=40))
    assert len(plans) <= 40
    assert sum(p.files for p in plans) == 500
    again, _ = plan_shards(_instances([1] * 500), ShardLimits(max_files=1, max_shards=40))
    assert again == plans  # deterministic


def test_shards_are_evened_out_when_the_limits_grow() -> None:
    """Two shards asked for, three by the limits: the grown limits used to fill the first
    and leave the rest to the second (a run waits for its largest shard)."""
    sizes = [40] * 10 + [30] * 5
    plans, tables = plan_shards(_instances(sizes), ShardLimits(max_files=250, max_shards=2))
    assert [p.files for p in plans] == [280, 270]  # greedy at the grown 375: [360, 190]
    assert sum(t.num_rows for t in tables) == sum(sizes)
    by_bytes = ShardLimits(max_files=10_000, max_bytes=25_000, max_shards=2)  # 100 B a file
    assert [p.files for p in plan_shards(_instances(sizes), by_bytes)[0]] == [280, 270]


def test_series_sharing_a_sop_instance_uid_meet_in_one_shard() -> None:
    """A re-send of an instance under another study lands in the shard of the first, so
    the batch's duplicate rule sees both (in two shards both would be published)."""
    table = _instances([2, 2, 2, 2])
    rows = table.to_pylist()
    rows[7]["SOPInstanceUID"] = rows[0]["SOPInstanceUID"]  # series 3 re-sends one of series 0
    plans, tables = plan_shards(pa.Table.from_pylist(rows), ShardLimits(max_files=2))
    assert [p.files for p in plans] == [4, 2, 2]
    assert [p.series for p in plans] == [2, 1, 1]
    first = tables[0].column("SeriesInstanceUID").to_pylist()
    assert set(first) == {"1.0.0", "1.1.3"}
    assert sum(t.num_rows for t in tables) == 8


# -- verify -----------------------------------------------------------------------------


# -- interval export --------------------------------------------------------------------


def test_intervals_export_each_file_once_and_reruns_change_nothing(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for i, day in enumerate((0, 0, 1)):
        ds = make_instance()
        ds.SOPInstanceUID = f"1.2.3.{i}"
        _touch(landing / f"{i}.dcm", DAY1 + timedelta(days=day, hours=3), to_bytes(ds))
    _touch(landing / "bad.dcm", DAY1 + timedelta(hours=4), b"")
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path),
                                          "DICOM_DEID_LANDING": str(landing)})
    wh = settings.warehouse
    out = settings.metadata_dir / "dicom_metadata"
    day1 = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
    assert (day1.arrived, day1.exported, day1.failed) == (3, 2, 1)
    assert Path(day1.errors_file or "").read_text().count("zero-byte") == 1
    assert load_export(wh, out, day1.run_id, "dicom_metadata") == 2
    day2 = export_interval(settings, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2))
    assert (day2.arrived, day2.exported) == (1, 1)
    load_export(wh, out, day2.run_id, "dicom_metadata")
    again = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
    assert (again.exported, again.unchanged) == (0, 2)
    load_export(wh, out, again.run_id, "dicom_metadata")
    with open_warehouse(wh) as warehouse:
        rows = warehouse.query("SELECT SOPInstanceUID, ingest_date FROM dicom_metadata "
                               "ORDER BY 1").to_pylist()
    assert [r["SOPInstanceUID"] for r in rows] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert [str(r["ingest_date"]) for r in rows] == ["2026-05-01", "2026-05-01", "2026-05-02"]



# -- settings ---------------------------------------------------------------------------


def test_the_data_folder_must_be_set_and_absolute(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$DICOM_DEID_DATA_DIR is not set"):
        PipelineSettings.from_env({})
    with pytest.raises(ConfigError, match=r"\$DICOM_DEID_DATA_DIR must be an absolute path"):
        PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": "var"})
    with pytest.raises(ConfigError, match=r"work_dir \(\$DICOM_DEID_WORK_DIR\)"):
        PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path),
                                   "DICOM_DEID_WORK_DIR": "runs"})
    with pytest.raises(ConfigError, match=r"warehouse \(\$DICOM_DEID_WAREHOUSE\)"):
        PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path),
                                   "DICOM_DEID_WAREHOUSE": "duckdb://wh.duckdb"})
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path)})
    assert settings.work_dir == tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"destination \(\$DICOM_DEID_DESTINATION\)"):
        dataclasses.replace(settings, destination="file:out")
    # Every location given on its own: no data folder needed; URLs are not paths.
    explicit = {"DICOM_DEID_LANDING": "file:///l", "DICOM_DEID_DESTINATION": "gs://b/deid",
                "DICOM_DEID_WAREHOUSE": "bigquery://p/d", "DICOM_DEID_METADATA_DIR": "/m",
                "DICOM_DEID_WORK_DIR": "/w"}
    assert PipelineSettings.from_env(explicit).destination == "gs://b/deid"


# -- a whole run, without Airflow -------------------------------------------------------

COHORT_SQL = """-- Every series of one modality ('ALL': every series).
-- param modality STRING
SELECT DISTINCT StudyInstanceUID, SeriesInstanceUID
FROM dicom_metadata
WHERE @modality = 'ALL' OR Modality = @modality
"""


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small synthetic landing zone, exported to dicom_metadata; one input is truncated
    after its export (so de-identifying it fails: an error row)."""
    base = tmp_path_factory.mktemp("landed")
    previous = os.umask(0)  # what the pipeline does not restrict itself would show as 0666
    try:
        answer = generate(base / "data" / "landing", patients=2, seed=5,
                          instances_per_series=2, small=True, duplicates=False)
        for path in (base / "data" / "landing" / "dicom").rglob("*"):
            os.utime(path, (DAY1.timestamp() + 3600, DAY1.timestamp() + 3600))
        settings = PipelineSettings.from_env({
            "DICOM_DEID_DATA_DIR": str(base / "data"),
            "DICOM_DEID_LANDING": str(base / "data" / "landing" / "dicom"),
            "DICOM_DEID_WORKERS": "1"})
        day = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
        load_export(settings.warehouse, settings.metadata_dir / "dicom_metadata",
                    day.run_id, "dicom_metadata")
    finally:
        os.umask(previous)
    with open_warehouse(settings.warehouse) as wh:
        rows = wh.query("SELECT source_uri, Modality FROM dicom_metadata "
                        "ORDER BY source_uri").to_pylist()
    modalities = sorted({r["Modality"] for r in rows})
    broken = next(r for r in rows if r["Modality"] == modalities[0])
    data = Path(broken["source_uri"]).read_bytes()
    Path(broken["source_uri"]).write_bytes(data[: len(data) // 3])
    cohort = base / "by_modality.sql"
    cohort.write_text(COHORT_SQL)
    return {"settings": settings, "answer": answer, "rows": rows, "cohort": str(cohort),
            "broken_modality": modalities[0], "other_modality": modalities[-1]}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0: a file the pipeline leaves unrestricted would be world-readable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _req(landed: dict[str, Any], modality: str, config: str | None = None,
         project: str = "proj") -> RunRequest:
    # Without a config: the privacy-first default (a policy that leaves burned-in text in
    # the images at risk would fail the gate on this corpus's ultrasound).
    policy = load_config(config) if config else privacy_first()
    return RunRequest(cohort=landed["cohort"], cohort_params={"modality": modality},
                      policy=policy, project=project)


def _settings(landed: dict[str, Any], project: str) -> PipelineSettings:
    """The deployment's settings with ``project``'s tree as the destination (each test
    has a project of its own: the ledger makes one project's runs build on each other)."""
    base: PipelineSettings = landed["settings"]
    return dataclasses.replace(base, destination=f"{base.destination}/{project}")


def _run_steps(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest,
               *, until_verified: bool = False, key: bytes = KEY,
               vault_key: bytes | None = None) -> list[dict[str, int]]:
    """The DAG's work steps in order, as its tasks call them (no Airflow; ``vault_key``:
    the mapping sealed, as the DAG always has it)."""
    deid_steps.run_cohort(ws, settings, req)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, req, key_id(key))
    plans = deid_steps.plan_run_shards(ws, ShardLimits(max_files=3), settings)
    for plan in plans:
        deid_steps.deidentify_shard(ws, settings, req, plan["shard"], key, vault_key)
        deid_steps.verify_shard(ws, settings, req, plan["shard"], vault_key)
    if until_verified:
        return plans
    deid_steps.publish(ws, settings, req, DAY1, vault_key)
    deid_steps.load_mapping(ws, settings, vault_key)
    deid_steps.load_deid_metadata(ws, settings, DAY1.date(), req.project, vault_key)
    return plans


def _staging(settings: PipelineSettings) -> Path:
    tree = Path(settings.destination)
    return tree.parent / deid_steps.staging_root(tree.name)


def _finish(ws: RunWorkspace, settings: PipelineSettings, req: RunRequest | None,
            failed: list[str], completed: bool) -> dict[str, Any]:
    return deid_steps.finish_run(ws, settings, req, failed_tasks=failed, completed=completed,
                                 started_at=DAY1, user="alice")


def _query(settings: PipelineSettings, sql: str) -> list[dict[str, Any]]:
    with open_warehouse(settings.warehouse) as wh:
        return wh.query(sql).to_pylist()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_run_writes_restricted_files_privately_and_a_success_removes_them(
    landed: dict[str, Any], open_umask: None
) -> None:
    settings = _settings(landed, "modes")
    ws = RunWorkspace(settings.work_dir, "batch-modes")
    req = _req(landed, "ALL", project="modes")
    plans = _run_steps(ws, settings, req, until_verified=True)
    dest = Path(settings.destination)
    # Mid-run, with umask 0: the run folder and the unverified staged outputs are private.
    for folder in (settings.work_dir, ws.root, _staging(settings),
                   _staging(settings) / ws.batch_id):
        assert _mode(folder) == 0o700, folder
    restricted = [p for p in ws.root.rglob("*")]
    assert {"cohort.parquet", "cohort.filter", "instances.parquet"} <= {
        p.name for p in restricted}
    assert {_mode(p) for p in restricted if p.is_file()} == {0o600}
    assert {_mode(p) for p in restricted if p.is_dir()} == {0o700}
    exported = settings.metadata_dir / "dicom_metadata"
    assert _mode(exported) == 0o700
    assert {_mode(p) for p in exported.rglob("*") if p.is_file()} == {0o600}
    wh_file = Path(settings.warehouse.removeprefix("duckdb://"))
    assert (_mode(wh_file.parent), _mode(wh_file)) == (0o700, 0o600)
    # What is published is not restricted (it is meant to be shared).
    deid_steps.publish(ws, settings, req, DAY1)
    published = [p for p in dest.rglob("*.dcm")]
    assert published and {_mode(p) for p in published} == {0o666}
    deid_steps.load_mapping(ws, settings)
    deid_steps.load_deid_metadata(ws, settings, DAY1.date(), req.project)
    result = _finish(ws, settings, req, [], completed=True)
    assert result["status"] == "success" and result["removed"] >= 5
    # The identified intermediates are gone; the counts, the gate's verdicts (pseudonymous
    # paths, hashes) and the report stay, privately.
    left = _tree(ws.root)
    assert left == sorted(["report.md", "shards/plan.json", "policy.json",
                           *(f"deidentified/shard-{p['shard']:05d}.json" for p in plans),
                           *(f"verdicts/shard-{p['shard']:05d}.parquet" for p in plans),
                           *(f"verified/shard-{p['shard']:05d}.json" for p in plans)])
    assert {_mode(ws.root / name) for name in left} == {0o600}
    text = b"\n".join((ws.root / name).read_bytes() for name in left)
    for row in _query(settings, "SELECT PatientID, StudyInstanceUID FROM dicom_metadata"):
        assert row["PatientID"].encode() not in text
        assert row["StudyInstanceUID"].encode() not in text
    assert not (_staging(settings) / ws.batch_id).exists()


def test_the_run_row_names_the_effective_config_and_the_key_by_fingerprints(
    landed: dict[str, Any]
) -> None:
    settings = _settings(landed, "row")
    ws = RunWorkspace(settings.work_dir, "batch-row")
    req = _req(landed, "ALL", project="row")
    _run_steps(ws, settings, req)
    _finish(ws, settings, req, [], completed=True)
    _finish(ws, settings, req, [], completed=True)  # repeated: still one row
    rows = _query(settings, "SELECT * FROM deid_runs WHERE run_id = 'batch-row'")
    assert len(rows) == 1
    row = rows[0]
    published = sorted(Path(settings.destination).rglob("*.dcm"))
    errors = _query(settings, "SELECT count(*) AS n FROM deid_errors "
                              "WHERE run_id = 'batch-row'")[0]["n"]
    assert errors >= 1  # the truncated input
    assert (row["status"], row["reason"], row["user"]) == ("success", None, "alice")
    assert (row["processed"], row["failed"]) == (len(published), errors)
    assert row["cohort"] == "by_modality.sql" and row["engine"]
    fingerprint = privacy_first().fingerprint()
    assert row["config_sha256"] == fingerprint
    method = pydicom.dcmread(published[0], stop_before_pixels=True).DeidentificationMethod
    assert f"config sha256 {row['config_sha256'][:16]}" in list(method)
    manifest = json.loads((Path(settings.destination) / "manifests" / f"{ws.batch_id}.json")
                          .read_text())
    assert manifest["deidentification"]["config_sha256"] == fingerprint
    assert row["key_id"] == key_id(KEY) and len(key_id(KEY)) == 16
    assert key_id(KEY) != key_id(bytes(reversed(KEY))) and key_id(KEY) not in KEY.hex()
    # The finished run removed its mapping files: reloading one task alone must not
    # replace the batch's mapping rows by nothing.
    mapped = "SELECT count(*) AS n FROM deid_mapping WHERE run_id = 'batch-row'"
    before = _query(settings, mapped)[0]["n"]
    with pytest.raises(VerificationError, match="rerun the whole batch"):
        deid_steps.load_mapping(ws, settings)
    assert _query(settings, mapped)[0]["n"] == before == len(published)


def _ledger(settings: PipelineSettings, project: str) -> list[dict[str, Any]]:
    return _query(settings, "SELECT source_uri, output_path, status, batch_id, status_reason "
                            f"FROM deid_ledger WHERE project = '{project}' "
                            "ORDER BY source_uri, batch_id")


def resend_corrected(settings: PipelineSettings, path: str, day: datetime,
                     description: str = "corrected") -> None:
    """``path`` re-sent with corrected content (StudyDescription) during ``day``, and that
    day's interval exported and loaded."""
    ds = pydicom.dcmread(path)
    ds.StudyDescription = description
    ds.save_as(path)
    moment = (day + timedelta(hours=1)).timestamp()
    os.utime(path, (moment, moment))
    night = export_interval(settings, day, day + timedelta(days=1))
    load_export(settings.warehouse, settings.metadata_dir / "dicom_metadata", night.run_id,
                "dicom_metadata")


def test_nights_release_only_what_is_new_or_changed_into_one_growing_tree(
    landed: dict[str, Any], tmp_path: Path
) -> None:
    """Night 1 releases the cohort; night 2 with nothing new releases nothing; night 3
    after one file changed releases that file alone, replacing it in the tree and
    superseding its ledger row; a rerun of night 3 changes nothing; a new key re-releases
    everything and says so."""
    settings, name = _settings(landed, "nights"), "nights"
    tree = Path(settings.destination)
    req = _req(landed, landed["other_modality"], project=name)  # no failing input in it
    plans = _run_steps(RunWorkspace(settings.work_dir, "batch-n1"), settings, req)
    first = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.dcm")}
    selected = sum(p["files"] for p in plans)
    assert len(first) == selected > 0
    rows = _ledger(settings, name)
    assert len(rows) == selected and {r["status"] for r in rows} == {"released"}
    assert sorted(r["output_path"] for r in rows) == sorted(first)
    # Night 2: nothing new, nothing to do; the tree is the same release. (Two files lost
    # their metadata rows, as when a batch's load never finished: they get them back.)
    in_tree = f"SELECT source_uri FROM deid_metadata WHERE source_uri LIKE '{tree}/%'"
    with open_warehouse(settings.warehouse) as wh:
        assert wh.delete_in("deid_metadata", "source_uri",
                            [f"{tree}/{p}" for p in sorted(first)[:2]]) == 2
    ws2 = RunWorkspace(settings.work_dir, "batch-n2")
    assert _run_steps(ws2, settings, req) == []
    assert sorted(r["source_uri"] for r in _query(settings, in_tree)) == sorted(
        f"{tree}/{p}" for p in first)
    assert ws2.read_json(ws2.release_plan)["selected"]["unchanged"] == selected
    assert os.readlink(tree).endswith("batch-n1") and _ledger(settings, name) == rows
    # Night 3: one landing file changed (re-sent with corrected content) and exported.
    changed = sorted(r["source_uri"] for r in rows)[0]
    resend_corrected(settings, changed, DAY1 + timedelta(days=2))
    ws3 = RunWorkspace(settings.work_dir, "batch-n3")
    plans3 = _run_steps(ws3, settings, req)
    assert sum(p["files"] for p in plans3) == 1
    assert ws3.read_json(ws3.release_plan)["selected"]["changed"] == 1
    now = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.dcm")}
    assert sorted(now) == sorted(first)  # one current version of each instance
    differs = [path for path in now if now[path] != first[path]]
    assert len(differs) == 1
    manifest = json.loads((tree / "manifests" / "batch-n3.json").read_text())
    assert (manifest["added"], manifest["replaced"], manifest["removed"]) == ([], differs, [])
    statuses = [(r["batch_id"], r["status"]) for r in _ledger(settings, name)
                if r["source_uri"] == changed]
    assert statuses == [("batch-n1", "superseded"), ("batch-n3", "released")]
    meta = _query(settings, "SELECT source_uri, content_sha256 FROM deid_metadata "
                            f"WHERE source_uri LIKE '{tree}/%' ORDER BY 1")
    assert [m["source_uri"] for m in meta] == sorted(str(tree / p) for p in now)
    assert {m["content_sha256"] for m in meta} == {
        hashlib.sha256(b).hexdigest() for b in now.values()}
    # A rerun of night 3 (cleared and run again): the same ledger, files and rows.
    ledger_before = _ledger(settings, name)
    assert _run_steps(ws3, settings, req) == []
    assert _ledger(settings, name) == ledger_before
    assert {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.dcm")} == now
    # A new key: everything is released again under new pseudonyms; the old paths go.
    other = bytes(reversed(KEY))
    ws4 = RunWorkspace(settings.work_dir, "batch-n4")
    _run_steps(ws4, settings, req, key=other)
    assert ws4.read_json(ws4.release_plan)["selected"]["policy"] == selected
    renewed = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.dcm"))
    assert len(renewed) == selected and not set(renewed) & set(first)
    manifest = json.loads((tree / "manifests" / "batch-n4.json").read_text())
    assert manifest["policy_change"] and sorted(manifest["removed"]) == sorted(first)
    assert len(_query(settings, "SELECT * FROM deid_metadata "
                                f"WHERE source_uri LIKE '{tree}/%'")) == selected


def test_a_released_batch_is_final_whatever_its_reruns_do(landed: dict[str, Any]) -> None:
    """A rerun of a released batch (its DAG run cleared) keeps the release's record: the
    deid_runs row, report, manifest and contact sheet, also when the rerun fails; what
    changed since waits for the next batch instead of being released under the old one."""
    settings, name = _settings(landed, "final"), "final"
    tree = Path(settings.destination)
    req = _req(landed, landed["other_modality"], project=name)
    ws = RunWorkspace(settings.work_dir, "batch-f1")
    _run_steps(ws, settings, req)
    (ws.review_root / "sheet.txt").parent.mkdir(exist_ok=True)
    (ws.review_root / "sheet.txt").write_text("what the reviewer saw")
    assert _finish(ws, settings, req, [], completed=True)["status"] == "success"
    kept = {name: _tree(ws.root / name) for name in ("verdicts", "verified", "deidentified")}
    assert all(kept.values())
    row = "SELECT * FROM deid_runs WHERE run_id = 'batch-f1'"
    record = (_query(settings, row), (ws.root / "report.md").read_text(),
              (tree / "manifests" / "batch-f1.json").read_text())
    files = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.dcm")}
    resend_corrected(settings, sorted(r["source_uri"] for r in _ledger(settings, name))[-1],
                     DAY1 + timedelta(days=3), "corrected after the release")
    ledger_before = _ledger(settings, name)
    for failed, completed in (([], True), (["review"], False)):
        assert _run_steps(ws, settings, req) == []
        assert ws.read_json(ws.release_plan)["selected"]["waiting"] == 1
        result = _finish(ws, settings, req, failed, completed)
        assert result["status"] == ("success" if completed else "failed")
        assert (_query(settings, row), (ws.root / "report.md").read_text(),
                (tree / "manifests" / "batch-f1.json").read_text()) == record
        assert (ws.review_root / "sheet.txt").read_text() == "what the reviewer saw"
        assert {name: _tree(ws.root / name) for name in kept} == kept  # the gate's record
        assert "released nothing more" in (ws.root / "rerun-report.md").read_text()
        assert "1 new or changed instance(s) wait" in (ws.root / "rerun-report.md").read_text()
        assert _ledger(settings, name) == ledger_before
        assert {p.relative_to(tree).as_posix(): p.read_bytes()
                for p in tree.rglob("*.dcm")} == files
    # The next batch releases what waited.
    ws2 = RunWorkspace(settings.work_dir, "batch-f2")
    assert sum(p["files"] for p in _run_steps(ws2, settings, req)) == 1
    assert ws2.read_json(ws2.release_plan)["selected"]["changed"] == 1
    assert not ws2.is_rerun_of_release()


def test_a_leaking_run_is_recorded_as_a_leak_and_its_staged_outputs_go(
    landed: dict[str, Any], tmp_path: Path
) -> None:
    settings = _settings(landed, "leaky")
    ws = RunWorkspace(settings.work_dir, "batch-leak")
    config = tmp_path / "leaky.json"
    config.write_text(json.dumps({
        "dicomTagConfig": {"actions": [{"queries": ["StudyDescription"], "keepTag": {}}]},
        "dicomDeid": {"residualSweep": False}}))
    req = _req(landed, "ALL", config=str(config), project="leaky")
    deid_steps.run_cohort(ws, settings, req)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, req, key_id(KEY))
    plans = deid_steps.plan_run_shards(ws, ShardLimits(max_files=3), settings)
    failed = []
    for plan in plans:
        deid_steps.deidentify_shard(ws, settings, req, plan["shard"], KEY)
        try:
            deid_steps.verify_shard(ws, settings, req, plan["shard"])
        except LeakError as exc:  # what the task adapter does with a failure
            failed.append(f"verify_shard[{plan['shard']}]")
            note_failure(ws.root, failed[-1], exc)
    assert failed
    staged = _staging(settings) / ws.batch_id
    assert staged.exists()
    result = _finish(ws, settings, req, failed, completed=False)
    assert result["status"] == "leak"
    named = [f"LeakError in {t}" for t in failed]
    assert result["reason"] == "; ".join(named[:5] + [f"+{len(named) - 5} more"] * (
        len(named) > 5))
    assert not staged.exists() and not Path(settings.destination).exists()
    row = _query(settings, "SELECT * FROM deid_runs WHERE run_id = 'batch-leak'")
    assert [(r["status"], r["user"]) for r in row] == [("leak", "alice")]
    assert row[0]["config_sha256"] == req.config_fingerprint()
    # The report names what the gate found, by pseudonymous path and attribute: what an
    # operator needs to act on, and nothing of the source.
    report = (ws.root / "report.md").read_text()
    assert "Found by the verification" in report
    assert re.search(r"^- [0-9.]+/[0-9.]+/[0-9.]+\.dcm: .*original \w+ value found", report,
                     re.MULTILINE)
    for source in landed["rows"]:
        assert Path(source["source_uri"]).name not in report
    # A failed run keeps its (private) workspace for a rerun; the notes say what failed.
    assert (ws.root / "instances.parquet").exists()
    assert read_failures(ws.root) == dict.fromkeys(failed, "LeakError")
    # A rerun of the batch starts afresh and replaces the row.
    _run_steps(ws, settings, _req(landed, "ALL", project="leaky"))
    assert read_failures(ws.root) == {}
    _finish(ws, settings, _req(landed, "ALL", project="leaky"), [], completed=True)
    row = _query(settings, "SELECT status FROM deid_runs WHERE run_id = 'batch-leak'")
    assert row == [{"status": "success"}]


def test_a_steward_holds_back_what_the_gate_rejected_and_the_rest_is_released(
    landed: dict[str, Any], tmp_path: Path
) -> None:
    """One rejected file must not stop a project every night: the report names each
    rejected output's source by its content hash, and a project that holds those back
    releases the rest of its cohort (the held files get no ledger row)."""
    settings = _settings(landed, "held")
    config = tmp_path / "leaky.json"  # keeps ProtocolName, which some files' name a patient
    config.write_text(json.dumps({
        "dicomTagConfig": {"actions": [{"queries": ["ProtocolName"], "keepTag": {}}]},
        "dicomDeid": {"residualSweep": False}}))
    leaky = _req(landed, "ALL", config=str(config), project="held")
    ws = RunWorkspace(settings.work_dir, "batch-held-1")
    failed = []
    deid_steps.run_cohort(ws, settings, leaky)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, leaky, key_id(KEY))
    for plan in deid_steps.plan_run_shards(ws, ShardLimits(max_files=3), settings):
        deid_steps.deidentify_shard(ws, settings, leaky, plan["shard"], KEY)
        try:
            deid_steps.verify_shard(ws, settings, leaky, plan["shard"])
        except LeakError:
            failed.append(f"verify_shard[{plan['shard']}]")
    assert failed
    _finish(ws, settings, leaky, failed, completed=False)
    report = (ws.root / "report.md").read_text()
    named = set(re.findall(r"\(source sha256 ([0-9a-f]{64})\)", report))
    hashes = {hashlib.sha256(Path(r["source_uri"]).read_bytes()).hexdigest(): r["source_uri"]
              for r in landed["rows"]}
    assert named and named <= set(hashes)  # each a landing file's own content hash
    assert len(named) < len(hashes) - 1  # the rest (but the truncated file) is clean

    held = dataclasses.replace(leaky, hold_back=frozenset(named))
    ws = RunWorkspace(settings.work_dir, "batch-held-2")
    _run_steps(ws, settings, held)
    result = _finish(ws, settings, held, [], completed=True)
    assert result["status"] == "success"
    released = {r["source_uri"] for r in _query(
        settings, "SELECT source_uri FROM deid_ledger WHERE project = 'held'")}
    assert released and not released & {hashes[h] for h in named}
    assert f"{len(named)} new or changed instance(s) held back" in \
        (ws.root / "report.md").read_text()
    # The next night holds them back again, and releases nothing else.
    ws = RunWorkspace(settings.work_dir, "batch-held-3")
    deid_steps.run_cohort(ws, settings, held)
    deid_steps.write_filter_file(ws)
    again = deid_steps.resolve_instances(ws, settings, held, key_id(KEY))
    assert (again["held_back"], again["to_release"]) == (len(named), 1)  # 1: truncated


def test_outcomes_tell_success_failure_and_leak_apart() -> None:
    ok = decide_outcome([], True, {}, [{"leaks": 0}])
    assert (ok.status, ok.reason) == ("success", None)
    notes = {"deidentify_shard[2]": "KeyConfigError", "verify_shard[10]": "LeakError"}
    failed = decide_outcome(["deidentify_shard[2]"], False, notes, [])
    assert (failed.status, failed.reason) == ("failed", "KeyConfigError in deidentify_shard[2]")
    leak = decide_outcome(["verify_shard[10]", "verify_shard[9]"], False, notes, [])
    assert leak.status == "leak"
    assert leak.reason == "unknown error in verify_shard[9]; LeakError in verify_shard[10]"
    # A leak count in a verification result is a leak even with no task marked failed.
    assert decide_outcome([], True, {}, [{"leaks": 2}]).status == "leak"
    assert decide_outcome([], False, {}, []).reason == "the run stopped before its last step"
    many = decide_outcome([f"t{i}" for i in range(8)], False, {}, [])
    assert many.reason is not None and many.reason.endswith("+3 more")
    assert (triggering_user(None), triggering_user("bob")) == ("scheduler", "bob")


# -- failure notices --------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_failure_notice_is_one_phi_free_line_posted_as_json() -> None:
    class Wrapper(Exception):
        pass

    Wrapper.__name__ = "AirflowFailException"  # how Airflow wraps a no-retry failure
    try:
        try:
            raise LeakError("shard-00001: 1 problem(s)")
        except LeakError as exc:
            raise Wrapper("x") from exc
    except Wrapper as wrapped:
        reason = failure_reason(wrapped)
    assert reason == "LeakError"
    assert failure_reason(OSError("/landing/Smith^John/1.dcm")) == "OSError"
    text = failure_text("dicom_deidentify", "manual__1", "verify_shard[1]", reason)
    assert text == "dicom-deid: dicom_deidentify run manual__1 failed at task " \
                   "verify_shard[1]: LeakError"
    assert webhook_url("http", "127.0.0.1", 8080, "hooks/x") == "http://127.0.0.1:8080/hooks/x"
    assert webhook_url("https", "chat.example", None, None) == "https://chat.example"
    assert webhook_url(None, "https://chat.example/h/1", 9, "x") == "https://chat.example/h/1"
    with pytest.raises(ValueError, match="http or https"):
        post_webhook("file:///etc/passwd", text)
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = webhook_url("http", "127.0.0.1", server.server_port, "/hooks/deid")
        assert post_webhook(url, text, timeout=5) == 200
    finally:
        server.shutdown()
        server.server_close()
    assert _Hook.received == [("/hooks/deid", {"text": text})]


# -- warehouse: the run tables ----------------------------------------------------------


def test_an_older_deid_runs_table_gains_the_new_columns(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'old.duckdb'}"
    with open_warehouse(url) as wh:
        wh.query("CREATE TABLE deid_runs (run_id VARCHAR, status VARCHAR)")
        wh.query("INSERT INTO deid_runs VALUES ('r0', 'success')")
        wh.ensure_schema()
        wh.insert_rows("deid_runs", [{"run_id": "r1", "status": "leak", "key_id": "ab",
                                      "reason": "LeakError in verify_shard[0]"}],
                       key_columns=("run_id",))
        rows = wh.query("SELECT run_id, status, key_id FROM deid_runs ORDER BY 1").to_pylist()
        wh.delete_partition("deid_runs", {"run_id": "r0"})
        left = wh.query("SELECT run_id FROM deid_runs").to_pylist()
    assert rows == [{"run_id": "r0", "status": "success", "key_id": None},
                    {"run_id": "r1", "status": "leak", "key_id": "ab"}]
    assert left == [{"run_id": "r1"}]
    with open_warehouse(f"duckdb://{tmp_path / 'new.duckdb'}") as wh:
        wh.ensure_schema()  # a batch's rows can be removed before any load created them
        wh.delete_partition("deid_metadata", {"ingest_run_id": "batch-x"})
        assert wh.query("SELECT count(*) AS n FROM deid_metadata").to_pylist() == [{"n": 0}]


def _one_shard(landed: dict[str, Any], batch: str
               ) -> tuple[RunWorkspace, RunRequest, dict[str, int]]:
    """A run of every instance started and planned as one shard, not yet de-identified."""
    settings = _settings(landed, batch)
    ws = RunWorkspace(settings.work_dir, batch)
    req = _req(landed, "ALL", project=batch)
    deid_steps.run_cohort(ws, settings, req)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, req, key_id(KEY))
    return ws, req, deid_steps.plan_run_shards(ws, ShardLimits(max_files=100), settings)[0]


def test_verify_trusts_only_the_bytes_the_gate_passed(
    landed: dict[str, Any]
) -> None:
    """The verify step re-hashes every staged file: one changed after the worker's gate
    judged it, or one the gate never saw, fails the shard (VerificationError, naming the
    pseudonymous output only); the untouched shard passes."""
    settings = _settings(landed, "batch-tamper")
    ws, req, plan = _one_shard(landed, "batch-tamper")
    deid_steps.deidentify_shard(ws, settings, req, plan["shard"], KEY)
    assert deid_steps.verify_shard(ws, settings, req, plan["shard"])["ok"]
    staged = _staging(settings) / ws.staged(ws.shard(plan["shard"]))
    victim = sorted(staged.rglob("*.dcm"))[0]
    original = victim.read_bytes()
    victim.write_bytes(original[:-2] + b"\x00\x01")
    with pytest.raises(VerificationError, match="not the bytes the gate checked"):
        deid_steps.verify_shard(ws, settings, req, plan["shard"])
    victim.write_bytes(original)
    stray = victim.with_name("2.25.1.dcm")
    stray.write_bytes(original)
    with pytest.raises(VerificationError, match=r"2\.25\.1\.dcm: no verdict from the gate"):
        deid_steps.verify_shard(ws, settings, req, plan["shard"])
    stray.unlink()
    assert deid_steps.verify_shard(ws, settings, req, plan["shard"])["ok"]


def test_deid_metadata_comes_from_the_workers_as_a_reread_would_give_it(
    landed: dict[str, Any]
) -> None:
    """The load step reads no published file: its rows are the workers', made from the
    bytes they wrote. They must be what reading the published files back gives."""
    from dicom_deid.metadata.export import instance_row

    settings = _settings(landed, "meta")
    ws = RunWorkspace(settings.work_dir, "batch-meta")
    req = _req(landed, "ALL", project="meta")
    _run_steps(ws, settings, req)
    dest = Path(settings.destination)
    published = sorted(dest.rglob("*.dcm"))
    rows = {r["source_uri"]: r for r in _query(
        settings, "SELECT * FROM deid_metadata WHERE ingest_run_id = 'batch-meta'")}
    assert sorted(rows) == [str(p) for p in published]
    for path in published:
        data = path.read_bytes()
        expected, _, _ = instance_row(data)
        got = rows[str(path)]
        assert got["content_sha256"] == hashlib.sha256(data).hexdigest()
        assert got["size_bytes"] == len(data) and got["ingest_date"] == DAY1.date()
        assert got["SOPInstanceUID"] and got["PatientName"] and got["DeidentificationMethod"]
        for column in ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "PatientName",
                       "Modality", "StudyDate", "DeidentificationMethod", "Rows"):
            assert got.get(column) == expected.get(column), column


def test_a_policy_changed_mid_run_stops_the_run(landed: dict[str, Any]) -> None:
    """A project file edited while its run is going (another config, other exceptions):
    the next shard refuses to start, so one batch never mixes two policies."""
    import dataclasses

    settings = _settings(landed, "batch-pinned")
    ws, req, plan = _one_shard(landed, "batch-pinned")
    deid_steps.check_pinned(ws, req, settings)  # unchanged: goes on
    for changed in (dataclasses.replace(req, exceptions=frozenset({"InstitutionName"})),
                    dataclasses.replace(req, policy=config_from_options("basic", []))):
        with pytest.raises(ConfigError, match="changed since this run started"):
            deid_steps.deidentify_shard(ws, settings, changed, plan["shard"], KEY)
    with pytest.raises(ConfigError, match="changed since this run started"):
        deid_steps.check_pinned(ws, req, dataclasses.replace(settings, destination="/x"))


def test_a_success_removes_what_earlier_unsuccessful_runs_of_its_project_kept(
    landed: dict[str, Any]
) -> None:
    settings = _settings(landed, "purge")
    req = _req(landed, "MR", project="purge")
    # a failed run keeps its cohort and shard lists (clearing the failed task reruns it)
    failed = RunWorkspace(settings.work_dir, "batch-20260101T000000Z-purge")
    _run_steps(failed, settings, req, until_verified=True)
    assert _finish(failed, settings, req, ["publish"], completed=False)["status"] == "failed"
    assert (failed.root / "cohort.parquet").exists() and (failed.root / "report.md").exists()
    # another project whose name ends like this one's: not this project's run
    other = settings.work_dir / "batch-20260101T000000Z-x-purge"
    other.mkdir()
    (other / "cohort.parquet").write_bytes(b"not ours")
    ok = RunWorkspace(settings.work_dir, "batch-20260102T000000Z-purge")
    _run_steps(ok, settings, req)
    result = _finish(ok, settings, req, [], completed=True)
    assert (result["status"], result["purged_runs"]) == ("success", 1)
    left = _tree(failed.root)
    assert "report.md" in left and not [n for n in left if n.startswith(
        ("cohort", "instances", "shards/shard-", "mapping/", "errors", "release"))]
    assert (other / "cohort.parquet").read_bytes() == b"not ours"



def _exported_one_patient(tmp_path: Path, seed: int = 11) -> tuple[PipelineSettings, Path]:
    """A one-patient landing zone exported and loaded on DAY1, and one of its CT files."""
    landing = tmp_path / "data" / "landing"
    generate(landing, patients=1, seed=seed, instances_per_series=2, small=True,
             duplicates=False, bad_inputs=False)
    for path in (landing / "dicom").rglob("*"):
        os.utime(path, (DAY1.timestamp() + 3600, DAY1.timestamp() + 3600))
    settings = PipelineSettings.from_env({
        "DICOM_DEID_DATA_DIR": str(tmp_path / "data"),
        "DICOM_DEID_LANDING": str(landing / "dicom"), "DICOM_DEID_WORKERS": "1"})
    day = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
    load_export(settings.warehouse, settings.metadata_dir / "dicom_metadata", day.run_id,
                "dicom_metadata")
    victim = Path(_query(settings, "SELECT source_uri FROM dicom_metadata "
                                   "WHERE Modality = 'CT' ORDER BY 1 LIMIT 1")[0]["source_uri"])
    return settings, victim


def _release_everything(tmp_path: Path, settings: PipelineSettings, batch: str
                        ) -> PipelineSettings:
    """Project ``p`` runs ``batch`` over every series of the warehouse, under the
    privacy-first default; its settings (the destination is the project's tree)."""
    cohort = tmp_path / "all.sql"
    cohort.write_text(COHORT_SQL)
    req = RunRequest(cohort=str(cohort), cohort_params={"modality": "ALL"},
                     policy=privacy_first(), project="p")
    settings = dataclasses.replace(settings, destination=f"{settings.destination}/p")
    _run_steps(RunWorkspace(settings.work_dir, batch), settings, req)
    return settings

def test_a_landing_file_replaced_after_its_export_is_listed_not_released(
        tmp_path: Path) -> None:
    """An external probe replaced an in-cohort landing file, after the export, with
    another patient's: the shard de-identified what it found and released a patient the
    cohort never chose. A file whose size or modification time is not what the export
    catalogued is now listed as ``changed`` and left for the next export."""
    settings, victim = _exported_one_patient(tmp_path)
    outsider = pydicom.dcmread(victim)
    outsider.PatientName, outsider.PatientID = "Outsider^Olga", "OUT99817"
    outsider.SOPInstanceUID = pydicom.uid.generate_uid()
    outsider.save_as(victim)
    settings = _release_everything(tmp_path, settings, "batch-replaced")
    published = list(Path(settings.destination).rglob("*.dcm"))
    assert published
    for path in published:
        data = path.read_bytes().upper()
        assert b"OUTSIDER" not in data and b"OUT99817" not in data
    errors = _query(settings, "SELECT path, kind FROM deid_errors "
                              "WHERE run_id = 'batch-replaced'")
    assert [(Path(e["path"]).name, e["kind"]) for e in errors] == [(victim.name, "changed")]


def test_a_landing_file_swapped_at_the_same_size_time_and_sop_uid_is_not_released(
        tmp_path: Path) -> None:
    """Probe 10 #5: an in-cohort landing file replaced after the export by another
    patient's instance with the same size, modification time (to the ns) and SOP
    Instance UID (``cp -p`` of a corrected re-send) was released, and the ledger named
    the content the export had hashed. The worker now checks the file's bytes against
    the export's content SHA-256: the file is listed as ``changed`` and not released,
    and every released file's ledger hash is the hash of the file that was released."""
    settings, victim = _exported_one_patient(tmp_path)
    before = os.stat(victim)
    outsider = pydicom.dcmread(victim)
    outsider.PatientID = "Q" * len(str(outsider.PatientID))  # same length: same size
    outsider.SeriesDescription = "X" * len(str(outsider.get("SeriesDescription", "")))
    outsider.save_as(victim)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(victim)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    settings = _release_everything(tmp_path, settings, "batch-swapped")
    errors = _query(settings, "SELECT path, kind, reason FROM deid_errors "
                              "WHERE run_id = 'batch-swapped'")
    assert [(Path(e["path"]).name, e["kind"]) for e in errors] == [(victim.name, "changed")]
    assert "content is not what the export catalogued" in errors[0]["reason"]
    released = _query(settings, "SELECT source_uri, source_sha256 FROM deid_ledger "
                                "WHERE project = 'p' AND status = 'released'")
    assert released and str(victim) not in {r["source_uri"] for r in released}
    for row in released:
        assert row["source_sha256"] == hashlib.sha256(
            Path(row["source_uri"]).read_bytes()).hexdigest()
    for path in Path(settings.destination).rglob("*.dcm"):
        assert b"QQQQ" not in path.read_bytes()
