"""Prefect tasks of the features stage: the held-out split, the validation split carved from its
training part, and the feature matrices of a split.

Featurisation is cached by Prefect across runs: the key is the data snapshot, the split's rule,
the feature groups and a hash of the featurising code, and the result is persisted under
MOVIEREC_HOME (Prefect's local storage), so an unchanged snapshot is not featurised again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from functools import cache

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from features.splits import Split, validation_split
from models import compare
from movierec.schema import CanonicalTables
from movierec.settings import REPO_ROOT, Settings

# Code whose change must invalidate cached features.
FEATURE_CODE = ("features/interactions.py", "features/items.py", "features/users.py", "features/splits.py", "models/compare.py")


@cache
def feature_code_hash() -> str:
    digest = hashlib.sha256()
    for name in FEATURE_CODE:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


@task(name="split held-out test data", cache_policy=NO_CACHE)
def split_holdout(settings: Settings, tables: CanonicalTables) -> Split:
    training = settings.training
    return compare.default_split(
        tables.ratings, training.split, test_share=training.test_share, min_ratings=training.min_user_ratings, seed=training.seed
    )


@task(name="carve validation split from train", cache_policy=NO_CACHE)
def split_validation(held_out: Split) -> Split:
    return validation_split(held_out)


def _features_key(context: TaskRunContext, parameters: dict) -> str:
    """Snapshot + split rule + which part + groups + threshold + code: everything features depend on."""
    description = {
        "snapshot": parameters["snapshot_id"],
        "part": parameters["part"],
        "split": [parameters["chosen"].kind, parameters["chosen"].params],
        "threshold": parameters["settings"].training.positive_threshold,
        "item_groups": sorted(parameters["item_groups"].items()),
        "user_groups": sorted(parameters["user_groups"].items()),
        "code": feature_code_hash(),
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
) -> compare.Prepared:
    """Interaction and feature matrices of `chosen` ("validation" or "holdout" in `part`)."""
    return compare.prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        threshold=settings.training.positive_threshold,
        item_groups=item_groups,
        user_groups=user_groups,
    )
