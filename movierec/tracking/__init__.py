"""Tracking stage: MLflow runs, the served model's logging and loading, the registry, the
promotion gate and the run's reports."""
