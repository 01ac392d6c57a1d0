"""Recommender models: pure fit / recommend / evaluate functions on sparse matrices and frames
(no I/O, no Prefect, no MLflow). Selection and factor scoring come from `inference.model`."""
