"""The API's Prometheus metrics and the ASGI middleware that records every request."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from movierec.data.impressions import EndpointTotals

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The app's own Prometheus registry (several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "movierec_http_requests",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "movierec_http_request_duration_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.recommendations = Counter(
            "movierec_recommendations", "Recommendation responses by source.", ["endpoint", "source"], registry=r
        )
        self.fallbacks = Counter(
            "movierec_fallbacks",
            "Recommendation responses served by the popularity fallback.",
            ["endpoint"],
            registry=r,
        )
        self.feedback = Counter(
            "movierec_feedback_events",
            "Feedback events by type and result (stored, duplicate).",
            ["type", "result"],
            registry=r,
        )
        self.swaps = Counter("movierec_model_swaps", "Hot swaps to a new champion version.", registry=r)
        self.load_failures = Counter(
            "movierec_model_load_failures", "Failed attempts to load a champion version.", registry=r
        )
        self.registry_reachable = Gauge(
            "movierec_registry_reachable", "1 when the last lookup of the champion alias succeeded.", registry=r
        )
        self.model_version = Gauge("movierec_model_version", "Registered version being served (0: none).", registry=r)
        self.model_info = Gauge("movierec_model_info", "1 for the model being served.", ["name", "version"], registry=r)
        self.model_loaded_at = Gauge(
            "movierec_model_loaded_timestamp_seconds", "When the served version was loaded.", registry=r
        )
        self._children: dict[tuple, tuple] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def totals(self) -> dict[str, EndpointTotals]:
        """Per endpoint, what was served since the app started (what the impression recorder
        stores between restarts): requests, 4xx, 5xx, latency sum and histogram."""
        requests: dict[str, list[int]] = {}
        for sample in self.requests.collect()[0].samples:
            if sample.name.endswith("_total"):
                counts = requests.setdefault(sample.labels["endpoint"], [0, 0, 0])
                status = sample.labels["status"]
                counts[0] += int(sample.value)
                counts[1] += int(status.startswith("4")) * int(sample.value)
                counts[2] += int(status.startswith("5")) * int(sample.value)
        buckets: dict[str, list[tuple[float, int]]] = {}
        latency: dict[str, float] = {}
        for sample in self.latency.collect()[0].samples:
            endpoint = sample.labels["endpoint"]
            if sample.name.endswith("_bucket"):
                buckets.setdefault(endpoint, []).append((float(sample.labels["le"]), int(sample.value)))
            elif sample.name.endswith("_sum"):
                latency[endpoint] = float(sample.value)
        return {
            endpoint: EndpointTotals(
                counts[0],
                counts[1],
                counts[2],
                latency.get(endpoint, 0.0),
                tuple(bound for bound, _ in sorted(buckets.get(endpoint, []))),
                tuple(count for _, count in sorted(buckets.get(endpoint, []))),
            )
            for endpoint, counts in requests.items()
        }

    def served(self, name: str, version: str, previous: str | None) -> None:
        if previous is not None:
            self.model_info.remove(name, previous)
        self.model_info.labels(name, version).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)
        self.model_loaded_at.set(time.time())


class MetricsMiddleware:
    """Pure ASGI: counts and times every request by its route template; adds X-Model-Version
    where the endpoint did not set it (`holder.current` is the served model or None)."""

    def __init__(self, app, metrics: Metrics, holder) -> None:
        self.app, self.metrics, self.holder = app, metrics, holder

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == b"x-model-version" for name, _ in headers):
                    loaded = self.holder.current
                    headers.append((b"x-model-version", (loaded.version if loaded else "none").encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, scope.get("method", ""), status, time.perf_counter() - started)
