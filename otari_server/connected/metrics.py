"""Prometheus metrics of connected mode (`metrics = true`): the usage report queue."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otari_server.connected.reports import Reporter


class ReportCollector(Collector):
    """Reads the queue file and the reporter's counts at each scrape."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def collect(self) -> Iterator[Metric]:
        """Queue depth, bytes and oldest age; deliveries, failed tries, reports given up."""
        stats = self._reporter.queue.stats()
        counts = self._reporter.counts
        yield GaugeMetricFamily(
            "otari_platform_usage_queue_depth",
            "Usage reports queued for the platform",
            value=stats.depth,
        )
        yield GaugeMetricFamily(
            "otari_platform_usage_queue_bytes", "Bytes of usage reports queued", value=stats.size
        )
        age = 0.0 if stats.oldest is None else max(time.time() - stats.oldest, 0.0)
        yield GaugeMetricFamily(
            "otari_platform_usage_oldest_age_seconds",
            "Age of the oldest queued usage report (0 when none)",
            value=age,
        )
        yield CounterMetricFamily(
            "otari_platform_usage_deliveries",
            "Usage reports the platform accepted",
            value=counts.delivered,
        )
        failures = CounterMetricFamily(
            "otari_platform_usage_failures",
            "Usage report tries that failed, by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(counts.failed.items()):
            failures.add_metric([outcome], count)
        yield failures
        dropped = CounterMetricFamily(
            "otari_platform_usage_dropped",
            "Usage reports given up: refused (4xx), expired, out of tries, or unwritable",
            labels=["reason"],
        )
        for reason, count in sorted(counts.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped


def render(reporter: Reporter) -> bytes:
    """The exposition text."""
    registry = CollectorRegistry()
    registry.register(ReportCollector(reporter))
    return generate_latest(registry)
