"""Reading and writing DICOM bytes: the element walker, the reader, the writer, file I/O, dates.

The lowest layer: it knows DICOM encodings and nothing of de-identification. It may
import only :mod:`dicom_deid.errors` (and pydicom).
"""
