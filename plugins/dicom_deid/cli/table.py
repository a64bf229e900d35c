"""Print a query result as a plain fixed-width table (no pandas needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def print_table(table: pa.Table, limit: int = 50) -> None:
    """A plain fixed-width rendering (no pandas needed)."""
    names = table.column_names
    rows = [[("" if v is None else str(v)) for v in row.values()]
            for row in table.slice(0, limit).to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if table.num_rows > limit:
        print(f"... {table.num_rows - limit} more row(s)")
