"""The blend: the tuned hybrid's scores combined with collaborative item-item scorers (EASE,
item kNN), each standardised per user, with weights chosen on the validation split.

Pure functions of fitted models and prepared data. The blend is served by `ServingBundle`'s
scoring recipe (`inference.model`: "factors" for the hybrid, the item-item matrices by name), so
what is tuned here is what the bundle computes: the served code's `blended` and `top_k`.

Search: every weight vector on the simplex with steps of `step` (0.1: 66 vectors for three
components), NDCG@k on the validation part for each; the best wins, ties going to the earlier
vector in the grid's fixed order. EASE's L2 strength is chosen first on the same validation
part (`tune_ease`), among `EASE_L2_GRID`: the blend's EASE is the best EASE validation finds,
while the EASE baseline of the report keeps its default. Then the item-item models' inputs: a
user's positives weighted by recency, 0.5 ** (rank / half-life) with rank 0 for the latest
(`features.interactions.recency_ranked`), the half-life chosen on validation among
`HALF_LIFE_GRID` (`tune_half_life`; None keeps them unweighted). The models are fitted on the
unweighted positives either way; only what they read at scoring time is weighted. Last, how much
the content model decides for movies without a rating (`tune_unrated_content_weight`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import recency_ranked
from features.prepare import Prepared
from inference.model import FACTORS, ServingBundle, blended, standardise, top_k
from models.baselines import EASE, ItemKNN
from models.evaluation import ndcg

# The blend's components: the hybrid (as the bundle's factors) and these item-item scorers.
ITEM_ITEM = ("ease", "item_knn")
COMPONENTS = (FACTORS, *ITEM_ITEM)
EASE_L2_GRID = (100.0, 200.0, 400.0)
# Recency half-lives (in a user's positives, latest first) of the item-item models' inputs.
HALF_LIFE_GRID = (None, 5.0, 10.0, 20.0, 40.0)
WEIGHT_STEP = 0.1
# The content model's say over movies nobody has rated, from none (the recipe's own scores) to
# all of it. Ties go to the larger: the content model ranks such movies at least as well as the
# hybrid does (cold-item AUC 0.73 / 0.85 vs 0.71 / 0.85 on ml-100k / ml-latest-small), while
# the item-item models know nothing of them.
UNRATED_CONTENT_WEIGHTS = (0.0, 0.5, 1.0)


def ndcg_of_scores(scores: np.ndarray, prepared: Prepared, users: np.ndarray, k: int) -> float:
    """NDCG@k of the top-k of `scores` (rows: `users`), training items excluded."""
    return ndcg(top_k(scores, k, prepared.seen, users)[0], prepared, users, k)


def tune_ease(
    prepared: Prepared, users: np.ndarray, k: int, grid: tuple[float, ...] = EASE_L2_GRID
) -> tuple[float, EASE]:
    """The L2 strength of `grid` whose EASE, fitted on `prepared.train`, scores the best NDCG@k
    on `prepared.test` (ties: the first), and that fitted EASE."""
    best = None
    for l2 in grid:
        model = EASE(l2=l2).fit(prepared.train)
        score = ndcg_of_scores(model.scores(users), prepared, users, k)
        if best is None or score > best[0]:
            best = (score, l2, model)
    return best[1], best[2]


def tune_half_life(
    item_item: Mapping[str, sp.csr_matrix],
    prepared: Prepared,
    users: np.ndarray,
    k: int,
    threshold: float,
    grid: tuple[float | None, ...] = HALF_LIFE_GRID,
) -> float | None:
    """The recency half-life of `grid` (None: unweighted) under which the item-item models (as
    served: `item_item` matrices, scores = weighted positives @ matrix) score the best mean
    NDCG@k on `prepared.test` (ties: the first)."""
    train = prepared.split.train
    scores = {}
    for half_life in grid:
        inputs = recency_ranked(train, prepared.n_users, prepared.n_items, threshold=threshold, half_life=half_life)
        rows = inputs[users]
        scores[half_life] = np.mean(
            [
                ndcg_of_scores(np.asarray((rows @ matrix).toarray(), np.float32), prepared, users, k)
                for matrix in item_item.values()
            ]
        )
    return max(grid, key=lambda half_life: scores[half_life])


def item_item_models(
    prepared: Prepared, ease_l2: float | None, names: Iterable[str] = ITEM_ITEM, fitted: Mapping | None = None
) -> dict:
    """The blend's item-item scorers `names` fitted on `prepared.train`, by component name;
    `fitted` ones (on the same data, e.g. `tune_ease`'s EASE) are taken as they are."""
    makers = {"ease": lambda: EASE(l2=ease_l2), "item_knn": ItemKNN}
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"no item-item scorer named {sorted(unknown)}; the blend's are {list(makers)}")
    if "ease" in names and ease_l2 is None:
        raise ValueError("the blend's EASE needs its l2 strength")
    # A fitted model is reused only when it is the one asked for (the EASE baseline has its own l2).
    reusable = {
        name: model
        for name, model in (fitted or {}).items()
        if isinstance(model, EASE if name == "ease" else ItemKNN)
        and (name != "ease" or model.l2 == ease_l2)
        and (name != "item_knn" or (model.k_neighbors, model.shrink) == (ItemKNN().k_neighbors, ItemKNN().shrink))
    }
    return {name: reusable[name] if name in reusable else makers[name]().fit(prepared.train) for name in names}


def weight_grid(names: tuple[str, ...], step: float = WEIGHT_STEP) -> list[dict[str, float]]:
    """Every weight vector over `names` with weights in multiples of `step` summing to 1, zero
    weights left out; in lexicographic order of the weight tuples, largest first."""
    steps = round(1 / step)
    vectors = [counts for counts in itertools.product(range(steps, -1, -1), repeat=len(names)) if sum(counts) == steps]
    return [{name: count / steps for name, count in zip(names, counts, strict=True) if count} for counts in vectors]


def tune_weights(
    component_scores: Mapping[str, np.ndarray], prepared: Prepared, users: np.ndarray, k: int, step: float = WEIGHT_STEP
) -> tuple[dict[str, float], pd.DataFrame]:
    """The weights (see `weight_grid`) whose blend of `component_scores` (each: rows `users`,
    all items) scores the best NDCG@k on `prepared.test`; and every vector's score, best first."""
    standardised = {name: standardise(scores) for name, scores in component_scores.items()}
    rows = []
    for weights in weight_grid(tuple(component_scores), step):
        # Standardised once, outside the loop.
        total = blended(standardised.__getitem__, weights, normalise=np.asarray)
        rows.append({"weights": weights, f"ndcg@{k}": ndcg_of_scores(total, prepared, users, k)})
    table = pd.DataFrame(rows)
    best = int(table[f"ndcg@{k}"].to_numpy().argmax())  # first maximum: the earlier vector
    ordered = table.iloc[np.argsort(-table[f"ndcg@{k}"].to_numpy(), kind="stable")].reset_index(drop=True)
    return dict(table.loc[best, "weights"]), ordered


def tune_unrated_content_weight(
    bundle: ServingBundle, prepared: Prepared, users: np.ndarray, k: int
) -> tuple[float, dict[float, float]]:
    """How much say the content model has over the movies `bundle` knows no rating of
    (`ServingBundle.place_unrated`): the weight in `UNRATED_CONTENT_WEIGHTS` whose bundle scores
    the best NDCG@k on `prepared.test` (rows: `users`), ties going to the larger weight; and each
    weight's NDCG@k."""
    scores = {}
    for weight in UNRATED_CONTENT_WEIGHTS:
        candidate = replace(bundle, unrated_content_weight=weight)
        scores[weight] = ndcg(candidate.recommend(users, k, prepared.seen)[0], prepared, users, k)
    return max(scores, key=lambda weight: (scores[weight], weight)), scores


def served_item_item(models: Mapping[str, object]) -> dict[str, sp.csr_matrix]:
    """Each fitted item-item model as the sparse matrix the bundle scores with."""
    return {name: model.item_item() for name, model in models.items()}
