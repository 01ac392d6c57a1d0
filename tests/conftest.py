"""Shared fixtures. Every test gets its own MOVIEREC_HOME; flows run against one temporary
Prefect API per test process; the real datasets are used only when present."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Before Prefect or GX are imported anywhere: their state and logs stay out of the user's home.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="movierec-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# A flow called in a test process starts Prefect's temporary API server, which waits 20 s for it
# by default: on a machine busy with both xdist workers (or a benchmark) that start has taken longer.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
# Read before the clean-up below: the tests' own pointer to the reference datasets.
TEST_DATA_DIR = os.environ.get("MOVIEREC_TEST_DATA_DIR")
for variable in [name for name in os.environ if name.startswith(("MOVIEREC_", "MLFLOW_"))]:
    del os.environ[variable]

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """MOVIEREC_TEST_DATA_DIR, else ../shared/data beside the repository, if it exists."""
    path = Path(TEST_DATA_DIR) if TEST_DATA_DIR else REPO.parent / "shared" / "data"
    return path if (path / "ml-100k").is_dir() or (path / "ml-latest-small").is_dir() else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow (a minute or more each: services, whole pipelines) run first. pytest-xdist
    hands tests out in this order, so the two workers end together instead of one finishing a
    long test alone while the other idles. The sort is stable: every worker collects the same order."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    from stores import new_home

    home = new_home(tmp_path / "home")
    monkeypatch.setenv("MOVIEREC_HOME", str(home))
    monkeypatch.delenv("MOVIEREC_DATA_DIR", raising=False)
    return home


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("MOVIEREC_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API server and database for the whole test process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def quick_pipeline(monkeypatch):
    """The retrain flow at toy size: few epochs, small factors, two cheap baselines."""
    monkeypatch.setenv("MOVIEREC_TUNING__MAX_EPOCHS", "3")
    monkeypatch.setenv("MOVIEREC_TRAINING__EPOCHS", "3")
    monkeypatch.setenv("MOVIEREC_TRAINING__NO_COMPONENTS", "8")
    monkeypatch.setenv("MOVIEREC_PIPELINE__BASELINES", '["popularity", "item_knn"]')


@pytest.fixture(scope="session")
def small_raw():
    """A generated MovieLens-shaped dataset of 6,000 ratings."""
    from movierec.data.synthetic import generate

    return generate(6_000, seed=7)


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("reference datasets absent (../shared/data or MOVIEREC_TEST_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def forget_mlflow_stores():
    """MLflow keeps the tracking/registry URI and experiment in process globals and mirrors them
    into MLFLOW_* variables (which the settings honour); a test must not inherit another's."""
    yield
    if "mlflow" not in sys.modules:
        return
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    _tracking_service.utils._tracking_uri = None
    _model_registry.utils._registry_uri = None
    fluent._active_experiment_id = None
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(variable, None)


@pytest.fixture
def postgres():
    """A throwaway home whose stack runs PostgreSQL alone (skipped with the reason when PostgreSQL
    is not installed; `make test` installs it when it can): (home, Optuna storage URL, PGPASSFILE)."""
    from movierec.settings import Settings
    from movierec.stack import Stack, StackError, postgres_bin

    try:
        postgres_bin()
    except StackError as error:
        pytest.skip(str(error))
    folder = Path(tempfile.mkdtemp(prefix="movierec-pg-", dir="/var/tmp"))
    folder.chmod(0o755)  # PostgreSQL runs as the postgres user when we are root
    stack = Stack(Settings(home=folder / "home"))
    try:
        storage = stack.database_up()
        yield folder / "home", storage, stack.exports()["PGPASSFILE"]
    finally:
        stack.database_down()
        shutil.rmtree(folder, ignore_errors=True)
