"""The HTML report of a monitor run: alerts, every measure, and plots (rating values and genres of
liked movies against the training data; the key measures over the last runs). One self-contained
file: plots are PNGs embedded as data URIs, no script, no CDN. Pure: the run's result in, text out.
"""

from __future__ import annotations

import base64
import html
import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from movierec.monitoring.history import trend_names

MAX_GENRES = 18


def render(result: dict, distributions: dict, history: list[dict], k: int) -> str:
    """The report of `result` (the run's JSON object), with `history` (earlier runs, oldest first)."""
    version = html.escape(str(result["champion_version"]))
    window = result["window"]
    alerts = result["alerts"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>movierec monitoring: champion version {version}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}.alert{color:#a40000}.ok{color:#17692b}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Monitoring: champion version {version}</h1>",
        f"<p>Window {html.escape(window['since'])} to {html.escape(window['until'])} "
        f"({window['days']:.2f} days; start: {html.escape(window['source'])}).</p>",
    ]
    if alerts:
        parts.append(f"<h2 class='alert'>{len(alerts)} alert(s)</h2><ul>")
        parts += [f"<li class='alert'>{html.escape(alert['message'])}</li>" for alert in alerts]
        parts.append("</ul>")
    else:
        parts.append("<h2 class='ok'>No alert</h2>")
    parts.append("<h2>Measures</h2><table><tr><th>measure</th><th>value</th></tr>")
    fired = {alert["metric"] for alert in alerts}
    for name, value in result["metrics"].items():
        style = " class='alert'" if name in fired else ""
        parts.append(f"<tr{style}><td>{html.escape(name)}</td><td class='n'>{html.escape(shown(value))}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Against the training data</h2>")
    parts.append(_image(_distribution_figure(distributions)))
    runs = [*history, result]
    if len(runs) > 1:
        parts.append(f"<h2>The last {len(runs)} runs</h2>")
        parts.append(_image(_trend_figure(runs, k)))
    parts.append("</body></html>")
    return "\n".join(parts)


def shown(value: object) -> str:
    """A measure as people read it (the report, the command's table, the Prefect artifact):
    a dash for nothing measured, four decimals below 1,000, thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _shares(counts: dict, keys: list[str]) -> list[float]:
    total = sum(counts.values()) or 1
    return [counts.get(key, 0) / total for key in keys]


def _distribution_figure(distributions: dict) -> Figure:
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ratings_axis, genres_axis = figure.subplots(1, 2, width_ratios=[1, 1.4])
    ratings = distributions["rating_counts"]
    values = sorted(set(ratings["reference"]) | set(ratings["current"]), key=float)
    positions = range(len(values))
    ratings_axis.bar([p - 0.2 for p in positions], _shares(ratings["reference"], values), 0.4, label="training data")
    ratings_axis.bar([p + 0.2 for p in positions], _shares(ratings["current"], values), 0.4, label="this window")
    ratings_axis.set_xticks(list(positions), values)
    ratings_axis.set_xlabel("rating")
    ratings_axis.set_ylabel("share of ratings")
    ratings_axis.legend()
    genres = distributions["positive_genre_counts"]
    reference_shares = dict(
        zip(genres["reference"], _shares(genres["reference"], list(genres["reference"])), strict=True)
    )
    names = sorted(set(genres["reference"]) | set(genres["current"]), key=lambda g: -reference_shares.get(g, 0))
    names = names[:MAX_GENRES]
    positions = range(len(names))
    genres_axis.barh([p - 0.2 for p in positions], _shares(genres["reference"], names), 0.4, label="training data")
    genres_axis.barh([p + 0.2 for p in positions], _shares(genres["current"], names), 0.4, label="this window")
    genres_axis.set_yticks(list(positions), names)
    genres_axis.invert_yaxis()
    genres_axis.set_xlabel("share of liked movies' genres")
    genres_axis.legend()
    return figure


def _trend_figure(runs: list[dict], k: int) -> Figure:
    trends = trend_names(k)
    columns = 4
    rows = math.ceil(len(trends) / columns)
    figure = Figure(figsize=(12, 2.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    x = list(range(1, len(runs) + 1))
    for axis, (metric, label) in zip(axes, trends, strict=False):
        values = [run["metrics"].get(metric) for run in runs]
        axis.plot(x, [math.nan if value is None else value for value in values], marker="o")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("monitor run")
    for axis in axes[len(trends) :]:
        axis.set_visible(False)
    return figure


def _image(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='' src='data:image/png;base64,{encoded}'>"
