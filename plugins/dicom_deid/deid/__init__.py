"""The de-identification engine: the Dataset path (reference) and the byte path (fast),
keyed pseudonyms, the key, batches of files in parallel and the mapping they write.

May import :mod:`dicom_deid.config`, :mod:`dicom_deid.dicom`, :mod:`dicom_deid.text`,
:mod:`dicom_deid.pixels` (lazily, when pixels change), :mod:`dicom_deid.arrow_build` and
the errors. Never Airflow.
"""
