"""The metadata export: DICOM headers -> one typed Parquet row per instance (the Cloud
Healthcare API's BigQuery schema), incrementally and in parallel.

May import :mod:`dicom_deid.dicom`, :mod:`dicom_deid.arrow_build` and the errors.
"""
