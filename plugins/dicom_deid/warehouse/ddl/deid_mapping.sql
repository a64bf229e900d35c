-- deid_mapping: original <-> pseudonym identifiers, one row per de-identified instance.
-- RESTRICTED. Columns match MAPPING_SCHEMA in plugins/dicom_deid/deid/mapping.py (the
-- Parquet the engine writes). The pipeline loads source_path and the original_* columns
-- encrypted value by value under the project's vault key ('v1.<key id>.<base64>',
-- dicom_deid.vault.columns: client-side, the warehouse never holds a key); the
-- pseudonym columns stay in clear, so lookups go by pseudonym. Partition key: run_id.
-- BigQuery Standard SQL; DuckDB gets it through sqlglot.
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
