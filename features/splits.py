"""Train/test splits of canonical ratings. Pure functions: a ratings frame in, a `Split` out.

Five rules, each a function below and reachable by name through `split`:

* user_temporal   - per user, the latest share of their ratings is test (the usual "predict what a
                    user watches next" protocol); users with too few ratings stay in train.
* global_temporal - everything at/after one cutoff time is test (no rating from the future of any
                    test rating is seen in training, across users).
* random          - a seeded random share of rows.
* cold_items      - every rating of a seeded random share of the rated items is test.
* cold_users      - every rating of a seeded random share of the users is test.

`Split.params` holds exactly the keyword arguments that reproduce the split (the cutoff a global
split resolved to, not just the share that chose it), so `validation_split` can apply the same
rule again to the training part. Everything is vectorised (one sort at most), so ml-25m splits in
seconds; the same input and parameters always give the same split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass
class Split:
    train: pd.DataFrame  # canonical ratings rows, in input order
    test: pd.DataFrame
    kind: str  # a key of SPLITTERS
    params: dict  # keyword arguments that reproduce the split with SPLITTERS[kind]
    excluded_users: int = 0  # users kept out of the rule (user_temporal: too few ratings)
    cold_items: np.ndarray | None = None  # sorted item_idx held out entirely (cold_items)
    cold_users: np.ndarray | None = None  # sorted user_idx held out entirely (cold_users)
    sample: dict | None = None  # {"users": n, "of": total, "seed": s}: only a seeded sample of users kept


def _check_share(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _share_count(share: float, total: np.ndarray | int) -> np.ndarray | int:
    """round(share * total), halves up, and at least 1 and at most total - 1 (both sides non-empty)."""
    count = np.floor(np.asarray(total) * share + 0.5).astype(np.int64)
    return np.clip(count, 1, np.maximum(np.asarray(total) - 1, 1))


def _epoch_seconds(timestamps: pd.Series) -> np.ndarray:
    return ((timestamps - _EPOCH) // pd.Timedelta(1, "s")).to_numpy(np.int64)


def _utc(moment: pd.Timestamp | str) -> pd.Timestamp:
    """A cutoff as a UTC timestamp; a naive one is taken to be UTC, as canonical timestamps are."""
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")


def _divide(ratings: pd.DataFrame, test_mask: np.ndarray, kind: str, params: dict, **extra) -> Split:
    return Split(
        train=ratings.loc[~test_mask].reset_index(drop=True),
        test=ratings.loc[test_mask].reset_index(drop=True),
        kind=kind,
        params=params,
        **extra,
    )


def _time_order(users: np.ndarray, seconds: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Row order by (user, time, movie_id).

    np.lexsort on three 25M-row keys takes ~15 s; one stable argsort of a packed (user, time) key
    takes ~5 s. Stability makes movie_id break time ties, provided rows are already ordered by
    (user, movie_id) - as canonical ratings are - so other input is first put in that order.
    """
    span = int(seconds.max() - seconds.min()) if len(seconds) else 0
    shift = max(span.bit_length(), 31)  # movie_id (int32) must fit too, for the pre-sort key
    if int(users.max(initial=0)).bit_length() + shift > 63:
        return np.lexsort((movies, seconds, users))
    high = users.astype(np.int64) << shift
    by_movie = high | movies.astype(np.int64)
    order = None
    if len(by_movie) > 1 and not (by_movie[1:] >= by_movie[:-1]).all():
        order = np.argsort(by_movie, kind="stable")
    by_time = high | (seconds - seconds.min(initial=0))
    if order is None:
        return np.argsort(by_time, kind="stable")
    return order[np.argsort(by_time[order], kind="stable")]


def user_temporal_split(ratings: pd.DataFrame, *, test_share: float = 0.2, min_ratings: int = 5) -> Split:
    """Per user, the latest round(test_share * n) of their n ratings go to test.

    At least one rating goes to test and at least one stays in train. Equal timestamps are
    ordered by movie_id, so the split is deterministic. Users with fewer than `min_ratings`
    ratings are too thin to evaluate on: they stay entirely in train and are counted in
    `excluded_users`.
    """
    _check_share("test_share", test_share)
    if min_ratings < 2:
        raise ValueError(f"min_ratings must be at least 2 (one train and one test rating), got {min_ratings}")
    users = ratings["user_idx"].to_numpy(np.int64)
    order = _time_order(users, _epoch_seconds(ratings["timestamp"]), ratings["movie_id"].to_numpy(np.int64))
    counts = np.bincount(users, minlength=1)
    sorted_users = users[order]
    # Position of each sorted row within its user's run, and how many of that user's rows are test.
    position = np.arange(len(order)) - (np.cumsum(counts) - counts)[sorted_users]
    user_counts = counts[sorted_users]
    test_sorted = (position >= user_counts - _share_count(test_share, user_counts)) & (user_counts >= min_ratings)
    test_mask = np.empty(len(order), dtype=bool)
    test_mask[order] = test_sorted
    excluded = int(((counts > 0) & (counts < min_ratings)).sum())
    params = {"test_share": test_share, "min_ratings": min_ratings}
    return _divide(ratings, test_mask, "user_temporal", params, excluded_users=excluded)


def global_temporal_split(
    ratings: pd.DataFrame, *, cutoff: pd.Timestamp | None = None, test_share: float = 0.2
) -> Split:
    """Ratings at or after `cutoff` are test.

    Without a cutoff, it is the timestamp of the round(test_share * n)-th latest rating, so about
    test_share of the ratings (more if several share that timestamp) fall at or after it.
    `params["cutoff"]` is always the cutoff used.
    """
    if cutoff is None:
        _check_share("test_share", test_share)
        seconds = _epoch_seconds(ratings["timestamp"])
        rank = len(seconds) - int(_share_count(test_share, len(seconds)))
        cutoff = _EPOCH + pd.Timedelta(int(np.partition(seconds, rank)[rank]), "s")
    cutoff = _utc(cutoff)
    test_mask = (ratings["timestamp"] >= cutoff).to_numpy(bool)
    return _divide(ratings, test_mask, "global_temporal", {"cutoff": cutoff, "test_share": test_share})


def random_split(ratings: pd.DataFrame, *, test_share: float = 0.2, seed: int = 0) -> Split:
    """A seeded random round(test_share * n) of the rows are test (drawn over rows in input order)."""
    _check_share("test_share", test_share)
    rows = len(ratings)
    test_mask = np.zeros(rows, dtype=bool)
    if rows > 1:
        chosen = np.random.default_rng(seed).choice(rows, size=int(_share_count(test_share, rows)), replace=False)
        test_mask[chosen] = True
    return _divide(ratings, test_mask, "random", {"test_share": test_share, "seed": seed})


def _hold_out(ratings: pd.DataFrame, column: str, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw round(share * k) of the k distinct values of `column`; return them sorted and the test mask."""
    values = ratings[column].to_numpy(np.int64)
    distinct = np.unique(values)
    held = np.empty(0, dtype=np.int64)
    if len(distinct) > 1:
        count = int(_share_count(share, len(distinct)))
        held = np.sort(np.random.default_rng(seed).choice(distinct, size=count, replace=False))
    return held, np.isin(values, held)


def cold_item_split(ratings: pd.DataFrame, *, item_share: float = 0.1, seed: int = 0) -> Split:
    """Every rating of a seeded random round(item_share * k) of the k rated items is test.

    Those items never appear in train, which is what a model's cold-start path is tested on.
    """
    _check_share("item_share", item_share)
    held, test_mask = _hold_out(ratings, "item_idx", item_share, seed)
    return _divide(ratings, test_mask, "cold_items", {"item_share": item_share, "seed": seed}, cold_items=held)


def cold_user_split(ratings: pd.DataFrame, *, user_share: float = 0.1, seed: int = 0) -> Split:
    """Every rating of a seeded random round(user_share * k) of the k users is test."""
    _check_share("user_share", user_share)
    held, test_mask = _hold_out(ratings, "user_idx", user_share, seed)
    return _divide(ratings, test_mask, "cold_users", {"user_share": user_share, "seed": seed}, cold_users=held)


SPLITTERS: dict[str, Callable[..., Split]] = {
    "user_temporal": user_temporal_split,
    "global_temporal": global_temporal_split,
    "random": random_split,
    "cold_items": cold_item_split,
    "cold_users": cold_user_split,
}


def split(ratings: pd.DataFrame, kind: str, **params) -> Split:
    """Split by the rule named `kind` (a key of SPLITTERS) with its keyword arguments."""
    if kind not in SPLITTERS:
        raise ValueError(f"unknown split kind {kind!r}; valid kinds: {', '.join(SPLITTERS)}")
    return SPLITTERS[kind](ratings, **params)


def validation_split(split: Split, **same_rule_kwargs) -> Split:
    """Carve a validation split out of `split.train` by the rule that made `split`, for tuning.

    The test part is never looked at. Keyword arguments override the original parameters. A
    global split's cutoff is not reused unless given, since train holds nothing at or after it:
    a new one is chosen from train by the same test_share.
    """
    params = dict(split.params)
    if split.kind == "global_temporal":
        params["cutoff"] = None
    params.update(same_rule_kwargs)
    return SPLITTERS[split.kind](split.train, **params)


def sample_users(user_ids: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """The distinct `user_ids`, sorted; or, when there are more than `size`, a seeded sample of
    `size` of them, the same for the same set of ids whatever their order or repetitions."""
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    if size is None or len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))


def user_sample(split: Split, size: int | None, seed: int) -> Split:
    """`split` with only the ratings (train and test) of `sample_users` of its users: a smaller
    problem of the same shape (each kept user keeps all their ratings). As it is with no more
    users than `size`."""
    users = np.concatenate([split.train["user_id"].to_numpy(np.int64), split.test["user_id"].to_numpy(np.int64)])
    total = len(np.unique(users))
    kept = sample_users(users, size, seed)
    if len(kept) == total:
        return split

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.loc[np.isin(frame["user_id"].to_numpy(np.int64), kept)].reset_index(drop=True)

    return replace(
        split, train=keep(split.train), test=keep(split.test), sample={"users": len(kept), "of": total, "seed": seed}
    )


def protocol_split(ratings: pd.DataFrame, kind: str, *, test_share: float, min_ratings: int, seed: int) -> Split:
    """The held-out split of the training protocol: rule `kind` (user_temporal, global_temporal
    or random) given the protocol's parameters that rule takes (`min_ratings` only for
    user_temporal, `seed` only for random)."""
    params: dict = {"test_share": test_share}
    if kind == "user_temporal":
        params["min_ratings"] = min_ratings
    if kind == "random":
        params["seed"] = seed
    return split(ratings, kind, **params)


def every_rating(ratings: pd.DataFrame) -> Split:
    """The "split" of what is served: every rating trains, nothing is held out."""
    return Split(train=ratings, test=ratings.iloc[:0], kind="every_rating", params={})
