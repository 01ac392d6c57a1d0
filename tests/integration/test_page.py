"""The web page in headless Chromium (Playwright, the system's /usr/bin/chromium): an existing
user's recommendations with reasons, a new user rating movies found by search, a thumbs-up that
lands in the feedback store naming the list it answers, the monitoring view."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
from registered import register_champion
from server import Server

from movierec.data.feedback import FeedbackStore
from movierec.data.impressions import ImpressionStore
from movierec.monitoring import history
from movierec.settings import get_settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install it: apt-get install -y chromium; `make test` does when root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev dependency group)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        except Exception as error:
            pytest.skip(f"playwright cannot launch {CHROMIUM}: {str(error).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


def _monitor_run(until: str, version: str, psi: float, alerts: list[dict]) -> dict:
    metrics = {metric: 0.1 for metric, _ in history.trend_names(10)}
    return {
        "champion_version": version,
        "window": {"since": "2026-11-29T06:00:00+00:00", "until": until, "days": 1.0, "source": "last monitor run"},
        "metrics": {**metrics, "drift.rating_psi": psi},
        "alerts": alerts,
        "run_id": "r" + until[:10],
        "report": "unused",
    }


def test_pick_a_user_rate_movies_as_a_new_user_and_send_a_thumbs_up(home, tmp_path, browser):
    registered = register_champion()
    bundle = registered.bundle
    # Two monitor runs on record (what `movierec monitor` appends), the latest with an alert.
    folder = get_settings().monitoring_dir
    drift = {
        "metric": "drift.rating_psi",
        "value": 0.4,
        "threshold": 0.2,
        "message": "rating values drifted (PSI 0.400 > 0.2)",
    }
    history.append(folder, _monitor_run("2026-11-29T06:00:00+00:00", registered.version, 0.05, []))
    history.append(folder, _monitor_run("2026-11-30T06:00:00+00:00", registered.version, 0.4, [drift]))
    history.write_text(folder / history.LATEST_REPORT, "<html><body><h1>the latest report</h1></body></html>")
    server = Server(home, tmp_path / "server.log").start()
    try:
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.goto(server.url + "/")
        page.get_by_test_id("model-status").filter(has_text=f"version {registered.version}").wait_for()

        # The monitoring view: champion and its age, the last run's alert, one chart per charted measure.
        summary = page.get_by_test_id("monitoring-summary")
        summary.filter(has_text="Last monitor run").wait_for()
        assert (
            f"Champion version {registered.version}, " in summary.inner_text() and "1 alert(s)" in summary.inner_text()
        )
        assert "2 run(s) charted" in summary.inner_text()
        assert page.get_by_test_id("monitoring-alert").all_inner_texts() == [drift["message"]]
        charts = page.get_by_test_id("monitoring-chart")
        assert charts.count() == len(history.trend_names(10))
        psi_chart = page.locator('[data-testid="monitoring-chart"][data-metric="drift.rating_psi"]')
        assert "alerting" in psi_chart.get_attribute("class") and "latest 0.400" in psi_chart.inner_text()
        assert psi_chart.locator("polyline").get_attribute("points").count(",") == 2  # two runs
        assert page.get_by_test_id("monitoring-report").is_visible()

        # An existing user: ten recommendations, each with title, genres and a "because you liked" reason.
        user = int(bundle.user_ids[4])
        page.get_by_label("Existing user id").fill(str(user))
        page.get_by_test_id("load-user").click()
        items = page.get_by_test_id("rec-item")
        items.nth(9).wait_for()
        assert items.count() == 10
        expected, _, _ = bundle.recommend_users([user], 10)
        shown = [int(items.nth(i).get_attribute("data-movie-id")) for i in range(10)]
        assert shown == expected[0].tolist()
        reasons = page.get_by_test_id("rec-reason").all_inner_texts()
        assert len(reasons) == 10 and all(reason.startswith("because you liked ") for reason in reasons)
        first_title = bundle.items.set_index("movie_id").loc[shown[0], "title"]
        assert first_title in items.nth(0).inner_text()

        # A new user: find three movies by title, rate or like them, get recommendations.
        page.get_by_test_id("new-user").click()
        chosen = bundle.items.set_index("movie_id").loc[bundle.item_ids[bundle.popularity[10:13]].tolist()]
        for number, (movie_id, movie) in enumerate(chosen.iterrows()):
            page.get_by_label("Movie title").fill(movie["title"].upper())
            page.get_by_test_id("search-button").click()
            if number == 0:
                page.get_by_test_id(f"like-{movie_id}").click()
            else:
                stars = page.get_by_test_id(f"rate-{movie_id}-{4 + number % 2}")
                assert stars.get_attribute("aria-label") == f"Rate {movie['title']} {4 + number % 2} stars"
                stars.click()
            page.locator(f'[data-testid="rated-item"][data-movie-id="{movie_id}"]').wait_for()
        assert page.get_by_test_id("rated-item").count() == 3
        page.get_by_test_id("get-recs").click()
        page.get_by_test_id("recs-summary").filter(has_text=re.compile("for you")).wait_for()
        items = page.get_by_test_id("rec-item")
        assert items.count() == 10
        shown = [int(items.nth(i).get_attribute("data-movie-id")) for i in range(10)]
        liked = chosen.index.tolist()
        assert shown == bundle.recommend_new_user(liked, {}, 10)[0].tolist()
        assert not set(shown) & set(liked)
        titles = set(chosen["title"])
        for reason in page.get_by_test_id("rec-reason").all_inner_texts():
            assert reason.removeprefix("because you liked ") in titles

        # Thumbs are drawn (inline SVG) and labelled in plain text: no emoji a machine may lack a font for.
        target = shown[0]
        thumb = page.get_by_test_id(f"thumb-up-{target}")
        assert thumb.locator("svg path").count() == 1 and thumb.inner_text().strip() == "Like"
        assert thumb.bounding_box()["width"] > 20
        assert page.get_by_test_id(f"thumb-down-{target}").inner_text().strip() == "Dislike"
        page.get_by_test_id(f"thumb-up-{target}").click()
        page.get_by_test_id("status").filter(has_text="saved").wait_for()
        assert page.get_by_test_id(f"thumb-up-{target}").get_attribute("aria-pressed") == "true"
        event_id = page.get_by_test_id(f"thumb-up-{target}").get_attribute("data-event-id")
        events = FeedbackStore(get_settings().feedback_db).events()
        thumbs = events[events["kind"] == "thumb"]
        assert thumbs["event_id"].tolist() == [event_id]
        assert thumbs.iloc[0]["movie_id"] == target and thumbs.iloc[0]["value"] == 1
        # The thumb names the list it answers: the impression the API recorded for it.
        impression = thumbs.iloc[0]["impression_id"]
        recorded = ImpressionStore(get_settings().impressions_db)
        deadline = time.monotonic() + 20  # the API writes impressions every 0.2 s, off the request path
        while impression not in set(recorded.read()["impression_id"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        shown_lists = recorded.read().set_index("impression_id")
        assert shown_lists.loc[impression, "movie_ids"] == shown and pd.isna(shown_lists.loc[impression, "user_id"])
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", event_id)
        ratings = events[events["kind"] == "rating"]  # the page also records the ratings it sent
        assert sorted(ratings["movie_id"].tolist()) == sorted(liked)
        assert set(ratings["user_id"]) == set(thumbs["user_id"])
    finally:
        server.stop()
