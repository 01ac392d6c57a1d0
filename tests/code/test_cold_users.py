"""New users known only by demographics: segments, the bundle's policies, the choice among them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.prepare import prepare
from features.splits import user_temporal_split
from inference.model import ServingBundle, load_bundle, save_bundle, segment_key
from models.bundle import MIN_SEGMENT_USERS, serving_bundle
from models.cold_start import choose_new_user_policy
from models.factorization import LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate


def test_segment_key_buckets_ages_and_needs_every_column():
    assert segment_key({"age": 30, "gender": "F"}, ("age", "gender")) == "age=25-34|gender=F"
    assert segment_key({"age": 17.0}, ("age",)) == "age=under 18"
    assert segment_key({"gender": "F"}, ("age", "gender")) is None
    assert segment_key({"age": np.nan, "gender": "F"}, ("age", "gender")) is None
    assert segment_key({}, ()) == ""


def _bundle(policy: str) -> ServingBundle:
    """Three items; segment F liked items 1 and 2, segment M item 0; item 0 is the most popular."""
    seen = sp.csr_matrix((2, 3), dtype=np.float32)
    counts = np.array([5, 2, 2])
    return ServingBundle(
        user_ids=np.array([1, 2]),
        item_ids=np.array([10, 20, 30]),
        user_bias=np.zeros(2),
        user_vectors=np.zeros((2, 1)),
        item_bias=np.zeros(3),
        item_vectors=np.ones((3, 1)),
        seen=seen,
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame({"movie_id": [10, 20, 30], "title": list("abc"), "year": [1, 2, 3], "genres": ["x"] * 3}),
        new_user_policy=policy,
        segment_columns=["gender"],
        segment_keys=["gender=F", "gender=M"],
        segment_counts=np.array([[0, 2, 2], [3, 0, 0]]),
        rating_scale=(1.0, 5.0, 1.0),
    )


def test_the_segments_policy_answers_with_the_segments_popularity():
    bundle = _bundle("segments")
    nobody = np.array([], dtype=np.int64)
    items, scores, fallback = bundle.recommend_new_user_items(nobody, {"gender": "F"}, 3)
    # Items 1 and 2 tie within the segment; overall popularity (2 vs 2) ties too: lower index first.
    assert items.tolist() == [1, 2, 0] and not fallback
    np.testing.assert_allclose(scores, [2 + 0.5 * 0.4, 2 + 0.5 * 0.4, 0 + 0.5 * 1.0], rtol=1e-6)
    items, _, fallback = bundle.recommend_new_user_items(nobody, {"gender": "X"}, 3)  # an unknown segment
    assert items.tolist() == [0, 1, 2] and fallback
    items, _, fallback = bundle.recommend_new_user_items(nobody, {"age": 30}, 3)  # no gender given
    assert fallback


def test_the_popularity_policy_and_saving(tmp_path):
    items, _, fallback = _bundle("popularity").recommend_new_user_items(np.array([], np.int64), {"gender": "F"}, 2)
    assert items.tolist() == [0, 1] and fallback
    loaded = load_bundle(save_bundle(_bundle("segments"), tmp_path / "bundle"))
    assert loaded.new_user_policy == "segments" and loaded.segment_keys == ["gender=F", "gender=M"]
    np.testing.assert_array_equal(loaded.segment_counts, [[0, 2, 2], [3, 0, 0]])
    with pytest.raises(ValueError, match="new_user_policy must be one of"):
        _bundle("nearest")


def test_serving_bundle_counts_positives_per_segment_of_enough_users():
    tables = canonicalize(generate(4_000, seed=3), None)[0]
    prepared = prepare(tables.users, tables.items, tables.tags, chosen=user_temporal_split(tables.ratings))
    model = LightFMRecommender(epochs=1, no_components=4).fit(prepared.train)
    bundle = serving_bundle(
        model, prepared, tables.users, tables.items, None, new_user_policy="segments", segment_columns=("gender",)
    )
    active = np.flatnonzero(np.diff(prepared.train.indptr) > 0)
    genders = tables.users.set_index("user_idx").loc[active, "gender"]
    for key, row in zip(bundle.segment_keys, bundle.segment_counts, strict=True):
        members = genders.index[("gender=" + genders.astype(str)) == key].to_numpy()
        assert len(members) >= MIN_SEGMENT_USERS
        np.testing.assert_array_equal(row, np.asarray((prepared.train[members] > 0).sum(axis=0)).ravel())
    expected = {f"gender={g}" for g, n in genders.value_counts().items() if n >= MIN_SEGMENT_USERS}
    assert set(bundle.segment_keys) == expected and expected


def test_choose_new_user_policy_takes_the_best_row():
    report = pd.DataFrame(
        {
            "policy": ["model", "popularity", "segments"],
            "segment_columns": ["", "", "age+gender"],
            "ndcg@10": [0.3, 0.4, 0.45],
        },
        index=["hybrid", "popularity", "segments: age+gender"],
    )
    assert choose_new_user_policy(report) == ("segments", ("age", "gender"))
    assert choose_new_user_policy(report.iloc[:2]) == ("popularity", ())
