"""movierec.serve.top_one selects exactly what models.topk.top_k selects for one row."""

from __future__ import annotations

import numpy as np
import pytest

from models.topk import PAD_ITEM, top_k
from movierec.serve import top_one


@pytest.mark.parametrize("seed", range(30))
def test_top_one_equals_top_k_with_ties_and_exclusions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = rng.integers(0, 6, n).astype(np.float32)  # many ties
    scores[rng.random(n) < 0.3] = -np.inf  # excluded items
    k = int(rng.integers(1, 80))
    items, values = top_k(scores[None, :], k)
    mine, mine_values = top_one(scores.copy(), k)
    keep = items[0] != PAD_ITEM
    assert mine.tolist() == items[0][keep].tolist()
    assert mine_values.tolist() == values[0][keep].tolist()
