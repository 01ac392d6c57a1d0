"""Prefect tasks that run the Great Expectations suites in `expectations/`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from features.tables import CanonicalTables
from movierec.data import validation
from movierec.data.schema import RatingScale, RawDataset
from movierec.settings import Settings


@task(name="validate raw data", cache_policy=NO_CACHE)
def validate_raw(raw: RawDataset, settings: Settings) -> validation.ValidationReport:
    return validation.validate_raw(raw, settings)


@task(name="validate canonical tables", cache_policy=NO_CACHE)
def validate_canonical(
    tables: CanonicalTables, rating_scale: RatingScale, settings: Settings, dataset: str
) -> validation.ValidationReport:
    return validation.validate_canonical(tables, rating_scale, settings, dataset=dataset)
