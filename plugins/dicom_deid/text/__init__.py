"""Sensitive text in plain strings (no DICOM objects): generic detectors, an instance's
own identifying values compiled for matching, Clean Descriptors and Google ``TextConfig``
transformations. Used on attribute values and on text that OCR reads from pixels.

May import :mod:`dicom_deid.config`, :mod:`dicom_deid.dicom` (dates) and the errors.
"""
