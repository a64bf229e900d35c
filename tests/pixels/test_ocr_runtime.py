"""The OCR engine's runtime as a hospital runs it: nothing sent home, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _import_in(tmp: Path, code: str) -> list[str]:
    """What a fresh interpreter that runs ``code`` leaves in its own empty $TMPDIR."""
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["TMPDIR"] = str(tmp)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    return sorted(os.listdir(tmp))


def test_onnxruntime_telemetry_is_off_once_the_package_is_imported(tmp_path: Path) -> None:
    """Probe 12: onnxruntime's 1DS telemetry wrote a session file into $TMPDIR on every
    run that read an image (and may send events to Microsoft's collector); the package
    turns it off before anything imports onnxruntime. The control shows the runtime does
    write it when nothing turns it off, so the check can fail."""
    # onnxruntime 1.32 leaves ".ses" (a later one may not: then only ours is checked)
    assert set(_import_in(tmp_path / "bare", "import onnxruntime")) <= {".ses"}
    assert _import_in(tmp_path / "ours", "import dicom_deid.pixels.ocr, onnxruntime") == []
    assert _import_in(tmp_path / "env", "import dicom_deid, os, sys; sys.exit(os.environ"
                      "['ORT_DISABLE_TELEMETRY'] != '1')") == []
