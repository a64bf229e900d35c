"""Split a run's instances into shards of whole series for parallel de-identification.

A shard is the unit of one mapped Airflow task: a list of instances, whole series only
(so one series' outputs are written, verified and retried together), bounded by file
count and bytes. The shard count is capped well below Airflow's ``max_map_length``
(1024 by default): when the limits would give more shards, the limits grow instead.
The plan is a pure function of the instance list, so a rerun plans the same shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dicom_deid.errors import ConfigError

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


def _series_groups(instances: pa.Table) -> list[_Series]:
    """Row indices per series, series in (study, series) order, rows in URI order."""
    sizes = (
        instances.column("size_bytes").to_pylist()
        if "size_bytes" in instances.column_names
        else [0] * instances.num_rows
    )
    order = pc.sort_indices(
        instances, sort_keys=[(k, "ascending") for k in (*SERIES_KEYS, "source_uri")]
    ).to_pylist()
    studies = instances.column(SERIES_KEYS[0]).to_pylist()
    series = instances.column(SERIES_KEYS[1]).to_pylist()
    groups: list[_Series] = []
    current: tuple[str, str] | None = None
    rows: list[int] = []
    for i in order:
        key = (studies[i], series[i])
        if key != current and rows:
            groups.append(_Series(rows, len(rows), sum(sizes[r] or 0 for r in rows)))
            rows = []
        current = key
        rows.append(i)
    if rows:
        groups.append(_Series(rows, len(rows), sum(sizes[r] or 0 for r in rows)))
    return groups


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
    plans: list[ShardPlan] = []
    tables: list[pa.Table] = []
    for n, shard in enumerate(packed):
        rows = [r for g in shard for r in g.rows]
        plans.append(ShardPlan(n, len(rows), sum(g.bytes for g in shard), len(shard)))
        tables.append(instances.take(pa.array(rows, pa.int64())))
    return plans, tables
