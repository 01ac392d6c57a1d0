"""Process-wide set-up that must happen before Prefect or Great Expectations are imported."""

from __future__ import annotations

import logging
import os

from movierec.settings import Settings


def configure(settings: Settings) -> None:
    """Point Prefect's state at MOVIEREC_HOME and keep third-party output quiet.

    Values the user has set in the environment win; these are only defaults.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_LOGGING_LEVEL": settings.logging.prefect_level,
        # The ephemeral API server Prefect starts for a run must not phone home, and its
        # telemetry writes race with the run's own writes to the SQLite database.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        # MLflow: warnings only, no progress bars in logs, no usage telemetry.
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    logger = logging.getLogger("movierec")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _data_error_names() -> tuple[str, ...]:
    from movierec.errors import DataError

    classes, pending = [], [DataError]
    while pending:
        cls = pending.pop()
        classes.append(cls.__name__)
        pending.extend(cls.__subclasses__())
    return tuple(classes)


class HideDataErrorTracebacks(logging.Filter):
    """Keep Prefect's console from repeating a bad-input error as three tracebacks.

    The CLI prints the error once, readably; Prefect's API handler still records it, so the
    failed run shows its error in the Prefect UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from movierec.errors import DataError

        if record.exc_info and isinstance(record.exc_info[1], DataError):
            return False
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message for name in _data_error_names())


def hide_data_error_tracebacks() -> None:
    """Attach the filter to Prefect's console handlers (call after Prefect is imported)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(HideDataErrorTracebacks())


def warm_imports(*modules: str) -> None:
    """Import heavy modules in a background thread.

    A flow's first call waits several seconds for Prefect's temporary API server, with the
    main thread asleep; importing Great Expectations (2-3 s) meanwhile takes it off the path.
    """
    import importlib
    import threading

    def load() -> None:
        for module in modules:
            importlib.import_module(module)

    threading.Thread(target=load, name="warm-imports", daemon=True).start()
