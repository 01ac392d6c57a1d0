"""The recommendation API and web page: FastAPI over the registry's `champion` model.

`create_app(settings)` builds the app over a `ChampionHolder` (`movierec.serving.champion`),
which loads the model behind alias `champion` of `settings.registered_model_name` at start and
polls the alias every `settings.serving.poll_seconds`. Every response names the model version
(JSON field `model_version` and header `X-Model-Version`). Without a champion, /readyz and the
recommendation endpoints answer 503 and polling goes on.

Endpoints:
  GET  /users/{user_id}/recommendations?k=10  known user: model top-k, every rated movie excluded;
                                              unknown user: popularity, "fallback": true
  POST /recommendations                        new user: liked movies, ratings, demographics
  GET  /movies/{movie_id}/similar?k=10         nearest movies by cosine of item vectors
  GET  /movies?query=&limit=20                 title search (exact, prefix, word, substring)
  GET  /users?query=&limit=20                  known user ids (for the page's user picker)
  POST /feedback                               durable event store (movierec.data.feedback)
  GET  /healthz, /readyz, /metrics             liveness, readiness, Prometheus text
  GET  /monitoring, /monitoring/report         the last monitor runs, current alerts; the latest report
  GET  /                                       the web page (movierec/serving/static)

Performance: the hot endpoints are `async def` (no thread hop; their work is ~0.1 ms of numpy),
return pre-serialised JSON (orjson) without response-model validation, and use per-model
precomputed id maps and item cards. Known users' recommendations are scored in micro-batches
(`movierec.serving.batching`: the requests that arrive while one batch is scored share one
product, in a worker thread, so the loop keeps accepting requests). /feedback and POST /recommendations are plain `def`
(threadpool): SQLite's synced commit and the feature-row construction must not block the loop.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from movierec.data.feedback import FeedbackEvent, FeedbackStore
from movierec.data.impressions import ImpressionRecorder, ImpressionStore
from movierec.monitoring import history
from movierec.serving.batching import UserBatcher
from movierec.serving.champion import ChampionHolder, NoModel
from movierec.serving.limits import BodyLimitMiddleware, RateLimiter, retry_after
from movierec.serving.metrics import Metrics, MetricsMiddleware
from movierec.serving.schemas import (
    ERRORS,
    MAX_K,
    READ_ERRORS,
    UNAUTHORIZED,
    WRITE_ERRORS,
    FeedbackConflict,
    FeedbackIn,
    FeedbackStored,
    K,
    MovieId,
    NewUserRequest,
    UserId,
)
from movierec.settings import Settings, get_settings
from movierec.tracking import runs

log = logging.getLogger("movierec.serving")

# The page's files: package data of movierec.serving (an install ships them as plain files).
STATIC_DIR = Path(str(resources.files("movierec.serving").joinpath("static")))
_NOT_READY = {"description": "No champion model is loaded yet; `detail` says why."}


def _client(request: Request) -> str:
    """The client's address: the rate limit's key and what the feedback store records."""
    return request.client.host if request.client else "unknown"


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


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
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        runs.configure(settings)
    except Exception as error:  # a tracking server that is down must not stop the API
        log.warning("MLflow tracking not configured: %s", error)
    metrics = Metrics()
    holder = ChampionHolder(settings, metrics)
    holder.check_now()
    store = FeedbackStore(settings.feedback_db)
    # What was shown, written off the request path (movierec.data.impressions).
    recorder = ImpressionRecorder(
        ImpressionStore(settings.impressions_db),
        settings.serving.impressions_retention_days,
        settings.serving.impressions_max_rows,
        totals=metrics.totals,
        stats_seconds=settings.serving.stats_seconds,
    )
    batcher = UserBatcher(settings.serving.batch_users)
    limiter = RateLimiter(settings.serving.write_requests_per_minute, settings.serving.write_burst)
    token = settings.serving.write_token

    def authorize(request: Request) -> None:
        """With `serving.write_token`, a write needs it as a bearer token (compared in constant time)."""
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            raise HTTPException(
                401,
                "POST /feedback needs `Authorization: Bearer <token>` (the serving.write_token of this server)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def limit(client: str) -> None:
        wait = limiter.acquire(client)
        if wait:
            raise HTTPException(
                429,
                f"more than {settings.serving.write_requests_per_minute} write requests a minute from {client}; "
                f"retry in {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
            )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if watch:
            holder.start()
        recorder.start()
        try:
            yield
        finally:
            await batcher.close()
            holder.stop()
            recorder.stop()

    app = FastAPI(
        title="movierec",
        description="Movie recommendations from the registry's champion model.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.feedback = store
    app.state.impressions = recorder
    app.state.settings = settings
    # A body over the limit is refused before the app reads it; the metrics (outermost, added
    # last) count that 413 like any other answer.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serving.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, holder=holder)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> Response:
        detail, errors = _describe(list(error.errors()))
        return _json({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        response = _json({"detail": error.detail}, error.status_code)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(NoModel)
    async def no_model(_request: Request, error: NoModel) -> Response:
        return _json({"detail": str(error), "model_version": None}, 503)

    @app.exception_handler(sqlite3.Error)
    async def store_error(_request: Request, error: sqlite3.Error) -> Response:
        log.error("feedback store: %s", error)
        return _json({"detail": f"feedback store unavailable ({type(error).__name__}); retry the same event_id"}, 503)

    # ------------------------------------------------------------------ recommendations

    @app.get("/users/{user_id}/recommendations", tags=["recommendations"], responses=READ_ERRORS)
    async def user_recommendations(user_id: UserId, k: K = 10) -> Response:
        """Top-k for a user: the model's list without any movie they rated, or (unknown user)
        the popularity list with `fallback: true`."""
        loaded = holder.require()
        index = loaded.user_index.get(user_id)
        if index is None:
            metrics.fallbacks.labels("user").inc()
            metrics.recommendations.labels("user", "popularity").inc()
            items, source = loaded.fallback_items(k), "popularity"
        else:
            metrics.recommendations.labels("user", "model").inc()
            items, source = await batcher.known_user(loaded, index, k), "model"
        shown = recorder.record(user_id, loaded.version, source, [item["movie_id"] for item in items])
        return _json(
            {
                "user_id": user_id,
                "model_version": loaded.version,
                "source": source,
                "fallback": index is None,
                "k": k,
                "impression_id": shown,
                "items": items,
            },
            version=loaded.version,
        )

    @app.post("/recommendations", tags=["recommendations"], responses=WRITE_ERRORS)
    def new_user_recommendations(request: NewUserRequest, http: Request) -> Response:
        """Top-k for a new user from liked movies, ratings (>= the positive threshold count as
        liked) and/or age, gender, occupation; popularity when nothing is usable. Rate-limited
        per client address."""
        limit(_client(http))
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
        shown = recorder.record(None, loaded.version, source, [item["movie_id"] for item in items])
        return _json(
            {
                "user_id": None,
                "model_version": loaded.version,
                "source": source,
                "fallback": fallback,
                "k": request.k,
                "impression_id": shown,
                "unknown_movie_ids": unknown,
                "items": items,
            },
            version=loaded.version,
        )

    @app.get("/movies/{movie_id}/similar", tags=["movies"], responses=ERRORS)
    async def similar_movies(movie_id: MovieId, k: K = 10) -> Response:
        """The k movies closest to `movie_id` (cosine of the model's item vectors)."""
        loaded = holder.require()
        index = loaded.movie_index.get(movie_id)
        if index is None:
            return _json(
                {
                    "detail": f"movie_id {movie_id} is not in model version {loaded.version}'s catalogue "
                    f"({len(loaded.movie_ids)} movies)",
                    "model_version": loaded.version,
                },
                404,
                version=loaded.version,
            )
        return _json(
            {"movie": loaded.cards[index], "model_version": loaded.version, "k": k, "items": loaded.similar(index, k)},
            version=loaded.version,
        )

    @app.get("/movies", tags=["movies"], responses=READ_ERRORS)
    async def search_movies(
        query: Annotated[
            str, Query(max_length=200, description="Part of a title, any case; empty: most popular.")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    ) -> Response:
        """Movies whose title contains `query` (case-insensitive), exact and prefix matches first."""
        loaded = holder.require()
        total, items = loaded.search(query, limit)
        return _json(
            {"query": query, "model_version": loaded.version, "total": total, "items": items}, version=loaded.version
        )

    @app.get("/users", tags=["users"], responses=READ_ERRORS)
    async def search_users(
        query: Annotated[str, Query(max_length=12, pattern=r"^\d*$", description="Leading digits of a user id.")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    ) -> Response:
        """Known users whose id starts with `query`, most ratings first."""
        loaded = holder.require()
        found = []
        for user, ratings in loaded.users_by_activity:
            if not query or str(user).startswith(query):
                found.append({"user_id": user, "ratings": ratings})
                if len(found) >= limit:
                    break
        return _json({"query": query, "model_version": loaded.version, "items": found}, version=loaded.version)

    # ------------------------------------------------------------------ feedback

    @app.post(
        "/feedback",
        status_code=201,
        tags=["feedback"],
        responses={
            200: {"model": FeedbackStored, "description": "The same event was stored before (a retry)."},
            201: {"model": FeedbackStored, "description": "Stored."},
            409: {"model": FeedbackConflict, "description": "The event_id holds another event, which is kept."},
            **UNAUTHORIZED,
            **WRITE_ERRORS,
        },
    )
    def feedback(event: FeedbackIn, request: Request) -> Response:
        """Store a feedback event durably; answered only after the store committed. It must be
        what ingestion accepts as a rating (`FeedbackRules`: a movie of the served catalogue, a
        timestamp in the plausible window, a value on the scale's grid), else 422 naming the
        field; 409 when its event_id holds another event. Rate-limited per client address; with
        `serving.write_token`, 401 without it as a bearer token."""
        authorize(request)
        client = _client(request)
        limit(client)
        loaded = holder.require()
        problems = loaded.feedback_rules(settings).problems(event.type, event.movie_id, event.value, event.timestamp)
        if problems:
            metrics.feedback.labels(event.type, "rejected").inc()
            errors = [{"loc": ["body", field], "msg": text, "type": "value_error"} for field, text in problems.items()]
            detail = "; ".join(f"{field}: {text}" for field, text in problems.items())
            return _json({"detail": detail, "errors": errors}, 422, version=loaded.version)
        record = FeedbackEvent(
            event.event_id,
            event.user_id,
            event.movie_id,
            event.type,
            event.value,
            event.timestamp,
            event.impression_id,
        )
        outcome = store.append(record, client=client)
        metrics.feedback.labels(event.type, outcome.status).inc()
        body = {"event_id": event.event_id, "model_version": loaded.version}
        if outcome.status == "stored":
            return _json({"stored": True, **body}, 201, version=loaded.version)
        if outcome.status == "duplicate":
            return _json({"stored": False, "duplicate": True, **body}, 200, version=loaded.version)
        return _json(
            {
                "detail": f"event_id {event.event_id!r} already holds another event; send a new event_id",
                "stored_event": outcome.stored.as_dict(),
                **body,
            },
            409,
            version=loaded.version,
        )

    # ------------------------------------------------------------------ operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        loaded = holder.current
        return _json({"status": "ok", "model_version": loaded.version if loaded else None})

    def registry_state() -> dict:
        checked = holder.last_check
        return {
            "reachable": holder.registry_error is None,
            "detail": holder.registry_error,
            "checked_at": None if checked is None else datetime.fromtimestamp(checked, UTC).isoformat(),
        }

    @app.get("/readyz", tags=["operations"], responses={503: _NOT_READY})
    async def readyz() -> Response:
        """Ready while a model is loaded, even when the registry does not answer (`registry` says
        so; the loaded model is served and the alias is looked up again every poll)."""
        loaded = holder.current
        if loaded is None:
            body = {"status": "not ready", "model_version": None, "detail": holder.not_ready_message()}
            return _json({**body, "registry": registry_state()}, 503)
        return _json(
            {
                "status": "ready",
                "registry": registry_state(),
                "model": loaded.name,
                "model_version": loaded.version,
                "loaded_at": datetime.fromtimestamp(loaded.loaded_at).astimezone().isoformat(),
                "catalogue": len(loaded.movie_ids),
                "users": len(loaded.user_index),
                "rating_scale": list(loaded.scale),
                "positive_threshold": loaded.positive_threshold,
            },
            version=loaded.version,
        )

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/monitoring", tags=["operations"])
    def monitoring(
        runs: Annotated[
            int, Query(ge=1, le=1000, description="How many monitor runs.")
        ] = settings.monitoring.page_runs,
    ) -> Response:
        """The champion served now (version, registration, age), the last monitor runs (oldest
        first: window end, version, charted measures, alert count), the latest run's alerts and
        the measures the page charts; written by `movierec monitor`."""
        recent = history.last_runs(settings.monitoring_dir, runs)
        charts = history.trend_names(settings.training.k)
        loaded = holder.current
        champion = None
        if loaded is not None:
            registered = loaded.registered_at
            champion = {
                "version": loaded.version,
                "registered_at": None if registered is None else datetime.fromtimestamp(registered, UTC).isoformat(),
                "age_days": None if registered is None else (time.time() - registered) / 86_400,
            }
        latest = recent[-1] if recent else None
        return _json(
            {
                "champion": champion,
                "charts": [{"metric": metric, "label": label} for metric, label in charts],
                "runs": [
                    {
                        "until": run["window"]["until"],
                        "champion_version": run["champion_version"],
                        "alerts": len(run["alerts"]),
                        "metrics": {metric: run["metrics"].get(metric) for metric, _ in charts},
                    }
                    for run in recent
                ],
                "alerts": latest["alerts"] if latest else [],
                "last_run": None
                if latest is None
                else {key: latest.get(key) for key in ("champion_version", "window", "run_id")},
                "report": "/monitoring/report" if (settings.monitoring_dir / history.LATEST_REPORT).is_file() else None,
            }
        )

    @app.get("/monitoring/report", include_in_schema=False)
    async def monitoring_report() -> Response:
        path = settings.monitoring_dir / history.LATEST_REPORT
        if not path.is_file():
            return _json({"detail": "no monitoring report yet: run `movierec monitor`"}, 404)
        return FileResponse(path, media_type="text/html")

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# uvloop and httptools are dependencies: the README's load-test figures (bench/load_api.py) were
# measured with this event loop and HTTP parser.
UVICORN_OPTIONS = {"loop": "uvloop", "http": "httptools"}
