"""Process-wide set-up that must happen before Prefect or Great Expectations are imported."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from movierec.settings import Settings

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies

# Prefect settings this module gives a default, each with every environment name Prefect reads it
# from (a value the user set under any of them wins).
PREFECT_SERVER_DEFAULTS: dict[tuple[str, ...], str] = {
    # A temporary API server on a new PREFECT_HOME imports Prefect's server and runs its ~110
    # database migrations before it answers: 10-25 s on a busy two-core machine, more than
    # Prefect's 20 s start-up budget (the run then fails "Timed out while attempting to connect").
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",): "60",
    # The temporary server needs no block types for a run; registering them all costs it 0.5-2.5 s.
    # `prefect server start` registers them on the same database when the UI is opened. Memoizing
    # is off as well, or the skipped registration would be recorded as done in PREFECT_HOME and
    # that server would skip it too.
    ("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", "PREFECT_API_BLOCKS_REGISTER_ON_START"): "false",
    (
        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION",
        "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION",
    ): "false",
}


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
    for names, value in PREFECT_SERVER_DEFAULTS.items():
        if not any(name in os.environ for name in names):
            os.environ[names[0]] = value
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


class _TemporaryServer:
    """The API server `start_prefect_api` started: its process and address."""

    process: subprocess.Popen | None = None
    api_url: str = ""
    in_use: bool = False


def start_prefect_api() -> None:
    """Start the temporary Prefect API server now, for `use_prefect_api` to hand to Prefect.

    Without an API URL, Prefect 3 starts a temporary server (a uvicorn subprocess on a SQLite
    database in PREFECT_HOME) at the first flow call, after the flow's modules have imported, and
    waits for it. Started here, after `configure` and before those imports, it boots on another
    core meanwhile, and this process never imports Prefect's server. It is Prefect's own ephemeral
    server, started as Prefect starts it, on the same database: runs are recorded as before.
    Nothing is started when Prefect would not start one (an API URL set in the environment, a
    profile or prefect.toml; ephemeral mode off) or when Prefect was imported already (a test
    process, a caller with its own Prefect set-up): those keep Prefect's own behaviour.
    """
    if _TemporaryServer.process is not None or "prefect" in sys.modules:
        return
    import prefect
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # As prefect.server.api.server.SubprocessASGIServer runs it: no UI, ephemeral-server services only.
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **settings.to_environment_variables(exclude_unset=True),
    }
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory"]
    command += ["prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "error", "--lifespan", "on"]
    _TemporaryServer.process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent(os.getpid()))
    _TemporaryServer.api_url = f"http://127.0.0.1:{port}/api"
    atexit.register(_stop_prefect_api)


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """For `Popen(preexec_fn=...)`: the child gets SIGTERM when this process dies, `kill -9`
    included (Linux `PR_SET_PDEATHSIG`), so the temporary server never outlives its pipeline.
    None elsewhere (atexit still stops it on a normal exit)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this process (exit code 1) as soon as its parent `parent` is gone, checked `every`
    seconds by a daemon thread: a pool's worker process otherwise outlives a run killed with
    `kill -9`, still working for it. (PR_SET_PDEATHSIG would follow the parent's thread that
    started this process, which a pool may end before the process.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def use_prefect_api() -> None:
    """Wait for the server `start_prefect_api` started and point Prefect at it (call before a flow).

    No-op without one. If it exited before answering, Prefect starts its own at the flow call, as
    it would have without `start_prefect_api`. It has Prefect's start-up budget
    (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) from this call on.
    """
    process = _TemporaryServer.process
    if process is None or _TemporaryServer.in_use:
        return
    import httpx
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    timeout = settings.server.ephemeral.startup_timeout_seconds
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            if process.poll() is not None:
                logging.getLogger("movierec").warning(
                    "the temporary Prefect API server exited (code %s); Prefect starts another", process.returncode
                )
                _TemporaryServer.process = None
                return
            try:
                if client.get(f"{_TemporaryServer.api_url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                _stop_prefect_api()
                raise RuntimeError(
                    f"Timed out after {timeout} s waiting for the temporary Prefect API server "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)."
                )
            time.sleep(0.05)
    os.environ["PREFECT_API_URL"] = _TemporaryServer.api_url
    if settings.ui_url is None:
        # It serves no UI (as Prefect's own temporary server): no "View at" links to it.
        os.environ["PREFECT_UI_URL"] = ""
    refresh_global_settings_context()
    _TemporaryServer.in_use = True


def prefect_server_url() -> str | None:
    """The Prefect API the user configured (a server that holds deployments and has workers), or
    None when flows run on a temporary API server (started here or by Prefect) that forgets them."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return None if not url or url == _TemporaryServer.api_url else url


def _stop_prefect_api() -> None:
    """At exit (after Prefect has flushed its logs and events to it), as Prefect stops its server."""
    process, _TemporaryServer.process = _TemporaryServer.process, None
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
