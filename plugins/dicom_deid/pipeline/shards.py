"""Split a run's instances into shards of whole series for parallel de-identification.

A shard is the unit of one mapped Airflow task: a list of instances, whole series only
(so one series' outputs are written, verified and retried together), bounded by file
count and bytes. The shard count is capped well below Airflow's ``max_map_length``
(1024 by default): when the limits would give more shards, the limits grow instead.
The shards are then evened out: as many as the limits need, the largest as small as it
can be (mapped shards run side by side, so a run lasts as long as its largest).
The plan is a pure function of the instance list, so a rerun plans the same shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from dicom_deid.errors import ConfigError

if TYPE_CHECKING:  # pyarrow loads when shards are cut, not when a DAG file is parsed
    import pyarrow as pa

__all__ = ["ShardLimits", "ShardPlan", "plan_shards"]

SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class ShardLimits:
    """How big a shard may get, and how many shards a run may have at most."""

    max_files: int = 2_000
    max_bytes: int = 4 * 1024**3
    max_shards: int = 256

    def __post_init__(self) -> None:
        if min(self.max_files, self.max_bytes, self.max_shards) < 1:
            raise ConfigError("shard limits must be positive")


@dataclass(frozen=True)
class ShardPlan:
    """One shard: its number, and what it holds (counts only: safe to pass through XCom)."""

    shard: int
    files: int
    bytes: int
    series: int

    @property
    def name(self) -> str:
        return f"shard-{self.shard:05d}"

    def descriptor(self) -> dict[str, int]:
        """The small dict a mapped task receives."""
        return asdict(self)


@dataclass(frozen=True)
class _Series:
    rows: list[int]
    files: int
    bytes: int
    series: int = 1
    """Series in the group (more than one when they share a SOP Instance UID)."""


def _series_groups(instances: pa.Table) -> list[_Series]:
    """Row indices per series, series in (study, series) order, rows in URI order.

    Series that share a SOP Instance UID (a re-send under another study or series) are
    one group, so their inputs meet in one shard, where the batch's duplicate rule picks
    one of them; in two shards both would be published.
    """
    sizes = (
        instances.column("size_bytes").to_pylist()
        if "size_bytes" in instances.column_names
        else [0] * instances.num_rows
    )
    import pyarrow.compute as pc

    order = pc.sort_indices(
        instances, sort_keys=[(k, "ascending") for k in (*SERIES_KEYS, "source_uri")]
    ).to_pylist()
    studies = instances.column(SERIES_KEYS[0]).to_pylist()
    series = instances.column(SERIES_KEYS[1]).to_pylist()
    sops = instances.column("SOPInstanceUID").to_pylist() \
        if "SOPInstanceUID" in instances.column_names else [None] * instances.num_rows
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(key, key) != key:
            key = parent[key] = parent[parent[key]]
        return key

    first_series: dict[str, tuple[str, str]] = {}
    for i in order:
        key = root((studies[i], series[i]))
        if sops[i] is not None:
            other = root(first_series.setdefault(sops[i], key))
            if other != key:  # joined under the one that sorts first
                parent[max(key, other)] = min(key, other)
    members: dict[tuple[str, str], list[int]] = {}
    for i in order:  # groups in the order of their first series; rows in series order
        members.setdefault(root((studies[i], series[i])), []).append(i)
    return [_Series(rows, len(rows), sum(sizes[r] or 0 for r in rows),
                    len({(studies[r], series[r]) for r in rows}))
            for rows in members.values()]


def _pack(groups: Sequence[_Series], max_files: int, max_bytes: int) -> list[list[_Series]]:
    """Greedy, in order: start a new shard when the next series would overflow this one."""
    shards: list[list[_Series]] = []
    files = size = 0
    for g in groups:
        if shards and shards[-1] and (files + g.files > max_files or size + g.bytes > max_bytes):
            shards.append([])
            files = size = 0
        if not shards:
            shards.append([])
        shards[-1].append(g)
        files += g.files
        size += g.bytes
    return shards


def _balanced(groups: Sequence[_Series], shards: int, max_files: int,
              max_bytes: int) -> list[list[_Series]]:
    """The same number of shards with the largest as small as it can be.

    Greedy packing fills each shard to its limit and leaves the rest to the last (grown
    limits gave 4,017 and 1,338 files for 5,355 in two shards): mapped tasks run side by
    side, so the run waits for the largest. Limits scaled down together, found by
    bisection (greedy packing never needs more shards under larger limits).
    """
    low, high = 1, max_files  # ``high`` packs into ``shards``; find the least that does
    while low < high:
        mid = (low + high) // 2
        if len(_pack(groups, mid, math.ceil(max_bytes * mid / max_files))) <= shards:
            high = mid
        else:
            low = mid + 1
    return _pack(groups, high, math.ceil(max_bytes * high / max_files))


def plan_shards(
    instances: pa.Table, limits: ShardLimits | None = None
) -> tuple[list[ShardPlan], list[pa.Table]]:
    """Shards of whole series for ``instances`` (needs source_uri, the UIDs, size_bytes).

    Returns the shard descriptors and, for each, the instance rows it holds.
    """
    limits = limits or ShardLimits()
    groups = _series_groups(instances)
    if not groups:
        return [], []
    max_files, max_bytes = limits.max_files, limits.max_bytes
    packed = _pack(groups, max_files, max_bytes)
    while len(packed) > limits.max_shards:
        grow = max(1.25, len(packed) / limits.max_shards)
        max_files = math.ceil(max_files * grow)
        max_bytes = math.ceil(max_bytes * grow)
        packed = _pack(groups, max_files, max_bytes)
    packed = _balanced(groups, len(packed), max_files, max_bytes)
    plans: list[ShardPlan] = []
    tables: list[pa.Table] = []
    for n, shard in enumerate(packed):
        rows = [r for g in shard for r in g.rows]
        plans.append(ShardPlan(n, len(rows), sum(g.bytes for g in shard),
                               sum(g.series for g in shard)))
        tables.append(instances.take(_row_array(rows)))
    return plans, tables


def _row_array(rows: list[int]) -> pa.Array:
    """Row numbers as an Arrow array (pyarrow imported here, on first use)."""
    import pyarrow as pa

    return pa.array(rows, pa.int64())
