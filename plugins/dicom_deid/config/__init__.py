"""The de-identification configuration: one model for the PS3.15 profile and options and
for Google's ``DicomTagConfig``, the standard's tables (``data/``), and the plan that
gives each attribute one action.

May import :mod:`dicom_deid.errors` and :mod:`dicom_deid.dicom`.
"""
