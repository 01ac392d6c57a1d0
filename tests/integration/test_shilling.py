"""A shilling attack through feedback: about a thousand new accounts, posted within minutes from
many addresses, all rate one obscure movie 5 stars (plus a few popular fillers, so each account
has enough ratings to be held out like a real user). The next retrain must not push that movie
to real users: ingestion quarantines the burst (kept, listed, releasable) and the run says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from movierec.data.feedback import FeedbackEvent, FeedbackStore
from movierec.data.snapshot import SnapshotStore
from movierec.settings import get_settings
from movierec.tracking.served_model import load_bundle

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]

DATA = {"dataset": "synthetic", "synthetic_ratings": 8_000, "seed": 2}
ATTACKERS = 1_000


def test_a_burst_of_new_accounts_liking_one_movie_is_quarantined_and_not_recommended(home, quick_pipeline):
    from flows.retrain import retrain

    first = retrain(**DATA, trials=1)
    settings = get_settings()
    store = SnapshotStore(settings.snapshots_dir)
    tables = store.load(store.get("synthetic", first["snapshot"]["snapshot_id"]))
    counts = tables.ratings["movie_id"].value_counts()
    target = int(counts.index[-1])  # the least rated movie
    fillers = [int(movie) for movie in counts.index[:20]]
    first_new = int(tables.users["user_id"].max()) + 1
    now = datetime.now(UTC).replace(microsecond=0)
    rng = np.random.default_rng(0)
    feedback = FeedbackStore(settings.feedback_db)
    for n in range(ATTACKERS):
        user = first_new + n
        picks = rng.choice(fillers, size=4, replace=False)
        events = [
            FeedbackEvent(f"shill-{user}-{movie}", user, int(movie), "rating", 5.0, now - timedelta(minutes=5 - i))
            for i, movie in enumerate(picks)
        ]
        events.append(FeedbackEvent(f"shill-{user}-target", user, target, "rating", 5.0, now))
        feedback.append_many(events, client=f"198.51.100.{n % 250}")  # many addresses: no client burst

    second = retrain(**DATA, trials=1)

    held = second["snapshot"]["feedback"]["quarantined"]
    assert held["events"] >= ATTACKERS and held["by_rule"].get("movie_burst", 0) >= ATTACKERS
    assert any(f"rated movie {target} within 60 minutes" in reason for reason in held["reasons"])
    quarantined = feedback.quarantined()
    assert set(quarantined.loc[quarantined["movie_id"] == target, "user_id"]) == set(
        range(first_new, first_new + ATTACKERS)
    )
    assert feedback.count() == ATTACKERS * 5  # kept, not deleted

    champion = load_bundle(f"models:/{settings.registered_model_name}@champion")
    real_users = tables.users["user_id"].to_numpy()
    movie_ids, _, _ = champion.recommend_users(real_users, 10)
    share = float((movie_ids == target).any(axis=1).mean())
    assert share <= 0.05, f"the attacked movie is in the top-10 of {share:.1%} of real users"
