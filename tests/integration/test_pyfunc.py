"""The serving bundle on disk and as a logged MLflow pyfunc model (self-contained: its only code is
`inference/model.py`), loaded in a fresh process."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.interactions import recency_ranked
from features.prepare import prepare
from features.splits import user_temporal_split
from inference.model import ServingBundle
from models.baselines import EASE, ItemKNN
from models.bundle import serving_bundle
from models.factorization import LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate

REPO = Path(__file__).resolve().parents[2]
USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}


@pytest.fixture(scope="module")
def fitted():
    tables = canonicalize(generate(6_000, seed=7), None)[0]
    prepared = prepare(
        tables.users, tables.items, tables.tags, chosen=user_temporal_split(tables.ratings), user_groups=USER_GROUPS
    )
    hybrid = LightFMRecommender(epochs=5, no_components=16).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    mf = LightFMRecommender(epochs=5, no_components=16).fit(prepared.train)
    bundled = {"rating_scale": (0.5, 5.0, 0.5), "positive_threshold": 3.5}
    # A blend as the pipeline builds one: the hybrid's factors, EASE and item kNN, recency-weighted inputs.
    item_item = {
        "ease": EASE(l2=50.0).fit(prepared.train).item_item(),
        "item_knn": ItemKNN().fit(prepared.train).item_item(),
    }
    positives = recency_ranked(prepared.split.train, prepared.n_users, prepared.n_items, threshold=3.5, half_life=10.0)
    blend = {"factors": 0.5, "ease": 0.3, "item_knn": 0.2}
    return {
        "hybrid": (
            hybrid,
            serving_bundle(
                hybrid, prepared, tables.users, tables.items, USER_GROUPS, about={"role": "evaluation"}, **bundled
            ),
        ),
        "mf": (mf, serving_bundle(mf, prepared, tables.users, tables.items, None, **bundled)),
        "blend": (
            hybrid,
            serving_bundle(
                hybrid,
                prepared,
                tables.users,
                tables.items,
                USER_GROUPS,
                blend=blend,
                item_item=item_item,
                positives=positives,
                about={"role": "serving", "candidate": "blend"},
                **bundled,
            ),
        ),
    }


def _requests(bundle: ServingBundle) -> pd.DataFrame:
    liked = [int(movie) for movie in bundle.item_ids[bundle.popularity[40:43]]]
    return pd.DataFrame(
        {
            "user_id": pd.array([int(bundle.user_ids[0]), None, 999_999, int(bundle.user_ids[7]), None], dtype="Int64"),
            "k": pd.array([5, 4, None, 3, 2], dtype="Int64"),
            "liked_movie_ids": [None, liked, None, None, []],
            "age": [np.nan, 27.0, np.nan, np.nan, 60.0],
            "gender": [None, "F", None, None, "M"],
            "occupation": [None, "programmer", None, None, None],
        }
    )


@pytest.mark.parametrize("kind", ["hybrid", "mf", "blend"])
def test_a_saved_bundle_loads_identical(fitted, kind, tmp_path):
    from inference.model import load_bundle, save_bundle

    _, bundle = fitted[kind]
    loaded = load_bundle(save_bundle(bundle, tmp_path / "bundle"))
    item_item = ["item_item-ease.npz", "item_item-item_knn.npz"] if kind == "blend" else []
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == sorted(
        ["arrays.npz", "bundle.json", "items.parquet", "positives.npz", "seen.npz", "trained.npz", *item_item]
    )
    assert loaded.blend == bundle.blend and loaded.about == bundle.about
    assert sorted(loaded.item_item) == sorted(bundle.item_item)
    for name, matrix in bundle.item_item.items():
        assert (loaded.item_item[name] != matrix).nnz == 0
    assert (loaded.positives != bundle.positives).nnz == 0
    for name in (
        "user_ids",
        "item_ids",
        "user_bias",
        "user_vectors",
        "item_bias",
        "item_vectors",
        "popularity",
        "popularity_counts",
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(bundle, name), err_msg=name)
        assert getattr(loaded, name).dtype == getattr(bundle, name).dtype, name
    assert (loaded.seen != bundle.seen).nnz == 0 and (loaded.trained != bundle.trained).nnz == 0
    pd.testing.assert_frame_equal(loaded.items, bundle.items)
    assert loaded.rating_scale == (0.5, 5.0, 0.5) and loaded.positive_threshold == 3.5
    if kind in ("hybrid", "blend"):
        np.testing.assert_array_equal(loaded.user_feature_embeddings, bundle.user_feature_embeddings)
        np.testing.assert_array_equal(loaded.user_feature_biases, bundle.user_feature_biases)
        assert loaded.user_feature_names == bundle.user_feature_names
        assert loaded.user_feature_groups == bundle.user_feature_groups and loaded.user_groups == USER_GROUPS
    else:
        assert loaded.user_feature_embeddings is None and not loaded.has_user_features
    requests = _requests(bundle)
    pd.testing.assert_frame_equal(loaded.predict(requests), bundle.predict(requests), check_exact=True)


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import mlflow
    import pandas as pd

    model_uri, requests_path, out_path, info_path = sys.argv[1:]
    loaded = mlflow.pyfunc.load_model(model_uri)
    loaded.predict(pd.read_parquet(requests_path)).to_parquet(out_path, index=False)
    records = loaded.predict([{"user_id": 1, "k": 2}, {"liked_movie_ids": [1, 4], "k": 2}, {"k": 1}])
    project = ("inference", "models", "features", "movierec", "lightfm", "sklearn")
    Path(info_path).write_text(json.dumps({
        "bundle": type(loaded.unwrap_python_model().bundle).__name__,
        "roles": [loaded.unwrap_python_model().bundle.about["role"],
                  loaded.unwrap_python_model().evaluation_bundle().about["role"]],
        "imported": sorted(name for name in sys.modules if name.split(".")[0] in project),
        "records": records.to_dict(orient="list"),
    }, default=int))
    """
)


def test_the_logged_model_serves_the_same_answers_in_a_fresh_process(fitted, tmp_path, monkeypatch):
    import mlflow
    from mlflow.models import Model
    from mlflow.models.utils import _validate_serving_input

    from movierec.tracking.served_model import SCRIPT_NAME, input_example, log_model, model_script, pip_requirements

    model, bundle = fitted["blend"]
    twin = fitted["hybrid"][1]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for the child process; restored afterwards
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("serving-test", artifact_location=(tmp_path / "artifacts").as_uri())
        path_before = list(sys.path)
        with mlflow.start_run(experiment_id=experiment):
            info = log_model(bundle, twin, model)
        assert sys.path == path_before
        assert mlflow.MlflowClient().search_registered_models() == []

        # Signature, input example and pinned requirements are recorded.
        inputs = info.signature.inputs
        assert inputs.input_names() == ["user_id", "k", "liked_movie_ids", "age", "gender", "occupation"]
        assert inputs.required_input_names() == []
        assert info.signature.outputs.input_names() == ["request", "user_id", "movie_id", "rank", "score", "source"]
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(tmp_path / "downloaded"))
        )
        stored = Model.load(str(local))
        assert stored.saved_input_example_info is not None
        example = stored.load_input_example(str(local))
        assert example["user_id"].notna().sum() == 1 and example["liked_movie_ids"].notna().sum() == 1
        # The serving input example goes through MLflow's JSON parsing and schema enforcement.
        served = _validate_serving_input(str(local), stored.get_serving_input(str(local)))
        pd.testing.assert_frame_equal(served, bundle.predict(input_example(bundle)), check_exact=True)
        assert set(served["source"]) == {"model", "popularity"}
        requirements = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text().split()
        assert set(pip_requirements()) <= set(requirements)
        assert sorted(line.split("==")[0] for line in requirements if "==" in line) == [
            "mlflow",
            "numpy",
            "pandas",
            "pyarrow",
            "scipy",
        ]

        # Self-contained: the model's one script is inference/model.py plus the entry point; no
        # code paths of ours, nothing pickled in the model; the raw LightFM object beside it.
        assert not (local / "code").exists() and not stored.flavors["python_function"].get("code")
        assert not (local / "uv.lock").exists() and not (local / "pyproject.toml").exists()
        assert (local / SCRIPT_NAME).read_text() == model_script()
        assert model_script().startswith((REPO / "inference" / "model.py").read_text())
        assert not [path.name for path in local.rglob("*") if path.suffix in (".pkl", ".pickle", ".cloudpickle")]
        raw = mlflow.artifacts.download_artifacts(
            f"runs:/{info.run_id}/raw_model/lightfm.pkl", dst_path=str(tmp_path / "raw")
        )
        with open(raw, "rb") as file:
            np.testing.assert_array_equal(pickle.load(file).user_embeddings, model.model.user_embeddings)

        # A fresh interpreter loads the model from the tracking store and predicts.
        requests = _requests(bundle)
        requests.to_parquet(tmp_path / "requests.parquet", index=False)
        command = [
            sys.executable,
            "-c",
            CHILD,
            info.model_uri,
            str(tmp_path / "requests.parquet"),
            str(tmp_path / "out.parquet"),
            str(tmp_path / "info.json"),
        ]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        mlflow.set_tracking_uri(None)

    expected = bundle.predict(requests)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), expected, check_exact=True)
    assert set(expected["source"]) == {"model", "popularity"}
    child = json.loads((tmp_path / "info.json").read_text())
    assert child["bundle"] == "ServingBundle" and child["roles"] == ["serving", "evaluation"]
    # The model ran its own script: no package of this project (nor LightFM) was imported.
    assert child["imported"] == []
    records = bundle.predict([{"user_id": 1, "k": 2}, {"liked_movie_ids": [1, 4], "k": 2}, {"k": 1}])
    assert child["records"]["movie_id"] == records["movie_id"].tolist()
    assert child["records"]["source"] == records["source"].tolist()
