-- deid_withdrawals: what was withdrawn from a project's research tree, on whose request
-- and why. RESTRICTED. original_value is the original identifier withdrawn (PatientID,
-- Study, Series or SOP Instance UID), so that a withdrawal holds for files that arrive
-- later and across a change of pseudonym key: encrypted under the project's vault key
-- (v1.<key id>.<AES-GCM>, bound to its original_index); original_index is its blind
-- index (i1.<key id>.<HMAC>: new instances are matched on it, without the value);
-- pseudonymous_value is what the requester named.
--   level          'patient', 'study', 'series' or 'instance'
--   requested_by   who asked (an Airflow user, or the CLI's --by); reason: PHI-free
--   files_removed  released files the withdrawal removed from the tree
-- Idempotent key: (project, level, original_index). BigQuery Standard SQL; DuckDB via sqlglot.
CREATE TABLE IF NOT EXISTS deid_withdrawals (
  project STRING,
  level STRING,
  original_value STRING,
  pseudonymous_value STRING,
  key_id STRING,
  requested_at TIMESTAMP,
  requested_by STRING,
  reason STRING,
  batch_id STRING,
  files_removed INT64,
  original_index STRING
)
CLUSTER BY project
