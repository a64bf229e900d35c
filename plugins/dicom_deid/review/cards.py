"""A run's review cards read back: for the approval's message and the review page.

The workers write one card (and its thumbnails) per output the project's ``review:``
rule selects, per shard: ``<review folder>/shard-NNNNN.parquet`` and
``<review folder>/shard-NNNNN/<hash>-f<frame>.png`` (see ``dicom_deid.deid.batch``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["PAGE_PREFIX", "page_path", "read_cards", "review_summary", "thumbnail_path"]

#: Where the review page is served on Airflow's API server (its plugin's FastAPI app).
PAGE_PREFIX = "/dicom-deid"

_SHARD = re.compile(r"shard-(\d+)")
_THUMB = re.compile(r"[0-9a-f]{20}-f\d+\.png")


def read_cards(folder: Path) -> list[dict[str, Any]]:
    """Every card of a run's review folder, with its shard number, in shard then path
    order (none when the folder does not exist)."""
    import pyarrow.parquet as pq

    cards: list[dict[str, Any]] = []
    for path in sorted(folder.glob("shard-*.parquet"), key=_shard_number):
        shard = _shard_number(path)
        cards += [{**row, "shard": shard} for row in pq.read_table(path).to_pylist()]
    return cards


def _shard_number(path: Path) -> int:
    m = _SHARD.fullmatch(path.stem)
    return int(m.group(1)) if m else -1


def review_summary(cards: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the approval's message and the page's header (PHI-free)."""
    return {
        "selected": len(cards),
        "flagged": sum(not c["ok"] for c in cards),
        "at_risk": sum(bool(c["at_risk"]) for c in cards),
        "regions_redacted": sum(int(c["boxes"] or 0) for c in cards),
        "by_modality": dict(sorted(Counter(c["modality"] or "?" for c in cards).items())),
        "not_shown": sum(not c["thumbnails"] for c in cards),
    }


def thumbnail_path(folder: Path, shard: int, name: str) -> Path | None:
    """The file of one thumbnail in a run's review folder, or None for any other name: a
    request cannot reach outside the folder."""
    if not _THUMB.fullmatch(name) or not 0 <= shard < 100_000:
        return None
    path = folder / f"shard-{shard:05d}" / name
    return path if path.is_file() else None


def page_path(dag_id: str, run_id: str) -> str:
    """The review page of one DAG run, relative to the API server's base URL."""
    return f"{PAGE_PREFIX}/review/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
