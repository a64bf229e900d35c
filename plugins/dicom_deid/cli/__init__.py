"""The ``dicom-deid`` command line (:mod:`.main`) and the demo's report.

May import any engine subpackage; never :mod:`dicom_deid.airflow`.
"""

from .main import main, run

__all__ = ["main", "run"]
