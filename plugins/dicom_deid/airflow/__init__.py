"""Airflow adapters: the hook for the keys, the tasks the DAGs wire together, the DAG
arguments and graph of each project (:mod:`.dag_factory`), the review step
(:mod:`.review`) and the review page plugin (:mod:`.review_page`).

Everything here is a thin shell over the engine (:mod:`dicom_deid.pipeline.deid_steps`,
:mod:`dicom_deid.pipeline.interval_export`, :mod:`dicom_deid.vault.reidentify`): it reads
params and the run's context, calls one engine step, and returns the step's small summary
as the task's XCom. The only place that imports Airflow; it may import
:mod:`dicom_deid.pipeline`, :mod:`dicom_deid.deid` (the key), :mod:`dicom_deid.review`,
:mod:`dicom_deid.vault` and the errors.
"""
