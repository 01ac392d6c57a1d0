"""The canonical tables every feature and model is computed from: the shared schema at the bottom
of the house. It imports nothing of the project; `movierec.data` builds and stores these tables
(their Arrow schemas and dtypes are in `movierec.data.schema`), `features` and `models` read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# The canonical genre vocabulary (preprocessing unifies every dataset's spellings to these), in
# the column order of every genre feature.
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip


@dataclass
class CanonicalTables:
    """A snapshot's tables: ratings (user_id, movie_id, rating, timestamp, user_idx, item_idx),
    users (user_id, user_idx, demographics), items (movie_id, item_idx, title, year, genres,
    TMDB fields) and tags (user_id, movie_id, tag, timestamp)."""

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    tags: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {"ratings": self.ratings, "users": self.users, "items": self.items, "tags": self.tags}
