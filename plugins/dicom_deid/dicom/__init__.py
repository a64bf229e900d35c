"""Reading and writing DICOM bytes: the element walker, the reader, the writer, file I/O, dates.

The lowest layer: it knows DICOM encodings and nothing of de-identification. It may
import only :mod:`dicom_deid.errors` (and pydicom).

Importing it silences pydicom's own reports of odd values, because they quote the value
(``Invalid value for VR UI: '<an original UID>'``) into stderr and, under Airflow, the task
log: pydicom's warnings are not shown and its logger says only what is critical. The few
pydicom warnings the engine turns into input errors (undecodable text) are filters added
later, which take precedence. (Nothing here imports pydicom: the DAG files import parts of
this package when they are parsed.)
"""

import logging as _logging
import warnings as _warnings

_warnings.filterwarnings("ignore", module="pydicom")
_logging.getLogger("pydicom").setLevel(_logging.CRITICAL)
