"""Usage reports to the platform: one per attempt, sent in the background with retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from otari_server import counts
from otari_server.connected.platform import TRANSPORT_ERRORS, Platform

log = logging.getLogger("otari.platform")

MAX_BACKOFF = 10.0


def usage_numbers(usage: Mapping[str, Any] | None, chunks: int = 0) -> dict[str, int]:
    """The token counts the platform bills by; a stream cut before its usage counts chunks.

    Numbers are checked by counts.count like standalone mode's: one that breaks the rules
    (2^63+5, 10^15, "12.5", true, -1) is not reported; the prompt then counts 0 and the
    completion is estimated from the chunks relayed.
    """
    usage = usage or {}
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    if completion is None:
        completion = max(chunks - 1, 0)  # about a token per chunk, less the role chunk
    total = _count(usage, "total_tokens") or (prompt or 0) + completion
    return {"prompt_tokens": prompt or 0, "completion_tokens": completion,
            "total_tokens": total}


def _count(usage: Mapping[str, Any], name: str) -> int | None:
    """A checked count, or None when it is missing or breaks the rules (logged)."""
    if name not in usage:
        return None
    try:
        return counts.count(usage[name], name)
    except counts.BadCount as exc:
        log.warning("provider usage refused (%s); not reported as such", exc)
        return None


class Reporter:
    """Fire-and-forget delivery: the client's response never waits for a report."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Reports not yet delivered or given up on."""
        return len(self._tasks)

    def success(self, attempt_id: str, usage: dict[str, int]) -> None:
        """Report an attempt that served the request."""
        self._send({"correlation_id": attempt_id, "status": "success", "usage": usage})

    def error(self, attempt_id: str, error_class: str) -> None:
        """Report an attempt that failed."""
        self._send({"correlation_id": attempt_id, "status": "error", "error_class": error_class})

    def _send(self, body: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(body))
        self._tasks.add(task)  # a strong reference, or the loop may collect the task midway
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: dict[str, Any]) -> None:
        config = self._platform.config
        delay = config.usage_backoff
        for tried in range(1, config.usage_max_tries + 1):
            try:
                status = await self._platform.post_usage(body)
            except TRANSPORT_ERRORS as exc:
                outcome, retry = type(exc).__name__, True
            else:
                if 200 <= status < 300:
                    return
                outcome, retry = f"HTTP {status}", status >= 500
            if not retry or tried == config.usage_max_tries:
                log.warning("usage report for %s not delivered after %d tr%s (%s)",
                            body["correlation_id"], tried, "y" if tried == 1 else "ies", outcome)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for pending reports, then abandon the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        if pending:
            log.warning("abandoned %d usage report(s) still pending at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
