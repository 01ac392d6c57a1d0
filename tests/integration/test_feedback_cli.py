"""`movierec feedback quarantined | release`: what is held back, and letting it in."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
from typer.testing import CliRunner

from movierec.cli import app
from movierec.data.feedback import FeedbackEvent, FeedbackStore
from movierec.settings import get_settings

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_quarantined_events_are_listed_and_released_by_rule(home):
    store = FeedbackStore(get_settings().feedback_db)
    store.append_many([FeedbackEvent(f"e{i}", 100 + i, 7, "rating", 5.0, T0) for i in range(3)], client="10.1.1.1")
    store.quarantine(
        pd.DataFrame(
            {
                "event_id": ["e0", "e1", "e2"],
                "rule": ["movie_burst", "movie_burst", "invalid"],
                "reason": ["40 new users rated movie 7 within 60 minutes (limit 30)"] * 2 + ["movie_id: not known"],
            }
        ),
        "ml-latest-small",
    )
    cli, env = CliRunner(), {"MOVIEREC_HOME": str(home)}
    listed = cli.invoke(app, ["feedback", "quarantined"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "3 event(s): invalid 1, movie_burst 2" in listed.output and "40 new users rated movie 7" in listed.output
    as_json = cli.invoke(app, ["feedback", "quarantined", "--json"], env=env)
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [record["event_id"] for record in records] == ["e0", "e1", "e2"] and records[0]["client"] == "10.1.1.1"

    refused = cli.invoke(app, ["feedback", "release", "e2"], env=env)
    assert refused.exit_code == 1 and "invalid events cannot be released" in refused.output
    released = cli.invoke(app, ["feedback", "release", "--rule", "movie_burst"], env=env)
    assert released.exit_code == 0 and "released 2 event(s)" in released.output
    assert store.released() == {"ml-latest-small": {"e0", "e1"}}
    left = cli.invoke(app, ["feedback", "quarantined"], env=env)
    assert "1 event(s): invalid 1" in left.output
    nothing = cli.invoke(app, ["feedback", "release"], env=env)
    assert nothing.exit_code == 2 and "give event ids or --rule" in nothing.output
