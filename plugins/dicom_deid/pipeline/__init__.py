"""The pipeline's steps as plain functions: settings, shards, the export of a
data interval, the de-identification run (de-identify, verify, publish, load, finish and
record), restricted files, run records and failure notices.

The Airflow tasks and the command line call these; they never import Airflow. May
import every engine subpackage (not :mod:`dicom_deid.cli`, :mod:`dicom_deid.airflow`).
"""
