"""With a write token, POST /feedback needs it as a bearer token (reads stay open); `movierec
serve` refuses an address other than loopback without one; the token is never printed."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from cli_runs import movierec
from fastapi.testclient import TestClient
from registered import register_champion

from movierec.serving.app import create_app
from movierec.settings import get_settings

TOKEN = "s3cret-token-of-the-feedback-writers"


def _event(registered, number: int) -> dict:
    return {
        "event_id": f"token-{number}",
        "user_id": int(registered.bundle.user_ids[0]),
        "movie_id": int(registered.bundle.item_ids[0]),
        "type": "rating",
        "value": 4.0,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def test_feedback_needs_the_bearer_token_and_reads_stay_open(home, monkeypatch):
    registered = register_champion()
    monkeypatch.setenv("MOVIEREC_SERVING__WRITE_TOKEN", TOKEN)
    settings = get_settings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.serving)
    with TestClient(create_app(settings, watch=False)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-the-same-length!!"}, {"Authorization": TOKEN}):
            refused = client.post("/feedback", json=_event(registered, 1), headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in refused.json()["detail"] and TOKEN not in refused.text
        stored = client.post("/feedback", json=_event(registered, 2), headers={"Authorization": f"Bearer {TOKEN}"})
        assert stored.status_code == 201, stored.text
        assert client.get(f"/users/{registered.bundle.user_ids[0]}/recommendations").status_code == 200
        assert (
            client.post("/recommendations", json={"liked_movie_ids": [int(registered.bundle.item_ids[0])]}).status_code
            == 200
        )
        schema = client.get("/openapi.json").json()
        assert "401" in schema["paths"]["/feedback"]["post"]["responses"]


def _serve(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return movierec(home, "serve", *args, timeout=120, **env)


def test_serve_refuses_a_public_address_without_a_token(home):
    refused = _serve(home, "--host", "0.0.0.0", "--port", "9")
    assert refused.returncode == 1 and "MOVIEREC_SERVING__WRITE_TOKEN" in refused.stderr
    # A token too short to be one is a settings error naming the key, and is not echoed.
    short = _serve(home, "--host", "0.0.0.0", MOVIEREC_SERVING__WRITE_TOKEN="short")
    assert short.returncode == 1 and "serving.write_token" in short.stderr and "'short'" not in short.stderr
