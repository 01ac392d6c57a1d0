"""Terminal output shared by the CLI and the flows: a quiet logger and optional progress bars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

# Piped output (CI logs, files) gets a wide fixed width, so tables are not truncated to 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
logger = logging.getLogger("movierec")


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def byte_progress(description: str, total: int | None) -> Iterator[callable]:
    """Yield an `advance(n_bytes)` callback; draws a bar only on a terminal."""
    if not interactive():
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
