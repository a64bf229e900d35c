-- deid_mapping: original <-> pseudonym identifiers, one row per de-identified instance.
-- RESTRICTED (holds original identifiers). Columns match MAPPING_SCHEMA in
-- plugins/dicom_deid/mapping.py (the Parquet the engine writes). Idempotent key:
-- (run_id, source_path). BigQuery Standard SQL; DuckDB gets it through sqlglot.
CREATE TABLE IF NOT EXISTS deid_mapping (
  run_id STRING,
  source_path STRING,
  output_path STRING,
  sop_class_uid STRING,
  modality STRING,
  original_study_uid STRING,
  original_series_uid STRING,
  original_sop_uid STRING,
  original_patient_id STRING,
  original_accession STRING,
  study_uid STRING,
  series_uid STRING,
  sop_uid STRING,
  patient_id STRING,
  accession STRING,
  date_shift_days INT64,
  redacted_boxes INT64  -- rectangles blanked in pixel data / overlays (burned-in text)
)
CLUSTER BY run_id
