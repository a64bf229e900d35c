"""Cohorts: analyst SQL (shipped examples in ``examples/``, a deployment's own folder
first) -> filter file -> the exact instances to de-identify.

May import :mod:`dicom_deid.warehouse` and the errors.
"""
