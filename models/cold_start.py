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


def cold_user_report(
    tables: CanonicalTables, *, k: int = 10, user_share: float = 0.1, setup: ColdStartSetup = ColdStartSetup()
) -> pd.DataFrame:
    """Ranking metrics for users with no training data at all, known only by demographics: the
    hybrid as it is served (its bundle's new-user path: the demographic feature row, or the
    popularity fallback when no demographic is in the model's vocabulary) against popularity."""
    chosen = cold_user_split(tables.ratings, user_share=user_share, seed=setup.seed)
    prepared = setup.prepare(tables, chosen)
    cold = evaluated_users(prepared)
    users = tables.users
    profiles = users.set_index("user_idx").loc[cold, [c for c in DEMOGRAPHICS if c in users]]
    nobody = np.array([], dtype=np.int64)
    # Popularity knows nothing of a profile: one list, the same for every cold user.
    popular = build_model("popularity", prepared, setup.lightfm_params).recommend_new_user(nobody, k)[0]
    hybrid = serving_bundle(
        build_model("hybrid", prepared, setup.lightfm_params), prepared, tables.users, tables.items, setup.user_groups
    )
    lists = {"popularity": [popular] * len(profiles), "hybrid": []}
    for _user, profile in profiles.iterrows():
        demographics = {key: value for key, value in profile.items() if pd.notna(value)}
        lists["hybrid"].append(hybrid.recommend_new_user_items(nobody, demographics, k)[0])
    rows = [
        {"model": name, **ranking_metrics(np.vstack(found), prepared.test, k=k, users=cold, n_items=prepared.n_items)}
        for name, found in lists.items()
    ]
    return pd.DataFrame(rows).set_index("model")
