-- deid_errors: one row per file that failed or was skipped in a run, and why.
-- RESTRICTED: `path` is the input's path relative to the landing zone, and landing paths
-- may carry identifiers (a folder named after the patient). Keep it with deid_mapping and
-- dicom_metadata. `reason` is a short message without element values.
-- A run's rows are replaced as a whole when the run is repeated (none left if it has no
-- errors). Idempotent key: (run_id, path, stage). BigQuery Standard SQL; DuckDB via sqlglot.
CREATE TABLE IF NOT EXISTS deid_errors (
  run_id STRING,
  path STRING,
  stage STRING,
  kind STRING,
  reason STRING
)
CLUSTER BY run_id
