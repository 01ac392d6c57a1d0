"""The recommendation API and web page: FastAPI over the registry's `champion` model.

`create_app(settings)` builds the app. A `ChampionHolder` loads the model behind alias
`champion` of `settings.registered_model_name` at start and a watcher thread polls the alias
every `settings.serving.poll_seconds`. A new version is loaded completely (and its per-item
display data precomputed) before one reference is swapped; a request reads that reference once
at its start, so requests in flight during a swap finish on the model they started with. Every
response names the model version (JSON field `model_version` and header `X-Model-Version`).
Without a champion, /readyz and the recommendation endpoints answer 503 and polling goes on.

Endpoints:
  GET  /users/{user_id}/recommendations?k=10  known user: model top-k, training items excluded;
                                              unknown user: popularity, "fallback": true
  POST /recommendations                        new user: liked movies, ratings, demographics
  GET  /movies/{movie_id}/similar?k=10         nearest movies by cosine of item vectors
  GET  /movies?query=&limit=20                 title search (exact, prefix, word, substring)
  GET  /users?query=&limit=20                  known user ids (for the page's user picker)
  POST /feedback                               durable event store (FeedbackStore)
  GET  /healthz, /readyz, /metrics             liveness, readiness, Prometheus text
  GET  /                                       the web page (movierec/static)

Performance: the hot endpoints are `async def` (no thread hop; their work is ~0.1 ms of numpy),
return pre-serialised JSON (orjson) without response-model validation, and use per-model
precomputed id maps and item cards. /feedback and POST /recommendations are plain `def`
(threadpool): SQLite's synced commit and the feature-row construction must not block the loop.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.topk import top_k
from movierec.feedback import FeedbackEvent, FeedbackStore
from movierec.registry import CHAMPION
from movierec.settings import Settings, get_settings

try:
    import orjson

    def _dumps(payload: Any) -> bytes:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is a dependency of the pinned stack
    import json

    def _dumps(payload: Any) -> bytes:
        return json.dumps(payload, separators=(",", ":"), default=float).encode()


log = logging.getLogger("movierec.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_ID = 2**31 - 1  # snapshot ids are int32
MAX_K = 100
DEFAULT_SCALE = (0.5, 5.0)
POPULAR_REASON = "popular with everyone"
PROFILE_REASON = "matches your profile"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

UserId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Original (MovieLens) user id.")]
MovieId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Original (MovieLens) movie id.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of recommendations (1-100).")]


# ---------------------------------------------------------------------- request bodies


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    movie_id: int = Field(ge=1, le=MAX_ID)
    rating: float = Field(allow_inf_nan=False)


class NewUserRequest(BaseModel):
    """A user the model never saw: liked movies, ratings (>= the positive threshold count as
    liked; lower ones are not recommended back) and/or demographics."""

    model_config = ConfigDict(extra="forbid")
    liked_movie_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=1000)
    ratings: list[RatingIn] = Field(default_factory=list, max_length=1000)
    age: int | None = Field(None, ge=1, le=120)
    gender: str | None = Field(None, min_length=1, max_length=32)
    occupation: str | None = Field(None, min_length=1, max_length=64)
    k: int = Field(10, ge=1, le=MAX_K)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    user_id: int = Field(ge=1, le=MAX_ID)
    movie_id: int = Field(ge=1, le=MAX_ID)
    type: Literal["rating", "click", "thumb"]
    value: float = Field(allow_inf_nan=False)
    timestamp: AwareDatetime


# ---------------------------------------------------------------------- the loaded model


class NoModel(Exception):
    """No champion loaded (yet): 503."""


def _genres(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [genre for genre in value.split("|") if genre]
    return [str(genre) for genre in value]


def rating_scale(bundle) -> tuple[float, float]:
    """(min, max) ratings the feedback endpoint accepts for this model's data.

    The bundle's own `rating_scale` if it has one; otherwise derived from its training ratings
    (`seen`): the observed range widened to the MovieLens scale it belongs to (half stars seen:
    0.5..5, whole stars: 1..5); 0.5..5 when the bundle holds no ratings."""
    scale = getattr(bundle, "rating_scale", None)
    if scale is not None:
        return float(scale.min), float(scale.max)
    data = np.asarray(bundle.seen.data)
    if data.size == 0:
        return DEFAULT_SCALE
    half = bool(np.any(data != np.round(data)))
    return min(float(data.min()), 0.5 if half else 1.0), max(float(data.max()), 5.0)


def top_one(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`models.topk.top_k` for one row, cheaper: the k best of `scores` (1-D), best first, equal
    scores by lower index, -inf never returned (so possibly fewer than k)."""
    n = scores.shape[0]
    kk = min(k, n)
    if kk < 1:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    threshold = np.partition(scores, n - kk)[n - kk]
    candidates = np.flatnonzero(scores >= threshold)  # every tie at the boundary included
    order = np.lexsort((candidates, -scores[candidates]))[:kk]
    chosen = candidates[order]
    values = scores[chosen]
    eligible = values > -np.inf
    return chosen[eligible], values[eligible]


class LoadedModel:
    """One registered version with everything requests need precomputed. Immutable once built."""

    def __init__(self, name: str, version: str, bundle, *, positive_threshold: float = 4.0) -> None:
        self.name, self.version, self.bundle = name, str(version), bundle
        self.loaded_at = time.time()
        self.positive_threshold = positive_threshold
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
            for movie, title, year, genre in zip(self.movie_ids, titles, years, genres)
        ]
        self.folded_titles = [title.casefold() for title in titles]
        self.popularity_counts: list[int] = bundle.popularity_counts.tolist()
        self.popularity_rank = np.empty(bundle.n_items, dtype=np.int64)
        self.popularity_rank[bundle.popularity] = np.arange(bundle.n_items)
        self.popularity_rank_list: list[int] = self.popularity_rank.tolist()
        self.scale = rating_scale(bundle)
        seen = bundle.seen
        self.seen_indptr, self.seen_indices, self.seen_data = seen.indptr, seen.indices, seen.data
        self.user_ratings = np.diff(seen.indptr).tolist()
        # Known users for the page's picker: most training ratings first.
        order = np.lexsort((bundle.user_ids, -np.diff(seen.indptr)))
        self.users_by_activity = [(user_ids[i], self.user_ratings[i]) for i in order.tolist()]
        self._unknown_user = int(bundle.user_ids.max(initial=0)) + 1
        self._fallback: dict[int, list[dict]] = {}
        self.unit_items = bundle.unit_item_vectors
        self.fallback_items(MAX_K)

    # ------------------------------------------------------------------ building responses

    def _items(self, items: np.ndarray, scores: np.ndarray, because: np.ndarray | None, default_reason: str) -> list[dict]:
        out = []
        cards = self.cards
        for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist()), start=1):
            if item < 0:
                break
            card = dict(cards[item])
            card["score"] = score
            card["rank"] = rank
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
            movie_ids, scores, _ = self.bundle.recommend_users([self._unknown_user], k)
            items = np.array([self.movie_index.get(m, -1) for m in movie_ids[0].tolist()], dtype=np.int64)
            cached = self._fallback[k] = self._items(items, scores[0], None, POPULAR_REASON)
        return cached

    def known_user(self, index: int, k: int) -> list[dict]:
        """The model's top-k for user_idx `index`, every movie they rated excluded: the scores of
        `ServingBundle.recommend_users` in one product, selected as `models.topk.top_k` would (`top_one`)."""
        bundle = self.bundle
        scores = (bundle.user_vectors[index : index + 1] @ bundle.item_vectors.T + bundle.user_bias[index]
                  + bundle.item_bias[None, :]).astype(np.float32, copy=False)
        start, end = self.seen_indptr[index], self.seen_indptr[index + 1]
        seen = self.seen_indices[start:end]
        row = scores[0]
        row[seen] = -np.inf
        items, values = top_one(row, k)
        because = None
        if end > start:
            ratings = self.seen_data[start:end]
            because = bundle.because(seen[ratings == ratings.max()], items)
        return self._items(items, values, because, PROFILE_REASON)

    def new_user(self, request: NewUserRequest) -> tuple[list[dict], bool, list[int]]:
        """(items, fallback, unknown movie ids) for a new user (`ServingBundle.recommend_new_user`)."""
        liked = list(dict.fromkeys(request.liked_movie_ids))
        rated_low = []
        for rating in request.ratings:
            (liked if rating.rating >= self.positive_threshold else rated_low).append(rating.movie_id)
        unknown = sorted({m for m in [*liked, *rated_low] if m not in self.movie_index})
        liked_known = [m for m in dict.fromkeys(liked) if m in self.movie_index]
        rated_low = [m for m in dict.fromkeys(rated_low) if m in self.movie_index and m not in liked_known]
        demographics = {"age": request.age, "gender": request.gender, "occupation": request.occupation}
        k = request.k
        movie_ids, scores, fallback = self.bundle.recommend_new_user(liked_known, demographics, k + len(rated_low))
        skip = set(rated_low)
        keep = [i for i, m in enumerate(movie_ids.tolist()) if m not in skip][:k]
        items = np.array([self.movie_index.get(m, -1) for m in movie_ids[keep].tolist()], dtype=np.int64)
        if fallback:
            return self._items(items, scores[keep], None, POPULAR_REASON), True, unknown
        liked_items = np.array([self.movie_index[m] for m in liked_known], dtype=np.int64)
        because = self.bundle.because(liked_items, items) if len(liked_items) else None
        return self._items(items, scores[keep], because, PROFILE_REASON), False, unknown

    def similar(self, movie_index: int, k: int) -> list[dict]:
        """`ServingBundle.similar_movies` without the id lookups: cosine of item vectors."""
        similarity = (self.unit_items[movie_index : movie_index + 1] @ self.unit_items.T)
        similarity[0, movie_index] = -np.inf
        items, values = top_k(similarity, k)
        return self._items(items[0], values[0], None, f"similar to {self.cards[movie_index]['title']}")

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


# ---------------------------------------------------------------------- metrics


class Metrics:
    """The app's own Prometheus registry (several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("movierec_http_requests", "HTTP requests by endpoint, method and status.",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("movierec_http_request_duration_seconds", "Request latency by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter("movierec_recommendations", "Recommendation responses by source.",
                                       ["endpoint", "source"], registry=r)
        self.fallbacks = Counter("movierec_fallbacks", "Recommendation responses served by the popularity fallback.",
                                 ["endpoint"], registry=r)
        self.feedback = Counter("movierec_feedback_events", "Feedback events by type and result (stored, duplicate).",
                                ["type", "result"], registry=r)
        self.swaps = Counter("movierec_model_swaps", "Hot swaps to a new champion version.", registry=r)
        self.load_failures = Counter("movierec_model_load_failures", "Failed attempts to load a champion version.", registry=r)
        self.model_version = Gauge("movierec_model_version", "Registered version being served (0: none).", registry=r)
        self.model_info = Gauge("movierec_model_info", "1 for the model being served.", ["name", "version"], registry=r)
        self.model_loaded_at = Gauge("movierec_model_loaded_timestamp_seconds", "When the served version was loaded.", registry=r)
        self._children: dict[tuple, tuple] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(endpoint, method, str(status)), self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def served(self, name: str, version: str, previous: str | None) -> None:
        if previous is not None:
            self.model_info.remove(name, previous)
        self.model_info.labels(name, version).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)
        self.model_loaded_at.set(time.time())


class MetricsMiddleware:
    """Pure ASGI: counts and times every request by its route template; adds X-Model-Version
    where the endpoint did not set it."""

    def __init__(self, app, metrics: Metrics, holder: ChampionHolder) -> None:
        self.app, self.metrics, self.holder = app, metrics, holder

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == b"x-model-version" for name, _ in headers):
                    loaded = self.holder.current
                    headers.append((b"x-model-version", (loaded.version if loaded else "none").encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, scope.get("method", ""), status, time.perf_counter() - started)


# ---------------------------------------------------------------------- the champion


class ChampionHolder:
    """The served model: `current` is swapped as one reference (see the module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.name = settings.registered_model_name
        self.metrics = metrics or Metrics()
        # An explicit client: the watcher thread does not depend on MLflow's process globals.
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
        self.current: LoadedModel | None = None
        self.last_error: str | None = f"no model loaded yet from '{self.name}@{CHAMPION}'"
        self.last_check: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def require(self) -> LoadedModel:
        loaded = self.current
        if loaded is None:
            raise NoModel(self.not_ready_message())
        return loaded

    def not_ready_message(self) -> str:
        return (f"no model to serve: {self.last_error}; checking alias '{CHAMPION}' of '{self.name}' every "
                f"{self.settings.serving.poll_seconds:g} s (run `movierec pipeline` or `movierec promote`)")

    def check_now(self) -> bool:
        """Look the alias up once; if it points at another version, load that version fully and
        swap it in. True when the served model changed. Errors are logged and kept in
        `last_error`; the model being served stays."""
        from movierec.registry import Registry

        with self._lock:
            self.last_check = time.time()
            try:
                version = Registry(self.name, self.client).champion()
            except Exception as error:  # registry unreachable: keep serving, retry next poll
                self.last_error = f"registry lookup failed: {type(error).__name__}: {error}"
                log.warning("champion lookup failed: %s", self.last_error)
                return False
            if version is None:
                self.last_error = f"no version of '{self.name}' has alias '{CHAMPION}'"
                return False
            number = str(version.version)
            current = self.current
            if current is not None and current.version == number:
                return False
            try:
                loaded = self._load(number)
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
            return True

    def _load(self, version: str) -> LoadedModel:
        import mlflow

        uri = self.client.get_model_version_download_uri(self.name, version)
        path_before = list(sys.path)
        try:
            model = mlflow.pyfunc.load_model(uri)
        finally:
            sys.path[:] = path_before  # loading prepends the model's code copy; keep ours
        bundle = model.unwrap_python_model().bundle
        return LoadedModel(self.name, version, bundle, positive_threshold=self.settings.training.positive_threshold)

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


# ---------------------------------------------------------------------- the app


def _json(payload: Any, status: int = 200, version: str | None = None) -> Response:
    headers = {"x-model-version": version} if version is not None else None
    return Response(_dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _where(location: tuple) -> str:
    parts = [str(part) for part in location if part not in ("body",)]
    return ".".join(parts) if parts else "body"


def _describe(errors: list[dict]) -> tuple[str, list[dict]]:
    problems, details = [], []
    for error in errors:
        location = tuple(error.get("loc", ()))
        message = error.get("msg", "invalid")
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error")
            message = f"malformed JSON body{': ' + str(reason) if reason else ''}"
            where = "body"
        else:
            where = _where(location)
        problems.append(f"{where}: {message}")
        details.append({"loc": [str(part) for part in location], "msg": message, "type": error.get("type")})
    return "; ".join(problems) or "invalid request", details


def create_app(settings: Settings | None = None, *, watch: bool = True) -> FastAPI:
    """The API and page over `settings`' registry. Loads the champion now (if any); the
    watcher thread (`watch`) runs while the app's lifespan does."""
    from movierec import tracking

    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        tracking.configure(settings)
    except Exception as error:  # a tracking server that is down must not stop the API
        log.warning("MLflow tracking not configured: %s", error)
    metrics = Metrics()
    holder = ChampionHolder(settings, metrics)
    holder.check_now()
    store = FeedbackStore(settings.feedback_db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if watch:
            holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="movierec",
        description="Movie recommendations from the registry's champion model.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.feedback = store
    app.state.settings = settings
    app.add_middleware(MetricsMiddleware, metrics=metrics, holder=holder)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> Response:
        detail, errors = _describe(list(error.errors()))
        return _json({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return _json({"detail": error.detail}, error.status_code)

    @app.exception_handler(NoModel)
    async def no_model(_request: Request, error: NoModel) -> Response:
        return _json({"detail": str(error), "model_version": None}, 503)

    @app.exception_handler(sqlite3.Error)
    async def store_error(_request: Request, error: sqlite3.Error) -> Response:
        log.error("feedback store: %s", error)
        return _json({"detail": f"feedback store unavailable ({type(error).__name__}); retry the same event_id"}, 503)

    # ------------------------------------------------------------------ recommendations

    @app.get("/users/{user_id}/recommendations", tags=["recommendations"])
    async def user_recommendations(user_id: UserId, k: K = 10) -> Response:
        """Top-k for a user: the model's list without their training movies, or (unknown user)
        the popularity list with `fallback: true`."""
        loaded = holder.require()
        index = loaded.user_index.get(user_id)
        if index is None:
            metrics.fallbacks.labels("user").inc()
            metrics.recommendations.labels("user", "popularity").inc()
            items, source = loaded.fallback_items(k), "popularity"
        else:
            metrics.recommendations.labels("user", "model").inc()
            items, source = loaded.known_user(index, k), "model"
        return _json({"user_id": user_id, "model_version": loaded.version, "source": source,
                      "fallback": index is None, "k": k, "items": items}, version=loaded.version)

    @app.post("/recommendations", tags=["recommendations"])
    def new_user_recommendations(request: NewUserRequest) -> Response:
        """Top-k for a new user from liked movies, ratings (>= the positive threshold count as
        liked) and/or age, gender, occupation; popularity when nothing is usable."""
        loaded = holder.require()
        low, high = loaded.scale
        bad = [r.rating for r in request.ratings if not low <= r.rating <= high]
        if bad:
            raise HTTPException(422, f"ratings: {bad} outside the rating scale {low:g}..{high:g}")
        items, fallback, unknown = loaded.new_user(request)
        source = "popularity" if fallback else "model"
        if fallback:
            metrics.fallbacks.labels("new_user").inc()
        metrics.recommendations.labels("new_user", source).inc()
        return _json({"user_id": None, "model_version": loaded.version, "source": source, "fallback": fallback,
                      "k": request.k, "unknown_movie_ids": unknown, "items": items}, version=loaded.version)

    @app.get("/movies/{movie_id}/similar", tags=["movies"])
    async def similar_movies(movie_id: MovieId, k: K = 10) -> Response:
        """The k movies closest to `movie_id` (cosine of the model's item vectors)."""
        loaded = holder.require()
        index = loaded.movie_index.get(movie_id)
        if index is None:
            return _json({"detail": f"movie_id {movie_id} is not in model version {loaded.version}'s catalogue "
                                    f"({len(loaded.movie_ids)} movies)", "model_version": loaded.version}, 404,
                         version=loaded.version)
        return _json({"movie": loaded.cards[index], "model_version": loaded.version, "k": k,
                      "items": loaded.similar(index, k)}, version=loaded.version)

    @app.get("/movies", tags=["movies"])
    async def search_movies(
        query: Annotated[str, Query(max_length=200, description="Part of a title, any case; empty: most popular.")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    ) -> Response:
        """Movies whose title contains `query` (case-insensitive), exact and prefix matches first."""
        loaded = holder.require()
        total, items = loaded.search(query, limit)
        return _json({"query": query, "model_version": loaded.version, "total": total, "items": items},
                     version=loaded.version)

    @app.get("/users", tags=["users"])
    async def search_users(
        query: Annotated[str, Query(max_length=12, pattern=r"^\d*$", description="Leading digits of a user id.")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    ) -> Response:
        """Known users whose id starts with `query`, most training ratings first."""
        loaded = holder.require()
        found = []
        for user, ratings in loaded.users_by_activity:
            if not query or str(user).startswith(query):
                found.append({"user_id": user, "ratings": ratings})
                if len(found) >= limit:
                    break
        return _json({"query": query, "model_version": loaded.version, "items": found}, version=loaded.version)

    # ------------------------------------------------------------------ feedback

    @app.post("/feedback", status_code=201, tags=["feedback"])
    def feedback(event: FeedbackIn) -> Response:
        """Store a feedback event durably; 201 when new, 200 with `duplicate: true` when its
        event_id was stored before. Answered only after the store committed."""
        loaded = holder.current
        version = loaded.version if loaded else None
        low, high = loaded.scale if loaded else DEFAULT_SCALE
        if event.type == "rating" and not low <= event.value <= high:
            raise HTTPException(422, f"value: rating {event.value:g} is outside the rating scale {low:g}..{high:g}")
        if event.type == "thumb" and event.value not in (1.0, -1.0):
            raise HTTPException(422, f"value: a thumb is +1 or -1, got {event.value:g}")
        if event.type == "click" and event.value != 1.0:
            raise HTTPException(422, f"value: a click has value 1, got {event.value:g}")
        try:
            record = FeedbackEvent(event.event_id, event.user_id, event.movie_id, event.type, event.value, event.timestamp)
        except ValueError as error:  # the store's own checks: still the client's input
            raise HTTPException(422, str(error)) from None
        new = store.append(record)
        metrics.feedback.labels(event.type, "stored" if new else "duplicate").inc()
        if new:
            return _json({"stored": True, "event_id": event.event_id, "model_version": version}, 201,
                         version=version or "none")
        return _json({"stored": False, "duplicate": True, "event_id": event.event_id, "model_version": version}, 200,
                     version=version or "none")

    # ------------------------------------------------------------------ operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        loaded = holder.current
        return _json({"status": "ok", "model_version": loaded.version if loaded else None})

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        loaded = holder.current
        if loaded is None:
            return _json({"status": "not ready", "model_version": None, "detail": holder.not_ready_message()}, 503)
        return _json({"status": "ready", "model": loaded.name, "model_version": loaded.version,
                      "loaded_at": datetime.fromtimestamp(loaded.loaded_at).astimezone().isoformat(),
                      "catalogue": len(loaded.movie_ids), "users": len(loaded.user_index),
                      "rating_scale": list(loaded.scale), "positive_threshold": loaded.positive_threshold},
                     version=loaded.version)

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# uvloop and httptools are dependencies: the README's load-test figures (bench/load_api.py) were
# measured with this event loop and HTTP parser.
UVICORN_OPTIONS = {"loop": "uvloop", "http": "httptools"}
