"""Prefect flows around the survey_seg library: thin wrappers, one library call per task."""
