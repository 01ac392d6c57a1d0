import numpy as np
import pandas as pd
import pytest

from features.interactions import interaction_matrix, positives, rating_matrix

T0 = pd.Timestamp("2020-01-01", tz="UTC")
N_USERS, N_ITEMS = 4, 5  # larger than the indices used: the shape is the snapshot's, not the data's


@pytest.fixture
def ratings() -> pd.DataFrame:
    """(user_idx, item_idx, rating, days after T0); user 3 and item 4 have no ratings."""
    rows = [(0, 0, 5.0, 10), (0, 1, 3.5, 9), (0, 3, 4.0, 0), (1, 2, 4.5, 5), (2, 0, 4.0, 10), (2, 2, 1.0, 2)]
    frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating", "days"])
    return pd.DataFrame(
        {
            "user_id": (frame["user_idx"] + 1).astype(np.int32),
            "movie_id": (frame["item_idx"] * 10).astype(np.int32),
            "rating": frame["rating"].astype(np.float32),
            "timestamp": (T0 + pd.to_timedelta(frame["days"], unit="D")).astype("datetime64[s, UTC]"),
            "user_idx": frame["user_idx"].astype(np.int32),
            "item_idx": frame["item_idx"].astype(np.int32),
        }
    )


def dense(matrix) -> np.ndarray:
    return matrix.toarray()


def test_positives_keep_ratings_at_or_above_the_threshold(ratings):
    assert positives(ratings)["rating"].tolist() == [5.0, 4.0, 4.5, 4.0]
    assert len(positives(ratings, threshold=3.5)) == 5


def test_binary_interactions(ratings):
    matrix = interaction_matrix(ratings, N_USERS, N_ITEMS)
    assert matrix.shape == (N_USERS, N_ITEMS)
    assert matrix.dtype == np.float32
    expected = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    expected[0, 0] = expected[0, 3] = expected[1, 2] = expected[2, 0] = 1.0
    assert np.array_equal(dense(matrix), expected)
    assert dense(interaction_matrix(ratings, N_USERS, N_ITEMS, threshold=3.5))[0, 1] == 1.0


def test_rating_weight_divides_by_the_scale_max(ratings):
    matrix = dense(interaction_matrix(ratings, N_USERS, N_ITEMS, rating_weight=True))
    assert matrix[0, 0] == pytest.approx(1.0)
    assert matrix[0, 3] == pytest.approx(0.8)
    assert matrix[1, 2] == pytest.approx(0.9)
    assert dense(interaction_matrix(ratings, N_USERS, N_ITEMS, rating_weight=True, rating_max=10.0))[
        0, 0
    ] == pytest.approx(0.5)


def test_recency_halves_weight_every_half_life_before_the_latest_rating(ratings):
    # Latest rating is day 10: ages are 0 (0,0), 10 (0,3), 5 (1,2), 0 (2,0).
    matrix = dense(interaction_matrix(ratings, N_USERS, N_ITEMS, recency_half_life_days=10))
    assert matrix[0, 0] == pytest.approx(1.0)
    assert matrix[0, 3] == pytest.approx(0.5)
    assert matrix[1, 2] == pytest.approx(2**-0.5)
    assert matrix[2, 0] == pytest.approx(1.0)
    both = dense(interaction_matrix(ratings, N_USERS, N_ITEMS, rating_weight=True, recency_half_life_days=10))
    assert both[0, 3] == pytest.approx(0.8 * 0.5)
    later = dense(
        interaction_matrix(
            ratings, N_USERS, N_ITEMS, recency_half_life_days=10, reference_time=T0 + pd.Timedelta(days=20)
        )
    )
    assert later[0, 0] == pytest.approx(0.5)
    assert later[0, 3] == pytest.approx(0.25)


def test_recency_refuses_ratings_after_the_reference_time(ratings):
    with pytest.raises(ValueError, match="after reference_time"):
        interaction_matrix(ratings, N_USERS, N_ITEMS, recency_half_life_days=10, reference_time=T0)


def test_matrix_has_sorted_indices_and_no_stored_zeros(ratings):
    # A one-second half-life sends every weight but the latest ratings' to 0 in float32.
    matrix = interaction_matrix(ratings, N_USERS, N_ITEMS, recency_half_life_days=1 / 86_400)
    assert matrix.has_sorted_indices
    assert matrix.nnz == 2
    assert (matrix.data != 0).all()


def test_matrices_do_not_depend_on_row_order(ratings):
    shuffled = ratings.sample(frac=1, random_state=0)
    first = interaction_matrix(ratings, N_USERS, N_ITEMS, rating_weight=True, recency_half_life_days=3)
    second = interaction_matrix(shuffled, N_USERS, N_ITEMS, rating_weight=True, recency_half_life_days=3)
    for attribute in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(first, attribute), getattr(second, attribute))


def test_rating_matrix_holds_explicit_ratings(ratings):
    matrix = rating_matrix(ratings, N_USERS, N_ITEMS)
    assert matrix.shape == (N_USERS, N_ITEMS) and matrix.dtype == np.float32
    assert matrix.nnz == len(ratings)
    assert dense(matrix)[0, 1] == pytest.approx(3.5)
    assert dense(matrix)[2, 2] == pytest.approx(1.0)


def test_repeated_pairs_and_out_of_range_indices_are_refused(ratings):
    with pytest.raises(ValueError, match="repeated"):
        rating_matrix(pd.concat([ratings, ratings.iloc[:1]]), N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="out of range"):
        rating_matrix(ratings, N_USERS, 3)
