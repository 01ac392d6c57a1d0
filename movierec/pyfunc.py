"""MLflow glue for serving: a `ServingBundle` on disk, as a pyfunc model, and logged to a run.

On disk a bundle is a folder of plain files, nothing pickled:
  arrays.npz    ids, representations, popularity, user feature embeddings/biases (hybrid)
  seen.npz      users x items, every rating of the snapshot (scipy sparse; never recommended)
  trained.npz   users x items, the ratings the model was trained on (holdout evaluation)
  items.parquet display metadata in item_idx order
  bundle.json   format version, user feature names, group column ranges, group weights

`log_model` logs a pyfunc model whose python_model is `MovieRecModel`, with the bundle folder
and the raw LightFM object (`lightfm.pkl`, for re-training or inspection only; serving never
unpickles it) as artifacts, and the repository's `models`, `features` and `movierec` packages as
code paths, so the model loads in a fresh process and under `mlflow models serve`.

Signature, and the MLflow (3.17) quirks behind it. `required=False` only lets a column be
absent; it does not make values nullable:
* a scalar `long` column is enforced as numpy int64, so a missing value (NaN in a float column,
  NA in an Int64 column) fails, in-process and in `mlflow models serve` alike; a `double`
  column, the documented workaround, refuses int64 input in-process (ints upcast to double
  only up to 6 bytes);
* an optional `Array(long)` accepts None or [] per row but not NaN, and NaN is what pandas puts
  where a record omits the key (a list of dicts, or `dataframe_records` JSON sent to a server).
So the inputs that may be missing per row (`user_id`, `k`, `liked_movie_ids`, `age`) are
declared optional `AnyType` and validated by `ServingBundle.predict` (clear ValueErrors);
`gender` and `occupation` are optional strings (None / NaN pass). Every input is optional.
"""

from __future__ import annotations

import json
import pickle
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

from models.serving import ServingBundle, as_request_frame

# Format 2 added `trained.npz` (the training ratings) beside `seen.npz` (every rating).
BUNDLE_FORMAT = 2
READABLE_FORMATS = (1, 2)
REPO = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("models", "features", "movierec")
# Distribution names whose installed versions are pinned in the model's requirements.
REQUIREMENTS = ("numpy", "pandas", "scipy", "pyarrow", "mlflow", "lightfm-next", "scikit-learn")
ARRAYS = ("user_ids", "item_ids", "user_bias", "user_vectors", "item_bias", "item_vectors", "popularity", "popularity_counts")
FEATURE_ARRAYS = ("user_feature_embeddings", "user_feature_biases")
MODEL_SCRIPT = '''"""The movierec pyfunc model (MLflow models-from-code); its state is the "bundle" artifact."""
import mlflow

from movierec.pyfunc import MovieRecModel

mlflow.models.set_model(MovieRecModel())
'''


def save_bundle(bundle: ServingBundle, folder: Path) -> Path:
    """Write `bundle` into `folder` (created if needed); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(bundle, name) for name in ARRAYS}
    if bundle.user_feature_embeddings is not None:
        arrays.update({name: getattr(bundle, name) for name in FEATURE_ARRAYS})
    np.savez(folder / "arrays.npz", **arrays)
    sp.save_npz(folder / "seen.npz", bundle.seen.tocsr(), compressed=True)
    sp.save_npz(folder / "trained.npz", bundle.trained.tocsr(), compressed=True)
    bundle.items.to_parquet(folder / "items.parquet", index=False)
    meta = {
        "format": BUNDLE_FORMAT,
        "user_feature_names": list(bundle.user_feature_names),
        "user_feature_groups": {group: list(span) for group, span in bundle.user_feature_groups.items()},
        "user_groups": bundle.user_groups,
    }
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_bundle(folder: Path | str) -> ServingBundle:
    folder = Path(folder)
    meta = json.loads((folder / "bundle.json").read_text())
    if meta.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{folder} holds bundle format {meta.get('format')}; this code reads formats {READABLE_FORMATS}")
    with np.load(folder / "arrays.npz", allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return ServingBundle(
        **{name: arrays[name] for name in ARRAYS},
        seen=sp.load_npz(folder / "seen.npz").tocsr(),
        # Format 1 had no held-out ratings in `seen`: what it excluded was what it trained on.
        trained=sp.load_npz(folder / "trained.npz").tocsr() if (folder / "trained.npz").exists() else None,
        items=pd.read_parquet(folder / "items.parquet"),
        **{name: arrays.get(name) for name in FEATURE_ARRAYS},
        user_feature_names=list(meta["user_feature_names"]),
        user_feature_groups={group: tuple(span) for group, span in meta["user_feature_groups"].items()},
        user_groups=meta["user_groups"],
    )


class MovieRecModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper of a `ServingBundle`; `bundle` is the loaded bundle, for a server that
    wants to call it directly (`loaded.unwrap_python_model().bundle`)."""

    def __init__(self) -> None:
        self.bundle: ServingBundle | None = None

    def load_context(self, context) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    # A DataFrame hint is one MLflow infers no schema from: the logged signature applies.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """`ServingBundle.predict` on a DataFrame of requests (also a dict or a list of dicts)."""
        if self.bundle is None:
            raise RuntimeError("the model's context is not loaded")
        return self.bundle.predict(as_request_frame(model_input))


def signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec(AnyType(), "user_id", required=False),  # integer or null, see the module docstring
            ColSpec(AnyType(), "k", required=False),  # positive integer or null (default 10)
            ColSpec(AnyType(), "liked_movie_ids", required=False),  # list of integers or null
            ColSpec(AnyType(), "age", required=False),  # number or null
            ColSpec(DataType.string, "gender", required=False),
            ColSpec(DataType.string, "occupation", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.long, "request"),
            ColSpec(DataType.long, "user_id", required=False),
            ColSpec(DataType.long, "movie_id"),
            ColSpec(DataType.long, "rank"),
            ColSpec(DataType.double, "score"),
            ColSpec(DataType.string, "source"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(bundle: ServingBundle) -> pd.DataFrame:
    """Three requests: a known user, a new user with liked movies and demographics, and an
    anonymous user with nothing (popularity). Nullable columns are object columns with None,
    which serialise to JSON null."""
    liked = [int(movie) for movie in bundle.item_ids[bundle.popularity[:2]]]
    return pd.DataFrame(
        {
            "user_id": pd.Series([int(bundle.user_ids[0]), None, None], dtype=object),
            "k": pd.Series([5, 5, None], dtype=object),
            "liked_movie_ids": [None, liked, None],
            "age": pd.Series([None, 30, None], dtype=object),
            "gender": pd.Series([None, "F", None], dtype=object),
            "occupation": pd.Series([None, "programmer", None], dtype=object),
        }
    )


def pip_requirements() -> list[str]:
    """Exact pins of the installed versions of what loading and serving the model imports."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def log_model(bundle: ServingBundle, lightfm_model, *, name: str = "model") -> ModelInfo:
    """Log `bundle` as a pyfunc model of the active run (not registered).

    `lightfm_model` is the fitted `LightFMRecommender` (or its `LightFM` object), pickled as
    the `lightfm.pkl` artifact.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_model needs an active MLflow run (mlflow.start_run())")
    raw = getattr(lightfm_model, "model", lightfm_model)
    example = input_example(bundle)
    bundle.predict(example)  # fail here, loudly, rather than in MLflow's warning-only check
    with tempfile.TemporaryDirectory(prefix="movierec-model-") as temporary:
        folder = Path(temporary)
        save_bundle(bundle, folder / "bundle")
        with open(folder / "lightfm.pkl", "wb") as file:
            pickle.dump(raw, file, protocol=pickle.HIGHEST_PROTOCOL)
        # Models from code: MLflow stores this script, not a cloudpickle of the model object.
        script = folder / "movierec_model.py"
        script.write_text(MODEL_SCRIPT)
        # MLflow validates the input example by loading the model in this process, which
        # prepends the model's code folder (a temporary copy) to sys.path; undo that.
        path_before = list(sys.path)
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(script),
                artifacts={"bundle": str(folder / "bundle"), "lightfm": str(folder / "lightfm.pkl")},
                signature=signature(),
                input_example=example,
                pip_requirements=pip_requirements(),
                code_paths=[str(REPO / package) for package in CODE_PACKAGES],
            )
        finally:
            sys.path[:] = path_before
