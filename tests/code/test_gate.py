"""The gate decides on the held-out users the champion knew: users created since it (new
accounts, e.g. a shilling attack's) cannot buy a promotion; they are measured apart."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.splits import Split
from inference.model import ServingBundle
from movierec.settings import get_settings
from movierec.tracking import promotion

MOVIES = np.array([10, 20, 30, 40, 50])


def _bundle(users: list[int], favourites: list[int]) -> ServingBundle:
    """A bundle whose user i scores movie favourites[i] highest (item vectors are one-hot)."""
    vectors = np.zeros((len(users), len(MOVIES)))
    for row, movie in enumerate(favourites):
        vectors[row, list(MOVIES).index(movie)] = 1.0
    counts = np.array([5, 4, 3, 2, 1])
    return ServingBundle(
        user_ids=np.array(users),
        item_ids=MOVIES,
        user_bias=np.zeros(len(users)),
        user_vectors=vectors,
        item_bias=np.zeros(len(MOVIES)),
        item_vectors=np.eye(len(MOVIES)) + 0.01 * np.arange(len(MOVIES))[::-1, None],
        seen=sp.csr_matrix((len(users), len(MOVIES))),
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame({"movie_id": MOVIES, "title": list("abcde"), "year": 2000, "genres": "Drama"}),
        rating_scale=(1.0, 5.0, 1.0),
    )


def _holdout() -> Split:
    """Users 1 and 2 (known to the champion) hold out a liked 30 and 40; the new users 3-6 (the
    attackers) all hold out a liked 50."""
    test = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "movie_id": [30, 40, 50, 50, 50, 50], "rating": [5.0] * 6})
    train = pd.DataFrame({"user_id": [1], "movie_id": [10], "rating": [3.0]})
    return Split(train, test, "user_temporal", {})


def _gate(monkeypatch, champion: ServingBundle, challenger: ServingBundle):
    bundles = {"models:/movierec/2": challenger, "models:/movierec@champion": champion}
    monkeypatch.setattr(promotion, "load_bundle", lambda uri, evaluation: bundles[uri])
    registry = SimpleNamespace(name="movierec", champion=lambda: SimpleNamespace(version="1"))
    return promotion.gate(get_settings(), registry, "2", _holdout())


def test_a_challenger_better_only_for_new_users_is_not_promoted(home, monkeypatch):
    champion = _bundle([1, 2], [30, 40])  # right for both known users
    # Trained on the attackers' feedback: right for them, worse for the real users.
    challenger = _bundle([1, 2, 3, 4, 5, 6], [20, 20, 50, 50, 50, 50])
    decision = _gate(monkeypatch, champion, challenger)
    # Over all six users the challenger would win.
    everyone = [promotion.holdout_score(get_settings(), bundle, _holdout()) for bundle in (challenger, champion)]
    assert everyone[0] > everyone[1] + 0.1
    assert not decision.promote
    assert decision.users == 2 and decision.new_users == 4
    assert decision.champion_score == pytest.approx(1.0) and decision.challenger_score < 0.7
    assert decision.new_users_challenger_score == pytest.approx(1.0)
    assert decision.new_users_champion_score < decision.new_users_challenger_score  # popularity for them
    tags = decision.tags()
    assert tags["gate.decision"] == "rejected" and tags["gate.users"] == "2" and tags["gate.new_users"] == "4"
    assert tags["gate.new_users.challenger_score"] == "1.000000"
    assert "on the 2 held-out users champion v1 knew" in decision.reason
    assert "on the 4 users new since then (not part of the decision)" in decision.reason


def test_a_challenger_better_for_the_known_users_is_promoted(home, monkeypatch):
    champion = _bundle([1, 2], [20, 20])
    challenger = _bundle([1, 2, 3, 4, 5, 6], [30, 40, 10, 10, 10, 10])  # worse for the new users
    decision = _gate(monkeypatch, champion, challenger)
    assert decision.promote and decision.challenger_score == pytest.approx(1.0)
