"""Print what `make demo` produced: where things are, and a query of the de-identified data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pydicom

from dicom_deid.warehouse.base import restricted_path
from dicom_deid.warehouse.factory import open_warehouse

SHOWN = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
         "StudyInstanceUID", "InstitutionName", "StudyDescription", "PatientIdentityRemoved",
         "LongitudinalTemporalInformationModified")
EXAMPLE_QUERY = """SELECT Modality, COUNT(DISTINCT StudyInstanceUID) AS studies,
       COUNT(*) AS instances, COUNT(DISTINCT PatientID) AS patients
FROM deid_metadata GROUP BY Modality ORDER BY Modality"""
COUNTS = """SELECT (SELECT COUNT(*) FROM dicom_metadata) AS dicom_metadata,
       (SELECT COUNT(*) FROM deid_metadata) AS deid_metadata,
       (SELECT COUNT(*) FROM deid_mapping) AS deid_mapping,
       (SELECT COUNT(*) FROM deid_errors) AS deid_errors,
       (SELECT COUNT(*) FROM deid_runs) AS deid_runs,
       (SELECT COUNT(*) FROM deid_ledger WHERE status = 'released') AS released"""


def main(root: Path) -> int:
    """Summarise the demo folder ``root`` (the pipeline's data folder)."""
    from .table import print_table

    # Each project's research tree is deid/<project>/, a link to its latest release.
    trees = sorted(p for p in (root / "deid").glob("*") if p.is_symlink())
    if not trees:
        print(f"no released project tree under {root / 'deid'}", file=sys.stderr)
        return 1
    tree = trees[-1]
    batch = Path(os.readlink(tree)).name
    files = sorted(tree.rglob("*.dcm"))
    manifest = json.loads((tree / "manifests" / f"{batch}.json").read_text())
    run = root / "runs" / batch
    warehouse_path = root / "warehouse" / "dicom_deid.duckdb"
    print(f"\nresearch tree       : {tree}/<study>/<series>/<sop>.dcm ({len(files)} files; "
          f"release {batch})")
    print(f"manifest            : {tree / 'manifests' / (batch + '.json')} (priority "
          f"{manifest['priority']}: {len(manifest['added'])} added, "
          f"{len(manifest['replaced'])} replaced, {len(manifest['removed'])} removed)")
    print(f"run folder          : {run}/ (restricted, 0700: the plan, per-shard counts "
          "and the report; the identified intermediates went when the run succeeded, "
          "mapping and errors are in the restricted tables)")
    print(f"run report          : {run / 'report.md'}")
    print(f"metadata (Parquet)  : {root / 'metadata'}/{{dicom_metadata,deid_metadata}}/"
          "ingest_date=*/")
    print(f"warehouse (DuckDB)  : {warehouse_path} (the analysts' tables) and "
          f"{Path(restricted_path(str(warehouse_path))).name} beside it (the restricted "
          "ones, encrypted under the restricted key)")
    if files:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        print(f"\none de-identified instance ({files[0].relative_to(tree)}):")
        for kw in SHOWN:
            print(f"  {kw:42} {ds.get(kw, '<removed>')}")
    with open_warehouse(f"duckdb://{warehouse_path}") as warehouse:
        counts = warehouse.query(COUNTS)
        table = warehouse.query(EXAMPLE_QUERY)
    print("\nrows per table:")
    print_table(counts)
    print(f"\nexample analytics query on deid_metadata:\n{EXAMPLE_QUERY}\n")
    print_table(table)
    print("\nrun report:\n" + (run / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
