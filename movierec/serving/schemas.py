"""Request bodies and parameters of the API: what a client may send, validated before any work."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from fastapi import Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_ID = 2**31 - 1  # snapshot ids are int32
MAX_K = 100

UserId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Original (MovieLens) user id.")]
MovieId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Original (MovieLens) movie id.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of recommendations (1-100).")]


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
    impression_id: str | None = Field(
        None, max_length=64, pattern=r"^[A-Za-z0-9]+$", description="The `impression_id` of the list this answers."
    )


# ---------------------------------------------------------------------- responses (OpenAPI)


class FieldError(BaseModel):
    loc: list[str] = Field(description='Where the problem is, e.g. ["body", "movie_id"] or ["query", "k"].')
    msg: str
    type: str | None = None


class ErrorBody(BaseModel):
    """Every error the API answers: a one-line `detail` naming the field, and for invalid input
    one entry per problem in `errors`."""

    detail: str
    errors: list[FieldError] | None = None
    model_version: str | None = None


class FeedbackStored(BaseModel):
    stored: bool
    duplicate: bool | None = Field(None, description="True when the same event was stored before (a retry).")
    event_id: str
    model_version: str


class StoredEvent(BaseModel):
    event_id: str
    user_id: int
    movie_id: int
    type: Literal["rating", "click", "thumb"]
    value: float
    timestamp: str


class FeedbackConflict(BaseModel):
    detail: str
    stored_event: StoredEvent = Field(description="The event stored under the event_id, which is kept.")
    event_id: str
    model_version: str


_INVALID = {"model": ErrorBody, "description": "Invalid input; `detail` names the field."}
_NO_MODEL = {"model": ErrorBody, "description": "No champion model is loaded yet."}
READ_ERRORS = {422: _INVALID, 503: _NO_MODEL}
ERRORS = {404: {"model": ErrorBody, "description": "Not in the served model's catalogue."}, **READ_ERRORS}
UNAUTHORIZED = {
    401: {
        "model": ErrorBody,
        "description": "`serving.write_token` is set and the request lacks `Authorization: Bearer <token>`.",
    }
}
WRITE_ERRORS = {
    413: {"model": ErrorBody, "description": "The request body exceeds `serving.max_body_bytes`."},
    429: {
        "model": ErrorBody,
        "description": "Over the per-client write rate (`serving.write_requests_per_minute`); see Retry-After.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    **READ_ERRORS,
}
