"""The release manifest of an object store's release tree: the commit record readers trust.

A manifest lists every file of one release (its path in the tree, size, the object
version it was written as, CRC32C and MD5 as the store reports them), what the release
added and removed, and the release it was built on. It is written once, last, as the
release's commit marker (see :mod:`dicom_deid.storage.gcs`). Versions and times differ
between two writings of the same release; :meth:`ReleaseManifest.same_content` compares
what a release *is*, so a rerun can tell "published already" from "a different release
under the same name".
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_deid.errors import StorageError

__all__ = ["FORMAT", "FileEntry", "ReleaseManifest", "next_manifest"]

FORMAT = 1
"""The manifest layout's version, written into every manifest."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a release as written: size, object version, checksums (base64, as the
    store reports them; MD5 is absent for composed objects) and update time (ISO 8601)."""

    size: int
    generation: int
    crc32c: str
    md5: str | None = None
    updated: str = ""

    def content(self) -> tuple[int, str]:
        """What the file is, whichever writing of it: its size and CRC32C."""
        return self.size, self.crc32c


@dataclass(frozen=True)
class ReleaseManifest:
    """Every file of one release, what it added and removed, and what it was built on."""

    release: str
    base: str | None
    files: dict[str, FileEntry]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = field(default=())
    """Paths of ``added`` that the base release held already (their objects were
    overwritten in place by this release)."""

    def same_content(self, other: ReleaseManifest) -> bool:
        """True if both describe the same release (names, base, changes, file contents),
        whatever object versions the two writings produced."""
        return (self.release, self.base, self.added, self.removed, self.replaced) == (
            other.release, other.base, other.added, other.removed, other.replaced) and {
            p: e.content() for p, e in self.files.items()} == {
            p: e.content() for p, e in other.files.items()}

    def to_bytes(self) -> bytes:
        """The manifest as JSON (sorted keys, one file per line for diffs)."""
        doc: dict[str, Any] = {
            "format": FORMAT, "release": self.release, "base": self.base,
            "added": list(self.added), "removed": list(self.removed),
            "replaced": list(self.replaced),
            "files": {p: {k: v for k, v in vars(e).items() if v is not None}
                      for p, e in sorted(self.files.items())},
        }
        return (json.dumps(doc, sort_keys=True, indent=0) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleaseManifest:
        """Parse a manifest written by :meth:`to_bytes`; anything else is a StorageError."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise StorageError(f"release manifest format {doc.get('format')!r} is not "
                                   f"{FORMAT}")
            return cls(
                release=str(doc["release"]), base=doc["base"],
                files={p: FileEntry(**e) for p, e in doc["files"].items()},
                added=tuple(doc["added"]), removed=tuple(doc["removed"]),
                replaced=tuple(doc["replaced"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"unreadable release manifest ({type(exc).__name__})") from None


def next_manifest(release: str, base: ReleaseManifest | None,
                  written: Mapping[str, FileEntry], remove: Collection[str]
                  ) -> ReleaseManifest:
    """The manifest of ``release``: the files of ``base`` less ``remove``, with the files
    ``written`` by this release added or replacing theirs."""
    before = base.files if base is not None else {}
    files = {p: e for p, e in before.items() if p not in remove and p not in written}
    files.update(written)
    return ReleaseManifest(
        release=release, base=base.release if base is not None else None, files=files,
        added=tuple(sorted(written)),
        removed=tuple(sorted(p for p in set(remove) if p in before and p not in written)),
        replaced=tuple(sorted(p for p in written if p in before)),
    )
