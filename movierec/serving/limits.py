"""What the API refuses before doing any work: request bodies over a size limit (413) and write
requests beyond a per-client rate (429)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import orjson


class RateLimiter:
    """A token bucket per client: `per_minute` requests a minute on average, bursts up to
    `burst`. Thread-safe (the write endpoints run in the threadpool). The least recently seen
    clients are forgotten beyond `max_clients`, so memory stays bounded whatever the traffic;
    a forgotten client starts again with a full bucket."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, client: str, now: float | None = None) -> float:
        """Take one token for `client`: 0.0 when the request may go on, else the seconds until
        a token is available (the Retry-After)."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


class BodyLimitMiddleware:
    """Pure ASGI: answers 413 to a request whose body exceeds `max_bytes`, by its Content-Length
    or, for a chunked body, as soon as the bytes received exceed it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > self.max_bytes:
                    await self._too_large(send)
                    return
        received = 0
        refused = False

        async def limited_receive():
            # Over the limit: answer 413 now and tell the app the client is gone, so it stops
            # reading (whatever it then tries to send is dropped).
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _too_large(self, send) -> None:
        body = orjson.dumps({"detail": f"request body exceeds the limit of {self.max_bytes:,} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def retry_after(seconds: float) -> str:
    """The Retry-After header's whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
