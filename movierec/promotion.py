"""The promotion gate: the challenger and the current champion, both loaded from the registry,
measured by the same code on the same current holdout.

`models.serving.holdout_metrics` measures each model as it is served: its own training items and
the holdout's training part are excluded from its rankings, and users it does not know get its
popularity fallback. The holdout is the held-out split of the dataset's current snapshot.
"""

from __future__ import annotations

import mlflow

from features.splits import Split
from models import compare
from models.serving import ServingBundle, holdout_metrics
from movierec.errors import DataError
from movierec.registry import CHAMPION, Decision, Registry, beats
from movierec.settings import Settings
from movierec.snapshot import SnapshotStore


def load_bundle(model_uri: str) -> ServingBundle:
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle


def holdout_score(settings: Settings, bundle: ServingBundle, held_out: Split) -> float:
    k = settings.training.k
    metrics = holdout_metrics(bundle, held_out.train, held_out.test, k=k, threshold=settings.training.positive_threshold)
    return metrics[f"ndcg@{k}"]


def gate(settings: Settings, registry: Registry, version: str, held_out: Split) -> Decision:
    """Measure `version` and the current champion on `held_out`; decide whether to promote."""
    metric = f"ndcg@{settings.training.k}"
    challenger_score = holdout_score(settings, load_bundle(f"models:/{registry.name}/{version}"), held_out)
    champion = registry.champion()
    champion_score = None
    if champion is not None:
        if str(champion.version) == str(version):
            raise ValueError(f"version {version} of '{registry.name}' already is the champion")
        champion_score = holdout_score(settings, load_bundle(f"models:/{registry.name}@{CHAMPION}"), held_out)
    margin = settings.promotion.margin
    return Decision(
        promote=beats(challenger_score, champion_score, margin),
        challenger_version=str(version),
        challenger_score=challenger_score,
        champion_version=None if champion is None else str(champion.version),
        champion_score=champion_score,
        margin=margin,
        metric=metric,
    )


def current_holdout(settings: Settings, dataset: str) -> Split:
    """The held-out split of the dataset's latest snapshot, by the settings' split rule."""
    store = SnapshotStore(settings.snapshots_dir)
    snapshot = store.latest(dataset)
    if snapshot is None:
        raise DataError(f"no snapshot of {dataset} in {store.dataset_dir(dataset)}; run `movierec ingest --dataset {dataset}`")
    training = settings.training
    return compare.default_split(
        store.load(snapshot).ratings, training.split, test_share=training.test_share,
        min_ratings=training.min_user_ratings, seed=training.seed,
    )
