"""Movies nobody has rated: every bundle ranks them with the content model, placed on the recipe's
scale (`ServingBundle.place_unrated`), for known and new users, and keeps that through disk."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.prepare import prepare
from features.splits import user_temporal_split
from inference.model import ContentScorer, ServingBundle, load_bundle, save_bundle
from models.bundle import serving_bundle
from models.families import build_model
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate


def _bundle(content: ContentScorer | None) -> ServingBundle:
    """Two users, six movies with one-dimensional factors 1..5 and 0. User 1 liked movies 0 and 1
    (genre A), user 2 movies 2, 3 and 4 (genre B); movie 5 (genre A) has no rating at all."""
    trained = sp.csr_matrix((np.full(5, 5.0), (np.array([0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 4]))), shape=(2, 6))
    counts = np.asarray(trained.getnnz(axis=0), dtype=np.int64)
    return ServingBundle(
        user_ids=np.array([1, 2]),
        item_ids=np.arange(10, 70, 10),
        user_bias=np.zeros(2),
        user_vectors=np.array([[1.0], [1.0]]),
        item_bias=np.zeros(6),
        item_vectors=np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [0.0]]),
        seen=trained,
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame(
            {"movie_id": np.arange(10, 70, 10), "title": list("abcdef"), "year": [2000] * 6, "genres": ["A"] * 6}
        ),
        rating_scale=(1.0, 5.0, 1.0),
        content=content,
    )


GENRE_CONTENT = ContentScorer(
    item_rows=sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 0]], dtype=np.float32)),
    mean_profile=np.zeros(2),
    spans=[(0, 2)],
    span_weights=np.ones(1),
    prior=np.zeros(6),
    prior_weight=0.0,
)


def test_an_unrated_movie_is_placed_by_its_content_z_score_on_the_recipes_scale(tmp_path):
    bundle = _bundle(GENRE_CONTENT)
    assert bundle.unrated.tolist() == [5]
    # User 1's content scores of the rated movies: 1, 1, 0, 0, 0 (mean 0.4, sd sqrt(0.24));
    # movie 5 scores 1, z = 0.6 / sqrt(0.24). The recipe (factors) over the rated movies: 1..5,
    # mean 3, sd sqrt(2). Placed: 3 + z sqrt(2) = 4.732...
    placed = 3 + 0.6 / np.sqrt(0.24) * np.sqrt(2)
    scores = bundle.scores(np.array([0]))[0]
    np.testing.assert_allclose(scores, [1, 2, 3, 4, 5, placed], rtol=1e-5)
    movie_ids, _, _ = bundle.recommend_users([1], 4)
    assert movie_ids[0].tolist() == [50, 60, 40, 30]
    # A new user who liked movie 2 (genre B): factors = movie 2's vector (3): 3, 6, 9, 12, 15;
    # content 0, 0, 1, 1, 1 -> movie 5 has z = -0.6 / sqrt(0.24), placed 9 - z' sqrt(18).
    new = bundle.new_user_scores(np.array([2]), None)
    np.testing.assert_allclose(new[5], 9 - 0.6 / np.sqrt(0.24) * np.sqrt(18), rtol=1e-5)
    # Saved and loaded, the bundle places it the same way.
    again = load_bundle(save_bundle(bundle, tmp_path / "bundle"))
    np.testing.assert_allclose(again.scores(np.array([0]))[0], scores, rtol=1e-6)
    np.testing.assert_array_equal(again.content.item_rows.toarray(), GENRE_CONTENT.item_rows.toarray())
    assert again.content.spans == [(0, 2)] and again.content.prior_weight == 0.0


def test_the_content_weight_mixes_the_content_and_recipe_z_scores():
    # User 1, movie 5: recipe z (0 - 3) / sqrt(2), content z 0.6 / sqrt(0.24); half each.
    half = replace(_bundle(GENRE_CONTENT), unrated_content_weight=0.5)
    mixed = 0.5 * (-3 / np.sqrt(2)) + 0.5 * 0.6 / np.sqrt(0.24)
    np.testing.assert_allclose(half.scores(np.array([0]))[0, 5], 3 + mixed * np.sqrt(2), rtol=1e-5)
    none = replace(_bundle(GENRE_CONTENT), unrated_content_weight=0.0)
    np.testing.assert_allclose(none.scores(np.array([0]))[0], [1, 2, 3, 4, 5, 0], atol=1e-6)
    with pytest.raises(ValueError, match="unrated_content_weight"):
        replace(half, unrated_content_weight=1.5)


def test_without_a_content_model_an_unrated_movie_keeps_the_recipes_score():
    bundle = _bundle(None)
    np.testing.assert_allclose(bundle.scores(np.array([0]))[0], [1, 2, 3, 4, 5, 0], rtol=1e-6)
    assert bundle.recommend_users([1], 4)[0][0].tolist() == [50, 40, 30, 60]


def test_the_content_scorer_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="prior"):
        ContentScorer(GENRE_CONTENT.item_rows, np.zeros(2), [(0, 2)], np.ones(1), np.zeros(5), 0.3)
    with pytest.raises(ValueError, match="spans"):
        ContentScorer(GENRE_CONTENT.item_rows, np.zeros(2), [(0, 3)], np.ones(1), np.zeros(6), 0.3)
    fields = {name: getattr(_bundle(None), name) for name in ("user_ids", "user_bias", "user_vectors")}
    with pytest.raises(ValueError, match="content scores 6 items, expected 5"):
        ServingBundle(
            **fields,
            item_ids=np.arange(5),
            item_bias=np.zeros(5),
            item_vectors=np.zeros((5, 1)),
            seen=sp.csr_matrix((2, 5)),
            popularity=np.arange(5),
            popularity_counts=np.zeros(5, np.int64),
            items=pd.DataFrame({"movie_id": np.arange(5)}),
            content=GENRE_CONTENT,
        )


def test_in_a_fitted_bundle_unrated_movies_follow_the_content_models_order():
    tables = canonicalize(generate(6_000, seed=3), None)[0]
    prepared = prepare(tables.users, tables.items, tables.tags, chosen=user_temporal_split(tables.ratings))
    content = build_model("content", prepared)
    hybrid = build_model("hybrid", prepared, {"epochs": 3, "no_components": 8})
    bundle = serving_bundle(hybrid, prepared, tables.users, tables.items, None, content=content.scorer)
    unrated = bundle.unrated
    assert len(unrated) >= 5 and not np.isin(unrated, prepared.train.indices).any()
    users = np.arange(0, bundle.n_users, 7)
    scores, expected = bundle.scores(users)[:, unrated], content.scores(users)[:, unrated]
    # Per user, the placed scores are an increasing affine map of the content model's.
    for row, reference in zip(scores, expected, strict=True):
        slope, intercept = np.polyfit(reference.astype(np.float64), row.astype(np.float64), 1)
        assert slope > 0
        np.testing.assert_allclose(row, slope * reference + intercept, rtol=1e-4, atol=1e-4 * np.abs(row).max())
    # Rated movies keep the hybrid's own scores.
    rated = np.setdiff1d(np.arange(bundle.n_items), unrated)
    np.testing.assert_allclose(bundle.scores(users)[:, rated], hybrid.scores(users)[:, rated], rtol=1e-5, atol=1e-5)
