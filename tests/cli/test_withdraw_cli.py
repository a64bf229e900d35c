"""``dicom-deid withdraw``: the deployment's settings and the project file find the tree;
a study comes out (exit 0, counts printed), asked again nothing changes (exit 0, said so);
refusals exit 2 without repeating the reason; ``--by`` defaults to the OS user."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dicom_deid.cli.main import main
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.interval_export import export_interval, load_export
from dicom_deid.pipeline.projects import load_project
from dicom_deid.pipeline.run_record import key_id
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.synth import generate
from dicom_deid.warehouse.factory import open_warehouse
from instances import KEY

DAY = datetime(2026, 6, 1, tzinfo=UTC)
PROJECT = "cli_study"
PROJECT_YAML = "name: cli_study\ncohort: ct.sql\n"
COHORT_SQL = "SELECT DISTINCT StudyInstanceUID, SeriesInstanceUID FROM dicom_metadata " \
             "WHERE Modality = 'CT'\n"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A deployment's data folder whose project ``cli_study`` released its CT studies."""
    base = tmp_path_factory.mktemp("withdraw_cli")
    data = base / "data"
    generate(data / "landing", patients=2, seed=5, instances_per_series=1, small=True,
             duplicates=False, bad_inputs=False)
    for path in (data / "landing" / "dicom").rglob("*"):
        os.utime(path, ((DAY + timedelta(hours=1)).timestamp(),) * 2)
    env = {"DICOM_DEID_DATA_DIR": str(data), "DICOM_DEID_LANDING": str(data / "landing" / "dicom"),
           "DICOM_DEID_WORKERS": "1"}
    deployment = PipelineSettings.from_env(env)
    night = export_interval(deployment, DAY, DAY + timedelta(days=1))
    load_export(deployment.warehouse, deployment.metadata_dir / "dicom_metadata", night.run_id,
                "dicom_metadata")
    projects = base / "projects"
    projects.mkdir()
    (projects / f"{PROJECT}.yaml").write_text(PROJECT_YAML)
    (projects / "ct.sql").write_text(COHORT_SQL)
    project = load_project(projects / f"{PROJECT}.yaml")
    settings = dataclasses.replace(
        deployment, destination=project.destination_for(deployment.destination))
    req, ws = project.request(), RunWorkspace(settings.work_dir, "batch-cli1")
    deid_steps.run_cohort(ws, settings, req)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, req, key_id(KEY))
    for plan in deid_steps.plan_run_shards(ws, None, settings):
        deid_steps.deidentify_shard(ws, settings, req, plan["shard"], KEY)
        deid_steps.verify_shard(ws, settings, req, plan["shard"])
    deid_steps.publish(ws, settings, req, DAY)
    deid_steps.load_mapping(ws, settings)
    deid_steps.load_deid_metadata(ws, settings, DAY.date(), req.project)
    tree = Path(settings.destination)
    studies = sorted(p.name for p in tree.iterdir() if p.name != "manifests")
    assert len(studies) == 2  # one CT study per patient
    return {"base": base, "env": env, "projects": projects, "tree": tree,
            "studies": studies, "warehouse": settings.warehouse}


@pytest.fixture
def deployment(released: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in released["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DICOM_DEID_PROJECTS_DIR", str(released["projects"]))
    return released


def _ledger(released: dict[str, Any], study: str) -> list[tuple[str, str]]:
    with open_warehouse(released["warehouse"]) as wh:
        rows = wh.query("SELECT status, status_by FROM deid_ledger "
                        f"WHERE study_uid = '{study}'").to_pylist()
    return sorted((r["status"], r["status_by"]) for r in rows)


def test_withdraw_a_study_then_again(deployment: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    tree, study = deployment["tree"], deployment["studies"][0]
    files = len(list((tree / study).rglob("*.dcm")))
    assert files > 0
    assert main(["withdraw", "--project", PROJECT, "--study", study, "--reason",
                 "consent withdrawn", "--by", "dana"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"withdrew study {study} from project {PROJECT}: "
                          f"{files} file(s) removed from {tree}")
    assert f"{files} deid_metadata row(s) deleted" in out
    assert not (tree / study).exists() and (tree / deployment["studies"][1]).exists()
    assert _ledger(deployment, study) == [("withdrawn", "dana")] * files
    release = os.readlink(tree)
    assert main(["withdraw", "--project", PROJECT, "--study", study, "--reason",
                 "consent withdrawn", "--by", "dana"]) == 0
    assert capsys.readouterr().out.startswith(
        f"nothing to do: study {study} of project {PROJECT} was withdrawn already")
    assert os.readlink(tree) == release


def test_refusals_exit_2_and_change_nothing(deployment: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    tree, study = deployment["tree"], deployment["studies"][1]
    before = (os.readlink(tree), _ledger(deployment, study))
    reason = "Smith, John asked on 2026-05-01"
    assert main(["withdraw", "--project", PROJECT, "--study", study, "--reason", reason,
                 "--by", "dana"]) == 2
    err = capsys.readouterr().err
    assert "must be PHI-free" in err and "a date" in err and "a person's name" in err
    assert "Smith" not in err and "2026-05-01" not in err
    assert main(["withdraw", "--project", PROJECT, "--series", "2.25.99", "--reason",
                 "consent withdrawn"]) == 2
    err = capsys.readouterr().err
    assert f"project {PROJECT} has no released series with the identifier given" in err
    assert "2.25.99" not in err  # what was typed is never repeated
    assert main(["withdraw", "--project", "no_such", "--study", study, "--reason",
                 "consent withdrawn"]) == 2
    assert "no_such.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:  # one level at a time
        main(["withdraw", "--project", PROJECT, "--study", study, "--patient", "x",
              "--reason", "r"])
    assert both.value.code == 2
    assert (os.readlink(tree), _ledger(deployment, study)) == before


def test_the_requester_defaults_to_the_os_user_and_projects_to_dot_projects(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The OS user is what getpass reports: $LOGNAME first. No $DICOM_DEID_PROJECTS_DIR:
    # ./projects, relative to where the command runs.
    monkeypatch.setenv("LOGNAME", "erin")
    monkeypatch.delenv("DICOM_DEID_PROJECTS_DIR")
    monkeypatch.chdir(deployment["base"])
    study = deployment["studies"][1]
    assert main(["withdraw", "--project", PROJECT, "--study", study, "--reason",
                 "wrong patient"]) == 0
    assert set(_ledger(deployment, study)) == {("withdrawn", "erin")}
