"""A new MOVIEREC_HOME for a test, with its MLflow store and Prefect database already created.

A new SQLite tracking store runs MLflow's ~70 Alembic migrations before its first answer (~5 s
of CPU), and a `movierec` process on a new home has its temporary Prefect server migrate a new
database first (~14 s of CPU): costs every test whose home is new would pay again. `new_home`
copies a store and a database migrated once per test process instead: what a user's home holds
after its first run, minus anything that run recorded (no experiment of ours, no run, no flow
run), so a test on it is a user's second run. Tests about homes that start from nothing use a
plain folder (`make run` on a fresh clone, the CLI tests' own homes, two runs racing to create
one home's stores)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MLFLOW_STORE = "mlflow.db"  # where the settings put the default tracking and registry store
PREFECT_DATABASE = Path("prefect") / "prefect.db"  # settings.prefect_home / Prefect's default database


@functools.cache
def _migrated_mlflow_store() -> Path:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="movierec-mlflow-store-"))
    store = SqlAlchemyStore(f"sqlite:///{folder / MLFLOW_STORE}", (folder / "mlruns").as_uri())
    store.engine.dispose()  # every connection closed: the file holds everything
    return folder / MLFLOW_STORE


@functools.cache
def _migrated_prefect_database() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="movierec-prefect-home-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    prefect = Path(sys.executable).parent / "prefect"
    subprocess.run(
        [str(prefect), "server", "database", "upgrade", "-y"],
        env={**env, "PREFECT_HOME": str(folder)},
        check=True,
        capture_output=True,
    )
    # The process has ended: SQLite checkpointed its write-ahead log into the file.
    return folder / PREFECT_DATABASE.name


def new_home(home: Path) -> Path:
    """Create `home` with an empty, migrated MLflow store and Prefect database; returns `home`."""
    (home / PREFECT_DATABASE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_mlflow_store(), home / MLFLOW_STORE)
    shutil.copyfile(_migrated_prefect_database(), home / PREFECT_DATABASE)
    return home
