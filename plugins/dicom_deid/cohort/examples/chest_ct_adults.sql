-- Chest CT of adults, by study date: whole studies.
-- Adult = PatientAge in years (AS value 'nnnY') >= min_age at the time of the study;
-- ages in months/weeks/days are children, missing ages are excluded.
-- Chest = BodyPartExamined CHEST/THORAX/LUNG, or a study description saying so.
-- param start_date DATE
-- param end_date DATE
-- param min_age INT64 default 18
SELECT DISTINCT StudyInstanceUID
FROM dicom_metadata
WHERE Modality = 'CT'
  AND StudyDate BETWEEN @start_date AND @end_date
  AND ENDS_WITH(PatientAge, 'Y')
  AND SAFE_CAST(SUBSTR(PatientAge, 1, 3) AS INT64) >= @min_age
  AND (
    UPPER(BodyPartExamined) IN ('CHEST', 'THORAX', 'LUNG')
    OR REGEXP_CONTAINS(UPPER(StudyDescription), r'CHEST|THORAX|LUNG')
  )
