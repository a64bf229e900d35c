"""LocalStore, the embedded default: listings by modification time, trees replaced by a
rename, releases as a link to a full tree moved in one step, and what it does beyond the
shared contract (tests/storage/test_store_contract.py): no copies for local reads."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dicom_deid.errors import StorageError
from dicom_deid.storage import AlreadyExists, LocalStore, open_store

DAY1 = datetime(2026, 5, 1, tzinfo=UTC)


def _touch(path: Path, moment: datetime, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (moment.timestamp(), moment.timestamp()))


def test_local_store_lists_by_modification_interval_and_skips_hidden(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "1.dcm", DAY1 + timedelta(hours=1))
    _touch(tmp_path / "a" / "2.dcm", DAY1 + timedelta(days=1))  # end is exclusive
    _touch(tmp_path / ".staging" / "x.dcm", DAY1 + timedelta(hours=2))
    _touch(tmp_path / "_errors" / "y.csv", DAY1 + timedelta(hours=2))
    store = open_store(tmp_path)
    day = store.list_files(modified_from=DAY1, modified_to=DAY1 + timedelta(days=1))
    assert [f.rel for f in day] == ["a/1.dcm"]
    assert day[0].modified == DAY1 + timedelta(hours=1)
    assert [f.rel for f in store.list_files()] == ["a/1.dcm", "a/2.dcm"]


def test_put_tree_replaces_a_folder_whole(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = store.scratch_dir("stage/s1")
    (first / "old.dcm").write_bytes(b"old")
    store.put_tree(first, "stage/s1")
    second = store.scratch_dir("stage/s1")
    (second / "new.dcm").write_bytes(b"new")
    store.put_tree(second, "stage/s1")
    assert [f.rel for f in store.list_files("stage")] == ["stage/s1/new.dcm"]
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["s1"]  # no leftovers


def test_releases_grow_one_tree_each_shown_in_one_step(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for name, data in (("st/se1/a.dcm", b"a1"), ("st/se1/b.dcm", b"b1")):
        store.write_bytes(f".staging-proj/r1/s1/{name}", data)
    first = store.publish_release(
        "proj", "r1", {"st/se1/a.dcm": ".staging-proj/r1/s1/st/se1/a.dcm",
                       "st/se1/b.dcm": ".staging-proj/r1/s1/st/se1/b.dcm"},
        (), {"manifests/r1.json": b"{}"})
    assert (first.files, first.added, first.removed) == (3, 2, 0)  # with its manifest
    link = tmp_path / "proj"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert store.release_of("proj") == "r1"
    assert [f.rel for f in store.list_files("proj")] == [
        "proj/manifests/r1.json", "proj/st/se1/a.dcm", "proj/st/se1/b.dcm"]
    seen_by_reader = link.resolve()  # a reader that resolved the tree before the next one
    # The next release: b replaced, a removed, c added; the rest are links, not copies.
    store.write_bytes(".staging-proj/r2/s1/st/se1/b.dcm", b"b2")
    store.write_bytes(".staging-proj/r2/s1/st/se2/c.dcm", b"c2")
    second = store.publish_release(
        "proj", "r2", {"st/se1/b.dcm": ".staging-proj/r2/s1/st/se1/b.dcm",
                       "st/se2/c.dcm": ".staging-proj/r2/s1/st/se2/c.dcm"},
        ["st/se1/a.dcm"], {"manifests/r2.json": b"{}"})
    assert (second.added, second.removed) == (2, 1)
    assert [f.rel for f in store.list_files("proj")] == [
        "proj/manifests/r1.json", "proj/manifests/r2.json", "proj/st/se1/b.dcm",
        "proj/st/se2/c.dcm"]
    assert store.read_bytes("proj/st/se1/b.dcm") == b"b2"
    assert (seen_by_reader / "st/se1/a.dcm").read_bytes() == b"a1"  # the previous release
    assert os.stat(link / "manifests/r1.json").st_ino == os.stat(
        seen_by_reader / "manifests/r1.json").st_ino  # hard-linked forward
    # A third release removes the first from disk (two are kept).
    store.write_bytes(".staging-proj/r3/s1/st/se3/d.dcm", b"d3")
    store.publish_release("proj", "r3", {"st/se3/d.dcm": ".staging-proj/r3/s1/st/se3/d.dcm"},
                          (), {})
    assert sorted(p.name for p in (tmp_path / ".releases-proj").iterdir() if p.is_dir()) == [
        "r2", "r3"]
    # Published again (its record was lost): built on the release it was built on, not on
    # itself, so what it removed stays removed and nothing is doubled.
    before = link.resolve()  # a reader that resolved the tree before it is built again
    again = store.publish_release(
        "proj", "r3", {"st/se3/d.dcm": ".staging-proj/r3/s1/st/se3/d.dcm"}, (), {})
    assert again.files == 5 and store.release_of("proj") == "r3"
    assert link.resolve() != before and (before / "st/se3/d.dcm").is_file()  # never broken
    assert [f.rel for f in store.list_files("proj")] == [
        "proj/manifests/r1.json", "proj/manifests/r2.json", "proj/st/se1/b.dcm",
        "proj/st/se2/c.dcm", "proj/st/se3/d.dcm"]
    # The next release builds on the one built again.
    store.write_bytes(".staging-proj/r4/s1/st/se4/e.dcm", b"e4")
    after = store.publish_release(
        "proj", "r4", {"st/se4/e.dcm": ".staging-proj/r4/s1/st/se4/e.dcm"}, (), {})
    assert after.files == 6 and store.read_bytes("proj/st/se3/d.dcm") == b"d3"
    # A plain folder where the tree should be is an older layout: refused, untouched.
    (tmp_path / "old").mkdir()
    with pytest.raises(StorageError, match="older layout"):
        store.publish_release("old", "r1", {}, (), {})


def test_unsupported_schemes_and_parent_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not supported"):
        open_store("s3://bucket/landing")
    with pytest.raises(StorageError, match=r"\.\."):
        LocalStore(tmp_path).read_bytes("../etc/passwd")
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert open_store(f"file://{tmp_path}").url == str(tmp_path)


def test_local_reads_use_the_file_itself(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("a/one.dcm", b"one")
    with store.local_copy("a/one.dcm") as path:
        assert path == tmp_path / "a" / "one.dcm"  # nothing copied
    assert path.exists()  # and nothing removed
    assert store.local_path("a/one.dcm") == path


def test_fetch_copies_so_the_landing_file_keeps_its_mode(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "land")
    store.write_bytes("a/one.dcm", b"one")
    original = store.local_path("a/one.dcm")
    mode = original.stat().st_mode
    got = store.fetch(["a/one.dcm"], tmp_path / "work")["a/one.dcm"]
    got.chmod(0o600)  # what the workspace does to its files
    assert original.stat().st_mode == mode and not os.path.samefile(got, original)


def test_a_conditional_create_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("s/m.json", b"1", if_absent=True)
    with pytest.raises(AlreadyExists):
        store.write_bytes("s/m.json", b"2", if_absent=True)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["m.json"]


def test_release_files_come_from_one_release(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader lists the release the link names when it looks, even if the next release
    is shown meanwhile (the link is resolved once)."""
    store = LocalStore(tmp_path)
    store.write_bytes(".staging-proj/r1/a.dcm", b"a")
    store.publish_release("proj", "r1", {"a.dcm": ".staging-proj/r1/a.dcm"}, (), {})
    published: list[str] = []
    readlink = os.readlink

    def publish_meanwhile(path: str | os.PathLike[str]) -> str:
        target = readlink(path)
        if not published:  # right after the reader resolved the link: r2 is published
            published.append("r2")
            store.write_bytes(".staging-proj/r2/b.dcm", b"b")
            store.publish_release("proj", "r2", {"b.dcm": ".staging-proj/r2/b.dcm"},
                                  ["a.dcm"], {})
        return target

    monkeypatch.setattr(os, "readlink", publish_meanwhile)
    files = [f.rel for f in store.release_files("proj")]
    monkeypatch.undo()
    assert published and store.release_of("proj") == "r2"
    assert files == ["proj/a.dcm"]  # r1 whole, though r2 is shown now
    assert [f.rel for f in store.release_files("proj")] == ["proj/b.dcm"]
