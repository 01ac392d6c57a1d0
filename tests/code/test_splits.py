import numpy as np
import pandas as pd
import pytest

from features.splits import (
    SPLITTERS,
    Split,
    cold_item_split,
    cold_user_split,
    global_temporal_split,
    random_split,
    sample_users,
    split,
    user_sample,
    user_temporal_split,
    validation_split,
)
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate

KEY = ["user_id", "movie_id"]
T0 = 1_500_000_000  # a Unix second; hand-built timestamps are offsets from it


def ratings_frame(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    """(user_id, movie_id, rating, seconds after T0) rows -> a frame shaped like canonical ratings."""
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "offset"])
    stamps = pd.to_datetime(T0 + frame.pop("offset").to_numpy(np.int64), unit="s", utc=True)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(np.int32),
            "movie_id": frame["movie_id"].astype(np.int32),
            "rating": frame["rating"].astype(np.float32),
            "timestamp": pd.Series(stamps.astype("datetime64[s, UTC]")),
            "user_idx": frame["user_id"].rank(method="dense").astype(np.int32) - 1,
            "item_idx": frame["movie_id"].rank(method="dense").astype(np.int32) - 1,
        }
    )


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["movie_id"].tolist(), strict=True))


def assert_partition(result: Split, ratings: pd.DataFrame) -> None:
    assert len(result.train) + len(result.test) == len(ratings)
    assert not pairs(result.train) & pairs(result.test)
    assert canonical(pd.concat([result.train, result.test])).equals(canonical(ratings))


def assert_temporal_per_user(result: Split) -> None:
    latest_train = result.train.groupby("user_id")["timestamp"].max()
    earliest_test = result.test.groupby("user_id")["timestamp"].min()
    both = earliest_test.index.intersection(latest_train.index)
    assert (earliest_test[both] >= latest_train[both]).all()


@pytest.fixture
def hand_ratings() -> pd.DataFrame:
    """User 1: 10 ratings at shuffled times; user 2: 4 ratings; user 3: 5 ratings at one instant."""
    times = [50, 10, 90, 30, 70, 20, 100, 40, 60, 80]
    rows = [(1, 100 + movie, 4.0, time) for movie, time in enumerate(times)]
    rows += [(2, 200 + movie, 3.0, 10 * movie) for movie in range(4)]
    rows += [(3, movie, 5.0, 500) for movie in (7, 3, 9, 1, 5)]
    return canonical(ratings_frame(rows))


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    return canonicalize(generate(20_000, seed=1), None)[0].ratings


def test_user_temporal_ten_ratings_puts_the_two_latest_in_test(hand_ratings):
    result = user_temporal_split(hand_ratings)
    user1 = result.test[result.test["user_id"] == 1]
    # Offsets 100 and 90 are movies 106 and 102.
    assert sorted(user1["movie_id"]) == [102, 106]
    assert_partition(result, hand_ratings)
    assert_temporal_per_user(result)


def test_user_temporal_excludes_and_counts_short_users(hand_ratings):
    result = user_temporal_split(hand_ratings)
    assert result.excluded_users == 1
    assert 2 not in set(result.test["user_id"])
    assert (result.train["user_id"] == 2).sum() == 4
    assert user_temporal_split(hand_ratings, min_ratings=4).excluded_users == 0


def test_user_temporal_breaks_timestamp_ties_by_movie_id_whatever_the_row_order(hand_ratings):
    # User 3 has 5 ratings at one instant: round(0.2 * 5) = 1 goes to test, the highest movie_id.
    expected = user_temporal_split(hand_ratings)
    assert expected.test.loc[expected.test["user_id"] == 3, "movie_id"].tolist() == [9]
    for seed in range(3):
        shuffled = hand_ratings.sample(frac=1, random_state=seed).reset_index(drop=True)
        assert canonical(user_temporal_split(shuffled).test).equals(canonical(expected.test))


def test_user_temporal_keeps_one_rating_in_train_and_one_in_test(hand_ratings):
    large = user_temporal_split(hand_ratings, test_share=0.95)
    assert (large.train["user_id"] == 1).sum() == 1
    assert (large.train["user_id"] == 3).sum() == 1
    small = user_temporal_split(hand_ratings, test_share=0.01)
    assert (small.test["user_id"] == 1).sum() == 1


def test_global_temporal_respects_an_explicit_cutoff(hand_ratings):
    cutoff = pd.Timestamp(T0 + 60, unit="s", tz="UTC")
    result = global_temporal_split(hand_ratings, cutoff=cutoff)
    assert (result.test["timestamp"] >= cutoff).all()
    assert (result.train["timestamp"] < cutoff).all()
    assert len(result.test) == 5 + 5  # user 1's offsets 60..100 and user 3's five at 500
    assert result.params["cutoff"] == cutoff
    assert_partition(result, hand_ratings)
    # A naive cutoff means UTC, as canonical timestamps are.
    naive = global_temporal_split(hand_ratings, cutoff=cutoff.tz_localize(None))
    assert canonical(naive.test).equals(canonical(result.test))


def test_global_temporal_default_cutoff_leaves_test_share_after_it():
    ratings = ratings_frame([(user, movie, 4.0, 10 * (user * 10 + movie)) for user in range(2) for movie in range(10)])
    result = global_temporal_split(ratings, test_share=0.2)
    assert sorted(result.test["movie_id"]) == [6, 7, 8, 9]  # the 4 latest of 20, all user 1's
    assert result.params["cutoff"] == pd.Timestamp(T0 + 160, unit="s", tz="UTC")
    again = global_temporal_split(ratings, **result.params)
    assert canonical(again.test).equals(canonical(result.test))


def test_random_split_is_deterministic_per_seed_and_differs_across_seeds(generated):
    first = random_split(generated, seed=3)
    assert canonical(first.test).equals(canonical(random_split(generated, seed=3).test))
    assert pairs(first.test) != pairs(random_split(generated, seed=4).test)
    assert len(first.test) == round(0.2 * len(generated))
    assert_partition(first, generated)


def test_validation_split_is_carved_from_train_only(hand_ratings, generated):
    for kind in SPLITTERS:
        outer = split(generated, kind)
        inner = validation_split(outer)
        assert inner.kind == kind
        assert_partition(inner, outer.train)
        assert not pairs(inner.train) & pairs(outer.test)
        assert not pairs(inner.test) & pairs(outer.test)
    outer = global_temporal_split(generated)
    inner = validation_split(outer)
    assert inner.params["cutoff"] < outer.params["cutoff"]
    assert len(inner.test) == round(0.2 * len(outer.train))
    assert validation_split(outer, test_share=0.5).params["test_share"] == 0.5


def test_cold_item_split_holds_out_every_rating_of_its_items(generated):
    result = cold_item_split(generated, item_share=0.1, seed=2)
    rated = generated["item_idx"].nunique()
    assert len(result.cold_items) == round(0.1 * rated)
    assert not set(result.train["item_idx"]) & set(result.cold_items)
    assert set(result.test["item_idx"]) == set(result.cold_items)
    held_rows = generated["item_idx"].isin(result.cold_items).sum()
    assert len(result.test) == held_rows
    assert_partition(result, generated)
    assert np.array_equal(cold_item_split(generated, item_share=0.1, seed=2).cold_items, result.cold_items)


def test_cold_user_split_holds_out_every_rating_of_its_users(generated):
    result = cold_user_split(generated, user_share=0.1, seed=2)
    assert len(result.cold_users) == round(0.1 * generated["user_idx"].nunique())
    assert not set(result.train["user_idx"]) & set(result.cold_users)
    assert set(result.test["user_idx"]) == set(result.cold_users)
    assert len(result.test) == generated["user_idx"].isin(result.cold_users).sum()
    assert_partition(result, generated)


def test_split_dispatches_by_name_and_names_valid_kinds(hand_ratings):
    by_name = split(hand_ratings, "random", seed=5, test_share=0.3)
    assert canonical(by_name.test).equals(canonical(random_split(hand_ratings, seed=5, test_share=0.3).test))
    with pytest.raises(ValueError, match=r"user_temporal.*cold_users"):
        split(hand_ratings, "temporal")


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_shares_outside_zero_one_are_refused(hand_ratings, share):
    with pytest.raises(ValueError, match="between 0 and 1"):
        user_temporal_split(hand_ratings, test_share=share)
    with pytest.raises(ValueError, match="between 0 and 1"):
        cold_item_split(hand_ratings, item_share=share)


def test_invariants_hold_on_generated_ratings(generated):
    temporal = user_temporal_split(generated, test_share=0.2, min_ratings=5)
    assert_partition(temporal, generated)
    assert_temporal_per_user(temporal)
    counts = generated.groupby("user_idx").size()
    expected_test = np.clip(np.floor(counts * 0.2 + 0.5), 1, counts - 1).where(counts >= 5, 0)
    assert (
        temporal.test.groupby("user_idx")
        .size()
        .reindex(counts.index, fill_value=0)
        .equals(expected_test.astype(np.int64))
    )
    assert temporal.excluded_users == int((counts < 5).sum())
    assert canonical(user_temporal_split(generated).test).equals(canonical(temporal.test))

    glob = global_temporal_split(generated)
    assert glob.train["timestamp"].max() < glob.test["timestamp"].min()
    assert abs(len(glob.test) / len(generated) - 0.2) < 0.01
    for kind in SPLITTERS:
        assert_partition(split(generated, kind), generated)


def test_a_user_sample_is_seeded_and_depends_only_on_the_set_of_ids():
    ids = np.arange(1000, 3000)
    chosen = sample_users(ids, 150, seed=7)
    assert len(chosen) == 150 and np.all(np.diff(chosen) > 0) and np.isin(chosen, ids).all()
    shuffled = np.random.default_rng(0).permutation(np.repeat(ids, 2))  # any order, repeated ids
    np.testing.assert_array_equal(sample_users(shuffled, 150, seed=7), chosen)
    assert not np.array_equal(sample_users(ids, 150, seed=8), chosen)
    np.testing.assert_array_equal(sample_users(ids[::-1], None, seed=7), ids)  # no limit: all, sorted
    np.testing.assert_array_equal(sample_users(ids, 5000, seed=7), ids)


def test_a_sampled_split_keeps_every_rating_of_the_kept_users_only(generated):
    outer = user_temporal_split(generated)
    users = np.unique(generated["user_id"])
    sampled = user_sample(outer, 40, seed=3)
    kept = sample_users(users, 40, seed=3)
    assert sampled.sample == {"users": 40, "of": len(users), "seed": 3}
    for part, whole in ((sampled.train, outer.train), (sampled.test, outer.test)):
        assert set(part["user_id"]) <= set(kept)
        expected = whole[whole["user_id"].isin(kept)]
        pd.testing.assert_frame_equal(canonical(part), canonical(expected.reset_index(drop=True)))
    assert (sampled.kind, sampled.params) == (outer.kind, outer.params)
    assert user_sample(outer, len(users), seed=3) is outer  # nothing to leave out
