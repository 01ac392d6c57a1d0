"""Benchmark: the top-k kernel (`inference.model.top_k` over `factor_scores`) beside a plain numpy
matrix product of the same shape, at MovieLens-25M's catalogue size.

What every ranking in the project costs (evaluation, the gate, the export, the API's batches):
scores for a batch of users (one product with the biases riding on it), each user's rated items
masked, the k best selected. The plain product `users @ items.T` is the floor; the target is at
most 2x it. Random factors, 64 dimensions, 5-300 rated items per user, batches of
`inference.model.BATCH_SIZE` users, best of 3. Then the cost per user of the API's
micro-batches: 1 (a lone request), 8, 32 and 64 users per product.

Usage: .venv/bin/python bench/topk.py [--users 8192] [--items 59047] [--dims 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from inference.model import BATCH_SIZE, factor_scores, item_side, top_k


def best_of(function, repeats: int = 3) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main(n_users: int, n_items: int, dims: int) -> None:
    rng = np.random.default_rng(0)
    user_vectors = rng.normal(size=(n_users, dims)).astype(np.float32)
    item_vectors = rng.normal(size=(n_items, dims)).astype(np.float32)
    user_bias = rng.normal(size=n_users).astype(np.float32)
    items = item_side(item_vectors, rng.normal(size=n_items).astype(np.float32))
    counts = rng.integers(5, 300, n_users)
    rows = np.repeat(np.arange(n_users), counts)
    seen = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, rng.integers(0, n_items, len(rows)))), shape=(n_users, n_items)
    )
    seen.sum_duplicates()
    batches = [np.arange(start, min(start + BATCH_SIZE, n_users)) for start in range(0, n_users, BATCH_SIZE)]

    def product() -> None:
        for users in batches:
            user_vectors[users] @ item_vectors.T

    def scores() -> None:
        for users in batches:
            factor_scores(user_vectors, user_bias, items, users)

    def ranked(k: int) -> None:
        for users in batches:
            top_k(factor_scores(user_vectors, user_bias, items, users), k, seen, users, in_place=True)

    plain = best_of(product)
    print(f"{n_users:,} users x {n_items:,} items, {dims} dims, batches of {BATCH_SIZE}, best of 3:")
    print(f"  plain numpy product          {plain * 1000:7.0f} ms")
    print(f"  scores (biases included)     {best_of(scores) * 1000:7.0f} ms")
    for k in (10, 20, 100):
        seconds = best_of(lambda k=k: ranked(k))
        print(
            f"  top-{k:<3} (scores, mask, select) {seconds * 1000:5.0f} ms = {seconds / plain:.2f}x the product, "
            f"{n_users / seconds:,.0f} users/s"
        )
    # The API's micro-batches (movierec.serving.batching): a lone request pays a whole pass over
    # the item matrix for one row of scores; a batch shares it.
    api_users = min(n_users, 1024)
    print(f"  the API's micro-batches, top-10 of {api_users:,} users:")
    for size in (1, 8, 32, 64):
        groups = [np.arange(start, min(start + size, api_users)) for start in range(0, api_users, size)]

        def batched(groups: list[np.ndarray] = groups) -> None:
            for users in groups:
                top_k(factor_scores(user_vectors, user_bias, items, users), 10, seen, users, in_place=True)

        print(f"    {size:>3} users per product: {best_of(batched) / api_users * 1000:6.3f} ms per user")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8192)
    parser.add_argument("--items", type=int, default=59_047)
    parser.add_argument("--dims", type=int, default=64)
    arguments = parser.parse_args()
    main(arguments.users, arguments.items, arguments.dims)
