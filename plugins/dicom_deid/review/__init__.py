"""Human review before release: which images a reviewer sees, their thumbnails, the
contact sheet. It may import only :mod:`dicom_deid.errors` and :mod:`dicom_deid.dicom`."""
