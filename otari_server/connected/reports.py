"""Usage reports to the platform: one per attempt, queued on disk, delivered in the background."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from otari_server.accounting.prices import Consumption
from otari_server.connected.config import redacted
from otari_server.connected.platform import TRANSPORT_ERRORS, Platform
from otari_server.connected.queue import Queued, UsageQueue

log = logging.getLogger("otari.platform")

# Seconds between looks at the queue file when nothing wakes the dispatcher sooner.
POLL = 5.0


def usage_numbers(used: Consumption) -> dict[str, int]:
    """The token counts the platform bills by: `{"prompt_tokens", "completion_tokens",
    "total_tokens"}` of what the attempt consumed (tokens)."""
    total = used.prompt_tokens + used.completion_tokens
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": total,
    }


def backoff(
    tries: int, retry_after: str | None, first: float, longest: float, rng: random.Random
) -> float:
    """Seconds before the next try after `tries` failed ones.

    Exponential (`first`, doubling, at most `longest`) with jitter: a random half to all of
    that step, so gateways that failed together do not retry together. A longer numeric
    Retry-After is honoured, up to `longest`.
    """
    step = min(first * 2 ** min(tries - 1, 32), longest)
    delay: float = step * rng.uniform(0.5, 1.0)
    if retry_after is not None and retry_after.isdigit():
        delay = max(delay, min(float(retry_after), longest))
    return delay


@dataclass
class DeliveryCounts:
    """What the deliveries did since start-up, for /metrics."""

    delivered: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # failed tries, by reason
    dropped: dict[str, int] = field(default_factory=dict)  # reports given up, by reason

    def add(self, counts: dict[str, int], reason: str) -> None:
        """Count one event under `reason`."""
        counts[reason] = counts.get(reason, 0) + 1


class Reporter:
    """Reports go to the durable queue at once; a background task delivers them.

    The client's response never waits for the platform. Each report gets an idempotency key
    when queued and sends it on every try (header `Idempotency-Key`), so a try that timed out
    after landing is not counted twice by a platform that dedupes. Tries are retried after
    5xx, 408, 429, redirects, timeouts and network errors with exponential backoff and
    jitter, until accepted (2xx, or 409: the platform has this key already), refused for
    good (another 4xx), expired (`usage_max_age`) or out of tries (`usage_max_tries`).
    """

    def __init__(self, platform: Platform, queue: UsageQueue) -> None:
        self._platform = platform
        self._config = platform.config
        self.queue = queue
        self.counts = DeliveryCounts()
        self._random = random.Random()
        self._wake = asyncio.Event()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._expired_at = 0.0
        self._was_full = False
        self._deliveries: dict[str, asyncio.Task[None]] = {}

    def open(self) -> None:
        """Open the queue file and start delivering (inside the event loop).

        Raises OSError or sqlite3.Error when the queue file cannot be used.
        """
        self.queue.open()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    @property
    def full(self) -> bool:
        """Whether the queue reached its size bound (new requests are refused then)."""
        full = self.queue.full
        if full != self._was_full:  # log the changes, not every refused request
            self._was_full = full
            if full:
                log.error(
                    "usage queue %s is full (usage_queue_max_bytes = %d): refusing chat "
                    "requests until the platform takes reports again",
                    self.queue.path,
                    self.queue.max_bytes,
                )
            else:
                log.warning("usage queue %s has room again: serving chat requests", self.queue.path)
        return full

    @property
    def pending(self) -> int:
        """Reports queued and not yet delivered or given up on."""
        return self.queue.stats().depth

    def success(self, attempt_id: str, usage: dict[str, int], *, estimated: bool = False) -> None:
        """Report an attempt that served the request; `estimated` when the provider reported
        no usage and the numbers are the gateway's estimate (`usage_estimated: true`)."""
        body: dict[str, Any] = {"correlation_id": attempt_id, "status": "success", "usage": usage}
        if estimated:
            body["usage_estimated"] = True
        self._send(body)

    def error(
        self,
        attempt_id: str,
        error_class: str,
        *,
        usage: dict[str, int] | None = None,
        estimated: bool = False,
    ) -> None:
        """Report an attempt that failed; a stream cut after it started carries the `usage`
        consumed (`usage_estimated: true` when those are the gateway's estimate)."""
        body: dict[str, Any] = {
            "correlation_id": attempt_id,
            "status": "error",
            "error_class": error_class,
        }
        if usage is not None:
            body["usage"] = usage
            if estimated:
                body["usage_estimated"] = True
        self._send(body)

    def _send(self, body: dict[str, Any]) -> None:
        # Written before returning: from here on a crash or restart cannot lose the report.
        data = orjson.dumps(body)
        try:
            self.queue.put(uuid.uuid4().hex, data, time.time())
        except sqlite3.Error as exc:
            # The file is unusable (disk full, removed...): the report is in the log at least.
            log.error("usage report could not be queued (%s): %s", exc, data.decode())
            self.counts.add(self.counts.dropped, "unwritable")
            return
        self._wake.set()

    async def _dispatch(self) -> None:
        """Start deliveries as reports fall due, at most `usage_concurrency` at once."""
        while True:
            self._wake.clear()  # before looking, so a report queued meanwhile wakes us
            try:
                wait = self._start_due()
            except sqlite3.Error as exc:
                log.error("usage queue %s unreadable: %s", self.queue.path, exc)
                wait = POLL
            if self._closing and not self._deliveries:
                return  # drained: what is left waits for its backoff, on disk
            if wait <= 0:
                await asyncio.sleep(0)  # let the deliveries just started run
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _start_due(self) -> float:
        """Lease what is due into free delivery slots; seconds until worth looking again."""
        config = self._config
        now = time.time()
        if now - self._expired_at >= min(POLL, config.usage_max_age):
            self._expired_at = now
            self._expire(now)
            self.queue.stats()  # recounts the bytes, which other worker processes change too
        free = config.usage_concurrency - len(self._deliveries)
        if free <= 0:
            return POLL  # every slot busy: a finished delivery wakes us
        # A lease outlasts a try; should this process die, another one (or the next start)
        # takes the report once it ends.
        claimed = self.queue.claim(now, free, config.usage_timeout + 30)
        for report in claimed:
            task = asyncio.get_running_loop().create_task(self._deliver(report))
            self._deliveries[report.key] = task
            task.add_done_callback(functools.partial(self._done, report.key))
        if len(claimed) == free:
            return POLL
        # Also look again now and then: other worker processes queue reports too.
        due = self.queue.next_due()
        return POLL if due is None else min(max(due - now, 0.0), POLL)

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self._deliveries.pop(key, None)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("usage report %s delivery failed: %r", key, exc)

    def _expire(self, now: float) -> None:
        expired = self.queue.expire(now - self._config.usage_max_age)
        if expired:
            log.error(
                "dropped %d usage report(s) older than usage_max_age (%gs) undelivered",
                len(expired),
                self._config.usage_max_age,
            )
            self.counts.dropped["expired"] = self.counts.dropped.get("expired", 0) + len(expired)

    async def _deliver(self, report: Queued) -> None:
        config = self._config
        retry_after: str | None = None
        try:
            status, retry_after = await self._platform.post_usage(report.body, report.key)
        except TRANSPORT_ERRORS as exc:
            outcome, retry = type(exc).__name__, True
        else:
            if 200 <= status < 300 or status == 409:
                self.queue.remove(report.key)
                self.counts.delivered += 1
                return
            outcome = f"HTTP {status}"
            retry = status in (408, 429) or status < 400 or status >= 500
            if 300 <= status < 400:
                log.warning(
                    "usage report answered a redirect (HTTP %d); not followed: "
                    "credentials stay with %s",
                    status,
                    redacted(config.base_url),
                )
        self.counts.add(self.counts.failed, outcome)
        tries = report.tries + 1
        if not retry or tries == config.usage_max_tries:
            reason = "refused" if not retry else "tries"
            log.error(
                "usage report %s dropped after %d tr%s (%s)",
                report.key,
                tries,
                "y" if tries == 1 else "ies",
                outcome,
            )
            self.queue.remove(report.key)
            self.counts.add(self.counts.dropped, reason)
            return
        delay = backoff(
            tries, retry_after, config.usage_backoff, config.usage_backoff_max, self._random
        )
        log.warning(
            "usage report %s not delivered (%s); try %d again in %.2fs",
            report.key,
            outcome,
            tries + 1,
            delay,
        )
        self.queue.retry_at(report.key, time.time() + delay)

    async def close(self, timeout: float) -> None:
        """Keep delivering what is due for up to `timeout` seconds, then stop.

        Reports not delivered by then stay queued on disk for the next start; deliveries
        cut short are due again at once.
        """
        if self._dispatcher is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._dispatcher), timeout)
        except TimeoutError:
            cut = list(self._deliveries)
            self._dispatcher.cancel()
            for task in list(self._deliveries.values()):
                task.cancel()
            await asyncio.gather(
                self._dispatcher, *self._deliveries.values(), return_exceptions=True
            )
            self.queue.release(cut)
        left = self.queue.stats().depth
        if left:
            log.warning(
                "%d usage report(s) still queued at shutdown; they are delivered "
                "after the next start (%s)",
                left,
                self.queue.path,
            )
        self.queue.close()
