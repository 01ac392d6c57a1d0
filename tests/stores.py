"""A new MOVIEREC_HOME for a test, with its MLflow store already created.

A new SQLite tracking store runs MLflow's ~70 Alembic migrations before its first answer: about 5
s of CPU, paid again by every test whose home is new. `new_home` copies one store migrated once
per test process instead: the same empty store a user's home holds after its first run (no
experiment of ours, no run), so what a test does with it is what a user's second run does.
Tests about creating a store from nothing use a plain folder (`make run` on a fresh clone, the
CLI tests' own homes)."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

STORE = "mlflow.db"  # where the settings put the default tracking and registry store


@functools.cache
def _migrated_store() -> Path:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="movierec-mlflow-store-"))
    store = SqlAlchemyStore(f"sqlite:///{folder / STORE}", (folder / "mlruns").as_uri())
    store.engine.dispose()  # every connection closed: the file holds everything
    return folder / STORE


def new_home(home: Path) -> Path:
    """Create `home` with an empty, migrated MLflow store in it; returns `home`."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_store(), home / STORE)
    return home
