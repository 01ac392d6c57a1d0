"""ServingBundle.because: the liked movie most similar to each recommendation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from inference.model import ServingBundle


def _bundle(item_vectors: np.ndarray) -> ServingBundle:
    n_items = len(item_vectors)
    counts = np.arange(n_items, 0, -1)
    return ServingBundle(
        user_ids=[10],
        item_ids=np.arange(1, n_items + 1),
        user_bias=[0.0],
        user_vectors=np.zeros((1, item_vectors.shape[1])),
        item_bias=np.zeros(n_items),
        item_vectors=item_vectors,
        seen=sp.csr_matrix((1, n_items)),
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame(
            {
                "movie_id": np.arange(1, n_items + 1),
                "title": [f"m{i}" for i in range(n_items)],
                "year": 2000,
                "genres": "Drama",
            }
        ),
    )


def test_because_picks_the_most_similar_liked_item_by_cosine_not_dot_product():
    vectors = np.array([[1.0, 0.0], [0.0, 10.0], [1.0, 0.1], [0.1, 1.0], [5.0, 5.0]], dtype=np.float32)
    bundle = _bundle(vectors)
    # item 4 is (5, 5): same cosine to both axes -> the first liked wins; item 2 is near item 0; item 3 near item 1.
    assert bundle.because(np.array([0, 1]), np.array([2, 3, 4, -1])).tolist() == [0, 1, 0, -1]
    assert bundle.because(np.array([1, 0]), np.array([2, 3])).tolist() == [0, 1]
    assert bundle.because(np.array([], dtype=np.int64), np.array([2, 3])).tolist() == [-1, -1]


def test_because_ignores_zero_vectors_without_nan():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.2]], dtype=np.float32)
    assert _bundle(vectors).because(np.array([0, 1]), np.array([2])).tolist() == [1]
