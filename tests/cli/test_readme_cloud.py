"""The README's walk-through against the emulators, run exactly as written: its shell
block, in a scratch folder that links the project's virtualenvs, Makefile and tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = "**Trying it against the emulators.**"


def _block() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARK):]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "the README lost its walk-through"
    return match.group(1)


def _wait_closed(ports: list[int], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listening = []
        for port in ports:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    listening.append(port)
        if not listening:
            return
        time.sleep(0.2)
    raise AssertionError(f"the walk-through's emulators still listen on {listening}")


def test_the_readme_cloud_walk_through_runs_as_written(tmp_path: Path) -> None:
    for name in (".venv", ".venv-bq", "Makefile", "pyproject.toml", "tests", "plugins",
                 "dags"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST",
                        "GOOGLE_CLOUD_PROJECT", "MAKEFLAGS", "MAKELEVEL")}
    # As typed line by line: a command that lists failures (the planted bad inputs: exit
    # 3) does not stop the next; what each printed is checked below.
    script = _block()
    log, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # Files, not pipes: the emulators the block starts in the background hold them open.
    with open(log, "w") as out_fh, open(err, "w") as err_fh:
        proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env,
                                stdout=out_fh, stderr=err_fh, start_new_session=True)
        try:
            code = proc.wait(timeout=300)
        finally:  # whatever happened, nothing the block started outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            _wait_closed([4443, 9050])  # the emulators stop their servers on SIGTERM
    out = log.read_text()
    assert code == 0, out[-2000:] + err.read_text()[-2000:]
    assert "loaded" in out and "row(s) into dicom_metadata" in out
    assert "KiB per object on average" in out
    assert re.search(r"wrote [1-9]\d* filter line", out)
    assert re.search(r"processed [1-9]\d*", out)
    assert "row(s) into deid_metadata" in out
    assert re.search(r"\bUS\s+[1-9]", out)  # the query's table: the ultrasound cohort
    assert (tmp_path / "var/try/restricted/mapping.parquet").exists()
