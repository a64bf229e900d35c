"""A release that withdraws files leaves no copy of them in the store: the release shown
until then, which a plain release keeps for the readers that resolved it, loses them in
the same step (on local disk), and every stored version of them is deleted (on GCS,
versioned bucket included); everything else those readers hold stays readable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from google.cloud.storage import Client

from dicom_deid.errors import StorageError
from dicom_deid.storage import LocalStore, Store
from dicom_deid.storage.gcs import GcsStore
from instances import every_file

KEPT, GONE = b"kept-file-bytes", b"withdrawn-file-bytes"


def _stage(store: Store, release: str, files: dict[str, bytes]) -> dict[str, str]:
    for path, data in files.items():
        store.write_bytes(f".staging-proj/{release}/{path}", data)
    return {path: f".staging-proj/{release}/{path}" for path in files}


def _two_releases(store: Store) -> None:
    """r1 holds both files; r2 replaces the one to be withdrawn (so a versioned bucket
    holds two generations of it) and adds another."""
    store.publish_release("proj", "r1", _stage(store, "r1", {
        "st/se/gone.dcm": GONE + b"-1", "st/se/kept.dcm": KEPT}), (), {})
    store.publish_release("proj", "r2", _stage(store, "r2", {
        "st/se/gone.dcm": GONE + b"-2", "st/other/new.dcm": b"new"}), (), {})
    store.delete_tree(".staging-proj")


def test_a_withdrawal_leaves_no_copy_in_an_earlier_local_release(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _two_releases(store)
    before = Path(os.readlink(tmp_path / "proj")).name
    assert before == "r2"
    # A plain removal keeps the previous release whole (a reader of it keeps a tree).
    store.publish_release("proj", "r3", {}, ["st/other/new.dcm"], {})
    assert (tmp_path / ".releases-proj" / "r2" / "st/other/new.dcm").read_bytes() == b"new"
    # A withdrawal: the release shown until now (r3) loses the file, and so does any
    # earlier one kept.
    result = store.publish_release("proj", "w1", {}, ["st/se/gone.dcm"],
                                   {"manifests/w1.json": b"{}"}, withdraw=True)
    assert (result.release, result.removed) == ("w1", 1)
    assert store.release_of("proj") == "w1"
    files = every_file(tmp_path)
    assert not [p for p, data in files.items() if data.startswith(GONE)], sorted(files)
    assert not [p for p in files if p.endswith("gone.dcm")]
    # The previous release keeps what was not withdrawn, for its readers.
    r3 = tmp_path / ".releases-proj" / "r3"
    assert (r3 / "st/se/kept.dcm").read_bytes() == KEPT
    assert not (r3 / "st/se/gone.dcm").exists()
    assert (tmp_path / "proj" / "st/se/kept.dcm").read_bytes() == KEPT
    # Published again (its record lost): the same tree, still no copy.
    store.publish_release("proj", "w1", {}, ["st/se/gone.dcm"], {"manifests/w1.json": b"{}"},
                          withdraw=True)
    assert not [p for p, d in every_file(tmp_path).items() if d.startswith(GONE)]


@dataclass
class _VersionedBucket:
    """A versioned bucket as the GCS JSON API shows it to ``_withdraw_versions``: every
    generation of every object, listed with ``versions=True``, deleted one generation at
    a time. (fake-gcs-server keeps no noncurrent generations on either of its backends,
    so this part is checked against a model of the API.)"""

    generations: dict[str, list[int]]
    stuck: set[tuple[str, int]] = field(default_factory=set)
    listed_versions: list[bool] = field(default_factory=list)

    def list_blobs(self, bucket: str, *, prefix: str, versions: bool = False,
                   **_: Any) -> list[SimpleNamespace]:
        self.listed_versions.append(versions)
        return [SimpleNamespace(name=n, generation=g)
                for n, gs in sorted(self.generations.items()) if n.startswith(prefix)
                for g in (gs if versions else gs[-1:])]

    def bucket(self, name: str) -> Any:
        return SimpleNamespace(blob=lambda key, generation=None: SimpleNamespace(
            delete=lambda **_: self._delete(key, generation)))

    def _delete(self, key: str, generation: int | None) -> None:
        assert generation is not None, "a withdrawal deletes generations, not live names"
        if (key, generation) not in self.stuck:
            self.generations[key].remove(generation)
        if not self.generations[key]:
            del self.generations[key]


def test_a_withdrawal_deletes_every_stored_version_on_gcs() -> None:
    bucket = _VersionedBucket({
        "root/proj/st/se/gone.dcm": [1, 2, 3],  # noncurrent 1, 2 (earlier releases' pins)
        "root/proj/st/se/gone.dcm.sidecar": [4],  # another object sharing the prefix
        "root/proj/st/se/kept.dcm": [5, 6]})
    store = GcsStore("gs://b/root", client=cast(Client, bucket), workers=2)
    store._withdraw_versions("proj", ["st/se/gone.dcm"])
    assert bucket.generations == {"root/proj/st/se/gone.dcm.sidecar": [4],
                                  "root/proj/st/se/kept.dcm": [5, 6]}
    assert bucket.listed_versions and all(bucket.listed_versions)
    # A generation that cannot be deleted: the withdrawal is not reported done.
    bucket.generations["root/proj/st/se/gone.dcm"] = [7, 8]
    bucket.stuck.add(("root/proj/st/se/gone.dcm", 7))
    with pytest.raises(StorageError, match=r"1 stored version.*not complete") as failed:
        store._withdraw_versions("proj", ["st/se/gone.dcm"])
    assert "gone.dcm" not in str(failed.value)


def test_a_withdrawal_deletes_the_object_on_gcs(gcs: GcsStore, bucket: str,
                                                gcs_client: Client) -> None:
    _two_releases(gcs)
    pinned = {f.rel: f.generation for f in gcs.release_files("proj")}
    gcs.publish_release("proj", "w1", {}, ["st/se/gone.dcm"], {}, withdraw=True)
    assert gcs.release_of("proj") == "w1"
    names = {b.name for b in gcs_client.list_blobs(bucket, versions=True)}
    assert "root/proj/st/se/gone.dcm" not in names and "root/proj/st/se/kept.dcm" in names
    with pytest.raises(FileNotFoundError):  # a reader of r2 finds it gone...
        gcs.read_range("proj/st/se/gone.dcm", 0, 4, generation=pinned["proj/st/se/gone.dcm"])
    kept = "proj/st/se/kept.dcm"  # ...and keeps reading the rest
    assert gcs.read_range(kept, 0, len(KEPT), generation=pinned[kept]) == KEPT
