"""Serving health over a window, from the statistics the API stored per interval
(`movierec.data.impressions`, table serving_stats) and from its impressions. Pure: frames in,
numbers out.

Latency percentiles are read from the summed histogram as Prometheus' `histogram_quantile`
reads them: the bucket holding the rank, interpolated linearly between its bounds (the first
bucket starts at 0); a rank in the +Inf bucket is reported as the largest finite bound, which
is then a lower bound of the true value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Endpoints that say nothing about what users get: probes, Prometheus scrapes, the page, its
# files and its monitoring view.
OPERATIONS = ("/healthz", "/readyz", "/metrics", "/", "/static", "/monitoring", "/monitoring/report")


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """The q-quantile (0 <= q <= 1) of a histogram with upper `bounds` (the last may be +inf) and
    `cumulative` counts; None for an empty histogram."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if len(bounds) != len(cumulative) or not len(bounds):
        raise ValueError("a histogram needs one cumulative count per bound")
    total = float(cumulative[-1])
    if total <= 0:
        return None
    rank = q * total
    bucket = int(np.searchsorted(np.asarray(cumulative, dtype=np.float64), rank, side="left"))
    bucket = min(bucket, len(bounds) - 1)
    upper = float(bounds[bucket])
    if np.isinf(upper):
        finite = [float(bound) for bound in bounds if np.isfinite(bound)]
        return finite[-1] if finite else None
    lower = float(bounds[bucket - 1]) if bucket > 0 else 0.0
    below = float(cumulative[bucket - 1]) if bucket > 0 else 0.0
    inside = float(cumulative[bucket]) - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


def serving_health(stats: pd.DataFrame, impressions: pd.DataFrame) -> dict[str, float | None]:
    """Requests, client and server errors, error rate (5xx share), latency p50/p95/p99 in ms of the
    API's endpoints (not `OPERATIONS`), and the impressions served with their fallback share."""
    served = stats[~stats["endpoint"].isin(OPERATIONS)]
    requests = int(served["requests"].sum())
    health: dict[str, float | None] = {
        "requests": requests,
        "client_errors": int(served["client_errors"].sum()),
        "server_errors": int(served["server_errors"].sum()),
        "error_rate": float(served["server_errors"].sum() / requests) if requests else None,
        "mean_latency_ms": float(served["latency_seconds"].sum() / requests * 1000) if requests else None,
    }
    bounds, counts = _summed_histogram(served)
    for q in (50, 95, 99):
        value = histogram_quantile(q / 100, bounds, counts) if bounds else None
        health[f"latency_p{q}_ms"] = None if value is None else value * 1000
    shown = len(impressions)
    health["impressions"] = shown
    health["fallback_share"] = float((impressions["source"] != "model").mean()) if shown else None
    return health


def _summed_histogram(stats: pd.DataFrame) -> tuple[list[float], list[float]]:
    """The cumulative counts of every row with the most common bucket bounds, summed (rows of
    another layout, written by another version of the API, are left out of the percentiles)."""
    if stats.empty:
        return [], []
    layouts = stats["bucket_bounds"].map(tuple)
    common = layouts.value_counts().index[0]
    rows = stats.loc[layouts == common, "bucket_counts"]
    return list(common), np.sum(np.array(rows.tolist(), dtype=np.float64), axis=0).tolist()
