"""The model the API serves: the registry's `champion`, loaded completely before one reference is
swapped, with per-model display data precomputed.

`ChampionHolder.check_now` looks the alias up and, when it points at another version, loads that
version with the one loader (`movierec.tracking.served_model.load_bundle`) and builds a
`LoadedModel`; a watcher thread calls it every `serving.poll_seconds`. A request reads
`holder.current` once at its start, so requests in flight during a swap finish on the model they
started with. All scoring is the bundle's own API (`inference.model.ServingBundle`): the API
adds display cards, reasons and search, nothing that ranks.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from movierec.data.feedback import FeedbackRules
from movierec.data.schema import RatingScale
from movierec.serving.metrics import Metrics
from movierec.serving.schemas import MAX_K, NewUserRequest
from movierec.settings import Settings
from movierec.tracking.registry import CHAMPION, Registry
from movierec.tracking.served_model import load_bundle

log = logging.getLogger("movierec.serving")

POPULAR_REASON = "popular with everyone"
PROFILE_REASON = "matches your profile"


class NoModel(Exception):
    """No champion loaded (yet): 503."""


def _genres(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [genre for genre in value.split("|") if genre]
    return [str(genre) for genre in value]


class LoadedModel:
    """One registered version with everything requests need precomputed. Immutable once built."""

    def __init__(self, name: str, version: str, bundle) -> None:
        if bundle.rating_scale is None:
            raise ValueError(f"version {version} of '{name}' has no rating scale")
        self.name, self.version, self.bundle = name, str(version), bundle
        self.loaded_at = time.time()
        self.registered_at: float | None = None  # epoch seconds of the version's registration
        self.positive_threshold = float(bundle.positive_threshold)
        low, high, step = bundle.rating_scale
        self.scale = (low, high)
        self.rating_scale = RatingScale(low, high, step)
        self._feedback_rules: FeedbackRules | None = None
        items = bundle.items
        self.movie_ids: list[int] = bundle.item_ids.tolist()
        self.movie_index = {movie: index for index, movie in enumerate(self.movie_ids)}
        user_ids = bundle.user_ids.tolist()
        self.user_index = {user: index for index, user in enumerate(user_ids)}
        titles = items["title"].astype(str).tolist()
        years = [None if pd.isna(year) else int(year) for year in items["year"].tolist()]
        genres = [_genres(value) for value in items["genres"].tolist()]
        self.cards = [
            {"movie_id": movie, "title": title, "year": year, "genres": genre}
            for movie, title, year, genre in zip(self.movie_ids, titles, years, genres, strict=True)
        ]
        self.folded_titles = [title.casefold() for title in titles]
        self.popularity_counts: list[int] = bundle.popularity_counts.tolist()
        self.popularity_rank = np.empty(bundle.n_items, dtype=np.int64)
        self.popularity_rank[bundle.popularity] = np.arange(bundle.n_items)
        self.popularity_rank_list: list[int] = self.popularity_rank.tolist()
        rated = np.diff(bundle.seen.indptr)
        self.user_ratings = rated.tolist()
        # Known users for the page's picker: most ratings first.
        order = np.lexsort((bundle.user_ids, -rated))
        self.users_by_activity = [(user_ids[i], self.user_ratings[i]) for i in order.tolist()]
        bundle.unit_item_vectors  # noqa: B018 - computed now, not in the first request that needs it
        self._fallback: dict[int, list[dict]] = {}
        self.fallback_items(MAX_K)

    # ------------------------------------------------------------------ building responses

    def _items(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        because: np.ndarray | None,
        default_reason: str,
        user: int | None = None,
    ) -> list[dict]:
        """Response items; `user` (user_idx, -1 for a user the model does not know) asks for each
        movie's predicted rating (for an unknown user: the mean plus the movie's bias)."""
        out = []
        cards = self.cards
        predicted = None
        if user is not None and self.bundle.has_rating_predictor:
            valid = np.asarray(items) >= 0
            predicted = np.full(len(items), np.nan)
            predicted[valid] = self.bundle.rating_predictions(np.full(int(valid.sum()), user), np.asarray(items)[valid])
            predicted = predicted.tolist()
        for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), start=1):
            if item < 0:
                break
            card = dict(cards[item])
            card["score"] = score
            card["rank"] = rank
            card["predicted_rating"] = None if predicted is None else round(predicted[rank - 1], 2)
            liked = -1 if because is None else int(because[rank - 1])
            if liked >= 0:
                card["reason"] = f"because you liked {cards[liked]['title']}"
                card["because_movie_id"] = cards[liked]["movie_id"]
            else:
                card["reason"] = default_reason
                card["because_movie_id"] = None
            out.append(card)
        return out

    def fallback_items(self, k: int) -> list[dict]:
        """The popularity list (the bundle's fallback for unknown users), cached per k."""
        cached = self._fallback.get(k)
        if cached is None:
            items, scores = self.bundle.popular(1, k)
            cached = self._fallback[k] = self._items(items[0], scores[0], None, POPULAR_REASON, user=-1)
        return cached

    def known_users(self, indices: Sequence[int], ks: Sequence[int]) -> list[list[dict]]:
        """The model's top-`ks[i]` for user_idx `indices[i]`, every movie they rated excluded,
        each with the rated movie it is most like: one product and one selection for all of
        them (the API's micro-batches, `movierec.serving.batching`). A shorter list is the
        longer one's prefix, so every user's list is cut from the batch's top max(ks)."""
        bundle = self.bundle
        users = np.asarray(indices, dtype=np.int64)
        items, values = bundle.recommend(users, max(ks), bundle.seen)
        out = []
        for row, (user, k) in enumerate(zip(users.tolist(), ks, strict=True)):
            chosen = items[row, :k]
            out.append(self._items(chosen, values[row, :k], bundle.because_user(user, chosen), PROFILE_REASON, user))
        return out

    def new_user(self, request: NewUserRequest) -> tuple[list[dict], bool, list[int]]:
        """(items, fallback, unknown movie ids) for a new user (`ServingBundle.recommend_new_user`):
        ratings at or above the model's positive threshold count as liked; lower ones are only
        kept out of the list."""
        liked = list(dict.fromkeys(request.liked_movie_ids))
        rated_low = []
        for rating in request.ratings:
            (liked if rating.rating >= self.positive_threshold else rated_low).append(rating.movie_id)
        unknown = sorted({m for m in [*liked, *rated_low] if m not in self.movie_index})
        liked_items = np.array(
            [self.movie_index[m] for m in dict.fromkeys(liked) if m in self.movie_index], dtype=np.int64
        )
        low_items = {self.movie_index[m] for m in rated_low if m in self.movie_index} - set(liked_items.tolist())
        demographics = {"age": request.age, "gender": request.gender, "occupation": request.occupation}
        k = request.k
        items, scores, fallback = self.bundle.recommend_new_user_items(liked_items, demographics, k + len(low_items))
        keep = [i for i, item in enumerate(items.tolist()) if item not in low_items][:k]
        items, scores = items[keep], scores[keep]
        if fallback:
            return self._items(items, scores, None, POPULAR_REASON, user=-1), True, unknown
        because = self.bundle.because(liked_items, items) if len(liked_items) else None
        return self._items(items, scores, because, PROFILE_REASON, user=-1), False, unknown

    def feedback_rules(self, settings: Settings) -> FeedbackRules:
        """What feedback must be to count, against this version's catalogue and rating scale:
        the rules ingestion applies to the same events."""
        if self._feedback_rules is None:
            self._feedback_rules = FeedbackRules.of(settings, self.rating_scale, self.movie_ids)
        return self._feedback_rules

    def similar(self, movie_index: int, k: int) -> list[dict]:
        """The bundle's `similar_items`: cosine of item vectors."""
        items, values = self.bundle.similar_items(movie_index, k)
        return self._items(items, values, None, f"similar to {self.cards[movie_index]['title']}")

    def search(self, query: str, limit: int) -> tuple[int, list[dict]]:
        """(number of matches, best `limit`): case-insensitive substring of the title; exact
        matches first, then prefixes, then word starts, then the rest, each by popularity.
        An empty query lists the most popular movies."""
        folded = query.strip().casefold()
        rank = self.popularity_rank_list
        if not folded:
            matches = self.bundle.popularity[:limit].tolist()
            total = self.bundle.n_items
        else:
            word = " " + folded
            found = [i for i, title in enumerate(self.folded_titles) if folded in title]
            total = len(found)

            def key(i: int) -> tuple[int, int]:
                title = self.folded_titles[i]
                kind = 0 if title == folded else 1 if title.startswith(folded) else 2 if word in title else 3
                return kind, rank[i]

            matches = sorted(found, key=key)[:limit]
        out = []
        for i in matches:
            card = dict(self.cards[i])
            card["popularity"] = self.popularity_counts[i]
            out.append(card)
        return total, out


def _settle_long_lived_objects() -> None:
    """Keep a loaded model's objects out of the cyclic garbage collector's full passes.

    A model at 25M ratings is some 400,000 long-lived Python objects (cards, id maps, the page's
    user list); every full collection walked all of them: 350-460 ms pauses, six in 35 s under
    load, each one a stall for every request in flight. `gc.freeze` moves what exists now to a
    generation that is never scanned (full passes then took 2-4 ms). Frozen objects are still
    freed when their last reference goes; to let a replaced model's reference cycles be
    collected too, the previous freeze is undone and everything collected first (one pause per
    swap, not one every few seconds)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ChampionHolder:
    """The served model: `current` is swapped as one reference (see the module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.name = settings.registered_model_name
        self.metrics = metrics or Metrics()
        # An explicit client and URIs: the watcher thread does not depend on MLflow's process globals.
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
        self.current: LoadedModel | None = None
        self.last_error: str | None = f"no model loaded yet from '{self.name}@{CHAMPION}'"
        self.last_check: float | None = None
        # Why the last registry lookup failed (None: it answered). The loaded model is served meanwhile.
        self.registry_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def require(self) -> LoadedModel:
        loaded = self.current
        if loaded is None:
            raise NoModel(self.not_ready_message())
        return loaded

    def not_ready_message(self) -> str:
        return (
            f"no model to serve: {self.last_error}; checking alias '{CHAMPION}' of '{self.name}' every "
            f"{self.settings.serving.poll_seconds:g} s (run `movierec pipeline` or `movierec promote`)"
        )

    def check_now(self) -> bool:
        """Look the alias up once; if it points at another version, load that version fully and
        swap it in. True when the served model changed. Errors are logged and kept in
        `last_error`; the model being served stays."""
        with self._lock:
            self.last_check = time.time()
            try:
                version = Registry(self.name, self.client).champion()
            except Exception as error:  # registry unreachable: keep serving, retry next poll
                self.registry_error = f"{type(error).__name__}: {error}"[:500]
                self.last_error = f"registry lookup failed: {self.registry_error}"
                self.metrics.registry_reachable.set(0)
                log.warning("champion lookup failed: %s", self.last_error)
                return False
            if self.registry_error is not None:
                log.info("the registry answers again")
            self.registry_error = None
            self.metrics.registry_reachable.set(1)
            if version is None:
                self.last_error = f"no version of '{self.name}' has alias '{CHAMPION}'"
                return False
            number = str(version.version)
            current = self.current
            if current is not None and current.version == number:
                return False
            try:
                loaded = self._load(number)
                loaded.registered_at = version.creation_timestamp / 1000
            except Exception as error:
                self.metrics.load_failures.inc()
                self.last_error = f"loading version {number} failed: {type(error).__name__}: {error}"
                log.exception("could not load %s version %s", self.name, number)
                return False
            self.current = loaded  # the swap: one reference
            self.last_error = None
            if current is not None:
                self.metrics.swaps.inc()
            self.metrics.served(self.name, number, current.version if current else None)
            log.info("serving %s version %s%s", self.name, number, f" (was {current.version})" if current else "")
            del current, loaded  # the replaced model's last reference here, before the collection
            _settle_long_lived_objects()
            return True

    def _load(self, version: str) -> LoadedModel:
        bundle = load_bundle(
            f"models:/{self.name}/{version}",
            tracking_uri=self.settings.tracking_uri,
            registry_uri=self.settings.registry_uri,
        )
        return LoadedModel(self.name, version, bundle)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.serving.poll_seconds):
            try:
                self.check_now()
            except Exception:  # never let the watcher die
                log.exception("champion watcher")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
