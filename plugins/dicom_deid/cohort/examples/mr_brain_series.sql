-- MR brain series acquired with a given scanning sequence whose series description
-- matches a pattern (RE2, e.g. '(?i)flair|t2'): one line per series.
-- ScanningSequence is multi-valued (ARRAY<STRING>: SE, IR, GR, EP, RM).
-- param sequence STRING default 'SE'
-- param description_pattern STRING default '(?i)t2|flair'
-- param start_date DATE default '1900-01-01'
-- param end_date DATE default '2100-12-31'
SELECT DISTINCT StudyInstanceUID, SeriesInstanceUID
FROM dicom_metadata
WHERE Modality = 'MR'
  AND StudyDate BETWEEN @start_date AND @end_date
  AND (
    UPPER(BodyPartExamined) IN ('BRAIN', 'HEAD')
    OR REGEXP_CONTAINS(UPPER(StudyDescription), r'BRAIN|HEAD')
  )
  AND @sequence IN UNNEST(ScanningSequence)
  AND REGEXP_CONTAINS(SeriesDescription, @description_pattern)
