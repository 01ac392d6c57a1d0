"""Generated traffic for monitoring tests, sent through the real API (a TestClient over
`create_app`): users ask for their recommendations, then send feedback.

- `steady`: known users rate (movie, value) pairs drawn from the training ratings (movies they
  have not rated), and like one of the movies they were shown (a model that still fits).
- `stale`: known users like only movies the champion never shows (values drawn from the
  training ratings, highest to those movies).
- `new_users_one_genre`: users the champion does not know (the popularity fallback serves them)
  rate movies of one genre low.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count

import numpy as np
from registered import Registered

_EVENTS = count()


def _send(client, user: int, movie: int, value: float, impression: str | None) -> None:
    body = {
        "event_id": f"t{next(_EVENTS)}-{user}-{movie}",
        "user_id": int(user),
        "movie_id": int(movie),
        "type": "rating",
        "value": float(value),
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if impression is not None:
        body["impression_id"] = impression
    response = client.post("/feedback", json=body)
    assert response.status_code == 201, response.text


def _shown(client, user: int, k: int = 10) -> tuple[list[int], str, bool]:
    response = client.get(f"/users/{user}/recommendations", params={"k": k})
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["movie_id"] for item in body["items"]], body["impression_id"], body["fallback"]


def _values(registered: Registered, rng: np.random.Generator, n: int) -> np.ndarray:
    """n rating values drawn from the training ratings, highest first."""
    return np.sort(rng.choice(registered.tables.ratings["rating"].to_numpy(np.float64), n))[::-1]


def steady(client, registered: Registered, users: int, rng: np.random.Generator, *, per_user: int = 5) -> None:
    bundle, ratings = registered.bundle, registered.tables.ratings
    liked = ratings.loc[ratings["rating"] >= 4.0, "rating"].to_numpy(np.float64)
    for user in rng.choice(bundle.user_ids, users, replace=False):
        shown, impression, fallback = _shown(client, int(user))
        assert not fallback
        rated = set(ratings.loc[ratings["user_id"] == user, "movie_id"])
        drawn = ratings[~ratings["movie_id"].isin(rated | set(shown))].sample(per_user, random_state=rng)
        _send(client, int(user), int(rng.choice(shown)), rng.choice(liked), impression)
        for position, row in enumerate(drawn.itertuples()):
            # Some events name the impression they answer; the others are matched by user and time.
            _send(client, int(user), row.movie_id, row.rating, impression if position % 2 else None)


def stale(client, registered: Registered, users: int, rng: np.random.Generator, *, per_user: int = 6) -> None:
    bundle = registered.bundle
    top, _, _ = bundle.recommend_users(bundle.user_ids, 30)
    ever_shown = set(np.unique(top))  # what the champion puts in any list: users like none of it
    never = [movie for movie in bundle.item_ids if movie not in ever_shown]
    for user in rng.choice(bundle.user_ids, users, replace=False):
        _, impression, _ = _shown(client, int(user))
        rated = set(registered.tables.ratings.loc[registered.tables.ratings["user_id"] == user, "movie_id"])
        candidates = [movie for movie in never if movie not in rated]
        movies = rng.choice(candidates, per_user, replace=False)
        for movie, value in zip(movies, _values(registered, rng, per_user), strict=True):
            _send(client, int(user), int(movie), value, impression)


def new_users_one_genre(
    client, registered: Registered, users: int, genre: str, rng: np.random.Generator, *, per_user: int = 5
) -> None:
    bundle = registered.bundle
    items = bundle.items
    of_genre = items.loc[items["genres"].str.split("|").map(lambda genres: genre in genres), "movie_id"].to_numpy()
    first = int(bundle.user_ids.max()) + 1_000
    low = registered.tables.ratings["rating"].min()
    for user in range(first, first + users):
        _, impression, fallback = _shown(client, user)
        assert fallback
        for movie in rng.choice(of_genre, per_user, replace=False):
            _send(client, user, int(movie), low + rng.choice([0.0, 0.5]), impression)
