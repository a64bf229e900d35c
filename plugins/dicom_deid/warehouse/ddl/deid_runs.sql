-- deid_runs: one row per de-identification run (who, when, which config, counts).
-- Idempotent key: run_id (a run's row is rewritten when it finishes).
-- BigQuery Standard SQL; DuckDB gets it through sqlglot.
CREATE TABLE IF NOT EXISTS deid_runs (
  run_id STRING,
  started_at TIMESTAMP,
  finished_at TIMESTAMP,
  user STRING,
  config_sha256 STRING,
  cohort STRING,
  processed INT64,
  failed INT64,
  skipped INT64,
  status STRING
)
