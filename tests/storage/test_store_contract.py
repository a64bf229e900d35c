"""The contract every store keeps, run on a local folder and on a GCS bucket (emulator):
reads, conditional writes, copies, listings, trees and releases behave the same."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dicom_deid.errors import StorageError
from dicom_deid.storage import AlreadyExists, Store

DATA = bytes(range(256)) * 40  # 10 KiB, every byte value


def _later_than(moment: datetime) -> None:
    """Return once the clock is past ``moment`` (so the next write gets a later time)."""
    while datetime.now(UTC) <= moment + timedelta(milliseconds=20):
        time.sleep(0.005)


def test_reads_agree_with_the_bytes_written(store: Store, tmp_path: Path) -> None:
    store.write_bytes("a/b/one.dcm", DATA)
    store.write_bytes("a/two.dcm", b"two")
    assert store.read_bytes("a/b/one.dcm") == DATA
    assert store.exists("a/b/one.dcm") and store.exists("a/b") and not store.exists("a/c")
    found = store.stat("a/b/one.dcm")
    assert (found.rel, found.size) == ("a/b/one.dcm", len(DATA))
    assert store.read_range("a/b/one.dcm", 300, 10) == DATA[300:310]
    assert store.read_range("a/b/one.dcm", len(DATA) - 4, 10) == DATA[-4:]  # short at end
    assert store.read_range("a/b/one.dcm", len(DATA) + 5, 10) == b""
    with store.open_read("a/b/one.dcm") as fh:
        assert fh.read(4) == DATA[:4]
        fh.seek(5000)
        assert fh.read(6) == DATA[5000:5006]
        fh.seek(-3, 2)
        assert fh.read() == DATA[-3:]
    with store.local_copy("a/b/one.dcm") as path:
        assert path.read_bytes() == DATA
    fetched = store.fetch(["a/b/one.dcm", "a/two.dcm"], tmp_path / "got", workers=2)
    assert {r: p.read_bytes() for r, p in fetched.items()} == {
        "a/b/one.dcm": DATA, "a/two.dcm": b"two"}
    assert fetched["a/b/one.dcm"] == tmp_path / "got" / "a" / "b" / "one.dcm"
    assert store.sha256(["a/b/one.dcm", "a/two.dcm"], workers=2) == {
        "a/b/one.dcm": hashlib.sha256(DATA).hexdigest(),
        "a/two.dcm": hashlib.sha256(b"two").hexdigest()}


def test_missing_files_are_file_not_found(store: Store, tmp_path: Path) -> None:
    for read in (lambda: store.read_bytes("nope"), lambda: store.stat("nope"),
                 lambda: store.open_read("nope"), lambda: store.read_range("nope", 0, 1),
                 lambda: store.sha256(["nope"]), lambda: store.fetch(["nope"], tmp_path),
                 lambda: store.copy("nope", "x")):
        with pytest.raises(FileNotFoundError):
            read()
    with pytest.raises(FileNotFoundError), store.local_copy("nope"):
        pass


def test_a_conditional_create_refuses_a_second_create(store: Store) -> None:
    store.write_bytes("state/marker.json", b"first", if_absent=True)
    with pytest.raises(AlreadyExists, match="exists already"):
        store.write_bytes("state/marker.json", b"second", if_absent=True)
    assert store.read_bytes("state/marker.json") == b"first"
    store.write_bytes("state/marker.json", b"third")  # an unconditional write replaces it
    assert store.read_bytes("state/marker.json") == b"third"


def test_copies_and_uploads(store: Store, tmp_path: Path) -> None:
    store.write_bytes("src/a.dcm", DATA)
    store.copy("src/a.dcm", "dst/deep/a.dcm")
    assert store.read_bytes("dst/deep/a.dcm") == DATA
    assert store.read_bytes("src/a.dcm") == DATA
    local = tmp_path / "up.bin"
    local.write_bytes(DATA[::-1])
    store.upload_file(local, "up/up.bin")
    assert store.read_bytes("up/up.bin") == DATA[::-1]


def test_listing_skips_hidden_segments_and_bounds_modification(store: Store) -> None:
    store.write_bytes("land/x/1.dcm", b"1")
    first = store.stat("land/x/1.dcm").modified
    _later_than(first)
    store.write_bytes("land/x/2.dcm", b"22")
    second = store.stat("land/x/2.dcm").modified
    assert second > first
    for hidden in ("land/.staging/s.dcm", "land/_errors/e.csv", "land/x/_tmp.dcm",
                   "other/3.dcm"):
        store.write_bytes(hidden, b"h")
    listed = store.list_files("land")
    assert [(f.rel, f.size) for f in listed] == [("land/x/1.dcm", 1), ("land/x/2.dcm", 2)]
    assert [f.modified for f in listed] == [first, second]
    assert [f.rel for f in store.list_files("land", modified_to=second)] == ["land/x/1.dcm"]
    assert [f.rel for f in store.list_files("land", modified_from=second)] == [
        "land/x/2.dcm"]
    # A hidden prefix itself may be listed (verify reads its staging folder).
    assert [f.rel for f in store.list_files("land/.staging")] == ["land/.staging/s.dcm"]
    assert [f.rel for f in store.list_files()] == ["land/x/1.dcm", "land/x/2.dcm",
                                                   "other/3.dcm"]
    with pytest.raises(StorageError, match="timezone-aware"):
        store.list_files(modified_to=datetime(2026, 1, 1))


def test_put_tree_replaces_a_tree_exactly(store: Store) -> None:
    first = store.scratch_dir("stage/s1")
    (first / "keep.dcm").write_bytes(b"old-keep")
    (first / "old" / "gone.dcm").parent.mkdir()
    (first / "old" / "gone.dcm").write_bytes(b"gone")
    store.put_tree(first, "stage/s1")
    second = store.scratch_dir("stage/s1")
    (second / "keep.dcm").write_bytes(b"new-keep")
    (second / "new" / "n.dcm").parent.mkdir()
    (second / "new" / "n.dcm").write_bytes(b"n")
    store.put_tree(second, "stage/s1")
    assert [f.rel for f in store.list_files("stage")] == ["stage/s1/keep.dcm",
                                                          "stage/s1/new/n.dcm"]
    assert store.read_bytes("stage/s1/keep.dcm") == b"new-keep"
    assert not first.exists() and not second.exists()  # nothing left on local disk
    store.delete_tree("stage")
    assert not store.exists("stage") and store.list_files("stage") == []
    store.delete_tree("stage")  # missing is fine


def _publish(folder: Path, sink: object, rel: str, data: bytes) -> None:
    """What a batch does with one output: write it, then hand it to the sink (if any)."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if sink is not None:
        sink.published(str(path), rel)  # type: ignore[attr-defined]


def test_a_tree_writer_replaces_the_tree_with_what_the_batch_published(store: Store) -> None:
    """Outputs handed to the sink as published (stored at once on an object store),
    taken back, published twice, or just left in the folder: when the block ends the tree
    holds exactly the batch's final outputs, the earlier tree's other files gone and no
    local folder left."""
    store.write_bytes("stage/s1/stale.dcm", b"from an earlier try")
    store.write_bytes("stage/s1/a/replaced.dcm", b"earlier")
    with store.tree_writer("stage/s1") as (folder, sink):
        _publish(folder, sink, "a/replaced.dcm", b"first version")
        _publish(folder, sink, "a/replaced.dcm", b"newer duplicate")
        _publish(folder, sink, "b/taken-back.dcm", b"lost to a newer duplicate")
        if sink is not None:
            sink.removed("b/taken-back.dcm")
        else:
            (folder / "b" / "taken-back.dcm").unlink()
        (folder / "c").mkdir()
        (folder / "c" / "left.dcm").write_bytes(b"never handed over")
    assert {f.rel: store.read_bytes(f.rel) for f in store.list_files("stage")} == {
        "stage/s1/a/replaced.dcm": b"newer duplicate",
        "stage/s1/c/left.dcm": b"never handed over",
    }
    assert not folder.exists()


def test_a_tree_writer_that_fails_leaves_no_local_folder(store: Store) -> None:
    with pytest.raises(RuntimeError), store.tree_writer("stage/s2") as (folder, sink):
        _publish(folder, sink, "x.dcm", b"unverified output")
        raise RuntimeError("the batch failed")
    assert not folder.exists()
    store.write_bytes("stage/s2/x.dcm", b"a rerun")  # the tree stays usable


def test_a_tree_writer_that_adds_keeps_what_was_there(store: Store) -> None:
    store.write_bytes("out/old.dcm", b"an earlier run's")
    with store.tree_writer("out", replace=False) as (folder, sink):
        _publish(folder, sink, "new.dcm", b"this run's")
    assert {f.rel: store.read_bytes(f.rel) for f in store.list_files("out")} == {
        "out/old.dcm": b"an earlier run's", "out/new.dcm": b"this run's"}


def _stage(store: Store, release: str, files: dict[str, bytes]) -> dict[str, str]:
    """Stage ``files`` (tree path -> bytes) as a night would; tree path -> staged path."""
    for path, data in files.items():
        store.write_bytes(f".staging-proj/{release}/{path}", data)
    return {path: f".staging-proj/{release}/{path}" for path in files}


def _tree(store: Store) -> dict[str, bytes]:
    """What a reader of the release shown sees: path in the tree -> bytes."""
    return {f.rel.removeprefix("proj/"): store.read_bytes(f.rel)
            for f in store.release_files("proj")}


def test_releases_add_replace_remove_and_reruns_change_nothing(store: Store) -> None:
    assert store.release_of("proj") is None and store.release_files("proj") == []
    add = _stage(store, "r1", {"st/a.dcm": b"a1", "st/b.dcm": b"b1"})
    first = store.publish_release("proj", "r1", add, (), {"manifests/r1.json": b"{1}"})
    assert (first.files, first.added, first.removed) == (3, 2, 0)
    assert store.release_of("proj") == "r1"
    assert _tree(store) == {"st/a.dcm": b"a1", "st/b.dcm": b"b1", "manifests/r1.json": b"{1}"}
    # r2: b replaced, a removed, c added.
    add = _stage(store, "r2", {"st/b.dcm": b"b2", "st/c.dcm": b"c2"})
    second = store.publish_release("proj", "r2", add, ["st/a.dcm"],
                                   {"manifests/r2.json": b"{2}"})
    assert (second.files, second.added, second.removed) == (4, 2, 1)
    want = {"st/b.dcm": b"b2", "st/c.dcm": b"c2", "manifests/r1.json": b"{1}",
            "manifests/r2.json": b"{2}"}
    assert store.release_of("proj") == "r2" and _tree(store) == want
    assert [f.rel for f in store.list_files("proj")] == sorted(f"proj/{p}" for p in want)
    sizes = {f.rel: f.size for f in store.release_files("proj")}
    assert sizes["proj/st/c.dcm"] == 2
    # The same release again (its record lost): same outcome, same tree.
    again = store.publish_release("proj", "r2", add, ["st/a.dcm"],
                                  {"manifests/r2.json": b"{2}"})
    assert again == second and store.release_of("proj") == "r2" and _tree(store) == want
    # A release that removes only.
    third = store.publish_release("proj", "r3", {}, ["st/c.dcm"], {})
    assert (third.files, third.removed) == (3, 1) and "st/c.dcm" not in _tree(store)


def test_release_names_and_trees_are_checked(store: Store) -> None:
    with pytest.raises(StorageError):
        store.publish_release("../up", "r1", {}, (), {})


def test_lock_holders_of_one_tree_take_turns(store: Store) -> None:
    order: list[str] = []

    def second() -> None:
        with store.lock("proj"):
            order.append("second in")

    with store.lock("proj"):
        with store.lock("proj"):  # re-entrant in one thread
            order.append("first in")
        other = threading.Thread(target=second)
        other.start()
        other.join(0.5)
        assert other.is_alive()  # still waiting for the lock
        order.append("first out")
    other.join(30)
    assert not other.is_alive()
    assert order == ["first in", "first out", "second in"]
