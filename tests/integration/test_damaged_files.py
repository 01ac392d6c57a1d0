"""Damaged stored state gives a short error naming the file and what to do (exit code 1), and a
damaged champion does not block training a new one: the gate treats it as absent."""

from __future__ import annotations

import pytest
from cli_runs import start_pipeline
from registered import register_champion
from stores import new_home
from typer.testing import CliRunner

from features.splits import user_temporal_split
from movierec.cli import app
from movierec.data.snapshot import SnapshotStore
from movierec.errors import DataError
from movierec.settings import get_settings
from movierec.tracking import runs
from movierec.tracking.promotion import gate
from movierec.tracking.registry import Registry

pytestmark = pytest.mark.slow


def _lines(output: str) -> list[str]:
    """What a command printed, without MLflow's download progress bars (tests run with them on)."""
    lines = output.replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("Downloading artifacts")]


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_champion_is_named_and_treated_as_absent_by_the_gate(home):
    register_champion()  # version 1, champion
    settings = get_settings()
    for path in (home / "mlartifacts").rglob("arrays.npz"):  # every file of version 1's bundles
        _truncate(path)
    challenger = register_champion(promote=False, epochs=3)
    runs.configure(settings)
    registry = Registry(settings.registered_model_name)
    decision = gate(settings, registry, challenger.version, user_temporal_split(challenger.tables.ratings))
    assert decision.promote and decision.champion_version == "1" and decision.champion_score is None
    assert "cannot be read (file artifacts/bundle/arrays.npz): BadZipFile" in decision.reason
    assert "movierec rollback" in decision.reason

    exported = CliRunner().invoke(
        app, ["export-recs", "--out", str(home / "recs.parquet")], env={"MOVIEREC_HOME": str(home)}
    )
    assert exported.exit_code == 1
    assert "cannot be read (file artifacts/bundle/arrays.npz)" in exported.output and "Traceback" not in exported.output
    assert len(_lines(exported.output)) <= 3, exported.output


def test_a_truncated_snapshot_file_is_named(home):
    from flows.ingest import ingest

    first = ingest(dataset="synthetic", synthetic_ratings=4_000, seed=1)
    store = SnapshotStore(get_settings().snapshots_dir)
    snapshot = store.get("synthetic", first["snapshot_id"])
    _truncate(snapshot.table_path("items"))
    with pytest.raises(DataError, match=r"items\.parquet cannot be read .*: snapshot \w+ is damaged; ingest it again"):
        store.load(snapshot)
    checked = CliRunner().invoke(app, ["validate", "--dataset", "synthetic"], env={"MOVIEREC_HOME": str(home)})
    assert checked.exit_code == 1 and "items.parquet cannot be read" in checked.output
    assert "Traceback" not in checked.output and len(_lines(checked.output)) <= 3, checked.output


def test_a_damaged_optuna_database_is_named_with_what_to_do(tmp_path):
    home = new_home(tmp_path / "home")
    (home / "optuna.db").write_bytes(b"not a database at all" * 100)
    run = start_pipeline(home, "--trials", "1")
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 1, out[-2000:]
    assert f"the Optuna study storage {home / 'optuna.db'} cannot be used (file is not a database)" in out
    assert "delete" in out and "Traceback" not in out
