"""Drive a project DAG through its review from outside Airflow: its REST API on loopback.

``make demo`` runs the demo project's DAG with ``airflow dags test``, which waits at the
review step until someone answers through the API server sharing its database; this
module starts that server on 127.0.0.1, waits for the approval request, prints where the
review page is, answers it (the demo approves its own run, and says so) and stops the
server. The browser test drives the same steps. The standard library and the page's
address (:func:`dicom_deid.review.cards.page_path`): nothing here imports Airflow.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicom_deid.review.cards import page_path as review_page_path

REVIEW_TASK = "review"
REVIEWER = "reviewer"
#: The reviewer account the demo and the tests create (Airflow's simple auth manager).
USERS = f"admin:admin,{REVIEWER}:user"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api_server(port: int, log: Path, env: Mapping[str, str] | None = None
                     ) -> subprocess.Popen[bytes]:
    """``airflow api-server`` on 127.0.0.1:``port`` (the virtualenv's), output to ``log``."""
    airflow = Path(sys.executable).parent / "airflow"
    with open(log, "ab") as out:
        return subprocess.Popen([str(airflow), "api-server", "--host", "127.0.0.1", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None,
                                start_new_session=True)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a server and its workers (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, 9)
        process.wait(timeout)


class AirflowApi:
    """A few calls of Airflow's public REST API (``/api/v2``), as one user."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        self.username, self.password = username, password
        self.token = ""

    def wait_healthy(self, timeout: float = 120, server: subprocess.Popen[bytes] | None = None
                     ) -> None:
        """Wait until the server answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/api/v2/monitor/health", auth=False)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server is not None and server.poll() is not None:
                    raise RuntimeError("the API server stopped; see its log") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no API server at {self.base}") from None
                time.sleep(0.5)

    def login(self) -> None:
        """Get a token (``/auth/token``) for the following calls."""
        self.token = str(self._call("POST", "/auth/token", {
            "username": self.username, "password": self.password}, auth=False)["access_token"])

    def _call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def get_bytes(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.base}{path}")
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def wait_for_review(self, dag_id: str, timeout: float = 600,
                        runner: subprocess.Popen[bytes] | None = None) -> str:
        """The run id of ``dag_id``'s run whose review step waits for an answer."""
        deadline = time.monotonic() + timeout
        q = urllib.parse.quote(dag_id, safe="")
        while time.monotonic() < deadline:
            if runner is not None and runner.poll() is not None:
                raise RuntimeError(f"{dag_id} ended before its review step")
            try:
                runs = self.get(f"/api/v2/dags/{q}/dagRuns?order_by=-run_after&limit=5")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # the DAG is not in the database yet
                    raise
                runs = {"dag_runs": []}
            for run in runs.get("dag_runs", []):
                rid = urllib.parse.quote(run["dag_run_id"], safe="")
                try:
                    ti = self.get(f"/api/v2/dags/{q}/dagRuns/{rid}/taskInstances/{REVIEW_TASK}")
                except urllib.error.HTTPError:
                    continue
                if ti.get("state") == "awaiting_input":
                    return str(run["dag_run_id"])
            time.sleep(1)
        raise TimeoutError(f"{dag_id}: no review step waiting after {timeout:.0f} s")

    def answer(self, dag_id: str, run_id: str, approve: bool, reason: str = "") -> Any:
        """Approve or reject a waiting review (the reason: PHI-free)."""
        q, rid = urllib.parse.quote(dag_id, safe=""), urllib.parse.quote(run_id, safe="")
        return self._call(
            "PATCH", f"/api/v2/dags/{q}/dagRuns/{rid}/taskInstances/{REVIEW_TASK}/-1/hitlDetails",
            {"chosen_options": ["Approve" if approve else "Reject"],
             "params_input": {"reason": reason}})


def password_of(airflow_home: Path, user: str, timeout: float = 60) -> str:
    """The password Airflow's simple auth manager generated for ``user``."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return str(json.loads(path.read_text())[user])
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)
    raise TimeoutError(f"no password for {user} in {path}")


def demo(dag_id: str, logical_date: str, log: Path, port: int) -> int:
    """Run ``dag_id`` to its end, approving its review through the REST API."""
    home = Path(os.environ["AIRFLOW_HOME"])
    base = f"http://127.0.0.1:{port}"
    # Links (the approval's, the one printed) name the UI's address, where a person looks.
    ui = os.environ.get("AIRFLOW__API__BASE_URL") or base
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS, **os.environ,
           "AIRFLOW__API__BASE_URL": ui}
    server = start_api_server(port, log.with_name("api-server.log"), env)
    airflow = Path(sys.executable).parent / "airflow"
    try:
        api = AirflowApi(base, REVIEWER, "")
        api.wait_healthy(server=server)
        api.password = password_of(home, REVIEWER)
        api.login()
        with open(log, "wb") as out:
            runner = subprocess.Popen([str(airflow), "dags", "test", dag_id, logical_date],
                                      stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            run_id = api.wait_for_review(dag_id, runner=runner)
        except RuntimeError:
            # No review step waited: nothing was selected, or the run failed before it.
            return runner.wait()
        started = time.monotonic()
        page = api.get_bytes(review_page_path(dag_id, run_id))
        print(f"      the review waits: its contact sheet ({len(page):,} bytes of HTML, served "
              f"in {time.monotonic() - started:.2f} s) is at\n        "
              f"{ui}{review_page_path(dag_id, run_id)}\n      (make airflow-ui, log in; "
              "also the run's Review tab)")
        print("      the demo approves its own release through the REST API as user "
              f"'{REVIEWER}'; a real project waits for a person (or rejects after its timeout)")
        api.answer(dag_id, run_id, True, "demo run approved by make demo")
        return runner.wait(timeout=900)
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("logical_date")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    return demo(args.dag_id, args.logical_date, args.log, args.port or free_port())


if __name__ == "__main__":
    raise SystemExit(main())
