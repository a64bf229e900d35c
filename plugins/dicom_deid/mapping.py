"""The original <-> pseudonym mapping, written as Parquet beside (never inside) the output.

It holds original identifiers, so it is restricted data: the warehouse loads it into
a restricted table; it must never be copied into the de-identified tree.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from .arrow_build import int32_array, string_array

MAPPING_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_path", pa.string()),
        ("output_path", pa.string()),
        ("sop_class_uid", pa.string()),
        ("modality", pa.string()),
        ("original_study_uid", pa.string()),
        ("original_series_uid", pa.string()),
        ("original_sop_uid", pa.string()),
        ("original_patient_id", pa.string()),
        ("original_accession", pa.string()),
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("sop_uid", pa.string()),
        ("patient_id", pa.string()),
        ("accession", pa.string()),
        ("date_shift_days", pa.int32()),
        ("redacted_boxes", pa.int32()),
    ]
)


class MappingWriter:
    """Streams mapping rows to one Parquet file in bounded batches (flat memory)."""

    def __init__(self, path: Path, *, batch_rows: int = 2_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer = pq.ParquetWriter(self._tmp, MAPPING_SCHEMA, compression="zstd")
        # Column lists, built into Arrow from buffers (see arrow_build: no pandas import).
        self._columns: dict[str, list[object]] = {name: [] for name in MAPPING_SCHEMA.names}
        self._pending = 0
        self._batch_rows = batch_rows
        self.count = 0

    def add(self, row: dict[str, object]) -> None:
        """Queue one row (missing fields are null); flushed every ``batch_rows``."""
        for name, values in self._columns.items():
            values.append(row.get(name))
        self._pending += 1
        self.count += 1
        if self._pending >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_arrays(
                [int32_array(self._columns[f.name]) if f.type == pa.int32()  # type: ignore[arg-type]
                 else string_array(self._columns[f.name])  # type: ignore[arg-type]
                 for f in MAPPING_SCHEMA], schema=MAPPING_SCHEMA))
            for values in self._columns.values():
                values.clear()
            self._pending = 0

    def close(self) -> None:
        """Flush and publish the file atomically."""
        self._flush()
        self._writer.close()
        self._tmp.replace(self.path)

    def __enter__(self) -> MappingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
