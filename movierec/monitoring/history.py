"""The history of monitor runs of a home: one JSON object per run (what `movierec monitor --json`
prints, plus its MLflow run id and report), appended to `history.jsonl` in the monitoring folder.
The next run starts where the last one ended; the web page charts the last runs."""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

from movierec.data.files import atomic_file

HISTORY_FILE = "history.jsonl"
ALERT_LOG = "alerts.jsonl"
LATEST_REPORT = "latest.html"
# Measures charted over the last runs (the report, the web page): (metric, label); "{k}" is the cutoff.
TRENDS = (
    ("drift.rating_psi", "rating PSI"),
    ("drift.genre_psi", "genre mix PSI"),
    ("health.fallback_share", "fallback share"),
    ("health.error_rate", "error rate"),
    ("health.latency_p99_ms", "p99 latency (ms)"),
    ("online.hit_rate@{k}", "online hit rate@{k}"),
    ("offline.ndcg@{k}", "NDCG@{k} on fresh ratings"),
    ("served.coverage", "catalogue coverage"),
)


def trend_names(k: int) -> list[tuple[str, str]]:
    return [(metric.format(k=k), label.format(k=k)) for metric, label in TRENDS]


def append(folder: Path, record: dict) -> None:
    """Append `record` as one line and sync (a crash leaves at most a torn last line, skipped)."""
    append_lines(folder / HISTORY_FILE, [record])


def append_lines(path: Path, records: list[dict]) -> None:
    """Append one JSON line per record and sync. A line torn by a crash is ended first, so it
    stays one unreadable line instead of swallowing the next record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as file:
        torn = False
        if file.seek(0, os.SEEK_END) > 0:
            file.seek(-1, os.SEEK_END)
            torn = file.read(1) != b"\n"
        text = "".join(json.dumps(record, default=str) + "\n" for record in records)
        file.write((("\n" if torn else "") + text).encode("utf-8"))
        file.flush()
        os.fsync(file.fileno())


def last_runs(folder: Path, n: int) -> list[dict]:
    """The last `n` runs, oldest first (lines that do not parse are skipped)."""
    path = folder / HISTORY_FILE
    if n <= 0 or not path.is_file():
        return []
    with open(path, encoding="utf-8") as file:
        lines = deque(file, maxlen=n + 1)
    runs = []
    for line in lines:
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs[-n:]


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically: a reader never sees half a report."""
    with atomic_file(path) as file:
        file.write(text.encode("utf-8"))
    return path
