-- deid_ledger: what each project has released, one row per release of one instance.
-- RESTRICTED: source_uri is a landing path (paths may carry identifiers); keep it with
-- deid_mapping. The source of truth for a project's research tree: the rows with status
-- 'released' are exactly the files under <project>/ (one per instance).
-- ENCRYPTED: beside source_uri (which the restricted dicom_metadata ties to the patient),
-- the released file's pseudonymous identifiers would turn a research UID back into a
-- patient without the vault key. So the pipeline (which always has the project's vault
-- key) stores study_uid, series_uid, sop_uid, patient_id, output_path and output_sha256
-- encrypted value by value ('v1.<key id>.<base64 AES-256-GCM>', dicom_deid.vault.columns:
-- client-side, the warehouse never holds a key), each bound to its column and its row
-- (project, batch_id, source_uri): a value moved to another column or row does not open.
-- The <column>_index columns are their blind indexes ('i1.<key id>.<HMAC>', scoped to the
-- project and column), so rows are found by a pseudonymous value without it in clear.
-- Written without a vault key (engine-level use only), the values are in clear and the
-- indexes NULL; a clear value reads as itself, and `dicom-deid vault rotate` encrypts
-- such rows. The other columns stay in clear: the nightly planner joins them in SQL.
--   source_uri     the landing file that was de-identified
--   source_sha256  its content hash as exported (dicom_metadata.content_sha256)
--   study_uid, series_uid, sop_uid, patient_id
--                  the pseudonymous identifiers written into the released file
--   output_path    the file's path in the project's tree (<study>/<series>/<sop>.dcm)
--   output_sha256  SHA-256 of the released file (the verification gate's verdict)
--   config_sha256  the effective configuration's fingerprint; key_id the key's
--   batch_id       the run that released it; released_at when
--   status         'released' (in the tree), 'superseded' (replaced by a later release:
--                  changed content, or a new config or key), 'withdrawn' (removed on
--                  request, never released again)
--   status_at, status_by, status_reason
--                  when, by whom and why the status last changed (PHI-free reason)
--   patient_id_index, study_uid_index, series_uid_index, sop_uid_index, output_path_index
--                  blind indexes of those columns under the vault key (NULL in clear)
-- Idempotent key: (project, batch_id, source_uri). BigQuery Standard SQL; DuckDB via sqlglot.
CREATE TABLE IF NOT EXISTS deid_ledger (
  project STRING,
  source_uri STRING,
  source_sha256 STRING,
  study_uid STRING,
  series_uid STRING,
  sop_uid STRING,
  patient_id STRING,
  output_path STRING,
  output_sha256 STRING,
  config_sha256 STRING,
  key_id STRING,
  batch_id STRING,
  released_at TIMESTAMP,
  status STRING,
  status_at TIMESTAMP,
  status_by STRING,
  status_reason STRING,
  patient_id_index STRING,
  study_uid_index STRING,
  series_uid_index STRING,
  sop_uid_index STRING,
  output_path_index STRING
)
CLUSTER BY project, status
