-- deid_metadata: one row per DE-IDENTIFIED instance (same export, run on the outputs).
--
-- BigQuery Standard SQL is the source of truth; DuckDB gets it through sqlglot.
-- The full column set comes from the exported Parquet: one column per DICOM keyword
-- (Google's DICOM -> BigQuery export convention) plus provenance columns. It grows as
-- new keywords appear: DuckDB adds the new columns on load (read_parquet with
-- union_by_name), BigQuery loads with schema_update_options=[ALLOW_FIELD_ADDITION].
-- Only the columns the pipeline itself relies on (cohorts, filter resolution,
-- idempotent loads) are declared here; all are nullable so any export can land.
-- ingest_run_id is the batch: a rerun of a batch replaces exactly its rows.
CREATE TABLE IF NOT EXISTS deid_metadata (
  source_uri STRING,
  content_sha256 STRING,
  StudyInstanceUID STRING,
  SeriesInstanceUID STRING,
  SOPInstanceUID STRING,
  ingest_run_id STRING
)
