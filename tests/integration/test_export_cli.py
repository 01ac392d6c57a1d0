"""`movierec export-recs` on a registered champion: the file, its rows, explicit versions, errors."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
from registered import register_champion
from typer.testing import CliRunner

from movierec.cli import app
from movierec.serving.export import export_recommendations


def test_export_recs_writes_the_champions_top_k(home, tmp_path):
    registered = register_champion()
    bundle = registered.bundle
    out = tmp_path / "out" / "recs.parquet"
    result = CliRunner().invoke(app, ["export-recs", "--k", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == bundle.n_users * 6 and frame["user_id"].nunique() == bundle.n_users
    assert f"{len(frame):,} rows" in result.output and f"{bundle.n_users:,} users" in result.output
    assert str(out) in result.output.replace("\n", "")
    pd.testing.assert_frame_equal(frame, export_recommendations(bundle, 6))
    metadata = pq.read_schema(out).metadata
    assert metadata[b"movierec.model_uri"] == f"models:/{registered.name}@champion".encode()

    # Default k (serving.export_k) and an explicit version; a second version leaves the first exportable.
    register_champion(epochs=2, promote=False)
    pinned = tmp_path / "v1.parquet"
    result = CliRunner().invoke(
        app, ["export-recs", "--out", str(pinned), "--model-uri", f"models:/{registered.name}/{registered.version}"]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(pinned)) == bundle.n_users * 20


def test_a_bad_model_uri_is_a_message_not_a_traceback(home, tmp_path):
    register_champion()
    out = tmp_path / "recs.parquet"
    for uri in ("models:/movierec-lightfm/99", "models:/no-such-model@champion", "runs:/0123456789abcdef/model"):
        result = CliRunner().invoke(app, ["export-recs", "--out", str(out), "--model-uri", uri])
        assert result.exit_code == 1, (uri, result.output)
        assert "error:" in result.output and uri in result.output.replace("\n", "")
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # a clean exit
        assert not out.exists()


def test_the_flows_export_stage_writes_once_and_never_fails_the_run(home, monkeypatch):
    """`tasks.export.export_champion` without Prefect (the task's function stands in for the task)."""
    import mlflow

    from movierec.settings import get_settings
    from tasks import export as stage

    registered = register_champion()
    settings = get_settings()
    registration = {"name": registered.name, "champion_version": registered.version}
    monkeypatch.setattr(stage, "export_recommendations", stage.export_recommendations.fn)
    with mlflow.start_run() as run:
        path = stage.export_champion(settings, registration)
    expected = settings.exports_dir / f"{registered.name}-v{registered.version}-top{settings.serving.export_k}.parquet"
    assert (
        path == str(expected)
        and len(pd.read_parquet(expected)) == registered.bundle.n_users * settings.serving.export_k
    )
    assert mlflow.get_run(run.info.run_id).data.tags["export_path"] == path
    written = expected.stat().st_mtime_ns
    with mlflow.start_run():  # the champion did not change: the file is not written again
        assert stage.export_champion(settings, registration) == path and expected.stat().st_mtime_ns == written

    def broken(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(stage, "export_model", broken)
    expected.unlink()
    with mlflow.start_run() as run:
        assert stage.export_champion(settings, registration) is None
    assert mlflow.get_run(run.info.run_id).data.tags["export.error"] == "OSError: disk full (injected)"
    assert stage.export_champion(settings, {"name": registered.name, "champion_version": None}) is None
