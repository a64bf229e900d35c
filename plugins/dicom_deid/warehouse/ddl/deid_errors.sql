-- deid_errors: one row per file that failed or was skipped in a run, and why.
-- Never holds PHI: `reason` is a short message without element values.
-- Idempotent key: (run_id, path, stage). BigQuery Standard SQL; DuckDB via sqlglot.
CREATE TABLE IF NOT EXISTS deid_errors (
  run_id STRING,
  path STRING,
  stage STRING,
  kind STRING,
  reason STRING
)
CLUSTER BY run_id
