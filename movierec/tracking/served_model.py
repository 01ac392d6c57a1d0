"""The registered model in MLflow: logging a `ServingBundle` as a self-contained pyfunc, and the
one loader every consumer uses (the promotion gate, the batch export, the API, the tests).

What is logged (MLflow models-from-code, nothing pickled, no code paths):
  movierec_model.py  `inference/model.py` verbatim plus `mlflow.models.set_model(pyfunc_model())`:
                     the model's only code; it imports numpy, pandas, scipy and mlflow
  artifacts/bundle/  the served bundle's plain files (`inference.model.save_bundle`): the chosen
                     configuration refit on every rating of the snapshot
  artifacts/evaluation_bundle/  its twin, the same configuration trained on the holdout's
                     training part only: what the promotion gate measures (`evaluation=True`)
  requirements       exact pins of numpy, pandas, scipy, pyarrow and mlflow (no lightfm, no
                     scikit-learn, not this project; MLflow's copy of the project's uv.lock is
                     switched off)
and, beside the model in the run (never loaded by serving), the raw LightFM object as
`raw_model/lightfm.pkl`, for inspection and retraining.

Loading (`load_bundle`) downloads the model, refuses one this code cannot serve (a bundle
format other than `ServingBundle.FORMAT`, e.g. a version logged before the model became
self-contained, with code paths) with `IncompatibleModel`, and loads it with `isolated_imports`:
the caller's `sys.path` and `sys.modules` are as they were afterwards (MLflow registers the
model's script as a module `code_model_<hex>`; it is removed again). The bundle returned is an
instance of the class defined by the model's own copy of `inference/model.py`: the model scores
with the code it was logged with.

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

import os
import pickle
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

import inference.model
from inference.model import ServingBundle, bundle_format, save_bundle
from movierec.errors import DataError

# Distribution names whose installed versions are pinned in the model's requirements: what the
# model's script imports (pyarrow: pandas' Parquet reader).
REQUIREMENTS = ("numpy", "pandas", "scipy", "pyarrow", "mlflow")
SCRIPT_NAME = "movierec_model.py"
ENTRY_POINT = "\n\n# The MLflow entry point, appended when the model is logged.\nimport mlflow  # noqa: E402\n\nmlflow.models.set_model(pyfunc_model())\n"
# MLflow imports a models-from-code script as a module of this prefix (mlflow.models.utils).
CODE_MODULE_PREFIX = "code_model_"


# What the gate, the export and the API call on a loaded bundle: a model whose own code lacks
# any of these is refused at load time, not at its first request.
SCORING_API = (
    "scores", "recommend", "popular", "recommend_new_user_items", "similar_items", "because",
    "because_user", "recommend_users", "recommend_new_user", "similar_movies", "predict", "user_index", "item_index",
    "movie_ids", "trained", "seen", "rating_scale", "positive_threshold",
)  # fmt: skip


class NotAMovierecModel(ValueError):
    """The URI holds no movierec model (no bundle), or not a readable one."""


class IncompatibleModel(Exception):
    """A movierec model this code cannot serve: another bundle format, code paths, or a scoring
    API without a method this code calls."""


class CorruptModel(DataError):
    """A movierec model of this code's format whose files cannot be read (truncated, altered)."""


def model_script() -> str:
    """The logged model's code: the served model's file verbatim and the entry point."""
    return Path(inference.model.__file__).read_text(encoding="utf-8") + ENTRY_POINT


@contextmanager
def isolated_imports() -> Iterator[None]:
    """Undo what loading a model does to the process: drop the modules MLflow made of the model's
    script, reset MLflow's "model set by the script" (it would keep the last bundle alive), and
    put `sys.path` back should anything have changed it (a self-contained model does not)."""
    path_before = list(sys.path)
    modules_before = set(sys.modules)
    try:
        yield
    finally:
        if sys.path != path_before:
            sys.path[:] = path_before
        for name in set(sys.modules) - modules_before:
            if name.startswith(CODE_MODULE_PREFIX):
                del sys.modules[name]
        mlflow.models.model.__mlflow_model__ = None


def load_bundle(
    model_uri: str, *, evaluation: bool = False, tracking_uri: str | None = None, registry_uri: str | None = None
) -> ServingBundle:
    """The served bundle of a logged or registered movierec model (`models:/name/3`,
    `models:/name@champion`, `runs:/...`), or with `evaluation=True` its holdout-trained twin,
    scoring with the model's own code. Without explicit URIs, MLflow's current ones (e.g. set by
    `movierec.tracking.runs.configure`). Raises `IncompatibleModel` for a movierec model this code
    cannot serve, `CorruptModel` for one whose files cannot be read and `NotAMovierecModel` for
    anything else."""
    with tempfile.TemporaryDirectory(prefix="movierec-load-") as temporary:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=temporary, tracking_uri=tracking_uri, registry_uri=registry_uri
            )
        )
        check_format(model_uri, local)
        with isolated_imports():
            try:
                python_model = mlflow.pyfunc.load_model(str(local)).unwrap_python_model()
                bundle = python_model.evaluation_bundle() if evaluation else getattr(python_model, "bundle", None)
            except OSError as error:  # a file that cannot be read (the bundle loader names it)
                raise CorruptModel(_corrupt_message(model_uri, local, error)) from None
    if bundle is None:
        raise NotAMovierecModel(f"{model_uri} loaded no movierec bundle")
    missing = [name for name in SCORING_API if not hasattr(bundle, name)]
    if missing:
        raise IncompatibleModel(
            f"{model_uri} cannot be served by this code: its bundle lacks {', '.join(missing)}{REGISTER}"
        )
    return bundle


REGISTER = "; register a new version with `movierec pipeline`"


def _corrupt_message(model_uri: str, local: Path, error: Exception) -> str:
    """One line: which model, which of its files (where the error names one), what to do."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    named = [str(path.relative_to(local)) for path in sorted(local.rglob("*")) if path.is_file() and str(path) in text]
    where = f" (file {named[0]})" if named else ""
    cause = str(error.__cause__ or error).splitlines()[0][:200]
    return (
        f"{model_uri} cannot be read{where}: {type(error.__cause__ or error).__name__}: {cause}. Its stored files are damaged: "
        "move `champion` back with `movierec rollback`, or register a new version with `movierec pipeline`"
    )


def check_servable(model_uri: str) -> None:
    """Raise as `load_bundle` would for a model of another format, reading only its metadata
    (`MLmodel` and `bundle.json`), e.g. before `movierec rollback` moves `champion` to it."""
    with tempfile.TemporaryDirectory(prefix="movierec-check-") as temporary:
        folder = Path(temporary)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/MLmodel", dst_path=str(folder))
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri}/artifacts/bundle/bundle.json", dst_path=str(folder)
            )
        except MlflowException as error:
            raise NotAMovierecModel(f"{model_uri} holds no movierec model: {error.message}") from None
        check_format(model_uri, folder)


def check_format(model_uri: str, local: Path) -> None:
    """`local` (a downloaded model, or its MLmodel and artifacts/bundle/bundle.json) is a
    self-contained movierec model of this code's bundle format."""
    if not (local / "MLmodel").is_file():
        raise NotAMovierecModel(f"{model_uri} is not an MLflow model (no MLmodel file)")
    try:
        meta = yaml.safe_load((local / "MLmodel").read_text()) or {}
        pyfunc = (meta.get("flavors") or {}).get("python_function") or {}
        artifacts = pyfunc.get("artifacts") or {}
        bundle = artifacts.get("bundle")
        found = bundle_format(local / bundle["path"]) if bundle else None
    except (yaml.YAMLError, ValueError, UnicodeDecodeError, AttributeError) as error:  # JSON errors are ValueErrors
        raise CorruptModel(_corrupt_message(model_uri, local, error)) from None
    if found is None:
        raise NotAMovierecModel(f"{model_uri} is not a movierec model (no bundle)")
    code_paths = bool(pyfunc.get("code"))
    if found != ServingBundle.FORMAT or code_paths or "evaluation_bundle" not in artifacts:
        raise IncompatibleModel(
            f"{model_uri} cannot be served by this code (bundle format {found}{', with code paths' if code_paths else ''}; "
            f"this code serves bundle format {ServingBundle.FORMAT}, self-contained){REGISTER}"
        )


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Environment variables set for the duration of the block, then restored."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def log_model(
    bundle: ServingBundle, evaluation_bundle: ServingBundle, lightfm_model=None, *, name: str = "model"
) -> ModelInfo:
    """Log `bundle` (served) and `evaluation_bundle` (its holdout-trained twin, for the gate) as
    one pyfunc model of the active run (not registered).

    `lightfm_model`, the served bundle's fitted `LightFMRecommender` (or its `LightFM` object), is
    pickled beside the model as the run artifact `raw_model/lightfm.pkl`; the model never loads it.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_model needs an active MLflow run (mlflow.start_run())")
    if not np.array_equal(bundle.item_ids, evaluation_bundle.item_ids):
        raise ValueError("a model's served and evaluation bundles must cover the same movies")
    example = input_example(bundle)
    for each in (bundle, evaluation_bundle):
        each.predict(example)  # fail here, loudly, rather than in MLflow's warning-only check
    with tempfile.TemporaryDirectory(prefix="movierec-model-") as temporary:
        folder = Path(temporary)
        save_bundle(bundle, folder / "bundle")
        save_bundle(evaluation_bundle, folder / "evaluation_bundle")
        script = folder / SCRIPT_NAME
        script.write_text(model_script(), encoding="utf-8")
        # MLflow validates the input example by loading the model in this process. It would also
        # copy this project's uv.lock into the model: an environment of everything the project
        # needs, where the model needs only its requirements.
        with isolated_imports(), _environment(MLFLOW_LOG_UV_FILES="false"):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(script),
                artifacts={"bundle": str(folder / "bundle"), "evaluation_bundle": str(folder / "evaluation_bundle")},
                signature=signature(),
                input_example=example,
                pip_requirements=pip_requirements(),
            )
        if lightfm_model is not None:
            raw = folder / "lightfm.pkl"
            with open(raw, "wb") as file:
                pickle.dump(getattr(lightfm_model, "model", lightfm_model), file, protocol=pickle.HIGHEST_PROTOCOL)
            mlflow.log_artifact(str(raw), "raw_model")
    return info
