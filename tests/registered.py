"""A registered champion in a test's MOVIEREC_HOME, without Prefect or tuning: a small hybrid
fitted on generated data (on every rating, and its evaluation twin on the holdout's training
part), logged as the pyfunc model with the monitoring reference of its data (as the retrain flow
logs them) and promoted through the real registry."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from features.prepare import prepare
from features.splits import every_rating, user_temporal_split
from features.tables import CanonicalTables
from inference.model import ServingBundle
from models.bundle import serving_bundle
from models.evaluation import holdout_metrics
from models.factorization import BiasedMF, LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.monitoring.reference import REFERENCE_ARTIFACT, REFERENCE_TAG, reference_statistics
from movierec.settings import get_settings
from movierec.tracking import runs, served_model
from movierec.tracking.registry import Registry

USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}


@dataclass
class Registered:
    name: str
    version: str
    tracking_uri: str
    bundle: ServingBundle
    tables: CanonicalTables


def register_champion(n_ratings: int = 6_000, seed: int = 7, *, epochs: int = 5, promote: bool = True) -> Registered:
    """Fit, log and register a hybrid in the settings' MLflow store (MOVIEREC_HOME must be set);
    each call adds a version, made champion when `promote`. Different `epochs` give a different model."""
    raw = generate(n_ratings, seed=seed)
    tables = canonicalize(raw, None)[0]
    scale = (raw.rating_scale.min, raw.rating_scale.max, raw.rating_scale.step)
    bundles, models = {}, {}
    held_out = user_temporal_split(tables.ratings)
    # The evaluation twin learns the holdout's training part; the served bundle every rating.
    for role, chosen in (("evaluation", held_out), ("serving", every_rating(tables.ratings))):
        prepared = prepare(tables.users, tables.items, tables.tags, chosen=chosen, user_groups=USER_GROUPS)
        models[role] = LightFMRecommender(name="hybrid", epochs=epochs, no_components=16).fit(
            prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
        )
        bundles[role] = serving_bundle(
            models[role],
            prepared,
            tables.users,
            tables.items,
            USER_GROUPS,
            rating_scale=scale,
            about={"role": role},
            ratings=BiasedMF(factors=8, iterations=5).fit(prepared.seen),
        )
    bundle = bundles["serving"]
    settings = get_settings()
    runs.configure(settings)
    registry = Registry(settings.registered_model_name)
    holdout = holdout_metrics(bundles["evaluation"], held_out.train, held_out.test, k=10, threshold=4.0)
    reference = reference_statistics(tables.ratings, tables.items, raw.rating_scale.values(), 4.0, holdout=holdout)
    with mlflow.start_run(run_name="test model") as run:
        info = served_model.log_model(bundle, bundles["evaluation"], models["serving"], name="model")
        mlflow.log_dict(reference, REFERENCE_ARTIFACT)
    tags = {"dataset": "synthetic", REFERENCE_TAG: f"runs:/{run.info.run_id}/{REFERENCE_ARTIFACT}"}
    with registry.registration(info.model_uri, tags) as version:
        if promote:
            registry.promote(str(version.version), reason="test")
    return Registered(registry.name, str(version.version), settings.tracking_uri, bundle, tables)
