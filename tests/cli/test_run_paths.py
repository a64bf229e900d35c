"""A one-word slip on the command line must not destroy a key, an original or a tree.

An external probe: ``--errors`` on the key file replaced the key (every later run got
other pseudonyms), ``--mapping`` on the vault key shredded the mapping it sealed,
``--errors`` on a landing file overwrote the original, and OUTPUT inside INPUT put the
originals in the research tree and de-identified its own outputs on a rerun.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_deid.cli.main import main
from instances import KEY, make_instance, to_bytes

_ARGS = ["--workers", "1", "--no-progress"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(to_bytes(make_instance()))
    (tmp_path / "key").write_text(KEY.hex())
    (tmp_path / "vault").write_text(bytes(range(32)).hex())
    return tmp_path


def _run(root: Path, *extra: str, out: str = "out") -> int:
    return main(["deidentify", str(root / "in"), str(root / out), "--key-file",
                 str(root / "key"), *_ARGS, *extra])


@pytest.mark.parametrize(("extra", "kept"), [
    (("--errors", "key"), "key"),
    (("--mapping", "vault", "--vault-key-file", "vault"), "vault"),
    (("--errors", "in/a.dcm"), "in/a.dcm"),
    (("--errors", "notes.txt"), "notes.txt"),
])
def test_restricted_files_never_overwrite_what_the_tool_did_not_write(
        root: Path, extra: tuple[str, ...], kept: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "notes.txt").write_text("someone's notes\n")
    before = (root / kept).read_bytes()
    args = [str(root / a) if a in ("key", "vault", "in/a.dcm", "notes.txt") else a
            for a in extra]
    assert _run(root, *args) == 2
    assert (root / kept).read_bytes() == before
    assert not (root / "out").exists()
    err = capsys.readouterr().err
    assert str(root) not in err  # the options are named, not the paths


def test_errors_and_mapping_on_one_file_are_refused(root: Path) -> None:
    same = str(root / "both")
    assert _run(root, "--errors", same, "--mapping", same, "--plain-mapping") == 2


def test_a_rerun_replaces_its_own_errors_list_and_mapping(root: Path) -> None:
    (root / "in" / "bad.dcm").write_bytes(b"not dicom")
    extra = ("--errors", str(root / "e.csv"), "--mapping", str(root / "m.parquet"),
             "--plain-mapping")
    assert _run(root, *extra) == 3
    assert _run(root, *extra) == 3  # its own files are replaced
    assert (root / "e.csv").read_text().startswith("path,kind,stage,reason")


@pytest.mark.parametrize("out", ["in", "in/out", "."])
def test_output_apart_from_input(root: Path, out: str) -> None:
    assert _run(root, out=out) == 2
    assert sorted(p.name for p in (root / "in").rglob("*")) == ["a.dcm"]


def test_a_plain_mapping_is_the_owners_alone_while_written_and_after(root: Path) -> None:
    """An external probe: the clear mapping (MRNs, names) and the temporary file a
    killed run leaves were 0644 under the usual umask."""
    import os

    from dicom_deid.deid.mapping import MappingWriter

    old = os.umask(0o022)
    try:
        writer = MappingWriter(root / "m.parquet")
        writer.add({"source_path": "a", "patient_id": "MRN1234567"})
        writer.open()
        assert (root / ".m.parquet.tmp").stat().st_mode & 0o777 == 0o600
        writer.close()
    finally:
        os.umask(old)
    assert (root / "m.parquet").stat().st_mode & 0o777 == 0o600


def test_sigterm_removes_what_workers_staged(tmp_path: Path) -> None:
    """An external probe: SIGTERM (what a scheduler or ``docker stop`` sends) left every
    output the workers had staged in OUTPUT for good; SIGINT already cleaned up."""
    import signal
    import subprocess
    import sys
    import time

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(1500):
        ds = make_instance()
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.543.7.{i}"
        (inputs / f"{i:05d}.dcm").write_bytes(to_bytes(ds))
    (tmp_path / "key").write_text(KEY.hex())
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dicom_deid.cli.main import run; run()", "deidentify",
         str(inputs), str(out), "--key-file", str(tmp_path / "key"), "--workers", "2",
         "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.rglob("*.dcm"))):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode(errors="replace")[-500:]
    published = [p for p in out.rglob("*.dcm") if not p.name.startswith(".")]
    assert 0 < len(published) < 1500  # it was stopped mid-batch
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert b"Traceback" not in err


def test_export_lists_failures_by_count_and_writes_paths_to_its_errors_file_only(
        root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An external probe: export-metadata printed failed files' landing paths (a folder
    named after the patient) on stderr. URIs are absolute, whatever the working folder."""
    import csv
    import os

    bad = root / "in" / "DOE_JANE_MRN777009"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"not dicom")
    monkeypatch.chdir(root)
    errors = root / "export-errors.csv"
    code = main(["export-metadata", "in", "--out", str(root / "meta"), "--no-load",
                 "--errors", str(errors)])
    assert code == 3
    captured = capsys.readouterr()
    assert "DOE_JANE" not in captured.err + captured.out
    assert "1 file(s): not a DICOM file" in captured.err
    assert errors.stat().st_mode & 0o777 == 0o600
    rows = list(csv.reader(errors.open()))
    assert rows[0] == ["path", "kind", "stage", "reason"]
    assert rows[1][0] == os.path.join(os.path.abspath(root / "in"), "DOE_JANE_MRN777009",
                                      "x.dcm")


def test_restricted_lists_are_the_owners_alone(root: Path) -> None:
    """The errors list of ``deidentify`` and a cohort's filter file (original UIDs) were
    0644 under the usual umask."""
    import os

    from dicom_deid.cohort.filter_file import parse_filter

    (root / "in" / "bad.dcm").write_bytes(b"")
    old = os.umask(0o022)
    try:
        assert _run(root, "--errors", str(root / "e.csv")) == 3
        parse_filter("/studies/1.2.3\n").write(root / "c.filter")
    finally:
        os.umask(old)
    assert (root / "e.csv").stat().st_mode & 0o777 == 0o600
    assert (root / "c.filter").stat().st_mode & 0o777 == 0o600


def test_an_output_that_cannot_be_written_is_refused_before_any_input(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An external probe: a read-only OUTPUT read and de-identified every input, then
    failed each one ('write failed: PermissionError'). /proc takes no file, even root's."""
    code = main(["deidentify", str(root / "in"), "/proc/dicom-deid-out", "--key-file",
                 str(root / "key"), *_ARGS])
    assert code == 2
    assert "OUTPUT cannot be written" in capsys.readouterr().err


def test_a_mapping_that_cannot_be_written_is_a_clear_failure(
        root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under the mapping ended in a traceback (exit 1); now a message saying
    what stands and what to do, with the system's words and no path."""
    import errno

    from dicom_deid.deid.mapping import MappingWriter

    def full(self: MappingWriter) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(MappingWriter, "close", full)
    code = _run(root, "--mapping", str(root / "m.parquet"), "--plain-mapping")
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "rerun" in err
    assert str(root) not in err and "Traceback" not in err
