"""movierec.tracking.reports: metric curves on a hand-computed case, figure structure, importances'
fallbacks, popularity deciles, and the model card's Markdown."""

import io
import math
import re

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg

from movierec.tracking.reports import (
    item_popularity_deciles,
    metric_curves,
    model_card,
    plot_metric_curves,
    plot_optimisation_history,
    plot_param_importances,
    plot_popularity_coverage,
    popularity_decile_shares,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
LOG2_3 = math.log2(3)

# Hand example: 4 items, test matrix over 3 users, lists for users [2, 0] (row order != user id).
#   user 2: positives {1, 3}   model a ranks [1, 0, 3, 2]   rel [1, 0, 1, 0]
#   user 0: positives {2}      model a ranks [0, 2, 1, 3]   rel [0, 1, 0, 0]
#   user 1: positives {0}      not evaluated (no list)
# Model b ranks every list in reverse.
TEST = sp.csr_matrix(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1]]))
USERS = np.array([2, 0])
A = np.array([[1, 0, 3, 2], [0, 2, 1, 3]])
B = A[:, ::-1].copy()


def test_metric_curves_match_the_hand_computed_case():
    curves = metric_curves({"a": A, "b": B}, TEST, USERS, n_items=4, ks=(1, 2, 4))
    assert list(curves.columns) == ["model", "k", "ndcg", "recall", "precision", "map"]
    assert list(zip(curves["model"], curves["k"], strict=True)) == [
        ("a", 1),
        ("a", 2),
        ("a", 4),
        ("b", 1),
        ("b", 2),
        ("b", 4),
    ]
    a = curves[curves["model"] == "a"].set_index("k")
    # k=1: user 2 hits at rank 1 (NDCG 1, recall 1/2, AP 1); user 0 misses.
    assert a.loc[1, "ndcg"] == pytest.approx(0.5)
    assert a.loc[1, "recall"] == pytest.approx(0.25)
    assert a.loc[1, "precision"] == pytest.approx(0.5)
    assert a.loc[1, "map"] == pytest.approx(0.5)
    # k=2: user 2 DCG 1 over ideal 1 + 1/log2(3); user 0 DCG 1/log2(3) over ideal 1.
    assert a.loc[2, "ndcg"] == pytest.approx((1 / (1 + 1 / LOG2_3) + 1 / LOG2_3) / 2)
    assert a.loc[2, "recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert a.loc[2, "precision"] == pytest.approx(0.5)
    assert a.loc[2, "map"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # k=4: every positive is found; user 2 hits at ranks 1 and 3, user 0 at rank 2.
    assert a.loc[4, "recall"] == pytest.approx(1.0)
    assert a.loc[4, "ndcg"] == pytest.approx(((1 + 1 / 2) / (1 + 1 / LOG2_3) + 1 / LOG2_3) / 2)
    b = curves[curves["model"] == "b"].set_index("k")
    # b's first items: user 2 -> 2 (miss), user 0 -> 3 (miss); second: 3 (hit), 1 (miss).
    assert b.loc[1, "ndcg"] == 0.0
    assert b.loc[2, "ndcg"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3) / 2)


def test_metric_curves_refuse_lists_shorter_than_the_largest_k():
    with pytest.raises(ValueError, match="k=5"):
        metric_curves({"a": A}, TEST, USERS, n_items=4, ks=(1, 5))


def test_recall_curves_never_decrease_with_k():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 60
    test = sp.random(n_users, n_items, density=0.08, format="csr", random_state=3)
    users = np.arange(n_users)
    recommended = {f"m{i}": np.array([rng.permutation(n_items)[:30] for _ in users]) for i in range(3)}
    curves = metric_curves(recommended, test, users, n_items, ks=(1, 3, 5, 10, 20, 30))
    for _, rows in curves.groupby("model"):
        recall = rows.sort_values("k")["recall"].to_numpy()
        assert np.all(np.diff(recall) >= 0)
        assert recall[-1] > recall[0]


def test_metric_curve_figure_has_one_panel_per_metric_and_a_line_per_model():
    curves = metric_curves({"a": A, "b": B}, TEST, USERS, n_items=4, ks=(1, 2, 4))
    figure = plot_metric_curves(curves)
    assert isinstance(figure.canvas, FigureCanvasAgg)
    axes = figure.get_axes()
    assert len(axes) == 3
    assert [ax.get_ylabel() for ax in axes] == ["NDCG@k", "Recall@k", "Precision@k"]
    for ax, column in zip(axes, ["ndcg", "recall", "precision"], strict=True):
        assert ax.get_xlabel().startswith("k")
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["a", "b"]
        assert list(lines[0].get_xdata()) == [1, 2, 4]
        np.testing.assert_allclose(lines[1].get_ydata(), curves[curves["model"] == "b"][column])
    assert [text.get_text() for text in axes[0].get_legend().get_texts()] == ["a", "b"]
    figure.savefig(io.BytesIO(), format="png")  # what mlflow.log_figure does


def test_figures_stay_out_of_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_metric_curves(metric_curves({"a": A}, TEST, USERS, n_items=4, ks=(1, 2)))
    plot_popularity_coverage({"a": A}, TEST)
    assert plt.get_fignums() == before


def _study_with_pruned_trials() -> optuna.Study:
    """Maximise; completed values 0.1, 0.3, 0.2, 0.5 (trials 0, 1, 3, 4), trial 2 pruned at 0.05."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    outcomes = [0.1, 0.3, None, 0.2, 0.5]
    for value in outcomes:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if value is None:
            trial.report(0.02, 0)
            trial.report(0.05, 1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.report(value, 0)
            study.tell(trial, value)
    return study


def test_optimisation_history_shows_completed_pruned_and_running_best():
    figure = plot_optimisation_history(_study_with_pruned_trials(), objective_name="validation NDCG@10")
    (ax,) = figure.get_axes()
    assert ax.get_xlabel() == "Trial"
    assert ax.get_ylabel() == "validation NDCG@10"
    completed, pruned = ax.collections
    np.testing.assert_allclose(completed.get_offsets(), [[0, 0.1], [1, 0.3], [3, 0.2], [4, 0.5]])
    np.testing.assert_allclose(pruned.get_offsets(), [[2, 0.05]])
    (best,) = ax.get_lines()
    assert list(best.get_xdata()) == [0, 1, 3, 4]
    np.testing.assert_allclose(best.get_ydata(), [0.1, 0.3, 0.3, 0.5])
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["completed trial", "best so far", "pruned (last reported value)"]


def test_running_best_follows_a_minimised_objective():
    study = optuna.create_study(direction="minimize")
    for value in [3.0, 1.0, 2.0]:
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    (best,) = plot_optimisation_history(study).get_axes()[0].get_lines()
    np.testing.assert_allclose(best.get_ydata(), [3.0, 1.0, 1.0])


def _quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -2, 2)
    y = trial.suggest_float("y", -2, 2)
    trial.suggest_categorical("loss", ["warp"])  # never varies: not assessed
    return x**2 + 0.05 * y


def test_importances_need_two_completed_trials():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_quadratic, n_trials=1)
    assert plot_param_importances(study) is None


def test_importances_of_a_small_study_are_a_bar_per_varied_parameter():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_quadratic, n_trials=8)
    figure = plot_param_importances(study)
    assert figure is not None
    (ax,) = figure.get_axes()
    names = [label.get_text() for label in ax.get_yticklabels()]
    assert sorted(names) == ["x", "y"]
    widths = [bar.get_width() for bar in ax.patches]
    assert sum(widths) == pytest.approx(1.0)
    assert widths == sorted(widths)  # most important drawn last, i.e. on top
    # The same numbers as optuna's fANOVA with the same seed (8 trials are too few to trust
    # which parameter wins, so the test checks the plumbing, not fANOVA).
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=["x", "y"]
    )
    assert dict(zip(names, widths, strict=True)) == pytest.approx(expected)
    assert ax.get_xlabel() == "Importance (fANOVA, normalised)"


def test_importances_are_none_when_nothing_varied_or_nothing_explains_the_objective():
    fixed = optuna.create_study()
    fixed.optimize(lambda trial: len(trial.suggest_categorical("loss", ["warp"])), n_trials=3)
    assert plot_param_importances(fixed) is None
    constant = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    constant.optimize(lambda trial: 0 * trial.suggest_float("x", 0, 1) + 1.0, n_trials=4)
    assert plot_param_importances(constant) is None


# 20 items, item i has 20 - i training positives except the last two (none): deciles of two.
TRAIN = sp.csr_matrix(
    np.array([[1 if user < max(20 - item, 0) and item < 18 else 0 for item in range(20)] for user in range(20)])
)


def test_items_fall_into_equal_popularity_deciles():
    np.testing.assert_array_equal(item_popularity_deciles(TRAIN), np.repeat(np.arange(1, 11), 2))


def test_popularity_shares_sum_to_one_and_count_coverage():
    recommended = {
        "head": np.array([[0, 1], [1, 0], [0, -1]]),
        "spread": np.array([[0, 19, 10], [2, 5, 19], [7, 11, 15]]),
    }
    shares = popularity_decile_shares(recommended, TRAIN)
    assert list(shares.index) == ["head", "spread"]
    np.testing.assert_allclose(shares[list(range(1, 11))].sum(axis=1), 1.0)
    assert shares.loc["head", 1] == 1.0  # padding is not a recommendation
    np.testing.assert_allclose(shares.loc["spread", list(range(1, 11))], np.array([1, 1, 1, 1, 0, 2, 0, 1, 0, 2]) / 9)
    assert shares.loc["head", "coverage"] == pytest.approx(2 / 20)
    assert shares.loc["spread", "coverage"] == pytest.approx(8 / 20)


def test_popularity_figure_has_a_bar_series_per_model_with_coverage():
    recommended = {"head": np.array([[0, 1]]), "spread": np.array([[0, 19]])}
    figure = plot_popularity_coverage(recommended, TRAIN)
    (ax,) = figure.get_axes()
    assert len(ax.containers) == 2
    assert all(len(container) == 10 for container in ax.containers)
    np.testing.assert_allclose([bar.get_height() for bar in ax.containers[1]], [0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0.5])
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["head (coverage 10.0%)", "spread (coverage 10.0%)"]
    assert "decile" in ax.get_xlabel()


METRICS = pd.DataFrame(
    {"ndcg@10": [0.05, 0.16, 0.12], "recall@10": [0.04, 0.11, float("nan")], "n_users_evaluated": [600, 600, 600]},
    index=pd.Index(["popularity", "hybrid", "pipe|model"], name="model"),
)


def _card(**overrides) -> str:
    arguments = {
        "model_name": "movierec-hybrid",
        "dataset": "ml-latest-small",
        "snapshot_id": "snap-2024-06-01-abc123",
        "split": "per-user temporal, last 20% of each user's ratings held out; positive = rating >= 4.0",
        "params": {"loss": "warp", "no_components": 64, "learning_rate": 0.0123456},
        "metrics": METRICS,
        "k": 10,
        "champion_model": "hybrid",
        "data_summary": {"ratings": 100836, "users": 610, "items": 9742},
        "limits": ["Cold-start users only via demographics.", "Offline metrics only."],
        "version": "7",
        "trials": {"completed": 12, "pruned": 8, "best_value": 0.16},
    }
    return model_card(**{**arguments, **overrides})


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _tables(card: str) -> list[list[str]]:
    tables, current = [], []
    for line in card.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_model_card_content():
    card = _card()
    assert card.startswith("# Model card: movierec-hybrid")
    assert "snap-2024-06-01-abc123" in card
    assert "ml-latest-small" in card
    assert "positive = rating >= 4.0" in card
    assert "| **hybrid** | **0.1600** | **0.1100** | **600** |" in card
    assert "| popularity | 0.0500 | 0.0400 | 600 |" in card
    assert "| pipe\\|model | 0.1200 | n/a | 600 |" in card
    for name in METRICS.index:
        assert name.replace("|", "\\|") in card
    assert "| ratings | 100,836 |" in card
    assert "- `learning_rate`: 0.0123456" in card
    assert "- best value: 0.16" in card
    assert "- Cold-start users only via demographics." in card
    assert "**Version:** 7" in card
    for heading in [
        "## Intended use",
        "## Data",
        "## Evaluation protocol",
        "## Metrics",
        "## Hyperparameters",
        "## Tuning",
        "## Known limitations",
    ]:
        assert heading in card


def test_model_card_tables_are_valid_markdown():
    tables = _tables(_card())
    assert len(tables) == 2  # data summary and metrics
    for table in tables:
        pipes = {_unescaped_pipes(line) for line in table}
        assert len(pipes) == 1
        assert re.fullmatch(r"\|(-{3,}:?\|)+", table[1])
    metrics_table = tables[1]
    assert _unescaped_pipes(metrics_table[0]) == len(METRICS.columns) + 2
    assert len(metrics_table) == 2 + len(METRICS)
    bold_rows = [line for line in metrics_table if "**" in line]
    assert bold_rows == ["| **hybrid** | **0.1600** | **0.1100** | **600** |"]


def test_model_card_without_version_or_trials_and_with_unknown_champion():
    card = _card(version=None, trials=None)
    assert "Version" not in card
    assert "No tuning summary" in card
    with pytest.raises(ValueError, match="champion 'ease'"):
        _card(champion_model="ease")


def test_agg_backend_is_not_forced_globally():
    # Building figures must not switch the process-wide backend as a side effect.
    backend = matplotlib.get_backend()
    plot_metric_curves(metric_curves({"a": A}, TEST, USERS, n_items=4, ks=(1, 2)))
    assert matplotlib.get_backend() == backend


def test_an_empty_study_has_no_importances_and_an_empty_history():
    study = optuna.create_study()
    assert plot_param_importances(study) is None
    (ax,) = plot_optimisation_history(study).get_axes()
    assert not ax.collections and not ax.get_lines()
    assert [text.get_text() for text in ax.texts] == ["no finished trials"]
