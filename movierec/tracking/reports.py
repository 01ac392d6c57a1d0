"""Report artifacts for the MLflow parent run: metric@k curves, tuning plots, long-tail
exposure, the Markdown model card and the texts around it (validation report, known limits,
promotion gate).

Everything here is a pure function. Figures are returned, never shown or saved: the caller logs
them (`mlflow.log_figure(fig, "plots/metric_curves.png")`). Figures are built with
`matplotlib.figure.Figure` on an Agg canvas, so nothing touches pyplot's global figure registry
(no figure leaks across a long-running flow) and no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import optuna
import pandas as pd
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inference.model import PAD_ITEM
from models.metrics import ranking_metrics

CURVE_METRICS = ("ndcg", "recall", "precision", "map")
# Panels of `plot_metric_curves`: column of `metric_curves` -> axis label.
PLOTTED_METRICS = {"ndcg": "NDCG", "recall": "Recall", "precision": "Precision"}
N_DECILES = 10
EVALUATOR_NAMES = {"Fanova": "fANOVA", "PedAnova": "PED-ANOVA", "MeanDecreaseImpurity": "mean decrease in impurity"}


def metric_curves(
    recommended: dict[str, np.ndarray],
    test: sp.csr_matrix,
    users: np.ndarray,
    n_items: int,
    ks: Iterable[int] = (1, 5, 10, 20, 50),
) -> pd.DataFrame:
    """Ranking metrics of every model at several cut-offs.

    `recommended` maps a model name to its (n_users, >= max(ks)) lists, row i for `users[i]`;
    each k scores the first k columns with `models.metrics.ranking_metrics` (same users, same
    definitions as the headline metrics). One row per (model, k), columns model, k, ndcg,
    recall, precision, map. Raises ValueError when a model has fewer than max(ks) columns rather
    than scoring a shorter list as if it were complete.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    rows = []
    for model, lists in recommended.items():
        lists = np.asarray(lists)
        if lists.ndim != 2 or lists.shape[1] < ks[-1]:
            raise ValueError(
                f"model '{model}' has lists of shape {lists.shape}; curves up to k={ks[-1]} need >= {ks[-1]} columns"
            )
        for k in ks:
            metrics = ranking_metrics(lists[:, :k], test, k=k, users=users, n_items=n_items)
            rows.append({"model": model, "k": k, **{name: metrics[f"{name}@{k}"] for name in CURVE_METRICS}})
    return pd.DataFrame(rows, columns=["model", "k", *CURVE_METRICS])


def plot_metric_curves(curves: pd.DataFrame) -> Figure:
    """NDCG@k, recall@k and precision@k against k, one line per model (output of `metric_curves`)."""
    figure = _figure(figsize=(4.2 * len(PLOTTED_METRICS), 4.0))
    axes = figure.subplots(1, len(PLOTTED_METRICS), squeeze=False)[0]
    ks = np.sort(curves["k"].unique())
    for ax, (column, label) in zip(axes, PLOTTED_METRICS.items(), strict=True):
        for model, rows in curves.groupby("model", sort=False):
            rows = rows.sort_values("k")
            ax.plot(rows["k"], rows[column], marker="o", label=str(model))
        # Cut-offs typically span 1..50 or more: a log axis keeps the small ones readable.
        if len(ks) > 1 and ks.min() >= 1 and ks.max() / ks.min() >= 10:
            ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("k (list length)")
        ax.set_ylabel(f"{label}@k")
        ax.set_title(f"{label}@k")
        ax.grid(True, alpha=0.3)
    axes[0].legend(title="model")
    return figure


def plot_optimisation_history(study: optuna.Study, *, objective_name: str = "Objective value") -> Figure:
    """Objective value of every trial in order: completed trials as points, pruned trials as
    crosses at the last value they reported, and the best value so far as a step line."""
    direction = study.direction  # raises for multi-objective studies, which this does not plot
    maximize = direction == optuna.study.StudyDirection.MAXIMIZE
    completed = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None
    ]
    pruned = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)) if t.intermediate_values
    ]
    figure = _figure(figsize=(7.5, 4.5))
    ax = figure.subplots()
    if completed:
        numbers = np.array([t.number for t in completed])
        values = np.array([t.value for t in completed], dtype=np.float64)
        ax.scatter(numbers, values, color="tab:blue", label="completed trial", zorder=3)
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.step(numbers, best, where="post", color="tab:red", label="best so far", zorder=2)
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter(
            [t.number for t in pruned],
            last,
            marker="x",
            color="tab:gray",
            label="pruned (last reported value)",
            zorder=3,
        )
    if not completed and not pruned:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Trial")
    ax.set_ylabel(objective_name)
    ax.set_title(f"Optimisation history ({len(completed)} completed, {len(pruned)} pruned, {direction.name.lower()})")
    ax.grid(True, alpha=0.3)
    if completed or pruned:
        ax.legend()
    return figure


def plot_param_importances(
    study: optuna.Study, *, evaluator: optuna.importance.BaseImportanceEvaluator | None = None
) -> Figure | None:
    """Hyperparameter importances as a horizontal bar chart, most important on top.

    Uses fANOVA with a fixed seed unless `evaluator` is given (optuna's own default evaluator
    changed to PED-ANOVA in recent versions). Only parameters present in every completed trial
    and taking more than one value are assessed. None when there are fewer than two completed
    trials, no parameter ever varied, or the evaluator cannot attribute any variance (e.g. a
    constant objective).
    """
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2:
        return None
    shared = set.intersection(*(set(t.params) for t in completed))
    varied = sorted(name for name in shared if len({repr(t.params[name]) for t in completed}) > 1)
    if not varied:
        return None
    evaluator = evaluator if evaluator is not None else optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    except (RuntimeError, ValueError):  # e.g. "zero total variance in all trees"
        return None
    if not importances:
        return None
    ordered = sorted(importances.items(), key=lambda item: item[1])  # barh draws bottom-up
    names, values = [name for name, _ in ordered], [float(value) for _, value in ordered]
    figure = _figure(figsize=(7.0, 0.45 * len(names) + 1.6))
    ax = figure.subplots()
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set_xlim(0, max(values) * 1.2 if max(values) > 0 else 1.0)
    method = type(evaluator).__name__.removesuffix("ImportanceEvaluator")
    ax.set_xlabel(f"Importance ({EVALUATOR_NAMES.get(method, method)}, normalised)")
    ax.set_ylabel("Hyperparameter")
    ax.set_title(f"Hyperparameter importances ({len(completed)} completed trials)")
    return figure


def popularity_decile_shares(recommended: dict[str, np.ndarray], train: sp.csr_matrix) -> pd.DataFrame:
    """Share of each model's recommendations falling in each training-popularity decile.

    Items are ranked by their number of training positives, most popular first, ties by item
    index, and cut into ten equal-size deciles (decile 1 = the most popular 10% of the
    catalogue). Padding (-1) is not a recommendation. Rows are models, columns deciles 1..10,
    plus "coverage" = distinct recommended items / n_items. A model with no recommendations at
    all has NaN shares.
    """
    decile = item_popularity_deciles(train)
    n_items = len(decile)
    rows = {}
    for model, lists in recommended.items():
        items = np.asarray(lists).ravel()
        items = items[items != PAD_ITEM].astype(np.int64)
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"model '{model}' recommends items outside [0, {n_items})")
        counts = np.bincount(decile[items] - 1, minlength=N_DECILES).astype(np.float64)
        shares = counts / items.size if items.size else np.full(N_DECILES, np.nan)
        rows[model] = [*shares, np.unique(items).size / n_items]
    columns = [*range(1, N_DECILES + 1), "coverage"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("model")


def item_popularity_deciles(train: sp.csr_matrix) -> np.ndarray:
    """Decile 1..10 of every item by training popularity (see `popularity_decile_shares`)."""
    train = sp.csr_matrix(train)
    popularity = np.asarray((train != 0).sum(axis=0)).ravel()
    n_items = len(popularity)
    order = np.argsort(-popularity, kind="stable")
    decile = np.empty(n_items, dtype=np.int64)
    decile[order] = np.arange(n_items) * N_DECILES // max(n_items, 1) + 1
    return decile


def plot_popularity_coverage(recommended: dict[str, np.ndarray], train: sp.csr_matrix) -> Figure:
    """Grouped bars: each model's share of recommendations per training-popularity decile
    (1 = most popular), with its catalogue coverage in the legend."""
    shares = popularity_decile_shares(recommended, train)
    figure = _figure(figsize=(9.0, 4.5))
    ax = figure.subplots()
    deciles = np.arange(1, N_DECILES + 1)
    width = 0.8 / max(len(shares), 1)
    for position, (model, row) in enumerate(shares.iterrows()):
        offset = (position - (len(shares) - 1) / 2) * width
        ax.bar(
            deciles + offset,
            row[list(deciles)].to_numpy(dtype=float),
            width=width,
            label=f"{model} (coverage {row['coverage']:.1%})",
        )
    ax.set_xticks(deciles)
    ax.set_xlabel("Training-popularity decile (1 = most popular 10% of items)")
    ax.set_ylabel("Share of recommendations")
    ax.set_title(f"Recommendations across the popularity long tail ({shares.shape[0]} models, {train.shape[1]} items)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    return figure


def model_card(
    *,
    model_name: str,
    dataset: str,
    snapshot_id: str,
    split: str,
    params: dict,
    metrics: pd.DataFrame,
    k: int,
    champion_model: str,
    data_summary: dict,
    limits: list[str],
    version: str | None = None,
    trials: dict | None = None,
    served: dict | None = None,
    validation: pd.DataFrame | None = None,
) -> str:
    """A Markdown model card. `metrics` has one row per model (index = model name) and one
    column per metric; the `champion_model` row is set in bold. `split` describes the held-out
    protocol including the rating threshold that makes a positive. `served` describes the
    version's two bundles (keys candidate, recipe, serving_ratings, evaluation_ratings);
    `validation` holds each candidate's validation NDCG@k, on which the champion was chosen.
    Raises ValueError when the champion is not a row of `metrics`."""
    if champion_model not in metrics.index:
        raise ValueError(
            f"champion '{champion_model}' is not a row of the metrics table ({', '.join(map(str, metrics.index))})"
        )
    lines = [f"# Model card: {model_name}", ""]
    if version is not None:
        lines += [f"**Version:** {version}", ""]
    lines += [
        "## Intended use",
        "",
        f"Ranks movies of the {dataset} catalogue for known users: a top-{k} list per user, the items the "
        "user already rated excluded. Meant for offline evaluation and demonstration of the pipeline, not "
        "for decisions about people.",
        "",
        "## Data",
        "",
        f"- Dataset: {dataset}",
        f"- Snapshot: `{snapshot_id}`",
        "",
        _markdown_table(
            ["table", "rows"], [[str(name), _format_cell(count)] for name, count in data_summary.items()], [False, True]
        ),
        "",
        "## Evaluation protocol",
        "",
        f"- Split: {split}.",
        "- The held-out part was never used for training or for hyperparameter tuning; any tuning scored "
        "trials on a validation split carved from the training part only.",
        f"- Every model ranks the full catalogue for each test user with the user's training items excluded; "
        f"metrics are computed on the top {k} and averaged over users with at least one held-out positive.",
        "",
    ]
    if served:
        lines += [
            "## What is served",
            "",
            f"- Model: **{served['candidate']}**, scoring recipe {_format_value(served['recipe'])}.",
            f"- Served (API, batch export, `mlflow models serve`): {_served_fit(served.get('continued_epochs'))} "
            f"on all {served['serving_ratings']:,} ratings of the snapshot (feedback included), with the same "
            "hyperparameters and blend weights.",
            f"- Evaluation twin: the same configuration trained on the holdout's training part only "
            f"({served['evaluation_ratings']:,} ratings). The held-out metrics below and the promotion gate are the "
            "twin's: the served model has learned the held-out ratings.",
            "",
        ]
        if served.get("new_users"):
            lines += [
                f"New users known only by demographics get: {served['new_users']} (chosen on users held out of "
                "the training part; `model` is the hybrid's demographic features, `segments` the popularity "
                "within their demographic segment).",
                "",
            ]
        if served.get("unrated") is not None:
            unrated = served["unrated"]
            lines += [
                f"Movies nobody has rated ({unrated['served_movies']:,} in the served model, "
                f"{unrated['evaluation_movies']:,} in its twin) are ranked with the content model's say "
                f"{unrated['content_weight']:g} (0: the recipe's own scores, 1: the content model's order; "
                "chosen on validation).",
                "",
            ]
        if served.get("rating_errors") is not None:
            errors = served["rating_errors"]
            lines += [
                "Predicted ratings (`biased_mf`, tuned on validation, refit like the ranking model): held-out errors",
                "",
                _markdown_table(
                    ["model", "MAE", "MSE", "RMSE"],
                    [
                        [str(name), *(_format_cell(row[column]) for column in ("mae", "mse", "rmse"))]
                        for name, row in errors.iterrows()
                    ],
                    [False, True, True, True],
                ),
                "",
            ]
    if validation is not None:
        metric = f"ndcg@{k}"
        lines += [
            "## Selection",
            "",
            f"Chosen on the validation split (carved from the training part) by {metric}, before any test metric:",
            "",
            _markdown_table(
                ["model", f"validation {metric}", "eligible"],
                [
                    [str(name), _format_cell(row[metric]), "yes" if row["eligible"] else "no (not servable)"]
                    for name, row in validation.iterrows()
                ],
                [False, True, False],
            ),
            "",
        ]
    lines += [
        "## Metrics",
        "",
        f"Held-out metrics at k = {k}; the champion (**{champion_model}**) is in bold.",
        "",
        _metrics_table(metrics, champion_model),
        "",
        "## Hyperparameters",
        "",
    ]
    lines += [f"- `{name}`: {_format_value(value)}" for name, value in params.items()] or [
        "No hyperparameters recorded."
    ]
    lines += ["", "## Tuning", ""]
    if trials:
        lines += [f"- {str(name).replace('_', ' ')}: {_format_value(value)}" for name, value in trials.items()]
    else:
        lines.append("No tuning summary recorded for this run.")
    lines += ["", "## Known limitations", ""]
    lines += [f"- {limit}" for limit in limits] or ["None recorded."]
    return "\n".join(lines) + "\n"


def gate_section(decision) -> str:
    """The model card's promotion gate section for a `movierec.tracking.registry.Decision`."""
    lines = [
        "",
        "",
        "## Promotion gate",
        "",
        f"- Metric: {decision.metric} on the current held-out split, each model's evaluation twin (its served "
        "configuration trained on the holdout's training part).",
        f"- Challenger v{decision.challenger_version}: {decision.challenger_score:.4f}",
    ]
    if decision.champion_version and decision.champion_score is not None:
        lines.append(f"- Champion v{decision.champion_version}: {decision.champion_score:.4f}")
    verdict = "promoted to champion" if decision.promote else "not promoted"
    lines += [f"- Margin: {decision.margin:g}", f"- Decision: {verdict} ({decision.reason})", ""]
    return "\n".join(lines)


def validation_report(snapshot_summary: dict) -> str:
    """The expectation suites the snapshot passed, readable in the MLflow UI (the full Great
    Expectations Data Docs stay in the reports folder)."""
    lines = [
        f"# Validation of snapshot {snapshot_summary['snapshot_id']} ({snapshot_summary['dataset']})",
        "",
        "| stage | suite | expectations | failed | passed |",
        "|---|---|---:|---:|---|",
    ]
    for stage, suites in snapshot_summary["validation"].items():
        for suite, result in suites.items():
            passed = "yes" if result["success"] else "no"
            lines.append(f"| {stage} | {suite} | {result['evaluated']} | {result['failed']} | {passed} |")
    lines += ["", f"Data Docs: {snapshot_summary['data_docs']}", ""]
    return "\n".join(lines)


def known_limits(snapshot_summary: dict) -> list[str]:
    """The model card's known limitations for a model trained on this snapshot."""
    limits = [
        "Trained on each user's earlier ratings; the held-out later part is for measurement only, so the served "
        "model has not learned from the most recent ratings.",
        "Users the model has never seen get the most popular movies (marked as fallback) unless they describe "
        "themselves by liked movies or demographics.",
        "Movies with no training interactions are ranked by their metadata features alone.",
    ]
    tmdb = snapshot_summary.get("tmdb")
    if tmdb:
        limits.append(
            f"TMDB metadata covers {tmdb['match_rate']:.0%} of movies; the rest have MovieLens genres, year and tags only."
        )
    else:
        limits.append("No TMDB metadata was joined: item features are MovieLens genres, year and tags only.")
    return limits


def _metrics_table(metrics: pd.DataFrame, champion_model: str) -> str:
    header = [str(metrics.index.name or "model"), *map(str, metrics.columns)]
    rows = []
    for name, *values in metrics.itertuples(name=None):  # unlike iterrows, keeps int columns int
        cells = [str(name), *(_format_cell(value) for value in values)]
        if name == champion_model:
            cells = [f"**{cell}**" for cell in cells]
        rows.append(cells)
    numeric = [False, *(pd.api.types.is_numeric_dtype(dtype) for dtype in metrics.dtypes)]
    return _markdown_table(header, rows, numeric)


def _markdown_table(header: list[str], rows: list[list[str]], right_align: list[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table (no dependency on `tabulate`). Pipes in cells are escaped
    and newlines flattened, so every row has exactly len(header) + 1 unescaped pipes."""
    right_align = right_align or [False] * len(header)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_escape(cell) for cell in cells) + " |"

    separator = "|" + "|".join("---:" if right else "---" for right in right_align) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def _escape(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _served_fit(continued_epochs: int | None) -> str:
    """How the served factors were fitted (`training.continue_epochs`), for the model card."""
    if continued_epochs is None:
        return "refit from scratch for the twin's epochs"
    return f"the twin's factor models trained on for {continued_epochs} more epochs (everything else refit)"


def _format_value(value: object) -> str:
    """A hyperparameter or summary value: floats to 6 significant digits, not 4 decimals."""
    if isinstance(value, (float, np.floating)) and not isinstance(value, bool):
        return "n/a" if math.isnan(value) else f"{float(value):.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return _format_cell(value)


def _format_cell(value: object) -> str:
    """A table cell: metrics to 4 decimals (tiny or huge values in scientific notation)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "n/a"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3g}"
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={_format_cell(item)}" for key, item in value.items())
    return str(value)


def _figure(**kwargs) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, no display."""
    figure = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(figure)
    return figure
