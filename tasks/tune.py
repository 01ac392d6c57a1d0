"""Prefect task of the tuning stage: the Optuna study of the LightFM hybrid
(`movierec.training.tuning`), its validation features through the cached `build features` task."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from features.splits import Split
from features.tables import CanonicalTables
from movierec.settings import Settings
from movierec.training.tuning import Tuned, tune
from tasks.features import build_features


@task(name="tune hybrid with Optuna", cache_policy=NO_CACHE)
def tune_hybrid(
    settings: Settings,
    dataset: str,
    snapshot_id: str,
    tables: CanonicalTables,
    held_out: Split,
    validation: Split,
    trials: int | None,
    timeout: float | None,
) -> Tuned:
    def features(item_groups: dict[str, float], user_groups: dict[str, float]):
        return build_features(settings, snapshot_id, tables, validation, "validation", item_groups, user_groups)

    return tune(settings, dataset, snapshot_id, tables, held_out, validation, trials, timeout, features)
