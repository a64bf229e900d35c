"""Print what `make demo` produced: where things are, and a query of the de-identified data."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pydicom

from .warehouse import open_warehouse

SHOWN = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
         "StudyInstanceUID", "InstitutionName", "StudyDescription", "PatientIdentityRemoved",
         "LongitudinalTemporalInformationModified")
EXAMPLE_QUERY = """SELECT Modality, COUNT(DISTINCT StudyInstanceUID) AS studies,
       COUNT(*) AS instances, COUNT(DISTINCT PatientID) AS patients
FROM deid_metadata GROUP BY Modality ORDER BY Modality"""


def main(root: Path) -> int:
    """Summarise the demo folder ``root``."""
    deid = root / "deid"
    files = sorted(deid.rglob("*.dcm"))
    mapping = pq.read_table(root / "restricted/mapping.parquet")
    print(f"\nde-identified files : {len(files)} under {deid}/<study>/<series>/<sop>.dcm")
    print(f"cohort filter file  : {root / 'cohort.filter'}")
    print(f"metadata (Parquet)  : {root / 'metadata'}/{{dicom_metadata,deid_metadata}}/"
          "ingest_date=*/")
    print(f"warehouse (DuckDB)  : {root / 'warehouse.duckdb'} "
          "(dicom_metadata, deid_metadata)")
    print(f"mapping (restricted): {mapping.num_rows} rows in {root / 'restricted/mapping.parquet'}")
    if files:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        print(f"\none de-identified instance ({files[0].name}):")
        for kw in SHOWN:
            print(f"  {kw:42} {ds.get(kw, '<removed>')}")
    with open_warehouse(f"duckdb://{root / 'warehouse.duckdb'}") as warehouse:
        table = warehouse.query(EXAMPLE_QUERY)
    print(f"\nexample analytics query on deid_metadata:\n{EXAMPLE_QUERY}\n")
    from .cli import _print_table

    _print_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
