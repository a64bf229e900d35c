"""A wheel works from any folder: standard data, DDL and example cohorts travel inside it.

The wheel is built from a copy of the sources (as `pip install .` would build it), then
installed into a folder of its own, and its console script runs from an unrelated working
directory with that folder first on the path: nothing may be found by walking up from
``__file__`` to a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the package installed (without dependencies) into its own folder."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "plugins", src / "plugins",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(src)],
                   check=True, capture_output=True)
    (wheel,) = work.glob("dicom_deid-*.whl")
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel


def test_the_wheel_carries_data_ddl_cohorts_and_types(installed: Path) -> None:
    names = set(zipfile.ZipFile(installed).namelist())
    wanted = {
        "dicom_deid/py.typed",
        "dicom_deid/config/data/ps3_15/basic_profile.csv",
        "dicom_deid/config/data/ps3_15/safe_private.csv",
        "dicom_deid/config/data/ps3_15/SOURCE.md",
        "dicom_deid/config/data/minimal_keep_list.csv",
        "dicom_deid/config/data/deidentification_methods.csv",
        "dicom_deid/config/data/iod/module_attributes.csv",
        "dicom_deid/config/data/dummies/documents.csv",
        "dicom_deid/config/data/dummies/empty.pdf",
        *(f"dicom_deid/warehouse/ddl/{t}.sql" for t in (
            "dicom_metadata", "deid_metadata", "deid_mapping", "deid_runs", "deid_errors")),
        *(f"dicom_deid/cohort/examples/{c}.sql" for c in (
            "chest_ct_adults", "chest_radiographs", "mr_brain_series", "patients_with_us")),
    }
    assert wanted <= names, wanted - names
    assert not any(n.startswith(("tests/", "dags/", "benchmarks/")) for n in names)


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "DICOM_DEID_DATA_DIR": str(cwd / "var")}
    env.pop("DICOM_DEID_COHORT_DIR", None)
    return subprocess.run([sys.executable, str(site / "bin" / "dicom-deid"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False)


def test_export_and_a_shipped_cohort_by_name_from_an_unrelated_folder(
    installed: Path, tmp_path: Path
) -> None:
    site = installed.parent / "site"
    where = _run(site, tmp_path, "--version")
    assert where.returncode == 0
    probe = subprocess.run(
        [sys.executable, "-c", "import dicom_deid; print(dicom_deid.__file__)"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(site)  # the wheel, not the checkout

    assert _run(site, tmp_path, "synth", "corpus", "--patients", "6", "--seed", "3", "--small",
                "--no-bad").returncode == 0
    wh = f"duckdb://{tmp_path / 'wh.duckdb'}"
    export = _run(site, tmp_path, "export-metadata", "corpus/dicom", "--out", "meta",
                  "--warehouse", wh)
    assert export.returncode == 0, export.stderr
    assert "loaded" in export.stdout

    cohort = _run(site, tmp_path, "cohort", "chest_ct_adults", "--param", "start_date=2000-01-01",
                  "--param", "end_date=2099-12-31", "--out", "ct.filter", "--warehouse", wh)
    assert cohort.returncode == 0, cohort.stderr
    listed = _run(site, tmp_path, "query", "SELECT DISTINCT StudyInstanceUID FROM "
                  "dicom_metadata WHERE Modality = 'CT'", "--warehouse", wh)
    ct_studies = set(listed.stdout.split()[1:])
    lines = (tmp_path / "ct.filter").read_text().splitlines()
    assert lines and f"wrote {len(lines)} filter line(s)" in cohort.stdout
    assert {line.removeprefix("/studies/") for line in lines} <= ct_studies


def test_a_deployment_cohort_folder_comes_before_the_shipped_examples(
    installed: Path, tmp_path: Path
) -> None:
    site = installed.parent / "site"
    mine = tmp_path / "cohorts"
    mine.mkdir()
    (mine / "chest_ct_adults.sql").write_text("-- ours\nSELECT 1.2 AS StudyInstanceUID\n")
    missing = _run(site, tmp_path, "cohort", "no_such_cohort", "--out", "x.filter",
                   "--cohort-dir", str(mine), "--warehouse", "duckdb://:memory:")
    assert missing.returncode == 2
    assert "no cohort named 'no_such_cohort'" in missing.stderr
    assert "chest_radiographs" in missing.stderr  # the known names are listed
    ours = _run(site, tmp_path, "cohort", "chest_ct_adults", "--out", "x.filter",
                "--cohort-dir", str(mine), "--warehouse", "duckdb://:memory:")
    assert ours.returncode == 0, ours.stderr
    assert (tmp_path / "x.filter").read_text() == "/studies/1.2\n"
