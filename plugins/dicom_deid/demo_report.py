"""Print what `make demo` produced: where things are and what a de-identified file holds."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pydicom

SHOWN = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
         "StudyInstanceUID", "InstitutionName", "StudyDescription", "PatientIdentityRemoved",
         "LongitudinalTemporalInformationModified", "DeidentificationMethod")


def main(root: Path) -> int:
    """Summarise the demo folder ``root``."""
    deid = root / "deid"
    files = sorted(p for p in deid.rglob("*.dcm"))
    errors = list(csv.DictReader((root / "restricted/errors.csv").open()))
    mapping = pq.read_table(root / "restricted/mapping.parquet")
    print(f"\nde-identified files : {len(files)} under {deid}/<study>/<series>/<sop>.dcm")
    print(f"mapping (restricted): {mapping.num_rows} rows in {root / 'restricted/mapping.parquet'}")
    kinds = Counter(e["kind"] for e in errors)
    print(f"quarantined inputs  : {len(errors)} listed in {root / 'restricted/errors.csv'} "
          f"({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))})")
    studies = {p.parent.parent.name for p in files}
    print(f"pseudonymous studies: {len(studies)}")
    if files:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        print(f"\nexample de-identified instance ({files[0].relative_to(deid)}):")
        for kw in SHOWN:
            value = ds.get(kw, "<removed>")
            print(f"  {kw:42} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
