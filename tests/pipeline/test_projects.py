"""Project files: strict validation naming file and field, the policy shapes and their
fingerprints, declared exceptions, and the narrowing a trigger may (and may not) do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import Option, privacy_first
from dicom_deid.errors import ConfigError
from dicom_deid.pipeline.projects import (
    DEFAULT_SCHEDULE,
    Project,
    load_project,
    load_projects,
    project_name,
    projects_dir,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = "name: p\ncohort: patients_with_us\n"
WINDOW = "cohort_params: {start_date: 2022-01-01, end_date: 2023-12-31}\n"
# A Google DicomTagConfig as a user would paste it: keep StudyDate, Basic Profile otherwise.
GOOGLE = {"dicomTagConfig": {"profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
                             "actions": [{"queries": ["StudyDate"], "keepTag": {}}]}}


def _project(folder: Path, text: str, name: str = "p") -> Project:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return load_project(path)


def _error(folder: Path, text: str, name: str = "p") -> str:
    with pytest.raises(ConfigError) as info:
        _project(folder, text, name)
    return str(info.value)


# -- the shipped demo ------------------------------------------------------------------


def test_the_shipped_demo_project_is_privacy_first_with_modified_dates() -> None:
    (demo,) = load_projects(ROOT / "projects")
    assert (demo.name, demo.dag_id) == ("demo_ultrasound", "dicom_deid__demo_ultrasound")
    assert (demo.cohort, dict(demo.cohort_params)) == (
        "patients_with_us", {"start_date": "2022-01-01", "end_date": "2023-12-31"})
    assert demo.schedule == DEFAULT_SCHEDULE and demo.exceptions == frozenset()
    expected = privacy_first(options=frozenset({
        Option.CLEAN_DESCRIPTORS, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    assert demo.fingerprint() == expected.fingerprint()
    config = demo.deid_config()
    assert config.clean_pixel_data and config.residual_sweep  # the default's safeguards


# -- policy shapes -----------------------------------------------------------------------


def test_no_policy_and_privacy_first_are_the_default(tmp_path: Path) -> None:
    default = privacy_first().fingerprint()
    assert _project(tmp_path, BASE).fingerprint() == default
    assert _project(tmp_path, BASE + "policy: privacy-first\n").fingerprint() == default
    assert _project(tmp_path, BASE + "policy: {}\n").fingerprint() == default
    # The Clean Pixel Data option is already part of the default: adding it changes nothing.
    assert _project(tmp_path, BASE + "policy: {options: [CleanPixelData]}\n"
                    ).fingerprint() == default


def test_options_are_added_to_the_privacy_first_default(tmp_path: Path) -> None:
    # The PS3.15 title, spelled as the standard does, is one accepted spelling.
    project = _project(tmp_path, BASE + "policy:\n  options:\n    - Retain Longitudinal "
                       "Temporal Information With Modified Dates Option\n    - retain-uids\n")
    config = project.deid_config()
    assert config.options == {Option.CLEAN_DESCRIPTORS, Option.RETAIN_UIDS,
                              Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    assert config.clean_pixel_data and config.residual_sweep
    assert project.fingerprint() == privacy_first(options=config.options).fingerprint()
    assert project.fingerprint() != privacy_first().fingerprint()


def test_the_bare_profile_is_an_explicit_choice(tmp_path: Path) -> None:
    project = _project(tmp_path, BASE + "policy:\n  base: profile\n  profile: basic\n"
                       "  options: [CleanDescriptors]\n")
    expected = config_from_options("basic", ["CleanDescriptors"])
    assert project.fingerprint() == expected.fingerprint()
    assert not project.deid_config().cleans_pixels  # weaker than the default: chosen
    assert project.fingerprint() != privacy_first().fingerprint()
    keep_all = _project(tmp_path, BASE + "policy: {base: profile, profile: keep-all}\n")
    assert keep_all.fingerprint() == config_from_options("keep-all", []).fingerprint()


def test_a_google_config_is_read_relative_to_the_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "google.json").write_text(json.dumps(GOOGLE))
    monkeypatch.chdir(tmp_path / "policies")  # the working folder plays no part
    project = _project(tmp_path, BASE + "policy: {config: policies/google.json}\n")
    assert project.fingerprint() == load_config(GOOGLE).fingerprint()
    assert project.policy.describe() == "config file google.json"


# -- validation names file and field ------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "policy: {options: [CleanDescriptors, Foo]}\n",
     "p.yaml: policy.options[1]: unknown option 'Foo' (known: CleanDescriptors, "),
    (BASE + "colour: red\n", "p.yaml: colour: unknown key (known: name, "),
    (BASE + "policy: {optons: [RetainUIDs]}\n", "p.yaml: policy.optons: unknown key"),
    (BASE + "policy: weak\n", "p.yaml: policy: expected 'privacy-first' or a mapping"),
    (BASE + "policy: {options: RetainUIDs}\n", "p.yaml: policy.options: expected a list"),
    (BASE + "policy: {options: [RetainUIDs, RetainUIDs]}\n",
     "p.yaml: policy.options[1]: 'RetainUIDs' is given twice"),
    (BASE + "policy: {options: [BasicProfile]}\n",
     "p.yaml: policy.options[0]: 'BasicProfile' is the profile, not an option"),
    (BASE + "policy: {options: [RetainLongitudinalFullDates, RetainLongitudinalModifiedDates]}"
     "\n", "p.yaml: policy.options: options RETAIN_LONGITUDINAL_FULL_DATES and"),
    (BASE + "policy: {profile: keep-all}\n", "p.yaml: policy.profile: the privacy-first "),
    (BASE + "policy: {base: profile, profile: lenient}\n",
     "p.yaml: policy.profile: 'lenient' is not a profile"),
    (BASE + "policy: {base: bare}\n", "p.yaml: policy.base: expected 'privacy-first' or "),
    (BASE + "policy: {config: nowhere.json}\n", "p.yaml: policy.config: no file nowhere.json"),
    (BASE + "policy: {config: c.json, options: [RetainUIDs]}\n",
     "p.yaml: policy.options: a config file already holds"),
    ("name: other\ncohort: x\n", "p.yaml: name: 'other' differs from the file name"),
    ("cohort: x\n", "p.yaml: name: missing (required)"),
    ("name: p\n", "p.yaml: cohort: missing (required)"),
    (BASE + "exceptions: [StudyDate, StudyDat]\n",
     "p.yaml: exceptions[1]: 'StudyDat' is neither a DICOM keyword nor a PS3.15 option "
     "name (did you mean StudyDate?)"),
    (BASE + "exceptions: [StudyDate, StudyDate]\n",
     "p.yaml: exceptions[1]: 'StudyDate' is given twice"),
    (BASE + "exceptions: StudyDate\n", "p.yaml: exceptions: expected a list"),
    (BASE + "destination: deid/p\n", "p.yaml: destination: 'deid/p' is neither"),
    (BASE + "schedule: every night\n", "p.yaml: schedule: 'every night' is neither"),
    (BASE + "schedule: 7\n", "p.yaml: schedule: expected 'dicom_metadata', a cron"),
    (BASE + "key_conn_id: my key\n", "p.yaml: key_conn_id: 'my key' is not an Airflow"),
    (BASE + "cohort_params: {start_date: 2023-01-01, end_date: 2022-01-01}\n",
     "p.yaml: cohort_params.start_date: after cohort_params.end_date"),
    (BASE + "cohort_params: {start_date: 2023-13-01}\n",
     "p.yaml: cohort_params.start_date: expected a date"),
    (BASE + "cohort_params: {modality: {a: 1}}\n",
     "p.yaml: cohort_params.modality: expected a value or a list"),
    ("name: p\ncohort: cohorts/missing.sql\n", "p.yaml: cohort: no file cohorts/missing.sql"),
    (BASE + "description: [a]\n", "p.yaml: description: expected text"),
    ("name: p\ncohort: a\ncohort: b\n", "p.yaml: (top level): line 3: key 'cohort' is given"),
    ("name: p\ncohort: [a\n", "p.yaml: (top level): not valid YAML (line"),
    ("- name: p\n", "p.yaml: (top level): expected a mapping"),
])
def test_invalid_project_files_are_refused_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "c.json").write_text(json.dumps(GOOGLE))
    assert _error(tmp_path, text).startswith(message)


def test_an_invalid_google_config_is_refused_naming_the_project_field(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(
        {"dicomTagConfig": {"actions": [{"queries": ["PatientName"], "keepTagz": {}}]}}))
    message = _error(tmp_path, BASE + "policy: {config: bad.json}\n")
    assert message.startswith("p.yaml: policy.config: ")
    assert "keepTagz" in message


def test_exceptions_are_dicom_keywords_the_project_keeps(tmp_path: Path) -> None:
    project = _project(tmp_path, BASE + "exceptions: [StudyDate, SeriesDate, "
                       "StudyInstanceUID]\n")
    assert project.exceptions == {"StudyDate", "SeriesDate", "StudyInstanceUID"}
    request = project.request()
    assert request.exceptions == project.exceptions
    assert request.config_fingerprint() == project.fingerprint()
    # An option's name declares every attribute that option keeps (RetainUIDs: all UIDs).
    uids = _project(tmp_path, BASE + "exceptions: [RetainUIDs]\n")
    assert uids.exceptions == {"RetainUIDs"}
    from dicom_deid.deid.gate import expand_exceptions

    assert {"SOPInstanceUID", "ReferencedSOPInstanceUID"} <= expand_exceptions(uids.exceptions)


def test_hold_back_names_sources_by_content_hash_with_a_reason(tmp_path: Path) -> None:
    digest = "ab" * 32
    project = _project(tmp_path, BASE + f"hold_back:\n  - source_sha256: {digest}\n"
                       "    reason: gate rejected PatientName (RAD-1234)\n")
    assert dict(project.hold_back) == {digest: "gate rejected PatientName (RAD-1234)"}
    request = project.request()
    assert request.hold_back == {digest}
    # Holding a file back is not policy: the fingerprint every output names is unchanged.
    assert request.config_fingerprint() == _project(tmp_path, BASE).fingerprint()
    assert _project(tmp_path, BASE).request().hold_back == frozenset()
    for entry, field, why in (
        (f"- source_sha256: {digest.upper()}\n    reason: x", "hold_back[0].source_sha256",
         "64 lower-case hex digits"),
        (f"- source_sha256: {digest[:-1]}\n    reason: x", "hold_back[0].source_sha256",
         "64 lower-case hex digits"),
        (f"- source_sha256: {digest}", "hold_back[0].reason", "missing"),
        (f"- source_sha256: {digest}\n    reason: '{'x' * 201}'", "hold_back[0].reason",
         "one line of 1 to 200"),
        (f"- source_sha256: {digest}\n    reason: \"a\\nb\"", "hold_back[0].reason",
         "one line"),
        (f"- {{source_sha256: {digest}, reason: a}}\n  - {{source_sha256: {digest}, reason: b}}",
         "hold_back[1].source_sha256", "given twice"),
        (f"- {{source_sha256: {digest}, reason: a, path: /x}}", "hold_back[0].path",
         "unknown key"),
    ):
        message = _error(tmp_path, BASE + "hold_back:\n  " + entry + "\n")
        assert message.startswith(f"p.yaml: {field}: "), message
        assert why in message, message
    assert _error(tmp_path, BASE + f"hold_back: {digest}\n").startswith("p.yaml: hold_back: ")


def test_schedules_and_destinations(tmp_path: Path) -> None:
    assert _project(tmp_path, BASE + "schedule: null\n").schedule is None
    assert _project(tmp_path, BASE + "schedule: '@daily'\n").schedule == "@daily"
    assert _project(tmp_path, BASE + "schedule: '30  2 * * MON-FRI'\n").schedule == \
        "30 2 * * MON-FRI"
    default = _project(tmp_path, BASE)
    assert default.destination_for("/data/deid/") == "/data/deid/p"
    assert default.destination_for("gs://bucket/deid") == "gs://bucket/deid/p"
    url = _project(tmp_path, BASE + "destination: gs://research-p/deid\n")
    assert url.destination_for("/data/deid") == "gs://research-p/deid"
    assert default.key_conn_id == "dicom_deid_key"


# -- what a trigger may do -----------------------------------------------------------------


def test_a_trigger_narrows_the_window_and_never_widens_it(tmp_path: Path) -> None:
    project = _project(tmp_path, BASE + WINDOW)
    narrowed = project.request(start_date="2022-06-01", end_date="2022-06-30",
                               dry_run=True, priority="urgent")
    assert narrowed.cohort_params == {"start_date": "2022-06-01", "end_date": "2022-06-30"}
    assert (narrowed.dry_run, narrowed.priority, narrowed.project) == (True, "urgent", "p")
    assert narrowed.config_fingerprint() == project.fingerprint()
    assert project.request().cohort_params == dict(project.cohort_params)
    for kwargs, field in [({"start_date": "2021-12-31"}, "start_date"),
                          ({"end_date": "2024-01-01"}, "end_date"),
                          ({"start_date": "2022-07-01", "end_date": "2022-06-01"},
                           "start_date"),
                          ({"start_date": "June"}, "start_date")]:
        with pytest.raises(ConfigError) as info:
            project.request(**kwargs)
        assert str(info.value).startswith(f"{field}: "), info.value
    with pytest.raises(ConfigError, match="priority"):
        project.request(priority="whenever")


def test_a_project_without_a_window_takes_none_from_a_trigger(tmp_path: Path) -> None:
    project = _project(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"^start_date: project p's cohort_params set no"):
        project.request(start_date="2022-01-01")


# -- the folder ----------------------------------------------------------------------------


def test_a_folder_of_projects(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\ncohort: x\n")
    (tmp_path / "README.md").write_text("not a project")
    assert [p.name for p in load_projects(tmp_path)] == ["a", "b"]
    (tmp_path / "c.yml").write_text("name: c\ncohort: x\n")
    with pytest.raises(ConfigError, match=r"^c\.yml: project files end in \.yaml"):
        load_projects(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        load_projects(tmp_path / "missing")


def test_the_projects_folder_and_the_dag_ids() -> None:
    assert projects_dir(Path("/repo/projects"), {}) == Path("/repo/projects")
    env = {"DICOM_DEID_PROJECTS_DIR": "/etc/deid/projects"}
    assert projects_dir(Path("/repo/projects"), env) == Path("/etc/deid/projects")
    with pytest.raises(ConfigError, match="absolute"):
        projects_dir(Path("/repo/projects"), {"DICOM_DEID_PROJECTS_DIR": "projects"})
    assert project_name("dicom_deid__demo_ultrasound") == "demo_ultrasound"
    for wrong in ("dicom_deidentify", "dicom_deid__Bad-Name"):
        with pytest.raises(ConfigError):
            project_name(wrong)
