"""Item features for the hybrid model: one sparse row per catalogue item.

Groups (each switchable and weightable, so the tuner can choose):
  identity  - one column per item (LightFM's pure-CF part)
  genre     - MovieLens genres
  year      - release decade
  tag       - MovieLens user tags (only those a split allows, see `train_tags`)
  keyword, cast, director, language - TMDB metadata where it was joined
  text      - TF-IDF of overview + tags, on a bounded vocabulary

Anything fitted (the tag and text vocabularies, IDF weights) is fitted on the items of the
training interactions only, then applied to the whole catalogue, so a cold item still gets its
metadata features but held-out interactions shape nothing. Rows are L1-normalised after the
group weights are applied, as LightFM expects. The encoders shared with the served model
(`multi_hot`, `split_values`, `l1_normalise`) live in `inference.model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from inference.model import l1_normalise, multi_hot, split_values

ITEM_GROUPS = ("identity", "genre", "year", "tag", "keyword", "cast", "director", "language", "text")
DEFAULT_ITEM_GROUPS = {
    "identity": 1.0,
    "genre": 1.0,
    "year": 0.5,
    "tag": 0.5,
    "keyword": 0.5,
    "director": 0.5,
    "text": 0.5,
}


@dataclass
class FeatureMatrix:
    """Rows are entities (item_idx or user_idx), columns named features."""

    matrix: sp.csr_matrix
    names: list[str]
    # Column range of each group: {group: (start, stop)}
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    def vocabulary(self) -> pd.DataFrame:
        group_of = np.empty(len(self.names), dtype=object)
        for group, (start, stop) in self.groups.items():
            group_of[start:stop] = group
        return pd.DataFrame({"feature": self.names, "group": group_of})


def train_tags(tags: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """The tags a model may learn from: made by a user no later than that user's last training
    rating, and not on a (user, movie) pair held out for testing. Tags are interactions with
    timestamps; without this filter a test rating's tag would leak into the item's features."""
    if tags.empty:
        return tags
    cutoff = train.groupby("user_id", observed=True)["timestamp"].max().rename("cutoff")
    kept = tags.merge(cutoff, left_on="user_id", right_index=True, how="inner")
    kept = kept[kept["timestamp"] <= kept["cutoff"]].drop(columns="cutoff")
    held_out = pd.MultiIndex.from_frame(test[["user_id", "movie_id"]])
    pairs = pd.MultiIndex.from_frame(kept[["user_id", "movie_id"]])
    return kept[~pairs.isin(held_out)].reset_index(drop=True)


def _year_buckets(years: pd.Series) -> list[list[str]]:
    return [[f"{int(year) // 10 * 10}s"] if pd.notna(year) else [] for year in years]


def _frequent(lists: list[list[str]], fit_rows: np.ndarray, min_count: int, max_size: int) -> list[str]:
    """Values seen at least `min_count` times among the fitting rows, the `max_size` most frequent."""
    counts = pd.Series([value for row in fit_rows for value in dict.fromkeys(lists[row])], dtype=object).value_counts()
    counts = counts[counts >= min_count]
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max_size]
    return sorted(value for value, _ in ordered)


def item_features(
    items: pd.DataFrame,
    *,
    tags: pd.DataFrame | None = None,
    fit_items: np.ndarray | None = None,
    groups: dict[str, float] | None = None,
    min_count: int = 2,
    max_values: int = 5_000,
    text_max_features: int = 2_000,
) -> FeatureMatrix:
    """Build the item feature matrix (rows in item_idx order).

    items: canonical items table. tags: tags already filtered by `train_tags`. fit_items: item
    indices the vocabularies and IDF are fitted on (default: all items). groups: {group: weight};
    a group left out (or weighted 0) is off.
    """
    groups = DEFAULT_ITEM_GROUPS if groups is None else groups
    unknown = set(groups) - set(ITEM_GROUPS)
    if unknown:
        raise ValueError(f"unknown item feature groups {sorted(unknown)}; known: {ITEM_GROUPS}")
    items = items.sort_values("item_idx").reset_index(drop=True)
    n_items = len(items)
    fit_rows = np.arange(n_items) if fit_items is None else np.unique(fit_items)
    item_tags = _tags_per_item(items, tags)

    def build(group: str) -> tuple[sp.csr_matrix, list[str]]:
        if group == "identity":
            # Only items with training interactions get an identity column value: for a cold
            # item it would be an untrained random vector drowning its metadata.
            seen = np.zeros(n_items, dtype=np.float32)
            seen[fit_rows] = 1.0
            return sp.diags(seen, format="csr", dtype=np.float32), [f"item:{m}" for m in items["movie_id"]]
        if group == "text":
            return _text_block(items, item_tags, fit_rows, text_max_features)
        lists = _group_values(group, items, item_tags)
        # Fixed vocabularies (genres, decades, languages) need no minimum count.
        fitted = group in {"genre", "year", "language"}
        return multi_hot(lists, group, None if fitted else _frequent(lists, fit_rows, min_count, max_values))

    return assemble("item", ITEM_GROUPS, groups, build)


def assemble(
    entity: str,
    order: tuple[str, ...],
    groups: dict[str, float],
    build: Callable[[str], tuple[sp.csr_matrix, list[str]]],
) -> FeatureMatrix:
    """Concatenate the switched-on groups' blocks, each scaled by its weight, in `order`;
    then L1-normalise the rows."""
    blocks, names, spans = [], [], {}
    for group in order:
        weight = groups.get(group, 0.0)
        if not weight:
            continue
        block, block_names = build(group)
        start = len(names)
        blocks.append(block * np.float32(weight))
        names.extend(block_names)
        spans[group] = (start, len(names))
    if not blocks:
        raise ValueError(f"no {entity} feature group is switched on")
    return FeatureMatrix(l1_normalise(sp.hstack(blocks, format="csr", dtype=np.float32)), names, spans)


def _tags_per_item(items: pd.DataFrame, tags: pd.DataFrame | None) -> list[list[str]]:
    if tags is None or tags.empty:
        return [[] for _ in range(len(items))]
    normalised = tags.assign(tag=tags["tag"].astype(str).str.lower().str.strip())
    grouped = normalised.groupby("movie_id", observed=True)["tag"].apply(lambda values: sorted(set(values)))
    return [grouped.get(movie_id, []) for movie_id in items["movie_id"]]


def _group_values(group: str, items: pd.DataFrame, item_tags: list[list[str]]) -> list[list[str]]:
    if group == "genre":
        return split_values(items["genres"])
    if group == "year":
        return _year_buckets(items["year"])
    if group == "tag":
        return item_tags
    if group == "language":
        return [[str(value)] if pd.notna(value) else [] for value in items["original_language"]]
    column = {"keyword": "keywords", "cast": "cast", "director": "director"}[group]
    return split_values(items[column])


def _text_block(
    items: pd.DataFrame, item_tags: list[list[str]], fit_rows: np.ndarray, max_features: int
) -> tuple[sp.csr_matrix, list[str]]:
    overview = items["overview"].fillna("").astype(str).tolist()
    documents = [f"{text} {' '.join(tags)}".strip() for text, tags in zip(overview, item_tags, strict=True)]
    fitted_documents = [documents[row] for row in fit_rows]
    if not any(fitted_documents):
        return sp.csr_matrix((len(items), 0), dtype=np.float32), []
    vectorizer = TfidfVectorizer(
        max_features=max_features, stop_words="english", min_df=2 if len(fit_rows) > 50 else 1, dtype=np.float32
    )
    vectorizer.fit(fitted_documents)
    matrix = vectorizer.transform(documents).astype(np.float32).tocsr()
    return matrix, [f"text:{word}" for word in vectorizer.get_feature_names_out()]
