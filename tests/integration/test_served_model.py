"""The registered model stands on its own: it runs in a virtualenv with only mlflow (in-process and
under `mlflow models serve`), loading it leaves the caller's imports alone, and a version this
code cannot serve is refused clearly (and cannot block the gate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from fresh_env import clean_environment, fresh_venv
from ranking import assert_same_predictions
from registered import register_champion
from server import mlflow_models_serve
from typer.testing import CliRunner

from features.splits import user_temporal_split
from inference.model import ServingBundle, save_bundle
from movierec.cli import app
from movierec.settings import get_settings
from movierec.tracking import runs
from movierec.tracking.promotion import gate
from movierec.tracking.registry import Registry
from movierec.tracking.served_model import IncompatibleModel, NotAMovierecModel, check_servable, load_bundle

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    import mlflow
    import pandas as pd

    model_uri, requests_path, out_path, info_path = sys.argv[1:]
    loaded = mlflow.pyfunc.load_model(model_uri)
    loaded.predict(pd.read_parquet(requests_path)).to_parquet(out_path, index=False)
    absent = [name for name in ("inference", "models", "features", "movierec", "lightfm")
              if importlib.util.find_spec(name) is None]
    imported = sorted({name.split(".")[0] for name in sys.modules} & {"sklearn", "lightfm"})
    json.dump({"absent": absent, "imported": imported, "prefix": sys.prefix}, open(info_path, "w"))
    """
)


def _requests(bundle: ServingBundle) -> pd.DataFrame:
    liked = [int(movie) for movie in bundle.item_ids[bundle.popularity[20:24]]]
    return pd.DataFrame(
        {
            "user_id": pd.array([int(bundle.user_ids[2]), None, 999_999, None], dtype="Int64"),
            "k": pd.array([6, 5, 4, 3], dtype="Int64"),
            "liked_movie_ids": [None, liked, None, None],
            "age": [np.nan, 34.0, np.nan, 70.0],
            "gender": [None, "F", None, None],
            "occupation": [None, "writer", None, None],
        }
    )


def test_the_champion_runs_in_a_fresh_virtualenv_with_only_mlflow(home, tmp_path):
    registered = register_champion()
    uri = f"models:/{registered.name}@champion"
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri))
    python = fresh_venv(tmp_path / "venv", requirements)
    env = {**clean_environment(), "MLFLOW_TRACKING_URI": registered.tracking_uri}

    # In-process in that environment: the same top-k as here.
    requests = _requests(registered.bundle)
    requests.to_parquet(tmp_path / "requests.parquet", index=False)
    command = [
        str(python),
        "-c",
        CHILD,
        uri,
        str(tmp_path / "requests.parquet"),
        str(tmp_path / "out.parquet"),
        str(tmp_path / "info.json"),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "info.json").read_text())
    assert Path(info["prefix"]) == tmp_path / "venv"
    assert info["absent"] == ["inference", "models", "features", "movierec", "lightfm"] and info["imported"] == []
    expected = registered.bundle.predict(requests)
    assert set(expected["source"]) == {"model", "popularity"}
    assert_same_predictions(pd.read_parquet(tmp_path / "out.parquet"), expected)

    # `mlflow models serve` from that environment answers /invocations the same.
    with mlflow_models_serve(python.parent, uri, env, tmp_path / "serve.log") as url:
        records = json.loads(requests.to_json(orient="records"))
        response = httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
    assert response.status_code == 200, response.text
    answer = pd.DataFrame(response.json()["predictions"])
    answer["user_id"] = answer["user_id"].astype("Int64")
    assert_same_predictions(answer, expected)


def test_loading_the_champion_leaves_sys_path_and_sys_modules_alone(home):
    first = register_champion(epochs=3)
    register_champion(epochs=6, promote=False)
    settings = get_settings()
    runs.configure(settings)
    held_out = user_temporal_split(first.tables.ratings)
    registry = Registry(settings.registered_model_name)
    gate(settings, registry, "2", held_out)  # MLflow imports its own modules on first use

    path_before, modules_before = list(sys.path), dict(sys.modules)
    decision = gate(settings, registry, "2", held_out)
    assert sys.path == path_before
    assert sys.modules.keys() == modules_before.keys()
    assert all(sys.modules[name] is module for name, module in modules_before.items())
    assert decision.champion_version == "1" and decision.champion_score is not None
    for package in ("models", "features", "inference", "movierec"):
        assert Path(sys.modules[package].__file__).resolve().is_relative_to(REPO), package


def test_an_application_with_its_own_models_package_can_load_the_champion(home, tmp_path):
    registered = register_champion()
    app = tmp_path / "app"
    for package in ("models", "features"):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text("OWNER = 'the application'\n")
    script = textwrap.dedent(
        """
        import sys
        import mlflow
        loaded = mlflow.pyfunc.load_model(sys.argv[1])
        rows = loaded.predict([{"user_id": int(sys.argv[2]), "k": 3}])
        import features, models
        assert models.OWNER == features.OWNER == "the application", (models.__file__, features.__file__)
        assert len(rows) == 3, rows
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered.tracking_uri, "PYTHONPATH": str(app)}
    done = subprocess.run(
        [sys.executable, "-c", script, f"models:/{registered.name}@champion", str(registered.bundle.user_ids[0])],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _log_old_format_model(bundle: ServingBundle, folder: Path) -> str:
    """A model logged the way versions were before bundle format 3: the bundle with format 2."""
    save_bundle(bundle, folder / "bundle")
    meta = json.loads((folder / "bundle" / "bundle.json").read_text())
    (folder / "bundle" / "bundle.json").write_text(json.dumps({**meta, "format": 2}))
    script = folder / "old_model.py"
    script.write_text(
        "import mlflow\n\nclass Old(mlflow.pyfunc.PythonModel):\n    def predict(self, context, model_input):\n"
        "        return model_input\n\nmlflow.models.set_model(Old())\n"
    )
    with mlflow.start_run(run_name="old model"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(script), artifacts={"bundle": str(folder / "bundle")}
        )
    return info.model_uri


def test_a_version_this_code_cannot_serve_is_refused_and_replaced_by_the_gate(home, tmp_path):
    registered = register_champion(promote=False)  # version 1, this code's format
    settings = get_settings()
    runs.configure(settings)
    registry = Registry(settings.registered_model_name)
    old_uri = _log_old_format_model(registered.bundle, tmp_path / "old")
    with registry.registration(old_uri, {"dataset": "synthetic"}) as old:
        registry.promote(str(old.version), reason="registered before this code")
    with pytest.raises(IncompatibleModel, match="bundle format 2"):
        load_bundle(f"models:/{registry.name}@champion")
    with pytest.raises(IncompatibleModel, match="bundle format 2"):
        check_servable(f"models:/{registry.name}/{old.version}")

    decision = gate(settings, registry, "1", user_temporal_split(registered.tables.ratings))
    assert decision.promote and decision.champion_version == str(old.version) and decision.champion_score is None
    assert "cannot be loaded by this code" in decision.reason and "bundle format 2" in decision.reason
    assert decision.tags()["gate.champion_version"] == str(old.version)

    # By hand: such a version is never made champion again, not by --force, not by a rollback.
    registry.promote("1", reason=decision.reason)
    cli = CliRunner()
    forced = cli.invoke(app, ["promote", "--version", str(old.version), "--force"], env={"MOVIEREC_HOME": str(home)})
    assert forced.exit_code == 1 and "not promoted" in forced.output and "bundle format 2" in forced.output
    back = cli.invoke(app, ["rollback"], env={"MOVIEREC_HOME": str(home)})
    assert back.exit_code == 1 and "not rolled back" in back.output
    assert str(registry.champion().version) == "1"


def test_a_champion_that_is_no_movierec_model_stops_the_gate(home, tmp_path):
    registered = register_champion(promote=False)
    settings = get_settings()
    runs.configure(settings)
    registry = Registry(settings.registered_model_name)
    script = tmp_path / "other.py"
    script.write_text("import mlflow\n\nmlflow.models.set_model(lambda model_input: model_input)\n")
    with mlflow.start_run(run_name="someone else's model"):
        other = mlflow.pyfunc.log_model(name="model", python_model=str(script), input_example=pd.DataFrame({"x": [1]}))
    with registry.registration(other.model_uri, {}) as version:
        registry.promote(str(version.version), reason="not ours")
    with pytest.raises(NotAMovierecModel, match="not a movierec model"):
        gate(settings, registry, registered.version, user_temporal_split(registered.tables.ratings))
