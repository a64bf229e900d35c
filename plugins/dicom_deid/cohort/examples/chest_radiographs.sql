-- Chest radiographs (CR/DX) in a date range, optionally of one sex: one line per
-- instance (image), so other images of the same series are not released.
-- sex: 'F', 'M', 'O', or NULL (the default) for everyone.
-- param start_date DATE
-- param end_date DATE
-- param sex STRING default NULL
SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID
FROM dicom_metadata
WHERE Modality IN ('CR', 'DX')
  AND StudyDate BETWEEN @start_date AND @end_date
  AND UPPER(BodyPartExamined) IN ('CHEST', 'THORAX')
  AND (@sex IS NULL OR PatientSex = @sex)
