"""The API's per-client token bucket, by hand."""

from __future__ import annotations

import pytest

from movierec.serving.limits import RateLimiter, retry_after


def test_a_token_bucket_per_client():
    limiter = RateLimiter(per_minute=60, burst=2)  # one token a second, two at most
    assert [limiter.acquire("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a", now=0.0) == pytest.approx(1.0)  # empty: a token in one second
    assert limiter.acquire("b", now=0.0) == 0.0  # another client has its own bucket
    assert limiter.acquire("a", now=0.5) == pytest.approx(0.5)  # half a token back, half to wait
    assert limiter.acquire("a", now=1.0) == 0.0  # a full token now
    assert limiter.acquire("a", now=100.0) == 0.0 and limiter.acquire("a", now=100.0) == 0.0  # refilled to 2
    assert limiter.acquire("a", now=100.0) > 0
    assert retry_after(0.2) == "1" and retry_after(1.5) == "2"


def test_no_limit_and_bounded_memory():
    assert RateLimiter(per_minute=0, burst=1).acquire("a") == 0.0
    limiter = RateLimiter(per_minute=60, burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        assert limiter.acquire(client, now=0.0) == 0.0
    assert limiter.acquire("a", now=0.0) == 0.0  # forgotten (least recently seen): a full bucket again
    assert limiter.acquire("c", now=0.0) > 0
