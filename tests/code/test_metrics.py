"""models.metrics: every metric on a hand-computed example, NDCG/MAP/AUC against independent
implementations on random data, the leakage guard, and segments."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import ndcg_score, roc_auc_score

from models.metrics import activity_segments, auc, ranking_metrics, segment_metrics

LOG2_3 = math.log2(3)

# Hand example: 8 items, k = 3, five users.
#   user 0: test {0, 2}        recommended [0, 1, 2]    rel [1, 0, 1]
#   user 1: test {5}           recommended [3, 5, -1]   rel [0, 1, 0]
#   user 2: no test positives  recommended [6, 7, 1]    -> excluded, counted
#   user 3: test {1, 3, 4, 5}  recommended [2, 0, 4]    rel [0, 0, 1]
#   user 4: test {0}           recommended [-1, -1, -1] -> 0 on every per-user metric
TEST_POSITIVES = {0: [0, 2], 1: [5], 2: [], 3: [1, 3, 4, 5], 4: [0]}
RECOMMENDED = np.array([[0, 1, 2], [3, 5, -1], [6, 7, 1], [2, 0, 4], [-1, -1, -1]])
N_ITEMS = 8
# Popularity shares out of 16: item 0 and 5 -> 1/4 (2 bits), 1, 2, 7 -> 1/8 (3 bits),
# 3, 4 -> 1/16 (4 bits), 6 unseen -> counted once -> 1/16 (4 bits).
POPULARITY = np.array([4, 2, 2, 1, 1, 4, 0, 2])
GENRES = sp.csr_matrix(
    np.array(
        [
            [1, 0, 0],  # item 0
            [1, 0, 0],  # item 1
            [0, 1, 0],  # item 2
            [1, 1, 0],  # item 3
            [0, 0, 0],  # item 4: no genres
            [1, 0, 0],  # item 5
            [0, 0, 1],  # item 6
            [0, 0, 1],  # item 7
        ]
    )
)


def as_matrix(positives: dict[int, list[int]], n_items: int = N_ITEMS) -> sp.csr_matrix:
    rows = [user for user, items in positives.items() for _ in items]
    cols = [item for items in positives.values() for item in items]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(positives), n_items))


TEST = as_matrix(TEST_POSITIVES)


def test_hand_computed_example():
    metrics = ranking_metrics(RECOMMENDED, TEST, k=3, item_popularity=POPULARITY, item_genres=GENRES, n_items=N_ITEMS)
    # Evaluated users 0, 1, 3, 4; user 2 has no test positives.
    assert metrics["n_users_evaluated"] == 4
    assert metrics["users_without_test_positives"] == 1
    # precision: hits / k = 2/3, 1/3, 1/3, 0
    assert metrics["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 0) / 4)
    # recall: hits / |test| = 2/2, 1/1, 1/4, 0
    assert metrics["recall@3"] == pytest.approx((1 + 1 + 0.25 + 0) / 4)
    # ndcg: user 0 DCG = 1/log2(2) + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3)
    #       user 1 DCG = 1/log2(3), IDCG = 1
    #       user 3 DCG = 1/log2(4) = 0.5, IDCG over min(4, 3) = 3 hits = 1 + 1/log2(3) + 1/2
    ndcg = [1.5 / (1 + 1 / LOG2_3), 1 / LOG2_3, 0.5 / (1.5 + 1 / LOG2_3), 0.0]
    assert metrics["ndcg@3"] == pytest.approx(sum(ndcg) / 4)
    # map: user 0 (1/1 + 2/3) / 2, user 1 (1/2) / 1, user 3 (1/3) / min(4, 3)
    assert metrics["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5 + (1 / 3) / 3 + 0) / 4)
    # mrr: first hit at ranks 1, 2, 3, none
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert metrics["hit_rate@3"] == pytest.approx(3 / 4)
    # coverage: items {0, 1, 2, 3, 4, 5} over the evaluated users (user 2's 6 and 7 do not count)
    assert metrics["coverage@3"] == pytest.approx(6 / 8)
    # novelty in bits: user 0 (2 + 3 + 3) / 3, user 1 (4 + 2) / 2, user 3 (3 + 2 + 4) / 3, user 4 0
    assert metrics["novelty@3"] == pytest.approx((8 / 3 + 3 + 3 + 0) / 4)
    # diversity: user 0 pairs (0,1) 0, (0,2) 1, (1,2) 1 -> 2/3;
    #            user 1 pair (3,5): 1 - cos([1,1,0], [1,0,0]) = 1 - 1/sqrt(2);
    #            user 3 pairs all 1 (2 vs 0 orthogonal, item 4 has no genres); user 4 0
    assert metrics["diversity@3"] == pytest.approx((2 / 3 + (1 - 1 / math.sqrt(2)) + 1 + 0) / 4)


def test_optional_metrics_absent_without_inputs_and_rows_follow_users():
    order = np.array([3, 0, 4, 2, 1])
    permuted = ranking_metrics(RECOMMENDED[order], TEST, k=3, users=order)
    plain = ranking_metrics(RECOMMENDED, TEST, k=3)
    assert permuted == pytest.approx(plain)
    assert "novelty@3" not in plain and "diversity@3" not in plain


def test_only_the_first_k_columns_count():
    wide = np.array([[1, 3, 0]])  # the hit at rank 3 is outside k = 2
    metrics = ranking_metrics(wide, as_matrix({0: [0]}, 4), k=2)
    assert metrics["hit_rate@2"] == 0.0 and metrics["ndcg@2"] == 0.0


def test_leakage_guard_raises():
    train = as_matrix({0: [1], 1: [], 2: [], 3: [], 4: []})  # user 0 was recommended item 1
    with pytest.raises(ValueError, match="training data"):
        ranking_metrics(RECOMMENDED, TEST, k=3, train=train)
    clean = as_matrix({0: [7], 1: [0], 2: [], 3: [3], 4: [2]})
    assert ranking_metrics(RECOMMENDED, TEST, k=3, train=clean)["n_users_evaluated"] == 4


def test_rejects_repeated_and_out_of_range_items():
    with pytest.raises(ValueError, match="repeats"):
        ranking_metrics(np.array([[1, 1, 2]]), TEST[:1], k=3)
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[1, 8, 2]]), TEST[:1], k=3)


def random_case(seed, n_users=40, n_items=50, k=10, density=0.08):
    rng = np.random.default_rng(seed)
    test = sp.csr_matrix((rng.random((n_users, n_items)) < density).astype(np.float64))
    recommended = np.stack([rng.choice(n_items, size=k, replace=False) for _ in range(n_users)])
    return rng, test, recommended


@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_sklearn(seed):
    _, test, recommended = random_case(seed)
    k = recommended.shape[1]
    dense = test.toarray()
    evaluated = dense.sum(axis=1) > 0
    # Scores whose ranking is the recommended order: k, k-1, ..., 1 for the list, 0 elsewhere.
    y_score = np.zeros_like(dense)
    np.put_along_axis(y_score, recommended, np.arange(k, 0, -1, dtype=np.float64)[None, :], axis=1)
    expected = ndcg_score(dense[evaluated], y_score[evaluated], k=k)
    assert ranking_metrics(recommended, test, k=k)[f"ndcg@{k}"] == pytest.approx(expected)


def textbook_map(recommended, positives, k):
    """AP@k = (1 / min(|R|, k)) * sum over ranks i <= k with a hit of (hits in top i) / i."""
    average_precisions = []
    for items, relevant in zip(recommended, positives, strict=True):
        if not relevant:
            continue
        hits, total = 0, 0.0
        for rank, item in enumerate(items[:k], start=1):
            if item in relevant:
                hits += 1
                total += hits / rank
        average_precisions.append(total / min(len(relevant), k))
    return sum(average_precisions) / len(average_precisions)


@pytest.mark.parametrize("seed", range(5))
def test_map_matches_textbook_loop(seed):
    _, test, recommended = random_case(seed, density=0.3)
    recommended[::7, 5:] = -1  # some short lists
    positives = [set(np.flatnonzero(row)) for row in test.toarray()]
    expected = textbook_map(recommended.tolist(), positives, k=8)
    assert ranking_metrics(recommended, test, k=8)["map@8"] == pytest.approx(expected)


@pytest.mark.parametrize("restrict_items", [False, True])
def test_auc_matches_sklearn_per_user(restrict_items):
    rng = np.random.default_rng(11)
    n_users, n_items = 30, 40
    test = sp.csr_matrix((rng.random((n_users, n_items)) < 0.15).astype(np.float64))
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float64))
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float64)  # many ties
    items = np.sort(rng.choice(n_items, 20, replace=False)) if restrict_items else None

    expected = []
    candidates = np.arange(n_items) if items is None else items
    for user in range(n_users):
        keep = candidates[train[user, candidates].toarray().ravel() == 0]
        labels = test[user, keep].toarray().ravel() > 0
        if 0 < labels.sum() < len(labels):
            expected.append(roc_auc_score(labels, scores[user, keep]))

    assert auc(scores, test, train, items=items) == pytest.approx(np.mean(expected))


def test_auc_rows_follow_users_and_ties_count_half():
    test = as_matrix({0: [2], 1: [0, 1]}, 4)
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 9.0, 5.0]])  # row 0 is user 1
    # Both users rank their positives above every negative.
    assert auc(scores, test, users=np.array([1, 0])) == pytest.approx(1.0)
    # User 0's positive item 2 at 1.0 vs negatives 0 (0.0: win), 1 (1.0: tie, 0.5), 3 (5.0: loss).
    tied = np.array([[0.0, 1.0, 1.0, 5.0]])
    assert auc(tied, test, users=np.array([0])) == pytest.approx(1.5 / 3)


def test_segment_metrics_equal_metrics_on_each_subset():
    segments = {"first": np.array([0, 1]), "rest": np.array([2, 3, 4])}
    table = segment_metrics(RECOMMENDED, TEST, k=3, segments=segments, item_popularity=POPULARITY)
    assert list(table.index) == ["first", "rest"]
    first = ranking_metrics(RECOMMENDED[:2], TEST, k=3, users=np.array([0, 1]), item_popularity=POPULARITY)
    assert table.loc["first"].to_dict() == pytest.approx(first)
    assert table.loc["rest", "users_without_test_positives"] == 1
    assert table.loc["rest", "n_users_evaluated"] == 2


def test_activity_segments_by_train_count():
    # Train counts: user 0 -> 0, user 1 -> 4, user 2 -> 5, user 3 -> 25.
    counts = [0, 4, 5, 25]
    train = sp.csr_matrix(np.array([[1] * c + [0] * (30 - c) for c in counts]))
    segments = activity_segments(train, np.array([3, 2, 1, 0]))
    assert list(segments) == ["0-4", "5-19", "20-99", "100+"]
    np.testing.assert_array_equal(segments["0-4"], [1, 0])
    np.testing.assert_array_equal(segments["5-19"], [2])
    np.testing.assert_array_equal(segments["20-99"], [3])
    assert segments["100+"].size == 0
