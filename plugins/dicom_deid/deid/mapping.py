"""The original <-> pseudonym mapping, written as Parquet beside (never inside) the output.

It holds original identifiers, so it is restricted data: the warehouse loads it into
a restricted table; it must never be copied into the de-identified tree. Given a
``seal`` (the vault's envelope, :mod:`dicom_deid.vault.envelope`), the file is built in
memory and only its sealed bytes reach the disk: no clear copy, not even a temporary one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

MAPPING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "string"),
    ("source_path", "string"),
    ("output_path", "string"),
    ("sop_class_uid", "string"),
    ("modality", "string"),
    ("original_study_uid", "string"),
    ("original_series_uid", "string"),
    ("original_sop_uid", "string"),
    ("original_patient_id", "string"),
    ("original_accession", "string"),
    ("study_uid", "string"),
    ("series_uid", "string"),
    ("sop_uid", "string"),
    ("patient_id", "string"),
    ("accession", "string"),
    ("date_shift_days", "int32"),
    ("redacted_boxes", "int32"),
)


@cache
def mapping_schema() -> pa.Schema:
    """The Arrow schema of the mapping file (pyarrow is imported on first use: a run
    imports it while its workers are busy, not before they start)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in MAPPING_COLUMNS])


def __getattr__(name: str) -> Any:
    """``MAPPING_SCHEMA``, built (and pyarrow imported) when first asked for."""
    if name == "MAPPING_SCHEMA":
        return mapping_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MappingWriter:
    """Streams mapping rows to one Parquet file in bounded batches (flat memory)."""

    def __init__(self, path: Path, *, batch_rows: int = 2_000,
                 seal: Callable[[bytes], bytes] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._seal = seal
        self._sink: Any = None  # the in-memory file of a sealed mapping
        self._writer: Any = None  # a ParquetWriter, opened at the first flush
        # Column lists, built into Arrow from buffers (see arrow_build: no pandas import).
        self._columns: dict[str, list[object]] = {name: [] for name, _ in MAPPING_COLUMNS}
        self._pending = 0
        self._batch_rows = batch_rows
        self._dropped: set[str] = set()
        self.count = 0

    def add(self, row: dict[str, object]) -> None:
        """Queue one row (missing fields are null); flushed every ``batch_rows``."""
        for name, values in self._columns.items():
            values.append(row.get(name))
        self._pending += 1
        self.count += 1
        if self._pending >= self._batch_rows:
            self._flush()

    def drop(self, source_path: str) -> None:
        """Take back the row added for ``source_path`` (an input that lost to a newer
        duplicate); the file is rewritten without it at :meth:`close` (rare)."""
        self._dropped.add(source_path)
        self.count -= 1

    def open(self) -> None:
        """Import pyarrow and open the file (done by the first flush if not before): a
        batch calls it once its workers are busy."""
        if self._writer is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._seal is not None:
                self._sink = pa.BufferOutputStream()
            else:  # original identifiers in clear: readable by the owner only, from the start
                import os

                os.close(os.open(self._tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
                os.chmod(self._tmp, 0o600)
            self._writer = pq.ParquetWriter(
                self._sink if self._sink is not None else self._tmp, mapping_schema(),
                compression="zstd")

    def _flush(self) -> None:
        import pyarrow as pa

        from dicom_deid.arrow_build import int32_array, string_array

        self.open()
        schema = mapping_schema()
        if self._pending:
            self._writer.write_table(pa.Table.from_arrays(
                [int32_array(self._columns[f.name]) if f.type == pa.int32()  # type: ignore[arg-type]
                 else string_array(self._columns[f.name])  # type: ignore[arg-type]
                 for f in schema], schema=schema))
            for values in self._columns.values():
                values.clear()
            self._pending = 0

    def close(self) -> None:
        """Flush and publish the file atomically (an empty run writes an empty file)."""
        self._flush()
        self._writer.close()
        if self._sink is not None:
            self._close_sealed()
            return
        if self._dropped:
            import pyarrow.parquet as pq

            table = self._without_dropped(pq.read_table(self._tmp, schema=mapping_schema()))
            pq.write_table(table, self._tmp, compression="zstd")
        self._tmp.chmod(0o600)
        self._tmp.replace(self.path)

    def _without_dropped(self, table: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        keep = pc.invert(pc.is_in(table["source_path"],
                                  value_set=pa.array(sorted(self._dropped), pa.string())))
        return table.filter(keep)

    def _close_sealed(self) -> None:
        """Seal the in-memory file and write it (0600) atomically."""
        import os

        import pyarrow as pa
        import pyarrow.parquet as pq

        from dicom_deid.dicom.files import write_atomic

        assert self._seal is not None
        data = self._sink.getvalue().to_pybytes()
        if self._dropped:
            sink = pa.BufferOutputStream()
            pq.write_table(self._without_dropped(pq.read_table(pa.BufferReader(data))), sink,
                           compression="zstd")
            data = sink.getvalue().to_pybytes()
        write_atomic(self.path, self._seal(data))
        os.chmod(self.path, 0o600)

    def __enter__(self) -> MappingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._writer is not None:
                self._writer.close()
            self._tmp.unlink(missing_ok=True)
