"""Airflow adapters: the hook for the key, the tasks the DAGs wire together, and the
DAG arguments of each project (:mod:`.dag_factory`).

Everything here is a thin shell over the engine (:mod:`dicom_deid.pipeline.deid_steps`,
:mod:`dicom_deid.pipeline.interval_export`): it reads params and the run's context, calls
one engine step, and returns the step's small summary as the task's XCom. The only place
that imports Airflow; it may import :mod:`dicom_deid.pipeline`, :mod:`dicom_deid.deid`
(the key) and the errors.
"""
