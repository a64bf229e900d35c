"""The warehouse: one small interface (:mod:`.base`) over DuckDB (embedded default) and
BigQuery, opened from a URL (:mod:`.factory`), with the tables' DDL as package data
(``ddl/``) and the SQL helpers cohorts share (:mod:`.sql`).

May import only :mod:`dicom_deid.errors`.
"""
