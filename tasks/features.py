"""Prefect tasks of the features stage: the held-out split, the validation split carved from its
training part, the feature matrices of a split, and the final model's features in the store.

Featurisation is cached by Prefect across runs: the key is the data snapshot, the split's rule,
the feature groups and a hash of the featurising code, and the result is persisted under
MOVIEREC_HOME (Prefect's local storage), so an unchanged snapshot is not featurised again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from features.prepare import Prepared, prepare
from features.splits import Split
from features.tables import CanonicalTables
from movierec.data.feature_store import write_features
from movierec.data.snapshot import Snapshot
from movierec.settings import Settings
from movierec.tracking import runs
from movierec.training import protocol


@task(name="split held-out test data", cache_policy=NO_CACHE)
def split_holdout(settings: Settings, tables: CanonicalTables) -> Split:
    return protocol.held_out_split(settings, tables.ratings)


@task(name="carve validation split from train", cache_policy=NO_CACHE)
def split_validation(settings: Settings, held_out: Split) -> Split:
    return protocol.validation_split(settings, held_out)


def _features_key(context: TaskRunContext, parameters: dict) -> str:
    """Snapshot + split rule + which part + groups + threshold + code: everything features depend on."""
    description = {
        "snapshot": parameters["snapshot_id"],
        "part": parameters["part"],
        "split": [parameters["chosen"].kind, parameters["chosen"].params, parameters["chosen"].sample],
        "threshold": parameters["settings"].training.positive_threshold,
        "item_groups": sorted(parameters["item_groups"].items()),
        "user_groups": sorted(parameters["user_groups"].items()),
        "code": protocol.feature_code_hash(),
    }
    return "features-" + hashlib.sha256(json.dumps(description, default=str).encode()).hexdigest()[:32]


@task(
    name="build features",
    task_run_name="build features ({part})",
    cache_key_fn=_features_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
)
def build_features(
    settings: Settings,
    snapshot_id: str,
    tables: CanonicalTables,
    chosen: Split,
    part: str,
    item_groups: dict[str, float],
    user_groups: dict[str, float],
) -> Prepared:
    """Interaction and feature matrices of `chosen` ("validation" or "holdout" in `part`)."""
    return prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        threshold=settings.training.positive_threshold,
        item_groups=item_groups,
        user_groups=user_groups,
    )


@task(name="store features", cache_policy=NO_CACHE)
def store_features(
    settings: Settings, snapshot: Snapshot, prepared: Prepared, item_groups: dict, user_groups: dict
) -> str:
    """The final model's feature matrices beside the snapshot, their vocabularies on the run."""
    chosen = {
        **protocol.feature_settings(settings),
        "item_feature_groups": item_groups,
        "user_feature_groups": user_groups,
    }
    folder = write_features(snapshot.path, chosen, {"item": prepared.item_features, "user": prepared.user_features})
    runs.log_feature_vocabularies(folder)
    return str(folder)
