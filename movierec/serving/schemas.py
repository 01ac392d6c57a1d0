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
