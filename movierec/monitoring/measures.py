"""Every measure of a monitor run, from what a window observed and what the champion learned.
Pure: the served bundle, its reference statistics and the window's frames in; flat
`{"group.measure": value}` out (None where the window holds nothing to measure), plus the
distributions the report plots.

Groups: `drift` (data against the training data), `health` (serving), `online` (served lists
against the feedback that followed), `offline` (the champion on ratings newer than its data,
next to its holdout NDCG at registration), `served` (beyond accuracy of what was shown),
`champion` (its age).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features.users import genre_matrix
from inference.model import ServingBundle
from models.evaluation import holdout_metrics
from movierec.data.feedback import RATING_KINDS, feedback_ratings
from movierec.data.schema import RatingScale
from movierec.monitoring.drift import data_drift
from movierec.monitoring.health import serving_health
from movierec.monitoring.quality import online_quality, positive_events, served_lists

RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    source: str  # where `since` came from: "--since", "last monitor run", "champion registration"

    @property
    def days(self) -> float:
        return (self.until - self.since).total_seconds() / 86_400

    def as_dict(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "days": round(self.days, 6),
            "source": self.source,
        }


@dataclass
class Observed:
    """What the window holds."""

    events: pd.DataFrame  # feedback events received in the window (FeedbackStore.events columns)
    impressions: pd.DataFrame  # ImpressionStore.read: the champion's lists shown in the window
    stats: pd.DataFrame  # ImpressionStore.read_stats
    # Ratings of the newest snapshot newer than the champion's training data (RATING_COLUMNS)
    snapshot_ratings: pd.DataFrame
    quarantined: int  # feedback events of the window held in quarantine
    other_impressions: int = 0  # lists shown in the window by other model versions
    schema_failures: list[str] | None = None  # failed expectations of the window's ratings; None: not checked

    def __post_init__(self) -> None:
        # A later ingestion merged feedback into the snapshot: a (user, movie) the window's
        # feedback rates is that feedback, counted once, from the events.
        rated = self.events.loc[self.events["kind"].isin(RATING_KINDS), ["user_id", "movie_id"]]
        pairs = pd.MultiIndex.from_frame(rated.astype("int64"))
        keys = pd.MultiIndex.from_frame(self.snapshot_ratings[["user_id", "movie_id"]].astype("int64"))
        self.snapshot_ratings = self.snapshot_ratings[~keys.isin(pairs)].reset_index(drop=True)

    def ratings(self, scale: RatingScale) -> pd.DataFrame:
        """The window's ratings: feedback as ratings (thumbs as the scale's ends, the latest per
        user and movie) and the newer snapshot ratings (RATING_COLUMNS)."""
        feedback = feedback_ratings(self.events, scale)[RATING_COLUMNS]
        if self.snapshot_ratings.empty:
            return feedback
        return pd.concat([feedback, self.snapshot_ratings[RATING_COLUMNS]], ignore_index=True)


def measure(
    reference: dict,
    bundle: ServingBundle,
    observed: Observed,
    window: Window,
    *,
    k: int,
    attribution: pd.Timedelta,
    registered_at: datetime,
) -> tuple[dict[str, float | None], dict[str, dict]]:
    """The run's measures and the distributions behind the drift measures."""
    scale = reference_scale(reference)
    threshold = bundle.positive_threshold
    events = observed.events
    explicit = pd.concat(
        [events.loc[events["kind"] == "rating", "value"], observed.snapshot_ratings["rating"].astype("float64")],
        ignore_index=True,
    )
    snapshot_positives = observed.snapshot_ratings.loc[observed.snapshot_ratings["rating"] >= threshold, "movie_id"]
    liked = pd.concat([positive_events(events, threshold)["movie_id"], snapshot_positives], ignore_index=True)
    every_event = pd.concat(
        [events[["user_id", "movie_id"]], observed.snapshot_ratings[["user_id", "movie_id"]]], ignore_index=True
    )
    drift, distributions = data_drift(
        reference,
        every_event,
        explicit,
        liked,
        days=window.days,
        known_users=bundle.user_ids,
        known_movies=bundle.item_ids,
        genres=bundle.items.set_index("movie_id")["genres"],
        scale_values=scale.values(),
    )
    drift["quarantined_events"] = observed.quarantined
    drift["schema_failures"] = None if observed.schema_failures is None else len(observed.schema_failures)

    health = serving_health(observed.stats, observed.impressions)
    health["other_version_impressions"] = observed.other_impressions
    online = online_quality(observed.impressions, events, k=k, positive_threshold=threshold, attribution=attribution)
    online[f"registration_hit_rate@{k}"] = reference.get(f"holdout_hit_rate@{k}")

    fresh = observed.ratings(scale)
    offline: dict[str, float | None] = {"fresh_ratings": len(fresh), "users": 0, f"ndcg@{k}": None}
    offline[f"hit_rate@{k}"] = None
    if len(fresh):
        scored = holdout_metrics(bundle, fresh.iloc[:0], fresh, k=k, threshold=threshold)
        offline.update({"users": scored["n_users_evaluated"], f"ndcg@{k}": _finite(scored[f"ndcg@{k}"])})
        offline[f"hit_rate@{k}"] = _finite(scored[f"hit_rate@{k}"])
    registered = reference.get(f"holdout_ndcg@{k}")
    offline[f"registration_ndcg@{k}"] = registered
    offline["ndcg_ratio"] = (
        offline[f"ndcg@{k}"] / registered if offline[f"ndcg@{k}"] is not None and registered else None
    )

    served = served_lists(
        observed.impressions,
        k=k,
        catalogue=bundle.item_ids,
        popularity=bundle.popularity_counts,
        genres=genre_matrix(bundle.items.assign(item_idx=np.arange(bundle.n_items))),
    )
    champion = {"age_days": (window.until - registered_at).total_seconds() / 86_400}
    metrics = {
        f"{group}.{name}": value
        for group, values in (
            ("drift", drift),
            ("health", health),
            ("online", online),
            ("offline", offline),
            ("served", served),
            ("champion", champion),
        )
        for name, value in values.items()
    }
    return metrics, distributions


def reference_scale(reference: dict) -> RatingScale:
    """The rating scale of the champion's data: the values its reference counted ratings on."""
    values = sorted(float(value) for value in reference["rating_counts"])
    step = min(np.diff(values)) if len(values) > 1 else 1.0
    return RatingScale(values[0], values[-1], round(float(step), 4))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
