"""Micro-batching of known users' requests (movierec.serving.batching): a batch answers each user
as scoring them alone would, and the batcher groups what arrives together, per model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ranking import assert_same_ranking

from features.prepare import prepare
from features.splits import user_temporal_split
from models.bundle import serving_bundle
from models.factorization import BiasedMF, LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.serving.batching import UserBatcher
from movierec.serving.champion import LoadedModel


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    tables = canonicalize(generate(4_000, seed=11), None)[0]
    prepared = prepare(tables.users, tables.items, tables.tags, chosen=user_temporal_split(tables.ratings))
    model = LightFMRecommender(epochs=3, no_components=8).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    ratings = BiasedMF(factors=4, iterations=3).fit(prepared.seen)
    bundle = serving_bundle(
        model, prepared, tables.users, tables.items, None, rating_scale=(1.0, 5.0, 1.0), ratings=ratings
    )
    return LoadedModel("movierec", "1", bundle)


def test_a_batch_answers_each_user_as_scoring_them_alone_does(loaded):
    bundle = loaded.bundle
    users = list(range(0, 40, 3))
    ks = [10, 3, 7, 10, 1, 5, 10, 2, 8, 4, 10, 6, 9, 3]
    batch = loaded.known_users(users, ks)
    assert [len(answer) for answer in batch] == ks
    for user, k, answer in zip(users, ks, batch, strict=True):
        alone = loaded.known_users([user], [k])[0]
        got = np.array([[bundle.item_index([card["movie_id"]])[0] for card in answer]])
        expected = np.array([[bundle.item_index([card["movie_id"]])[0] for card in alone]])
        assert_same_ranking(
            got,
            np.array([[card["score"] for card in answer]], dtype=np.float32),
            expected,
            np.array([[card["score"] for card in alone]], dtype=np.float32),
            bundle.scores([user]),
        )
        rated = set(bundle.seen[user].indices.tolist())
        assert not rated & set(got[0].tolist())
        # The reason and predicted rating belong to the movie each card shows, whatever the batch.
        for card in answer:
            item = bundle.item_index([card["movie_id"]])
            assert card["predicted_rating"] == round(float(bundle.rating_predictions(np.array([user]), item)[0]), 2)
            liked = bundle.because_user(user, item)[0]
            assert card["because_movie_id"] == (None if liked < 0 else int(bundle.item_ids[liked]))


class _Recorder:
    """A model whose `known_users` answers each user with their index and k, and records calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail

    def known_users(self, indices, ks):
        self.calls.append(list(indices))
        if self.fail:
            raise RuntimeError("scoring failed")
        return [[{"user": index, "k": k}] for index, k in zip(indices, ks, strict=True)]


def test_requests_that_arrive_together_are_scored_together_up_to_the_batch_size():
    model = _Recorder()

    async def ask() -> list:
        batcher = UserBatcher(max_users=4)
        answers = await asyncio.gather(*(batcher.known_user(model, index, index + 1) for index in range(10)))
        await batcher.close()
        return answers

    answers = asyncio.run(ask())
    assert answers == [[{"user": index, "k": index + 1}] for index in range(10)]
    assert model.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_lone_request_is_answered_alone_and_later_ones_start_a_new_batch():
    model = _Recorder()

    async def ask() -> list:
        batcher = UserBatcher(max_users=64)
        first = await batcher.known_user(model, 1, 10)
        second = await batcher.known_user(model, 2, 10)
        return [first, second]

    assert asyncio.run(ask()) == [[{"user": 1, "k": 10}], [{"user": 2, "k": 10}]]
    assert model.calls == [[1], [2]]


def test_a_batch_spanning_a_swap_is_scored_by_each_requests_own_model():
    old, new = _Recorder(), _Recorder()

    async def ask() -> list:
        batcher = UserBatcher(max_users=64)
        return await asyncio.gather(
            batcher.known_user(old, 1, 5), batcher.known_user(new, 2, 5), batcher.known_user(old, 3, 5)
        )

    assert asyncio.run(ask()) == [[{"user": 1, "k": 5}], [{"user": 2, "k": 5}], [{"user": 3, "k": 5}]]
    assert old.calls == [[1, 3]] and new.calls == [[2]]


def test_a_failed_batch_fails_its_requests_and_the_next_batch_is_answered():
    broken, working = _Recorder(fail=True), _Recorder()

    async def ask() -> tuple:
        batcher = UserBatcher(max_users=64)
        failed = await asyncio.gather(
            batcher.known_user(broken, 1, 5), batcher.known_user(broken, 2, 5), return_exceptions=True
        )
        return failed, await batcher.known_user(working, 3, 5)

    failed, answered = asyncio.run(ask())
    assert [str(error) for error in failed] == ["scoring failed", "scoring failed"]
    assert answered == [{"user": 3, "k": 5}]


def test_the_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_users must be at least 1, got 0"):
        UserBatcher(0)
