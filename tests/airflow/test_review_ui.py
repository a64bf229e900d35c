"""Human review before release, end to end in a real browser.

A real API server (``airflow api-server`` on 127.0.0.1, the project's plugin loaded from
its entry point) shares a SQLite database with ``airflow dags test``, which runs a
project DAG up to its review step. Headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) opens the review page as a logged-in user: every
selected image must render, and no original identifier of the sources may appear in the
page's HTML or in its images. The review is then approved through the REST API (the run
publishes) and a second project's is rejected (nothing published, nothing staged, the
run recorded as rejected with the reviewer and reason); a third's goes unanswered past
its timeout and the scheduler's sweep rejects it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom
import pytest
from test_dags import airflow_env

from dicom_deid.cli.airflow_review import (
    REVIEWER,
    USERS,
    AirflowApi,
    free_port,
    password_of,
    start_api_server,
    stop,
)
from dicom_deid.review.cards import page_path as review_page_path
from dicom_deid.synth import generate, planted_byte_patterns

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "6a" * 32
ARRIVED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
EXPORT_RUN = "2026-03-11T01:00:00+00:00"
APPROVED_RUN = "2026-03-12T09:00:00+00:00"
REJECTED_RUN = "2026-03-13T09:00:00+00:00"
UNANSWERED_RUN = "2026-03-14T09:00:00+00:00"
APPROVED, REJECTED, UNANSWERED = "reviewed", "refused", "unanswered"
PROJECT_YAML = """
name: {name}
cohort: patients_with_us
cohort_params: {{start_date: 2000-01-01, end_date: 2099-12-31}}
schedule: null
review: {rule}
review_timeout_hours: {hours}
"""
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: Identifying attributes whose source values must not reach the page.
IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
               "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
               "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientAddress",
               "InstitutionAddress", "StationName", "DeviceSerialNumber")
PNG_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("review")
    data = base / "data"
    key = generate(data / "landing", patients=2, seed=23, instances_per_series=2, small=True)
    for path in (data / "landing" / "dicom").rglob("*"):
        os.utime(path, (ARRIVED.timestamp(), ARRIVED.timestamp()))
    projects = base / "projects"
    projects.mkdir()
    for name, rule, hours in ((APPROVED, "at-risk", 2), (REJECTED, "all", 2),
                              (UNANSWERED, "at-risk", 0.001)):  # 3.6 s to answer
        (projects / f"{name}.yaml").write_text(PROJECT_YAML.format(name=name, rule=rule,
                                                                    hours=hours))
    port = free_port()
    values = {**airflow_env(base, projects, data, data / "landing" / "dicom", KEY_HEX),
              "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
              "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    environ = {**os.environ, **values}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=environ)
    done = subprocess.run([airflow, "dags", "test", "dicom_metadata_export", EXPORT_RUN],
                          capture_output=True, env=environ)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    server = start_api_server(port, base / "api-server.log", environ)
    try:
        api = AirflowApi(f"http://127.0.0.1:{port}", REVIEWER, "")
        api.wait_healthy(server=server)
        api.password = password_of(base / "airflow", REVIEWER)
        api.login()
        yield {"base": base, "data": data, "api": api, "environ": environ, "key": key,
               "airflow": airflow}
    finally:
        stop(server)


def _identifiers(env: dict[str, Any]) -> set[str]:
    """Every identifying value of the landing files (read from the files themselves,
    plus what the generator planted), 4 characters or longer, lower-cased."""
    out: set[str] = set()
    for pattern in planted_byte_patterns(env["key"]):
        try:
            out.add(pattern.decode("utf-8").strip())
        except UnicodeDecodeError:
            continue
    for path in (env["data"] / "landing" / "dicom").rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # the landing zone's bad files: nothing to read
        for keyword in IDENTIFYING:
            value = ds.get(keyword)
            if value in (None, ""):
                continue
            for part in (value if isinstance(value, pydicom.multival.MultiValue) else [value]):
                text = str(part)
                out.add(text)
                out.update(text.replace("=", "^").split("^"))
    return {v.strip().lower() for v in out if len(v.strip()) >= 4}


def _start(env: dict[str, Any], dag_id: str, when: str) -> subprocess.Popen[bytes]:
    log = open(env["base"] / f"{dag_id}.log", "wb")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen([env["airflow"], "dags", "test", dag_id, when], stdout=log,
                            stderr=subprocess.STDOUT, env=env["environ"])


def _wait(driver: Any, seconds: float) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                            options=options)


def _png_chunks(png: bytes) -> list[bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos:pos + 4])[0]
        chunks.append(png[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def _run_row(env: dict[str, Any], project: str) -> dict[str, Any]:
    from dicom_deid.warehouse.factory import open_warehouse

    url = f"duckdb://{env['data'] / 'warehouse' / 'dicom_deid.duckdb'}"
    with open_warehouse(url) as wh:
        rows = wh.query(f"SELECT * FROM deid_runs WHERE project = '{project}'").to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


def test_review_page_in_a_browser_then_approve_publishes(env: dict[str, Any]) -> None:
    from dicom_deid.pipeline.deid_steps import RunWorkspace, batch_id_for
    from dicom_deid.review.cards import read_cards

    api: AirflowApi = env["api"]
    dag_id = f"dicom_deid__{APPROVED}"
    runner = _start(env, dag_id, APPROVED_RUN)
    try:
        run_id = api.wait_for_review(dag_id, timeout=420, runner=runner)
        batch = batch_id_for(datetime.fromisoformat(APPROVED_RUN), APPROVED)
        ws = RunWorkspace(env["data"] / "runs", batch)
        cards = read_cards(ws.review_root)
        assert cards and all(c["at_risk"] and c["reason"] == "at-risk" for c in cards)
        shown = sum(len(c["thumbnails"]) for c in cards)
        assert shown >= len(cards)
        url = api.base + review_page_path(dag_id, run_id)
        # Not logged in: refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30)
        assert refused.value.code == 401
        # The tab shows on every DAG run: another DAG's run says it has no review.
        export = api.get("/api/v2/dags/dicom_metadata_export/dagRuns")["dag_runs"][0]
        with pytest.raises(urllib.error.HTTPError) as other:
            api.get_bytes(review_page_path("dicom_metadata_export", export["dag_run_id"]))
        assert other.value.code == 404 and b"project DAG" in other.value.read()
        # The approval's message links to the page.
        detail = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/review/-1"
                         "/hitlDetails")
        assert review_page_path(dag_id, run_id) in (detail.get("body") or "")
        browser = _browser()
        try:
            browser.get(api.base + "/api/v2/monitor/health")  # the cookie's origin
            browser.add_cookie({"name": "_token", "value": api.token, "path": "/"})
            started = time.monotonic()
            browser.get(url)
            loaded = time.monotonic() - started
            images = browser.find_elements("css selector", "img.thumb")
            assert len(images) == shown
            assert len(browser.find_elements("css selector", "[data-output-path]")) == len(cards)
            rendered = browser.execute_script(
                "return Array.from(document.querySelectorAll('img.thumb')).map("
                "i => i.complete && i.naturalWidth > 0)")
            assert rendered == [True] * shown
            html = browser.page_source.lower()
            shot = Path(os.environ.get("DICOM_DEID_REVIEW_SCREENSHOT")
                        or env["base"] / "review.png")
            browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            # The same sheet as the "Review" tab of the DAG run in Airflow's own UI.
            browser.get(f"{api.base}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
                        "/plugin/dicom-deid-review")
            frame = _wait(browser, 60).until(
                lambda b: b.find_elements("css selector", "iframe"))[0]
            browser.switch_to.frame(frame)
            _wait(browser, 60).until(
                lambda b: len(b.find_elements("css selector", "img.thumb")) == shown)
            browser.switch_to.default_content()
        finally:
            browser.quit()
        print(f"review page of {len(cards)} image(s), {shown} thumbnail(s): {loaded:.2f} s")
        identifiers = _identifiers(env)
        assert len(identifiers) > 10
        assert not [v for v in identifiers if v in html]
        for card in cards:
            for name in card["thumbnails"]:
                png = api.get_bytes(f"{review_page_path(dag_id, run_id)}/thumbnails/"
                                    f"{card['shard']}/{name}")
                assert set(_png_chunks(png)) <= PNG_CHUNKS
                assert not [v for v in identifiers if v.encode() in png.lower()]
        api.answer(dag_id, run_id, True, "contact sheet checked")
        assert runner.wait(timeout=300) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
    row = _run_row(env, APPROVED)
    assert row["status"] == "success" and row["reviewer"] == REVIEWER
    tree = env["data"] / "deid" / APPROVED
    assert tree.is_symlink() and Path(os.readlink(tree)).name == batch
    assert any(tree.rglob("*.dcm"))
    assert ws.review_root.is_dir()  # kept with the run that was approved


def test_a_rejected_release_publishes_nothing_and_leaves_nothing_staged(
        env: dict[str, Any]) -> None:
    from dicom_deid.pipeline.deid_steps import RunWorkspace, batch_id_for

    api: AirflowApi = env["api"]
    dag_id = f"dicom_deid__{REJECTED}"
    runner = _start(env, dag_id, REJECTED_RUN)
    try:
        run_id = api.wait_for_review(dag_id, timeout=420, runner=runner)
        batch = batch_id_for(datetime.fromisoformat(REJECTED_RUN), REJECTED)
        staging = env["data"] / "deid" / f".staging-{REJECTED}" / batch
        assert any(staging.rglob("*.dcm"))  # verified and staged, waiting
        api.answer(dag_id, run_id, False, "overlay text not fully covered")
        runner.wait(timeout=300)
    finally:
        if runner.poll() is None:
            runner.kill()
    row = _run_row(env, REJECTED)
    assert row["status"] == "rejected" and row["reviewer"] == REVIEWER
    assert row["reason"] == f"rejected by {REVIEWER}: overlay text not fully covered"
    assert not staging.exists() or not any(staging.rglob("*"))
    assert not (env["data"] / "deid" / REJECTED).exists()  # no release
    assert not RunWorkspace(env["data"] / "runs", batch).review_root.exists()
    # The rejected run's steps after the review were skipped, not failed.
    q = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    states = {t["task_id"]: t["state"] for t in api.get(q)["task_instances"]}
    assert states["publish"] == "skipped" and states["load_deid_metadata"] == "skipped"


#: What the scheduler does every loop for reviews nobody answered in time (dag.test() runs
#: no scheduler): the request's default answer, Reject, with no user.
SWEEP = """
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
SchedulerJobRunner(job=Job(), executors=[]).check_awaiting_input_timeouts()
"""


def test_an_unanswered_review_is_a_rejection_by_timeout(env: dict[str, Any]) -> None:
    from dicom_deid.pipeline.deid_steps import batch_id_for

    api: AirflowApi = env["api"]
    dag_id = f"dicom_deid__{UNANSWERED}"
    runner = _start(env, dag_id, UNANSWERED_RUN)
    try:
        api.wait_for_review(dag_id, timeout=420, runner=runner)
        time.sleep(4)  # past the project's review_timeout_hours
        swept = subprocess.run([sys.executable, "-c", SWEEP], capture_output=True,
                               env=env["environ"], timeout=120)
        assert swept.returncode == 0, swept.stderr[-2000:]
        runner.wait(timeout=300)
    finally:
        if runner.poll() is None:
            runner.kill()
    row = _run_row(env, UNANSWERED)
    assert row["status"] == "rejected" and row["reviewer"] == "timeout"
    assert row["reason"] == "rejected by timeout: no answer within the review timeout"
    batch = batch_id_for(datetime.fromisoformat(UNANSWERED_RUN), UNANSWERED)
    staging = env["data"] / "deid" / f".staging-{UNANSWERED}" / batch
    assert not staging.exists() or not any(staging.rglob("*"))
    assert not (env["data"] / "deid" / UNANSWERED).exists()
