"""The input walk treats the landing folder as untrusted: one rule for links and special
files, names that are not UTF-8, and folders it cannot list.

The rule (deid/batch.py ``iter_sources``): symbolic links inside INPUT are never followed
and special files (FIFOs, devices, sockets) never opened; each is listed as failed (kind
``not-a-file``, with what it is), a folder that cannot be listed as ``unreadable``, and
the rest of the batch goes on. No reason names a path. A name that is not UTF-8 is
carried as it is on disk and written to the errors file and the mapping as escaped text.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dicom_deid.config.model import DeidConfig
from dicom_deid.deid.batch import BatchSummary, Source, iter_sources, run_batch
from dicom_deid.errors import ConfigError
from dicom_deid.storage.local import path_text, text_path
from instances import KEY, ROOT, make_instance, to_bytes

BAD_NAME = b"bad\xff\xfe.dcm"  # legal on Linux: a Latin-1 or Windows sender's name


def _instance(i: int) -> bytes:
    ds = make_instance()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}7.{i}"
    return to_bytes(ds)




def _run(sources: Iterator[Source] | list[Source], tmp: Path, layout: str = "uid",
         mapping_path: Path | None = None) -> tuple[BatchSummary, list[dict[str, str]]]:
    errors = tmp / "restricted" / "errors.csv"
    summary = run_batch(sources, tmp / "out", DeidConfig(), KEY, workers=1, layout=layout,
                        errors_path=errors, mapping_path=mapping_path, progress=False)
    with open(errors, newline="", encoding="utf-8") as fh:
        return summary, list(csv.DictReader(fh))


def test_links_and_special_files_are_listed_never_followed(
        tmp_path: Path, no_hang: None, caplog: pytest.LogCaptureFixture) -> None:
    src, other = tmp_path / "in", tmp_path / "other_SMITH_MRN42"
    (other / "dir").mkdir(parents=True)
    src.mkdir()
    (src / "a.dcm").write_bytes(_instance(1))
    (other / "p2.dcm").write_bytes(_instance(2))  # another patient's, outside INPUT
    (other / "dir" / "p3.dcm").write_bytes(_instance(3))
    (src / "link.dcm").symlink_to(other / "p2.dcm")
    (src / "linked_folder").symlink_to(other / "dir")
    (src / "dangling.dcm").symlink_to(tmp_path / "nothing")
    (src / "L1").symlink_to("L2")
    (src / "L2").symlink_to("L1")  # a loop: following it raised ELOOP and stopped the run
    os.mkfifo(src / "fifo.dcm")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
        summary, rows = _run(iter_sources(src), tmp_path)
    assert summary.processed == 1 and summary.failed == 7
    assert summary.failures_by_kind == {"not-a-file": 7}
    assert {r["path"]: (r["kind"], r["stage"], r["reason"]) for r in rows} == {
        "L1": ("not-a-file", "read", "symbolic link loop (links are not followed)"),
        "L2": ("not-a-file", "read", "symbolic link loop (links are not followed)"),
        "dangling.dcm": ("not-a-file", "read", "dangling symbolic link (links are not "
                                               "followed)"),
        "fifo.dcm": ("not-a-file", "read", "not a regular file (FIFO)"),
        "link.dcm": ("not-a-file", "read", "symbolic link to a file (links are not "
                                           "followed)"),
        "linked_folder": ("not-a-file", "read", "symbolic link to a folder (links are not "
                                                "followed)"),
        "sock": ("not-a-file", "read", "not a regular file (socket)"),
    }
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1  # a.dcm's only
    assert "SMITH" not in caplog.text and str(tmp_path) not in caplog.text


def test_a_device_is_listed_not_read(tmp_path: Path, no_hang: None) -> None:
    summary, rows = _run([Source("/dev/zero", "zero.dcm")], tmp_path)
    assert summary.failed == 1
    assert [(r["path"], r["kind"], r["reason"]) for r in rows] == [
        ("zero.dcm", "not-a-file", "not a regular file (character device)")]


def test_a_fifo_where_a_catalogued_file_was_never_blocks(tmp_path: Path,
                                                         no_hang: None) -> None:
    """``--filter`` and the pipeline open the files the export catalogued: one replaced by
    a FIFO was opened blocking, and the run waited forever for a writer."""
    (tmp_path / "in").mkdir()
    good, fifo = tmp_path / "in" / "b.dcm", tmp_path / "in" / "a.dcm"
    good.write_bytes(_instance(1))
    os.mkfifo(fifo)
    summary, rows = _run([Source(fifo, "a.dcm", catalogued=(10, None, None)),
                          Source(good, "b.dcm")], tmp_path)
    assert summary.processed == 1
    assert [(r["path"], r["kind"], r["reason"]) for r in rows] == [
        ("a.dcm", "not-a-file", "not a regular file (FIFO)")]


def test_a_symbolic_link_swapped_in_for_a_catalogued_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    target = tmp_path / "elsewhere.dcm"
    target.write_bytes(_instance(1))
    (tmp_path / "in" / "a.dcm").symlink_to(target)
    summary, rows = _run([Source(tmp_path / "in" / "a.dcm", "a.dcm")], tmp_path)
    assert summary.processed == 0
    assert [(r["kind"], r["reason"]) for r in rows] == [
        ("not-a-file", "symbolic link (links are not followed)")]


def test_input_itself_is_followed_a_file_or_a_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.dcm").write_bytes(_instance(1))
    (tmp_path / "in").symlink_to(tmp_path / "real")
    (tmp_path / "one.dcm").symlink_to(tmp_path / "real" / "a.dcm")
    assert [s.rel for s in iter_sources(tmp_path / "in")] == ["a.dcm"]
    summary, rows = _run(iter_sources(tmp_path / "one.dcm"), tmp_path)
    assert (summary.processed, rows) == (1, [])


def test_input_that_is_a_fifo_is_refused_up_front(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "DOE_JANE")
    with pytest.raises(ConfigError) as refused:
        iter_sources(tmp_path / "DOE_JANE")  # checked when called, not when first read
    assert str(refused.value) == ("the input is neither a folder nor a file: not a regular "
                                  "file (FIFO)")


def test_a_symbolic_link_loop_leaves_the_rest_of_the_batch(tmp_path: Path) -> None:
    """A loop of folder links, as a sender's tool leaves them, deep in the tree."""
    deep = tmp_path / "in" / "p1" / "s1"
    deep.mkdir(parents=True)
    (deep / "a.dcm").write_bytes(_instance(1))
    (deep / "loop").symlink_to(deep.parent)  # followed, it would walk p1 forever
    (tmp_path / "in" / "z.dcm").write_bytes(_instance(2))
    summary, rows = _run(iter_sources(tmp_path / "in"), tmp_path)
    assert summary.processed == 2
    assert [(r["path"], r["reason"]) for r in rows] == [
        ("p1/s1/loop", "symbolic link to a folder (links are not followed)")]


_WALK = ("import sys; from dicom_deid.deid.batch import iter_sources\n"
         "for s in iter_sources(sys.argv[1]): print(s.rel, s.problem)")


def _walk_without_privileges(root: Path) -> str:
    """The walk's lines, as a user who cannot read a mode-000 folder (root, whom file modes
    do not stop, drops the capabilities that let it: ``capsh``)."""
    argv = [sys.executable, "-c", _WALK, str(root)]
    if os.geteuid() == 0:
        drop = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c"]
        if shutil.which("capsh") is None or subprocess.run(
                [*drop, "true"], capture_output=True, timeout=60).returncode:
            pytest.skip("running as root, and capsh cannot drop the capabilities that "
                        "read a mode-000 folder (see the next test)")
        argv = [*drop, " ".join(f"'{a}'" for a in argv)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_folder_that_cannot_be_listed_is_listed_as_unreadable(tmp_path: Path) -> None:
    (tmp_path / "in" / "DOE_JANE_MRN1").mkdir(parents=True)
    (tmp_path / "in" / "DOE_JANE_MRN1" / "b.dcm").write_bytes(_instance(2))
    (tmp_path / "in" / "a.dcm").write_bytes(_instance(1))
    os.chmod(tmp_path / "in" / "DOE_JANE_MRN1", 0)
    try:
        lines = _walk_without_privileges(tmp_path / "in")
    finally:
        os.chmod(tmp_path / "in" / "DOE_JANE_MRN1", 0o755)
    assert lines.splitlines() == [
        "DOE_JANE_MRN1 ('unreadable', 'cannot list folder: Permission denied')",
        "a.dcm None"]


def test_a_folder_that_cannot_be_listed_fails_alone(tmp_path: Path) -> None:
    """As the batch lists it (the walk gives the folder with its reason), whoever runs
    the test: the folder's own failure, the rest processed, no path in the reason."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(_instance(1))
    unlistable = Source(str(tmp_path / "in" / "DOE_JANE_MRN1"), "DOE_JANE_MRN1",
                        problem=("unreadable", "cannot list folder: Permission denied"))
    summary, rows = _run([*iter_sources(tmp_path / "in"), unlistable], tmp_path)
    assert (summary.processed, summary.failures_by_kind) == (1, {"unreadable": 1})
    assert rows == [{"path": "DOE_JANE_MRN1", "kind": "unreadable", "stage": "read",
                     "reason": "cannot list folder: Permission denied"}]


@pytest.fixture
def bad_names(tmp_path: Path) -> Path:
    """A good instance and junk, both under names that are not UTF-8, and a good file."""
    src = tmp_path / "in"
    src.mkdir()
    raw = os.fsencode(src)
    with open(os.path.join(raw, b"ok\xff\xfe.dcm"), "wb") as fh:
        fh.write(_instance(1))
    with open(os.path.join(raw, BAD_NAME), "wb") as fh:
        fh.write(b"junk")
    (src / "z.dcm").write_bytes(_instance(2))
    return src


def test_names_that_are_not_utf8_are_carried_and_written_as_escaped_text(
        bad_names: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "restricted" / "mapping.parquet"
    summary, rows = _run(iter_sources(bad_names), tmp_path, mapping_path=mapping)
    assert (summary.processed, summary.failed) == (2, 1)  # the batch went on
    assert [(r["path"], r["kind"]) for r in rows] == [("bad\\xff\\xfe.dcm", "not-dicom")]
    paths = sorted(r["source_path"] for r in pq.read_table(mapping).to_pylist())
    assert paths == ["ok\\xff\\xfe.dcm", "z.dcm"]
    assert os.fsencode(text_path(paths[0])) == b"ok\xff\xfe.dcm"  # the name, back


def test_a_name_that_is_not_utf8_keeps_its_escaped_text_in_relative_layout(
        bad_names: Path, tmp_path: Path) -> None:
    summary, _ = _run(iter_sources(bad_names), tmp_path, layout="relative",
                      mapping_path=tmp_path / "restricted" / "mapping.parquet")
    assert summary.processed == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok\\xff\\xfe.dcm",
                                                                     "z.dcm"]


def test_a_catalogued_uri_in_escaped_text_opens_the_file(bad_names: Path,
                                                          tmp_path: Path) -> None:
    """The export stores the escaped text as ``source_uri``; ``--filter`` and the pipeline
    open inputs by it."""
    uri = path_text(os.path.join(str(bad_names), os.fsdecode(b"ok\xff\xfe.dcm")))
    assert uri.endswith("ok\\xff\\xfe.dcm")
    summary, rows = _run([Source(Path(uri), "ok\\xff\\xfe.dcm")], tmp_path)
    assert (summary.processed, rows) == (1, [])


def test_path_text_is_the_identity_on_utf8_and_reversible() -> None:
    for name in ("a.dcm", "Müller^Jürgen/ß.dcm", "日本/x"):
        assert path_text(name) == name and text_path(name) == name
    assert path_text("a\\xff.dcm") == "a\\xff.dcm"  # UTF-8 names are never changed
    for raw in (b"\xff", b"a\xc3(b", b"\xe9t\xe9.dcm", b"x\x80y/\xfe"):
        text = path_text(os.fsdecode(raw))
        text.encode("utf-8")  # any CSV or Parquet writer takes it
        assert os.fsencode(text_path(text)) == raw
