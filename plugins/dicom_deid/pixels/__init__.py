"""Burned-in text: OCR from the packaged engine, known-region rules (CTP format), and the
cleaner that blacks out text in pixel data and overlays, keeping the encoding.

May import :mod:`dicom_deid.config`, :mod:`dicom_deid.dicom`, :mod:`dicom_deid.text` and
the errors. Heavy (numpy, Pillow, onnxruntime): imported only when pixels change.
"""
