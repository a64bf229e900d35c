-- deid_runs: one row per de-identification run, whatever its outcome (who, when, which
-- config and key, counts, status). Written once, by the run's last task (a teardown that
-- runs whether the run succeeded or not); a rerun of the same batch replaces the row.
-- Idempotent key: run_id (the batch id).
--   status        'success', 'failed', 'leak' (a verification found an original value),
--                 'dry_run' (de-identified and verified; nothing published or loaded) or
--                 'rejected' (a reviewer, or the review's timeout, refused the release)
--   reason        why it did not succeed: exception type(s) and task id(s), or the
--                 reviewer's PHI-free reason; never values
--   config_sha256 the effective configuration's fingerprint (DeidConfig.fingerprint());
--                 outputs name its first 16 hex digits in DeidentificationMethod
--   key_id        fingerprint of the pseudonymisation key (HMAC-derived; never the key)
--   user          who triggered the run ('scheduler' for scheduled and asset runs)
--   project       the project whose file set the policy (projects/<project>.yaml)
--   reviewer      who approved or rejected the release ('timeout' when nobody answered in
--                 time, 'none needed' when the review rule selected no image); NULL when
--                 the project has no review step or the run ended before it
-- What the run's policy did (configuration names and DICOM keywords, never a value; all
-- NULL when the run ended before its policy was known, and in rows of older versions):
--   profile             the PS3.15 profile (e.g. ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE,
--                       KEEP_ALL_PROFILE)
--   identity_removed    what the outputs claim in PatientIdentityRemoved (FALSE: an
--                       attribute is kept beyond the profile and its options)
--   options_claimed     the PS3.15 options claimed, comma-separated (e.g. RETAIN_UIDS)
--   kept_beyond_profile the keywords kept (or treated more weakly than the profile) that
--                       no option allows, comma-separated
--   gate_exceptions     the project's declared exceptions (keywords the verification gate
--                       lets through), comma-separated
--   review              the project's review rule: none, sample N%, at-risk or all
--   dates               LongitudinalTemporalInformationModified: UNMODIFIED, MODIFIED or
--                       REMOVED
--   pixels              whether burned-in text is redacted: 'cleaned (OCR AUTO|ALL)' or
--                       'not cleaned'
--   residual_sweep      whether kept text is swept for the instance's identifying values
--   weakened            each way the policy is weaker than the privacy-first default,
--                       '; '-separated ('none' when it is not): what an auditor reads first
-- New columns are appended: an older table (DuckDB or BigQuery) gains them at
-- ensure_schema (nullable, at the end).
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
  status STRING,
  reason STRING,
  key_id STRING,
  engine STRING,
  project STRING,
  reviewer STRING,
  profile STRING,
  identity_removed BOOL,
  options_claimed STRING,
  kept_beyond_profile STRING,
  gate_exceptions STRING,
  review STRING,
  dates STRING,
  pixels STRING,
  residual_sweep BOOL,
  weakened STRING
)
