"""What the review before release costs: thumbnails in the workers, and the page's load.

Needs ``make demo`` first (its run of ``dicom_deid__demo_ultrasound`` reviewed every
image at risk). Measures, on that run:

1. the thumbnails: :func:`render_thumbnails` on every output the review selected, as the
   workers call it (the output's bytes, its redacted boxes), per image, median of 3;
2. the page: ``airflow api-server`` on 127.0.0.1 (the demo's Airflow home), headless
   Chromium opening the demo run's review page as ``reviewer`` until every thumbnail has
   loaded, cold (the first request of a fresh server) and warm (median of 5).

Prints a Markdown section; ``--write`` appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "var" / "demo"
DAG = "dicom_deid__demo_ultrasound"


def _thumbnail_ms(tree: Path, cards: list[dict[str, object]]) -> tuple[float, int]:
    from dicom_deid.review.thumbnails import render_thumbnails

    per: list[float] = []
    for card in cards:
        data = (tree / str(card["output_path"])).read_bytes()
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            render_thumbnails(data)
            runs.append(time.perf_counter() - started)
        per.append(statistics.median(runs))
    return 1000 * statistics.median(per), len(per)


def _page_seconds(port: int) -> tuple[float, list[float], int]:
    sys.path.insert(0, str(ROOT / "tests" / "airflow"))
    from test_review_ui import _browser  # the browser test's headless Chromium

    from dicom_deid.cli.airflow_review import (
        REVIEWER,
        AirflowApi,
        password_of,
            start_api_server,
        stop,
    )
    from dicom_deid.review.cards import page_path as review_page_path

    env = {**os.environ, "AIRFLOW_HOME": str(ROOT / "var" / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "DICOM_DEID_DATA_DIR": str(DEMO),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,reviewer:user"}
    server = start_api_server(port, DEMO / "bench-api-server.log", env)
    browser = None
    try:
        api = AirflowApi(f"http://127.0.0.1:{port}", REVIEWER,
                         password_of(ROOT / "var" / "airflow", REVIEWER))
        api.wait_healthy(server=server)
        api.login()
        run_id = api.get(f"/api/v2/dags/{DAG}/dagRuns?order_by=-run_after&limit=1"
                         )["dag_runs"][0]["dag_run_id"]
        browser = _browser()
        browser.get(api.base + "/api/v2/monitor/health")
        browser.add_cookie({"name": "_token", "value": api.token, "path": "/"})
        url = api.base + review_page_path(DAG, run_id)
        times = []
        for _ in range(6):
            started = time.perf_counter()
            browser.get(url)  # returns once the page and its images have loaded
            loaded = browser.execute_script(
                "return Array.from(document.querySelectorAll('img.thumb'))"
                ".every(i => i.complete && i.naturalWidth > 0)")
            times.append(time.perf_counter() - started)
            assert loaded, "a thumbnail did not load"
        images = len(browser.find_elements("css selector", "img.thumb"))
        return times[0], times[1:], images
    finally:
        if browser is not None:
            browser.quit()
        stop(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="append to BENCHMARKS.md")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from dicom_deid.cli.airflow_review import free_port
    from dicom_deid.review.cards import read_cards

    runs = sorted((DEMO / "runs").glob(f"batch-*-{DAG.split('__', 1)[1]}"))
    if not runs or not (runs[-1] / "review").is_dir():
        print("run `make demo` first: no reviewed demo run in var/demo/runs", file=sys.stderr)
        return 2
    cards = read_cards(runs[-1] / "review")
    ms, count = _thumbnail_ms(DEMO / "deid" / DAG.split("__", 1)[1], cards)
    cold, warm, images = _page_seconds(args.port or free_port())
    text = "\n".join([
        f"## Review before release (issue 18) ({datetime.now(UTC):%Y-%m-%d})", "",
        "`benchmarks/bench_review.py` on the `make demo` run (its project reviews every image "
        f"at risk): {len(cards)} image(s) selected, {images} thumbnail(s) on the page.", "",
        "| what | result |", "|---|---|",
        f"| thumbnails of one selected image (first/middle/last frame, 256 px, boxes), in "
        f"the worker | {ms:.1f} ms (median of {count} images) |",
        f"| review page in headless Chromium, every thumbnail loaded: first request of a "
        f"fresh API server | {cold:.2f} s |",
        f"| the same, warm (median of {len(warm)}) | {statistics.median(warm):.2f} s |",
        "",
    ])
    print(text)
    if args.write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
