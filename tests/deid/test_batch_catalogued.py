"""Inputs the pipeline chose from the export's catalogue are the files it catalogued: a
file replaced since (another size or time, or another instance under the same name, at
the same size and time) is listed as ``changed``, never de-identified."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from dicom_deid.config.model import privacy_first
from dicom_deid.deid.batch import Source, run_batch
from instances import KEY, make_instance, to_bytes


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "IM0001"
    path.parent.mkdir()
    path.write_bytes(to_bytes(make_instance()))
    return path


def _run(path: Path, catalogued: tuple[int, int | None, str | None], tmp: Path
         ) -> list[dict[str, str]]:
    errors = tmp / "errors.csv"
    run_batch([Source(path, path.name, catalogued=catalogued)], tmp / "out", privacy_first(),
              KEY, workers=1, errors_path=errors, progress=False)
    with open(errors, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_catalogued_file_is_de_identified(landed: Path, tmp_path: Path) -> None:
    st = os.stat(landed)
    sop = make_instance().SOPInstanceUID
    assert _run(landed, (st.st_size, st.st_mtime_ns // 1000, sop), tmp_path) == []
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1


@pytest.mark.parametrize("what", ["size", "time", "instance"])
def test_a_replaced_file_is_listed_as_changed(landed: Path, tmp_path: Path,
                                              what: str) -> None:
    st = os.stat(landed)
    size, us, sop = st.st_size, st.st_mtime_ns // 1000, make_instance().SOPInstanceUID
    catalogued = {"size": (size + 2, us, sop), "time": (size, us - 5_000_000, sop),
                  "instance": (size, us, "1.2.826.0.1.3680043.99.1")}[what]
    rows = _run(landed, catalogued, tmp_path)
    assert [(r["kind"], r["path"]) for r in rows] == [("changed", "IM0001")]
    assert not list((tmp_path / "out").rglob("*.dcm"))
