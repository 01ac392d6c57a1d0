"""Acknowledged feedback survives kill -9 of a real `movierec serve` process, exactly once."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from registered import register_champion
from server import Server

from movierec.data.feedback import FeedbackStore
from movierec.settings import get_settings

pytestmark = pytest.mark.slow


# Four writers from one address, as fast as they can: no rate limit here.
UNLIMITED = {"MOVIEREC_SERVING__WRITE_REQUESTS_PER_MINUTE": "0"}


def _event(thread: int, number: int, movies: list[int]) -> dict:
    return {
        "event_id": f"t{thread}-{number}-{uuid.uuid4()}",
        "user_id": 1 + thread,
        "movie_id": movies[number % len(movies)],
        "type": "rating",
        "value": 0.5 * (1 + number % 10),
        "timestamp": "2024-06-01T08:30:00+00:00",
    }


def test_every_acknowledged_event_survives_kill_9_exactly_once(home, tmp_path):
    movies = register_champion().bundle.item_ids[:50].tolist()
    settings = get_settings()
    server = Server(home, tmp_path / "server.log", env=UNLIMITED).start()
    acknowledged: dict[str, dict] = {}
    lock = threading.Lock()
    failures: list[str] = []

    def send(thread: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for number in range(100_000):
                event = _event(thread, number, movies)
                try:
                    response = client.post("/feedback", json=event)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code != 201 or response.json() != {**response.json(), "stored": True}:
                    failures.append(f"{response.status_code} {response.text}")
                    return
                with lock:
                    acknowledged[event["event_id"]] = event

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        while True:  # kill mid-stream, once plenty of events were acknowledged
            with lock:
                if len(acknowledged) >= 120 or failures:
                    break
            threading.Event().wait(0.01)
        server.kill()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures[:3]
        assert server.process.returncode == -9

        store = FeedbackStore(settings.feedback_db)
        stored = store.events()
        assert stored["event_id"].is_unique
        by_id = stored.set_index("event_id")
        missing = set(acknowledged) - set(by_id.index)
        assert not missing, f"{len(missing)} acknowledged events lost"
        for event_id, event in acknowledged.items():
            row = by_id.loc[event_id]
            assert (row["user_id"], row["movie_id"], row["kind"], row["value"]) == (
                event["user_id"],
                event["movie_id"],
                "rating",
                event["value"],
            )
        count = store.count()
        store.close()

        # Restarted: a retried acknowledged event is a duplicate and nothing is added.
        server = Server(home, tmp_path / "server2.log", env=UNLIMITED).start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for event in list(acknowledged.values())[:5]:
                response = client.post("/feedback", json=event)
                assert response.status_code == 200 and response.json()["duplicate"] is True
        reopened = FeedbackStore(settings.feedback_db)
        assert reopened.count() == count
        reopened.close()
    finally:
        server.stop()
