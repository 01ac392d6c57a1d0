"""`mlflow models serve` on the registered champion answers like the model in-process.

The server is MLflow's own (uvicorn, started by `mlflow models serve` through `bash -c "exec
uvicorn ..."`), so uvicorn must be on PATH: the venv's bin folder is put first, as activating the
venv would (`server.mlflow_models_serve`).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from registered import register_champion
from server import mlflow_models_serve

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def server(home, tmp_path):
    registered = register_champion()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered.tracking_uri}
    with mlflow_models_serve(BIN, f"models:/{registered.name}@champion", env, tmp_path / "mlflow-serve.log") as url:
        yield url, registered


def test_mlflow_models_serve_answers_like_the_model_in_process(server):
    url, registered = server
    bundle = registered.bundle
    known = int(bundle.user_ids[3])
    liked = [int(movie) for movie in bundle.item_ids[bundle.popularity[30:33]]]
    records = [{"user_id": known, "k": 5}, {"liked_movie_ids": liked, "k": 5}]
    expected = bundle.predict(pd.DataFrame(records))
    assert len(expected) == 10

    split = {
        "dataframe_split": {
            "columns": ["user_id", "k", "liked_movie_ids"],
            "data": [[known, 5, None], [None, 5, liked]],
        }
    }
    for body in ({"dataframe_records": records}, split):
        answer = pd.DataFrame(_post(f"{url}/invocations", body)["predictions"])
        assert len(answer) == 10, body
        assert answer.groupby("request")["rank"].apply(list).tolist() == [[1, 2, 3, 4, 5]] * 2
        assert answer["movie_id"].tolist() == expected["movie_id"].tolist()
        assert answer["source"].tolist() == expected["source"].tolist() == ["model"] * 10
        assert answer["user_id"].iloc[0] == known and pd.isna(answer["user_id"].iloc[5])
        assert answer["score"].to_numpy() == pytest.approx(expected["score"].to_numpy(), rel=1e-5)

    # A bad request is a 4xx/5xx with MLflow's JSON error, not a hang.
    with pytest.raises(urllib.error.HTTPError) as error:
        _post(f"{url}/invocations", {"dataframe_records": [{"user_id": known, "k": 0}]})
    assert error.value.code >= 400 and "k must be positive" in error.value.read().decode()
