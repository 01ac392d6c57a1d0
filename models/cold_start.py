"""Cold start: how well models rank movies nobody rated in training (`cold_item_report`), and
users known only by their demographics (`cold_user_report`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.prepare import Prepared, prepare
from features.splits import Split, cold_item_split, cold_user_split
from features.tables import CanonicalTables
from inference.model import DEMOGRAPHICS
from models.bundle import serving_bundle
from models.evaluation import batched_auc, evaluated_users
from models.families import build_model
from models.metrics import ranking_metrics


@dataclass(frozen=True)
class ColdStartSetup:
    """What the cold-start reports hold fixed besides their split: the positive threshold, the
    feature groups, LightFM's parameters and the seed of the held-out items or users."""

    threshold: float = 4.0
    item_groups: dict[str, float] | None = None
    user_groups: dict[str, float] | None = None
    lightfm_params: dict | None = None
    seed: int = 0

    def prepare(self, tables: CanonicalTables, chosen: Split) -> Prepared:
        return prepare(
            tables.users,
            tables.items,
            tables.tags,
            chosen=chosen,
            threshold=self.threshold,
            item_groups=self.item_groups,
            user_groups=self.user_groups,
        )


def cold_item_report(
    tables: CanonicalTables,
    names: tuple[str, ...] = ("mf", "content", "hybrid"),
    *,
    item_share: float = 0.1,
    setup: ColdStartSetup = ColdStartSetup(),
) -> pd.DataFrame:
    """AUC of each model at ranking a user's held-out positives among the cold items."""
    chosen = cold_item_split(tables.ratings, item_share=item_share, seed=setup.seed)
    prepared = setup.prepare(tables, chosen)
    cold, evaluated = chosen.cold_items, evaluated_users(prepared)
    rows = []
    for name in names:
        model = build_model(name, prepared, setup.lightfm_params)
        rows.append(
            {
                "model": name,
                "cold_item_auc": batched_auc(model, prepared, evaluated, items=cold),
                "cold_items": len(cold),
                "users": len(evaluated),
            }
        )
    return pd.DataFrame(rows).set_index("model")


# Demographic columns a segment may be made of; which one, if any, is chosen on validation.
SEGMENTINGS = (("gender",), ("age",), ("age", "gender"))


def cold_user_report(
    tables: CanonicalTables,
    *,
    k: int = 10,
    user_share: float = 0.1,
    setup: ColdStartSetup = ColdStartSetup(),
    segmentings: tuple[tuple[str, ...], ...] = SEGMENTINGS,
) -> pd.DataFrame:
    """Ranking metrics for users with no training data at all, known only by demographics, each
    answer as the served bundle gives it (`recommend_new_user_items` with no liked movie): the
    hybrid (its demographic feature row), popularity, and popularity within the user's
    demographic segment for each of `segmentings` (columns the users table has), e.g. row
    "segments: age+gender". A user whose segment is unknown gets the popularity list."""
    chosen = cold_user_split(tables.ratings, user_share=user_share, seed=setup.seed)
    prepared = setup.prepare(tables, chosen)
    cold = evaluated_users(prepared)
    users = tables.users
    present = [column for column in DEMOGRAPHICS if column in users and users[column].notna().any()]
    profiles = users.set_index("user_idx").loc[cold, present]
    hybrid = build_model("hybrid", prepared, setup.lightfm_params)
    policies = {"hybrid": ("model", ()), "popularity": ("popularity", ())}
    for columns in segmentings:
        if set(columns) <= set(present):
            policies[f"segments: {'+'.join(columns)}"] = ("segments", columns)
    nobody = np.array([], dtype=np.int64)
    rows = []
    for name, (policy, columns) in policies.items():
        bundle = serving_bundle(
            hybrid,
            prepared,
            tables.users,
            tables.items,
            setup.user_groups,
            new_user_policy=policy,
            segment_columns=columns,
        )
        found = [
            bundle.recommend_new_user_items(nobody, {c: v for c, v in profile.items() if pd.notna(v)}, k)[0]
            for profile in profiles.to_dict(orient="records")
        ]
        metrics = ranking_metrics(np.vstack(found), prepared.test, k=k, users=cold, n_items=prepared.n_items)
        rows.append({"model": name, "policy": policy, "segment_columns": "+".join(columns), **metrics})
    return pd.DataFrame(rows).set_index("model")


def choose_new_user_policy(report: pd.DataFrame, k: int = 10) -> tuple[str, tuple[str, ...]]:
    """The (policy, segment columns) of the report's row with the best NDCG@k (ties: the first)."""
    best = report.index[int(report[f"ndcg@{k}"].to_numpy().argmax())]
    columns = report.loc[best, "segment_columns"]
    return report.loc[best, "policy"], tuple(columns.split("+")) if columns else ()
