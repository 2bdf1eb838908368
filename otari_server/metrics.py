"""Opt-in Prometheus metrics, owned by the app (one registry per app, no globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latencies from sub-millisecond gateway overhead to minutes-long generations.
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the gateway exports."""

    def __init__(
        self, queue_depth: Callable[[], int], rejected_rows: Callable[[], int] = lambda: 0
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "otari_requests",
            "Generation requests answered",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "otari_request_duration_seconds",
            "Time to the response's first byte, by endpoint",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "otari_upstream_duration_seconds",
            "Time the provider took to answer (headers), by provider: the rest of "
            "otari_request_duration_seconds is the gateway's own overhead",
            ["provider"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("otari_tokens", "Tokens metered", ["kind"], registry=registry)
        self.cost = Counter("otari_cost_usd", "Cost metered, in USD", registry=registry)
        self.refusals = Counter(
            "otari_refusals",
            "Requests refused before any provider call",
            ["reason"],
            registry=registry,
        )
        self.credential_rejections = Counter(
            "otari_provider_credential_rejections",
            "Provider answers of 401/403 to the gateway's own provider key, by provider",
            ["provider"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "otari_in_flight_requests", "Generation requests in progress", registry=registry
        )
        # Routes (otari_server.routing): every attempt, every move to another target, every
        # cooldown started and every target skipped while cooling, by route and target.
        self.route_attempts = Counter(
            "otari_route_attempts",
            "Attempts made for a route",
            ["route", "target", "outcome"],
            registry=registry,
        )
        self.route_fallbacks = Counter(
            "otari_route_fallbacks",
            "Moves from a failed target to the next, by reason",
            ["route", "target", "reason"],
            registry=registry,
        )
        self.route_cooldowns = Counter(
            "otari_route_cooldowns",
            "Cooldowns started after repeated failures",
            ["route", "target"],
            registry=registry,
        )
        self.route_skips = Counter(
            "otari_route_skips",
            "Targets skipped by a request (cooling or unusable)",
            ["route", "target", "reason"],
            registry=registry,
        )
        queue = Gauge(
            "otari_usage_queue_depth", "Usage rows waiting to be written", registry=registry
        )
        queue.set_function(lambda: float(queue_depth()))
        rejected = Gauge(
            "otari_usage_rows_rejected",
            "Usage rows the database refused since start (isolated, logged and "
            "dropped; the rest of their batch was written)",
            registry=registry,
        )
        rejected.set_function(lambda: float(rejected_rows()))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
