"""The training protocol the settings describe: which ratings are held out, how features are
built and cached, the cold-start setup, and the bundle a fitted hybrid is served as.

The one place where settings become a split (`held_out_split`): training, evaluation, the
promotion gate and `movierec promote` all hold out the same ratings.
"""

from __future__ import annotations

import hashlib
import inspect
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

import features.interactions
import features.items
import features.prepare
import features.splits
import features.tables
import features.users
import inference.model
from features.prepare import Prepared
from features.splits import Split, protocol_split, sample_users, user_sample
from features.tables import CanonicalTables
from inference.model import ServingBundle
from models.bundle import serving_bundle
from models.cold_start import ColdStartSetup
from models.factorization import LightFMRecommender
from models.tune import TrialSetup
from movierec.data.snapshot import Snapshot, SnapshotStore
from movierec.settings import Settings

# Code whose change must invalidate cached features (and the tuning studies built on them): the
# feature modules, and of the served model's file only the encoders they import, so that a
# serving-only change does not throw away the feature cache and the studies.
FEATURE_MODULES = (
    features.interactions,
    features.items,
    features.prepare,
    features.splits,
    features.tables,
    features.users,
)
ENCODERS = (
    inference.model.age_bucket,
    inference.model.split_values,
    inference.model.multi_hot,
    inference.model.l1_normalise,
    inference.model.taste,
    inference.model.new_user_row,
)


@cache
def feature_code_hash() -> str:
    digest = hashlib.sha256()
    for module in FEATURE_MODULES:
        digest.update(Path(module.__file__).read_bytes())
    for encoder in ENCODERS:
        digest.update(inspect.getsource(encoder).encode())
    digest.update(repr((inference.model.AGE_EDGES, inference.model.AGE_LABELS)).encode())
    return digest.hexdigest()[:16]


def held_out_split(settings: Settings, ratings: pd.DataFrame) -> Split:
    """The held-out split of `ratings` by the settings' rule (`training.split`, `test_share`, ...)."""
    training = settings.training
    return protocol_split(
        ratings,
        training.split,
        test_share=training.test_share,
        min_ratings=training.min_user_ratings,
        seed=training.seed,
    )


def validation_split(settings: Settings, held_out: Split) -> Split:
    """The validation split that tunes and selects: carved from `held_out`'s training part by the
    same rule, with the ratings of a seeded sample of `training.validation_users` users."""
    training = settings.training
    return user_sample(features.splits.validation_split(held_out), training.validation_users, training.seed)


def evaluation_users(settings: Settings, prepared: Prepared) -> np.ndarray:
    """The user_idx evaluation scores on a prepared holdout: the users with a held-out positive,
    or the seeded sample of `training.evaluation_users` of them the promotion gate scores too
    (`sample_users` of their ids)."""
    users = np.flatnonzero(np.diff(prepared.test.indptr) > 0)
    test = prepared.split.test
    id_of = pd.Series(test["user_id"].to_numpy(np.int64), index=test["user_idx"].to_numpy(np.int64))
    ids = id_of[~id_of.index.duplicated()].loc[users].to_numpy()
    chosen = sample_users(ids, settings.training.evaluation_users, settings.training.seed)
    return users[np.isin(ids, chosen)]


def current_holdout(settings: Settings, dataset: str) -> Split:
    """The held-out split of the dataset's latest snapshot (a DataError when there is none)."""
    store = SnapshotStore(settings.snapshots_dir)
    return held_out_split(settings, store.load(store.require(dataset)).ratings)


def feature_settings(settings: Settings) -> dict:
    """Everything that shapes the held-out feature matrices, the featurising code included: the
    feature store's key, so a folder written by other code is never taken for this code's."""
    training = settings.training
    return {
        "code": feature_code_hash(),
        "split": training.split,
        "test_share": training.test_share,
        "min_user_ratings": training.min_user_ratings,
        "seed": training.seed,
        "positive_threshold": training.positive_threshold,
        "item_feature_groups": training.item_feature_groups,
        "user_feature_groups": training.user_feature_groups,
    }


def hybrid_params(settings: Settings, setup: TrialSetup) -> dict:
    """LightFM's keyword arguments for a tuned setting: its parameters, the settings' threads and seed."""
    return {**setup.lightfm, "num_threads": settings.training.num_threads, "random_state": settings.training.seed}


def cold_start_setup(settings: Settings, setup: TrialSetup | None = None) -> ColdStartSetup:
    """The cold-start reports' setup: the settings' hybrid, or the tuned `setup` when given."""
    training = settings.training
    return ColdStartSetup(
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups if setup is None else setup.item_groups,
        user_groups=training.user_feature_groups if setup is None else setup.user_groups,
        lightfm_params=training.lightfm_params() if setup is None else hybrid_params(settings, setup),
        seed=training.seed,
    )


def bundle_model(
    settings: Settings,
    model: LightFMRecommender,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    user_groups: dict[str, float] | None,
    **recipe,
) -> ServingBundle:
    """A bundle of `model` with its split, the snapshot's rating scale and the settings' positive
    threshold; `recipe`: `blend`, `item_item` and `about` of `models.bundle.serving_bundle`."""
    scale = snapshot.lineage["preprocessing"]["rating_scale"]
    return serving_bundle(
        model,
        prepared,
        tables.users,
        tables.items,
        user_groups,
        rating_scale=(scale["min"], scale["max"], scale["step"]),
        positive_threshold=settings.training.positive_threshold,
        **recipe,
    )
