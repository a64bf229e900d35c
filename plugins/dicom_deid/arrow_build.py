"""Arrow arrays built from buffers, not by pyarrow's Python-object conversion.

That conversion imports pandas the first time it runs (about 0.45 s of CPU); a run that
writes a few Parquet files from Python values (manifests, the mapping) need not pay it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate

import pyarrow as pa


def _validity(nulls: list[int], n: int) -> pa.Buffer | None:
    """A validity bitmap with the positions in ``nulls`` cleared (None when no nulls)."""
    if not nulls:
        return None
    bits = bytearray(b"\xff" * ((n + 7) // 8))
    for i in nulls:
        bits[i >> 3] &= 0xFF ^ (1 << (i & 7))
    return pa.py_buffer(bits)


def string_array(values: Sequence[str | None] | str, width: int = 0) -> pa.Array:
    """A string array built from buffers (no Python -> Arrow object conversion, which
    would import pandas); with ``width``, ``values`` is one ASCII string cut every
    ``width`` characters."""
    if width:
        n = len(values) // width
        data = values.encode("ascii")  # type: ignore[union-attr]
        offsets = array("i", range(0, width * n + 1, width))
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                      pa.py_buffer(data)])
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = array("q", [0])
    offsets.extend(accumulate(map(len, encoded)))
    nulls = [i for i, v in enumerate(values) if v is None]
    validity = _validity(nulls, len(values))
    wide = offsets[-1] >= 2**31
    arr = pa.Array.from_buffers(pa.large_string() if wide else pa.string(), len(values), [
        validity, pa.py_buffer(offsets if wide else array("i", offsets)),
        pa.py_buffer(b"".join(encoded))], null_count=len(nulls))
    return arr.cast(pa.string()) if wide else arr  # a cast fails past 2 GiB, as it should


def int32_array(values: Sequence[int | None]) -> pa.Array:
    """A nullable int32 array from Python ints (None = null)."""
    nulls = [i for i, v in enumerate(values) if v is None]
    data = array("i", (0 if v is None else v for v in values))
    return pa.Array.from_buffers(pa.int32(), len(values),
                                 [_validity(nulls, len(values)), pa.py_buffer(data)],
                                 null_count=len(nulls))
