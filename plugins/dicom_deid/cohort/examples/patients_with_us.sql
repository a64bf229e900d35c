-- All studies (any modality, any date) of the patients who had an ultrasound in the
-- interval: a longitudinal cohort. Patients are matched on PatientID within this
-- warehouse (one issuer assumed); rows without PatientID are ignored.
-- param start_date DATE
-- param end_date DATE
WITH us_patients AS (
  SELECT DISTINCT PatientID
  FROM dicom_metadata
  WHERE Modality = 'US'
    AND StudyDate BETWEEN @start_date AND @end_date
    AND PatientID IS NOT NULL
    AND PatientID != ''
)
SELECT DISTINCT m.StudyInstanceUID
FROM dicom_metadata AS m
JOIN us_patients AS p ON m.PatientID = p.PatientID
